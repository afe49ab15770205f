package network_test

import (
	"context"
	"fmt"
	"maps"
	"testing"

	"github.com/kforge/kforge/internal/network"
)

// A create makes each resource with its own calls and nothing more: a new
// VPC's DNS attributes are set without being read, the gateway is
// attached once, the default route and each association made once.
func TestCreateCalls(t *testing.T) {
	t.Parallel()
	cl, cnt := countingClients(t)
	r := ref("create-calls")
	s := network.Spec{Ref: r, Zones: 3, CIDR: "10.160.0.0/16"}
	j := journal(t, r)
	n := apply(t, cl, s, j)
	got := cnt.take()
	t.Logf("create of an own network: %v", got)
	if got["DescribeVpcAttribute"] != 0 {
		t.Errorf("the create read the new VPC's attributes (%d calls)", got["DescribeVpcAttribute"])
	}
	want := map[string]int{"CreateVpc": 1, "ModifyVpcAttribute": 2, "CreateInternetGateway": 1, "AttachInternetGateway": 1,
		"CreateRouteTable": 1, "CreateRoute": 1, "CreateSubnet": 3, "ModifySubnetAttribute": 3, "AssociateRouteTable": 3}
	for op, w := range want {
		if got[op] != w {
			t.Errorf("%s: %d calls, want %d", op, got[op], w)
		}
	}
	checkPublicNetwork(t, cl.EC2, r, n, 3)
	if err := destroy(cl, s, j); err != nil {
		t.Fatal(err)
	}
}

// A network made when the gateway's attachment, the default route and the
// associations were journaled in the igw and rtb steps (so its journal
// has no step of theirs) is found in sync by the next run, which journals
// the new steps without changing anything in AWS; a delete still removes
// everything.
func TestJournalWithoutRoutingSteps(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cl, cnt := countingClients(t)
	r := ref("old-journal")
	s := network.Spec{Ref: r, Zones: 3, CIDR: "10.161.0.0/16"}
	j := journal(t, r)
	n := apply(t, cl, s, j)
	added := []string{network.StepIGWAttach, network.StepRoute}
	for i := range s.Zones {
		added = append(added, network.AssociationStepID(i))
	}
	for _, id := range added {
		if _, ok := j.Done(id); !ok {
			t.Fatalf("step %s not journaled", id)
		}
		if err := j.Forget(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	cnt.take()
	ch := diff(t, cl, s, j)
	for _, c := range ch {
		if c.Kind != "none" {
			t.Errorf("diff of the old journal: %+v, want nothing to change", c)
		}
	}
	if n2 := apply(t, cl, s, j); fmt.Sprint(n2) != fmt.Sprint(n) {
		t.Errorf("reconcile of the old journal gave %+v, want %+v", n2, n)
	}
	if m := mutating(cnt.take()); len(m) > 0 {
		t.Errorf("the reconcile of the old journal made mutating calls %v", m)
	}
	for _, id := range added {
		if _, ok := j.Done(id); !ok {
			t.Errorf("step %s not journaled by the reconcile", id)
		}
	}
	inSync(t, cl, s, j)

	// The same journal, as an old kforge left it, deletes everything.
	for _, id := range added {
		if err := j.Forget(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := destroy(cl, s, j); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	none := map[string]int{"vpc": 0, "subnet": 0, "igw": 0, "rtb": 0}
	if got := tagged(t, cl.EC2, r); !maps.Equal(got, none) {
		t.Errorf("after destroy: %v left", got)
	}
}

// A delete follows the create's true dependencies in reverse: the
// gateway's detach and the subnets' associations go at once after the
// network step, then the route table and the subnets, the VPC after them,
// the gateway after its detach only.
func TestDeleteOrder(t *testing.T) {
	t.Parallel()
	g := graph(&network.Clients{}, network.Spec{Ref: ref("x")})
	// needed lists, for each step, the steps that need it: a delete waits
	// for those.
	needed := map[string][]string{}
	for _, id := range g.IDs() {
		for _, n := range g.Step(id).Needs {
			needed[n] = append(needed[n], id)
		}
	}
	for id, want := range map[string]string{
		network.StepIGW:              "[igw/attach rtb/route network]",
		network.StepIGWAttach:        "[rtb/route network]",
		network.StepRouteTable:       "[rtb/route rtb/subnet/0 rtb/subnet/1 rtb/subnet/2 network]",
		network.SubnetStepID(0):      "[rtb/subnet/0 network]",
		network.StepVPC:              "[igw/attach rtb subnet/0 subnet/1 subnet/2 rtb/route rtb/subnet/0 rtb/subnet/1 rtb/subnet/2 network]",
		network.StepRoute:            "[network]",
		network.AssociationStepID(0): "[network]",
	} {
		if got := fmt.Sprint(needed[id]); got != want {
			t.Errorf("%s is deleted after %s, want after %s", id, got, want)
		}
	}
	// The route goes with the route table; an association is removed by
	// its own step, before the table and the subnet (each of which would
	// otherwise remove it at the same time as the other).
	if g.Step(network.StepRoute).Delete != nil || g.Step(network.AssociationStepID(0)).Delete == nil {
		t.Error("the route has a delete of its own, or an association has none")
	}
}
