package infra

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/time/rate"

	"github.com/kforge/kforge/internal/awsx"
)

// watcher waits for many instances at once with one DescribeInstances per
// poll for all of them, instead of one per instance: a create of a hundred
// VMs reads their state in batches.
//
// Each wait has its own schedule: a new wait is looked at in the next poll,
// which starts at once unless one is in flight (then right after it, with
// everyone who started waiting meanwhile); an instance not yet in the
// wanted state is looked at again after recheckFirst, backing off to
// recheckMax. Every poll covers every waiting instance, so waits batch
// whatever their schedule. A token bucket keeps polls within EC2's request
// rate limits (DescribeInstances: a bucket of 100, refilled at 20 a second).
type watcher struct {
	ec2   *ec2.Client
	polls *rate.Limiter

	mu      sync.Mutex
	waiters map[string][]*waitReq
	active  bool
	// kick wakes the poller when a new wait starts, so that it is looked
	// at now rather than when the others are due.
	kick chan struct{}
	// launching counts the launches in flight; settled is closed when it
	// drops to zero. A poll waits (up to launchHold) for the launches in
	// flight, so that one poll sees a whole wave running instead of one
	// poll per early launch.
	launching int
	settled   chan struct{}
}

// launchHold bounds how long a poll waits for launches in flight.
const launchHold = time.Second

// launchStarted and launchEnded bracket a RunInstances.
func (w *watcher) launchStarted() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.launching == 0 {
		w.settled = make(chan struct{})
	}
	w.launching++
}

func (w *watcher) launchEnded() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.launching--
	if w.launching == 0 {
		close(w.settled)
	}
}

type waitReq struct {
	done func(ec2types.Instance) (bool, error)
	ch   chan waitResult
	// due is when the instance is to be looked at next; looks counts the
	// polls that saw it not yet in the wanted state.
	due   time.Time
	looks int
}

type waitResult struct {
	inst ec2types.Instance
	err  error
}

// Poll pacing.
const (
	pollRate     = 5 // polls a second, sustained
	pollBurst    = 5
	recheckFirst = time.Second
	recheckMax   = 5 * time.Second
	batchLimit   = 200 // instance IDs per DescribeInstances filter
)

func newWatcher(c *ec2.Client) *watcher {
	return &watcher{
		ec2:     c,
		polls:   rate.NewLimiter(pollRate, pollBurst),
		waiters: map[string][]*waitReq{},
		kick:    make(chan struct{}, 1),
	}
}

// recheck is how long after its nth look (1-based) an instance not yet in
// the wanted state is looked at again.
func recheck(n int) time.Duration {
	d := recheckFirst
	for i := 1; i < n && d < recheckMax; i++ {
		d *= 2
	}
	return min(d, recheckMax)
}

// wait blocks until done reports true for the instance (or an error), or
// ctx ends.
func (w *watcher) wait(ctx context.Context, id string, done func(ec2types.Instance) (bool, error)) (ec2types.Instance, error) {
	req := &waitReq{done: done, ch: make(chan waitResult, 1), due: time.Now()}
	w.mu.Lock()
	w.waiters[id] = append(w.waiters[id], req)
	if !w.active {
		w.active = true
		go w.poll(awsx.WithTraceLabel(context.WithoutCancel(ctx), "instance-watch"))
	} else {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	w.mu.Unlock()
	select {
	case r := <-req.ch:
		return r.inst, r.err
	case <-ctx.Done():
		w.drop(id, req)
		return ec2types.Instance{}, ctx.Err()
	}
}

func (w *watcher) drop(id string, req *waitReq) {
	w.mu.Lock()
	defer w.mu.Unlock()
	list := w.waiters[id]
	for i, r := range list {
		if r == req {
			w.waiters[id] = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(w.waiters[id]) == 0 {
		delete(w.waiters, id)
	}
}

// poll runs while anyone waits.
func (w *watcher) poll(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		w.mu.Lock()
		if len(w.waiters) == 0 {
			w.active = false
			w.mu.Unlock()
			return
		}
		var next time.Time
		for _, reqs := range w.waiters {
			for _, r := range reqs {
				if next.IsZero() || r.due.Before(next) {
					next = r.due
				}
			}
		}
		w.mu.Unlock()
		if d := time.Until(next); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-w.kick:
				timer.Stop()
			}
			continue
		}
		w.mu.Lock()
		settled, busy := w.settled, w.launching > 0
		w.mu.Unlock()
		if busy {
			hold := time.NewTimer(launchHold)
			select {
			case <-settled:
			case <-hold.C:
			}
			hold.Stop()
		}
		if err := w.polls.Wait(ctx); err != nil {
			return // ctx never ends: the poller's context is not cancelled
		}

		// Everyone waiting now is in this poll.
		w.mu.Lock()
		polled := map[*waitReq]bool{}
		ids := make([]string, 0, len(w.waiters))
		for id, reqs := range w.waiters {
			ids = append(ids, id)
			for _, r := range reqs {
				polled[r] = true
			}
		}
		w.mu.Unlock()

		found, pollErr := w.describe(ctx, ids)

		w.mu.Lock()
		now := time.Now()
		for id, reqs := range w.waiters {
			in, ok := found[id]
			keep := reqs[:0]
			for _, r := range reqs {
				if !polled[r] {
					keep = append(keep, r)
					continue
				}
				if ok {
					done, err := r.done(in)
					if done || err != nil {
						r.ch <- waitResult{inst: in, err: err}
						continue
					}
				}
				// Not there yet (or not visible yet: a just launched
				// instance may not be listed for a moment).
				r.looks++
				r.due = now.Add(recheck(r.looks))
				keep = append(keep, r)
			}
			if len(keep) == 0 {
				delete(w.waiters, id)
			} else {
				w.waiters[id] = keep
			}
		}
		if pollErr != nil && !awsx.IsTransient(pollErr) {
			for id, reqs := range w.waiters {
				for _, r := range reqs {
					r.ch <- waitResult{err: fmt.Errorf("describe instances: %w", pollErr)}
				}
				delete(w.waiters, id)
			}
		}
		w.mu.Unlock()
	}
}

// describe reads the state of the instances, batchLimit at a time.
func (w *watcher) describe(ctx context.Context, ids []string) (map[string]ec2types.Instance, error) {
	found := map[string]ec2types.Instance{}
	for start := 0; start < len(ids); start += batchLimit {
		chunk := ids[start:min(start+batchLimit, len(ids))]
		// A filter, not InstanceIds: an instance just launched may not
		// be visible yet, and InstanceIds would fail the whole batch.
		// On an error, the instances of the pages read so far are in
		// found too.
		all, err := awsx.Collect(ctx, ec2.NewDescribeInstancesPaginator(w.ec2, &ec2.DescribeInstancesInput{
			Filters: []ec2types.Filter{{Name: aws.String("instance-id"), Values: chunk}},
		}), reservationInstances)
		for _, in := range all {
			found[aws.ToString(in.InstanceId)] = in
		}
		if err != nil {
			return found, err
		}
	}
	return found, nil
}

// running is the condition of a launched instance that kforge can use:
// running, with its addresses.
func running(in ec2types.Instance) (bool, error) {
	if in.State == nil {
		return false, nil
	}
	switch in.State.Name {
	case ec2types.InstanceStateNameRunning:
		return aws.ToString(in.PrivateIpAddress) != "", nil
	case ec2types.InstanceStateNamePending:
		return false, nil
	default:
		reason := ""
		if in.StateReason != nil {
			reason = ": " + aws.ToString(in.StateReason.Message)
		}
		return false, fmt.Errorf("instance %s is %s%s", aws.ToString(in.InstanceId), in.State.Name, reason)
	}
}

// terminated is the condition of an instance that is gone.
func terminated(in ec2types.Instance) (bool, error) {
	return in.State != nil && in.State.Name == ec2types.InstanceStateNameTerminated, nil
}

// stopped is the condition of an instance that is stopped (and may be
// started again).
func stopped(in ec2types.Instance) (bool, error) {
	return in.State != nil && in.State.Name == ec2types.InstanceStateNameStopped, nil
}
