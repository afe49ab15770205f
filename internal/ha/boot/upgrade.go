package boot

import (
	"context"
	"fmt"
	"strings"

	"github.com/kforge/kforge/internal/bootstrap"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/ha/infra"
	"github.com/kforge/kforge/internal/spec"
)

// Steps of an upgrade.
const (
	// StepUpgradeCloud applies the cloud integration of the new minor once
	// every control plane runs it.
	StepUpgradeCloud = "upgrade/cloud-integration"
	// StepUpgradeReady waits for every node to be Ready at the new version.
	StepUpgradeReady = "upgrade/nodes-ready"
)

// UpgradeStepID upgrades node i of a role.
func UpgradeStepID(role string, i int) string { return fmt.Sprintf("upgrade/%s/%d", role, i) }

// InUpgrade selects, from a cluster's steps with AddUpgrade's, what an
// upgrade runs: its own steps, and the artifacts of the new release (their
// check, their upload). Every other step is only read.
func InUpgrade(st *engine.Step) bool {
	return strings.HasPrefix(st.ID, "upgrade/") || st.ID == StepArtifacts || strings.HasPrefix(st.ID, "upload/")
}

// UpgradeNode is one node of an upgrade, in the order of the upgrade.
type UpgradeNode struct {
	Role, VM string
	// What the upgrade does on the node.
	What string
}

// UpgradeOrder lists the nodes of an upgrade of a cluster of spec s, one
// at a time: the first control plane (kubeadm upgrade apply, or its k3s
// first), the other control planes, then the workers, each drained before
// and uncordoned after.
func UpgradeOrder(s spec.Spec) []UpgradeNode {
	var out []UpgradeNode
	for _, role := range []string{infra.RoleCP, infra.RoleWP} {
		for i := 0; i < infra.Count(s, role); i++ {
			what := "k3s replaced at the new release and restarted"
			if s.Bootstrap == spec.BootstrapKubeadm {
				what = "kubeadm upgrade node, then kubelet and kubectl"
				if role == infra.RoleCP && i == 0 {
					what = "kubeadm upgrade apply, then kubelet and kubectl"
				}
			}
			if role == infra.RoleWP {
				what = "drained, " + what + ", uncordoned"
			}
			out = append(out, UpgradeNode{Role: role, VM: infra.VMName(s.Name, role, i), What: what})
		}
	}
	return out
}

// AddUpgrade adds to g, which holds the cluster's steps (Add), the
// upgrade of every node to s.K8sVersion in UpgradeOrder: a chain, so that
// no two nodes are upgraded at once, and each step journaled, so that a
// run again continues with the node it stopped on. Then the cloud
// integration of the new minor, and a wait for every node Ready at the
// new version. Run it with g.Only(InUpgrade).
func AddUpgrade(g *engine.Graph, s spec.Spec, refs infra.Refs) {
	b := &builder{g: g, s: s, infra: refs}
	if offline(s) {
		b.artifacts = engine.RefTo[artifactsOut](StepArtifacts)
	}
	version, _ := Release(s) // "" if it does not resolve: the graph refuses it first
	var prev engine.Dep
	for _, role := range []string{infra.RoleCP, infra.RoleWP} {
		for i := 0; i < infra.Count(s, role); i++ {
			prev = b.addNodeUpgrade(role, i, version, prev)
		}
	}
	last := prev
	if s.CloudIntegration() {
		inputs, render := b.cloudScript()
		last = b.script(StepUpgradeCloud, "the cloud integration of the new release", infra.RoleCP, 0,
			engine.Needs(engine.ID(UpgradeStepID(infra.RoleCP, s.ControlPlanes-1)), prev), inputs, render)
	}
	b.script(StepUpgradeReady, fmt.Sprintf("wait for the %d nodes to be Ready with kubelet %s", nodes(s), version), infra.RoleCP, 0,
		engine.Needs(last), struct{ Version string }{version}, func(context.Context, *engine.Run) (string, error) {
			return bootstrap.RenderNodesReady(bootstrap.NodesReadyParams{Kubeconfig: KubeconfigPath(s), Count: nodes(s),
				Initialized: s.CloudIntegration(), KubeletVersion: version})
		})
}

// addNodeUpgrade adds the upgrade of node i of a role, after prev.
func (b *builder) addNodeUpgrade(role string, i int, version string, prev engine.Dep) engine.Dep {
	s := b.s
	vmRef, cp0 := b.infra.VM(role, i), b.infra.VM(infra.RoleCP, 0)
	joinID := JoinStepID(s, role, i)
	if s.Bootstrap == spec.BootstrapKubeadm && role == infra.RoleCP && i == 0 {
		joinID = StepKubeadmInit
	}
	needs := append(engine.Needs(vmRef, cp0, b.infra.Secrets, engine.ID(joinID)), b.artifactNeeds(role, i)...)
	needs = append(needs, b.cluster()...)
	if prev != nil {
		needs = append(needs, prev)
	}
	node := UpgradeOrder(s)[b.orderIndex(role, i)]
	return engine.AddAction(b.g, engine.Action[struct{}]{
		ID: UpgradeStepID(role, i), Needs: needs, Inputs: struct{ Version string }{version},
		Title: fmt.Sprintf("upgrade %s to %s: %s", node.VM, version, node.What),
		Do: func(ctx context.Context, r *engine.Run) (struct{}, error) {
			vm, err := vmRef.Get(r)
			if err != nil {
				return struct{}{}, err
			}
			var name string
			if j, ok := engine.Lookup[joined](r, joinID); ok {
				name = j.nodeName(vm.Name)
			} else {
				name = vm.NodeName()
			}
			onCP := func(sc string, err error) error {
				if err != nil {
					return err
				}
				cp, err := cp0.Get(r)
				if err != nil {
					return err
				}
				_, err = runOn(ctx, r, s, cp, sc)
				return err
			}
			if role == infra.RoleWP {
				r.Waiting("draining node %s", name)
				if err := onCP(bootstrap.RenderDrainNode(bootstrap.DrainNodeParams{Kubeconfig: KubeconfigPath(s), Node: name, Keep: true})); err != nil {
					return struct{}{}, err
				}
			}
			var sc string
			if s.Bootstrap == spec.BootstrapKubeadm {
				off, err := b.kubeadmOffline(r, role)
				if err != nil {
					return struct{}{}, err
				}
				sc, err = bootstrap.RenderKubeadmUpgrade(bootstrap.KubeadmUpgradeParams{KubernetesVersion: version, First: role == infra.RoleCP && i == 0, Offline: off})
				if err != nil {
					return struct{}{}, err
				}
			} else if sc, err = b.k3sScript(r, role, i); err != nil {
				return struct{}{}, err
			}
			r.Waiting("upgrading %s", vm.Name)
			if _, err := runOn(ctx, r, s, vm, sc); err != nil {
				return struct{}{}, err
			}
			if role == infra.RoleWP {
				return struct{}{}, onCP(bootstrap.RenderUncordonNode(bootstrap.UncordonNodeParams{Kubeconfig: KubeconfigPath(s), Node: name}))
			}
			return struct{}{}, nil
		},
	})
}

// orderIndex is the place of node i of a role in UpgradeOrder.
func (b *builder) orderIndex(role string, i int) int {
	if role == infra.RoleWP {
		return b.s.ControlPlanes + i
	}
	return i
}
