package preflight_test

import (
	"bytes"
	"context"
	"fmt"
	"github.com/kforge/kforge/internal/eks"
	"github.com/kforge/kforge/internal/ha"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/iampolicy"
	"github.com/kforge/kforge/internal/preflight"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/test/testutil/iamuser"
	"github.com/kforge/kforge/test/testutil/moto"
)

func haSpec(name, region string) spec.Spec {
	return spec.Spec{
		Ref:       spec.Ref{Type: spec.TypeHA, Name: name, Region: region},
		Bootstrap: spec.BootstrapK3s, ControlPlanes: 3, Workers: 2, Etcd: 3,
		CPSize: "t3.medium", WPSize: "t3.medium", EtcdSize: "t3.small", LBSize: "t3.micro",
		K8sVersion: spec.DefaultK8sVersion, SSHCIDR: "0.0.0.0/0",
	}
}

func eksSpec(name, region string) spec.Spec {
	return spec.Spec{
		Ref:     spec.Ref{Type: spec.TypeEKS, Name: name, Region: region},
		Version: spec.DefaultEKSVersion, NodeSize: "t3.medium", Nodes: 2,
	}
}

func policy(t *testing.T, typ string) []byte {
	t.Helper()
	d, err := iampolicy.Policy(typ, iampolicy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return d.JSON()
}

// tracedRun runs a preflight with a trace of every AWS call and returns
// the report and the operations called.
func tracedRun(t *testing.T, s spec.Spec, cfg aws.Config) (preflight.Report, []string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "trace.jsonl")
	tr, err := awsx.OpenTrace(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.Copy()
	cfg.APIOptions = append(cfg.APIOptions, tr.Middleware)
	rep := preflight.Run(context.Background(), s, preflight.Options{AWS: cfg, Source: "test", Facts: facts(s)})
	recs, err := awsx.ReadTrace(path)
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, rec := range recs {
		ops = append(ops, rec.Operation)
	}
	return rep, ops
}

func status(t *testing.T, rep preflight.Report, name string) preflight.Check {
	t.Helper()
	c, ok := rep.Get(name)
	if !ok {
		t.Fatalf("no %s check in %+v", name, rep.Checks)
	}
	return c
}

func describe(rep preflight.Report) string {
	var b bytes.Buffer
	rep.Write(&b)
	return b.String()
}

var readOnly = regexp.MustCompile(`^(Describe|Get|List|Simulate)`)

func TestPreflight(t *testing.T) {
	t.Parallel()
	emu := moto.Start(t)
	const region = "eu-west-1"
	admin := emu.Config(t, region)
	ctx := context.Background()

	haKeys := iamuser.Create(t, admin, "ha-user", policy(t, "ha-aws"), iamuser.Options{})
	eksKeys := iamuser.Create(t, admin, "eks-user", policy(t, "aws"), iamuser.Options{Group: "kforge-eks"})
	noPass := iamuser.Create(t, admin, "no-passrole", iamuser.Without(t, policy(t, "ha-aws"), "iam:PassRole"), iamuser.Options{Inline: true})
	noProfile := iamuser.Create(t, admin, "no-profile", iamuser.Without(t, policy(t, "ha-aws"), "iam:CreateInstanceProfile"), iamuser.Options{Group: "partial", Inline: true})
	denyRun := iamuser.Create(t, admin, "deny-run", policy(t, "ha-aws"), iamuser.Options{})
	if _, err := iam.NewFromConfig(admin).PutUserPolicy(ctx, &iam.PutUserPolicyInput{UserName: aws.String("deny-run"), PolicyName: aws.String("deny"),
		PolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"ec2:Run*","Resource":"*"}]}`)}); err != nil {
		t.Fatal(err)
	}

	ec := ec2.NewFromConfig(admin)
	noDNS, err := ec.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.50.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	goodVPC, err := ec.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.60.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	for _, attr := range []*ec2.ModifyVpcAttributeInput{
		{VpcId: goodVPC.Vpc.VpcId, EnableDnsSupport: &ec2types.AttributeBooleanValue{Value: aws.Bool(true)}},
		{VpcId: goodVPC.Vpc.VpcId, EnableDnsHostnames: &ec2types.AttributeBooleanValue{Value: aws.Bool(true)}},
		{VpcId: noDNS.Vpc.VpcId, EnableDnsHostnames: &ec2types.AttributeBooleanValue{Value: aws.Bool(false)}},
	} {
		if _, err := ec.ModifyVpcAttribute(ctx, attr); err != nil {
			t.Fatal(err)
		}
	}

	type want map[string]preflight.Status
	tests := []struct {
		name   string
		keys   iamuser.Keys
		spec   func() spec.Spec
		want   want
		detail map[string]string // check -> substring of its detail
		method string
	}{
		{"ha-aws with its policy", haKeys, func() spec.Spec { return haSpec("prod", region) },
			want{preflight.CheckCredentials: preflight.OK, preflight.CheckPermissions: preflight.OK, preflight.CheckZones: preflight.OK,
				preflight.CheckTypes: preflight.OK, preflight.CheckImage: preflight.OK, preflight.CheckVersion: preflight.OK,
				preflight.CheckVPCQuota: preflight.OK, preflight.CheckVCPU: preflight.Warn},
			map[string]string{
				preflight.CheckCredentials: "arn:aws:iam::123456789012:user/ha-user",
				preflight.CheckPermissions: "evaluated locally",
				preflight.CheckImage:       moto.UbuntuNobleAMD64,
				preflight.CheckVCPU:        "could not check the On-Demand Standard",
				preflight.CheckVPCQuota:    "VPCs per Region: the cluster needs 1; 3 of 5 in use",
				preflight.CheckVersion:     "v1.34.1+k3s1",
			}, preflight.MethodLocal},
		{"aws with its policy through a group", eksKeys, func() spec.Spec { return eksSpec("demo", region) },
			want{preflight.CheckPermissions: preflight.OK, preflight.CheckZones: preflight.OK, preflight.CheckTypes: preflight.OK,
				preflight.CheckImage: preflight.OK, preflight.CheckVersion: preflight.Warn},
			map[string]string{
				preflight.CheckPermissions: "managed policy eks-user-policy of group kforge-eks",
				preflight.CheckImage:       "AL2023_x86_64_STANDARD",
				preflight.CheckVersion:     "could not ask EKS",
			}, preflight.MethodLocal},
		{"aws with the ha-aws policy", haKeys, func() spec.Spec { return eksSpec("demo", region) },
			want{preflight.CheckPermissions: preflight.Fail},
			map[string]string{preflight.CheckPermissions: "eks:CreateCluster on *: no policy allows it"}, preflight.MethodLocal},
		{"no iam:PassRole", noPass, func() spec.Spec { return haSpec("prod", region) },
			want{preflight.CheckPermissions: preflight.Fail},
			map[string]string{preflight.CheckPermissions: "1 of"}, preflight.MethodLocal},
		{"no iam:CreateInstanceProfile", noProfile, func() spec.Spec { return haSpec("prod", region) },
			want{preflight.CheckPermissions: preflight.Fail},
			map[string]string{preflight.CheckPermissions: "iam:CreateInstanceProfile on arn:aws:iam::123456789012:instance-profile/kforge-prod-ha-cp"}, preflight.MethodLocal},
		{"explicit deny", denyRun, func() spec.Spec { return haSpec("prod", region) },
			want{preflight.CheckPermissions: preflight.Fail},
			map[string]string{preflight.CheckPermissions: "ec2:RunInstances on *: explicitly denied by inline policy deny of user deny-run"}, preflight.MethodLocal},
		{"unknown caller policies", iamuser.Keys{AccessKeyID: moto.AccessKeyID, SecretAccessKey: moto.SecretAccessKey}, func() spec.Spec { return haSpec("prod", region) },
			want{preflight.CheckPermissions: preflight.Warn},
			map[string]string{preflight.CheckPermissions: "could not check"}, preflight.MethodNone},
		{"VPC without DNS hostnames", haKeys, func() spec.Spec { s := haSpec("prod", region); s.VPCID = aws.ToString(noDNS.Vpc.VpcId); return s },
			want{preflight.CheckVPC: preflight.Fail},
			map[string]string{preflight.CheckVPC: "DNS hostnames"}, preflight.MethodLocal},
		{"VPC with DNS", haKeys, func() spec.Spec { s := haSpec("prod", region); s.VPCID = aws.ToString(goodVPC.Vpc.VpcId); return s },
			want{preflight.CheckVPC: preflight.OK, preflight.CheckVPCQuota: preflight.OK},
			map[string]string{preflight.CheckVPCQuota: "Subnets per VPC (" + aws.ToString(goodVPC.Vpc.VpcId) + "): the cluster needs 3; 0 of 200 in use"}, preflight.MethodLocal},
		{"unknown instance type", haKeys, func() spec.Spec { s := haSpec("prod", region); s.WPSize = "t3.gigantic"; return s },
			want{preflight.CheckTypes: preflight.Fail, preflight.CheckImage: preflight.Warn},
			map[string]string{preflight.CheckTypes: "t3.gigantic"}, preflight.MethodLocal},
		{"unknown AMI", haKeys, func() spec.Spec { s := haSpec("prod", region); s.AMI = "ami-0123456789abcdef0"; return s },
			want{preflight.CheckImage: preflight.Fail},
			map[string]string{preflight.CheckImage: "ami-0123456789abcdef0 is not found"}, preflight.MethodLocal},
		{"unsupported k3s version", haKeys, func() spec.Spec { s := haSpec("prod", region); s.K8sVersion = "1.29"; return s },
			want{preflight.CheckVersion: preflight.Fail},
			map[string]string{preflight.CheckVersion: "1.29"}, preflight.MethodLocal},
		{"kubeadm full version", haKeys, func() spec.Spec {
			s := haSpec("prod", region)
			s.Bootstrap, s.K8sVersion = spec.BootstrapKubeadm, "1.33.4"
			return s
		}, want{preflight.CheckVersion: preflight.OK}, map[string]string{preflight.CheckVersion: "kubeadm installs v1.33.4"}, preflight.MethodLocal},
		{"arm64 instance types", haKeys, func() spec.Spec {
			s := haSpec("prod", region)
			s.CPSize, s.WPSize, s.EtcdSize, s.LBSize = "t4g.medium", "t4g.medium", "t4g.small", "t4g.micro"
			return s
		}, want{preflight.CheckImage: preflight.OK, preflight.CheckTypes: preflight.OK}, map[string]string{preflight.CheckImage: moto.UbuntuNobleARM64}, preflight.MethodLocal},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep, ops := tracedRun(t, tc.spec(), tc.keys.Config(admin))
			for name, st := range tc.want {
				if c := status(t, rep, name); c.Status != st {
					t.Errorf("%s: %s, want %s\n%s", name, c.Status, st, describe(rep))
				}
			}
			for name, sub := range tc.detail {
				if c := status(t, rep, name); !strings.Contains(c.Detail, sub) {
					t.Errorf("%s detail %q lacks %q", name, c.Detail, sub)
				}
			}
			if rep.PermissionMethod != tc.method {
				t.Errorf("method %q, want %q", rep.PermissionMethod, tc.method)
			}
			failed := false
			for _, st := range tc.want {
				failed = failed || st == preflight.Fail
			}
			if rep.OK() == failed {
				t.Errorf("OK() = %v\n%s", rep.OK(), describe(rep))
			}
			for _, c := range rep.Checks {
				if c.Status != preflight.OK && c.Fix == "" {
					t.Errorf("%s is %s without a fix", c.Name, c.Status)
				}
			}
			for _, op := range ops {
				if !readOnly.MatchString(op) {
					t.Errorf("preflight called %s, which is not read-only", op)
				}
			}
		})
	}

	// The failures name exactly the missing action.
	rep := preflight.Run(ctx, haSpec("prod", region), preflight.Options{AWS: noPass.Config(admin), Facts: facts(haSpec("prod", region))})
	if c := status(t, rep, preflight.CheckPermissions); !strings.Contains(c.Detail, "not allowed: iam:PassRole (") ||
		!strings.Contains(c.Detail, "iam:PassRole on arn:aws:iam::123456789012:role/kforge-prod-ha-cp (iam:PassedToService=ec2.amazonaws.com)") {
		t.Errorf("permissions detail:\n%s", c.Detail)
	}
	if len(rep.Denied) != 2 {
		t.Errorf("denied %v, want PassRole of the two roles", rep.Denied)
	}
}

func TestPreflightQuotaFull(t *testing.T) {
	t.Parallel()
	emu := moto.Start(t)
	const region = "us-west-2"
	admin := emu.Config(t, region)
	keys := iamuser.Create(t, admin, "ha-user", policy(t, "ha-aws"), iamuser.Options{})
	ec := ec2.NewFromConfig(admin)
	// moto's quota is 5 VPCs; the default VPC is one.
	for i := range 4 {
		if _, err := ec.CreateVpc(context.Background(), &ec2.CreateVpcInput{CidrBlock: aws.String(fmt.Sprintf("10.%d.0.0/16", 100+i))}); err != nil {
			t.Fatal(err)
		}
	}
	rep := preflight.Run(context.Background(), haSpec("prod", region), preflight.Options{AWS: keys.Config(admin), Facts: facts(haSpec("prod", region))})
	c := status(t, rep, preflight.CheckVPCQuota)
	if c.Status != preflight.Fail || !strings.Contains(c.Detail, "5 of 5 in use: no room") || !strings.Contains(c.Fix, "--vpc-id") {
		t.Errorf("VPC quota check: %+v", c)
	}
	if rep.OK() {
		t.Error("the report is OK with no room for a VPC")
	}
	// The cluster's own VPC does not count: a resumed create fits.
	if _, err := ec.CreateTags(context.Background(), &ec2.CreateTagsInput{Resources: []string{firstNonDefaultVPC(t, ec)},
		Tags: awsx.EC2Tags(awsx.Tags(spec.Ref{Type: spec.TypeHA, Name: "prod", Region: region}, "kforge-prod-vpc"))}); err != nil {
		t.Fatal(err)
	}
	rep = preflight.Run(context.Background(), haSpec("prod", region), preflight.Options{AWS: keys.Config(admin), Facts: facts(haSpec("prod", region))})
	if c := status(t, rep, preflight.CheckVPCQuota); c.Status != preflight.OK {
		t.Errorf("the cluster's own VPC was counted: %+v", c)
	}
}

func firstNonDefaultVPC(t *testing.T, ec *ec2.Client) string {
	t.Helper()
	out, err := ec.DescribeVpcs(context.Background(), &ec2.DescribeVpcsInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range out.Vpcs {
		if !aws.ToBool(v.IsDefault) {
			return aws.ToString(v.VpcId)
		}
	}
	t.Fatal("no VPC")
	return ""
}

// TestPreflightAsRole runs as an assumed role: the role's own policies are
// read and evaluated.
func TestPreflightAsRole(t *testing.T) {
	t.Parallel()
	emu := moto.Start(t)
	const region = "eu-west-1"
	admin := emu.Config(t, region)
	ctx := context.Background()
	c := iam.NewFromConfig(admin)
	trust := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"}]}`
	if _, err := c.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String("deployer"), AssumeRolePolicyDocument: aws.String(trust)}); err != nil {
		t.Fatal(err)
	}
	doc := string(iamuser.Without(t, policy(t, "ha-aws"), "ec2:RunInstances"))
	if _, err := c.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String("deployer"), PolicyName: aws.String("kforge"), PolicyDocument: aws.String(doc)}); err != nil {
		t.Fatal(err)
	}
	out, err := sts.NewFromConfig(admin).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String("arn:aws:iam::123456789012:role/deployer"), RoleSessionName: aws.String("ci")})
	if err != nil {
		t.Fatal(err)
	}
	cfg := admin.Copy()
	cr := out.Credentials
	cfg.Credentials = aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(aws.ToString(cr.AccessKeyId), aws.ToString(cr.SecretAccessKey), aws.ToString(cr.SessionToken)))
	rep := preflight.Run(ctx, haSpec("prod", region), preflight.Options{AWS: cfg, Facts: facts(haSpec("prod", region))})
	p := status(t, rep, preflight.CheckPermissions)
	if p.Status != preflight.Fail || !strings.Contains(p.Detail, "ec2:RunInstances on *: no policy allows it") ||
		!strings.Contains(p.Detail, "inline policy kforge of role deployer") || rep.PermissionMethod != preflight.MethodLocal {
		t.Errorf("permissions as a role: %+v (method %s)", p, rep.PermissionMethod)
	}
}

// facts is what the provider of s's type tells preflight.
func facts(s spec.Spec) preflight.Facts {
	if s.Type == spec.TypeEKS {
		return eks.PreflightFacts(s)
	}
	return ha.PreflightFacts(s)
}
