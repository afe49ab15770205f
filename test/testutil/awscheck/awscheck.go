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
// resources tagged kforge.io/cluster=name (instances not terminated), IAM
// roles and instance profiles named exactly as kforge names them for the
// type, and an EKS cluster of that name.
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
	sgs, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: tag})
	must(err)
	for _, g := range sgs.SecurityGroups {
		inv["sg"] = append(inv["sg"], aws.ToString(g.GroupId))
	}
	kps, err := c.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{Filters: tag})
	must(err)
	for _, k := range kps.KeyPairs {
		inv["keypair"] = append(inv["keypair"], aws.ToString(k.KeyName))
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
	ic := iam.NewFromConfig(cfg)
	for _, suffix := range roleSuffixes(typ) {
		n := "kforge-" + name + "-" + suffix
		if _, err := ic.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(n)}); err == nil {
			inv["role"] = append(inv["role"], n)
		}
		if _, err := ic.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String(n)}); err == nil {
			inv["instance-profile"] = append(inv["instance-profile"], n)
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

func roleSuffixes(typ string) []string {
	if typ == "ha-aws" {
		return []string{"ha-cp", "ha-wp"}
	}
	return []string{"cp-role", "wp-role"}
}

// Empty fails the test unless nothing of the cluster exists.
func Empty(t testing.TB, cfg aws.Config, typ, name string) {
	t.Helper()
	if inv := Take(t, cfg, typ, name); inv.Total() != 0 {
		t.Fatalf("resources of cluster %s remain: %s", name, inv)
	}
}
