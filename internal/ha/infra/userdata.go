package infra

import (
	"bytes"
	"compress/gzip"
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
	// LaunchIndex, in a part of a batch's user-data, is the EC2 launch
	// index (ami-launch-index) of the instance the part is for: cloud-init
	// drops the parts of the other indexes.
	LaunchIndex      *int              `json:"launch-index,omitempty"`
	Hostname         string            `json:"hostname"`
	PreserveHostname bool              `json:"preserve_hostname"`
	ManageEtcHosts   bool              `json:"manage_etc_hosts"`
	SSHKeys          map[string]string `json:"ssh_keys"`
	SSHDeleteKeys    bool              `json:"ssh_deletekeys"`
	SSHGenKeyTypes   []string          `json:"ssh_genkeytypes"`
}

// cloudConfigOf renders the #cloud-config of a VM (for the instance of
// launch index idx of a batch, when idx is not nil).
func cloudConfigOf(hostname string, key ed25519.PrivateKey, idx *int) ([]byte, error) {
	block, err := ssh.MarshalPrivateKey(key, hostname)
	if err != nil {
		return nil, fmt.Errorf("encode host key: %w", err)
	}
	pub, err := ssh.NewPublicKey(key.Public())
	if err != nil {
		return nil, err
	}
	b, err := yaml.Marshal(cloudConfig{
		LaunchIndex:    idx,
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
		return nil, err
	}
	return append([]byte("#cloud-config\n"), b...), nil
}

// userData renders a VM's user-data, base64-encoded for RunInstances.
func userData(hostname string, key ed25519.PrivateKey) (string, error) {
	b, err := cloudConfigOf(hostname, key, nil)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// MaxUserData is the most user-data EC2 takes, in bytes before base64.
const MaxUserData = 16 << 10

// archivePart is one part of a #cloud-config-archive.
type archivePart struct {
	Type        string `json:"type"`
	LaunchIndex int    `json:"launch-index"`
	Content     string `json:"content"`
}

// vmIdentity is what a VM of a batch is told about itself: its hostname
// and its SSH host key.
type vmIdentity struct {
	Hostname string
	Key      ed25519.PrivateKey
}

// batchUserData renders the one user-data of a batched launch: a gzipped
// #cloud-config-archive with one #cloud-config part per instance, part i
// for the instance of EC2 launch index i, marked with that index both as
// the part's launch-index and inside it. cloud-init keeps only the part of
// its own instance's index (its EC2 datasource reads ami-launch-index from
// the instance metadata), so each VM takes its own hostname and host key.
// It returns the raw size (gzipped, before base64), which EC2 limits to
// MaxUserData.
func batchUserData(vms []vmIdentity) (string, int, error) {
	parts := make([]archivePart, len(vms))
	for i, vm := range vms {
		b, err := cloudConfigOf(vm.Hostname, vm.Key, &i)
		if err != nil {
			return "", 0, err
		}
		parts[i] = archivePart{Type: "text/cloud-config", LaunchIndex: i, Content: string(b)}
	}
	b, err := yaml.Marshal(parts)
	if err != nil {
		return "", 0, err
	}
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return "", 0, err
	}
	if _, err := zw.Write(append([]byte("#cloud-config-archive\n"), b...)); err != nil {
		return "", 0, err
	}
	if err := zw.Close(); err != nil {
		return "", 0, err
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes()), buf.Len(), nil
}
