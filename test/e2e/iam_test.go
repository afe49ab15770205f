package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancing"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancing/types"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbv2types "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/iampolicy"
	"github.com/kforge/kforge/test/testutil/iamuser"
	"github.com/kforge/kforge/test/testutil/kforgebin"
)

// This file proves the one IAM policy (`kforge policy`, internal/iampolicy):
//
//   - TestPolicyMatchesRecordedCalls runs every command of each cluster
//     type with KFORGE_AWS_TRACE (an SDK middleware that records each call
//     attempt) and compares the actions called with the printed policy:
//     an action called but not in the policy fails, and so does a policy
//     action never called, except those AWS checks implicitly (tag on
//     create, iam:PassRole, service-linked roles) and the few listed in
//     rarePaths, which only error and repair paths call. (The unit test of
//     internal/iampolicy scans the source for every SDK call, so those are
//     covered too.)
//   - iam_enforced_test.go runs kforge under the emulator's IAM
//     enforcement with users whose only policy is the printed one.

// traceActions reads a KFORGE_AWS_TRACE file into the IAM actions called.
func traceActions(t *testing.T, path string) map[string]bool {
	t.Helper()
	recs, err := awsx.ReadTrace(path)
	if err != nil {
		t.Fatalf("trace: %v", err)
	}
	out := map[string]bool{}
	for _, rec := range recs {
		a, ok := iampolicy.ActionOf(rec.Service, rec.Operation)
		if !ok {
			t.Errorf("trace: unknown AWS service %q (operation %s)", rec.Service, rec.Operation)
			continue
		}
		out[a] = true
	}
	return out
}

// printedPolicy is a policy as `kforge policy` prints it.
type printedPolicy struct {
	Version   string
	Statement []struct {
		Sid       string
		Effect    string
		Action    []string
		Resource  []string
		Condition map[string]map[string][]string
	}
}

func (p printedPolicy) actions() []string {
	set := map[string]bool{}
	for _, s := range p.Statement {
		for _, a := range s.Action {
			set[a] = true
		}
	}
	out := make([]string, 0, len(set))
	for a := range set {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// kforgePolicy runs `kforge policy` and checks that it prints valid JSON.
func kforgePolicy(t *testing.T, env *kforgebin.Env, args ...string) ([]byte, printedPolicy) {
	t.Helper()
	r := env.MustRun(t, append([]string{"policy"}, args...)...)
	var p printedPolicy
	dec := json.NewDecoder(strings.NewReader(r.Stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("kforge policy %v printed invalid JSON: %v\n%s", args, err, r.Stdout)
	}
	if dec.More() {
		t.Fatalf("kforge policy %v printed more than one JSON document", args)
	}
	if p.Version != "2012-10-17" || len(p.Statement) == 0 {
		t.Fatalf("kforge policy %v: version %q, %d statements", args, p.Version, len(p.Statement))
	}
	return []byte(r.Stdout), p
}

// checkScoped asserts that IAM role and instance-profile actions reach only
// kforge-* names and roles are passed only to the given services.
func checkScoped(t *testing.T, p printedPolicy, account string, passedTo []string) {
	t.Helper()
	role := "arn:aws:iam::" + account + ":role/kforge-*"
	profile := "arn:aws:iam::" + account + ":instance-profile/kforge-*"
	sawRole, sawProfile, sawPass := false, false, false
	for _, s := range p.Statement {
		if s.Effect != "Allow" {
			t.Errorf("statement %s: effect %s", s.Sid, s.Effect)
		}
		for _, a := range s.Action {
			if !strings.HasPrefix(a, "iam:") {
				continue
			}
			for _, r := range s.Resource {
				switch {
				case r == "*":
					t.Errorf("%s is granted on every resource", a)
				case strings.Contains(r, ":role/aws-service-role/"):
					if a != "iam:CreateServiceLinkedRole" {
						t.Errorf("%s reaches service-linked role %s", a, r)
					}
				case strings.Contains(r, ":role/"):
					if r != role {
						t.Errorf("%s reaches %s, not only %s", a, r, role)
					}
					sawRole = true
				case strings.Contains(r, ":instance-profile/"):
					if r != profile {
						t.Errorf("%s reaches %s, not only %s", a, r, profile)
					}
					sawProfile = true
				}
			}
			if a == "iam:PassRole" {
				sawPass = true
				if got := s.Condition["StringEquals"]["iam:PassedToService"]; !slices.Equal(got, passedTo) {
					t.Errorf("iam:PassRole to %v, want %v", got, passedTo)
				}
			}
		}
	}
	if !sawRole || !sawProfile || !sawPass {
		t.Errorf("the policy lacks the role (%v), instance-profile (%v) or PassRole (%v) statements", sawRole, sawProfile, sawPass)
	}
}

// rarePaths are policy actions the end-to-end flows below do not reach,
// with the path that calls them. The source scan of internal/iampolicy
// proves each is called; keep this list short.
var rarePaths = map[string]string{
	"ec2:ReplaceRoute":                 "network: repairs a default route that points elsewhere",
	"ec2:ReplaceRouteTableAssociation": "network: moves a subnet that another route table holds",
	"ec2:DescribeNatGateways":          "network: names what blocks a refused delete of a subnet or VPC",
	"ec2:DescribeVpcEndpoints":         "network: names what blocks a refused delete of a subnet or VPC",
	"ec2:DescribeVpnGateways":          "network: names what blocks a refused delete of a VPC",
	"ec2:GetConsoleOutput":             "ha-aws: a VM that has not answered SSH for 90 s (internal/ha/boot/sshwait_test.go)",
}

// seedLeftovers makes, in a cluster's VPC, what Kubernetes would leave
// there (a network load balancer with a listener and target group and a
// classic load balancer, tagged as the cloud controller tags them, two
// security groups that refer to each other, an available network
// interface and an EBS volume), so that delete runs its code for them.
func seedLeftovers(t *testing.T, cfg aws.Config, name, vpc string, subnets []string) {
	t.Helper()
	ctx := context.Background()
	ec := ec2.NewFromConfig(cfg)
	tag := func(rt ec2types.ResourceType) []ec2types.TagSpecification {
		return awsx.EC2TagSpec(rt, map[string]string{awsx.KubernetesClusterTag(name): "owned", "kubernetes.io/service-name": "default/web"})
	}
	sg := func(n string) string {
		out, err := ec.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(n), Description: aws.String(n),
			VpcId: aws.String(vpc), TagSpecifications: tag(ec2types.ResourceTypeSecurityGroup)})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(out.GroupId)
	}
	lbSG, otherSG := sg("k8s-elb-"+name), sg("k8s-traffic-"+name)
	if _, err := ec.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(otherSG),
		IpPermissions: []ec2types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(80), ToPort: aws.Int32(80),
			UserIdGroupPairs: []ec2types.UserIdGroupPair{{GroupId: aws.String(lbSG)}}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ec.AuthorizeSecurityGroupEgress(ctx, &ec2.AuthorizeSecurityGroupEgressInput{GroupId: aws.String(lbSG),
		IpPermissions: []ec2types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(80), ToPort: aws.Int32(80),
			UserIdGroupPairs: []ec2types.UserIdGroupPair{{GroupId: aws.String(otherSG)}}}}}); err != nil {
		t.Fatal(err)
	}
	// The cloud controller tags its load balancers, and the target groups
	// of its network load balancers, with the Service they serve
	// (kubernetes.io/service-name=<namespace>/<name>) and the cluster
	// (kubernetes.io/cluster/<name>=owned): cloud-provider-aws
	// pkg/providers/v1 aws_loadbalancer.go, ensureLoadBalancer and
	// ensureLoadBalancerv2.
	lbTags := map[string]string{awsx.KubernetesClusterTag(name): "owned", "kubernetes.io/service-name": "default/web"}
	var elbv2Tags []elbv2types.Tag
	var elbTags []elbtypes.Tag
	for k, v := range lbTags {
		elbv2Tags = append(elbv2Tags, elbv2types.Tag{Key: aws.String(k), Value: aws.String(v)})
		elbTags = append(elbTags, elbtypes.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	// Its ELBv2 load balancers are network load balancers with TCP
	// listeners and target groups, and no security group.
	e2 := elasticloadbalancingv2.NewFromConfig(cfg)
	lb, err := e2.CreateLoadBalancer(ctx, &elasticloadbalancingv2.CreateLoadBalancerInput{Name: aws.String("k8s-" + name),
		Type: elbv2types.LoadBalancerTypeEnumNetwork, Subnets: subnets, Tags: elbv2Tags})
	if err != nil {
		t.Fatal(err)
	}
	tg, err := e2.CreateTargetGroup(ctx, &elasticloadbalancingv2.CreateTargetGroupInput{Name: aws.String("k8s-tg-" + name),
		Protocol: elbv2types.ProtocolEnumTcp, Port: aws.Int32(30080), VpcId: aws.String(vpc), TargetType: elbv2types.TargetTypeEnumInstance, Tags: elbv2Tags})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e2.CreateListener(ctx, &elasticloadbalancingv2.CreateListenerInput{LoadBalancerArn: lb.LoadBalancers[0].LoadBalancerArn,
		Protocol: elbv2types.ProtocolEnumTcp, Port: aws.Int32(80),
		DefaultActions: []elbv2types.Action{{Type: elbv2types.ActionTypeEnumForward, TargetGroupArn: tg.TargetGroups[0].TargetGroupArn}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := elasticloadbalancing.NewFromConfig(cfg).CreateLoadBalancer(ctx, &elasticloadbalancing.CreateLoadBalancerInput{
		LoadBalancerName: aws.String("k8s-classic-" + name), Subnets: subnets, SecurityGroups: []string{lbSG}, Tags: elbTags,
		Listeners: []elbtypes.Listener{{Protocol: aws.String("TCP"), LoadBalancerPort: 80, InstancePort: aws.Int32(30080)}}}); err != nil {
		t.Fatal(err)
	}
	sub, err := ec.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: subnets[:1]})
	if err != nil {
		t.Fatal(err)
	}
	// A volume as the EBS CSI driver of an ha-aws cluster makes it
	// (--k8s-tag-cluster-id=<name>; see internal/cloudint).
	if _, err := ec.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: sub.Subnets[0].AvailabilityZone, Size: aws.Int32(1),
		TagSpecifications: awsx.EC2TagSpec(ec2types.ResourceTypeVolume, map[string]string{
			awsx.KubernetesClusterTag(name): "owned", "ebs.csi.aws.com/cluster": "true",
			"CSIVolumeName": "pvc-0d5e2f7c-1b7a-4c1e-9d7e-3f1a2b3c4d5e", "kubernetes.io/created-for/pvc/name": "data",
		})}); err != nil {
		t.Fatal(err)
	}
	if _, err := ec.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(subnets[0]),
		TagSpecifications: tag(ec2types.ResourceTypeNetworkInterface)}); err != nil {
		t.Fatal(err)
	}
}

// leftoversGone checks that nothing seedLeftovers made for cluster name is
// left (awscheck sees only what carries kforge's tags).
func leftoversGone(t *testing.T, cfg aws.Config, name string) {
	t.Helper()
	ctx := context.Background()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	var left []string
	// The load balancers and the target group, by the names seedLeftovers
	// gives them.
	seeded := map[string]string{"k8s-" + name: "load balancer", "k8s-tg-" + name: "target group", "k8s-classic-" + name: "classic load balancer"}
	found := func(n *string) {
		if what, ok := seeded[aws.ToString(n)]; ok {
			left = append(left, what+" "+aws.ToString(n))
		}
	}
	e2 := elasticloadbalancingv2.NewFromConfig(cfg)
	lbs, err := e2.DescribeLoadBalancers(ctx, &elasticloadbalancingv2.DescribeLoadBalancersInput{})
	must(err)
	for _, lb := range lbs.LoadBalancers {
		found(lb.LoadBalancerName)
	}
	tgs, err := e2.DescribeTargetGroups(ctx, &elasticloadbalancingv2.DescribeTargetGroupsInput{})
	must(err)
	for _, tg := range tgs.TargetGroups {
		found(tg.TargetGroupName)
	}
	classic, err := elasticloadbalancing.NewFromConfig(cfg).DescribeLoadBalancers(ctx, &elasticloadbalancing.DescribeLoadBalancersInput{})
	must(err)
	for _, lb := range classic.LoadBalancerDescriptions {
		found(lb.LoadBalancerName)
	}
	// The security groups, network interface and volume, by the cluster's
	// Kubernetes tag.
	ec := ec2.NewFromConfig(cfg)
	owned := []ec2types.Filter{{Name: aws.String("tag:" + awsx.KubernetesClusterTag(name)), Values: []string{"owned"}}}
	sgs, err := ec.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: owned})
	must(err)
	for _, g := range sgs.SecurityGroups {
		left = append(left, "security group "+aws.ToString(g.GroupName))
	}
	enis, err := ec.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: owned})
	must(err)
	for _, n := range enis.NetworkInterfaces {
		left = append(left, "network interface "+aws.ToString(n.NetworkInterfaceId))
	}
	vols, err := ec.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: owned})
	must(err)
	for _, v := range vols.Volumes {
		if v.State != ec2types.VolumeStateDeleted && v.State != ec2types.VolumeStateDeleting {
			left = append(left, "volume "+aws.ToString(v.VolumeId))
		}
	}
	if len(left) > 0 {
		t.Errorf("what Kubernetes made for cluster %s outlived its delete: %v", name, left)
	}
}

// clusterNetwork reads the VPC and subnets of a cluster from `kforge info`.
func clusterNetwork(t *testing.T, env *kforgebin.Env, typ, name, region string) (string, []string) {
	t.Helper()
	var info struct {
		Resources struct {
			VPC     string   `json:"vpc"`
			Subnets []string `json:"subnets"`
		} `json:"resources"`
	}
	if err := json.Unmarshal([]byte(env.MustRun(t, "info", typ, "--name", name, "--region", region, "-o", "json").Stdout), &info); err != nil {
		t.Fatal(err)
	}
	if info.Resources.VPC == "" || len(info.Resources.Subnets) == 0 {
		t.Fatalf("info of %s lists no network: %+v", name, info)
	}
	return info.Resources.VPC, info.Resources.Subnets
}

// tracedUser makes the IAM user the traced runs use, with the policy
// spread over every place preflight reads: a managed policy of a group, an
// inline policy of the group, and an inline policy of the user. (moto has
// no PutUserPermissionsBoundary; the unit tests of internal/iampolicy
// cover boundaries.)
func tracedUser(t *testing.T, admin aws.Config, name string, doc []byte) iamuser.Keys {
	t.Helper()
	ctx := context.Background()
	keys := iamuser.Create(t, admin, name, doc, iamuser.Options{Group: name + "-group"})
	c := iam.NewFromConfig(admin)
	allowSTS := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:GetCallerIdentity","Resource":"*"}]}`
	if _, err := c.PutGroupPolicy(ctx, &iam.PutGroupPolicyInput{GroupName: aws.String(name + "-group"), PolicyName: aws.String("sts"), PolicyDocument: aws.String(allowSTS)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutUserPolicy(ctx, &iam.PutUserPolicyInput{UserName: aws.String(name), PolicyName: aws.String("sts"), PolicyDocument: aws.String(allowSTS)}); err != nil {
		t.Fatal(err)
	}
	return keys
}

// assumedRoleEnv returns the environment of a session of a role that has
// the policy inline, for a preflight as a role.
func assumedRoleEnv(t *testing.T, admin aws.Config, role string, doc []byte) []string {
	t.Helper()
	ctx := context.Background()
	c := iam.NewFromConfig(admin)
	trust := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"}]}`
	if _, err := c.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String(role), AssumeRolePolicyDocument: aws.String(trust)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String(role), PolicyName: aws.String("kforge"), PolicyDocument: aws.String(string(doc))}); err != nil {
		t.Fatal(err)
	}
	out, err := sts.NewFromConfig(admin).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String("arn:aws:iam::123456789012:role/" + role), RoleSessionName: aws.String("ci")})
	if err != nil {
		t.Fatal(err)
	}
	cr := out.Credentials
	return []string{"AWS_ACCESS_KEY_ID=" + aws.ToString(cr.AccessKeyId), "AWS_SECRET_ACCESS_KEY=" + aws.ToString(cr.SecretAccessKey), "AWS_SESSION_TOKEN=" + aws.ToString(cr.SessionToken)}
}

// optInPreflight runs a preflight in an opt-in region (af-south-1, which
// the emulator's account has enabled), where preflight asks EC2 whether
// the account may use it. Other checks may fail there: only the region
// check is asserted.
func optInPreflight(t *testing.T, env *kforgebin.Env, typ, name string) {
	t.Helper()
	r := env.Run(t, "preflight", typ, "--name", name, "--region", "af-south-1")
	if !strings.Contains(r.Stdout, "af-south-1 (opt-in region, enabled in this account)") {
		t.Errorf("preflight %s in af-south-1: exit %d\n%s%s", typ, r.Code, r.Stdout, r.Stderr)
	}
}

// compareWithPolicy checks the recorded actions of a type against its
// printed policy.
func compareWithPolicy(t *testing.T, typ string, called map[string]bool, printed printedPolicy, rare map[string]string) {
	t.Helper()
	policy := printed.actions()
	implicit := map[string]string{}
	forType := map[string]bool{} // the actions iampolicy declares for typ
	for _, p := range iampolicy.Permissions() {
		if p.For(typ) {
			forType[p.Action] = true
		}
		if p.Implicit != "" && p.For(typ) {
			implicit[p.Action] = p.Implicit
		}
	}
	var missing, unused []string
	for a := range called {
		if !slices.Contains(policy, a) {
			missing = append(missing, a)
		}
		if implicit[a] != "" {
			t.Errorf("%s is marked implicit (never called by kforge) but was called", a)
		}
	}
	for _, a := range policy {
		if !called[a] && implicit[a] == "" && rare[a] == "" {
			unused = append(unused, a)
		}
	}
	for a := range rare {
		if called[a] {
			t.Errorf("%s is listed as a rare path but the flows called it: remove it from the list", a)
		}
		// A rare path of one type only (ec2:GetConsoleOutput is ha-aws's)
		// is not expected in the other type's policy.
		if forType[a] && !slices.Contains(policy, a) {
			t.Errorf("rare path %s is not in the %s policy", a, typ)
		}
	}
	sort.Strings(missing)
	sort.Strings(unused)
	if len(missing) > 0 {
		t.Errorf("%s: kforge called actions `kforge policy %s` lacks:\n  %s", typ, typ, strings.Join(missing, "\n  "))
	}
	if len(unused) > 0 {
		t.Errorf("%s: `kforge policy %s` lists actions no %s flow called:\n  %s", typ, typ, typ, strings.Join(unused, "\n  "))
	}
	t.Logf("%s: %d actions called, %d in the policy (%d implicit)", typ, len(called), len(policy), len(implicit))
}

func TestPolicyMatchesRecordedCalls(t *testing.T) {
	t.Parallel()
	t.Run("aws", func(t *testing.T) {
		t.Parallel()
		const name, region = "traced", "us-east-2"
		admin := emu.Config(t, region)
		trace := filepath.Join(t.TempDir(), "trace.jsonl")
		env := kforgebin.NewEnv(t, emu.Env()...)
		raw, printed := kforgePolicy(t, env, "aws")
		checkScoped(t, printed, "*", []string{"eks.amazonaws.com"})
		_, withAccount := kforgePolicy(t, env, "aws", "--account", "123456789012")
		checkScoped(t, withAccount, "123456789012", []string{"eks.amazonaws.com"})

		keys := tracedUser(t, admin, "trace-aws", raw)
		env.Extra = append(env.Extra, "KFORGE_AWS_TRACE="+trace)
		env.Extra = append(env.Extra, keys.Env()...)
		run := func(args ...string) { t.Helper(); env.MustRun(t, args...) }
		ref := []string{"--name", name, "--region", region}

		run("cred", "--show", "--region", region)
		out := env.MustRun(t, append([]string{"preflight", "aws"}, ref...)...)
		if !strings.Contains(out.Stdout, "all") || !strings.Contains(out.Stdout, "evaluated locally") {
			t.Errorf("preflight:\n%s", out.Stdout)
		}
		optInPreflight(t, env, "aws", name)
		run(append([]string{"create", "aws"}, ref...)...)
		run(append([]string{"info", "aws"}, ref...)...)
		run(append([]string{"switch", "aws"}, ref...)...)
		run(append([]string{"token"}, ref...)...)
		run(append(append([]string{"scale", "aws"}, ref...), "--nodes", "3")...)
		run(append(append([]string{"scale", "aws"}, ref...), "--nodes", "1")...)
		run(append(append([]string{"upgrade", "aws"}, ref...), "--k8s-version", "1.34")...)
		vpc, subnets := clusterNetwork(t, env, "aws", name, region)
		seedLeftovers(t, admin, name, vpc, subnets)
		run(append([]string{"delete", "aws", "--yes"}, ref...)...)
		run(append([]string{"delete", "aws", "--yes"}, ref...)...)
		leftoversGone(t, admin, name)

		// In an existing VPC.
		userVPCID := userVPC(t, ec2.NewFromConfig(admin), "10.70.0.0/16", true, true)
		ref2 := []string{"--name", name + "-vpc", "--region", region}
		run(append(append([]string{"create", "aws"}, ref2...), "--vpc-id", userVPCID)...)
		run(append([]string{"delete", "aws", "--yes"}, ref2...)...)

		// Preflight as a role reads the role's policies.
		roleEnv := &kforgebin.Env{Home: env.Home, Extra: append(append([]string{}, env.Extra...), assumedRoleEnv(t, admin, "trace-aws-role", raw)...)}
		if r := roleEnv.MustRun(t, append([]string{"preflight", "aws"}, ref...)...); !strings.Contains(r.Stdout, "role trace-aws-role") {
			t.Errorf("preflight as a role:\n%s", r.Stdout)
		}

		compareWithPolicy(t, "aws", traceActions(t, trace), printed, rarePaths)
	})
	t.Run("ha-aws", func(t *testing.T) {
		t.Parallel()
		const name, region = "traced", "eu-west-2"
		h := newHAEnv(t, region)
		trace := filepath.Join(t.TempDir(), "trace.jsonl")
		raw, printed := kforgePolicy(t, h.Env, "ha-aws")
		checkScoped(t, printed, "*", []string{"ec2.amazonaws.com"})
		_, all := kforgePolicy(t, h.Env, "all")
		checkScoped(t, all, "*", []string{"eks.amazonaws.com", "ec2.amazonaws.com"})

		keys := tracedUser(t, h.cfg, "trace-ha", raw)
		h.Extra = append(h.Extra, "KFORGE_AWS_TRACE="+trace)
		h.Extra = append(h.Extra, keys.Env()...)
		run := func(args ...string) { t.Helper(); h.MustRun(t, args...) }
		ref := []string{"--name", name, "--region", region}
		small := []string{"--etcd", "1", "--control-planes", "1", "--workers", "1", "--ssh-cidr", "10.0.0.0/8", "--ssh-jump", h.jump()}

		run("cred", "--show", "--region", region)
		run(append([]string{"preflight", "ha-aws"}, ref...)...)
		optInPreflight(t, h.Env, "ha-aws", name)
		run(append(append([]string{"create", "ha-aws"}, ref...), small...)...)
		run(append([]string{"info", "ha-aws"}, ref...)...)
		run(append([]string{"switch", "ha-aws"}, ref...)...)
		// Workers 1 and 4 share a subnet: they launch in one batch, then
		// each is named after its slot (CreateTags).
		run(append(append([]string{"scale", "ha-aws"}, ref...), "--workers", "5")...)
		run(append(append([]string{"scale", "ha-aws"}, ref...), "--workers", "1")...)
		// Drift that only a repair's calls put back: a VM stopped, another
		// moved to another security group, one without its instance
		// profile, and the workers' profile made again (a new ID).
		makeDrift(t, h.cfg, name)
		run(append(append([]string{"create", "ha-aws"}, ref...), small...)...)
		vpc, subnets := clusterNetwork(t, h.Env, "ha-aws", name, region)
		seedLeftovers(t, h.cfg, name, vpc, subnets)
		run(append([]string{"delete", "ha-aws", "--yes"}, ref...)...)
		run(append([]string{"delete", "ha-aws", "--yes"}, ref...)...)
		leftoversGone(t, h.cfg, name)

		// kubeadm, in an existing VPC.
		userVPCID := userVPC(t, ec2.NewFromConfig(h.cfg), "10.80.0.0/16", true, true)
		ref2 := []string{"--name", name + "-kadm", "--region", region}
		run(append(append(append([]string{"create", "ha-aws"}, ref2...), small...), "--bootstrap", "kubeadm", "--vpc-id", userVPCID)...)
		run(append([]string{"delete", "ha-aws", "--yes"}, ref2...)...)

		roleEnv := &kforgebin.Env{Home: h.Home, Extra: append(append([]string{}, h.Extra...), assumedRoleEnv(t, h.cfg, "trace-ha-role", raw)...)}
		roleEnv.MustRun(t, append([]string{"preflight", "ha-aws"}, ref...)...)

		compareWithPolicy(t, "ha-aws", traceActions(t, trace), printed, rarePaths)
	})
}

// makeDrift changes a small ha-aws cluster outside kforge in the ways whose
// repair needs the policy's drift actions (ec2:StartInstances,
// ec2:ModifyInstanceAttribute, ec2:AssociateIamInstanceProfile,
// ec2:ReplaceIamInstanceProfileAssociation).
func makeDrift(t *testing.T, admin aws.Config, name string) {
	t.Helper()
	ctx := context.Background()
	ec := ec2.NewFromConfig(admin)
	ic := iam.NewFromConfig(admin)
	etcd, lb, cp := vmByName(t, admin, name+"-etcd-0"), vmByName(t, admin, name+"-lb-0"), vmByName(t, admin, name+"-cp-0")
	if _, err := ec.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{aws.ToString(etcd.InstanceId)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ec.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: lb.InstanceId,
		Groups: []string{aws.ToString(etcd.SecurityGroups[0].GroupId)}}); err != nil {
		t.Fatal(err)
	}
	assoc, err := ec.DescribeIamInstanceProfileAssociations(ctx, &ec2.DescribeIamInstanceProfileAssociationsInput{
		Filters: []ec2types.Filter{{Name: aws.String("instance-id"), Values: []string{aws.ToString(cp.InstanceId)}}}})
	if err != nil || len(assoc.IamInstanceProfileAssociations) != 1 {
		t.Fatalf("the instance profile of %s: %v %+v", aws.ToString(cp.InstanceId), err, assoc)
	}
	if _, err := ec.DisassociateIamInstanceProfile(ctx, &ec2.DisassociateIamInstanceProfileInput{AssociationId: assoc.IamInstanceProfileAssociations[0].AssociationId}); err != nil {
		t.Fatal(err)
	}
	profile := aws.String("kforge-" + name + "-ha-wp")
	if _, err := ic.RemoveRoleFromInstanceProfile(ctx, &iam.RemoveRoleFromInstanceProfileInput{InstanceProfileName: profile, RoleName: profile}); err != nil {
		t.Fatal(err)
	}
	if _, err := ic.DeleteInstanceProfile(ctx, &iam.DeleteInstanceProfileInput{InstanceProfileName: profile}); err != nil {
		t.Fatal(err)
	}
}
