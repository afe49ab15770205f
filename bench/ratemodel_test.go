package bench

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/test/testutil/faultproxy"
)

// rateModel is the EC2 request-rate model the rate benchmark enforces,
// as BENCH_EC2_MODEL names it: "documented" (the default) is AWS's
// documented bucket sizes; "tight" shrinks every request bucket but
// RunInstances's to 3 calls refilled at 3 a second, so that the reads and
// writes of the network and security group steps are throttled too;
// "fast" refills RunInstances's bucket at 8 a second instead of 2, which
// shows how quickly the launches' retryer takes up a faster refill.
func rateModel(b *testing.B) (string, faultproxy.RateModel) {
	m := faultproxy.DocumentedEC2()
	switch v := os.Getenv("BENCH_EC2_MODEL"); v {
	case "", "documented":
		return "documented", m
	case "tight":
		small := faultproxy.Bucket{Capacity: 3, Refill: 3}
		m.NonMutating, m.Unfiltered, m.Mutating, m.ResourceIntensive = small, small, small, small
		for a := range m.Actions {
			if a != "RunInstances" {
				m.Actions[a] = small
			}
		}
		return v, m
	case "fast":
		m.Actions["RunInstances"] = faultproxy.Bucket{Capacity: 5, Refill: 8}
		return v, m
	default:
		b.Fatalf("BENCH_EC2_MODEL=%q: want documented, tight or fast", v)
		return "", m
	}
}

// rateResult is a create measured under the rate model, with its bound.
type rateResult struct {
	Run run
	// Path is the critical-path bound of the calls EC2 admitted, as if
	// nothing had been throttled.
	Path Bound
	// Demands are what the admitted calls took from each bucket, the
	// longest wait first.
	Demands []faultproxy.Demand
	// Refused counts the RequestLimitExceeded answers by action.
	Refused map[string]int
	// Launches counts the RunInstances EC2 carried out; LaunchSpan is the
	// time from the first to the last of them.
	Launches   int
	LaunchSpan time.Duration
	// Launch is what the model's RunInstances bucket allows the launches.
	Launch Launches
}

// Slowest is the bucket that needs the longest to admit the calls.
func (r rateResult) Slowest() faultproxy.Demand {
	if len(r.Demands) == 0 {
		return faultproxy.Demand{}
	}
	return r.Demands[0]
}

// Bound is the least time the create can take: its critical path without
// throttling, plus what the slowest bucket needs beyond its capacity.
// Bound is the least time the model allows for the run's calls. When the
// slowest bucket is RunInstances's, the larger of the critical path and
// what that bucket allows the launches (LaunchBound); for another slowest
// bucket, the critical path plus its wait.
func (r rateResult) Bound() time.Duration {
	if r.Slowest().Key != "RunInstances" || r.Launch.Duration == 0 {
		return r.Path.Duration + r.Slowest().Wait
	}
	return max(r.Path.Duration, r.Launch.Duration)
}

func (r rateResult) Ratio() float64 { return r.Run.Wall.Seconds() / r.Bound().Seconds() }

// rateRun creates an ha-aws cluster of workers workers in a fresh
// emulator, through a proxy that enforces m on EC2 calls (its buckets
// full when the create starts), and computes the run's bound.
func rateRun(b *testing.B, m faultproxy.RateModel, workers int) rateResult {
	w := newWorld(b, region, spec.TypeHA)
	args := haArgs(w, workers)
	steps := w.plan(args...)
	w.proxy.Limit(faultproxy.NewLimiter(m, nil))
	defer w.proxy.Limit(nil)
	r := w.measure(args...)

	res := rateResult{Run: r, Refused: map[string]int{}}
	var admitted []faultproxy.Call
	var first, last time.Time
	for _, rec := range r.Records {
		switch {
		case rec.Fault == faultproxy.Limited:
			res.Refused[rec.Action]++
		case rec.Forwarded && rec.Action != "":
			admitted = append(admitted, rec.Call)
			if rec.Action == "RunInstances" {
				res.Launches++
				if first.IsZero() {
					first = rec.At
				}
				last = rec.At
			}
		}
	}
	res.LaunchSpan = last.Sub(first)
	res.Demands = m.Demands(admitted)
	if n := countForwarded(r.Records); n != len(r.Calls) {
		b.Fatalf("the proxy saw %d AWS calls, kforge's trace has %d", n, len(r.Calls))
	}
	// The critical path of the calls that went through: a refused attempt
	// is the model's doing, which the buckets' wait accounts for.
	var through []Call
	for _, c := range r.Calls {
		if c.Code != "RequestLimitExceeded" {
			through = append(through, c)
		}
	}
	bd, err := CriticalPath(Scenario{Steps: steps, WaitRounds: waitCreate, Latency: latency()}, through)
	if err != nil {
		b.Fatal(err)
	}
	if len(bd.Unknown) > 0 {
		b.Fatalf("trace labels not in the graph: %v", bd.Unknown)
	}
	res.Path = bd
	lb := m.Actions["RunInstances"]
	res.Launch = LaunchBound(bd, through, lb.Capacity, lb.Refill, latency())
	return res
}

// BenchmarkHARateModel creates ha-aws clusters of 3 etcd, 3 control
// planes, a load balancer and 2, then 100 workers under EC2's request-rate model
// (BENCH_EC2_MODEL), and compares its wall time with the least time the
// model allows for the calls kforge made.
func BenchmarkHARateModel(b *testing.B) {
	name, m := rateModel(b)
	for range b.N {
		// The create of the other benchmarks (2 workers) and a large one:
		// kforge keeps to EC2's RunInstances bucket in both, and the
		// bucket is part of both bounds.
		for _, workers := range []int{2, 100} {
			var rs []rateResult
			for range reps() {
				rs = append(rs, rateRun(b, m, workers))
			}
			printRateResult(fmt.Sprintf("create ha-aws (3 etcd, 3 control planes, %d workers, 1 load balancer) under EC2's %s rate model", workers, name), rs)
			b.ReportMetric(medianRate(rs).Ratio(), fmt.Sprintf("ratio-%dw", workers))
		}
	}
}

// medianRate returns the result with the median ratio.
func medianRate(rs []rateResult) rateResult {
	s := append([]rateResult(nil), rs...)
	sort.Slice(s, func(i, j int) bool { return s[i].Ratio() < s[j].Ratio() })
	return s[len(s)/2]
}

// printRateResult writes the rate benchmark's report.
func printRateResult(name string, rs []rateResult) {
	m := medianRate(rs)
	var walls, bounds, ratios []string
	for _, r := range rs {
		walls = append(walls, r.Run.Wall.Round(10*time.Millisecond).String())
		bounds = append(bounds, r.Bound().Round(10*time.Millisecond).String())
		ratios = append(ratios, fmt.Sprintf("%.2f", r.Ratio()))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n== %s ==\n", name)
	fmt.Fprintf(&b, "command:         kforge %s\n", strings.Join(m.Run.Args, " "))
	fmt.Fprintf(&b, "wall time:       %s (runs: %s)\n", m.Run.Wall.Round(time.Millisecond), strings.Join(walls, " "))
	if m.Slowest().Key == "RunInstances" && m.Launch.Duration > 0 {
		fmt.Fprintf(&b, "bound:           %s = the larger of the critical path %s (%d waves x %s, throttled attempts left out) and the launches' %s: %d waves before the first launch can go + RunInstances's bucket %s + %d waves after the last (runs: %s)\n",
			m.Bound().Round(time.Millisecond), m.Path.Duration, m.Path.Waves, latency(), m.Launch.Duration.Round(time.Millisecond),
			m.Launch.Start, m.Launch.Wait.Round(time.Millisecond), LaunchTail, strings.Join(bounds, " "))
	} else {
		fmt.Fprintf(&b, "bound:           %s = critical path %s (%d waves x %s, throttled attempts left out) + slowest bucket %s (runs: %s)\n",
			m.Bound().Round(time.Millisecond), m.Path.Duration, m.Path.Waves, latency(), m.Slowest().Wait.Round(time.Millisecond), strings.Join(bounds, " "))
	}
	fmt.Fprintf(&b, "ratio:           %.2f (wall / bound; median of %d runs: %s)\n", m.Ratio(), len(rs), strings.Join(ratios, " "))
	var dry []string
	var fullest faultproxy.Demand
	for _, d := range m.Demands {
		switch {
		case d.Wait > 0:
			dry = append(dry, fmt.Sprintf("%s %.0f tokens of %.0f + %g/s: %s", d.Key, d.Tokens, d.Bucket.Capacity, d.Bucket.Refill, d.Wait.Round(time.Millisecond)))
		case d.Tokens/d.Bucket.Capacity > fullest.Tokens/max(fullest.Bucket.Capacity, 1):
			fullest = d
		}
	}
	if len(dry) == 0 {
		dry = append(dry, "none ran dry")
	}
	fmt.Fprintf(&b, "buckets:         %s; fullest of the others: %s %.0f of %.0f\n", strings.Join(dry, "; "), fullest.Key, fullest.Tokens, fullest.Bucket.Capacity)
	fmt.Fprintf(&b, "RunInstances:    %d carried out (goal: at most 10), over %s from the first to the last\n", m.Launches, m.LaunchSpan.Round(time.Millisecond))
	refused, by := 0, make([]string, 0, len(m.Refused))
	for a, n := range m.Refused {
		refused += n
		by = append(by, fmt.Sprintf("%s=%d", a, n))
	}
	sort.Strings(by)
	fmt.Fprintf(&b, "throttled:       %d RequestLimitExceeded answers (%s); AWS calls carried out: %d\n", refused, strings.Join(by, " "), countForwarded(m.Run.Records)-refused)
	fmt.Fprintf(&b, "critical chain:  %s\n", m.Path.Chain())
	fmt.Print(b.String())
}
