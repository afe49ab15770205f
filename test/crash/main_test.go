// Package crash proves that kforge survives crashes and faults: it runs
// the real binary against the AWS emulator through a fault proxy
// (test/testutil/faultproxy) that kills kforge right after a chosen AWS
// call, drops answers, throttles, fails and delays calls, and answers
// IAM's eventual consistency errors; then it counts, through the
// emulator's API, what exists of the cluster, and fails on any duplicate
// or leftover.
//
// The tests share a pool of workers, each an emulator with its own proxy,
// so that the crash matrix runs its positions in parallel. A test holds a
// worker for its whole run (the proxy's rules are the test's), and every
// cluster has a name of its own.
package crash

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"

	"github.com/kforge/kforge/test/testutil/faultproxy"
	"github.com/kforge/kforge/test/testutil/kforgebin"
	"github.com/kforge/kforge/test/testutil/moto"
)

// worker is an emulator and the fault proxy in front of it.
type worker struct {
	id  int
	emu *moto.Server
	px  *faultproxy.Proxy
}

// pool hands out the workers.
var pool chan *worker

// workers is how many emulators run: KFORGE_CRASH_WORKERS, else the
// number of CPUs (each busy emulator takes about one).
func workers() int {
	if n, err := strconv.Atoi(os.Getenv("KFORGE_CRASH_WORKERS")); err == nil && n > 0 {
		return n
	}
	return max(2, runtime.NumCPU())
}

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "kforge-crash-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	n := workers()
	pool = make(chan *worker, n)
	var all []*worker
	defer func() {
		for _, w := range all {
			w.px.Close()
			w.emu.Stop()
		}
	}()
	for i := range n {
		d := fmt.Sprintf("%s/%d", dir, i)
		if err := os.Mkdir(d, 0o700); err != nil {
			return 0, err
		}
		emu, err := moto.StartProcess(d)
		if err != nil {
			return 0, err
		}
		px, err := faultproxy.New(emu.URL)
		if err != nil {
			emu.Stop()
			return 0, err
		}
		w := &worker{id: i, emu: emu, px: px}
		all = append(all, w)
		pool <- w
	}
	return kforgebin.Cleaning(m).Run(), nil
}

// acquire takes a worker for the rest of the test; its proxy starts
// without rules.
func acquire(t *testing.T) *worker {
	t.Helper()
	w := <-pool
	w.px.Clear()
	t.Cleanup(func() {
		w.px.Clear()
		pool <- w
	})
	return w
}
