package labimage

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// load decodes the image tagged ref from the tarball at p.
func load(t *testing.T, p, ref string) (v1.Image, *v1.ConfigFile) {
	t.Helper()
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(p, &tag)
	if err != nil {
		t.Fatalf("decode %s from %s: %v", ref, p, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return img, cf
}

// files lists the entries of all layers of img.
func files(t *testing.T, img v1.Image) map[string]*tar.Header {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	all := map[string]*tar.Header{}
	for _, l := range layers {
		fs, err := LayerFiles(l)
		if err != nil {
			t.Fatal(err)
		}
		for p, h := range fs {
			all[p] = h
		}
	}
	return all
}

func TestBuildDecodes(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "hello")
	if err := os.WriteFile(src, []byte("#!/bin/sh\necho hello\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	const ref = "registry.example/lab/hello:v1"
	spec := Spec{
		Entrypoint: []string{"/usr/local/bin/hello"},
		Cmd:        []string{"--flag"},
		Files: []File{
			{Path: "/usr/local/bin/hello", Src: src, Mode: 0o755},
			{Path: "/etc/greeting", Data: []byte("hi\n")},
			{Path: "/bin/hi", Link: "/usr/local/bin/hello"},
		},
	}
	out := filepath.Join(dir, "out", TarballName(ref))
	if err := Build(ref, spec, out); err != nil {
		t.Fatal(err)
	}
	img, cf := load(t, out, ref)
	if cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("platform %s/%s, want linux/amd64", cf.OS, cf.Architecture)
	}
	if !slices.Equal(cf.Config.Entrypoint, spec.Entrypoint) || !slices.Equal(cf.Config.Cmd, spec.Cmd) {
		t.Errorf("entrypoint %q cmd %q", cf.Config.Entrypoint, cf.Config.Cmd)
	}
	if !slices.Equal(cf.Config.Env, []string{DefaultPath}) {
		t.Errorf("env %q, want %q", cf.Config.Env, DefaultPath)
	}
	fs := files(t, img)
	for p, want := range map[string]byte{
		"/usr": tar.TypeDir, "/usr/local": tar.TypeDir, "/usr/local/bin": tar.TypeDir,
		"/usr/local/bin/hello": tar.TypeReg, "/etc/greeting": tar.TypeReg, "/bin/hi": tar.TypeSymlink,
	} {
		h, ok := fs[p]
		if !ok {
			t.Errorf("%s missing; entries: %v", p, sortedKeys(fs))
			continue
		}
		if h.Typeflag != want {
			t.Errorf("%s: type %q, want %q", p, h.Typeflag, want)
		}
	}
	if h := fs["/usr/local/bin/hello"]; h != nil && h.Mode != 0o755 {
		t.Errorf("hello: mode %o, want 755", h.Mode)
	}
	if h := fs["/etc/greeting"]; h != nil && h.Mode != 0o644 {
		t.Errorf("greeting: mode %o, want 644", h.Mode)
	}
	if h := fs["/bin/hi"]; h != nil && h.Linkname != "/usr/local/bin/hello" {
		t.Errorf("hi links to %q", h.Linkname)
	}

	// The same inputs make the same image.
	d1, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	out2 := filepath.Join(dir, "again.tar")
	if err := Build(ref, spec, out2); err != nil {
		t.Fatal(err)
	}
	img2, _ := load(t, out2, ref)
	if d2, _ := img2.Digest(); d1 != d2 {
		t.Errorf("rebuilt image has digest %s, first %s", d2, d1)
	}

	// Files end up with their content.
	root := filepath.Join(dir, "root")
	layers, _ := img.Layers()
	if err := Extract(root, layers...); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "usr/local/bin/hello")); err != nil || !strings.Contains(string(b), "echo hello") {
		t.Errorf("extracted hello: %q, %v", b, err)
	}
}

func TestBuildCached(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "bin")
	if err := os.WriteFile(src, []byte("one"), 0o755); err != nil {
		t.Fatal(err)
	}
	const ref = "registry.example/lab/cached:v1"
	spec := Spec{Entrypoint: []string{"/bin"}, Files: []File{{Path: "/bin", Src: src}}}
	out := filepath.Join(dir, "cached.tar")
	for i, want := range []bool{true, false} {
		built, err := BuildCached(ref, spec, out)
		if err != nil {
			t.Fatal(err)
		}
		if built != want {
			t.Errorf("call %d: built %v, want %v", i+1, built, want)
		}
	}
	if err := os.WriteFile(src, []byte("two"), 0o755); err != nil {
		t.Fatal(err)
	}
	if built, err := BuildCached(ref, spec, out); err != nil || !built {
		t.Errorf("after the input changed: built %v, %v; want a rebuild", built, err)
	}
	spec.Entrypoint = []string{"/bin", "-x"}
	if built, err := BuildCached(ref, spec, out); err != nil || !built {
		t.Errorf("after the spec changed: built %v, %v; want a rebuild", built, err)
	}
	_, cf := load(t, out, ref)
	if !slices.Equal(cf.Config.Entrypoint, spec.Entrypoint) {
		t.Errorf("entrypoint %q, want %q", cf.Config.Entrypoint, spec.Entrypoint)
	}
}

func TestFilesLayerRefuses(t *testing.T) {
	for _, files := range [][]File{
		{{Path: "relative", Data: []byte("x")}},
		{{Path: "/a", Data: []byte("x")}, {Path: "/a/", Data: []byte("y")}},
		{{Path: "/d/f", Data: []byte("x")}, {Path: "/d", Data: []byte("y")}},
		{{Path: "/missing", Src: "/nonexistent/file"}},
	} {
		if _, err := FilesLayer(files); err == nil {
			t.Errorf("FilesLayer(%+v) succeeded", files)
		}
	}
}

func TestTarballName(t *testing.T) {
	for ref, want := range map[string]string{
		"registry.k8s.io/kube-apiserver:v1.34.2":                "kube-apiserver-v1.34.2.tar",
		"registry.k8s.io/coredns/coredns:v1.12.1":               "coredns-v1.12.1.tar",
		"ghcr.io/flannel-io/flannel-cni-plugin:v1.8.0-flannel1": "flannel-cni-plugin-v1.8.0-flannel1.tar",
	} {
		if got := TarballName(ref); got != want {
			t.Errorf("TarballName(%s) = %s, want %s", ref, got, want)
		}
	}
}

// needTools skips the test when this machine lacks the tools layer's
// sources.
func needTools(t *testing.T) {
	t.Helper()
	for _, p := range []string{"/bin/busybox", "/usr/sbin/xtables-nft-multi"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%v: install the Debian packages busybox-static and iptables", err)
		}
	}
}

func TestToolsLayer(t *testing.T) {
	needTools(t)
	l, err := ToolsLayer(Tools{})
	if err != nil {
		t.Fatal(err)
	}
	fs, err := LayerFiles(l)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{
		"/bin/busybox", "/bin/sh", "/bin/cp",
		"/usr/sbin/xtables-nft-multi", "/usr/sbin/iptables", "/usr/sbin/iptables-save",
		"/usr/sbin/iptables-restore", "/usr/sbin/ip6tables", "/usr/sbin/ip6tables-restore",
		"/usr/sbin/iptables-nft", "/usr/sbin/iptables-nft-restore",
		"/lib64/ld-linux-x86-64.so.2",
		"/usr/lib/x86_64-linux-gnu/xtables/libxt_MASQUERADE.so",
		"/usr/lib/x86_64-linux-gnu/xtables/libxt_comment.so",
	} {
		if fs[p] == nil {
			t.Errorf("%s missing from the tools layer", p)
		}
	}
	var libs []string
	for p := range fs {
		if strings.Contains(p, "/lib") && strings.Contains(filepath.Base(p), ".so.") {
			libs = append(libs, filepath.Base(p))
		}
	}
	for _, lib := range []string{"libc.so.6", "libxtables.so.12", "libnftnl.so.11", "libmnl.so.0"} {
		if !slices.Contains(libs, lib) {
			t.Errorf("%s missing from the tools layer; libraries: %v", lib, libs)
		}
	}

	if os.Geteuid() != 0 {
		t.Skip("running the tools under chroot needs root")
	}
	if _, err := exec.LookPath("chroot"); err != nil {
		t.Skip(err)
	}
	root := t.TempDir()
	if err := Extract(root, l); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := run("chroot", root, "iptables", "--version"); !strings.Contains(out, "nf_tables") {
		t.Errorf("iptables --version: %q, want nf_tables", out)
	}
	if out := run("chroot", root, "cp", "--help"); !strings.Contains(out, "cp [") {
		t.Errorf("cp --help: %q", out)
	}
	run("chroot", root, "sh", "-c", "mkdir -p /opt/cni/bin && cp -f /bin/busybox /opt/cni/bin/x && test -x /opt/cni/bin/x")

	// The extensions load: kube-proxy's and flanneld's kind of rules, in
	// a network namespace of their own.
	if err := exec.Command("unshare", "--net", "true").Run(); err != nil {
		t.Skipf("no network namespace for an iptables rule: %v", err)
	}
	out := run("unshare", "--net", "chroot", root, "sh", "-c",
		"iptables -t nat -A POSTROUTING -s 10.244.0.0/16 -m comment --comment lab -j MASQUERADE && "+
			"iptables -A INPUT -m conntrack --ctstate INVALID -j DROP && "+
			"iptables-save && ip6tables-save")
	for _, want := range []string{"MASQUERADE", "--comment lab", "INVALID", "*filter"} {
		if !strings.Contains(out, want) {
			t.Errorf("iptables-save lacks %q:\n%s", want, out)
		}
	}
}

func TestBuildPause(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip(err)
	}
	out := filepath.Join(t.TempDir(), "pause")
	if err := BuildPause(out); err != nil {
		t.Fatal(err)
	}
	ef, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("pause is dynamically linked")
		}
	}
	ef.Close()
	if b, err := exec.Command(out, "-v").Output(); err != nil || !strings.Contains(string(b), PauseVersion) {
		t.Errorf("pause -v: %q, %v", b, err)
	}
	cmd := exec.Command(out)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		t.Fatalf("pause exited on its own: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("pause after SIGTERM: %v (%s)", err, stderr.String())
		}
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		t.Fatal("pause still running 5 s after SIGTERM")
	}
}

func TestKubeadmImages(t *testing.T) {
	cache := CacheDir()
	bin := filepath.Join(cache, "bin")
	if _, err := os.Stat(filepath.Join(bin, "kube-apiserver")); err != nil {
		t.Skipf("no lab binaries (%v): run scripts/build-lab.sh", err)
	}
	needTools(t)
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip(err)
	}
	start := time.Now()
	images, err := BuildKubeadmImages(bin, filepath.Join(cache, "images"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("BuildKubeadmImages: %v", time.Since(start).Round(time.Millisecond))
	want := map[string]struct {
		entrypoint string
		files      []string
	}{
		"registry.k8s.io/kube-apiserver:v1.34.2":                {"/usr/local/bin/kube-apiserver", nil},
		"registry.k8s.io/kube-controller-manager:v1.34.2":       {"/usr/local/bin/kube-controller-manager", nil},
		"registry.k8s.io/kube-scheduler:v1.34.2":                {"/usr/local/bin/kube-scheduler", nil},
		"registry.k8s.io/kube-proxy:v1.34.2":                    {"/usr/local/bin/kube-proxy", []string{"/usr/sbin/iptables-restore", "/usr/sbin/ip6tables-save"}},
		"registry.k8s.io/coredns/coredns:v1.12.1":               {"/coredns", nil},
		"registry.k8s.io/pause:3.10.1":                          {"/pause", nil},
		"ghcr.io/flannel-io/flannel:v0.27.4":                    {"/opt/bin/flanneld", []string{"/usr/sbin/iptables", "/bin/cp"}},
		"ghcr.io/flannel-io/flannel-cni-plugin:v1.8.0-flannel1": {"/flannel", []string{"/bin/cp", "/bin/sh"}},
	}
	if len(images) != len(want) {
		t.Errorf("%d images, want %d", len(images), len(want))
	}
	for _, im := range images {
		w, ok := want[im.Ref]
		if !ok {
			t.Errorf("unexpected image %s", im.Ref)
			continue
		}
		img, cf := load(t, im.Path, im.Ref)
		if cf.OS != "linux" || cf.Architecture != "amd64" {
			t.Errorf("%s: platform %s/%s", im.Ref, cf.OS, cf.Architecture)
		}
		if !slices.Equal(cf.Config.Entrypoint, []string{w.entrypoint}) {
			t.Errorf("%s: entrypoint %q, want %q", im.Ref, cf.Config.Entrypoint, w.entrypoint)
		}
		fs := files(t, img)
		for _, p := range append([]string{w.entrypoint}, w.files...) {
			if fs[p] == nil {
				t.Errorf("%s: %s missing", im.Ref, p)
			}
		}
		if h := fs[w.entrypoint]; h != nil && (h.Typeflag != tar.TypeReg || h.Mode&0o111 == 0) {
			t.Errorf("%s: %s is not an executable file", im.Ref, w.entrypoint)
		}
		fi, err := os.Stat(im.Path)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s, %d MB, built %v", im.Ref, im.Path, fi.Size()>>20, im.Built)
	}

	// A second run keeps every tarball.
	start = time.Now()
	again, err := BuildKubeadmImages(bin, filepath.Join(cache, "images"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("BuildKubeadmImages again: %v", time.Since(start).Round(time.Millisecond))
	for _, im := range again {
		if im.Built {
			t.Errorf("%s rebuilt with unchanged inputs", im.Ref)
		}
	}
}

// The tarball's manifest names the image by its reference, as
// `ctr images import` reads it.
func TestTarballManifestNamesRef(t *testing.T) {
	dir := t.TempDir()
	const ref = "registry.k8s.io/pause:3.10.1"
	out := filepath.Join(dir, "p.tar")
	if err := Build(ref, Spec{Files: []File{{Path: "/pause", Data: []byte("x"), Mode: 0o755}}}, out); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			t.Fatal("no manifest.json in the tarball")
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "manifest.json" {
			b, _ := io.ReadAll(tr)
			if !strings.Contains(string(b), `"RepoTags":["`+ref+`"]`) {
				t.Errorf("manifest.json: %s", b)
			}
			return
		}
	}
}
