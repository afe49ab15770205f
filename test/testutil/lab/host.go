//go:build lab && linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// HostState is where a host is in its life.
type HostState string

// Host states.
const (
	// HostCreating: its overlay, seed, network and cgroup are being made.
	HostCreating HostState = "creating"
	// HostRunning: its nspawn loop runs (systemd may still be booting).
	HostRunning HostState = "running"
	// HostStopped: powered off, its disk kept (Lab.Stop, or its instance
	// was stopped).
	HostStopped HostState = "stopped"
	// HostFailed: creating or booting it failed (Host.Err says why).
	HostFailed HostState = "failed"
	// HostRemoved: its instance was terminated; the host is gone.
	HostRemoved HostState = "removed"
)

// Host is what the lab knows of a host, at one moment.
type Host struct {
	// Name is the host's name in the lab: its network namespace
	// (/run/netns/<Name>), its cgroup (lab/<Name>) and nspawn machine name.
	Name       string
	InstanceID string
	EC2Name    string // the instance's Name tag
	Role       string // its kforge.io/role tag
	PrivateIP  string
	PublicIP   string
	KeyName    string
	Tags       map[string]string
	State      HostState
	Err        error  // why it failed
	Root       string // its root filesystem (an overlay), while it exists
	// UserData is the instance's decoded user-data, as the host got it.
	UserData []byte

	index int
}

// host is a lab host and its resources.
type host struct {
	l     *Lab
	index int
	name  string
	dir   string // <lab>/hosts/<name>

	// mu serialises what changes the host: create, boot, powerOff,
	// remove.
	mu       sync.Mutex
	cgroups  []string
	launcher *exec.Cmd
	exited   chan struct{} // closed when the launcher ends

	// Guarded by l.mu.
	info        Host
	launcherPID int
	busy        bool // an operation started by the watcher is in flight
	held        bool // stopped by Lab.Stop: the watcher leaves it off
	stopping    bool // powerOff is stopping it
}

// A host's own writes (its overlay's upper layer and containerd's
// directory) go to its disk: a sparse ext4 image of DiskGiB on a loop
// device, mounted at disk(). The kubelet then measures a VM's disk, not
// the machine's: on a machine whose disk is over 85% full, a kubelet on
// the machine's disk garbage-collects every image not in use (the lab's
// images are offline: an API server stopped for a restore could not come
// back) and evicts pods for disk pressure.
func (h *host) disk() string       { return filepath.Join(h.dir, "disk") }
func (h *host) diskImage() string  { return filepath.Join(h.dir, "disk.img") }
func (h *host) upper() string      { return filepath.Join(h.disk(), "upper") }
func (h *host) work() string       { return filepath.Join(h.disk(), "work") }
func (h *host) containerd() string { return filepath.Join(h.disk(), "containerd") }
func (h *host) root() string       { return filepath.Join(h.dir, "root") }
func (h *host) consoleLog() string { return filepath.Join(h.dir, "console.log") }

// DiskGiB is the size of a host's disk, as kforge's control planes' root
// volumes. Its image is sparse: the machine's disk holds what the host
// writes (about 1.5 GiB for a control plane), not the size.
const DiskGiB = 40

// makeDisk makes and mounts the host's disk. Without a loop device (a
// machine that has none to give), the host writes to the machine's disk
// as before, and says so.
func (h *host) makeDisk(ctx context.Context) error {
	if err := os.MkdirAll(h.disk(), 0o755); err != nil {
		return fmt.Errorf("host disk: %w", err)
	}
	f, err := os.OpenFile(h.diskImage(), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("host disk: %w", err)
	}
	err = f.Truncate(DiskGiB << 30)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("host disk: %w", err)
	}
	if _, err := run(ctx, "mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1", "-L", h.name, h.diskImage()); err != nil {
		return fmt.Errorf("host disk: %w", err)
	}
	// mount's loop option frees the loop device at unmount (autoclear).
	if _, err := run(ctx, "mount", "-o", "loop", h.diskImage(), h.disk()); err != nil {
		h.logf("no disk of its own, writing to the machine's (the kubelet measures the machine's free space): %v", err)
		return os.Remove(h.diskImage())
	}
	return nil
}

// snapshot copies the host's public view; l.mu must be held.
func (h *host) snapshot() Host {
	s := h.info
	s.Tags = maps.Clone(h.info.Tags)
	s.index = h.index
	return s
}

func (h *host) setState(s HostState, err error) {
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	h.info.State, h.info.Err = s, err
}

func (h *host) logf(format string, args ...any) {
	h.l.logf("host %s (%s): %s", h.name, h.info.InstanceID, fmt.Sprintf(format, args...))
}

// create makes the host of a running instance and boots it.
func (h *host) create(ctx context.Context, in instance) error {
	t0 := time.Now()
	err := h.build(ctx, in)
	if err == nil {
		err = h.boot()
	}
	if err != nil {
		h.setState(HostFailed, err)
		h.logf("failed: %v", err)
		return err
	}
	h.logf("launched in %s: %s, private %s, public %s", time.Since(t0).Round(time.Millisecond), in.role, in.privateIP, in.publicIP)
	return nil
}

// build makes the host's disk, seed, network and cgroup.
func (h *host) build(ctx context.Context, in instance) error {
	userData, err := h.l.userData(ctx, in.id)
	if err != nil {
		return err
	}
	keys, err := h.l.keyPairKeys(ctx, in.keyName)
	if err != nil {
		return err
	}
	h.l.mu.Lock()
	h.info.UserData = userData
	h.l.mu.Unlock()
	if err := h.makeDisk(ctx); err != nil {
		return err
	}
	for _, d := range []string{h.upper(), h.work(), h.root(), h.containerd()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("host dir: %w", err)
		}
	}
	// The root is the base under a layer of the host's own. containerd's
	// overlay snapshotter cannot work on an overlay: its directory is a
	// plain one, bound in at boot.
	if strings.ContainsAny(h.l.base+h.dir, ",:") {
		return fmt.Errorf("overlay layers cannot have ',' or ':' in their paths: %s, %s", h.l.base, h.dir)
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", h.l.base, h.upper(), h.work())
	if err := unix.Mount("overlay", h.root(), "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount the overlay on %s: %w", h.root(), err)
	}
	h.l.mu.Lock()
	h.info.Root = h.root()
	vpc := h.l.vpc
	h.l.mu.Unlock()
	if err := writeSeed(h.root(), in, userData, keys, vpc); err != nil {
		return err
	}
	if err := h.setupNetwork(ctx, in, vpc); err != nil {
		return err
	}
	cg, err := makeCgroup(h.name)
	if err != nil {
		return err
	}
	h.cgroups = cg
	return nil
}

// setupNetwork makes the host's network namespace: eth0, a veth whose
// other end is on the lab's bridge, with the instance's private address
// (on-link with every VPC address, as in a VPC), its public address, and a
// default route to the bridge. The lab namespace routes the public
// address to the private one.
func (h *host) setupNetwork(ctx context.Context, in instance, vpc *vpcNet) error {
	if vpc == nil {
		return errors.New("the VPC's network is not known")
	}
	ns, lab := h.name, h.l.labNS
	if err := addNetns(ctx, ns); err != nil {
		return err
	}
	peer := "v" + strconv.Itoa(h.index)
	steps := [][]string{
		{lab, "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{lab, "link", "set", peer, "master", bridgeName, "up"},
		// A MAC made from the private address: a host made again with the
		// same address (a restart, a reused address) is not sent to a dead
		// MAC from the others' neighbour caches for half a minute.
		{ns, "link", "set", "eth0", "address", macFor(in.privateIP)},
		{ns, "addr", "add", fmt.Sprintf("%s/%d", in.privateIP, vpc.ones()), "dev", "eth0"},
	}
	if in.publicIP != "" {
		steps = append(steps, []string{ns, "addr", "add", in.publicIP + "/32", "dev", "eth0"})
	}
	steps = append(steps,
		[]string{ns, "link", "set", "eth0", "up"},
		[]string{ns, "route", "add", "default", "via", vpc.gateway.String(), "src", in.privateIP},
	)
	if in.publicIP != "" {
		steps = append(steps, []string{lab, "route", "replace", in.publicIP + "/32", "via", in.privateIP})
	}
	for _, s := range steps {
		if _, err := ipIn(ctx, s[0], s[1:]...); err != nil {
			return fmt.Errorf("network of %s: %w", h.name, err)
		}
	}
	return nil
}

// readdress moves the host to its instance's new addresses: a stopped
// instance comes back with another public IP (its private IP stays).
func (h *host) readdress(ctx context.Context, old Host, in instance, vpc *vpcNet) error {
	if old.PublicIP == in.publicIP && old.PrivateIP == in.privateIP {
		return nil
	}
	h.logf("addresses changed: private %s -> %s, public %s -> %s", old.PrivateIP, in.privateIP, old.PublicIP, in.publicIP)
	h.l.mu.Lock()
	h.info.PrivateIP, h.info.PublicIP = in.privateIP, in.publicIP
	h.l.mu.Unlock()
	if old.PublicIP != "" {
		_, _ = ipIn(ctx, h.l.labNS, "route", "del", old.PublicIP+"/32")
	}
	if old.PrivateIP != in.privateIP {
		if err := deleteNetns(ctx, h.name); err != nil {
			return err
		}
		return h.setupNetwork(ctx, in, vpc)
	}
	if old.PublicIP != "" {
		if _, err := ipIn(ctx, h.name, "addr", "del", old.PublicIP+"/32", "dev", "eth0"); err != nil {
			return err
		}
	}
	if in.publicIP != "" {
		if _, err := ipIn(ctx, h.name, "addr", "add", in.publicIP+"/32", "dev", "eth0"); err != nil {
			return err
		}
		if _, err := ipIn(ctx, h.l.labNS, "route", "replace", in.publicIP+"/32", "via", in.privateIP); err != nil {
			return err
		}
	}
	return nil
}

// macFor is a locally administered unicast MAC made from an IPv4
// address: 02:4b:a.b.c.d.
func macFor(ip string) string {
	v := net.ParseIP(ip).To4()
	if v == nil {
		return "02:4b:00:00:00:00"
	}
	return fmt.Sprintf("02:4b:%02x:%02x:%02x:%02x", v[0], v[1], v[2], v[3])
}

// nspawnArgs is how a host runs: systemd-nspawn on its overlay in its
// network namespace, with lab-init as PID 1.
func (h *host) nspawnArgs() []string {
	return []string{
		"systemd-nspawn",
		"--resolv-conf=off", "--timezone=off",
		"-D", h.root(),
		// The machine has no systemd to register with or make a scope.
		"--register=no", "--keep-unit",
		"--network-namespace-path=" + netnsPath(h.name),
		"--console=passive",
		// runc needs keyctl; containerd and the kubelet need bpf.
		"--system-call-filter=@keyring", "--system-call-filter=bpf",
		// Root of a VM administers its own network (sysctls such as
		// net.ipv4.ip_forward, iptables, routes, interfaces): nspawn
		// grants CAP_NET_ADMIN only with a network it makes itself.
		"--capability=CAP_NET_ADMIN",
		"-M", h.name,
		"--bind=" + h.containerd() + ":/var/lib/containerd",
		"/usr/local/sbin/lab-init",
	}
}

// launchScript is the host's launcher: it joins the host's cgroups first
// (so nspawn and everything in the host are born in them), then runs
// nspawn, again after each reboot (exit 133).
func (h *host) launchScript() string {
	var b strings.Builder
	fmt.Fprintf(&b, "#!/bin/sh\n# kforge lab host %s (instance %s)\n", h.name, h.info.InstanceID)
	b.WriteString(joinCgroupScript(h.cgroups))
	// /proc/sys/net is the host's own (its network namespace): writable.
	b.WriteString("export SYSTEMD_NSPAWN_API_VFS_WRITABLE=network\n")
	b.WriteString("while :; do\n\t")
	for i, a := range h.nspawnArgs() {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(shellQuote(a))
	}
	b.WriteString("\n\trc=$?\n\t[ \"$rc\" -eq 133 ] || exit \"$rc\"\n")
	fmt.Fprintf(&b, "\techo \"kforge-lab: %s rebooted\" >&2\ndone\n", h.name)
	return b.String()
}

// boot starts the host's launcher. The host stays up until powerOff, a
// poweroff from inside, or Close.
func (h *host) boot() error {
	script := filepath.Join(h.dir, "launch.sh")
	if err := os.WriteFile(script, []byte(h.launchScript()), 0o755); err != nil {
		return fmt.Errorf("launcher: %w", err)
	}
	console, err := os.OpenFile(h.consoleLog(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("console log: %w", err)
	}
	cmd := exec.Command("/bin/sh", script)
	cmd.Stdout, cmd.Stderr = console, console
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		console.Close()
		return fmt.Errorf("start %s: %w", script, err)
	}
	exited := make(chan struct{})
	h.launcher, h.exited = cmd, exited
	h.l.mu.Lock()
	h.launcherPID = cmd.Process.Pid
	h.info.State, h.info.Err = HostRunning, nil
	h.l.mu.Unlock()
	go func() {
		err := cmd.Wait()
		console.Close()
		h.l.mu.Lock()
		if h.launcherPID == cmd.Process.Pid {
			h.launcherPID = 0
			if h.info.State == HostRunning && !h.stopping {
				// Powered off from inside, or nspawn failed. EC2 would
				// stop the instance: the watcher leaves the host off.
				h.info.State, h.held = HostStopped, true
				h.l.mu.Unlock()
				h.logf("stopped by itself (%v); console: %s", err, tail(readFile(h.consoleLog()), 400))
				close(exited)
				return
			}
		}
		h.l.mu.Unlock()
		close(exited)
	}()
	return nil
}

// pid1 is the PID (on this machine) of the host's PID 1: the process in
// the launcher's tree that is PID 1 of its own PID namespace.
func (h *host) pid1() (int, error) {
	h.l.mu.Lock()
	launcher := h.launcherPID
	h.l.mu.Unlock()
	if launcher == 0 {
		return 0, fmt.Errorf("host %s is not running", h.name)
	}
	children := map[int][]int{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid := parentPID(pid); ppid > 0 {
			children[ppid] = append(children[ppid], pid)
		}
	}
	queue := append([]int(nil), children[launcher]...)
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if isNamespaceInit(pid) {
			return pid, nil
		}
		queue = append(queue, children[pid]...)
	}
	return 0, fmt.Errorf("host %s has no PID 1 yet", h.name)
}

// parentPID reads a process's parent from /proc/<pid>/stat (0 if gone).
func parentPID(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// isNamespaceInit reports whether a process is PID 1 of a nested PID
// namespace.
func isNamespaceInit(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(rest)
			return len(f) >= 2 && f[len(f)-1] == "1"
		}
	}
	return false
}

// powerOff stops a running host as a VM is stopped: "systemctl poweroff"
// inside; whatever is still running after timeout is killed. Its disk
// stays.
func (h *host) powerOff(ctx context.Context, timeout time.Duration) {
	if h.exited == nil {
		return
	}
	t0 := time.Now()
	h.l.mu.Lock()
	h.stopping = true
	h.l.mu.Unlock()
	select {
	case <-h.exited:
	default:
		if pid, err := h.pid1(); err == nil {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if _, err := h.l.execPID(cctx, pid, "systemctl", "poweroff"); err != nil {
				// Not booted far enough for systemctl: ask systemd directly.
				_ = unix.Kill(pid, sigPoweroff)
			}
			cancel()
		}
		select {
		case <-h.exited:
			h.logf("powered off in %s", time.Since(t0).Round(time.Millisecond))
		case <-time.After(timeout):
			h.logf("did not power off within %s: killing it", timeout)
		case <-ctx.Done():
		}
	}
	if err := killCgroup(ctx, h.name); err != nil {
		h.logf("kill: %v", err)
	}
	// A VM boots with no cgroups: remove those the host's systemd and
	// kubelet made. Found by the lab: left in place, the kubelet's
	// cAdvisor spent ~3 s on each old container's cgroup after a reboot
	// ("Failed to create existing container"), some 3 minutes in all,
	// before it started the API server again.
	if err := clearCgroupChildren(ctx, h.cgroups); err != nil {
		h.logf("clear cgroups: %v", err)
	}
	<-h.exited
	h.launcher, h.exited = nil, nil
	h.l.mu.Lock()
	h.launcherPID, h.stopping = 0, false
	h.l.mu.Unlock()
}

// stop powers the host off and keeps its disk.
func (h *host) stop(ctx context.Context) error {
	h.powerOff(ctx, 30*time.Second)
	h.setState(HostStopped, nil)
	return nil
}

// start boots a stopped host again from its disk.
func (h *host) start() error {
	if h.exited != nil {
		select {
		case <-h.exited: // it stopped by itself: clean up, then boot
			h.powerOff(context.Background(), 0)
		default:
			return nil // running
		}
	}
	if err := h.boot(); err != nil {
		h.setState(HostFailed, err)
		return err
	}
	h.logf("booted again")
	return nil
}

// remove powers the host off and deletes it: overlay, network, cgroup,
// directory.
func (h *host) remove(ctx context.Context) error {
	h.powerOff(ctx, 30*time.Second)
	h.saveLogs()
	h.l.mu.Lock()
	pub := h.info.PublicIP
	h.l.mu.Unlock()
	var errs []error
	if pub != "" {
		_, _ = ipIn(ctx, h.l.labNS, "route", "del", pub+"/32")
	}
	if err := deleteNetns(ctx, h.name); err != nil {
		errs = append(errs, err)
	}
	if err := removeCgroup(ctx, h.name); err != nil {
		errs = append(errs, err)
	}
	if err := removeTree(h.dir); err != nil {
		errs = append(errs, err)
	}
	err := errors.Join(errs...)
	h.l.mu.Lock()
	h.info.State, h.info.Root = HostRemoved, ""
	if err != nil {
		h.info.Err = err
	}
	h.l.mu.Unlock()
	h.logf("removed")
	return err
}

// saveLogs copies the host's console and cloud-init logs to
// Options.LogDir.
func (h *host) saveLogs() {
	h.l.saveLog(h.consoleLog(), h.name+".console.log")
	for _, f := range []string{"cloud-init.log", "cloud-init-output.log"} {
		h.l.saveLog(filepath.Join(h.upper(), "var/log", f), h.name+"."+f)
	}
}

// readFile returns a file's text, or "" if it cannot be read.
func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@,+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// sigPoweroff is SIGRTMIN+4, on which systemd starts poweroff.target.
const sigPoweroff = unix.Signal(34 + 4)
