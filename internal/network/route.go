package network

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/engine"
)

// rtbOut is the output of the rtb step. ID is empty when there is no
// internet gateway to route through.
type rtbOut struct {
	ID string `json:"id,omitempty"`
}

func (t rtbOut) key() string { return t.ID }

// routeOut is the output of the rtb/route step: the table's default
// route to the gateway (empty when there is no table).
type routeOut struct {
	Table   string `json:"table,omitempty"`
	Gateway string `json:"gateway,omitempty"`
}

// associationOut is the output of a subnet's association step (empty when
// there is no table).
type associationOut struct {
	Table  string `json:"table,omitempty"`
	Subnet string `json:"subnet,omitempty"`
	// ID is the association's, which its delete removes.
	ID string `json:"id,omitempty"`
}

// defaultRoute is the destination kforge routes to the internet gateway.
const defaultRoute = "0.0.0.0/0"

// routing holds the handles the route table's steps read.
type routing struct {
	b   *builder
	vpc engine.Ref[VPC]
	igw engine.Ref[igwOut]
	rtb engine.Ref[rtbOut]
}

// addRTB adds the route table: in an own VPC it needs only the VPC; in an
// existing one also the gateway look-up (no gateway, no table: the subnets
// use the VPC's main route table). Its delete disassociates what is still
// associated with it.
func (b *builder) addRTB(g *engine.Graph, vpc engine.Ref[VPC], igw engine.Ref[igwOut]) *routing {
	t := &routing{b: b, vpc: vpc, igw: igw}
	title := "route table"
	needs := engine.Needs(vpc)
	if b.s.VPCID != "" {
		title = fmt.Sprintf("route table in VPC %s for kforge's subnets (none if it has no internet gateway)", b.s.VPCID)
		needs = append(needs, igw)
	}
	t.rtb = engine.Add(g, engine.Resource[rtbOut]{
		ID:     StepRouteTable,
		Needs:  needs,
		Title:  title,
		Find:   t.findTable,
		Create: t.createTable,
		Delete: b.deleteRTB,
	})
	return t
}

// routed reports whether the network has a gateway to route through:
// always in an own VPC (whose table step does not read the gateway).
func (t *routing) routed(r *engine.Run) (bool, error) {
	if t.b.s.VPCID == "" {
		return true, nil
	}
	gw, err := t.igw.Get(r)
	return gw.ID != "", err
}

// tables returns the VPC's route tables from the run's look-up.
func (t *routing) tables(ctx context.Context, r *engine.Run) ([]types.RouteTable, error) {
	v, err := t.vpc.Get(r)
	if err != nil {
		return nil, err
	}
	return lookup(ctx, lookupsOf(r, t.b.c), rtbKind, inVPC(v.ID))
}

// findTable observes the route table in the run's look-up of the VPC's
// route tables: the journaled one, else the one with the cluster's tags.
func (t *routing) findTable(ctx context.Context, r *engine.Run, prev *rtbOut) (engine.Observation[rtbOut], error) {
	b := t.b
	if ok, err := t.routed(r); err != nil || !ok {
		return engine.InSync(rtbOut{}), err
	}
	all, err := t.tables(ctx, r)
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
	return engine.InSync(rtbOut{ID: id}), nil
}

// createTable makes the route table. The ClientToken makes a retry safe
// on AWS; CreateOnce keeps an endpoint that ignores it (the emulator) from
// making a second table when an answer is lost.
func (t *routing) createTable(ctx context.Context, r *engine.Run) (rtbOut, error) {
	b := t.b
	if ok, err := t.routed(r); err != nil || !ok {
		return rtbOut{}, err
	}
	v, err := t.vpc.Get(r)
	if err != nil {
		return rtbOut{}, err
	}
	find := rtbKind.first(b.c.EC2, append(b.rtbFilters(), inVPC(v.ID)...))
	// A table made again (the journaled one was deleted outside kforge)
	// gets a token of its own: AWS would answer the first one's with the
	// deleted table.
	token := []string{v.ID}
	var prev rtbOut
	if r.PrevInto(&prev) && prev.ID != "" {
		token = append(token, prev.ID)
	}
	rt, err := awsx.CreateOnce(ctx, find, func(ctx context.Context) (types.RouteTable, error) {
		out, err := b.c.EC2.CreateRouteTable(ctx, &ec2.CreateRouteTableInput{
			VpcId:             aws.String(v.ID),
			ClientToken:       aws.String(r.Token(token...)),
			TagSpecifications: awsx.EC2TagSpec(types.ResourceTypeRouteTable, awsx.Tags(b.ref(), b.name("rtb"))),
		}, safeEventual)
		if err != nil {
			return types.RouteTable{}, err
		}
		return *out.RouteTable, nil
	})
	if err != nil {
		return rtbOut{}, fmt.Errorf("create route table in VPC %s: %w", v.ID, err)
	}
	return rtbOut{ID: aws.ToString(rt.RouteTableId)}, nil
}

// table returns the route table of the rtb step as the run's look-up saw
// it: one made in this run is not in that look-up (made before it), and is
// returned without routes or associations.
func (t *routing) table(ctx context.Context, r *engine.Run, id string) (types.RouteTable, []types.RouteTable, error) {
	all, err := t.tables(ctx, r)
	if err != nil {
		return types.RouteTable{}, nil, err
	}
	if rt := rtbKind.withID(all, id); rt != nil {
		return *rt, all, nil
	}
	return types.RouteTable{RouteTableId: aws.String(id)}, all, nil
}

// addRoute adds the table's default route to the gateway. In an own VPC it
// waits for the gateway's attachment (AWS refuses a route to a gateway
// that is not attached to the table's VPC). Deleting the table deletes it.
func (t *routing) addRoute(g *engine.Graph, attach engine.Dep) engine.Ref[routeOut] {
	return addRouting(g, StepRoute, "route 0.0.0.0/0 to the internet gateway", engine.Needs(t.vpc, t.igw, t.rtb, attach),
		func(r *engine.Run) (routeOut, bool, error) {
			rt, err := t.rtb.Get(r)
			if err != nil || rt.ID == "" {
				return routeOut{}, true, err
			}
			gw, err := t.igw.Get(r)
			return routeOut{Table: rt.ID, Gateway: gw.ID}, false, err
		},
		t.findRoute,
		func(ctx context.Context, r *engine.Run, w routeOut) (routeOut, error) {
			rt, _, err := t.table(ctx, r, w.Table)
			if err != nil {
				return w, err
			}
			if err := t.b.ensureDefaultRoute(ctx, rt, w.Gateway); err != nil {
				return w, fmt.Errorf("route table %s: %w", w.Table, err)
			}
			return w, nil
		}, nil)
}

// addRouting adds a step that keeps one thing of the route table (its
// route, a subnet's association) as wanted: want says what (none when
// there is no table, in an existing VPC without a gateway), find observes
// it, keep makes or repairs it, and del (nil: the thing goes with the
// table) removes it.
func addRouting[T any](g *engine.Graph, id, title string, needs []engine.Dep,
	want func(r *engine.Run) (w T, none bool, err error),
	find func(ctx context.Context, r *engine.Run, w T, prev *T) (engine.Observation[T], error),
	keep func(ctx context.Context, r *engine.Run, w T) (T, error),
	del func(ctx context.Context, r *engine.Run, prev *T) error) engine.Ref[T] {
	ensure := func(ctx context.Context, r *engine.Run) (T, error) {
		w, none, err := want(r)
		if err != nil || none {
			return w, err
		}
		return keep(ctx, r, w)
	}
	return engine.Add(g, engine.Resource[T]{
		ID: id, Title: title, Needs: needs, Delete: del,
		Find: func(ctx context.Context, r *engine.Run, prev *T) (engine.Observation[T], error) {
			w, none, err := want(r)
			if err != nil || none {
				return engine.InSync(w), err
			}
			return find(ctx, r, w, prev)
		},
		Create: ensure,
		Update: func(ctx context.Context, r *engine.Run, _ T) (T, error) { return ensure(ctx, r) },
	})
}

// findRoute observes the table's default route: it must go to the
// gateway and not be a blackhole.
func (t *routing) findRoute(ctx context.Context, r *engine.Run, w routeOut, prev *routeOut) (engine.Observation[routeOut], error) {
	all, err := t.tables(ctx, r)
	if err != nil {
		return engine.Observation[routeOut]{}, err
	}
	rt := rtbKind.withID(all, w.Table)
	if rt == nil {
		return engine.Missing[routeOut](), nil // a table made in this run
	}
	var route *types.Route
	for i := range rt.Routes {
		if aws.ToString(rt.Routes[i].DestinationCidrBlock) == defaultRoute {
			route = &rt.Routes[i]
		}
	}
	switch {
	case route == nil && prev != nil:
		return engine.Gone[routeOut]("route %s of %s to %s was deleted outside kforge", defaultRoute, w.Table, w.Gateway), nil
	case route == nil:
		return engine.Missing[routeOut](), nil
	case aws.ToString(route.GatewayId) != w.Gateway:
		return engine.Drifted(w, "route %s of %s points to %s instead of the internet gateway %s", defaultRoute, w.Table, routeTarget(*route), w.Gateway), nil
	case route.State == types.RouteStateBlackhole:
		return engine.Drifted(w, "route %s of %s to %s is a blackhole (the gateway is not attached)", defaultRoute, w.Table, w.Gateway), nil
	}
	return engine.InSync(w), nil
}

// addAssociation adds the association of subnet i with the route table.
// Its delete removes it before the table and the subnet go (each of whose
// deletes would otherwise remove it, at the same time).
func (t *routing) addAssociation(g *engine.Graph, i int, subnet engine.Ref[Subnet]) engine.Ref[associationOut] {
	return addRouting(g, AssociationStepID(i), fmt.Sprintf("associate subnet %d of %d with the route table", i+1, t.b.s.Zones),
		engine.Needs(t.vpc, t.rtb, subnet),
		func(r *engine.Run) (associationOut, bool, error) {
			rt, err := t.rtb.Get(r)
			if err != nil || rt.ID == "" {
				return associationOut{}, true, err
			}
			sn, err := subnet.Get(r)
			return associationOut{Table: rt.ID, Subnet: sn.ID}, false, err
		},
		t.findAssociation,
		func(ctx context.Context, _ *engine.Run, w associationOut) (associationOut, error) {
			id, err := t.b.associate(ctx, w.Subnet, w.Table)
			w.ID = id
			return w, err
		},
		func(ctx context.Context, r *engine.Run, prev *associationOut) error {
			return t.deleteAssociation(ctx, r, subnet, prev)
		})
}

// deleteAssociation removes the journaled association, else (the state
// was lost, or made by a kforge that journaled none) the associations of
// the journaled subnet, found live.
func (t *routing) deleteAssociation(ctx context.Context, r *engine.Run, subnet engine.Ref[Subnet], prev *associationOut) error {
	b := t.b
	var ids []string
	if prev != nil && prev.ID != "" {
		ids = append(ids, prev.ID)
	} else if sn, err := subnet.Get(r); err == nil && sn.ID != "" {
		assocs, err := b.associationsOf(ctx, sn.ID)
		if err != nil {
			return err
		}
		for _, a := range assocs {
			if !a.main {
				ids = append(ids, a.id)
			}
		}
	}
	removed := false
	for _, id := range ids {
		_, err := b.c.EC2.DisassociateRouteTable(ctx, &ec2.DisassociateRouteTableInput{AssociationId: aws.String(id)})
		switch {
		case awsx.IsNotFound(err):
		case err != nil:
			return fmt.Errorf("disassociate route table association %s: %w", id, err)
		default:
			removed = true
		}
	}
	return deleted(removed, nil)
}

// findAssociation observes which route table the subnet is associated
// with, among the VPC's.
func (t *routing) findAssociation(ctx context.Context, r *engine.Run, w associationOut, prev *associationOut) (engine.Observation[associationOut], error) {
	all, err := t.tables(ctx, r)
	if err != nil {
		return engine.Observation[associationOut]{}, err
	}
	uses := ""
	for _, x := range all {
		for _, a := range x.Associations {
			if aws.ToString(a.SubnetId) == w.Subnet && live(a) {
				uses, w.ID = aws.ToString(x.RouteTableId), aws.ToString(a.RouteTableAssociationId)
			}
		}
	}
	switch {
	case uses == w.Table:
		return engine.InSync(w), nil
	case uses != "":
		return engine.Drifted(w, "subnet %s is associated with route table %s instead of %s", w.Subnet, uses, w.Table), nil
	case prev != nil && prev.Table == w.Table && prev.Subnet == w.Subnet:
		return engine.Gone[associationOut]("subnet %s is not associated with route table %s (it uses the VPC's main route table)", w.Subnet, w.Table), nil
	}
	return engine.Missing[associationOut](), nil
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

// rtbFilters select the cluster's route table by its tags.
func (b *builder) rtbFilters() []types.Filter {
	return awsx.ClusterFilters(b.ref(), awsx.TagName, b.name("rtb"))
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
