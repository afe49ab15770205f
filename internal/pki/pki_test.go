package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func newTestCA(t *testing.T) *KeyPair {
	t.Helper()
	ca, err := NewCA("kforge-test-ca")
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return ca
}

func pool(ca *KeyPair) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

func TestNewCA(t *testing.T) {
	ca := newTestCA(t)
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid {
		t.Errorf("CA certificate is not marked as a CA")
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA certificate lacks KeyUsageCertSign")
	}
	if got := c.PublicKeyAlgorithm; got != x509.ECDSA {
		t.Errorf("public key algorithm = %v, want ECDSA", got)
	}
	if name := ca.Key.Curve.Params().Name; name != "P-256" {
		t.Errorf("curve = %s, want P-256", name)
	}
	if life := c.NotAfter.Sub(c.NotBefore) - ClockSkew; life < CAValidity-time.Minute || life > CAValidity+time.Minute {
		t.Errorf("CA validity = %v, want %v", life, CAValidity)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("CA is not self-signed: %v", err)
	}
	if _, err := NewCA(""); err == nil {
		t.Errorf("NewCA(\"\") succeeded, want an error")
	}
}

func TestIssueVerifiesPerUsage(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	ip := netip.MustParseAddr("10.0.1.5")
	tests := []struct {
		usage      Usage
		verifyAs   x509.ExtKeyUsage
		wantVerify bool
	}{
		{Server, x509.ExtKeyUsageServerAuth, true},
		{Server, x509.ExtKeyUsageClientAuth, false},
		{Client, x509.ExtKeyUsageClientAuth, true},
		{Client, x509.ExtKeyUsageServerAuth, false},
		{Peer, x509.ExtKeyUsageServerAuth, true},
		{Peer, x509.ExtKeyUsageClientAuth, true},
	}
	for _, tt := range tests {
		t.Run(tt.usage.String()+"/"+extName(tt.verifyAs), func(t *testing.T) {
			leaf, err := ca.Issue(Request{
				CommonName: "etcd-0",
				DNSNames:   []string{"etcd-0", "localhost"},
				IPs:        []netip.Addr{ip, netip.MustParseAddr("127.0.0.1")},
				Usage:      tt.usage,
			})
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			opts := x509.VerifyOptions{Roots: pool(ca), KeyUsages: []x509.ExtKeyUsage{tt.verifyAs}}
			if tt.usage != Client {
				opts.DNSName = "10.0.1.5"
			}
			_, err = leaf.Cert.Verify(opts)
			if (err == nil) != tt.wantVerify {
				t.Fatalf("Verify as %s: err = %v, want success %v", extName(tt.verifyAs), err, tt.wantVerify)
			}
			// A certificate never verifies against another CA.
			opts.Roots = pool(other)
			if _, err := leaf.Cert.Verify(opts); err == nil {
				t.Errorf("certificate verified against an unrelated CA")
			}
		})
	}
}

func extName(u x509.ExtKeyUsage) string {
	if u == x509.ExtKeyUsageServerAuth {
		return "serverAuth"
	}
	return "clientAuth"
}

func TestIssueSANsAndValidity(t *testing.T) {
	ca := newTestCA(t)
	ips := []netip.Addr{netip.MustParseAddr("10.0.1.5"), netip.MustParseAddr("54.1.2.3")}
	leaf, err := ca.Issue(Request{
		CommonName:   "kube-apiserver-etcd-client",
		Organization: []string{"system:masters"},
		DNSNames:     []string{"etcd-0.internal"},
		IPs:          ips,
		Usage:        Peer,
	})
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	c := leaf.Cert
	if c.Subject.CommonName != "kube-apiserver-etcd-client" || !slices.Equal(c.Subject.Organization, []string{"system:masters"}) {
		t.Errorf("subject = %v", c.Subject)
	}
	if !slices.Equal(c.DNSNames, []string{"etcd-0.internal"}) {
		t.Errorf("DNS names = %v", c.DNSNames)
	}
	if len(c.IPAddresses) != 2 || c.IPAddresses[0].String() != "10.0.1.5" || c.IPAddresses[1].String() != "54.1.2.3" {
		t.Errorf("IP SANs = %v", c.IPAddresses)
	}
	for _, host := range []string{"10.0.1.5", "54.1.2.3", "etcd-0.internal"} {
		if err := c.VerifyHostname(host); err != nil {
			t.Errorf("VerifyHostname(%s): %v", host, err)
		}
	}
	if err := c.VerifyHostname("10.0.1.6"); err == nil {
		t.Errorf("certificate valid for an address it does not list")
	}
	if c.IsCA {
		t.Errorf("leaf certificate is a CA")
	}
	if life := c.NotAfter.Sub(c.NotBefore) - ClockSkew; life < LeafValidity-time.Minute || life > LeafValidity+time.Minute {
		t.Errorf("leaf validity = %v, want %v", life, LeafValidity)
	}
	if c.NotAfter.After(ca.Cert.NotAfter) {
		t.Errorf("leaf outlives its CA")
	}
	if !bytes.Equal(c.AuthorityKeyId, ca.Cert.SubjectKeyId) {
		t.Errorf("authority key id does not name the CA")
	}
	if !leaf.Key.PublicKey.Equal(c.PublicKey) {
		t.Errorf("private key does not match the certificate")
	}
}

func TestIssueRejects(t *testing.T) {
	ca := newTestCA(t)
	leaf, err := ca.Issue(Request{CommonName: "client", Usage: Client})
	if err != nil {
		t.Fatalf("client without SANs: %v", err)
	}
	tests := []struct {
		name   string
		issuer *KeyPair
		req    Request
	}{
		{"no common name", ca, Request{Usage: Client}},
		{"server without SANs", ca, Request{CommonName: "s", Usage: Server}},
		{"peer without SANs", ca, Request{CommonName: "p", Usage: Peer}},
		{"unknown usage", ca, Request{CommonName: "x", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}},
		{"invalid IP", ca, Request{CommonName: "x", Usage: Server, IPs: []netip.Addr{{}}}},
		{"issuer is not a CA", leaf, Request{CommonName: "x", Usage: Client}},
		{"no issuer", nil, Request{CommonName: "x", Usage: Client}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.issuer.Issue(tt.req); err == nil {
				t.Errorf("Issue succeeded, want an error")
			}
		})
	}
}

func TestPEMRoundTrip(t *testing.T) {
	ca := newTestCA(t)
	p, err := ca.PEM()
	if err != nil {
		t.Fatalf("PEM: %v", err)
	}
	if !bytes.HasPrefix(p.Cert, []byte("-----BEGIN CERTIFICATE-----")) || !bytes.HasPrefix(p.Key, []byte("-----BEGIN PRIVATE KEY-----")) {
		t.Fatalf("unexpected PEM blocks:\n%s", p.Cert)
	}
	back, err := ParseKeyPair(p)
	if err != nil {
		t.Fatalf("ParseKeyPair: %v", err)
	}
	if !back.Cert.Equal(ca.Cert) || !back.Key.Equal(ca.Key) {
		t.Fatalf("round trip changed the CA")
	}
	// The decoded CA still issues certificates that chain to the original.
	leaf, err := back.Issue(Request{CommonName: "c", Usage: Client})
	if err != nil {
		t.Fatalf("Issue from decoded CA: %v", err)
	}
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: pool(ca), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("leaf of decoded CA does not verify: %v", err)
	}

	// A SEC 1 ("EC PRIVATE KEY") key is accepted too.
	sec1, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseKeyPair(PEMPair{Cert: p.Cert, Key: pemBlock("EC PRIVATE KEY", sec1)}); err != nil {
		t.Errorf("SEC 1 key: %v", err)
	}
}

func TestParseKeyPairRejects(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	p, _ := ca.PEM()
	q, _ := other.PEM()
	tests := []struct {
		name string
		in   PEMPair
	}{
		{"key of another certificate", PEMPair{Cert: p.Cert, Key: q.Key}},
		{"no certificate", PEMPair{Cert: nil, Key: p.Key}},
		{"no key", PEMPair{Cert: p.Cert}},
		{"key in certificate slot", PEMPair{Cert: p.Key, Key: p.Key}},
		{"garbage key", PEMPair{Cert: p.Cert, Key: pemBlock("PRIVATE KEY", []byte("junk"))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseKeyPair(tt.in); err == nil {
				t.Errorf("ParseKeyPair succeeded, want an error")
			}
		})
	}
}

func TestParseKeyPairErrorHasNoSecret(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	p, _ := ca.PEM()
	q, _ := other.PEM()
	_, err := ParseKeyPair(PEMPair{Cert: p.Cert, Key: q.Key})
	if err == nil {
		t.Fatal("want an error")
	}
	if strings.Contains(err.Error(), "PRIVATE") || strings.Contains(err.Error(), string(q.Key[30:60])) {
		t.Errorf("error leaks key material: %v", err)
	}
}

// TestSPKIHashMatchesOpenSSL checks the discovery hash against the recipe in
// kubeadm's documentation (openssl x509 -pubkey | openssl pkey -pubin
// -outform der | sha256).
func TestSPKIHashMatchesOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed; CI installs it (apt-get install -y openssl)")
	}
	ca := newTestCA(t)
	dir := t.TempDir()
	crt := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(crt, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	pub, err := exec.Command(openssl, "x509", "-pubkey", "-noout", "-in", crt).Output()
	if err != nil {
		t.Fatalf("openssl x509: %v", err)
	}
	cmd := exec.Command(openssl, "pkey", "-pubin", "-outform", "der")
	cmd.Stdin = bytes.NewReader(pub)
	der, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl pkey: %v", err)
	}
	cmd = exec.Command(openssl, "dgst", "-sha256", "-hex")
	cmd.Stdin = bytes.NewReader(der)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl dgst: %v", err)
	}
	fields := strings.Fields(string(out))
	want := "sha256:" + fields[len(fields)-1]
	if got := SPKIHash(ca.Cert); got != want {
		t.Errorf("SPKIHash = %s, openssl says %s", got, want)
	}
	if got := SPKIHash(newTestCA(t).Cert); got == want {
		t.Errorf("two CAs have the same hash")
	}
}

func TestKeysAreP256(t *testing.T) {
	ca := newTestCA(t)
	leaf, err := ca.Issue(Request{CommonName: "c", Usage: Client})
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := leaf.Cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve.Params().Name != "P-256" {
		t.Errorf("leaf key is not ECDSA P-256: %T", leaf.Cert.PublicKey)
	}
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
