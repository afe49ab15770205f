package awsx

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
)

// SafeRetryer wraps the retry policy for create calls that have no
// idempotency token (CreateVpc, CreateSecurityGroup, ...). It retries only
// what AWS cannot have processed: throttling and a connection that was
// never made. Anything else (a reset after the request was sent, a lost
// response, a 5xx) is returned to CreateOnce, which looks for the resource
// before it tries again, so that a retry never makes a second copy.
func SafeRetryer(aws.Retryer) aws.Retryer {
	return retry.NewStandard(func(so *retry.StandardOptions) {
		so.MaxAttempts = MaxAttempts
		so.MaxBackoff = MaxBackoff
		so.RateLimiter = ratelimit.None
		so.Retryables = []retry.IsErrorRetryable{retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
			if notSent(err) || retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(err) == aws.TrueTernary {
				return aws.TrueTernary
			}
			return aws.FalseTernary
		})}
	})
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
