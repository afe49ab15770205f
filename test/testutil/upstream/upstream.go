// Package upstream stands in for the public internet of `kforge artifacts
// fetch` in tests: an HTTPS proxy on 127.0.0.1 that kforge reaches through
// the standard HTTPS_PROXY variable, and that answers every CONNECT itself,
// with a certificate for the requested host signed by a CA of the test
// (given to kforge with SSL_CERT_FILE). It serves files by URL and, for
// registry hosts, an in-memory container registry. Nothing is dialled.
package upstream

import (
	"bufio"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/kforge/kforge/internal/pki"
)

// Upstream is a running stand-in for the internet.
type Upstream struct {
	// ProxyURL is the value of HTTPS_PROXY; CAFile that of SSL_CERT_FILE.
	ProxyURL string
	CAFile   string
	// RegistryURL is a plain-HTTP address of the registry, to push test
	// images to (repositories as the registry hosts name them).
	RegistryURL string

	ca       *pki.KeyPair
	registry http.Handler
	ln       net.Listener

	mu     sync.Mutex
	files  map[string][]byte // by URL
	hits   []string
	certs  map[string]*tls.Certificate
	served chan net.Conn
}

// RegistryHosts are answered by the registry.
var RegistryHosts = []string{"registry.k8s.io", "ghcr.io", "docker.io", "registry-1.docker.io", "public.ecr.aws"}

// Start runs an upstream until the test ends.
func Start(t testing.TB) *Upstream {
	t.Helper()
	ca, err := pki.NewCA("kforge test upstream CA")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	u := &Upstream{CAFile: caFile, ca: ca, registry: registry.New(registry.Logger(log.New(io.Discard, "", 0))), files: map[string][]byte{},
		certs: map[string]*tls.Certificate{}, served: make(chan net.Conn)}
	reg := httptest.NewServer(u.registry)
	t.Cleanup(reg.Close)
	u.RegistryURL = reg.URL
	u.ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.ProxyURL = "http://" + u.ln.Addr().String()
	done := make(chan struct{})
	inner := &http.Server{Handler: http.HandlerFunc(u.serve)}
	go func() { _ = inner.Serve(chanListener{u.served, done, u.ln.Addr()}) }()
	go u.accept(done)
	t.Cleanup(func() {
		close(done)
		u.ln.Close()
		inner.Close()
	})
	return u
}

// Serve makes url answer with content.
func (u *Upstream) Serve(url string, content []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.files[url] = content
}

// Hits returns the URLs requested so far (files and registry requests).
func (u *Upstream) Hits() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.hits...)
}

// accept answers CONNECT requests: 200, then TLS as the requested host.
func (u *Upstream) accept(done chan struct{}) {
	for {
		c, err := u.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			br := bufio.NewReader(c)
			req, err := http.ReadRequest(br)
			if err != nil || req.Method != http.MethodConnect {
				_, _ = c.Write([]byte("HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n"))
				c.Close()
				return
			}
			if _, err := c.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
				c.Close()
				return
			}
			host, _, _ := net.SplitHostPort(req.Host)
			tc := tls.Server(&bufferedConn{Conn: c, r: br}, &tls.Config{
				NextProtos: []string{"http/1.1"},
				GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
					return u.cert(host)
				},
			})
			select {
			case u.served <- tc:
			case <-done:
				c.Close()
			}
		}()
	}
}

// cert returns a certificate for host signed by the test CA.
func (u *Upstream) cert(host string) (*tls.Certificate, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if c, ok := u.certs[host]; ok {
		return c, nil
	}
	kp, err := u.ca.Issue(pki.Request{CommonName: host, DNSNames: []string{host}, Usage: pki.Server})
	if err != nil {
		return nil, err
	}
	p, err := kp.PEM()
	if err != nil {
		return nil, err
	}
	c, err := tls.X509KeyPair(append(p.Cert, u.ca.CertPEM()...), p.Key)
	if err != nil {
		return nil, err
	}
	u.certs[host] = &c
	return &c, nil
}

// serve answers a request that came through a CONNECT tunnel.
func (u *Upstream) serve(w http.ResponseWriter, r *http.Request) {
	url := "https://" + r.Host + r.URL.RequestURI()
	u.mu.Lock()
	u.hits = append(u.hits, url)
	content, ok := u.files[url]
	u.mu.Unlock()
	for _, h := range RegistryHosts {
		if r.Host == h && strings.HasPrefix(r.URL.Path, "/v2") {
			u.registry.ServeHTTP(w, r)
			return
		}
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	_, _ = w.Write(content)
}

// chanListener is a listener fed with connections from a channel.
type chanListener struct {
	c    chan net.Conn
	done chan struct{}
	addr net.Addr
}

func (l chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l chanListener) Close() error   { return nil }
func (l chanListener) Addr() net.Addr { return l.addr }

// bufferedConn reads first what the CONNECT parser buffered.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }
