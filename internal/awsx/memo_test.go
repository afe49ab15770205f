package awsx

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go/middleware"
)

// The static look-ups are asked once per configuration and parameters;
// anything else, and failures, go to AWS every time.
func TestMemoAsksStaticLookUpsOnce(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	calls := map[string]int{}
	fail := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		v, _ := url.ParseQuery(string(b))
		action := v.Get("Action")
		mu.Lock()
		calls[action]++
		failNow := fail && action == "DescribeImages"
		fail = fail && !failNow
		mu.Unlock()
		w.Header().Set("Content-Type", "text/xml")
		if failNow {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`<Response><Errors><Error><Code>InvalidParameterValue</Code><Message>no</Message></Error></Errors><RequestID>x</RequestID></Response>`))
			return
		}
		_, _ = w.Write([]byte(`<` + action + `Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"></` + action + `Response>`))
	}))
	defer srv.Close()
	c := ec2.New(ec2.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), Retryer: aws.NopRetryer{},
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
		APIOptions:  []func(*middleware.Stack) error{newMemo().middleware}})
	ctx := context.Background()
	for range 3 {
		if _, err := c.DescribeAvailabilityZones(ctx, &ec2.DescribeAvailabilityZonesInput{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"099720109477"}}); err == nil {
		t.Fatal("the failing look-up succeeded")
	}
	for range 2 {
		if _, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"099720109477"}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{"ami-1"}}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := c.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{}); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]int{"DescribeAvailabilityZones": 1, "DescribeImages": 3, "DescribeVpcs": 2}
	for a, n := range want {
		if calls[a] != n {
			t.Errorf("%s asked %d times, want %d (calls %v)", a, calls[a], n, calls)
		}
	}
}
