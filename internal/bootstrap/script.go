package bootstrap

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"regexp"
	"strings"
	"text/template"
	"time"
)

// heredocEnd closes every heredoc in a script. Heredoc bodies are base64,
// which cannot contain it.
const heredocEnd = "KFORGE_EOF"

// helper is a shell function (or variable) recipes may use.
type helper struct {
	name string
	deps []string
	code string
}

// helpers are included in a script when its body, or an included helper,
// names them; they are printed in this order. Helpers print on standard
// error; kforge_changed records whether kforge_write or kforge_install
// replaced a file since the recipe last cleared it.
func helpers() []helper {
	return []helper{
		{name: "kforge_log", code: `
# kforge_log MESSAGE... prints progress on standard error.
kforge_log() {
	printf 'kforge: %s\n' "$*" >&2
}
`},
		{name: "kforge_fail", code: `
# kforge_fail MESSAGE... prints an error on standard error and exits.
kforge_fail() {
	printf 'kforge: error: %s\n' "$*" >&2
	exit 1
}
`},
		{name: "kforge_receive", deps: []string{"kforge_fail"}, code: `
# kforge_receive PATH SHA256 MODE writes standard input to PATH (through a
# temporary file beside it, checked against SHA256, then renamed), with
# MODE; what does not match is deleted.
kforge_receive() {
	local path=$1 sum=$2 mode=$3 tmp
	tmp=$(mktemp "$path.XXXXXX")
	if ! cat >"$tmp"; then
		rm -f "$tmp"
		kforge_fail "the upload of $path broke off"
	fi
	if ! printf '%s  %s\n' "$sum" "$tmp" | sha256sum --check --status; then
		rm -f "$tmp"
		kforge_fail "the upload of $path does not match its SHA-256"
	fi
	chmod "$mode" "$tmp"
	mv -f "$tmp" "$path"
}
`},
		{name: "kforge_dir", code: `
# kforge_dir PATH MODE OWNER:GROUP creates a directory, or sets the mode and
# owner of an existing one.
kforge_dir() {
	install -d -m "$2" -o "${3%%:*}" -g "${3#*:}" "$1"
}
`},
		{name: "kforge_install", deps: []string{"kforge_log", "kforge_fail"}, code: `
# shellcheck disable=SC2034 # read by the recipes that restart services
kforge_changed=0

# kforge_install TMP PATH MODE OWNER:GROUP [VALIDATOR...] renames TMP (a file
# in PATH's directory) over PATH with the given mode and owner, unless PATH
# already has that content. With a validator, "VALIDATOR... TMP" must accept
# the new file first. Sets kforge_changed=1 when PATH changed.
kforge_install() {
	local tmp=$1 path=$2 mode=$3 owner=$4
	shift 4
	chmod "$mode" "$tmp"
	chown "$owner" "$tmp"
	if (($#)) && ! "$@" "$tmp" >&2; then
		rm -f "$tmp"
		kforge_fail "$1 rejects the new $path"
	fi
	if [[ -f $path ]] && cmp -s "$tmp" "$path"; then
		rm -f "$tmp"
		chmod "$mode" "$path"
		chown "$owner" "$path"
		return 0
	fi
	mv -f "$tmp" "$path"
	# shellcheck disable=SC2034 # read by the recipes that restart services
	kforge_changed=1
	kforge_log "wrote $path"
}
`},
		{name: "kforge_write", deps: []string{"kforge_install", "kforge_fail"}, code: `
# kforge_write PATH MODE OWNER:GROUP [VALIDATOR...] installs the base64
# content on standard input at PATH, as kforge_install does.
kforge_write() {
	local path=$1 tmp
	tmp=$(mktemp "$(dirname "$path")/.kforge.XXXXXX")
	if ! base64 -d >"$tmp"; then
		rm -f "$tmp"
		kforge_fail "cannot decode the content of $path"
	fi
	kforge_install "$tmp" "$@"
}
`},
		{name: "kforge_apt", code: `
# kforge_apt ARGS... runs apt-get without prompts, waiting for a dpkg lock
# held by cloud-init or unattended upgrades.
kforge_apt() {
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@" >&2
}
`},
		{name: "kforge_apt_install", deps: []string{"kforge_apt", "kforge_log"}, code: `
# kforge_apt_install PACKAGE... installs the packages that are missing.
kforge_apt_install() {
	local missing=() p
	for p in "$@"; do
		if [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) != installed ]]; then
			missing+=("$p")
		fi
	done
	if ((${#missing[@]} == 0)); then
		return 0
	fi
	kforge_log "installing ${missing[*]}"
	kforge_apt update -q
	kforge_apt install -y -q "${missing[@]}"
}
`},
		{name: "kforge_download", code: `
# kforge_download URL FILE downloads URL to FILE, retrying transient errors.
kforge_download() {
	curl -fsSL --retry 5 --retry-delay 2 --retry-connrefused --connect-timeout 20 -o "$2" "$1"
}
`},
		{name: "kforge_artifact", deps: []string{"kforge_download", "kforge_fail", "kforge_log"}, code: kforgeArtifactHelper},
		{name: "kforge_binary", deps: []string{"kforge_artifact", "kforge_log"}, code: `
# kforge_binary FILE URL SHA256 NAME installs an artifact as the command
# /usr/local/bin/NAME, unless it is there already.
kforge_binary() {
	kforge_artifact "$1" "$2" "$3"
	if ! cmp -s "$1" "/usr/local/bin/$4"; then
		install -m 0755 "$1" "/usr/local/bin/$4"
		kforge_log "installed /usr/local/bin/$4"
	fi
}
`},
		{name: "kforge_etcd_snapshot", deps: []string{"kforge_fail"}, code: `
# kforge_etcd_snapshot ETCDCTL ETCDUTL ENDPOINT PKI-DIR FILE saves a
# snapshot of the etcd member at ENDPOINT (with the client certificate in
# PKI-DIR) as FILE, checks it with snapshot status (etcdutl, else
# etcdctl) and prints the status as JSON.
kforge_etcd_snapshot() {
	local etcdctl=$1 etcdutl=$2 endpoint=$3 pki=$4 out=$5
	rm -f "$out.part"
	if ! ETCDCTL_API=3 "$etcdctl" --endpoints="$endpoint" \
		--cacert="$pki/ca.crt" --cert="$pki/client.crt" --key="$pki/client.key" \
		--dial-timeout=5s --command-timeout=600s snapshot save "$out.part" >&2; then
		rm -f "$out.part"
		kforge_fail "etcdctl snapshot save from $endpoint failed"
	fi
	mv -f "$out.part" "$out"
	if [[ -x $etcdutl ]]; then
		"$etcdutl" snapshot status "$out" --write-out=json || kforge_fail "the snapshot fails etcdutl snapshot status"
	else
		ETCDCTL_API=3 "$etcdctl" snapshot status "$out" --write-out=json || kforge_fail "the snapshot fails etcdctl snapshot status"
	fi
}
`},
		{name: "kforge_image", deps: []string{"kforge_artifact", "kforge_log"}, code: `
# kforge_image TARBALL URL SHA256 REF imports an image tarball (an
# artifact) into containerd's k8s.io namespace, unless REF is there, and
# pins it: the kubelet's image garbage collection leaves pinned images
# (containerd 1.7 and later report the label), and a VM installed offline
# cannot pull one again, such as an API server's stopped for a restore.
kforge_image() {
	kforge_artifact "$1" "$2" "$3"
	if [[ -z $(ctr -n k8s.io images ls -q name=="$4") ]]; then
		ctr -n k8s.io images import "$1" >&2
		kforge_log "imported $4"
	fi
	ctr -n k8s.io images label "$4" io.cri-containerd.pinned=pinned >/dev/null
}
`},
		{name: "kforge_kube_repo", deps: []string{"kforge_dir", "kforge_install", "kforge_download", "kforge_apt"}, code: `
# kforge_kube_repo MINOR points apt at the Kubernetes package repository of
# MINOR (v1.34) on pkgs.k8s.io, with its signing key.
kforge_kube_repo() {
	local minor=$1 list=/etc/apt/sources.list.d/kubernetes.list tmp
	kforge_dir /etc/apt/keyrings 0755 root:root
	tmp=$(mktemp /etc/apt/sources.list.d/.kforge.XXXXXX)
	printf 'deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/%s/deb/ /\n' "$minor" >"$tmp"
	kforge_changed=0
	kforge_install "$tmp" "$list" 0644 root:root
	if ((kforge_changed)) || [[ ! -s /etc/apt/keyrings/kubernetes-apt-keyring.gpg ]]; then
		local key_tmp
		key_tmp=$(mktemp -d)
		kforge_download "https://pkgs.k8s.io/core:/stable:/$minor/deb/Release.key" "$key_tmp/Release.key"
		gpg --batch --dearmor <"$key_tmp/Release.key" >"$key_tmp/keyring.gpg"
		install -m 0644 "$key_tmp/keyring.gpg" /etc/apt/keyrings/kubernetes-apt-keyring.gpg
		rm -rf "$key_tmp"
		kforge_apt update -q
	fi
}
`},
		{name: "kforge_kube_packages", deps: []string{"kforge_apt", "kforge_fail", "kforge_log"}, code: `
# kforge_kube_packages VERSION PACKAGE... installs exactly release VERSION
# (1.34.2) of the Kubernetes packages from the repository kforge_kube_repo
# set, held against unattended upgrades.
kforge_kube_packages() {
	local version=$1 pkg have want need=0
	shift
	local -a wanted=()
	for pkg in "$@"; do
		have=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null || true)
		if [[ $have != "$version"-* ]]; then
			need=1
		fi
	done
	if ((need)); then
		kforge_apt update -q
		for pkg in "$@"; do
			want=$(apt-cache madison "$pkg" | awk -v v="$version-" 'index($3, v) == 1 { print $3; exit }')
			if [[ -z $want ]]; then
				kforge_fail "$pkg $version is not in the Kubernetes apt repository"
			fi
			wanted+=("$pkg=$want")
		done
		kforge_log "installing ${wanted[*]}"
		apt-mark unhold "$@" >/dev/null 2>&1 || true
		kforge_apt install -y -q --allow-downgrades --allow-change-held-packages "${wanted[@]}"
	fi
	apt-mark hold "$@" >/dev/null
}
`},
	}
}

// neededHelpers returns the code of the helpers body uses, directly or
// through other helpers, in helpers() order.
func neededHelpers(body string) string {
	all := helpers()
	byName := map[string]helper{}
	for _, h := range all {
		byName[h.name] = h
	}
	need := map[string]bool{}
	var visit func(name string)
	visit = func(name string) {
		if need[name] {
			return
		}
		need[name] = true
		for _, d := range byName[name].deps {
			visit(d)
		}
	}
	words := regexp.MustCompile(`\bkforge_[a-z_]+\b`).FindAllString(body, -1)
	for _, w := range words {
		if _, ok := byName[w]; ok {
			visit(w)
		}
	}
	var b strings.Builder
	for _, h := range all {
		if need[h.name] {
			b.WriteString(h.code)
		}
	}
	return b.String()
}

// renderScript renders one recipe: the fixed header, the helpers it uses, then the
// body template (which must define "main"), then the call of main with
// standard input from /dev/null.
func renderScript(recipe, body string, data any) (string, error) {
	t, err := template.New(recipe).Funcs(template.FuncMap{
		"q":           shellQuote,
		"write":       writeFile,
		"seconds":     seconds,
		"pollSeconds": pollSeconds,
		"join":        strings.Join,
		"b64":         base64Lines,
	}).Parse(body)
	if err != nil {
		return "", fmt.Errorf("render %s: parse template: %w", recipe, err)
	}
	var main bytes.Buffer
	if err := t.Execute(&main, data); err != nil {
		return "", fmt.Errorf("render %s: %w", recipe, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "#!/usr/bin/env bash\n# kforge-recipe: %s\nset -euo pipefail\n", recipe)
	b.WriteString(neededHelpers(main.String()))
	b.Write(main.Bytes())
	b.WriteString("\nmain </dev/null\n")
	return b.String(), nil
}

// shellQuote quotes s for bash as one word.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// seconds renders a duration as whole seconds (at least 1).
func seconds(d time.Duration) int {
	s := int(d / time.Second)
	if s < 1 {
		return 1
	}
	return s
}

// pollSeconds is how long a script waits between two looks while waiting
// up to d: a tenth of d, between 1 and 5 seconds.
func pollSeconds(d time.Duration) int {
	return min(max(seconds(d)/10, 1), 5)
}

// writeFile renders a kforge_write call with content as a base64 heredoc.
// Extra arguments are the validator command.
func writeFile(path, mode, owner string, content []byte, validator ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "kforge_write %s %s %s", shellQuote(path), mode, owner)
	for _, v := range validator {
		b.WriteString(" " + shellQuote(v))
	}
	fmt.Fprintf(&b, " <<'%s'\n", heredocEnd)
	if enc := base64Lines(content); enc != "" {
		b.WriteString(enc + "\n")
	}
	b.WriteString(heredocEnd)
	return b.String()
}

// base64Lines encodes content as base64 in lines of 76 characters, without
// a final newline.
func base64Lines(content []byte) string {
	enc := base64.StdEncoding.EncodeToString(content)
	var lines []string
	for len(enc) > 76 {
		lines = append(lines, enc[:76])
		enc = enc[76:]
	}
	if enc != "" {
		lines = append(lines, enc)
	}
	return strings.Join(lines, "\n")
}
