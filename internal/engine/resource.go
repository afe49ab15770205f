package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
)

// Dep is a step another step needs: a Ref (typed) or an ID (Needs).
type Dep interface{ depID() string }

// ID names a step as a dependency whose output is not read (ordering only).
type ID string

func (id ID) depID() string { return string(id) }

// Ref is a typed handle on the output of a step. It is what Add returns,
// and what a step lists in its Needs to read that output with Get: a step
// reads only what it declared.
type Ref[T any] struct{ id string }

// RefTo names the output of a step added elsewhere (by another package's
// graph builder) with its type.
func RefTo[T any](id string) Ref[T] { return Ref[T]{id: id} }

func (r Ref[T]) depID() string { return r.id }

// ID is the step's ID.
func (r Ref[T]) ID() string { return r.id }

// Get returns the output of r's step. The running step must need it.
func (r Ref[T]) Get(run *Run) (T, error) {
	var v T
	if !run.needs(r.id) {
		return v, fmt.Errorf("engine: step %s reads the output of %s, which it does not need", run.step.ID, r.id)
	}
	raw, ok := run.output(r.id)
	if !ok {
		return v, fmt.Errorf("engine: step %s reads the output of %s, which is not done", run.step.ID, r.id)
	}
	if len(raw) == 0 || string(raw) == "null" {
		return v, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("engine: decode the output of %s: %w", r.id, err)
	}
	return v, nil
}

// Observation is what a resource's Find saw.
type Observation[T any] struct {
	// Found is false when the resource does not exist (it was never made,
	// or was deleted outside kforge).
	Found bool
	// Out describes what exists: the step's output when nothing drifted.
	Out T
	// Drift, when not empty, says how what exists differs from what is
	// wanted ("rule tcp/22 from 0.0.0.0/0 was revoked"); Update repairs it.
	Drift string
	// Unsafe says the drift must not be repaired by kforge (a resource now
	// owned by another cluster): the run stops there, whatever Update.
	Unsafe bool
}

// Missing is the observation of a resource that does not exist.
func Missing[T any]() Observation[T] { return Observation[T]{} }

// InSync observes a resource that exists as wanted.
func InSync[T any](out T) Observation[T] { return Observation[T]{Found: true, Out: out} }

// Drifted observes a resource that exists but differs from what is
// wanted.
func Drifted[T any](out T, format string, a ...any) Observation[T] {
	return Observation[T]{Found: true, Out: out, Drift: fmt.Sprintf(format, a...)}
}

// Resource is a thing in AWS (or on a VM) that kforge owns, reconciled
// on every run: Find observes it (from the ID in prev, else by its tags or
// name), then the engine creates it if it is missing, updates it if it
// drifted, or keeps it. The same Resource serves create, resume, diff,
// repair and delete.
type Resource[T any] struct {
	ID    string
	Title string
	// DeleteTitle, if set, is the title of the resource's delete.
	DeleteTitle string
	// Needs are the steps that must be done first; a Ref in Needs may be
	// read with Get.
	Needs []Dep
	// Inputs are the wanted settings Find compares against (fingerprinted
	// in the journal, for diff's report).
	Inputs any
	// Find observes the resource. prev is its journaled output (nil on a
	// first create or when the state was lost). It must not change
	// anything: diff runs it too.
	Find func(ctx context.Context, r *Run, prev *T) (Observation[T], error)
	// Create makes the resource (it is missing) and returns its output.
	Create func(ctx context.Context, r *Run) (T, error)
	// Update brings a drifted resource back to the wanted settings. Nil
	// means drift cannot be repaired safely: the run stops with a
	// *DriftError that says what was found.
	Update func(ctx context.Context, r *Run, found T) (T, error)
	// Delete removes the resource (prev: its journaled output, nil if the
	// state was lost). Nil means kforge never deletes it.
	Delete func(ctx context.Context, r *Run, prev *T) error
}

// Add adds a resource to the graph and returns the handle on its output.
func Add[T any](g *Graph, res Resource[T]) Ref[T] {
	s := &Step{ID: res.ID, Title: res.Title, DeleteTitle: res.DeleteTitle, Needs: depIDs(res.Needs), Inputs: res.Inputs}
	prevOf := func(r *Run) *T {
		var v T
		if !r.PrevInto(&v) {
			return nil
		}
		return &v
	}
	s.Find = func(ctx context.Context, r *Run) (RawObservation, error) {
		o, err := res.Find(ctx, r, prevOf(r))
		if err != nil {
			return RawObservation{}, err
		}
		raw, err := json.Marshal(o.Out)
		if err != nil {
			return RawObservation{}, fmt.Errorf("encode outputs: %w", err)
		}
		if !o.Found {
			raw = nil
		}
		return RawObservation{Found: o.Found, Out: raw, Drift: o.Drift, Unsafe: o.Unsafe}, nil
	}
	if res.Create != nil {
		s.Ensure = func(ctx context.Context, r *Run) (any, error) { return res.Create(ctx, r) }
	}
	if res.Update != nil {
		s.Update = func(ctx context.Context, r *Run, found json.RawMessage) (any, error) {
			var v T
			if err := json.Unmarshal(found, &v); err != nil {
				return nil, fmt.Errorf("decode what was found: %w", err)
			}
			return res.Update(ctx, r, v)
		}
	}
	if res.Delete != nil {
		s.Delete = func(ctx context.Context, r *Run) error { return res.Delete(ctx, r, prevOf(r)) }
	}
	g.Add(s)
	return Ref[T]{id: res.ID}
}

// Action is work kforge does rather than a thing it finds: a script run
// on a VM, a secret generated once. It runs when it has not run yet, and
// again when its Inputs or the output of a step it needs changed since
// (a VM was replaced, say), so an action must be safe to run twice.
type Action[T any] struct {
	ID     string
	Title  string
	Needs  []Dep
	Inputs any
	// Do does the work and returns the step's output.
	Do func(ctx context.Context, r *Run) (T, error)
	// Undo, if set, reverses it on delete or scale down.
	Undo func(ctx context.Context, r *Run, prev *T) error
}

// AddAction adds an action to the graph and returns the handle on its
// output.
func AddAction[T any](g *Graph, a Action[T]) Ref[T] {
	s := &Step{ID: a.ID, Title: a.Title, Needs: depIDs(a.Needs), Inputs: a.Inputs,
		Ensure: func(ctx context.Context, r *Run) (any, error) { return a.Do(ctx, r) }}
	if a.Undo != nil {
		s.Delete = func(ctx context.Context, r *Run) error {
			var v T
			if !r.PrevInto(&v) {
				return a.Undo(ctx, r, nil)
			}
			return a.Undo(ctx, r, &v)
		}
	}
	g.Add(s)
	return Ref[T]{id: a.ID}
}

// Needs lists dependencies: Refs, IDs, or the IDs of steps given by name.
func Needs(deps ...Dep) []Dep { return deps }

func depIDs(deps []Dep) []string {
	out := make([]string, 0, len(deps))
	for _, d := range deps {
		if d == nil {
			continue
		}
		if id := d.depID(); !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// RawObservation is an Observation with the output encoded, as steps hold
// it.
type RawObservation struct {
	Found  bool
	Out    json.RawMessage
	Drift  string
	Unsafe bool
}

// DriftError stops a run at drift kforge cannot repair safely.
type DriftError struct {
	Step  string
	Drift string
}

func (e *DriftError) Error() string {
	return fmt.Sprintf("%s: %s", e.Step, e.Drift)
}

// Unsafe observes a resource in a state kforge must not repair itself
// (it carries another cluster's tags, say): the run stops with a
// *DriftError whose text says what was found and what to do.
func Unsafe[T any](format string, a ...any) Observation[T] {
	return Observation[T]{Found: true, Unsafe: true, Drift: fmt.Sprintf(format, a...)}
}

// Gone observes a resource that the state records but that no longer
// exists, saying what was found ("i-0abc was terminated outside kforge").
func Gone[T any](format string, a ...any) Observation[T] {
	return Observation[T]{Drift: fmt.Sprintf(format, a...)}
}

// DepID is the step ID a dependency names.
func DepID(d Dep) string { return d.depID() }
