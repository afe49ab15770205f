package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/kforge/kforge/internal/artifacts"
	"github.com/kforge/kforge/test/testutil/awscheck"
	"github.com/kforge/kforge/test/testutil/sshfleet"
)

// fakeArtifacts writes a kubeadm artifacts directory for amd64 (the
// emulator's t3 types) whose files hold their own path, with SHA256SUMS;
// drop names files left out of SHA256SUMS.
func fakeArtifacts(t *testing.T, drop ...string) (dir string, files map[string][]byte) {
	t.Helper()
	return fakeArtifactsOf(t, []string{"v1.34.2"}, drop...)
}

// fakeArtifactsOf is fakeArtifacts for the kubeadm clusters of several
// Kubernetes releases, in one directory.
func fakeArtifactsOf(t *testing.T, releases []string, drop ...string) (dir string, files map[string][]byte) {
	t.Helper()
	var all []artifacts.File
	for _, k := range releases {
		set := artifacts.Set{Bootstrap: artifacts.Kubeadm, Kubernetes: k, Etcd: "v3.5.27", Cloud: true}
		fs, err := set.All([]string{"amd64"}, true)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, fs...)
	}
	dir = t.TempDir()
	files = map[string][]byte{}
	sums := artifacts.Sums{}
	for _, f := range all {
		if strings.HasPrefix(f.Path, "k3s/") {
			continue
		}
		content := []byte("fake " + f.Path + "\n")
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, content, 0o644); err != nil {
			t.Fatal(err)
		}
		files[f.Path] = content
		sum := sha256.Sum256(content)
		sums[f.Path] = hex.EncodeToString(sum[:])
	}
	for _, d := range drop {
		delete(sums, d)
	}
	if err := os.WriteFile(filepath.Join(dir, artifacts.SumsFile), sums.Format(), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, files
}

// heredocRE is the first base64 block piped to a command in a script.
var heredocRE = regexp.MustCompile(`base64 -d <<'KFORGE_EOF'[^\n]*\n((?:[A-Za-z0-9+/=]*\n)*?)KFORGE_EOF`)

var missingLineRE = regexp.MustCompile(`(?m)^[0-9a-f]{64} (/var/lib/kforge/artifacts/\S+)$`)

// reportAllMissing makes every VM answer artifacts-missing with every file
// asked about, as a fresh VM would.
func reportAllMissing(fleet *sshfleet.Fleet) {
	fleet.Handle("artifacts-missing", func(_ sshfleet.VM, _ string, stdin []byte) ([]byte, []byte, int) {
		var out bytes.Buffer
		for _, m := range missingLineRE.FindAllSubmatch(stdin, -1) {
			out.Write(m[1])
			out.WriteByte('\n')
		}
		return out.Bytes(), nil, 0
	})
}

// received returns, per VM name, the files kforge uploaded to it (path on
// the VM to content), from the receive sessions the fleet recorded.
func received(t *testing.T, fleet *sshfleet.Fleet) map[string]map[string][]byte {
	t.Helper()
	out := map[string]map[string][]byte{}
	pathRE := regexp.MustCompile(`local path='([^']+)'`)
	for _, c := range fleet.CallsOf("receive") {
		script, data, ok := bytes.Cut(c.Stdin, []byte("\nmain\n"))
		if !ok {
			t.Fatalf("a receive session to %s does not end its script with main", c.VM.Name)
		}
		m := pathRE.FindSubmatch(script)
		if m == nil {
			t.Fatalf("a receive script names no path")
		}
		if out[c.VM.Name] == nil {
			out[c.VM.Name] = map[string][]byte{}
		}
		out[c.VM.Name][string(m[1])] = data
	}
	return out
}

func TestHAArtifactsDirectory(t *testing.T) {
	t.Parallel()
	const name, region = "offline", "ap-southeast-1"
	h := newHAEnv(t, region)
	reportAllMissing(h.fleet)
	dir, files := fakeArtifacts(t)
	args := []string{"create", "ha-aws", "--name", name, "--region", region, "--bootstrap", "kubeadm",
		"--control-planes", "1", "--workers", "1", "--etcd", "1", "--ssh-cidr", "10.20.0.0/16", "--ssh-jump", h.jump(), "--artifacts", dir}

	plan := h.MustRun(t, append(args, "--dry-run")...)
	for _, want := range []string{"artifacts ", "upload/etcd/0", "upload/cp/0", "upload/wp/0", "kforge uploads them over SSH from " + dir} {
		if !strings.Contains(plan.Stdout, want) {
			t.Errorf("the plan lacks %q:\n%s", want, plan.Stdout)
		}
	}
	if strings.Contains(plan.Stdout, "upload/lb/0") {
		t.Errorf("the plan uploads artifacts to the load balancer, which installs none")
	}
	h.MustRun(t, args...)

	set := artifacts.Set{Bootstrap: artifacts.Kubeadm, Kubernetes: "v1.34.2", Etcd: "v3.5.27", Cloud: true}
	want := map[string][]string{}
	for _, role := range []string{"etcd", "cp", "wp"} {
		fs, err := set.Files(role, "amd64", true)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fs {
			want[name+"-"+role+"-0"] = append(want[name+"-"+role+"-0"], f.Path)
		}
	}
	got := received(t, h.fleet)
	for vm, paths := range want {
		if len(got[vm]) != len(paths) {
			t.Errorf("%s received %d files, want %d", vm, len(got[vm]), len(paths))
		}
		for _, p := range paths {
			data, ok := got[vm][artifacts.VMPath(p)]
			if !ok {
				t.Errorf("%s did not receive %s", vm, p)
			} else if !bytes.Equal(data, files[p]) {
				t.Errorf("%s received %s with other content", vm, p)
			}
		}
	}
	if len(got[name+"-lb-0"]) != 0 {
		t.Errorf("the load balancer received artifacts: %v", got[name+"-lb-0"])
	}
	// The control plane's images are not sent to workers.
	apiserver := artifacts.VMPath(artifacts.ImagePath("amd64", "registry.k8s.io/kube-apiserver:v1.34.2"))
	if _, ok := got[name+"-wp-0"][apiserver]; ok {
		t.Errorf("the worker received the kube-apiserver image")
	}
	// The install recipes use the uploaded files, checked against the
	// checksums of SHA256SUMS, and nothing from the internet.
	for _, c := range h.fleet.CallsOf("kubeadm-prereqs") {
		text := string(c.Stdin)
		if strings.Contains(text, "pkgs.k8s.io") || strings.Contains(text, "https://") {
			t.Errorf("%s: kubeadm-prereqs downloads from the internet", c.VM.Name)
		}
		kubelet := set.KubernetesBinary("amd64", "kubelet")
		sum := sha256.Sum256(files[kubelet])
		if !strings.Contains(text, "kforge_binary '"+artifacts.VMPath(kubelet)+"' '' '"+hex.EncodeToString(sum[:])+"' kubelet\n") {
			t.Errorf("%s: kubeadm-prereqs does not install the uploaded kubelet", c.VM.Name)
		}
	}
	for _, c := range h.fleet.CallsOf("etcd") {
		if strings.Contains(string(c.Stdin), "github.com") || !strings.Contains(string(c.Stdin), artifacts.VMPath(set.EtcdTarball("amd64"))) {
			t.Errorf("%s: etcd is not installed from the uploaded tarball", c.VM.Name)
		}
	}
	for _, c := range h.fleet.CallsOf("cni") {
		if strings.Contains(string(c.Stdin), "https://") {
			t.Errorf("the cni recipe downloads from the internet")
		}
	}

	// A second create finds everything done; a scale uploads to the new
	// worker only.
	before := len(h.fleet.CallsOf("receive"))
	h.MustRun(t, args...)
	if n := len(h.fleet.CallsOf("receive")); n != before {
		t.Errorf("a second create uploaded %d more files", n-before)
	}
	h.MustRun(t, "scale", "ha-aws", "--name", name, "--region", region, "--workers", "2")
	got = received(t, h.fleet)
	if len(got[name+"-wp-1"]) != len(want[name+"-wp-0"]) {
		t.Errorf("the new worker received %d files, want %d", len(got[name+"-wp-1"]), len(want[name+"-wp-0"]))
	}
	if n := len(h.fleet.CallsOf("receive")); n != before+len(want[name+"-wp-0"]) {
		t.Errorf("the scale uploaded %d files, want %d", n-before, len(want[name+"-wp-0"]))
	}
	h.MustRun(t, "delete", "ha-aws", "--name", name, "--region", region, "--yes")
	awscheck.Empty(t, h.cfg, "ha-aws", name)
}

// TestHAArtifactsMissing: a file the cluster needs that the directory's
// SHA256SUMS does not list stops the create before anything is made.
func TestHAArtifactsMissing(t *testing.T) {
	t.Parallel()
	const name, region = "gap", "ap-northeast-3"
	h := newHAEnv(t, region)
	kubelet := artifacts.Set{Kubernetes: "v1.34.2"}.KubernetesBinary("amd64", "kubelet")
	dir, _ := fakeArtifacts(t, kubelet)
	r := h.Run(t, "create", "ha-aws", "--name", name, "--region", region, "--bootstrap", "kubeadm",
		"--control-planes", "1", "--workers", "1", "--etcd", "1", "--ssh-jump", h.jump(), "--artifacts", dir)
	if r.Code != 2 || !strings.Contains(r.Stderr, kubelet) || !strings.Contains(r.Stderr, "kforge artifacts fetch") {
		t.Fatalf("exit %d, want 2 naming %s and how to fill the directory\n%s", r.Code, kubelet, r.Stderr)
	}
	awscheck.Empty(t, h.cfg, "ha-aws", name)
}

// TestHAArtifactsMirror: with a mirror, the VMs download every file from
// it (no upload), each checked against the SHA256SUMS kforge read once.
func TestHAArtifactsMirror(t *testing.T) {
	t.Parallel()
	const name, region = "mirrored", "ap-northeast-2"
	h := newHAEnv(t, region)
	dir, _ := fakeArtifacts(t)
	var mu sync.Mutex
	var served []string
	mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		served = append(served, r.URL.Path)
		mu.Unlock()
		http.StripPrefix("/k8s", http.FileServer(http.Dir(dir))).ServeHTTP(w, r)
	}))
	defer mirror.Close()
	url := mirror.URL + "/k8s"
	h.MustRun(t, "create", "ha-aws", "--name", name, "--region", region, "--bootstrap", "kubeadm",
		"--control-planes", "1", "--workers", "1", "--etcd", "1", "--ssh-jump", h.jump(),
		"--artifacts", url, "--image-repository", "registry.example.com/k8s")
	mu.Lock()
	// The preflight and the create each read the checksums; nothing else.
	for _, p := range served {
		if p != "/k8s/SHA256SUMS" {
			t.Errorf("kforge read %s from the mirror; the VMs download the files, kforge only SHA256SUMS", p)
		}
	}
	if len(served) == 0 || len(served) > 2 {
		t.Errorf("kforge read SHA256SUMS %d times", len(served))
	}
	mu.Unlock()
	if n := len(h.fleet.CallsOf("receive")); n != 0 {
		t.Errorf("%d files were uploaded; with a mirror the VMs download them", n)
	}
	set := artifacts.Set{Kubernetes: "v1.34.2"}
	kubelet := set.KubernetesBinary("amd64", "kubelet")
	for _, c := range h.fleet.CallsOf("kubeadm-prereqs") {
		text := string(c.Stdin)
		if !strings.Contains(text, "'"+url+"/"+kubelet+"'") {
			t.Errorf("%s: kubeadm-prereqs does not download the kubelet from the mirror", c.VM.Name)
		}
		// Images come from the repository: none is imported.
		if strings.Contains(text, "ctr -n k8s.io images import") || !strings.Contains(text, "pause='registry.example.com/k8s/pause:3.10.1'") {
			t.Errorf("%s: with --image-repository the images must come from it", c.VM.Name)
		}
	}
	init := h.fleet.CallsOf("kubeadm-init")
	if len(init) != 1 || !bytes.Contains(initConfig(t, init[0]), []byte("imageRepository: registry.example.com/k8s")) {
		t.Errorf("kubeadm init does not use the image repository")
	}
	for _, c := range h.fleet.CallsOf("cni") {
		m := heredocRE.FindSubmatch(c.Stdin)
		if m == nil {
			t.Fatalf("the cni recipe carries no manifest")
		}
		manifest, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(string(m[1]), "\n", ""))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(manifest, []byte("ghcr.io")) || !bytes.Contains(manifest, []byte("image: registry.example.com/k8s/flannel:v0.27.4")) {
			t.Errorf("flannel's images do not come from the image repository:\n%s", manifest)
		}
	}
	h.MustRun(t, "delete", "ha-aws", "--name", name, "--region", region, "--yes")
}

// initConfig returns the kubeadm configuration a kubeadm-init call wrote.
func initConfig(t *testing.T, c sshfleet.Call) []byte {
	t.Helper()
	for p, b := range c.Files() {
		if strings.HasSuffix(p, "kubeadm-init.yaml") {
			return b
		}
	}
	t.Fatalf("kubeadm-init writes no configuration")
	return nil
}
