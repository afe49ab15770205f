package crash

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"
)

// baseline is what clean runs of one cluster type do: the resources a
// create makes, and how many mutating AWS calls each operation makes.
type baseline struct {
	created, scaled            map[string]int
	create, delete             int
	scaleUp, scaleDown         int
	createCalls, deleteCalls   []string
	scaleUpCalls, scaleDnCalls []string
}

// Worker pool sizes of the scale matrix: created with haWorkers workers
// (or 2 nodes), scaled up, then down again. From 4 to 8 workers, 4 and 7
// share a subnet: the scale up launches them in one batch.
func scaleSizes(typ string) (from, up int) {
	if typ == typeHA {
		return haWorkers, 8
	}
	return 2, 3
}

// measure runs a clean create, scale up, scale down and delete, and
// records what each did.
func measure(t *testing.T, typ string) baseline {
	t.Helper()
	w := acquire(t)
	c := newCluster(t, w, typ)
	var b baseline
	c.mustRun(c.createArgs()...)
	b.createCalls = mutatingCalls(w.px)
	from, up := scaleSizes(typ)
	b.created = want(typ, from)
	c.sameCounts("clean create", b.created)
	c.named("clean create", from)
	w.px.Clear()
	c.mustRun(c.scaleArgs(up)...)
	b.scaleUpCalls = mutatingCalls(w.px)
	b.scaled = want(typ, up)
	c.sameCounts("clean scale up", b.scaled)
	c.named("clean scale up", up)
	w.px.Clear()
	c.mustRun(c.scaleArgs(from)...)
	b.scaleDnCalls = mutatingCalls(w.px)
	c.sameCounts("clean scale down", b.created)
	w.px.Clear()
	c.mustRun(c.deleteArgs()...)
	b.deleteCalls = mutatingCalls(w.px)
	c.empty("clean delete")
	b.create, b.delete, b.scaleUp, b.scaleDown = len(b.createCalls), len(b.deleteCalls), len(b.scaleUpCalls), len(b.scaleDnCalls)
	t.Logf("clean %s: create makes %d mutating calls (%s) and %s;\n delete %d (%s);\n scale up %d (%s), down %d (%s)",
		typ, b.create, histogram(b.createCalls), showCounts(b.created), b.delete, histogram(b.deleteCalls),
		b.scaleUp, histogram(b.scaleUpCalls), b.scaleDown, histogram(b.scaleDnCalls))
	if b.create == 0 || b.delete == 0 || b.scaleUp == 0 || b.scaleDown == 0 {
		t.Fatal("a clean run made no mutating call: the proxy does not see kforge's calls")
	}
	return b
}

// listed returns the clusters `kforge get -o json` lists, by name, with
// their status; it fails the test if get fails (a state file a crash
// left unreadable).
func (c *cluster) listed() map[string]string {
	c.t.Helper()
	r := c.mustRun("get", "-o", "json")
	var items []struct{ Name, Status string }
	if err := json.Unmarshal([]byte(r.Stdout), &items); err != nil {
		c.t.Fatalf("kforge get -o json: %v\n%s", err, r.Stdout)
	}
	m := map[string]string{}
	for _, i := range items {
		m[i.Name] = i.Status
	}
	return m
}

// outcome is one row of the matrix's summary.
type outcome struct {
	op     string
	killed bool
}

// results collects the matrix's outcomes for its summary.
type results struct {
	mu   sync.Mutex
	rows []outcome
}

func (r *results) add(o outcome) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rows = append(r.rows, o)
}

// summary counts, per operation, the kill positions that killed kforge.
func (r *results) summary() map[string][2]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := map[string][2]int{}
	for _, o := range r.rows {
		v := m[o.op]
		v[0]++
		if o.killed {
			v[1]++
		}
		m[o.op] = v
	}
	return m
}

// killAt runs args with a SIGKILL after mutating call k and checks that
// the state a crash leaves is readable; it returns whether kforge died.
func (c *cluster) killAt(k, total int, what string, args ...string) bool {
	c.t.Helper()
	r := c.runKilled(k, args...)
	switch {
	case r.Signalled:
	case r.Code == 0 && k >= total:
		// The last call's answer came and kforge finished before the
		// signal: the position is the end of the run.
	default:
		c.t.Fatalf("%s: kill after mutating call %d of %d did not kill kforge: exit %d\n%s", what, k, total, r.Code, r.Stderr)
	}
	c.listed() // the state a crash leaves is readable
	return r.Signalled
}

// TestCrashMatrix kills kforge with SIGKILL right after each mutating AWS
// call of a create (every position, both cluster types) and runs the same
// create again: it must finish with exactly the resources of a clean run.
// The same cluster is then deleted with a kill at the same position of
// the delete, and deleted again: nothing may be left. A create killed at
// each position is also deleted instead of finished. Scale up and down
// get the same treatment as create at each of their positions.
func TestCrashMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("the crash matrix runs some hundred kforge processes")
	}
	start := time.Now()
	for _, typ := range []string{typeEKS, typeHA} {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			var b baseline
			if !t.Run("clean", func(t *testing.T) { b = measure(t, typ) }) {
				t.FailNow()
			}
			var res results
			t.Cleanup(func() {
				for op, n := range res.summary() {
					t.Logf("%s %s: %d kill positions, kforge killed at %d (the others ran to their end)", typ, op, n[0], n[1])
				}
			})
			for i := 1; i <= max(b.create, b.delete); i++ {
				t.Run(fmt.Sprintf("kill-%d", i), func(t *testing.T) {
					t.Parallel()
					c := newCluster(t, acquire(t), typ)
					if i <= b.create {
						killed := c.killAt(i, b.create, "create", c.createArgs()...)
						res.add(outcome{op: "create", killed: killed})
						if st := c.listed()[c.name]; st != "creating" && !(i == b.create && st == "running") {
							t.Errorf("after a kill in create, the cluster is %q, want creating", st)
						}
					}
					c.mustRun(c.createArgs()...)
					c.sameCounts(fmt.Sprintf("create after a kill at mutating call %d", i), b.created)
					c.named(fmt.Sprintf("create after a kill at mutating call %d", i), haWorkers)
					if i <= b.delete {
						killed := c.killAt(i, b.delete, "delete", c.deleteArgs()...)
						res.add(outcome{op: "delete", killed: killed})
					}
					c.mustRun(c.deleteArgs()...)
					c.empty(fmt.Sprintf("delete after a kill at mutating call %d", i))
					if _, ok := c.listed()[c.name]; ok {
						t.Error("the deleted cluster is still in the state store")
					}
				})
			}
			// A create that died is deleted rather than finished.
			for i := 1; i <= b.create; i++ {
				t.Run(fmt.Sprintf("partial-%d", i), func(t *testing.T) {
					t.Parallel()
					c := newCluster(t, acquire(t), typ)
					killed := c.killAt(i, b.create, "create", c.createArgs()...)
					res.add(outcome{op: "create, then delete", killed: killed})
					c.mustRun(c.deleteArgs()...)
					c.empty(fmt.Sprintf("delete of a create killed at mutating call %d", i))
					if _, ok := c.listed()[c.name]; ok {
						t.Error("the deleted cluster is still in the state store")
					}
				})
			}
			for i := 1; i <= max(b.scaleUp, b.scaleDown); i++ {
				t.Run(fmt.Sprintf("scale-kill-%d", i), func(t *testing.T) {
					t.Parallel()
					c := newCluster(t, acquire(t), typ)
					from, up := scaleSizes(typ)
					c.mustRun(c.createArgs()...)
					if i <= b.scaleUp {
						killed := c.killAt(i, b.scaleUp, "scale up", c.scaleArgs(up)...)
						res.add(outcome{op: "scale up", killed: killed})
					}
					c.mustRun(c.scaleArgs(up)...)
					c.sameCounts(fmt.Sprintf("scale up after a kill at mutating call %d", i), b.scaled)
					c.named(fmt.Sprintf("scale up after a kill at mutating call %d", i), up)
					if i <= b.scaleDown {
						killed := c.killAt(i, b.scaleDown, "scale down", c.scaleArgs(from)...)
						res.add(outcome{op: "scale down", killed: killed})
					}
					c.mustRun(c.scaleArgs(from)...)
					c.sameCounts(fmt.Sprintf("scale down after a kill at mutating call %d", i), b.created)
					c.named(fmt.Sprintf("scale down after a kill at mutating call %d", i), from)
					c.mustRun(c.deleteArgs()...)
					c.empty("delete after scaling")
				})
			}
		})
	}
	t.Cleanup(func() { t.Logf("crash matrix: %s", time.Since(start).Round(time.Second)) })
}
