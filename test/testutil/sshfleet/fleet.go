// Package sshfleet is an in-process SSH jump host that stands in for the VMs
// of ha-aws clusters in tests.
//
// The fleet listens on 127.0.0.1 and is passed to kforge as --ssh-jump. When
// a client asks it to forward to "<ip>:22" (a direct-tcpip channel, what
// OpenSSH's ProxyJump and sshx do) it dials nothing: it finds the running
// EC2 instance with that private (or public) IP through the emulator's AWS
// API, takes the SSH host key kforge put in the instance's cloud-init
// user-data, and serves an SSH server over the channel itself, presenting
// that host key and admitting the "ubuntu" user only with the public key of
// the instance's EC2 key pair. Commands "run" by recording them and
// answering through pluggable Responders, so tests can assert what kforge
// ran on which VM and script what the VMs answer.
//
// Look-ups are batched: the addresses asked for while one batch talks to
// the emulator go together into the next, one DescribeInstances for all of
// them, and what cannot change while an instance lives (the host key in its
// user-data, the public key of its key pair) is read once per instance. So
// a hundred VMs reached at once cost the emulator about a hundred calls
// (the user-data, one instance per call) instead of three hundred, and no
// connection is ever answered from a view older than itself: a terminated
// instance is refused at once.
//
// Faults (a wrong host key, refused or slow connections, refused logins)
// exercise host key pinning and waiting for VMs to boot.
package sshfleet

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// VMUser is the only user a VM admits, as on Ubuntu's cloud images.
const VMUser = "ubuntu"

// Options configure a fleet.
type Options struct {
	// AWS points at the emulator whose instances the fleet serves. Nil
	// means only VMs added with AddVM exist. Its endpoint must be on
	// 127.0.0.0/8.
	AWS *aws.Config
	// VPCID, if set, limits the instances served to one VPC, as a real
	// jump host inside that VPC would be.
	VPCID string
	// JumpUser, if set, is the only user the jump host admits.
	JumpUser string
	// AuthorizedKeys may log in to the jump host.
	AuthorizedKeys []ssh.PublicKey
	// AuthorizeKeyPairs also admits, on the jump host, the public key of
	// any EC2 key pair in the emulator: kforge's default jump key is the
	// cluster key, which only kforge knows.
	AuthorizeKeyPairs bool
	// Responder answers commands no per-recipe responder (Handle) takes;
	// nil means exit 0 with no output.
	Responder Responder
}

// VM is an emulated VM as the fleet sees it.
type VM struct {
	InstanceID string
	Name       string // the Name tag
	Role       string // the kforge.io/role tag
	PrivateIP  string
	PublicIP   string
	VPCID      string
	KeyName    string
	Tags       map[string]string
	// LaunchIndex is the instance's EC2 launch index: the part of a
	// batch's user-data that is its own.
	LaunchIndex int
	// UserData is the decoded user-data the instance was launched with.
	UserData []byte
	// HostKey is the host key the VM presents (unless faulted): the one in
	// its user-data.
	HostKey ssh.PublicKey
}

// StaticVM is a VM served without AWS, for tests of SSH code alone.
type StaticVM struct {
	VM
	// HostKeySigner is the VM's private host key; VM.HostKey is set from it.
	HostKeySigner ssh.Signer
	// LoginKey is the key the "ubuntu" user is admitted with.
	LoginKey ssh.PublicKey
}

// Responder produces a VM's answer to a command: stdout, stderr and the
// exit status. stdin is everything the client sent (the script, for
// kforge's "sudo -n bash -s").
type Responder func(vm VM, command string, stdin []byte) (stdout, stderr []byte, exit int)

// Reply is a Responder that prints stdout and exits 0.
func Reply(stdout string) Responder {
	return func(VM, string, []byte) ([]byte, []byte, int) { return []byte(stdout), nil, 0 }
}

// Fail is a Responder that prints stderr and exits with code.
func Fail(code int, stderr string) Responder {
	return func(VM, string, []byte) ([]byte, []byte, int) { return nil, []byte(stderr), code }
}

// Call is one command a VM received.
type Call struct {
	VM      VM
	Command string
	Stdin   []byte
	// Recipe is the name on the script's "# kforge-recipe:" line, or "".
	Recipe string
	Stdout []byte
	Exit   int
	Time   time.Time
}

// Fault makes a VM misbehave.
type Fault struct {
	// RefuseFirst refuses the first N connections to the VM, as a booting
	// VM does.
	RefuseFirst int
	// Delay holds every connection to the VM this long before answering.
	Delay time.Duration
	// WrongHostKey makes the VM present a host key other than the one in
	// its user-data.
	WrongHostKey bool
	// RejectLoginFirst refuses the login key on the first N connections.
	RejectLoginFirst int
}

// Fleet is a running jump host. Its methods are safe for concurrent use.
type Fleet struct {
	t        testing.TB
	opts     Options
	ec2      *ec2.Client
	ln       net.Listener
	hostKey  ssh.Signer
	wrongKey ssh.Signer
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	mu         sync.Mutex
	closed     bool
	conns      map[net.Conn]struct{}
	static     []StaticVM
	cache      map[string]*identity    // by instance ID
	pending    map[string][]chan found // look-ups for the next batch, by address
	batching   bool                    // a batch loop runs
	handlers   map[string]Responder
	responder  Responder
	faults     map[string]Fault // by instance ID; "" for every VM
	calls      []Call
	attempts   map[string]int
	logins     map[string]int
	authTries  map[string]int
	jumpLogins int
	// running counts the commands running now; maxRunning the most at once.
	running, maxRunning int
	logged              map[string]bool
}

// identity is what the fleet needs to serve one VM.
type identity struct {
	vm      VM
	hostKey ssh.Signer
	login   ssh.PublicKey
}

// Start runs a fleet on a free 127.0.0.1 port until the test ends.
func Start(t testing.TB, opts Options) *Fleet {
	t.Helper()
	f := &Fleet{
		t:         t,
		opts:      opts,
		conns:     map[net.Conn]struct{}{},
		cache:     map[string]*identity{},
		pending:   map[string][]chan found{},
		handlers:  map[string]Responder{},
		responder: opts.Responder,
		faults:    map[string]Fault{},
		attempts:  map[string]int{},
		logins:    map[string]int{},
		authTries: map[string]int{},
		logged:    map[string]bool{},
	}
	if opts.AWS != nil {
		if err := checkLoopback(opts.AWS); err != nil {
			t.Fatalf("sshfleet: %v", err)
		}
		f.ec2 = ec2.NewFromConfig(*opts.AWS)
	}
	var err error
	if f.hostKey, err = newSigner(); err != nil {
		t.Fatalf("sshfleet: %v", err)
	}
	if f.wrongKey, err = newSigner(); err != nil {
		t.Fatalf("sshfleet: %v", err)
	}
	if f.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatalf("sshfleet: listen: %v", err)
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.wg.Add(1)
	go f.acceptLoop(f.ln, f.serveJump)
	t.Cleanup(f.Close)
	return f
}

// checkLoopback refuses an AWS configuration that could reach real AWS.
func checkLoopback(cfg *aws.Config) error {
	if cfg.BaseEndpoint == nil {
		return errors.New("the AWS configuration has no endpoint: the fleet talks to the emulator on 127.0.0.1 only")
	}
	u, err := url.Parse(*cfg.BaseEndpoint)
	if err != nil {
		return fmt.Errorf("AWS endpoint %q: %w", *cfg.BaseEndpoint, err)
	}
	ip := net.ParseIP(u.Hostname())
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("AWS endpoint %q is not on 127.0.0.0/8: the fleet talks to the emulator only", *cfg.BaseEndpoint)
	}
	return nil
}

func newSigner() (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(priv)
}

// Addr is the jump host's "127.0.0.1:port".
func (f *Fleet) Addr() string { return f.ln.Addr().String() }

// Port is the jump host's port.
func (f *Fleet) Port() int { return f.ln.Addr().(*net.TCPAddr).Port }

// Jump is the --ssh-jump value for user: "user@127.0.0.1:port".
func (f *Fleet) Jump(user string) string { return user + "@" + f.Addr() }

// HostKey is the jump host's own host key.
func (f *Fleet) HostKey() ssh.PublicKey { return f.hostKey.PublicKey() }

// KnownHostsLine is the known_hosts line for the jump host
// ("[127.0.0.1]:port ssh-ed25519 AAAA...").
func (f *Fleet) KnownHostsLine() string {
	return knownhosts.Line([]string{f.Addr()}, f.hostKey.PublicKey())
}

// WriteKnownHosts appends KnownHostsLine to the known_hosts file at path,
// creating it (0600, its directory 0700) if needed.
func (f *Fleet) WriteKnownHosts(t testing.TB, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatalf("sshfleet: %v", err)
	}
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("sshfleet: %v", err)
	}
	_, err = fh.WriteString(f.KnownHostsLine() + "\n")
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("sshfleet: write %s: %v", path, err)
	}
}

// AddVM serves v at its private and public IPs without asking AWS.
func (f *Fleet) AddVM(v StaticVM) {
	v.VM.HostKey = v.HostKeySigner.PublicKey()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.static = append(f.static, v)
}

// Handle installs r for the scripts named recipe (their
// "# kforge-recipe:" line); nil removes it.
func (f *Fleet) Handle(recipe string, r Responder) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r == nil {
		delete(f.handlers, recipe)
		return
	}
	f.handlers[recipe] = r
}

// SetFault makes the VM with instanceID misbehave ("" for every VM without
// its own fault); a zero Fault heals it. Counters (RefuseFirst,
// RejectLoginFirst) count from the VM's first connection.
func (f *Fleet) SetFault(instanceID string, fault Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults[instanceID] = fault
}

// Calls returns every command run so far, in order.
func (f *Fleet) Calls() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Call(nil), f.calls...)
}

// CallsFor returns the commands run on one instance.
func (f *Fleet) CallsFor(instanceID string) []Call {
	return f.filter(func(c Call) bool { return c.VM.InstanceID == instanceID })
}

// CallsOf returns the runs of the scripts named recipe.
func (f *Fleet) CallsOf(recipe string) []Call {
	return f.filter(func(c Call) bool { return c.Recipe == recipe })
}

func (f *Fleet) filter(keep func(Call) bool) []Call {
	var out []Call
	for _, c := range f.Calls() {
		if keep(c) {
			out = append(out, c)
		}
	}
	return out
}

// Attempts is how many connections to the instance were asked for,
// refused ones included.
func (f *Fleet) Attempts(instanceID string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts[instanceID]
}

// Logins is how many SSH connections to the instance logged in.
func (f *Fleet) Logins(instanceID string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.logins[instanceID]
}

// MaxRunning is the most commands that ran at once, on all VMs.
func (f *Fleet) MaxRunning() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxRunning
}

// JumpLogins is how many connections logged in to the jump host.
func (f *Fleet) JumpLogins() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.jumpLogins
}

// DropConnections closes every open client connection (and with them the
// VM connections running over them), as a restarting jump host would.
func (f *Fleet) DropConnections() {
	f.mu.Lock()
	conns := make([]net.Conn, 0, len(f.conns))
	for c := range f.conns {
		conns = append(conns, c)
	}
	f.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// ServeDirect serves the VM at address (a private or public IP) on a new
// 127.0.0.1 listener until the test ends and returns that listener's
// "127.0.0.1:port", for clients that connect without a jump host. Every
// connection looks the VM up again, so faults and termination apply.
func (f *Fleet) ServeDirect(t testing.TB, address string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("sshfleet: listen: %v", err)
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		_ = ln.Close()
		t.Fatalf("sshfleet: fleet is closed")
	}
	f.wg.Add(1)
	f.mu.Unlock()
	go func() {
		<-f.ctx.Done()
		_ = ln.Close()
	}()
	go f.acceptLoop(ln, func(c net.Conn) {
		id, reason := f.open(address, 22)
		if id == nil {
			f.logf("direct connection to %s refused: %s", address, reason)
			return
		}
		f.serveVM(c, id)
	})
	return ln.Addr().String()
}

// Close stops the fleet and waits for its connections to end. It runs
// when the test ends.
func (f *Fleet) Close() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	f.mu.Unlock()
	f.cancel()
	_ = f.ln.Close()
	f.DropConnections()
	f.wg.Wait()
}

// logf logs to the test while the fleet runs, each message once (clients
// retry).
func (f *Fleet) logf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	f.mu.Lock()
	skip := f.closed || f.logged[msg]
	f.logged[msg] = true
	f.mu.Unlock()
	if !skip {
		f.t.Logf("sshfleet: %s", msg)
	}
}

// acceptLoop serves every connection of ln with serve; it owns one count
// of wg.
func (f *Fleet) acceptLoop(ln net.Listener, serve func(net.Conn)) {
	defer f.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			_ = c.Close()
			return
		}
		f.conns[c] = struct{}{}
		f.wg.Add(1)
		f.mu.Unlock()
		go func() {
			defer f.wg.Done()
			defer func() {
				_ = c.Close()
				f.mu.Lock()
				delete(f.conns, c)
				f.mu.Unlock()
			}()
			serve(c)
		}()
	}
}

// goTracked runs fn in a goroutine Close waits for.
func (f *Fleet) goTracked(fn func()) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		fn()
	}()
}

// fault returns the fault of an instance.
func (f *Fleet) fault(instanceID string) Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fl, ok := f.faults[instanceID]; ok {
		return fl
	}
	return f.faults[""]
}
