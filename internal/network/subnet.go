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

// addZones picks the zones once: an action, since nothing in AWS is
// kforge's; the zones it picked stay (the subnets are in them).
func (b *builder) addZones(g *engine.Graph) engine.Ref[zonesOut] {
	return engine.AddAction(g, engine.Action[zonesOut]{
		ID:    StepZones,
		Title: fmt.Sprintf("pick %d availability zones of %s", b.s.Zones, b.s.Ref.Region),
		Do: func(ctx context.Context, r *engine.Run) (zonesOut, error) {
			if err := b.s.Validate(); err != nil {
				return zonesOut{}, err
			}
			var prev zonesOut
			if r.PrevInto(&prev) && len(prev.Names) > 0 {
				return prev, nil
			}
			return b.pickZones(ctx)
		},
	})
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

func (b *builder) addSubnet(g *engine.Graph, i int, zones engine.Ref[zonesOut], vpc engine.Ref[VPC], igw engine.Ref[igwOut]) engine.Ref[Subnet] {
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
	needs := engine.Needs(zones, vpc)
	if b.s.VPCID != "" {
		needs = append(needs, igw)
	}
	sn := &subnetStep{b: b, i: i, zones: zones, vpc: vpc, igw: igw}
	return engine.Add(g, engine.Resource[Subnet]{
		ID:     SubnetStepID(i),
		Needs:  needs,
		Title:  title,
		Find:   sn.find,
		Create: sn.create,
		Update: sn.update,
		Delete: func(ctx context.Context, r *engine.Run, prev *Subnet) error {
			return subnetKind.remove(ctx, b.c.EC2, idOf(prev), b.subnetFilters(strconv.Itoa(i)), b.subnetDeleter(r))
		},
	})
}

// subnetStep is subnet i of the network, and the handles it reads.
type subnetStep struct {
	b     *builder
	i     int
	zones engine.Ref[zonesOut]
	vpc   engine.Ref[VPC]
	igw   engine.Ref[igwOut] // read only in an existing VPC
}

// public reports whether the subnet is public: always in an own VPC; in
// an existing one, when it has an internet gateway to route through (the
// route table step then routes and associates the subnet).
func (sn *subnetStep) public(r *engine.Run) (bool, error) {
	if sn.b.s.VPCID == "" {
		return true, nil
	}
	gw, err := sn.igw.Get(r)
	return gw.ID != "", err
}

// find observes subnet i in the run's look-up of the VPC's subnets: the
// journaled one, else the one with the cluster's tags and index i.
func (sn *subnetStep) find(ctx context.Context, r *engine.Run, prev *Subnet) (engine.Observation[Subnet], error) {
	b := sn.b
	public, err := sn.public(r)
	if err != nil {
		return engine.Observation[Subnet]{}, err
	}
	_, all, err := b.subnetsOf(ctx, r, sn.vpc)
	if err != nil {
		return engine.Observation[Subnet]{}, err
	}
	prevID := idOf(prev)
	s, ok := subnetKind.pick(all, prevID, mine(b, subnetKind, TagSubnet, strconv.Itoa(sn.i)))
	if !ok {
		if prevID != "" {
			return engine.Gone[Subnet]("subnet %s (%s in %s) was deleted outside kforge", prevID, prev.CIDR, prev.Zone), nil
		}
		return engine.Missing[Subnet](), nil
	}
	id := aws.ToString(s.SubnetId)
	if o := foreign(b.ref(), s.Tags); o != "" {
		return taken[Subnet](b, "subnet", id, o), nil
	}
	out := Subnet{ID: id, Zone: aws.ToString(s.AvailabilityZone), CIDR: aws.ToString(s.CidrBlock), Own: true, Public: public}
	switch {
	case s.State != types.SubnetStateAvailable:
		return engine.Drifted(out, "subnet %s is %s, not available yet", id, s.State), nil
	case public && !aws.ToBool(s.MapPublicIpOnLaunch) && prev != nil:
		return engine.Drifted(out, "MapPublicIpOnLaunch of public subnet %s was turned off outside kforge: instances launched in it would get no public IP", id), nil
	case public && !aws.ToBool(s.MapPublicIpOnLaunch):
		return engine.Drifted(out, "MapPublicIpOnLaunch of public subnet %s, found by its tags, is off (a create stopped before it turned it on)", id), nil
	}
	return engine.InSync(out), nil
}

// subnetsOf returns the VPC and its subnets, from the run's look-up.
func (b *builder) subnetsOf(ctx context.Context, r *engine.Run, vpc engine.Ref[VPC]) (VPC, []types.Subnet, error) {
	v, err := vpc.Get(r)
	if err != nil {
		return v, nil, err
	}
	all, err := lookup(ctx, lookupsOf(r, b.c), subnetKind, inVPC(v.ID))
	return v, all, err
}

// update makes a subnet found drifted available and public again.
func (sn *subnetStep) update(ctx context.Context, r *engine.Run, found Subnet) (Subnet, error) {
	_, all, err := sn.b.subnetsOf(ctx, r, sn.vpc)
	if err != nil {
		return Subnet{}, err
	}
	s := subnetKind.withID(all, found.ID)
	if s == nil {
		return Subnet{}, fmt.Errorf("subnet %s is gone", found.ID)
	}
	return sn.b.readySubnet(ctx, r, *s, found.Public)
}

// create makes subnet i: in its fixed block of an own VPC, or in a free
// block of an existing one (the block it had, if it was deleted outside
// kforge and the block is still free).
func (sn *subnetStep) create(ctx context.Context, r *engine.Run) (Subnet, error) {
	b, i := sn.b, sn.i
	zones, err := sn.zones.Get(r)
	if err != nil {
		return Subnet{}, err
	}
	if len(zones.Names) == 0 {
		return Subnet{}, fmt.Errorf("no availability zone was picked")
	}
	vpc, err := sn.vpc.Get(r)
	if err != nil {
		return Subnet{}, err
	}
	public, err := sn.public(r)
	if err != nil {
		return Subnet{}, err
	}
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
	var s types.Subnet
	if vpc.Own {
		s, err = b.createOwnSubnet(ctx, vpc, in, i)
	} else {
		var prev Subnet
		r.PrevInto(&prev)
		s, err = b.createSharedSubnet(ctx, r, vpc, in, i, prev.CIDR)
	}
	if err != nil {
		return Subnet{}, err
	}
	return b.readySubnet(ctx, r, s, public)
}

// readySubnet waits for a subnet to be available and, if it is public,
// turns MapPublicIpOnLaunch on.
func (b *builder) readySubnet(ctx context.Context, r *engine.Run, s types.Subnet, public bool) (Subnet, error) {
	id := aws.ToString(s.SubnetId)
	if s.State != types.SubnetStateAvailable {
		r.Waiting("waiting for subnet %s to be available", id)
		w := ec2.NewSubnetAvailableWaiter(b.c.EC2, func(o *ec2.SubnetAvailableWaiterOptions) { o.Retryable = retryNotFound(o.Retryable) })
		if err := w.Wait(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{id}}, waitTimeout); err != nil {
			return Subnet{}, fmt.Errorf("wait for subnet %s to be available: %w", id, err)
		}
	}
	if public && !aws.ToBool(s.MapPublicIpOnLaunch) {
		_, err := b.c.EC2.ModifySubnetAttribute(ctx, &ec2.ModifySubnetAttributeInput{SubnetId: aws.String(id),
			MapPublicIpOnLaunch: &types.AttributeBooleanValue{Value: aws.Bool(true)}}, eventual)
		if err != nil {
			return Subnet{}, fmt.Errorf("turn on public IPs for subnet %s: %w", id, err)
		}
	}
	return Subnet{ID: id, Zone: aws.ToString(s.AvailabilityZone), CIDR: aws.ToString(s.CidrBlock), Own: true, Public: public}, nil
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

// subnetFilters select, by tags, the cluster's subnet of the given index,
// or all its subnets for index "".
func (b *builder) subnetFilters(index string) []types.Filter {
	if index != "" {
		return awsx.ClusterFilters(b.ref(), TagSubnet, index)
	}
	return append(awsx.ClusterFilters(b.ref()), filter("tag-key", TagSubnet))
}

func (b *builder) subnetName(zones []string, i int) string {
	zone := zones[i%len(zones)]
	if i < len(zones) {
		return b.name("subnet-" + zone)
	}
	return b.name("subnet-" + zone + "-" + strconv.Itoa(i))
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
	find := subnetKind.first(b.c.EC2, append(b.subnetFilters(strconv.Itoa(i)), inVPC(aws.ToString(in.VpcId))...))
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
//
// prefer, if set, is the block to take if it is free (the block of a
// subnet deleted outside kforge, made again).
func (b *builder) createSharedSubnet(ctx context.Context, r *engine.Run, vpc VPC, in *ec2.CreateSubnetInput, i int, prefer string) (types.Subnet, error) {
	var created types.Subnet
	var last error
	backoff := wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 1, Steps: maxConflicts, Cap: 10 * time.Second}
	err := wait.ExponentialBackoffWithContext(ctx, backoff, func(ctx context.Context) (bool, error) {
		cidr, err := b.freeCIDR(ctx, vpc.ID, i, prefer)
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
// subnet overlaps: prefer if it is one, else the i-th block that no other
// cluster's subnet overlaps, if it is free, else the first free one. The
// cluster's own subnets do not count in that order: its subnets, created
// at once, each take their own block, the same whichever is first.
func (b *builder) freeCIDR(ctx context.Context, vpcID string, i int, prefer string) (netip.Prefix, error) {
	v, err := vpcKind.byID(ctx, b.c.EC2, vpcID)
	if err != nil {
		return netip.Prefix{}, err
	}
	if v == nil {
		return netip.Prefix{}, fmt.Errorf("VPC %s no longer exists", vpcID)
	}
	subnets, err := subnetKind.find(ctx, b.c.EC2, inVPC(vpcID))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("list the subnets of VPC %s: %w", vpcID, err)
	}
	var used, others []netip.Prefix
	for _, s := range subnets {
		if c, err := netip.ParsePrefix(aws.ToString(s.CidrBlock)); err == nil {
			used = append(used, c)
			if !owned(b.ref(), s.Tags) {
				others = append(others, c)
			}
		}
	}
	free := freeBlocks(vpcCIDRs(v), used, b.s.SubnetPrefix, 1)
	if len(free) == 0 {
		return netip.Prefix{}, fmt.Errorf("VPC %s has no free /%d for a subnet (its CIDR blocks: %v): free address space, add a CIDR block to the VPC, or pass --subnet-ids",
			vpcID, b.s.SubnetPrefix, vpcCIDRs(v))
	}
	if p, err := netip.ParsePrefix(prefer); err == nil && p.Bits() == b.s.SubnetPrefix && isFree(vpcCIDRs(v), used, p) {
		return p, nil
	}
	if order := freeBlocks(vpcCIDRs(v), others, b.s.SubnetPrefix, i+1); i < len(order) && isFree(vpcCIDRs(v), used, order[i]) {
		return order[i], nil
	}
	return free[0], nil
}

// isFree reports whether block p lies in one of the VPC's CIDR blocks and
// overlaps none of used.
func isFree(vpcCIDRs []string, used []netip.Prefix, p netip.Prefix) bool {
	in := false
	for _, c := range vpcCIDRs {
		if block, err := netip.ParsePrefix(c); err == nil && block.Bits() <= p.Bits() && block.Contains(p.Addr()) {
			in = true
		}
	}
	for _, u := range used {
		if u.Overlaps(p) {
			return false
		}
	}
	return in
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

// association is a subnet's association with a route table.
type association struct {
	table, id string
	main      bool
}

// associationsOf returns, live, the route table associations of a subnet.
func (b *builder) associationsOf(ctx context.Context, subnetID string) ([]association, error) {
	tables, err := rtbKind.find(ctx, b.c.EC2, []types.Filter{filter("association.subnet-id", subnetID)})
	if err != nil {
		return nil, fmt.Errorf("look up the route table of subnet %s: %w", subnetID, err)
	}
	var out []association
	for _, t := range tables {
		for _, a := range t.Associations {
			if aws.ToString(a.SubnetId) == subnetID {
				out = append(out, association{table: aws.ToString(t.RouteTableId), id: aws.ToString(a.RouteTableAssociationId), main: aws.ToBool(a.Main)})
			}
		}
	}
	return out, nil
}

// associate makes subnet use route table rtbID and returns the
// association's ID. A subnet kforge just made has no association: it is
// associated at once; one associated with another table (AWS refuses:
// Resource.AlreadyAssociated) is moved.
func (b *builder) associate(ctx context.Context, subnetID, rtbID string) (string, error) {
	fail := func(err error) (string, error) {
		return "", fmt.Errorf("associate subnet %s with route table %s: %w", subnetID, rtbID, err)
	}
	out, err := b.c.EC2.AssociateRouteTable(ctx, &ec2.AssociateRouteTableInput{SubnetId: aws.String(subnetID), RouteTableId: aws.String(rtbID)}, eventual)
	if err == nil {
		return aws.ToString(out.AssociationId), nil
	}
	if !awsx.HasCode(err, "Resource.AlreadyAssociated") {
		return fail(err)
	}
	assocs, err := b.associationsOf(ctx, subnetID)
	if err != nil {
		return "", err
	}
	if len(assocs) == 0 {
		if out, err = b.c.EC2.AssociateRouteTable(ctx, &ec2.AssociateRouteTableInput{SubnetId: aws.String(subnetID), RouteTableId: aws.String(rtbID)}, eventual); err != nil {
			return fail(err)
		}
		return aws.ToString(out.AssociationId), nil
	}
	if assocs[0].table == rtbID {
		return assocs[0].id, nil
	}
	moved, err := b.c.EC2.ReplaceRouteTableAssociation(ctx, &ec2.ReplaceRouteTableAssociationInput{
		AssociationId: aws.String(assocs[0].id), RouteTableId: aws.String(rtbID)}, eventual)
	if err != nil {
		return fail(err)
	}
	return aws.ToString(moved.NewAssociationId), nil
}

// deleteStraySubnets removes the cluster's subnets whose index is beyond
// the graph's subnet count.
func (b *builder) deleteStraySubnets(ctx context.Context, r *engine.Run) error {
	all, err := subnetKind.own(ctx, b.c.EC2, "", b.subnetFilters(""))
	if err != nil {
		return err
	}
	stray := awsx.Select(all, func(s types.Subnet) bool {
		i, err := strconv.Atoi(awsx.EC2TagValue(s.Tags, TagSubnet))
		return err != nil || i >= b.s.Zones
	})
	return deleteAll(ctx, stray, b.subnetDeleter(r))
}

// subnetDeleter deletes one subnet for kind.remove and deleteAll.
func (b *builder) subnetDeleter(r *engine.Run) func(context.Context, types.Subnet) (bool, error) {
	return func(ctx context.Context, s types.Subnet) (bool, error) {
		return b.deleteSubnet(ctx, r, aws.ToString(s.SubnetId))
	}
}

// deleteSubnet disassociates a subnet from its route table and deletes it,
// waiting a bounded time for AWS to release what still uses it. It reports
// whether it removed the subnet (false: it was gone already).
func (b *builder) deleteSubnet(ctx context.Context, r *engine.Run, id string) (bool, error) {
	assocs, err := b.associationsOf(ctx, id)
	if err != nil {
		return false, err
	}
	for _, a := range assocs {
		if a.main {
			continue
		}
		_, err := b.c.EC2.DisassociateRouteTable(ctx, &ec2.DisassociateRouteTableInput{AssociationId: aws.String(a.id)})
		if err != nil && !awsx.IsNotFound(err) {
			return false, fmt.Errorf("disassociate subnet %s from route table %s: %w", id, a.table, err)
		}
	}
	return b.deleteInUse(ctx, r, "subnet", id, "subnet-id", func(ctx context.Context) error {
		_, err := b.c.EC2.DeleteSubnet(ctx, &ec2.DeleteSubnetInput{SubnetId: aws.String(id)})
		return err
	})
}
