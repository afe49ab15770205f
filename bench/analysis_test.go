package bench

import (
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// call is a call of step that starts at from ms and lasts ms.
func call(step string, from, ms float64) Call {
	return Call{Step: step, Service: "EC2", Operation: "X", Time: t0.Add(time.Duration(from * float64(time.Millisecond))), Millis: ms}
}

func TestWaves(t *testing.T) {
	for _, tc := range []struct {
		name  string
		calls []Call
		want  int
	}{
		{"none", nil, 0},
		{"one", []Call{call("a", 0, 50)}, 1},
		{"in a row", []Call{call("a", 0, 50), call("a", 50, 50), call("a", 101, 50)}, 3},
		{"together", []Call{call("a", 0, 50), call("a", 1, 52), call("a", 2, 49)}, 1},
		{"two rounds of three", []Call{call("a", 0, 50), call("a", 1, 50), call("a", 2, 50), call("a", 53, 50), call("a", 54, 50), call("a", 55, 50)}, 2},
		// A long call with short ones after each other beside it: the
		// short ones are the chain.
		{"long beside a chain", []Call{call("a", 0, 200), call("a", 0, 50), call("a", 50, 50), call("a", 100, 50)}, 3},
		{"unsorted", []Call{call("a", 100, 50), call("a", 0, 50), call("a", 50, 50)}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Waves(tc.calls); got != tc.want {
				t.Errorf("Waves = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestCriticalPath(t *testing.T) {
	// vpc -> (igw -> rtb), (subnet); vm needs rtb and subnet.
	steps := []Step{{ID: "vpc"}, {ID: "igw", Needs: []string{"vpc"}}, {ID: "rtb", Needs: []string{"igw"}},
		{ID: "subnet", Needs: []string{"vpc"}}, {ID: "vm/0", Needs: []string{"rtb", "subnet"}}, {ID: "ssh", Needs: []string{"vm/0"}}}
	calls := []Call{
		// before the graph: credentials, then two checks at once
		call("", 0, 50), call("", 51, 50), call("", 52, 50),
		call("vpc", 110, 50), call("vpc", 160, 50), // 2
		call("igw", 215, 50),                       // 1
		call("rtb", 270, 50), call("rtb", 320, 50), // 2
		call("subnet", 215, 50), call("subnet", 265, 50), call("subnet", 315, 50), call("subnet", 365, 50), // 4
		call("vm/0", 420, 50), // 1 (+1 poll)
		call(WatchLabel, 475, 50),
		call(WatchLabel, 476, 60), // a second poll: not counted, the bound takes one round
	}
	b, err := CriticalPath(Scenario{Steps: steps, Latency: 50 * time.Millisecond, WaitRounds: func(s string) int {
		if strings.HasPrefix(s, "vm/") {
			return 1
		}
		return 0
	}}, calls)
	if err != nil {
		t.Fatal(err)
	}
	// 2 before + vpc 2 + subnet 4 + vm 2 = 10 (the igw/rtb branch is 3).
	if b.Pre != 2 || b.PreCalls != 3 {
		t.Errorf("before the graph: %d waves of %d calls, want 2 of 3", b.Pre, b.PreCalls)
	}
	if b.PathWaves != 8 || b.Waves != 10 || b.Duration != 500*time.Millisecond {
		t.Errorf("path %d waves, total %d, bound %s; want 8, 10, 500ms", b.PathWaves, b.Waves, b.Duration)
	}
	var chain []string
	for _, s := range b.Path {
		chain = append(chain, s.Step)
	}
	if got := strings.Join(chain, " "); got != "vpc subnet vm/0" {
		t.Errorf("critical chain %q", got)
	}
	if got := b.Chain(); got != "(before the graph)=2 -> vpc=2 -> subnet=4 -> vm/0=2" {
		t.Errorf("Chain() = %q", got)
	}
	// What must pass before a step starts: vm/0 after subnet (2+2+4),
	// ssh after vm/0, rtb after igw (2+2+1).
	for id, want := range map[string]int{"vpc": 2, "subnet": 4, "rtb": 5, "vm/0": 8, "ssh": 10} {
		if got := b.Start[id]; got != want {
			t.Errorf("Start[%s] = %d, want %d", id, got, want)
		}
	}

	// A teardown runs the same graph in reverse: same bound.
	r, err := CriticalPath(Scenario{Steps: steps, Reverse: true, Latency: 50 * time.Millisecond}, calls[3:13])
	if err != nil {
		t.Fatal(err)
	}
	if r.PathWaves != 7 || r.Path[0].Step != "ssh" || r.Path[len(r.Path)-1].Step != "vpc" {
		t.Errorf("reverse: %d waves along %v, want 7 from ssh to vpc", r.PathWaves, r.Path)
	}
}

func TestCriticalPathReportsWhatItCannotPlace(t *testing.T) {
	steps := []Step{{ID: "a"}, {ID: "b", Needs: []string{"a"}}}
	b, err := CriticalPath(Scenario{Steps: steps, Latency: time.Millisecond}, []Call{
		call("a", 0, 10), call("", 12, 5), call("b", 20, 10), call("elsewhere", 20, 10),
	})
	if err != nil {
		t.Fatal(err)
	}
	if b.Unattributed != 1 {
		t.Errorf("%d unattributed calls, want the one made during the graph outside any step", b.Unattributed)
	}
	if len(b.Unknown) != 1 || b.Unknown[0] != "elsewhere" {
		t.Errorf("unknown steps %v, want [elsewhere]", b.Unknown)
	}
	if _, err := CriticalPath(Scenario{Steps: []Step{{ID: "a", Needs: []string{"b"}}, {ID: "b", Needs: []string{"a"}}}}, nil); err == nil {
		t.Error("a cycle was not reported")
	}
	if _, err := CriticalPath(Scenario{Steps: []Step{{ID: "a", Needs: []string{"zz"}}}}, nil); err == nil {
		t.Error("an unknown need was not reported")
	}
}

func TestReadTraceAndPlan(t *testing.T) {
	calls, err := ReadTrace(strings.NewReader(`{"time":"2026-01-01T00:00:00.000Z","step":"vpc","service":"EC2","operation":"CreateVpc","attempt":1,"status":200,"ms":51.5}
{"time":"2026-01-01T00:00:00.100Z","service":"STS","operation":"GetCallerIdentity","attempt":1,"status":200,"ms":50}
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(calls) != 2 || calls[0].Name() != "EC2:CreateVpc" || calls[0].End().Sub(calls[0].Time) != 51500*time.Microsecond || calls[1].Step != "" {
		t.Errorf("calls %+v", calls)
	}
	if _, err := ReadTrace(strings.NewReader("{not json\n")); err == nil {
		t.Error("a broken trace was read")
	}
	steps, err := ReadPlan(strings.NewReader(`{"cluster":{},"steps":[{"step":"vpc","title":"VPC"},{"step":"igw","title":"IGW","needs":["vpc"]}]}`))
	if err != nil || len(steps) != 2 || steps[1].Needs[0] != "vpc" {
		t.Errorf("plan %+v, %v", steps, err)
	}
	if _, err := ReadPlan(strings.NewReader(`{"steps":[]}`)); err == nil {
		t.Error("an empty plan was read")
	}
}

func TestLaunchBound(t *testing.T) {
	steps := []Step{{ID: "vpc"}, {ID: "vm/0", Needs: []string{"vpc"}}, {ID: "vm/1", Needs: []string{"vpc"}}, {ID: "late"}, {ID: "vm/2", Needs: []string{"late", "vm/0"}}}
	var calls []Call
	calls = append(calls, call("vpc", 0, 50), call("vpc", 50, 50), call("late", 0, 50))
	for k, s := range []string{"vm/0", "vm/1", "vm/2"} {
		for n := range 3 {
			c := call(s, 110+float64(k*60+n), 50)
			c.Operation = "RunInstances"
			calls = append(calls, c)
		}
	}
	refused := call("vm/1", 100, 10)
	refused.Operation, refused.Code = "RunInstances", "RequestLimitExceeded"
	calls = append(calls, refused)
	b, err := CriticalPath(Scenario{Steps: steps, Latency: 50 * time.Millisecond}, calls)
	if err != nil {
		t.Fatal(err)
	}
	// 9 launches admitted (the refused one left out), of a bucket of 5
	// refilled at 2/s: 2 s from the first to the last. The earliest
	// launch can go after vpc's 2 waves.
	l := LaunchBound(b, calls, 5, 2, 50*time.Millisecond)
	if l.Calls != 9 || l.Start != 2 || l.Wait != 2*time.Second {
		t.Fatalf("LaunchBound = %+v, want 9 calls, start 2, wait 2s", l)
	}
	if want := 2*time.Second + 4*50*time.Millisecond; l.Duration != want {
		t.Errorf("Duration = %s, want %s", l.Duration, want)
	}
	// Within the bucket: no wait.
	if l := LaunchBound(b, calls, 10, 2, 50*time.Millisecond); l.Wait != 0 || l.Duration != 200*time.Millisecond {
		t.Errorf("within the bucket: %+v", l)
	}
	if l := LaunchBound(b, calls[:3], 5, 2, 50*time.Millisecond); l.Calls != 0 || l.Duration != 0 {
		t.Errorf("no launch: %+v", l)
	}
}
