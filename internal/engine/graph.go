// Package engine reconciles a cluster as a graph of steps.
//
// A provider (eks, ha) turns a cluster spec into a Graph without calling
// AWS. Each Step has a stable ID that says what it is ("vpc", "role/cp",
// "instance/wp/3"), the IDs of the steps it needs, and two idempotent
// functions: Ensure finds its resource (by the ID journaled in state, else by
// tags or deterministic name) and creates it only if absent; Delete removes it
// and treats "not found" as success.
//
// The executor runs every step whose needs are met, concurrently and with a
// bound, journals each result into the state store the moment it completes,
// and on a failure or a stop request starts nothing new, lets running steps
// finish and reports every failure. A step recorded in the journal is done:
// running a command again after a crash or Ctrl-C resumes where it stopped.
// Destroy walks the graph in reverse dependency order; a scale is the
// difference between the graph of the old spec and that of the new one.
// The same graph, printed in order, is the --dry-run plan.
package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
)

// Step is one unit of reconciliation, as the executor runs it. Providers
// make steps with Add (a Resource) or AddAction (an Action); a Step made
// directly is an action.
//
// A step with Find is a resource: every run observes it, then creates it
// (missing), updates it (drifted) or keeps it. A step without Find is an
// action: it runs when it has not, and again when its Inputs or the
// output of a step it needs changed since it last ran.
type Step struct {
	// ID is stable across runs and says what the step is.
	ID string
	// Needs lists the IDs of steps that must be done first.
	Needs []string
	// Title says, for the plan and progress, what the step makes.
	Title string
	// DeleteTitle, if set, says it for a delete ("EKS cluster demo (EKS
	// takes about 10 minutes to delete it)"): the progress of a delete
	// must not read like a create.
	DeleteTitle string
	// Inputs, if set, are the wanted settings of the resource (a size, a
	// member list). They are fingerprinted into the journal with the
	// outputs of the steps the step needs.
	Inputs any
	// Ensure creates the resource (or does the action) and returns its
	// outputs (JSON-encodable), which later steps read.
	Ensure func(ctx context.Context, r *Run) (any, error)
	// Find observes a resource on every run (nil for an action).
	Find func(ctx context.Context, r *Run) (RawObservation, error)
	// Update repairs a resource's drift; nil when it cannot be repaired
	// safely.
	Update func(ctx context.Context, r *Run, found json.RawMessage) (any, error)
	// Delete removes the resource; r.Prev holds the journaled outputs, if
	// any. Nil means there is nothing to delete.
	Delete func(ctx context.Context, r *Run) error

	// reads are needs dropped from Needs by Without (a scale's removal),
	// whose outputs the step may still read.
	reads []string
}

// Graph is a set of steps and their dependencies.
type Graph struct {
	steps []*Step
	byID  map[string]*Step
}

// NewGraph returns an empty graph.
func NewGraph() *Graph { return &Graph{byID: map[string]*Step{}} }

// Add adds steps to the graph. Adding an ID twice panics: it is a bug in
// the provider that builds the graph.
func (g *Graph) Add(steps ...*Step) {
	for _, s := range steps {
		if _, dup := g.byID[s.ID]; dup {
			panic("engine: duplicate step " + s.ID)
		}
		g.steps = append(g.steps, s)
		g.byID[s.ID] = s
	}
}

// Step returns the step with the given ID, or nil.
func (g *Graph) Step(id string) *Step { return g.byID[id] }

// Len returns the number of steps.
func (g *Graph) Len() int { return len(g.steps) }

// IDs returns the step IDs in insertion order.
func (g *Graph) IDs() []string {
	ids := make([]string, len(g.steps))
	for i, s := range g.steps {
		ids[i] = s.ID
	}
	return ids
}

// Order returns the steps in a dependency order (each after what it needs),
// keeping insertion order where dependencies allow. It reports unknown
// needs and cycles.
func (g *Graph) Order() ([]*Step, error) {
	for _, s := range g.steps {
		for _, n := range s.Needs {
			if g.byID[n] == nil {
				return nil, fmt.Errorf("engine: step %s needs unknown step %s", s.ID, n)
			}
		}
	}
	done := map[string]bool{}
	var out []*Step
	for len(out) < len(g.steps) {
		progressed := false
		for _, s := range g.steps {
			if done[s.ID] {
				continue
			}
			ready := true
			for _, n := range s.Needs {
				if !done[n] {
					ready = false
					break
				}
			}
			if ready {
				done[s.ID] = true
				out = append(out, s)
				progressed = true
			}
		}
		if !progressed {
			var stuck []string
			for _, s := range g.steps {
				if !done[s.ID] {
					stuck = append(stuck, s.ID)
				}
			}
			return nil, fmt.Errorf("engine: dependency cycle among %s", strings.Join(stuck, ", "))
		}
	}
	return out, nil
}

// Without returns a graph of the steps of g whose IDs are not in other,
// with needs pointing outside it dropped. It is what a scale removes.
func (g *Graph) Without(other *Graph) *Graph {
	return g.Only(func(s *Step) bool { return other.byID[s.ID] == nil })
}

// Only returns a graph of the steps of g that keep selects. A need on a
// step left out is dropped from Needs (it neither orders nor re-runs the
// step), but the step may still read its journaled output: an operation
// that runs part of a cluster's steps (an upgrade) reads what the others
// made.
func (g *Graph) Only(keep func(*Step) bool) *Graph {
	r := NewGraph()
	for _, s := range g.steps {
		if !keep(s) {
			continue
		}
		c := *s
		c.Needs = nil
		c.reads = slices.Clone(s.reads)
		for _, n := range s.Needs {
			if st := g.byID[n]; st != nil && keep(st) {
				c.Needs = append(c.Needs, n)
			} else {
				c.reads = append(c.reads, n)
			}
		}
		r.Add(&c)
	}
	return r
}

// Union returns a graph of the steps of all graphs; a step present in
// several is taken from the first that has it.
func Union(graphs ...*Graph) *Graph {
	r := NewGraph()
	for _, g := range graphs {
		for _, s := range g.steps {
			if r.byID[s.ID] == nil {
				r.Add(s)
			}
		}
	}
	return r
}

// CriticalPath returns the length, in steps, of the longest chain of
// dependent steps: the number of waves of the plan.
func (g *Graph) CriticalPath() int {
	order, err := g.Order()
	if err != nil {
		return 0
	}
	max := 0
	for _, d := range waves(order) {
		if d > max {
			max = d
		}
	}
	return max
}

// waves returns each step's wave: 1 for a step that needs nothing, else
// one more than the latest wave of the steps it needs (the longest chain
// of dependencies before it, plus one). The steps of a wave can all run
// at once. order is a dependency order.
func waves(order []*Step) map[string]int {
	wave := map[string]int{}
	for _, s := range order {
		w := 1
		for _, n := range s.Needs {
			w = max(w, wave[n]+1)
		}
		wave[s.ID] = w
	}
	return wave
}

// PlanEntry is one line of a plan.
type PlanEntry struct {
	Step  string   `json:"step"`
	Title string   `json:"title"`
	Needs []string `json:"needs,omitempty"`
	Done  bool     `json:"done,omitempty"`
	// Wave is when the step can run at the earliest: 1 for a step that
	// needs nothing, else one more than the latest wave of its needs.
	Wave int `json:"wave"`
}

// Plan lists the steps wave by wave (each after what it needs), in
// dependency order within a wave. done reports steps already journaled.
func (g *Graph) Plan(done func(id string) bool) ([]PlanEntry, error) {
	order, err := g.Order()
	if err != nil {
		return nil, err
	}
	wave := waves(order)
	out := make([]PlanEntry, len(order))
	for i, s := range order {
		needs := append([]string(nil), s.Needs...)
		sort.Strings(needs)
		out[i] = PlanEntry{Step: s.ID, Title: s.Title, Needs: needs, Done: done != nil && done(s.ID), Wave: wave[s.ID]}
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].Wave < out[b].Wave })
	return out, nil
}

// WritePlan prints a plan as a numbered list, wave by wave: the steps of
// a wave can all run at once, after those of the waves before.
func WritePlan(w io.Writer, plan []PlanEntry) {
	width, last := 0, 0
	for _, e := range plan {
		width = max(width, len(e.Step))
		last = max(last, e.Wave)
	}
	for i, e := range plan {
		if i == 0 || e.Wave != plan[i-1].Wave {
			fmt.Fprintf(w, "wave %d of %d:\n", e.Wave, last)
		}
		mark := ""
		if e.Done {
			mark = " (done)"
		}
		fmt.Fprintf(w, "%3d. %-*s  %s%s\n", i+1, width, e.Step, e.Title, mark)
		if len(e.Needs) > 0 {
			fmt.Fprintf(w, "     %-*s  after %s\n", width, "", strings.Join(e.Needs, ", "))
		}
	}
}

// titleFor returns the step's title for a run that creates or deletes.
func (s *Step) titleFor(deleting bool) string {
	if deleting && s.DeleteTitle != "" {
		return s.DeleteTitle
	}
	return s.Title
}
