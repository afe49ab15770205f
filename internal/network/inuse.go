package network

import (
	"context"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kforge/kforge/internal/awsx"
)

// inUseError turns the failed delete of a subnet, gateway or VPC into an
// error that names what still uses it: what Blockers finds with filter
// ("subnet-id" or "vpc-id") equal to scope, so the user knows what to
// remove.
func (b *builder) inUseError(ctx context.Context, kind, id, filter, scope string, err error) error {
	if !awsx.IsDependency(err) {
		return fmt.Errorf("delete %s %s: %w", kind, id, err)
	}
	users := Blockers(ctx, b.c.EC2, filter, scope)
	if len(users) == 0 {
		return fmt.Errorf("delete %s %s: AWS still refuses it and does not say what uses it (look for network interfaces in the EC2 console), then run `%s` again: %w",
			kind, id, b.resume(), err)
	}
	return fmt.Errorf("delete %s %s: still used by %s; remove them, then run `%s` again: %w",
		kind, id, strings.Join(users, ", "), b.resume(), err)
}

// Blockers lists, best effort, what keeps a subnet or VPC from being
// deleted: filter is "subnet-id" or "vpc-id", id its value. Each entry is
// an AWS ID with what AWS says about it, e.g.
// "eni-123 (ELB app/k8s-foo/abc, in-use, requester amazon-elb)".
func Blockers(ctx context.Context, c *ec2.Client, filter, id string) []string {
	f := []types.Filter{{Name: aws.String(filter), Values: []string{id}}}
	var out []string
	if filter == "vpc-id" {
		if res, err := c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: f}); err == nil {
			for _, s := range res.Subnets {
				out = append(out, describe(aws.ToString(s.SubnetId), "subnet "+aws.ToString(s.CidrBlock), nameTag(s.Tags)))
			}
		}
	}
	// Best effort: on an error, the instances of the pages read so far.
	insts, _ := awsx.Collect(ctx, ec2.NewDescribeInstancesPaginator(c, &ec2.DescribeInstancesInput{Filters: append(f, types.Filter{
		Name: aws.String("instance-state-name"), Values: []string{"pending", "running", "shutting-down", "stopping", "stopped"}})}),
		func(o *ec2.DescribeInstancesOutput) []types.Instance {
			var out []types.Instance
			for _, r := range o.Reservations {
				out = append(out, r.Instances...)
			}
			return out
		})
	for _, in := range insts {
		state := ""
		if in.State != nil {
			state = string(in.State.Name)
		}
		out = append(out, describe(aws.ToString(in.InstanceId), "instance", state, nameTag(in.Tags)))
	}
	if res, err := c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: f}); err == nil {
		for _, ni := range res.NetworkInterfaces {
			out = append(out, DescribeENI(ni))
		}
	}
	if res, err := c.DescribeNatGateways(ctx, &ec2.DescribeNatGatewaysInput{Filter: f}); err == nil {
		for _, g := range res.NatGateways {
			if g.State != types.NatGatewayStateDeleted {
				out = append(out, describe(aws.ToString(g.NatGatewayId), "NAT gateway", string(g.State)))
			}
		}
	}
	if filter != "vpc-id" {
		return out
	}
	if res, err := c.DescribeVpcEndpoints(ctx, &ec2.DescribeVpcEndpointsInput{Filters: f}); err == nil {
		for _, e := range res.VpcEndpoints {
			out = append(out, describe(aws.ToString(e.VpcEndpointId), "VPC endpoint", aws.ToString(e.ServiceName), string(e.State)))
		}
	}
	if res, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: f}); err == nil {
		for _, g := range res.SecurityGroups {
			if aws.ToString(g.GroupName) != "default" {
				out = append(out, describe(aws.ToString(g.GroupId), "security group "+aws.ToString(g.GroupName)))
			}
		}
	}
	if res, err := c.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{Filters: f}); err == nil {
		for _, t := range res.RouteTables {
			main := false
			for _, a := range t.Associations {
				main = main || aws.ToBool(a.Main)
			}
			if !main {
				out = append(out, describe(aws.ToString(t.RouteTableId), "route table", nameTag(t.Tags)))
			}
		}
	}
	if res, err := c.DescribeInternetGateways(ctx, &ec2.DescribeInternetGatewaysInput{
		Filters: []types.Filter{{Name: aws.String("attachment.vpc-id"), Values: []string{id}}}}); err == nil {
		for _, g := range res.InternetGateways {
			out = append(out, describe(aws.ToString(g.InternetGatewayId), "internet gateway attached", nameTag(g.Tags)))
		}
	}
	if res, err := c.DescribeVpnGateways(ctx, &ec2.DescribeVpnGatewaysInput{
		Filters: []types.Filter{{Name: aws.String("attachment.vpc-id"), Values: []string{id}}}}); err == nil {
		for _, g := range res.VpnGateways {
			if g.State != types.VpnStateDeleted {
				out = append(out, describe(aws.ToString(g.VpnGatewayId), "VPN gateway attached"))
			}
		}
	}
	return out
}

// DescribeENI renders a network interface with what tells its owner:
// "eni-123 (ELB app/k8s-foo/abc, in-use, attached to i-456, requester amazon-elb)".
func DescribeENI(ni types.NetworkInterface) string {
	var attached string
	if a := ni.Attachment; a != nil {
		switch {
		case aws.ToString(a.InstanceId) != "":
			attached = "attached to " + aws.ToString(a.InstanceId)
		case aws.ToString(a.InstanceOwnerId) != "":
			attached = "attached by " + aws.ToString(a.InstanceOwnerId)
		}
	}
	kind := ""
	if ni.InterfaceType != "" && ni.InterfaceType != types.NetworkInterfaceTypeInterface {
		kind = "type " + string(ni.InterfaceType)
	}
	requester := ""
	if aws.ToBool(ni.RequesterManaged) || aws.ToString(ni.RequesterId) != "" && ni.Attachment == nil {
		requester = "requester " + aws.ToString(ni.RequesterId)
	}
	return describe(aws.ToString(ni.NetworkInterfaceId), aws.ToString(ni.Description), kind, string(ni.Status), attached, requester, nameTag(ni.TagSet))
}

func describe(id string, details ...string) string {
	var parts []string
	for _, d := range details {
		if d = strings.TrimSpace(d); d != "" {
			parts = append(parts, d)
		}
	}
	if len(parts) == 0 {
		return id
	}
	return id + " (" + strings.Join(parts, ", ") + ")"
}

func nameTag(tags []types.Tag) string {
	if n := awsx.EC2TagValue(tags, awsx.TagName); n != "" {
		return "Name=" + n
	}
	return ""
}
