package labimage

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Releases of the images BuildKubeadmImages makes: those a kubeadm
// v1.34.2 cluster with kforge's Flannel runs (`kubeadm config images list`
// and internal/artifacts).
const (
	KubernetesVersion       = "v1.34.2"
	CoreDNSVersion          = "v1.12.1"
	PauseVersion            = "3.10.1"
	FlannelVersion          = "v0.27.4"
	FlannelCNIPluginVersion = "v1.8.0-flannel1"
)

// Image is an image tarball.
type Image struct {
	// Ref is the reference the image is tagged with, and imported as.
	Ref string
	// Path is the docker-archive tarball.
	Path string
	// Built is false when an earlier build from the same inputs was kept.
	Built bool
}

// CacheDir is the lab's cache: $KFORGE_LAB_CACHE, or
// $HOME/.cache/kforge-lab. scripts/build-lab.sh builds the binaries into
// its bin/ directory; BuildKubeadmImages writes into its images/.
func CacheDir() string {
	if d := os.Getenv("KFORGE_LAB_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = os.TempDir()
	}
	return filepath.Join(home, ".cache", "kforge-lab")
}

// kubeadmBinaries are the binaries BuildKubeadmImages takes from the bin
// directory, with the version scripts/build-lab.sh records for each.
var kubeadmBinaries = map[string]string{
	"kube-apiserver":          KubernetesVersion,
	"kube-controller-manager": KubernetesVersion,
	"kube-scheduler":          KubernetesVersion,
	"kube-proxy":              KubernetesVersion,
	"coredns":                 CoreDNSVersion,
	"flanneld":                FlannelVersion,
	"flannel":                 "", // Flannel's CNI plugin, from another source than the image's
}

// KubeadmSpecs returns the Spec of each image of a kubeadm v1.34.2 cluster
// with Flannel, by reference, from the binaries in binDir, the pause
// program at pause and the tools layer tools:
//   - registry.k8s.io/kube-apiserver, kube-controller-manager and
//     kube-scheduler: the binary in /usr/local/bin (kubeadm's static pods
//     run it by name);
//   - registry.k8s.io/kube-proxy: the same, over the tools layer
//     (iptables);
//   - registry.k8s.io/coredns/coredns: /coredns, its entrypoint;
//   - registry.k8s.io/pause: /pause, its entrypoint;
//   - ghcr.io/flannel-io/flannel: /opt/bin/flanneld over the tools layer
//     (iptables, and cp for Flannel's init container);
//   - ghcr.io/flannel-io/flannel-cni-plugin: the CNI plugin at /flannel
//     over the tools layer (its init container runs cp).
func KubeadmSpecs(binDir, pause string, tools v1.Layer) map[string]Spec {
	bin := func(name string) string { return filepath.Join(binDir, name) }
	exe := func(p, src string, layers ...v1.Layer) Spec {
		return Spec{
			Entrypoint: []string{p},
			Layers:     layers,
			Files:      []File{{Path: p, Src: src, Mode: 0o755}},
		}
	}
	k8s := func(name string) string { return "registry.k8s.io/" + name + ":" + KubernetesVersion }
	return map[string]Spec{
		k8s("kube-apiserver"):                                              exe("/usr/local/bin/kube-apiserver", bin("kube-apiserver")),
		k8s("kube-controller-manager"):                                     exe("/usr/local/bin/kube-controller-manager", bin("kube-controller-manager")),
		k8s("kube-scheduler"):                                              exe("/usr/local/bin/kube-scheduler", bin("kube-scheduler")),
		k8s("kube-proxy"):                                                  exe("/usr/local/bin/kube-proxy", bin("kube-proxy"), tools),
		"registry.k8s.io/coredns/coredns:" + CoreDNSVersion:                exe("/coredns", bin("coredns")),
		"registry.k8s.io/pause:" + PauseVersion:                            exe("/pause", pause),
		"ghcr.io/flannel-io/flannel:" + FlannelVersion:                     exe("/opt/bin/flanneld", bin("flanneld"), tools),
		"ghcr.io/flannel-io/flannel-cni-plugin:" + FlannelCNIPluginVersion: exe("/flannel", bin("flannel"), tools),
	}
}

// TarballName is the file name of the tarball of ref: the last element
// of its repository and its tag, as in "kube-apiserver-v1.34.2.tar".
func TarballName(ref string) string {
	repo, tag, _ := strings.Cut(path.Base(ref), ":")
	return repo + "-" + tag + ".tar"
}

// BuildKubeadmImages writes the images of KubeadmSpecs into outDir, one
// tarball each (named by TarballName), from the binaries
// scripts/build-lab.sh put in binDir, and returns them in a fixed order.
// An image whose inputs did not change since it was last written is kept
// (see BuildCached). It builds the pause program into outDir/pause, and
// the tools layer from this machine (see Tools). When binDir holds the
// VERSIONS file of scripts/build-lab.sh, each binary must be of the
// release its image is tagged with.
func BuildKubeadmImages(binDir, outDir string) ([]Image, error) {
	if err := checkBinaries(binDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	pause := filepath.Join(outDir, "pause")
	if err := BuildPause(pause); err != nil {
		return nil, err
	}
	tools, err := ToolsLayer(Tools{})
	if err != nil {
		return nil, err
	}
	return buildAll(KubeadmSpecs(binDir, pause, tools), outDir)
}

// buildAll writes the image of every Spec into outDir (BuildCached, named
// by TarballName), in the order of their references.
func buildAll(specs map[string]Spec, outDir string) ([]Image, error) {
	var images []Image
	for _, ref := range sortedKeys(specs) {
		out := filepath.Join(outDir, TarballName(ref))
		built, err := BuildCached(ref, specs[ref], out)
		if err != nil {
			return nil, err
		}
		images = append(images, Image{Ref: ref, Path: out, Built: built})
	}
	return images, nil
}

// checkBinaries checks that binDir has the binaries of the images, of the
// right releases when it records them.
func checkBinaries(binDir string) error {
	for _, name := range sortedKeys(kubeadmBinaries) {
		if _, err := os.Stat(filepath.Join(binDir, name)); err != nil {
			return fmt.Errorf("lab images: %w (build the lab's binaries with scripts/build-lab.sh)", err)
		}
	}
	f, err := os.Open(filepath.Join(binDir, "VERSIONS"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	recorded := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) >= 2 {
			recorded[fields[0]] = fields[1]
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	for _, name := range sortedKeys(kubeadmBinaries) {
		want := kubeadmBinaries[name]
		if got, ok := recorded[name]; ok && want != "" && got != want {
			return fmt.Errorf("lab images: %s in %s is %s, want %s (run scripts/build-lab.sh)", name, binDir, got, want)
		}
	}
	return nil
}

// BuildPause builds the pause program (the main package in the pause
// directory beside this package's sources) as a static linux/amd64 binary
// at out, with the go command on PATH.
func BuildPause(out string) error { return buildProgram(pausePackage, out) }

// buildProgram builds a main package of this module as a static
// linux/amd64 binary at out.
func buildProgram(pkg, out string) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		return err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", tmp.Name(), pkg)
	// Build from this package's directory when its sources are on disk,
	// so that the go command finds the module; else from the current one.
	if _, file, _, ok := runtime.Caller(0); ok {
		if fi, err := os.Stat(filepath.Dir(file)); err == nil && fi.IsDir() {
			cmd.Dir = filepath.Dir(file)
		}
	}
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %w\n%s", pkg, err, b)
	}
	return os.Rename(tmp.Name(), out)
}

const pausePackage = "github.com/kforge/kforge/test/testutil/labimage/pause"
