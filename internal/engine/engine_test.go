package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
)

// fakeWorld records what steps made, like AWS would.
type fakeWorld struct {
	mu      sync.Mutex
	made    map[string]int // step ID -> times created
	deleted map[string]int
	active  int32
	peak    int32
}

func newWorld() *fakeWorld { return &fakeWorld{made: map[string]int{}, deleted: map[string]int{}} }

func (w *fakeWorld) step(id string, needs []string, fail func() error, hold time.Duration) *Step {
	return &Step{
		ID: id, Needs: needs, Title: "make " + id,
		Ensure: func(ctx context.Context, r *Run) (any, error) {
			n := atomic.AddInt32(&w.active, 1)
			defer atomic.AddInt32(&w.active, -1)
			for {
				p := atomic.LoadInt32(&w.peak)
				if n <= p || atomic.CompareAndSwapInt32(&w.peak, p, n) {
					break
				}
			}
			for _, need := range needs {
				v, err := Out[string](r, need)
				if err != nil {
					return nil, err
				}
				if v != "id-"+need {
					return nil, fmt.Errorf("%s read %q from %s", id, v, need)
				}
			}
			if hold > 0 {
				select {
				case <-time.After(hold):
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			if fail != nil {
				if err := fail(); err != nil {
					return nil, err
				}
			}
			w.mu.Lock()
			w.made[id]++
			w.mu.Unlock()
			return "id-" + id, nil
		},
		Delete: func(ctx context.Context, r *Run) error {
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.made[id]-w.deleted[id] <= 0 {
				return ErrAbsent
			}
			w.deleted[id]++
			return nil
		},
	}
}

func newJournal(t *testing.T) (*Journal, *state.Local) {
	t.Helper()
	st, err := state.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := state.New(spec.Spec{Ref: spec.Ref{Type: "aws", Name: "t", Region: "us-east-1"}}, time.Unix(1700000000, 0))
	return NewJournal(st, c), st
}

// diamond: a -> (b, c) -> d, plus an independent e.
func diamond(w *fakeWorld, fail map[string]error, hold time.Duration) *Graph {
	f := func(id string) func() error {
		return func() error { return fail[id] }
	}
	g := NewGraph()
	g.Add(
		w.step("a", nil, f("a"), hold),
		w.step("b", []string{"a"}, f("b"), hold),
		w.step("c", []string{"a"}, f("c"), hold),
		w.step("d", []string{"b", "c"}, f("d"), hold),
		w.step("e", nil, f("e"), hold),
	)
	return g
}

func TestApplyRunsIndependentStepsConcurrently(t *testing.T) {
	w := newWorld()
	j, _ := newJournal(t)
	g := diamond(w, nil, 50*time.Millisecond)
	if err := Apply(context.Background(), g, j, Options{}); err != nil {
		t.Fatal(err)
	}
	// Independent steps run together (each holds for a while).
	if w.peak < 2 {
		t.Errorf("peak concurrency %d, want >= 2", w.peak)
	}
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		if w.made[id] != 1 {
			t.Errorf("%s made %d times", id, w.made[id])
		}
	}
	if g.CriticalPath() != 3 {
		t.Errorf("critical path %d, want 3", g.CriticalPath())
	}
}

func TestApplyBoundsParallelism(t *testing.T) {
	w := newWorld()
	j, _ := newJournal(t)
	g := NewGraph()
	for i := 0; i < 20; i++ {
		g.Add(w.step(fmt.Sprint("s", i), nil, nil, 10*time.Millisecond))
	}
	if err := Apply(context.Background(), g, j, Options{Parallel: 4}); err != nil {
		t.Fatal(err)
	}
	if w.peak > 4 {
		t.Errorf("peak %d exceeds the bound 4", w.peak)
	}
}

// A hundred and some VMs wait at once: the default bound must not make
// waiting steps go in rounds.
func TestDefaultParallelismLetsWaitingStepsOverlap(t *testing.T) {
	const n = 150
	j, _ := newJournal(t)
	g := NewGraph()
	var started sync.WaitGroup
	started.Add(n)
	all := make(chan struct{})
	go func() { started.Wait(); close(all) }()
	for i := 0; i < n; i++ {
		g.Add(&Step{ID: fmt.Sprint("vm/", i), Ensure: func(ctx context.Context, r *Run) (any, error) {
			r.Waiting("waiting for the others")
			started.Done()
			select {
			case <-all:
				return nil, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := Apply(ctx, g, j, Options{}); err != nil {
		t.Fatalf("%d steps that wait for each other did not all run at once with the default bound %d: %v", n, DefaultParallel, err)
	}
}

func TestResumeFromEveryStep(t *testing.T) {
	order := []string{"a", "b", "c", "d", "e"}
	for _, failing := range order {
		t.Run(failing, func(t *testing.T) {
			w := newWorld()
			j, st := newJournal(t)
			boom := errors.New("boom")
			err := Apply(context.Background(), diamond(w, map[string]error{failing: boom}, 0), j, Options{})
			var ee *Error
			if !errors.As(err, &ee) || len(ee.Failed) != 1 || ee.Failed[0].Step != failing || !errors.Is(err, boom) {
				t.Fatalf("err = %v, want one failure of %s", err, failing)
			}
			if _, done := j.Done(failing); done {
				t.Fatalf("failed step %s journaled", failing)
			}
			// A new process: reload state from the store and run again.
			c, err := st.Get(context.Background(), spec.Ref{Type: "aws", Name: "t", Region: "us-east-1"})
			if err != nil {
				t.Fatal(err)
			}
			j2 := NewJournal(st, c)
			if err := Apply(context.Background(), diamond(w, nil, 0), j2, Options{}); err != nil {
				t.Fatal(err)
			}
			for _, id := range order {
				if w.made[id] != 1 {
					t.Errorf("%s made %d times, want exactly 1", id, w.made[id])
				}
			}
		})
	}
}

func TestFailureStartsNothingNewButLetsRunningFinish(t *testing.T) {
	w := newWorld()
	j, _ := newJournal(t)
	g := NewGraph()
	g.Add(
		w.step("fast-fail", nil, func() error { return errors.New("no") }, 0),
		w.step("slow", nil, nil, 100*time.Millisecond),
		w.step("after-slow", []string{"slow"}, nil, 0),
	)
	err := Apply(context.Background(), g, j, Options{})
	if err == nil {
		t.Fatal("want an error")
	}
	if _, done := j.Done("slow"); !done {
		t.Error("the running step was not let finish and journaled")
	}
	if _, done := j.Done("after-slow"); done {
		t.Error("a new step started after a failure")
	}
	var ee *Error
	if !errors.As(err, &ee) || ee.Pending != 1 {
		t.Errorf("pending = %+v, want 1", ee)
	}
}

func TestStopRequestIsInterruption(t *testing.T) {
	w := newWorld()
	j, _ := newJournal(t)
	stop := make(chan struct{})
	g := NewGraph()
	g.Add(w.step("first", nil, func() error { close(stop); return nil }, 0), w.step("second", []string{"first"}, nil, 0))
	err := Apply(context.Background(), g, j, Options{Stop: stop})
	if !errors.Is(err, ErrInterrupted) {
		t.Fatalf("err = %v, want interrupted", err)
	}
	if _, done := j.Done("first"); !done {
		t.Error("running step not journaled")
	}
	if w.made["second"] != 0 {
		t.Error("a step started after the stop request")
	}
}

func TestCancelStopsRunningSteps(t *testing.T) {
	w := newWorld()
	j, _ := newJournal(t)
	ctx, cancel := context.WithCancel(context.Background())
	g := NewGraph()
	g.Add(w.step("long", nil, nil, time.Hour))
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	start := time.Now()
	err := Apply(ctx, g, j, Options{})
	if !errors.Is(err, ErrInterrupted) || time.Since(start) > 5*time.Second {
		t.Fatalf("err = %v after %v", err, time.Since(start))
	}
}

func TestDestroyReverseOrderAndIdempotent(t *testing.T) {
	w := newWorld()
	j, _ := newJournal(t)
	var mu sync.Mutex
	var order []string
	g := diamond(w, nil, 0)
	if err := Apply(context.Background(), g, j, Options{}); err != nil {
		t.Fatal(err)
	}
	events := func(e Event) {
		if e.Kind == EventDone {
			mu.Lock()
			order = append(order, e.Step)
			mu.Unlock()
		}
	}
	if err := Destroy(context.Background(), g, j, Options{Events: events}); err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, id := range order {
		pos[id] = i
	}
	if !(pos["d"] < pos["b"] && pos["d"] < pos["c"] && pos["b"] < pos["a"] && pos["c"] < pos["a"]) {
		t.Errorf("delete order %v is not reverse dependency order", order)
	}
	if len(j.Cluster().Steps) != 0 {
		t.Errorf("journal not emptied: %v", j.Cluster().Steps)
	}
	// Again: everything absent, reported as skipped, no error.
	order = nil
	if err := Destroy(context.Background(), g, j, Options{Events: events}); err != nil {
		t.Fatal(err)
	}
	if len(order) != 0 {
		t.Errorf("second destroy deleted %v", order)
	}
}

func TestDestroyGoesOnWithIndependentBranches(t *testing.T) {
	j, _ := newJournal(t)
	var deleted sync.Map
	mk := func(id string, needs []string, err error) *Step {
		return &Step{ID: id, Needs: needs, Ensure: func(context.Context, *Run) (any, error) { return nil, nil },
			Delete: func(context.Context, *Run) error { deleted.Store(id, true); return err }}
	}
	g := NewGraph()
	g.Add(mk("net", nil, nil), mk("x", []string{"net"}, errors.New("stuck")), mk("y", []string{"net"}, nil))
	err := Destroy(context.Background(), g, j, Options{})
	if err == nil {
		t.Fatal("want the failure of x")
	}
	if _, ok := deleted.Load("y"); !ok {
		t.Error("independent branch y not deleted")
	}
	if _, ok := deleted.Load("net"); ok {
		t.Error("net deleted although x, which needs it, failed")
	}
}

func TestInputsChangeReensures(t *testing.T) {
	j, _ := newJournal(t)
	runs := 0
	mk := func(size int) *Graph {
		g := NewGraph()
		g.Add(&Step{ID: "pool", Inputs: size, Ensure: func(context.Context, *Run) (any, error) { runs++; return size, nil }})
		return g
	}
	for _, size := range []int{2, 2, 5, 5} {
		if err := Apply(context.Background(), mk(size), j, Options{}); err != nil {
			t.Fatal(err)
		}
	}
	if runs != 2 {
		t.Errorf("ensure ran %d times, want 2 (once per distinct inputs)", runs)
	}
}

func TestReconcileDestroysRemovedSteps(t *testing.T) {
	w := newWorld()
	j, _ := newJournal(t)
	mk := func(n int) *Graph {
		g := NewGraph()
		g.Add(w.step("base", nil, nil, 0))
		for i := 0; i < n; i++ {
			g.Add(w.step(fmt.Sprint("worker/", i), []string{"base"}, nil, 0))
		}
		return g
	}
	if err := Apply(context.Background(), mk(4), j, Options{}); err != nil {
		t.Fatal(err)
	}
	if err := Reconcile(context.Background(), mk(4), mk(2), j, Options{}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		id := fmt.Sprint("worker/", i)
		_, done := j.Done(id)
		if want := i < 2; done != want || (w.deleted[id] == 1) == want {
			t.Errorf("%s: journaled %v, deleted %d", id, done, w.deleted[id])
		}
	}
	if w.deleted["base"] != 0 {
		t.Error("shared step deleted")
	}
}

func TestGraphValidation(t *testing.T) {
	g := NewGraph()
	g.Add(&Step{ID: "a", Needs: []string{"b"}}, &Step{ID: "b", Needs: []string{"a"}})
	if _, err := g.Order(); err == nil {
		t.Error("cycle not reported")
	}
	g = NewGraph()
	g.Add(&Step{ID: "a", Needs: []string{"missing"}})
	if _, err := g.Order(); err == nil {
		t.Error("unknown need not reported")
	}
}

func TestTokenStableAndDistinct(t *testing.T) {
	j, _ := newJournal(t)
	r1 := &Run{step: &Step{ID: "x"}, j: j}
	r2 := &Run{step: &Step{ID: "y"}, j: j}
	if r1.Token() != r1.Token() || r1.Token() == r2.Token() || r1.Token("a") == r1.Token("b") {
		t.Error("tokens must be stable per step and parts, distinct otherwise")
	}
	if n := len(r1.Token()); n > 64 {
		t.Errorf("token of %d chars exceeds EC2's 64", n)
	}
}

func TestTokenChangesAfterDelete(t *testing.T) {
	j, _ := newJournal(t)
	r := &Run{step: &Step{ID: "vm/wp/3"}, j: j}
	before := r.Token()
	if err := j.Record(context.Background(), "vm/wp/3", []byte(`"i-1"`)); err != nil {
		t.Fatal(err)
	}
	if r.Token() != before {
		t.Error("the token changed while the resource exists")
	}
	if err := j.Forget(context.Background(), "vm/wp/3"); err != nil {
		t.Fatal(err)
	}
	if r.Token() == before {
		t.Error("a resource made again after its delete would reuse the deleted one's token")
	}
}

func TestStopInterruptsWaitingSteps(t *testing.T) {
	j, _ := newJournal(t)
	stop := make(chan struct{})
	busyDone := make(chan struct{})
	g := NewGraph()
	g.Add(
		&Step{ID: "waits", Ensure: func(ctx context.Context, r *Run) (any, error) {
			r.Waiting("waiting for AWS")
			<-ctx.Done() // a waiter: only cancellation ends it
			return nil, ctx.Err()
		}},
		&Step{ID: "busy", Ensure: func(ctx context.Context, r *Run) (any, error) {
			close(stop)
			time.Sleep(50 * time.Millisecond) // a call in flight is not cut short
			close(busyDone)
			return "ok", ctx.Err()
		}},
	)
	start := time.Now()
	err := Apply(context.Background(), g, j, Options{Stop: stop})
	if !errors.Is(err, ErrInterrupted) {
		t.Fatalf("err = %v", err)
	}
	var ee *Error
	if errors.As(err, &ee) && len(ee.Failed) != 0 {
		t.Errorf("a step stopped while waiting counts as failed: %v", ee.Failed)
	}
	if _, done := j.Done("busy"); !done {
		t.Error("the busy step was not let finish")
	}
	if _, done := j.Done("waits"); done {
		t.Error("the interrupted wait was journaled as done")
	}
	if time.Since(start) > 5*time.Second {
		t.Error("the stop did not interrupt the wait")
	}
}

// TestOnlyRunsPartAndReadsTheRest: a graph of part of the steps runs only
// those; they still read the journaled outputs of the steps left out, and
// a step left out is neither run again nor needed to have run in this
// Apply.
func TestOnlyRunsPartAndReadsTheRest(t *testing.T) {
	w := newWorld()
	g := NewGraph()
	g.Add(w.step("a", nil, nil, 0), w.step("b", []string{"a"}, nil, 0), w.step("c", []string{"b"}, nil, 0))
	j, _ := newJournal(t)
	if err := Apply(context.Background(), g, j, Options{}); err != nil {
		t.Fatal(err)
	}
	g2 := NewGraph()
	g2.Add(w.step("a", nil, nil, 0), w.step("b", []string{"a"}, nil, 0), w.step("c", []string{"b"}, nil, 0), w.step("d", []string{"b", "c"}, nil, 0))
	part := g2.Only(func(s *Step) bool { return s.ID == "c" || s.ID == "d" })
	if part.Len() != 2 || len(part.Step("d").Needs) != 1 || part.Step("d").Needs[0] != "c" {
		t.Fatalf("Only kept %v, d needs %v", part.IDs(), part.Step("d").Needs)
	}
	if err := Apply(context.Background(), part, j, Options{}); err != nil {
		t.Fatalf("d could not read b's journaled output: %v", err)
	}
	for id, want := range map[string]int{"a": 1, "b": 1, "c": 2, "d": 1} {
		if w.made[id] != want {
			t.Errorf("%s made %d times, want %d", id, w.made[id], want)
		}
	}
}

// The plan lists the steps wave by wave: a step's wave is one more than
// the latest of what it needs, and the text says where each wave starts.
func TestPlanWaves(t *testing.T) {
	g := diamond(newWorld(), nil, 0)
	plan, err := g.Plan(func(id string) bool { return id == "a" })
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range plan {
		got = append(got, fmt.Sprintf("%s:%d", e.Step, e.Wave))
	}
	if s := strings.Join(got, " "); s != "a:1 e:1 b:2 c:2 d:3" {
		t.Errorf("plan %s, want a:1 e:1 b:2 c:2 d:3", s)
	}
	var b strings.Builder
	WritePlan(&b, plan)
	want := "wave 1 of 3:\n  1. a  make a (done)\n  2. e  make e\nwave 2 of 3:\n  3. b  make b\n        after a\n  4. c  make c\n        after a\nwave 3 of 3:\n  5. d  make d\n        after b, c\n"
	if b.String() != want {
		t.Errorf("written plan:\n%s\nwant:\n%s", b.String(), want)
	}
}
