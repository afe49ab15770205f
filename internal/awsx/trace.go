package awsx

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmw "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// TraceRecord is one API call attempt, as KFORGE_AWS_TRACE writes it.
type TraceRecord struct {
	Time time.Time `json:"time"`
	// Step is the label of the context the call was made in: the
	// lifecycle step, when the engine runs one.
	Step      string  `json:"step,omitempty"`
	Service   string  `json:"service"`
	Operation string  `json:"operation"`
	Attempt   int     `json:"attempt"`
	Status    int     `json:"status,omitempty"`
	Code      string  `json:"code,omitempty"`
	Millis    float64 `json:"ms"`
}

// Trace appends a JSON line per AWS call attempt to a file. It never
// records parameters, so no secret reaches it.
type Trace struct {
	mu sync.Mutex
	f  *os.File
}

// OpenTrace opens a trace file for appending. Each record is one write to
// an O_APPEND file, so several processes can share one trace.
func OpenTrace(path string) (*Trace, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open AWS trace: %w", err)
	}
	return &Trace{f: f}, nil
}

// Middleware adds the trace to an SDK client's stack, after the retry
// middleware so that each attempt is seen.
func (t *Trace) Middleware(stack *middleware.Stack) error {
	if _, ok := stack.Finalize.Get("Retry"); !ok {
		return nil // a presign stack: nothing is sent
	}
	return stack.Finalize.Insert(middleware.FinalizeMiddlewareFunc("kforgeTrace",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			start := time.Now()
			out, md, err := next.HandleFinalize(ctx, in)
			rec := TraceRecord{Time: start.UTC(), Service: awsmw.GetServiceID(ctx), Operation: awsmw.GetOperationName(ctx),
				Attempt: attemptOf(ctx), Millis: float64(time.Since(start).Microseconds()) / 1000}
			rec.Step, _ = ctx.Value(labelKey{}).(string)
			if resp, ok := awsmw.GetRawResponse(md).(*smithyhttp.Response); ok && resp != nil {
				rec.Status = resp.StatusCode
			}
			if err != nil {
				rec.Code = Code(err)
				if rec.Status == 0 {
					rec.Status = HTTPStatus(err)
				}
			}
			b, _ := json.Marshal(rec)
			t.mu.Lock()
			_, _ = t.f.Write(append(b, '\n'))
			t.mu.Unlock()
			return out, md, err
		}), "Retry", middleware.After)
}

type attemptKey struct{}

type labelKey struct{}

// WithTraceLabel labels the AWS calls made with ctx in the trace (with the
// lifecycle step that makes them).
func WithTraceLabel(ctx context.Context, label string) context.Context {
	return context.WithValue(ctx, labelKey{}, label)
}

func attemptOf(ctx context.Context) int {
	if n, ok := ctx.Value(attemptKey{}).(*int); ok {
		return *n
	}
	return 1
}

// RetryNotice is told when an AWS call is retried, so progress can show
// that kforge waits on AWS.
type RetryNotice func(service, operation string, attempt int, err error)

type noticeKey struct{}

// WithRetryNotice returns a context whose AWS calls report retries to fn.
func WithRetryNotice(ctx context.Context, fn RetryNotice) context.Context {
	return context.WithValue(ctx, noticeKey{}, fn)
}

// retryNoticeMiddleware numbers the attempts of a call and reports failed
// attempts that the retryer will retry.
func retryNoticeMiddleware(stack *middleware.Stack) error {
	if _, ok := stack.Finalize.Get("Retry"); !ok {
		return nil // a presign stack: nothing is sent
	}
	if err := stack.Finalize.Insert(middleware.FinalizeMiddlewareFunc("kforgeAttemptCounter",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			n := 0
			ctx = context.WithValue(ctx, attemptKey{}, &n)
			return next.HandleFinalize(ctx, in)
		}), "Retry", middleware.Before); err != nil {
		return err
	}
	return stack.Finalize.Insert(middleware.FinalizeMiddlewareFunc("kforgeRetryNotice",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			if n, ok := ctx.Value(attemptKey{}).(*int); ok {
				*n++
			}
			out, md, err := next.HandleFinalize(ctx, in)
			if err != nil {
				// IAM propagation is retried (by Eventual) for up to a
				// minute: the user sees that kforge waits on AWS.
				if fn, ok := ctx.Value(noticeKey{}).(RetryNotice); ok && (retry.IsErrorRetryables(retry.DefaultRetryables).IsErrorRetryable(err) == aws.TrueTernary || IsIAMPropagation(err)) {
					fn(awsmw.GetServiceID(ctx), awsmw.GetOperationName(ctx), attemptOf(ctx), err)
				}
			}
			return out, md, err
		}), "Retry", middleware.After)
}

// ReadTrace returns the records of a trace file, in order. A file that
// does not exist holds no record: a process that made no call never
// creates it.
func ReadTrace(path string) ([]TraceRecord, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []TraceRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		var rec TraceRecord
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return out, fmt.Errorf("trace %s: line %q: %w", path, sc.Text(), err)
		}
		out = append(out, rec)
	}
	return out, sc.Err()
}
