//go:build lab && linux

package lab

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// nocloudSeed is where cloud-init's NoCloud datasource reads a host's
// meta-data and user-data.
const nocloudSeed = "/var/lib/cloud/seed/nocloud"

// metaData is a NoCloud meta-data document: what EC2's instance metadata
// service would say about the instance.
type metaData struct {
	InstanceID    string   `json:"instance-id"`
	LocalHostname string   `json:"local-hostname"`
	PublicKeys    []string `json:"public-keys,omitempty"`
	// LaunchIndex is EC2's ami-launch-index: cloud-init keeps only the
	// parts of a batch's user-data for it.
	LaunchIndex int `json:"launch-index"`
}

// localHostname is the instance's private DNS name, as EC2 gives it
// (ip-10-0-1-5.ec2.internal), or one made from its private IP.
func localHostname(in instance) string {
	if in.privateDNS != "" {
		return in.privateDNS
	}
	return "ip-" + strings.ReplaceAll(in.privateIP, ".", "-")
}

// writeSeed writes, through the host's root (so into its own layer), what
// the host needs before it first boots: the NoCloud seed (meta-data with
// the instance ID, hostname and the key pair's public key; the instance's
// user-data unchanged), and the identity a VM has from its hypervisor and
// DHCP: hostname, machine ID, /etc/hosts, the VPC's resolver.
func writeSeed(root string, in instance, userData []byte, keys []string, vpc *vpcNet) error {
	md, err := yaml.Marshal(metaData{InstanceID: in.id, LocalHostname: localHostname(in), PublicKeys: keys, LaunchIndex: in.launchIndex})
	if err != nil {
		return fmt.Errorf("meta-data: %w", err)
	}
	short, _, _ := strings.Cut(localHostname(in), ".")
	mid := make([]byte, 16)
	if _, err := rand.Read(mid); err != nil {
		return err
	}
	hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n%s\t%s %s\n",
		in.privateIP, localHostname(in), short)
	files := []struct {
		path string
		mode os.FileMode
		data []byte
	}{
		{nocloudSeed + "/meta-data", 0o600, md},
		{nocloudSeed + "/user-data", 0o600, userData},
		{"/etc/hostname", 0o644, []byte(short + "\n")},
		{"/etc/machine-id", 0o444, []byte(hex.EncodeToString(mid) + "\n")},
		{"/etc/hosts", 0o644, []byte(hosts)},
		// Nothing answers there, as no resolver exists here: lookups of
		// names outside /etc/hosts fail, and CoreDNS does not loop.
		{"/etc/resolv.conf", 0o644, []byte("nameserver " + vpc.dns.String() + "\n")},
	}
	for _, f := range files {
		p := filepath.Join(root, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("seed %s: %w", f.path, err)
		}
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("seed %s: %w", f.path, err)
		}
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			return fmt.Errorf("seed %s: %w", f.path, err)
		}
	}
	return nil
}
