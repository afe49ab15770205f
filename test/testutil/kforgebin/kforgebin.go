// Package kforgebin builds the real kforge binary once per test process
// and runs it as a user would, capturing its output and exit code.
package kforgebin

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	once     sync.Once
	binPath  string
	buildErr error
)

// Path builds ./cmd/kforge (once per test binary) and returns its path.
func Path(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..", "..")
		dir, err := os.MkdirTemp("", "kforge-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "kforge")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/kforge")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out))
		}
	})
	if buildErr != nil {
		t.Fatalf("build kforge: %v", buildErr)
	}
	return binPath
}

// Runner runs a package's tests; *testing.M is one.
type Runner interface{ Run() int }

// Cleaning wraps m so that, once the tests have run, the binary Path
// built (about 100 MB) is removed with its directory. In TestMain:
// os.Exit(kforgebin.Cleaning(m).Run()), or pass it on to what runs m.
func Cleaning(m Runner) Runner { return cleaning{m} }

type cleaning struct{ m Runner }

func (c cleaning) Run() int {
	defer func() {
		if binPath != "" {
			os.RemoveAll(filepath.Dir(binPath))
		}
	}()
	return c.m.Run()
}

// Result is what a kforge run printed and how it exited.
type Result struct {
	Stdout string
	Stderr string
	Code   int
}

// Env is a kforge environment: KFORGE_HOME and whatever else a test sets.
type Env struct {
	Home  string
	Extra []string
	// Stdin, if set, is the process's standard input.
	Stdin string
	// Timeout bounds a run (default 3 minutes).
	Timeout time.Duration
}

// NewEnv returns an environment with a fresh KFORGE_HOME and kubeconfig.
func NewEnv(t testing.TB, extra ...string) *Env {
	t.Helper()
	home := t.TempDir()
	return &Env{Home: home, Extra: append([]string{"KUBECONFIG=" + filepath.Join(home, "kubeconfig")}, extra...)}
}

// Cmd returns the command for a kforge run, for tests that manage the
// process themselves (signals, concurrency).
func (e *Env) Cmd(t testing.TB, ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, Path(t), args...)
	cmd.Env = e.Environ()
	if e.Stdin != "" {
		cmd.Stdin = strings.NewReader(e.Stdin)
	}
	return cmd
}

// Environ returns the process environment: PATH and HOME of the test, no
// AWS variables of the test process, the SDK's instance-metadata look-ups
// disabled (they would leave 127.0.0.0/8), then KFORGE_HOME and Extra
// (which may override any of them: the last value of a variable wins).
func (e *Env) Environ() []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + e.Home, "AWS_EC2_METADATA_DISABLED=true", "KFORGE_HOME=" + e.Home}
	return append(env, e.Extra...)
}

// Run runs kforge with args and returns its result.
func (e *Env) Run(t testing.TB, args ...string) Result {
	t.Helper()
	timeout := e.Timeout
	if timeout == 0 {
		timeout = 3 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := e.Cmd(t, ctx, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := Result{Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run kforge %v: %v", args, err)
	}
	return r
}

// MustRun runs kforge and fails the test unless it exits 0.
func (e *Env) MustRun(t testing.TB, args ...string) Result {
	t.Helper()
	r := e.Run(t, args...)
	if r.Code != 0 {
		t.Fatalf("kforge %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
	}
	return r
}
