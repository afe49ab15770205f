package infra

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestPacerBurstThenRefillWithMargin(t *testing.T) {
	p := newPacer(launchRate, launchBurst, 0)
	ctx := context.Background()
	start := time.Now()
	for range launchBurst {
		if err := p.Wait(ctx, prioFirst); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("the bucket's %d calls waited %s, want none", launchBurst, d)
	}
	if err := p.Wait(ctx, prioFirst); err != nil {
		t.Fatal(err)
	}
	// The sixth call waits for the refill (1/2 s) and the margin.
	if d, want := time.Since(start), time.Second/launchRate+paceMargin; d < want {
		t.Fatalf("the call after the burst went after %s, want at least %s", d, want)
	}
}

// Calls that wait for the bucket go by priority, then in arrival order.
func TestPacerOrdersWaitingCallsByPriority(t *testing.T) {
	// A token every 200 ms: the waiting calls are let go one at a time,
	// and all have arrived before the first goes.
	p := newPacer(5, 1, 0)
	ctx := context.Background()
	if err := p.Wait(ctx, prioFirst); err != nil { // the bucket's one token
		t.Fatal(err)
	}
	order := letThrough(ctx, p, 2*time.Millisecond,
		paceCall{"cp/1", prioLast}, paceCall{"wp-batch-a", prioWorkers}, paceCall{"etcd/2", prioFirst}, paceCall{"wp-batch-b", prioWorkers}, paceCall{"cp/0", prioFirst})
	want := []string{"etcd/2", "cp/0", "wp-batch-a", "wp-batch-b", "cp/1"}
	if !slices.Equal(order, want) {
		t.Fatalf("order = %v, want %v", order, want)
	}
}

// Launches that arrive together while the bucket is full are gathered:
// the bucket's burst goes by priority too.
func TestPacerGathersTheBurstByPriority(t *testing.T) {
	p := newPacer(0.01, 2, 100*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	// Beyond the burst a wait ends with ctx: the bucket refills in 100 s.
	got := letThrough(ctx, p, 5*time.Millisecond,
		paceCall{"cp/1", prioLast}, paceCall{"wp-batch", prioWorkers}, paceCall{"etcd/0", prioFirst}, paceCall{"lb/0", prioFirst})
	if len(got) != 2 || !(got[0] == "etcd/0" && got[1] == "lb/0" || got[0] == "lb/0" && got[1] == "etcd/0") {
		t.Fatalf("the burst of 2 went to %v, want etcd/0 and lb/0", got)
	}
}

// paceCall is a call that waits for a pacer, by name.
type paceCall struct {
	name string
	prio int
}

// letThrough sends calls to p.Wait, gap apart in their order, and returns
// the names of those the pacer let go, in the order it let them go (a
// wait that ended with ctx is left out).
func letThrough(ctx context.Context, p *pacer, gap time.Duration, calls ...paceCall) []string {
	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	for _, c := range calls {
		wg.Go(func() {
			if p.Wait(ctx, c.prio) != nil {
				return
			}
			mu.Lock()
			order = append(order, c.name)
			mu.Unlock()
		})
		time.Sleep(gap) // arrival order
	}
	wg.Wait()
	return order
}

func TestPacerWaitEndsWithContext(t *testing.T) {
	p := newPacer(0.01, 1, 0)
	if err := p.Wait(context.Background(), prioFirst); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := p.Wait(ctx, prioFirst); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait = %v, want the context's deadline", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) != 0 {
		t.Fatalf("%d calls still queued after the only waiter gave up", len(p.queue))
	}
}

func TestLaunchPriority(t *testing.T) {
	for _, c := range []struct {
		role string
		i    int
		want int
	}{{RoleEtcd, 2, prioFirst}, {RoleLB, 0, prioFirst}, {RoleCP, 0, prioFirst}, {RoleWP, 0, prioWorkers}, {RoleCP, 1, prioLast}, {RoleCP, 2, prioLast}} {
		if got := launchPriority(c.role, c.i); got != c.want {
			t.Errorf("launchPriority(%s, %d) = %d, want %d", c.role, c.i, got, c.want)
		}
	}
}
