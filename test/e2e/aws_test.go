package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	ekstypes "github.com/aws/aws-sdk-go-v2/service/eks/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kforge/kforge/test/testutil/awscheck"
	"github.com/kforge/kforge/test/testutil/eksaddons"
	"github.com/kforge/kforge/test/testutil/kforgebin"
)

func tagMap(tags []ec2types.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

// checkTags asserts the docs/CONTRACT.md tags.
func checkTags(t *testing.T, what string, tags map[string]string, typ, name, region string, owned bool) {
	t.Helper()
	want := map[string]string{"kforge.io/cluster": name, "kforge.io/type": typ, "kforge.io/region": region}
	if owned {
		want["kubernetes.io/cluster/"+name] = "owned"
	}
	for k, v := range want {
		if tags[k] != v {
			t.Errorf("%s: tag %s = %q, want %q (tags %v)", what, k, tags[k], v, tags)
		}
	}
	if tags["Name"] == "" {
		t.Errorf("%s has no Name tag", what)
	}
}

// checkCreatorIsAdmin asserts what kforge asks of EKS for a cluster's
// access (as the EKS double answers it, test/testutil/eksaddons): the
// API_AND_CONFIG_MAP authentication mode, asked for explicitly (EKS's
// default is CONFIG_MAP), and the creator's admin permissions
// bootstrapped, which give the principal of cfg's credentials (kforge's)
// an access entry with AmazonEKSClusterAdminPolicy at cluster scope.
func checkCreatorIsAdmin(t *testing.T, cfg aws.Config, name, region string, cluster *ekstypes.Cluster) {
	t.Helper()
	ctx := context.Background()
	if ac := cluster.AccessConfig; ac == nil || ac.AuthenticationMode != ekstypes.AuthenticationModeApiAndConfigMap || !aws.ToBool(ac.BootstrapClusterCreatorAdminPermissions) {
		t.Errorf("cluster accessConfig %s, want API_AND_CONFIG_MAP with the creator's admin permissions bootstrapped", asJSON(ac))
	}
	if got, ok := emu.EKS.AccessConfig(region, name); !ok || aws.ToString(got.Requested.AuthenticationMode) != eksaddons.ModeAPIAndConfigMap ||
		got.Requested.BootstrapClusterCreatorAdminPermissions == nil || !*got.Requested.BootstrapClusterCreatorAdminPermissions {
		t.Errorf("CreateCluster asked for accessConfig %s, want authenticationMode API_AND_CONFIG_MAP and bootstrapClusterCreatorAdminPermissions true", asJSON(got.Requested))
	}
	me, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	principal := eksaddons.PrincipalARN(aws.ToString(me.Arn))
	kc := eks.NewFromConfig(cfg)
	entries, err := kc.ListAccessEntries(ctx, &eks.ListAccessEntriesInput{ClusterName: aws.String(name)})
	if err != nil {
		t.Fatalf("access entries: %v", err)
	}
	if !slices.Contains(entries.AccessEntries, principal) {
		t.Fatalf("access entries %v, want one for the creator %s", entries.AccessEntries, principal)
	}
	pols, err := kc.ListAssociatedAccessPolicies(ctx, &eks.ListAssociatedAccessPoliciesInput{ClusterName: aws.String(name), PrincipalArn: aws.String(principal)})
	if err != nil {
		t.Fatal(err)
	}
	admin := false
	for _, p := range pols.AssociatedAccessPolicies {
		admin = admin || (aws.ToString(p.PolicyArn) == eksaddons.ClusterAdminPolicyARN("aws") && p.AccessScope != nil && p.AccessScope.Type == ekstypes.AccessScopeTypeCluster)
	}
	if !admin {
		t.Errorf("the creator's access policies %s: want AmazonEKSClusterAdminPolicy at cluster scope", asJSON(pols.AssociatedAccessPolicies))
	}
}

// asJSON renders an SDK value as JSON (pointers as their values).
func asJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%+v", v)
	}
	return string(b)
}

func TestEKSLifecycle(t *testing.T) {
	t.Parallel()
	const name, region = "demo", "us-east-1"
	ctx := context.Background()
	cfg := emu.Config(t, region)
	env := kforgebin.NewEnv(t, emu.Env()...)

	env.MustRun(t, "create", "aws", "--name", name, "--region", region, "--nodes", "3", "--node-size", "t3.large", "--version", "1.33")

	ec := ec2.NewFromConfig(cfg)
	inv := awscheck.Take(t, cfg, "aws", name)
	for kind, n := range map[string]int{"vpc": 1, "igw": 1, "rtb": 1, "role": 2, "eks-cluster": 1, "nodegroup": 1} {
		if inv.Count(kind) != n {
			t.Errorf("%d %s, want %d (%s)", inv.Count(kind), kind, n, inv)
		}
	}
	if inv.Count("subnet") < 2 {
		t.Errorf("%d subnets, want at least 2", inv.Count("subnet"))
	}
	vpcID := inv["vpc"][0]
	for _, attr := range []ec2types.VpcAttributeName{ec2types.VpcAttributeNameEnableDnsHostnames, ec2types.VpcAttributeNameEnableDnsSupport} {
		out, err := ec.DescribeVpcAttribute(ctx, &ec2.DescribeVpcAttributeInput{VpcId: aws.String(vpcID), Attribute: attr})
		if err != nil {
			t.Fatal(err)
		}
		on := (out.EnableDnsHostnames != nil && aws.ToBool(out.EnableDnsHostnames.Value)) || (out.EnableDnsSupport != nil && aws.ToBool(out.EnableDnsSupport.Value))
		if !on {
			t.Errorf("VPC %s: %s is off", vpcID, attr)
		}
	}
	vpcs, _ := ec.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{VpcIds: []string{vpcID}})
	checkTags(t, "vpc", tagMap(vpcs.Vpcs[0].Tags), "aws", name, region, false)
	subnets, err := ec.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: inv["subnet"]})
	if err != nil {
		t.Fatal(err)
	}
	zones := map[string]bool{}
	for _, s := range subnets.Subnets {
		zones[aws.ToString(s.AvailabilityZone)] = true
		if !aws.ToBool(s.MapPublicIpOnLaunch) {
			t.Errorf("subnet %s does not map public IPs on launch", aws.ToString(s.SubnetId))
		}
		if aws.ToString(s.VpcId) != vpcID {
			t.Errorf("subnet %s is in %s", aws.ToString(s.SubnetId), aws.ToString(s.VpcId))
		}
		checkTags(t, "subnet", tagMap(s.Tags), "aws", name, region, true)
	}
	if len(zones) < 2 {
		t.Errorf("subnets in %d availability zones, want >= 2", len(zones))
	}
	igws, _ := ec.DescribeInternetGateways(ctx, &ec2.DescribeInternetGatewaysInput{InternetGatewayIds: inv["igw"]})
	if a := igws.InternetGateways[0].Attachments; len(a) != 1 || aws.ToString(a[0].VpcId) != vpcID {
		t.Errorf("internet gateway not attached to the VPC: %+v", a)
	}
	rtbs, _ := ec.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{RouteTableIds: inv["rtb"]})
	var defaultRoute bool
	for _, r := range rtbs.RouteTables[0].Routes {
		if aws.ToString(r.DestinationCidrBlock) == "0.0.0.0/0" && aws.ToString(r.GatewayId) == inv["igw"][0] {
			defaultRoute = true
		}
	}
	if !defaultRoute {
		t.Error("route table has no default route to the internet gateway")
	}
	if len(rtbs.RouteTables[0].Associations) < 2 {
		t.Errorf("route table associated with %d subnets", len(rtbs.RouteTables[0].Associations))
	}

	// IAM roles: trust and policies.
	ic := iam.NewFromConfig(cfg)
	roleCases := []struct {
		role, service string
		policies      []string
	}{
		{"kforge-demo-cp-role", "eks.amazonaws.com", []string{"AmazonEKSClusterPolicy"}},
		{"kforge-demo-wp-role", "ec2.amazonaws.com", []string{"AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly", "AmazonEBSCSIDriverPolicy"}},
	}
	roleARN := map[string]string{}
	for _, rc := range roleCases {
		got, err := ic.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(rc.role)})
		if err != nil {
			t.Fatalf("role %s: %v", rc.role, err)
		}
		roleARN[rc.role] = aws.ToString(got.Role.Arn)
		trust, _ := url.QueryUnescape(aws.ToString(got.Role.AssumeRolePolicyDocument))
		if !strings.Contains(trust, rc.service) || !strings.Contains(trust, "sts:AssumeRole") {
			t.Errorf("role %s trust policy %s does not trust %s", rc.role, trust, rc.service)
		}
		tags := map[string]string{}
		for _, tg := range got.Role.Tags {
			tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
		}
		checkTags(t, rc.role, tags, "aws", name, region, false)
		att, err := ic.ListAttachedRolePolicies(ctx, &iam.ListAttachedRolePoliciesInput{RoleName: aws.String(rc.role)})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, p := range att.AttachedPolicies {
			names = append(names, aws.ToString(p.PolicyName))
		}
		slices.Sort(names)
		want := slices.Clone(rc.policies)
		slices.Sort(want)
		if !slices.Equal(names, want) {
			t.Errorf("role %s has policies %v, want %v", rc.role, names, want)
		}
	}

	// EKS cluster and node group.
	kc := eks.NewFromConfig(cfg)
	cl, err := kc.DescribeCluster(ctx, &eks.DescribeClusterInput{Name: aws.String(name)})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(cl.Cluster.Version) != "1.33" || aws.ToString(cl.Cluster.RoleArn) != roleARN["kforge-demo-cp-role"] {
		t.Errorf("cluster version %s role %s", aws.ToString(cl.Cluster.Version), aws.ToString(cl.Cluster.RoleArn))
	}
	if got := cl.Cluster.ResourcesVpcConfig.SubnetIds; len(got) != len(inv["subnet"]) {
		t.Errorf("cluster subnets %v, want %v", got, inv["subnet"])
	}
	if cl.Cluster.Tags["kforge.io/cluster"] != name || cl.Cluster.Tags["kforge.io/region"] != region {
		t.Errorf("cluster tags %v", cl.Cluster.Tags)
	}
	ng, err := kc.DescribeNodegroup(ctx, &eks.DescribeNodegroupInput{ClusterName: aws.String(name), NodegroupName: aws.String(inv["nodegroup"][0])})
	if err != nil {
		t.Fatal(err)
	}
	if sc := ng.Nodegroup.ScalingConfig; aws.ToInt32(sc.DesiredSize) != 3 || aws.ToInt32(sc.MinSize) > 3 || aws.ToInt32(sc.MaxSize) < 3 {
		t.Errorf("node group scaling %+v, want 3 nodes", sc)
	}
	if !slices.Equal(ng.Nodegroup.InstanceTypes, []string{"t3.large"}) || aws.ToString(ng.Nodegroup.NodeRole) != roleARN["kforge-demo-wp-role"] {
		t.Errorf("node group types %v role %s", ng.Nodegroup.InstanceTypes, aws.ToString(ng.Nodegroup.NodeRole))
	}

	// The managed add-ons, at the versions EKS recommends (the double's
	// defaults, which are not always its newest), tagged as kforge's.
	addons := emu.EKS.Addons(region, name)
	for _, a := range []string{"vpc-cni", "kube-proxy", "coredns", "aws-ebs-csi-driver"} {
		got, ok := addons[a]
		want := eksaddons.DefaultVersion(a, aws.ToString(cl.Cluster.Version))
		if !ok || got.Status != "ACTIVE" || got.Version != want || got.Tags["kforge.io/cluster"] != name {
			t.Errorf("add-on %s: %+v, want ACTIVE at %s tagged for %s", a, got, want, name)
		}
	}
	if len(addons) != 4 {
		t.Errorf("%d add-ons, want 4", len(addons))
	}

	// The creator has cluster-admin through an EKS access entry.
	checkCreatorIsAdmin(t, cfg, name, region, cl.Cluster)

	// get and info.
	var list []map[string]any
	if err := json.Unmarshal([]byte(env.MustRun(t, "get", "-o", "json").Stdout), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0]["name"] != name || list[0]["type"] != "aws" || list[0]["region"] != region ||
		list[0]["status"] != "running" || list[0]["nodes"] != float64(3) {
		t.Errorf("get -o json = %v", list)
	}
	if _, err := time.Parse(time.RFC3339, list[0]["created"].(string)); err != nil {
		t.Errorf("created is not RFC 3339: %v", list[0]["created"])
	}
	var info struct {
		Status    string         `json:"status"`
		Resources map[string]any `json:"resources"`
		Endpoint  string         `json:"endpoint"`
	}
	if err := json.Unmarshal([]byte(env.MustRun(t, "info", "aws", "--name", name, "--region", region, "-o", "json").Stdout), &info); err != nil {
		t.Fatal(err)
	}
	if info.Resources["vpc"] != vpcID || info.Resources["eksCluster"] != aws.ToString(cl.Cluster.Arn) || info.Endpoint != aws.ToString(cl.Cluster.Endpoint) {
		t.Errorf("info = %+v", info)
	}

	// switch: an exec-plugin user that runs kforge token; a second cluster
	// does not overwrite the first.
	kcPath := filepath.Join(env.Home, "kubeconfig")
	if err := os.WriteFile(kcPath, []byte(existingKubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	out := env.MustRun(t, "switch", "aws", "--name", name, "--region", region)
	if strings.TrimSpace(out.Stdout) != "kforge-aws-demo-us-east-1" {
		t.Errorf("switch printed %q", out.Stdout)
	}
	conf, err := clientcmd.LoadFromFile(kcPath)
	if err != nil {
		t.Fatal(err)
	}
	ctxName := "kforge-aws-demo-us-east-1"
	if conf.CurrentContext != ctxName || conf.Contexts["other"] == nil || conf.AuthInfos["other-user"] == nil {
		t.Errorf("kubeconfig lost the existing entries or was not switched: current %q", conf.CurrentContext)
	}
	user := conf.AuthInfos[conf.Contexts[ctxName].AuthInfo]
	if user == nil || user.Exec == nil || !slices.Equal(user.Exec.Args, []string{"token", "--name", name, "--region", region}) ||
		user.Exec.APIVersion != "client.authentication.k8s.io/v1beta1" || !filepath.IsAbs(user.Exec.Command) {
		t.Fatalf("user is not the kforge exec plugin: %+v", user)
	}
	if server := conf.Clusters[conf.Contexts[ctxName].Cluster].Server; server != aws.ToString(cl.Cluster.Endpoint) {
		t.Errorf("server %s, want %s", server, aws.ToString(cl.Cluster.Endpoint))
	}
	if fi, _ := os.Stat(kcPath); fi.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig mode %v", fi.Mode().Perm())
	}

	// token, as kubectl would run it.
	var cred struct {
		Kind   string `json:"kind"`
		Status struct {
			Token      string    `json:"token"`
			Expiration time.Time `json:"expirationTimestamp"`
		} `json:"status"`
	}
	before := time.Now()
	if err := json.Unmarshal([]byte(env.MustRun(t, user.Exec.Args...).Stdout), &cred); err != nil {
		t.Fatal(err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(cred.Status.Token, "k8s-aws-v1."))
	if err != nil || !strings.HasPrefix(cred.Status.Token, "k8s-aws-v1.") {
		t.Fatalf("token %q: %v", cred.Status.Token, err)
	}
	u, _ := url.Parse(string(raw))
	if u.Query().Get("Action") != "GetCallerIdentity" || !strings.Contains(u.Query().Get("X-Amz-SignedHeaders"), "x-k8s-aws-id") {
		t.Errorf("token URL %s", u)
	}
	if d := cred.Status.Expiration.Sub(before); d < 13*time.Minute || d > 15*time.Minute {
		t.Errorf("token expires in %v, want 14m", d)
	}
	var again struct {
		Status struct{ Token string } `json:"status"`
	}
	_ = json.Unmarshal([]byte(env.MustRun(t, user.Exec.Args...).Stdout), &again)
	if again.Status.Token != cred.Status.Token {
		t.Error("second token call did not reuse the cached token")
	}

	// scale.
	env.MustRun(t, "scale", "aws", "--name", name, "--region", region, "--nodes", "5")
	ng, _ = kc.DescribeNodegroup(ctx, &eks.DescribeNodegroupInput{ClusterName: aws.String(name), NodegroupName: aws.String(inv["nodegroup"][0])})
	if sc := ng.Nodegroup.ScalingConfig; aws.ToInt32(sc.DesiredSize) != 5 || aws.ToInt32(sc.MaxSize) < 5 {
		t.Errorf("after scale: %+v", sc)
	}
	env.MustRun(t, "scale", "aws", "--name", name, "--region", region, "--nodes", "1")
	ng, _ = kc.DescribeNodegroup(ctx, &eks.DescribeNodegroupInput{ClusterName: aws.String(name), NodegroupName: aws.String(inv["nodegroup"][0])})
	if sc := ng.Nodegroup.ScalingConfig; aws.ToInt32(sc.DesiredSize) != 1 || aws.ToInt32(sc.MinSize) > 1 {
		t.Errorf("after scale down: %+v", sc)
	}
	// To zero nodes, as EKS allows (its maximum stays at least 1).
	env.MustRun(t, "scale", "aws", "--name", name, "--region", region, "--nodes", "0")
	ng, _ = kc.DescribeNodegroup(ctx, &eks.DescribeNodegroupInput{ClusterName: aws.String(name), NodegroupName: aws.String(inv["nodegroup"][0])})
	if sc := ng.Nodegroup.ScalingConfig; aws.ToInt32(sc.DesiredSize) != 0 || aws.ToInt32(sc.MinSize) != 0 || aws.ToInt32(sc.MaxSize) != 1 {
		t.Errorf("after scale to zero: desired %d, min %d, max %d", aws.ToInt32(sc.DesiredSize), aws.ToInt32(sc.MinSize), aws.ToInt32(sc.MaxSize))
	}

	// An add-on someone else installed (no kforge tags) is left to EKS,
	// which removes it with the cluster.
	kp := &eks.DescribeAddonInput{ClusterName: aws.String(name), AddonName: aws.String("kube-proxy")}
	if _, err := kc.DeleteAddon(ctx, &eks.DeleteAddonInput{ClusterName: aws.String(name), AddonName: aws.String("kube-proxy")}); err != nil {
		t.Fatal(err)
	}
	if err := eks.NewAddonDeletedWaiter(kc).Wait(ctx, kp, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.CreateAddon(ctx, &eks.CreateAddonInput{ClusterName: aws.String(name), AddonName: aws.String("kube-proxy")}); err != nil {
		t.Fatal(err)
	}

	// delete, twice; kforge's add-ons go before the cluster.
	callsBefore := len(emu.EKS.Calls(region, name))
	env.MustRun(t, "delete", "aws", "--name", name, "--region", region, "--yes")
	if n := len(emu.EKS.Addons(region, name)); n != 0 {
		t.Errorf("%d add-ons left", n)
	}
	calls := emu.EKS.Calls(region, name)[callsBefore:]
	if n := countOf(calls, "DeleteAddon"); n != 3 {
		t.Errorf("delete removed %d add-ons, want kforge's 3 (not the one installed by someone else): %v", n, calls)
	}
	if del := slices.Index(calls, "DeleteCluster"); del < 0 || slices.Index(calls, "DeleteAddon") < 0 || slices.Index(calls, "DeleteAddon") > del ||
		slices.Index(calls[del:], "DeleteAddon") >= 0 {
		t.Errorf("delete did not remove the add-ons before the cluster: %v", calls)
	}
	awscheck.Empty(t, cfg, "aws", name)
	if r := env.MustRun(t, "get", "-o", "json"); strings.TrimSpace(r.Stdout) != "[]" {
		t.Errorf("state remains: %s", r.Stdout)
	}
	r := env.MustRun(t, "delete", "aws", "--name", name, "--region", region, "--yes")
	if !strings.Contains(r.Stderr, "Nothing to delete") {
		t.Errorf("second delete said: %s", r.Stderr)
	}
	conf, _ = clientcmd.LoadFromFile(kcPath)
	if conf.Contexts[ctxName] != nil || conf.Contexts["other"] == nil {
		t.Error("delete did not remove only its own kubeconfig context")
	}
}

const existingKubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: other
  cluster:
    server: https://127.0.0.1:1
contexts:
- name: other
  context:
    cluster: other
    user: other-user
current-context: other
users:
- name: other-user
  user:
    token: keep-me
`

func countOf(s []string, v string) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}
