//go:build lab && linux

package lab

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kforge/kforge/test/testutil/moto"
)

// TestHold keeps a lab of three booted hosts until the file named by
// KFORGE_LAB_HOLD is removed (or the test times out), for poking at it by
// hand; the file lists the hosts and how to enter them.
//
//	KFORGE_LAB_HOLD=/tmp/lab go test -tags lab -run TestHold -timeout 1h ./test/testutil/lab/ &
func TestHold(t *testing.T) {
	hold := os.Getenv("KFORGE_LAB_HOLD")
	if hold == "" {
		t.Skip("set KFORGE_LAB_HOLD=<file> to keep a lab until the file is removed")
	}
	requireRoot(t)
	ctx := context.Background()
	emu := moto.Start(t)
	cfg := emu.Config(t, "us-east-1")
	vpc := newTestVPC(t, ctx, cfg)
	l := startLab(t, ctx, Options{AWS: cfg, VPCID: vpc.vpcID, AuthorizeKeyPairs: true})
	var b strings.Builder
	fmt.Fprintf(&b, "lab %s, jump host %s, lab namespace: nsenter --net=%s bash\n", l.ID(), l.JumpSpec(), netnsPath(l.Namespace()))
	for _, role := range []string{"cp", "wp", "etcd"} {
		vm := vpc.runVM(t, ctx, "hold-"+role+"-1", role)
		if err := l.WaitBooted(ctx, vm.id); err != nil {
			t.Error(err)
		}
		hh, _ := l.host(vm.id)
		pid, _ := hh.pid1()
		h, _ := l.Host(vm.id)
		fmt.Fprintf(&b, "%s %s %s private %s public %s: nsenter -t %d -a bash\n", vm.id, h.Name, role, h.PrivateIP, h.PublicIP, pid)
	}
	if err := os.WriteFile(hold, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Log(b.String())
	for {
		if _, err := os.Stat(hold); err != nil {
			return
		}
		time.Sleep(time.Second)
	}
}
