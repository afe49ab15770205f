package awsx

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// RetryInUse calls op until it succeeds, fails with "not found" (success:
// the resource is gone) or fails with something other than a dependency
// error (DependencyViolation, ResourceInUse). AWS releases the network
// interfaces of terminated instances and deleted load balancers minutes
// after they go, so a delete refused for a dependency is retried, with
// capped exponential backoff, for up to timeout. Each wait is reported to
// waiting (engine.Run.Waiting fits; nil reports nothing). When timeout
// passes, it returns the last dependency error, wrapped: IsDependency still
// matches it.
func RetryInUse(ctx context.Context, timeout time.Duration, waiting func(format string, a ...any), what string, op func(context.Context) error) error {
	first := min(max(timeout/30, 50*time.Millisecond), 2*time.Second)
	backoff := wait.Backoff{Duration: first, Factor: 1.5, Jitter: 0.2, Steps: 1 << 30, Cap: 20 * time.Second}
	waitCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	var last error
	err := backoff.DelayFunc().Until(waitCtx, true, true, func(context.Context) (bool, error) {
		// op runs under ctx, not waitCtx: a call in flight at the
		// deadline is not cut short.
		last = op(ctx)
		switch {
		case last == nil, IsNotFound(last):
			return true, nil
		case IsDependency(last):
			if waiting != nil {
				waiting("%s is still in use; waiting up to %s for AWS to release it (%s so far)", what, roundDuration(timeout), roundDuration(time.Since(start)))
			}
			return false, nil
		default:
			return false, last
		}
	})
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case IsDependency(last) && (wait.Interrupted(err) || errors.Is(err, context.DeadlineExceeded)):
		return fmt.Errorf("%s is still in use after %s: %w", what, roundDuration(timeout), last)
	default:
		return err
	}
}

// roundDuration rounds d for a message: milliseconds below a second,
// seconds above.
func roundDuration(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}
