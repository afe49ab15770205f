package bootstrap

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// RecipeKubeadmEtcdServers points a control plane's API server at the etcd
// members' current addresses.
const RecipeKubeadmEtcdServers = "kubeadm-etcd-servers"

// KubeadmAPIServerManifest is the static pod of a kubeadm control plane's
// API server.
const KubeadmAPIServerManifest = "/etc/kubernetes/manifests/kube-apiserver.yaml"

// DefaultAPIServerRestartTimeout bounds the wait for an API server that
// kubelet restarts with new flags.
const DefaultAPIServerRestartTimeout = 5 * time.Minute

// KubeadmEtcdServersParams configures kubeadm-etcd-servers.
type KubeadmEtcdServersParams struct {
	// Node is the control plane the recipe runs on.
	Node Node
	// Etcd is the external etcd cluster, with the members' current
	// addresses.
	Etcd EtcdCluster
	// Timeout bounds the wait for the restarted API server (default
	// DefaultAPIServerRestartTimeout).
	Timeout time.Duration
}

type etcdServersScript struct {
	KubeadmEtcdServersParams
	Flag, Server string
}

const etcdServersBody = `
main() {
	local manifest=` + KubeadmAPIServerManifest + ` want={{q .Flag}}
	if [[ ! -f ` + kubeadmDoneMarker + ` || ! -f $manifest ]]; then
		echo "no API server on {{.Node.Name}} yet: kubeadm writes the etcd servers when it runs"
		return 0
	fi
	if grep -qxE "[[:space:]]*- ${want}" "$manifest"; then
		echo "the API server of {{.Node.Name}} already uses the current etcd members"
		return 0
	fi
	grep -qE '^[[:space:]]*- --etcd-servers=' "$manifest" ||
		kforge_fail "$manifest has no --etcd-servers flag; was it changed by hand?"
	kforge_log "pointing the API server of {{.Node.Name}} at the current etcd members"
	# kubelet sees the changed static pod and restarts the API server.
	sed -i -E "s#^([[:space:]]*- )--etcd-servers=.*#\1${want}#" "$manifest"
	local deadline=$((SECONDS + {{seconds .Timeout}}))
	until pgrep -f -- "kube-apiserver .*${want}" >/dev/null &&
		kubectl --kubeconfig ` + KubeadmKubeconfig + ` --server={{q .Server}} --request-timeout=10s get --raw=/readyz >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			# What the operator needs first: is the new API server running,
			# and what does it say it lacks?
			kforge_log "API server processes: $(pgrep -af kube-apiserver | grep -o -- '--etcd-servers=[^ ]*' | tr '\n' ' ')"
			if command -v crictl >/dev/null; then crictl ps -a --name kube-apiserver 2>&1 | tail -n 4 >&2 || true; fi
			kubectl --kubeconfig ` + KubeadmKubeconfig + ` --server={{q .Server}} --request-timeout=10s get --raw='/readyz?verbose' 2>&1 |
				grep -v '^\[+\]' | tail -n 6 >&2 || true
			kforge_fail "the API server of {{.Node.Name}} did not come back within {{seconds .Timeout}}s with the new etcd servers; see crictl ps -a and journalctl -u kubelet on the VM"
		fi
		sleep {{pollSeconds .Timeout}}
	done
	echo "the API server of {{.Node.Name}} uses the current etcd members"
}
`

// RenderKubeadmEtcdServers renders kubeadm-etcd-servers, for a control
// plane that kubeadm already set up, after etcd members moved to new
// addresses (their VMs were replaced): it rewrites --etcd-servers in the
// API server's static pod when the flag differs, then waits (bounded) for
// kubelet to restart the API server with it and for the server to be
// ready. A node kubeadm has not finished on is left alone.
func RenderKubeadmEtcdServers(p KubeadmEtcdServersParams) (string, error) {
	if err := p.Node.validate("control plane", true); err != nil {
		return "", fmt.Errorf("kubeadm-etcd-servers: %w", err)
	}
	p.Etcd = p.Etcd.withDefaults()
	if err := p.Etcd.validate(); err != nil {
		return "", fmt.Errorf("kubeadm-etcd-servers: %w", err)
	}
	if p.Timeout < 0 {
		return "", errors.New("kubeadm-etcd-servers: the timeout must not be negative")
	}
	p.Timeout = orDefault(p.Timeout, DefaultAPIServerRestartTimeout)
	return renderScript(RecipeKubeadmEtcdServers, etcdServersBody, etcdServersScript{
		KubeadmEtcdServersParams: p,
		Flag:                     "--etcd-servers=" + strings.Join(p.Etcd.ClientURLs(), ","),
		Server:                   httpsURL(p.Node.privateAddr(), APIServerPort),
	})
}
