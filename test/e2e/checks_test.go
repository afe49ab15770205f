package e2e

import (
	"slices"
	"testing"
	"time"

	"github.com/kforge/kforge/test/testutil/faultproxy"
	"github.com/kforge/kforge/test/testutil/kforgebin"
)

// A create's own checks of a new cluster (its names are free, its IAM
// names are not another cluster's) run beside the preflight, not after it:
// with the preflight's first call held back, they are answered before it.
func TestCreateChecksBesideThePreflight(t *testing.T) {
	t.Parallel()
	const name, region = "beside", "ap-southeast-2"
	px := faultproxy.Start(t, emu.URL)
	px.Add(faultproxy.Rule{Match: faultproxy.Actions("GetCallerIdentity"), Fault: faultproxy.Delay, Delay: 300 * time.Millisecond})
	env := kforgebin.NewEnv(t, append(emu.Env(), "AWS_ENDPOINT_URL="+px.URL)...)
	env.MustRun(t, "create", "aws", "--name", name, "--region", region, "--nodes", "1")

	var order []string
	for _, r := range px.Records() {
		order = append(order, r.Service+":"+r.Action)
	}
	identity := slices.Index(order, "sts:GetCallerIdentity")
	role := slices.Index(order, "iam:GetRole")
	if identity < 0 || role < 0 || role > identity {
		t.Errorf("the IAM names were checked after the preflight's first call (calls in order: %v)", order)
	}
	env.MustRun(t, "delete", "aws", "--name", name, "--region", region, "--yes")
}
