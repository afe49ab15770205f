package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kforge/kforge/internal/eks"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/ha"
	"github.com/kforge/kforge/internal/lifecycle"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
	"github.com/kforge/kforge/test/testutil/sshfleet"
)

// The benchmarks run only with -bench (bench/run): `go test ./...` runs
// none of them, and this package has no tests that need the emulator.

const (
	clusterName = "bench"
	region      = "us-east-1"
)

// haArgs is the create of an ha-aws cluster with workers workers.
func haArgs(w *world, workers int) []string {
	args := []string{"create", "ha-aws", "--name", clusterName, "--region", region, "--bootstrap", "k3s",
		"--etcd", "3", "--control-planes", "3", "--workers", strconv.Itoa(workers), "--ssh-cidr", "10.0.0.0/8"}
	if w != nil {
		args = append(args, "--ssh-jump", w.fleet.Jump(sshfleet.VMUser))
	}
	return args
}

// waitCreate: each VM step needs at least one DescribeInstances that sees
// its instance running (the emulator runs instances at once, so one).
func waitCreate(step string) int {
	if strings.HasPrefix(step, "vm/") {
		return 1
	}
	return 0
}

// waitTeardown: the step that terminates the VMs needs one
// DescribeInstances that sees them terminated.
func waitTeardown(step string) int {
	if step == ha.StepVMs {
		return 1
	}
	return 0
}

// teardownSteps is the graph a delete runs, as the provider builds it from
// the stored spec.
func teardownSteps(b *testing.B, w *world, p lifecycle.Provider, ref spec.Ref) []Step {
	b.Helper()
	store, err := state.NewLocal(filepath.Join(w.home, "state"))
	if err != nil {
		b.Fatal(err)
	}
	c, err := store.Get(context.Background(), ref)
	if err != nil {
		b.Fatal(err)
	}
	g, err := p.Teardown(c.Spec)
	if err != nil {
		b.Fatal(err)
	}
	return planSteps(b, g)
}

func planSteps(b *testing.B, g *engine.Graph) []Step {
	plan, err := g.Plan(nil)
	if err != nil {
		b.Fatal(err)
	}
	steps := make([]Step, len(plan))
	for i, e := range plan {
		steps[i] = Step{ID: e.Step, Needs: e.Needs}
	}
	return steps
}

// haRun creates and deletes one ha-aws cluster in a fresh emulator.
func haRun(b *testing.B, workers int, withDelete bool) (create, del result) {
	w := newWorld(b, region, spec.TypeHA)
	args := haArgs(w, workers)
	steps := w.plan(args...)
	cr := w.measure(args...)
	if want := 3 + 1 + 3 + workers; countAction(cr, "RunInstances") != want {
		b.Fatalf("%d RunInstances for %d VMs", countAction(cr, "RunInstances"), want)
	}
	create = analyse(b, fmt.Sprintf("create ha-aws (3 etcd, 3 control planes, %d workers, 1 load balancer)", workers),
		Scenario{Steps: steps, WaitRounds: waitCreate, Latency: latency()}, cr)
	if !withDelete {
		return create, result{}
	}
	ref := spec.Ref{Type: spec.TypeHA, Name: clusterName, Region: region}
	tsteps := teardownSteps(b, w, ha.New(lifecycle.Env{}), ref)
	dr := w.measure("delete", "ha-aws", "--name", clusterName, "--region", region, "--yes")
	del = analyse(b, fmt.Sprintf("delete ha-aws (%d VMs)", 7+workers),
		Scenario{Steps: tsteps, Reverse: true, WaitRounds: waitTeardown, Latency: latency()}, dr)
	return create, del
}

func countAction(r run, action string) int {
	n := 0
	for _, c := range r.Calls {
		if c.Operation == action {
			n++
		}
	}
	return n
}

// BenchmarkHA creates and deletes an ha-aws cluster of 3 etcd, 3 control
// planes, 2 workers and a load balancer, bootstrapped with k3s through the
// SSH fleet.
func BenchmarkHA(b *testing.B) {
	for range b.N {
		var creates, deletes []result
		for range reps() {
			c, d := haRun(b, 2, true)
			creates, deletes = append(creates, c), append(deletes, d)
		}
		printResult(creates)
		printResult(deletes)
		b.ReportMetric(median(creates).Ratio(), "create-ratio")
		b.ReportMetric(median(deletes).Ratio(), "delete-ratio")
	}
}

// BenchmarkHAScale compares the create of an ha-aws cluster with 2 and
// with 100 workers.
func BenchmarkHAScale(b *testing.B) {
	for range b.N {
		var small, large, deletes []result
		for range reps() {
			c, _ := haRun(b, 2, false)
			small = append(small, c)
			c, d := haRun(b, 100, true)
			large, deletes = append(large, c), append(deletes, d)
		}
		printResult(large)
		printResult(deletes)
		s, l := medianWall(small), medianWall(large)
		added := (l.Seconds() - s.Seconds()) / s.Seconds() * 100
		ms, ml := median(small).Run, median(large).Run
		fmt.Printf("\n== scale: 2 -> 100 workers ==\n")
		fmt.Printf("create ha-aws wall time (median of %d): 2 workers %s, 100 workers %s: +%.0f%% (goal: at most +50%%)\n",
			len(small), s.Round(time.Millisecond), l.Round(time.Millisecond), added)
		fmt.Printf("emulator CPU in those runs: %s and %s (+%s); kforge CPU: %s and %s; SSH fleet look-ups: %d and %d\n",
			ms.EmuCPU.Round(10*time.Millisecond), ml.EmuCPU.Round(10*time.Millisecond), (ml.EmuCPU - ms.EmuCPU).Round(10*time.Millisecond),
			ms.CPU.Round(time.Millisecond), ml.CPU.Round(time.Millisecond), ms.FleetCalls, ml.FleetCalls)
		b.ReportMetric(added, "%added")
	}
}

func medianWall(rs []result) time.Duration {
	var ws []time.Duration
	for _, r := range rs {
		ws = append(ws, r.Run.Wall)
	}
	return medianDuration(ws)
}

// BenchmarkEKS creates and deletes an aws (EKS) cluster.
func BenchmarkEKS(b *testing.B) {
	for range b.N {
		var creates, deletes []result
		for range reps() {
			w := newWorld(b, region, spec.TypeEKS)
			args := []string{"create", "aws", "--name", clusterName, "--region", region}
			steps := w.plan(args...)
			cr := w.measure(args...)
			creates = append(creates, analyse(b, "create aws (EKS, 2 nodes)", Scenario{Steps: steps, Latency: latency()}, cr))
			ref := spec.Ref{Type: spec.TypeEKS, Name: clusterName, Region: region}
			tsteps := teardownSteps(b, w, eks.New(lifecycle.Env{}), ref)
			dr := w.measure("delete", "aws", "--name", clusterName, "--region", region, "--yes")
			deletes = append(deletes, analyse(b, "delete aws (EKS)", Scenario{Steps: tsteps, Reverse: true, Latency: latency()}, dr))
		}
		printResult(creates)
		printResult(deletes)
		b.ReportMetric(median(creates).Ratio(), "create-ratio")
		b.ReportMetric(median(deletes).Ratio(), "delete-ratio")
	}
}

func medianDuration(ws []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ws...)
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s[len(s)/2]
}
