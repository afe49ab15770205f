package bootstrap

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kforge/kforge/internal/artifacts"
	"github.com/kforge/kforge/internal/pki"
)

// etcd defaults. Without artifacts, the release is downloaded from the etcd
// project's GitHub releases and checked against a pinned SHA-256 before it
// is unpacked; the checksums are those of the release tarballs
// (etcd-<version>-linux-<arch>.tar.gz). kubeadm v1.34 refuses an external
// etcd older than 3.5.24.
const (
	DefaultEtcdVersion    = "v3.5.27"
	DefaultEtcdClientPort = 2379
	DefaultEtcdPeerPort   = 2380
	DefaultEtcdDataDir    = "/var/lib/etcd"
	DefaultEtcdPKIDir     = "/etc/etcd/pki"
	DefaultEtcdctl        = "/usr/local/bin/etcdctl"
	DefaultEtcdHealthWait = 3 * time.Minute

	// EtcdConfigPath is where the etcd recipe installs the configuration file.
	EtcdConfigPath = "/etc/etcd/etcd.yaml"
)

// DefaultEtcdChecksums returns the SHA-256 of the DefaultEtcdVersion release
// tarball for each Debian architecture name.
func DefaultEtcdChecksums() map[string]string {
	return map[string]string{
		"amd64": "0aad9a9e4e0817a021e933f9806a2b2960a62f949ad5a3d6436d8886945cb1bc",
		"arm64": "1277309f540c5a0329c428f95455c9f76d24f768c8d28fd2753e891c379053fa",
	}
}

// File names inside an etcd PKI directory.
const (
	etcdCAFile         = "ca.crt"
	etcdServerCertFile = "server.crt"
	etcdServerKeyFile  = "server.key"
	etcdPeerCertFile   = "peer.crt"
	etcdPeerKeyFile    = "peer.key"
	etcdClientCertFile = "client.crt"
	etcdClientKeyFile  = "client.key"
)

// EtcdCluster is the etcd cluster as its members and clients see it.
type EtcdCluster struct {
	// Members are every member, with their names and private IPs.
	Members []Node
	// Token is the initial-cluster-token, unique per cluster (the kforge
	// cluster name and region make a good one).
	Token string
	// ClientPort and PeerPort default to 2379 and 2380.
	ClientPort int
	PeerPort   int
}

func (c EtcdCluster) withDefaults() EtcdCluster {
	c.ClientPort = orDefault(c.ClientPort, DefaultEtcdClientPort)
	c.PeerPort = orDefault(c.PeerPort, DefaultEtcdPeerPort)
	return c
}

// validate checks members, ports and token.
func (c EtcdCluster) validate() error {
	if len(c.Members) == 0 {
		return errors.New("etcd: at least one member is required")
	}
	names := map[string]bool{}
	ips := map[netip.Addr]bool{}
	for _, m := range c.Members {
		if err := m.validate("etcd member", true); err != nil {
			return err
		}
		if names[m.Name] {
			return fmt.Errorf("etcd member name %q appears twice", m.Name)
		}
		names[m.Name] = true
		if ips[m.privateAddr()] {
			return fmt.Errorf("etcd member IP %s appears twice", m.PrivateIP)
		}
		ips[m.privateAddr()] = true
	}
	if err := validPort("etcd client port", c.ClientPort); err != nil {
		return err
	}
	if err := validPort("etcd peer port", c.PeerPort); err != nil {
		return err
	}
	if c.ClientPort == c.PeerPort {
		return errors.New("etcd client and peer ports must differ")
	}
	if !etcdTokenRE.MatchString(c.Token) {
		return fmt.Errorf("etcd initial-cluster-token %q: want 1-64 letters, digits, '-', '_' or '.'", c.Token)
	}
	return nil
}

var etcdTokenRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// ClientURLs returns every member's client URL (https://<private IP>:<client
// port>), as clients (kube-apiserver, k3s, etcdctl) list them.
func (c EtcdCluster) ClientURLs() []string {
	c = c.withDefaults()
	urls := make([]string, 0, len(c.Members))
	for _, m := range c.Members {
		a, err := parseIP(m.PrivateIP)
		if err != nil {
			continue
		}
		urls = append(urls, httpsURL(a, c.ClientPort))
	}
	return urls
}

// EtcdCerts are the PEM files one etcd member needs.
type EtcdCerts struct {
	// CA is the etcd CA certificate (without its key).
	CA []byte
	// Server is the member's client-facing certificate; Peer its certificate
	// for member-to-member traffic (server and client auth).
	Server pki.PEMPair
	Peer   pki.PEMPair
	// Client is a client certificate left on the member for etcdctl (the
	// etcd-health recipe uses it).
	Client pki.PEMPair
}

// IssueEtcdCerts issues a member's server, peer and etcdctl client
// certificates from the etcd CA. The server certificate is valid for the
// member's private IP, 127.0.0.1, "localhost" and its name; the peer
// certificate for its private IP, its name and the loopback address.
func IssueEtcdCerts(ca *pki.KeyPair, member Node) (EtcdCerts, error) {
	if err := member.validate("etcd member", true); err != nil {
		return EtcdCerts{}, fmt.Errorf("issue etcd certificates: %w", err)
	}
	ip := member.privateAddr()
	server, err := issuePEM(ca, pki.Request{
		CommonName: member.Name,
		DNSNames:   []string{member.Name, "localhost"},
		IPs:        uniqueAddrs(ip, netip.MustParseAddr("127.0.0.1")),
		Usage:      pki.Server,
	})
	if err != nil {
		return EtcdCerts{}, fmt.Errorf("issue etcd server certificate for %s: %w", member.Name, err)
	}
	// Like kubeadm's etcd peer certificates, also valid for the loopback
	// address: etcd checks a peer's client certificate against the address
	// the connection comes from, which is the loopback one for members that
	// share a host.
	peer, err := issuePEM(ca, pki.Request{
		CommonName: member.Name,
		DNSNames:   []string{member.Name, "localhost"},
		IPs:        uniqueAddrs(ip, netip.MustParseAddr("127.0.0.1")),
		Usage:      pki.Peer,
	})
	if err != nil {
		return EtcdCerts{}, fmt.Errorf("issue etcd peer certificate for %s: %w", member.Name, err)
	}
	client, err := issuePEM(ca, pki.Request{CommonName: "etcdctl-" + member.Name, Usage: pki.Client})
	if err != nil {
		return EtcdCerts{}, fmt.Errorf("issue etcdctl client certificate for %s: %w", member.Name, err)
	}
	return EtcdCerts{CA: ca.CertPEM(), Server: server, Peer: peer, Client: client}, nil
}

// EtcdClient is what an etcd client (kube-apiserver, k3s) needs to reach the
// cluster: its members, the CA to trust and a client certificate.
type EtcdClient struct {
	Cluster EtcdCluster
	CA      []byte
	Client  pki.PEMPair
}

// IssueEtcdClient issues a client certificate with the given common name
// from the etcd CA, for the cluster's clients.
func IssueEtcdClient(ca *pki.KeyPair, cluster EtcdCluster, commonName string) (EtcdClient, error) {
	client, err := issuePEM(ca, pki.Request{CommonName: commonName, Usage: pki.Client})
	if err != nil {
		return EtcdClient{}, fmt.Errorf("issue etcd client certificate %s: %w", commonName, err)
	}
	return EtcdClient{Cluster: cluster, CA: ca.CertPEM(), Client: client}, nil
}

func (c EtcdClient) validate() error {
	if err := c.Cluster.withDefaults().validate(); err != nil {
		return err
	}
	if _, err := pki.ParseCertificate(c.CA); err != nil {
		return fmt.Errorf("etcd CA: %w", err)
	}
	if _, err := pki.ParseKeyPair(c.Client); err != nil {
		return fmt.Errorf("etcd client certificate: %w", err)
	}
	return nil
}

func issuePEM(ca *pki.KeyPair, req pki.Request) (pki.PEMPair, error) {
	kp, err := ca.Issue(req)
	if err != nil {
		return pki.PEMPair{}, err
	}
	return kp.PEM()
}

func uniqueAddrs(as ...netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range as {
		dup := false
		for _, b := range out {
			dup = dup || a == b
		}
		if !dup {
			out = append(out, a)
		}
	}
	return out
}

// EtcdConfigParams describes one member's configuration file.
type EtcdConfigParams struct {
	Cluster EtcdCluster
	// Member is this member; it must be one of Cluster.Members.
	Member Node
	// DataDir and PKIDir default to DefaultEtcdDataDir and DefaultEtcdPKIDir.
	DataDir string
	PKIDir  string
	// Existing makes the member join a running cluster (a replacement,
	// added to the member list first) instead of bootstrapping a new one
	// with the others.
	Existing bool
}

func (p EtcdConfigParams) withDefaults() EtcdConfigParams {
	p.Cluster = p.Cluster.withDefaults()
	p.DataDir = orDefault(p.DataDir, DefaultEtcdDataDir)
	p.PKIDir = strings.TrimSuffix(orDefault(p.PKIDir, DefaultEtcdPKIDir), "/")
	return p
}

func (p EtcdConfigParams) validate() error {
	if err := p.Cluster.validate(); err != nil {
		return err
	}
	found := false
	for _, m := range p.Cluster.Members {
		found = found || m == p.Member
	}
	if !found {
		return fmt.Errorf("etcd member %s (%s) is not among the cluster's members", p.Member.Name, p.Member.PrivateIP)
	}
	for _, d := range []string{p.DataDir, p.PKIDir} {
		if !strings.HasPrefix(d, "/") {
			return fmt.Errorf("etcd: %q must be an absolute path", d)
		}
	}
	return nil
}

// etcdConfig is the subset of etcd's configuration file that kforge sets.
// Its keys mean the same in etcd 3.4 and 3.5.
type etcdConfig struct {
	Name                     string           `json:"name"`
	DataDir                  string           `json:"data-dir"`
	ListenClientURLs         string           `json:"listen-client-urls"`
	AdvertiseClientURLs      string           `json:"advertise-client-urls"`
	ListenPeerURLs           string           `json:"listen-peer-urls"`
	InitialAdvertisePeerURLs string           `json:"initial-advertise-peer-urls"`
	InitialCluster           string           `json:"initial-cluster"`
	InitialClusterState      string           `json:"initial-cluster-state"`
	InitialClusterToken      string           `json:"initial-cluster-token"`
	ClientTransportSecurity  etcdTransportSec `json:"client-transport-security"`
	PeerTransportSecurity    etcdTransportSec `json:"peer-transport-security"`
	Logger                   string           `json:"logger"`
	LogOutputs               []string         `json:"log-outputs"`
}

type etcdTransportSec struct {
	CertFile       string `json:"cert-file"`
	KeyFile        string `json:"key-file"`
	ClientCertAuth bool   `json:"client-cert-auth"`
	TrustedCAFile  string `json:"trusted-ca-file"`
}

// EtcdConfig renders one member's etcd configuration file (YAML, for
// `etcd --config-file`): TLS with client certificate authentication on both
// the client and the peer ports, listening on the member's private IP, and
// an initial cluster of all members in state "new".
func EtcdConfig(p EtcdConfigParams) ([]byte, error) {
	p = p.withDefaults()
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("render etcd configuration: %w", err)
	}
	c := p.Cluster
	ip := p.Member.privateAddr()
	initial := make([]string, 0, len(c.Members))
	for _, m := range c.Members {
		initial = append(initial, m.Name+"="+httpsURL(m.privateAddr(), c.PeerPort))
	}
	pkiFile := func(name string) string { return p.PKIDir + "/" + name }
	state := "new"
	if p.Existing {
		state = "existing"
	}
	cfg := etcdConfig{
		Name:                     p.Member.Name,
		DataDir:                  p.DataDir,
		ListenClientURLs:         httpsURL(ip, c.ClientPort),
		AdvertiseClientURLs:      httpsURL(ip, c.ClientPort),
		ListenPeerURLs:           httpsURL(ip, c.PeerPort),
		InitialAdvertisePeerURLs: httpsURL(ip, c.PeerPort),
		InitialCluster:           strings.Join(initial, ","),
		InitialClusterState:      state,
		InitialClusterToken:      c.Token,
		ClientTransportSecurity: etcdTransportSec{
			CertFile:       pkiFile(etcdServerCertFile),
			KeyFile:        pkiFile(etcdServerKeyFile),
			ClientCertAuth: true,
			TrustedCAFile:  pkiFile(etcdCAFile),
		},
		PeerTransportSecurity: etcdTransportSec{
			CertFile:       pkiFile(etcdPeerCertFile),
			KeyFile:        pkiFile(etcdPeerKeyFile),
			ClientCertAuth: true,
			TrustedCAFile:  pkiFile(etcdCAFile),
		},
		Logger:     "zap",
		LogOutputs: []string{"stderr"},
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("render etcd configuration: %w", err)
	}
	return out, nil
}

// EtcdParams configures the etcd recipe on one member.
type EtcdParams struct {
	EtcdConfigParams
	// Version is the etcd release (default DefaultEtcdVersion). Checksums
	// maps a Debian architecture (amd64, arm64) to the SHA-256 of that
	// release's tarball; it defaults to DefaultEtcdChecksums only with the
	// default version.
	Version   string
	Checksums map[string]string
	// Tarballs, if set, replace the download from GitHub: the release
	// tarball of each Debian architecture, from the cluster's artifacts
	// (uploaded by kforge, or on a mirror).
	Tarballs map[string]Artifact
	// Certs are this member's certificates (see IssueEtcdCerts).
	Certs EtcdCerts
}

var (
	etcdVersionRE = regexp.MustCompile(`^v3\.\d+\.\d+$`)
	sha256RE      = regexp.MustCompile(`^[a-f0-9]{64}$`)
	debArchRE     = regexp.MustCompile(`^[a-z0-9]+$`)
)

type etcdScript struct {
	EtcdParams
	ByArch    []archArtifact
	Config    []byte
	Unit      []byte
	CertFiles []etcdFile
}

// archArtifact is the artifact of one Debian architecture.
type archArtifact struct {
	Arch string
	Artifact
}

type etcdFile struct {
	Path, Mode, Owner string
	Content           []byte
}

const etcdUnit = `[Unit]
Description=etcd key-value store (kforge)
Documentation=https://etcd.io/docs/
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
User=etcd
Group=etcd
ExecStart=/usr/local/bin/etcd --config-file ` + EtcdConfigPath + `
Restart=on-failure
RestartSec=5
TimeoutStartSec=300
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`

const etcdBody = `
main() {
	local version={{q .Version}} arch tarball url sum
	arch=$(dpkg --print-architecture)
	case $arch in
{{- range .ByArch}}
	{{.Arch}}) tarball={{q .Path}} url={{q .URL}} sum={{q .SHA256}} ;;
{{- end}}
	*) kforge_fail "no etcd $version for architecture $arch" ;;
	esac

	if [[ ! -x /usr/local/bin/etcd ]] || [[ $(/usr/local/bin/etcd --version 2>/dev/null | head -n 1) != "etcd Version: ${version#v}" ]]; then
		kforge_log "installing etcd $version ($arch)"
		kforge_artifact "$tarball" "$url" "$sum"
		local tmp f
		tmp=$(mktemp -d)
		# shellcheck disable=SC2064 # expand now: tmp is local to main
		trap "rm -rf '$tmp'" EXIT
		tar -xzf "$tarball" -C "$tmp" --strip-components=1
		for f in etcd etcdctl etcdutl; do
			if [[ -f $tmp/$f ]]; then
				install -m 0755 "$tmp/$f" /usr/local/bin/
			fi
		done
	fi

	if ! id -u etcd >/dev/null 2>&1; then
		useradd --system --home-dir {{q .DataDir}} --no-create-home --shell /usr/sbin/nologin etcd
	fi
	kforge_dir /etc/etcd 0755 root:root
	kforge_dir {{q .PKIDir}} 0750 root:etcd
	kforge_dir {{q .DataDir}} 0700 etcd:etcd

	kforge_changed=0
{{- range .CertFiles}}
	{{write .Path .Mode .Owner .Content}}
{{- end}}
	local config_changed=$kforge_changed
	kforge_changed=0
	{{write "` + EtcdConfigPath + `" "0644" "root:root" .Config}}
	# The initial-* settings count only until the member has data: a member
	# that has some is not restarted for them (the member list of a cluster
	# changes when a member is replaced).
	if ((kforge_changed)) && [[ ! -d {{q .DataDir}}/member ]]; then
		config_changed=1
	fi

	kforge_changed=0
	{{write "/etc/systemd/system/etcd.service" "0644" "root:root" .Unit}}
	if ((kforge_changed)); then
		systemctl daemon-reload
	fi
	config_changed=$((config_changed | kforge_changed))

	# --no-block: a member reports ready only once the cluster has quorum,
	# so the first member must not wait for the others here.
	systemctl enable --now --no-block etcd.service
	if ((config_changed)) && systemctl is-active --quiet etcd.service; then
		kforge_log "configuration changed; restarting etcd"
		systemctl restart --no-block etcd.service
	fi
	echo "etcd {{.Member.Name}} installed ($version)"
}
`

// RenderEtcd renders the etcd recipe for one member: install the pinned etcd
// release (checksum-verified) into /usr/local/bin, write the CA, server, peer
// and etcdctl client certificates (keys 0600), the configuration file from
// EtcdConfig and a systemd unit running etcd as user etcd, then enable and
// start it (restarting only when something changed). It does not wait for
// the cluster: run etcd-health once every member has run this recipe.
func RenderEtcd(p EtcdParams) (string, error) {
	p.EtcdConfigParams = p.EtcdConfigParams.withDefaults()
	if p.Version == "" {
		p.Version = DefaultEtcdVersion
		if p.Checksums == nil {
			p.Checksums = DefaultEtcdChecksums()
		}
	}
	if !etcdVersionRE.MatchString(p.Version) {
		return "", fmt.Errorf("etcd recipe: version %q: want a release such as %s", p.Version, DefaultEtcdVersion)
	}
	byArch := p.Tarballs
	if len(byArch) == 0 {
		if len(p.Checksums) == 0 {
			return "", fmt.Errorf("etcd recipe: etcd %s needs the SHA-256 of its release tarball for each architecture", p.Version)
		}
		byArch = map[string]Artifact{}
		set := artifacts.Set{Etcd: p.Version}
		for arch, sum := range p.Checksums {
			byArch[arch] = Artifact{
				Path:   artifacts.VMPath(set.EtcdTarball(arch)),
				URL:    fmt.Sprintf("https://github.com/etcd-io/etcd/releases/download/%s/etcd-%s-linux-%s.tar.gz", p.Version, p.Version, arch),
				SHA256: sum,
			}
		}
	}
	var arches []archArtifact
	for arch, a := range byArch {
		if !debArchRE.MatchString(arch) || !sha256RE.MatchString(a.SHA256) {
			return "", fmt.Errorf("etcd recipe: tarball for %q: want a Debian architecture and 64 lowercase hex digits", arch)
		}
		if err := a.validate(); err != nil {
			return "", fmt.Errorf("etcd recipe: %w", err)
		}
		arches = append(arches, archArtifact{arch, a})
	}
	slices.SortFunc(arches, func(a, b archArtifact) int { return strings.Compare(a.Arch, b.Arch) })
	cfg, err := EtcdConfig(p.EtcdConfigParams)
	if err != nil {
		return "", fmt.Errorf("etcd recipe: %w", err)
	}
	if _, err := pki.ParseCertificate(p.Certs.CA); err != nil {
		return "", fmt.Errorf("etcd recipe: CA: %w", err)
	}
	for what, kp := range map[string]pki.PEMPair{"server": p.Certs.Server, "peer": p.Certs.Peer, "client": p.Certs.Client} {
		if _, err := pki.ParseKeyPair(kp); err != nil {
			return "", fmt.Errorf("etcd recipe: %s certificate of %s: %w", what, p.Member.Name, err)
		}
	}
	dir := p.PKIDir + "/"
	files := []etcdFile{
		{dir + etcdCAFile, "0644", "root:root", p.Certs.CA},
		{dir + etcdServerCertFile, "0644", "root:root", p.Certs.Server.Cert},
		{dir + etcdServerKeyFile, "0600", "etcd:etcd", p.Certs.Server.Key},
		{dir + etcdPeerCertFile, "0644", "root:root", p.Certs.Peer.Cert},
		{dir + etcdPeerKeyFile, "0600", "etcd:etcd", p.Certs.Peer.Key},
		{dir + etcdClientCertFile, "0644", "root:root", p.Certs.Client.Cert},
		{dir + etcdClientKeyFile, "0600", "root:root", p.Certs.Client.Key},
	}
	return renderScript(RecipeEtcd, etcdBody, etcdScript{
		EtcdParams: p, ByArch: arches, Config: cfg, Unit: []byte(etcdUnit), CertFiles: files,
	})
}

// EtcdHealthParams configures etcd-health, which runs on an etcd member.
type EtcdHealthParams struct {
	Cluster EtcdCluster
	// PKIDir holds ca.crt, client.crt and client.key (default
	// DefaultEtcdPKIDir, where the etcd recipe puts them).
	PKIDir string
	// Etcdctl is the etcdctl binary (default DefaultEtcdctl).
	Etcdctl string
	// Wait bounds how long to wait for every member to become healthy
	// (default DefaultEtcdHealthWait).
	Wait time.Duration
}

const etcdHealthBody = `
main() {
	local pki={{q .PKIDir}}
	local endpoints={{q (join .Cluster.ClientURLs ",")}}
	local deadline=$((SECONDS + {{seconds .Wait}})) out
	until out=$(ETCDCTL_API=3 {{q .Etcdctl}} --endpoints="$endpoints" \
		--cacert="$pki/ca.crt" --cert="$pki/client.crt" --key="$pki/client.key" \
		--dial-timeout=3s --command-timeout=5s endpoint health 2>&1); do
		if ((SECONDS >= deadline)); then
			printf '%s\n' "$out" >&2
			kforge_fail "etcd is not healthy on every member after {{seconds .Wait}}s"
		fi
		sleep {{pollSeconds .Wait}}
	done
	printf '%s\n' "$out"
}
`

// RenderEtcdHealth renders etcd-health: it waits (bounded by Wait) until
// `etcdctl endpoint health` succeeds against every member with the client
// certificate, prints the result, and exits non-zero if some member is still
// unhealthy.
func RenderEtcdHealth(p EtcdHealthParams) (string, error) {
	p.Cluster = p.Cluster.withDefaults()
	if err := p.Cluster.validate(); err != nil {
		return "", fmt.Errorf("etcd-health: %w", err)
	}
	p.PKIDir = strings.TrimSuffix(orDefault(p.PKIDir, DefaultEtcdPKIDir), "/")
	p.Etcdctl = orDefault(p.Etcdctl, DefaultEtcdctl)
	if p.Wait < 0 {
		return "", errors.New("etcd-health: the wait must not be negative")
	}
	p.Wait = orDefault(p.Wait, DefaultEtcdHealthWait)
	return renderScript(RecipeEtcdHealth, etcdHealthBody, p)
}

// Recipe that replaces a member in the etcd member list.
const RecipeEtcdReplaceMember = "etcd-replace-member"

// EtcdReplaceMemberParams configures etcd-replace-member, which runs on a
// healthy member.
type EtcdReplaceMemberParams struct {
	Cluster EtcdCluster
	// Member is the member whose VM was replaced: same name, the new VM's
	// address.
	Member Node
	// PKIDir holds the client certificate (default DefaultEtcdPKIDir).
	PKIDir string
	// Etcdctl is the etcdctl binary (default DefaultEtcdctl).
	Etcdctl string
}

type replaceScript struct {
	EtcdReplaceMemberParams
	Endpoints, Endpoint, PeerURL string
}

const replaceMemberBody = `
main() {
	local pki={{q .PKIDir}} name={{q .Member.Name}} peer={{q .PeerURL}} list id
	kforge_etcdctl() {
		ETCDCTL_API=3 {{q .Etcdctl}} --endpoints={{q .Endpoints}} --cacert="$pki/ca.crt" --cert="$pki/client.crt" \
			--key="$pki/client.key" --dial-timeout=5s --command-timeout=30s "$@"
	}
	# etcd refuses a change of the member list while it still counts the
	# lost member as recently active, or while a member that has just come
	# back is not yet counted ("etcdserver: unhealthy cluster"): that
	# passes within seconds, so the change is tried again for up to 2
	# minutes. Any other refusal fails at once.
	kforge_reconfigure() {
		local what=$1 out tries=0
		shift
		until out=$(kforge_etcdctl "$@" 2>&1); do
			if ! grep -q "unhealthy cluster" <<<"$out" || ((++tries >= 40)); then
				printf '%s\n' "$out" >&2
				kforge_fail "cannot $what"
			fi
			sleep 3
		done
		if ((tries > 0)); then
			kforge_log "etcd accepted the change after $((tries * 3))s"
		fi
	}
	# A new member that already runs (an earlier run got that far) is kept.
	if ETCDCTL_API=3 {{q .Etcdctl}} --endpoints={{q .Endpoint}} --cacert="$pki/ca.crt" --cert="$pki/client.crt" \
		--key="$pki/client.key" --dial-timeout=3s --command-timeout=5s endpoint health >/dev/null 2>&1; then
		echo "etcd member $name runs: nothing to replace"
		return 0
	fi
	list=$(kforge_etcdctl member list) || kforge_fail "cannot list the etcd members"
	# Lines: ID, status, name, peer URLs, client URLs, is learner.
	id=$(awk -F', ' -v n="$name" '$3 == n { print $1 }' <<<"$list")
	if [[ -n $id ]]; then
		kforge_log "removing etcd member $name ($id): its VM was replaced"
		kforge_reconfigure "remove etcd member $name ($id)" member remove "$id"
		list=$(kforge_etcdctl member list) || kforge_fail "cannot list the etcd members"
	fi
	if ! grep -qF "$peer" <<<"$list"; then
		kforge_log "adding etcd member $name ($peer)"
		kforge_reconfigure "add etcd member $name ($peer)" member add "$name" --peer-urls="$peer"
	fi
	echo "etcd member $name replaced: it joins as an existing member"
}
`

// RenderEtcdReplaceMember renders etcd-replace-member, for a healthy
// member when another member's VM was replaced: unless the new member
// already answers, it removes the old member from the member list and adds
// the new one (same name and peer URL), so that the new member can start
// as an existing member (EtcdConfigParams.Existing). One member of a
// cluster of three or more is never below quorum.
func RenderEtcdReplaceMember(p EtcdReplaceMemberParams) (string, error) {
	p.Cluster = p.Cluster.withDefaults()
	if err := p.Cluster.validate(); err != nil {
		return "", fmt.Errorf("etcd-replace-member: %w", err)
	}
	if err := p.Member.validate("etcd member", true); err != nil {
		return "", fmt.Errorf("etcd-replace-member: %w", err)
	}
	var endpoints []string
	for _, m := range p.Cluster.Members {
		if m.Name != p.Member.Name {
			endpoints = append(endpoints, httpsURL(m.privateAddr(), p.Cluster.ClientPort))
		}
	}
	if len(endpoints) == 0 {
		return "", errors.New("etcd-replace-member: a cluster of one member has no other member to replace it on")
	}
	p.PKIDir = strings.TrimSuffix(orDefault(p.PKIDir, DefaultEtcdPKIDir), "/")
	p.Etcdctl = orDefault(p.Etcdctl, DefaultEtcdctl)
	return renderScript(RecipeEtcdReplaceMember, replaceMemberBody, replaceScript{
		EtcdReplaceMemberParams: p,
		Endpoints:               strings.Join(endpoints, ","),
		Endpoint:                httpsURL(p.Member.privateAddr(), p.Cluster.ClientPort),
		PeerURL:                 httpsURL(p.Member.privateAddr(), p.Cluster.PeerPort),
	})
}
