package lifecycle

import (
	"context"
	"errors"
	"github.com/kforge/kforge/internal/preflight"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kforge/kforge/internal/cost"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/kubeconfig"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
)

// leaseStore is a local store whose locks can be lost, as a shared
// store's leases can.
type leaseStore struct {
	*state.Local
	lost chan struct{}
}

type leaseLock struct {
	state.Lock
	lost chan struct{}
}

func (l leaseLock) Lost() <-chan struct{} { return l.lost }

func (s leaseStore) Lock(ctx context.Context, ref spec.Ref, h state.Holder) (state.Lock, error) {
	lk, err := s.Local.Lock(ctx, ref, h)
	if err != nil {
		return nil, err
	}
	return leaseLock{Lock: lk, lost: s.lost}, nil
}

// graphProvider serves a fixed graph.
type graphProvider struct{ g *engine.Graph }

func (p graphProvider) Graph(spec.Spec) (*engine.Graph, error)    { return p.g, nil }
func (p graphProvider) Teardown(spec.Spec) (*engine.Graph, error) { return p.g, nil }
func (graphProvider) Check(context.Context, spec.Spec) error      { return nil }
func (graphProvider) Info(*state.Cluster) Info                    { return Info{} }
func (graphProvider) Review(spec.Spec) []string                   { return nil }
func (graphProvider) Session() Session                            { return NoSession{} }
func (graphProvider) Cost(spec.Spec) []cost.Item                  { return nil }
func (graphProvider) Preflight(spec.Spec) preflight.Facts         { return preflight.Facts{} }
func (graphProvider) Kubeconfig(context.Context, *state.Cluster, KubeconfigOptions) (kubeconfig.Entry, error) {
	return kubeconfig.Entry{}, nil
}

// TestLockLostStopsOperation loses the lock while a step runs: the step's
// context ends, no later step starts, and the operation reports the lost
// lock.
func TestLockLostStopsOperation(t *testing.T) {
	local, err := state.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := spec.Spec{Ref: spec.Ref{Type: spec.TypeEKS, Name: "lease", Region: "us-east-1"}, Version: spec.DefaultEKSVersion, NodeSize: spec.DefaultNodeSize, Nodes: 1}
	for _, op := range []string{"create", "scale", "delete"} {
		t.Run(op, func(t *testing.T) {
			store := leaseStore{Local: local, lost: make(chan struct{})}
			var once sync.Once
			var later atomic.Bool
			lose := func(ctx context.Context) error {
				once.Do(func() { close(store.lost) })
				<-ctx.Done()
				return ctx.Err()
			}
			g := engine.NewGraph()
			g.Add(&engine.Step{ID: "first", Inputs: op,
				Ensure: func(ctx context.Context, _ *engine.Run) (any, error) { return nil, lose(ctx) },
				Delete: func(ctx context.Context, _ *engine.Run) error { later.Store(true); return nil }},
				&engine.Step{ID: "second", Needs: []string{"first"},
					Ensure: func(ctx context.Context, _ *engine.Run) (any, error) { later.Store(true); return nil, nil },
					Delete: func(ctx context.Context, _ *engine.Run) error { return lose(ctx) }})
			r := &Runner{Store: store, Command: "test"}
			ctx := context.Background()
			var err error
			switch op {
			case "create":
				_, err = r.Create(ctx, graphProvider{g}, s, nil)
			case "scale":
				c, _ := local.Get(ctx, s.Ref)
				c.Status = state.StatusRunning
				if err := local.Put(ctx, c); err != nil {
					t.Fatal(err)
				}
				_, err = r.Scale(ctx, graphProvider{g}, s.Ref, func(s *spec.Spec) { s.Nodes = 2 })
			case "delete":
				_, err = r.Delete(ctx, graphProvider{g}, s.Ref, nil)
			}
			if !errors.Is(err, ErrLockLost) || !strings.Contains(err.Error(), "kforge info aws --name lease --region us-east-1") {
				t.Fatalf("%s after losing the lock: %v", op, err)
			}
			if later.Load() {
				t.Errorf("%s went on after losing the lock", op)
			}
			if _, err := local.Get(ctx, s.Ref); err != nil {
				t.Errorf("%s removed the state after losing the lock: %v", op, err)
			}
		})
	}
}
