package kubeconfig

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const kforgeBin = "/usr/local/bin/kforge"

func TestPath(t *testing.T) {
	home := t.TempDir()
	sep := string(os.PathListSeparator)
	tests := []struct {
		name, flag, env, want string
	}{
		{"flag wins", "/x/flag.yaml", "/x/env.yaml", "/x/flag.yaml"},
		{"first of KUBECONFIG", "", "/x/a" + sep + "/x/b", "/x/a"},
		{"empty entries skipped", "", sep + sep + "/x/b", "/x/b"},
		{"home default", "", "", filepath.Join(home, ".kube", "config")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("HOME", home)
			t.Setenv("KUBECONFIG", tt.env)
			if got := Path(tt.flag); got != tt.want {
				t.Errorf("Path(%q) with KUBECONFIG=%q = %q, want %q", tt.flag, tt.env, got, tt.want)
			}
		})
	}
}

// eksEntry is the entry `kforge switch aws` makes.
func eksEntry(t *testing.T, name string) Entry {
	t.Helper()
	cluster, err := EKSCluster("https://"+name+".gr7.us-east-1.eks.amazonaws.com", []byte(base64.StdEncoding.EncodeToString([]byte("CA of "+name))))
	if err != nil {
		t.Fatal(err)
	}
	return Entry{Context: "kforge-" + name, Cluster: cluster, User: ExecUser(kforgeBin, name, "us-east-1", "")}
}

func loadFile(t *testing.T, path string) *clientcmdapi.Config {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatalf("clientcmd cannot load %s: %v", path, err)
	}
	for _, c := range cfg.Clusters {
		c.LocationOfOrigin = ""
	}
	for _, u := range cfg.AuthInfos {
		u.LocationOfOrigin = ""
	}
	for _, c := range cfg.Contexts {
		c.LocationOfOrigin = ""
	}
	return cfg
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != want {
		t.Errorf("%s mode = %v, want %v", path, fi.Mode().Perm(), want)
	}
}

// checkEntry asserts that cfg holds e as Merge writes it.
func checkEntry(t *testing.T, cfg *clientcmdapi.Config, e Entry) {
	t.Helper()
	ctx := cfg.Contexts[e.Context]
	if ctx == nil || ctx.Cluster != e.Context || ctx.AuthInfo != e.Context || ctx.Namespace != e.Namespace {
		t.Errorf("context %s = %+v", e.Context, ctx)
	}
	if got := cfg.Clusters[e.Context]; got == nil || got.Server != e.Cluster.Server || !bytes.Equal(got.CertificateAuthorityData, e.Cluster.CertificateAuthorityData) {
		t.Errorf("cluster %s = %+v, want %+v", e.Context, got, e.Cluster)
	}
	got := cfg.AuthInfos[e.Context]
	if got == nil || !reflect.DeepEqual(got.Exec, e.User.Exec) || got.Token != e.User.Token {
		t.Errorf("user %s = %+v, want %+v", e.Context, got, e.User)
	}
}

func TestMergeCreatesFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", ".kube")
	path := filepath.Join(dir, "config")
	e := eksEntry(t, "alpha")
	if err := Merge(path, e); err != nil {
		t.Fatal(err)
	}
	checkMode(t, path, 0o600)
	checkMode(t, dir, 0o700)
	cfg := loadFile(t, path)
	if cfg.CurrentContext != e.Context {
		t.Errorf("current-context = %q, want %q", cfg.CurrentContext, e.Context)
	}
	checkEntry(t, cfg, e)
	if len(cfg.Clusters) != 1 || len(cfg.AuthInfos) != 1 || len(cfg.Contexts) != 1 {
		t.Errorf("file holds %d clusters, %d users, %d contexts; want 1 each", len(cfg.Clusters), len(cfg.AuthInfos), len(cfg.Contexts))
	}
}

const existing = `apiVersion: v1
kind: Config
preferences:
  colors: true
current-context: minikube
clusters:
- name: minikube
  cluster:
    server: https://192.168.49.2:8443
    certificate-authority: /home/u/.minikube/ca.crt
    extensions:
    - name: cluster_info
      extension:
        provider: minikube.sigs.k8s.io
        version: v1.32.0
- name: shared
  cluster:
    server: https://shared.example.com
    insecure-skip-tls-verify: true
users:
- name: minikube
  user:
    client-certificate: /home/u/.minikube/profiles/minikube/client.crt
    client-key: /home/u/.minikube/profiles/minikube/client.key
- name: oidc
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: kubectl
      args: [oidc-login, get-token]
      interactiveMode: IfAvailable
contexts:
- name: minikube
  context:
    cluster: minikube
    user: minikube
    namespace: default
- name: shared-oidc
  context:
    cluster: shared
    user: oidc
`

func TestMergeKeepsOtherEntries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(path, []byte(existing), 0o644); err != nil {
		t.Fatal(err)
	}
	before := loadFile(t, path)
	e := eksEntry(t, "alpha")
	if err := Merge(path, e); err != nil {
		t.Fatal(err)
	}
	checkMode(t, path, 0o600)
	after := loadFile(t, path)
	checkEntry(t, after, e)
	if after.CurrentContext != e.Context {
		t.Errorf("current-context = %q, want %q", after.CurrentContext, e.Context)
	}
	for name, c := range before.Clusters {
		if !reflect.DeepEqual(after.Clusters[name], c) {
			t.Errorf("cluster %s changed: %+v -> %+v", name, c, after.Clusters[name])
		}
	}
	for name, u := range before.AuthInfos {
		if !reflect.DeepEqual(after.AuthInfos[name], u) {
			t.Errorf("user %s changed: %+v -> %+v", name, u, after.AuthInfos[name])
		}
	}
	for name, c := range before.Contexts {
		if !reflect.DeepEqual(after.Contexts[name], c) {
			t.Errorf("context %s changed: %+v -> %+v", name, c, after.Contexts[name])
		}
	}
	if !reflect.DeepEqual(after.Preferences, before.Preferences) {
		t.Errorf("preferences changed: %+v -> %+v", before.Preferences, after.Preferences)
	}
	if len(after.Clusters) != 3 || len(after.AuthInfos) != 3 || len(after.Contexts) != 3 {
		t.Errorf("file holds %d clusters, %d users, %d contexts; want 3 each", len(after.Clusters), len(after.AuthInfos), len(after.Contexts))
	}
}

func TestMergeTwoClusters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	a, b := eksEntry(t, "alpha"), eksEntry(t, "beta")
	b.Namespace = "apps"
	for _, e := range []Entry{a, b} {
		if err := Merge(path, e); err != nil {
			t.Fatal(err)
		}
	}
	cfg := loadFile(t, path)
	checkEntry(t, cfg, a)
	checkEntry(t, cfg, b)
	if cfg.CurrentContext != b.Context {
		t.Errorf("current-context = %q, want the last merged %q", cfg.CurrentContext, b.Context)
	}
	if args := cfg.AuthInfos[a.Context].Exec.Args; !reflect.DeepEqual(args, []string{"token", "--name", "alpha", "--region", "us-east-1"}) {
		t.Errorf("first cluster's user args = %v", args)
	}
	// Switching back makes the first current again and changes nothing else.
	if err := Merge(path, a); err != nil {
		t.Fatal(err)
	}
	cfg = loadFile(t, path)
	checkEntry(t, cfg, a)
	checkEntry(t, cfg, b)
	if cfg.CurrentContext != a.Context {
		t.Errorf("current-context = %q, want %q", cfg.CurrentContext, a.Context)
	}
}

func TestMergeIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(path, []byte(existing), 0o600); err != nil {
		t.Fatal(err)
	}
	e := eksEntry(t, "alpha")
	if err := Merge(path, e); err != nil {
		t.Fatal(err)
	}
	first, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := Merge(path, e); err != nil {
		t.Fatal(err)
	}
	second, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, second) {
		t.Errorf("merging again changed the file:\n%s\n---\n%s", first, second)
	}
}

func TestMergeReplacesStaleEntry(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	old := Entry{Context: "kforge-alpha", Cluster: &clientcmdapi.Cluster{Server: "https://old.example.com"}, User: TokenUser("old-token")}
	if err := Merge(path, old); err != nil {
		t.Fatal(err)
	}
	e := eksEntry(t, "alpha")
	if err := Merge(path, e); err != nil {
		t.Fatal(err)
	}
	cfg := loadFile(t, path)
	checkEntry(t, cfg, e)
	if cfg.AuthInfos[e.Context].Token != "" {
		t.Error("the old static token survived the new merge")
	}
}

func TestMergeKeepsChosenNamespace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	e := eksEntry(t, "alpha")
	if err := Merge(path, e); err != nil {
		t.Fatal(err)
	}
	// kubectl config set-context --current --namespace=team
	cfg := loadFile(t, path)
	cfg.Contexts[e.Context].Namespace = "team"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	if err := Merge(path, e); err != nil {
		t.Fatal(err)
	}
	if ns := loadFile(t, path).Contexts[e.Context].Namespace; ns != "team" {
		t.Errorf("namespace after re-merge = %q, want the user's %q", ns, "team")
	}
	e.Namespace = "explicit"
	if err := Merge(path, e); err != nil {
		t.Fatal(err)
	}
	if ns := loadFile(t, path).Contexts[e.Context].Namespace; ns != "explicit" {
		t.Errorf("namespace = %q, want %q", ns, "explicit")
	}
}

func TestMergeRefusesOtherFiles(t *testing.T) {
	tests := map[string]string{
		"text":            "hello world\n",
		"binary":          "\x00\x01\x02\xff",
		"other kind":      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n",
		"unrelated yaml":  "services:\n  web:\n    image: nginx\n",
		"list":            "- a\n- b\n",
		"wrong structure": "clusters: 5\n",
	}
	for name, content := range tests {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config")
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			err := Merge(path, eksEntry(t, "alpha"))
			if err == nil {
				t.Fatal("Merge overwrote a file that is not a kubeconfig")
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "not a kubeconfig") {
				t.Errorf("error %q does not say which file is wrong", err)
			}
			got, _ := os.ReadFile(path)
			if string(got) != content {
				t.Errorf("file changed to %q", got)
			}
			checkMode(t, path, 0o644)
		})
	}
}

func TestMergeEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(path, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := eksEntry(t, "alpha")
	if err := Merge(path, e); err != nil {
		t.Fatal(err)
	}
	checkEntry(t, loadFile(t, path), e)
}

func TestMergeThroughSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "dotfiles", "kubeconfig")
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(target, []byte(existing), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "config")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	e := eksEntry(t, "alpha")
	if err := Merge(link, e); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the symbolic link was replaced by a file")
	}
	checkEntry(t, loadFile(t, target), e)
}

func TestMergeConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	const n = 12
	var wg sync.WaitGroup
	errs := make(chan error, n)
	entries := make([]Entry, n)
	for i := range entries {
		entries[i] = eksEntry(t, fmt.Sprintf("c%d", i))
	}
	for _, e := range entries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- Merge(path, e)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	cfg := loadFile(t, path)
	for _, e := range entries {
		checkEntry(t, cfg, e)
	}
}

func TestMergeInvalidEntry(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	good := eksEntry(t, "alpha")
	tests := map[string]Entry{
		"no name":    {Cluster: good.Cluster, User: good.User},
		"no cluster": {Context: "x", User: good.User},
		"no user":    {Context: "x", Cluster: good.Cluster},
	}
	for name, e := range tests {
		if err := Merge(path, e); err == nil {
			t.Errorf("%s: Merge succeeded", name)
		}
	}
	if _, err := os.Stat(path); err == nil {
		t.Error("an invalid entry created the file")
	}
}

func TestRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(path, []byte(existing), 0o600); err != nil {
		t.Fatal(err)
	}
	a, b := eksEntry(t, "alpha"), eksEntry(t, "beta")
	for _, e := range []Entry{a, b} {
		if err := Merge(path, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := Remove(path, b.Context); err != nil {
		t.Fatal(err)
	}
	cfg := loadFile(t, path)
	if cfg.Contexts[b.Context] != nil || cfg.Clusters[b.Context] != nil || cfg.AuthInfos[b.Context] != nil {
		t.Error("the removed cluster's entries remain")
	}
	if cfg.CurrentContext != "" {
		t.Errorf("current-context = %q after removing it, want none", cfg.CurrentContext)
	}
	checkEntry(t, cfg, a)
	if cfg.Contexts["minikube"] == nil || cfg.Clusters["shared"] == nil || cfg.AuthInfos["oidc"] == nil {
		t.Error("other entries were removed")
	}
	// Removing a context that is not current keeps the current one.
	if err := Merge(path, b); err != nil {
		t.Fatal(err)
	}
	if err := Remove(path, a.Context); err != nil {
		t.Fatal(err)
	}
	if cur := loadFile(t, path).CurrentContext; cur != b.Context {
		t.Errorf("current-context = %q, want %q", cur, b.Context)
	}
	// Nothing to remove: no error, no file made.
	missing := filepath.Join(t.TempDir(), "nope", "config")
	if err := Remove(missing, "x"); err != nil {
		t.Errorf("Remove on a missing file: %v", err)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("Remove created a file")
	}
	if err := Remove(path, "never-merged"); err != nil {
		t.Errorf("Remove of an unknown context: %v", err)
	}
}

func TestExecUser(t *testing.T) {
	u := ExecUser(kforgeBin, "prod", "eu-west-1", "")
	x := u.Exec
	if x == nil {
		t.Fatal("no exec section")
	}
	if x.APIVersion != "client.authentication.k8s.io/v1beta1" || x.Command != kforgeBin ||
		!reflect.DeepEqual(x.Args, []string{"token", "--name", "prod", "--region", "eu-west-1"}) ||
		x.InteractiveMode != clientcmdapi.NeverExecInteractiveMode || x.ProvideClusterInfo || len(x.Env) != 0 {
		t.Errorf("exec = %+v", x)
	}
	if u.Token != "" || u.ClientKeyData != nil {
		t.Errorf("exec user also carries static credentials: %+v", u)
	}
}

func TestExecUserProfile(t *testing.T) {
	x := ExecUser(kforgeBin, "prod", "eu-west-1", "dev").Exec
	if !reflect.DeepEqual(x.Env, []clientcmdapi.ExecEnvVar{{Name: "AWS_PROFILE", Value: "dev"}}) {
		t.Errorf("env = %+v", x.Env)
	}
}

func TestUnstableBinary(t *testing.T) {
	tmp := os.TempDir()
	cache := filepath.Join(t.TempDir(), "gocache")
	// A build cache that GOCACHE does not name (go env -w GOCACHE=...):
	// found by the README that Go writes at its root.
	marked := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.MkdirAll(filepath.Join(marked, "52", "52de-d"), 0o755); err != nil {
		t.Fatal(err)
	}
	readme := goCacheREADME + "\nRun \"go clean -cache\" if the directory is getting too large.\n"
	if err := os.WriteFile(filepath.Join(marked, "README"), []byte(readme), 0o644); err != nil {
		t.Fatal(err)
	}
	gotmp := filepath.Join(t.TempDir(), "gotmp")
	home, _ := os.UserCacheDir()
	for _, tc := range []struct {
		path              string
		gocache, gotmpdir string
		unstable          bool
	}{
		{filepath.Join(tmp, "go-build1234567", "b001", "exe", "kforge"), cache, "", true},
		{filepath.Join(cache, "3f", "3f9a-d", "kforge"), cache, "", true},
		{filepath.Join(marked, "52", "52de-d", "kforge"), "", "", true},
		{filepath.Join(marked, "52", "52de-d", "kforge"), "off", "", true},
		{filepath.Join(gotmp, "go-build42", "b001", "exe", "kforge"), cache, gotmp, true},
		{filepath.Join(home, "go-build", "ab", "ab12-d", "kforge"), "", "", true},
		{filepath.Join(tmp, "kforge-bin-99", "kforge"), cache, "", false},
		{filepath.Join(tmp, "go-builder", "kforge"), cache, "", false},
		{filepath.Join(tmp, "go-build-tools", "kforge"), cache, "", false},
		{filepath.Join(gotmp, "go-build42", "b001", "exe", "kforge"), cache, "", false},
		{filepath.Join(filepath.Dir(cache), "gocache2", "kforge"), cache, "", false},
		{"/usr/local/bin/kforge", cache, "", false},
		{"/root/go/bin/kforge", "", "", false},
		{filepath.Join(cache, "x"), "off", "", false},
	} {
		env := map[string]string{"GOCACHE": tc.gocache, "GOTMPDIR": tc.gotmpdir}
		why := UnstableBinary(tc.path, func(k string) string { return env[k] })
		if got := why != ""; got != tc.unstable {
			t.Errorf("UnstableBinary(%s, GOCACHE=%q GOTMPDIR=%q) = %q, want unstable %v", tc.path, tc.gocache, tc.gotmpdir, why, tc.unstable)
		}
	}
}

func TestEKSCluster(t *testing.T) {
	pem := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	// moto returns 1400 random letters and digits: valid base64, not a PEM.
	random := strings.Repeat("aZ09", 350)
	randomDecoded, _ := base64.StdEncoding.DecodeString(random)
	tests := []struct {
		name     string
		endpoint string
		ca       []byte
		want     []byte
		wantErr  bool
	}{
		{"base64 PEM", "https://ABC.gr7.us-east-1.eks.amazonaws.com", []byte(base64.StdEncoding.EncodeToString(pem)), pem, false},
		{"base64 with newline", "https://ABC.gr7.us-east-1.eks.amazonaws.com", []byte(base64.StdEncoding.EncodeToString(pem) + "\n"), pem, false},
		{"emulator random", "https://abc.xyz.us-east-1.eks.amazonaws.com/", []byte(random), randomDecoded, false},
		{"PEM as is", "https://ABC.gr7.us-east-1.eks.amazonaws.com", pem, pem, false},
		{"not base64", "https://ABC.gr7.us-east-1.eks.amazonaws.com", []byte("%%%"), nil, true},
		{"no CA", "https://ABC.gr7.us-east-1.eks.amazonaws.com", nil, nil, true},
		{"no endpoint", "", []byte("YWJj"), nil, true},
		{"http endpoint", "http://ABC.gr7.us-east-1.eks.amazonaws.com", []byte("YWJj"), nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := EKSCluster(tt.endpoint, tt.ca)
			if tt.wantErr {
				if err == nil {
					t.Errorf("EKSCluster = %+v, want an error", c)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Server != tt.endpoint || !bytes.Equal(c.CertificateAuthorityData, tt.want) {
				t.Errorf("EKSCluster = server %q, CA %q; want %q, %q", c.Server, c.CertificateAuthorityData, tt.endpoint, tt.want)
			}
		})
	}
}

const k3sAdmin = `apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0EgZGF0YQ==
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: Q0VSVCBkYXRh
    client-key-data: S0VZIGRhdGE=
`

const kubeadmAdmin = `apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: S1VCRUFETSBDQQ==
    server: https://10.0.1.10:6443
  name: kubernetes
- cluster:
    server: https://decoy:6443
  name: decoy
contexts:
- context:
    cluster: decoy
    user: decoy
  name: decoy
- context:
    cluster: kubernetes
    user: kubernetes-admin
  name: kubernetes-admin@kubernetes
current-context: kubernetes-admin@kubernetes
users:
- name: decoy
  user:
    token: decoy
- name: kubernetes-admin
  user:
    client-certificate-data: QURNSU4gQ0VSVA==
    client-key-data: QURNSU4gS0VZ
`

func TestFromAdmin(t *testing.T) {
	const server = "https://203.0.113.10:6443"
	tests := []struct {
		name, admin        string
		ca, cert, key      string
		wantErr, wantNoCtx bool
	}{
		{name: "k3s", admin: k3sAdmin, ca: "CA data", cert: "CERT data", key: "KEY data"},
		{name: "kubeadm", admin: kubeadmAdmin, ca: "KUBEADM CA", cert: "ADMIN CERT", key: "ADMIN KEY"},
		{name: "only context, none current", admin: strings.Replace(k3sAdmin, "current-context: default", "", 1), ca: "CA data", cert: "CERT data", key: "KEY data"},
		{name: "current context missing", admin: strings.Replace(k3sAdmin, "current-context: default", "current-context: other", 1), wantErr: true},
		{name: "user missing", admin: strings.Replace(k3sAdmin, "user: default", "user: nobody", 1), wantErr: true},
		{name: "empty", admin: "", wantErr: true},
		{name: "not a kubeconfig", admin: "secret-looking garbage: [", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, u, err := FromAdmin([]byte(tt.admin), server)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("FromAdmin = %+v, %+v; want an error", c, u)
				}
				if strings.Contains(err.Error(), "garbage") || strings.Contains(err.Error(), "Q0") {
					t.Errorf("error %q quotes the admin kubeconfig", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Server != server || string(c.CertificateAuthorityData) != tt.ca {
				t.Errorf("cluster = server %q, CA %q; want %q, %q", c.Server, c.CertificateAuthorityData, server, tt.ca)
			}
			if string(u.ClientCertificateData) != tt.cert || string(u.ClientKeyData) != tt.key || u.Token != "" {
				t.Errorf("user = cert %q, key %q, token %q", u.ClientCertificateData, u.ClientKeyData, u.Token)
			}
		})
	}
	if _, _, err := FromAdmin([]byte(k3sAdmin), "127.0.0.1:6443"); err == nil {
		t.Error("FromAdmin accepted a server that is not an https URL")
	}
}

// TestMergeTwoK3sClusters merges two ha-aws clusters whose admin
// kubeconfigs both name everything "default": neither overwrites the other.
func TestMergeTwoK3sClusters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	second := strings.NewReplacer("Q0VSVCBkYXRh", "T1RIRVIgQ0VSVA==", "S0VZIGRhdGE=", "T1RIRVIgS0VZ").Replace(k3sAdmin)
	for i, admin := range []string{k3sAdmin, second} {
		c, u, err := FromAdmin([]byte(admin), fmt.Sprintf("https://203.0.113.%d:6443", i+1))
		if err != nil {
			t.Fatal(err)
		}
		if err := Merge(path, Entry{Context: fmt.Sprintf("kforge-ha-%d", i), Cluster: c, User: u}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := loadFile(t, path)
	if got := cfg.Clusters["kforge-ha-0"]; got == nil || got.Server != "https://203.0.113.1:6443" {
		t.Errorf("first cluster = %+v", got)
	}
	if got := cfg.AuthInfos["kforge-ha-0"]; got == nil || string(got.ClientCertificateData) != "CERT data" {
		t.Errorf("first user = %+v", got)
	}
	if got := cfg.AuthInfos["kforge-ha-1"]; got == nil || string(got.ClientCertificateData) != "OTHER CERT" {
		t.Errorf("second user = %+v", got)
	}
	if _, ok := cfg.Clusters["default"]; ok {
		t.Error("the admin kubeconfig's own names leaked into the file")
	}
}
