package bootstrap

import (
	"errors"
	"fmt"
	"time"
)

// Admin kubeconfigs written by the bootstraps on the first control plane.
const (
	K3sKubeconfig     = "/etc/rancher/k3s/k3s.yaml"
	KubeadmKubeconfig = "/etc/kubernetes/admin.conf"
)

// Default bounds of the waiting recipes.
const (
	DefaultWaitReadyTimeout  = 15 * time.Minute
	DefaultNodesReadyTimeout = 10 * time.Minute
	DefaultDrainTimeout      = 5 * time.Minute
)

// WaitReadyParams configures wait-ready.
type WaitReadyParams struct {
	// Timeout bounds the wait for cloud-init (default DefaultWaitReadyTimeout).
	Timeout time.Duration
}

const waitReadyBody = `
main() {
	if ! command -v cloud-init >/dev/null 2>&1; then
		kforge_log "cloud-init is not installed; nothing to wait for"
		echo ready
		return 0
	fi
	local rc=0
	timeout {{seconds .Timeout}} cloud-init status --wait >/dev/null || rc=$?
	case $rc in
	0) ;;
	2) kforge_log "cloud-init finished with recoverable errors" ;;
	124) kforge_fail "cloud-init did not finish within {{seconds .Timeout}}s" ;;
	*)
		cloud-init status --long >&2 || true
		kforge_fail "cloud-init failed (exit $rc); see /var/log/cloud-init-output.log on the VM"
		;;
	esac
	echo ready
}
`

// RenderWaitReady renders wait-ready: it waits (bounded) for cloud-init to
// finish on a fresh VM, then prints "ready". cloud-init's "done with
// recoverable errors" counts as ready.
func RenderWaitReady(p WaitReadyParams) (string, error) {
	if p.Timeout < 0 {
		return "", errors.New("wait-ready: the timeout must not be negative")
	}
	p.Timeout = orDefault(p.Timeout, DefaultWaitReadyTimeout)
	return renderScript(RecipeWaitReady, waitReadyBody, p)
}

// NodesReadyParams configures nodes-ready.
type NodesReadyParams struct {
	// Kubeconfig is the admin kubeconfig on the VM (K3sKubeconfig or
	// KubeadmKubeconfig).
	Kubeconfig string
	// Count is how many nodes must be Ready.
	Count int
	// Timeout bounds the wait (default DefaultNodesReadyTimeout).
	Timeout time.Duration
	// Initialized counts only the nodes that the cloud controller manager
	// has initialised (no UninitializedTaint left), for clusters whose
	// cloud provider is external.
	Initialized bool
	// KubeletVersion, if set, counts only the nodes whose kubelet runs
	// that release (after an upgrade: v1.34.2, v1.34.2+k3s1).
	KubeletVersion string
}

// UninitializedTaint is the taint a kubelet with an external cloud
// provider registers its node with, until the cloud controller manager
// has initialised it.
const UninitializedTaint = "node.cloudprovider.kubernetes.io/uninitialized"

const nodesReadyBody = `
main() {
	local kubeconfig={{q .Kubeconfig}} want={{.Count}} ready=0
	local deadline=$((SECONDS + {{seconds .Timeout}}))
	while :; do
		ready=$(kubectl --kubeconfig "$kubeconfig" --request-timeout=15s get nodes \
			-o 'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{" "}{.status.nodeInfo.kubeletVersion}{" "}{.spec.taints[*].key}{"\n"}{end}' 2>/dev/null |
{{- if .KubeletVersion}}
			awk -v v={{q .KubeletVersion}} '$2 == v' |
{{- end}}
{{- if .Initialized}}
			grep -v ' .*` + UninitializedTaint + `' |
{{- end}}
			grep -c '^True' || true)
		if ((ready >= want)); then
			break
		fi
		if ((SECONDS >= deadline)); then
			kubectl --kubeconfig "$kubeconfig" --request-timeout=15s get nodes -o wide >&2 || true
{{- if .Initialized}}
			kubectl --kubeconfig "$kubeconfig" --request-timeout=15s -n kube-system logs --tail=20 daemonset/` + CloudControllerDaemonSet + ` >&2 || true
			kforge_fail "only $ready of $want nodes are Ready and initialised by the AWS cloud controller manager after {{seconds .Timeout}}s (a node tainted ` + UninitializedTaint + ` is not initialised: see the cloud controller's log above, and its role's permissions)"
{{- else if .KubeletVersion}}
			kforge_fail "only $ready of $want nodes are Ready with kubelet {{.KubeletVersion}} after {{seconds .Timeout}}s"
{{- else}}
			kforge_fail "only $ready of $want nodes are Ready after {{seconds .Timeout}}s"
{{- end}}
		fi
		sleep {{pollSeconds .Timeout}}
	done
	echo "$ready/$want nodes ready"
}
`

// RenderNodesReady renders nodes-ready: it waits (bounded) until at least
// Count nodes are Ready, then prints "<ready>/<count> nodes ready".
func RenderNodesReady(p NodesReadyParams) (string, error) {
	if err := validKubeconfigPath(p.Kubeconfig); err != nil {
		return "", fmt.Errorf("nodes-ready: %w", err)
	}
	if p.Count < 1 {
		return "", fmt.Errorf("nodes-ready: the node count must be at least 1, not %d", p.Count)
	}
	if p.Timeout < 0 {
		return "", errors.New("nodes-ready: the timeout must not be negative")
	}
	if p.KubeletVersion != "" && !kubeletVersionRE.MatchString(p.KubeletVersion) {
		return "", fmt.Errorf("nodes-ready: kubelet version %q: want a release such as v1.34.2", p.KubeletVersion)
	}
	p.Timeout = orDefault(p.Timeout, DefaultNodesReadyTimeout)
	return renderScript(RecipeNodesReady, nodesReadyBody, p)
}

// DrainNodeParams configures drain-node.
type DrainNodeParams struct {
	// Kubeconfig is the admin kubeconfig on the VM.
	Kubeconfig string
	// Node is the Kubernetes node name to drain and delete.
	Node string
	// Timeout bounds the drain (default DefaultDrainTimeout).
	Timeout time.Duration
	// Gone: the node's VM no longer exists (it was replaced). Its Node is
	// deleted without a drain (its pods went with the VM), so that the
	// new VM can join under the same name.
	Gone bool
	// Keep drains the node (cordoned) without deleting it: before an
	// upgrade; uncordon-node puts it back in service.
	Keep bool
}

const drainNodeBody = `
main() {
	local kubeconfig={{q .Kubeconfig}} node={{q .Node}}
	kforge_exists() {
		local found
		found=$(kubectl --kubeconfig "$kubeconfig" --request-timeout=30s get node "$node" --ignore-not-found -o name) ||
			kforge_fail "cannot reach the Kubernetes API to look up node $node"
		[[ -n $found ]]
	}
	if ! kforge_exists; then
		echo "node $node already gone"
		return 0
	fi
{{- if .Gone}}
	kforge_log "deleting node $node: its VM was replaced"
	kubectl --kubeconfig "$kubeconfig" --request-timeout=30s delete node "$node" --ignore-not-found >&2
	echo "node $node deleted"
{{- else}}
	if ! kubectl --kubeconfig "$kubeconfig" drain "$node" --ignore-daemonsets --delete-emptydir-data --force \
		--timeout={{seconds .Timeout}}s >&2; then
		if ! kforge_exists; then
			echo "node $node already gone"
			return 0
		fi
		kforge_fail "cannot drain node $node within {{seconds .Timeout}}s (a PodDisruptionBudget may block eviction)"
	fi
{{- if .Keep}}
	echo "node $node drained"
{{- else}}
	kubectl --kubeconfig "$kubeconfig" --request-timeout=30s delete node "$node" --ignore-not-found >&2
	echo "node $node drained and deleted"
{{- end}}
{{- end}}
}
`

// RenderDrainNode renders drain-node: it drains the node (ignoring
// DaemonSets, deleting emptyDir data, evicting unmanaged pods, bounded by
// Timeout), then deletes it; with Gone it only deletes it. A node that
// does not exist counts as done.
func RenderDrainNode(p DrainNodeParams) (string, error) {
	if err := validKubeconfigPath(p.Kubeconfig); err != nil {
		return "", fmt.Errorf("drain-node: %w", err)
	}
	if err := validNodeName("node", p.Node); err != nil {
		return "", fmt.Errorf("drain-node: %w", err)
	}
	if p.Timeout < 0 {
		return "", errors.New("drain-node: the timeout must not be negative")
	}
	if p.Gone && p.Keep {
		return "", errors.New("drain-node: a node whose VM is gone cannot be kept")
	}
	p.Timeout = orDefault(p.Timeout, DefaultDrainTimeout)
	return renderScript(RecipeDrainNode, drainNodeBody, p)
}

// FetchKubeconfigParams configures fetch-kubeconfig.
type FetchKubeconfigParams struct {
	// Kubeconfig is the admin kubeconfig on the VM.
	Kubeconfig string
}

const fetchKubeconfigBody = `
main() {
	local kubeconfig={{q .Kubeconfig}}
	if [[ ! -s $kubeconfig ]]; then
		kforge_fail "$kubeconfig does not exist yet: the control plane is not bootstrapped"
	fi
	cat -- "$kubeconfig"
}
`

// RenderFetchKubeconfig renders fetch-kubeconfig: it prints the admin
// kubeconfig on standard output and nothing else there. The output is a
// secret: the caller must not log it.
func RenderFetchKubeconfig(p FetchKubeconfigParams) (string, error) {
	if err := validKubeconfigPath(p.Kubeconfig); err != nil {
		return "", fmt.Errorf("fetch-kubeconfig: %w", err)
	}
	return renderScript(RecipeFetchKubeconfig, fetchKubeconfigBody, p)
}

// validKubeconfigPath checks a kubeconfig path on the VM.
func validKubeconfigPath(p string) error {
	if p == "" || p[0] != '/' {
		return fmt.Errorf("the kubeconfig must be an absolute path on the VM (such as %s), not %q", KubeadmKubeconfig, p)
	}
	return nil
}
