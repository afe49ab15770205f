package bootstrap

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kforge/kforge/test/testutil/local"

	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"

	"github.com/kforge/kforge/internal/pki"
)

func TestEtcdConfig(t *testing.T) {
	c := newCluster(t)
	out, err := EtcdConfig(EtcdConfigParams{Cluster: c.etcd, Member: c.etcd.Members[1]})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := yaml.Unmarshal(out, &got); err != nil {
		t.Fatalf("not YAML: %v\n%s", err, out)
	}
	want := map[string]any{
		"name":                        "etcd-1",
		"data-dir":                    "/var/lib/etcd",
		"listen-client-urls":          "https://10.0.2.5:2379",
		"advertise-client-urls":       "https://10.0.2.5:2379",
		"listen-peer-urls":            "https://10.0.2.5:2380",
		"initial-advertise-peer-urls": "https://10.0.2.5:2380",
		"initial-cluster":             "etcd-0=https://10.0.1.5:2380,etcd-1=https://10.0.2.5:2380,etcd-2=https://10.0.3.5:2380",
		"initial-cluster-state":       "new",
		"initial-cluster-token":       "kforge-test-us-east-1",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	for _, sec := range []string{"client-transport-security", "peer-transport-security"} {
		m, _ := got[sec].(map[string]any)
		if m["client-cert-auth"] != true || m["trusted-ca-file"] != "/etc/etcd/pki/ca.crt" || m["cert-file"] == nil || m["key-file"] == nil {
			t.Errorf("%s = %v", sec, m)
		}
	}
}

func TestEtcdConfigRejects(t *testing.T) {
	c := newCluster(t)
	m := c.etcd.Members
	tests := []struct {
		name string
		p    EtcdConfigParams
	}{
		{"member not in cluster", EtcdConfigParams{Cluster: c.etcd, Member: Node{Name: "etcd-9", PrivateIP: "10.0.9.5"}}},
		{"no members", EtcdConfigParams{Cluster: EtcdCluster{Token: "t"}, Member: m[0]}},
		{"duplicate name", EtcdConfigParams{Cluster: EtcdCluster{Token: "t", Members: []Node{m[0], {Name: "etcd-0", PrivateIP: "10.0.9.9"}}}, Member: m[0]}},
		{"duplicate IP", EtcdConfigParams{Cluster: EtcdCluster{Token: "t", Members: []Node{m[0], {Name: "etcd-9", PrivateIP: m[0].PrivateIP}}}, Member: m[0]}},
		{"bad name", EtcdConfigParams{Cluster: EtcdCluster{Token: "t", Members: []Node{{Name: "Etcd=0", PrivateIP: "10.0.0.1"}}}, Member: Node{Name: "Etcd=0", PrivateIP: "10.0.0.1"}}},
		{"bad IP", EtcdConfigParams{Cluster: EtcdCluster{Token: "t", Members: []Node{{Name: "e", PrivateIP: "10.0.0"}}}, Member: Node{Name: "e", PrivateIP: "10.0.0"}}},
		{"no token", EtcdConfigParams{Cluster: EtcdCluster{Members: m}, Member: m[0]}},
		{"same ports", EtcdConfigParams{Cluster: EtcdCluster{Token: "t", Members: m, ClientPort: 2380}, Member: m[0]}},
		{"relative data dir", EtcdConfigParams{Cluster: c.etcd, Member: m[0], DataDir: "data"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := EtcdConfig(tt.p); err == nil {
				t.Errorf("EtcdConfig succeeded, want an error")
			}
		})
	}
}

func TestRenderEtcdFiles(t *testing.T) {
	c := newCluster(t)
	member := c.etcd.Members[0]
	s, err := RenderEtcd(EtcdParams{EtcdConfigParams: EtcdConfigParams{Cluster: c.etcd, Member: member}, Certs: c.etcdCerts[0]})
	if err != nil {
		t.Fatal(err)
	}
	files := filesOf(t, s)
	cfg, err := EtcdConfig(EtcdConfigParams{Cluster: c.etcd, Member: member})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		mode, owner string
		content     []byte
	}{
		"/etc/etcd/pki/ca.crt":             {"0644", "root:root", c.etcdCerts[0].CA},
		"/etc/etcd/pki/server.crt":         {"0644", "root:root", c.etcdCerts[0].Server.Cert},
		"/etc/etcd/pki/server.key":         {"0600", "etcd:etcd", c.etcdCerts[0].Server.Key},
		"/etc/etcd/pki/peer.crt":           {"0644", "root:root", c.etcdCerts[0].Peer.Cert},
		"/etc/etcd/pki/peer.key":           {"0600", "etcd:etcd", c.etcdCerts[0].Peer.Key},
		"/etc/etcd/pki/client.crt":         {"0644", "root:root", c.etcdCerts[0].Client.Cert},
		"/etc/etcd/pki/client.key":         {"0600", "root:root", c.etcdCerts[0].Client.Key},
		EtcdConfigPath:                     {"0644", "root:root", cfg},
		"/etc/systemd/system/etcd.service": {"0644", "root:root", []byte(etcdUnit)},
	}
	if len(files) != len(want) {
		t.Errorf("script writes %d files, want %d", len(files), len(want))
	}
	for path, w := range want {
		f, ok := files[path]
		if !ok {
			t.Errorf("script does not write %s", path)
			continue
		}
		if f.mode != w.mode || f.owner != w.owner || !bytes.Equal(f.content, w.content) {
			t.Errorf("%s: mode %s owner %s (want %s %s), content equal %v", path, f.mode, f.owner, w.mode, w.owner, bytes.Equal(f.content, w.content))
		}
	}
	for _, want := range []string{DefaultEtcdChecksums()["amd64"], DefaultEtcdChecksums()["arm64"], "'" + DefaultEtcdVersion + "'", "sha256sum --check"} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q", want)
		}
	}
}

func TestRenderEtcdVersionNeedsChecksums(t *testing.T) {
	c := newCluster(t)
	base := EtcdParams{EtcdConfigParams: EtcdConfigParams{Cluster: c.etcd, Member: c.etcd.Members[0]}, Certs: c.etcdCerts[0]}
	tests := []struct {
		name      string
		version   string
		checksums map[string]string
		wantErr   bool
	}{
		{"defaults", "", nil, false},
		{"other version without checksums", "v3.5.22", nil, true},
		{"other version with checksums", "v3.5.22", map[string]string{"amd64": strings.Repeat("ab", 32)}, false},
		{"bad checksum", "v3.5.22", map[string]string{"amd64": "abc"}, true},
		{"bad version", "3.5.22", map[string]string{"amd64": strings.Repeat("ab", 32)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := base
			p.Version, p.Checksums = tt.version, tt.checksums
			_, err := RenderEtcd(p)
			if (err != nil) != tt.wantErr {
				t.Errorf("err = %v, want error %v", err, tt.wantErr)
			}
		})
	}
	p := base
	p.Certs.Server.Key = c.etcdCerts[1].Server.Key
	if _, err := RenderEtcd(p); err == nil {
		t.Errorf("a server key of another member was accepted")
	}
}

func TestIssueEtcdCerts(t *testing.T) {
	c := newCluster(t)
	roots := x509.NewCertPool()
	roots.AddCert(c.etcdCA.Cert)
	certs := c.etcdCerts[0]
	check := func(what string, p pki.PEMPair, host string, usage x509.ExtKeyUsage) {
		t.Helper()
		kp, err := pki.ParseKeyPair(p)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if _, err := kp.Cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: host, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}
	check("server", certs.Server, "10.0.1.5", x509.ExtKeyUsageServerAuth)
	check("server via loopback", certs.Server, "127.0.0.1", x509.ExtKeyUsageServerAuth)
	check("peer as server", certs.Peer, "10.0.1.5", x509.ExtKeyUsageServerAuth)
	check("peer as client", certs.Peer, "", x509.ExtKeyUsageClientAuth)
	check("etcdctl client", certs.Client, "", x509.ExtKeyUsageClientAuth)
	check("apiserver client", c.etcdClient.Client, "", x509.ExtKeyUsageClientAuth)
}

// freePort returns a TCP port that is free on every given loopback address.
func freePort(t *testing.T, ips ...string) int {
	t.Helper()
	port, err := local.FreePort(ips...)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// startProcess runs a command until the test ends, reporting its output if
// the test fails.
func startProcess(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, name, args...)
	out := &local.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(name), tail(out.String(), 3000))
		}
	})
	return cmd
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// runScript runs a rendered script as the SSH runner does (bash -s, script
// on standard input) with extra environment, returning stdout and stderr.
func runScript(t *testing.T, script string, timeout time.Duration, env ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-s")
	cmd.Stdin = strings.NewReader(script)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// TestEtcdRealCluster forms a real three-member etcd cluster on 127.0.0.1-3
// from the configuration EtcdConfig renders and certificates from
// IssueEtcdCerts, then checks it with the rendered etcd-health script and
// etcdctl: healthy with the client certificate, three members, a client
// without a certificate (or with one from another CA) refused, and
// etcd-health failing once a member is down.
func TestEtcdRealCluster(t *testing.T) {
	t.Parallel()
	etcd := lookTool(t, "etcd", "apt-get install -y etcd-server")
	etcdctl := lookTool(t, "etcdctl", "apt-get install -y etcd-client")
	ips := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	clientPort := freePort(t, ips...)
	peerPort := freePort(t, ips...)
	for peerPort == clientPort {
		peerPort = freePort(t, ips...)
	}
	ca, err := pki.NewCA("kforge-test-etcd-ca")
	if err != nil {
		t.Fatal(err)
	}
	cluster := EtcdCluster{Token: "kforge-etcd-test", ClientPort: clientPort, PeerPort: peerPort}
	for i, ip := range ips {
		cluster.Members = append(cluster.Members, Node{Name: fmt.Sprintf("etcd-%d", i), PrivateIP: ip})
	}
	pkiDirs, procs := startEtcdCluster(t, etcd, ca, cluster, t.TempDir())

	health := func(wait time.Duration) (string, string, error) {
		t.Helper()
		s, err := RenderEtcdHealth(EtcdHealthParams{Cluster: cluster, PKIDir: pkiDirs[0], Etcdctl: etcdctl, Wait: wait})
		if err != nil {
			t.Fatal(err)
		}
		return runScript(t, s, wait+30*time.Second)
	}
	t0 := time.Now()
	stdout, stderr, err := health(60 * time.Second)
	t.Logf("healthy after %v", time.Since(t0))
	if err != nil {
		t.Fatalf("etcd-health failed: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	if n := strings.Count(stdout, "is healthy"); n != 3 {
		t.Errorf("etcd-health reports %d healthy endpoints, want 3:\n%s", n, stdout)
	}

	endpoints := strings.Join(cluster.ClientURLs(), ",")
	ctl := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, etcdctl, append([]string{"--endpoints=" + endpoints, "--dial-timeout=3s", "--command-timeout=5s"}, args...)...)
		cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	withCert := []string{"--cacert=" + filepath.Join(pkiDirs[1], "ca.crt"), "--cert=" + filepath.Join(pkiDirs[1], "client.crt"), "--key=" + filepath.Join(pkiDirs[1], "client.key")}
	out, err := ctl(append(withCert, "member", "list")...)
	if err != nil {
		t.Fatalf("member list: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Errorf("member list shows %d members, want 3:\n%s", len(lines), out)
	}
	for _, m := range cluster.Members {
		if !strings.Contains(out, ", "+m.Name+", ") {
			t.Errorf("member list lacks %s:\n%s", m.Name, out)
		}
	}
	if out, err := ctl(append(withCert, "put", "kforge", "ok")...); err != nil {
		t.Errorf("put with client certificate: %v\n%s", err, out)
	}

	// Without a client certificate, or with one from another CA, the
	// cluster refuses the client; with the client certificate it serves it.
	caPEM, err := os.ReadFile(filepath.Join(pkiDirs[1], "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA("other-ca")
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := other.Issue(pki.Request{CommonName: "stranger", Usage: pki.Client})
	if err != nil {
		t.Fatal(err)
	}
	sp, err := stranger.PEM()
	if err != nil {
		t.Fatal(err)
	}
	clientPEM := pki.PEMPair{Cert: mustRead(t, filepath.Join(pkiDirs[1], "client.crt")), Key: mustRead(t, filepath.Join(pkiDirs[1], "client.key"))}
	healthURL := cluster.ClientURLs()[1] + "/health"
	for _, tt := range []struct {
		name   string
		client *pki.PEMPair
		ok     bool
	}{
		{"client certificate", &clientPEM, true},
		{"no client certificate", nil, false},
		{"certificate from another CA", &sp, false},
	} {
		body, err := httpsGet(t, healthURL, caPEM, tt.client)
		if tt.ok && (err != nil || !strings.Contains(body, `"health":"true"`)) {
			t.Errorf("%s: GET /health = %q, %v; want healthy", tt.name, body, err)
		}
		if !tt.ok && (err == nil || !strings.Contains(err.Error(), "certificate")) {
			t.Errorf("%s: GET /health = %q, %v; want a TLS certificate error", tt.name, body, err)
		}
	}

	// With one member down, etcd-health fails.
	if err := procs[2].Process.Kill(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(context.Context) (bool, error) {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ips[2], strconv.Itoa(clientPort)), time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil, nil
	}); err != nil {
		t.Fatalf("member 2 still listens after kill: %v", err)
	}
	t0 = time.Now()
	stdout, stderr, err = health(time.Second)
	t.Logf("unhealthy reported after %v", time.Since(t0))
	if err == nil {
		t.Errorf("etcd-health succeeded with a member down:\n%s", stdout)
	}
	if !strings.Contains(stderr, "not healthy") {
		t.Errorf("etcd-health does not say what is wrong:\n%s", stderr)
	}
}

// startEtcdCluster starts a real etcd per member of cluster under root
// (<root>/<member>/{pki,data,etcd.yaml}), with certificates issued from ca
// and the configuration EtcdConfig renders, and returns each member's PKI
// directory and process.
func startEtcdCluster(t *testing.T, etcd string, ca *pki.KeyPair, cluster EtcdCluster, root string) ([]string, []*exec.Cmd) {
	t.Helper()
	procs := make([]*exec.Cmd, len(cluster.Members))
	var pkiDirs []string
	for i, m := range cluster.Members {
		dir := filepath.Join(root, m.Name)
		pkiDir := filepath.Join(dir, "pki")
		if err := os.MkdirAll(pkiDir, 0o700); err != nil {
			t.Fatal(err)
		}
		pkiDirs = append(pkiDirs, pkiDir)
		certs, err := IssueEtcdCerts(ca, m)
		if err != nil {
			t.Fatal(err)
		}
		for name, data := range map[string][]byte{
			etcdCAFile: certs.CA, etcdServerCertFile: certs.Server.Cert, etcdServerKeyFile: certs.Server.Key,
			etcdPeerCertFile: certs.Peer.Cert, etcdPeerKeyFile: certs.Peer.Key,
			etcdClientCertFile: certs.Client.Cert, etcdClientKeyFile: certs.Client.Key,
		} {
			writeTemp(t, pkiDir, name, data, 0o600)
		}
		cfg, err := EtcdConfig(EtcdConfigParams{Cluster: cluster, Member: m, DataDir: filepath.Join(dir, "data"), PKIDir: pkiDir})
		if err != nil {
			t.Fatal(err)
		}
		cfgPath := writeTemp(t, dir, "etcd.yaml", cfg, 0o644)
		procs[i] = startProcess(t, etcd, "--config-file", cfgPath)
	}
	return pkiDirs, procs
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// httpsGet fetches url trusting caPEM, presenting client if not nil.
func httpsGet(t *testing.T, url string, caPEM []byte, client *pki.PEMPair) (string, error) {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("bad CA PEM")
	}
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if client != nil {
		pair, err := tls.X509KeyPair(client.Cert, client.Key)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
