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

func (b *builder) igwStep() *engine.Step {
	if b.s.VPCID != "" {
		return &engine.Step{
			ID:    StepIGW,
			Needs: []string{StepVPC},
			Title: fmt.Sprintf("internet gateway of VPC %s (found, not modified)", b.s.VPCID),
			Ensure: func(ctx context.Context, r *engine.Run) (any, error) {
				return b.findAttachedIGW(ctx)
			},
			// No Delete: the gateway of an existing VPC is not kforge's.
		}
	}
	return &engine.Step{
		ID:     StepIGW,
		Needs:  []string{StepVPC},
		Title:  "internet gateway attached to the VPC",
		Ensure: b.ensureIGW,
		Delete: b.deleteIGW,
	}
}

// findAttachedIGW returns the internet gateway attached to an existing VPC,
// or an empty output if it has none.
func (b *builder) findAttachedIGW(ctx context.Context) (igwOut, error) {
	out, err := b.c.EC2.DescribeInternetGateways(ctx, &ec2.DescribeInternetGatewaysInput{
		Filters: []types.Filter{{Name: aws.String("attachment.vpc-id"), Values: []string{b.s.VPCID}}},
	})
	if err != nil {
		return igwOut{}, fmt.Errorf("look up the internet gateway of VPC %s: %w", b.s.VPCID, err)
	}
	for _, g := range out.InternetGateways {
		for _, a := range g.Attachments {
			if aws.ToString(a.VpcId) == b.s.VPCID && (a.State == types.AttachmentStatusAttached || a.State == "available") {
				return igwOut{ID: aws.ToString(g.InternetGatewayId)}, nil
			}
		}
	}
	return igwOut{}, nil
}

// ownIGWs returns the cluster's internet gateways: the journaled one first
// if it exists, then those found by tags.
func (b *builder) ownIGWs(ctx context.Context, prevID string) ([]types.InternetGateway, error) {
	return lookupOwn(ctx, prevID, func(g types.InternetGateway) string { return aws.ToString(g.InternetGatewayId) },
		func(ctx context.Context) (*types.InternetGateway, error) {
			res, err := b.c.EC2.DescribeInternetGateways(ctx, &ec2.DescribeInternetGatewaysInput{InternetGatewayIds: []string{prevID}})
			if awsx.IsNotFound(err) || err == nil && len(res.InternetGateways) == 0 {
				return nil, nil
			}
			if err != nil {
				return nil, fmt.Errorf("describe internet gateway %s: %w", prevID, err)
			}
			return &res.InternetGateways[0], nil
		},
		func(ctx context.Context) ([]types.InternetGateway, error) {
			var tagged []types.InternetGateway
			p := ec2.NewDescribeInternetGatewaysPaginator(b.c.EC2, &ec2.DescribeInternetGatewaysInput{
				Filters: awsx.ClusterFilters(b.ref(), awsx.TagName, b.name("igw")),
			})
			for p.HasMorePages() {
				page, err := p.NextPage(ctx)
				if err != nil {
					return nil, fmt.Errorf("look up the cluster's internet gateway by tags: %w", err)
				}
				tagged = append(tagged, page.InternetGateways...)
			}
			return tagged, nil
		})
}

func attachedTo(g types.InternetGateway, vpcID string) bool {
	for _, a := range g.Attachments {
		if aws.ToString(a.VpcId) == vpcID {
			return true
		}
	}
	return false
}

func (b *builder) ensureIGW(ctx context.Context, r *engine.Run) (any, error) {
	vpc, err := engine.Out[VPC](r, StepVPC)
	if err != nil {
		return nil, err
	}
	var prev igwOut
	r.PrevInto(&prev)
	found, err := b.ownIGWs(ctx, prev.ID)
	if err != nil {
		return nil, err
	}
	var g *types.InternetGateway
	// Prefer a gateway attached to the VPC already, then a free one.
	for i := range found {
		if attachedTo(found[i], vpc.ID) {
			g = &found[i]
			break
		}
	}
	for i := range found {
		if g == nil && len(found[i].Attachments) == 0 {
			g = &found[i]
		}
	}
	if g == nil {
		find := func(ctx context.Context) (types.InternetGateway, bool, error) {
			found, err := b.ownIGWs(ctx, "")
			if err != nil || len(found) == 0 {
				return types.InternetGateway{}, false, err
			}
			return found[0], true, nil
		}
		created, err := awsx.CreateOnce(ctx, find, func(ctx context.Context) (types.InternetGateway, error) {
			out, err := b.c.EC2.CreateInternetGateway(ctx, &ec2.CreateInternetGatewayInput{
				TagSpecifications: awsx.EC2TagSpec(types.ResourceTypeInternetGateway, awsx.Tags(b.ref(), b.name("igw"))),
			}, safe)
			if err != nil {
				return types.InternetGateway{}, err
			}
			return *out.InternetGateway, nil
		})
		if err != nil {
			return nil, fmt.Errorf("create internet gateway: %w", err)
		}
		g = &created
	}
	id := aws.ToString(g.InternetGatewayId)
	if !attachedTo(*g, vpc.ID) {
		_, err := b.c.EC2.AttachInternetGateway(ctx, &ec2.AttachInternetGatewayInput{InternetGatewayId: aws.String(id), VpcId: aws.String(vpc.ID)}, eventual)
		if err != nil && !awsx.HasCode(err, "Resource.AlreadyAssociated") {
			return nil, fmt.Errorf("attach internet gateway %s to VPC %s: %w", id, vpc.ID, err)
		}
	}
	return igwOut{ID: id, Own: true}, nil
}

func (b *builder) deleteIGW(ctx context.Context, r *engine.Run) error {
	var prev igwOut
	r.PrevInto(&prev)
	found, err := b.ownIGWs(ctx, prev.ID)
	if err != nil {
		return err
	}
	var errs []error
	removed := false
	for _, g := range found {
		ok, err := b.deleteOneIGW(ctx, r, g)
		if err != nil {
			errs = append(errs, err)
		}
		removed = removed || ok
	}
	return deleted(removed, errs)
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

// rtbStep makes the route table and associates the subnets with it:
// the subnets are made first, so the route table's deletion (which
// disassociates them) comes before theirs.
func (b *builder) rtbStep(subnets []string) *engine.Step {
	title := "route table with 0.0.0.0/0 to the internet gateway, for every subnet"
	if b.s.VPCID != "" {
		title = fmt.Sprintf("route table in VPC %s with 0.0.0.0/0 to its internet gateway, for kforge's subnets (none if it has no gateway)", b.s.VPCID)
	}
	return &engine.Step{
		ID:     StepRouteTable,
		Needs:  append([]string{StepVPC, StepIGW}, subnets...),
		Title:  title,
		Ensure: func(ctx context.Context, r *engine.Run) (any, error) { return b.ensureRTB(ctx, r, subnets) },
		Delete: b.deleteRTB,
	}
}

// ownRTBs returns the cluster's route tables: the journaled one first if
// it exists, then those found by tags (in vpcID, if not empty).
func (b *builder) ownRTBs(ctx context.Context, prevID, vpcID string) ([]types.RouteTable, error) {
	return lookupOwn(ctx, prevID, func(t types.RouteTable) string { return aws.ToString(t.RouteTableId) },
		func(ctx context.Context) (*types.RouteTable, error) {
			res, err := b.c.EC2.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{RouteTableIds: []string{prevID}})
			if awsx.IsNotFound(err) || err == nil && (len(res.RouteTables) == 0 || vpcID != "" && aws.ToString(res.RouteTables[0].VpcId) != vpcID) {
				return nil, nil
			}
			if err != nil {
				return nil, fmt.Errorf("describe route table %s: %w", prevID, err)
			}
			return &res.RouteTables[0], nil
		},
		func(ctx context.Context) ([]types.RouteTable, error) {
			filters := awsx.ClusterFilters(b.ref(), awsx.TagName, b.name("rtb"))
			if vpcID != "" {
				filters = append(filters, types.Filter{Name: aws.String("vpc-id"), Values: []string{vpcID}})
			}
			var tagged []types.RouteTable
			p := ec2.NewDescribeRouteTablesPaginator(b.c.EC2, &ec2.DescribeRouteTablesInput{Filters: filters})
			for p.HasMorePages() {
				page, err := p.NextPage(ctx)
				if err != nil {
					return nil, fmt.Errorf("look up the cluster's route table by tags: %w", err)
				}
				tagged = append(tagged, page.RouteTables...)
			}
			return tagged, nil
		})
}

func (b *builder) ensureRTB(ctx context.Context, r *engine.Run, subnetSteps []string) (any, error) {
	vpc, err := engine.Out[VPC](r, StepVPC)
	if err != nil {
		return nil, err
	}
	igw, err := engine.Out[igwOut](r, StepIGW)
	if err != nil {
		return nil, err
	}
	if igw.ID == "" {
		// An existing VPC without an internet gateway: the subnets use
		// the VPC's main route table.
		return rtbOut{}, nil
	}
	var prev rtbOut
	r.PrevInto(&prev)
	found, err := b.ownRTBs(ctx, prev.ID, vpc.ID)
	if err != nil {
		return nil, err
	}
	var t types.RouteTable
	if len(found) > 0 {
		t = found[0]
	} else {
		// The ClientToken makes a retry safe on AWS; CreateOnce keeps an
		// endpoint that ignores it (the emulator) from making a second
		// table when an answer is lost.
		find := func(ctx context.Context) (types.RouteTable, bool, error) {
			found, err := b.ownRTBs(ctx, "", vpc.ID)
			if err != nil || len(found) == 0 {
				return types.RouteTable{}, false, err
			}
			return found[0], true, nil
		}
		t, err = awsx.CreateOnce(ctx, find, func(ctx context.Context) (types.RouteTable, error) {
			out, err := b.c.EC2.CreateRouteTable(ctx, &ec2.CreateRouteTableInput{
				VpcId:             aws.String(vpc.ID),
				ClientToken:       aws.String(r.Token(vpc.ID)),
				TagSpecifications: awsx.EC2TagSpec(types.ResourceTypeRouteTable, awsx.Tags(b.ref(), b.name("rtb"))),
			}, safeEventual)
			if err != nil {
				return types.RouteTable{}, err
			}
			return *out.RouteTable, nil
		})
		if err != nil {
			return nil, fmt.Errorf("create route table in VPC %s: %w", vpc.ID, err)
		}
	}
	id := aws.ToString(t.RouteTableId)
	// The default route and the associations do not depend on each other:
	// all at once.
	associated := map[string]bool{}
	for _, a := range t.Associations {
		associated[aws.ToString(a.SubnetId)] = true
	}
	calls := []func(context.Context) error{func(ctx context.Context) error {
		if err := b.ensureDefaultRoute(ctx, t, igw.ID); err != nil {
			return fmt.Errorf("route table %s: %w", id, err)
		}
		return nil
	}}
	for _, step := range subnetSteps {
		sn, err := engine.Out[Subnet](r, step)
		if err != nil {
			return nil, err
		}
		if !associated[sn.ID] {
			calls = append(calls, func(ctx context.Context) error { return b.associate(ctx, sn.ID, id) })
		}
	}
	if err := awsx.All(ctx, calls...); err != nil {
		return nil, err
	}
	return rtbOut{ID: id}, nil
}

// ensureDefaultRoute makes 0.0.0.0/0 go to the internet gateway.
func (b *builder) ensureDefaultRoute(ctx context.Context, t types.RouteTable, igwID string) error {
	id := aws.ToString(t.RouteTableId)
	for _, rt := range t.Routes {
		if aws.ToString(rt.DestinationCidrBlock) != "0.0.0.0/0" {
			continue
		}
		if aws.ToString(rt.GatewayId) == igwID && rt.State != types.RouteStateBlackhole {
			return nil
		}
		_, err := b.c.EC2.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{RouteTableId: aws.String(id),
			DestinationCidrBlock: aws.String("0.0.0.0/0"), GatewayId: aws.String(igwID)}, eventual)
		if err != nil {
			return fmt.Errorf("route 0.0.0.0/0 to %s: %w", igwID, err)
		}
		return nil
	}
	_, err := b.c.EC2.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: aws.String(id),
		DestinationCidrBlock: aws.String("0.0.0.0/0"), GatewayId: aws.String(igwID)}, eventual)
	if err != nil && !awsx.HasCode(err, "RouteAlreadyExists") {
		return fmt.Errorf("route 0.0.0.0/0 to %s: %w", igwID, err)
	}
	return nil
}

func (b *builder) deleteRTB(ctx context.Context, r *engine.Run) error {
	var prev rtbOut
	r.PrevInto(&prev)
	found, err := b.ownRTBs(ctx, prev.ID, "")
	if err != nil {
		return err
	}
	var errs []error
	removed := false
	for _, t := range found {
		id := aws.ToString(t.RouteTableId)
		ok, err := b.deleteOneRTB(ctx, r, t)
		if err != nil {
			errs = append(errs, fmt.Errorf("delete route table %s: %w", id, err))
		}
		removed = removed || ok
	}
	return deleted(removed, errs)
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
