package e2e

import (
	"bufio"
	"context"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kforge/kforge/test/testutil/awscheck"
	"github.com/kforge/kforge/test/testutil/kforgebin"
)

// userVPC makes a VPC as a user would, outside kforge, with an internet
// gateway, and returns its ID.
func userVPC(t *testing.T, c *ec2.Client, cidr string, dnsHostnames, dnsSupport bool) string {
	t.Helper()
	ctx := context.Background()
	v, err := c.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String(cidr), TagSpecifications: []ec2types.TagSpecification{{
		ResourceType: ec2types.ResourceTypeVpc, Tags: []ec2types.Tag{{Key: aws.String("Name"), Value: aws.String("shared")}, {Key: aws.String("team"), Value: aws.String("platform")}}}}})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(v.Vpc.VpcId)
	if _, err := c.ModifyVpcAttribute(ctx, &ec2.ModifyVpcAttributeInput{VpcId: aws.String(id), EnableDnsSupport: &ec2types.AttributeBooleanValue{Value: aws.Bool(dnsSupport)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ModifyVpcAttribute(ctx, &ec2.ModifyVpcAttributeInput{VpcId: aws.String(id), EnableDnsHostnames: &ec2types.AttributeBooleanValue{Value: aws.Bool(dnsHostnames)}}); err != nil {
		t.Fatal(err)
	}
	igw, err := c.CreateInternetGateway(ctx, &ec2.CreateInternetGatewayInput{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AttachInternetGateway(ctx, &ec2.AttachInternetGatewayInput{VpcId: aws.String(id), InternetGatewayId: igw.InternetGateway.InternetGatewayId}); err != nil {
		t.Fatal(err)
	}
	return id
}

// vpcSnapshot is what a test checks stays untouched on a user's VPC.
func vpcSnapshot(t *testing.T, c *ec2.Client, id string) string {
	t.Helper()
	ctx := context.Background()
	v, err := c.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{VpcIds: []string{id}})
	if err != nil || len(v.Vpcs) != 1 {
		t.Fatalf("VPC %s: %v", id, err)
	}
	var b strings.Builder
	b.WriteString(aws.ToString(v.Vpcs[0].CidrBlock))
	for _, tg := range v.Vpcs[0].Tags {
		b.WriteString("|" + aws.ToString(tg.Key) + "=" + aws.ToString(tg.Value))
	}
	for _, attr := range []ec2types.VpcAttributeName{ec2types.VpcAttributeNameEnableDnsHostnames, ec2types.VpcAttributeNameEnableDnsSupport} {
		a, err := c.DescribeVpcAttribute(ctx, &ec2.DescribeVpcAttributeInput{VpcId: aws.String(id), Attribute: attr})
		if err != nil {
			t.Fatal(err)
		}
		if a.EnableDnsHostnames != nil {
			b.WriteString("|hostnames=" + boolStr(aws.ToBool(a.EnableDnsHostnames.Value)))
		}
		if a.EnableDnsSupport != nil {
			b.WriteString("|support=" + boolStr(aws.ToBool(a.EnableDnsSupport.Value)))
		}
	}
	return b.String()
}

func boolStr(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func TestEKSInExistingVPC(t *testing.T) {
	t.Parallel()
	const region = "us-west-2"
	cfg := emu.Config(t, region)
	ec := ec2.NewFromConfig(cfg)
	vpc := userVPC(t, ec, "10.50.0.0/16", true, true)
	before := vpcSnapshot(t, ec, vpc)
	env := kforgebin.NewEnv(t, emu.Env()...)

	env.MustRun(t, "create", "aws", "--name", "inside", "--region", region, "--vpc-id", vpc)
	inv := awscheck.Take(t, cfg, "aws", "inside")
	if inv.Count("vpc") != 0 || inv.Count("igw") != 0 || inv.Count("subnet") < 2 || inv.Count("eks-cluster") != 1 {
		t.Errorf("in an existing VPC kforge made: %s", inv)
	}
	subnets, _ := ec.DescribeSubnets(context.Background(), &ec2.DescribeSubnetsInput{SubnetIds: inv["subnet"]})
	for _, s := range subnets.Subnets {
		if aws.ToString(s.VpcId) != vpc {
			t.Errorf("subnet %s is not in the VPC", aws.ToString(s.SubnetId))
		}
	}
	if after := vpcSnapshot(t, ec, vpc); after != before {
		t.Errorf("the VPC changed:\n before %s\n after  %s", before, after)
	}
	env.MustRun(t, "delete", "aws", "--name", "inside", "--region", region, "--yes")
	awscheck.Empty(t, cfg, "aws", "inside")
	if after := vpcSnapshot(t, ec, vpc); after != before {
		t.Errorf("delete changed the VPC:\n before %s\n after  %s", before, after)
	}

	// With --subnet-ids, kforge uses the user's subnets and leaves them.
	var mine []string
	for i, az := range []string{"us-west-2a", "us-west-2b"} {
		s, err := ec.CreateSubnet(context.Background(), &ec2.CreateSubnetInput{VpcId: aws.String(vpc), CidrBlock: aws.String([]string{"10.50.200.0/24", "10.50.201.0/24"}[i]), AvailabilityZone: aws.String(az)})
		if err != nil {
			t.Fatal(err)
		}
		mine = append(mine, aws.ToString(s.Subnet.SubnetId))
	}
	env.MustRun(t, "create", "aws", "--name", "adopt", "--region", region, "--vpc-id", vpc, "--subnet-ids", strings.Join(mine, ","))
	if inv := awscheck.Take(t, cfg, "aws", "adopt"); inv.Count("subnet") != 0 || inv.Count("eks-cluster") != 1 {
		t.Errorf("with --subnet-ids kforge made: %s", inv)
	}
	env.MustRun(t, "delete", "aws", "--name", "adopt", "--region", region, "--yes")
	out, err := ec.DescribeSubnets(context.Background(), &ec2.DescribeSubnetsInput{SubnetIds: mine})
	if err != nil || len(out.Subnets) != 2 {
		t.Errorf("the user's subnets were deleted: %v", err)
	}
}

func TestEKSRefusesVPCWithoutDNS(t *testing.T) {
	t.Parallel()
	const region = "us-west-1"
	cfg := emu.Config(t, region)
	ec := ec2.NewFromConfig(cfg)
	env := kforgebin.NewEnv(t, emu.Env()...)
	for _, c := range []struct {
		hostnames, support bool
		want               string
	}{{false, true, "DNS hostnames"}, {true, false, "DNS support"}} {
		vpc := userVPC(t, ec, "10.60.0.0/16", c.hostnames, c.support)
		before := vpcSnapshot(t, ec, vpc)
		r := env.Run(t, "create", "aws", "--name", "nodns", "--region", region, "--vpc-id", vpc)
		if r.Code != 2 || !strings.Contains(r.Stderr, c.want) {
			t.Errorf("VPC without %s: exit %d, %q", c.want, r.Code, r.Stderr)
		}
		awscheck.Empty(t, cfg, "aws", "nodns")
		if after := vpcSnapshot(t, ec, vpc); after != before {
			t.Errorf("the refused VPC changed: %s -> %s", before, after)
		}
	}
	if r := env.MustRun(t, "get", "-o", "json"); strings.TrimSpace(r.Stdout) != "[]" {
		t.Errorf("a refused create left state: %s", r.Stdout)
	}
	if r := env.Run(t, "create", "aws", "--name", "nodns", "--region", region, "--vpc-id", "vpc-0123456789abcdef0"); r.Code != 2 {
		t.Errorf("missing VPC: exit %d, %s", r.Code, r.Stderr)
	}
}

func TestIAMNamesOfAnotherRegionAreRefused(t *testing.T) {
	t.Parallel()
	env := kforgebin.NewEnv(t, emu.Env()...)
	env.MustRun(t, "create", "aws", "--name", "twin", "--region", "ap-south-1")
	r := env.Run(t, "create", "aws", "--name", "twin", "--region", "ap-northeast-1")
	if r.Code != 2 || !strings.Contains(r.Stderr, "ap-south-1") {
		t.Errorf("second region: exit %d, %q; want 2 naming the cluster in ap-south-1", r.Code, r.Stderr)
	}
	// The roles (global) are the first cluster's; nothing regional was made.
	inv := awscheck.Take(t, emu.Config(t, "ap-northeast-1"), "aws", "twin")
	if inv.Count("vpc")+inv.Count("subnet")+inv.Count("eks-cluster") != 0 {
		t.Errorf("the refused create made %s", inv)
	}
	env.MustRun(t, "delete", "aws", "--name", "twin", "--region", "ap-south-1", "--yes")
	awscheck.Empty(t, emu.Config(t, "ap-south-1"), "aws", "twin")
}

// TestEKSCreateKilledHalfway kills create with SIGKILL once the EKS
// cluster exists; the same create then finishes without a second copy of
// anything, and delete removes everything. A second kill, and a delete of
// the half-made cluster, leave nothing either.
func TestEKSCreateKilledHalfway(t *testing.T) {
	t.Parallel()
	const region = "ca-central-1"
	cfg := emu.Config(t, region)
	env := kforgebin.NewEnv(t, emu.Env()...)
	killAfter := func(name, marker string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := env.Cmd(t, ctx, "create", "aws", "--name", name, "--region", region)
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), marker) {
				_ = cmd.Process.Signal(syscall.SIGKILL)
				break
			}
		}
		_ = cmd.Wait()
	}

	killAfter("halfway", "done     eks-cluster")
	env.MustRun(t, "create", "aws", "--name", "halfway", "--region", region)
	inv := awscheck.Take(t, cfg, "aws", "halfway")
	for kind, n := range map[string]int{"vpc": 1, "igw": 1, "rtb": 1, "subnet": 2, "role": 2, "eks-cluster": 1, "nodegroup": 1} {
		if inv.Count(kind) != n {
			t.Errorf("after resume: %d %s, want %d (%s)", inv.Count(kind), kind, n, inv)
		}
	}
	env.MustRun(t, "delete", "aws", "--name", "halfway", "--region", region, "--yes")
	awscheck.Empty(t, cfg, "aws", "halfway")

	killAfter("broken", "done     subnet/")
	r := env.MustRun(t, "delete", "aws", "--name", "broken", "--region", region, "--yes")
	if !strings.Contains(r.Stderr, "Deleted") {
		t.Errorf("delete of a half-made cluster: %s", r.Stderr)
	}
	awscheck.Empty(t, cfg, "aws", "broken")
}

// TestNamesAreUniqueAcrossTypes: Kubernetes tags what it makes in AWS by
// cluster name, so an ha-aws cluster may not take the name of an aws
// cluster in the same region.
func TestNamesAreUniqueAcrossTypes(t *testing.T) {
	t.Parallel()
	const region = "eu-north-1"
	env := kforgebin.NewEnv(t, emu.Env()...)
	env.MustRun(t, "create", "aws", "--name", "same", "--region", region)
	r := env.Run(t, "create", "ha-aws", "--name", "same", "--region", region, "--control-planes", "1", "--workers", "1", "--etcd", "1")
	if r.Code != 2 || !strings.Contains(r.Stderr, `aws cluster "same"`) {
		t.Errorf("same name, other type: exit %d\n%s", r.Code, r.Stderr)
	}
	// What exists is the aws cluster's; nothing of an ha-aws one.
	inv := awscheck.Take(t, emu.Config(t, region), "ha-aws", "same")
	if inv.Count("vpc") != 1 || inv.Count("sg")+inv.Count("keypair")+inv.Count("instance-profile") != 0 || slices.Contains(inv["role"], "kforge-same-ha-cp") {
		t.Errorf("the refused create made %s", inv)
	}
	env.MustRun(t, "delete", "aws", "--name", "same", "--region", region, "--yes")
}
