// Package awscheck inventories, through the AWS API of the emulator, what
// exists of a cluster: everything tagged for it, its IAM roles and
// instance profiles by name, its EKS cluster. Tests use it to prove that a
// create made exactly what it should and that a delete left nothing.
package awscheck

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	"github.com/aws/aws-sdk-go-v2/service/iam"
)

// Inventory counts a cluster's resources by kind ("vpc", "subnet",
// "instance/cp", "role", ...), with their IDs.
type Inventory map[string][]string

// Count returns how many resources of a kind exist.
func (i Inventory) Count(kind string) int { return len(i[kind]) }

// Total returns how many resources exist in all.
func (i Inventory) Total() int {
	n := 0
	for _, ids := range i {
		n += len(ids)
	}
	return n
}

// String lists the inventory, kinds sorted.
func (i Inventory) String() string {
	kinds := make([]string, 0, len(i))
	for k := range i {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var b strings.Builder
	for _, k := range kinds {
		fmt.Fprintf(&b, "%s=%d %v; ", k, len(i[k]), i[k])
	}
	return b.String()
}

// Take inventories cluster name of type typ in cfg's region: EC2
// resources tagged kforge.io/cluster=name (instances not terminated),
// security groups and the key pair also by kforge's names for them, IAM
// roles and instance profiles whose names start with kforge-<name>-, and
// an EKS cluster of that name with its node groups.
func Take(t testing.TB, cfg aws.Config, typ, name string) Inventory {
	t.Helper()
	ctx := context.Background()
	inv := Inventory{}
	c := ec2.NewFromConfig(cfg)
	tag := []ec2types.Filter{{Name: aws.String("tag:kforge.io/cluster"), Values: []string{name}}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("inventory: %v", err)
		}
	}
	vpcs, err := c.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: tag})
	must(err)
	for _, v := range vpcs.Vpcs {
		inv["vpc"] = append(inv["vpc"], aws.ToString(v.VpcId))
	}
	subnets, err := c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: tag})
	must(err)
	for _, s := range subnets.Subnets {
		inv["subnet"] = append(inv["subnet"], aws.ToString(s.SubnetId))
	}
	igws, err := c.DescribeInternetGateways(ctx, &ec2.DescribeInternetGatewaysInput{Filters: tag})
	must(err)
	for _, g := range igws.InternetGateways {
		inv["igw"] = append(inv["igw"], aws.ToString(g.InternetGatewayId))
	}
	rtbs, err := c.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{Filters: tag})
	must(err)
	for _, r := range rtbs.RouteTables {
		inv["rtb"] = append(inv["rtb"], aws.ToString(r.RouteTableId))
	}
	// Security groups and key pairs by tag, and by kforge's names too, so
	// that one made without tags would count as well.
	seen := map[string]bool{}
	for _, f := range [][]ec2types.Filter{tag, {{Name: aws.String("group-name"), Values: []string{"kforge-" + name + "-*"}}}} {
		sgs, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: f})
		must(err)
		for _, g := range sgs.SecurityGroups {
			if id := aws.ToString(g.GroupId); !seen[id] {
				seen[id] = true
				inv["sg"] = append(inv["sg"], id)
			}
		}
	}
	for _, f := range [][]ec2types.Filter{tag, {{Name: aws.String("key-name"), Values: []string{"kforge-" + name}}}} {
		kps, err := c.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{Filters: f})
		must(err)
		for _, k := range kps.KeyPairs {
			if id := aws.ToString(k.KeyPairId); !seen[id] {
				seen[id] = true
				inv["keypair"] = append(inv["keypair"], aws.ToString(k.KeyName))
			}
		}
	}
	vols, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: tag})
	must(err)
	for _, v := range vols.Volumes {
		if v.State != ec2types.VolumeStateDeleted && v.State != ec2types.VolumeStateDeleting {
			inv["volume"] = append(inv["volume"], aws.ToString(v.VolumeId))
		}
	}
	pages := ec2.NewDescribeInstancesPaginator(c, &ec2.DescribeInstancesInput{Filters: append(tag, ec2types.Filter{
		Name: aws.String("instance-state-name"), Values: []string{"pending", "running", "stopping", "stopped", "shutting-down"}})})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		must(err)
		for _, r := range page.Reservations {
			for _, in := range r.Instances {
				role := ""
				for _, tg := range in.Tags {
					if aws.ToString(tg.Key) == "kforge.io/role" {
						role = aws.ToString(tg.Value)
					}
				}
				inv["instance/"+role] = append(inv["instance/"+role], aws.ToString(in.InstanceId))
			}
		}
	}
	// IAM: every role and instance profile named kforge-<name>-...
	ic := iam.NewFromConfig(cfg)
	prefix := "kforge-" + name + "-"
	roles := iam.NewListRolesPaginator(ic, &iam.ListRolesInput{})
	for roles.HasMorePages() {
		page, err := roles.NextPage(ctx)
		must(err)
		for _, r := range page.Roles {
			if n := aws.ToString(r.RoleName); strings.HasPrefix(n, prefix) {
				inv["role"] = append(inv["role"], n)
			}
		}
	}
	profiles := iam.NewListInstanceProfilesPaginator(ic, &iam.ListInstanceProfilesInput{})
	for profiles.HasMorePages() {
		page, err := profiles.NextPage(ctx)
		must(err)
		for _, p := range page.InstanceProfiles {
			if n := aws.ToString(p.InstanceProfileName); strings.HasPrefix(n, prefix) {
				inv["instance-profile"] = append(inv["instance-profile"], n)
			}
		}
	}
	if typ == "aws" {
		if out, err := eks.NewFromConfig(cfg).DescribeCluster(ctx, &eks.DescribeClusterInput{Name: aws.String(name)}); err == nil {
			inv["eks-cluster"] = append(inv["eks-cluster"], aws.ToString(out.Cluster.Arn))
			ngs, err := eks.NewFromConfig(cfg).ListNodegroups(ctx, &eks.ListNodegroupsInput{ClusterName: aws.String(name)})
			must(err)
			inv["nodegroup"] = append(inv["nodegroup"], ngs.Nodegroups...)
		}
	}
	return inv
}

// Empty fails the test unless nothing of the cluster exists.
func Empty(t testing.TB, cfg aws.Config, typ, name string) {
	t.Helper()
	if inv := Take(t, cfg, typ, name); inv.Total() != 0 {
		t.Fatalf("resources of cluster %s remain: %s", name, inv)
	}
}
