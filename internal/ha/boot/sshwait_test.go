package boot

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kforge/kforge/internal/ha/infra"
)

// TestSSHWaitReports: eight VMs probed every 5 s for two minutes make at
// most one summary line every 15 s, each naming every VM with the address
// dialed and the last error, with the right elapsed time; after 90 s the
// likely causes are given once, with the end of the VM's console output.
func TestSSHWaitReports(t *testing.T) {
	start := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	now := start
	consoleReads := 0
	w := &sshWaits{now: func() time.Time { return now }, console: func(_ context.Context, id string) (string, error) {
		consoleReads++
		var b strings.Builder
		for i := range 40 {
			fmt.Fprintf(&b, "[   %d.0] boot line %d of %s\n", i, i, id)
		}
		b.WriteString("cloud-init: failed to mount /dev/nvme1n1\n")
		return b.String(), nil
	}}
	var vms []infra.VM
	for i := range 8 {
		vm := infra.VM{Name: fmt.Sprintf("c-wp-%d", i), ID: fmt.Sprintf("i-%d", i), PrivateIP: fmt.Sprintf("10.0.0.%d", 10+i)}
		vms = append(vms, vm)
		w.start(vm, vm.PrivateIP+":22")
	}
	var summaries, hints []string
	for now = start; now.Sub(start) <= 2*time.Minute; now = now.Add(5 * time.Second) {
		for _, vm := range vms {
			for _, l := range w.probed(context.Background(), vm, errors.New("dial tcp "+vm.PrivateIP+":22: connect: connection refused"), false) {
				if strings.HasPrefix(l, "waiting for") {
					summaries = append(summaries, l)
				} else {
					hints = append(hints, l)
				}
			}
		}
	}
	if len(summaries) != 8 {
		t.Errorf("%d summaries in 2 minutes, want one every 15 s (8)", len(summaries))
	}
	if first := summaries[0]; !strings.Contains(first, "waiting for 8 VM(s) to answer SSH, for up to 15s") ||
		!strings.Contains(first, "c-wp-0 10.0.0.10:22: connection refused") || !strings.Contains(first, "and 4 more") || strings.Contains(first, "so far") {
		t.Errorf("first summary: %s", first)
	}
	if len(hints) != 1 || consoleReads != 1 {
		t.Fatalf("%d hints, %d console reads; want the likely causes once", len(hints), consoleReads)
	}
	h := hints[0]
	for _, want := range []string{"c-wp-0 (i-0) has not answered SSH at 10.0.0.10:22 for 1m30s", "--ssh-jump", "--ssh-cidr", "fails to boot", "cloud-init: failed to mount", "boot line 39"} {
		if !strings.Contains(h, want) {
			t.Errorf("the hint lacks %q:\n%s", want, h)
		}
	}
	if strings.Contains(h, "boot line 10 ") {
		t.Errorf("the hint shows more than the end of the console output:\n%s", h)
	}
	// A VM that answers leaves the summary.
	w.done(vms[0])
	now = now.Add(20 * time.Second)
	got := w.probed(context.Background(), vms[1], errors.New("i/o timeout"), true)
	if len(got) != 1 || strings.Contains(got[0], "c-wp-0") || !strings.Contains(got[0], "7 VM(s)") {
		t.Errorf("summary after c-wp-0 answered: %v", got)
	}
}
