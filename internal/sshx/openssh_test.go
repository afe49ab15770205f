package sshx_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kforge/kforge/test/testutil/local"

	"golang.org/x/crypto/ssh"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kforge/kforge/internal/sshx"
	"github.com/kforge/kforge/test/testutil/sshfleet"
)

const sshdPath = "/usr/sbin/sshd"

// openSSHD is a real OpenSSH server run unprivileged-style on 127.0.0.1.
type openSSHD struct {
	port    int
	hostKey ssh.PublicKey
	user    string
}

// startSSHD runs sshd admitting the current user with key. With
// asVM, every session runs through a wrapper that checks the command is
// sshx.RemoteCommand and then runs the script with bash (no sudo needed).
// It skips the test if sshd cannot run here.
func startSSHD(t *testing.T, key ssh.PublicKey, asVM bool) *openSSHD {
	t.Helper()
	if _, err := os.Stat(sshdPath); err != nil {
		t.Skipf("OpenSSH server not installed (%s): %v", sshdPath, err)
	}
	u, err := user.Current()
	if err != nil {
		t.Skipf("no current user for sshd logins: %v", err)
	}
	dir := t.TempDir()
	hk, err := sshx.GenerateKey("sshd")
	if err != nil {
		t.Fatal(err)
	}
	hostKeyPath := filepath.Join(dir, "ssh_host_ed25519_key")
	authPath := filepath.Join(dir, "authorized_keys")
	wrapperPath := filepath.Join(dir, "vm-shell.sh")
	writeFile(t, hostKeyPath, string(hk.PrivatePEM), 0o600)
	writeFile(t, authPath, sshx.AuthorizedKey(key, "test")+"\n", 0o600)
	writeFile(t, wrapperPath, fmt.Sprintf(`#!/bin/sh
if [ "$SSH_ORIGINAL_COMMAND" != %q ]; then
  echo "unexpected command: $SSH_ORIGINAL_COMMAND" >&2
  exit 99
fi
exec bash -s
`, sshx.RemoteCommand), 0o700)
	port := freePort(t)
	conf := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
AuthorizedKeysFile %s
PidFile %s
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowTcpForwarding yes
LogLevel VERBOSE
`, port, hostKeyPath, authPath, filepath.Join(dir, "sshd.pid"))
	if asVM {
		conf += "ForceCommand " + wrapperPath + "\n"
	}
	confPath := filepath.Join(dir, "sshd_config")
	writeFile(t, confPath, conf, 0o600)
	if os.Geteuid() == 0 {
		// The privilege separation directory sshd insists on as root.
		_ = os.MkdirAll("/run/sshd", 0o755)
	}
	if out, err := exec.Command(sshdPath, "-t", "-f", confPath).CombinedOutput(); err != nil {
		t.Skipf("sshd cannot run in this sandbox (sshd -t: %v): %s", err, out)
	}
	logs := &local.Buffer{}
	cmd := exec.Command(sshdPath, "-D", "-e", "-f", confPath)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Skipf("sshd cannot run in this sandbox: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("sshd on port %d logged:\n%s", port, logs.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = wait.PollUntilContextCancel(ctx, 20*time.Millisecond, true, func(context.Context) (bool, error) {
		select {
		case <-exited:
			return false, errors.New("sshd exited")
		default:
		}
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			return false, nil
		}
		_ = c.Close()
		return true, nil
	})
	if err != nil {
		t.Skipf("sshd cannot run in this sandbox (%v): %s", err, logs.String())
	}
	pub, _ := hk.PublicKey()
	return &openSSHD{port: port, hostKey: pub, user: u.Username}
}

func writeFile(t *testing.T, path, content string, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	port, err := local.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// Scripts run on a real OpenSSH server: stdout, exit codes, stderr,
// large scripts on stdin, cancellation and a pinned host key.
func TestOpenSSHRun(t *testing.T) {
	key := newSigner(t)
	d := startSSHD(t, key.PublicKey(), true)
	c, err := sshx.New(sshx.Config{User: d.user, Signer: key, Port: d.port, Backoff: fastBackoff()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	vm := sshx.Target{Name: "cp-0", PublicIP: "127.0.0.1", PrivateIP: "10.9.9.9", HostKey: d.hostKey}
	if err := c.WaitReachable(context.Background(), vm, nil); err != nil {
		t.Fatal(err)
	}

	big := strings.Repeat("# padding padding padding padding padding padding padding\n", 4000)
	tests := []struct {
		name, body  string
		wantOut     string
		wantCode    int
		wantStderr  string
		notInStderr string
	}{
		{name: "stdout", body: "echo hello; echo \"bash $BASH_VERSINFO\" | cut -c1-4\n", wantOut: "hello\nbash\n"},
		{name: "large script", body: big + "echo done\n", wantOut: "done\n"},
		{name: "exit code", body: "echo partial; for i in $(seq 1 30); do echo \"err $i\" >&2; done; exit 7\n", wantOut: "partial\n", wantCode: 7,
			wantStderr: "err 21\nerr 22\nerr 23\nerr 24\nerr 25\nerr 26\nerr 27\nerr 28\nerr 29\nerr 30", notInStderr: "err 20"},
		{name: "failing command", body: "set -e\nfalse\necho unreachable\n", wantCode: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := "#!/usr/bin/env bash\n# kforge-recipe: " + strings.ReplaceAll(tc.name, " ", "-") + "\n" + tc.body
			out, err := c.Run(context.Background(), vm, s)
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
			if !errors.As(err, &ee) || ee.Code != tc.wantCode || ee.Recipe != strings.ReplaceAll(tc.name, " ", "-") {
				t.Fatalf("Run = %v, want exit %d", err, tc.wantCode)
			}
			if ee.Stderr != tc.wantStderr && tc.wantStderr != "" {
				t.Fatalf("stderr tail = %q, want %q", ee.Stderr, tc.wantStderr)
			}
		})
	}

	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.Run(ctx, vm, "#!/usr/bin/env bash\n# kforge-recipe: sleepy\nsleep 30\n")
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 10*time.Second {
			t.Fatalf("Run = %v after %s", err, time.Since(start))
		}
	})

	t.Run("wrong host key", func(t *testing.T) {
		other := vm
		other.HostKey = newSigner(t).PublicKey()
		_, err := c.Run(context.Background(), other, script)
		var hk *sshx.HostKeyError
		if !errors.As(err, &hk) || hk.Presented != sshx.Fingerprint(d.hostKey) || hk.Expected != sshx.Fingerprint(other.HostKey) {
			t.Fatalf("Run = %v, want a HostKeyError", err)
		}
	})
}

// A real OpenSSH server as the jump host: its key is checked against
// known_hosts (and the ssh-keyscan advice of the error works), and it
// forwards to VMs at their "private" address, here 127.0.0.1.
func TestOpenSSHJump(t *testing.T) {
	e := newEnv(t)
	key := e.clusterKey
	jump := startSSHD(t, key.PublicKey(), false)
	vmSSHD := startSSHD(t, key.PublicKey(), true)
	fleetVM := e.addVM(t, 1)
	e.fleet.Handle("demo", sshfleet.Reply("from the fleet\n"))
	fleetAddr := e.fleet.ServeDirect(t, fleetVM.PrivateIP)
	_, fp, _ := net.SplitHostPort(fleetAddr)
	fleetPort, _ := strconv.Atoi(fp)

	knownHosts := filepath.Join(t.TempDir(), "known_hosts")
	newClient := func(t *testing.T, vmUser string, vmPort int) *sshx.Client {
		c, err := sshx.New(sshx.Config{
			User:      vmUser,
			Signer:    key,
			Port:      vmPort,
			Jump:      &sshx.Jump{User: jump.user, Host: "127.0.0.1", Port: jump.port, KnownHosts: []string{knownHosts}},
			Backoff:   fastBackoff(),
			AuthGrace: 2 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	fleetTarget := sshx.Target{Name: "wp-0", PrivateIP: "127.0.0.1", HostKey: fleetVM.HostKey}

	// Unknown jump host: refused, with advice that works.
	_, err := newClient(t, sshfleet.VMUser, fleetPort).Run(context.Background(), fleetTarget, script)
	var jk *sshx.JumpHostKeyError
	if !errors.As(err, &jk) || len(jk.Known) != 0 || jk.Presented != sshx.Fingerprint(jump.hostKey) {
		t.Fatalf("Run through an unknown jump host = %v", err)
	}
	advice := fmt.Sprintf("ssh-keyscan -p %d 127.0.0.1 >> %s", jump.port, knownHosts)
	if !strings.Contains(err.Error(), advice) {
		t.Fatalf("error %q lacks the advice %q", err, advice)
	}
	scan, err := exec.Command("ssh-keyscan", "-p", strconv.Itoa(jump.port), "127.0.0.1").Output()
	if err != nil {
		t.Skipf("ssh-keyscan: %v", err)
	}
	writeFile(t, knownHosts, string(scan), 0o600)

	tests := []struct {
		name    string
		user    string
		port    int
		target  sshx.Target
		wantOut string
	}{
		{"to the fleet's VM", sshfleet.VMUser, fleetPort, fleetTarget, "from the fleet\n"},
		{"to a real sshd VM", vmSSHD.user, vmSSHD.port, sshx.Target{Name: "cp-1", PrivateIP: "127.0.0.1", HostKey: vmSSHD.hostKey}, "real\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, tc.user, tc.port)
			if err := c.WaitReachable(context.Background(), tc.target, nil); err != nil {
				t.Fatal(err)
			}
			s := "#!/usr/bin/env bash\n# kforge-recipe: demo\necho real\n"
			out, err := c.Run(context.Background(), tc.target, s)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tc.wantOut {
				t.Fatalf("stdout = %q, want %q", out, tc.wantOut)
			}
			wrong := tc.target
			wrong.HostKey = newSigner(t).PublicKey()
			var hk *sshx.HostKeyError
			if _, err := c.Run(context.Background(), wrong, s); !errors.As(err, &hk) {
				t.Fatalf("Run with the wrong pinned key = %v", err)
			}
		})
	}
	if n := len(e.fleet.CallsOf("demo")); n != 1 {
		t.Fatalf("fleet recorded %d demo runs, want 1", n)
	}
}
