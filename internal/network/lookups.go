package network

import (
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/kforge/kforge/internal/engine"
)

// Lookups are the network look-ups of one run: each kind of resource
// (VPCs, subnets, gateways, route tables) is asked for once, for every
// step that finds one. A provider's session holds one and hands it to the
// network's steps through LookupsHolder.
type Lookups struct {
	ec2 *ec2.Client
}

// NewLookups returns the look-ups of one run.
func NewLookups(c *ec2.Client) *Lookups { return &Lookups{ec2: c} }

// LookupsHolder is what a provider's session (engine.Run.Context) must
// implement for the network's steps.
type LookupsHolder interface {
	NetworkLookups() *Lookups
}

// lookupsOf returns the run's look-ups, or fresh ones (a run without a
// session, as in the network's own tests).
func lookupsOf(r *engine.Run, c *Clients) *Lookups {
	if h, ok := r.Context().(LookupsHolder); ok && h.NetworkLookups() != nil {
		return h.NetworkLookups()
	}
	return NewLookups(c.EC2)
}

var _ = lookupsOf
