package faultproxy_test

import (
	"context"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/test/testutil/faultproxy"
)

// clock is a hand-moved clock for limiters.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// ec2Call is an EC2 call as the proxy names it, with query parameters
// given as key, value pairs.
func ec2Call(action string, mutating bool, kv ...string) faultproxy.Call {
	v := url.Values{"Action": {action}}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return faultproxy.Call{Service: "ec2", Action: action, Mutating: mutating, Params: v}
}

func TestDocumentedEC2ModelClassifiesCalls(t *testing.T) {
	m := faultproxy.DocumentedEC2()
	for _, tc := range []struct {
		call   faultproxy.Call
		key    string
		bucket faultproxy.Bucket
	}{
		{ec2Call("DescribeVpcs", false), "DescribeVpcs", faultproxy.Bucket{Capacity: 100, Refill: 20}},
		{ec2Call("DescribeInstances", false, "Filter.1.Name", "tag:x"), "DescribeInstances", faultproxy.Bucket{Capacity: 100, Refill: 20}},
		{ec2Call("DescribeInstances", false, "MaxResults", "5"), "DescribeInstances", faultproxy.Bucket{Capacity: 100, Refill: 20}},
		{ec2Call("DescribeInstances", false, "InstanceId.1", "i-1"), "DescribeInstances unfiltered", faultproxy.Bucket{Capacity: 50, Refill: 10}},
		{ec2Call("CreateVpc", true), "CreateVpc", faultproxy.Bucket{Capacity: 50, Refill: 5}},
		{ec2Call("AuthorizeSecurityGroupIngress", true), "AuthorizeSecurityGroupIngress", faultproxy.Bucket{Capacity: 50, Refill: 5}},
		{ec2Call("CreateTags", true), "CreateTags", faultproxy.Bucket{Capacity: 100, Refill: 10}},
		{ec2Call("RunInstances", true, "MaxCount", "3"), "RunInstances", faultproxy.Bucket{Capacity: 5, Refill: 2}},
	} {
		uses := m.Uses(tc.call)
		if len(uses) == 0 || uses[0].Key != tc.key || uses[0].Bucket != tc.bucket || uses[0].Tokens != 1 {
			t.Errorf("%s %v: uses %+v, want one token of %s %+v", tc.call, tc.call.Params, uses, tc.key, tc.bucket)
		}
	}
	run := m.Uses(ec2Call("RunInstances", true, "MinCount", "3", "MaxCount", "3"))
	if len(run) != 2 || run[1].Key != "RunInstances instances" || run[1].Tokens != 3 || run[1].Bucket != (faultproxy.Bucket{Capacity: 1000, Refill: 2}) {
		t.Errorf("RunInstances of 3: %+v, want a token of its request bucket and 3 of its 1000-instance bucket", run)
	}
	term := m.Uses(ec2Call("TerminateInstances", true, "InstanceId.1", "i-1", "InstanceId.2", "i-2"))
	if len(term) != 2 || term[1].Tokens != 2 || term[1].Bucket != (faultproxy.Bucket{Capacity: 1000, Refill: 20}) {
		t.Errorf("TerminateInstances of 2: %+v", term)
	}
	if u := m.Uses(faultproxy.Call{Service: "iam", Action: "CreateRole", Mutating: true}); u != nil {
		t.Errorf("an IAM call draws on %+v: only EC2 is limited", u)
	}
}

func TestLimiterRefusesAnEmptyBucketAndRefills(t *testing.T) {
	clk := newClock()
	l := faultproxy.NewLimiter(faultproxy.RateModel{
		NonMutating: faultproxy.Bucket{Capacity: 3, Refill: 1},
		Mutating:    faultproxy.Bucket{Capacity: 2, Refill: 0.5},
		Actions:     map[string]faultproxy.Bucket{"RunInstances": {Capacity: 4, Refill: 2}},
		Resources:   map[string]faultproxy.Bucket{"RunInstances": {Capacity: 5, Refill: 1}},
	}, clk.now)
	admit := func(c faultproxy.Call) bool { ok, _ := l.Admit(c); return ok }
	describe, create := ec2Call("DescribeVpcs", false), ec2Call("CreateVpc", true)

	for i := range 3 {
		if !admit(describe) {
			t.Fatalf("read %d of a full bucket of 3 refused", i+1)
		}
	}
	if ok, key := l.Admit(describe); ok || key != "DescribeVpcs" {
		t.Fatalf("fourth read: admitted %v by %q, want refused by DescribeVpcs", ok, key)
	}
	// Each action has its own bucket, of its category's size.
	if !admit(ec2Call("DescribeSubnets", false)) || !admit(create) || !admit(create) || admit(create) {
		t.Fatal("buckets are not per action, or the mutating bucket is not 2")
	}
	if n, _ := l.Tokens("DescribeVpcs"); n != 0 {
		t.Errorf("DescribeVpcs holds %v tokens, want 0", n)
	}
	clk.advance(1500 * time.Millisecond)
	if n, _ := l.Tokens("DescribeVpcs"); n != 1.5 {
		t.Errorf("after 1.5 s at 1/s: %v tokens, want 1.5", n)
	}
	if !admit(describe) || admit(describe) {
		t.Error("after 1.5 s at 1/s: want one read admitted, the next refused")
	}
	if n, _ := l.Tokens("CreateVpc"); n != 0.75 {
		t.Errorf("CreateVpc after 1.5 s at 0.5/s: %v tokens, want 0.75", n)
	}
	clk.advance(time.Hour)
	if n, _ := l.Tokens("DescribeVpcs"); n != 3 {
		t.Errorf("after an hour: %v tokens, want the capacity, 3", n)
	}
	if _, known := l.Tokens("DescribeRegions"); known {
		t.Error("a bucket no call drew on is known")
	}

	// A launch takes a request token and one instance token per instance;
	// refused by either bucket, it takes from neither.
	run := func(n string) faultproxy.Call { return ec2Call("RunInstances", true, "MinCount", n, "MaxCount", n) }
	if !admit(run("3")) {
		t.Fatal("launch of 3 refused")
	}
	if ok, key := l.Admit(run("3")); ok || key != "RunInstances instances" {
		t.Fatalf("launch of 3 more with 2 instance tokens left: admitted %v by %q", ok, key)
	}
	if n, _ := l.Tokens("RunInstances"); n != 3 {
		t.Errorf("a refused launch took a request token: %v left, want 3", n)
	}
	if !admit(run("2")) {
		t.Error("launch of 2 with 2 instance tokens refused")
	}
	// Other services are not limited.
	for range 10 {
		if !admit(faultproxy.Call{Service: "iam", Action: "GetRole"}) {
			t.Fatal("an IAM call was refused")
		}
	}
}

func TestDemandsAreTheTimeBucketsNeed(t *testing.T) {
	m := faultproxy.DocumentedEC2()
	var calls []faultproxy.Call
	for range 107 {
		calls = append(calls, ec2Call("RunInstances", true, "MinCount", "1", "MaxCount", "1"))
	}
	for range 30 {
		calls = append(calls, ec2Call("DescribeInstances", false, "Filter.1.Name", "instance-id"))
	}
	calls = append(calls, faultproxy.Call{Service: "iam", Action: "CreateRole", Mutating: true})
	ds := m.Demands(calls)
	want := []faultproxy.Demand{
		{Key: "RunInstances", Bucket: faultproxy.Bucket{Capacity: 5, Refill: 2}, Tokens: 107, Wait: 51 * time.Second},
		{Key: "DescribeInstances", Bucket: faultproxy.Bucket{Capacity: 100, Refill: 20}, Tokens: 30},
		{Key: "RunInstances instances", Bucket: faultproxy.Bucket{Capacity: 1000, Refill: 2}, Tokens: 107},
	}
	if len(ds) != len(want) {
		t.Fatalf("demands %+v, want %+v", ds, want)
	}
	for i := range want {
		if ds[i] != want[i] {
			t.Errorf("demand %d: %+v, want %+v", i, ds[i], want[i])
		}
	}
}

// TestRateModelAnswersRequestLimitExceeded drives the limit through the
// proxy: the SDK sees EC2's throttling error, nothing reaches the
// emulator, other services go through, and a refill admits calls again.
func TestRateModelAnswersRequestLimitExceeded(t *testing.T) {
	p := faultproxy.Start(t, emu.URL)
	clk := newClock()
	m := faultproxy.DocumentedEC2()
	m.NonMutating = faultproxy.Bucket{Capacity: 3, Refill: 1}
	p.Limit(faultproxy.NewLimiter(m, clk.now))
	c := newClients(t, p, 1)
	ctx := context.Background()
	describe := func() error {
		_, err := c.ec2.DescribeAvailabilityZones(ctx, &ec2.DescribeAvailabilityZonesInput{})
		return err
	}
	for i := range 3 {
		if err := describe(); err != nil {
			t.Fatalf("call %d of a bucket of 3: %v", i+1, err)
		}
	}
	err := describe()
	if awsx.Code(err) != "RequestLimitExceeded" || awsx.HTTPStatus(err) != 503 {
		t.Fatalf("call beyond the bucket: code %q status %d (%v), want RequestLimitExceeded 503", awsx.Code(err), awsx.HTTPStatus(err), err)
	}
	if retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(err) != aws.TrueTernary {
		t.Errorf("the SDK does not see %v as throttling", err)
	}
	if _, err := c.iam.ListRoles(ctx, &iam.ListRolesInput{}); err != nil {
		t.Errorf("IAM is not limited: %v", err)
	}
	// Another action has a bucket of its own.
	if _, err := c.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: []ec2types.Filter{{Name: aws.String("tag:x"), Values: []string{"y"}}}}); err != nil {
		t.Errorf("DescribeVpcs with DescribeAvailabilityZones's bucket empty: %v", err)
	}
	clk.advance(time.Second)
	if err := describe(); err != nil {
		t.Errorf("after a second's refill: %v", err)
	}
	if err := describe(); awsx.Code(err) != "RequestLimitExceeded" {
		t.Errorf("the refill gave more than one token: %v", err)
	}
	if n := p.Faulted(faultproxy.Limited, nil); n != 2 {
		t.Errorf("%d calls limited, want 2", n)
	}
	if n := p.Count(faultproxy.Actions("DescribeAvailabilityZones")); n != 4 {
		t.Errorf("the emulator carried out %d DescribeAvailabilityZones, want the 4 admitted", n)
	}
	// Off again.
	p.Limit(nil)
	for range 5 {
		if err := describe(); err != nil {
			t.Fatalf("without a limit: %v", err)
		}
	}
}
