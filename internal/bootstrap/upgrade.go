package bootstrap

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Recipes of Kubernetes upgrades.
const (
	RecipeKubeadmUpgrade = "kubeadm-upgrade"
	RecipeUncordonNode   = "uncordon-node"
)

// Where kubeadm-upgrade keeps its configuration, and the marker that
// names the release a node was upgraded to.
const (
	KubeadmUpgradeConfigPath = KubeadmConfigDir + "/kubeadm-upgrade.yaml"
	kubeadmUpgradedMarker    = KubeadmConfigDir + "/upgraded"
	// DefaultKubeadmUpgradeTimeout bounds kubeadm upgrade apply or node.
	DefaultKubeadmUpgradeTimeout = 20 * time.Minute
)

var kubeletVersionRE = regexp.MustCompile(`^v\d+\.\d+\.\d+(\+k3s\d+)?$`)

// KubeadmUpgradeParams configures kubeadm-upgrade on one node.
type KubeadmUpgradeParams struct {
	// KubernetesVersion is the release to upgrade to (v1.34.2).
	KubernetesVersion string
	// First upgrades the cluster (kubeadm upgrade apply, on the first
	// control plane); otherwise the node follows it (kubeadm upgrade
	// node: the other control planes, then the workers).
	First bool
	// Offline installs kubeadm, kubelet and kubectl, and imports the
	// images, from the cluster's artifacts of the new release.
	Offline *KubeadmOffline
	// Timeout bounds kubeadm (default DefaultKubeadmUpgradeTimeout).
	Timeout time.Duration
}

// kubeadm v1beta4's UpgradeConfiguration, the parts kforge sets.
type upgradeConfiguration struct {
	typeMeta `json:",inline"`
	Apply    upgradeApply `json:"apply"`
	Node     upgradeNode  `json:"node"`
}

type upgradeApply struct {
	KubernetesVersion string `json:"kubernetesVersion"`
	// EtcdUpgrade is false: the etcd is kforge's, outside the cluster.
	EtcdUpgrade     *bool  `json:"etcdUpgrade"`
	ImagePullPolicy string `json:"imagePullPolicy,omitempty"`
}

type upgradeNode struct {
	EtcdUpgrade     *bool  `json:"etcdUpgrade"`
	ImagePullPolicy string `json:"imagePullPolicy,omitempty"`
}

// KubeadmUpgradeConfig renders the UpgradeConfiguration
// (kubeadm.k8s.io/v1beta4) of kubeadm-upgrade: the release, no etcd
// upgrade (the etcd is external), and, offline, images never pulled (they
// are imported from the artifacts).
func KubeadmUpgradeConfig(p KubeadmUpgradeParams) ([]byte, error) {
	if !k8sVersionRE.MatchString(p.KubernetesVersion) {
		return nil, fmt.Errorf("kubeadm-upgrade: kubernetes version %q: want a release such as v1.34.2", p.KubernetesVersion)
	}
	no := false
	pull := ""
	if p.Offline != nil && len(p.Offline.Images) > 0 {
		pull = "Never"
	}
	return marshalDocs(upgradeConfiguration{
		typeMeta: typeMeta{APIVersion: kubeadmAPIVersion, Kind: "UpgradeConfiguration"},
		Apply:    upgradeApply{KubernetesVersion: p.KubernetesVersion, EtcdUpgrade: &no, ImagePullPolicy: pull},
		Node:     upgradeNode{EtcdUpgrade: &no, ImagePullPolicy: pull},
	})
}

type kubeadmUpgradeScript struct {
	KubeadmUpgradeParams
	Version, Minor, ConfigDir, ConfigPath, Marker string
	Config                                        []byte
}

const kubeadmUpgradeBody = `
main() {
	local version={{q .Version}} marker={{q .Marker}}
	if [[ -f $marker ]] && [[ $(cat "$marker") == "$version" ]]; then
		echo "already upgraded to Kubernetes $version"
		return 0
	fi
{{- if .Offline}}{{with .Offline}}
	kforge_binary {{q .Kubeadm.Path}} {{q .Kubeadm.URL}} {{q .Kubeadm.SHA256}} kubeadm
{{- range .Images}}
	kforge_image {{q .Path}} {{q .URL}} {{q .SHA256}} {{q .Ref}}
{{- end}}
{{- end}}
{{- else}}
	kforge_kube_repo {{q .Minor}}
	kforge_kube_packages "$version" kubeadm
{{- end}}
	[[ $(kubeadm version -o short) == "v$version" ]] || kforge_fail "kubeadm is not v$version after its install"
	kforge_dir {{q .ConfigDir}} 0700 root:root
	{{write .ConfigPath "0600" "root:root" .Config}}
{{- if .First}}
	kforge_log "kubeadm upgrade apply v$version"
	timeout {{seconds .Timeout}} kubeadm upgrade apply --config {{q .ConfigPath}} --yes >&2 ||
		kforge_fail "kubeadm upgrade apply v$version failed (kubeadm restores what it changed; see its output above)"
{{- else}}
	kforge_log "kubeadm upgrade node"
	timeout {{seconds .Timeout}} kubeadm upgrade node --config {{q .ConfigPath}} >&2 ||
		kforge_fail "kubeadm upgrade node failed (see its output above)"
{{- end}}
{{- if .Offline}}{{with .Offline}}
	kforge_binary {{q .Kubelet.Path}} {{q .Kubelet.URL}} {{q .Kubelet.SHA256}} kubelet
	kforge_binary {{q .Kubectl.Path}} {{q .Kubectl.URL}} {{q .Kubectl.SHA256}} kubectl
{{- end}}
{{- else}}
	kforge_kube_packages "$version" kubelet kubectl
{{- end}}
	systemctl daemon-reload
	systemctl restart kubelet.service
	printf '%s\n' "$version" >"$marker"
	echo "upgraded to Kubernetes $version"
}
`

// RenderKubeadmUpgrade renders kubeadm-upgrade, as kubeadm's upgrade
// procedure goes on one node: kubeadm of the new release first (from the
// Kubernetes apt repository of its minor, or the artifacts, whose images
// it imports), then kubeadm upgrade apply (the first control plane) or
// kubeadm upgrade node (the others) with KubeadmUpgradeConfig, then the
// kubelet and kubectl of the release and a kubelet restart. A marker
// names the release the node was upgraded to: run again, it does nothing.
func RenderKubeadmUpgrade(p KubeadmUpgradeParams) (string, error) {
	cfg, err := KubeadmUpgradeConfig(p)
	if err != nil {
		return "", err
	}
	m := k8sVersionRE.FindStringSubmatch(p.KubernetesVersion)
	if o := p.Offline; o != nil {
		if err := validArtifacts(o.Kubeadm, o.Kubelet, o.Kubectl); err != nil {
			return "", fmt.Errorf("kubeadm-upgrade: %w", err)
		}
		if err := validImages(o.Images); err != nil {
			return "", fmt.Errorf("kubeadm-upgrade: %w", err)
		}
	}
	if p.Timeout < 0 {
		return "", fmt.Errorf("kubeadm-upgrade: the timeout must not be negative")
	}
	p.Timeout = orDefault(p.Timeout, DefaultKubeadmUpgradeTimeout)
	return renderScript(RecipeKubeadmUpgrade, kubeadmUpgradeBody, kubeadmUpgradeScript{
		KubeadmUpgradeParams: p, Version: strings.TrimPrefix(p.KubernetesVersion, "v"), Minor: "v" + m[1] + "." + m[2],
		ConfigDir: KubeadmConfigDir, ConfigPath: KubeadmUpgradeConfigPath, Marker: kubeadmUpgradedMarker, Config: cfg,
	})
}

// UncordonNodeParams configures uncordon-node.
type UncordonNodeParams struct {
	// Kubeconfig is the admin kubeconfig on the VM.
	Kubeconfig string
	// Node is the Kubernetes node to put back in service.
	Node string
}

const uncordonNodeBody = `
main() {
	kubectl --kubeconfig {{q .Kubeconfig}} --request-timeout=30s uncordon {{q .Node}} >&2 ||
		kforge_fail "cannot uncordon node {{.Node}}"
	echo "node {{.Node}} uncordoned"
}
`

// RenderUncordonNode renders uncordon-node: the node takes pods again
// (after drain-node with Keep and its upgrade).
func RenderUncordonNode(p UncordonNodeParams) (string, error) {
	if err := validKubeconfigPath(p.Kubeconfig); err != nil {
		return "", fmt.Errorf("uncordon-node: %w", err)
	}
	if err := validNodeName("node", p.Node); err != nil {
		return "", fmt.Errorf("uncordon-node: %w", err)
	}
	return renderScript(RecipeUncordonNode, uncordonNodeBody, p)
}
