package ha

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kforge/kforge/internal/awsx"
)

// watcher waits for many instances at once with one DescribeInstances per
// poll for all of them, instead of one per instance: a create of a hundred
// VMs reads their state in batches.
type watcher struct {
	ec2 *ec2.Client

	mu      sync.Mutex
	waiters map[string][]*waitReq
	active  bool
	// kick wakes a poller in a long back-off when a new wait starts, so a
	// VM launched late in a wave is not left waiting for the slow pace of
	// the early ones.
	kick chan struct{}
}

type waitReq struct {
	done func(ec2types.Instance) (bool, error)
	ch   chan waitResult
}

type waitResult struct {
	inst ec2types.Instance
	err  error
}

// Poll pacing: the first look comes soon after a launch (to batch the
// launches of one wave), later ones back off.
const (
	pollFirst  = 300 * time.Millisecond
	pollMax    = 5 * time.Second
	batchLimit = 200 // instance IDs per DescribeInstances filter
)

func newWatcher(c *ec2.Client) *watcher {
	return &watcher{ec2: c, waiters: map[string][]*waitReq{}, kick: make(chan struct{}, 1)}
}

// wait blocks until done reports true for the instance (or an error), or
// ctx ends.
func (w *watcher) wait(ctx context.Context, id string, done func(ec2types.Instance) (bool, error)) (ec2types.Instance, error) {
	req := &waitReq{done: done, ch: make(chan waitResult, 1)}
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
	delay := pollFirst
	for {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-w.kick:
			// A new wait: look soon, batched with whoever else starts
			// waiting meanwhile.
			t.Stop()
			delay = pollFirst
			time.Sleep(pollFirst)
		}
		w.mu.Lock()
		ids := make([]string, 0, len(w.waiters))
		for id := range w.waiters {
			ids = append(ids, id)
		}
		if len(ids) == 0 {
			w.active = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()

		found := map[string]ec2types.Instance{}
		var pollErr error
		for start := 0; start < len(ids); start += batchLimit {
			chunk := ids[start:min(start+batchLimit, len(ids))]
			// A filter, not InstanceIds: an instance just launched may not
			// be visible yet, and InstanceIds would fail the whole batch.
			pages := ec2.NewDescribeInstancesPaginator(w.ec2, &ec2.DescribeInstancesInput{
				Filters: []ec2types.Filter{{Name: aws.String("instance-id"), Values: chunk}},
			})
			for pages.HasMorePages() {
				page, err := pages.NextPage(ctx)
				if err != nil {
					pollErr = err
					break
				}
				for _, r := range page.Reservations {
					for _, in := range r.Instances {
						found[aws.ToString(in.InstanceId)] = in
					}
				}
			}
		}

		w.mu.Lock()
		for id, reqs := range w.waiters {
			in, ok := found[id]
			if !ok {
				continue
			}
			keep := reqs[:0]
			for _, r := range reqs {
				done, err := r.done(in)
				if done || err != nil {
					r.ch <- waitResult{inst: in, err: err}
					continue
				}
				keep = append(keep, r)
			}
			if len(keep) == 0 {
				delete(w.waiters, id)
			} else {
				w.waiters[id] = keep
			}
		}
		if pollErr != nil && !isTransient(pollErr) {
			for id, reqs := range w.waiters {
				for _, r := range reqs {
					r.ch <- waitResult{err: fmt.Errorf("describe instances: %w", pollErr)}
				}
				delete(w.waiters, id)
			}
		}
		w.mu.Unlock()
		delay = min(delay*2, pollMax)
	}
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
