// Package awsx is kforge's AWS plumbing: the SDK configuration with the
// credentials package credentials picks, the retry policy, error classes, the
// ownership tags, and an optional trace of every API call.
package awsx

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	awscreds "github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/smithy-go/logging"

	"github.com/kforge/kforge/internal/credentials"
	"github.com/kforge/kforge/internal/spec"
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
	// Debug, if set, receives the SDK's own log: its warnings, each
	// retry, and each request's method and URL (--debug). Without it the
	// SDK logs nothing: its lines never reach the user's terminal.
	Debug io.Writer
	// Unchecked leaves the credentials unresolved: for `kforge cred`,
	// which checks the keys it is given, not the ones kforge has.
	Unchecked bool
}

// Load returns an SDK configuration whose credentials come from where
// package credentials says, and the kind of that source. The SDK's own
// settings apply, AWS_ENDPOINT_URL among them. The clients made from one configuration share its
// connections and ask the static look-ups (instance types, images,
// availability zones) once: load it once per command.
//
// The credentials are resolved here, once, before any API call: finding
// none (or a profile that does not exist) is a UsageError that says where
// kforge looks, not a failure of the first call after its retries.
func Load(ctx context.Context, o Options) (aws.Config, string, error) {
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(NewRetryer),
		config.WithHTTPClient(NewHTTPClient()),
		config.WithLogger(logging.Nop{}),
	}
	if o.Debug != nil {
		opts = append(opts, config.WithLogger(logging.NewStandardLogger(o.Debug)),
			config.WithClientLogMode(aws.LogRetries|aws.LogRequest))
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
	if src.Kind == credentials.Chain && !o.Unchecked {
		if err := CheckProfile(ctx, os.Getenv); err != nil {
			return aws.Config{}, "", err
		}
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, "", fmt.Errorf("load AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return aws.Config{}, "", spec.Usagef("no AWS region: %s", spec.RegionHelp)
	}
	switch {
	case o.Unchecked:
	case cfg.Credentials == nil:
		return aws.Config{}, "", spec.Usagef("no AWS credentials: %s", credentials.Howto)
	default:
		if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
			if ctx.Err() != nil {
				return aws.Config{}, "", ctx.Err()
			}
			return aws.Config{}, "", spec.Usagef("no usable AWS credentials (%s): %s", credentialsProblem(err, src.Kind), credentials.Howto)
		}
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

// credentialsProblem says in one line why the credentials of a source
// could not be had. The SDK's chain error lists every provider it tried,
// over several lines; only the gist is shown.
func credentialsProblem(err error, kind string) string {
	if kind == credentials.Chain {
		name, _ := Profile(os.Getenv)
		msg := Message(err)
		if strings.Contains(msg, "failed to refresh cached credentials") && strings.Contains(msg, "no EC2 IMDS role found") ||
			strings.Contains(msg, "no valid providers") || strings.Contains(msg, "failed to retrieve credentials") && !strings.Contains(msg, "sso") {
			return fmt.Sprintf("none in the environment, in kforge cred, in AWS profile %q or from an instance role", name)
		}
	}
	msg := Message(err)
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	return msg
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
