package eksaddons_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	ekstypes "github.com/aws/aws-sdk-go-v2/service/eks/types"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/test/testutil/eksaddons"
	"github.com/kforge/kforge/test/testutil/moto"
)

// The double answers the SDK's own client and waiters as EKS would.
func TestAddonLifecycle(t *testing.T) {
	t.Parallel()
	emu := moto.Start(t)
	ctx := context.Background()
	c := eks.NewFromConfig(emu.Config(t, "eu-west-1"))
	in := &eks.DescribeAddonInput{ClusterName: aws.String("demo"), AddonName: aws.String("coredns")}
	if _, err := c.CreateAddon(ctx, &eks.CreateAddonInput{ClusterName: aws.String("demo"), AddonName: aws.String("coredns")}); !awsx.IsNotFound(err) {
		t.Fatalf("add-on of a missing cluster: %v", err)
	}
	if _, err := c.CreateCluster(ctx, &eks.CreateClusterInput{Name: aws.String("demo"), RoleArn: aws.String("arn:aws:iam::123456789012:role/r"),
		Version:            aws.String("1.33"),
		ResourcesVpcConfig: &ekstypes.VpcConfigRequest{SubnetIds: []string{"subnet-1", "subnet-2"}}}); err != nil {
		t.Fatal(err)
	}
	vs, err := c.DescribeAddonVersions(ctx, &eks.DescribeAddonVersionsInput{AddonName: aws.String("coredns"), KubernetesVersion: aws.String("1.33")})
	if err != nil || len(vs.Addons) != 1 || len(vs.Addons[0].AddonVersions) < 2 {
		t.Fatalf("versions: %+v %v", vs, err)
	}
	def := eksaddons.DefaultVersion("coredns", "1.33")
	if aws.ToString(vs.Addons[0].AddonVersions[0].AddonVersion) == def {
		t.Fatal("the catalogue's default is its newest: it would not catch a client that takes the newest")
	}
	create := &eks.CreateAddonInput{ClusterName: aws.String("demo"), AddonName: aws.String("coredns"), AddonVersion: aws.String(def),
		ClientRequestToken: aws.String("tok-1"), Tags: map[string]string{"kforge.io/cluster": "demo"}}
	out, err := c.CreateAddon(ctx, create)
	if err != nil || out.Addon.Status != ekstypes.AddonStatusCreating || out.Addon.CreatedAt == nil {
		t.Fatalf("create: %+v %v", out, err)
	}
	if _, err := c.CreateAddon(ctx, create); err != nil {
		t.Errorf("the same token again: %v", err)
	}
	create.ClientRequestToken = aws.String("tok-2")
	if _, err := c.CreateAddon(ctx, create); !awsx.HasCode(err, "ResourceInUseException") {
		t.Errorf("a second add-on: %v", err)
	}
	if _, err := c.CreateAddon(ctx, &eks.CreateAddonInput{ClusterName: aws.String("demo"), AddonName: aws.String("nosuch")}); !awsx.HasCode(err, "InvalidParameterException") {
		t.Errorf("unknown add-on: %v", err)
	}
	got, err := eks.NewAddonActiveWaiter(c, func(o *eks.AddonActiveWaiterOptions) { o.MinDelay = time.Millisecond; o.MaxDelay = time.Millisecond }).
		WaitForOutput(ctx, in, time.Minute)
	if err != nil || aws.ToString(got.Addon.AddonVersion) != def || got.Addon.Tags["kforge.io/cluster"] != "demo" {
		t.Fatalf("active: %+v %v", got, err)
	}
	list, err := c.ListAddons(ctx, &eks.ListAddonsInput{ClusterName: aws.String("demo")})
	if err != nil || len(list.Addons) != 1 || list.Addons[0] != "coredns" {
		t.Errorf("list: %+v %v", list, err)
	}
	if _, err := c.DeleteAddon(ctx, &eks.DeleteAddonInput{ClusterName: aws.String("demo"), AddonName: aws.String("coredns")}); err != nil {
		t.Fatal(err)
	}
	if err := eks.NewAddonDeletedWaiter(c, func(o *eks.AddonDeletedWaiterOptions) { o.MinDelay = time.Millisecond; o.MaxDelay = time.Millisecond }).
		Wait(ctx, in, time.Minute); err != nil {
		t.Fatalf("deleted: %v", err)
	}
	// A cluster's deletion takes its add-ons.
	create.ClientRequestToken = aws.String("tok-3")
	if _, err := c.CreateAddon(ctx, create); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteCluster(ctx, &eks.DeleteClusterInput{Name: aws.String("demo")}); err != nil {
		t.Fatal(err)
	}
	if n := len(emu.EKS.Addons("eu-west-1", "demo")); n != 0 {
		t.Errorf("%d add-ons outlived their cluster", n)
	}
}
