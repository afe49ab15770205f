package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/test/testutil/faultproxy"
	"github.com/kforge/kforge/test/testutil/kforgebin"
	"github.com/kforge/kforge/test/testutil/moto"
	"github.com/kforge/kforge/test/testutil/sshfleet"
)

// latency is what the proxy adds to every AWS call (BENCH_LATENCY_MS
// overrides it).
func latency() time.Duration {
	if v, err := strconv.Atoi(os.Getenv("BENCH_LATENCY_MS")); err == nil && v > 0 {
		return time.Duration(v) * time.Millisecond
	}
	return 50 * time.Millisecond
}

// reps is how many times each create/delete scenario runs, each in a fresh
// emulator (BENCH_REPS overrides it); the report shows the median run.
func reps() int {
	if v, err := strconv.Atoi(os.Getenv("BENCH_REPS")); err == nil && v > 0 {
		return v
	}
	return 3
}

// TestMain removes the kforge binary this process built, if it built one.
func TestMain(m *testing.M) { os.Exit(kforgebin.Cleaning(m).Run()) }

// kforgePath is the binary under test: KFORGE_BIN (bench/run builds it),
// else one built for this test process.
func kforgePath(b *testing.B) string {
	if p := os.Getenv("KFORGE_BIN"); p != "" {
		return p
	}
	return kforgebin.Path(b)
}

// world is one emulator with a latency proxy in front of it, and a kforge
// home that reaches AWS through the proxy.
type world struct {
	b      *testing.B
	region string
	emu    *moto.Server
	proxy  *faultproxy.Proxy
	home   string
	bin    string
	fleet  *sshfleet.Fleet
	// cfg reaches the emulator through fleetProxy, for the SSH fleet.
	cfg        aws.Config
	fleetProxy *faultproxy.Proxy
	emuPID     int
	traces     int
}

// newWorld starts the emulator and the proxy (and, for ha-aws, the SSH
// fleet), and warms the emulator up: its first calls of each kind load
// data and code for up to a second or two, which is the emulator starting,
// not kforge working. The warm-up creates and deletes a throwaway cluster
// of the same type directly against the emulator (no proxy, no trace).
func newWorld(b *testing.B, region, typ string) *world {
	b.Helper()
	w := &world{b: b, region: region, bin: kforgePath(b), home: b.TempDir()}
	emuOpts, freeze := emulatorOptions(b)
	w.emu = moto.Start(b, emuOpts...)
	w.proxy = faultproxy.Start(b, w.emu.URL)
	w.proxy.Add(faultproxy.Rule{Fault: faultproxy.Delay, Delay: latency()})
	// The SSH fleet reads the emulator through a proxy of its own (no
	// latency), so that its look-ups can be counted apart from kforge's.
	w.fleetProxy = faultproxy.Start(b, w.emu.URL)
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion(region), config.WithBaseEndpoint(w.fleetProxy.URL),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(moto.AccessKeyID, moto.SecretAccessKey, "")))
	if err != nil {
		b.Fatal(err)
	}
	w.cfg = cfg
	w.emuPID = findPID(b, "moto_server", strconv.Itoa(w.emu.Port))
	if err := os.MkdirAll(filepath.Join(w.home, ".ssh"), 0o700); err != nil {
		b.Fatal(err)
	}
	create := []string{"create", typ, "--name", "warmup", "--region", region}
	if typ == spec.TypeHA {
		w.fleet = sshfleet.Start(b, sshfleet.Options{AWS: &w.cfg, AuthorizeKeyPairs: true})
		w.fleet.ServeKforge(b, w.home)
		create = append(create, "--workers", "1", "--ssh-cidr", "10.0.0.0/8", "--ssh-jump", w.fleet.Jump(sshfleet.VMUser))
	}
	for _, args := range [][]string{create, {"delete", typ, "--name", "warmup", "--region", region, "--yes"}} {
		if out, err := w.command(context.Background(), w.emu.URL, args...).CombinedOutput(); err != nil {
			b.Fatalf("warm the emulator up: kforge %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if freeze != "" {
		w.freezeEmulator(freeze)
	}
	return w
}

// emulatorOptions starts the emulator as BENCH_EMULATOR_GC asks. Python's
// cyclic garbage collector pauses moto_server now and then: a full
// collection scans everything the emulator holds (EC2's and IAM's default
// data, botocore's models: 150-200 ms), emulator time that is neither
// kforge's work nor AWS's, and it falls where allocations happen to
// trigger it.
//
//   - "freeze" (the default): after the warm-up (newWorld), the emulator
//     collects once and moves everything it then holds out of its
//     collector's reach (gc.freeze, on SIGUSR1, from a sitecustomize
//     module on its PYTHONPATH). The collector stays on for what the
//     measured run allocates.
//   - "on": the emulator as it is.
//   - "off": no collector at all.
func emulatorOptions(b *testing.B) (opts []moto.Options, freeze string) {
	var site string
	switch v := os.Getenv("BENCH_EMULATOR_GC"); v {
	case "on":
		return nil, ""
	case "off":
		site = "import gc\ngc.disable()\n"
	case "", "freeze":
		dir := b.TempDir()
		freeze = filepath.Join(dir, "frozen")
		site = fmt.Sprintf(freezeSite, freeze)
	default:
		b.Fatalf("BENCH_EMULATOR_GC=%q: want freeze, on or off", v)
	}
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "sitecustomize.py"), []byte(site), 0o600); err != nil {
		b.Fatal(err)
	}
	return []moto.Options{{Env: []string{"PYTHONPATH=" + dir}}}, freeze
}

// freezeSite is the sitecustomize of BENCH_EMULATOR_GC=freeze: on
// SIGUSR1, collect, freeze, and say so in the file named by the %q.
const freezeSite = `import gc, signal

def _kforge_bench_freeze(signum, frame):
    gc.collect()
    gc.freeze()
    with open(%q, "w") as f:
        f.write(str(gc.get_freeze_count()))

signal.signal(signal.SIGUSR1, _kforge_bench_freeze)
`

// freezeEmulator asks the emulator to freeze its heap (see
// emulatorOptions) and waits until it has.
func (w *world) freezeEmulator(marker string) {
	w.b.Helper()
	if err := syscall.Kill(w.emuPID, syscall.SIGUSR1); err != nil {
		w.b.Fatalf("ask the emulator to freeze its heap: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if n, err := os.ReadFile(marker); err == nil && len(n) > 0 {
			return
		}
		if time.Now().After(deadline) {
			w.b.Fatal("the emulator did not freeze its heap within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// command is a kforge process whose AWS endpoint is endpoint.
func (w *world) command(ctx context.Context, endpoint string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, w.bin, args...)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + w.home, "KFORGE_HOME=" + w.home,
		"KUBECONFIG=" + filepath.Join(w.home, "kubeconfig"),
		"AWS_ENDPOINT_URL=" + endpoint,
		"AWS_ACCESS_KEY_ID=" + moto.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + moto.SecretAccessKey,
		"AWS_EC2_METADATA_DISABLED=true",
	}
	return cmd
}

// run is one measured kforge process.
type run struct {
	Args    []string
	Wall    time.Duration
	PeakFDs int
	// CPU is kforge's own CPU time (user and system); EmuCPU the
	// emulator's while kforge ran; FleetCalls the calls the SSH fleet made
	// to the emulator to play the VMs kforge reached.
	CPU, EmuCPU time.Duration
	FleetCalls  int
	// Start is when the process was started.
	Start   time.Time
	Calls   []Call              // kforge's trace
	Records []faultproxy.Record // what the proxy saw
	Stdout  string
	Stderr  string
}

// measure runs kforge through the proxy with a trace, sampling its open
// file descriptors, and fails the benchmark unless it exits 0.
func (w *world) measure(args ...string) run {
	w.b.Helper()
	w.traces++
	dir := w.home
	if d := os.Getenv("BENCH_TRACE_DIR"); d != "" {
		dir = d // kept for a closer look
	}
	trace := filepath.Join(dir, fmt.Sprintf("trace-%s-%d.jsonl", time.Now().Format("150405.000"), w.traces))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := w.command(ctx, w.proxy.URL, args...)
	cmd.Env = append(cmd.Env, "KFORGE_AWS_TRACE="+trace)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	before, fleetBefore := len(w.proxy.Records()), len(w.fleetProxy.Records())
	emuBefore := cpuTime(w.b, w.emuPID)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		w.b.Fatalf("start kforge: %v", err)
	}
	peak := sampleFDs(cmd.Process.Pid)
	err := cmd.Wait()
	wall := time.Since(start)
	fds := peak()
	emuCPU := cpuTime(w.b, w.emuPID) - emuBefore
	if err != nil {
		w.b.Fatalf("kforge %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	if os.Getenv("BENCH_TRACE_DIR") != "" {
		// kforge's progress lines beside its trace, for the same look.
		if err := os.WriteFile(strings.TrimSuffix(trace, ".jsonl")+".stderr", errb.Bytes(), 0o600); err != nil {
			w.b.Fatal(err)
		}
	}
	f, err := os.Open(trace)
	if err != nil {
		w.b.Fatalf("open trace: %v", err)
	}
	defer f.Close()
	calls, err := ReadTrace(f)
	if err != nil {
		w.b.Fatal(err)
	}
	return run{Args: args, Wall: wall, PeakFDs: fds, Calls: calls, Records: w.proxy.Records()[before:], Stdout: out.String(), Stderr: errb.String(),
		CPU: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), EmuCPU: emuCPU, FleetCalls: countForwarded(w.fleetProxy.Records()[fleetBefore:]),
		Start: start}
}

// findPID returns the process of this benchmark's children whose command
// line holds every one of words.
func findPID(b *testing.B, words ...string) int {
	b.Helper()
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		b.Fatal(err)
	}
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(raw), "\x00")
		all := true
		for _, w := range words {
			all = all && slices.ContainsFunc(args, func(a string) bool { return strings.HasSuffix(a, w) })
		}
		if all {
			return pid
		}
	}
	b.Fatalf("no process with %v", words)
	return 0
}

// cpuTime returns the CPU time (user and system) a process has used, from
// /proc/<pid>/stat.
func cpuTime(b *testing.B, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name (field 2) may hold spaces: count from its end.
	fields := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// clockTicks is the unit of /proc/<pid>/stat's times (USER_HZ, 100 on
// Linux).
const clockTicks = 100

// sampleFDs counts the open file descriptors of pid every few
// milliseconds until the returned function is called, which returns the
// peak.
func sampleFDs(pid int) func() int {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	peak := 0
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			if entries, err := os.ReadDir(dir); err == nil && len(entries) > peak {
				peak = len(entries)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return func() int {
		close(stop)
		wg.Wait()
		return peak
	}
}

// plan returns the step graph of a create from its dry run.
func (w *world) plan(args ...string) []Step {
	w.b.Helper()
	cmd := w.command(context.Background(), "http://127.0.0.1:1", append(args, "--dry-run", "-o", "json")...)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			w.b.Fatalf("dry run: %v\n%s", err, ee.Stderr)
		}
		w.b.Fatal(err)
	}
	steps, err := ReadPlan(bytes.NewReader(out))
	if err != nil {
		w.b.Fatal(err)
	}
	return steps
}

// result is a measured run with its bound.
type result struct {
	Name  string
	Run   run
	Bound Bound
	// Launch is what EC2's documented RunInstances bucket allows the
	// run's launches; kforge keeps to it on the client, whether or not
	// the proxy enforces it.
	Launch Launches
}

// Limit is the run's bound: the larger of its critical path and what its
// launches need.
func (r result) Limit() time.Duration { return max(r.Bound.Duration, r.Launch.Duration) }

// Ratio is the wall time over the bound.
func (r result) Ratio() float64 { return r.Run.Wall.Seconds() / r.Limit().Seconds() }

// analyse computes the bound of a run.
func analyse(b *testing.B, name string, sc Scenario, r run) result {
	b.Helper()
	bd, err := CriticalPath(sc, r.Calls)
	if err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	if len(bd.Unknown) > 0 {
		b.Fatalf("%s: trace labels not in the graph: %v", name, bd.Unknown)
	}
	if n := countForwarded(r.Records); n != len(r.Calls) {
		b.Fatalf("%s: the proxy saw %d AWS calls, kforge's trace has %d", name, n, len(r.Calls))
	}
	lb := faultproxy.DocumentedEC2().Actions["RunInstances"]
	return result{Name: name, Run: r, Bound: bd, Launch: LaunchBound(bd, r.Calls, lb.Capacity, lb.Refill, latency())}
}

func countForwarded(recs []faultproxy.Record) int {
	n := 0
	for _, r := range recs {
		if r.Action != "" {
			n++
		}
	}
	return n
}

// median returns the result with the median ratio.
func median(rs []result) result {
	s := append([]result(nil), rs...)
	sort.Slice(s, func(i, j int) bool { return s[i].Ratio() < s[j].Ratio() })
	return s[len(s)/2]
}

// printResult writes a scenario's report.
func printResult(rs []result) {
	m := median(rs)
	r := m.Run
	mut := 0
	by := map[string]int{}
	for _, rec := range r.Records {
		if rec.Action == "" {
			continue
		}
		if rec.Mutating {
			mut++
		}
		by[rec.Service+":"+rec.Action]++
	}
	var actions []string
	for a := range by {
		actions = append(actions, a)
	}
	sort.Slice(actions, func(i, j int) bool {
		if by[actions[i]] != by[actions[j]] {
			return by[actions[i]] > by[actions[j]]
		}
		return actions[i] < actions[j]
	})
	var ratios []string
	for _, x := range rs {
		ratios = append(ratios, fmt.Sprintf("%.2f", x.Ratio()))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n== %s ==\n", m.Name)
	fmt.Fprintf(&b, "command:         kforge %s\n", strings.Join(r.Args, " "))
	fmt.Fprintf(&b, "AWS calls:       %d total, %d mutating, %d read-only\n", countForwarded(r.Records), mut, countForwarded(r.Records)-mut)
	fmt.Fprintf(&b, "by action:      ")
	for i, a := range actions {
		if i > 0 && i%4 == 0 {
			fmt.Fprintf(&b, "\n                ")
		}
		fmt.Fprintf(&b, " %s=%d", a, by[a])
	}
	fmt.Fprintf(&b, "\n")
	var first, last time.Time
	for _, c := range r.Calls {
		if first.IsZero() || c.Time.Before(first) {
			first = c.Time
		}
		if c.End().After(last) {
			last = c.End()
		}
	}
	fmt.Fprintf(&b, "wall time:       %s (first AWS call after %s; last AWS answer at %s, then %s of SSH and local work)\n", r.Wall.Round(time.Millisecond),
		first.Sub(r.Start).Round(time.Millisecond), last.Sub(r.Start).Round(time.Millisecond), r.Start.Add(r.Wall).Sub(last).Round(time.Millisecond))
	fmt.Fprintf(&b, "critical path:   %d waves x %s = %s (before the graph %d [%d calls], graph %d, after %d; unattributed calls %d)\n",
		m.Bound.Waves, latency(), m.Bound.Duration, m.Bound.Pre, m.Bound.PreCalls, m.Bound.PathWaves, m.Bound.Post, m.Bound.Unattributed)
	fmt.Fprintf(&b, "critical chain:  %s\n", m.Bound.Chain())
	if l := m.Launch; l.Duration > 0 {
		fmt.Fprintf(&b, "launches:        %d RunInstances; EC2's bucket for them (5, then 2 a second) allows %s: %d waves before the first can go + %s + %d waves after the last\n",
			l.Calls, l.Duration.Round(time.Millisecond), l.Start, l.Wait.Round(time.Millisecond), LaunchTail)
	}
	fmt.Fprintf(&b, "ratio:           %.2f (wall / bound, the larger of the two; median of %d runs: %s)\n", m.Ratio(), len(rs), strings.Join(ratios, " "))
	fmt.Fprintf(&b, "peak open fds:   %d\n", r.PeakFDs)
	fmt.Fprintf(&b, "CPU:             kforge %s; emulator %s (kforge's calls, and %d look-ups of the SSH fleet that plays the VMs)\n",
		r.CPU.Round(time.Millisecond), r.EmuCPU.Round(10*time.Millisecond), r.FleetCalls)
	fmt.Print(b.String())
}
