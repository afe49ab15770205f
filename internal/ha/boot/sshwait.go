package boot

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/ha/infra"
	"github.com/kforge/kforge/internal/sshx"
)

// How the wait for SSH is reported: one summary of every VM still waiting
// at most every summaryEvery, and, once, the likely causes (with the end
// of the VM's console output) when a VM has not answered for hintAfter.
const (
	summaryEvery = 15 * time.Second
	hintAfter    = 90 * time.Second
	consoleLines = 15
)

// sshWaits is what the run's VMs waiting for SSH have in common: one
// summary line for all of them instead of a line per VM per probe.
type sshWaits struct {
	mu       sync.Mutex
	vms      map[string]*sshWait // by VM name
	reported time.Time           // last summary
	hinted   bool                // the likely causes were given (once a run)
	// console reads the end of a VM's console output (nil: not read).
	console func(ctx context.Context, instanceID string) (string, error)
	// now is the clock (time.Now; tests set it).
	now func() time.Time
}

func (w *sshWaits) clock() time.Time {
	if w.now != nil {
		return w.now()
	}
	return time.Now()
}

type sshWait struct {
	vm      infra.VM
	addr    string
	since   time.Time
	lastErr error
}

func (w *sshWaits) start(vm infra.VM, addr string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.vms == nil {
		w.vms = map[string]*sshWait{}
	}
	if w.reported.IsZero() {
		w.reported = w.clock() // the first summary comes after summaryEvery
	}
	w.vms[vm.Name] = &sshWait{vm: vm, addr: addr, since: w.clock()}
}

func (w *sshWaits) done(vm infra.VM) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.vms, vm.Name)
}

// probed records a failed probe of vm and returns what to report: the
// summary when it is due, and the likely causes once vm has waited
// hintAfter.
func (w *sshWaits) probed(ctx context.Context, vm infra.VM, err error, jump bool) []string {
	w.mu.Lock()
	v := w.vms[vm.Name]
	if v == nil {
		w.mu.Unlock()
		return nil
	}
	now := w.clock()
	v.lastErr = err
	var out []string
	if now.Sub(w.reported) >= summaryEvery {
		w.reported = now
		out = append(out, w.summaryLocked(now))
	}
	waited := now.Sub(v.since)
	hint := waited >= hintAfter && !w.hinted
	if hint {
		w.hinted = true
	}
	console := w.console
	w.mu.Unlock()
	if hint {
		out = append(out, hintText(ctx, v, waited, jump, console))
	}
	return out
}

// report reports the lines of probed as the step's progress.
func report(r *engine.Run, lines []string) {
	for _, l := range lines {
		r.Waiting("%s", l)
	}
}

// summaryLocked is one line for every VM still waiting: the address kforge
// dials and the last error; w.mu must be held.
func (w *sshWaits) summaryLocked(now time.Time) string {
	names := make([]string, 0, len(w.vms))
	for n := range w.vms {
		names = append(names, n)
	}
	sort.Strings(names)
	var parts []string
	longest := time.Duration(0)
	for _, n := range names {
		v := w.vms[n]
		longest = max(longest, now.Sub(v.since))
		why := "no answer yet"
		if v.lastErr != nil {
			why = shortSSHError(v.lastErr)
		}
		parts = append(parts, fmt.Sprintf("%s %s: %s", n, v.addr, why))
	}
	const shown = 4
	more := ""
	if len(parts) > shown {
		more = fmt.Sprintf("; and %d more", len(parts)-shown)
		parts = parts[:shown]
	}
	return fmt.Sprintf("waiting for %d VM(s) to answer SSH, for up to %s: %s%s", len(names), longest.Round(time.Second), strings.Join(parts, "; "), more)
}

// hintText says why a VM may not answer, with the end of its console
// output when it can be read.
func hintText(ctx context.Context, v *sshWait, waited time.Duration, jump bool, console func(context.Context, string) (string, error)) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s) has not answered SSH at %s for %s (--ssh-timeout sets how long kforge waits). Likely causes: ", v.vm.Name, v.vm.ID, v.addr, waited.Round(time.Second))
	if jump {
		b.WriteString("the jump host cannot reach the VMs' private addresses; ")
	} else {
		b.WriteString("no route from this machine to the VMs' addresses (use --ssh-jump with a host in the VPC); --ssh-cidr does not cover this machine's public address; ")
	}
	b.WriteString("or the VM fails to boot")
	if console == nil {
		b.WriteString(".")
		return b.String()
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := console(cctx, v.vm.ID)
	switch {
	case err != nil:
		fmt.Fprintf(&b, " (its console output could not be read: %v).", err)
	case strings.TrimSpace(out) == "":
		b.WriteString(" (its console output is empty so far).")
	default:
		lines := strings.Split(strings.TrimRight(sshx.Redact(out), "\n"), "\n")
		if len(lines) > consoleLines {
			lines = lines[len(lines)-consoleLines:]
		}
		fmt.Fprintf(&b, "; the end of its console output:\n    %s", strings.Join(lines, "\n    "))
	}
	return b.String()
}

// shortSSHError is the gist of a probe's error: its last clause.
func shortSSHError(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && i+2 < len(s) {
		s = s[i+2:]
	}
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}
