// Package sshx reaches the VMs of an ha-aws cluster over SSH and runs
// kforge's scripts on them.
//
// Every VM's host key is pinned: kforge generates it, hands it to the VM in
// its cloud-init user-data and accepts no other key for that VM. VMs are
// reached at their public IP, or, with a jump host, through one shared
// connection to it and a direct-tcpip channel to each VM's private IP, as
// OpenSSH's ProxyJump does; the jump host's own key is checked against
// known_hosts. Connections are opened on first use, reused, replaced when
// they break, and closed by Client.Close.
//
// Scripts run as root through RemoteCommand with the script on stdin, so a
// script (which may carry secrets) never appears in a command line, a log
// or an error; errors name the script by its "# kforge-recipe:" line.
package sshx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Defaults for Config's zero fields.
const (
	DefaultUser          = "ubuntu"
	DefaultPort          = 22
	DefaultMaxHandshakes = 16
	// DefaultMaxSessions bounds the scripts running at once on all VMs.
	DefaultMaxSessions  = 32
	DefaultDialTimeout  = 30 * time.Second
	DefaultReachTimeout = 10 * time.Minute
	DefaultAuthGrace    = time.Minute
)

// DefaultBackoff paces WaitReachable: first retry after 1s, growing by half
// each time up to 15s, with jitter so that many VMs do not retry in step.
func DefaultBackoff() wait.Backoff {
	return wait.Backoff{Duration: time.Second, Factor: 1.5, Jitter: 0.2, Steps: 1 << 30, Cap: 15 * time.Second}
}

// sessionsPerConn bounds concurrent sessions on one VM connection, below
// OpenSSH's default MaxSessions of 10.
const sessionsPerConn = 8

// stderrLines is how many trailing stderr lines an ExitError keeps.
const stderrLines = 10

// Target is one VM to reach.
type Target struct {
	// Name identifies the VM in messages ("cp-0", an instance ID).
	Name string
	// PublicIP is dialled without a jump host.
	PublicIP string
	// PrivateIP is reached through the jump host.
	PrivateIP string
	// HostKey is the only host key accepted for the VM.
	HostKey ssh.PublicKey
}

// Config says how to reach the VMs.
type Config struct {
	// User logs in to the VMs; DefaultUser if empty.
	User string
	// Signer is the cluster key that logs in to the VMs. Required.
	Signer ssh.Signer
	// Port is the VMs' SSH port; DefaultPort if zero.
	Port int
	// Jump, if set, is the SSH server the VMs are reached through.
	Jump *Jump
	// MaxHandshakes bounds simultaneous connection set-ups (TCP connect or
	// channel open, then SSH handshake), so that a hundred VMs do not use a
	// hundred sockets at once; DefaultMaxHandshakes if zero.
	MaxHandshakes int
	// MaxSessions bounds the sessions (scripts) open at once on all VMs
	// together, whatever the number of VMs: a bootstrap of a hundred VMs
	// runs as many scripts as this at a time over the one jump host
	// connection; DefaultMaxSessions if zero.
	MaxSessions int
	// DialTimeout bounds one connection set-up; DefaultDialTimeout if zero.
	DialTimeout time.Duration
	// ReachTimeout bounds WaitReachable when ctx allows longer;
	// DefaultReachTimeout if zero.
	ReachTimeout time.Duration
	// AuthGrace is how long WaitReachable keeps retrying while a VM refuses
	// the cluster key; DefaultAuthGrace if zero. Ubuntu's cloud-init writes
	// the key before sshd starts, so a refusal normally means a wrong key;
	// the grace only covers images that start sshd early.
	AuthGrace time.Duration
	// Backoff paces WaitReachable's retries; DefaultBackoff() if its
	// Duration is zero. Once Cap is reached the delay stays there.
	Backoff wait.Backoff
}

// Client runs scripts on VMs. It is safe for concurrent use.
type Client struct {
	cfg        Config
	jump       *Jump
	dialer     net.Dialer
	handshakes chan struct{} // semaphore over connection set-ups
	sessions   chan struct{} // semaphore over open sessions, all VMs
	jumpLock   chan struct{} // held while connecting to the jump host

	mu         sync.Mutex
	closed     bool
	jumpClient *ssh.Client
	vms        map[string]*vmConn
}

// vmConn is the cached connection to one VM.
type vmConn struct {
	lock     chan struct{} // held while connecting
	sessions chan struct{} // semaphore over open sessions
	client   *ssh.Client   // guarded by Client.mu
}

// New returns a client; it connects lazily.
func New(cfg Config) (*Client, error) {
	if cfg.Signer == nil {
		return nil, errors.New("ssh client: no key to log in to the VMs")
	}
	if cfg.User == "" {
		cfg.User = DefaultUser
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = DefaultMaxHandshakes
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.ReachTimeout <= 0 {
		cfg.ReachTimeout = DefaultReachTimeout
	}
	if cfg.AuthGrace <= 0 {
		cfg.AuthGrace = DefaultAuthGrace
	}
	if cfg.Backoff.Duration <= 0 {
		cfg.Backoff = DefaultBackoff()
	}
	c := &Client{
		cfg:        cfg,
		handshakes: make(chan struct{}, cfg.MaxHandshakes),
		sessions:   make(chan struct{}, cfg.MaxSessions),
		jumpLock:   make(chan struct{}, 1),
		vms:        map[string]*vmConn{},
	}
	if cfg.Jump != nil {
		j := *cfg.Jump
		if j.Host == "" || j.User == "" {
			return nil, errors.New("ssh client: the jump host needs a user and a host (user@host:port)")
		}
		if j.Signer == nil {
			j.Signer = cfg.Signer
		}
		c.jump = &j
	}
	return c, nil
}

// Run runs script on the VM as root (RemoteCommand, the script on stdin)
// and returns its stdout. A non-zero exit is an *ExitError. Cancelling ctx
// ends the session; the script may then still be running on the VM.
func (c *Client) Run(ctx context.Context, t Target, script string) ([]byte, error) {
	return c.RunInput(ctx, t, script, nil)
}

// RunInput is Run with input following the script on stdin, for the
// recipes that read data after their last line (such as a file kforge
// uploads). The script must end by calling its function, which consumes
// the rest of stdin.
func (c *Client) RunInput(ctx context.Context, t Target, script string, input io.Reader) ([]byte, error) {
	var stdout bytes.Buffer
	if err := c.RunStream(ctx, t, script, input, &stdout); err != nil {
		var ee *ExitError
		if !errors.As(err, &ee) {
			// Cancelled or broken off: the session may still write to the
			// buffer, which stays with it.
			return nil, err
		}
		return stdout.Bytes(), err
	}
	return stdout.Bytes(), nil
}

// RunStream is RunInput with the script's stdout written to stdout as it
// comes, for output too large to hold (an etcd snapshot). When ctx ends
// first, the closing session may still write to stdout for a moment.
func (c *Client) RunStream(ctx context.Context, t Target, script string, input io.Reader, stdout io.Writer) error {
	label := recipeLabel(RecipeName(script))
	sess, done, err := c.session(ctx, t)
	if err != nil {
		return fmt.Errorf("vm %s: %s: %w", t.Name, label, err)
	}
	defer done()
	defer sess.Close()

	stderr := &tail{max: 16 << 10}
	sess.Stdin = strings.NewReader(script)
	if input != nil {
		sess.Stdin = io.MultiReader(strings.NewReader(script), input)
	}
	sess.Stdout = stdout
	sess.Stderr = stderr
	if err := sess.Start(RemoteCommand); err != nil {
		return fmt.Errorf("vm %s: %s: start %q: %w", t.Name, label, RemoteCommand, err)
	}
	waited := make(chan error, 1)
	go func() { waited <- sess.Wait() }()
	var werr error
	select {
	case werr = <-waited:
	case <-ctx.Done():
		// Closing the channel makes sshd hang up on the script. The output
		// buffers stay with the waiting goroutine.
		_ = sess.Signal(ssh.SIGTERM)
		_ = sess.Close()
		return fmt.Errorf("vm %s: %s: %w", t.Name, label, ctx.Err())
	}
	if werr == nil {
		return nil
	}
	var ee *ssh.ExitError
	if errors.As(werr, &ee) {
		return &ExitError{
			VM:     t.Name,
			Recipe: RecipeName(script),
			Code:   ee.ExitStatus(),
			Signal: ee.Signal(),
			Stderr: Redact(stderr.lastLines(stderrLines)),
		}
	}
	var em *ssh.ExitMissingError
	if errors.As(werr, &em) {
		return fmt.Errorf("vm %s: %s: the connection ended before the script reported an exit status (did the VM reboot?): %w", t.Name, label, werr)
	}
	return fmt.Errorf("vm %s: %s: %w", t.Name, label, werr)
}

// WaitReachable connects to the VM, retrying with backoff while it boots
// (connection refused or timing out, the jump host unable to reach it,
// connections closed during the handshake), until it answers or ctx or
// ReachTimeout ends. progress, if not nil, is told of every failed attempt.
// A host key mismatch, an unverifiable jump host and a jump host refusing
// the key or forwarding end the wait at once; the VM refusing the cluster
// key ends it after AuthGrace. The connection is kept for later Runs.
func (c *Client) WaitReachable(ctx context.Context, t Target, progress func(elapsed time.Duration, lastErr error)) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ReachTimeout)
	defer cancel()
	start := time.Now()
	var lastErr error
	var refusedSince time.Time
	err := c.cfg.Backoff.DelayFunc().Until(ctx, true, true, func(ctx context.Context) (bool, error) {
		err := c.probe(ctx, t)
		if err == nil {
			return true, nil
		}
		if ctx.Err() != nil {
			// The wait is over; Until reports it.
			if lastErr == nil {
				lastErr = err
			}
			return false, nil
		}
		lastErr = err
		if isPermanent(err) {
			return false, err
		}
		if isAuthFailure(err) {
			if refusedSince.IsZero() {
				refusedSince = time.Now()
			}
			if time.Since(refusedSince) >= c.cfg.AuthGrace {
				return false, fmt.Errorf("the VM answers but has refused the cluster key for %s (is it the key of EC2 key pair the VM was launched with?): %w",
					time.Since(refusedSince).Round(time.Second), err)
			}
		} else {
			refusedSince = time.Time{}
		}
		if progress != nil {
			progress(time.Since(start), err)
		}
		return false, nil
	})
	if err == nil {
		return nil
	}
	addr, _ := c.addr(t)
	var hk *HostKeyError
	switch {
	case ctx.Err() != nil && lastErr != nil:
		return fmt.Errorf("vm %s (%s) did not answer SSH within %s: %w; last error: %w",
			t.Name, addr, time.Since(start).Round(100*time.Millisecond), err, lastErr)
	case errors.As(err, &hk):
		return err // it names the VM
	}
	return fmt.Errorf("vm %s (%s): %w", t.Name, addr, err)
}

// Close closes every connection. The client cannot be used afterwards.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	var clients []*ssh.Client
	for _, v := range c.vms {
		if v.client != nil {
			clients = append(clients, v.client)
			v.client = nil
		}
	}
	c.vms = map[string]*vmConn{}
	if c.jumpClient != nil {
		clients = append(clients, c.jumpClient)
		c.jumpClient = nil
	}
	c.mu.Unlock()
	for _, cl := range clients {
		// The jump connection comes last: the VM connections run over it.
		_ = cl.Close()
	}
	return nil
}

// addr is where the VM is dialled: its private IP through the jump host,
// else its public IP.
// Addr is the address kforge dials to reach t (through the jump host if
// there is one), or "" if t has none.
func (c *Client) Addr(t Target) string {
	a, _ := c.addr(t)
	return a
}

func (c *Client) addr(t Target) (string, error) {
	port := strconv.Itoa(c.cfg.Port)
	if c.jump != nil {
		if t.PrivateIP == "" {
			return "", fmt.Errorf("vm %s has no private IP to reach through the jump host", t.Name)
		}
		return net.JoinHostPort(t.PrivateIP, port), nil
	}
	if t.PublicIP == "" {
		return "", fmt.Errorf("vm %s has no public IP: reach it through a jump host in its VPC (--ssh-jump user@host:port)", t.Name)
	}
	return net.JoinHostPort(t.PublicIP, port), nil
}

// probe checks that the VM answers, through a cached connection or a new
// one.
func (c *Client) probe(ctx context.Context, t Target) error {
	v, cl, err := c.vmClient(ctx, t)
	if err != nil {
		return err
	}
	// A cached connection may have died unnoticed: make it answer.
	answered := make(chan error, 1)
	go func() {
		_, _, err := cl.SendRequest("keepalive@openssh.com", true, nil)
		answered <- err
	}()
	select {
	case err = <-answered:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		c.dropVM(v, cl)
		return fmt.Errorf("connection to vm %s broke: %w", t.Name, err)
	}
	return nil
}

// session opens a session on the VM, replacing a cached connection that
// turns out dead, within one of MaxSessions slots. done releases the
// session's slots.
func (c *Client) session(ctx context.Context, t Target) (*ssh.Session, func(), error) {
	if err := acquire(ctx, c.sessions); err != nil {
		return nil, nil, err
	}
	sess, done, err := c.vmSession(ctx, t)
	if err != nil {
		release(c.sessions)
		return nil, nil, err
	}
	return sess, func() { done(); release(c.sessions) }, nil
}

// vmSession opens a session on the VM within its connection's slots.
func (c *Client) vmSession(ctx context.Context, t Target) (*ssh.Session, func(), error) {
	for attempt := 0; ; attempt++ {
		v, cl, err := c.vmClient(ctx, t)
		if err != nil {
			return nil, nil, err
		}
		select {
		case v.sessions <- struct{}{}:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
		done := func() { <-v.sessions }
		sess, err := cl.NewSession()
		if err == nil {
			return sess, done, nil
		}
		done()
		var oc *ssh.OpenChannelError
		if errors.As(err, &oc) || attempt > 0 {
			// The VM answered and refused: the connection is fine.
			return nil, nil, fmt.Errorf("open ssh session: %w", err)
		}
		c.dropVM(v, cl)
	}
}

// vmClient returns the VM's connection, connecting if there is none.
func (c *Client) vmClient(ctx context.Context, t Target) (*vmConn, *ssh.Client, error) {
	if t.HostKey == nil {
		return nil, nil, fmt.Errorf("vm %s has no pinned host key; kforge connects only to VMs whose host key it generated", t.Name)
	}
	addr, err := c.addr(t)
	if err != nil {
		return nil, nil, err
	}
	key := t.Name + "\x00" + addr + "\x00" + string(t.HostKey.Marshal())
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, nil, ErrClosed
	}
	v := c.vms[key]
	if v == nil {
		v = &vmConn{lock: make(chan struct{}, 1), sessions: make(chan struct{}, sessionsPerConn)}
		c.vms[key] = v
	}
	c.mu.Unlock()

	if err := acquire(ctx, v.lock); err != nil {
		return nil, nil, err
	}
	defer release(v.lock)
	c.mu.Lock()
	cl := v.client
	c.mu.Unlock()
	if cl != nil {
		return v, cl, nil
	}
	cl, err = c.connectVM(ctx, t, addr)
	if err != nil {
		return nil, nil, err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		_ = cl.Close()
		return nil, nil, ErrClosed
	}
	v.client = cl
	c.mu.Unlock()
	go func() {
		_ = cl.Wait()
		c.dropVM(v, cl)
	}()
	return v, cl, nil
}

// dropVM forgets and closes a VM connection if it is still the cached one.
func (c *Client) dropVM(v *vmConn, cl *ssh.Client) {
	c.mu.Lock()
	if v.client == cl {
		v.client = nil
	}
	c.mu.Unlock()
	_ = cl.Close()
}

// connectVM opens a new connection to the VM, directly or through the jump
// host.
func (c *Client) connectVM(ctx context.Context, t Target, addr string) (*ssh.Client, error) {
	want := t.HostKey
	conf := &ssh.ClientConfig{
		User: c.cfg.User,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(c.cfg.Signer)},
		HostKeyCallback: func(_ string, _ net.Addr, got ssh.PublicKey) error {
			if SameKey(got, want) {
				return nil
			}
			return &HostKeyError{VM: t.Name, Addr: addr, Expected: Fingerprint(want), Presented: Fingerprint(got)}
		},
		HostKeyAlgorithms: algorithmsFor(want),
	}
	if c.jump == nil {
		return c.handshake(ctx, addr, conf, func(ctx context.Context) (net.Conn, error) {
			return c.dialer.DialContext(ctx, "tcp", addr)
		})
	}
	for attempt := 0; ; attempt++ {
		j, err := c.jumpConn(ctx)
		if err != nil {
			return nil, err
		}
		var openErr error
		cl, err := c.handshake(ctx, addr, conf, func(ctx context.Context) (net.Conn, error) {
			conn, err := j.DialContext(ctx, "tcp", addr)
			openErr = err
			return conn, err
		})
		if err == nil {
			return cl, nil
		}
		var oc *ssh.OpenChannelError
		if errors.As(openErr, &oc) {
			return nil, fmt.Errorf("jump host %s cannot reach %s: %w", c.jump.Addr(), addr, err)
		}
		if openErr == nil || attempt > 0 || ctx.Err() != nil {
			return nil, err
		}
		// The jump host did not answer the channel open: its connection
		// is broken. Replace it once.
		c.dropJump(j)
	}
}

// jumpConn returns the shared jump host connection, connecting if there is
// none.
func (c *Client) jumpConn(ctx context.Context) (*ssh.Client, error) {
	if err := acquire(ctx, c.jumpLock); err != nil {
		return nil, err
	}
	defer release(c.jumpLock)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if j := c.jumpClient; j != nil {
		c.mu.Unlock()
		return j, nil
	}
	c.mu.Unlock()

	addr := c.jump.Addr()
	check, algos, err := c.jump.hostKeyCheck()
	if err != nil {
		return nil, &jumpError{jump: *c.jump, err: err}
	}
	conf := &ssh.ClientConfig{
		User:              c.jump.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(c.jump.Signer)},
		HostKeyCallback:   check,
		HostKeyAlgorithms: algos,
	}
	j, err := c.handshake(ctx, addr, conf, func(ctx context.Context) (net.Conn, error) {
		return c.dialer.DialContext(ctx, "tcp", addr)
	})
	var jk *JumpHostKeyError
	if errors.As(err, &jk) {
		return nil, jk
	}
	if err != nil {
		return nil, &jumpError{jump: *c.jump, err: err}
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		_ = j.Close()
		return nil, ErrClosed
	}
	c.jumpClient = j
	c.mu.Unlock()
	go func() {
		_ = j.Wait()
		c.dropJump(j)
	}()
	return j, nil
}

// dropJump forgets and closes a jump connection if it is still the shared
// one.
func (c *Client) dropJump(j *ssh.Client) {
	c.mu.Lock()
	if c.jumpClient == j {
		c.jumpClient = nil
	}
	c.mu.Unlock()
	_ = j.Close()
}

// handshake opens a transport with open and runs the SSH client handshake
// over it, within DialTimeout and one of MaxHandshakes slots.
func (c *Client) handshake(ctx context.Context, addr string, conf *ssh.ClientConfig, open func(context.Context) (net.Conn, error)) (*ssh.Client, error) {
	if err := acquire(ctx, c.handshakes); err != nil {
		return nil, err
	}
	defer release(c.handshakes)
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	conn, err := open(ctx)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	sc, chans, reqs, err := ssh.NewClientConn(conn, addr, conf)
	if !stop() {
		// ctx ended during the handshake and closed conn.
		if err == nil {
			_ = sc.Close()
		}
		return nil, fmt.Errorf("ssh handshake with %s: %w", addr, ctx.Err())
	}
	if err != nil {
		_ = conn.Close()
		// Host key errors say everything; drop "ssh: handshake failed".
		var hk *HostKeyError
		var jk *JumpHostKeyError
		switch {
		case errors.As(err, &hk):
			return nil, hk
		case errors.As(err, &jk):
			return nil, jk
		}
		return nil, err
	}
	return ssh.NewClient(sc, chans, reqs), nil
}

// acquire takes a slot of the semaphore sem unless ctx ends first.
func acquire(ctx context.Context, sem chan struct{}) error {
	select {
	case sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// release frees a slot taken by acquire.
func release(sem chan struct{}) { <-sem }

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

// lastLines returns the last n non-empty lines, each cut to a sane width.
func (t *tail) lastLines(n int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := strings.Split(strings.TrimRight(string(t.buf), "\n"), "\n")
	var kept []string
	for i := len(lines) - 1; i >= 0 && len(kept) < n; i-- {
		l := strings.TrimRight(lines[i], "\r ")
		if l == "" {
			continue
		}
		if len(l) > 500 {
			l = l[:500] + "..."
		}
		kept = append(kept, l)
	}
	for i, j := 0, len(kept)-1; i < j; i, j = i+1, j-1 {
		kept[i], kept[j] = kept[j], kept[i]
	}
	return strings.Join(kept, "\n")
}
