package faultproxy

import (
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Bucket is the size of a token bucket: it holds at most Capacity tokens
// and gains Refill tokens a second.
type Bucket struct {
	Capacity float64
	Refill   float64
}

// RateModel is EC2's request-rate model, as AWS documents it in "Request
// throttling for the Amazon EC2 API" (EC2 Developer Guide): each API
// action has a request token bucket of its own, sized by the action's
// category, and a call takes one token from it; RunInstances,
// StartInstances, StopInstances and TerminateInstances also take one
// token per instance from a resource token bucket of the action. A call
// that finds a bucket short of tokens is refused with RequestLimitExceeded
// and takes nothing. Every bucket starts full. Only EC2 calls are limited.
type RateModel struct {
	// NonMutating sizes the buckets of Describe*, List*, Search* and Get*
	// actions.
	NonMutating Bucket
	// Unfiltered sizes the smaller buckets that DescribeInstances,
	// DescribeInstanceStatus, DescribeNetworkInterfaces,
	// DescribeSecurityGroups, DescribeSnapshots,
	// DescribeSpotInstanceRequests and DescribeVolumes use when called
	// with neither a filter nor pagination.
	Unfiltered Bucket
	// Mutating sizes the buckets of the other actions.
	Mutating Bucket
	// ResourceIntensive sizes the buckets of the mutating actions AWS
	// calls resource-intensive (AuthorizeSecurityGroupIngress,
	// CreateKeyPair, RevokeSecurityGroupIngress, ...).
	ResourceIntensive Bucket
	// Actions sizes the request buckets of actions outside the categories
	// (AWS's "uncategorized actions": RunInstances, TerminateInstances,
	// CreateTags, ...).
	Actions map[string]Bucket
	// Resources sizes the resource buckets, in instances.
	Resources map[string]Bucket
}

// DocumentedEC2 returns EC2's rate model with the bucket sizes AWS
// documents for an account and region. Of the uncategorized actions it
// lists those of instances, volumes, network interfaces, tags and VPC
// endpoints; add others to Actions when a test needs them.
func DocumentedEC2() RateModel {
	return RateModel{
		NonMutating:       Bucket{Capacity: 100, Refill: 20},
		Unfiltered:        Bucket{Capacity: 50, Refill: 10},
		Mutating:          Bucket{Capacity: 50, Refill: 5},
		ResourceIntensive: Bucket{Capacity: 50, Refill: 5},
		Actions: map[string]Bucket{
			"RunInstances":                    {5, 2},
			"StartInstances":                  {5, 2},
			"TerminateInstances":              {100, 5},
			"AssociateIamInstanceProfile":     {100, 5},
			"DisassociateIamInstanceProfile":  {100, 5},
			"ModifyInstanceMetadataOptions":   {100, 5},
			"ModifyInstanceMetadataDefaults":  {2, 2},
			"CreateTags":                      {100, 10},
			"DeleteTags":                      {100, 10},
			"CreateVolume":                    {100, 5},
			"DeleteVolume":                    {100, 5},
			"CreateNetworkInterface":          {100, 5},
			"DeleteNetworkInterface":          {100, 5},
			"ModifyNetworkInterfaceAttribute": {100, 5},
			"AssignPrivateIpAddresses":        {100, 5},
			"UnassignPrivateIpAddresses":      {100, 5},
			"AssignIpv6Addresses":             {100, 5},
			"CreateLaunchTemplateVersion":     {100, 5},
			"ModifyLaunchTemplate":            {100, 5},
			"CreateNatGateway":                {10, 1},
			"DeleteNatGateway":                {10, 1},
			"CreateVpcEndpoint":               {4, 0.3},
			"ModifyVpcEndpoint":               {4, 0.3},
			"DeleteVpcEndpoints":              {4, 0.3},
			"CreateDefaultVpc":                {1, 1},
			"CreateDefaultSubnet":             {1, 1},
			"CreateSnapshot":                  {100, 5},
			"DeleteSnapshot":                  {100, 5},
			"CopyImage":                       {100, 1},
			"DeregisterImage":                 {100, 5},
			"ModifyImageAttribute":            {100, 5},
		},
		Resources: map[string]Bucket{
			"RunInstances":       {1000, 2},
			"StartInstances":     {1000, 2},
			"StopInstances":      {1000, 20},
			"TerminateInstances": {1000, 20},
		},
	}
}

// unfilteredActions are the non-mutating actions with a smaller bucket
// for calls without a filter or pagination.
var unfilteredActions = map[string]bool{
	"DescribeInstances": true, "DescribeInstanceStatus": true, "DescribeNetworkInterfaces": true,
	"DescribeSecurityGroups": true, "DescribeSnapshots": true, "DescribeSpotInstanceRequests": true, "DescribeVolumes": true,
}

// resourceIntensiveActions are the mutating actions of the
// resource-intensive category.
var resourceIntensiveActions = map[string]bool{
	"AcceptVpcPeeringConnection": true, "AuthorizeSecurityGroupIngress": true, "CancelSpotInstanceRequests": true,
	"CreateKeyPair": true, "CreateVpcPeeringConnection": true, "DeleteVpcPeeringConnection": true,
	"RejectVpcPeeringConnection": true, "RevokeSecurityGroupIngress": true, "RequestSpotInstances": true,
}

// Use is what a call takes from one bucket.
type Use struct {
	// Key names the bucket: the action ("RunInstances"), the action and
	// "unfiltered" for the smaller bucket of unfiltered reads, the action
	// and "instances" for a resource bucket.
	Key    string
	Bucket Bucket
	Tokens float64
}

// Uses returns what an EC2 call takes from each bucket it draws on: its
// request bucket and, for the actions that launch, start, stop or
// terminate instances, their resource bucket. Calls of other services
// draw on none.
func (m RateModel) Uses(c Call) []Use {
	if c.Service != "ec2" || c.Action == "" {
		return nil
	}
	req := Use{Key: c.Action, Tokens: 1}
	b, ok := m.Actions[c.Action]
	switch {
	case ok:
		req.Bucket = b
	case unfilteredActions[c.Action] && !filteredOrPaginated(c):
		req.Key, req.Bucket = c.Action+" unfiltered", m.Unfiltered
	case !c.Mutating:
		req.Bucket = m.NonMutating
	case resourceIntensiveActions[c.Action]:
		req.Bucket = m.ResourceIntensive
	default:
		req.Bucket = m.Mutating
	}
	uses := []Use{req}
	if rb, ok := m.Resources[c.Action]; ok {
		uses = append(uses, Use{Key: c.Action + " instances", Bucket: rb, Tokens: float64(instancesOf(c))})
	}
	return uses
}

// filteredOrPaginated reports whether a read names a filter or asks for
// pages.
func filteredOrPaginated(c Call) bool {
	for k := range c.Params {
		if strings.HasPrefix(k, "Filter.") || k == "MaxResults" || k == "NextToken" {
			return true
		}
	}
	return false
}

// instancesOf is how many instances a call launches (MaxCount) or acts on
// (its InstanceId.N parameters).
func instancesOf(c Call) int {
	if c.Action == "RunInstances" {
		if n, err := strconv.Atoi(c.Params.Get("MaxCount")); err == nil && n > 0 {
			return n
		}
		return 1
	}
	n := 0
	for k := range c.Params {
		if strings.HasPrefix(k, "InstanceId.") {
			n++
		}
	}
	return max(n, 1)
}

// Demand is how many tokens a set of calls took from one bucket, and the
// least time the bucket, starting full, needs to give that many.
type Demand struct {
	Key    string
	Bucket Bucket
	Tokens float64
	// Wait is max(0, (Tokens - Capacity) / Refill).
	Wait time.Duration
}

// Demands returns what calls (the ones the model admitted) took from each
// bucket, the longest wait first, then by key.
func (m RateModel) Demands(calls []Call) []Demand {
	by := map[string]*Demand{}
	for _, c := range calls {
		for _, u := range m.Uses(c) {
			d := by[u.Key]
			if d == nil {
				d = &Demand{Key: u.Key, Bucket: u.Bucket}
				by[u.Key] = d
			}
			d.Tokens += u.Tokens
		}
	}
	out := make([]Demand, 0, len(by))
	for _, d := range by {
		if over := d.Tokens - d.Bucket.Capacity; over > 0 {
			if d.Bucket.Refill <= 0 {
				d.Wait = time.Duration(math.MaxInt64)
			} else {
				d.Wait = time.Duration(over / d.Bucket.Refill * float64(time.Second))
			}
		}
		out = append(out, *d)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Wait != out[j].Wait {
			return out[i].Wait > out[j].Wait
		}
		return out[i].Key < out[j].Key
	})
	return out
}

// Limiter enforces a RateModel: it keeps the level of every bucket the
// calls so far have drawn on.
type Limiter struct {
	m   RateModel
	now func() time.Time

	mu     sync.Mutex
	levels map[string]level
}

// level is a bucket's tokens at a time.
type level struct {
	Bucket
	tokens float64
	at     time.Time
}

// tokensAt is the bucket's level at t: what it held, plus what it gained since,
// up to its capacity.
func (lv level) tokensAt(t time.Time) float64 {
	return min(lv.Capacity, lv.tokens+t.Sub(lv.at).Seconds()*lv.Refill)
}

// NewLimiter returns a limiter of model m whose buckets are all full. now
// is its clock (nil: time.Now).
func NewLimiter(m RateModel, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{m: m, now: now, levels: map[string]level{}}
}

// Model returns the limiter's model.
func (l *Limiter) Model() RateModel { return l.m }

// Admit takes the call's tokens if every bucket it draws on holds enough,
// and reports true; otherwise it takes none and returns the key of the
// first bucket that refused.
func (l *Limiter) Admit(c Call) (bool, string) {
	uses := l.m.Uses(c)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	next := make([]level, len(uses))
	for i, u := range uses {
		lv, ok := l.levels[u.Key]
		if !ok {
			lv = level{Bucket: u.Bucket, tokens: u.Bucket.Capacity, at: now}
		}
		next[i] = level{Bucket: u.Bucket, tokens: lv.tokensAt(now) - u.Tokens, at: now}
		if next[i].tokens < -1e-9 { // rounding of the refill
			return false, u.Key
		}
	}
	for i, u := range uses {
		l.levels[u.Key] = next[i]
	}
	return true, ""
}

// Tokens returns how many tokens the bucket of key holds now, and false
// if no call has drawn on it yet (it is full).
func (l *Limiter) Tokens(key string) (float64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lv, ok := l.levels[key]
	if !ok {
		return 0, false
	}
	return lv.tokensAt(l.now()), true
}

// Limit makes the proxy answer EC2 calls as l admits them, from now on: a
// call whose tokens l refuses is answered EC2's RequestLimitExceeded (HTTP
// 503), recorded with fault Limited, and not forwarded. Rules apply
// first: a call a rule answers takes no token. nil turns the limit off.
func (p *Proxy) Limit(l *Limiter) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.limiter = l
}

// admit reports whether the proxy's limiter, if it has one, admits c.
func (p *Proxy) admit(c Call) bool {
	p.mu.Lock()
	l := p.limiter
	p.mu.Unlock()
	if l == nil {
		return true
	}
	ok, _ := l.Admit(c)
	return ok
}
