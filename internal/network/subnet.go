package network

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/engine"
)

// zonesOut is the output of the azs step: the zones subnet i uses is
// Names[i % len(Names)].
type zonesOut struct {
	Names []string `json:"names"`
}

func (b *builder) zonesStep() *engine.Step {
	return &engine.Step{
		ID:    StepZones,
		Title: fmt.Sprintf("pick %d availability zones of %s", b.s.Zones, b.s.Ref.Region),
		Ensure: func(ctx context.Context, r *engine.Run) (any, error) {
			var prev zonesOut
			if r.PrevInto(&prev) && len(prev.Names) > 0 {
				return prev, nil
			}
			return b.pickZones(ctx)
		},
	}
}

// pickZones returns the first Zones usable availability zones, by name.
func (b *builder) pickZones(ctx context.Context) (zonesOut, error) {
	out, err := b.c.EC2.DescribeAvailabilityZones(ctx, &ec2.DescribeAvailabilityZonesInput{})
	if err != nil {
		return zonesOut{}, fmt.Errorf("list availability zones: %w", err)
	}
	excluded := map[string]bool{}
	for _, id := range b.s.ExcludeZoneIDs {
		excluded[id] = true
	}
	var names []string
	for _, z := range out.AvailabilityZones {
		switch {
		case z.State != types.AvailabilityZoneStateAvailable,
			z.ZoneType != nil && aws.ToString(z.ZoneType) != "availability-zone",
			z.OptInStatus == types.AvailabilityZoneOptInStatusNotOptedIn,
			excluded[aws.ToString(z.ZoneId)]:
			continue
		}
		names = append(names, aws.ToString(z.ZoneName))
	}
	sort.Strings(names)
	if len(names) < 2 {
		return zonesOut{}, fmt.Errorf("region %s has %d usable availability zone(s) (%v); a cluster needs at least 2: choose another region",
			b.s.Ref.Region, len(names), names)
	}
	if len(names) > b.s.Zones {
		names = names[:b.s.Zones]
	}
	return zonesOut{Names: names}, nil
}

func (b *builder) subnetStep(i int) *engine.Step {
	title := ""
	if b.s.VPCID == "" {
		cidr := "?"
		if p, err := netip.ParsePrefix(b.s.CIDR); err == nil {
			if c, err := carve(p, b.s.SubnetPrefix, i); err == nil {
				cidr = c.String()
			}
		}
		title = fmt.Sprintf("public subnet %s in availability zone %d of %d", cidr, i+1, b.s.Zones)
	} else {
		title = fmt.Sprintf("subnet in a free /%d of VPC %s in availability zone %d of %d", b.s.SubnetPrefix, b.s.VPCID, i+1, b.s.Zones)
	}
	// In an existing VPC, the gateway look-up decides whether the subnet
	// is public; an own VPC always gets one.
	needs := []string{StepZones, StepVPC}
	if b.s.VPCID != "" {
		needs = append(needs, StepIGW)
	}
	return &engine.Step{
		ID:     SubnetStepID(i),
		Needs:  needs,
		Title:  title,
		Ensure: func(ctx context.Context, r *engine.Run) (any, error) { return b.ensureSubnet(ctx, r, i) },
		Delete: func(ctx context.Context, r *engine.Run) error {
			var prev Subnet
			r.PrevInto(&prev)
			found, err := b.ownSubnets(ctx, strconv.Itoa(i), prev.ID, "")
			if err != nil {
				return err
			}
			return b.deleteSubnets(ctx, r, found)
		},
	}
}

// carve returns the i-th block of the given prefix length in p.
func carve(p netip.Prefix, bits, i int) (netip.Prefix, error) {
	if bits < p.Bits() || bits > 32 || i >= 1<<(bits-p.Bits()) {
		return netip.Prefix{}, fmt.Errorf("%s has no subnet #%d of /%d", p, i, bits)
	}
	a := p.Masked().Addr().As4()
	base := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v := base + uint32(i)<<(32-bits)
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), bits), nil
}

// ownSubnets returns the cluster's subnets with the given index ("" for
// all): the journaled one first if it exists, then those found by tags (in
// vpcID, if not empty).
func (b *builder) ownSubnets(ctx context.Context, index, prevID, vpcID string) ([]types.Subnet, error) {
	return lookupOwn(ctx, prevID, func(s types.Subnet) string { return aws.ToString(s.SubnetId) },
		func(ctx context.Context) (*types.Subnet, error) {
			res, err := b.c.EC2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{prevID}})
			if awsx.IsNotFound(err) || err == nil && (len(res.Subnets) == 0 || vpcID != "" && aws.ToString(res.Subnets[0].VpcId) != vpcID) {
				return nil, nil
			}
			if err != nil {
				return nil, fmt.Errorf("describe subnet %s: %w", prevID, err)
			}
			return &res.Subnets[0], nil
		},
		func(ctx context.Context) ([]types.Subnet, error) {
			var filters []types.Filter
			if index != "" {
				filters = awsx.ClusterFilters(b.ref(), TagSubnet, index)
			} else {
				filters = append(awsx.ClusterFilters(b.ref()), types.Filter{Name: aws.String("tag-key"), Values: []string{TagSubnet}})
			}
			if vpcID != "" {
				filters = append(filters, types.Filter{Name: aws.String("vpc-id"), Values: []string{vpcID}})
			}
			var tagged []types.Subnet
			p := ec2.NewDescribeSubnetsPaginator(b.c.EC2, &ec2.DescribeSubnetsInput{Filters: filters})
			for p.HasMorePages() {
				page, err := p.NextPage(ctx)
				if err != nil {
					return nil, fmt.Errorf("look up the cluster's subnets by tags: %w", err)
				}
				tagged = append(tagged, page.Subnets...)
			}
			return tagged, nil
		})
}

func (b *builder) subnetName(zones []string, i int) string {
	zone := zones[i%len(zones)]
	if i < len(zones) {
		return b.name("subnet-" + zone)
	}
	return b.name("subnet-" + zone + "-" + strconv.Itoa(i))
}

func (b *builder) ensureSubnet(ctx context.Context, r *engine.Run, i int) (any, error) {
	zones, err := engine.Out[zonesOut](r, StepZones)
	if err != nil {
		return nil, err
	}
	if len(zones.Names) == 0 {
		return nil, fmt.Errorf("no availability zone was picked")
	}
	vpc, err := engine.Out[VPC](r, StepVPC)
	if err != nil {
		return nil, err
	}
	// Public when there is an internet gateway to route through (the
	// route table step then routes and associates the subnet).
	public := true
	if b.s.VPCID != "" {
		igw, err := engine.Out[igwOut](r, StepIGW)
		if err != nil {
			return nil, err
		}
		public = igw.ID != ""
	}
	var prev Subnet
	r.PrevInto(&prev)
	found, err := b.ownSubnets(ctx, strconv.Itoa(i), prev.ID, vpc.ID)
	if err != nil {
		return nil, err
	}
	var s types.Subnet
	if len(found) > 0 {
		s = found[0]
	} else {
		zone := zones.Names[i%len(zones.Names)]
		role := TagInternalELB
		if public {
			role = TagELB
		}
		tags := awsx.Owned(b.ref(), awsx.Tags(b.ref(), b.subnetName(zones.Names, i), TagSubnet, strconv.Itoa(i), role, "1"))
		in := &ec2.CreateSubnetInput{
			VpcId:             aws.String(vpc.ID),
			AvailabilityZone:  aws.String(zone),
			TagSpecifications: awsx.EC2TagSpec(types.ResourceTypeSubnet, tags),
		}
		if vpc.Own {
			s, err = b.createOwnSubnet(ctx, vpc, in, i)
		} else {
			s, err = b.createSharedSubnet(ctx, r, vpc, in, i)
		}
		if err != nil {
			return nil, err
		}
	}
	id := aws.ToString(s.SubnetId)
	if s.State != types.SubnetStateAvailable {
		r.Waiting("waiting for subnet %s to be available", id)
		w := ec2.NewSubnetAvailableWaiter(b.c.EC2, func(o *ec2.SubnetAvailableWaiterOptions) {
			next := o.Retryable
			o.Retryable = func(ctx context.Context, in *ec2.DescribeSubnetsInput, out *ec2.DescribeSubnetsOutput, err error) (bool, error) {
				if awsx.IsNotFound(err) {
					return true, nil
				}
				return next(ctx, in, out, err)
			}
		})
		if err := w.Wait(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{id}}, waitTimeout); err != nil {
			return nil, fmt.Errorf("wait for subnet %s to be available: %w", id, err)
		}
	}
	if public && !aws.ToBool(s.MapPublicIpOnLaunch) {
		_, err := b.c.EC2.ModifySubnetAttribute(ctx, &ec2.ModifySubnetAttributeInput{SubnetId: aws.String(id),
			MapPublicIpOnLaunch: &types.AttributeBooleanValue{Value: aws.Bool(true)}}, eventual)
		if err != nil {
			return nil, fmt.Errorf("turn on public IPs for subnet %s: %w", id, err)
		}
	}
	return Subnet{ID: id, Zone: aws.ToString(s.AvailabilityZone), CIDR: aws.ToString(s.CidrBlock), Own: true, Public: public}, nil
}

// createOwnSubnet creates subnet i of an own VPC in its fixed block.
func (b *builder) createOwnSubnet(ctx context.Context, vpc VPC, in *ec2.CreateSubnetInput, i int) (types.Subnet, error) {
	p, err := netip.ParsePrefix(vpc.CIDR)
	if err != nil {
		return types.Subnet{}, fmt.Errorf("VPC %s has CIDR %q: %w", vpc.ID, vpc.CIDR, err)
	}
	cidr, err := carve(p, b.s.SubnetPrefix, i)
	if err != nil {
		return types.Subnet{}, err
	}
	in.CidrBlock = aws.String(cidr.String())
	s, err := b.createSubnet(ctx, in, i, safeEventual)
	if awsx.HasCode(err, "InvalidSubnet.Conflict") {
		return types.Subnet{}, fmt.Errorf("create subnet %s in VPC %s: another subnet, not kforge's, overlaps it; delete it and retry: %w", cidr, vpc.ID, err)
	}
	if err != nil {
		return types.Subnet{}, fmt.Errorf("create subnet %s in VPC %s: %w", cidr, vpc.ID, err)
	}
	return s, nil
}

// createSubnet makes subnet i with one CreateSubnet that cannot leave a
// second subnet behind: when its answer is lost, subnet i is looked for by
// its tags before the call is tried again. opt is safe or safeEventual.
func (b *builder) createSubnet(ctx context.Context, in *ec2.CreateSubnetInput, i int, opt func(*ec2.Options)) (types.Subnet, error) {
	find := func(ctx context.Context) (types.Subnet, bool, error) {
		found, err := b.ownSubnets(ctx, strconv.Itoa(i), "", aws.ToString(in.VpcId))
		if err != nil || len(found) == 0 {
			return types.Subnet{}, false, err
		}
		return found[0], true, nil
	}
	return awsx.CreateOnce(ctx, find, func(ctx context.Context) (types.Subnet, error) {
		out, err := b.c.EC2.CreateSubnet(ctx, in, opt)
		if err != nil {
			return types.Subnet{}, err
		}
		return *out.Subnet, nil
	})
}

// maxConflicts bounds how often a subnet in an existing VPC picks a new
// free block because someone else took the one it chose.
const maxConflicts = 8

// createSharedSubnet creates subnet i of an existing VPC in a free block.
// Other clusters (and this cluster's other subnets) pick blocks at the
// same time, so a conflict makes it look again, with backoff.
func (b *builder) createSharedSubnet(ctx context.Context, r *engine.Run, vpc VPC, in *ec2.CreateSubnetInput, i int) (types.Subnet, error) {
	var created types.Subnet
	var last error
	backoff := wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 1, Steps: maxConflicts, Cap: 10 * time.Second}
	err := wait.ExponentialBackoffWithContext(ctx, backoff, func(ctx context.Context) (bool, error) {
		cidr, err := b.freeCIDR(ctx, vpc.ID, i)
		if err != nil {
			return false, err
		}
		in.CidrBlock = aws.String(cidr.String())
		s, err := b.createSubnet(ctx, in, i, safe)
		if awsx.HasCode(err, "InvalidSubnet.Conflict") {
			last = err
			r.Waiting("block %s of VPC %s was just taken; picking another", cidr, vpc.ID)
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("create subnet %s in VPC %s: %w", cidr, vpc.ID, err)
		}
		created = s
		return true, nil
	})
	if wait.Interrupted(err) && ctx.Err() == nil {
		return types.Subnet{}, fmt.Errorf("create a subnet in VPC %s: every free block was taken by someone else %d times in a row; retry: %w", vpc.ID, maxConflicts, last)
	}
	return created, err
}

// freeCIDR returns a block of SubnetPrefix in the VPC's CIDR blocks that no
// subnet overlaps: the i-th free one if there are that many, so that the
// subnets of one cluster created at once pick different blocks.
func (b *builder) freeCIDR(ctx context.Context, vpcID string, i int) (netip.Prefix, error) {
	v, err := describeVPC(ctx, b.c.EC2, vpcID)
	if err != nil {
		return netip.Prefix{}, err
	}
	if v == nil {
		return netip.Prefix{}, fmt.Errorf("VPC %s no longer exists", vpcID)
	}
	var used []netip.Prefix
	p := ec2.NewDescribeSubnetsPaginator(b.c.EC2, &ec2.DescribeSubnetsInput{
		Filters: []types.Filter{{Name: aws.String("vpc-id"), Values: []string{vpcID}}},
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("list the subnets of VPC %s: %w", vpcID, err)
		}
		for _, s := range page.Subnets {
			if c, err := netip.ParsePrefix(aws.ToString(s.CidrBlock)); err == nil {
				used = append(used, c)
			}
		}
	}
	free := freeBlocks(vpcCIDRs(v), used, b.s.SubnetPrefix, i+1)
	if len(free) == 0 {
		return netip.Prefix{}, fmt.Errorf("VPC %s has no free /%d for a subnet (its CIDR blocks: %v): free address space, add a CIDR block to the VPC, or pass --subnet-ids",
			vpcID, b.s.SubnetPrefix, vpcCIDRs(v))
	}
	return free[min(i, len(free)-1)], nil
}

// freeBlocks returns up to n blocks of the given prefix length, in order,
// inside the VPC's CIDR blocks and overlapping none of used.
func freeBlocks(vpcCIDRs []string, used []netip.Prefix, bits, n int) []netip.Prefix {
	var free []netip.Prefix
	for _, c := range vpcCIDRs {
		block, err := netip.ParsePrefix(c)
		if err != nil || !block.Addr().Is4() || block.Bits() > bits {
			continue
		}
		for k := 0; k < 1<<(bits-block.Bits()) && len(free) < n; k++ {
			cand, err := carve(block, bits, k)
			if err != nil {
				break
			}
			overlaps := false
			for _, u := range used {
				if u.Overlaps(cand) {
					overlaps = true
					break
				}
			}
			if !overlaps {
				free = append(free, cand)
			}
		}
	}
	return free
}

// associate makes subnet use route table rtbID. A subnet kforge just made
// has no association: it is associated at once; one associated with another
// table (AWS refuses: Resource.AlreadyAssociated) is moved.
func (b *builder) associate(ctx context.Context, subnetID, rtbID string) error {
	_, err := b.c.EC2.AssociateRouteTable(ctx, &ec2.AssociateRouteTableInput{SubnetId: aws.String(subnetID), RouteTableId: aws.String(rtbID)}, eventual)
	if err == nil {
		return nil
	}
	if !awsx.HasCode(err, "Resource.AlreadyAssociated") {
		return fmt.Errorf("associate subnet %s with route table %s: %w", subnetID, rtbID, err)
	}
	out, err := b.c.EC2.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{
		Filters: []types.Filter{{Name: aws.String("association.subnet-id"), Values: []string{subnetID}}},
	})
	if err != nil {
		return fmt.Errorf("look up the route table of subnet %s: %w", subnetID, err)
	}
	for _, t := range out.RouteTables {
		for _, a := range t.Associations {
			if aws.ToString(a.SubnetId) != subnetID {
				continue
			}
			if aws.ToString(t.RouteTableId) == rtbID {
				return nil
			}
			_, err := b.c.EC2.ReplaceRouteTableAssociation(ctx, &ec2.ReplaceRouteTableAssociationInput{
				AssociationId: a.RouteTableAssociationId, RouteTableId: aws.String(rtbID)}, eventual)
			if err != nil {
				return fmt.Errorf("associate subnet %s with route table %s: %w", subnetID, rtbID, err)
			}
			return nil
		}
	}
	_, err = b.c.EC2.AssociateRouteTable(ctx, &ec2.AssociateRouteTableInput{SubnetId: aws.String(subnetID), RouteTableId: aws.String(rtbID)}, eventual)
	if err != nil {
		return fmt.Errorf("associate subnet %s with route table %s: %w", subnetID, rtbID, err)
	}
	return nil
}

// deleteStraySubnets removes the cluster's subnets whose index is beyond
// the graph's subnet count.
func (b *builder) deleteStraySubnets(ctx context.Context, r *engine.Run) error {
	all, err := b.ownSubnets(ctx, "", "", "")
	if err != nil {
		return err
	}
	var stray []types.Subnet
	for _, s := range all {
		if i, err := strconv.Atoi(awsx.EC2TagValue(s.Tags, TagSubnet)); err != nil || i >= b.s.Zones {
			stray = append(stray, s)
		}
	}
	return b.deleteSubnets(ctx, r, stray)
}

// deleteSubnets deletes subnets; it returns engine.ErrAbsent when there
// was none to delete.
func (b *builder) deleteSubnets(ctx context.Context, r *engine.Run, subnets []types.Subnet) error {
	var errs []error
	removed := false
	for _, s := range subnets {
		ok, err := b.deleteSubnet(ctx, r, aws.ToString(s.SubnetId))
		if err != nil {
			errs = append(errs, err)
		}
		removed = removed || ok
	}
	return deleted(removed, errs)
}

// deleteSubnet disassociates a subnet from its route table and deletes it,
// waiting a bounded time for AWS to release what still uses it. It reports
// whether it removed the subnet (false: it was gone already).
func (b *builder) deleteSubnet(ctx context.Context, r *engine.Run, id string) (bool, error) {
	out, err := b.c.EC2.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{
		Filters: []types.Filter{{Name: aws.String("association.subnet-id"), Values: []string{id}}},
	})
	if err != nil {
		return false, fmt.Errorf("look up the route table of subnet %s: %w", id, err)
	}
	for _, t := range out.RouteTables {
		for _, a := range t.Associations {
			if aws.ToString(a.SubnetId) != id || aws.ToBool(a.Main) {
				continue
			}
			_, err := b.c.EC2.DisassociateRouteTable(ctx, &ec2.DisassociateRouteTableInput{AssociationId: a.RouteTableAssociationId})
			if err != nil && !awsx.IsNotFound(err) {
				return false, fmt.Errorf("disassociate subnet %s from route table %s: %w", id, aws.ToString(t.RouteTableId), err)
			}
		}
	}
	removed, err := b.retryDelete(ctx, r, "subnet "+id, func(ctx context.Context) error {
		_, err := b.c.EC2.DeleteSubnet(ctx, &ec2.DeleteSubnetInput{SubnetId: aws.String(id)})
		return err
	})
	if err != nil {
		return false, b.inUseError(ctx, "subnet", id, "subnet-id", id, err)
	}
	return removed, nil
}
