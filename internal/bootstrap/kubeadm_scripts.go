package bootstrap

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// kubeadmDoneMarker records that kubeadm init or join finished on a node, so
// that a rerun neither repeats nor resets it.
const kubeadmDoneMarker = KubeadmConfigDir + "/done"

// KubeadmPrereqsParams configures kubeadm-prereqs.
type KubeadmPrereqsParams struct {
	// KubernetesVersion is the release whose kubelet, kubeadm and kubectl
	// packages are installed (such as v1.33.5).
	KubernetesVersion string
}

type prereqsScript struct {
	Version, Minor           string
	Modules, Sysctl, AptList []byte
}

const prereqsBody = `
main() {
	local version={{q .Version}} minor={{q .Minor}}

	# The kubelet refuses to start with swap on.
	swapoff -a
	sed -ri '/\sswap\s/ s/^#*/#/' /etc/fstab

	kforge_changed=0
	{{write "/etc/modules-load.d/kforge-kubernetes.conf" "0644" "root:root" .Modules}}
	modprobe overlay
	modprobe br_netfilter
	{{write "/etc/sysctl.d/99-kforge-kubernetes.conf" "0644" "root:root" .Sysctl}}
	if ((kforge_changed)); then
		sysctl --system >/dev/null
	fi

	kforge_apt_install containerd conntrack socat apt-transport-https ca-certificates curl gpg
	kforge_dir /etc/containerd 0755 root:root
	local containerd_tmp
	containerd_tmp=$(mktemp /etc/containerd/.kforge.XXXXXX)
	containerd config default | sed 's/SystemdCgroup = false/SystemdCgroup = true/' >"$containerd_tmp"
	if ! grep -q 'SystemdCgroup = true' "$containerd_tmp"; then
		rm -f "$containerd_tmp"
		kforge_fail "cannot turn on the systemd cgroup driver in containerd's configuration"
	fi
	kforge_changed=0
	kforge_install "$containerd_tmp" /etc/containerd/config.toml 0644 root:root
	systemctl enable --now containerd.service
	if ((kforge_changed)); then
		systemctl restart containerd.service
	fi

	kforge_dir /etc/apt/keyrings 0755 root:root
	kforge_changed=0
	{{write "/etc/apt/sources.list.d/kubernetes.list" "0644" "root:root" .AptList}}
	if ((kforge_changed)) || [[ ! -s /etc/apt/keyrings/kubernetes-apt-keyring.gpg ]]; then
		local key_tmp
		key_tmp=$(mktemp -d)
		# shellcheck disable=SC2064 # expand now: key_tmp is local to main
		trap "rm -rf '$key_tmp'" EXIT
		kforge_download "https://pkgs.k8s.io/core:/stable:/$minor/deb/Release.key" "$key_tmp/Release.key"
		gpg --batch --dearmor <"$key_tmp/Release.key" >"$key_tmp/keyring.gpg"
		install -m 0644 "$key_tmp/keyring.gpg" /etc/apt/keyrings/kubernetes-apt-keyring.gpg
		kforge_apt update -q
	fi

	local pkg have want need=0
	local -a wanted=()
	for pkg in kubelet kubeadm kubectl; do
		have=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null || true)
		if [[ $have != "$version"-* ]]; then
			need=1
		fi
	done
	if ((need)); then
		kforge_apt update -q
		for pkg in kubelet kubeadm kubectl; do
			want=$(apt-cache madison "$pkg" | awk -v v="$version-" 'index($3, v) == 1 { print $3; exit }')
			if [[ -z $want ]]; then
				kforge_fail "$pkg $version is not in the Kubernetes $minor apt repository"
			fi
			wanted+=("$pkg=$want")
		done
		kforge_log "installing ${wanted[*]}"
		apt-mark unhold kubelet kubeadm kubectl >/dev/null 2>&1 || true
		kforge_apt install -y -q --allow-downgrades --allow-change-held-packages "${wanted[@]}"
	fi
	apt-mark hold kubelet kubeadm kubectl >/dev/null
	systemctl enable kubelet.service
	echo "kubeadm prerequisites ready (Kubernetes $version)"
}
`

// RenderKubeadmPrereqs renders kubeadm-prereqs, for every control plane and
// worker of a kubeadm cluster: swap off; the overlay and br_netfilter modules
// and the bridge and forwarding sysctls; containerd from the Ubuntu archive
// with the systemd cgroup driver; kubelet, kubeadm and kubectl of exactly
// KubernetesVersion from the Kubernetes apt repository of its minor
// (pkgs.k8s.io), held against upgrades; kubelet enabled.
func RenderKubeadmPrereqs(p KubeadmPrereqsParams) (string, error) {
	m := k8sVersionRE.FindStringSubmatch(p.KubernetesVersion)
	if m == nil {
		return "", fmt.Errorf("kubeadm-prereqs: kubernetes version %q: want a release such as v1.33.5", p.KubernetesVersion)
	}
	minor := "v" + m[1] + "." + m[2]
	return renderScript(RecipeKubeadmPrereqs, prereqsBody, prereqsScript{
		Version: strings.TrimPrefix(p.KubernetesVersion, "v"),
		Minor:   minor,
		Modules: []byte("overlay\nbr_netfilter\n"),
		Sysctl: []byte("net.bridge.bridge-nf-call-iptables = 1\n" +
			"net.bridge.bridge-nf-call-ip6tables = 1\n" +
			"net.ipv4.ip_forward = 1\n"),
		AptList: []byte("deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/" + minor + "/deb/ /\n"),
	})
}

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
	if ! timeout {{seconds .Timeout}} {{.Command}} >&2; then
		kforge_fail "kubeadm {{.Action}} failed on {{.Name}}; see the output above and journalctl -u kubelet on the VM"
	fi
	touch ` + kubeadmDoneMarker + `
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
}

const refreshBody = `
main() {
	local kubeconfig=` + KubeadmKubeconfig + `
	if [[ ! -f ` + kubeadmDoneMarker + ` ]]; then
		kforge_fail "kubeadm init has not finished on this node; run kubeadm-init first"
	fi
	base64 -d <<'` + heredocEnd + `' | kubectl --kubeconfig "$kubeconfig" --request-timeout=30s apply -f - >&2
{{b64 .Secret}}
` + heredocEnd + `
{{- if .UploadCerts}}
	# stdout carries the certificate key: discard it.
	kubeadm init phase upload-certs --upload-certs --skip-certificate-key-print --config ` + KubeadmInitConfigPath + ` >/dev/null
{{- end}}
	echo "join credentials refreshed"
}
`

// RenderKubeadmRefreshJoin renders kubeadm-refresh-join, for the first
// control plane before nodes join: it (re)creates the bootstrap token's
// Secret so that the token is valid for Cluster.TokenTTL from Now, and with
// UploadCerts uploads the control-plane certificates again under the
// certificate key of the init configuration. kforge runs it when joins may
// come later than the token's or the upload's lifetime (scale, resume).
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
	return renderScript(RecipeKubeadmRefreshJoin, refreshBody, refreshScript{Secret: sec, UploadCerts: p.UploadCerts})
}

// CNIParams configures the cni recipe (kubeadm clusters; k3s brings its own
// Flannel).
type CNIParams struct {
	// Kubeconfig defaults to KubeadmKubeconfig.
	Kubeconfig string
	// FlannelVersion is the Flannel release (default DefaultFlannelVersion).
	FlannelVersion string
	// PodSubnet must match the cluster's (default DefaultPodSubnet).
	PodSubnet string
	// Timeout bounds the wait for Flannel to run on the nodes present
	// (default 5 minutes).
	Timeout time.Duration
}

var flannelVersionRE = regexp.MustCompile(`^v\d+\.\d+\.\d+$`)

type cniScript struct {
	CNIParams
	Replace bool
	Default string
}

const cniBody = `
main() {
	local kubeconfig={{q .Kubeconfig}} version={{q .FlannelVersion}}
	local tmp
	tmp=$(mktemp -d)
	# shellcheck disable=SC2064 # expand now: tmp is local to main
	trap "rm -rf '$tmp'" EXIT
	kforge_download "https://github.com/flannel-io/flannel/releases/download/$version/kube-flannel.yml" "$tmp/kube-flannel.yml"
{{- if .Replace}}
	sed -i 's#{{.Default}}#{{.PodSubnet}}#g' "$tmp/kube-flannel.yml"
{{- end}}
	kubectl --kubeconfig "$kubeconfig" --request-timeout=60s apply -f "$tmp/kube-flannel.yml" >&2
	if ! kubectl --kubeconfig "$kubeconfig" -n kube-flannel rollout status daemonset/kube-flannel-ds --timeout={{seconds .Timeout}}s >&2; then
		kforge_fail "flannel did not become ready within {{seconds .Timeout}}s"
	fi
	echo "flannel $version running"
}
`

// RenderCNI renders cni: it downloads the pinned Flannel manifest, sets its
// pod network to PodSubnet, applies it with kubectl and waits (bounded) for
// the Flannel DaemonSet to roll out.
func RenderCNI(p CNIParams) (string, error) {
	p.Kubeconfig = orDefault(p.Kubeconfig, KubeadmKubeconfig)
	p.FlannelVersion = orDefault(p.FlannelVersion, DefaultFlannelVersion)
	p.PodSubnet = orDefault(p.PodSubnet, DefaultPodSubnet)
	p.Timeout = orDefault(p.Timeout, 5*time.Minute)
	if err := validKubeconfigPath(p.Kubeconfig); err != nil {
		return "", fmt.Errorf("cni recipe: %w", err)
	}
	if !flannelVersionRE.MatchString(p.FlannelVersion) {
		return "", fmt.Errorf("cni recipe: flannel version %q: want a release such as %s", p.FlannelVersion, DefaultFlannelVersion)
	}
	pfx, err := netip.ParsePrefix(p.PodSubnet)
	if err != nil || !pfx.Addr().Is4() || pfx.Masked() != pfx {
		return "", fmt.Errorf("cni recipe: pod subnet %q: want an IPv4 network such as %s", p.PodSubnet, DefaultPodSubnet)
	}
	if p.Timeout < 0 {
		return "", errors.New("cni recipe: the timeout must not be negative")
	}
	return renderScript(RecipeCNI, cniBody, cniScript{
		CNIParams: p, Replace: p.PodSubnet != DefaultPodSubnet, Default: DefaultPodSubnet,
	})
}
