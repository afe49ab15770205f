// Package labimage builds the container images of the lab's Kubernetes
// clusters from static binaries on this machine, with no registry: each
// image is written as a docker-archive tarball (the format of
// `docker save`) that `ctr -n k8s.io images import` accepts, under the
// exact reference the cluster asks for.
//
// Build writes one image from a Spec (platform, entrypoint, environment,
// files copied from the host, extra layers). ToolsLayer makes the layer
// that gives an image a shell, coreutils-like applets and iptables, copied
// from the build machine's Debian packages busybox-static and iptables.
// BuildKubeadmImages writes every image of a kubeadm v1.34.2 cluster with
// Flannel from the binaries scripts/build-lab.sh builds, and caches them.
//
// Layers are reproducible: entries are written in a fixed order, with
// fixed owners and times, so that the same inputs give the same digests.
package labimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// DefaultPath is the PATH of an image whose Spec sets no environment.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// epoch is the modification time of every layer entry.
var epoch = time.Unix(0, 0).UTC()

// File is one entry of a layer: a regular file copied from the host or
// given inline, or a symbolic link. Parent directories are added as
// needed (mode 0755).
type File struct {
	// Path is the entry's absolute path in the image.
	Path string
	// Src is the host file the entry copies. Symbolic links are followed.
	Src string
	// Data is the entry's content when Src and Link are empty.
	Data []byte
	// Link, when set, makes the entry a symbolic link to Link.
	Link string
	// Mode holds the entry's permission bits; zero takes those of Src
	// (0644 for Data).
	Mode fs.FileMode
}

// Spec describes an image.
type Spec struct {
	// Platform is the image's platform; its zero value means linux/amd64.
	Platform v1.Platform
	// Entrypoint and Cmd are the image's ENTRYPOINT and CMD.
	Entrypoint []string
	Cmd        []string
	// Env is the image's environment; nil means DefaultPath alone.
	Env []string
	// WorkingDir is the image's working directory.
	WorkingDir string
	// Layers are layers placed first, in order (for example ToolsLayer).
	Layers []v1.Layer
	// Files make the image's top layer, when there are any.
	Files []File
}

// Build writes the image spec describes, tagged ref (for example
// "registry.k8s.io/pause:3.10.1"), as a docker-archive tarball at out. The
// tarball is written beside out and renamed over it once complete.
func Build(ref string, spec Spec, out string) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("image reference %q: %w", ref, err)
	}
	layers := append([]v1.Layer(nil), spec.Layers...)
	if len(spec.Files) > 0 {
		l, err := FilesLayer(spec.Files)
		if err != nil {
			return fmt.Errorf("image %s: %w", ref, err)
		}
		layers = append(layers, l)
	}
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	cf = cf.DeepCopy()
	p := spec.platform()
	cf.OS, cf.Architecture, cf.Variant, cf.OSVersion = p.OS, p.Architecture, p.Variant, p.OSVersion
	cf.Config.Entrypoint = spec.Entrypoint
	cf.Config.Cmd = spec.Cmd
	cf.Config.Env = spec.env()
	cf.Config.WorkingDir = spec.WorkingDir
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tarball.Write(tag, img, tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("image %s: write %s: %w", ref, out, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}

// BuildCached is Build, skipped when out was built by an earlier call from
// the same inputs: the reference, the Spec, the content of every file it
// copies and the digest of every extra layer. The fingerprint of those
// inputs is kept in out+".inputs". It reports whether it built the image.
func BuildCached(ref string, spec Spec, out string) (built bool, err error) {
	fp, err := fingerprint(ref, spec)
	if err != nil {
		return false, fmt.Errorf("image %s: %w", ref, err)
	}
	stamp := out + ".inputs"
	if old, err := os.ReadFile(stamp); err == nil && string(old) == fp {
		if _, err := os.Stat(out); err == nil {
			return false, nil
		}
	}
	os.Remove(stamp)
	if err := Build(ref, spec, out); err != nil {
		return false, err
	}
	return true, os.WriteFile(stamp, []byte(fp), 0o644)
}

func (s Spec) platform() v1.Platform {
	if s.Platform.OS == "" && s.Platform.Architecture == "" {
		return v1.Platform{OS: "linux", Architecture: "amd64"}
	}
	return s.Platform
}

func (s Spec) env() []string {
	if s.Env == nil {
		return []string{DefaultPath}
	}
	return s.Env
}

// fingerprint hashes what an image is built from.
func fingerprint(ref string, spec Spec) (string, error) {
	type file struct {
		Path, Link, Content string
		Mode                fs.FileMode
	}
	in := struct {
		Version              int
		Ref                  string
		Platform             v1.Platform
		Entrypoint, Cmd, Env []string
		WorkingDir           string
		Layers               []string
		Files                []file
	}{Version: 1, Ref: ref, Platform: spec.platform(), Entrypoint: spec.Entrypoint,
		Cmd: spec.Cmd, Env: spec.env(), WorkingDir: spec.WorkingDir}
	for _, l := range spec.Layers {
		d, err := l.Digest()
		if err != nil {
			return "", err
		}
		in.Layers = append(in.Layers, d.String())
	}
	for _, f := range spec.Files {
		e := file{Path: f.Path, Link: f.Link, Mode: f.Mode}
		switch {
		case f.Link != "":
		case f.Src != "":
			h := sha256.New()
			r, err := os.Open(f.Src)
			if err != nil {
				return "", err
			}
			fi, err := r.Stat()
			if err == nil {
				e.Mode = mode(f.Mode, fi.Mode())
				_, err = io.Copy(h, r)
			}
			r.Close()
			if err != nil {
				return "", fmt.Errorf("%s: %w", f.Src, err)
			}
			e.Content = hex.EncodeToString(h.Sum(nil))
		default:
			sum := sha256.Sum256(f.Data)
			e.Content = hex.EncodeToString(sum[:])
		}
		in.Files = append(in.Files, e)
	}
	b, err := json.Marshal(in)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]) + "\n", nil
}

// mode is the permission bits of an entry: want, or those of the source.
func mode(want, src fs.FileMode) fs.FileMode {
	if want != 0 {
		return want.Perm()
	}
	return src.Perm()
}

// FilesLayer makes a gzip-compressed layer of files, in the order given,
// each preceded by the parent directories not yet in the layer. Two
// entries at one path are an error.
func FilesLayer(files []File) (v1.Layer, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	dirs := map[string]bool{}
	seen := map[string]bool{}
	for _, f := range files {
		p := path.Clean(f.Path)
		if !path.IsAbs(p) || p == "/" {
			return nil, fmt.Errorf("layer entry %q: want an absolute file path", f.Path)
		}
		if seen[p] || dirs[p] {
			return nil, fmt.Errorf("layer entry %s: given twice", p)
		}
		seen[p] = true
		if err := parents(tw, dirs, path.Dir(p)); err != nil {
			return nil, err
		}
		if err := writeEntry(tw, p[1:], f); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	})
}

// parents writes the directory entries of dir and its ancestors that the
// layer lacks, outermost first.
func parents(tw *tar.Writer, dirs map[string]bool, dir string) error {
	if dir == "/" || dirs[dir] {
		return nil
	}
	if err := parents(tw, dirs, path.Dir(dir)); err != nil {
		return err
	}
	dirs[dir] = true
	return tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeDir, Name: dir[1:] + "/", Mode: 0o755,
		ModTime: epoch, Format: tar.FormatPAX,
	})
}

func writeEntry(tw *tar.Writer, name string, f File) error {
	h := &tar.Header{Name: name, ModTime: epoch, Format: tar.FormatPAX}
	switch {
	case f.Link != "":
		h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, f.Link, 0o777
		return tw.WriteHeader(h)
	case f.Src != "":
		r, err := os.Open(f.Src)
		if err != nil {
			return err
		}
		defer r.Close()
		fi, err := r.Stat()
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("layer entry %s: %s is not a regular file", f.Path, f.Src)
		}
		h.Typeflag, h.Size, h.Mode = tar.TypeReg, fi.Size(), int64(mode(f.Mode, fi.Mode()))
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		n, err := io.Copy(tw, r)
		if err == nil && n != fi.Size() {
			err = errors.New("file changed while copied")
		}
		if err != nil {
			return fmt.Errorf("layer entry %s: %s: %w", f.Path, f.Src, err)
		}
		return nil
	default:
		m := f.Mode
		if m == 0 {
			m = 0o644
		}
		h.Typeflag, h.Size, h.Mode = tar.TypeReg, int64(len(f.Data)), int64(m.Perm())
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(f.Data)
		return err
	}
}

// LayerFiles lists the entries of a layer: each path (absolute, without a
// trailing slash) with its tar header.
func LayerFiles(l v1.Layer) (map[string]*tar.Header, error) {
	rc, err := l.Uncompressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	out := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out["/"+strings.TrimSuffix(path.Clean(h.Name), "/")] = h
	}
}

// Extract writes the entries of layers, in order, under dir: directories,
// regular files and symbolic links (kept as they are, so absolute links
// resolve inside dir only under chroot). It refuses entries that leave dir.
func Extract(dir string, layers ...v1.Layer) error {
	for _, l := range layers {
		if err := extract(dir, l); err != nil {
			return err
		}
	}
	return nil
}

func extract(dir string, l v1.Layer) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		rel := path.Clean("/" + h.Name)
		if rel == "/" {
			continue
		}
		dst := filepath.Join(dir, filepath.FromSlash(rel))
		if err := noLinkedParent(dir, rel); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, fs.FileMode(h.Mode).Perm()); err != nil {
				return err
			}
		case tar.TypeSymlink:
			os.Remove(dst)
			if err := os.Symlink(h.Linkname, dst); err != nil {
				return err
			}
		case tar.TypeReg:
			os.Remove(dst)
			w, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, fs.FileMode(h.Mode).Perm())
			if err != nil {
				return err
			}
			_, err = io.Copy(w, tr)
			if cerr := w.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("layer entry %s: unsupported type %q", h.Name, h.Typeflag)
		}
	}
}

// noLinkedParent refuses rel (a cleaned absolute path) when one of its
// parent directories under dir is a symbolic link, which could lead a
// write out of dir.
func noLinkedParent(dir, rel string) error {
	p := dir
	parts := strings.Split(strings.TrimPrefix(path.Dir(rel), "/"), "/")
	for _, part := range parts {
		if part == "" {
			continue
		}
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("layer entry %s: its parent %s is a symbolic link", rel, p)
		}
	}
	return nil
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
