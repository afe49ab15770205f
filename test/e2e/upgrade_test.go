package e2e

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"

	"github.com/kforge/kforge/test/testutil/awscheck"
	"github.com/kforge/kforge/test/testutil/eksaddons"
	"github.com/kforge/kforge/test/testutil/kforgebin"
)

// TestEKSUpgrade: `kforge upgrade aws` refuses what Kubernetes forbids
// (exit 2, nothing changed), plans without changing anything, then
// upgrades the control plane, then the node group, then the add-ons whose
// recommended version changed, in that order, through the EKS update API
// (the project's double: moto has none); the state and EKS then say 1.34,
// and the same command again changes nothing.
func TestEKSUpgrade(t *testing.T) {
	t.Parallel()
	const name, region = "upgr", "eu-west-1"
	ctx := context.Background()
	cfg := emu.Config(t, region)
	env := kforgebin.NewEnv(t, emu.Env()...)
	env.MustRun(t, "create", "aws", "--name", name, "--region", region, "--nodes", "1", "--k8s-version", "1.33")
	upgrade := func(args ...string) kforgebin.Result {
		return env.Run(t, append([]string{"upgrade", "aws", "--name", name, "--region", region}, args...)...)
	}

	for _, bad := range []struct{ version, says string }{
		{"1.35", "one minor version at a time, to 1.34 first"},
		{"1.32", "cannot go down"},
		{"1.34.2", "minor version"},
	} {
		r := upgrade("--k8s-version", bad.version)
		if r.Code != 2 || !strings.Contains(r.Stderr, bad.says) {
			t.Errorf("upgrade to %s: exit %d, want 2 saying %q:\n%s", bad.version, r.Code, bad.says, r.Stderr)
		}
	}
	r := upgrade("--k8s-version", "1.34", "--dry-run", "-o", "json")
	var plan struct {
		From, To string
		Steps    []struct{ What, Call string }
	}
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &plan) != nil || plan.From != "1.33" || plan.To != "1.34" || len(plan.Steps) != 6 ||
		plan.Steps[0].Call != "eks:UpdateClusterVersion" || plan.Steps[1].Call != "eks:UpdateNodegroupVersion" {
		t.Errorf("upgrade --dry-run -o json: exit %d, %+v\n%s%s", r.Code, plan, r.Stdout, r.Stderr)
	}
	if u := emu.EKS.Updates(region, name); len(u) != 0 {
		t.Fatalf("refused upgrades and a dry run made updates: %v", u)
	}

	r = upgrade("--k8s-version", "1.34")
	if r.Code != 0 {
		t.Fatalf("upgrade: exit %d\n%s", r.Code, r.Stderr)
	}
	want := []string{
		"UpdateClusterVersion 1.34",
		"UpdateNodegroupVersion " + name + "-workers 1.34",
	}
	for _, ad := range []string{"coredns", "kube-proxy", "vpc-cni"} {
		want = append(want, "UpdateAddon "+ad+" "+eksaddons.DefaultVersion(ad, "1.34"))
	}
	// The control plane goes first; the add-ons whose pods run on nodes
	// (coredns) follow the node group; kube-proxy and vpc-cni may go
	// beside it (the version skew policy lets kube-proxy be a minor newer
	// than the kubelets).
	got := emu.EKS.Updates(region, name)
	sorted := slices.Clone(got)
	slices.Sort(sorted)
	wantSorted := slices.Clone(want)
	slices.Sort(wantSorted)
	at := func(u string) int { return slices.Index(got, u) }
	if !slices.Equal(sorted, wantSorted) || at(want[0]) != 0 || at(want[1]) > at(want[2]) {
		t.Errorf("updates %v,\nwant %v with the cluster first and coredns after the node group", got, want)
	}
	c := eks.NewFromConfig(cfg)
	cl, err := c.DescribeCluster(ctx, &eks.DescribeClusterInput{Name: aws.String(name)})
	if err != nil || aws.ToString(cl.Cluster.Version) != "1.34" {
		t.Errorf("the EKS cluster runs %v (%v), want 1.34", aws.ToString(cl.Cluster.Version), err)
	}
	ng, err := c.DescribeNodegroup(ctx, &eks.DescribeNodegroupInput{ClusterName: aws.String(name), NodegroupName: aws.String(name + "-workers")})
	if err != nil || aws.ToString(ng.Nodegroup.Version) != "1.34" {
		t.Errorf("the node group runs %v (%v), want 1.34", aws.ToString(ng.Nodegroup.Version), err)
	}
	for ad, a := range emu.EKS.Addons(region, name) {
		if a.Version != eksaddons.DefaultVersion(ad, "1.34") {
			t.Errorf("add-on %s is at %s, want %s", ad, a.Version, eksaddons.DefaultVersion(ad, "1.34"))
		}
	}
	var info struct {
		Versions map[string]string
		Spec     struct{ Version string }
	}
	if err := json.Unmarshal([]byte(env.MustRun(t, "info", "aws", "--name", name, "--region", region, "-o", "json").Stdout), &info); err != nil ||
		info.Versions["kubernetes"] != "1.34" || info.Spec.Version != "1.34" {
		t.Errorf("info says versions %v, spec %q (%v), want 1.34", info.Versions, info.Spec.Version, err)
	}

	// Again: nothing to do; and the cluster is in sync.
	env.MustRun(t, "upgrade", "aws", "--name", name, "--region", region, "--k8s-version", "1.34")
	if n := len(emu.EKS.Updates(region, name)); n != len(want) {
		t.Errorf("the same upgrade again made %d more updates", n-len(want))
	}
	if d := env.Run(t, "diff", "aws", "--name", name, "--region", region); d.Code != 0 {
		t.Errorf("diff after the upgrade: exit %d\n%s%s", d.Code, d.Stdout, d.Stderr)
	}
	env.MustRun(t, "delete", "aws", "--name", name, "--region", region, "--yes")
	awscheck.Empty(t, cfg, "aws", name)
}
