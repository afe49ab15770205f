package infra

import (
	"context"
	"errors"
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
	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	for _, c := range []struct {
		name string
		prio int
	}{{"cp/1", prioLast}, {"wp-batch-a", prioWorkers}, {"etcd/2", prioFirst}, {"wp-batch-b", prioWorkers}, {"cp/0", prioFirst}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Wait(ctx, c.prio); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, c.name)
			mu.Unlock()
		}()
		time.Sleep(2 * time.Millisecond) // arrival order
	}
	wg.Wait()
	want := []string{"etcd/2", "cp/0", "wp-batch-a", "wp-batch-b", "cp/1"}
	for k := range want {
		if k >= len(order) || order[k] != want[k] {
			t.Fatalf("order = %v, want %v", order, want)
		}
	}
}

// Launches that arrive together while the bucket is full are gathered:
// the bucket's burst goes by priority too.
func TestPacerGathersTheBurstByPriority(t *testing.T) {
	p := newPacer(0.01, 2, 100*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var mu sync.Mutex
	var got []string
	var wg sync.WaitGroup
	for _, c := range []struct {
		name string
		prio int
	}{{"cp/1", prioLast}, {"wp-batch", prioWorkers}, {"etcd/0", prioFirst}, {"lb/0", prioFirst}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Wait(ctx, c.prio); err != nil {
				return // beyond the burst: the bucket refills in 100 s
			}
			mu.Lock()
			got = append(got, c.name)
			mu.Unlock()
		}()
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	if len(got) != 2 || !(got[0] == "etcd/0" && got[1] == "lb/0" || got[0] == "lb/0" && got[1] == "etcd/0") {
		t.Fatalf("the burst of 2 went to %v, want etcd/0 and lb/0", got)
	}
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
