package bootstrap

import (
	"context"
	"errors"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

func TestHAProxyConfig(t *testing.T) {
	c := newCluster(t)
	cfg, err := HAProxyConfig(HAProxyParams{ControlPlanes: c.cps})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"\tmode tcp\n",
		"\tbind :6443\n",
		"\tdefault-server check inter 5s fall 3 rise 2\n",
		"\tserver cp-0 10.0.1.10:6443\n",
		"\tserver cp-1 10.0.2.10:6443\n",
		"\tserver cp-2 10.0.3.10:6443\n",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("configuration lacks %q:\n%s", want, cfg)
		}
	}
	s, err := RenderHAProxy(HAProxyParams{ControlPlanes: c.cps})
	if err != nil {
		t.Fatal(err)
	}
	f, ok := filesOf(t, s)[HAProxyConfigPath]
	if !ok || string(f.content) != cfg || f.mode != "0644" {
		t.Errorf("the script does not install the rendered configuration at %s", HAProxyConfigPath)
	}
	if !strings.Contains(s, "'haproxy' '-c' '-q' '-f' <<") {
		t.Errorf("the script does not check the configuration with haproxy -c before installing it")
	}
}

func TestHAProxyConfigRejects(t *testing.T) {
	cp := Node{Name: "cp-0", PrivateIP: "10.0.1.10"}
	tests := []struct {
		name string
		p    HAProxyParams
	}{
		{"no control planes", HAProxyParams{}},
		{"bad IP", HAProxyParams{ControlPlanes: []Node{{Name: "cp-0", PrivateIP: "10.0.1"}}}},
		{"IPv6 backend", HAProxyParams{ControlPlanes: []Node{{Name: "cp-0", PrivateIP: "fd00::1"}}}},
		{"bad name", HAProxyParams{ControlPlanes: []Node{{Name: "cp 0", PrivateIP: "10.0.1.10"}}}},
		{"duplicate name", HAProxyParams{ControlPlanes: []Node{cp, cp}}},
		{"bad bind address", HAProxyParams{ControlPlanes: []Node{cp}, BindAddress: "localhost"}},
		{"bad port", HAProxyParams{ControlPlanes: []Node{cp}, Port: 70000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := HAProxyConfig(tt.p); err == nil {
				t.Errorf("HAProxyConfig succeeded, want an error")
			}
		})
	}
}

// TestHAProxyCheck has the real haproxy accept the configuration kforge
// installs on the load balancer.
func TestHAProxyCheck(t *testing.T) {
	haproxy := lookTool(t, "haproxy", "apt-get install -y haproxy")
	c := newCluster(t)
	cfg, err := HAProxyConfig(HAProxyParams{ControlPlanes: c.cps})
	if err != nil {
		t.Fatal(err)
	}
	path := writeTemp(t, t.TempDir(), "haproxy.cfg", []byte(cfg), 0o644)
	if out, err := exec.Command(haproxy, "-c", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c rejects the configuration: %v\n%s\n%s", err, out, cfg)
	}
	// A broken configuration is rejected, so the check above means something.
	bad := writeTemp(t, t.TempDir(), "bad.cfg", []byte(cfg+"\tserver broken\n"), 0o644)
	if err := exec.Command(haproxy, "-c", "-f", bad).Run(); err == nil {
		t.Fatalf("haproxy -c accepts a broken configuration")
	}
}

// backend is a TCP server standing in for a control plane: it writes its
// name to every connection and closes it.
func backend(t *testing.T, addr, name string) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, name)
			c.Close()
		}
	}()
	return l
}

// TestHAProxyForwards runs the real haproxy on 127.0.0.1 with the rendered
// configuration (only addresses and ports differ from production) in front
// of two stand-in control planes on 127.0.0.2 and 127.0.0.3, and checks that
// connections reach both, and still succeed once one of them is gone.
func TestHAProxyForwards(t *testing.T) {
	t.Parallel()
	haproxy := lookTool(t, "haproxy", "apt-get install -y haproxy")
	backendPort := freePort(t, "127.0.0.2", "127.0.0.3")
	frontPort := freePort(t, "127.0.0.1")
	bp := strconv.Itoa(backendPort)
	b0 := backend(t, net.JoinHostPort("127.0.0.2", bp), "cp-0")
	backend(t, net.JoinHostPort("127.0.0.3", bp), "cp-1")

	cfg, err := HAProxyConfig(HAProxyParams{
		ControlPlanes: []Node{{Name: "cp-0", PrivateIP: "127.0.0.2"}, {Name: "cp-1", PrivateIP: "127.0.0.3"}},
		BindAddress:   "127.0.0.1",
		Port:          frontPort,
		BackendPort:   backendPort,
	})
	if err != nil {
		t.Fatal(err)
	}
	path := writeTemp(t, t.TempDir(), "haproxy.cfg", []byte(cfg), 0o644)
	if out, err := exec.Command(haproxy, "-c", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	startProcess(t, haproxy, "-db", "-f", path)

	front := net.JoinHostPort("127.0.0.1", strconv.Itoa(frontPort))
	fetch := func() (string, error) {
		c, err := net.DialTimeout("tcp", front, 2*time.Second)
		if err != nil {
			return "", err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil {
			return "", err
		}
		if len(b) == 0 {
			return "", errors.New("connection closed without data")
		}
		return string(b), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, 20*time.Millisecond, true, func(context.Context) (bool, error) {
		_, err := fetch()
		return err == nil, nil
	}); err != nil {
		t.Fatalf("haproxy never forwarded a connection on %s: %v", front, err)
	}

	seen := map[string]int{}
	for range 6 {
		got, err := fetch()
		if err != nil {
			t.Fatalf("connection through haproxy: %v", err)
		}
		seen[got]++
	}
	if seen["cp-0"] == 0 || seen["cp-1"] == 0 {
		t.Errorf("haproxy did not balance over both control planes: %v", seen)
	}

	// Once cp-0 stops listening, connections are redispatched to cp-1.
	b0.Close()
	for i := range 6 {
		got, err := fetch()
		if err != nil || got != "cp-1" {
			t.Errorf("connection %d with cp-0 down: %q, %v; want cp-1", i, got, err)
		}
	}
}
