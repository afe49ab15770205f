// Package network builds the network that both cluster types run in, as
// engine resources shared by the eks and ha providers: a VPC, an internet
// gateway, a route table and one public subnet per availability zone.
//
// Three shapes, chosen by the Spec:
//
//   - Own VPC (VPCID empty): kforge creates the VPC (DNS hostnames and DNS
//     support on), an internet gateway attached to it, a route table with
//     0.0.0.0/0 to the gateway, and Zones subnets of /SubnetPrefix carved in
//     order from the VPC CIDR (10.0.0.0/16 and /20 by default), each public
//     (MapPublicIpOnLaunch, kubernetes.io/role/elb=1). Delete removes all of it.
//   - Existing VPC (VPCID set, no SubnetIDs): the VPC is checked (it exists,
//     DNS hostnames and DNS support are on) and never modified or deleted.
//     kforge uses the internet gateway already attached to it, never creates
//     one, adds its own route table through that gateway and creates Zones
//     subnets in free /SubnetPrefix blocks (/24 by default) of the VPC's CIDR
//     blocks, recomputing the block when another cluster takes it first. If
//     the VPC has no internet gateway, kforge creates no route table: the new
//     subnets are private (no public IPs, kubernetes.io/role/internal-elb=1)
//     and use the VPC's main route table, which the VPC's owner may route
//     through a NAT gateway or a transit gateway. Delete removes only kforge's
//     subnets and route table.
//   - Existing subnets (VPCID and SubnetIDs set): the subnets are checked and
//     adopted as they are; nothing is created or deleted.
//
// # Steps
//
// Add puts the network into a graph and returns typed handles (Refs) on
// the outputs the providers read: the VPC (done as soon as the VPC exists,
// so a security group does not wait for the rest), each subnet (done as
// soon as it exists, so a VM is launched in it while it is being routed)
// and the whole Network, routed. Inside, every step declares, with
// engine.Ref handles, exactly the outputs it reads, and needs only what
// AWS needs first:
//
//	azs           action    the zones, picked once (DescribeAvailabilityZones)
//	vpc           resource  the VPC (own, or checked existing)
//	igw           resource  kforge's gateway: needs nothing, made while the
//	                        VPC is; in an existing VPC, its gateway (needs vpc)
//	igw/attach    resource  needs vpc, igw: the attachment (own VPC only)
//	rtb           resource  needs vpc (and igw in an existing VPC, which
//	                        decides whether there is one): the route table
//	subnet/i      resource  needs azs, vpc (and igw in an existing VPC,
//	                        which decides whether the subnet is public)
//	rtb/route     resource  needs rtb, igw, igw/attach: 0.0.0.0/0 to the gateway
//	rtb/subnet/i  resource  needs rtb, subnet/i: the subnet's association
//	network       action    needs all of the above: gathers them into a Network
//
// So the longest chain of calls of a create is the VPC then a subnet then
// its association (or the route table then its route), not the VPC, the
// gateway, the route table and the routes one after the other. A delete
// runs the graph in reverse: the gateway is detached (igw/attach) before
// the VPC goes, and deleted on its own; each association is removed by its
// step, then the route table (with its route) and the subnets are deleted
// at once.
//
// With adopted subnets, the graph is vpc and a network resource that checks
// the subnets.
//
// Clusters made before the gateway's attachment, the route and the
// associations were steps of their own journaled them in the igw and rtb
// steps; the new steps find them on the next run, in sync, and journal
// them, changing nothing in AWS.
//
// # Reconcile
//
// Every run (create, resume, a later create of the same cluster, diff)
// calls every resource's Find. The Finds read one batched look-up per kind
// of resource and run (Lookups, held by the provider's session): one
// DescribeVpcs (the cluster's tags, or the existing VPC's ID), one
// DescribeInternetGateways (the cluster's tags, or the existing VPC's
// attachment), one DescribeSubnets and one DescribeRouteTables (the VPC's
// ID), each step picking its own resource from the answer: the journaled
// ID first, else the cluster's tags (and, for a subnet, its index tag
// kforge.io/subnet). A reconcile of an unchanged network makes no other
// call: in particular it does not read the DNS attributes of kforge's own
// VPC, which kforge set when it made it (those of an existing VPC are read
// on every run, since its owner may change them).
//
// What was changed outside kforge is repaired, and said: a deleted subnet
// is made again (same index, block and zone) and associated with the route
// table; a deleted or redirected default route is put back; a removed
// association is made again; a detached gateway is attached again and a
// deleted one made again; a subnet's MapPublicIpOnLaunch turned off is
// turned on. What kforge must not repair stops the run with an
// *engine.DriftError that says what was found and what to do, deleting
// nothing: an existing VPC that is gone or whose DNS settings were turned
// off, adopted subnets that are gone, kforge's own VPC deleted, and any
// resource that now carries another cluster's kforge.io/cluster tag.
//
// # Crash safety
//
// Every resource kforge creates is tagged in its create call with the
// ownership tags of docs/CONTRACT.md, so a Find that runs again after a crash
// (even one right after the create call returned, before the journal was
// written) finds it by its tags instead of creating a second one, and then
// finishes what the create had not (DNS attributes, attachment, public IPs,
// route, associations) as a repair. CreateVpc, CreateSubnet and
// CreateInternetGateway have no token: they run with awsx.SafeRetryer
// under awsx.CreateOnce, so a lost answer (a connection dropped after the
// request was sent) makes kforge look for the resource by its tags, live,
// instead of creating it again. CreateRouteTable carries the engine's
// ClientToken (engine.Run.Token) and runs the same way, since not every
// endpoint honours the token (the emulator does not).
//
// A new VPC's DNS attributes are set without being read first (a new VPC
// has DNS support on, which DNS hostnames need, so both are set at once);
// only a VPC found by its tags after a crash has them read and repaired.
//
// # Delete
//
// Delete finds resources live, by the journaled ID and by tags, so it
// works when the state is lost. A Delete that finds nothing to remove
// returns engine.ErrAbsent, so a second delete reports every network step
// as skipped rather than deleted.
//
// AWS releases the network interfaces of terminated instances and deleted
// load balancers minutes after they go, so deleting a subnet, a gateway or
// the VPC retries DependencyViolation for a bounded time (Clients.InUseTimeout)
// and then fails with an error that lists what still uses it.
//
// All the per-kind look-ups (by tags, by ID, every page) are one generic
// code path over a small description of each kind (kind[T]), draining the
// SDK's paginators with awsx.Collect.
package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/spec"
)

// Step IDs (stable: they key the journal of existing clusters). StepID is
// the final step, whose output is a Network.
const (
	StepID    = "network"
	StepZones = "azs"
	StepVPC   = "vpc"
	// StepIGW is the internet gateway; StepIGWAttach its attachment to
	// kforge's own VPC.
	StepIGW       = "igw"
	StepIGWAttach = "igw/attach"
	// StepRouteTable is the route table; StepRoute its default route to the
	// gateway.
	StepRouteTable = "rtb"
	StepRoute      = "rtb/route"
)

// SubnetStepID is the ID of the step that makes subnet i.
func SubnetStepID(i int) string { return "subnet/" + strconv.Itoa(i) }

// AssociationStepID is the ID of the step that associates subnet i with
// the route table.
func AssociationStepID(i int) string { return "rtb/subnet/" + strconv.Itoa(i) }

// Tags kforge and Kubernetes read on subnets.
const (
	// TagSubnet holds the index of a kforge subnet, so a re-run finds it.
	TagSubnet = "kforge.io/subnet"
	// TagELB marks public subnets for internet-facing load balancers.
	TagELB = "kubernetes.io/role/elb"
	// TagInternalELB marks private subnets for internal load balancers.
	TagInternalELB = "kubernetes.io/role/internal-elb"
)

// Defaults.
const (
	DefaultZones          = 3
	DefaultOwnPrefix      = 20
	DefaultExistingPrefix = 24
	DefaultInUseTimeout   = 3 * time.Minute
	MaxZones              = 16
)

// Spec is the network a cluster wants.
type Spec struct {
	// Ref is the cluster the network belongs to.
	Ref spec.Ref
	// VPCID names an existing VPC; empty means kforge creates one.
	VPCID string
	// SubnetIDs, only with VPCID, are existing subnets used as they are.
	SubnetIDs []string
	// Zones is how many availability zones, and subnets, to use (at least
	// 2; default 3). A region with fewer usable zones gets the subnets
	// spread round-robin over the zones it has.
	Zones int
	// CIDR is the CIDR of an own VPC (default 10.0.0.0/16).
	CIDR string
	// SubnetPrefix is the prefix length of new subnets: default /20 in an
	// own VPC (carved in order from its CIDR), /24 in an existing VPC (the
	// first free blocks of its CIDR blocks).
	SubnetPrefix int
	// ExcludeZoneIDs are availability zone IDs not to use (for example
	// "use1-az3", where EKS cannot place a control plane).
	ExcludeZoneIDs []string
}

// Clients are the AWS clients the steps use, and how long a delete waits
// for AWS to release what still uses a subnet or VPC.
type Clients struct {
	EC2 *ec2.Client
	// InUseTimeout bounds the wait for DependencyViolation to clear on a
	// delete (default DefaultInUseTimeout).
	InUseTimeout time.Duration
}

func (c *Clients) inUseTimeout() time.Duration {
	if c.InUseTimeout > 0 {
		return c.InUseTimeout
	}
	return DefaultInUseTimeout
}

// Network is the output of the final step, the only thing providers read.
type Network struct {
	VPCID   string `json:"vpcId"`
	VPCCIDR string `json:"vpcCidr"`
	// OwnVPC is true when kforge created the VPC.
	OwnVPC bool `json:"ownVpc"`
	// InternetGatewayID is the gateway the subnets route through; empty
	// for adopted subnets or an existing VPC without one.
	InternetGatewayID string `json:"internetGatewayId,omitempty"`
	// RouteTableID is kforge's route table, if it made one.
	RouteTableID string   `json:"routeTableId,omitempty"`
	Subnets      []Subnet `json:"subnets"`
}

// Subnet is one subnet of the cluster.
type Subnet struct {
	ID   string `json:"id"`
	Zone string `json:"zone"`
	CIDR string `json:"cidr"`
	// Own is true when kforge created the subnet.
	Own bool `json:"own"`
	// Public is true when instances get a public IP and a route to the
	// internet gateway.
	Public bool `json:"public"`
}

func (s Subnet) key() string { return s.ID }

// SubnetIDs returns the IDs of the subnets, in order.
func (n Network) SubnetIDs() []string {
	ids := make([]string, len(n.Subnets))
	for i, s := range n.Subnets {
		ids[i] = s.ID
	}
	return ids
}

// Resources lists the network's AWS IDs by kind, for `kforge info`.
func (n Network) Resources() map[string]any {
	m := map[string]any{"vpc": n.VPCID, "subnets": n.SubnetIDs()}
	if n.InternetGatewayID != "" {
		m["internetGateway"] = n.InternetGatewayID
	}
	if n.RouteTableID != "" {
		m["routeTable"] = n.RouteTableID
	}
	return m
}

// withDefaults fills in the defaults of unset fields.
func (s Spec) withDefaults() Spec {
	if s.Zones == 0 {
		s.Zones = DefaultZones
	}
	if s.VPCID == "" && s.CIDR == "" {
		s.CIDR = spec.DefaultVPCCIDR
	}
	if s.SubnetPrefix == 0 {
		if s.VPCID == "" {
			s.SubnetPrefix = DefaultOwnPrefix
		} else {
			s.SubnetPrefix = DefaultExistingPrefix
		}
	}
	return s
}

func (s Spec) adopt() bool { return s.VPCID != "" && len(s.SubnetIDs) > 0 }

// Validate checks a network spec, with defaults applied, without calling
// AWS. Errors are *spec.UsageError.
func (s Spec) Validate() error {
	s = s.withDefaults()
	if err := spec.ValidateRef(s.Ref); err != nil {
		return err
	}
	if len(s.SubnetIDs) > 0 && s.VPCID == "" {
		return spec.Usagef("subnets %s need the ID of their VPC: pass --vpc-id", strings.Join(s.SubnetIDs, ", "))
	}
	if s.adopt() {
		return nil
	}
	if s.Zones < 2 || s.Zones > MaxZones {
		return spec.Usagef("invalid number of availability zones %d: use 2 to %d", s.Zones, MaxZones)
	}
	if s.SubnetPrefix < 16 || s.SubnetPrefix > 28 {
		return spec.Usagef("invalid subnet size /%d: use a prefix length from /16 to /28", s.SubnetPrefix)
	}
	if s.VPCID != "" {
		return nil
	}
	p, err := netip.ParsePrefix(s.CIDR)
	if err != nil || !p.Addr().Is4() || p.Masked() != p {
		return spec.Usagef("invalid VPC CIDR %q: give an IPv4 network such as %s", s.CIDR, spec.DefaultVPCCIDR)
	}
	if p.Bits() < 16 || p.Bits() > 28 {
		return spec.Usagef("invalid VPC CIDR %s: AWS allows prefix lengths from /16 to /28", s.CIDR)
	}
	if s.SubnetPrefix < p.Bits() || 1<<(s.SubnetPrefix-p.Bits()) < s.Zones {
		return spec.Usagef("VPC CIDR %s cannot hold %d subnets of /%d: use a larger VPC or smaller subnets", s.CIDR, s.Zones, s.SubnetPrefix)
	}
	return nil
}

// Summary describes the network in one line, for a plan's header.
func Summary(s Spec) string {
	s = s.withDefaults()
	switch {
	case s.adopt():
		return fmt.Sprintf("existing VPC %s with existing subnets %s (checked, not modified)", s.VPCID, strings.Join(s.SubnetIDs, ", "))
	case s.VPCID != "":
		return fmt.Sprintf("existing VPC %s (checked, not modified) with %d new /%d subnets in %d availability zones", s.VPCID, s.Zones, s.SubnetPrefix, s.Zones)
	default:
		return fmt.Sprintf("new VPC %s with %d public /%d subnets in %d availability zones", s.CIDR, s.Zones, s.SubnetPrefix, s.Zones)
	}
}

// Refs are the handles on the network's outputs that the providers'
// steps read (and, by listing them in their Needs, wait for).
type Refs struct {
	// VPC is done as soon as the VPC exists: a security group needs only
	// it, not the rest of the network.
	VPC engine.Ref[VPC]
	// Subnets are done as soon as each subnet exists, before it is routed:
	// an instance can be launched in it meanwhile (only reaching it needs
	// the route). Subnet i of a spec of Zones zones is Subnets[i]. Nil with
	// adopted subnets, which only Network checks.
	Subnets []engine.Ref[Subnet]
	// Network is the whole network, its subnets routed.
	Network engine.Ref[Network]
}

// Add adds the network's steps to g and returns the handles on its
// outputs. It makes no AWS call. An invalid spec makes the first step
// fail with the error of Validate.
func Add(g *engine.Graph, c *Clients, s Spec) Refs {
	b := &builder{c: c, s: s.withDefaults()}
	if b.s.adopt() {
		vpc := b.addVPC(g)
		return Refs{VPC: vpc, Network: b.addAdopted(g, vpc)}
	}
	zones := b.addZones(g)
	vpc := b.addVPC(g)
	igw := b.addIGW(g, vpc)
	// needs are what the final step waits for besides the VPC, the
	// gateway, the route table and the subnets.
	var needs []engine.Dep
	var attach engine.Dep
	if b.s.VPCID == "" {
		attach = b.addAttach(g, vpc, igw)
		needs = append(needs, attach)
	}
	t := b.addRTB(g, vpc, igw)
	subnets := make([]engine.Ref[Subnet], b.s.Zones)
	for i := range subnets {
		subnets[i] = b.addSubnet(g, i, zones, vpc, igw)
	}
	needs = append(needs, t.addRoute(g, attach))
	for i, sn := range subnets {
		needs = append(needs, t.addAssociation(g, i, sn))
	}
	return Refs{VPC: vpc, Subnets: subnets, Network: b.addNetwork(g, vpc, igw, t.rtb, subnets, needs)}
}

// Steps returns the network's steps as Add adds them, the last one with ID
// StepID, for callers that build their graph from steps. It makes no AWS
// call. An invalid spec makes the first step fail with the error of
// Validate.
func Steps(c *Clients, s Spec) []*engine.Step {
	g := engine.NewGraph()
	Add(g, c, s)
	var steps []*engine.Step
	for _, id := range g.IDs() {
		steps = append(steps, g.Step(id))
	}
	return steps
}

// builder holds what every step of one network shares.
type builder struct {
	c *Clients
	s Spec
}

func (b *builder) ref() spec.Ref { return b.s.Ref }

func (b *builder) name(suffix string) string { return "kforge-" + b.s.Ref.Name + "-" + suffix }

func (b *builder) resume() string { return "kforge delete " + b.s.Ref.Args() }

// mine selects, among resources of one kind, those that carry the
// cluster's ownership tags and the given tag pairs (key, value, ...).
func mine[T any](b *builder, k kind[T], tags ...string) func(T) bool {
	return func(x T) bool { return owned(b.ref(), k.tags(x), tags...) }
}

// idOf is the journaled ID of a step's resource, or "" (prev is nil).
func idOf[T interface{ key() string }](prev *T) string {
	if prev == nil {
		return ""
	}
	return (*prev).key()
}

// taken is the observation of a resource that another cluster's tags now
// claim: kforge neither uses nor repairs it.
func taken[T any](b *builder, what, id, owner string) engine.Observation[T] {
	return engine.Unsafe[T]("%s %s now carries the tags of %s: kforge does not take it back; remove those tags, or run `%s` and create the cluster again",
		what, id, owner, b.resume())
}

// safe is the retry policy of a create without a ClientToken (CreateVpc,
// CreateSubnet, CreateInternetGateway): it retries only what AWS cannot
// have carried out, and leaves a lost answer to awsx.CreateOnce, which looks
// for the resource by its tags before it tries again.
func safe(o *ec2.Options) { o.Retryer = awsx.SafeRetryer(o.Retryer) }

// safeEventual is safe, and also retries "not found": a create that names
// a resource made a moment ago (a subnet's new VPC) may be refused until EC2
// sees it, and a refused call made nothing.
func safeEventual(o *ec2.Options) {
	o.Retryer = awsx.Eventual(awsx.SafeRetryer(o.Retryer), awsx.IsNotFound)
}

// deleted is what a Delete returns after removing what it found: the
// failures if any, else engine.ErrAbsent when nothing was there to remove
// (so that a second delete reports the step as skipped), else nil.
func deleted(removed bool, errs []error) error {
	switch {
	case len(errs) > 0:
		return errors.Join(errs...)
	case !removed:
		return engine.ErrAbsent
	}
	return nil
}

// deleteAll removes each of found with del (which reports whether it
// removed it) and returns what deleted says.
func deleteAll[T any](ctx context.Context, found []T, del func(context.Context, T) (bool, error)) error {
	var errs []error
	removed := false
	for _, x := range found {
		ok, err := del(ctx, x)
		if err != nil {
			errs = append(errs, err)
		}
		removed = removed || ok
	}
	return deleted(removed, errs)
}

// deleteInUse deletes a subnet or VPC (what) with del, retrying
// DependencyViolation for a bounded time, then failing with an error that
// names what still uses it (what Blockers finds with filter, "subnet-id"
// or "vpc-id", equal to id). It reports whether del removed the resource
// (false: it was gone already).
func (b *builder) deleteInUse(ctx context.Context, r *engine.Run, what, id, filter string, del func(context.Context) error) (bool, error) {
	removed, err := b.retryDelete(ctx, r, what+" "+id, del)
	if err != nil {
		return false, b.inUseError(ctx, what, id, filter, id, err)
	}
	return removed, nil
}

// retryDelete runs del under awsx.RetryInUse and reports whether del
// removed the resource (false: it was gone already).
func (b *builder) retryDelete(ctx context.Context, r *engine.Run, what string, del func(context.Context) error) (bool, error) {
	removed := false
	err := awsx.RetryInUse(ctx, b.c.inUseTimeout(), r.Waiting, what, func(ctx context.Context) error {
		err := del(ctx)
		removed = err == nil
		return err
	})
	return removed, err
}
