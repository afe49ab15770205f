package faultproxy_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	ekstypes "github.com/aws/aws-sdk-go-v2/service/eks/types"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/test/testutil/faultproxy"
	"github.com/kforge/kforge/test/testutil/kforgebin"
	"github.com/kforge/kforge/test/testutil/moto"
)

var emu *moto.Server

func TestMain(m *testing.M) {
	moto.RunTests(kforgebin.Cleaning(m), &emu)
}

const region = "us-west-2"

var bucketCfg = &s3types.CreateBucketConfiguration{LocationConstraint: s3types.BucketLocationConstraint(region)}

// clients talk to the emulator through a proxy; attempts bounds each
// call's attempts (1: no retry).
type clients struct {
	ec2  *ec2.Client
	iam  *iam.Client
	sts  *sts.Client
	eks  *eks.Client
	elb2 *elasticloadbalancingv2.Client
	s3   *s3.Client
}

func newClients(t *testing.T, p *faultproxy.Proxy, attempts int) clients {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithRegion(region),
		config.WithBaseEndpoint(p.URL),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(moto.AccessKeyID, moto.SecretAccessKey, "")),
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = attempts
				o.MaxBackoff = 50 * time.Millisecond
			})
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	return clients{
		ec2: ec2.NewFromConfig(cfg), iam: iam.NewFromConfig(cfg), sts: sts.NewFromConfig(cfg), eks: eks.NewFromConfig(cfg),
		elb2: elasticloadbalancingv2.NewFromConfig(cfg),
		s3:   s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle, o.DisableLogOutputChecksumValidationSkipped = true, true }),
	}
}

// must returns v, failing the test on err.
func must[T any](v T, err error) func(t *testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func TestIdentifiesCalls(t *testing.T) {
	p := faultproxy.Start(t, emu.URL)
	c := newClients(t, p, 1)
	ctx := context.Background()
	vpc := must(c.ec2.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.1.0.0/16")}))(t)
	must(c.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{}))(t)
	role := must(c.iam.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String("fp-role"), AssumeRolePolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[]}`)}))(t)
	must(c.iam.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String("fp-role")}))(t)
	must(c.sts.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}))(t)
	sub := must(c.ec2.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: vpc.Vpc.VpcId, CidrBlock: aws.String("10.1.0.0/24"), AvailabilityZone: aws.String(region + "a")}))(t)
	must(c.eks.CreateCluster(ctx, &eks.CreateClusterInput{Name: aws.String("fp"), RoleArn: role.Role.Arn, ClientRequestToken: aws.String("fp-token"),
		ResourcesVpcConfig: &ekstypes.VpcConfigRequest{SubnetIds: []string{aws.ToString(sub.Subnet.SubnetId)}}}))(t)
	must(c.eks.DescribeCluster(ctx, &eks.DescribeClusterInput{Name: aws.String("fp")}))(t)
	must(c.eks.ListClusters(ctx, &eks.ListClustersInput{}))(t)
	must(c.eks.CreateNodegroup(ctx, &eks.CreateNodegroupInput{ClusterName: aws.String("fp"), NodegroupName: aws.String("ng"),
		NodeRole: role.Role.Arn, Subnets: []string{aws.ToString(sub.Subnet.SubnetId)}}))(t)
	must(c.eks.DescribeNodegroup(ctx, &eks.DescribeNodegroupInput{ClusterName: aws.String("fp"), NodegroupName: aws.String("ng")}))(t)
	must(c.eks.UpdateNodegroupConfig(ctx, &eks.UpdateNodegroupConfigInput{ClusterName: aws.String("fp"), NodegroupName: aws.String("ng"),
		ScalingConfig: &ekstypes.NodegroupScalingConfig{DesiredSize: aws.Int32(2), MinSize: aws.Int32(1), MaxSize: aws.Int32(3)}}))(t)
	must(c.eks.DeleteNodegroup(ctx, &eks.DeleteNodegroupInput{ClusterName: aws.String("fp"), NodegroupName: aws.String("ng")}))(t)
	must(c.eks.DeleteCluster(ctx, &eks.DeleteClusterInput{Name: aws.String("fp")}))(t)
	must(c.elb2.DescribeLoadBalancers(ctx, &elasticloadbalancingv2.DescribeLoadBalancersInput{}))(t)
	must(c.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("fp-bucket"), CreateBucketConfiguration: bucketCfg}))(t)
	must(c.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("fp-bucket"), Key: aws.String("a/b.json"), Body: strings.NewReader("{}")}))(t)
	must(c.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("fp-bucket"), Key: aws.String("a/b.json")}))(t)

	want := []string{
		"ec2:CreateVpc +", "ec2:DescribeVpcs", "iam:CreateRole +", "iam:GetRole", "sts:GetCallerIdentity", "ec2:CreateSubnet +",
		"eks:CreateCluster +", "eks:DescribeCluster", "eks:ListClusters", "eks:CreateNodegroup +", "eks:DescribeNodegroup",
		"eks:UpdateNodegroupConfig +", "eks:DeleteNodegroup +", "eks:DeleteCluster +", "elasticloadbalancing:DescribeLoadBalancers",
		"s3:CreateBucket +", "s3:PutObject +", "s3:GetObject",
	}
	var got []string
	for _, r := range p.Records() {
		s := r.String()
		if r.Mutating {
			s += " +"
		}
		if !r.Forwarded || r.Region != region {
			t.Errorf("%s: forwarded %v, region %q", s, r.Forwarded, r.Region)
		}
		got = append(got, s)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, r := range p.Records() {
		if r.Action == "CreateCluster" && r.Token != "fp-token" {
			t.Errorf("CreateCluster token %q, want fp-token", r.Token)
		}
		if r.Action == "CreateVpc" && r.Params.Get("CidrBlock") != "10.1.0.0/16" {
			t.Errorf("CreateVpc params %v", r.Params)
		}
	}
	if n := p.Count(faultproxy.Mutating); n != 10 {
		t.Errorf("%d mutating calls, want 10", n)
	}
}

// TestThrottlingAndServerErrorsAreWhatTheSDKRetries proves that each
// service's throttling answer is recognised by the SDK as throttling (so
// it backs off and retries), and 5xx as retryable.
func TestThrottlingAndServerErrorsAreWhatTheSDKRetries(t *testing.T) {
	p := faultproxy.Start(t, emu.URL)
	c := newClients(t, p, 1)
	ctx := context.Background()
	must(c.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("fp-throttle"), CreateBucketConfiguration: bucketCfg}))(t)
	calls := []struct {
		service, code string
		status        int
		call          func() error
	}{
		{"ec2", "RequestLimitExceeded", 503, func() error { _, err := c.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{}); return err }},
		{"iam", "Throttling", 400, func() error { _, err := c.iam.ListRoles(ctx, &iam.ListRolesInput{}); return err }},
		{"sts", "Throttling", 400, func() error { _, err := c.sts.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); return err }},
		{"eks", "ThrottlingException", 429, func() error { _, err := c.eks.ListClusters(ctx, &eks.ListClustersInput{}); return err }},
		{"elasticloadbalancing", "Throttling", 400, func() error {
			_, err := c.elb2.DescribeLoadBalancers(ctx, &elasticloadbalancingv2.DescribeLoadBalancersInput{})
			return err
		}},
		{"s3", "SlowDown", 503, func() error {
			_, err := c.s3.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("fp-throttle")})
			return err
		}},
	}
	throttles := retry.IsErrorThrottles(retry.DefaultThrottles)
	retryables := retry.IsErrorRetryables(retry.DefaultRetryables)
	for _, tc := range calls {
		t.Run(tc.service, func(t *testing.T) {
			p.Clear()
			p.Add(faultproxy.Rule{Match: faultproxy.Service(tc.service), Fault: faultproxy.Throttle, Times: 1})
			err := tc.call()
			if awsx.Code(err) != tc.code || awsx.HTTPStatus(err) != tc.status {
				t.Fatalf("throttled call: code %q status %d (%v), want %s %d", awsx.Code(err), awsx.HTTPStatus(err), err, tc.code, tc.status)
			}
			if throttles.IsErrorThrottle(err) != aws.TrueTernary {
				t.Errorf("the SDK does not see %v as throttling", err)
			}
			if err := tc.call(); err != nil {
				t.Errorf("second call (not faulted): %v", err)
			}
			p.Add(faultproxy.Rule{Match: faultproxy.Service(tc.service), Fault: faultproxy.ServerFault, Times: 1})
			err = tc.call()
			if awsx.HTTPStatus(err) != 500 || retryables.IsErrorRetryable(err) != aws.TrueTernary {
				t.Errorf("5xx: status %d, retryable %v: %v", awsx.HTTPStatus(err), retryables.IsErrorRetryable(err), err)
			}
			if n := p.Faulted(faultproxy.Throttle, nil) + p.Faulted(faultproxy.ServerFault, nil); n != 2 {
				t.Errorf("%d faults recorded, want 2", n)
			}
		})
	}
	// With retries, a throttled call succeeds after backing off.
	p.Clear()
	p.Add(faultproxy.Rule{Fault: faultproxy.Throttle, Times: 2})
	retrying := newClients(t, p, 5)
	if _, err := retrying.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{}); err != nil {
		t.Fatalf("retried call: %v", err)
	}
	if n := len(p.Records()); n != 3 {
		t.Errorf("%d attempts, want 3", n)
	}
}

func TestDropCarriesOutTheCallAndResetsTheConnection(t *testing.T) {
	p := faultproxy.Start(t, emu.URL)
	c := newClients(t, p, 1)
	ctx := context.Background()
	tag := fmt.Sprint("drop-", time.Now().UnixNano())
	p.Add(faultproxy.Rule{Match: faultproxy.Actions("CreateVpc"), Fault: faultproxy.Drop, Times: 1})
	_, err := c.ec2.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.2.0.0/16"),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeVpc, Tags: []ec2types.Tag{{Key: aws.String("t"), Value: aws.String(tag)}}}}})
	if err == nil {
		t.Fatal("the dropped call succeeded")
	}
	if retry.IsErrorRetryables(retry.DefaultRetryables).IsErrorRetryable(err) != aws.TrueTernary || awsx.HTTPStatus(err) != 0 {
		t.Errorf("a dropped answer must look like a broken connection the SDK retries: %v", err)
	}
	out := must(c.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: []ec2types.Filter{{Name: aws.String("tag:t"), Values: []string{tag}}}}))(t)
	if len(out.Vpcs) != 1 {
		t.Errorf("%d VPCs made by the dropped call, want 1", len(out.Vpcs))
	}
	if p.Faulted(faultproxy.Drop, nil) != 1 || p.Count(faultproxy.Actions("CreateVpc")) != 1 {
		t.Errorf("records: %+v", p.Records())
	}
}

func TestHooksRunAfterTheNthCallWasAnswered(t *testing.T) {
	p := faultproxy.Start(t, emu.URL)
	c := newClients(t, p, 1)
	ctx := context.Background()
	var fired atomic.Int32
	var seen atomic.Value
	p.After(faultproxy.Mutating, 2, func(call faultproxy.Call) {
		fired.Add(1)
		seen.Store(call.Action)
	})
	p.Add(faultproxy.Rule{Fault: faultproxy.Delay, Delay: 30 * time.Millisecond})
	start := time.Now()
	must(c.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{}))(t)
	if time.Since(start) < 30*time.Millisecond {
		t.Error("delay not applied")
	}
	must(c.ec2.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.3.0.0/16")}))(t)
	if fired.Load() != 0 {
		t.Fatal("hook fired after the first mutating call")
	}
	must(c.ec2.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String("fp-hook")}))(t)
	must(c.ec2.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String("fp-hook")}))(t)
	if fired.Load() != 1 || seen.Load() != "CreateKeyPair" {
		t.Errorf("hook fired %d times, on %v; want once, on CreateKeyPair", fired.Load(), seen.Load())
	}
}

func TestRespondAnswersAnyError(t *testing.T) {
	p := faultproxy.Start(t, emu.URL)
	c := newClients(t, p, 1)
	p.Add(faultproxy.Rule{Match: faultproxy.Actions("DescribeVpcs"), Fault: faultproxy.Respond, Times: 1,
		Error: faultproxy.APIError{Status: 400, Code: "InvalidParameterValue", Message: "Value (x) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name"}})
	_, err := c.ec2.DescribeVpcs(context.Background(), &ec2.DescribeVpcsInput{})
	if awsx.Code(err) != "InvalidParameterValue" || !strings.Contains(awsx.Message(err), "Invalid IAM Instance Profile name") {
		t.Fatalf("err = %v", err)
	}
	if p.Count(nil) != 0 {
		t.Error("an answered error was forwarded")
	}
	var ae interface{ ErrorCode() string }
	if !errors.As(err, &ae) {
		t.Error("not an API error")
	}
}
