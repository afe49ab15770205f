package leftovers_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancing"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"

	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/leftovers"
	"github.com/kforge/kforge/internal/network"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/test/testutil/faultproxy"
	"github.com/kforge/kforge/test/testutil/moto"
)

// The look-ups of a delete are independent: they are made at once, so a
// cluster in which Kubernetes made nothing costs one round trip, not one
// per kind of resource.
func TestLookUpsAreMadeAtOnce(t *testing.T) {
	tests := []struct {
		typ  string
		cidr string
		want int // ELBv2 and classic load balancers, target groups, interfaces, security groups, volumes
	}{
		{spec.TypeHA, "10.74.0.0/16", 6},
		{spec.TypeEKS, "10.75.0.0/16", 8}, // and the VPC CNI's interfaces, the LB controller's groups
	}
	for _, tc := range tests {
		t.Run(tc.typ, func(t *testing.T) {
			e := newEnv(t)
			ref := spec.Ref{Type: tc.typ, Name: "lo-once", Region: region}
			c := newCluster(t, e, ref, tc.cidr, time.Second)

			// Every call answers 100 ms late: look-ups made one after the
			// other would never be in flight together.
			px := faultproxy.Start(t, server.URL)
			px.Add(faultproxy.Rule{Fault: faultproxy.Delay, Delay: 100 * time.Millisecond})
			cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion(region), config.WithBaseEndpoint(px.URL),
				config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(moto.AccessKeyID, moto.SecretAccessKey, "")))
			if err != nil {
				t.Fatal(err)
			}
			clients := &leftovers.Clients{EC2: ec2.NewFromConfig(cfg), ELBv2: elasticloadbalancingv2.NewFromConfig(cfg),
				ELB: elasticloadbalancing.NewFromConfig(cfg), InUseTimeout: time.Second}
			g := engine.NewGraph()
			// As the providers build it: after the network, whose output
			// names the VPC (journaled by newCluster).
			g.Add(&engine.Step{ID: network.StepID}, leftovers.Step(clients, ref, []string{network.StepID}))
			var ended engine.EventKind
			err = engine.Destroy(context.Background(), g, c.j, engine.Options{Events: func(ev engine.Event) {
				if ev.Step == leftovers.StepID && (ev.Kind == engine.EventDone || ev.Kind == engine.EventSkipped || ev.Kind == engine.EventFailed) {
					ended = ev.Kind
				}
			}})
			if err != nil || ended != engine.EventSkipped {
				t.Fatalf("destroy of the leftovers step: %v, ended with %d; want skipped (nothing to remove)", err, ended)
			}
			if n := px.Count(nil); n != tc.want {
				t.Errorf("%d calls, want %d look-ups", n, tc.want)
			}
			if peak := px.PeakInFlight(); peak != tc.want {
				t.Errorf("at most %d look-ups in flight together, want all %d", peak, tc.want)
			}
			if _, err := c.destroy(c.j); err != nil {
				t.Fatalf("destroy the network: %v", err)
			}
		})
	}
}
