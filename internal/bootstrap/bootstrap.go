// Package bootstrap renders the bash scripts ("recipes") that kforge runs as
// root on the VMs of an ha-aws cluster over SSH (`sudo bash -s`, the script
// on standard input), and the configuration files those scripts install.
//
// Every render function is pure: it validates its parameters and returns the
// script text, without I/O. Every script
//
//   - starts with "#!/usr/bin/env bash", then "# kforge-recipe: <name>", then
//     "set -euo pipefail";
//   - wraps its work in a function that bash parses whole before running it,
//     with standard input from /dev/null, so no command can swallow the rest
//     of a script that arrives on standard input;
//   - is idempotent: it installs only what is missing, writes each file
//     through a temporary file renamed over the target (and only when the
//     content differs), enables services with `systemctl enable --now` and
//     restarts them only when their configuration changed;
//   - carries files as base64 blocks in quoted heredocs, so secrets (keys,
//     tokens) never appear on a command line, and never prints a secret;
//   - prints progress on standard error and its result on standard output
//     (for fetch-kubeconfig, the kubeconfig and nothing else).
//
// YAML configuration (etcd, k3s, kubeadm, Kubernetes objects) is marshalled
// from Go structs with sigs.k8s.io/yaml; scripts are text/template output,
// checked with shellcheck in the tests. Recipe names are the Recipe*
// constants; Recipes lists them.
//
// Bootstrap order for an ha-aws cluster, every recipe on its VM:
// wait-ready on every VM; etcd on every etcd VM, then etcd-health on one of
// them; haproxy on the load balancer; then either k3s (k3s-server on the
// first control plane, then on the others with Join set, then k3s-agent on
// the workers) or kubeadm (kubeadm-prereqs on control planes and workers,
// kubeadm-init on the first control plane, cni there, kubeadm-join-cp on the
// other control planes, kubeadm-join-worker on the workers, preceded by
// kubeadm-refresh-join on the first control plane when the join credentials
// may have expired); finally nodes-ready on the first control plane.
// drain-node and fetch-kubeconfig also run on the first control plane.
//
// The VMs need: etcd 2379-2380/tcp among etcd VMs and from control planes;
// 6443/tcp to the load balancer and from it to control planes; 10250/tcp
// among nodes; 8472/udp (flannel VXLAN) among nodes; outbound HTTPS to
// github.com, get.k3s.io, pkgs.k8s.io and the container registries.
package bootstrap

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

// Recipe names, as written in each script's "# kforge-recipe:" line.
const (
	RecipeWaitReady               = "wait-ready"
	RecipeEtcd                    = "etcd"
	RecipeEtcdHealth              = "etcd-health"
	RecipeHAProxy                 = "haproxy"
	RecipeK3sServer               = "k3s-server"
	RecipeK3sAgent                = "k3s-agent"
	RecipeKubeadmPrereqs          = "kubeadm-prereqs"
	RecipeKubeadmInit             = "kubeadm-init"
	RecipeKubeadmJoinControlPlane = "kubeadm-join-cp"
	RecipeKubeadmJoinWorker       = "kubeadm-join-worker"
	RecipeKubeadmRefreshJoin      = "kubeadm-refresh-join"
	RecipeCNI                     = "cni"
	RecipeNodesReady              = "nodes-ready"
	RecipeDrainNode               = "drain-node"
	RecipeFetchKubeconfig         = "fetch-kubeconfig"
)

// Recipes returns every recipe name, in bootstrap order.
func Recipes() []string {
	return []string{
		RecipeWaitReady, RecipeEtcd, RecipeEtcdHealth, RecipeHAProxy,
		RecipeK3sServer, RecipeK3sAgent,
		RecipeKubeadmPrereqs, RecipeKubeadmInit, RecipeCNI, RecipeKubeadmRefreshJoin,
		RecipeKubeadmJoinControlPlane, RecipeKubeadmJoinWorker,
		RecipeNodesReady, RecipeDrainNode, RecipeFetchKubeconfig,
		RecipeArtifactsMissing, RecipeReceive, RecipeEtcdReplaceMember, RecipeKubeadmEtcdServers, RecipeCloudIntegration,
		RecipeEtcdSnapshot, RecipeEtcdSnapshotRead, RecipeEtcdRestore, RecipeAPIServerStop, RecipeAPIServerStart,
		RecipeEtcdBackupSchedule, RecipeEtcdBackupAgent, RecipeKubeadmUpgrade, RecipeUncordonNode,
	}
}

// APIServerPort is the Kubernetes API port, on control planes and on the
// load balancer.
const APIServerPort = 6443

// Node is one VM as the recipes see it.
type Node struct {
	// Name is the VM's name inside the cluster: the etcd member name, or the
	// Kubernetes node name. Lowercase letters, digits, '-' and '.'.
	Name string `json:"name"`
	// PrivateIP is the VM's address in the VPC; cluster traffic uses it.
	PrivateIP string `json:"privateIp"`
	// PublicIP is the VM's public address, if any.
	PublicIP string `json:"publicIp,omitempty"`
	// ProviderID is the node's Kubernetes provider ID
	// (aws:///<zone>/<instance-id>), for nodes of clusters that run an
	// external cloud provider.
	ProviderID string `json:"providerId,omitempty"`
}

// providerIDRE is an AWS provider ID: aws:///<zone>/<instance-id>.
var providerIDRE = regexp.MustCompile(`^aws:///[a-z0-9-]+/i-[0-9a-f]{8,17}$`)

// validateProviderID checks the node's provider ID, which an external
// cloud provider needs and nothing else uses.
func (n Node) validateProviderID(external bool) error {
	switch {
	case external && !providerIDRE.MatchString(n.ProviderID):
		return fmt.Errorf("node %s: provider ID %q: want aws:///<zone>/<instance-id>", n.Name, n.ProviderID)
	case !external && n.ProviderID != "":
		return fmt.Errorf("node %s: a provider ID without an external cloud provider", n.Name)
	}
	return nil
}

// nodeName is what Kubernetes accepts as a node name (an RFC 1123 subdomain)
// and etcd as a member name.
var nodeName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// validate checks the node's name and addresses; role names the node in
// errors ("etcd member", "load balancer").
func (n Node) validate(role string, needName bool) error {
	if needName {
		if err := validNodeName(role, n.Name); err != nil {
			return err
		}
	}
	if _, err := parseIP(n.PrivateIP); err != nil {
		return fmt.Errorf("%s %s: private IP: %w", role, n.Name, err)
	}
	if n.PublicIP != "" {
		if _, err := parseIP(n.PublicIP); err != nil {
			return fmt.Errorf("%s %s: public IP: %w", role, n.Name, err)
		}
	}
	return nil
}

// validNodeName checks a node or member name.
func validNodeName(role, name string) error {
	if name == "" {
		return fmt.Errorf("%s: a name is required", role)
	}
	if len(name) > 253 || !nodeName.MatchString(name) {
		return fmt.Errorf("%s %q: the name must be lowercase letters, digits, '-' and '.', starting and ending with a letter or digit", role, name)
	}
	return nil
}

// privateAddr returns the parsed private IP (validate first).
func (n Node) privateAddr() netip.Addr {
	a, _ := parseIP(n.PrivateIP)
	return a
}

// parseIP parses an IPv4 or IPv6 address without zone.
func parseIP(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, fmt.Errorf("missing address")
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	return a.Unmap(), nil
}

// hostPort formats an address and port, bracketing IPv6.
func hostPort(a netip.Addr, port int) string {
	return netip.AddrPortFrom(a, uint16(port)).String()
}

// httpsURL returns https://<addr>:<port>.
func httpsURL(a netip.Addr, port int) string {
	return "https://" + hostPort(a, port)
}

// validPort checks a TCP port number.
func validPort(what string, p int) error {
	if p < 1 || p > 65535 {
		return fmt.Errorf("%s %d is not a TCP port", what, p)
	}
	return nil
}

// orDefault returns v, or def when v is the zero value.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// lowerAlnum is the alphabet of bootstrap and k3s tokens.
const lowerAlnum = "abcdefghijklmnopqrstuvwxyz0123456789"

// randomString returns n characters drawn uniformly from lowerAlnum.
func randomString(n int) (string, error) {
	var b strings.Builder
	buf := make([]byte, 1)
	for b.Len() < n {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("read random bytes: %w", err)
		}
		// 252 = 7*36: reject the top of the range to keep the draw uniform.
		if buf[0] >= 252 {
			continue
		}
		b.WriteByte(lowerAlnum[int(buf[0])%len(lowerAlnum)])
	}
	return b.String(), nil
}

// bootstrapTokenRE is the form of a kubeadm bootstrap token.
var bootstrapTokenRE = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)

// certificateKeyRE is the form of a kubeadm certificate key (AES-256 in hex).
var certificateKeyRE = regexp.MustCompile(`^[a-f0-9]{64}$`)

// NewBootstrapToken returns a random kubeadm bootstrap token
// ([a-z0-9]{6}.[a-z0-9]{16}), which authenticates joining nodes.
func NewBootstrapToken() (string, error) {
	id, err := randomString(6)
	if err != nil {
		return "", fmt.Errorf("generate bootstrap token: %w", err)
	}
	secret, err := randomString(16)
	if err != nil {
		return "", fmt.Errorf("generate bootstrap token: %w", err)
	}
	return id + "." + secret, nil
}

// NewCertificateKey returns a random kubeadm certificate key (64 hex
// characters), which encrypts the control-plane certificates kubeadm-init
// uploads for the other control planes.
func NewCertificateKey() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate certificate key: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// NewK3sToken returns a random k3s cluster token: the shared secret of k3s
// servers (it also encrypts their bootstrap data in the datastore) and agents.
func NewK3sToken() (string, error) {
	s, err := randomString(48)
	if err != nil {
		return "", fmt.Errorf("generate k3s token: %w", err)
	}
	return s, nil
}

// validSecret checks a token-like secret without ever quoting it in the error.
func validSecret(what, s string, minLen int) error {
	if len(s) < minLen {
		return fmt.Errorf("%s must be at least %d characters", what, minLen)
	}
	for _, r := range s {
		if r < 0x21 || r > 0x7e {
			return fmt.Errorf("%s must be printable ASCII without spaces", what)
		}
	}
	return nil
}

// supportedMinors lists the Kubernetes minors with pinned releases.
const supportedMinors = "1.32, 1.33, 1.34"

// pinnedRelease returns the tested Kubernetes and k3s releases of a minor.
func pinnedRelease(minor string) (kubernetes, k3s string, ok bool) {
	switch minor {
	case "1.32":
		return "v1.32.9", "v1.32.9+k3s1", true
	case "1.33":
		return "v1.33.5", "v1.33.5+k3s1", true
	case "1.34":
		return "v1.34.2", "v1.34.1+k3s1", true
	}
	return "", "", false
}

var (
	minorRE      = regexp.MustCompile(`^v?(\d+)\.(\d+)$`)
	k8sVersionRE = regexp.MustCompile(`^v(\d+)\.(\d+)\.(\d+)$`)
	k3sVersionRE = regexp.MustCompile(`^v(\d+)\.(\d+)\.(\d+)\+k3s\d+$`)
)

// KubernetesVersion returns the Kubernetes release kubeadm installs for a
// requested version: a minor ("1.33" or "v1.33") maps to a pinned, tested
// patch release; a full version ("1.33.4" or "v1.33.4") is returned as is,
// with a leading "v".
func KubernetesVersion(requested string) (string, error) {
	v := "v" + strings.TrimPrefix(requested, "v")
	if k8sVersionRE.MatchString(v) {
		return v, nil
	}
	if m := minorRE.FindStringSubmatch(requested); m != nil {
		if p, _, ok := pinnedRelease(m[1] + "." + m[2]); ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("kubernetes version %q: want a minor kforge knows (%s) or a full version such as v1.33.5", requested, supportedMinors)
}

// K3sVersion returns the k3s release to install for a requested Kubernetes
// version: a minor ("1.33") maps to a pinned k3s release; a Kubernetes
// release ("1.33.4") to its first k3s build ("v1.33.4+k3s1"); a k3s release
// ("v1.33.5+k3s2") is returned as is.
func K3sVersion(requested string) (string, error) {
	v := "v" + strings.TrimPrefix(requested, "v")
	if k3sVersionRE.MatchString(v) {
		return v, nil
	}
	if k8sVersionRE.MatchString(v) {
		// The first k3s build of a Kubernetes release.
		return v + "+k3s1", nil
	}
	if m := minorRE.FindStringSubmatch(requested); m != nil {
		if _, p, ok := pinnedRelease(m[1] + "." + m[2]); ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("k3s version %q: want a minor kforge knows (%s) or a k3s release such as v1.33.5+k3s1", requested, supportedMinors)
}
