package infra

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/pem"
	"fmt"

	"golang.org/x/crypto/ssh"
	"sigs.k8s.io/yaml"
)

// cloudConfig is the cloud-init user-data of a VM: its hostname and its SSH
// host key, which kforge pins.
type cloudConfig struct {
	Hostname         string            `json:"hostname"`
	PreserveHostname bool              `json:"preserve_hostname"`
	ManageEtcHosts   bool              `json:"manage_etc_hosts"`
	SSHKeys          map[string]string `json:"ssh_keys"`
	SSHDeleteKeys    bool              `json:"ssh_deletekeys"`
	SSHGenKeyTypes   []string          `json:"ssh_genkeytypes"`
}

// userData renders a VM's user-data, base64-encoded for RunInstances.
func userData(hostname string, key ed25519.PrivateKey) (string, error) {
	block, err := ssh.MarshalPrivateKey(key, hostname)
	if err != nil {
		return "", fmt.Errorf("encode host key: %w", err)
	}
	pub, err := ssh.NewPublicKey(key.Public())
	if err != nil {
		return "", err
	}
	b, err := yaml.Marshal(cloudConfig{
		Hostname:       hostname,
		ManageEtcHosts: true,
		SSHKeys: map[string]string{
			"ed25519_private": string(pem.EncodeToMemory(block)),
			"ed25519_public":  string(ssh.MarshalAuthorizedKey(pub)),
		},
		SSHDeleteKeys: true,
		// cloud-init's schema wants at least one type; keys given in
		// ssh_keys are not generated, so only kforge's key exists.
		SSHGenKeyTypes: []string{"ed25519"},
	})
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(append([]byte("#cloud-config\n"), b...)), nil
}
