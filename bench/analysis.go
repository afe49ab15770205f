// Package bench measures how close kforge's lifecycle operations come to
// the time AWS itself makes them take.
//
// The benchmarks (bench_test.go, run by bench/run) start the AWS emulator
// and a proxy that adds a fixed latency to every AWS call, run kforge's
// commands against it, and compare each wall time with a critical-path
// bound computed from kforge's own AWS trace (KFORGE_AWS_TRACE) and its
// step graph. This file holds that computation, so that it is tested on
// its own (analysis_test.go) and documented in one place.
//
// # The critical-path bound
//
// A call's round trip costs at least the added latency L. Calls that
// overlap in time do not depend on each other; calls that follow each other
// may. The bound counts, in units of L:
//
//   - per step of the graph, its waves: the largest number of its calls no
//     two of which overlap in time (calls of one step that run one after the
//     other count once each; calls that run together count once). Every
//     attempt counts, failed ones and retries too.
//   - plus, for a step that waits for an instance (a VM launch, a teardown
//     that terminates VMs), the poll rounds of the shared instance watcher
//     it needed: at least one DescribeInstances must see the instance in
//     the wanted state after it was launched or terminated (see
//     [Scenario.WaitRounds]).
//   - the longest path through the step graph (each step after every step
//     it needs; for a teardown the reverse, which has the same longest
//     path) weighted by those waves.
//   - plus the waves of the calls made before the graph starts, outside any
//     step (credential check, preflight, the provider's Check), and after
//     it ends, counted as a chain the same way.
//
// The bound is those waves times L. Calls made during the graph outside
// any step and outside the watcher are reported as unattributed and not
// counted.
package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// WatchLabel is the trace label of the instance watcher's batched polls.
const WatchLabel = "instance-watch"

// Call is one AWS call attempt, as KFORGE_AWS_TRACE records it.
type Call struct {
	Time      time.Time `json:"time"`
	Step      string    `json:"step"`
	Service   string    `json:"service"`
	Operation string    `json:"operation"`
	Attempt   int       `json:"attempt"`
	Status    int       `json:"status"`
	Code      string    `json:"code"`
	Millis    float64   `json:"ms"`
}

// End returns when the call's answer arrived.
func (c Call) End() time.Time {
	return c.Time.Add(time.Duration(c.Millis * float64(time.Millisecond)))
}

// Name returns the call as Service:Operation.
func (c Call) Name() string { return c.Service + ":" + c.Operation }

// ReadTrace reads a KFORGE_AWS_TRACE file: one JSON record per line.
func ReadTrace(r io.Reader) ([]Call, error) {
	var calls []Call
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var c Call
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			return nil, fmt.Errorf("trace line %d: %w", n, err)
		}
		calls = append(calls, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read trace: %w", err)
	}
	return calls, nil
}

// Waves returns the number of sequential round trips among calls: the
// largest set of calls no two of which overlap in time (found greedily by
// earliest end, which is optimal for intervals). Calls that overlap cannot
// depend on each other and count once; calls that follow each other count
// each.
func Waves(calls []Call) int {
	cs := append([]Call(nil), calls...)
	sort.Slice(cs, func(i, j int) bool { return cs[i].End().Before(cs[j].End()) })
	n := 0
	var last time.Time
	for _, c := range cs {
		if n == 0 || !c.Time.Before(last) {
			n++
			last = c.End()
		}
	}
	return n
}

// Step is a node of the step graph: its ID and the IDs it needs.
type Step struct {
	ID    string   `json:"step"`
	Needs []string `json:"needs,omitempty"`
}

// ReadPlan reads the step graph from the output of
// `kforge create ... --dry-run -o json`.
func ReadPlan(r io.Reader) ([]Step, error) {
	var doc struct {
		Steps []Step `json:"steps"`
	}
	if err := json.NewDecoder(r).Decode(&doc); err != nil {
		return nil, fmt.Errorf("read plan: %w", err)
	}
	if len(doc.Steps) == 0 {
		return nil, fmt.Errorf("read plan: no steps")
	}
	return doc.Steps, nil
}

// Scenario is what the bound of one run depends on besides the trace.
type Scenario struct {
	// Steps is the graph the run executed.
	Steps []Step
	// Reverse is true for a teardown: a step runs after every step that
	// needs it.
	Reverse bool
	// WaitRounds returns the watcher poll rounds a step needed (0 for a
	// step that waits for no instance).
	WaitRounds func(step string) int
	// Latency is the latency added to every call.
	Latency time.Duration
}

// StepWaves is one step of the critical chain with its weight.
type StepWaves struct {
	Step  string
	Calls int
	Waves int
	// Wait is the part of Waves that is watcher poll rounds.
	Wait int
}

// Bound is the critical-path bound of a run.
type Bound struct {
	// Pre and Post are the waves of the calls before the graph's first
	// step call and after its last one, outside any step.
	Pre, Post int
	// PreCalls and PostCalls count those calls.
	PreCalls, PostCalls int
	// Path is the heaviest chain of dependent steps, in execution order.
	Path []StepWaves
	// PathWaves is the weight of Path.
	PathWaves int
	// Waves is Pre + PathWaves + Post.
	Waves int
	// Duration is Waves times the added latency.
	Duration time.Duration
	// Unattributed counts calls made while the graph ran, outside any
	// step and outside the watcher: not counted in the bound.
	Unattributed int
	// Unknown lists step labels of the trace that are not in the graph.
	Unknown []string
	// Start is, for each step of the graph, the waves that must pass
	// before it can start: Pre and its heaviest chain of predecessors.
	Start map[string]int
}

// CriticalPath computes the bound of a run from its trace.
func CriticalPath(sc Scenario, calls []Call) (Bound, error) {
	var b Bound
	index := map[string]int{}
	for i, s := range sc.Steps {
		if _, dup := index[s.ID]; dup {
			return b, fmt.Errorf("step %s twice in the graph", s.ID)
		}
		index[s.ID] = i
	}
	byStep := map[string][]Call{}
	var first, last time.Time
	for _, c := range calls {
		if c.Step == "" {
			continue
		}
		if first.IsZero() || c.Time.Before(first) {
			first = c.Time
		}
		if c.End().After(last) {
			last = c.End()
		}
		if c.Step == WatchLabel {
			continue
		}
		if _, ok := index[c.Step]; !ok {
			if _, seen := byStep[c.Step]; !seen {
				b.Unknown = append(b.Unknown, c.Step)
			}
		}
		byStep[c.Step] = append(byStep[c.Step], c)
	}
	sort.Strings(b.Unknown)
	var pre, post []Call
	for _, c := range calls {
		if c.Step != "" {
			continue
		}
		switch {
		case first.IsZero() || !c.End().After(first):
			pre = append(pre, c)
		case !c.Time.Before(last):
			post = append(post, c)
		default:
			b.Unattributed++
		}
	}
	b.Pre, b.PreCalls = Waves(pre), len(pre)
	b.Post, b.PostCalls = Waves(post), len(post)

	// Longest path, in execution order: a step starts after its
	// predecessors (what it needs; for a teardown, what needs it).
	preds := map[string][]string{}
	for _, s := range sc.Steps {
		for _, n := range s.Needs {
			if _, ok := index[n]; !ok {
				return b, fmt.Errorf("step %s needs unknown step %s", s.ID, n)
			}
			if sc.Reverse {
				preds[n] = append(preds[n], s.ID)
			} else {
				preds[s.ID] = append(preds[s.ID], n)
			}
		}
	}
	weight := func(id string) StepWaves {
		w := StepWaves{Step: id, Calls: len(byStep[id]), Waves: Waves(byStep[id])}
		if sc.WaitRounds != nil {
			w.Wait = sc.WaitRounds(id)
			w.Waves += w.Wait
		}
		return w
	}
	dist := map[string]int{}
	via := map[string]string{}
	state := map[string]int{} // 1: visiting, 2: done
	var visit func(id string) error
	visit = func(id string) error {
		switch state[id] {
		case 1:
			return fmt.Errorf("dependency cycle through %s", id)
		case 2:
			return nil
		}
		state[id] = 1
		best, from := 0, ""
		for _, p := range preds[id] {
			if err := visit(p); err != nil {
				return err
			}
			if from == "" || dist[p] > best || (dist[p] == best && p < from) {
				best, from = dist[p], p
			}
		}
		dist[id] = best + weight(id).Waves
		via[id] = from
		state[id] = 2
		return nil
	}
	end := ""
	for _, s := range sc.Steps {
		if err := visit(s.ID); err != nil {
			return b, err
		}
		if end == "" || dist[s.ID] > dist[end] {
			end = s.ID
		}
	}
	b.Start = map[string]int{}
	for id := range dist {
		b.Start[id] = b.Pre + dist[id] - weight(id).Waves
	}
	for id := end; id != ""; id = via[id] {
		b.Path = append([]StepWaves{weight(id)}, b.Path...)
	}
	b.PathWaves = dist[end]
	b.Waves = b.Pre + b.PathWaves + b.Post
	b.Duration = time.Duration(b.Waves) * sc.Latency
	return b, nil
}

// Chain renders the critical chain: the steps with their waves, only those
// that weigh something.
func (b Bound) Chain() string {
	var parts []string
	if b.Pre > 0 {
		parts = append(parts, fmt.Sprintf("(before the graph)=%d", b.Pre))
	}
	for _, s := range b.Path {
		if s.Waves > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", s.Step, s.Waves))
		}
	}
	if b.Post > 0 {
		parts = append(parts, fmt.Sprintf("(after the graph)=%d", b.Post))
	}
	return strings.Join(parts, " -> ")
}

// LaunchTail is what must follow the last launch of a create at the
// least: its own round trip and one poll that sees the instance run.
const LaunchTail = 2

// Launches is what EC2's request bucket for RunInstances allows a run's
// launches: EC2 admits Capacity at once, then Refill a second, and kforge
// keeps to that on the client (internal/ha/infra/pace.go).
type Launches struct {
	// Calls counts the RunInstances EC2 carried out (refused attempts
	// left out).
	Calls int
	// Start is the fewest waves before any launch can go: the least
	// Bound.Start of the steps that made a RunInstances (-1: none).
	Start int
	// Wait is the least time from the first admitted launch to the last:
	// max(0, (Calls - Capacity) / Refill).
	Wait time.Duration
	// Duration is the bound the bucket sets on the run: Start waves, then
	// Wait, then LaunchTail waves. 0 without launches.
	Duration time.Duration
}

// LaunchBound computes what a RunInstances bucket of capacity calls,
// refilled at refill a second, allows the launches of a run whose bound is
// b. calls is the trace, with RequestLimitExceeded attempts left out.
func LaunchBound(b Bound, calls []Call, capacity, refill float64, latency time.Duration) Launches {
	l := Launches{Start: -1}
	for _, c := range calls {
		if c.Operation != "RunInstances" || c.Code == "RequestLimitExceeded" {
			continue
		}
		l.Calls++
		if st, ok := b.Start[c.Step]; ok && (l.Start < 0 || st < l.Start) {
			l.Start = st
		}
	}
	if l.Calls == 0 || l.Start < 0 {
		return l
	}
	if over := float64(l.Calls) - capacity; over > 0 && refill > 0 {
		l.Wait = time.Duration(over / refill * float64(time.Second))
	}
	l.Duration = time.Duration(l.Start+LaunchTail)*latency + l.Wait
	return l
}
