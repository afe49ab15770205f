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

// attachOut is the output of the igw/attach step: the gateway attached to
// the VPC.
type attachOut struct {
	Gateway string `json:"gateway"`
	VPC     string `json:"vpc"`
}

func (g igwOut) key() string { return g.ID }

// addIGW adds the gateway step. kforge's own gateway needs nothing: it is
// made while the VPC is, and attached by the igw/attach step (addAttach).
// The gateway of an existing VPC is the one attached to it, looked up.
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
		ID:     StepIGW,
		Title:  "internet gateway",
		Find:   b.findOwnIGW,
		Create: b.createIGW,
		Delete: b.deleteIGW,
	})
}

// addAttach adds the step that attaches kforge's gateway to its VPC.
// Its Delete detaches the gateway, which the VPC's delete waits for; the
// gateway's own delete comes after.
func (b *builder) addAttach(g *engine.Graph, vpc engine.Ref[VPC], igw engine.Ref[igwOut]) engine.Ref[attachOut] {
	attach := func(ctx context.Context, r *engine.Run) (attachOut, error) {
		want, err := b.wantAttach(r, vpc, igw)
		if err != nil {
			return attachOut{}, err
		}
		return want, b.attachIGW(ctx, want.Gateway, want.VPC)
	}
	return engine.Add(g, engine.Resource[attachOut]{
		ID:    StepIGWAttach,
		Needs: engine.Needs(vpc, igw),
		Title: "attach the internet gateway to the VPC",
		Find: func(ctx context.Context, r *engine.Run, prev *attachOut) (engine.Observation[attachOut], error) {
			return b.findAttach(ctx, r, vpc, igw, prev)
		},
		Create: attach,
		Update: func(ctx context.Context, r *engine.Run, _ attachOut) (attachOut, error) { return attach(ctx, r) },
		Delete: b.detachIGW,
	})
}

// wantAttach is the attachment the igw/attach step makes.
func (b *builder) wantAttach(r *engine.Run, vpc engine.Ref[VPC], igw engine.Ref[igwOut]) (attachOut, error) {
	v, err := vpc.Get(r)
	if err != nil {
		return attachOut{}, err
	}
	gw, err := igw.Get(r)
	if err != nil {
		return attachOut{}, err
	}
	return attachOut{Gateway: gw.ID, VPC: v.ID}, nil
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

// ownIGW returns kforge's gateway from the run's look-up by tags: the
// journaled one (by ID when its tags were removed), else the first by ID
// of those attached to a VPC, else of the others. It returns nil when there
// is none, and the cluster whose tags the journaled one now carries, if
// another's.
func (b *builder) ownIGW(ctx context.Context, r *engine.Run, prevID string) (g *types.InternetGateway, owner string, err error) {
	l := lookupsOf(r, b.c)
	tagged, err := lookup(ctx, l, igwKind, b.igwFilters())
	if err != nil {
		return nil, "", err
	}
	if prevID != "" {
		if g = igwKind.withID(tagged, prevID); g != nil {
			return g, "", nil
		}
		if g, err = lookupByID(ctx, l, igwKind, prevID); err != nil || g == nil {
			return nil, "", err
		}
		return g, foreign(b.ref(), g.Tags), nil
	}
	inUse := func(g types.InternetGateway) bool { return len(g.Attachments) > 0 }
	if x, ok := igwKind.pick(tagged, "", inUse); ok {
		return &x, "", nil
	}
	if x, ok := igwKind.pick(tagged, "", func(types.InternetGateway) bool { return true }); ok {
		return &x, "", nil
	}
	return nil, "", nil
}

// findOwnIGW observes the cluster's gateway from the run's look-up by
// tags (by ID only when the journaled one is not among them). Whether it
// is attached is the igw/attach step's.
func (b *builder) findOwnIGW(ctx context.Context, r *engine.Run, prev *igwOut) (engine.Observation[igwOut], error) {
	prevID := idOf(prev)
	g, owner, err := b.ownIGW(ctx, r, prevID)
	switch {
	case err != nil:
		return engine.Observation[igwOut]{}, err
	case owner != "":
		return taken[igwOut](b, "internet gateway", prevID, owner), nil
	case g == nil && prevID != "":
		// The gateway does not wait for the VPC; but when the VPC went
		// too, the whole network was deleted outside kforge, which the vpc
		// step refuses to make again: nor is the gateway. (The look-up is
		// the vpc step's.)
		vpcs, err := lookup(ctx, lookupsOf(r, b.c), vpcKind, b.vpcFilters())
		if err != nil {
			return engine.Observation[igwOut]{}, err
		}
		if len(vpcs) == 0 {
			return engine.Unsafe[igwOut]("internet gateway %s was deleted outside kforge, and the cluster's VPC with it: kforge does not make the network again under a cluster: run `%s`, then create the cluster again",
				prevID, b.resume()), nil
		}
		return engine.Gone[igwOut]("internet gateway %s was deleted outside kforge", prevID), nil
	case g == nil:
		return engine.Missing[igwOut](), nil
	}
	return engine.InSync(igwOut{ID: aws.ToString(g.InternetGatewayId), Own: true}), nil
}

// findAttach observes the attachment of kforge's gateway to the VPC, from
// the gateway's look-up. A gateway made in this run is not in that look-up
// (made before it): it is attached by Create.
func (b *builder) findAttach(ctx context.Context, r *engine.Run, vpc engine.Ref[VPC], igw engine.Ref[igwOut], prev *attachOut) (engine.Observation[attachOut], error) {
	want, err := b.wantAttach(r, vpc, igw)
	if err != nil {
		return engine.Observation[attachOut]{}, err
	}
	tagged, err := lookup(ctx, lookupsOf(r, b.c), igwKind, b.igwFilters())
	if err != nil {
		return engine.Observation[attachOut]{}, err
	}
	g := igwKind.withID(tagged, want.Gateway)
	if g == nil && prev != nil && prev.Gateway == want.Gateway {
		// Its tags were removed: by ID.
		if g, err = lookupByID(ctx, lookupsOf(r, b.c), igwKind, want.Gateway); err != nil {
			return engine.Observation[attachOut]{}, err
		}
	}
	if g == nil {
		return engine.Missing[attachOut](), nil
	}
	if attached(*g, want.VPC) {
		return engine.InSync(want), nil
	}
	for _, a := range g.Attachments {
		if other := aws.ToString(a.VpcId); other != want.VPC && a.State != types.AttachmentStatusDetached {
			return engine.Unsafe[attachOut]("internet gateway %s of the cluster is attached to VPC %s, not to the cluster's VPC %s: kforge does not take it from there; detach it from %s (aws ec2 detach-internet-gateway --internet-gateway-id %s --vpc-id %s) and run the same command again",
				want.Gateway, other, want.VPC, other, want.Gateway, other), nil
		}
	}
	if prev != nil && *prev == want {
		return engine.Gone[attachOut]("internet gateway %s was detached from VPC %s outside kforge", want.Gateway, want.VPC), nil
	}
	return engine.Gone[attachOut]("internet gateway %s, found by its tags, is not attached to VPC %s (a create stopped before it attached it)", want.Gateway, want.VPC), nil
}

// createIGW makes the cluster's gateway; a lost answer makes it look for
// the gateway by its tags, live, before it tries again.
func (b *builder) createIGW(ctx context.Context, r *engine.Run) (igwOut, error) {
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
	return igwOut{ID: aws.ToString(g.InternetGatewayId), Own: true}, nil
}

// attachIGW attaches gateway id to the VPC.
func (b *builder) attachIGW(ctx context.Context, id, vpcID string) error {
	_, err := b.c.EC2.AttachInternetGateway(ctx, &ec2.AttachInternetGatewayInput{InternetGatewayId: aws.String(id), VpcId: aws.String(vpcID)}, eventual)
	if err != nil && !awsx.HasCode(err, "Resource.AlreadyAssociated") {
		return fmt.Errorf("attach internet gateway %s to VPC %s: %w", id, vpcID, err)
	}
	return nil
}

// detachIGW detaches the cluster's gateways (found live, by the journaled
// ID and by tags) from every VPC they are attached to.
func (b *builder) detachIGW(ctx context.Context, r *engine.Run, prev *attachOut) error {
	prevID := ""
	if prev != nil {
		prevID = prev.Gateway
	}
	found, err := igwKind.own(ctx, b.c.EC2, prevID, b.igwFilters())
	if err != nil {
		return err
	}
	return deleteAll(ctx, found, func(ctx context.Context, g types.InternetGateway) (bool, error) {
		return b.detach(ctx, r, g)
	})
}

func (b *builder) deleteIGW(ctx context.Context, r *engine.Run, prev *igwOut) error {
	return igwKind.remove(ctx, b.c.EC2, idOf(prev), b.igwFilters(), func(ctx context.Context, g types.InternetGateway) (bool, error) {
		return b.deleteOneIGW(ctx, r, g)
	})
}

// detach detaches a gateway from every VPC it is attached to and reports
// whether it detached any.
func (b *builder) detach(ctx context.Context, r *engine.Run, g types.InternetGateway) (bool, error) {
	id := aws.ToString(g.InternetGatewayId)
	detached := false
	for _, a := range g.Attachments {
		if a.State == types.AttachmentStatusDetached {
			continue
		}
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
		detached = true
	}
	return detached, nil
}

// deleteOneIGW detaches (if the igw/attach step has not) and deletes a
// gateway and reports whether it removed it (false: it was gone already).
func (b *builder) deleteOneIGW(ctx context.Context, r *engine.Run, g types.InternetGateway) (bool, error) {
	id := aws.ToString(g.InternetGatewayId)
	if _, err := b.detach(ctx, r, g); err != nil {
		return false, err
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
