package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"
)

// EventKind says what happened to a step.
type EventKind int

// Event kinds.
const (
	EventStarted EventKind = iota
	EventWaiting
	EventDone
	EventSkipped
	EventFailed
	// EventDrift: a resource differs from what is wanted, or is gone;
	// Msg says how, before the engine repairs it.
	EventDrift
)

// Event is a step's progress, for whatever renders it.
type Event struct {
	Kind     EventKind
	Step     string
	Title    string
	Msg      string
	Elapsed  time.Duration
	Err      error
	Deleting bool
}

// DefaultParallel is how many steps run at once unless Options say
// otherwise. It is high on purpose: most of a step's time is spent waiting
// (for an instance to run, a VM to answer SSH, EKS to be ACTIVE), and a
// waiting step holds its place, so a low bound would make a hundred VMs
// launch and boot in rounds. What is scarce is bounded where it is used:
// AWS connections per endpoint (awsx), SSH handshakes (sshx), instance
// polls (batched by the ha provider).
const DefaultParallel = 256

// Options tune an execution.
type Options struct {
	// Parallel bounds how many steps run at once (default DefaultParallel).
	Parallel int
	// Events receives progress; calls are serialised.
	Events func(Event)
	// Stop, when closed, makes the executor start nothing new; running
	// steps finish and are journaled. Cancelling ctx stops them too.
	Stop <-chan struct{}
	// StepContext, if set, derives each step's context (to label the AWS
	// calls a step makes in a trace, say).
	StepContext func(ctx context.Context, step string) context.Context
	// Context is the run context steps read with Run.Context: what one run
	// of a provider shares (connections, caches of batched look-ups).
	Context any
}

// StepError is the failure of one step.
type StepError struct {
	Step  string
	Title string
	Err   error
}

// Error is the result of an execution that did not finish: the steps that
// failed, and whether it was stopped on request.
type Error struct {
	Failed      []StepError
	Interrupted bool
	// Pending counts steps that did not run.
	Pending int
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Interrupted {
		fmt.Fprintf(&b, "interrupted with %d step(s) not run", e.Pending)
	}
	for i, f := range e.Failed {
		if i > 0 || b.Len() > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %v", f.Step, f.Err)
	}
	return b.String()
}

// Unwrap exposes the step errors to errors.Is and errors.As.
func (e *Error) Unwrap() []error {
	errs := make([]error, len(e.Failed))
	for i, f := range e.Failed {
		errs[i] = f.Err
	}
	return errs
}

// ErrAbsent is what a step's Delete returns when there was nothing to
// delete: Destroy counts it as success and reports the step as skipped.
var ErrAbsent = errors.New("nothing to delete")

// ErrInterrupted matches an Error that was stopped on request.
var ErrInterrupted = errors.New("interrupted")

// Is makes errors.Is(err, ErrInterrupted) true for a stopped execution.
func (e *Error) Is(target error) bool { return target == ErrInterrupted && e.Interrupted }

// Apply reconciles every step of g: each resource is observed and
// created, repaired or kept; each action runs unless it ran with the same
// inputs and needs. Outputs are journaled the moment a step completes.
func Apply(ctx context.Context, g *Graph, j *Journal, o Options) error {
	_, err := reconcile(ctx, g, j, o, false)
	return err
}

// Change is what a reconcile would do to one step, as Diff reports it.
type Change struct {
	Step  string `json:"step"`
	Title string `json:"title"`
	// Kind is one of the Change* constants.
	Kind string `json:"kind"`
	// Detail says what was found ("i-0abc was terminated outside kforge").
	Detail string `json:"detail,omitempty"`
	// Resource is true for a resource (looked up in AWS), false for an
	// action (a script, a computed value).
	Resource bool `json:"resource"`
}

// Kinds of Change.
const (
	// ChangeCreate: the resource was never made (or the action never ran).
	ChangeCreate = "create"
	// ChangeRecreate: the state records the resource, but it is gone.
	ChangeRecreate = "recreate"
	// ChangeUpdate: the resource differs from what is wanted; a reconcile
	// puts it back.
	ChangeUpdate = "update"
	// ChangeUnsafe: the resource differs in a way kforge does not repair
	// (a reconcile stops there with what to do).
	ChangeUnsafe = "unsafe"
	// ChangeRerun: an action runs again (its inputs or what it depends
	// on changed, a replaced VM say).
	ChangeRerun = "rerun"
	// ChangePending: the step depends on a change above and is looked at
	// once that is made.
	ChangePending = "pending"
	// ChangeNone: nothing to do (Check only): a resource found as
	// recorded, an action that ran with the same inputs.
	ChangeNone = "none"
)

// Diff observes every resource of g without changing anything, and
// reports what a reconcile would do: what is missing, what drifted, which
// actions would run again. An empty report means in sync.
func Diff(ctx context.Context, g *Graph, j *Journal, o Options) ([]Change, error) {
	all, err := Check(ctx, g, j, o)
	var changes []Change
	for _, c := range all {
		if c.Kind != ChangeNone {
			changes = append(changes, c)
		}
	}
	return changes, err
}

// Check is Diff with every step in the report, in graph order: the
// steps a reconcile would leave alone have Kind ChangeNone (a resource
// found as recorded, an action that ran with the same inputs).
func Check(ctx context.Context, g *Graph, j *Journal, o Options) ([]Change, error) {
	return reconcile(ctx, g, j, o, true)
}

func reconcile(ctx context.Context, g *Graph, j *Journal, o Options, dry bool) ([]Change, error) {
	order, err := g.Order()
	if err != nil {
		return nil, err
	}
	deps := map[string][]string{}
	pos := map[string]int{}
	for i, s := range order {
		deps[s.ID] = s.Needs
		pos[s.ID] = i
	}
	x := newExec(j, o)
	if dry {
		x.obs = map[string]json.RawMessage{}
	}
	var mu sync.Mutex
	var changes []Change
	blocked := map[string]string{} // dry: steps whose output is not known, and why
	note := func(s *Step, kind, detail string, block bool) {
		mu.Lock()
		defer mu.Unlock()
		changes = append(changes, Change{Step: s.ID, Title: s.Title, Kind: kind, Detail: detail, Resource: s.Find != nil})
		if block {
			blocked[s.ID] = detail
		}
	}
	err = x.run(ctx, order, deps, dry, func(ctx context.Context, s *Step, r *Run, started func()) (bool, error) {
		if dry {
			mu.Lock()
			var after []string
			for _, n := range s.Needs {
				if _, ok := blocked[n]; ok {
					after = append(after, n)
				}
			}
			mu.Unlock()
			if len(after) > 0 {
				note(s, ChangePending, "after "+strings.Join(after, ", "), true)
				return false, nil
			}
		}
		fp, err := x.fingerprint(s, r)
		if err != nil {
			return true, err
		}
		rec, had := j.record(s.ID)
		if s.Find == nil {
			if had && (rec.Inputs == fp || rec.Inputs == legacyFingerprint(s)) {
				if !dry && rec.Inputs != fp {
					// A state from before dependency fingerprints: adopt.
					return false, j.put(ctx, s.ID, rec.Out, fp)
				}
				if dry {
					note(s, ChangeNone, "", false)
				}
				return false, nil
			}
			if dry {
				if had {
					x.observe(s.ID, rec.Out)
					note(s, ChangeRerun, "its inputs or a step it needs changed", false)
				} else {
					note(s, ChangeCreate, "", true)
				}
				return false, nil
			}
			started()
			return true, x.ensure(ctx, s, r, fp, s.Ensure)
		}
		obs, err := s.Find(ctx, r)
		if err != nil {
			return true, err
		}
		switch {
		case obs.Found && obs.Drift == "" && !obs.Unsafe:
			if dry {
				x.observe(s.ID, obs.Out)
				detail := ""
				if !had {
					detail = "found by its tags; not yet in the state"
				}
				note(s, ChangeNone, detail, false)
				return false, nil
			}
			if !had || !jsonEqual(rec.Out, obs.Out) || rec.Inputs != fp {
				return false, j.put(ctx, s.ID, obs.Out, fp)
			}
			return false, nil
		case obs.Found:
			if dry {
				// After the repair the output is what was wanted, which the
				// journal holds; steps after it are judged against that.
				if had {
					x.observe(s.ID, rec.Out)
				} else {
					x.observe(s.ID, obs.Out)
				}
				kind := ChangeUpdate
				if s.Update == nil || obs.Unsafe {
					kind = ChangeUnsafe
				}
				note(s, kind, obs.Drift, false)
				return false, nil
			}
			if s.Update == nil || obs.Unsafe {
				return true, &DriftError{Step: s.ID, Drift: obs.Drift}
			}
			x.emit(Event{Kind: EventDrift, Step: s.ID, Title: s.Title, Msg: obs.Drift + ": repairing it"})
			started()
			found := obs.Out
			return true, x.ensure(ctx, s, r, fp, func(ctx context.Context, r *Run) (any, error) { return s.Update(ctx, r, found) })
		default:
			detail := obs.Drift
			if detail == "" && had {
				detail = "recorded in the state, but not found"
			}
			if dry {
				kind := ChangeCreate
				if had {
					kind = ChangeRecreate
				}
				if s.Ensure == nil {
					kind = ChangeUnsafe
				}
				note(s, kind, detail, true)
				return false, nil
			}
			if s.Ensure == nil {
				if detail == "" {
					detail = "not found"
				}
				return true, &DriftError{Step: s.ID, Drift: detail}
			}
			if had {
				x.emit(Event{Kind: EventDrift, Step: s.ID, Title: s.Title, Msg: detail + ": making it again"})
			}
			started()
			return true, x.ensure(ctx, s, r, fp, s.Ensure)
		}
	})
	sort.SliceStable(changes, func(a, b int) bool { return pos[changes[a].Step] < pos[changes[b].Step] })
	return changes, err
}

// ensure runs a step's create (or update, or action) and journals what
// it returns.
func (x *exec) ensure(ctx context.Context, s *Step, r *Run, fp string, do func(context.Context, *Run) (any, error)) error {
	out, err := do(ctx, r)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(out)
	if err != nil {
		return fmt.Errorf("encode outputs: %w", err)
	}
	return x.j.put(ctx, s.ID, raw, fp)
}

// fingerprint hashes a step's inputs and the outputs of the steps it
// needs, as this run sees them: an action runs again when it changes.
func (x *exec) fingerprint(s *Step, r *Run) (string, error) {
	h := sha256.New()
	if s.Inputs != nil {
		b, err := json.Marshal(s.Inputs)
		if err != nil {
			return "", fmt.Errorf("encode inputs: %w", err)
		}
		h.Write(b)
	}
	needs := append([]string(nil), s.Needs...)
	sort.Strings(needs)
	for _, n := range needs {
		raw, _ := r.output(n)
		fmt.Fprintf(h, "\x00%s\x00%s", n, compactJSON(raw))
	}
	return "v2:" + hex.EncodeToString(h.Sum(nil))[:24], nil
}

// legacyFingerprint is the fingerprint states written before dependency
// fingerprints hold: the inputs alone.
func legacyFingerprint(s *Step) string {
	fp, err := fingerprint(s.Inputs)
	if err != nil {
		return "\x00"
	}
	return fp
}

// compactJSON removes insignificant space, so that equal outputs hash alike.
func compactJSON(raw json.RawMessage) []byte {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return raw
	}
	return b.Bytes()
}

func jsonEqual(a, b json.RawMessage) bool { return bytes.Equal(compactJSON(a), compactJSON(b)) }

// fingerprint hashes a step's inputs; no inputs give "".
func fingerprint(inputs any) (string, error) {
	if inputs == nil {
		return "", nil
	}
	b, err := json.Marshal(inputs)
	if err != nil {
		return "", fmt.Errorf("encode inputs: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12]), nil
}

// Destroy deletes every step of g in reverse dependency order: a step is
// deleted once every step that needs it is. Steps whose dependents failed
// are not attempted; independent branches go on, so that as much as
// possible is removed.
func Destroy(ctx context.Context, g *Graph, j *Journal, o Options) error {
	order, err := g.Order()
	if err != nil {
		return err
	}
	deps := map[string][]string{}
	for _, s := range order {
		for _, n := range s.Needs {
			deps[n] = append(deps[n], s.ID)
		}
	}
	for i, k := 0, len(order)-1; i < k; i, k = i+1, k-1 {
		order[i], order[k] = order[k], order[i]
	}
	x := newExec(j, o)
	return x.run(ctx, order, deps, true, func(ctx context.Context, s *Step, r *Run, started func()) (bool, error) {
		_, journaled := j.Done(s.ID)
		if s.Delete == nil {
			if journaled {
				return false, j.Forget(ctx, s.ID)
			}
			return false, nil
		}
		started()
		err := s.Delete(ctx, r)
		absent := errors.Is(err, ErrAbsent)
		if err != nil && !absent {
			return true, err
		}
		if journaled {
			if err := j.Forget(ctx, s.ID); err != nil {
				return true, err
			}
		}
		return !absent, nil
	})
}

// Reconcile moves a cluster from the graph of its old spec to that of its
// new one: steps only in the old graph are destroyed, then the new graph is
// applied.
func Reconcile(ctx context.Context, old, new *Graph, j *Journal, o Options) error {
	if gone := old.Without(new); gone.Len() > 0 {
		if err := Destroy(ctx, gone, j, o); err != nil {
			return err
		}
	}
	return Apply(ctx, new, j, o)
}

type exec struct {
	j    *Journal
	o    Options
	emu  sync.Mutex
	emit func(Event)

	// obs, in a diff, holds the outputs observed this run (nothing is
	// journaled).
	omu sync.Mutex
	obs map[string]json.RawMessage
}

// observe keeps an output observed by a diff for the steps after it.
func (x *exec) observe(id string, raw json.RawMessage) {
	x.omu.Lock()
	defer x.omu.Unlock()
	x.obs[id] = raw
}

// observed returns an output observed by a diff.
func (x *exec) observed(id string) (json.RawMessage, bool) {
	x.omu.Lock()
	defer x.omu.Unlock()
	raw, ok := x.obs[id]
	return raw, ok
}

func newExec(j *Journal, o Options) *exec {
	if o.Parallel <= 0 {
		o.Parallel = DefaultParallel
	}
	x := &exec{j: j, o: o}
	x.emit = func(e Event) {
		if o.Events == nil {
			return
		}
		x.emu.Lock()
		defer x.emu.Unlock()
		o.Events(e)
	}
	return x
}

type result struct {
	id  string
	err error
}

// run executes nodes in order, each once its deps are done. act reports
// whether it did anything (false: skipped) and its error.
func (x *exec) run(ctx context.Context, order []*Step, deps map[string][]string, goOn bool,
	act func(ctx context.Context, s *Step, r *Run, started func()) (bool, error)) error {
	waiting := map[string]int{}
	dependents := map[string][]string{}
	for _, s := range order {
		waiting[s.ID] = len(deps[s.ID])
		for _, d := range deps[s.ID] {
			dependents[d] = append(dependents[d], s.ID)
		}
	}
	byID := map[string]*Step{}
	var ready []string
	for _, s := range order {
		byID[s.ID] = s
		if waiting[s.ID] == 0 {
			ready = append(ready, s.ID)
		}
	}
	pos := map[string]int{}
	for i, s := range order {
		pos[s.ID] = i
	}
	deleting := goOn
	results := make(chan result)
	running, succeeded := 0, 0
	stopped := false
	blocked := map[string]bool{}
	var failed []StepError

	runs := map[string]*Run{}
	start := func(id string) {
		s := byID[id]
		sctx, cancel := context.WithCancel(ctx)
		r := &Run{step: s, j: x.j, x: x, emit: x.emit, started: time.Now(), cancel: cancel}
		runs[id] = r
		running++
		if x.o.StepContext != nil {
			sctx = x.o.StepContext(sctx, id)
		}
		go func() {
			defer cancel()
			ctx := sctx
			var err error
			var did bool
			func() {
				defer func() {
					if p := recover(); p != nil {
						err = fmt.Errorf("internal error: %v\n%s", p, debug.Stack())
					}
				}()
				did, err = act(ctx, s, r, func() {
					r.started = time.Now()
					x.emit(Event{Kind: EventStarted, Step: s.ID, Title: s.titleFor(deleting), Deleting: deleting})
				})
			}()
			switch {
			case err != nil:
				x.emit(Event{Kind: EventFailed, Step: s.ID, Title: s.titleFor(deleting), Err: err, Elapsed: time.Since(r.started), Deleting: deleting})
			case !did:
				x.emit(Event{Kind: EventSkipped, Step: s.ID, Title: s.titleFor(deleting), Deleting: deleting})
			default:
				x.emit(Event{Kind: EventDone, Step: s.ID, Title: s.titleFor(deleting), Elapsed: time.Since(r.started), Deleting: deleting})
			}
			results <- result{id: s.ID, err: err}
		}()
	}
	var block func(id string)
	block = func(id string) {
		for _, d := range dependents[id] {
			if !blocked[d] {
				blocked[d] = true
				block(d)
			}
		}
	}
	stopCh := x.o.Stop
	for {
		if !stopped && (len(failed) == 0 || goOn) && ctx.Err() == nil {
			sort.Slice(ready, func(a, b int) bool { return pos[ready[a]] < pos[ready[b]] })
			for len(ready) > 0 && running < x.o.Parallel {
				id := ready[0]
				ready = ready[1:]
				if blocked[id] {
					continue
				}
				start(id)
			}
		}
		if running == 0 {
			break
		}
		select {
		case res := <-results:
			running--
			delete(runs, res.id)
			if res.err != nil && stopped && errors.Is(res.err, context.Canceled) {
				continue // stopped while waiting: not done, not failed
			}
			if res.err != nil {
				failed = append(failed, StepError{Step: res.id, Title: byID[res.id].Title, Err: res.err})
				block(res.id)
				continue
			}
			succeeded++
			for _, d := range dependents[res.id] {
				waiting[d]--
				if waiting[d] == 0 {
					ready = append(ready, d)
				}
			}
		case <-stopCh:
			stopped = true
			stopCh = nil
			// Steps that wait on AWS or a VM are at a safe point: stop
			// them now; the others finish what they do.
			for _, r := range runs {
				r.interrupt()
			}
		case <-ctx.Done():
			stopped = true
			// Running steps see the cancellation and return.
			for running > 0 {
				res := <-results
				running--
				switch {
				case res.err == nil:
					succeeded++
				case !errors.Is(res.err, context.Canceled):
					failed = append(failed, StepError{Step: res.id, Title: byID[res.id].Title, Err: res.err})
				}
			}
		}
	}
	pending := len(order) - succeeded - len(failed)
	if len(failed) == 0 && pending == 0 {
		return nil
	}
	sort.Slice(failed, func(a, b int) bool { return pos[failed[a].Step] < pos[failed[b].Step] })
	return &Error{Failed: failed, Interrupted: stopped || ctx.Err() != nil, Pending: pending}
}
