package sshx_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kforge/kforge/internal/sshx"
	"github.com/kforge/kforge/test/testutil/sshfleet"
)

// fastBackoff keeps WaitReachable tests quick.
func fastBackoff() wait.Backoff {
	return wait.Backoff{Duration: 5 * time.Millisecond, Factor: 1.5, Jitter: 0.1, Steps: 1 << 30, Cap: 40 * time.Millisecond}
}

const script = "#!/usr/bin/env bash\n# kforge-recipe: demo\nset -euo pipefail\necho TOKEN=s3cr3t-value >/etc/demo\n"

func newSigner(t *testing.T) ssh.Signer {
	t.Helper()
	k, err := sshx.GenerateKey("test")
	if err != nil {
		t.Fatal(err)
	}
	s, err := k.Signer()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// env is a fleet of static VMs (no AWS) and the cluster key that logs in
// to them and to the jump host.
type env struct {
	fleet      *sshfleet.Fleet
	clusterKey ssh.Signer
	knownHosts string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{clusterKey: newSigner(t)}
	e.fleet = sshfleet.Start(t, sshfleet.Options{AuthorizedKeys: []ssh.PublicKey{e.clusterKey.PublicKey()}, JumpUser: "jumper"})
	e.knownHosts = filepath.Join(t.TempDir(), "known_hosts")
	e.fleet.WriteKnownHosts(t, e.knownHosts)
	return e
}

// addVM adds VM number i and returns its target.
func (e *env) addVM(t *testing.T, i int) sshx.Target {
	t.Helper()
	hk := newSigner(t)
	vm := sshfleet.VM{
		InstanceID: fmt.Sprintf("i-%04d", i),
		Role:       "cp",
		PrivateIP:  fmt.Sprintf("10.0.%d.%d", i/250, i%250+4),
	}
	e.fleet.AddVM(sshfleet.StaticVM{VM: vm, HostKeySigner: hk, LoginKey: e.clusterKey.PublicKey()})
	return sshx.Target{Name: vm.InstanceID, PrivateIP: vm.PrivateIP, PublicIP: "127.0.0.1", HostKey: hk.PublicKey()}
}

// jumpClient connects through the fleet as the jump host.
func (e *env) jumpClient(t *testing.T, mod func(*sshx.Config)) *sshx.Client {
	t.Helper()
	cfg := sshx.Config{
		Signer:  e.clusterKey,
		Jump:    &sshx.Jump{User: "jumper", Host: "127.0.0.1", Port: e.fleet.Port(), KnownHosts: []string{e.knownHosts}},
		Backoff: fastBackoff(),
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := sshx.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// directClient connects straight to the VM at target.PrivateIP, served by
// the fleet on its own port, as if that were the VM's public IP.
func (e *env) directClient(t *testing.T, target sshx.Target) *sshx.Client {
	t.Helper()
	addr := e.fleet.ServeDirect(t, target.PrivateIP)
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	c, err := sshx.New(sshx.Config{Signer: e.clusterKey, Port: p, Backoff: fastBackoff()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestRun(t *testing.T) {
	e := newEnv(t)
	vm := e.addVM(t, 1)
	e.fleet.Handle("demo", func(v sshfleet.VM, cmd string, stdin []byte) ([]byte, []byte, int) {
		return []byte("hello from " + v.InstanceID + "\n"), []byte("a warning\n"), 0
	})
	tests := []struct {
		name   string
		client func(t *testing.T) *sshx.Client
	}{
		{"direct", func(t *testing.T) *sshx.Client { return e.directClient(t, vm) }},
		{"jump", func(t *testing.T) *sshx.Client { return e.jumpClient(t, nil) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.fleet.Calls())
			out, err := tc.client(t).Run(context.Background(), vm, script)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != "hello from i-0001\n" {
				t.Fatalf("stdout = %q", out)
			}
			calls := e.fleet.Calls()[before:]
			if len(calls) != 1 {
				t.Fatalf("%d calls recorded, want 1", len(calls))
			}
			c := calls[0]
			if c.Command != sshx.RemoteCommand || string(c.Stdin) != script || c.Recipe != "demo" || c.VM.InstanceID != "i-0001" {
				t.Fatalf("recorded call %+v", c)
			}
		})
	}
}

func TestRunExitStatus(t *testing.T) {
	e := newEnv(t)
	vm := e.addVM(t, 1)
	c := e.jumpClient(t, nil)
	var lines []string
	for i := 1; i <= 25; i++ {
		lines = append(lines, fmt.Sprintf("stderr line %d", i))
	}
	tests := []struct {
		name       string
		responder  sshfleet.Responder
		wantCode   int
		wantStderr string
		wantOut    string
	}{
		{"ok", sshfleet.Reply("fine"), 0, "", "fine"},
		{"exit 1", sshfleet.Fail(1, "boom\n"), 1, "boom", ""},
		{"exit 42 long stderr", sshfleet.Fail(42, strings.Join(lines, "\n")+"\n"), 42, strings.Join(lines[15:], "\n"), ""},
		{"exit 2 with stdout", func(sshfleet.VM, string, []byte) ([]byte, []byte, int) {
			return []byte("partial"), []byte("\n\nlast words\n\n"), 2
		}, 2, "last words", "partial"},
		// A secret in what the VM prints never reaches the error.
		{"exit 1 printing a token", sshfleet.Fail(1, "join with --token abcdef.0123456789abcdef failed\n"), 1,
			"join with --token " + sshx.Redacted + " failed", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.fleet.Handle("demo", tc.responder)
			out, err := c.Run(context.Background(), vm, script)
			if string(out) != tc.wantOut {
				t.Errorf("stdout = %q, want %q", out, tc.wantOut)
			}
			if tc.wantCode == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ee *sshx.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("error %v is not an ExitError", err)
			}
			if ee.Code != tc.wantCode || ee.Recipe != "demo" || ee.VM != "i-0001" || ee.Stderr != tc.wantStderr {
				t.Fatalf("ExitError %+v", ee)
			}
			msg := err.Error()
			if !strings.Contains(msg, "recipe demo") || !strings.Contains(msg, fmt.Sprintf("status %d", tc.wantCode)) {
				t.Fatalf("message %q lacks recipe or status", msg)
			}
			if strings.Contains(msg, "s3cr3t") || strings.Contains(msg, "TOKEN") {
				t.Fatalf("message reveals the script: %q", msg)
			}
		})
	}
}

func TestConnectionsReused(t *testing.T) {
	e := newEnv(t)
	a, b := e.addVM(t, 1), e.addVM(t, 2)
	c := e.jumpClient(t, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 10; i++ {
		for _, vm := range []sshx.Target{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := c.Run(context.Background(), vm, script)
				errs <- err
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := e.fleet.JumpLogins(); n != 1 {
		t.Errorf("%d jump host logins, want 1 shared connection", n)
	}
	for _, vm := range []sshx.Target{a, b} {
		if n := e.fleet.Logins(vm.Name); n != 1 {
			t.Errorf("%s: %d logins, want 1 reused connection", vm.Name, n)
		}
		if n := len(e.fleet.CallsFor(vm.Name)); n != 10 {
			t.Errorf("%s: %d calls, want 10", vm.Name, n)
		}
	}
}

func TestReconnectAfterJumpDrops(t *testing.T) {
	e := newEnv(t)
	vm := e.addVM(t, 1)
	c := e.jumpClient(t, nil)
	if _, err := c.Run(context.Background(), vm, script); err != nil {
		t.Fatal(err)
	}
	e.fleet.DropConnections()
	// The drop may or may not have been noticed yet: either way the next
	// run must succeed over a new jump connection.
	if _, err := c.Run(context.Background(), vm, script); err != nil {
		t.Fatalf("after the jump host dropped the connection: %v", err)
	}
	if n := e.fleet.JumpLogins(); n != 2 {
		t.Errorf("%d jump logins, want 2", n)
	}
	if n := e.fleet.Logins(vm.Name); n != 2 {
		t.Errorf("%d VM logins, want 2", n)
	}
}

func TestHostKeyPinned(t *testing.T) {
	e := newEnv(t)
	vm := e.addVM(t, 1)
	e.fleet.SetFault(vm.Name, sshfleet.Fault{WrongHostKey: true})
	c := e.jumpClient(t, nil)

	_, err := c.Run(context.Background(), vm, script)
	var hk *sshx.HostKeyError
	if !errors.As(err, &hk) {
		t.Fatalf("Run error %v is not a HostKeyError", err)
	}
	if hk.VM != vm.Name || hk.Expected != sshx.Fingerprint(vm.HostKey) || hk.Presented == hk.Expected || !strings.HasPrefix(hk.Presented, "SHA256:") {
		t.Fatalf("HostKeyError %+v", hk)
	}
	for _, want := range []string{vm.Name, hk.Expected, hk.Presented} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	if len(e.fleet.Calls()) != 0 {
		t.Fatal("a script ran on a VM with the wrong host key")
	}

	// Not retried: WaitReachable gives up at the first attempt.
	attempts := e.fleet.Attempts(vm.Name)
	err = c.WaitReachable(context.Background(), vm, nil)
	if !errors.As(err, &hk) {
		t.Fatalf("WaitReachable error %v is not a HostKeyError", err)
	}
	if n := e.fleet.Attempts(vm.Name) - attempts; n != 1 {
		t.Fatalf("WaitReachable made %d attempts, want 1", n)
	}
}

func TestJumpHostKeyChecked(t *testing.T) {
	e := newEnv(t)
	vm := e.addVM(t, 1)
	dir := t.TempDir()
	other := newSigner(t)
	mismatch := filepath.Join(dir, "mismatch")
	line := fmt.Sprintf("[127.0.0.1]:%d %s", e.fleet.Port(), sshx.AuthorizedKey(other.PublicKey(), ""))
	if err := os.WriteFile(mismatch, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		knownHosts string
		known      bool
		want       []string
	}{
		{"missing file", filepath.Join(dir, "absent"), false, []string{"not in known_hosts", fmt.Sprintf("ssh-keyscan -p %d 127.0.0.1 >> ", e.fleet.Port())}},
		{"other key", mismatch, true, []string{"does not match", "ssh-keygen", sshx.Fingerprint(other.PublicKey())}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := e.jumpClient(t, func(cfg *sshx.Config) { cfg.Jump.KnownHosts = []string{tc.knownHosts} })
			_, err := c.Run(context.Background(), vm, script)
			var jk *sshx.JumpHostKeyError
			if !errors.As(err, &jk) {
				t.Fatalf("error %v is not a JumpHostKeyError", err)
			}
			if (len(jk.Known) > 0) != tc.known || jk.Presented != sshx.Fingerprint(e.fleet.HostKey()) {
				t.Fatalf("JumpHostKeyError %+v", jk)
			}
			for _, w := range append(tc.want, jk.Presented) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message %q lacks %q", err, w)
				}
			}
			if e.fleet.JumpLogins() != 0 {
				t.Fatal("logged in to an unverified jump host")
			}
			if err := c.WaitReachable(context.Background(), vm, nil); !errors.As(err, &jk) {
				t.Fatalf("WaitReachable: %v", err)
			}
		})
	}
}

func TestJumpRefusesKey(t *testing.T) {
	e := newEnv(t)
	vm := e.addVM(t, 1)
	stranger := newSigner(t)
	c := e.jumpClient(t, func(cfg *sshx.Config) { cfg.Jump.Signer = stranger })
	progressed := 0
	err := c.WaitReachable(context.Background(), vm, func(time.Duration, error) { progressed++ })
	if err == nil || !strings.Contains(err.Error(), "unable to authenticate") || !strings.Contains(err.Error(), "jump host") {
		t.Fatalf("WaitReachable = %v, want an immediate jump host authentication failure", err)
	}
	if progressed != 0 {
		t.Fatalf("retried %d times", progressed)
	}
}

func TestWaitReachable(t *testing.T) {
	tests := []struct {
		name         string
		fault        sshfleet.Fault
		loginKey     bool // log in with a key the VM does not know
		authGrace    time.Duration
		reachTimeout time.Duration
		wantErr      string
		minProgress  int
	}{
		{name: "up at once"},
		{name: "booting", fault: sshfleet.Fault{RefuseFirst: 4}, minProgress: 4},
		{name: "key installed late", fault: sshfleet.Fault{RejectLoginFirst: 2}, minProgress: 2},
		{name: "slow to answer", fault: sshfleet.Fault{Delay: 50 * time.Millisecond}},
		{name: "never up", fault: sshfleet.Fault{RefuseFirst: 1 << 30}, reachTimeout: 300 * time.Millisecond, wantErr: "did not answer SSH within", minProgress: 2},
		{name: "wrong cluster key", loginKey: true, authGrace: 100 * time.Millisecond, wantErr: "refused the cluster key", minProgress: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			vm := e.addVM(t, 1)
			e.fleet.SetFault(vm.Name, tc.fault)
			c := e.jumpClient(t, func(cfg *sshx.Config) {
				cfg.AuthGrace = tc.authGrace
				cfg.ReachTimeout = tc.reachTimeout
				if tc.loginKey {
					cfg.Jump.Signer = cfg.Signer
					cfg.Signer = newSigner(t)
				}
			})
			var progress []error
			err := c.WaitReachable(context.Background(), vm, func(_ time.Duration, err error) { progress = append(progress, err) })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), vm.Name) {
					t.Fatalf("WaitReachable = %v, want %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if len(progress) < tc.minProgress {
				t.Fatalf("progress reported %d times, want at least %d", len(progress), tc.minProgress)
			}
			if tc.wantErr == "" && tc.fault.RefuseFirst > 0 && len(progress) != tc.fault.RefuseFirst {
				t.Fatalf("progress reported %d times, want %d", len(progress), tc.fault.RefuseFirst)
			}
			for _, p := range progress {
				if p == nil {
					t.Fatal("progress without an error")
				}
			}
			if err == nil {
				// The connection is kept for the scripts that follow.
				logins := e.fleet.Logins(vm.Name)
				if _, err := c.Run(context.Background(), vm, script); err != nil {
					t.Fatal(err)
				}
				if e.fleet.Logins(vm.Name) != logins {
					t.Fatal("Run did not reuse the connection WaitReachable made")
				}
			}
		})
	}
}

func TestWaitReachableHonoursContext(t *testing.T) {
	e := newEnv(t)
	vm := e.addVM(t, 1)
	e.fleet.SetFault(vm.Name, sshfleet.Fault{RefuseFirst: 1 << 30})
	c := e.jumpClient(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	err := c.WaitReachable(ctx, vm, func(time.Duration, error) { cancel() })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitReachable = %v, want context.Canceled", err)
	}
}

func TestRunHonoursContext(t *testing.T) {
	e := newEnv(t)
	vm := e.addVM(t, 1)
	release := make(chan struct{})
	defer close(release)
	e.fleet.Handle("demo", func(sshfleet.VM, string, []byte) ([]byte, []byte, int) {
		<-release
		return nil, nil, 0
	})
	c := e.jumpClient(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Run(ctx, vm, script)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run = %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Run returned %s after its deadline", d)
	}
}

// A hundred VMs through one jump host, with at most a few handshakes at
// once: every script runs, each VM is logged in to once, and the
// handshakes are really serialised (each is held 30ms by the VM).
func TestManyVMsBoundedHandshakes(t *testing.T) {
	e := newEnv(t)
	const n, slots = 100, 8
	delay := 30 * time.Millisecond
	e.fleet.SetFault("", sshfleet.Fault{Delay: delay})
	var vms []sshx.Target
	for i := 0; i < n; i++ {
		vms = append(vms, e.addVM(t, i))
	}
	c := e.jumpClient(t, func(cfg *sshx.Config) { cfg.MaxHandshakes = slots })
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, vm := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Run(context.Background(), vm, script)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if min := time.Duration(n/slots) * delay; time.Since(start) < min {
		t.Fatalf("%d handshakes took %s, less than %s: more than %d ran at once", n, time.Since(start), min, slots)
	}
	for _, vm := range vms {
		if e.fleet.Logins(vm.Name) != 1 || len(e.fleet.CallsFor(vm.Name)) != 1 {
			t.Fatalf("%s: %d logins, %d calls", vm.Name, e.fleet.Logins(vm.Name), len(e.fleet.CallsFor(vm.Name)))
		}
	}
}

func TestClientErrors(t *testing.T) {
	e := newEnv(t)
	vm := e.addVM(t, 1)
	c := e.jumpClient(t, nil)
	noKey := vm
	noKey.HostKey = nil
	if _, err := c.Run(context.Background(), noKey, script); err == nil || !strings.Contains(err.Error(), "no pinned host key") {
		t.Fatalf("Run without a host key = %v", err)
	}
	noIP := vm
	noIP.PrivateIP = ""
	if _, err := c.Run(context.Background(), noIP, script); err == nil || !strings.Contains(err.Error(), "no private IP") {
		t.Fatalf("Run without a private IP = %v", err)
	}
	direct, err := sshx.New(sshx.Config{Signer: e.clusterKey})
	if err != nil {
		t.Fatal(err)
	}
	noIP = vm
	noIP.PublicIP = ""
	if _, err := direct.Run(context.Background(), noIP, script); err == nil || !strings.Contains(err.Error(), "--ssh-jump") {
		t.Fatalf("Run without a public IP = %v", err)
	}
	if _, err := sshx.New(sshx.Config{}); err == nil {
		t.Fatal("New without a key succeeded")
	}
	if _, err := c.Run(context.Background(), vm, script); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Run(context.Background(), vm, script); !errors.Is(err, sshx.ErrClosed) {
		t.Fatalf("Run after Close = %v", err)
	}
}
