package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
)

// Journal records completed steps and secrets in a cluster's state, writing
// it to the store after every change. It is safe for concurrent steps.
//
// Saves are group commits: a change returns once a save that includes it
// is done, and the changes made while one save runs go together in the
// next. When a hundred steps finish at once, they cost a few saves instead
// of a hundred in a row; and steps reading outputs never wait for a save.
type Journal struct {
	mu    sync.Mutex // guards c, changes and saved
	store state.Store
	c     *state.Cluster
	now   func() time.Time

	// changes counts the changes made to c; saved, the changes the store
	// holds. saving is held by the one save running.
	changes, saved uint64
	saving         sync.Mutex
}

// NewJournal journals into c, persisting through store.
func NewJournal(store state.Store, c *state.Cluster) *Journal {
	if c.Steps == nil {
		c.Steps = map[string]state.StepRecord{}
	}
	if c.Secrets == nil {
		c.Secrets = map[string][]byte{}
	}
	return &Journal{store: store, c: c, now: time.Now}
}

// Done reports whether a step is recorded, with its outputs.
func (j *Journal) Done(id string) (json.RawMessage, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	r, ok := j.c.Steps[id]
	return r.Out, ok
}

// Record journals a completed step and saves the state.
func (j *Journal) Record(ctx context.Context, id string, out json.RawMessage) error {
	return j.put(ctx, id, out, "")
}

// record returns a step's journal record.
func (j *Journal) record(id string) (state.StepRecord, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	r, ok := j.c.Steps[id]
	return r, ok
}

// put journals a step's outputs with its fingerprint and saves.
func (j *Journal) put(ctx context.Context, id string, out json.RawMessage, fp string) error {
	return j.Update(ctx, func(c *state.Cluster) {
		c.Steps[id] = state.StepRecord{Out: out, Inputs: fp, Done: j.now().UTC()}
	})
}

// Forget removes a step from the journal, counts a new generation of it
// (its next create gets a new idempotency token), and saves the state.
func (j *Journal) Forget(ctx context.Context, id string) error {
	return j.Update(ctx, func(c *state.Cluster) {
		delete(c.Steps, id)
		if c.Generations == nil {
			c.Generations = map[string]int{}
		}
		c.Generations[id]++
	})
}

// Secret returns a stored secret.
func (j *Journal) Secret(key string) ([]byte, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	v, ok := j.c.Secrets[key]
	return v, ok
}

// SetSecret stores a secret and saves the state at once.
func (j *Journal) SetSecret(ctx context.Context, key string, v []byte) error {
	return j.Update(ctx, func(c *state.Cluster) { c.Secrets[key] = v })
}

// Update changes the state under the journal's lock and saves it,
// returning once a save that includes the change is done. The save does
// not honour ctx cancellation: a completed step is always journaled.
func (j *Journal) Update(ctx context.Context, change func(c *state.Cluster)) error {
	j.mu.Lock()
	change(j.c)
	j.c.Updated = j.now().UTC()
	j.changes++
	mine := j.changes
	j.mu.Unlock()

	j.saving.Lock()
	defer j.saving.Unlock()
	j.mu.Lock()
	if j.saved >= mine {
		// The save that ran while this one waited included the change.
		j.mu.Unlock()
		return nil
	}
	snapshot, upTo := j.c.Clone(), j.changes
	j.mu.Unlock()
	if err := j.store.Put(context.WithoutCancel(ctx), snapshot); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	j.mu.Lock()
	j.saved = upTo
	j.mu.Unlock()
	return nil
}

// Cluster returns a snapshot of the journaled state.
func (j *Journal) Cluster() *state.Cluster {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.c.Clone()
}

// identity returns the cluster's ref, its creation time and the
// generation of a step.
func (j *Journal) identity(step string) (spec.Ref, time.Time, int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.c.Spec.Ref, j.c.Created, j.c.Generations[step]
}
