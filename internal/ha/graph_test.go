package ha_test

import (
	"strings"
	"testing"

	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/ha"
	"github.com/kforge/kforge/internal/ha/boot"
	"github.com/kforge/kforge/internal/ha/infra"
	"github.com/kforge/kforge/internal/lifecycle"
	"github.com/kforge/kforge/internal/network"
	"github.com/kforge/kforge/internal/spec"
)

func haSpec(bootstrap string) spec.Spec {
	return spec.Spec{
		Ref:       spec.Ref{Type: spec.TypeHA, Name: "waves", Region: "us-east-1"},
		Bootstrap: bootstrap, ControlPlanes: 3, Workers: 2, Etcd: 3,
		CPSize: "t3.medium", WPSize: "t3.medium", EtcdSize: "t3.small", LBSize: "t3.micro",
		K8sVersion: spec.DefaultK8sVersion, SSHCIDR: "0.0.0.0/0",
	}
}

// after returns whether step id comes after step dep in g (needs it, or
// needs a step that does).
func after(g *engine.Graph, id, dep string) bool {
	seen := map[string]bool{}
	var walk func(string) bool
	walk = func(id string) bool {
		if seen[id] {
			return false
		}
		seen[id] = true
		for _, n := range g.Step(id).Needs {
			if n == dep || walk(n) {
				return true
			}
		}
		return false
	}
	return walk(id)
}

// A VM is launched as soon as its subnet and security group exist, while
// the network is being routed; reaching it over SSH waits for the routes.
func TestVMsLaunchBeforeTheRoutes(t *testing.T) {
	for _, bs := range []string{spec.BootstrapK3s, spec.BootstrapKubeadm} {
		s := haSpec(bs)
		g, err := ha.New(lifecycle.Env{}).Graph(s)
		if err != nil {
			t.Fatal(err)
		}
		routes := []string{network.StepRoute, network.StepIGWAttach, network.StepID}
		for i := range infra.NetworkZones {
			routes = append(routes, network.AssociationStepID(i))
		}
		var vms []string
		for _, role := range infra.Roles {
			for i := range infra.Count(s, role) {
				id := infra.VMStepID(role, i)
				vms = append(vms, id)
				for _, r := range routes {
					if after(g, id, r) {
						t.Errorf("%s: %s waits for %s", bs, id, r)
					}
				}
				if !after(g, id, network.SubnetStepID(i%infra.NetworkZones)) || !after(g, id, infra.SGStepID(role)) {
					t.Errorf("%s: %s does not wait for its subnet and security group", bs, id)
				}
				if ready := boot.ReadyStepID(role, i); !after(g, ready, network.StepID) || !after(g, ready, id) {
					t.Errorf("%s: %s does not wait for the routes and the VM", bs, ready)
				}
			}
		}
		// Every step that reaches a VM comes after the routes.
		for _, id := range g.IDs() {
			if strings.HasPrefix(id, "vm/") {
				continue
			}
			for _, vm := range vms {
				if after(g, id, vm) && !after(g, id, network.StepID) {
					t.Errorf("%s: %s needs %s but not the routes", bs, id, vm)
				}
			}
		}
		plan, err := g.Plan(nil)
		if err != nil {
			t.Fatal(err)
		}
		wave := map[string]int{}
		for _, e := range plan {
			wave[e.Step] = e.Wave
		}
		t.Logf("%s: %d steps in %d waves; VMs in wave %d, the network done in wave %d, the first SSH in wave %d",
			bs, g.Len(), g.CriticalPath(), wave[infra.VMStepID(infra.RoleLB, 0)], wave[network.StepID], wave[boot.ReadyStepID(infra.RoleLB, 0)])
	}
}
