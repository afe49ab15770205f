package infra

import (
	"context"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// EC2 documents a request bucket per action, per account and region. Two
// of them are the ones a create of many workers draws on: RunInstances (5
// calls at once, refilled at 2 a second) and CreateTags (100, refilled at
// 10 a second; one call per worker of a batch names it).
const (
	launchBurst = 5
	launchRate  = 2
	tagBurst    = 100
	tagRate     = 10
	// paceMargin is how much later than the bucket's refill a call that
	// had to wait is sent. Without it a call sent at the very moment this
	// side's bucket refills can reach EC2 a little before EC2's has (the
	// first calls' trip times differ by tens of milliseconds), and one
	// refused launch costs the adaptive retryer's backoff, hundreds of
	// milliseconds, far more than the margin. The margin does not
	// accumulate: the schedule stays the bucket's.
	paceMargin = 50 * time.Millisecond
	// launchGather is how long the first launch of a wave waits for the
	// others: launches become ready together (they need the same network)
	// within tens of milliseconds, and the bucket's first 5 then go by
	// priority too, not to whoever asked first.
	launchGather = 40 * time.Millisecond
)

// Launch priorities: when launches wait for EC2's bucket (or arrive
// together while it is full), the VMs the bootstrap needs first go first (etcd, the load balancer, the first
// control plane), then the batches of workers, whose naming and instance
// profile checks then overlap the launches still waiting, then the other
// control planes, which join only once the first one runs Kubernetes.
const (
	prioFirst = iota
	prioWorkers
	prioLast
)

// launchPriority is the priority of the launch of VM i of a role.
func launchPriority(role string, i int) int {
	switch {
	case role == RoleWP:
		return prioWorkers
	case role == RoleCP && i > 0:
		return prioLast
	default:
		return prioFirst
	}
}

// pacer holds a run's calls of one action to EC2's bucket for it on the
// client, so that a wave of them is not refused and then slowed by the
// retryer's backoff. The calls that wait go in order of priority, then of
// arrival. With gather set, a call that finds the bucket full waits that
// long for others, so that the bucket's burst goes by priority too.
type pacer struct {
	lim    *rate.Limiter
	margin time.Duration
	gather time.Duration

	mu      sync.Mutex
	queue   []*paced // by priority, then arrival
	serving bool
}

type paced struct {
	prio  int
	ready chan struct{}
}

func newPacer(perSecond float64, burst int, gather time.Duration) *pacer {
	return &pacer{lim: rate.NewLimiter(rate.Limit(perSecond), burst), margin: paceMargin, gather: gather}
}

// Wait blocks until the next call may go, or ctx ends. Calls of a lower
// prio value go first.
func (p *pacer) Wait(ctx context.Context, prio int) error {
	p.mu.Lock()
	full := p.gather > 0 && p.lim.Tokens() >= float64(p.lim.Burst())
	if len(p.queue) == 0 && !full && p.lim.Allow() {
		p.mu.Unlock()
		return nil
	}
	w := &paced{prio: prio, ready: make(chan struct{})}
	// After every call of the same or a higher priority.
	at := slices.IndexFunc(p.queue, func(q *paced) bool { return q.prio > prio })
	if at < 0 {
		at = len(p.queue)
	}
	p.queue = slices.Insert(p.queue, at, w)
	if !p.serving {
		p.serving = true
		wait := time.Duration(0)
		if full {
			wait = p.gather
		}
		go p.serve(wait)
	}
	p.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		p.mu.Lock()
		defer p.mu.Unlock()
		// Gone from the queue, unless its turn came as it gave up (the
		// token is then spent).
		p.queue = slices.DeleteFunc(p.queue, func(q *paced) bool { return q == w })
		return ctx.Err()
	}
}

// serve hands the bucket's tokens to the waiting calls, one at a time,
// while any waits, after gathering arrivals for gather.
func (p *pacer) serve(gather time.Duration) {
	time.Sleep(gather)
	for {
		if d := p.lim.Reserve().Delay(); d > 0 {
			time.Sleep(d + p.margin)
		}
		p.mu.Lock()
		if len(p.queue) > 0 {
			// Otherwise everyone waiting gave up, and the token goes
			// unused.
			close(p.queue[0].ready)
			p.queue = p.queue[1:]
		}
		if len(p.queue) == 0 {
			p.serving = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
}
