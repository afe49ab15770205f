//go:build lab && linux

package lab

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kforge/kforge/test/testutil/local"
	"github.com/kforge/kforge/test/testutil/moto"
)

// crashHelperEnv makes TestCrashHelper, in a child test process, start a
// lab with one booted host and then "panic" or wait to be "kill"ed.
const crashHelperEnv = "KFORGE_LAB_CRASH_HELPER"

// TestCrashHelper is the child process of the crash tests.
func TestCrashHelper(t *testing.T) {
	mode := os.Getenv(crashHelperEnv)
	if mode == "" {
		t.Skip("run by TestCloseAfterPanic and TestCleanStaleAfterKill")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	emu := moto.Start(t)
	cfg := emu.Config(t, "us-east-1")
	vpc := newTestVPC(t, ctx, cfg)
	l := startLab(t, ctx, Options{AWS: cfg, VPCID: "all"})
	vm := vpc.runVM(t, ctx, "crash-cp-1", "cp")
	if err := l.WaitSSH(ctx, vm.id); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("\nLAB_ID=%s\n", l.ID())
	switch mode {
	case "panic":
		panic("crash helper: a test panics with a lab running")
	case "kill":
		select {} // until SIGKILL
	}
}

// crashChild runs TestCrashHelper in a child process and returns it once
// its lab is up, with the lab's ID and the child's output so far.
func crashChild(t *testing.T, mode string) (*exec.Cmd, string, *local.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.v", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), crashHelperEnv+"="+mode)
	out := &local.Buffer{}
	cmd.Stderr = out
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ids := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(out, line)
			if id, ok := strings.CutPrefix(line, "LAB_ID="); ok {
				ids <- id
			}
		}
		close(ids)
	}()
	select {
	case id, ok := <-ids:
		if !ok {
			_ = cmd.Wait()
			t.Fatalf("the child ended before its lab was up:\n%s", out)
		}
		return cmd, id, out
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("the child's lab did not come up:\n%s", out)
	}
	return nil, "", nil
}

// TestCloseAfterPanic: a test that panics with a lab running still
// removes it (Close runs from t.Cleanup).
func TestCloseAfterPanic(t *testing.T) {
	requireRoot(t)
	cmd, id, out := crashChild(t, "panic")
	err := cmd.Wait()
	if err == nil || !strings.Contains(out.String(), "a test panics with a lab running") {
		t.Fatalf("the child did not panic (%v):\n%s", err, out)
	}
	t.Logf("child exited: %v", err)
	assertNothingLeft(t, id)
	if t.Failed() {
		t.Logf("child output:\n%s", out)
	}
}

// TestCleanStaleAfterKill: a lab whose process was killed with SIGKILL
// leaves hosts, namespaces, mounts and cgroups; CleanStale removes them,
// and leaves a live lab alone.
func TestCleanStaleAfterKill(t *testing.T) {
	requireRoot(t)
	cmd, id, out := crashChild(t, "kill")
	// The child's own processes that no cgroup holds: the emulator.
	var orphans []int
	for _, pid := range childrenOf(cmd.Process.Pid) {
		if strings.Contains(readFile("/proc/"+strconv.Itoa(pid)+"/cmdline"), "moto") {
			orphans = append(orphans, pid)
		}
	}
	defer func() {
		for _, pid := range orphans {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// While the child lives, its lab is not stale.
	if cleaned, err := CleanStale(ctx); err != nil || contains(cleaned, id) {
		t.Fatalf("CleanStale with the owner alive: %v, %v", cleaned, err)
	}
	if len(Leftovers(id)) == 0 {
		t.Fatal("the live lab has nothing on the machine?")
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	left := Leftovers(id)
	if len(left) == 0 {
		t.Fatal("a lab killed with SIGKILL left nothing: the test proves nothing")
	}
	t.Logf("left by the killed lab: %s", strings.Join(left, "; "))
	t0 := time.Now()
	cleaned, err := CleanStale(ctx)
	if err != nil {
		t.Error(err)
	}
	if !contains(cleaned, id) {
		t.Errorf("CleanStale cleaned %v, not %s", cleaned, id)
	}
	t.Logf("TIMING CleanStale of a killed lab: %s", time.Since(t0).Round(time.Millisecond))
	assertNothingLeft(t, id)
	if t.Failed() {
		t.Logf("child output:\n%s", out)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err == nil && parentPID(p) == pid {
			out = append(out, p)
		}
	}
	return out
}
