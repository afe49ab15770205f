package bootstrap

import (
	"fmt"
	"path"
	"regexp"
	"strings"
)

// Recipes that move artifacts to a VM.
const (
	RecipeArtifactsMissing = "artifacts-missing"
	RecipeReceive          = "receive"
)

// Artifact is a file a recipe installs: where it lives on the VM, where
// the VM downloads it from when it is not there (empty when kforge uploads
// it), and its SHA-256. A recipe uses the file only once its checksum
// matches; a download that does not match is deleted, never run.
type Artifact struct {
	Path   string `json:"path"`
	URL    string `json:"url,omitempty"`
	SHA256 string `json:"sha256"`
}

var (
	artifactPathRE = regexp.MustCompile(`^/[A-Za-z0-9._+/-]+$`)
	hexSHA256RE    = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

func (a Artifact) validate() error {
	if !artifactPathRE.MatchString(a.Path) || path.Clean(a.Path) != a.Path {
		return fmt.Errorf("artifact path %q: want a clean absolute path", a.Path)
	}
	if !hexSHA256RE.MatchString(a.SHA256) {
		return fmt.Errorf("artifact %s: want its SHA-256 as 64 lowercase hex digits", a.Path)
	}
	if a.URL != "" && !strings.HasPrefix(a.URL, "https://") && !strings.HasPrefix(a.URL, "http://") {
		return fmt.Errorf("artifact %s: URL %q is not http(s)", a.Path, a.URL)
	}
	return nil
}

func validArtifacts(as ...Artifact) error {
	for _, a := range as {
		if err := a.validate(); err != nil {
			return err
		}
	}
	return nil
}

// kforgeArtifactHelper makes a file of the artifacts present and checked.
const kforgeArtifactHelper = `
# kforge_artifact PATH URL SHA256 makes PATH exist with that SHA-256: kept
# if it matches, else downloaded from URL (into a temporary file, checked,
# then renamed); a download that does not match is deleted. Without a URL
# the file must already be there (kforge uploads it).
kforge_artifact() {
	local path=$1 url=$2 sum=$3 tmp
	if [[ -f $path ]] && printf '%s  %s\n' "$sum" "$path" | sha256sum --check --status; then
		return 0
	fi
	if [[ -z $url ]]; then
		kforge_fail "$path is missing or does not match its SHA-256; kforge uploads it: run the same kforge command again"
	fi
	install -d -m 0755 "$(dirname "$path")"
	tmp=$(mktemp "$path.XXXXXX")
	if ! kforge_download "$url" "$tmp"; then
		rm -f "$tmp"
		kforge_fail "cannot download $url"
	fi
	if ! printf '%s  %s\n' "$sum" "$tmp" | sha256sum --check --status; then
		rm -f "$tmp"
		kforge_fail "$url does not match its SHA-256; refusing to use it"
	fi
	chmod 0644 "$tmp"
	mv -f "$tmp" "$path"
	kforge_log "downloaded $url"
}
`

// ArtifactsMissingParams configures artifacts-missing.
type ArtifactsMissingParams struct {
	Files []Artifact
}

const artifactsMissingBody = `
main() {
	local path sum
	while read -r sum path; do
		if [[ ! -f $path ]] || ! printf '%s  %s\n' "$sum" "$path" | sha256sum --check --status; then
			printf '%s\n' "$path"
		fi
	done <<'` + heredocEnd + `'
{{- range .Files}}
{{.SHA256}} {{.Path}}
{{- end}}
` + heredocEnd + `
}
`

// RenderArtifactsMissing renders artifacts-missing: it prints, one per
// line, the files that are not on the VM with their SHA-256, so that
// kforge uploads only those.
func RenderArtifactsMissing(p ArtifactsMissingParams) (string, error) {
	if err := validArtifacts(p.Files...); err != nil {
		return "", fmt.Errorf("artifacts-missing: %w", err)
	}
	return renderScript(RecipeArtifactsMissing, artifactsMissingBody, p)
}

const receiveBody = `
main() {
	local path={{q .Path}}
	install -d -m 0755 "$(dirname "$path")"
	kforge_receive "$path" {{q .SHA256}} 0644
	echo "received $path"
}
`

// RenderReceive renders receive: the one recipe that reads data after
// its script on standard input (sshx.Client.RunInput). It writes the
// data to a temporary file next to Path, checks its SHA-256, and renames
// it over Path.
func RenderReceive(a Artifact) (string, error) {
	if err := a.validate(); err != nil {
		return "", fmt.Errorf("receive: %w", err)
	}
	s, err := renderScript(RecipeReceive, receiveBody, a)
	if err != nil {
		return "", err
	}
	// Standard input is the file: main must read it.
	return strings.TrimSuffix(s, "\nmain </dev/null\n") + "\nmain\n", nil
}
