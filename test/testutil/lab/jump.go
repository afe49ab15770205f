//go:build lab && linux

package lab

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// JumpUser is the user the jump host admits.
const JumpUser = "root"

// jumpPort is where the jump host's sshd listens inside the lab
// namespace (on every address there: the bridge's and loopback).
const jumpPort = 22

// jumpConfig is the jump host's sshd_config: public keys only, port
// forwarding only (no shell: tests use Lab.ExecInLab for that).
const jumpConfig = `# kforge lab jump host (test/testutil/lab), in network namespace %[1]s
ListenAddress 0.0.0.0:%[2]d
HostKey %[3]s/ssh_host_ed25519_key
PidFile %[3]s/sshd.pid
AuthorizedKeysFile %[3]s/authorized_keys
AllowUsers %[4]s
PermitRootLogin prohibit-password
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
PermitOpen any
AllowAgentForwarding no
AllowStreamLocalForwarding no
X11Forwarding no
PermitTunnel no
GatewayPorts no
PermitTTY no
ForceCommand /bin/echo "kforge lab jump host: port forwarding only"
# kforge opens a connection per VM at once; the forwarder makes every
# client 127.0.0.1.
MaxStartups 500
MaxSessions 500
LoginGraceTime 30
ClientAliveInterval 15
LogLevel VERBOSE
`

// jump is the lab's jump host: a real OpenSSH sshd in the lab namespace,
// and a forwarder from 127.0.0.1:<port> on the machine to it.
type jump struct {
	l       *Lab
	dir     string
	hostKey ssh.PublicKey
	cmd     *exec.Cmd
	exited  chan struct{}
	ln      net.Listener
	accepts sync.WaitGroup

	mu    sync.Mutex
	keys  []string // authorized_keys lines
	conns map[net.Conn]struct{}
}

// startJump generates the jump host's key and configuration, starts sshd
// in the lab namespace (in its own cgroup) and the forwarder.
func startJump(ctx context.Context, l *Lab) (*jump, error) {
	j := &jump{l: l, dir: filepath.Join(l.dir, "jump"), exited: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	if err := os.MkdirAll(j.dir, 0o700); err != nil {
		return nil, fmt.Errorf("jump host: %w", err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "kforge-lab-jump-"+l.id)
	if err != nil {
		return nil, err
	}
	if j.hostKey, err = ssh.NewPublicKey(pub); err != nil {
		return nil, err
	}
	cfg := filepath.Join(j.dir, "sshd_config")
	for _, f := range []struct {
		name string
		data []byte
	}{
		{"ssh_host_ed25519_key", pem.EncodeToMemory(block)},
		{"ssh_host_ed25519_key.pub", ssh.MarshalAuthorizedKey(j.hostKey)},
		{"authorized_keys", nil},
		{"sshd_config", fmt.Appendf(nil, jumpConfig, l.labNS, jumpPort, j.dir, JumpUser)},
	} {
		if err := os.WriteFile(filepath.Join(j.dir, f.name), f.data, 0o600); err != nil {
			return nil, fmt.Errorf("jump host: %w", err)
		}
	}
	// sshd's privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, fmt.Errorf("jump host: %w", err)
	}
	if _, err := run(ctx, "/usr/sbin/sshd", "-t", "-f", cfg); err != nil {
		return nil, fmt.Errorf("jump host configuration: %w", err)
	}

	name := NamePrefix + l.id + "-jump"
	cgroups, err := makeCgroup(name)
	if err != nil {
		return nil, err
	}
	script := joinCgroupScript(cgroups) +
		fmt.Sprintf("exec nsenter --net=%s -- /usr/sbin/sshd -D -e -f %s\n", netnsPath(l.labNS), cfg)
	logFile, err := os.OpenFile(filepath.Join(j.dir, "sshd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("jump host: %w", err)
	}
	j.cmd = exec.Command("/bin/sh", "-c", script)
	j.cmd.Stdout, j.cmd.Stderr = logFile, logFile
	j.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := j.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start the jump host's sshd: %w", err)
	}
	go func() {
		_ = j.cmd.Wait()
		logFile.Close()
		close(j.exited)
	}()
	if err := j.waitListening(ctx); err != nil {
		return nil, err
	}

	if j.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("jump host forwarder: %w", err)
	}
	j.accepts.Add(1)
	go j.serve()
	return j, nil
}

// waitListening waits until sshd answers with its banner in the lab
// namespace.
func (j *jump) waitListening(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return poll(ctx, 20*time.Millisecond, "the jump host's sshd", func() (bool, error) {
		select {
		case <-j.exited:
			return true, fmt.Errorf("the jump host's sshd exited: %s", tail(readFile(filepath.Join(j.dir, "sshd.log")), 1000))
		default:
		}
		return sshBanner(ctx, netnsPath(j.l.labNS), fmt.Sprintf("127.0.0.1:%d", jumpPort))
	})
}

// sshBanner reports whether an SSH server answers at addr, dialled from
// the network namespace at ns.
func sshBanner(ctx context.Context, ns, addr string) (bool, error) {
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := dialIn(dctx, ns, addr)
	if err != nil {
		return false, err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return false, fmt.Errorf("%s: %w", addr, err)
	}
	return strings.HasPrefix(line, "SSH-"), nil
}

// serve accepts connections on 127.0.0.1 and forwards each to sshd in
// the lab namespace.
func (j *jump) serve() {
	defer j.accepts.Done()
	for {
		c, err := j.ln.Accept()
		if err != nil {
			return
		}
		j.accepts.Add(1)
		go func() {
			defer j.accepts.Done()
			j.forward(c)
		}()
	}
}

// forward copies between a client and a new connection to sshd, made
// from inside the lab namespace.
func (j *jump) forward(client net.Conn) {
	defer client.Close()
	ctx, cancel := context.WithTimeout(j.l.ctx, 10*time.Second)
	server, err := dialIn(ctx, netnsPath(j.l.labNS), fmt.Sprintf("127.0.0.1:%d", jumpPort))
	cancel()
	if err != nil {
		j.l.logf("jump host forwarder: %v", err)
		return
	}
	defer server.Close()
	if !j.track(client, server) {
		return
	}
	defer j.untrack(client, server)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(server, client)
	go pipe(client, server)
	<-done
	<-done
}

// track records open connections so that close can end them; false
// once the jump host is closing.
func (j *jump) track(cs ...net.Conn) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.conns == nil {
		return false
	}
	for _, c := range cs {
		j.conns[c] = struct{}{}
	}
	return true
}

func (j *jump) untrack(cs ...net.Conn) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, c := range cs {
		delete(j.conns, c)
	}
}

// authorize adds a public key to the jump host's authorized_keys (sshd
// reads the file at each login).
func (j *jump) authorize(k ssh.PublicKey, comment string) error {
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, have := range j.keys {
		if have == line {
			return nil
		}
	}
	j.keys = append(j.keys, line)
	var b bytes.Buffer
	for _, l := range j.keys {
		b.WriteString(l + "\n")
	}
	p := filepath.Join(j.dir, "authorized_keys")
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("jump host authorized_keys: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("jump host authorized_keys: %w", err)
	}
	j.l.logf("jump host: authorized %s (%s)", ssh.FingerprintSHA256(k), comment)
	return nil
}

// close stops the forwarder, its connections and sshd.
func (j *jump) close() {
	if j.ln != nil {
		j.ln.Close()
	}
	j.mu.Lock()
	for c := range j.conns {
		c.Close()
	}
	j.conns = nil
	j.mu.Unlock()
	j.accepts.Wait()
	if j.cmd != nil && j.cmd.Process != nil {
		_ = j.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-j.exited:
		case <-time.After(5 * time.Second):
			_ = j.cmd.Process.Kill()
			<-j.exited
		}
	}
}

// JumpAddr is the jump host's address for kforge's --ssh-jump:
// 127.0.0.1:<port>.
func (l *Lab) JumpAddr() string { return l.jump.ln.Addr().String() }

// JumpUser is the user to log in to the jump host as: root.
func (l *Lab) JumpUser() string { return JumpUser }

// JumpSpec is the --ssh-jump value: root@127.0.0.1:<port>.
func (l *Lab) JumpSpec() string { return l.JumpUser() + "@" + l.JumpAddr() }

// JumpHostKey is the jump host's SSH host key.
func (l *Lab) JumpHostKey() ssh.PublicKey { return l.jump.hostKey }

// AuthorizeKey admits a public key on the jump host.
func (l *Lab) AuthorizeKey(k ssh.PublicKey) error { return l.jump.authorize(k, "AuthorizeKey") }

// KnownHostsLine is the jump host's known_hosts line:
// "[127.0.0.1]:<port> ssh-ed25519 ...".
func (l *Lab) KnownHostsLine() string {
	return knownhosts.Line([]string{knownhosts.Normalize(l.JumpAddr())}, l.jump.hostKey)
}

// WriteKnownHosts writes the jump host's line into a known_hosts file
// (~/.ssh/known_hosts of the HOME kforge runs with), replacing lines for
// the same address and keeping the others; the file and its directory
// are created if missing.
func (l *Lab) WriteKnownHosts(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("known_hosts: %w", err)
	}
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("known_hosts: %w", err)
	}
	addr := knownhosts.Normalize(l.JumpAddr())
	var b strings.Builder
	for _, line := range strings.Split(string(old), "\n") {
		if line == "" {
			continue
		}
		if f := strings.Fields(line); len(f) > 0 && f[0] == addr {
			continue
		}
		b.WriteString(line + "\n")
	}
	b.WriteString(l.KnownHostsLine() + "\n")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("known_hosts: %w", err)
	}
	return nil
}
