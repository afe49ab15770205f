package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	ekstypes "github.com/aws/aws-sdk-go-v2/service/eks/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"

	"github.com/kforge/kforge/test/testutil/awscheck"
	"github.com/kforge/kforge/test/testutil/kforgebin"
)

// TestEKSDriftRepaired changes an EKS cluster outside kforge: `kforge
// diff` names the drift, `kforge create` repairs it, `kforge diff` is then
// clean and the AWS API shows what a clean create made. An EKS cluster
// deleted outside kforge is drift kforge does not repair: create stops and
// says what to do.
func TestEKSDriftRepaired(t *testing.T) {
	t.Parallel()
	const name, region = "eksdrift", "eu-central-1"
	ctx := context.Background()
	cfg := emu.Config(t, region)
	env := kforgebin.NewEnv(t, emu.Env()...)
	create := []string{"create", "aws", "--name", name, "--region", region, "--nodes", "2", "--node-size", "t3.large", "--version", "1.33"}
	env.MustRun(t, create...)
	before := awscheck.Take(t, cfg, "aws", name)
	ek := eks.NewFromConfig(cfg)
	ic := iam.NewFromConfig(cfg)
	ngName := aws.String(name + "-workers")

	diff := func(t *testing.T, want int) diffOut {
		t.Helper()
		return runDiff(t, env, "aws", name, region, want)
	}
	repair := func(t *testing.T, step, detail string) {
		t.Helper()
		d := diff(t, 1)
		if _, got, ok := d.change(step); !ok || !strings.Contains(got, detail) {
			t.Errorf("diff does not name %s with %q: %+v", step, detail, d.Changes)
		}
		if r := env.MustRun(t, create...); !strings.Contains(r.Stderr, "drift") {
			t.Errorf("the repair shows no drift line:\n%s", r.Stderr)
		}
		diff(t, 0)
		after := awscheck.Take(t, cfg, "aws", name)
		for _, kind := range []string{"vpc", "subnet", "igw", "rtb", "role", "eks-cluster", "nodegroup"} {
			if after.Count(kind) != before.Count(kind) {
				t.Errorf("%s: %d after the repair, %d after the create", kind, after.Count(kind), before.Count(kind))
			}
		}
	}
	if d := diff(t, 0); !d.InSync {
		t.Fatalf("a fresh cluster is not in sync: %+v", d)
	}

	t.Run("the node group resized by hand", func(t *testing.T) {
		if _, err := ek.UpdateNodegroupConfig(ctx, &eks.UpdateNodegroupConfigInput{ClusterName: aws.String(name), NodegroupName: ngName,
			ScalingConfig: &ekstypes.NodegroupScalingConfig{MinSize: aws.Int32(1), DesiredSize: aws.Int32(5), MaxSize: aws.Int32(6)}}); err != nil {
			t.Fatal(err)
		}
		repair(t, "nodegroup", "resized outside kforge: 5 nodes")
		ng, err := ek.DescribeNodegroup(ctx, &eks.DescribeNodegroupInput{ClusterName: aws.String(name), NodegroupName: ngName})
		if err != nil {
			t.Fatal(err)
		}
		if sc := ng.Nodegroup.ScalingConfig; aws.ToInt32(sc.DesiredSize) != 2 || aws.ToInt32(sc.MinSize) != 2 || aws.ToInt32(sc.MaxSize) != 2 {
			t.Errorf("node group after the repair: desired %d, min %d, max %d; want 2, 2, 2",
				aws.ToInt32(sc.DesiredSize), aws.ToInt32(sc.MinSize), aws.ToInt32(sc.MaxSize))
		}
	})

	t.Run("an add-on removed outside kforge", func(t *testing.T) {
		if _, err := ek.DeleteAddon(ctx, &eks.DeleteAddonInput{ClusterName: aws.String(name), AddonName: aws.String("coredns")}); err != nil {
			t.Fatal(err)
		}
		if err := eks.NewAddonDeletedWaiter(ek).Wait(ctx, &eks.DescribeAddonInput{ClusterName: aws.String(name), AddonName: aws.String("coredns")}, time.Minute); err != nil {
			t.Fatal(err)
		}
		repair(t, "addon/coredns", "add-on coredns was removed outside kforge")
		if a, ok := emu.EKS.Addons(region, name)["coredns"]; !ok || a.Status != "ACTIVE" {
			t.Errorf("coredns after the repair: %+v", a)
		}
	})

	t.Run("a policy detached from the node role", func(t *testing.T) {
		role := aws.String("kforge-" + name + "-wp-role")
		arn := aws.String("arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy")
		if _, err := ic.DetachRolePolicy(ctx, &iam.DetachRolePolicyInput{RoleName: role, PolicyArn: arn}); err != nil {
			t.Fatal(err)
		}
		repair(t, "role/wp", "AmazonEKS_CNI_Policy is not attached")
		out, err := ic.ListAttachedRolePolicies(ctx, &iam.ListAttachedRolePoliciesInput{RoleName: role})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.AttachedPolicies) != 4 {
			t.Errorf("the node role has %d policies after the repair, want 4", len(out.AttachedPolicies))
		}
	})

	t.Run("the EKS cluster deleted outside kforge", func(t *testing.T) {
		if _, err := ek.DeleteNodegroup(ctx, &eks.DeleteNodegroupInput{ClusterName: aws.String(name), NodegroupName: ngName}); err != nil {
			t.Fatal(err)
		}
		if _, err := ek.DeleteCluster(ctx, &eks.DeleteClusterInput{Name: aws.String(name)}); err != nil {
			t.Fatal(err)
		}
		r := env.Run(t, create...)
		if r.Code == 0 || !strings.Contains(r.Stderr, "deleted outside kforge") || !strings.Contains(r.Stderr, "kforge delete aws") {
			t.Fatalf("create after the EKS cluster was deleted: exit %d, want a failure that says what to do\n%s", r.Code, r.Stderr)
		}
		if _, err := ek.DescribeCluster(ctx, &eks.DescribeClusterInput{Name: aws.String(name)}); err == nil {
			t.Errorf("kforge made an EKS cluster in place of the deleted one")
		}
		// A delete's progress reads as a delete (issue 12), not a create.
		r = env.MustRun(t, "delete", "aws", "--name", name, "--region", region, "--yes")
		if !strings.Contains(r.Stderr, "to delete them") || strings.Contains(r.Stderr, "EKS takes 10-15 minutes") {
			t.Errorf("the delete's progress uses create wording:\n%s", r.Stderr)
		}
		awscheck.Empty(t, cfg, "aws", name)
	})
}
