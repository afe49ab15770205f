package e2e

// The first hour of a new user: input that alone is wrong (an unknown
// region, no credentials, a profile that does not exist) is refused with
// exit 2 before any AWS call, in words that say what to do; the region
// is found where the AWS CLI finds it; and no line of the SDK's own log
// reaches the terminal.

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/test/testutil/faultproxy"
	"github.com/kforge/kforge/test/testutil/kforgebin"
)

// traceOps returns the operations of a KFORGE_AWS_TRACE file (none if
// the file does not exist: no call was made).
func traceOps(t *testing.T, path string) []string {
	t.Helper()
	recs, err := awsx.ReadTrace(path)
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, rec := range recs {
		ops = append(ops, rec.Service+":"+rec.Operation)
	}
	return ops
}

// tracedEnv is an environment against the shared emulator with a trace
// file; withKeys adds the emulator's credentials.
func tracedEnv(t *testing.T, withKeys bool, extra ...string) (*kforgebin.Env, string) {
	t.Helper()
	trace := filepath.Join(t.TempDir(), "trace.jsonl")
	vars := []string{"AWS_ENDPOINT_URL=" + emu.URL, "KFORGE_AWS_TRACE=" + trace}
	if withKeys {
		vars = emu.Env()
		vars = append(vars, "KFORGE_AWS_TRACE="+trace)
	}
	return kforgebin.NewEnv(t, append(vars, extra...)...), trace
}

func TestUnknownRegionIsRefusedBeforeAnyCall(t *testing.T) {
	t.Parallel()
	env, trace := tracedEnv(t, true)
	for _, args := range [][]string{
		{"create", "aws", "--name", "r9", "--region", "us-east-9"},
		{"create", "ha-aws", "--name", "r9", "--region", "eu-wset-1"},
		{"preflight", "aws", "--region", "us-east-9"},
	} {
		r := env.Run(t, args...)
		if r.Code != 2 || !strings.Contains(r.Stderr, "unknown region") || !strings.Contains(r.Stderr, "did you mean") ||
			!strings.Contains(r.Stderr, "us-east-1") {
			t.Errorf("kforge %s: exit %d, stderr:\n%s", strings.Join(args, " "), r.Code, r.Stderr)
		}
	}
	if ops := traceOps(t, trace); len(ops) != 0 {
		t.Errorf("an unknown region made %d AWS call(s): %v", len(ops), ops)
	}
}

// me-south-1 is an opt-in region that the emulator's account has not
// enabled: the create stops at preflight, after one read-only question
// asked in us-east-1, with how to enable it.
func TestOptInRegionNotEnabledFailsPreflight(t *testing.T) {
	t.Parallel()
	env, trace := tracedEnv(t, true)
	r := env.Run(t, "create", "aws", "--name", "optin", "--region", "me-south-1")
	out := r.Stdout + r.Stderr
	if r.Code != 1 || !strings.Contains(out, "not enabled in this account") || !strings.Contains(out, "aws account enable-region --region-name me-south-1") {
		t.Errorf("exit %d, output:\n%s", r.Code, out)
	}
	ops := traceOps(t, trace)
	for _, op := range ops {
		if !readOnlyOp(op) {
			t.Errorf("a create in a disabled region called %s", op)
		}
	}
	// Beside the preflight, the provider's own checks look for the
	// cluster's existing resources (a handful of reads).
	if !contains(ops, "EC2:DescribeRegions") || len(ops) > 6 {
		t.Errorf("calls %v: want the DescribeRegions question and little else", ops)
	}
}

func readOnlyOp(op string) bool {
	_, name, _ := strings.Cut(op, ":")
	for _, p := range []string{"Describe", "Get", "List", "Simulate"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// With no credentials anywhere, the SDK's chain ends at the instance
// metadata service (a fake one on loopback here, which answers 404 as a
// machine outside EC2 would not answer at all): kforge says where it
// looks, exits 2 and makes no call; the SDK's "falling back to IMDSv1"
// warning shows only with --debug.
func TestNoCredentialsExits2WithoutSDKLogs(t *testing.T) {
	t.Parallel()
	var imdsHits atomic.Int64
	imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		imdsHits.Add(1)
		http.NotFound(w, r)
	}))
	t.Cleanup(imds.Close)
	env, trace := tracedEnv(t, false, "AWS_EC2_METADATA_DISABLED=false", "AWS_EC2_METADATA_SERVICE_ENDPOINT="+imds.URL)

	for _, args := range [][]string{
		{"create", "aws", "--name", "nocreds", "--region", "us-east-1"},
		{"create", "ha-aws", "--name", "nocreds", "--region", "us-east-1", "--ssh-cidr", "10.0.0.0/8"},
		{"preflight", "aws", "--region", "us-east-1"},
		{"delete", "aws", "--name", "nocreds", "--region", "us-east-1", "--yes"},
	} {
		r := env.Run(t, args...)
		if r.Code != 2 || !strings.Contains(r.Stderr, "no usable AWS credentials") ||
			!strings.Contains(r.Stderr, "AWS_ACCESS_KEY_ID") || !strings.Contains(r.Stderr, "kforge cred") {
			t.Errorf("kforge %s: exit %d, stderr:\n%s", strings.Join(args, " "), r.Code, r.Stderr)
		}
		for _, sdk := range []string{"IMDS", "SDK 20", "WARN", "falling back"} {
			if strings.Contains(r.Stderr, sdk) {
				t.Errorf("kforge %s: an SDK log line reached the terminal (%q):\n%s", strings.Join(args, " "), sdk, r.Stderr)
			}
		}
	}
	if ops := traceOps(t, trace); len(ops) != 0 {
		t.Errorf("no credentials, yet %d AWS call(s): %v", len(ops), ops)
	}
	if imdsHits.Load() == 0 {
		t.Fatal("the SDK never asked the instance metadata service: the test does not exercise its fallback")
	}
	r := env.Run(t, "--debug", "create", "aws", "--name", "nocreds", "--region", "us-east-1")
	if r.Code != 2 || !strings.Contains(r.Stderr, "falling back to IMDSv1") {
		t.Errorf("--debug: exit %d, stderr lacks the SDK's log:\n%s", r.Code, r.Stderr)
	}
}

// writeProfiles writes an AWS config file with profiles default (no
// region), dev (ap-south-1) and prod (eu-west-3) under home.
func writeProfiles(t *testing.T, home string) {
	t.Helper()
	dir := filepath.Join(home, ".aws")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := "[default]\noutput = json\n\n[profile dev]\nregion = ap-south-1\n\n[profile prod]\nregion = eu-west-3\n"
	if err := os.WriteFile(filepath.Join(dir, "config"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestUnknownProfileListsTheProfiles(t *testing.T) {
	t.Parallel()
	env, trace := tracedEnv(t, false, "AWS_PROFILE=nosuch")
	writeProfiles(t, env.Home)
	for _, args := range [][]string{
		{"create", "aws", "--name", "prof", "--region", "us-east-1"},
		{"create", "aws", "--name", "prof", "--dry-run"},
	} {
		r := env.Run(t, args...)
		if r.Code != 2 || !strings.Contains(r.Stderr, `AWS profile "nosuch" (AWS_PROFILE) does not exist`) ||
			!strings.Contains(r.Stderr, "default, dev, prod") {
			t.Errorf("kforge %s: exit %d, stderr:\n%s", strings.Join(args, " "), r.Code, r.Stderr)
		}
	}
	if ops := traceOps(t, trace); len(ops) != 0 {
		t.Errorf("an unknown profile made %d AWS call(s): %v", len(ops), ops)
	}
}

// --region falls back to AWS_REGION, then AWS_DEFAULT_REGION, then the
// profile's region; the message for no region at all names them.
func TestRegionFallsBackLikeTheAWSCLI(t *testing.T) {
	t.Parallel()
	cases := []struct {
		env  []string
		args []string
		want string
	}{
		{[]string{"AWS_REGION=eu-west-3", "AWS_DEFAULT_REGION=us-west-2"}, nil, "eu-west-3"},
		{[]string{"AWS_DEFAULT_REGION=us-west-2"}, nil, "us-west-2"},
		{[]string{"AWS_PROFILE=dev"}, nil, "ap-south-1"},
		{[]string{"AWS_PROFILE=dev", "AWS_DEFAULT_REGION=us-west-2"}, nil, "us-west-2"},
		{[]string{"AWS_REGION=eu-west-3"}, []string{"--region", "ca-central-1"}, "ca-central-1"},
	}
	for _, c := range cases {
		env, trace := tracedEnv(t, false, c.env...)
		writeProfiles(t, env.Home)
		r := env.MustRun(t, append([]string{"create", "aws", "--name", "fallback", "--dry-run"}, c.args...)...)
		if !strings.Contains(r.Stdout, `"fallback" in `+c.want) {
			t.Errorf("%v %v: the plan is not in %s:\n%s", c.env, c.args, c.want, r.Stdout)
		}
		if c.args == nil && !strings.Contains(r.Stderr, "Region "+c.want+" (from ") {
			t.Errorf("%v: stderr does not say where the region came from:\n%s", c.env, r.Stderr)
		}
		if ops := traceOps(t, trace); len(ops) != 0 {
			t.Errorf("a dry run made AWS calls: %v", ops)
		}
	}

	// The fallback region is the one the AWS calls go to.
	env, trace := tracedEnv(t, true, "AWS_DEFAULT_REGION=eu-west-3")
	if r := env.Run(t, "preflight", "aws"); !strings.Contains(r.Stdout, "usable in eu-west-3: eu-west-3a") {
		t.Errorf("the preflight did not ask eu-west-3 for its zones:\n%s%s", r.Stdout, r.Stderr)
	}
	if ops := traceOps(t, trace); len(ops) == 0 {
		t.Error("the preflight made no call")
	}

	env, _ = tracedEnv(t, false)
	writeProfiles(t, env.Home) // the default profile has no region
	r := env.Run(t, "create", "aws", "--name", "noregion", "--dry-run")
	for _, w := range []string{"--region is required", "AWS_REGION", "AWS_DEFAULT_REGION", "profile"} {
		if r.Code != 2 || !strings.Contains(r.Stderr, w) {
			t.Errorf("no region: exit %d, stderr lacks %q:\n%s", r.Code, w, r.Stderr)
		}
	}
}

// Preflight fails, and the create stops, when the availability zones
// cannot be listed at all.
func TestPreflightFailsWhenZonesCannotBeChecked(t *testing.T) {
	t.Parallel()
	proxy := faultproxy.Start(t, emu.URL)
	proxy.Add(faultproxy.Rule{Match: faultproxy.Actions("DescribeAvailabilityZones"), Fault: faultproxy.Respond,
		Error: faultproxy.APIError{Status: 400, Code: "Blocked", Message: "the account is blocked"}})
	trace := filepath.Join(t.TempDir(), "trace.jsonl")
	env := kforgebin.NewEnv(t, append(emu.Env(), "AWS_ENDPOINT_URL="+proxy.URL, "KFORGE_AWS_TRACE="+trace)...)
	r := env.Run(t, "create", "aws", "--name", "nozones", "--region", "eu-west-1")
	out := r.Stdout + r.Stderr
	if r.Code != 1 || !strings.Contains(out, "could not list the availability zones") || !strings.Contains(out, "Preflight failed") {
		t.Errorf("exit %d, output:\n%s", r.Code, out)
	}
	for _, op := range traceOps(t, trace) {
		if !readOnlyOp(op) {
			t.Errorf("the create went on after the failed preflight: %s", op)
		}
	}
}

// A create of an existing cluster with settings a create cannot change is
// refused before any AWS call, naming each setting with its old and new
// value and the command that changes it, if one does.
func TestChangedSettingsAreRefusedBeforeAnyCall(t *testing.T) {
	t.Parallel()
	const name, region = "settings", "us-west-1"
	env, trace := tracedEnv(t, true)
	ref := []string{"--name", name, "--region", region}
	env.MustRun(t, append([]string{"create", "aws"}, ref...)...)
	t.Cleanup(func() { env.Run(t, append([]string{"delete", "aws", "--yes"}, ref...)...) })
	if err := os.Remove(trace); err != nil {
		t.Fatal(err)
	}
	r := env.Run(t, append([]string{"create", "aws"}, append(ref, "--nodes", "5", "--node-size", "t3.large")...)...)
	for _, w := range []string{
		`aws cluster "` + name + `" in ` + region + ` already exists with other settings`,
		"--node-size: t3.medium now, t3.large asked (fixed at creation",
		"--nodes: 2 now, 5 asked (change it with `kforge scale aws --name " + name + " --region " + region + " --nodes 5`)",
	} {
		if r.Code != 2 || !strings.Contains(r.Stderr, w) {
			t.Errorf("exit %d, stderr lacks %q:\n%s", r.Code, w, r.Stderr)
		}
	}
	if ops := traceOps(t, trace); len(ops) != 0 {
		t.Errorf("the refused create made %d AWS call(s): %v", len(ops), ops)
	}
}
