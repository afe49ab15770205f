package network

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/spec"
)

// kind is what the look-ups need to know of one kind of EC2 resource: its
// name in messages, its ID and tags, and how to list it (by filters or by
// IDs, every page). The four kinds below are the only place that knows
// the SDK's per-kind types; everything else is generic.
type kind[T any] struct {
	what string
	id   func(T) string
	tags func(T) []types.Tag
	list func(ctx context.Context, c *ec2.Client, filters []types.Filter, ids []string) ([]T, error)
}

var (
	vpcKind = kind[types.Vpc]{
		what: "VPC",
		id:   func(v types.Vpc) string { return aws.ToString(v.VpcId) },
		tags: func(v types.Vpc) []types.Tag { return v.Tags },
		list: func(ctx context.Context, c *ec2.Client, f []types.Filter, ids []string) ([]types.Vpc, error) {
			return awsx.Collect(ctx, ec2.NewDescribeVpcsPaginator(c, &ec2.DescribeVpcsInput{Filters: f, VpcIds: ids}),
				func(o *ec2.DescribeVpcsOutput) []types.Vpc { return o.Vpcs })
		},
	}
	subnetKind = kind[types.Subnet]{
		what: "subnet",
		id:   func(s types.Subnet) string { return aws.ToString(s.SubnetId) },
		tags: func(s types.Subnet) []types.Tag { return s.Tags },
		list: func(ctx context.Context, c *ec2.Client, f []types.Filter, ids []string) ([]types.Subnet, error) {
			return awsx.Collect(ctx, ec2.NewDescribeSubnetsPaginator(c, &ec2.DescribeSubnetsInput{Filters: f, SubnetIds: ids}),
				func(o *ec2.DescribeSubnetsOutput) []types.Subnet { return o.Subnets })
		},
	}
	igwKind = kind[types.InternetGateway]{
		what: "internet gateway",
		id:   func(g types.InternetGateway) string { return aws.ToString(g.InternetGatewayId) },
		tags: func(g types.InternetGateway) []types.Tag { return g.Tags },
		list: func(ctx context.Context, c *ec2.Client, f []types.Filter, ids []string) ([]types.InternetGateway, error) {
			return awsx.Collect(ctx, ec2.NewDescribeInternetGatewaysPaginator(c, &ec2.DescribeInternetGatewaysInput{Filters: f, InternetGatewayIds: ids}),
				func(o *ec2.DescribeInternetGatewaysOutput) []types.InternetGateway { return o.InternetGateways })
		},
	}
	rtbKind = kind[types.RouteTable]{
		what: "route table",
		id:   func(t types.RouteTable) string { return aws.ToString(t.RouteTableId) },
		tags: func(t types.RouteTable) []types.Tag { return t.Tags },
		list: func(ctx context.Context, c *ec2.Client, f []types.Filter, ids []string) ([]types.RouteTable, error) {
			return awsx.Collect(ctx, ec2.NewDescribeRouteTablesPaginator(c, &ec2.DescribeRouteTablesInput{Filters: f, RouteTableIds: ids}),
				func(o *ec2.DescribeRouteTablesOutput) []types.RouteTable { return o.RouteTables })
		},
	}
)

// filter is one EC2 filter.
func filter(name string, values ...string) types.Filter {
	return types.Filter{Name: aws.String(name), Values: values}
}

// inVPC filters resources by their VPC.
func inVPC(vpcID string) []types.Filter { return []types.Filter{filter("vpc-id", vpcID)} }

// find lists the resources of kind k that filters select, live (not from
// a run's look-ups: what a delete, or a create that lost its answer, must
// see).
func (k kind[T]) find(ctx context.Context, c *ec2.Client, filters []types.Filter) ([]T, error) {
	return k.list(ctx, c, filters, nil)
}

// byID returns the resource of kind k with the given ID, live, or nil if
// it does not exist.
func (k kind[T]) byID(ctx context.Context, c *ec2.Client, id string) (*T, error) {
	all, err := k.list(ctx, c, nil, []string{id})
	if awsx.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("describe %s %s: %w", k.what, id, err)
	}
	return k.withID(all, id), nil
}

// withID returns the resource of all with the given ID, or nil.
func (k kind[T]) withID(all []T, id string) *T {
	for i := range all {
		if k.id(all[i]) == id {
			return &all[i]
		}
	}
	return nil
}

// owned reports whether tags carry the ownership tags of ref (and, in
// pairs, the extra tags key=value).
func owned(ref spec.Ref, tags []types.Tag, extra ...string) bool {
	want := []string{awsx.TagCluster, ref.Name, awsx.TagType, ref.Type, awsx.TagRegion, ref.Region}
	want = append(want, extra...)
	for i := 0; i+1 < len(want); i += 2 {
		if awsx.EC2TagValue(tags, want[i]) != want[i+1] {
			return false
		}
	}
	return true
}

// foreign returns the cluster whose kforge tags a resource carries when
// they are not ref's, or "" (they are ref's, or it carries none).
func foreign(ref spec.Ref, tags []types.Tag) string {
	name := awsx.EC2TagValue(tags, awsx.TagCluster)
	typ, region := awsx.EC2TagValue(tags, awsx.TagType), awsx.EC2TagValue(tags, awsx.TagRegion)
	if name == "" || name == ref.Name && (typ == "" || typ == ref.Type) && (region == "" || region == ref.Region) {
		return ""
	}
	return spec.Ref{Type: typ, Name: name, Region: region}.String()
}

// pick returns what a step takes for its resource among all: the one with
// prevID (its journaled ID) if it is there, else the first by ID of those
// mine selects. ok is false when there is none.
func (k kind[T]) pick(all []T, prevID string, mine func(T) bool) (found T, ok bool) {
	if x := k.withID(all, prevID); prevID != "" && x != nil {
		return *x, true
	}
	cands := awsx.Select(all, mine)
	if len(cands) == 0 {
		return found, false
	}
	return slices.MinFunc(cands, func(a, b T) int { return strings.Compare(k.id(a), k.id(b)) }), true
}

// own returns, live, the resources of kind k that a delete removes: the
// one with prevID first if it still exists, then those filters select,
// sorted by ID, each once.
func (k kind[T]) own(ctx context.Context, c *ec2.Client, prevID string, filters []types.Filter) ([]T, error) {
	var prev *T
	var tagged []T
	calls := []func(context.Context) error{func(ctx context.Context) (err error) {
		if tagged, err = k.find(ctx, c, filters); err != nil {
			return fmt.Errorf("look up the cluster's %ss by tags: %w", k.what, err)
		}
		return nil
	}}
	if prevID != "" {
		calls = append(calls, func(ctx context.Context) (err error) {
			prev, err = k.byID(ctx, c, prevID)
			return err
		})
	}
	if err := awsx.All(ctx, calls...); err != nil {
		return nil, err
	}
	var out []T
	if prev != nil {
		out = append(out, *prev)
	}
	sort.Slice(tagged, func(i, j int) bool { return k.id(tagged[i]) < k.id(tagged[j]) })
	for _, t := range tagged {
		if prev == nil || k.id(t) != prevID {
			out = append(out, t)
		}
	}
	return out, nil
}

// remove deletes with del, one by one, the resources of kind k that a
// delete finds (own), and returns what deleteAll says.
func (k kind[T]) remove(ctx context.Context, c *ec2.Client, prevID string, filters []types.Filter, del func(context.Context, T) (bool, error)) error {
	found, err := k.own(ctx, c, prevID, filters)
	if err != nil {
		return err
	}
	return deleteAll(ctx, found, del)
}

// first is what awsx.CreateOnce asks after a create whose answer was
// lost: the first, by ID, of the resources filters select, live.
func (k kind[T]) first(c *ec2.Client, filters []types.Filter) func(context.Context) (T, bool, error) {
	return func(ctx context.Context) (T, bool, error) {
		found, err := k.own(ctx, c, "", filters)
		if err != nil || len(found) == 0 {
			var none T
			return none, false, err
		}
		return found[0], true, nil
	}
}

// Lookups are the network look-ups of one run: each kind of resource
// (VPCs, subnets, gateways, route tables) is asked for once, with filters
// that answer every step that finds one (the cluster's tags, or its VPC),
// and each step picks its own from the answer. A provider's session holds
// one and hands it to the network's steps through LookupsHolder. Only the
// steps' Finds (and the Updates that follow them in the same run) read
// them: creates and deletes look live.
type Lookups struct {
	ec2 *ec2.Client

	mu      sync.Mutex
	answers map[string]*answer
}

// answer is one memoised look-up; done is closed once v and err are set.
type answer struct {
	done chan struct{}
	v    any
	err  error
}

// NewLookups returns the look-ups of one run.
func NewLookups(c *ec2.Client) *Lookups { return &Lookups{ec2: c, answers: map[string]*answer{}} }

// LookupsHolder is what a provider's session (engine.Run.Context) must
// implement for the network's steps.
type LookupsHolder interface {
	NetworkLookups() *Lookups
}

// lookupsOf returns the run's look-ups, or fresh ones (a run without a
// session): then every Find asks AWS itself.
func lookupsOf(r *engine.Run, c *Clients) *Lookups {
	if h, ok := r.Context().(LookupsHolder); ok && h.NetworkLookups() != nil {
		return h.NetworkLookups()
	}
	return NewLookups(c.EC2)
}

// lookup returns the resources of kind k that filters (or ids) select, as
// AWS answered the first time this run asked: concurrent askers wait for
// the one call. A failure is not kept: the next asker asks again.
func lookup[T any](ctx context.Context, l *Lookups, k kind[T], filters []types.Filter, ids ...string) ([]T, error) {
	key := lookupKey(k.what, filters, ids)
	l.mu.Lock()
	a, asked := l.answers[key]
	if !asked {
		a = &answer{done: make(chan struct{})}
		l.answers[key] = a
	}
	l.mu.Unlock()
	if !asked {
		a.v, a.err = k.list(ctx, l.ec2, filters, ids)
		if a.err != nil {
			l.mu.Lock()
			delete(l.answers, key)
			l.mu.Unlock()
		}
		close(a.done)
	}
	select {
	case <-a.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if a.err != nil {
		return nil, fmt.Errorf("look up %ss: %w", k.what, a.err)
	}
	return slices.Clone(a.v.([]T)), nil
}

// lookupByID is byID from the run's look-ups.
func lookupByID[T any](ctx context.Context, l *Lookups, k kind[T], id string) (*T, error) {
	all, err := lookup(ctx, l, k, nil, id)
	if awsx.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return k.withID(all, id), nil
}

// lookupKey identifies a look-up: filters and IDs in a canonical order.
func lookupKey(what string, filters []types.Filter, ids []string) string {
	type f struct {
		N string
		V []string
	}
	fs := make([]f, 0, len(filters))
	for _, x := range filters {
		v := slices.Clone(x.Values)
		sort.Strings(v)
		fs = append(fs, f{aws.ToString(x.Name), v})
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].N < fs[j].N })
	ids = slices.Clone(ids)
	sort.Strings(ids)
	b, _ := json.Marshal(struct {
		F []f
		I []string
	}{fs, ids})
	return what + " " + string(b)
}
