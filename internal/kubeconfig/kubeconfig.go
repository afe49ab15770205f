// Package kubeconfig puts kforge's clusters into the user's kubeconfig
// file: it builds the cluster and user entries (an exec credential plugin
// or a static token for EKS, the admin credentials for ha-aws) and merges
// them into a file without disturbing what else the file holds.
//
// A cluster is merged as three entries that share one name, its context
// name: a cluster, a user and a context. Different clusters therefore never
// share or overwrite each other's entries. Files are read and written with
// client-go's clientcmd, replaced atomically with mode 0600, and changed
// under a lock so that two kforge processes do not lose each other's
// update.
package kubeconfig

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/homedir"
	"sigs.k8s.io/yaml"

	"github.com/kforge/kforge/internal/atomicfile"
)

// ExecAPIVersion is the client.authentication.k8s.io version of the
// ExecCredential that `kforge token` prints.
const ExecAPIVersion = "client.authentication.k8s.io/v1beta1"

// Path returns the kubeconfig file to write: flag (--kubeconfig) if set,
// else the first file listed in $KUBECONFIG, else ~/.kube/config.
func Path(flag string) string {
	if flag != "" {
		return flag
	}
	for _, p := range filepath.SplitList(os.Getenv("KUBECONFIG")) {
		if p != "" {
			return p
		}
	}
	return filepath.Join(homedir.HomeDir(), ".kube", "config")
}

// Entry is one cluster as it goes into a kubeconfig: a cluster, a user and
// a context, all named Context.
type Entry struct {
	// Context names the context, the cluster and the user.
	Context string
	// Cluster is how to reach the API server.
	Cluster *clientcmdapi.Cluster
	// User is how to authenticate to it.
	User *clientcmdapi.AuthInfo
	// Namespace is the context's default namespace; empty means the
	// server's default.
	Namespace string
}

// Merge adds entry to the kubeconfig at path and makes it the current
// context. The file and its directory are created if missing (0600 and
// 0700); every other entry in the file is kept, and the file is replaced
// atomically with mode 0600. Merging the same entry again changes nothing;
// with an empty Namespace it keeps the namespace the user set on that
// context since. A file that exists but is not a kubeconfig is left alone
// and reported.
func Merge(path string, entry Entry) error {
	if entry.Context == "" {
		return errors.New("merge into kubeconfig: no context name")
	}
	if entry.Cluster == nil || entry.User == nil {
		return fmt.Errorf("merge context %s into kubeconfig: cluster and user are both needed", entry.Context)
	}
	return update(path, true, func(cfg *clientcmdapi.Config) bool {
		cluster := entry.Cluster.DeepCopy()
		cluster.LocationOfOrigin = ""
		user := entry.User.DeepCopy()
		user.LocationOfOrigin = ""
		cfg.Clusters[entry.Context] = cluster
		cfg.AuthInfos[entry.Context] = user
		ns := entry.Namespace
		if old, ok := cfg.Contexts[entry.Context]; ok && ns == "" && old.Cluster == entry.Context && old.AuthInfo == entry.Context {
			// Keep a namespace the user chose since (kubectl config
			// set-context --current --namespace).
			ns = old.Namespace
		}
		cfg.Contexts[entry.Context] = &clientcmdapi.Context{
			Cluster:   entry.Context,
			AuthInfo:  entry.Context,
			Namespace: ns,
		}
		cfg.CurrentContext = entry.Context
		return true
	})
}

// Remove deletes the context named context from the kubeconfig at path,
// with the cluster and the user of the same name (the entries Merge
// made); other entries, even those the context pointed to under other
// names, are kept. If it was the current context, none is current after.
// A missing file or context is not an error.
func Remove(path, context string) error {
	return update(path, false, func(cfg *clientcmdapi.Config) bool {
		_, hadContext := cfg.Contexts[context]
		_, hadCluster := cfg.Clusters[context]
		_, hadUser := cfg.AuthInfos[context]
		if !hadContext && !hadCluster && !hadUser {
			return false
		}
		delete(cfg.Contexts, context)
		delete(cfg.Clusters, context)
		delete(cfg.AuthInfos, context)
		if cfg.CurrentContext == context {
			cfg.CurrentContext = ""
		}
		return true
	})
}

// update loads the kubeconfig at path under its lock, lets change edit it,
// and writes it back if change reports a change. create says whether a
// missing file is created (else a missing file is left missing).
func update(path string, create bool, change func(*clientcmdapi.Config) bool) error {
	if path == "" {
		return errors.New("kubeconfig: no file path")
	}
	// Write through a symbolic link (a kubeconfig kept with dotfiles), not
	// over it.
	if resolved, err := filepath.EvalSymlinks(path); err == nil {
		path = resolved
	}
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if !create {
			return nil
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create directory for kubeconfig %s: %w", path, err)
		}
	}
	unlock, err := lock(path)
	if err != nil {
		return err
	}
	defer unlock()

	cfg, err := load(path)
	if errors.Is(err, fs.ErrNotExist) {
		if !create {
			return nil
		}
		cfg, err = clientcmdapi.NewConfig(), nil
	}
	if err != nil {
		return err
	}
	if cfg.Clusters == nil {
		cfg.Clusters = map[string]*clientcmdapi.Cluster{}
	}
	if cfg.AuthInfos == nil {
		cfg.AuthInfos = map[string]*clientcmdapi.AuthInfo{}
	}
	if cfg.Contexts == nil {
		cfg.Contexts = map[string]*clientcmdapi.Context{}
	}
	if !change(cfg) {
		return nil
	}
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("encode kubeconfig %s: %w", path, err)
	}
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// load reads a kubeconfig, refusing a file that is not one. An empty file
// is an empty kubeconfig, as kubectl takes it.
func load(path string) (*clientcmdapi.Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("read kubeconfig %s: %w", path, err)
	}
	notKubeconfig := func(why error) error {
		return fmt.Errorf("%s is not a kubeconfig file, and kforge will not overwrite it (%w): fix or move it, or pass --kubeconfig with another path", path, why)
	}
	if len(bytes.TrimSpace(b)) > 0 {
		var top map[string]any
		if err := yaml.Unmarshal(b, &top); err != nil {
			return nil, notKubeconfig(err)
		}
		// A file with none of a kubeconfig's top-level fields is something
		// else, although clientcmd would take it for an empty kubeconfig.
		known := false
		for _, k := range []string{"apiVersion", "kind", "clusters", "contexts", "users", "current-context", "preferences", "extensions"} {
			if _, ok := top[k]; ok {
				known = true
			}
		}
		if !known {
			return nil, notKubeconfig(errors.New("none of its fields is a kubeconfig field"))
		}
	}
	cfg, err := clientcmd.Load(b)
	if err != nil {
		return nil, notKubeconfig(err)
	}
	return cfg, nil
}

// lock takes an exclusive flock(2) on a hidden file beside the kubeconfig,
// waiting for another kforge that holds it. The kernel releases it if the
// process dies, so no stale lock is ever left to clear.
func lock(path string) (func(), error) {
	name := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".kforge.lock")
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock kubeconfig %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock kubeconfig %s: %w", path, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// ExecUser is a user that authenticates to the EKS cluster name in region
// by running `kforgePath token --name name --region region`, the absolute
// path of the kforge binary (os.Executable), as a kubectl exec credential
// plugin. The plugin never prompts, and gets no cluster information. A
// non-empty profile is set as AWS_PROFILE in the plugin's environment (as
// `aws eks update-kubeconfig --profile` does), so that kubectl uses the
// identity of the switch whatever the shell has later.
func ExecUser(kforgePath, name, region, profile string) *clientcmdapi.AuthInfo {
	var env []clientcmdapi.ExecEnvVar
	if profile != "" {
		env = []clientcmdapi.ExecEnvVar{{Name: "AWS_PROFILE", Value: profile}}
	}
	return &clientcmdapi.AuthInfo{
		Exec: &clientcmdapi.ExecConfig{
			APIVersion:         ExecAPIVersion,
			Command:            kforgePath,
			Args:               []string{"token", "--name", name, "--region", region},
			Env:                env,
			InteractiveMode:    clientcmdapi.NeverExecInteractiveMode,
			ProvideClusterInfo: false,
			InstallHint: fmt.Sprintf("kubectl authenticates to this cluster with kforge at %s. "+
				"If kforge has moved, run `kforge switch aws --name %s --region %s` again.", kforgePath, name, region),
		},
	}
}

// UnstableBinary returns why an exec plugin's command at path (an
// absolute path, symlinks resolved) would not last, or "" if it will. What
// `go run` executes is removed by Go: a binary in Go's build cache (GOCACHE,
// else the go-build directory of the user cache directory, or any directory
// that Go's build cache README marks as one, which covers a GOCACHE set with
// `go env -w`), or in a go-build work directory (GOTMPDIR, else the
// temporary directory, then go-build and digits). getenv reads the
// environment (os.Getenv in production).
func UnstableBinary(path string, getenv func(string) string) string {
	path = filepath.Clean(path)
	var caches []string
	if c := getenv("GOCACHE"); c != "" && c != "off" {
		caches = append(caches, c)
	} else if c == "" {
		if dir, err := os.UserCacheDir(); err == nil {
			caches = append(caches, filepath.Join(dir, "go-build"))
		}
	}
	for _, c := range caches {
		for _, d := range withResolved(c) {
			if rel, ok := under(d, path); ok && rel != "" {
				return "it is in Go's build cache (" + c + ")"
			}
		}
	}
	// The cache holds executables at <cache>/xx/<hash>-d/<name>.
	for d, i := filepath.Dir(path), 0; i < 4 && d != filepath.Dir(d); d, i = filepath.Dir(d), i+1 {
		if isGoBuildCache(d) {
			return "it is in Go's build cache (" + d + ")"
		}
	}
	tmps := []string{os.TempDir()}
	if t := getenv("GOTMPDIR"); t != "" {
		tmps = append(tmps, t)
	}
	for _, t := range tmps {
		for _, d := range withResolved(t) {
			rel, ok := under(d, path)
			if !ok {
				continue
			}
			first, rest, _ := strings.Cut(rel, string(filepath.Separator))
			if rest != "" && isGoBuildWorkDir(first) {
				return "it is a temporary build of `go run` (" + filepath.Join(t, first) + ")"
			}
		}
	}
	return ""
}

// under returns path relative to dir ("" for dir itself) and whether path
// is dir or inside it.
func under(dir, path string) (string, bool) {
	rel, err := filepath.Rel(filepath.Clean(dir), path)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(rel) {
		return "", false
	}
	if rel == "." {
		rel = ""
	}
	return rel, true
}

// withResolved returns dir, and dir with its symlinks resolved if that
// differs (os.Executable's path is resolved; /tmp may be a symlink).
func withResolved(dir string) []string {
	dirs := []string{dir}
	if r, err := filepath.EvalSymlinks(dir); err == nil && r != filepath.Clean(dir) {
		dirs = append(dirs, r)
	}
	return dirs
}

// isGoBuildWorkDir reports whether name is a work directory of the go
// command (os.MkdirTemp's "go-build" followed by digits).
func isGoBuildWorkDir(name string) bool {
	digits, ok := strings.CutPrefix(name, "go-build")
	if !ok || digits == "" {
		return false
	}
	for _, r := range digits {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// goCacheREADME starts the README that Go writes at the root of its build
// cache.
const goCacheREADME = "This directory holds cached build artifacts from the Go build system."

// isGoBuildCache reports whether dir is the root of a Go build cache.
func isGoBuildCache(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "README"))
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, len(goCacheREADME))
	n, _ := io.ReadFull(f, b)
	return string(b[:n]) == goCacheREADME
}

// TokenUser is a user that sends a fixed bearer token.
func TokenUser(token string) *clientcmdapi.AuthInfo {
	return &clientcmdapi.AuthInfo{Token: token}
}

// EKSCluster is an EKS cluster's API server: its endpoint URL and the
// certificate authority data as the EKS API returns it (base64 of the PEM
// bundle; a PEM given as is is accepted too). The certificate data is
// stored as given, without checking that it is a certificate.
func EKSCluster(endpoint string, caData []byte) (*clientcmdapi.Cluster, error) {
	if err := checkServer(endpoint); err != nil {
		return nil, err
	}
	ca := bytes.TrimSpace(caData)
	if len(ca) == 0 {
		return nil, fmt.Errorf("EKS cluster at %s has no certificate authority data", endpoint)
	}
	if bytes.HasPrefix(ca, []byte("-----BEGIN")) {
		return &clientcmdapi.Cluster{Server: endpoint, CertificateAuthorityData: bytes.Clone(caData)}, nil
	}
	decoded := make([]byte, base64.StdEncoding.DecodedLen(len(ca)))
	n, err := base64.StdEncoding.Decode(decoded, ca)
	if err != nil {
		return nil, fmt.Errorf("EKS cluster at %s: its certificate authority data is not base64: %w", endpoint, err)
	}
	return &clientcmdapi.Cluster{Server: endpoint, CertificateAuthorityData: decoded[:n]}, nil
}

// FromAdmin takes the admin kubeconfig read from a control plane (k3s's
// /etc/rancher/k3s/k3s.yaml, kubeadm's /etc/kubernetes/admin.conf) and
// returns the cluster and user of its current context (or of its only
// context), with the cluster's server set to server, the load balancer's
// https://<address>:6443. Errors never quote the file.
func FromAdmin(adminKubeconfig []byte, server string) (*clientcmdapi.Cluster, *clientcmdapi.AuthInfo, error) {
	if err := checkServer(server); err != nil {
		return nil, nil, err
	}
	if len(bytes.TrimSpace(adminKubeconfig)) == 0 {
		return nil, nil, errors.New("admin kubeconfig from the control plane is empty")
	}
	cfg, err := clientcmd.Load(adminKubeconfig)
	if err != nil {
		// The decoder's message may quote the content; keep it out.
		return nil, nil, errors.New("admin kubeconfig from the control plane is not a valid kubeconfig")
	}
	name := cfg.CurrentContext
	if name == "" && len(cfg.Contexts) == 1 {
		for n := range cfg.Contexts {
			name = n
		}
	}
	ctx, ok := cfg.Contexts[name]
	if !ok {
		return nil, nil, fmt.Errorf("admin kubeconfig from the control plane has no current context (current-context %q, %d contexts)", cfg.CurrentContext, len(cfg.Contexts))
	}
	cluster, ok := cfg.Clusters[ctx.Cluster]
	if !ok {
		return nil, nil, fmt.Errorf("admin kubeconfig from the control plane: context %q names cluster %q, which it does not define", name, ctx.Cluster)
	}
	user, ok := cfg.AuthInfos[ctx.AuthInfo]
	if !ok {
		return nil, nil, fmt.Errorf("admin kubeconfig from the control plane: context %q names user %q, which it does not define", name, ctx.AuthInfo)
	}
	cluster = cluster.DeepCopy()
	cluster.Server = server
	cluster.LocationOfOrigin = ""
	user = user.DeepCopy()
	user.LocationOfOrigin = ""
	return cluster, user, nil
}

// checkServer requires an absolute https URL.
func checkServer(server string) error {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("API server address %q is not an https URL", server)
	}
	return nil
}
