// Package artifacts says which files the VMs of an ha-aws cluster install
// (etcd, the Kubernetes binaries, the CNI plugins, k3s, container images),
// where each comes from upstream, and where it lives in an artifacts
// directory or mirror, so that clusters can be made without internet access
// on the VMs.
//
// Three sources, chosen with --artifacts:
//
//   - none (the default): the VMs download from the public upstreams
//     (GitHub releases, the Kubernetes apt repository, the container
//     registries);
//   - a directory (--artifacts DIR): kforge uploads what each VM needs over
//     its SSH connection, so the VMs need no outbound access at all;
//   - a mirror (--artifacts https://mirror/path): the VMs download from the
//     mirror, which has the same layout as a directory.
//
// A directory or mirror has this layout (kforge artifacts fetch fills one),
// with <arch> a Debian architecture (amd64, arm64):
//
//	SHA256SUMS                                        sha256sum format, every file below
//	etcd/<v>/etcd-<v>-linux-<arch>.tar.gz             the etcd release tarball
//	kubernetes/<v>/bin/linux/<arch>/kubeadm           kubeadm, kubelet, kubectl (kubeadm clusters)
//	cni-plugins/<v>/cni-plugins-linux-<arch>-<v>.tgz  the CNI plugins release tarball (kubeadm clusters)
//	k3s/<v>/k3s, k3s/<v>/k3s-arm64                    the k3s binary (k3s clusters)
//	k3s/<v>/k3s-airgap-images-<arch>.tar.zst          k3s's own images (k3s clusters)
//	images/<arch>/<image>.tar                         one docker-archive tarball per image
//
// SHA256SUMS is the source of truth for a directory or mirror: kforge reads
// it once when a cluster is created, keeps the checksums of the files the
// cluster needs in its state, and the VMs check every file against them
// before they use it. A file without a checksum is never used.
package artifacts

import (
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
)

// SumsFile is the checksum list at the top of a directory or mirror.
const SumsFile = "SHA256SUMS"

// VMDir is where the VMs keep the artifacts they were given or downloaded.
const VMDir = "/var/lib/kforge/artifacts"

// Source is where the VMs get their artifacts from. The zero value means
// the public upstreams.
type Source struct {
	// Dir is a local directory whose files kforge uploads to the VMs.
	Dir string `json:"dir,omitempty"`
	// URL is a mirror the VMs download from (http or https), without a
	// trailing slash.
	URL string `json:"url,omitempty"`
}

// ParseSource reads the --artifacts value: empty for the upstreams, an
// http(s) URL for a mirror, else a directory (made absolute).
func ParseSource(s string) (Source, error) {
	switch {
	case s == "":
		return Source{}, nil
	case strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "http://"):
		u, err := url.Parse(s)
		if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return Source{}, fmt.Errorf("--artifacts %q: a mirror is an http(s) URL with a host and a path, without query, fragment or credentials", s)
		}
		return Source{URL: strings.TrimRight(s, "/")}, nil
	case strings.Contains(s, "://"):
		return Source{}, fmt.Errorf("--artifacts %q: give a directory or an http(s) mirror URL", s)
	}
	abs, err := filepath.Abs(s)
	if err != nil {
		return Source{}, fmt.Errorf("--artifacts %q: %w", s, err)
	}
	return Source{Dir: abs}, nil
}

// IsZero reports whether the source is the public upstreams.
func (s Source) IsZero() bool { return s.Dir == "" && s.URL == "" }

// String is the --artifacts value that names the source, or "upstream".
func (s Source) String() string {
	switch {
	case s.Dir != "":
		return s.Dir
	case s.URL != "":
		return s.URL
	}
	return "upstream"
}

// Describe says, for the plan, how the VMs get their files.
func (s Source) Describe() string {
	switch {
	case s.Dir != "":
		return "kforge uploads them over SSH from " + s.Dir + "; the VMs need no internet access"
	case s.URL != "":
		return "the VMs download them from the mirror " + s.URL
	}
	return "the VMs download them from the public upstreams"
}

// Check verifies that a directory source exists and holds SHA256SUMS.
func (s Source) Check() error {
	if s.Dir == "" {
		return nil
	}
	st, err := os.Stat(s.Dir)
	if err != nil {
		return fmt.Errorf("--artifacts %s: %w", s.Dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("--artifacts %s is not a directory", s.Dir)
	}
	if _, err := os.Stat(filepath.Join(s.Dir, SumsFile)); err != nil {
		return fmt.Errorf("--artifacts %s has no %s: fill it with 'kforge artifacts fetch --dir %s'", s.Dir, SumsFile, s.Dir)
	}
	return nil
}

// URLOf is the mirror URL of a file of the layout.
func (s Source) URLOf(p string) string {
	if s.URL == "" {
		return ""
	}
	return s.URL + "/" + escapePath(p)
}

// LocalPath is the path of a file of the layout in a directory source.
func (s Source) LocalPath(p string) string { return filepath.Join(s.Dir, filepath.FromSlash(p)) }

// VMPath is where a file of the layout lives on a VM.
func VMPath(p string) string { return VMDir + "/" + p }

// escapePath escapes each element of a layout path for a URL ('+' in k3s
// versions).
func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, e := range parts {
		parts[i] = url.PathEscape(e)
	}
	return strings.Join(parts, "/")
}

// File is one artifact.
type File struct {
	// Path is the file's place in the layout (slash-separated).
	Path string `json:"path"`
	// Upstream is where kforge artifacts fetch downloads it from; for an
	// image, the registry reference in Image is used instead.
	Upstream string `json:"upstream,omitempty"`
	// SHA256 is the upstream file's checksum when kforge pins it.
	SHA256 string `json:"sha256,omitempty"`
	// SumURL is an upstream checksum file for it, when one is published
	// (a ".sha256" file, or a sha256sum list naming the file).
	SumURL string `json:"sumUrl,omitempty"`
	// Image is the image reference an image tarball holds.
	Image string `json:"image,omitempty"`
	// Arch is the Debian architecture of the file ("" for any).
	Arch string `json:"arch,omitempty"`
}

var safeRE = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// ImagePath is the layout path of an image's tarball.
func ImagePath(arch, ref string) string {
	return path.Join("images", arch, safeRE.ReplaceAllString(ref, "_")+".tar")
}
