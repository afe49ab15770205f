package network

import (
	"io"
	"net/url"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/kforge/kforge/internal/awsx"
)

type codeErr string

func (e codeErr) Error() string                 { return "api error " + string(e) }
func (e codeErr) ErrorCode() string             { return string(e) }
func (e codeErr) ErrorMessage() string          { return string(e) }
func (e codeErr) ErrorFault() smithy.ErrorFault { return smithy.FaultClient }

// The retry policies of creates without a ClientToken never resend a
// request whose answer was lost; safeEventual also waits for a new VPC to
// be visible.
func TestCreateRetryPolicies(t *testing.T) {
	t.Parallel()
	lost := &smithyhttp.RequestSendError{Err: &url.Error{Op: "Post", URL: "http://127.0.0.1:1/", Err: io.EOF}}
	for _, tc := range []struct {
		name     string
		opt      func(*ec2.Options)
		err      error
		retrying bool
	}{
		{"safe: lost answer", safe, lost, false},
		{"safe: throttled", safe, codeErr("RequestLimitExceeded"), true},
		{"safe: VPC not visible yet", safe, codeErr("InvalidVpcID.NotFound"), false},
		{"safeEventual: lost answer", safeEventual, lost, false},
		{"safeEventual: throttled", safeEventual, codeErr("RequestLimitExceeded"), true},
		{"safeEventual: VPC not visible yet", safeEventual, codeErr("InvalidVpcID.NotFound"), true},
		{"safeEventual: refused", safeEventual, codeErr("InvalidParameterValue"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := ec2.Options{Retryer: awsx.NewRetryer()}
			tc.opt(&o)
			if got := o.Retryer.IsErrorRetryable(tc.err); got != tc.retrying {
				t.Errorf("retries %v: %v, want %v", tc.err, got, tc.retrying)
			}
			if o.Retryer.MaxAttempts() < 2 {
				t.Errorf("MaxAttempts %d: nothing is ever retried", o.Retryer.MaxAttempts())
			}
		})
	}
}
