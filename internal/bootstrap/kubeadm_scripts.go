package bootstrap

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kforge/kforge/internal/pki"
)

// kubeadmDoneMarker records that kubeadm init or join finished on a node, so
// that a rerun neither repeats nor resets it.
const kubeadmDoneMarker = KubeadmConfigDir + "/done"

type kubeadmFile struct {
	Path, Mode string
	Content    []byte
}

type kubeadmScript struct {
	Action, Name string
	Files        []kubeadmFile
	Command      string
	Timeout      time.Duration
}

// kubeadmBody serves init and both joins: unless an earlier run finished,
// it resets what a failed run left, writes the certificates and the
// configuration, and runs kubeadm.
const kubeadmBody = `
main() {
	# One kubeadm run at a time: a run whose kforge was killed may still be
	# going, and this one must not reset the node under it.
	exec 9>/run/kforge-kubeadm.lock
	if ! flock -w {{seconds .Timeout}} 9; then
		kforge_fail "another kubeadm run on {{.Name}} did not end within {{seconds .Timeout}}s"
	fi
	if [[ -f ` + kubeadmDoneMarker + ` ]]; then
		echo "kubeadm {{.Action}} already done on {{.Name}}"
		return 0
	fi
	if [[ -e /etc/kubernetes/kubelet.conf || -e /etc/kubernetes/admin.conf || -e /etc/kubernetes/manifests/kube-apiserver.yaml ]]; then
		kforge_log "an earlier kubeadm {{.Action}} did not finish; resetting this node first"
		kubeadm reset -f >&2
	fi
	kforge_dir /etc/kubernetes 0755 root:root
	kforge_dir /etc/kubernetes/pki 0755 root:root
	kforge_dir /etc/kubernetes/pki/etcd 0755 root:root
	kforge_dir ` + KubeadmConfigDir + ` 0700 root:root
{{- range .Files}}
	{{write .Path .Mode "root:root" .Content}}
{{- end}}
	kforge_log "running kubeadm {{.Action}}"
	# kubeadm runs detached from this SSH session, its output in a log, and
	# marks itself done: a kforge killed (or a connection lost) half-way
	# never stops it half-way (a half-joined node cannot join again under
	# its name while its Node is Ready); the next run waits for the lock
	# and finds it done.
	local log=` + KubeadmConfigDir + `/{{.Action}}.log rc=0
	setsid bash -c 'timeout {{seconds .Timeout}} {{.Command}} && touch ` + kubeadmDoneMarker + `' >"$log" 2>&1 </dev/null &
	wait $! || rc=$?
	if ((rc != 0)); then
		tail -n 40 "$log" >&2
		kforge_fail "kubeadm {{.Action}} failed on {{.Name}}; see the output above, $log and journalctl -u kubelet on the VM"
	fi
	echo "kubeadm {{.Action}} done on {{.Name}}"
}
`

// RenderKubeadmInit renders kubeadm-init, for the first control plane: it
// writes the cluster CA (/etc/kubernetes/pki/ca.{crt,key}), the external
// etcd's CA and client certificate, and the configuration from
// KubeadmInitConfig (0600), then runs `kubeadm init --upload-certs` without
// printing the token or the certificate key. A node where init already
// finished is left alone; one where it failed is reset and initialised again.
func RenderKubeadmInit(p KubeadmInitParams) (string, error) {
	cfg, err := KubeadmInitConfig(p)
	if err != nil {
		return "", fmt.Errorf("kubeadm-init recipe: %w", err)
	}
	files := append([]kubeadmFile{
		{"/etc/kubernetes/pki/ca.crt", "0644", p.CA.Cert},
		{"/etc/kubernetes/pki/ca.key", "0600", p.CA.Key},
	}, etcdClientFiles(p.Cluster.Etcd)...)
	files = append(files, kubeadmFile{KubeadmInitConfigPath, "0600", cfg})
	return renderScript(RecipeKubeadmInit, kubeadmBody, kubeadmScript{
		Action: "init", Name: p.Node.Name, Files: files, Timeout: DefaultKubeadmTimeout,
		Command: "kubeadm init --config " + KubeadmInitConfigPath + " --upload-certs --skip-token-print --skip-certificate-key-print",
	})
}

func etcdClientFiles(e EtcdClient) []kubeadmFile {
	return []kubeadmFile{
		{kubeadmEtcdCAFile, "0644", e.CA},
		{kubeadmEtcdCertFile, "0644", e.Client.Cert},
		{kubeadmEtcdKeyFile, "0600", e.Client.Key},
	}
}

// RenderKubeadmJoinControlPlane renders kubeadm-join-cp: it writes the
// external etcd's CA and client certificate and the configuration from
// KubeadmJoinConfig (0600), then runs `kubeadm join`, which downloads the
// other control-plane certificates with the certificate key.
func RenderKubeadmJoinControlPlane(p KubeadmJoinParams) (string, error) {
	cfg, err := KubeadmJoinConfig(p, true)
	if err != nil {
		return "", fmt.Errorf("kubeadm-join-cp recipe: %w", err)
	}
	files := append(etcdClientFiles(p.Cluster.Etcd), kubeadmFile{KubeadmJoinConfigPath, "0600", cfg})
	return renderScript(RecipeKubeadmJoinControlPlane, kubeadmBody, kubeadmScript{
		Action: "join", Name: p.Node.Name, Files: files, Timeout: DefaultKubeadmTimeout,
		Command: "kubeadm join --config " + KubeadmJoinConfigPath,
	})
}

// RenderKubeadmJoinWorker renders kubeadm-join-worker: it writes the
// configuration from KubeadmJoinConfig (0600) and runs `kubeadm join`.
func RenderKubeadmJoinWorker(p KubeadmJoinParams) (string, error) {
	cfg, err := KubeadmJoinConfig(p, false)
	if err != nil {
		return "", fmt.Errorf("kubeadm-join-worker recipe: %w", err)
	}
	return renderScript(RecipeKubeadmJoinWorker, kubeadmBody, kubeadmScript{
		Action: "join", Name: p.Node.Name, Files: []kubeadmFile{{KubeadmJoinConfigPath, "0600", cfg}},
		Timeout: DefaultKubeadmTimeout,
		Command: "kubeadm join --config " + KubeadmJoinConfigPath,
	})
}

// KubeadmRefreshJoinParams configures kubeadm-refresh-join.
type KubeadmRefreshJoinParams struct {
	Cluster KubeadmCluster
	// Node is the control plane the recipe runs on, and CA the cluster CA:
	// the recipe writes the cluster's configuration there (a control plane
	// that joined has none), uploads it to the kubeadm-config ConfigMap
	// (joins read the etcd members from it), and with UploadCerts uploads
	// the certificates under it.
	Node Node
	CA   pki.PEMPair
	// Now is the current time; the bootstrap token expires at Now plus
	// Cluster.TokenTTL.
	Now time.Time
	// UploadCerts uploads the control-plane certificates again (needed when
	// control planes are still to join more than two hours after init).
	UploadCerts bool
}

// secret is the part of a core/v1 Secret that a bootstrap token needs.
type secret struct {
	typeMeta   `json:",inline"`
	Metadata   objectMeta        `json:"metadata"`
	Type       string            `json:"type"`
	StringData map[string]string `json:"stringData"`
}

type objectMeta struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

// BootstrapTokenSecret renders the kube-system Secret that makes a bootstrap
// token valid until expires, as kubeadm creates it (authentication and
// signing, default node-token group).
func BootstrapTokenSecret(token, description string, expires time.Time) ([]byte, error) {
	if !bootstrapTokenRE.MatchString(token) {
		return nil, errors.New("render bootstrap token secret: the token must have the form [a-z0-9]{6}.[a-z0-9]{16}")
	}
	id, sec, _ := strings.Cut(token, ".")
	out, err := yaml.Marshal(secret{
		typeMeta: typeMeta{APIVersion: "v1", Kind: "Secret"},
		Metadata: objectMeta{Name: "bootstrap-token-" + id, Namespace: "kube-system"},
		Type:     "bootstrap.kubernetes.io/token",
		StringData: map[string]string{
			"description":                    description,
			"token-id":                       id,
			"token-secret":                   sec,
			"expiration":                     expires.UTC().Format(time.RFC3339),
			"usage-bootstrap-authentication": "true",
			"usage-bootstrap-signing":        "true",
			"auth-extra-groups":              defaultTokenGroup,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("render bootstrap token secret: %w", err)
	}
	return out, nil
}

type refreshScript struct {
	Secret      []byte
	UploadCerts bool
	Config      []byte
}

const refreshBody = `
main() {
	local kubeconfig=` + KubeadmKubeconfig + `
	if [[ ! -f ` + kubeadmDoneMarker + ` ]]; then
		kforge_fail "kubeadm init has not finished on this node; run kubeadm-init first"
	fi
	# The API server may be restarting (a new etcd member list, a reboot).
	local deadline=$((SECONDS + 300))
	until [[ $(kubectl --kubeconfig "$kubeconfig" --request-timeout=10s get --raw /readyz 2>/dev/null) == ok ]]; do
		((SECONDS < deadline)) || kforge_fail "the API server is not ready after 300s"
		sleep 2
	done
	base64 -d <<'` + heredocEnd + `' | kubectl --kubeconfig "$kubeconfig" --request-timeout=30s apply -f - >&2
{{b64 .Secret}}
` + heredocEnd + `
	kforge_dir ` + KubeadmConfigDir + ` 0700 root:root
	{{write "` + KubeadmInitConfigPath + `" "0600" "root:root" .Config}}
	# Control planes that join read the cluster's configuration from the
	# kubeadm-config ConfigMap: keep its etcd members current.
	kubeadm init phase upload-config kubeadm --config ` + KubeadmInitConfigPath + ` >&2
{{- if .UploadCerts}}
	# stdout carries the certificate key: discard it.
	kubeadm init phase upload-certs --upload-certs --skip-certificate-key-print --config ` + KubeadmInitConfigPath + ` >/dev/null
{{- end}}
	echo "join credentials refreshed"
}
`

// RenderKubeadmRefreshJoin renders kubeadm-refresh-join, for the first
// control plane before nodes join: it (re)creates the bootstrap token's
// Secret so that the token is valid for Cluster.TokenTTL from Now, uploads
// the cluster's configuration (the etcd members may have moved), and with
// UploadCerts uploads the control-plane certificates again under the
// certificate key of the init configuration. kforge runs it when joins may
// come later than the token's or the upload's lifetime (scale, resume) and
// whenever a VM of the cluster changed.
func RenderKubeadmRefreshJoin(p KubeadmRefreshJoinParams) (string, error) {
	p.Cluster = p.Cluster.withDefaults()
	if p.Now.IsZero() {
		return "", errors.New("kubeadm-refresh-join recipe: the current time is required")
	}
	if p.Cluster.TokenTTL < time.Minute {
		return "", errors.New("kubeadm-refresh-join recipe: the bootstrap token TTL must be at least a minute")
	}
	sec, err := BootstrapTokenSecret(p.Cluster.Token, "kforge: joins the nodes of cluster "+p.Cluster.Name, p.Now.Add(p.Cluster.TokenTTL))
	if err != nil {
		return "", fmt.Errorf("kubeadm-refresh-join recipe: %w", err)
	}
	cfg, err := KubeadmInitConfig(KubeadmInitParams{Cluster: p.Cluster, Node: p.Node, CA: p.CA})
	if err != nil {
		return "", fmt.Errorf("kubeadm-refresh-join recipe: %w", err)
	}
	return renderScript(RecipeKubeadmRefreshJoin, refreshBody, refreshScript{Secret: sec, UploadCerts: p.UploadCerts, Config: cfg})
}

// CNIParams configures the cni recipe (kubeadm clusters; k3s brings its own
// Flannel).
type CNIParams struct {
	// Kubeconfig defaults to KubeadmKubeconfig.
	Kubeconfig string
	// Flannel is the pod network; its PodSubnet defaults to
	// DefaultPodSubnet and must match the cluster's.
	Flannel FlannelParams
	// Timeout bounds the wait for Flannel to run on the nodes present
	// (default 5 minutes).
	Timeout time.Duration
}

type cniScript struct {
	CNIParams
	Manifest []byte
}

const cniBody = `
main() {
	local kubeconfig={{q .Kubeconfig}}
	base64 -d <<'` + heredocEnd + `' | kubectl --kubeconfig "$kubeconfig" --request-timeout=60s apply -f - >&2
{{b64 .Manifest}}
` + heredocEnd + `
	if ! kubectl --kubeconfig "$kubeconfig" -n ` + FlannelNamespace + ` rollout status daemonset/` + FlannelDaemonSet + ` --timeout={{seconds .Timeout}}s >&2; then
		kforge_fail "flannel did not become ready within {{seconds .Timeout}}s"
	fi
	echo "flannel running"
}
`

// RenderCNI renders cni: it applies Flannel's objects (FlannelManifest,
// built by kforge, so nothing is downloaded) with kubectl and waits
// (bounded) for the Flannel DaemonSet to roll out.
func RenderCNI(p CNIParams) (string, error) {
	p.Kubeconfig = orDefault(p.Kubeconfig, KubeadmKubeconfig)
	p.Flannel.PodSubnet = orDefault(p.Flannel.PodSubnet, DefaultPodSubnet)
	p.Timeout = orDefault(p.Timeout, 5*time.Minute)
	if err := validKubeconfigPath(p.Kubeconfig); err != nil {
		return "", fmt.Errorf("cni recipe: %w", err)
	}
	pfx, err := netip.ParsePrefix(p.Flannel.PodSubnet)
	if err != nil || !pfx.Addr().Is4() || pfx.Masked() != pfx {
		return "", fmt.Errorf("cni recipe: pod subnet %q: want an IPv4 network such as %s", p.Flannel.PodSubnet, DefaultPodSubnet)
	}
	if p.Timeout < 0 {
		return "", errors.New("cni recipe: the timeout must not be negative")
	}
	m, err := FlannelManifest(p.Flannel)
	if err != nil {
		return "", fmt.Errorf("cni recipe: %w", err)
	}
	return renderScript(RecipeCNI, cniBody, cniScript{CNIParams: p, Manifest: m})
}
