package awsx_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/aws/smithy-go"

	"github.com/kforge/kforge/internal/awsx"
)

// The messages AWS answers while IAM propagates a new role or instance
// profile, as the SDK decodes them, and look-alikes that are real
// failures.
var propagation = []struct {
	name string
	err  error
	want bool
}{
	{"EC2 profile ARN", &smithy.GenericAPIError{Code: "InvalidParameterValue",
		Message: "Value (arn:aws:iam::123456789012:instance-profile/kforge-x-ha-cp) for parameter iamInstanceProfile.arn is invalid. Invalid IAM Instance Profile ARN"}, true},
	{"EC2 profile name", &smithy.GenericAPIError{Code: "InvalidParameterValue", Message: "Invalid IAM Instance Profile name"}, true},
	{"EKS role", &smithy.GenericAPIError{Code: "InvalidParameterException",
		Message: "Role with arn: arn:aws:iam::123456789012:role/kforge-x-cp-role, could not be assumed because it does not exist or the trusted entity is not correct"}, true},
	{"EC2 other parameter", &smithy.GenericAPIError{Code: "InvalidParameterValue", Message: "Invalid value 't9.huge' for InstanceType."}, false},
	{"EKS subnets", &smithy.GenericAPIError{Code: "InvalidParameterException", Message: "Subnets specified must be in at least two different AZs"}, false},
	{"access denied", &smithy.GenericAPIError{Code: "AccessDeniedException", Message: "User is not authorized to perform: iam:PassRole"}, false},
}

func TestIsIAMPropagation(t *testing.T) {
	t.Parallel()
	for _, tc := range propagation {
		if got := awsx.IsIAMPropagation(tc.err); got != tc.want {
			t.Errorf("%s: IsIAMPropagation = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// Eventual retries IAM propagation for about a minute in all (not the
// few seconds the SDK's backoff for client errors would give), keeps the
// base's quick backoff for other errors, and composes with SafeRetryer.
func TestEventualWaitsAboutAMinute(t *testing.T) {
	t.Parallel()
	prop := propagation[0].err
	r := awsx.Eventual(awsx.NewRetryer(), awsx.IsIAMPropagation)
	if !r.IsErrorRetryable(prop) || r.IsErrorRetryable(propagation[3].err) {
		t.Fatal("Eventual must retry propagation errors, and only them among client errors")
	}
	lo, hi := time.Hour, time.Duration(0)
	for range 50 {
		var total time.Duration
		for n := 1; n < r.MaxAttempts(); n++ {
			d, err := r.RetryDelay(n, prop)
			if err != nil {
				t.Fatal(err)
			}
			total += d
		}
		lo, hi = min(lo, total), max(hi, total)
	}
	if lo < 30*time.Second || hi > 70*time.Second {
		t.Errorf("retries of IAM propagation wait %s to %s in all, want about a minute", lo, hi)
	}
	throttled := &apiErr{code: "RequestLimitExceeded"}
	if d, _ := r.RetryDelay(1, throttled); d > time.Second {
		t.Errorf("first retry of throttling waits %s: the base's backoff must stay", d)
	}

	safe := awsx.Eventual(awsx.SafeRetryer(awsx.NewRetryer()), awsx.IsIAMPropagation)
	reset := sent(&net.OpError{Op: "read", Net: "tcp", Err: errors.New("read: connection reset by peer")})
	if !safe.IsErrorRetryable(prop) || safe.IsErrorRetryable(reset) || !safe.IsErrorRetryable(throttled) {
		t.Error("Eventual(SafeRetryer) must retry propagation and throttling, and leave a lost answer to CreateOnce")
	}
}
