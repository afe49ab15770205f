//go:build lab && linux

package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

const (
	// RuntimeRoot holds one directory per lab (its overlays, logs, jump
	// host configuration): /var/tmp/kforge-lab/<id>.
	RuntimeRoot = "/var/tmp/kforge-lab"
	// NamePrefix starts the name of every network namespace and cgroup a
	// lab makes: klab-<id> (the lab's namespace), klab-<id>-<n> (host n),
	// klab-<id>-jump (the jump host's cgroup).
	NamePrefix = "klab-"
	// bridgeName is the lab namespace's bridge: the VPC's network.
	bridgeName = "br0"
	// defaultPoll is how often the watcher asks the emulator.
	defaultPoll = 300 * time.Millisecond
)

// requiredTools are the programs a lab runs.
var requiredTools = []string{"ip", "nsenter", "systemd-nspawn", "mount", "/usr/sbin/sshd", "debootstrap", "chroot"}

// Options configure a lab.
type Options struct {
	// AWS reaches the emulator (on 127.0.0.1) whose instances become hosts.
	AWS aws.Config
	// VPCID limits the lab to one VPC's instances. "" or "all" adopts the
	// VPC of the first running instance seen (instances of one VPC are
	// supported; those of another are logged and ignored).
	VPCID string
	// Logf receives progress (t.Logf); nil discards it.
	Logf func(format string, args ...any)
	// AuthorizeKeyPairs also admits, on the jump host, the public key of
	// every EC2 key pair in the emulator (kforge's default jump key is the
	// cluster key, imported as a key pair).
	AuthorizeKeyPairs bool
	// AuthorizedKeys may log in to the jump host from the start.
	AuthorizedKeys []ssh.PublicKey
	// BaseDir is the base root; "" means EnsureBase.
	BaseDir string
	// PollInterval is how often the emulator is asked (default 300 ms).
	PollInterval time.Duration
	// LogDir, if set, receives each host's console and cloud-init logs and
	// the jump host's log, when the host is removed and at Close.
	LogDir string
}

// Lab is a running lab: its network namespace and bridge, its jump host,
// and a host per running instance of the emulator. Close removes it all.
type Lab struct {
	id    string
	opts  Options
	logf  func(string, ...any)
	ec2   *ec2.Client
	dir   string // RuntimeRoot/<id>
	base  string
	labNS string // klab-<id>

	ctx       context.Context // ends at Close
	cancel    context.CancelFunc
	watchDone chan struct{}
	ops       sync.WaitGroup // host operations in flight

	mu         sync.Mutex
	hosts      map[string]*host // by instance ID
	nextIndex  int
	vpc        *vpcNet
	ignoredVPC map[string]bool
	lastErr    string

	jump *jump

	closeOnce sync.Once
	closeErr  error
}

// vpcNet is the VPC the lab plays.
type vpcNet struct {
	id      string
	prefix  *net.IPNet
	gateway net.IP // base+1: the bridge, as AWS's router
	dns     net.IP // base+2: AWS's resolver address (nothing answers)
}

func (v *vpcNet) ones() int { n, _ := v.prefix.Mask.Size(); return n }

// Start starts a lab: it removes what labs killed earlier left behind,
// makes sure the base root exists, sets the machine-wide sysctls, creates
// the lab's network namespace and bridge, starts the jump host and the
// watcher that turns the emulator's instances into hosts. Call Close when
// done (t.Cleanup), also after a failure.
func Start(ctx context.Context, opts Options) (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("lab: needs root")
	}
	for _, tool := range requiredTools {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("lab: %s is not installed (apt-get install systemd-container debootstrap openssh-server iproute2): %w", tool, err)
		}
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = defaultPoll
	}
	if cleaned, err := CleanStale(ctx); err != nil {
		logf("lab: cleaning stale labs: %v", err)
	} else if len(cleaned) > 0 {
		logf("lab: removed the leftovers of stale labs %s", strings.Join(cleaned, ", "))
	}
	base := opts.BaseDir
	if base == "" {
		var err error
		if base, err = ensureBase(ctx, logf); err != nil {
			return nil, err
		}
	}
	if err := setMachineSysctls(logf); err != nil {
		return nil, fmt.Errorf("lab: machine sysctls: %w", err)
	}
	id, dir, err := newRuntimeDir()
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	l := &Lab{
		id: id, opts: opts, logf: logf, ec2: ec2.NewFromConfig(opts.AWS),
		dir: dir, base: base, labNS: NamePrefix + id,
		ctx: lctx, cancel: cancel, watchDone: make(chan struct{}),
		hosts: map[string]*host{}, ignoredVPC: map[string]bool{},
	}
	if err := l.start(ctx); err != nil {
		close(l.watchDone)
		return nil, errors.Join(fmt.Errorf("lab %s: %w", id, err), l.Close())
	}
	return l, nil
}

func (l *Lab) start(ctx context.Context) error {
	t0 := time.Now()
	if err := addNetns(ctx, l.labNS); err != nil {
		return err
	}
	if _, err := ipIn(ctx, l.labNS, "link", "add", bridgeName, "type", "bridge"); err != nil {
		return err
	}
	if _, err := ipIn(ctx, l.labNS, "link", "set", bridgeName, "up"); err != nil {
		return err
	}
	// The lab namespace routes between the hosts' private and public
	// addresses, as AWS's router does; it has no route out.
	if err := writeSysctlIn(netnsPath(l.labNS), "net.ipv4.ip_forward", "1"); err != nil {
		return err
	}
	// Its "unreachable" answers (no route out, nothing on the resolver's
	// port) must not be rate-limited, or a host's DNS lookup waits 5 s
	// for an answer the limit swallowed.
	if err := writeSysctlIn(netnsPath(l.labNS), "net.ipv4.icmp_ratelimit", "0"); err != nil {
		return err
	}
	if id := l.opts.VPCID; id != "" && id != "all" {
		if err := l.adoptVPC(ctx, id); err != nil {
			return err
		}
	}
	j, err := startJump(ctx, l)
	if err != nil {
		return err
	}
	l.jump = j
	for _, k := range l.opts.AuthorizedKeys {
		if err := j.authorize(k, "Options.AuthorizedKeys"); err != nil {
			return err
		}
	}
	if err := l.sync(ctx); err != nil {
		return fmt.Errorf("first look at the emulator: %w", err)
	}
	go l.watch()
	var fs unix.Statfs_t
	if err := unix.Statfs(l.dir, &fs); err == nil {
		l.logf("the machine's disk under %s: %d GiB free of %d GiB", l.dir, fs.Bavail*uint64(fs.Bsize)>>30, fs.Blocks*uint64(fs.Bsize)>>30)
	}
	l.logf("lab %s up in %s: jump host %s@%s, runtime %s", l.id, time.Since(t0).Round(time.Millisecond), l.JumpUser(), l.JumpAddr(), l.dir)
	return nil
}

// ID is the lab's random ID: its names are klab-<ID>...
func (l *Lab) ID() string { return l.id }

// Dir is the lab's runtime directory.
func (l *Lab) Dir() string { return l.dir }

// Namespace is the name of the lab's network namespace (ip netns).
func (l *Lab) Namespace() string { return l.labNS }

// Gateway is the bridge's address, the VPC's base+1 ("" until the VPC is
// known).
func (l *Lab) Gateway() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.vpc == nil {
		return ""
	}
	return l.vpc.gateway.String()
}

// Close stops every host, kills every process the lab started, unmounts
// its overlays, deletes its network namespaces, veths and cgroups and
// removes its runtime directory. It is safe to call more than once and
// after a failed Start; it reports what it could not remove.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() { l.closeErr = l.close() })
	return l.closeErr
}

func (l *Lab) close() error {
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l.cancel()
	<-l.watchDone
	l.ops.Wait()

	// Power hosts off the way a VM is stopped; what does not stop in time
	// is killed below with everything else.
	l.mu.Lock()
	hosts := make([]*host, 0, len(l.hosts))
	for _, h := range l.hosts {
		hosts = append(hosts, h)
	}
	l.mu.Unlock()
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.mu.Lock()
			defer h.mu.Unlock()
			h.powerOff(ctx, 10*time.Second)
			h.saveLogs()
		}()
	}
	wg.Wait()
	if l.jump != nil {
		l.jump.close()
		l.saveLog(filepath.Join(l.dir, "jump", "sshd.log"), "jump-sshd.log")
	}
	err := cleanLab(ctx, l.id, l.logf)
	if left := leftovers(l.id); len(left) > 0 {
		err = errors.Join(err, fmt.Errorf("lab %s: left behind: %s", l.id, strings.Join(left, "; ")))
	}
	l.logf("lab %s closed in %s", l.id, time.Since(t0).Round(time.Millisecond))
	return err
}

// saveLog copies a log file into Options.LogDir under name.
func (l *Lab) saveLog(src, name string) {
	if l.opts.LogDir == "" {
		return
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return
	}
	if err := os.MkdirAll(l.opts.LogDir, 0o755); err == nil {
		_ = os.WriteFile(filepath.Join(l.opts.LogDir, name), b, 0o644)
	}
}

// newRuntimeDir creates RuntimeRoot/<new id> and records this process as
// its owner.
func newRuntimeDir() (id, dir string, err error) {
	if err := os.MkdirAll(RuntimeRoot, 0o755); err != nil {
		return "", "", fmt.Errorf("lab: %w", err)
	}
	for range 20 {
		b := make([]byte, 3)
		if _, err := rand.Read(b); err != nil {
			return "", "", err
		}
		id = hex.EncodeToString(b)
		dir = filepath.Join(RuntimeRoot, id)
		if err := os.Mkdir(dir, 0o700); errors.Is(err, os.ErrExist) {
			continue
		} else if err != nil {
			return "", "", fmt.Errorf("lab: %w", err)
		}
		if err := writeOwner(dir); err != nil {
			return "", "", err
		}
		return id, dir, nil
	}
	return "", "", errors.New("lab: no free lab ID")
}

// Hosts lists the hosts (also stopped, failed and removed ones), in the
// order they were made.
func (l *Lab) Hosts() []Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Host, 0, len(l.hosts))
	for _, h := range l.hosts {
		out = append(out, h.snapshot())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].index < out[j].index })
	return out
}

// Host returns the host of an instance.
func (l *Lab) Host(instanceID string) (Host, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h, ok := l.hosts[instanceID]
	if !ok {
		return Host{}, false
	}
	return h.snapshot(), true
}

func (l *Lab) host(instanceID string) (*host, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h, ok := l.hosts[instanceID]
	if !ok {
		return nil, fmt.Errorf("lab: no host for instance %s", instanceID)
	}
	return h, nil
}
