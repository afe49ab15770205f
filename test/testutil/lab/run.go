//go:build lab && linux

package lab

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// cmdWaitDelay bounds how long a finished command's output pipes may be
// held open by a process it left behind.
const cmdWaitDelay = 5 * time.Second

// command prepares name with args, bounded by ctx.
func command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = cmdWaitDelay
	return cmd
}

// run runs name with args and returns its stdout; a failure carries the
// command line and its stderr.
func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	return runCmd(command(ctx, name, args...))
}

// runCmd runs cmd and returns its stdout; a failure carries the command
// line and its stderr.
func runCmd(cmd *exec.Cmd) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, tail(stderr.String(), 2000))
	}
	return stdout.Bytes(), nil
}

// tail returns the last n bytes of s, trimmed.
func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}

// poll calls cond every interval until it reports done (then poll returns
// cond's error) or ctx ends. An error with done false is transient: it is
// kept for the timeout message. what names the wait in errors.
func poll(ctx context.Context, interval time.Duration, what string, cond func() (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last error
	for {
		done, err := cond()
		if done {
			return err
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("waiting for %s: %w (last error: %v)", what, ctx.Err(), last)
			}
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}
