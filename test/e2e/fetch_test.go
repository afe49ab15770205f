package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kforge/kforge/internal/artifacts"
	"github.com/kforge/kforge/test/testutil/kforgebin"
	"github.com/kforge/kforge/test/testutil/upstream"
)

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestArtifactsFetch runs `kforge artifacts fetch` against a stand-in for
// the internet (an HTTPS proxy on 127.0.0.1 that serves the upstream URLs
// and a registry): every file is checked before it is kept, a download
// that does not match its checksum is not kept, SHA256SUMS lists what was
// kept, and a second run keeps what is there.
func TestArtifactsFetch(t *testing.T) {
	t.Parallel()
	up := upstream.Start(t)
	// v1.34.3: a release kforge does not pin, so the published checksum
	// files are what the binaries are checked against.
	set := artifacts.Set{Bootstrap: artifacts.Kubeadm, Kubernetes: "v1.34.3", Etcd: "v3.5.27", Cloud: true}
	files, err := set.All([]string{"amd64"}, true)
	if err != nil {
		t.Fatal(err)
	}
	content := map[string][]byte{}
	var etcdPath, cniPath, kubectlPath string
	for _, f := range files {
		switch {
		case f.Image != "":
			img, err := random.Image(256, 1)
			if err != nil {
				t.Fatal(err)
			}
			cf, _ := img.ConfigFile()
			cf.OS, cf.Architecture = "linux", "amd64"
			if img, err = mutate.ConfigFile(img, cf); err != nil {
				t.Fatal(err)
			}
			ref, err := name.ParseReference(f.Image)
			if err != nil {
				t.Fatal(err)
			}
			dst, err := name.ParseReference(strings.TrimPrefix(up.RegistryURL, "http://") + "/" + ref.Context().RepositoryStr() + ":" + ref.Identifier())
			if err != nil {
				t.Fatal(err)
			}
			if err := remote.Write(dst, img); err != nil {
				t.Fatal(err)
			}
		default:
			b := []byte("upstream " + f.Path + "\n")
			content[f.Path] = b
			up.Serve(f.Upstream, b)
			switch {
			case strings.HasPrefix(f.Path, "etcd/"):
				// etcd v3.5.27 is pinned: this stand-in cannot match it.
				etcdPath = f.Path
			case strings.HasPrefix(f.Path, "cni-plugins/"):
				// So is the CNI plugins release.
				cniPath = f.Path
			case strings.HasSuffix(f.Path, "/kubectl"):
				// A tampered download: the published checksum is another.
				kubectlPath = f.Path
				up.Serve(f.SumURL, []byte(hexSum([]byte("the real kubectl"))+"\n"))
			case f.SumURL != "":
				// As dl.k8s.io publishes it: the hash alone, and a name.
				up.Serve(f.SumURL, []byte(hexSum(b)+"  "+path.Base(f.Upstream)+"\n"))
			}
		}
	}

	env := kforgebin.NewEnv(t, "HTTPS_PROXY="+up.ProxyURL, "SSL_CERT_FILE="+up.CAFile)
	dir := filepath.Join(t.TempDir(), "artifacts")
	args := []string{"artifacts", "fetch", "--bootstrap", "kubeadm", "--k8s-version", "1.34.3", "--arch", "amd64", "--dir", dir, "-o", "json"}
	r := env.Run(t, args...)
	if r.Code != 1 {
		t.Fatalf("exit %d, want 1 (three files cannot be checked)\n%s", r.Code, r.Stderr)
	}
	failed := []string{etcdPath, cniPath, kubectlPath}
	for _, p := range failed {
		if !strings.Contains(r.Stderr, "FAILED   "+p) || !strings.Contains(r.Stderr, "does not match its SHA-256") {
			t.Errorf("the output does not say that %s did not match:\n%s", p, r.Stderr)
		}
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(p))); err == nil {
			t.Errorf("%s was kept although it does not match its checksum", p)
		}
	}
	var out struct {
		Files []artifacts.FetchResult `json:"files"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &out); err != nil || len(out.Files) != len(files) {
		t.Fatalf("-o json: %v (%d files, want %d)\n%s", err, len(out.Files), len(files), r.Stdout)
	}
	b, err := os.ReadFile(filepath.Join(dir, artifacts.SumsFile))
	if err != nil {
		t.Fatal(err)
	}
	sums, err := artifacts.ParseSums(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(sums) != len(files)-len(failed) {
		t.Errorf("SHA256SUMS lists %d files, want %d", len(sums), len(files)-len(failed))
	}
	for _, f := range files {
		if slices.Contains(failed, f.Path) {
			continue
		}
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		got, err := artifacts.HashFile(t.Context(), p)
		if err != nil || got != sums[f.Path] {
			t.Errorf("%s: %v, hash %s, SHA256SUMS %s", f.Path, err, got, sums[f.Path])
		}
		if f.Image != "" {
			tag, _ := name.NewTag(f.Image)
			img, err := tarball.ImageFromPath(p, &tag)
			if err != nil {
				t.Errorf("%s is not an image tarball of %s: %v", f.Path, f.Image, err)
				continue
			}
			if cf, err := img.ConfigFile(); err != nil || cf.Platform().String() != (&v1.Platform{OS: "linux", Architecture: "amd64"}).String() {
				t.Errorf("%s: platform %v (%v)", f.Path, cf, err)
			}
		} else if b, _ := os.ReadFile(p); string(b) != string(content[f.Path]) {
			t.Errorf("%s holds %q", f.Path, b)
		}
	}

	// Again: everything kept is kept, nothing is downloaded but the
	// files that failed (and their checksum).
	before := len(up.Hits())
	r = env.Run(t, args[:len(args)-2]...)
	if r.Code != 1 || strings.Count(r.Stderr, "  kept     ") != len(files)-len(failed) {
		t.Errorf("second run: exit %d, %d kept, want 1 and %d\n%s", r.Code, strings.Count(r.Stderr, "  kept     "), len(files)-len(failed), r.Stderr)
	}
	for _, h := range up.Hits()[before:] {
		if !strings.Contains(h, "etcd") && !strings.Contains(h, "kubectl") && !strings.Contains(h, "cni-plugins") {
			t.Errorf("second run downloaded %s again", h)
		}
	}
	if r := env.Run(t, "artifacts", "fetch", "--bootstrap", "kubeadm", "--k8s-version", "1.29", "--dir", dir); r.Code != 2 {
		t.Errorf("an unknown Kubernetes minor: exit %d, want 2\n%s", r.Code, r.Stderr)
	}
}
