package awsx_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/smithy-go"

	"github.com/kforge/kforge/internal/awsx"
)

// apiErr is an AWS API error with a code.
type apiErr struct{ code string }

func (e *apiErr) Error() string                 { return "api error " + e.code }
func (e *apiErr) ErrorCode() string             { return e.code }
func (e *apiErr) ErrorMessage() string          { return e.code }
func (e *apiErr) ErrorFault() smithy.ErrorFault { return smithy.FaultClient }

func TestRetryInUse(t *testing.T) {
	t.Parallel()
	dep := &apiErr{code: "DependencyViolation"}
	tests := []struct {
		name    string
		errs    []error // returned in turn; the last one repeats
		wantErr string
		calls   int // -1: several
	}{
		{"clears", []error{dep, dep, nil}, "", 3},
		{"not found is success", []error{&apiErr{code: "InvalidSubnetID.NotFound"}}, "", 1},
		{"other error at once", []error{&apiErr{code: "UnauthorizedOperation"}}, "UnauthorizedOperation", 1},
		{"bounded", []error{dep}, "still in use after", -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			calls, waits := 0, 0
			start := time.Now()
			err := awsx.RetryInUse(context.Background(), 500*time.Millisecond, func(string, ...any) { waits++ }, "subnet x", func(context.Context) error {
				e := tc.errs[min(calls, len(tc.errs)-1)]
				calls++
				return e
			})
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			if tc.calls >= 0 && calls != tc.calls {
				t.Errorf("%d calls, want %d", calls, tc.calls)
			}
			if tc.calls < 0 {
				if !awsx.IsDependency(err) || calls < 3 || waits < 2 {
					t.Errorf("err %v after %d calls and %d waits: want the dependency error after several tries", err, calls, waits)
				}
				if d := time.Since(start); d > 3*time.Second {
					t.Errorf("took %s for a 500ms bound", d)
				}
			}
		})
	}
}

func TestRetryInUseStopsWithContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := awsx.RetryInUse(ctx, time.Minute, nil, "vpc x", func(context.Context) error {
		calls++
		if calls == 1 {
			cancel()
		}
		return &apiErr{code: "DependencyViolation"}
	})
	if err != context.Canceled {
		t.Errorf("error %v after cancel, want context.Canceled", err)
	}
}
