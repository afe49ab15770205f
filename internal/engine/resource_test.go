package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// cloud is a fake AWS: things by ID, with a wanted size.
type cloud struct {
	mu      sync.Mutex
	things  map[string]int // id -> size
	next    int
	creates int
	updates int
	finds   int
}

func newCloud() *cloud { return &cloud{things: map[string]int{}} }

type thing struct {
	ID   string `json:"id"`
	Size int    `json:"size"`
}

// resource is a thing of the wanted size, found by the ID in the state.
func (c *cloud) resource(g *Graph, id string, size int, needs ...Dep) Ref[thing] {
	return Add(g, Resource[thing]{
		ID: id, Title: "thing " + id, Needs: needs,
		Find: func(ctx context.Context, r *Run, prev *thing) (Observation[thing], error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.finds++
			if prev == nil {
				return Missing[thing](), nil
			}
			have, ok := c.things[prev.ID]
			if !ok {
				return Gone[thing]("%s was deleted outside kforge", prev.ID), nil
			}
			if have != size {
				return Drifted(thing{prev.ID, have}, "size is %d, want %d", have, size), nil
			}
			return InSync(thing{prev.ID, have}), nil
		},
		Create: func(ctx context.Context, r *Run) (thing, error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.next++
			c.creates++
			t := thing{fmt.Sprintf("t-%d", c.next), size}
			c.things[t.ID] = size
			return t, nil
		},
		Update: func(ctx context.Context, r *Run, found thing) (thing, error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.updates++
			c.things[found.ID] = size
			return thing{found.ID, size}, nil
		},
		Delete: func(ctx context.Context, r *Run, prev *thing) error {
			c.mu.Lock()
			defer c.mu.Unlock()
			if prev == nil {
				return ErrAbsent
			}
			delete(c.things, prev.ID)
			return nil
		},
	})
}

func TestResourceFindCreateRepair(t *testing.T) {
	c := newCloud()
	j, _ := newJournal(t)
	ctx := context.Background()
	ran := map[string]int{}
	var mu sync.Mutex
	var events []Event
	mk := func() *Graph {
		g := NewGraph()
		vm := c.resource(g, "vm", 2)
		AddAction(g, Action[string]{ID: "boot", Title: "bootstrap the vm", Needs: Needs(vm),
			Do: func(ctx context.Context, r *Run) (string, error) {
				v, err := vm.Get(r)
				mu.Lock()
				ran["boot"]++
				mu.Unlock()
				return "booted " + v.ID, err
			}})
		return g
	}
	opts := Options{Events: func(e Event) { mu.Lock(); events = append(events, e); mu.Unlock() }}
	if err := Apply(ctx, mk(), j, opts); err != nil {
		t.Fatal(err)
	}
	// Unchanged: found, nothing made, the action does not run again.
	if err := Apply(ctx, mk(), j, opts); err != nil {
		t.Fatal(err)
	}
	if c.creates != 1 || ran["boot"] != 1 || c.finds != 2 {
		t.Fatalf("creates %d, boots %d, finds %d; want 1, 1, 2", c.creates, ran["boot"], c.finds)
	}
	if ch, err := Diff(ctx, mk(), j, opts); err != nil || len(ch) != 0 {
		t.Fatalf("in sync: diff %v, %v", ch, err)
	}
	// Check reports every step, the resource found as recorded.
	if st, err := Check(ctx, mk(), j, opts); err != nil || len(st) != 2 ||
		st[0] != (Change{Step: "vm", Title: st[0].Title, Kind: ChangeNone, Resource: true}) ||
		st[1].Step != "boot" || st[1].Kind != ChangeNone || st[1].Resource {
		t.Fatalf("in sync: check %+v, %v", st, err)
	}

	// Drift: diff reports it, a reconcile repairs it in place.
	c.things["t-1"] = 7
	ch, err := Diff(ctx, mk(), j, opts)
	if err != nil || len(ch) != 1 || ch[0].Kind != ChangeUpdate || !strings.Contains(ch[0].Detail, "size is 7") {
		t.Fatalf("drift: diff %+v, %v", ch, err)
	}
	if st, err := Check(ctx, mk(), j, opts); err != nil || len(st) != 2 || st[0].Kind != ChangeUpdate || st[1].Kind != ChangeNone {
		t.Fatalf("drift: check %+v, %v", st, err)
	}
	if c.updates != 0 {
		t.Fatal("diff changed something")
	}
	if err := Apply(ctx, mk(), j, opts); err != nil {
		t.Fatal(err)
	}
	if c.updates != 1 || c.things["t-1"] != 2 || ran["boot"] != 1 {
		t.Fatalf("after repair: updates %d, size %d, boots %d", c.updates, c.things["t-1"], ran["boot"])
	}

	// Gone: recreated, and the action that depends on it runs again.
	delete(c.things, "t-1")
	ch, err = Diff(ctx, mk(), j, opts)
	if err != nil || len(ch) != 2 || ch[0].Kind != ChangeRecreate || !strings.Contains(ch[0].Detail, "deleted outside kforge") || ch[1].Kind != ChangePending {
		t.Fatalf("gone: diff %+v, %v", ch, err)
	}
	events = nil
	if err := Apply(ctx, mk(), j, opts); err != nil {
		t.Fatal(err)
	}
	if c.creates != 2 || ran["boot"] != 2 {
		t.Fatalf("after recreate: creates %d, boots %d", c.creates, ran["boot"])
	}
	var drift []string
	for _, e := range events {
		if e.Kind == EventDrift {
			drift = append(drift, e.Msg)
		}
	}
	if len(drift) != 1 || !strings.Contains(drift[0], "t-1 was deleted outside kforge: making it again") {
		t.Errorf("drift events = %q", drift)
	}
	out, _ := j.Done("boot")
	if !strings.Contains(string(out), "t-2") {
		t.Errorf("the action's output %s does not name the new vm", out)
	}
}

func TestUnrepairableDriftStops(t *testing.T) {
	j, _ := newJournal(t)
	g := NewGraph()
	made := 0
	Add(g, Resource[string]{ID: "vpc", Title: "shared VPC",
		Find: func(ctx context.Context, r *Run, prev *string) (Observation[string], error) {
			return Gone[string]("VPC vpc-1 (not kforge's) was deleted"), nil
		}})
	AddAction(g, Action[int]{ID: "after", Needs: Needs(ID("vpc")), Do: func(context.Context, *Run) (int, error) { made++; return 1, nil }})
	err := Apply(context.Background(), g, j, Options{})
	var de *DriftError
	if !errors.As(err, &de) || de.Step != "vpc" || !strings.Contains(de.Drift, "was deleted") || made != 0 {
		t.Fatalf("err %v, made %d; want a DriftError on vpc and nothing after it", err, made)
	}
	ch, err := Diff(context.Background(), g, j, Options{})
	if err != nil || len(ch) != 2 || ch[0].Kind != ChangeUnsafe {
		t.Fatalf("diff %+v, %v", ch, err)
	}
}

func TestRefReadsOnlyDeclaredNeeds(t *testing.T) {
	j, _ := newJournal(t)
	g := NewGraph()
	a := AddAction(g, Action[int]{ID: "a", Do: func(context.Context, *Run) (int, error) { return 1, nil }})
	AddAction(g, Action[int]{ID: "b", Needs: Needs(ID("a")), Do: func(context.Context, *Run) (int, error) { return 2, nil }})
	AddAction(g, Action[int]{ID: "c", Needs: Needs(ID("b")), Do: func(ctx context.Context, r *Run) (int, error) {
		return a.Get(r) // a is done, but c did not declare it
	}})
	err := Apply(context.Background(), g, j, Options{})
	if err == nil || !strings.Contains(err.Error(), "does not need") {
		t.Fatalf("err = %v, want a refusal to read an undeclared output", err)
	}
}
