package kubeconfig

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kforge/kforge/internal/ekstoken"
)

// kubectl runs the real kubectl with only the given kubeconfig.
func kubectl(t *testing.T, kubeconfig string, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl is not installed")
	}
	cmd := exec.Command(bin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=/usr/bin:/bin"}
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("kubectl %s: %v: %s", strings.Join(args, " "), err, stderr)
	}
	return string(out)
}

// TestKubectlReadsFile checks that kubectl reads what Merge wrote: the
// exec plugin with its arguments, the cluster, the current context.
func TestKubectlReadsFile(t *testing.T) {
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
	var view struct {
		CurrentContext string `json:"current-context"`
		Clusters       []struct {
			Name    string `json:"name"`
			Cluster struct {
				Server string `json:"server"`
				CAData string `json:"certificate-authority-data"`
			} `json:"cluster"`
		} `json:"clusters"`
		Users []struct {
			Name string `json:"name"`
			User struct {
				Exec *struct {
					APIVersion         string   `json:"apiVersion"`
					Command            string   `json:"command"`
					Args               []string `json:"args"`
					InteractiveMode    string   `json:"interactiveMode"`
					ProvideClusterInfo bool     `json:"provideClusterInfo"`
				} `json:"exec"`
			} `json:"user"`
		} `json:"users"`
		Contexts []struct {
			Name    string `json:"name"`
			Context struct {
				Cluster string `json:"cluster"`
				User    string `json:"user"`
			} `json:"context"`
		} `json:"contexts"`
	}
	if err := json.Unmarshal([]byte(kubectl(t, path, "config", "view", "--raw", "-o", "json")), &view); err != nil {
		t.Fatal(err)
	}
	if view.CurrentContext != b.Context {
		t.Errorf("kubectl current-context = %q, want %q", view.CurrentContext, b.Context)
	}
	for _, e := range []Entry{a, b} {
		name := strings.TrimPrefix(e.Context, "kforge-")
		found := 0
		for _, u := range view.Users {
			if u.Name != e.Context {
				continue
			}
			found++
			x := u.User.Exec
			if x == nil {
				t.Errorf("kubectl shows no exec plugin for %s", e.Context)
				continue
			}
			if x.APIVersion != "client.authentication.k8s.io/v1beta1" || x.Command != kforgeBin || x.InteractiveMode != "Never" || x.ProvideClusterInfo ||
				!reflect.DeepEqual(x.Args, []string{"token", "--name", name, "--region", "us-east-1"}) {
				t.Errorf("kubectl shows exec for %s = %+v", e.Context, *x)
			}
		}
		for _, c := range view.Clusters {
			if c.Name != e.Context {
				continue
			}
			found++
			if c.Cluster.Server != e.Cluster.Server || c.Cluster.CAData != base64.StdEncoding.EncodeToString(e.Cluster.CertificateAuthorityData) {
				t.Errorf("kubectl shows cluster %s = %+v", e.Context, c.Cluster)
			}
		}
		for _, c := range view.Contexts {
			if c.Name == e.Context && c.Context.Cluster == e.Context && c.Context.User == e.Context {
				found++
			}
		}
		if found != 3 {
			t.Errorf("kubectl shows %d of the 3 entries of %s", found, e.Context)
		}
	}
	if len(view.Users) != 4 || len(view.Clusters) != 4 || len(view.Contexts) != 4 {
		t.Errorf("kubectl shows %d users, %d clusters, %d contexts; want 4 each", len(view.Users), len(view.Clusters), len(view.Contexts))
	}
}

// pki is a test CA with a server certificate for 127.0.0.1 and a client
// certificate, as a k3s or kubeadm control plane has.
type pki struct {
	caPEM, serverCert, serverKey, clientCert, clientKey []byte
	pool                                                *x509.CertPool
}

func newPKI(t *testing.T) pki {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) ([]byte, []byte) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn, Organization: []string{"system:masters"}},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	}
	p := pki{caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.serverCert, p.serverKey = leaf(2, "kube-apiserver", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	p.clientCert, p.clientKey = leaf(3, "admin", x509.ExtKeyUsageClientAuth, nil)
	return p
}

// apiServer is a TLS server on 127.0.0.1 that answers /version to a
// client that presents the admin certificate or the bearer token.
func apiServer(t *testing.T, p pki, token string) *httptest.Server {
	t.Helper()
	cert, err := tls.X509KeyPair(p.serverCert, p.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		byCert := len(r.TLS.PeerCertificates) > 0 && r.TLS.PeerCertificates[0].Subject.CommonName == "admin"
		byToken := token != "" && r.Header.Get("Authorization") == "Bearer "+token
		if !byCert && !byToken {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Unauthorized","code":401}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"major":"1","minor":"32","gitVersion":"v1.32.0-kforge-test"}`))
	}))
	s.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: p.pool}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// TestKubectlAuthenticates has kubectl reach a TLS server on 127.0.0.1
// with each kind of user kforge writes: the exec plugin (a stand-in for
// `kforge token` that records its arguments and prints an
// ekstoken.ExecCredential), a static token, and the
// admin certificate taken from a k3s admin kubeconfig.
func TestKubectlAuthenticates(t *testing.T) {
	p := newPKI(t)
	const token = "k8s-aws-v1.from-the-plugin"
	s := apiServer(t, p, token)
	dir := t.TempDir()

	// The stand-in plugin prints what `kforge token` prints.
	cred, err := ekstoken.ExecCredential(ekstoken.Token{Value: token, Expiration: time.Now().Add(ekstoken.Lifetime)})
	if err != nil {
		t.Fatal(err)
	}
	credFile := filepath.Join(dir, "cred.json")
	if err := os.WriteFile(credFile, cred, 0o600); err != nil {
		t.Fatal(err)
	}
	argsFile := filepath.Join(dir, "args")
	plugin := filepath.Join(dir, "kforge")
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + argsFile + "\ncat " + credFile + "\n"
	if err := os.WriteFile(plugin, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}

	eks, err := EKSCluster(s.URL, []byte(base64.StdEncoding.EncodeToString(p.caPEM)))
	if err != nil {
		t.Fatal(err)
	}
	admin := clientcmdapi.NewConfig()
	admin.Clusters["default"] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:6443", CertificateAuthorityData: p.caPEM}
	admin.AuthInfos["default"] = &clientcmdapi.AuthInfo{ClientCertificateData: p.clientCert, ClientKeyData: p.clientKey}
	admin.Contexts["default"] = &clientcmdapi.Context{Cluster: "default", AuthInfo: "default"}
	admin.CurrentContext = "default"
	adminYAML, err := clientcmd.Write(*admin)
	if err != nil {
		t.Fatal(err)
	}
	haCluster, haUser, err := FromAdmin(adminYAML, s.URL)
	if err != nil {
		t.Fatal(err)
	}

	path := filepath.Join(dir, "kubeconfig")
	tests := []struct {
		name  string
		entry Entry
	}{
		{"exec plugin", Entry{Context: "kforge-eks", Cluster: eks, User: ExecUser(plugin, "eks", "us-west-2", "")}},
		{"static token", Entry{Context: "kforge-static", Cluster: eks, User: TokenUser(token)}},
		{"admin certificate", Entry{Context: "kforge-ha", Cluster: haCluster, User: haUser}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Merge(path, tt.entry); err != nil {
				t.Fatal(err)
			}
			out := kubectl(t, path, "get", "--raw", "/version")
			if !strings.Contains(out, "v1.32.0-kforge-test") {
				t.Errorf("kubectl get --raw /version = %q", out)
			}
		})
	}
	// The plugin ran with the arguments ExecUser gave it.
	args, err := os.ReadFile(argsFile)
	if err != nil {
		t.Fatalf("the exec plugin did not run: %v", err)
	}
	if got := strings.Fields(string(args)); !reflect.DeepEqual(got, []string{"token", "--name", "eks", "--region", "us-west-2"}) {
		t.Errorf("plugin args = %q", got)
	}
	// A user without credentials is refused, so the checks above mean
	// something.
	if err := Merge(path, Entry{Context: "kforge-none", Cluster: eks, User: &clientcmdapi.AuthInfo{}}); err != nil {
		t.Fatal(err)
	}
	bin, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl is not installed")
	}
	cmd := exec.Command(bin, "--kubeconfig", path, "get", "--raw", "/version")
	cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=/usr/bin:/bin"}
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("kubectl without credentials succeeded: %s", out)
	}
}
