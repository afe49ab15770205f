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

func (v VPC) key() string { return v.ID }

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

// retryNotFound makes a waiter also wait while the resource it waits for
// is not visible yet: EC2 is eventually consistent.
func retryNotFound[In, Out any](next func(context.Context, In, Out, error) (bool, error)) func(context.Context, In, Out, error) (bool, error) {
	return func(ctx context.Context, in In, out Out, err error) (bool, error) {
		if awsx.IsNotFound(err) {
			return true, nil
		}
		return next(ctx, in, out, err)
	}
}

// eventual makes a call retry "not found" for about a minute: EC2 is
// eventually consistent, and a resource created a moment ago may not be
// visible yet to the next call that names it.
func eventual(o *ec2.Options) { o.Retryer = awsx.Eventual(o.Retryer, awsx.IsNotFound) }

func (b *builder) addVPC(g *engine.Graph) engine.Ref[VPC] {
	if b.s.VPCID != "" {
		return engine.Add(g, engine.Resource[VPC]{
			ID:    StepVPC,
			Title: fmt.Sprintf("existing VPC %s (checked, not modified)", b.s.VPCID),
			Find:  b.findExistingVPC,
			Create: func(ctx context.Context, r *engine.Run) (VPC, error) {
				if err := b.s.Validate(); err != nil {
					return VPC{}, err
				}
				v, err := checkVPC(ctx, b.c.EC2, b.s.VPCID)
				if err != nil {
					return VPC{}, err
				}
				return vpcOutOf(v, false), nil
			},
			// No Update: kforge never modifies a VPC it did not create; no
			// Delete: nor deletes it.
		})
	}
	return engine.Add(g, engine.Resource[VPC]{
		ID:     StepVPC,
		Title:  fmt.Sprintf("VPC %s with DNS hostnames and DNS support", b.s.CIDR),
		Find:   b.findOwnVPC,
		Create: b.createVPC,
		Update: func(ctx context.Context, r *engine.Run, found VPC) (VPC, error) {
			v, err := lookupByID(ctx, lookupsOf(r, b.c), vpcKind, found.ID)
			if err != nil {
				return VPC{}, err
			}
			if v == nil {
				return VPC{}, fmt.Errorf("VPC %s is gone", found.ID)
			}
			return b.readyVPC(ctx, r, *v)
		},
		Delete: b.deleteVPC,
	})
}

// vpcFilters select the cluster's own VPC by its tags.
func (b *builder) vpcFilters() []types.Filter {
	return awsx.ClusterFilters(b.ref(), awsx.TagName, b.name("vpc"))
}

// findOwnVPC observes the cluster's own VPC from the run's look-up by tags
// (by ID only when the journaled one is not among them). Its DNS
// attributes are read only when the VPC is not journaled yet (a create
// that stopped after CreateVpc): a journaled VPC had them set.
func (b *builder) findOwnVPC(ctx context.Context, r *engine.Run, prev *VPC) (engine.Observation[VPC], error) {
	if err := b.s.Validate(); err != nil {
		return engine.Observation[VPC]{}, err
	}
	l := lookupsOf(r, b.c)
	tagged, err := lookup(ctx, l, vpcKind, b.vpcFilters())
	if err != nil {
		return engine.Observation[VPC]{}, err
	}
	if prev != nil && prev.ID != "" {
		v := vpcKind.withID(tagged, prev.ID)
		if v == nil {
			if v, err = lookupByID(ctx, l, vpcKind, prev.ID); err != nil {
				return engine.Observation[VPC]{}, err
			}
			if v == nil {
				return engine.Unsafe[VPC]("VPC %s, which kforge made for the cluster, was deleted outside kforge, and with it the subnets and everything that ran in them: kforge does not make the network again under a cluster: run `%s`, then create the cluster again",
					prev.ID, b.resume()), nil
			}
			if o := foreign(b.ref(), v.Tags); o != "" {
				return taken[VPC](b, "VPC", prev.ID, o), nil
			}
		}
		return engine.InSync(vpcOutOf(v, true)), nil
	}
	v, ok := vpcKind.pick(tagged, "", func(types.Vpc) bool { return true })
	if !ok {
		return engine.Missing[VPC](), nil
	}
	id, out := aws.ToString(v.VpcId), vpcOutOf(&v, true)
	if v.State != types.VpcStateAvailable {
		return engine.Drifted(out, "VPC %s, found by its tags, is %s (a create stopped before it was available)", id, v.State), nil
	}
	on, err := dnsAttributes(ctx, b.c.EC2, id)
	if err != nil {
		return engine.Observation[VPC]{}, err
	}
	for i, a := range dnsAttrs {
		if !on[i] {
			return engine.Drifted(out, "VPC %s, found by its tags, has %s off (a create stopped before it turned it on)", id, a.what), nil
		}
	}
	return engine.InSync(out), nil
}

// findExistingVPC observes an existing VPC: it must still exist and have
// DNS support and DNS hostnames on. kforge repairs neither.
func (b *builder) findExistingVPC(ctx context.Context, r *engine.Run, prev *VPC) (engine.Observation[VPC], error) {
	if err := b.s.Validate(); err != nil {
		return engine.Observation[VPC]{}, err
	}
	if prev == nil || prev.ID == "" {
		return engine.Missing[VPC](), nil // checked by Create
	}
	id := b.s.VPCID
	v, err := lookupByID(ctx, lookupsOf(r, b.c), vpcKind, id)
	if err != nil {
		return engine.Observation[VPC]{}, err
	}
	if v == nil {
		return engine.Unsafe[VPC]("VPC %s (--vpc-id) no longer exists, and with it kforge's subnets and everything that ran in them; kforge never creates a VPC it was given: run `%s`, then create the cluster again with a VPC that exists",
			id, b.resume()), nil
	}
	on, err := dnsAttributes(ctx, b.c.EC2, id)
	if err != nil {
		return engine.Observation[VPC]{}, err
	}
	for i, a := range dnsAttrs {
		if !on[i] {
			return engine.Unsafe[VPC]("VPC %s (--vpc-id) no longer has %s enabled, which Kubernetes nodes need; kforge never modifies a VPC it did not create: enable it again with: aws ec2 modify-vpc-attribute --vpc-id %s %s, then run the same command again",
				id, a.what, id, a.flag), nil
		}
	}
	return engine.InSync(vpcOutOf(v, false)), nil
}

// createVPC makes the cluster's VPC; a lost answer makes it look for the
// VPC by its tags, live, before it tries again.
func (b *builder) createVPC(ctx context.Context, r *engine.Run) (VPC, error) {
	if err := b.s.Validate(); err != nil {
		return VPC{}, err
	}
	v, err := awsx.CreateOnce(ctx, vpcKind.first(b.c.EC2, b.vpcFilters()), func(ctx context.Context) (types.Vpc, error) {
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
		return VPC{}, fmt.Errorf("create VPC %s: %w", b.s.CIDR, err)
	}
	if v, err = b.availableVPC(ctx, r, v); err != nil {
		return VPC{}, err
	}
	// A new VPC has DNS support on (AWS's default for every VPC), which
	// DNS hostnames need: both are set at once, without reading them. If
	// that fails, the next run finds the VPC by its tags, reads them and
	// repairs what is off (readyVPC).
	id := aws.ToString(v.VpcId)
	sets := make([]func(context.Context) error, len(dnsAttrs))
	for i, a := range dnsAttrs {
		sets[i] = func(ctx context.Context) error { return b.enableDNS(ctx, id, a.attr) }
	}
	if err := awsx.All(ctx, sets...); err != nil {
		return VPC{}, err
	}
	return vpcOutOf(&v, true), nil
}

// availableVPC waits for the VPC to be available.
func (b *builder) availableVPC(ctx context.Context, r *engine.Run, v types.Vpc) (types.Vpc, error) {
	if v.State == types.VpcStateAvailable {
		return v, nil
	}
	id := aws.ToString(v.VpcId)
	r.Waiting("waiting for VPC %s to be available", id)
	w := ec2.NewVpcAvailableWaiter(b.c.EC2, func(o *ec2.VpcAvailableWaiterOptions) { o.Retryable = retryNotFound(o.Retryable) })
	desc, err := w.WaitForOutput(ctx, &ec2.DescribeVpcsInput{VpcIds: []string{id}}, waitTimeout)
	if err != nil {
		return v, fmt.Errorf("wait for VPC %s to be available: %w", id, err)
	}
	if len(desc.Vpcs) > 0 {
		v = desc.Vpcs[0]
	}
	return v, nil
}

// readyVPC repairs a VPC found by its tags (a create stopped after
// CreateVpc): it waits for it to be available, reads its DNS attributes
// and turns on, DNS support first, those that are off.
func (b *builder) readyVPC(ctx context.Context, r *engine.Run, v types.Vpc) (VPC, error) {
	v, err := b.availableVPC(ctx, r, v)
	if err != nil {
		return VPC{}, err
	}
	id := aws.ToString(v.VpcId)
	on, err := dnsAttributes(ctx, b.c.EC2, id, eventual)
	if err != nil {
		return VPC{}, err
	}
	// DNS support is turned on first: AWS refuses DNS hostnames without it.
	for i, a := range dnsAttrs {
		if on[i] {
			continue
		}
		if err := b.enableDNS(ctx, id, a.attr); err != nil {
			return VPC{}, err
		}
	}
	return vpcOutOf(&v, true), nil
}

// enableDNS turns one of dnsAttrs on.
func (b *builder) enableDNS(ctx context.Context, id string, attr types.VpcAttributeName) error {
	in := &ec2.ModifyVpcAttributeInput{VpcId: aws.String(id)}
	t := &types.AttributeBooleanValue{Value: aws.Bool(true)}
	if attr == types.VpcAttributeNameEnableDnsSupport {
		in.EnableDnsSupport = t
	} else {
		in.EnableDnsHostnames = t
	}
	if _, err := b.c.EC2.ModifyVpcAttribute(ctx, in, eventual); err != nil {
		return fmt.Errorf("enable %s on VPC %s: %w", attr, id, err)
	}
	return nil
}

// dnsAttrs are the VPC attributes Kubernetes nodes need, DNS support
// first (AWS refuses DNS hostnames without it).
var dnsAttrs = []struct {
	attr types.VpcAttributeName
	what string
	flag string
}{
	{types.VpcAttributeNameEnableDnsSupport, "DNS support", "--enable-dns-support"},
	{types.VpcAttributeNameEnableDnsHostnames, "DNS hostnames", "--enable-dns-hostnames"},
}

// dnsAttributes reads, at once, whether each of dnsAttrs is on.
func dnsAttributes(ctx context.Context, c *ec2.Client, id string, opts ...func(*ec2.Options)) ([]bool, error) {
	on := make([]bool, len(dnsAttrs))
	reads := make([]func(context.Context) error, len(dnsAttrs))
	for i, a := range dnsAttrs {
		reads[i] = func(ctx context.Context) (err error) {
			on[i], err = vpcAttribute(ctx, c, id, a.attr, opts...)
			return err
		}
	}
	return on, awsx.All(ctx, reads...)
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

func (b *builder) deleteVPC(ctx context.Context, r *engine.Run, prev *VPC) error {
	if prev != nil && prev.ID != "" && !prev.Own {
		return engine.ErrAbsent // not kforge's VPC
	}
	return vpcKind.remove(ctx, b.c.EC2, idOf(prev), b.vpcFilters(), func(ctx context.Context, v types.Vpc) (bool, error) {
		id := aws.ToString(v.VpcId)
		return b.deleteInUse(ctx, r, "VPC", id, "vpc-id", func(ctx context.Context) error {
			_, err := b.c.EC2.DeleteVpc(ctx, &ec2.DeleteVpcInput{VpcId: aws.String(id)})
			return err
		})
	})
}

// checkVPC verifies that a VPC exists and has DNS hostnames and DNS
// support, returning a *spec.UsageError when it does not.
func checkVPC(ctx context.Context, c *ec2.Client, id string) (*types.Vpc, error) {
	v, err := vpcKind.byID(ctx, c, id)
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, spec.Usagef("VPC %s does not exist in this region: check --vpc-id and --region", id)
	}
	on, err := dnsAttributes(ctx, c, id)
	if err != nil {
		return nil, err
	}
	for i, a := range dnsAttrs {
		if !on[i] {
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
		s, err := subnetKind.byID(ctx, c, id)
		if err != nil {
			return nil, err
		}
		if s == nil {
			return nil, spec.Usagef("subnet %s does not exist in this region: check --subnet-ids and --region", id)
		}
		byID[id] = *s
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

// addAdopted is the final step when the cluster uses existing subnets:
// they are checked on create, and must still exist on every run after.
func (b *builder) addAdopted(g *engine.Graph, vpc engine.Ref[VPC]) engine.Ref[Network] {
	return engine.Add(g, engine.Resource[Network]{
		ID:    StepID,
		Needs: engine.Needs(vpc),
		Title: fmt.Sprintf("existing subnets %s of %s (checked, not modified)", strings.Join(b.s.SubnetIDs, ", "), b.s.VPCID),
		Find: func(ctx context.Context, r *engine.Run, prev *Network) (engine.Observation[Network], error) {
			if prev == nil {
				return engine.Missing[Network](), nil // checked by Create
			}
			v, all, err := b.subnetsOf(ctx, r, vpc)
			if err != nil {
				return engine.Observation[Network]{}, err
			}
			var subnets []types.Subnet
			var gone []string
			for _, id := range b.s.SubnetIDs {
				if s := subnetKind.withID(all, id); s != nil {
					subnets = append(subnets, *s)
				} else {
					gone = append(gone, id)
				}
			}
			if len(gone) > 0 {
				return engine.Unsafe[Network]("subnets %s (--subnet-ids) no longer exist in VPC %s, and with them what ran in them; kforge never creates or modifies subnets it was given: run `%s`, then create the cluster again with subnets that exist",
					strings.Join(gone, ", "), v.ID, b.resume()), nil
			}
			return engine.InSync(adopted(v, subnets)), nil
		},
		Create: func(ctx context.Context, r *engine.Run) (Network, error) {
			v, err := vpc.Get(r)
			if err != nil {
				return Network{}, err
			}
			subnets, err := checkSubnets(ctx, b.c.EC2, v.ID, b.s.SubnetIDs)
			if err != nil {
				return Network{}, err
			}
			return adopted(v, subnets), nil
		},
	})
}

// adopted is the network of existing subnets.
func adopted(vpc VPC, subnets []types.Subnet) Network {
	n := Network{VPCID: vpc.ID, VPCCIDR: vpc.CIDR}
	for _, s := range subnets {
		n.Subnets = append(n.Subnets, Subnet{ID: aws.ToString(s.SubnetId), Zone: aws.ToString(s.AvailabilityZone),
			CIDR: aws.ToString(s.CidrBlock), Public: aws.ToBool(s.MapPublicIpOnLaunch)})
	}
	return n
}

// addNetwork gathers the outputs of the other steps into a Network. It
// observes nothing: it runs again when one of them changes. after are the
// steps that route the subnets (the gateway's attachment, the default
// route, the associations), which it waits for.
func (b *builder) addNetwork(g *engine.Graph, vpc engine.Ref[VPC], igw engine.Ref[igwOut], rtb engine.Ref[rtbOut], subnets []engine.Ref[Subnet], after []engine.Dep) engine.Ref[Network] {
	needs := engine.Needs(vpc, igw, rtb)
	for _, s := range subnets {
		needs = append(needs, s)
	}
	needs = append(needs, after...)
	return engine.AddAction(g, engine.Action[Network]{
		ID:    StepID,
		Needs: needs,
		Title: "network ready: " + Summary(b.s),
		Do: func(ctx context.Context, r *engine.Run) (Network, error) {
			v, err := vpc.Get(r)
			if err != nil {
				return Network{}, err
			}
			gw, err := igw.Get(r)
			if err != nil {
				return Network{}, err
			}
			t, err := rtb.Get(r)
			if err != nil {
				return Network{}, err
			}
			n := Network{VPCID: v.ID, VPCCIDR: v.CIDR, OwnVPC: v.Own, InternetGatewayID: gw.ID, RouteTableID: t.ID}
			for _, ref := range subnets {
				s, err := ref.Get(r)
				if err != nil {
					return Network{}, err
				}
				n.Subnets = append(n.Subnets, s)
			}
			return n, nil
		},
		// Undo removes subnets of the cluster beyond the graph's count
		// (from a spec with more zones), so that nothing is left behind;
		// the subnet steps remove the others.
		Undo: func(ctx context.Context, r *engine.Run, _ *Network) error { return b.deleteStraySubnets(ctx, r) },
	})
}

// ClusterVPC returns the VPC a cluster's network is in, found by tags: its
// own VPC, else the VPC of its own subnets; "" if neither exists.
func ClusterVPC(ctx context.Context, c *Clients, ref spec.Ref) (string, error) {
	vpcs, err := vpcKind.find(ctx, c.EC2, awsx.ClusterFilters(ref))
	if err != nil {
		return "", fmt.Errorf("look up the cluster's VPC: %w", err)
	}
	for _, v := range vpcs {
		return aws.ToString(v.VpcId), nil
	}
	subnets, err := subnetKind.find(ctx, c.EC2, awsx.ClusterFilters(ref))
	if err != nil {
		return "", fmt.Errorf("look up the cluster's subnets: %w", err)
	}
	for _, s := range subnets {
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
	subnets, err := subnetKind.find(ctx, c.EC2, []types.Filter{
		filter("tag:"+awsx.TagCluster, ref.Name), filter("tag:"+awsx.TagRegion, ref.Region)})
	if err != nil {
		return fmt.Errorf("look up clusters named %s: %w", ref.Name, err)
	}
	for _, s := range subnets {
		if typ := awsx.EC2TagValue(s.Tags, awsx.TagType); typ != ref.Type {
			other := spec.Ref{Type: typ, Name: ref.Name, Region: ref.Region}
			return spec.Usagef("%s already exists (subnet %s); cluster names must be unique in a region across types, because Kubernetes tags what it makes in AWS by cluster name: pick another name", other, aws.ToString(s.SubnetId))
		}
	}
	return nil
}
