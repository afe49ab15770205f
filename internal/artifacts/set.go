package artifacts

import (
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"

	"github.com/kforge/kforge/internal/cloudint"
)

// Roles of the VMs that install artifacts (the load balancer installs
// HAProxy from the distribution and needs none).
const (
	RoleEtcd = "etcd"
	RoleCP   = "cp"
	RoleWP   = "wp"
)

// Bootstraps.
const (
	Kubeadm = "kubeadm"
	K3s     = "k3s"
)

// Upstream releases kforge installs besides Kubernetes and k3s.
const (
	// CNIPluginsVersion is the containernetworking plugins release
	// (bridge, host-local, loopback, portmap: what Flannel delegates to).
	CNIPluginsVersion = "v1.8.0"
	// FlannelVersion is the Flannel release of the pod network of kubeadm
	// clusters, and FlannelCNIPluginVersion that of its CNI plugin image.
	FlannelVersion          = "v0.27.4"
	FlannelCNIPluginVersion = "v1.8.0-flannel1"
)

// Arches are the Debian architectures kforge supports.
var Arches = []string{"amd64", "arm64"}

// Set is what one cluster's VMs install, by version.
type Set struct {
	Bootstrap string
	// Kubernetes is the release of kubeadm clusters (v1.34.2); K3s that
	// of k3s clusters (v1.34.1+k3s1).
	Kubernetes string
	K3s        string
	// Etcd is the etcd release (v3.5.27).
	Etcd string
	// EtcdSHA256 pins the upstream etcd tarball of each architecture,
	// when known.
	EtcdSHA256 map[string]string
	// Cloud adds the images of the AWS cloud integration (the cloud
	// controller manager and the EBS CSI driver; package cloudint).
	Cloud bool
}

// release is the Kubernetes release of the Set's nodes, of either
// bootstrap (v1.34.1 for k3s v1.34.1+k3s1).
func (s Set) release() string {
	if s.Bootstrap == K3s {
		r, _, _ := strings.Cut(s.K3s, "+")
		return r
	}
	return s.Kubernetes
}

// cloudImages are the cloud integration's images a role runs, if the Set
// has them.
func (s Set) cloudImages(role string) ([]string, error) {
	if !s.Cloud {
		return nil, nil
	}
	imgs, err := cloudint.ImagesFor(s.release(), "")
	if err != nil {
		return nil, err
	}
	if role == RoleCP {
		return append(imgs.ControlPlane(), imgs.Node()...), nil
	}
	return imgs.Node(), nil
}

// imageFiles are the files of images refs (each once), for an
// architecture.
func imageFiles(arch string, refs []string) []File {
	var out []File
	seen := map[string]bool{}
	for _, ref := range refs {
		if !seen[ref] {
			seen[ref] = true
			out = append(out, File{Path: ImagePath(arch, ref), Image: ref, Arch: arch})
		}
	}
	return out
}

// KubeadmImages are the images a kubeadm cluster of this Set runs, with
// Flannel's: what kubeadm config images list prints (without etcd, which
// is external) and the pod network's.
type KubeadmImages struct {
	APIServer, ControllerManager, Scheduler, Proxy string
	CoreDNS, Pause                                 string
	Flannel, FlannelCNIPlugin                      string
}

// ControlPlane lists the images only control planes run.
func (k KubeadmImages) ControlPlane() []string {
	return []string{k.APIServer, k.ControllerManager, k.Scheduler}
}

// Node lists the images every node runs.
func (k KubeadmImages) Node() []string {
	return []string{k.Proxy, k.CoreDNS, k.Pause, k.Flannel, k.FlannelCNIPlugin}
}

// kubeadmAddons are the CoreDNS and pause images each kubeadm minor uses
// (kubeadm's constants for that release).
var kubeadmAddons = map[string]struct{ coreDNS, pause string }{
	"1.32": {"v1.11.3", "3.10"},
	"1.33": {"v1.12.0", "3.10"},
	"1.34": {"v1.12.1", "3.10.1"},
}

var k8sRelRE = regexp.MustCompile(`^v(\d+)\.(\d+)\.(\d+)$`)

// Images returns the images of a kubeadm cluster of this Set, from the
// default registries (registry.k8s.io, ghcr.io), or all from repo when it
// is set (kubeadm's imageRepository; Flannel's images keep their names
// under it).
func (s Set) Images(repo string) (KubeadmImages, error) {
	m := k8sRelRE.FindStringSubmatch(s.Kubernetes)
	if m == nil {
		return KubeadmImages{}, fmt.Errorf("kubernetes version %q: want a release such as v1.34.2", s.Kubernetes)
	}
	minor := m[1] + "." + m[2]
	add, ok := kubeadmAddons[minor]
	if !ok {
		return KubeadmImages{}, fmt.Errorf("kforge does not know the CoreDNS and pause images of Kubernetes %s", minor)
	}
	k8s, flannel := "registry.k8s.io", "ghcr.io/flannel-io"
	coredns := k8s + "/coredns/coredns"
	if repo != "" {
		repo = strings.TrimRight(repo, "/")
		// kubeadm drops the coredns/ path element under a custom repository.
		k8s, flannel, coredns = repo, repo, repo+"/coredns"
	}
	return KubeadmImages{
		APIServer:         k8s + "/kube-apiserver:" + s.Kubernetes,
		ControllerManager: k8s + "/kube-controller-manager:" + s.Kubernetes,
		Scheduler:         k8s + "/kube-scheduler:" + s.Kubernetes,
		Proxy:             k8s + "/kube-proxy:" + s.Kubernetes,
		CoreDNS:           coredns + ":" + add.coreDNS,
		Pause:             k8s + "/pause:" + add.pause,
		Flannel:           flannel + "/flannel:" + FlannelVersion,
		FlannelCNIPlugin:  flannel + "/flannel-cni-plugin:" + FlannelCNIPluginVersion,
	}, nil
}

// EtcdTarball is the layout path of the etcd tarball of an architecture.
func (s Set) EtcdTarball(arch string) string {
	return fmt.Sprintf("etcd/%s/etcd-%s-linux-%s.tar.gz", s.Etcd, s.Etcd, arch)
}

// KubernetesBinary is the layout path of kubeadm, kubelet or kubectl.
func (s Set) KubernetesBinary(arch, name string) string {
	return fmt.Sprintf("kubernetes/%s/bin/linux/%s/%s", s.Kubernetes, arch, name)
}

// CNIPluginsTarball is the layout path of the CNI plugins tarball.
func (s Set) CNIPluginsTarball(arch string) string {
	return fmt.Sprintf("cni-plugins/%s/cni-plugins-linux-%s-%s.tgz", CNIPluginsVersion, arch, CNIPluginsVersion)
}

// K3sBinary is the layout path of the k3s binary (k3s for amd64,
// k3s-<arch> for the others, as k3s names its release files).
func (s Set) K3sBinary(arch string) string {
	name := "k3s"
	if arch != "amd64" {
		name += "-" + arch
	}
	return fmt.Sprintf("k3s/%s/%s", s.K3s, name)
}

// K3sImages is the layout path of k3s's air-gap images.
func (s Set) K3sImages(arch string) string {
	return fmt.Sprintf("k3s/%s/k3s-airgap-images-%s.tar.zst", s.K3s, arch)
}

// Files returns what a VM of a role and architecture installs, with its
// upstream. withImages adds container image tarballs (not needed when the
// nodes pull from --image-repository).
func (s Set) Files(role, arch string, withImages bool) ([]File, error) {
	var out []File
	switch role {
	case RoleEtcd:
		out = append(out, File{
			Path:     s.EtcdTarball(arch),
			Upstream: fmt.Sprintf("https://github.com/etcd-io/etcd/releases/download/%s/etcd-%s-linux-%s.tar.gz", s.Etcd, s.Etcd, arch),
			SHA256:   s.EtcdSHA256[arch],
			Arch:     arch,
		})
	case RoleCP, RoleWP:
		if s.Bootstrap == K3s {
			rel := "https://github.com/k3s-io/k3s/releases/download/" + url.PathEscape(s.K3s) + "/"
			sums := rel + "sha256sum-" + arch + ".txt"
			bin := s.K3sBinary(arch)
			out = append(out, File{Path: bin, Upstream: rel + bin[strings.LastIndex(bin, "/")+1:], SumURL: sums, Arch: arch})
			if withImages {
				img := s.K3sImages(arch)
				out = append(out, File{Path: img, Upstream: rel + img[strings.LastIndex(img, "/")+1:], SumURL: sums, Arch: arch})
				cloud, err := s.cloudImages(role)
				if err != nil {
					return nil, err
				}
				out = append(out, imageFiles(arch, cloud)...)
			}
			break
		}
		for _, name := range []string{"kubeadm", "kubelet", "kubectl"} {
			u := fmt.Sprintf("https://dl.k8s.io/release/%s/bin/linux/%s/%s", s.Kubernetes, arch, name)
			out = append(out, File{Path: s.KubernetesBinary(arch, name), Upstream: u, SumURL: u + ".sha256",
				SHA256: pinned[s.Kubernetes+"/"+name+"/"+arch], Arch: arch})
		}
		u := fmt.Sprintf("https://github.com/containernetworking/plugins/releases/download/%s/cni-plugins-linux-%s-%s.tgz", CNIPluginsVersion, arch, CNIPluginsVersion)
		out = append(out, File{Path: s.CNIPluginsTarball(arch), Upstream: u, SumURL: u + ".sha256",
			SHA256: pinned["cni-plugins/"+CNIPluginsVersion+"/"+arch], Arch: arch})
		if withImages {
			imgs, err := s.Images("")
			if err != nil {
				return nil, err
			}
			refs := imgs.Node()
			if role == RoleCP {
				refs = append(imgs.ControlPlane(), refs...)
			}
			cloud, err := s.cloudImages(role)
			if err != nil {
				return nil, err
			}
			out = append(out, imageFiles(arch, append(refs, cloud...))...)
		}
	default:
		return nil, fmt.Errorf("artifacts: unknown role %q", role)
	}
	return out, nil
}

// All returns every file of the Set for the given architectures, each
// once, sorted by path: what kforge artifacts fetch downloads.
func (s Set) All(arches []string, withImages bool) ([]File, error) {
	seen := map[string]File{}
	for _, arch := range arches {
		for _, role := range []string{RoleEtcd, RoleCP, RoleWP} {
			fs, err := s.Files(role, arch, withImages)
			if err != nil {
				return nil, err
			}
			for _, f := range fs {
				seen[f.Path] = f
			}
		}
	}
	out := make([]File, 0, len(seen))
	for _, f := range seen {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// pinned are SHA-256 checksums of upstream files kforge's default
// releases use, as their projects publish them: a download is checked
// against these first, and against the upstream's checksum file otherwise.
var pinned = map[string]string{
	"v1.34.2/kubeadm/amd64":    "6a2346006132f6e1ed0b5248e518098cf5abbce25bf11b8926fb1073091b83f4",
	"v1.34.2/kubeadm/arm64":    "065f7de266c59831676cc48b50f404fd18d1f6464502d53980957158e4cab3a7",
	"v1.34.2/kubelet/amd64":    "9c5e717b774ee9b9285ce47e7d2150c29e84837eb19a7eaa24b60b1543c9d58f",
	"v1.34.2/kubelet/arm64":    "3e31b1bee9ab32264a67af8a19679777cd372b1c3a04b5d7621289cf137b357c",
	"v1.34.2/kubectl/amd64":    "9591f3d75e1581f3f7392e6ad119aab2f28ae7d6c6e083dc5d22469667f27253",
	"v1.34.2/kubectl/arm64":    "95df604e914941f3172a93fa8feeb1a1a50f4011dfbe0c01e01b660afc8f9b85",
	"cni-plugins/v1.8.0/amd64": "ab3bda535f9d90766cccc90d3dddb5482003dd744d7f22bcf98186bf8eea8be6",
	"cni-plugins/v1.8.0/arm64": "57ce466fc3b79db1f19b8f4c63e07a1112306efa53c94fe810a2150dd9e07ddb",
}

// DebianArch is the Debian name of an EC2 architecture (x86_64, arm64).
func DebianArch(ec2Arch string) string {
	if ec2Arch == "arm64" {
		return "arm64"
	}
	return "amd64"
}
