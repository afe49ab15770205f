package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Run is what a step's function sees of the execution: the outputs of the
// steps it needs, its own journaled outputs, secrets, and a way to report
// that it is waiting.
type Run struct {
	step    *Step
	j       *Journal
	x       *exec
	emit    func(Event)
	started time.Time

	// A step that waits (r.Waiting) is at a safe point: a stop request
	// cancels its context; a resume waits again.
	mu       sync.Mutex
	cancel   context.CancelFunc
	waiting  bool
	stopping bool
}

// interrupt cancels the step if it is waiting, or as soon as it waits.
func (r *Run) interrupt() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopping = true
	if r.waiting && r.cancel != nil {
		r.cancel()
	}
}

// StepID returns the ID of the running step.
func (r *Run) StepID() string { return r.step.ID }

// Context returns the run context the executor was given (Options.Context):
// what one run of a provider shares between its steps (SSH connections,
// caches of batched look-ups). Providers read it with a type assertion.
func (r *Run) Context() any {
	if r.x == nil {
		return nil
	}
	return r.x.o.Context
}

// needs reports whether the running step declared id among its needs:
// a step reads only the outputs it declared (it is ordered after them).
// A step's own record (Delete reads what Ensure made) is always readable.
func (r *Run) needs(id string) bool {
	return id == r.step.ID || slices.Contains(r.step.Needs, id) || slices.Contains(r.step.reads, id)
}

// output is a step's output as this run sees it: what a diff observed, else
// what the journal holds.
func (r *Run) output(id string) (json.RawMessage, bool) {
	if r.x != nil {
		if raw, ok := r.x.observed(id); ok {
			return raw, true
		}
	}
	return r.j.Done(id)
}

// Prev returns this step's journaled outputs, if any: on Delete, what
// Ensure recorded.
func (r *Run) Prev() (json.RawMessage, bool) { return r.j.Done(r.step.ID) }

// PrevInto decodes this step's journaled outputs into v and reports whether
// there were any.
func (r *Run) PrevInto(v any) bool {
	raw, ok := r.Prev()
	if !ok || len(raw) == 0 {
		return false
	}
	return json.Unmarshal(raw, v) == nil
}

// Secret returns a secret kept in state.
func (r *Run) Secret(key string) ([]byte, bool) { return r.j.Secret(key) }

// SetSecret keeps a secret in state, saved at once.
func (r *Run) SetSecret(ctx context.Context, key string, v []byte) error {
	return r.j.SetSecret(ctx, key, v)
}

// Waiting reports that the step waits on something slow (AWS, a VM), so
// progress can show it with the elapsed time.
func (r *Run) Waiting(format string, a ...any) {
	r.mu.Lock()
	r.waiting = true
	if r.stopping && r.cancel != nil {
		r.cancel()
	}
	r.mu.Unlock()
	r.emit(Event{Kind: EventWaiting, Step: r.step.ID, Title: r.step.Title, Msg: fmt.Sprintf(format, a...), Elapsed: time.Since(r.started)})
}

// Out decodes the journaled outputs of step id (normally one the running
// step needs) into a T.
func Out[T any](r *Run, id string) (T, error) {
	var v T
	if !r.needs(id) {
		return v, fmt.Errorf("engine: step %s reads the output of %s, which it does not need", r.step.ID, id)
	}
	raw, ok := r.output(id)
	if !ok {
		return v, fmt.Errorf("engine: step %s reads outputs of %s, which is not done", r.step.ID, id)
	}
	if len(raw) == 0 || string(raw) == "null" {
		return v, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("engine: decode outputs of %s: %w", id, err)
	}
	return v, nil
}

// Lookup is Out for a step that may not be done or present: ok is false
// when it has no journaled outputs.
func Lookup[T any](r *Run, id string) (v T, ok bool) {
	if !r.needs(id) {
		return v, false
	}
	raw, done := r.output(id)
	if !done || len(raw) == 0 {
		return v, false
	}
	return v, json.Unmarshal(raw, &v) == nil
}

// PrevOf returns what the journal holds of another step, without this
// step being ordered after it: for a step that makes the resources of
// sibling steps too (one RunInstances for several VM slots) and must tell
// which of them were made before. It may change while this step runs.
func (r *Run) PrevOf(id string) (json.RawMessage, bool) { return r.j.Done(id) }

// TokenFor is Token for a create made on behalf of several steps (steps,
// in any order): the same whichever of them makes it, on every retry and
// resume; different once any of them had its resource deleted, or for a
// later cluster of the same name.
func (r *Run) TokenFor(steps []string, parts ...string) string {
	ids := slices.Clone(steps)
	slices.Sort(ids)
	h := sha256.New()
	for i, id := range ids {
		ref, created, gen := r.j.identity(id)
		if i == 0 {
			fmt.Fprintf(h, "%s\x00%s\x00%s\x00%d", ref.Type, ref.Name, ref.Region, created.UnixNano())
		}
		fmt.Fprintf(h, "\x00%s\x00%d", id, gen)
	}
	for _, p := range parts {
		fmt.Fprintf(h, "\x00%s", p)
	}
	return "kforge-" + hex.EncodeToString(h.Sum(nil))[:32]
}

// Token returns an idempotency token (ClientToken, ClientRequestToken) for
// a create made by this step: the same on every retry and resume, so AWS
// returns what the first call made instead of making a second one; and
// different for a later cluster of the same name, or after the step's
// resource was deleted (a scale down, then up), so AWS does not answer
// with the deleted resource. parts distinguish several creates of one step.
func (r *Run) Token(parts ...string) string {
	ref, created, gen := r.j.identity(r.step.ID)
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%d\x00%s\x00%d", ref.Type, ref.Name, ref.Region, created.UnixNano(), r.step.ID, gen)
	for _, p := range parts {
		fmt.Fprintf(h, "\x00%s", p)
	}
	return "kforge-" + hex.EncodeToString(h.Sum(nil))[:32]
}
