package awsx

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
)

// SafeRetryer wraps the retry policy for create calls that have no
// idempotency token (CreateVpc, CreateSecurityGroup, ...), or whose token
// the emulator ignores. It retries only what AWS cannot have processed:
// throttling and a connection that was never made. Anything else (a reset
// after the request was sent, a lost response, a 5xx) is returned to
// CreateOnce, which looks for the resource before it tries again, so that a
// retry never makes a second copy. The base's backoff and attempts stay.
func SafeRetryer(base aws.Retryer) aws.Retryer {
	return &wrapped{RetryerV2: asV2(base), retryable: func(error) bool { return false }}
}

// wrapped changes which errors a retryer retries, and optionally its
// attempts, keeping the rest of it.
type wrapped struct {
	aws.RetryerV2
	// retryable is asked first; when it says no, throttling and requests
	// never sent are still retried, and nothing else.
	retryable func(error) bool
	// extend, if true, also retries what the base retries.
	extend   bool
	attempts int
	// delay, if set, is the wait after failed attempt n for the errors
	// retryable matches; others wait as the base says.
	delay func(n int) time.Duration
}

func (w *wrapped) RetryDelay(attempt int, err error) (time.Duration, error) {
	if w.delay != nil && w.retryable(err) {
		return w.delay(attempt), nil
	}
	return w.RetryerV2.RetryDelay(attempt, err)
}

func (w *wrapped) IsErrorRetryable(err error) bool {
	if w.retryable(err) {
		return true
	}
	if w.extend {
		return w.RetryerV2.IsErrorRetryable(err)
	}
	return notSent(err) || retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(err) == aws.TrueTernary
}

func (w *wrapped) MaxAttempts() int {
	if w.attempts > w.RetryerV2.MaxAttempts() {
		return w.attempts
	}
	return w.RetryerV2.MaxAttempts()
}

// asV2 returns base as a RetryerV2 (a nil base is the default policy).
func asV2(base aws.Retryer) aws.RetryerV2 {
	switch b := base.(type) {
	case nil:
		return NewRetryer().(aws.RetryerV2)
	case aws.RetryerV2:
		return b
	default:
		return v2Adapter{b}
	}
}

type v2Adapter struct{ aws.Retryer }

func (a v2Adapter) GetAttemptToken(context.Context) (func(error) error, error) {
	return a.GetInitialToken(), nil
}

// notSent reports whether err says the request never reached AWS.
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// unsure reports whether a failed call may have been carried out anyway or
// may succeed if tried again.
func unsure(err error) bool {
	return retry.IsErrorRetryables(retry.DefaultRetryables).IsErrorRetryable(err) == aws.TrueTernary
}

// CreateOnce makes a resource through an API without an idempotency
// token. create must be called with SafeRetryer. When it fails in a way
// that leaves unknown whether AWS made the resource, CreateOnce asks find
// (by tags) before it tries again, with the SDK's backoff and a bound.
func CreateOnce[T any](ctx context.Context, find func(context.Context) (T, bool, error), create func(context.Context) (T, error)) (T, error) {
	backoff := retry.NewExponentialJitterBackoff(MaxBackoff)
	for attempt := 1; ; attempt++ {
		v, err := create(ctx)
		if err == nil || !unsure(err) || attempt >= MaxAttempts {
			return v, err
		}
		if found, ok, ferr := find(ctx); ferr == nil && ok {
			return found, nil
		}
		d, derr := backoff.BackoffDelay(attempt, err)
		if derr != nil {
			return v, err
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return v, ctx.Err()
		case <-t.C:
		}
	}
}

// IsTransient reports whether a failed call may succeed if tried again
// (throttling, a 5xx, a dropped connection).
func IsTransient(err error) bool { return unsure(err) }
