package lifecycle

import (
	"context"
	"errors"
	"github.com/kforge/kforge/internal/preflight"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kforge/kforge/internal/cost"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/kubeconfig"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
)

// checkProvider counts its Checks, answers them with refuse (nil: pass)
// after a gate opens, and counts the creates of its one step.
type checkProvider struct {
	checks  atomic.Int32
	creates atomic.Int32
	refuse  error
	gate    chan struct{}
}

func (p *checkProvider) Graph(spec.Spec) (*engine.Graph, error) {
	g := engine.NewGraph()
	g.Add(&engine.Step{ID: "thing", Ensure: func(context.Context, *engine.Run) (any, error) {
		p.creates.Add(1)
		return nil, nil
	}})
	return g, nil
}
func (p *checkProvider) Teardown(s spec.Spec) (*engine.Graph, error) { return p.Graph(s) }
func (p *checkProvider) Preflight(spec.Spec) preflight.Facts         { return preflight.Facts{} }
func (p *checkProvider) Check(ctx context.Context, _ spec.Spec) error {
	p.checks.Add(1)
	if p.gate != nil {
		select {
		case <-p.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return p.refuse
}
func (*checkProvider) Info(*state.Cluster) Info   { return Info{} }
func (*checkProvider) Review(spec.Spec) []string  { return nil }
func (*checkProvider) Session() Session           { return NoSession{} }
func (*checkProvider) Cost(spec.Spec) []cost.Item { return nil }
func (*checkProvider) Kubeconfig(context.Context, *state.Cluster, KubeconfigOptions) (kubeconfig.Entry, error) {
	return kubeconfig.Entry{}, nil
}

// A provider's Check started before the lock stands in for the one Create
// would make, unless the cluster's state says otherwise once Create holds
// the lock.
func TestCreateWithCheckAhead(t *testing.T) {
	t.Parallel()
	refusal := spec.Usagef("the name belongs to another cluster")
	base := spec.Spec{Ref: spec.Ref{Type: spec.TypeEKS, Name: "ahead", Region: "us-east-1"}, Version: spec.DefaultEKSVersion, NodeSize: spec.DefaultNodeSize, Nodes: 1}
	other := base
	other.Nodes = 2
	tests := []struct {
		name string
		// before runs before StartCheck, meanwhile between StartCheck's
		// end and Create.
		before, meanwhile func(t *testing.T, store *state.Local)
		refuse            error
		checkSpec         spec.Spec // the spec given to StartCheck
		wantErr           error
		wantChecks        int32
		wantCreates       int32
		wantState         bool
	}{
		{name: "new cluster: one check, made ahead", checkSpec: base, wantChecks: 1, wantCreates: 1, wantState: true},
		{name: "refused ahead: nothing made", refuse: refusal, checkSpec: base, wantErr: refusal, wantChecks: 1},
		{name: "state appeared meanwhile: not checked", refuse: refusal, checkSpec: base,
			meanwhile:  func(t *testing.T, store *state.Local) { put(t, store, base, state.StatusFailed) },
			wantChecks: 1, wantCreates: 1, wantState: true},
		{name: "state vanished meanwhile: checked under the lock", checkSpec: base,
			before:     func(t *testing.T, store *state.Local) { put(t, store, base, state.StatusFailed) },
			meanwhile:  func(t *testing.T, store *state.Local) { remove(t, store, base.Ref) },
			wantChecks: 1, wantCreates: 1, wantState: true},
		{name: "state vanished meanwhile, refused under the lock", refuse: refusal, checkSpec: base,
			before:    func(t *testing.T, store *state.Local) { put(t, store, base, state.StatusFailed) },
			meanwhile: func(t *testing.T, store *state.Local) { remove(t, store, base.Ref) },
			wantErr:   refusal, wantChecks: 1},
		{name: "checked another spec: checked again", checkSpec: other, wantChecks: 2, wantCreates: 1, wantState: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			store, err := state.NewLocal(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			p := &checkProvider{refuse: tc.refuse}
			r := &Runner{Store: store, Command: "test"}
			ctx := context.Background()
			if tc.before != nil {
				tc.before(t, store)
			}
			ahead := r.StartCheck(ctx, p, tc.checkSpec)
			defer ahead.Stop()
			<-ahead.done
			if tc.meanwhile != nil {
				tc.meanwhile(t, store)
			}
			_, err = r.Create(ctx, p, base, ahead)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Create = %v, want %v", err, tc.wantErr)
			}
			if n := p.checks.Load(); n != tc.wantChecks {
				t.Errorf("%d checks, want %d", n, tc.wantChecks)
			}
			if n := p.creates.Load(); n != tc.wantCreates {
				t.Errorf("%d steps run, want %d", n, tc.wantCreates)
			}
			if _, err := store.Get(ctx, base.Ref); (err == nil) != tc.wantState {
				t.Errorf("state after Create: %v, want it to exist: %v", err, tc.wantState)
			}
		})
	}
}

// Create waits for a check that is still running, and Stop ends one that
// Create will not use.
func TestCheckAheadWaitAndStop(t *testing.T) {
	t.Parallel()
	s := spec.Spec{Ref: spec.Ref{Type: spec.TypeEKS, Name: "slow", Region: "us-east-1"}, Version: spec.DefaultEKSVersion, NodeSize: spec.DefaultNodeSize, Nodes: 1}
	store, err := state.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r := &Runner{Store: store, Command: "test"}

	p := &checkProvider{refuse: spec.Usagef("refused"), gate: make(chan struct{})}
	ahead := r.StartCheck(ctx, p, s)
	done := make(chan error, 1)
	go func() {
		_, err := r.Create(ctx, p, s, ahead)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Create returned %v before the check ended", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(p.gate)
	if err := <-done; err == nil || p.creates.Load() != 0 {
		t.Fatalf("Create after a refusal = %v, %d steps run", err, p.creates.Load())
	}

	stopped := &checkProvider{gate: make(chan struct{})}
	unused := r.StartCheck(ctx, stopped, s)
	unused.Stop()
	unused.Stop()
	if ran, err := unused.outcome(ctx, s); !ran || !errors.Is(err, context.Canceled) {
		t.Fatalf("a stopped check: ran %v, %v; want it cancelled", ran, err)
	}
}

func put(t *testing.T, store *state.Local, s spec.Spec, status string) {
	t.Helper()
	c := state.New(s, time.Now())
	c.Status = status
	if err := store.Put(context.Background(), c); err != nil {
		t.Fatal(err)
	}
}

func remove(t *testing.T, store *state.Local, ref spec.Ref) {
	t.Helper()
	if err := store.Delete(context.Background(), ref); err != nil {
		t.Fatal(err)
	}
}
