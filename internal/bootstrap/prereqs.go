package bootstrap

import (
	"fmt"
	"regexp"
	"strings"
)

// KubeadmPrereqsParams configures kubeadm-prereqs.
type KubeadmPrereqsParams struct {
	// KubernetesVersion is the release of kubelet, kubeadm and kubectl
	// (such as v1.34.2).
	KubernetesVersion string
	// PauseImage is the pod sandbox image containerd runs: the one kubeadm
	// uses for that release (such as registry.k8s.io/pause:3.10.1), so
	// that containerd never pulls another one.
	PauseImage string
	// Offline, if set, installs from the cluster's artifacts instead of
	// the Kubernetes apt repository and the container registries.
	Offline *KubeadmOffline
}

// KubeadmOffline are the artifacts a kubeadm node installs.
type KubeadmOffline struct {
	Kubeadm, Kubelet, Kubectl Artifact
	// CNIPlugins is the containernetworking plugins tarball, unpacked
	// into /opt/cni/bin (what the Kubernetes packages bring otherwise).
	CNIPlugins Artifact
	// Images are image tarballs imported into containerd's k8s.io
	// namespace; empty when the nodes pull from an image repository.
	Images []ImageArtifact
}

// ImageArtifact is a container image tarball and the reference it holds.
type ImageArtifact struct {
	Ref string `json:"ref"`
	Artifact
}

var imageRefRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._:/-]*[a-z0-9])?(:[A-Za-z0-9._-]+)?(@sha256:[0-9a-f]{64})?$`)

func validImageRef(ref string) error {
	if len(ref) > 255 || !imageRefRE.MatchString(ref) {
		return fmt.Errorf("image reference %q is not valid", ref)
	}
	return nil
}

// validImages checks the references and files of offline images.
func validImages(images []ImageArtifact) error {
	for _, img := range images {
		if err := validImageRef(img.Ref); err != nil {
			return err
		}
		if err := img.validate(); err != nil {
			return err
		}
	}
	return nil
}

type prereqsScript struct {
	Version, Minor             string
	Pause                      string
	Offline                    *KubeadmOffline
	Modules, Sysctl            []byte
	KubeletUnit, KubeletDropIn []byte
}

// kubeletUnit and kubeletDropIn are what the Kubernetes packages install
// for the kubelet, for nodes installed from binaries: the unit runs the
// kubelet, the drop-in gives it what kubeadm writes.
const kubeletUnit = `[Unit]
Description=kubelet: The Kubernetes Node Agent (kforge)
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/usr/local/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
`

const kubeletDropIn = `[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/local/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
`

const prereqsBody = `
main() {
	local version={{q .Version}} pause={{q .Pause}}

	# The kubelet refuses to start with swap on.
	swapoff -a
	sed -ri '/\sswap\s/ s/^#*/#/' /etc/fstab

	kforge_changed=0
	{{write "/etc/modules-load.d/kforge-kubernetes.conf" "0644" "root:root" .Modules}}
	# Built into some kernels: load only what is missing.
	if ! grep -qw overlay /proc/filesystems; then
		modprobe overlay
	fi
	if [[ ! -d /proc/sys/net/bridge ]]; then
		modprobe br_netfilter
	fi
	{{write "/etc/sysctl.d/99-kforge-kubernetes.conf" "0644" "root:root" .Sysctl}}
	sysctl -q -p /etc/sysctl.d/99-kforge-kubernetes.conf
{{if .Offline}}
	kforge_apt_install containerd conntrack socat
{{- else}}
	kforge_apt_install containerd conntrack socat apt-transport-https ca-certificates curl gpg
{{- end}}
	kforge_dir /etc/containerd 0755 root:root
	# Without CAP_SYS_RESOURCE (a container, a hardened VM) no process may
	# lower its oom_score_adj, and runc fails to start pods unless
	# containerd leaves it alone.
	local restrict=false capbnd
	capbnd=$(awk '/^CapBnd:/ { print $2 }' /proc/self/status)
	if (( (0x$capbnd >> 24 & 1) == 0 )); then
		restrict=true
	fi
	local containerd_tmp
	containerd_tmp=$(mktemp /etc/containerd/.kforge.XXXXXX)
	containerd config default | sed \
		-e 's/SystemdCgroup = false/SystemdCgroup = true/' \
		-e "s#sandbox_image = .*#sandbox_image = \"$pause\"#" \
		-e "s/restrict_oom_score_adj = .*/restrict_oom_score_adj = $restrict/" >"$containerd_tmp"
	if ! grep -q 'SystemdCgroup = true' "$containerd_tmp" || ! grep -qF "sandbox_image = \"$pause\"" "$containerd_tmp" ||
		! grep -q "restrict_oom_score_adj = $restrict" "$containerd_tmp"; then
		rm -f "$containerd_tmp"
		kforge_fail "cannot set the systemd cgroup driver, the sandbox image and restrict_oom_score_adj in containerd's configuration"
	fi
	kforge_changed=0
	kforge_install "$containerd_tmp" /etc/containerd/config.toml 0644 root:root
	systemctl enable --now containerd.service
	if ((kforge_changed)); then
		systemctl restart containerd.service
	fi
{{if .Offline}}{{with .Offline}}
	kforge_binary {{q .Kubeadm.Path}} {{q .Kubeadm.URL}} {{q .Kubeadm.SHA256}} kubeadm
	kforge_binary {{q .Kubelet.Path}} {{q .Kubelet.URL}} {{q .Kubelet.SHA256}} kubelet
	kforge_binary {{q .Kubectl.Path}} {{q .Kubectl.URL}} {{q .Kubectl.SHA256}} kubectl
	kforge_artifact {{q .CNIPlugins.Path}} {{q .CNIPlugins.URL}} {{q .CNIPlugins.SHA256}}
	if [[ $(cat /opt/cni/bin/.kforge-sha256 2>/dev/null) != {{q .CNIPlugins.SHA256}} ]]; then
		kforge_dir /opt/cni 0755 root:root
		kforge_dir /opt/cni/bin 0755 root:root
		tar -xzf {{q .CNIPlugins.Path}} -C /opt/cni/bin
		printf '%s\n' {{q .CNIPlugins.SHA256}} >/opt/cni/bin/.kforge-sha256
		kforge_log "installed the CNI plugins in /opt/cni/bin"
	fi
	kforge_dir /etc/systemd/system/kubelet.service.d 0755 root:root
	kforge_changed=0
	{{write "/etc/systemd/system/kubelet.service" "0644" "root:root" $.KubeletUnit}}
	{{write "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf" "0644" "root:root" $.KubeletDropIn}}
	if ((kforge_changed)); then
		systemctl daemon-reload
	fi
{{- range .Images}}
	kforge_image {{q .Path}} {{q .URL}} {{q .SHA256}} {{q .Ref}}
{{- end}}
{{- end}}
{{- else}}
	kforge_kube_repo {{q .Minor}}
	kforge_kube_packages "$version" kubelet kubeadm kubectl
{{- end}}
	systemctl enable kubelet.service
	echo "kubeadm prerequisites ready (Kubernetes $version)"
}
`

// RenderKubeadmPrereqs renders kubeadm-prereqs, for every control plane and
// worker of a kubeadm cluster: swap off; the overlay and br_netfilter
// modules (when not built in) and the bridge and forwarding sysctls;
// containerd from the distribution with the systemd cgroup driver and
// kubeadm's pause image as its sandbox image; then either kubelet,
// kubeadm and kubectl of exactly KubernetesVersion from the Kubernetes apt
// repository of its minor (pkgs.k8s.io), held against upgrades, or, with
// Offline, the same binaries, the CNI plugins and the container images
// from the cluster's artifacts (each checked against its SHA-256), with
// the kubelet's systemd unit and kubeadm drop-in; kubelet enabled.
func RenderKubeadmPrereqs(p KubeadmPrereqsParams) (string, error) {
	m := k8sVersionRE.FindStringSubmatch(p.KubernetesVersion)
	if m == nil {
		return "", fmt.Errorf("kubeadm-prereqs: kubernetes version %q: want a release such as v1.33.5", p.KubernetesVersion)
	}
	if err := validImageRef(p.PauseImage); err != nil {
		return "", fmt.Errorf("kubeadm-prereqs: pause image: %w", err)
	}
	if o := p.Offline; o != nil {
		if err := validArtifacts(o.Kubeadm, o.Kubelet, o.Kubectl, o.CNIPlugins); err != nil {
			return "", fmt.Errorf("kubeadm-prereqs: %w", err)
		}
		if err := validImages(o.Images); err != nil {
			return "", fmt.Errorf("kubeadm-prereqs: %w", err)
		}
	}
	minor := "v" + m[1] + "." + m[2]
	return renderScript(RecipeKubeadmPrereqs, prereqsBody, prereqsScript{
		Version: strings.TrimPrefix(p.KubernetesVersion, "v"),
		Minor:   minor,
		Pause:   p.PauseImage,
		Offline: p.Offline,
		Modules: []byte("overlay\nbr_netfilter\n"),
		Sysctl: []byte("net.bridge.bridge-nf-call-iptables = 1\n" +
			"net.bridge.bridge-nf-call-ip6tables = 1\n" +
			"net.ipv4.ip_forward = 1\n"),
		KubeletUnit:   []byte(kubeletUnit),
		KubeletDropIn: []byte(kubeletDropIn),
	})
}
