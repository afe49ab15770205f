package bootstrap

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"
)

// Recipes of etcd backups and restores.
const (
	RecipeEtcdSnapshot     = "etcd-snapshot"
	RecipeEtcdSnapshotRead = "etcd-snapshot-read"
	RecipeEtcdRestore      = "etcd-restore"
)

// Where the backup recipes keep snapshots on an etcd member (root only).
const (
	DefaultEtcdBackupDir = "/var/lib/kforge/backup"
	DefaultEtcdutl       = "/usr/local/bin/etcdutl"
)

// EtcdBackupTools are where the backup recipes find etcd's tools and
// keep snapshots on a member.
type EtcdBackupTools struct {
	// Etcdctl and Etcdutl are the binaries (defaults DefaultEtcdctl and
	// DefaultEtcdutl; without etcdutl, etcdctl checks and restores).
	Etcdctl, Etcdutl string
	// Dir is where snapshots are kept (default DefaultEtcdBackupDir).
	Dir string
}

func (t EtcdBackupTools) withDefaults() EtcdBackupTools {
	t.Etcdctl = orDefault(t.Etcdctl, DefaultEtcdctl)
	t.Etcdutl = orDefault(t.Etcdutl, DefaultEtcdutl)
	t.Dir = strings.TrimSuffix(orDefault(t.Dir, DefaultEtcdBackupDir), "/")
	return t
}

// paths are the tools' paths, each to be absolute.
func (t EtcdBackupTools) paths() []string { return []string{t.Etcdctl, t.Etcdutl, t.Dir} }

// EtcdSnapshotParams configures etcd-snapshot.
type EtcdSnapshotParams struct {
	// Cluster is the etcd cluster; Member the member that takes the
	// snapshot (of its own data, through its own client URL).
	Cluster EtcdCluster
	Member  Node
	// PKIDir holds the client certificate (default DefaultEtcdPKIDir).
	PKIDir string
	EtcdBackupTools
}

func (p EtcdSnapshotParams) withDefaults() EtcdSnapshotParams {
	p.Cluster = p.Cluster.withDefaults()
	p.PKIDir = strings.TrimSuffix(orDefault(p.PKIDir, DefaultEtcdPKIDir), "/")
	p.EtcdBackupTools = p.EtcdBackupTools.withDefaults()
	return p
}

// SnapshotPath is where etcd-snapshot leaves the snapshot.
func (p EtcdSnapshotParams) SnapshotPath() string { return p.withDefaults().Dir + "/snapshot.db" }

type etcdSnapshotScript struct {
	EtcdSnapshotParams
	Endpoint, Path string
}

const etcdSnapshotBody = `
main() {
	local pki={{q .PKIDir}} dir={{q .Dir}} endpoint={{q .Endpoint}} out={{q .Path}}
	local status sum
	umask 077
	mkdir -p "$dir"
	status=$(kforge_etcd_snapshot {{q .Etcdctl}} {{q .Etcdutl}} "$endpoint" "$pki" "$out")
	sum=$(sha256sum "$out" | cut -d ' ' -f 1)
	printf 'status %s\n' "$status"
	printf 'sha256 %s\n' "$sum"
	printf 'size %s\n' "$(stat -c %s "$out")"
}
`

// RenderEtcdSnapshot renders etcd-snapshot: on one member, a snapshot of
// its data (etcdctl snapshot save with the member's client certificate)
// into a root-only file, checked with snapshot status. It prints three
// lines: "status <JSON of snapshot status>", "sha256 <hex>", "size <bytes>"
// (see ParseEtcdSnapshot).
func RenderEtcdSnapshot(p EtcdSnapshotParams) (string, error) {
	p = p.withDefaults()
	if err := p.Cluster.validate(); err != nil {
		return "", fmt.Errorf("etcd-snapshot: %w", err)
	}
	if err := p.Member.validate("etcd member", true); err != nil {
		return "", fmt.Errorf("etcd-snapshot: %w", err)
	}
	for _, path := range append(p.paths(), p.PKIDir) {
		if !absPathRE.MatchString(path) {
			return "", fmt.Errorf("etcd-snapshot: %q is not an absolute path", path)
		}
	}
	endpoint := httpsURL(p.Member.privateAddr(), p.Cluster.ClientPort)
	return renderScript(RecipeEtcdSnapshot, etcdSnapshotBody, etcdSnapshotScript{EtcdSnapshotParams: p, Endpoint: endpoint, Path: p.SnapshotPath()})
}

// absPathRE is an absolute path of safe characters.
var absPathRE = regexp.MustCompile(`^/[A-Za-z0-9._/-]*$`)

const etcdSnapshotReadBody = `
main() {
	local path={{q .}}
	[[ -f $path ]] || kforge_fail "no snapshot at $path: take one first"
	cat "$path"
}
`

// RenderEtcdSnapshotRead renders etcd-snapshot-read: it writes the
// snapshot at path to standard output, for kforge to store.
func RenderEtcdSnapshotRead(path string) (string, error) {
	if !absPathRE.MatchString(path) {
		return "", fmt.Errorf("etcd-snapshot-read: %q is not an absolute path", path)
	}
	return renderScript(RecipeEtcdSnapshotRead, etcdSnapshotReadBody, path)
}

// EtcdRestoreParams configures etcd-restore on one member.
type EtcdRestoreParams struct {
	// Cluster is the etcd cluster to make from the snapshot: its members
	// (names and peer URLs) and its new token, which must differ from
	// the old cluster's so that old and new members never join up.
	Cluster EtcdCluster
	Member  Node
	// SHA256 is the snapshot's checksum; the snapshot follows the script
	// on standard input.
	SHA256 string
	// DataDir is etcd's data directory (default DefaultEtcdDataDir).
	DataDir string
	EtcdBackupTools
	// Unmanaged leaves out what only a VM has: stopping and starting
	// etcd.service and giving the data to the etcd user (for tests that
	// run etcd themselves).
	Unmanaged bool
}

func (p EtcdRestoreParams) withDefaults() EtcdRestoreParams {
	p.Cluster = p.Cluster.withDefaults()
	p.DataDir = strings.TrimSuffix(orDefault(p.DataDir, DefaultEtcdDataDir), "/")
	p.EtcdBackupTools = p.EtcdBackupTools.withDefaults()
	return p
}

type etcdRestoreScript struct {
	EtcdRestoreParams
	InitialCluster, PeerURL string
	BumpRevision            int64
}

// RestoreRevisionBump is how far a restore moves etcd's revision past the
// snapshot's (with etcdutl v3.5.10 or later), as Kubernetes' etcd guide
// advises: more than any cluster writes between a snapshot and its
// restore.
const RestoreRevisionBump = 1_000_000_000

const etcdRestoreBody = `
main() {
	local dir={{q .Dir}} data={{q .DataDir}} sum={{q .SHA256}} token={{q .Cluster.Token}}
	local snap marker="{{.DataDir}}.kforge-restored" stamp
	umask 077
	mkdir -p "$dir"
	snap="$dir/restore-$sum.db"
	if [[ -f $snap ]] && printf '%s  %s\n' "$sum" "$snap" | sha256sum --check --status; then
		cat >/dev/null
	else
		kforge_receive "$snap" "$sum" 0600
	fi
{{- if not .Unmanaged}}
	systemctl stop etcd.service
{{- end}}
	if [[ -f $marker ]] && [[ $(cat "$marker") == "$sum $token" ]]; then
		kforge_log "the data directory was already restored from this snapshot"
	else
		stamp=$(date -u +%Y%m%dT%H%M%SZ)
		rm -rf "$data.restoring"
		if [[ -x {{q .Etcdutl}} ]]; then
			# The restored revision goes well past any the API servers'
			# clients have seen, and what lies before it counts as
			# compacted: a watch (kube-proxy's, a controller's) then fails
			# and lists again, instead of waiting, at a revision from
			# before the restore, for events that never come. etcdutl has
			# these flags since v3.5.10.
			local bump=()
			if {{q .Etcdutl}} snapshot restore --help 2>&1 | grep -q -- --bump-revision; then
				bump=(--bump-revision={{.BumpRevision}} --mark-compacted)
			else
				kforge_log "this etcdutl cannot bump the restored revision: restart the cluster's controllers and kube-proxy if they miss changes"
			fi
			{{q .Etcdutl}} snapshot restore "$snap" --name={{q .Member.Name}} \
				--initial-cluster={{q .InitialCluster}} --initial-cluster-token="$token" \
				--initial-advertise-peer-urls={{q .PeerURL}} --data-dir="$data.restoring" "${bump[@]}" >&2 ||
				kforge_fail "etcdutl snapshot restore failed"
		else
			ETCDCTL_API=3 {{q .Etcdctl}} snapshot restore "$snap" --name={{q .Member.Name}} \
				--initial-cluster={{q .InitialCluster}} --initial-cluster-token="$token" \
				--initial-advertise-peer-urls={{q .PeerURL}} --data-dir="$data.restoring" >&2 ||
				kforge_fail "etcdctl snapshot restore failed"
		fi
		if [[ -d $data ]]; then
			mv "$data" "$data.before-restore-$stamp"
			kforge_log "the old data directory is kept at $data.before-restore-$stamp"
		fi
		mv "$data.restoring" "$data"
{{- if not .Unmanaged}}
		chown -R etcd:etcd "$data"
{{- end}}
		printf '%s %s\n' "$sum" "$token" >"$marker"
	fi
{{- if not .Unmanaged}}
	systemctl start --no-block etcd.service
{{- end}}
	echo "restored"
}
`

// RenderEtcdRestore renders etcd-restore: the snapshot arrives on
// standard input after the script (sshx.Client.RunInput) and is kept,
// root only, once its SHA-256 matches; etcd is stopped; the snapshot is
// restored (etcdutl snapshot restore, else etcdctl) into a new data
// directory as this member of a new cluster (every member's peer URL and
// the new token), with etcdutl its revision moved RestoreRevisionBump
// past the snapshot's and what lies before marked compacted; the old data
// directory is kept beside it; etcd starts again. A marker beside the
// data directory names the snapshot and token restored, so a restore run
// again (after a crash) restores nothing twice.
func RenderEtcdRestore(p EtcdRestoreParams) (string, error) {
	p = p.withDefaults()
	if err := p.Cluster.validate(); err != nil {
		return "", fmt.Errorf("etcd-restore: %w", err)
	}
	if err := p.Member.validate("etcd member", true); err != nil {
		return "", fmt.Errorf("etcd-restore: %w", err)
	}
	if !sha256RE.MatchString(p.SHA256) {
		return "", errors.New("etcd-restore: the snapshot's SHA-256 must be 64 lowercase hex digits")
	}
	for _, path := range append(p.paths(), p.DataDir) {
		if !absPathRE.MatchString(path) || path == "/" {
			return "", fmt.Errorf("etcd-restore: %q is not an absolute path", path)
		}
	}
	var initial []string
	member := false
	for _, m := range p.Cluster.Members {
		initial = append(initial, m.Name+"="+httpsURL(m.privateAddr(), p.Cluster.PeerPort))
		member = member || m.Name == p.Member.Name
	}
	if !member {
		return "", fmt.Errorf("etcd-restore: %s is not a member of the cluster", p.Member.Name)
	}
	s, err := renderScript(RecipeEtcdRestore, etcdRestoreBody, etcdRestoreScript{EtcdRestoreParams: p,
		InitialCluster: strings.Join(initial, ","), PeerURL: httpsURL(p.Member.privateAddr(), p.Cluster.PeerPort), BumpRevision: RestoreRevisionBump})
	if err != nil {
		return "", err
	}
	// Standard input is the snapshot: main must read it.
	return strings.TrimSuffix(s, "\nmain </dev/null\n") + "\nmain\n", nil
}

// EtcdSnapshot is what etcd-snapshot reports of a snapshot.
type EtcdSnapshot struct {
	Hash      uint64 `json:"hash"`
	Revision  int64  `json:"revision"`
	TotalKey  int64  `json:"totalKey"`
	TotalSize int64  `json:"totalSize"`
	SHA256    string `json:"sha256"`
	Size      int64  `json:"size"`
}

// ParseEtcdSnapshot reads the output of etcd-snapshot.
func ParseEtcdSnapshot(out []byte) (EtcdSnapshot, error) {
	var s EtcdSnapshot
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(line, " ")
		var err error
		switch k {
		case "status":
			err = json.Unmarshal([]byte(v), &s)
		case "sha256":
			s.SHA256 = v
		case "size":
			_, err = fmt.Sscan(v, &s.Size)
		}
		if err != nil {
			return s, fmt.Errorf("etcd-snapshot printed %q: %w", line, err)
		}
	}
	if !sha256RE.MatchString(s.SHA256) || s.Revision <= 0 {
		return s, fmt.Errorf("etcd-snapshot printed no checksum or revision: %q", out)
	}
	return s, nil
}

// Recipes that stop and start a control plane's API server around a
// restore of etcd.
const (
	RecipeAPIServerStop  = "apiserver-stop"
	RecipeAPIServerStart = "apiserver-start"
)

// kubeadmHeldDir is where apiserver-stop keeps the API server's static pod
// manifest while it is stopped (the kubelet stops the pod when its
// manifest leaves the manifests directory).
const kubeadmHeldDir = "/etc/kubernetes/kforge-held"

// APIServerParams configures apiserver-stop and apiserver-start.
type APIServerParams struct {
	// Kubeadm is true on a kubeadm control plane (a static pod), false on
	// a k3s server (the k3s service).
	Kubeadm bool
	// Timeout bounds the wait for the API port to close or open (default
	// 5 minutes: a kubelet may back off before it starts the pod again).
	Timeout time.Duration
}

type apiServerScript struct {
	APIServerParams
	Manifest, HeldDir, Held string
}

const apiServerStopBody = `
main() {
	local deadline=$((SECONDS + {{seconds .Timeout}}))
{{- if .Kubeadm}}
	if [[ -f {{q .Manifest}} ]]; then
		install -d -m 0700 {{q .HeldDir}}
		mv -f {{q .Manifest}} {{q .Held}}
	fi
{{- else}}
	systemctl stop k3s.service
{{- end}}
	while ss -Hltn 'sport = :` + "6443" + `' | grep -q .; do
		((SECONDS < deadline)) || kforge_fail "the API server still listens on 6443 after {{seconds .Timeout}}s"
		sleep 2
	done
	echo "stopped"
}
`

const apiServerStartBody = `
main() {
	local deadline=$((SECONDS + {{seconds .Timeout}}))
{{- if .Kubeadm}}
	if [[ -f {{q .Held}} ]]; then
		mv -f {{q .Held}} {{q .Manifest}}
	fi
{{- else}}
	systemctl start --no-block k3s.service
{{- end}}
	until ss -Hltn 'sport = :` + "6443" + `' | grep -q .; do
		if ((SECONDS >= deadline)); then
			# What the operator needs first: did the service start the API
			# server, and what did it last say about it?
{{- if .Kubeadm}}
			[[ -f {{q .Manifest}} ]] || kforge_log "{{.Manifest}} is missing"
			if command -v crictl >/dev/null; then crictl ps -a --name kube-apiserver 2>&1 | tail -n 3 >&2 || true; fi
			journalctl -u kubelet --no-pager -n 2000 2>/dev/null | grep -F kube-apiserver | tail -n 4 | cut -c1-300 >&2 || true
			kforge_fail "the API server does not listen on 6443 after {{seconds .Timeout}}s; see crictl ps -a and journalctl -u kubelet on the VM"
{{- else}}
			journalctl -u k3s --no-pager -n 6 2>/dev/null | cut -c1-300 >&2 || true
			kforge_fail "the API server does not listen on 6443 after {{seconds .Timeout}}s; see journalctl -u k3s on the VM"
{{- end}}
		fi
		sleep 2
	done
	echo "started"
}
`

// RenderAPIServerStop renders apiserver-stop: a kubeadm control plane's
// API server manifest is moved aside (kept for apiserver-start), a k3s
// server's service is stopped; then it waits for port 6443 to close.
// Run again, it finds the API server stopped.
func RenderAPIServerStop(p APIServerParams) (string, error) {
	return renderAPIServer(RecipeAPIServerStop, apiServerStopBody, p)
}

// RenderAPIServerStart renders apiserver-start, the undo of
// apiserver-stop; it waits for port 6443 to open.
func RenderAPIServerStart(p APIServerParams) (string, error) {
	return renderAPIServer(RecipeAPIServerStart, apiServerStartBody, p)
}

func renderAPIServer(recipe, body string, p APIServerParams) (string, error) {
	if p.Timeout < 0 {
		return "", fmt.Errorf("%s: the timeout must not be negative", recipe)
	}
	p.Timeout = orDefault(p.Timeout, 5*time.Minute)
	return renderScript(recipe, body, apiServerScript{APIServerParams: p, Manifest: KubeadmAPIServerManifest,
		HeldDir: kubeadmHeldDir, Held: kubeadmHeldDir + "/" + path.Base(KubeadmAPIServerManifest)})
}
