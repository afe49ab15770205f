package eksaddons_test

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	ekstypes "github.com/aws/aws-sdk-go-v2/service/eks/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/test/testutil/eksaddons"
	"github.com/kforge/kforge/test/testutil/moto"
)

// createCluster makes a cluster as c's caller, with access (nil: no
// accessConfig in the request).
func createCluster(t *testing.T, c *eks.Client, name string, access *ekstypes.CreateAccessConfigRequest) {
	t.Helper()
	if _, err := c.CreateCluster(context.Background(), &eks.CreateClusterInput{Name: aws.String(name), RoleArn: aws.String("arn:aws:iam::123456789012:role/r"),
		ResourcesVpcConfig: &ekstypes.VpcConfigRequest{SubnetIds: []string{"subnet-1", "subnet-2"}}, AccessConfig: access}); err != nil {
		t.Fatal(err)
	}
}

// The creator of a cluster made in the API_AND_CONFIG_MAP mode gets an
// access entry with cluster-admin at cluster scope, which the SDK's own
// client reads as EKS answers it; DescribeCluster carries the access
// configuration; the entries go with the cluster.
func TestAccessEntries(t *testing.T) {
	t.Parallel()
	emu := moto.Start(t)
	ctx := context.Background()
	cfg := emu.Config(t, "eu-west-1")
	c := eks.NewFromConfig(cfg)
	createCluster(t, c, "demo", &ekstypes.CreateAccessConfigRequest{
		AuthenticationMode: ekstypes.AuthenticationModeApiAndConfigMap, BootstrapClusterCreatorAdminPermissions: aws.Bool(true)})

	me, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	principal := eksaddons.PrincipalARN(aws.ToString(me.Arn))
	if principal != "arn:aws:iam::"+aws.ToString(me.Account)+":user/moto" {
		t.Errorf("the emulator's placeholder caller %s is principal %s", aws.ToString(me.Arn), principal)
	}

	cl, err := c.DescribeCluster(ctx, &eks.DescribeClusterInput{Name: aws.String("demo")})
	if err != nil {
		t.Fatal(err)
	}
	if ac := cl.Cluster.AccessConfig; ac == nil || ac.AuthenticationMode != ekstypes.AuthenticationModeApiAndConfigMap || !aws.ToBool(ac.BootstrapClusterCreatorAdminPermissions) {
		t.Errorf("DescribeCluster accessConfig %+v", ac)
	}
	if aws.ToString(cl.Cluster.Name) != "demo" || cl.Cluster.ResourcesVpcConfig == nil {
		t.Errorf("the emulator's answer was not kept: %+v", cl.Cluster)
	}

	list, err := c.ListAccessEntries(ctx, &eks.ListAccessEntriesInput{ClusterName: aws.String("demo")})
	if err != nil || len(list.AccessEntries) != 1 || list.AccessEntries[0] != principal {
		t.Fatalf("ListAccessEntries: %+v %v, want [%s]", list, err, principal)
	}
	admin := eksaddons.ClusterAdminPolicyARN("aws")
	for policy, n := range map[string]int{admin: 1, "arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy": 0} {
		got, err := c.ListAccessEntries(ctx, &eks.ListAccessEntriesInput{ClusterName: aws.String("demo"), AssociatedPolicyArn: aws.String(policy)})
		if err != nil || len(got.AccessEntries) != n {
			t.Errorf("ListAccessEntries of %s: %+v %v, want %d", policy, got, err, n)
		}
	}
	entry, err := c.DescribeAccessEntry(ctx, &eks.DescribeAccessEntryInput{ClusterName: aws.String("demo"), PrincipalArn: aws.String(principal)})
	if err != nil {
		t.Fatal(err)
	}
	e := entry.AccessEntry
	if aws.ToString(e.PrincipalArn) != principal || aws.ToString(e.ClusterName) != "demo" || aws.ToString(e.Type) != "STANDARD" ||
		aws.ToString(e.Username) != principal || e.CreatedAt == nil || e.KubernetesGroups == nil ||
		!strings.HasPrefix(aws.ToString(e.AccessEntryArn), "arn:aws:eks:eu-west-1:"+aws.ToString(me.Account)+":access-entry/demo/user/") {
		t.Errorf("DescribeAccessEntry: %+v", e)
	}
	pols, err := c.ListAssociatedAccessPolicies(ctx, &eks.ListAssociatedAccessPoliciesInput{ClusterName: aws.String("demo"), PrincipalArn: aws.String(principal)})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(pols.ClusterName) != "demo" || aws.ToString(pols.PrincipalArn) != principal || len(pols.AssociatedAccessPolicies) != 1 {
		t.Fatalf("ListAssociatedAccessPolicies: %+v", pols)
	}
	if p := pols.AssociatedAccessPolicies[0]; aws.ToString(p.PolicyArn) != admin || p.AccessScope == nil ||
		p.AccessScope.Type != ekstypes.AccessScopeTypeCluster || len(p.AccessScope.Namespaces) != 0 || p.AssociatedAt == nil {
		t.Errorf("associated policy %+v (scope %+v)", p, p.AccessScope)
	}
	// The SDK's paginator reads the pages.
	pages := eks.NewListAccessEntriesPaginator(c, &eks.ListAccessEntriesInput{ClusterName: aws.String("demo"), MaxResults: aws.Int32(1)})
	var all []string
	for pages.HasMorePages() {
		p, err := pages.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, p.AccessEntries...)
	}
	if len(all) != 1 {
		t.Errorf("paged: %v", all)
	}

	if _, err := c.DescribeAccessEntry(ctx, &eks.DescribeAccessEntryInput{ClusterName: aws.String("demo"),
		PrincipalArn: aws.String("arn:aws:iam::123456789012:role/nobody")}); !awsx.IsNotFound(err) {
		t.Errorf("an unknown principal: %v", err)
	}
	if _, err := c.ListAccessEntries(ctx, &eks.ListAccessEntriesInput{ClusterName: aws.String("nosuch")}); !awsx.IsNotFound(err) {
		t.Errorf("a missing cluster: %v", err)
	}

	// A cluster's deletion takes its entries.
	if _, err := c.DeleteCluster(ctx, &eks.DeleteClusterInput{Name: aws.String("demo")}); err != nil {
		t.Fatal(err)
	}
	if n := len(emu.EKS.AccessEntries("eu-west-1", "demo")); n != 0 {
		t.Errorf("%d access entries outlived their cluster", n)
	}
	if _, ok := emu.EKS.AccessConfig("eu-west-1", "demo"); ok {
		t.Error("the access configuration outlived its cluster")
	}
}

// EKS's defaults: a CreateCluster without accessConfig gives the
// CONFIG_MAP mode, in which the access-entry calls are refused; without
// the bootstrap the creator gets no entry; the API mode has entries too.
func TestAccessConfigDefaults(t *testing.T) {
	t.Parallel()
	emu := moto.Start(t)
	ctx := context.Background()
	c := eks.NewFromConfig(emu.Config(t, "us-east-2"))
	createCluster(t, c, "plain", nil)
	createCluster(t, c, "nobootstrap", &ekstypes.CreateAccessConfigRequest{
		AuthenticationMode: ekstypes.AuthenticationModeApiAndConfigMap, BootstrapClusterCreatorAdminPermissions: aws.Bool(false)})
	createCluster(t, c, "api", &ekstypes.CreateAccessConfigRequest{AuthenticationMode: ekstypes.AuthenticationModeApi})

	for name, want := range map[string]struct {
		mode      ekstypes.AuthenticationMode
		bootstrap bool
		entries   int // -1: refused
	}{
		"plain":       {ekstypes.AuthenticationModeConfigMap, true, -1},
		"nobootstrap": {ekstypes.AuthenticationModeApiAndConfigMap, false, 0},
		"api":         {ekstypes.AuthenticationModeApi, true, 1},
	} {
		cl, err := c.DescribeCluster(ctx, &eks.DescribeClusterInput{Name: aws.String(name)})
		if err != nil {
			t.Fatal(err)
		}
		if ac := cl.Cluster.AccessConfig; ac == nil || ac.AuthenticationMode != want.mode || aws.ToBool(ac.BootstrapClusterCreatorAdminPermissions) != want.bootstrap {
			t.Errorf("%s: accessConfig %+v, want %s with bootstrap %v", name, ac, want.mode, want.bootstrap)
		}
		list, err := c.ListAccessEntries(ctx, &eks.ListAccessEntriesInput{ClusterName: aws.String(name)})
		switch {
		case want.entries < 0:
			if !awsx.HasCode(err, "InvalidRequestException") {
				t.Errorf("%s: ListAccessEntries in the CONFIG_MAP mode: %v", name, err)
			}
		case err != nil || len(list.AccessEntries) != want.entries:
			t.Errorf("%s: ListAccessEntries %+v %v, want %d entries", name, list, err, want.entries)
		}
	}
	if got, _ := emu.EKS.AccessConfig("us-east-2", "plain"); got.Requested.AuthenticationMode != nil || got.Requested.BootstrapClusterCreatorAdminPermissions != nil {
		t.Errorf("a request without accessConfig recorded as %+v", got.Requested)
	}
}

// The creator is whoever signed the CreateCluster: an IAM user by its
// ARN, an assumed role by the role's, with the session-name username EKS
// gives roles.
func TestAccessEntryOfTheCreator(t *testing.T) {
	t.Parallel()
	emu := moto.Start(t)
	ctx := context.Background()
	admin := emu.Config(t, "eu-west-1")
	ic := iam.NewFromConfig(admin)
	user, err := ic.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String("alice")})
	if err != nil {
		t.Fatal(err)
	}
	key, err := ic.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String("alice")})
	if err != nil {
		t.Fatal(err)
	}
	role, err := ic.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String("deployer"), Path: aws.String("/"),
		AssumeRolePolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}`)})
	if err != nil {
		t.Fatal(err)
	}
	session, err := sts.NewFromConfig(admin).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: role.Role.Arn, RoleSessionName: aws.String("ci")})
	if err != nil {
		t.Fatal(err)
	}
	as := func(id, secret, token string) *eks.Client {
		cfg := admin.Copy()
		cfg.Credentials = credentials.NewStaticCredentialsProvider(id, secret, token)
		return eks.NewFromConfig(cfg)
	}
	access := &ekstypes.CreateAccessConfigRequest{AuthenticationMode: ekstypes.AuthenticationModeApiAndConfigMap}
	createCluster(t, as(aws.ToString(key.AccessKey.AccessKeyId), aws.ToString(key.AccessKey.SecretAccessKey), ""), "by-user", access)
	sc := session.Credentials
	createCluster(t, as(aws.ToString(sc.AccessKeyId), aws.ToString(sc.SecretAccessKey), aws.ToString(sc.SessionToken)), "by-role", access)

	account := strings.Split(aws.ToString(role.Role.Arn), ":")[4]
	for cluster, want := range map[string][2]string{
		"by-user": {aws.ToString(user.User.Arn), aws.ToString(user.User.Arn)},
		"by-role": {aws.ToString(role.Role.Arn), "arn:aws:sts::" + account + ":assumed-role/deployer/{{SessionName}}"},
	} {
		entries := emu.EKS.AccessEntries("eu-west-1", cluster)
		e, ok := entries[want[0]]
		if len(entries) != 1 || !ok || e.Username != want[1] || len(e.Policies) != 1 || e.Policies[0].ScopeType != "cluster" {
			t.Errorf("%s: entries %+v, want one for %s (username %s) with cluster-admin", cluster, entries, want[0], want[1])
		}
	}
}

func TestPrincipalARN(t *testing.T) {
	for in, want := range map[string]string{
		"arn:aws:iam::123456789012:user/alice":                  "arn:aws:iam::123456789012:user/alice",
		"arn:aws:iam::123456789012:user/team/alice":             "arn:aws:iam::123456789012:user/team/alice",
		"arn:aws:sts::123456789012:assumed-role/deployer/ci":    "arn:aws:iam::123456789012:role/deployer",
		"arn:aws-cn:sts::123456789012:assumed-role/deployer/ci": "arn:aws-cn:iam::123456789012:role/deployer",
		"arn:aws:sts::123456789012:user/moto":                   "arn:aws:iam::123456789012:user/moto",
		"arn:aws:sts::123456789012:federated-user/bob":          "arn:aws:sts::123456789012:federated-user/bob",
		"arn:aws:iam::123456789012:root":                        "arn:aws:iam::123456789012:root",
	} {
		if got := eksaddons.PrincipalARN(in); got != want {
			t.Errorf("PrincipalARN(%s) = %s, want %s", in, got, want)
		}
	}
}
