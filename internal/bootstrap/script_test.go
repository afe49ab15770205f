package bootstrap

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestShellcheck runs shellcheck on every rendered script, for both
// bootstraps: each must pass clean.
func TestShellcheck(t *testing.T) {
	t.Parallel()
	shellcheck := lookTool(t, "shellcheck", "apt-get install -y shellcheck")
	c := newCluster(t)
	for _, s := range c.allScripts(t) {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, shellcheck, "-s", "bash", "-")
			cmd.Stdin = strings.NewReader(s.script)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("shellcheck: %v\n%s", err, out)
			}
		})
	}
}

// TestScriptConventions checks the header every script starts with, that
// bash parses it, and that no secret appears in it in clear text.
func TestScriptConventions(t *testing.T) {
	bash := lookTool(t, "bash", "apt-get install -y bash")
	c := newCluster(t)
	for _, s := range c.allScripts(t) {
		t.Run(s.name, func(t *testing.T) {
			lines := strings.SplitN(s.script, "\n", 4)
			want := []string{"#!/usr/bin/env bash", "# kforge-recipe: " + s.recipe, "set -euo pipefail"}
			for i, w := range want {
				if lines[i] != w {
					t.Errorf("line %d = %q, want %q", i+1, lines[i], w)
				}
			}
			switch {
			case s.recipe == RecipeReceive || s.recipe == RecipeEtcdRestore:
				// The recipes that read what follows them on stdin.
				if !strings.HasSuffix(s.script, "\nmain\n") {
					t.Errorf("%s does not end by calling main", s.recipe)
				}
			case !strings.HasSuffix(s.script, "\nmain </dev/null\n"):
				t.Errorf("script does not end by calling main with stdin from /dev/null")
			}
			cmd := exec.Command(bash, "-n")
			cmd.Stdin = strings.NewReader(s.script)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("bash -n: %v\n%s", err, out)
			}
			for _, secret := range s.secrets {
				if secret == "" {
					t.Fatal("empty secret in fixture")
				}
				// A PEM key's body lines are long enough to be recognisable.
				probe := secret
				if strings.Contains(secret, "PRIVATE KEY") {
					probe = strings.Split(secret, "\n")[1]
				}
				if strings.Contains(s.script, probe) {
					t.Errorf("a secret appears in clear text in the script")
				}
			}
			if strings.Contains(s.script, "set -x") {
				t.Errorf("script turns on tracing, which would print secrets")
			}
		})
	}
}

// TestRecipesList checks that Recipes names every recipe once and that
// every rendered script uses one of them.
func TestRecipesList(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Recipes() {
		if seen[r] {
			t.Errorf("recipe %q listed twice", r)
		}
		seen[r] = true
	}
	rendered := map[string]bool{}
	for _, s := range newCluster(t).allScripts(t) {
		if !seen[s.recipe] {
			t.Errorf("script %s uses unlisted recipe %q", s.name, s.recipe)
		}
		rendered[s.recipe] = true
	}
	for r := range seen {
		if !rendered[r] {
			t.Errorf("recipe %q has no representative script in the tests", r)
		}
	}
}

// TestWriteHelper runs the script helpers against a temporary directory:
// kforge_write installs the file with its mode, reports a change only when
// the content differs, and leaves no temporary file behind.
func TestWriteHelper(t *testing.T) {
	bash := lookTool(t, "bash", "apt-get install -y bash")
	dir := t.TempDir()
	target := filepath.Join(dir, "secret.key")
	owner := strings.TrimSpace(runOut(t, "id", "-u")) + ":" + strings.TrimSpace(runOut(t, "id", "-g"))
	body := func(content, validator string) string {
		var v []string
		if validator != "" {
			v = []string{validator}
		}
		return "\nmain() {\n\tkforge_changed=0\n\t" + writeFile(target, "0600", owner, []byte(content), v...) +
			"\n\techo \"changed=$kforge_changed\"\n}\n"
	}
	run := func(content, validator string) (string, error) {
		s, err := renderScript("test", body(content, validator), nil)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bash, "-s")
		cmd.Stdin = strings.NewReader(s)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err = cmd.Run()
		return strings.TrimSpace(stdout.String()), err
	}
	steps := []struct {
		content, validator string
		want               string
		wantErr            bool
	}{
		{"first\n", "", "changed=1", false},
		{"first\n", "", "changed=0", false},
		{"second\n", "", "changed=1", false},
		{"rejected\n", "false", "", true},
		{"", "", "changed=1", false},
	}
	for i, st := range steps {
		got, err := run(st.content, st.validator)
		if (err != nil) != st.wantErr {
			t.Fatalf("step %d: err = %v, want error %v", i, err, st.wantErr)
		}
		if got != st.want {
			t.Errorf("step %d: output %q, want %q", i, got, st.want)
		}
		data, err := os.ReadFile(target)
		if err != nil {
			t.Fatal(err)
		}
		wantContent := st.content
		if st.wantErr {
			wantContent = steps[i-1].content
		}
		if string(data) != wantContent {
			t.Errorf("step %d: content %q, want %q", i, data, wantContent)
		}
		fi, err := os.Stat(target)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("step %d: mode %v, want 0600", i, fi.Mode().Perm())
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Errorf("step %d: temporary files left behind: %v", i, entries)
		}
	}
}

func runOut(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return string(out)
}

func TestShellQuote(t *testing.T) {
	bash := lookTool(t, "bash", "apt-get install -y bash")
	for _, s := range []string{"plain", "it's", `a"b$c` + "`d`", "new\nline", "", `\'`} {
		out, err := exec.Command(bash, "-c", "printf %s "+shellQuote(s)).Output()
		if err != nil {
			t.Fatalf("bash: %v", err)
		}
		if string(out) != s {
			t.Errorf("quoted %q came back as %q", s, out)
		}
	}
}
