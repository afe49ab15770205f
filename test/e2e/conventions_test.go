package e2e

// The conventions of kforge's command line (issue 12, item 9): one flag
// name for the Kubernetes version, eksctl's --node-type, -o json on every
// command that reports a result, exit codes in the root help, a version
// from Go's build information, and shell completion.

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/kforge/kforge/test/testutil/kforgebin"
)

func TestFlagNamesAndAliases(t *testing.T) {
	t.Parallel()
	env := kforgebin.NewEnv(t)
	plan := func(args ...string) string {
		t.Helper()
		r := env.MustRun(t, append([]string{"create", "aws", "--name", "conv", "--region", "us-east-1", "--dry-run"}, args...)...)
		return r.Stdout
	}
	if out := plan("--k8s-version", "1.32"); !strings.Contains(out, "Kubernetes 1.32 on EKS") {
		t.Errorf("--k8s-version 1.32:\n%s", out)
	}
	if out := plan("--version", "1.31"); !strings.Contains(out, "Kubernetes 1.31 on EKS") {
		t.Errorf("--version (hidden alias) 1.31:\n%s", out)
	}
	if out := plan("--node-type", "t3.large", "--nodes", "3"); !strings.Contains(out, "3 x t3.large") {
		t.Errorf("--node-type t3.large:\n%s", out)
	}
	help := env.MustRun(t, "create", "aws", "--help").Stdout
	if !strings.Contains(help, "--k8s-version") || strings.Contains(help, "--version ") || !strings.Contains(help, "alias: --node-type") {
		t.Errorf("create aws --help:\n%s", help)
	}
	r := env.Run(t, "create", "aws", "--name", "conv", "--region", "us-east-1", "--dry-run", "--k8s-version", "latest")
	if r.Code != 2 || !strings.Contains(r.Stderr, "invalid --k8s-version") {
		t.Errorf("bad --k8s-version: exit %d, %s", r.Code, r.Stderr)
	}
}

func TestRootHelpVersionAndCompletion(t *testing.T) {
	t.Parallel()
	env := kforgebin.NewEnv(t)
	help := env.MustRun(t, "--help").Stdout
	for _, w := range []string{"Exit codes:", "  0  success", "  1  the operation failed", "  2  invalid usage", "completion"} {
		if !strings.Contains(help, w) {
			t.Errorf("kforge --help lacks %q:\n%s", w, help)
		}
	}
	var v map[string]string
	if err := json.Unmarshal([]byte(env.MustRun(t, "version", "-o", "json").Stdout), &v); err != nil || v["version"] == "" || v["go"] == "" {
		t.Errorf("version -o json: %v %v", v, err)
	}
	for _, shell := range []string{"bash", "zsh", "fish"} {
		r := env.MustRun(t, "completion", shell)
		if !strings.Contains(r.Stdout, "kforge") || len(r.Stdout) < 500 {
			t.Errorf("completion %s: %.200s", shell, r.Stdout)
		}
	}
}

// delete -o json says what happened; so does a delete that found nothing.
func TestDeleteJSON(t *testing.T) {
	t.Parallel()
	const name, region = "deljson", "ap-northeast-1"
	env := kforgebin.NewEnv(t, emu.Env()...)
	ref := []string{"--name", name, "--region", region}
	env.MustRun(t, append([]string{"create", "aws"}, ref...)...)
	type report struct {
		Name, Type, Region  string
		Deleted, StateFound bool
		Steps               int
	}
	decode := func(out string) report {
		t.Helper()
		var r report
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("delete -o json: %v\n%s", err, out)
		}
		return r
	}
	got := decode(env.MustRun(t, append([]string{"delete", "aws", "--yes", "-o", "json"}, ref...)...).Stdout)
	if got.Name != name || got.Type != "aws" || got.Region != region || !got.Deleted || !got.StateFound || got.Steps == 0 {
		t.Errorf("delete -o json: %+v", got)
	}
	got = decode(env.MustRun(t, append([]string{"delete", "aws", "--yes", "-o", "json"}, ref...)...).Stdout)
	if got.Deleted || got.StateFound || got.Steps != 0 {
		t.Errorf("second delete -o json: %+v", got)
	}
}
