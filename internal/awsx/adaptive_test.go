package awsx_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/kforge/kforge/internal/awsx"
)

// bucket is EC2's request throttling: a token bucket per API.
type bucket struct {
	mu     sync.Mutex
	tokens float64
	size   float64
	refill float64 // tokens a second
	last   time.Time
}

func (b *bucket) take() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	b.tokens = min(b.size, b.tokens+now.Sub(b.last).Seconds()*b.refill)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// A burst of launches against a small request bucket all succeed: once
// EC2 throttles, the adaptive retryer spaces the calls out on the client
// instead of letting each use up its attempts against the bucket.
func TestAdaptiveRetryerLaunchesABurstWithinTheBucket(t *testing.T) {
	t.Parallel()
	b := &bucket{tokens: 5, size: 5, refill: 20, last: time.Now()}
	var ok, throttled atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/xml")
		if !b.take() {
			throttled.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>x</RequestID></Response>`))
			return
		}
		ok.Add(1)
		_, _ = w.Write([]byte(`<RunInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><instancesSet/></RunInstancesResponse>`))
	}))
	defer srv.Close()
	c := ec2.New(ec2.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), HTTPClient: awsx.NewHTTPClient(),
		Retryer: awsx.NewRetryer(), Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")})
	launches := awsx.NewAdaptiveRetryer()
	const n = 100
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.RunInstances(context.Background(), &ec2.RunInstancesInput{ImageId: aws.String("ami-1"), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)},
				func(o *ec2.Options) { o.Retryer = awsx.SafeRetryer(launches) })
			if err != nil {
				failed.Add(1)
				t.Log(err)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d launched, %d throttled answers", ok.Load(), throttled.Load())
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d launches failed", f, n)
	}
	if th := throttled.Load(); th > 3*n/2 {
		t.Errorf("%d throttled answers for %d launches: the client does not slow down once throttled", th, n)
	}
}
