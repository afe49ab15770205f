// Package awsx is kforge's AWS plumbing: the SDK configuration with the
// credentials package credentials picks, the retry policy, error classes, the
// ownership tags, and an optional trace of every API call.
package awsx

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	awscreds "github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/kforge/kforge/internal/credentials"
)

// Retry policy: bounded, with jittered exponential backoff, and no client
// retry quota (a create makes many calls, and a throttled burst must not
// exhaust a shared budget and fail calls that would succeed on retry).
const (
	MaxAttempts = 10
	MaxBackoff  = 20 * time.Second
)

// Options select how the SDK configuration is built.
type Options struct {
	// Region is the cluster's region.
	Region string
	// Home is KFORGE_HOME, where `kforge cred` stores credentials.
	Home string
	// TracePath, if set, receives one JSON line per API call attempt
	// (KFORGE_AWS_TRACE).
	TracePath string
}

// Load returns an SDK configuration whose credentials come from where
// package credentials says, and the kind of that source. The SDK's own
// settings apply, AWS_ENDPOINT_URL among them. The clients made from one configuration share its
// connections and ask the static look-ups (instance types, images,
// availability zones) once: load it once per command.
func Load(ctx context.Context, o Options) (aws.Config, string, error) {
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(NewRetryer),
		config.WithHTTPClient(NewHTTPClient()),
	}
	if o.Region != "" {
		opts = append(opts, config.WithRegion(o.Region))
	}
	src, err := credentials.Resolve(os.Getenv, o.Home)
	if err != nil {
		return aws.Config{}, "", err
	}
	if k := src.Keys; k != nil {
		opts = append(opts, config.WithCredentialsProvider(
			awscreds.NewStaticCredentialsProvider(k.AccessKeyID, k.SecretAccessKey, k.SessionToken)))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, "", fmt.Errorf("load AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return aws.Config{}, "", fmt.Errorf("no AWS region: pass --region")
	}
	if o.TracePath != "" {
		t, err := OpenTrace(o.TracePath)
		if err != nil {
			return aws.Config{}, "", err
		}
		cfg.APIOptions = append(cfg.APIOptions, t.Middleware)
	}
	cfg.APIOptions = append(cfg.APIOptions, retryNoticeMiddleware, newMemo().middleware)
	return cfg, src.Kind, nil
}

// MaxConnsPerEndpoint bounds the connections to one AWS endpoint (an
// EC2, IAM or EKS endpoint of a region), and is how many idle ones are
// kept for reuse. A create of a hundred VMs makes a hundred calls at once:
// the excess waits for a connection instead of opening a socket each, and
// the next burst reuses the connections instead of opening new ones.
const MaxConnsPerEndpoint = 64

// NewHTTPClient is the HTTP client of every AWS call: the SDK's, with
// MaxConnsPerEndpoint.
func NewHTTPClient() *awshttp.BuildableClient {
	return awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
		t.MaxConnsPerHost = MaxConnsPerEndpoint
		t.MaxIdleConnsPerHost = MaxConnsPerEndpoint
	})
}

// NewRetryer is kforge's retry policy for every AWS call.
func NewRetryer() aws.Retryer {
	return retry.NewStandard(func(so *retry.StandardOptions) {
		so.MaxAttempts = MaxAttempts
		so.MaxBackoff = MaxBackoff
		so.RateLimiter = ratelimit.None
	})
}

// NewAdaptiveRetryer is kforge's retry policy in the SDK's adaptive mode,
// for calls made in bursts against a small request bucket (EC2 allows 5
// RunInstances at once, then 2 a second). It sends at full speed until AWS
// throttles; from then on it rate-limits its calls on the client (a token
// bucket that follows the throttling it sees), so that waiting calls wait
// for a token instead of using up their attempts. Share one retryer among
// the calls of one bucket: its rate is per retryer.
func NewAdaptiveRetryer() aws.Retryer {
	return retry.NewAdaptiveMode(func(o *retry.AdaptiveModeOptions) {
		o.StandardOptions = append(o.StandardOptions, func(so *retry.StandardOptions) {
			so.MaxAttempts = MaxAttempts
			so.MaxBackoff = MaxBackoff
			so.RateLimiter = ratelimit.None
		})
	})
}

// Eventual wraps a retryer so that errors matched by eventual (an IAM role
// or instance profile that another service cannot see yet) are retried for
// about a minute, on top of what the base retries (with the base's
// backoff). It composes: Eventual(SafeRetryer(r), m) retries m's errors and
// what SafeRetryer retries, nothing else.
func Eventual(base aws.Retryer, eventual func(error) bool) aws.Retryer {
	return &wrapped{RetryerV2: asV2(base), retryable: eventual, extend: true, attempts: eventualAttempts, delay: eventualDelay}
}

// The retries of eventual consistency wait from 1s, doubling up to
// eventualMaxDelay, each wait between half and all of that (jitter): the
// eventualAttempts attempts span 33 to 65 seconds. The SDK's backoff, which
// starts at 50ms for errors other than throttling, would give up within
// seconds, before IAM has propagated.
const (
	eventualAttempts = 10
	eventualMaxDelay = 10 * time.Second
)

// eventualDelay is the wait after failed attempt n (1-based) of an
// eventually consistent call.
func eventualDelay(n int) time.Duration {
	d := eventualMaxDelay
	if n < 5 {
		d = min(time.Second<<max(n-1, 0), eventualMaxDelay)
	}
	return d/2 + rand.N(d/2+1)
}
