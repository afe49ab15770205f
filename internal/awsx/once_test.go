package awsx_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/kforge/kforge/internal/awsx"
)

// sent wraps err as the SDK reports a failed exchange with AWS.
func sent(err error) error {
	return &smithy.OperationError{ServiceID: "EC2", OperationName: "CreateVpc",
		Err: &smithyhttp.RequestSendError{Err: &url.Error{Op: "Post", URL: "http://127.0.0.1:1/", Err: err}}}
}

func TestIsTransient(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"use of closed network connection", sent(&net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed}), true},
		{"closed connection while reading the body", &smithy.OperationError{ServiceID: "EC2", OperationName: "CreateVpc",
			Err: &smithy.DeserializationError{Err: &net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed}}}, true},
		{"connection reset", sent(&net.OpError{Op: "read", Net: "tcp", Err: errors.New("read: connection reset by peer")}), true},
		{"lost response", sent(io.EOF), true},
		{"throttled", &apiErr{code: "RequestLimitExceeded"}, true},
		{"refused", &apiErr{code: "InvalidParameterValue"}, false},
		{"cancelled", &smithy.CanceledError{Err: context.Canceled}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := awsx.IsTransient(tc.err); got != tc.want {
				t.Errorf("IsTransient(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// A connection dropped after the request was sent is not retried by
// SafeRetryer (AWS may have made the resource) and is transient for
// CreateOnce, whether the SDK sees it as EOF, a reset or a closed
// connection.
func TestSafeRetryerLeavesLostResponsesToCreateOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		readBody bool
	}{
		{"dropped at once", false},
		{"dropped after the request was read", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				if tc.readBody {
					_, _ = io.Copy(io.Discard, r.Body)
				}
				conn, _, err := http.NewResponseController(w).Hijack()
				if err != nil {
					t.Error(err)
					return
				}
				conn.Close()
			}))
			defer srv.Close()
			c := ec2.New(ec2.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), Retryer: awsx.NewRetryer(),
				Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")})
			_, err := c.CreateVpc(context.Background(), &ec2.CreateVpcInput{CidrBlock: aws.String("10.0.0.0/16")},
				func(o *ec2.Options) { o.Retryer = awsx.SafeRetryer(o.Retryer) })
			if err == nil {
				t.Fatal("CreateVpc succeeded through a dropped connection")
			}
			t.Logf("error: %v", err)
			if n := calls.Load(); n != 1 {
				t.Errorf("the request was sent %d times, want once", n)
			}
			if !awsx.IsTransient(err) {
				t.Errorf("IsTransient(%v) = false, want true", err)
			}
		})
	}
}
