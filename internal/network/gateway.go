package network

import (
	"context"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/engine"
)

// igwOut is the output of the igw step. ID is empty when an existing VPC
// has no internet gateway.
type igwOut struct {
	ID  string `json:"id,omitempty"`
	Own bool   `json:"own"`
}

// rtbOut is the output of the rtb step. ID is empty when there is no
// internet gateway to route through.
type rtbOut struct {
	ID string `json:"id,omitempty"`
}

func (g igwOut) key() string { return g.ID }
func (t rtbOut) key() string { return t.ID }

// defaultRoute is the destination kforge routes to the internet gateway.
const defaultRoute = "0.0.0.0/0"

func (b *builder) addIGW(g *engine.Graph, vpc engine.Ref[VPC]) engine.Ref[igwOut] {
	if b.s.VPCID != "" {
		return engine.Add(g, engine.Resource[igwOut]{
			ID:    StepIGW,
			Needs: engine.Needs(vpc),
			Title: fmt.Sprintf("internet gateway of VPC %s (found, not modified)", b.s.VPCID),
			Find: func(ctx context.Context, r *engine.Run, prev *igwOut) (engine.Observation[igwOut], error) {
				return b.findAttachedIGW(ctx, r, vpc, prev)
			},
			// Nothing to create, repair or delete: the gateway of an
			// existing VPC is not kforge's.
		})
	}
	return engine.Add(g, engine.Resource[igwOut]{
		ID:    StepIGW,
		Needs: engine.Needs(vpc),
		Title: "internet gateway attached to the VPC",
		Find: func(ctx context.Context, r *engine.Run, prev *igwOut) (engine.Observation[igwOut], error) {
			return b.findOwnIGW(ctx, r, vpc, prev)
		},
		Create: func(ctx context.Context, r *engine.Run) (igwOut, error) { return b.createIGW(ctx, r, vpc) },
		Update: func(ctx context.Context, r *engine.Run, found igwOut) (igwOut, error) {
			v, err := vpc.Get(r)
			if err != nil {
				return igwOut{}, err
			}
			return found, b.attachIGW(ctx, found.ID, v.ID)
		},
		Delete: b.deleteIGW,
	})
}

// attached reports whether gateway g is attached (or attaching) to vpcID.
func attached(g types.InternetGateway, vpcID string) bool {
	for _, a := range g.Attachments {
		if aws.ToString(a.VpcId) == vpcID && a.State != types.AttachmentStatusDetached && a.State != types.AttachmentStatusDetaching {
			return true
		}
	}
	return false
}

// findAttachedIGW observes the internet gateway attached to an existing
// VPC: its look-up answers whether the subnets are public. A cluster made
// without one stays private; one whose gateway went stops the run.
func (b *builder) findAttachedIGW(ctx context.Context, r *engine.Run, vpc engine.Ref[VPC], prev *igwOut) (engine.Observation[igwOut], error) {
	v, err := vpc.Get(r)
	if err != nil {
		return engine.Observation[igwOut]{}, err
	}
	all, err := lookup(ctx, lookupsOf(r, b.c), igwKind, []types.Filter{filter("attachment.vpc-id", v.ID)})
	if err != nil {
		return engine.Observation[igwOut]{}, err
	}
	id := ""
	if g, ok := igwKind.pick(all, "", func(g types.InternetGateway) bool { return attached(g, v.ID) }); ok {
		id = aws.ToString(g.InternetGatewayId)
	}
	switch {
	case prev != nil && prev.ID == "":
		// The subnets were made private: they stay so, whatever gateway
		// the VPC's owner attached since.
		return engine.InSync(igwOut{}), nil
	case prev != nil && id == "":
		return engine.Unsafe[igwOut]("internet gateway %s of VPC %s, which kforge's public subnets route through, is no longer attached to it; kforge never attaches or creates a gateway in a VPC it was given: attach an internet gateway to VPC %s again and run the same command (kforge then routes through it), or run `%s`",
			prev.ID, v.ID, v.ID, b.resume()), nil
	}
	return engine.InSync(igwOut{ID: id}), nil
}

// igwFilters select the cluster's own gateway by its tags.
func (b *builder) igwFilters() []types.Filter {
	return awsx.ClusterFilters(b.ref(), awsx.TagName, b.name("igw"))
}

// findOwnIGW observes the cluster's gateway from the run's look-up by
// tags (by ID only when the journaled one is not among them): it must
// exist and be attached to the VPC.
func (b *builder) findOwnIGW(ctx context.Context, r *engine.Run, vpc engine.Ref[VPC], prev *igwOut) (engine.Observation[igwOut], error) {
	v, err := vpc.Get(r)
	if err != nil {
		return engine.Observation[igwOut]{}, err
	}
	l := lookupsOf(r, b.c)
	tagged, err := lookup(ctx, l, igwKind, b.igwFilters())
	if err != nil {
		return engine.Observation[igwOut]{}, err
	}
	prevID := idOf(prev)
	var g *types.InternetGateway
	if prevID != "" {
		if g = igwKind.withID(tagged, prevID); g == nil {
			if g, err = lookupByID(ctx, l, igwKind, prevID); err != nil {
				return engine.Observation[igwOut]{}, err
			}
			if g != nil {
				if o := foreign(b.ref(), g.Tags); o != "" {
					return taken[igwOut](b, "internet gateway", prevID, o), nil
				}
			}
		}
	}
	// Else by tags: one attached to the VPC, else a free one.
	for _, want := range []func(types.InternetGateway) bool{
		func(g types.InternetGateway) bool { return attached(g, v.ID) },
		func(g types.InternetGateway) bool { return len(g.Attachments) == 0 },
	} {
		if x, ok := igwKind.pick(tagged, "", want); g == nil && ok {
			g = &x
		}
	}
	if g == nil {
		if prevID != "" {
			return engine.Gone[igwOut]("internet gateway %s was deleted outside kforge", prevID), nil
		}
		return engine.Missing[igwOut](), nil
	}
	id := aws.ToString(g.InternetGatewayId)
	out := igwOut{ID: id, Own: true}
	if attached(*g, v.ID) {
		return engine.InSync(out), nil
	}
	for _, a := range g.Attachments {
		if other := aws.ToString(a.VpcId); other != v.ID && a.State != types.AttachmentStatusDetached {
			return engine.Unsafe[igwOut]("internet gateway %s of the cluster is attached to VPC %s, not to the cluster's VPC %s: kforge does not take it from there; detach it from %s (aws ec2 detach-internet-gateway --internet-gateway-id %s --vpc-id %s) and run the same command again",
				id, other, v.ID, other, id, other), nil
		}
	}
	if prevID == id {
		return engine.Drifted(out, "internet gateway %s was detached from VPC %s outside kforge", id, v.ID), nil
	}
	return engine.Drifted(out, "internet gateway %s, found by its tags, is not attached to VPC %s (a create stopped before it attached it)", id, v.ID), nil
}

// createIGW makes the cluster's gateway and attaches it; a lost answer
// makes it look for the gateway by its tags, live, before it tries again.
func (b *builder) createIGW(ctx context.Context, r *engine.Run, vpc engine.Ref[VPC]) (igwOut, error) {
	v, err := vpc.Get(r)
	if err != nil {
		return igwOut{}, err
	}
	g, err := awsx.CreateOnce(ctx, igwKind.first(b.c.EC2, b.igwFilters()), func(ctx context.Context) (types.InternetGateway, error) {
		out, err := b.c.EC2.CreateInternetGateway(ctx, &ec2.CreateInternetGatewayInput{
			TagSpecifications: awsx.EC2TagSpec(types.ResourceTypeInternetGateway, awsx.Tags(b.ref(), b.name("igw"))),
		}, safe)
		if err != nil {
			return types.InternetGateway{}, err
		}
		return *out.InternetGateway, nil
	})
	if err != nil {
		return igwOut{}, fmt.Errorf("create internet gateway: %w", err)
	}
	id := aws.ToString(g.InternetGatewayId)
	if !attached(g, v.ID) {
		if err := b.attachIGW(ctx, id, v.ID); err != nil {
			return igwOut{}, err
		}
	}
	return igwOut{ID: id, Own: true}, nil
}

// attachIGW attaches gateway id to the VPC.
func (b *builder) attachIGW(ctx context.Context, id, vpcID string) error {
	_, err := b.c.EC2.AttachInternetGateway(ctx, &ec2.AttachInternetGatewayInput{InternetGatewayId: aws.String(id), VpcId: aws.String(vpcID)}, eventual)
	if err != nil && !awsx.HasCode(err, "Resource.AlreadyAssociated") {
		return fmt.Errorf("attach internet gateway %s to VPC %s: %w", id, vpcID, err)
	}
	return nil
}

func (b *builder) deleteIGW(ctx context.Context, r *engine.Run, prev *igwOut) error {
	return igwKind.remove(ctx, b.c.EC2, idOf(prev), b.igwFilters(), func(ctx context.Context, g types.InternetGateway) (bool, error) {
		return b.deleteOneIGW(ctx, r, g)
	})
}

// deleteOneIGW detaches and deletes a gateway and reports whether it
// removed it (false: it was gone already).
func (b *builder) deleteOneIGW(ctx context.Context, r *engine.Run, g types.InternetGateway) (bool, error) {
	id := aws.ToString(g.InternetGatewayId)
	for _, a := range g.Attachments {
		vpcID := aws.ToString(a.VpcId)
		// AWS refuses the detach while the VPC has public IPs mapped
		// (instances, load balancers, NAT gateways still going away).
		err := awsx.RetryInUse(ctx, b.c.inUseTimeout(), r.Waiting, "internet gateway "+id, func(ctx context.Context) error {
			_, err := b.c.EC2.DetachInternetGateway(ctx, &ec2.DetachInternetGatewayInput{InternetGatewayId: aws.String(id), VpcId: aws.String(vpcID)})
			if awsx.HasCode(err, "Gateway.NotAttached") {
				return nil
			}
			return err
		})
		if err != nil {
			return false, b.inUseError(ctx, "internet gateway", id, "vpc-id", vpcID, fmt.Errorf("detach from VPC %s: %w", vpcID, err))
		}
	}
	removed, err := b.retryDelete(ctx, r, "internet gateway "+id, func(ctx context.Context) error {
		_, err := b.c.EC2.DeleteInternetGateway(ctx, &ec2.DeleteInternetGatewayInput{InternetGatewayId: aws.String(id)})
		return err
	})
	if err != nil {
		return false, fmt.Errorf("delete internet gateway %s: %w", id, err)
	}
	return removed, nil
}

// addRTB makes the route table and associates the subnets with it: the
// subnets are made first, so the route table's deletion (which
// disassociates them) comes before theirs.
func (b *builder) addRTB(g *engine.Graph, vpc engine.Ref[VPC], igw engine.Ref[igwOut], subnets []engine.Ref[Subnet]) engine.Ref[rtbOut] {
	title := "route table with 0.0.0.0/0 to the internet gateway, for every subnet"
	if b.s.VPCID != "" {
		title = fmt.Sprintf("route table in VPC %s with 0.0.0.0/0 to its internet gateway, for kforge's subnets (none if it has no gateway)", b.s.VPCID)
	}
	needs := engine.Needs(vpc, igw)
	for _, s := range subnets {
		needs = append(needs, s)
	}
	t := &rtbStep{b: b, vpc: vpc, igw: igw, subnets: subnets}
	return engine.Add(g, engine.Resource[rtbOut]{
		ID:     StepRouteTable,
		Needs:  needs,
		Title:  title,
		Find:   t.find,
		Create: t.create,
		Update: t.update,
		Delete: b.deleteRTB,
	})
}

// rtbFilters select the cluster's route table by its tags.
func (b *builder) rtbFilters() []types.Filter {
	return awsx.ClusterFilters(b.ref(), awsx.TagName, b.name("rtb"))
}

// rtbStep is the route table step and the handles it reads.
type rtbStep struct {
	b       *builder
	vpc     engine.Ref[VPC]
	igw     engine.Ref[igwOut]
	subnets []engine.Ref[Subnet]
}

// wants is what the route table step reads: the VPC, the gateway to
// route through, and the subnets to associate.
type rtbWants struct {
	vpc     VPC
	igw     igwOut
	subnets []Subnet
}

func (t *rtbStep) wants(r *engine.Run) (rtbWants, error) {
	var w rtbWants
	var err error
	if w.vpc, err = t.vpc.Get(r); err != nil {
		return w, err
	}
	if w.igw, err = t.igw.Get(r); err != nil {
		return w, err
	}
	for _, ref := range t.subnets {
		s, err := ref.Get(r)
		if err != nil {
			return w, err
		}
		w.subnets = append(w.subnets, s)
	}
	return w, nil
}

// find observes the route table in the run's look-up of the VPC's route
// tables: the journaled one, else the one with the cluster's tags; then
// its default route and its subnets' associations.
func (t *rtbStep) find(ctx context.Context, r *engine.Run, prev *rtbOut) (engine.Observation[rtbOut], error) {
	b := t.b
	w, err := t.wants(r)
	if err != nil {
		return engine.Observation[rtbOut]{}, err
	}
	if w.igw.ID == "" {
		// An existing VPC without an internet gateway: the subnets use
		// the VPC's main route table.
		return engine.InSync(rtbOut{}), nil
	}
	all, err := lookup(ctx, lookupsOf(r, b.c), rtbKind, inVPC(w.vpc.ID))
	if err != nil {
		return engine.Observation[rtbOut]{}, err
	}
	prevID := idOf(prev)
	rt, ok := rtbKind.pick(all, prevID, mine(b, rtbKind, awsx.TagName, b.name("rtb")))
	if !ok {
		if prevID != "" {
			return engine.Gone[rtbOut]("route table %s was deleted outside kforge", prevID), nil
		}
		return engine.Missing[rtbOut](), nil
	}
	id := aws.ToString(rt.RouteTableId)
	if o := foreign(b.ref(), rt.Tags); o != "" {
		return taken[rtbOut](b, "route table", id, o), nil
	}
	out := rtbOut{ID: id}
	if drift := rtbDrift(rt, all, w, prevID == id); len(drift) > 0 {
		return engine.Drifted(out, "%s", strings.Join(drift, "; ")), nil
	}
	return engine.InSync(out), nil
}

// rtbDrift says how route table t differs from what is wanted: its
// default route to the gateway, and every subnet associated with it. all
// are the VPC's route tables (to say which one a subnet uses instead);
// recorded is true when the table is the journaled one.
func rtbDrift(t types.RouteTable, all []types.RouteTable, w rtbWants, recorded bool) []string {
	id := aws.ToString(t.RouteTableId)
	var drift []string
	route := func() *types.Route {
		for i := range t.Routes {
			if aws.ToString(t.Routes[i].DestinationCidrBlock) == defaultRoute {
				return &t.Routes[i]
			}
		}
		return nil
	}()
	switch {
	case route == nil && recorded:
		drift = append(drift, fmt.Sprintf("route %s of %s to %s was deleted outside kforge", defaultRoute, id, w.igw.ID))
	case route == nil:
		drift = append(drift, fmt.Sprintf("route table %s, found by its tags, has no route %s to %s yet (a create stopped before it)", id, defaultRoute, w.igw.ID))
	case aws.ToString(route.GatewayId) != w.igw.ID:
		drift = append(drift, fmt.Sprintf("route %s of %s points to %s instead of the internet gateway %s", defaultRoute, id, routeTarget(*route), w.igw.ID))
	case route.State == types.RouteStateBlackhole:
		drift = append(drift, fmt.Sprintf("route %s of %s to %s is a blackhole (the gateway is not attached)", defaultRoute, id, w.igw.ID))
	}
	uses := map[string]string{} // subnet -> the table it is associated with
	for _, x := range all {
		for _, a := range x.Associations {
			if sn := aws.ToString(a.SubnetId); sn != "" && live(a) {
				uses[sn] = aws.ToString(x.RouteTableId)
			}
		}
	}
	for _, s := range w.subnets {
		switch other := uses[s.ID]; other {
		case id:
		case "":
			drift = append(drift, fmt.Sprintf("subnet %s is not associated with route table %s (it uses the VPC's main route table)", s.ID, id))
		default:
			drift = append(drift, fmt.Sprintf("subnet %s is associated with route table %s instead of %s", s.ID, other, id))
		}
	}
	return drift
}

// live reports whether an association is in force (or about to be).
func live(a types.RouteTableAssociation) bool {
	if a.AssociationState == nil {
		return true
	}
	switch a.AssociationState.State {
	case types.RouteTableAssociationStateCodeAssociated, types.RouteTableAssociationStateCodeAssociating:
		return true
	}
	return false
}

// routeTarget names where a route goes.
func routeTarget(rt types.Route) string {
	for _, t := range []*string{rt.GatewayId, rt.NatGatewayId, rt.TransitGatewayId, rt.NetworkInterfaceId, rt.InstanceId,
		rt.VpcPeeringConnectionId, rt.EgressOnlyInternetGatewayId, rt.LocalGatewayId, rt.CarrierGatewayId} {
		if v := aws.ToString(t); v != "" {
			return v
		}
	}
	return "nowhere"
}

// create makes the route table, then routes and associates. The
// ClientToken makes a retry safe on AWS; CreateOnce keeps an endpoint that
// ignores it (the emulator) from making a second table when an answer is
// lost.
func (t *rtbStep) create(ctx context.Context, r *engine.Run) (rtbOut, error) {
	b := t.b
	w, err := t.wants(r)
	if err != nil {
		return rtbOut{}, err
	}
	if w.igw.ID == "" {
		return rtbOut{}, nil
	}
	find := rtbKind.first(b.c.EC2, append(b.rtbFilters(), inVPC(w.vpc.ID)...))
	// A table made again (the journaled one was deleted outside kforge)
	// gets a token of its own: AWS would answer the first one's with the
	// deleted table.
	token := []string{w.vpc.ID}
	var prev rtbOut
	if r.PrevInto(&prev) && prev.ID != "" {
		token = append(token, prev.ID)
	}
	rt, err := awsx.CreateOnce(ctx, find, func(ctx context.Context) (types.RouteTable, error) {
		out, err := b.c.EC2.CreateRouteTable(ctx, &ec2.CreateRouteTableInput{
			VpcId:             aws.String(w.vpc.ID),
			ClientToken:       aws.String(r.Token(token...)),
			TagSpecifications: awsx.EC2TagSpec(types.ResourceTypeRouteTable, awsx.Tags(b.ref(), b.name("rtb"))),
		}, safeEventual)
		if err != nil {
			return types.RouteTable{}, err
		}
		return *out.RouteTable, nil
	})
	if err != nil {
		return rtbOut{}, fmt.Errorf("create route table in VPC %s: %w", w.vpc.ID, err)
	}
	return b.route(ctx, rt, w)
}

// update puts back the default route and the associations of the table
// Find saw.
func (t *rtbStep) update(ctx context.Context, r *engine.Run, found rtbOut) (rtbOut, error) {
	w, err := t.wants(r)
	if err != nil {
		return rtbOut{}, err
	}
	all, err := lookup(ctx, lookupsOf(r, t.b.c), rtbKind, inVPC(w.vpc.ID))
	if err != nil {
		return rtbOut{}, err
	}
	rt := rtbKind.withID(all, found.ID)
	if rt == nil {
		return rtbOut{}, fmt.Errorf("route table %s is gone", found.ID)
	}
	return t.b.route(ctx, *rt, w)
}

// route makes 0.0.0.0/0 of table rt go to the gateway and associates
// every subnet with it, all at once (they do not depend on each other).
func (b *builder) route(ctx context.Context, rt types.RouteTable, w rtbWants) (rtbOut, error) {
	id := aws.ToString(rt.RouteTableId)
	associated := map[string]bool{}
	for _, a := range rt.Associations {
		associated[aws.ToString(a.SubnetId)] = live(a)
	}
	calls := []func(context.Context) error{func(ctx context.Context) error {
		if err := b.ensureDefaultRoute(ctx, rt, w.igw.ID); err != nil {
			return fmt.Errorf("route table %s: %w", id, err)
		}
		return nil
	}}
	for _, sn := range w.subnets {
		if !associated[sn.ID] {
			calls = append(calls, func(ctx context.Context) error { return b.associate(ctx, sn.ID, id) })
		}
	}
	if err := awsx.All(ctx, calls...); err != nil {
		return rtbOut{}, err
	}
	return rtbOut{ID: id}, nil
}

// ensureDefaultRoute makes 0.0.0.0/0 go to the internet gateway.
func (b *builder) ensureDefaultRoute(ctx context.Context, t types.RouteTable, igwID string) error {
	id := aws.ToString(t.RouteTableId)
	for _, rt := range t.Routes {
		if aws.ToString(rt.DestinationCidrBlock) != defaultRoute {
			continue
		}
		if aws.ToString(rt.GatewayId) == igwID && rt.State != types.RouteStateBlackhole {
			return nil
		}
		_, err := b.c.EC2.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{RouteTableId: aws.String(id),
			DestinationCidrBlock: aws.String(defaultRoute), GatewayId: aws.String(igwID)}, eventual)
		if err != nil {
			return fmt.Errorf("route %s to %s: %w", defaultRoute, igwID, err)
		}
		return nil
	}
	_, err := b.c.EC2.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: aws.String(id),
		DestinationCidrBlock: aws.String(defaultRoute), GatewayId: aws.String(igwID)}, eventual)
	if err != nil && !awsx.HasCode(err, "RouteAlreadyExists") {
		return fmt.Errorf("route %s to %s: %w", defaultRoute, igwID, err)
	}
	return nil
}

func (b *builder) deleteRTB(ctx context.Context, r *engine.Run, prev *rtbOut) error {
	return rtbKind.remove(ctx, b.c.EC2, idOf(prev), b.rtbFilters(), func(ctx context.Context, t types.RouteTable) (bool, error) {
		ok, err := b.deleteOneRTB(ctx, r, t)
		if err != nil {
			return false, fmt.Errorf("delete route table %s: %w", aws.ToString(t.RouteTableId), err)
		}
		return ok, nil
	})
}

// deleteOneRTB disassociates and deletes a route table and reports whether
// it removed it (false: it was gone already).
func (b *builder) deleteOneRTB(ctx context.Context, r *engine.Run, t types.RouteTable) (bool, error) {
	id := aws.ToString(t.RouteTableId)
	var disassociate []func(context.Context) error
	for _, a := range t.Associations {
		if aws.ToBool(a.Main) {
			return false, fmt.Errorf("it is the main route table of VPC %s; kforge does not delete it", aws.ToString(t.VpcId))
		}
		disassociate = append(disassociate, func(ctx context.Context) error {
			_, err := b.c.EC2.DisassociateRouteTable(ctx, &ec2.DisassociateRouteTableInput{AssociationId: a.RouteTableAssociationId})
			if err != nil && !awsx.IsNotFound(err) {
				return fmt.Errorf("disassociate %s: %w", aws.ToString(a.SubnetId), err)
			}
			return nil
		})
	}
	// The subnets are independent: all at once.
	if err := awsx.All(ctx, disassociate...); err != nil {
		return false, err
	}
	return b.retryDelete(ctx, r, "route table "+id, func(ctx context.Context) error {
		_, err := b.c.EC2.DeleteRouteTable(ctx, &ec2.DeleteRouteTableInput{RouteTableId: aws.String(id)})
		return err
	})
}
