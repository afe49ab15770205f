package network

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/spec"
)

// VPC is the output of the vpc step: the cluster's VPC.
type VPC struct {
	ID string `json:"id"`
	// CIDR is the primary CIDR block; CIDRs every associated IPv4 block.
	CIDR  string   `json:"cidr"`
	CIDRs []string `json:"cidrs,omitempty"`
	Own   bool     `json:"own"`
}

// VPCOf returns the ID of the cluster's VPC, from the outputs of the vpc
// step (StepVPC, which the calling step must need). A step that needs only
// the VPC (a security group) needs StepVPC rather than StepID, and so does
// not wait for the gateway, the route table and the subnets.
func VPCOf(r *engine.Run) (string, error) {
	v, err := engine.Out[VPC](r, StepVPC)
	if err != nil {
		return "", err
	}
	if v.ID == "" {
		return "", fmt.Errorf("the vpc step recorded no VPC ID")
	}
	return v.ID, nil
}

func vpcOutOf(v *types.Vpc, own bool) VPC {
	o := VPC{ID: aws.ToString(v.VpcId), CIDR: aws.ToString(v.CidrBlock), Own: own}
	o.CIDRs = vpcCIDRs(v)
	return o
}

// vpcCIDRs returns the associated IPv4 blocks of a VPC, the primary first.
func vpcCIDRs(v *types.Vpc) []string {
	out := []string{aws.ToString(v.CidrBlock)}
	for _, a := range v.CidrBlockAssociationSet {
		c := aws.ToString(a.CidrBlock)
		if c == out[0] || a.CidrBlockState == nil || a.CidrBlockState.State != types.VpcCidrBlockStateCodeAssociated {
			continue
		}
		out = append(out, c)
	}
	return out
}

// waitTimeout bounds the SDK waiters for a resource to become usable.
const waitTimeout = 5 * time.Minute

// eventual makes a call retry "not found" for about a minute: EC2 is
// eventually consistent, and a resource created a moment ago may not be
// visible yet to the next call that names it.
func eventual(o *ec2.Options) { o.Retryer = awsx.Eventual(o.Retryer, awsx.IsNotFound) }

func (b *builder) vpcStep() *engine.Step {
	if b.s.VPCID != "" {
		return &engine.Step{
			ID:    StepVPC,
			Title: fmt.Sprintf("existing VPC %s (checked, not modified)", b.s.VPCID),
			Ensure: func(ctx context.Context, r *engine.Run) (any, error) {
				if err := b.s.Validate(); err != nil {
					return nil, err
				}
				v, err := checkVPC(ctx, b.c.EC2, b.s.VPCID)
				if err != nil {
					return nil, err
				}
				return vpcOutOf(v, false), nil
			},
			// No Delete: a VPC kforge did not create is never deleted.
		}
	}
	return &engine.Step{
		ID:     StepVPC,
		Title:  fmt.Sprintf("VPC %s with DNS hostnames and DNS support", b.s.CIDR),
		Ensure: b.ensureVPC,
		Delete: b.deleteVPC,
	}
}

// ownVPCs returns the cluster's own VPCs: the journaled one first if it
// still exists, then those found by tags, by ID.
func (b *builder) ownVPCs(ctx context.Context, prevID string) ([]types.Vpc, error) {
	return lookupOwn(ctx, prevID, func(v types.Vpc) string { return aws.ToString(v.VpcId) },
		func(ctx context.Context) (*types.Vpc, error) { return describeVPC(ctx, b.c.EC2, prevID) },
		func(ctx context.Context) ([]types.Vpc, error) {
			var tagged []types.Vpc
			p := ec2.NewDescribeVpcsPaginator(b.c.EC2, &ec2.DescribeVpcsInput{Filters: awsx.ClusterFilters(b.ref(), awsx.TagName, b.name("vpc"))})
			for p.HasMorePages() {
				page, err := p.NextPage(ctx)
				if err != nil {
					return nil, fmt.Errorf("look up the cluster's VPC by tags: %w", err)
				}
				tagged = append(tagged, page.Vpcs...)
			}
			return tagged, nil
		})
}

// findVPC returns the cluster's own VPC found by its tags, if any.
func (b *builder) findVPC(ctx context.Context) (types.Vpc, bool, error) {
	found, err := b.ownVPCs(ctx, "")
	if err != nil || len(found) == 0 {
		return types.Vpc{}, false, err
	}
	return found[0], true, nil
}

// describeVPC returns a VPC, or nil if it does not exist.
func describeVPC(ctx context.Context, c *ec2.Client, id string) (*types.Vpc, error) {
	out, err := c.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{VpcIds: []string{id}})
	if awsx.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("describe VPC %s: %w", id, err)
	}
	if len(out.Vpcs) == 0 {
		return nil, nil
	}
	return &out.Vpcs[0], nil
}

func (b *builder) ensureVPC(ctx context.Context, r *engine.Run) (any, error) {
	if err := b.s.Validate(); err != nil {
		return nil, err
	}
	var prev VPC
	r.PrevInto(&prev)
	found, err := b.ownVPCs(ctx, prev.ID)
	if err != nil {
		return nil, err
	}
	var v types.Vpc
	if len(found) > 0 {
		v = found[0]
	} else {
		v, err = awsx.CreateOnce(ctx, b.findVPC, func(ctx context.Context) (types.Vpc, error) {
			out, err := b.c.EC2.CreateVpc(ctx, &ec2.CreateVpcInput{
				CidrBlock:         aws.String(b.s.CIDR),
				TagSpecifications: awsx.EC2TagSpec(types.ResourceTypeVpc, awsx.Tags(b.ref(), b.name("vpc"))),
			}, safe)
			if err != nil {
				return types.Vpc{}, err
			}
			return *out.Vpc, nil
		})
		if err != nil {
			return nil, fmt.Errorf("create VPC %s: %w", b.s.CIDR, err)
		}
	}
	id := aws.ToString(v.VpcId)
	if v.State != types.VpcStateAvailable {
		r.Waiting("waiting for VPC %s to be available", id)
		w := ec2.NewVpcAvailableWaiter(b.c.EC2, func(o *ec2.VpcAvailableWaiterOptions) {
			next := o.Retryable
			o.Retryable = func(ctx context.Context, in *ec2.DescribeVpcsInput, out *ec2.DescribeVpcsOutput, err error) (bool, error) {
				if awsx.IsNotFound(err) {
					return true, nil
				}
				return next(ctx, in, out, err)
			}
		})
		desc, err := w.WaitForOutput(ctx, &ec2.DescribeVpcsInput{VpcIds: []string{id}}, waitTimeout)
		if err != nil {
			return nil, fmt.Errorf("wait for VPC %s to be available: %w", id, err)
		}
		if len(desc.Vpcs) > 0 {
			v = desc.Vpcs[0]
		}
	}
	// Both attributes are read at once; DNS support is turned on first:
	// AWS refuses DNS hostnames without it.
	attrs := []types.VpcAttributeName{types.VpcAttributeNameEnableDnsSupport, types.VpcAttributeNameEnableDnsHostnames}
	on := make([]bool, len(attrs))
	var reads []func(context.Context) error
	for i, attr := range attrs {
		reads = append(reads, func(ctx context.Context) (err error) {
			on[i], err = vpcAttribute(ctx, b.c.EC2, id, attr, eventual)
			return err
		})
	}
	if err := awsx.All(ctx, reads...); err != nil {
		return nil, err
	}
	for i, attr := range attrs {
		if on[i] {
			continue
		}
		in := &ec2.ModifyVpcAttributeInput{VpcId: aws.String(id)}
		t := &types.AttributeBooleanValue{Value: aws.Bool(true)}
		if attr == types.VpcAttributeNameEnableDnsSupport {
			in.EnableDnsSupport = t
		} else {
			in.EnableDnsHostnames = t
		}
		if _, err := b.c.EC2.ModifyVpcAttribute(ctx, in, eventual); err != nil {
			return nil, fmt.Errorf("enable %s on VPC %s: %w", attr, id, err)
		}
	}
	return vpcOutOf(&v, true), nil
}

func vpcAttribute(ctx context.Context, c *ec2.Client, id string, attr types.VpcAttributeName, opts ...func(*ec2.Options)) (bool, error) {
	out, err := c.DescribeVpcAttribute(ctx, &ec2.DescribeVpcAttributeInput{VpcId: aws.String(id), Attribute: attr}, opts...)
	if err != nil {
		return false, fmt.Errorf("read %s of VPC %s: %w", attr, id, err)
	}
	var v *types.AttributeBooleanValue
	if attr == types.VpcAttributeNameEnableDnsSupport {
		v = out.EnableDnsSupport
	} else {
		v = out.EnableDnsHostnames
	}
	return v != nil && aws.ToBool(v.Value), nil
}

func (b *builder) deleteVPC(ctx context.Context, r *engine.Run) error {
	var prev VPC
	r.PrevInto(&prev)
	if prev.ID != "" && !prev.Own {
		return engine.ErrAbsent // not kforge's VPC
	}
	found, err := b.ownVPCs(ctx, prev.ID)
	if err != nil {
		return err
	}
	var errs []error
	removed := false
	for _, v := range found {
		id := aws.ToString(v.VpcId)
		ok, err := b.retryDelete(ctx, r, "VPC "+id, func(ctx context.Context) error {
			_, err := b.c.EC2.DeleteVpc(ctx, &ec2.DeleteVpcInput{VpcId: aws.String(id)})
			return err
		})
		if err != nil {
			errs = append(errs, b.inUseError(ctx, "VPC", id, "vpc-id", id, err))
		}
		removed = removed || ok
	}
	return deleted(removed, errs)
}

// checkVPC verifies that a VPC exists and has DNS hostnames and DNS
// support, returning a *spec.UsageError when it does not.
func checkVPC(ctx context.Context, c *ec2.Client, id string) (*types.Vpc, error) {
	v, err := describeVPC(ctx, c, id)
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, spec.Usagef("VPC %s does not exist in this region: check --vpc-id and --region", id)
	}
	for _, a := range []struct {
		attr types.VpcAttributeName
		what string
		flag string
	}{
		{types.VpcAttributeNameEnableDnsSupport, "DNS support", "--enable-dns-support"},
		{types.VpcAttributeNameEnableDnsHostnames, "DNS hostnames", "--enable-dns-hostnames"},
	} {
		on, err := vpcAttribute(ctx, c, id, a.attr)
		if err != nil {
			return nil, err
		}
		if !on {
			return nil, spec.Usagef("VPC %s does not have %s enabled, which Kubernetes nodes need; kforge never modifies a VPC it did not create: enable it with: aws ec2 modify-vpc-attribute --vpc-id %s %s",
				id, a.what, id, a.flag)
		}
	}
	return v, nil
}

// CheckVPC verifies, without changing anything, that an existing VPC can
// hold a cluster: it exists, it has DNS hostnames and DNS support enabled,
// and the given subnets exist in it and, when there are two or more, span at
// least two availability zones. Unusable input is a *spec.UsageError; other
// errors are AWS failures.
func CheckVPC(ctx context.Context, c *Clients, vpcID string, subnetIDs []string) error {
	if _, err := checkVPC(ctx, c.EC2, vpcID); err != nil {
		return err
	}
	if len(subnetIDs) == 0 {
		return nil
	}
	_, err := checkSubnets(ctx, c.EC2, vpcID, subnetIDs)
	return err
}

// checkSubnets returns the given subnets after checking that they exist, in
// vpcID, and span two zones when there are two or more.
func checkSubnets(ctx context.Context, c *ec2.Client, vpcID string, ids []string) ([]types.Subnet, error) {
	byID := map[string]types.Subnet{}
	for _, id := range ids {
		if _, ok := byID[id]; ok {
			return nil, spec.Usagef("subnet %s is listed twice in --subnet-ids", id)
		}
		out, err := c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{id}})
		if awsx.IsNotFound(err) || err == nil && len(out.Subnets) == 0 {
			return nil, spec.Usagef("subnet %s does not exist in this region: check --subnet-ids and --region", id)
		}
		if err != nil {
			return nil, fmt.Errorf("describe subnet %s: %w", id, err)
		}
		byID[id] = out.Subnets[0]
	}
	zones := map[string]bool{}
	subnets := make([]types.Subnet, 0, len(ids))
	for _, id := range ids {
		s := byID[id]
		if got := aws.ToString(s.VpcId); got != vpcID {
			return nil, spec.Usagef("subnet %s belongs to VPC %s, not to VPC %s: pass subnets of the VPC given with --vpc-id", id, got, vpcID)
		}
		zones[aws.ToString(s.AvailabilityZone)] = true
		subnets = append(subnets, s)
	}
	if len(ids) >= 2 && len(zones) < 2 {
		return nil, spec.Usagef("subnets %s are all in availability zone %s: pass subnets in at least two availability zones",
			strings.Join(ids, ", "), aws.ToString(subnets[0].AvailabilityZone))
	}
	return subnets, nil
}

// adoptStep is the final step when the cluster uses existing subnets.
func (b *builder) adoptStep() *engine.Step {
	return &engine.Step{
		ID:    StepID,
		Needs: []string{StepVPC},
		Title: fmt.Sprintf("existing subnets %s of %s (checked, not modified)", strings.Join(b.s.SubnetIDs, ", "), b.s.VPCID),
		Ensure: func(ctx context.Context, r *engine.Run) (any, error) {
			vpc, err := engine.Out[VPC](r, StepVPC)
			if err != nil {
				return nil, err
			}
			subnets, err := checkSubnets(ctx, b.c.EC2, vpc.ID, b.s.SubnetIDs)
			if err != nil {
				return nil, err
			}
			n := Network{VPCID: vpc.ID, VPCCIDR: vpc.CIDR}
			for _, s := range subnets {
				n.Subnets = append(n.Subnets, Subnet{ID: aws.ToString(s.SubnetId), Zone: aws.ToString(s.AvailabilityZone),
					CIDR: aws.ToString(s.CidrBlock), Public: aws.ToBool(s.MapPublicIpOnLaunch)})
			}
			return n, nil
		},
	}
}

// networkStep gathers the outputs of the other steps into a Network.
func (b *builder) networkStep(needs []string) *engine.Step {
	return &engine.Step{
		ID:    StepID,
		Needs: needs,
		Title: "network ready: " + Summary(b.s),
		Ensure: func(ctx context.Context, r *engine.Run) (any, error) {
			vpc, err := engine.Out[VPC](r, StepVPC)
			if err != nil {
				return nil, err
			}
			igw, err := engine.Out[igwOut](r, StepIGW)
			if err != nil {
				return nil, err
			}
			rtb, err := engine.Out[rtbOut](r, StepRouteTable)
			if err != nil {
				return nil, err
			}
			n := Network{VPCID: vpc.ID, VPCCIDR: vpc.CIDR, OwnVPC: vpc.Own, InternetGatewayID: igw.ID, RouteTableID: rtb.ID}
			for i := range b.s.Zones {
				s, err := engine.Out[Subnet](r, SubnetStepID(i))
				if err != nil {
					return nil, err
				}
				n.Subnets = append(n.Subnets, s)
			}
			return n, nil
		},
		// Delete removes subnets of the cluster beyond the graph's count
		// (from a spec with more zones), so that nothing is left behind;
		// the subnet steps remove the others.
		Delete: b.deleteStraySubnets,
	}
}

// ClusterVPC returns the VPC a cluster's network is in, found by tags: its
// own VPC, else the VPC of its own subnets; "" if neither exists.
func ClusterVPC(ctx context.Context, c *Clients, ref spec.Ref) (string, error) {
	vpcs, err := c.EC2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: awsx.ClusterFilters(ref)})
	if err != nil {
		return "", fmt.Errorf("look up the cluster's VPC: %w", err)
	}
	for _, v := range vpcs.Vpcs {
		return aws.ToString(v.VpcId), nil
	}
	subnets, err := c.EC2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: awsx.ClusterFilters(ref)})
	if err != nil {
		return "", fmt.Errorf("look up the cluster's subnets: %w", err)
	}
	for _, s := range subnets.Subnets {
		return aws.ToString(s.VpcId), nil
	}
	return "", nil
}

// CheckNameFree refuses (a *spec.UsageError) a cluster name that a kforge
// cluster of the other type already uses in the region: Kubernetes tags
// what it makes in AWS with kubernetes.io/cluster/<name>, so two clusters
// of one name in one region would claim each other's load balancers and
// volumes.
func CheckNameFree(ctx context.Context, c *Clients, ref spec.Ref) error {
	out, err := c.EC2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []types.Filter{
		{Name: aws.String("tag:" + awsx.TagCluster), Values: []string{ref.Name}},
		{Name: aws.String("tag:" + awsx.TagRegion), Values: []string{ref.Region}},
	}})
	if err != nil {
		return fmt.Errorf("look up clusters named %s: %w", ref.Name, err)
	}
	for _, s := range out.Subnets {
		if typ := awsx.EC2TagValue(s.Tags, awsx.TagType); typ != ref.Type {
			other := spec.Ref{Type: typ, Name: ref.Name, Region: ref.Region}
			return spec.Usagef("%s already exists (subnet %s); cluster names must be unique in a region across types, because Kubernetes tags what it makes in AWS by cluster name: pick another name", other, aws.ToString(s.SubnetId))
		}
	}
	return nil
}
