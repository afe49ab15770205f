// Package moto starts the AWS emulator (moto_server) on 127.0.0.1 for
// tests, seeded with Canonical Ubuntu images, and gives SDK clients and
// environments that point at it through AWS_ENDPOINT_URL.
package moto

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/kforge/kforge/test/testutil/eksaddons"
	"github.com/kforge/kforge/test/testutil/local"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// amis seeds the emulator's images. They carry no creation_date: moto 5.2
// parses the dates of MOTO_AMIS_PATH in place when the first region loads
// them, and every later region then fails with HTTP 500. Without dates,
// moto stamps each image in file order, so a later entry is newer.
//
//go:embed amis.json
var amis []byte

// The AMIs the emulator is seeded with: the newest Canonical Ubuntu 24.04
// images per architecture, and decoys (older, 22.04, another owner).
const (
	UbuntuNobleAMD64 = "ami-0a1b2c3d4e5f60002"
	UbuntuNobleARM64 = "ami-0a1b2c3d4e5f60003"
)

// Test credentials. The emulator accepts any keys unless IAM enforcement
// is on.
const (
	AccessKeyID     = "AKIAKFORGETEST000001"
	SecretAccessKey = "kforge-test-secret-not-a-real-one"
)

// Server is a running moto_server, behind a front that adds what moto
// lacks: the EKS add-on and version-update APIs, and clusters' access
// configuration and access entries (package eksaddons).
type Server struct {
	// URL is the front's: every client uses it.
	URL string
	// Port is moto_server's own port; MotoURL its address.
	Port    int
	MotoURL string
	// EKS is the double of those EKS APIs in the front.
	EKS   *eksaddons.Double
	cmd   *exec.Cmd
	log   *local.Buffer
	front *http.Server
}

// Options tune the emulator.
type Options struct {
	// Env adds environment variables (INITIAL_NO_AUTH_ACTION_COUNT, ...).
	Env []string
}

// Start runs moto_server on a free loopback port until the test ends.
func Start(t testing.TB, opts ...Options) *Server {
	t.Helper()
	s, err := StartProcess(t.TempDir(), opts...)
	if err != nil {
		t.Fatalf("start moto_server: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// StartProcess runs moto_server with its AMI seed in dir; the caller stops
// it. It is for TestMain and benchmarks, which have no testing.T.
func StartProcess(dir string, opts ...Options) (*Server, error) {
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		return nil, fmt.Errorf("moto_server is not installed (pip install 'moto[server]'): %w", err)
	}
	amiPath := filepath.Join(dir, "amis.json")
	if err := os.WriteFile(amiPath, amis, 0o600); err != nil {
		return nil, err
	}
	port, err := local.FreePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", strconv.Itoa(port))
	cmd.Env = append(os.Environ(), "MOTO_IAM_LOAD_MANAGED_POLICIES=true", "MOTO_AMIS_PATH="+amiPath)
	for _, o := range opts {
		cmd.Env = append(cmd.Env, o.Env...)
	}
	log := &local.Buffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Server{MotoURL: fmt.Sprintf("http://127.0.0.1:%d", port), Port: port, cmd: cmd, log: log}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.MotoURL + "/moto-api/data.json")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				if err := s.startFront(); err != nil {
					s.Stop()
					return nil, err
				}
				return s, nil
			}
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("moto_server did not answer within 30s: %s", log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startFront serves the front: the EKS double, then moto.
func (s *Server) startFront() error {
	target, err := url.Parse(s.MotoURL)
	if err != nil {
		return err
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.FlushInterval = -1
	// A client that gives up (a test cancelling a call) is no error of
	// the front's; anything else is answered 502 and logged.
	proxy.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		if r.Context().Err() == nil {
			log.Printf("moto front: %s %s: %v", r.Method, r.URL.Path, err)
		}
		w.WriteHeader(http.StatusBadGateway)
	}
	proxy.Transport = &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute}
	s.EKS = eksaddons.New(proxy)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.front = &http.Server{Handler: wholeBodies(s.EKS), ReadHeaderTimeout: 30 * time.Second}
	go func() { _ = s.front.Serve(ln) }()
	s.URL = "http://" + ln.Addr().String()
	return nil
}

// wholeBodies reads each request's body before h serves it, so that the
// proxy's transport never reads a body from the client's connection while
// the server may drain it (it does once the answer is under way). Once in
// CI an answer of the emulator was cut short (the client saw "unexpected
// EOF" on a 200, the proxy "use of closed network connection" on its
// connection to the emulator); a transport that fails to read its
// request's body closes that connection, which fits, but the cause was
// not seen for certain.
func wholeBodies(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			b, err := io.ReadAll(r.Body)
			r.Body.Close()
			if err != nil {
				http.Error(w, "read the request body: "+err.Error(), http.StatusBadRequest)
				return
			}
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
		}
		h.ServeHTTP(w, r)
	})
}

// Stop ends the emulator.
func (s *Server) Stop() {
	if s.front != nil {
		_ = s.front.Close()
	}
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

// Env returns the environment a kforge process needs to use the emulator:
// the endpoint and test credentials (other AWS_* variables of the test
// process are dropped).
func (s *Server) Env() []string {
	return []string{
		"AWS_ENDPOINT_URL=" + s.URL,
		"AWS_ACCESS_KEY_ID=" + AccessKeyID,
		"AWS_SECRET_ACCESS_KEY=" + SecretAccessKey,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// Config returns an SDK configuration for assertions against the emulator.
func (s *Server) Config(t testing.TB, region string) aws.Config {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithRegion(region),
		config.WithBaseEndpoint(s.URL),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(AccessKeyID, SecretAccessKey, "")),
	)
	if err != nil {
		t.Fatalf("aws config: %v", err)
	}
	return cfg
}

// SetAuth turns IAM enforcement on (true) or off (false) at run time.
func (s *Server) SetAuth(on bool) error {
	body := "inf"
	if on {
		body = "0"
	}
	resp, err := http.Post(s.URL+"/moto-api/reset-auth", "text/plain", bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("reset-auth: HTTP %d", resp.StatusCode)
	}
	return nil
}

// RunTests is a test package's TestMain body for one emulator shared by
// its tests: it starts moto_server, sets *emu, runs the tests, stops the
// emulator and exits with the tests' code.
func RunTests(m interface{ Run() int }, emu **Server, opts ...Options) {
	os.Exit(runTests(m, emu, opts...))
}

func runTests(m interface{ Run() int }, emu **Server, opts ...Options) int {
	dir, err := os.MkdirTemp("", "kforge-moto-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	s, err := StartProcess(dir, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.Stop()
	*emu = s
	return m.Run()
}
