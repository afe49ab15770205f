// Package boot bootstraps the VMs of an ha-aws cluster over SSH: every
// step is an engine action that renders one of package bootstrap's scripts
// and runs it on one VM. An action runs again when its inputs or what it
// needs changed: a VM that package infra replaced (same slot, address and
// host key, new instance) gets everything its slot ran before, in order.
// What only a replacement needs is done here too: a replaced etcd member is
// removed from the etcd cluster and added again (on a healthy member)
// before it starts, so quorum is never lost; a replaced first control
// plane joins the cluster through another control plane instead of
// initialising it again.
package boot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/kforge/kforge/internal/bootstrap"
	"github.com/kforge/kforge/internal/cloudint"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/ha/infra"
	"github.com/kforge/kforge/internal/spec"
)

// Step IDs (stable: they key the journal of existing clusters).
const (
	StepEtcdHealth     = "etcd-health"
	StepHAProxy        = "haproxy"
	StepKubeadmInit    = "kubeadm/init"
	StepKubeadmRefresh = "kubeadm/refresh"
	StepCNI            = "cni"
	StepKubeconfig     = "kubeconfig"
	StepNodesReady     = "nodes-ready"
	// StepCloud applies the AWS cloud integration (not with
	// --no-cloud-integration).
	StepCloud = "cloud-integration"
	// StepArtifacts reads the checksums of what the VMs install from the
	// artifacts directory or mirror (--artifacts) and keeps them in state.
	StepArtifacts = "artifacts"
)

// ReadyStepID waits for VM i of a role to answer SSH and finish cloud-init.
func ReadyStepID(role string, i int) string { return fmt.Sprintf("ready/%s/%d", role, i) }

// EtcdStepID installs etcd member i.
func EtcdStepID(i int) string { return fmt.Sprintf("etcd/%d", i) }

// EtcdMemberStepID keeps etcd member i in the etcd cluster's member list
// (removed and added again when its VM was replaced).
func EtcdMemberStepID(i int) string { return fmt.Sprintf("etcd-member/%d", i) }

// EtcdServersStepID points the API server of control plane i at the etcd
// members' current addresses (kubeadm).
func EtcdServersStepID(i int) string { return fmt.Sprintf("etcd-servers/%d", i) }

// PrereqsStepID installs containerd and the Kubernetes binaries (kubeadm).
func PrereqsStepID(role string, i int) string { return fmt.Sprintf("prereqs/%s/%d", role, i) }

// UploadStepID copies the artifacts VM i of a role needs to it (an
// artifacts directory only).
func UploadStepID(role string, i int) string { return fmt.Sprintf("upload/%s/%d", role, i) }

// JoinStepID installs (k3s) or joins (kubeadm) node i of a role; for the
// first control plane it is the cluster's first server (k3s).
func JoinStepID(s spec.Spec, role string, i int) string {
	return fmt.Sprintf("%s/%s/%d", s.Bootstrap, role, i)
}

// KubeconfigPath is where the admin kubeconfig lives on control planes.
func KubeconfigPath(s spec.Spec) string {
	if s.Bootstrap == spec.BootstrapKubeadm {
		return bootstrap.KubeadmKubeconfig
	}
	return bootstrap.K3sKubeconfig
}

// builder adds one cluster's bootstrap to a graph.
type builder struct {
	g         *engine.Graph
	s         spec.Spec
	infra     infra.Refs
	artifacts engine.Ref[artifactsOut]
}

// Add adds the bootstrap of every VM to g, after the infrastructure of
// refs: readiness of every VM, the artifacts, etcd, the load balancer,
// then k3s or kubeadm, the admin kubeconfig and the wait for every node to
// be Ready. Etcd members, workers and joining control planes run
// concurrently.
func Add(g *engine.Graph, s spec.Spec, refs infra.Refs) {
	b := &builder{g: g, s: s, infra: refs}
	// The VMs are launched while their subnets are routed: reaching them
	// (every SSH step comes after its VM's ready step) needs the routes.
	for _, role := range infra.Roles {
		for i := 0; i < infra.Count(s, role); i++ {
			b.script(ReadyStepID(role, i), fmt.Sprintf("wait for %s to answer SSH and finish cloud-init", infra.VMName(s.Name, role, i)),
				role, i, engine.Needs(refs.Rules[role], refs.Network.Network), nil,
				func(context.Context, *engine.Run) (string, error) {
					return bootstrap.RenderWaitReady(bootstrap.WaitReadyParams{})
				})
		}
	}
	if offline(s) {
		b.artifacts = b.addArtifacts()
		if source(s).Dir != "" {
			for _, role := range infra.Roles {
				if !installsArtifacts(role) {
					continue
				}
				for i := 0; i < infra.Count(s, role); i++ {
					b.addUpload(role, i)
				}
			}
		}
	}
	b.addEtcd()
	b.addBackupSchedule()
	b.addHAProxy()
	var joins []engine.Dep
	first := engine.ID(JoinStepID(s, infra.RoleCP, 0))
	if s.Bootstrap == spec.BootstrapKubeadm {
		joins = b.addKubeadm()
		first = engine.ID(StepKubeadmInit)
	} else {
		joins = b.addK3s()
	}
	cp0 := refs.VM(infra.RoleCP, 0)
	engine.AddAction(g, engine.Action[struct{}]{
		ID: StepKubeconfig, Needs: engine.Needs(first, cp0, refs.Secrets),
		Title: "read the admin kubeconfig from the first control plane (kept in state)",
		Do: func(ctx context.Context, r *engine.Run) (struct{}, error) {
			vm, err := cp0.Get(r)
			if err != nil {
				return struct{}{}, err
			}
			sc, err := bootstrap.RenderFetchKubeconfig(bootstrap.FetchKubeconfigParams{Kubeconfig: KubeconfigPath(s)})
			if err != nil {
				return struct{}{}, err
			}
			out, err := runOn(ctx, r, s, vm, sc)
			if err != nil {
				return struct{}{}, err
			}
			if len(out) == 0 {
				return struct{}{}, fmt.Errorf("the first control plane returned an empty kubeconfig")
			}
			return struct{}{}, r.SetSecret(ctx, infra.SecretAdmin, out)
		},
	})
	readyNeeds := append(joins, engine.ID(StepKubeconfig))
	title := fmt.Sprintf("wait for the %d nodes to be Ready", nodes(s))
	if s.CloudIntegration() {
		readyNeeds = append(readyNeeds, b.addCloud(first))
		title = fmt.Sprintf("wait for the %d nodes to be Ready and initialised by the cloud controller manager", nodes(s))
	}
	b.script(StepNodesReady, title, infra.RoleCP, 0, readyNeeds, struct{ Nodes int }{nodes(s)},
		func(context.Context, *engine.Run) (string, error) {
			return bootstrap.RenderNodesReady(bootstrap.NodesReadyParams{Kubeconfig: KubeconfigPath(s), Count: nodes(s), Initialized: s.CloudIntegration()})
		})
}

func nodes(s spec.Spec) int { return s.ControlPlanes + s.Workers }

// addCloud applies the AWS cloud integration (package cloudint) on the
// first control plane once its API server runs (after first): the cloud
// controller manager, which initialises the nodes, the EBS CSI driver and
// the default StorageClass.
func (b *builder) addCloud(first engine.Dep) engine.Dep {
	inputs, render := b.cloudScript()
	return b.script(StepCloud, "the AWS cloud controller manager, the EBS CSI driver and the default StorageClass gp3", infra.RoleCP, 0,
		engine.Needs(first), inputs, render)
}

// cloudScript is the cloud integration's step inputs (the manifest's
// digest: a kforge that ships other objects, or another Kubernetes minor,
// applies them again) and its script, on the first control plane.
func (b *builder) cloudScript() (any, func(context.Context, *engine.Run) (string, error)) {
	s := b.s
	manifest := func() ([]byte, error) {
		ver, err := bootstrap.KubernetesVersion(s.K8sVersion)
		if err != nil {
			return nil, err
		}
		return cloudint.Manifest(cloudint.Params{ClusterName: s.Name, KubernetesVersion: ver, ImageRepository: s.ImageRepository})
	}
	var inputs any
	if m, err := manifest(); err == nil {
		sum := sha256.Sum256(m)
		inputs = struct{ Manifest string }{hex.EncodeToString(sum[:8])}
	}
	return inputs, func(context.Context, *engine.Run) (string, error) {
		m, err := manifest()
		if err != nil {
			return "", err
		}
		return bootstrap.RenderCloudIntegration(bootstrap.CloudIntegrationParams{Kubeconfig: KubeconfigPath(s), Manifest: m})
	}
}

// script adds an action that renders one script and runs it on VM i of a
// role (which it needs, with the cluster's secrets: its host key derives
// from them). render reads only what needs declares.
func (b *builder) script(id, title, role string, i int, needs []engine.Dep, inputs any,
	render func(ctx context.Context, r *engine.Run) (string, error)) engine.Ref[struct{}] {
	vmRef := b.infra.VM(role, i)
	return engine.AddAction(b.g, engine.Action[struct{}]{
		ID: id, Title: title, Inputs: inputs,
		Needs: append(append([]engine.Dep(nil), needs...), vmRef, b.infra.Secrets),
		Do: func(ctx context.Context, r *engine.Run) (struct{}, error) {
			vm, err := vmRef.Get(r)
			if err != nil {
				return struct{}{}, err
			}
			sc, err := render(ctx, r)
			if err != nil {
				return struct{}{}, err
			}
			_, err = runOn(ctx, r, b.s, vm, sc)
			return struct{}{}, err
		},
	})
}

// joined is the output of a join step: the VM that joined.
type joined struct {
	VM string `json:"vm,omitempty"`
	// Node is the Kubernetes node name the VM joined as, when it is not
	// the VM's name (clusters with the cloud integration name nodes by
	// private DNS name, which a replaced VM's new address changes).
	Node string `json:"node,omitempty"`
}

// joinedAs is the output of a join of VM vm.
func joinedAs(vm infra.VM) joined {
	j := joined{VM: vm.ID}
	if n := vm.NodeName(); n != vm.Name {
		j.Node = n
	}
	return j
}

// nodeName is the node a join made: its recorded name, else the name of
// the slot's VM (clusters without the cloud integration).
func (j *joined) nodeName(vmName string) string {
	if j != nil && j.Node != "" {
		return j.Node
	}
	return vmName
}

// joinVia is the control plane that removes a replaced node from the
// cluster before its new VM joins: the first, or for the first the second
// (nil: none, a cluster with one control plane).
func (b *builder) joinVia(role string, i int) *engine.Ref[infra.VM] {
	switch {
	case role != infra.RoleCP || i > 0:
		ref := b.infra.VM(infra.RoleCP, 0)
		return &ref
	case b.s.ControlPlanes > 1:
		ref := b.infra.VM(infra.RoleCP, 1)
		return &ref
	}
	return nil
}

// addJoin adds the step that makes VM i of a role a node of the cluster:
// render renders its script. When the VM was replaced (the step ran
// before, for another instance), the old node is deleted from Kubernetes
// first, on another control plane: a node cannot join under the name of a
// node that is still there (kubeadm refuses while it is Ready, k3s
// refuses its password).
func (b *builder) addJoin(id, title, role string, i int, needs []engine.Dep,
	render func(ctx context.Context, r *engine.Run, vm infra.VM) (string, error),
	undo func(context.Context, *engine.Run, *joined) error) engine.Ref[joined] {
	vmRef := b.infra.VM(role, i)
	via := b.joinVia(role, i)
	needs = append(append([]engine.Dep(nil), needs...), vmRef, b.infra.Secrets)
	if via != nil {
		needs = append(needs, *via)
	}
	return engine.AddAction(b.g, engine.Action[joined]{
		ID: id, Title: title, Needs: needs, Undo: undo,
		Do: func(ctx context.Context, r *engine.Run) (joined, error) {
			vm, err := vmRef.Get(r)
			if err != nil {
				return joined{}, err
			}
			var prev joined
			if r.PrevInto(&prev) && prev.VM != "" && prev.VM != vm.ID && via != nil {
				if err := b.forgetNode(ctx, r, *via, prev.nodeName(vm.Name)); err != nil {
					return joined{}, err
				}
			}
			sc, err := render(ctx, r, vm)
			if err != nil {
				return joined{}, err
			}
			_, err = runOn(ctx, r, b.s, vm, sc)
			return joinedAs(vm), err
		},
	})
}

// forgetNode deletes the Node of a replaced VM from Kubernetes, on the
// control plane via.
func (b *builder) forgetNode(ctx context.Context, r *engine.Run, via engine.Ref[infra.VM], name string) error {
	cp, err := via.Get(r)
	if err != nil {
		return err
	}
	sc, err := bootstrap.RenderDrainNode(bootstrap.DrainNodeParams{Kubeconfig: KubeconfigPath(b.s), Node: name, Gone: true})
	if err != nil {
		return err
	}
	r.Waiting("deleting node %s from Kubernetes (its VM was replaced), on %s", name, cp.Name)
	_, err = runOn(ctx, r, b.s, cp, sc)
	return err
}

// node is a VM as the recipes see it. A node of a cluster with the cloud
// integration (its VM has a private DNS name) is named by that name and
// carries its provider ID.
func node(vm infra.VM) bootstrap.Node {
	n := bootstrap.Node{Name: vm.NodeName(), PrivateIP: vm.PrivateIP, PublicIP: vm.PublicIP}
	if vm.PrivateDNS != "" {
		n.ProviderID = vm.ProviderID()
	}
	return n
}

// etcdVMs are the handles on every etcd VM: what reads the member list
// needs them.
func (b *builder) etcdVMs() []engine.Dep {
	var out []engine.Dep
	for _, ref := range b.infra.VMsOf(b.s, infra.RoleEtcd) {
		out = append(out, ref)
	}
	return out
}

// cluster are the handles on what every recipe of the cluster shares:
// the etcd members, the load balancer, the secrets.
func (b *builder) cluster() []engine.Dep {
	return append(b.etcdVMs(), b.infra.VM(infra.RoleLB, 0), b.infra.Secrets)
}

func (b *builder) etcdCluster(r *engine.Run) (bootstrap.EtcdCluster, error) {
	c := bootstrap.EtcdCluster{Token: fmt.Sprintf("kforge-%s-%s", b.s.Name, b.s.Region)}
	for _, ref := range b.infra.VMsOf(b.s, infra.RoleEtcd) {
		vm, err := ref.Get(r)
		if err != nil {
			return c, err
		}
		c.Members = append(c.Members, node(vm))
	}
	return c, nil
}

// etcdClient issues the API servers' client certificate for etcd.
func (b *builder) etcdClient(r *engine.Run) (bootstrap.EtcdClient, error) {
	cl, err := b.etcdCluster(r)
	if err != nil {
		return bootstrap.EtcdClient{}, err
	}
	ca, err := infra.CA(r, infra.SecretEtcdCA)
	if err != nil {
		return bootstrap.EtcdClient{}, err
	}
	return bootstrap.IssueEtcdClient(ca, cl, "kube-apiserver-etcd-client")
}

// etcdMember is the output of an etcd-member step: the VM the member runs
// on, and whether it joins a running etcd cluster (a replacement) rather
// than bootstrapping it with the others.
type etcdMember struct {
	VM       string `json:"vm"`
	Existing bool   `json:"existing,omitempty"`
}

// addEtcd adds etcd: for each member, its place in the member list, then
// its install (every member at once: each waits for its peers), then one
// health check.
func (b *builder) addEtcd() {
	s := b.s
	var health []engine.Dep
	for i := 0; i < s.Etcd; i++ {
		member := b.addEtcdMember(i)
		needs := append(engine.Needs(engine.ID(ReadyStepID(infra.RoleEtcd, i)), b.infra.Rules[infra.RoleEtcd], member), b.etcdVMs()...)
		needs = append(needs, b.artifactNeeds(infra.RoleEtcd, i)...)
		health = append(health, b.script(EtcdStepID(i), fmt.Sprintf("etcd member %s with TLS (client and peer)", infra.VMName(s.Name, infra.RoleEtcd, i)),
			infra.RoleEtcd, i, needs, nil, func(ctx context.Context, r *engine.Run) (string, error) {
				cl, err := b.etcdCluster(r)
				if err != nil {
					return "", err
				}
				m, err := member.Get(r)
				if err != nil {
					return "", err
				}
				ca, err := infra.CA(r, infra.SecretEtcdCA)
				if err != nil {
					return "", err
				}
				certs, err := bootstrap.IssueEtcdCerts(ca, cl.Members[i])
				if err != nil {
					return "", err
				}
				tarballs, err := b.etcdTarballs(r)
				if err != nil {
					return "", err
				}
				return bootstrap.RenderEtcd(bootstrap.EtcdParams{
					EtcdConfigParams: bootstrap.EtcdConfigParams{Cluster: cl, Member: cl.Members[i], Existing: m.Existing},
					Certs:            certs, Tarballs: tarballs,
				})
			}))
	}
	b.script(StepEtcdHealth, "check that every etcd member is healthy", infra.RoleEtcd, 0, append(health, b.etcdVMs()...), nil,
		func(ctx context.Context, r *engine.Run) (string, error) {
			cl, err := b.etcdCluster(r)
			if err != nil {
				return "", err
			}
			return bootstrap.RenderEtcdHealth(bootstrap.EtcdHealthParams{Cluster: cl})
		})
}

// addEtcdMember keeps member i in the etcd cluster's member list. When its
// VM was replaced (the step ran before for another instance), the new VM
// has no data: on another member, the old member is removed and the new
// one added, before the new one starts and joins as an existing member.
// One member of three at a time is never below quorum.
func (b *builder) addEtcdMember(i int) engine.Ref[etcdMember] {
	s := b.s
	vmRef := b.infra.VM(infra.RoleEtcd, i)
	needs := append(engine.Needs(vmRef, b.infra.Secrets), b.etcdVMs()...)
	helper := (i + 1) % max(s.Etcd, 1)
	if s.Etcd > 1 {
		needs = append(needs, engine.ID(ReadyStepID(infra.RoleEtcd, helper)))
	}
	return engine.AddAction(b.g, engine.Action[etcdMember]{
		ID:    EtcdMemberStepID(i),
		Needs: needs,
		Title: fmt.Sprintf("etcd member %s in the member list (removed and added again if its VM was replaced)", infra.VMName(s.Name, infra.RoleEtcd, i)),
		Do: func(ctx context.Context, r *engine.Run) (etcdMember, error) {
			vm, err := vmRef.Get(r)
			if err != nil {
				return etcdMember{}, err
			}
			var prev etcdMember
			if !r.PrevInto(&prev) || prev.VM == "" {
				// The cluster's first start: every member bootstraps it.
				return etcdMember{VM: vm.ID}, nil
			}
			if prev.VM == vm.ID {
				return prev, nil
			}
			if s.Etcd == 1 {
				return etcdMember{}, &engine.DriftError{Step: EtcdMemberStepID(i), Drift: fmt.Sprintf(
					"the only etcd member %s was replaced (%s is gone): the cluster's data went with it; restore it from a backup, or delete the cluster and create it again", vm.Name, prev.VM)}
			}
			cl, err := b.etcdCluster(r)
			if err != nil {
				return etcdMember{}, err
			}
			helperVM, err := b.infra.VM(infra.RoleEtcd, helper).Get(r)
			if err != nil {
				return etcdMember{}, err
			}
			sc, err := bootstrap.RenderEtcdReplaceMember(bootstrap.EtcdReplaceMemberParams{Cluster: cl, Member: cl.Members[i]})
			if err != nil {
				return etcdMember{}, err
			}
			r.Waiting("replacing etcd member %s in the member list, on %s", vm.Name, helperVM.Name)
			if _, err := runOn(ctx, r, s, helperVM, sc); err != nil {
				return etcdMember{}, err
			}
			return etcdMember{VM: vm.ID, Existing: true}, nil
		},
	})
}

// addHAProxy puts HAProxy in front of every control plane.
func (b *builder) addHAProxy() {
	s := b.s
	needs := engine.Needs(engine.ID(ReadyStepID(infra.RoleLB, 0)), b.infra.Rules[infra.RoleLB])
	cps := b.infra.VMsOf(s, infra.RoleCP)
	for _, ref := range cps {
		needs = append(needs, ref)
	}
	b.script(StepHAProxy, fmt.Sprintf("HAProxy: TCP 6443 to the %d control planes, with health checks", s.ControlPlanes),
		infra.RoleLB, 0, needs, nil, func(ctx context.Context, r *engine.Run) (string, error) {
			var nodes []bootstrap.Node
			for _, ref := range cps {
				vm, err := ref.Get(r)
				if err != nil {
					return "", err
				}
				nodes = append(nodes, node(vm))
			}
			return bootstrap.RenderHAProxy(bootstrap.HAProxyParams{ControlPlanes: nodes})
		})
}

// drain is the Undo of a worker's join (a scale down): drain the node and
// delete it from Kubernetes, on the first control plane, before its VM is
// terminated.
func (b *builder) drain(role string, i int) func(context.Context, *engine.Run, *joined) error {
	s := b.s
	cp0 := b.infra.VM(infra.RoleCP, 0)
	return func(ctx context.Context, r *engine.Run, j *joined) error {
		cp, err := cp0.Get(r)
		if err != nil {
			return fmt.Errorf("cannot drain %s: %w", infra.VMName(s.Name, role, i), err)
		}
		sc, err := bootstrap.RenderDrainNode(bootstrap.DrainNodeParams{Kubeconfig: KubeconfigPath(s), Node: j.nodeName(infra.VMName(s.Name, role, i))})
		if err != nil {
			return err
		}
		_, err = runOn(ctx, r, s, cp, sc)
		return err
	}
}

// joinRefs are the handles a join reads: every node of the cluster, so
// that a refresh of the join credentials comes before any join, and a
// replaced VM of any role gets its join again.
func (b *builder) nodeVMs() []engine.Dep {
	var out []engine.Dep
	for _, role := range []string{infra.RoleCP, infra.RoleWP} {
		for _, ref := range b.infra.VMsOf(b.s, role) {
			out = append(out, ref)
		}
	}
	return out
}

// k3sInputs is what every k3s node's recipe needs.
type k3sInputs struct {
	node, lb       bootstrap.Node
	token, version string
}

func (b *builder) k3sNodeInputs(r *engine.Run, role string, i int) (k3sInputs, error) {
	var in k3sInputs
	vm, err := b.infra.VM(role, i).Get(r)
	if err != nil {
		return in, err
	}
	lb, err := b.infra.VM(infra.RoleLB, 0).Get(r)
	if err != nil {
		return in, err
	}
	tok, err := infra.Secret(r, infra.SecretToken)
	if err != nil {
		return in, err
	}
	ver, err := bootstrap.K3sVersion(b.s.K8sVersion)
	if err != nil {
		return in, err
	}
	return k3sInputs{node: node(vm), lb: node(lb), token: string(tok), version: ver}, nil
}

// k3sScript renders the k3s install of node i of a role (a server of the
// control planes, an agent of the workers) at the spec's version: the
// join, and the replacement of k3s in an upgrade.
func (b *builder) k3sScript(r *engine.Run, role string, i int) (string, error) {
	s := b.s
	in, err := b.k3sNodeInputs(r, role, i)
	if err != nil {
		return "", err
	}
	off, err := b.k3sOffline(r, role)
	if err != nil {
		return "", err
	}
	if role == infra.RoleWP {
		return bootstrap.RenderK3sAgent(bootstrap.K3sAgentParams{Node: in.node, LoadBalancer: in.lb, Token: in.token, Version: in.version,
			Offline: off, SystemDefaultRegistry: s.ImageRepository, ExternalCloudProvider: s.CloudIntegration()})
	}
	etcd, err := b.etcdClient(r)
	if err != nil {
		return "", err
	}
	return bootstrap.RenderK3sServer(bootstrap.K3sServerParams{Node: in.node, LoadBalancer: in.lb, Join: i > 0, Token: in.token, Version: in.version, Etcd: etcd,
		Offline: off, SystemDefaultRegistry: s.ImageRepository, ExternalCloudProvider: s.CloudIntegration()})
}

func (b *builder) addK3s() []engine.Dep {
	s := b.s
	var joins []engine.Dep
	first := engine.ID(JoinStepID(s, infra.RoleCP, 0))
	for i := 0; i < s.ControlPlanes; i++ {
		needs := append(engine.Needs(engine.ID(ReadyStepID(infra.RoleCP, i)), b.infra.Rules[infra.RoleCP], engine.ID(StepEtcdHealth), engine.ID(StepHAProxy)), b.cluster()...)
		needs = append(needs, b.artifactNeeds(infra.RoleCP, i)...)
		title := fmt.Sprintf("k3s server %s (first; external etcd)", infra.VMName(s.Name, infra.RoleCP, i))
		if i > 0 {
			needs = append(needs, first)
			title = fmt.Sprintf("k3s server %s, joined through the load balancer", infra.VMName(s.Name, infra.RoleCP, i))
		}
		joins = append(joins, b.addJoin(JoinStepID(s, infra.RoleCP, i), title, infra.RoleCP, i, needs,
			func(ctx context.Context, r *engine.Run, _ infra.VM) (string, error) {
				return b.k3sScript(r, infra.RoleCP, i)
			}, nil))
	}
	for i := 0; i < s.Workers; i++ {
		needs := append(engine.Needs(engine.ID(ReadyStepID(infra.RoleWP, i)), b.infra.Rules[infra.RoleWP], first,
			b.infra.VM(infra.RoleLB, 0)), b.artifactNeeds(infra.RoleWP, i)...)
		joins = append(joins, b.addJoin(JoinStepID(s, infra.RoleWP, i), fmt.Sprintf("k3s agent %s, joined through the load balancer", infra.VMName(s.Name, infra.RoleWP, i)),
			infra.RoleWP, i, needs, func(ctx context.Context, r *engine.Run, _ infra.VM) (string, error) {
				return b.k3sScript(r, infra.RoleWP, i)
			},
			b.drain(infra.RoleWP, i)))
	}
	return joins
}

func (b *builder) kubeadmCluster(r *engine.Run) (bootstrap.KubeadmCluster, error) {
	var c bootstrap.KubeadmCluster
	lb, err := b.infra.VM(infra.RoleLB, 0).Get(r)
	if err != nil {
		return c, err
	}
	etcd, err := b.etcdClient(r)
	if err != nil {
		return c, err
	}
	tok, err := infra.Secret(r, infra.SecretToken)
	if err != nil {
		return c, err
	}
	key, err := infra.Secret(r, infra.SecretCertKey)
	if err != nil {
		return c, err
	}
	ver, err := bootstrap.KubernetesVersion(b.s.K8sVersion)
	if err != nil {
		return c, err
	}
	return bootstrap.KubeadmCluster{Name: b.s.Name, KubernetesVersion: ver, LoadBalancer: node(lb), Etcd: etcd, Token: string(tok), CertificateKey: string(key),
		ImageRepository: b.s.ImageRepository, ExternalCloudProvider: b.s.CloudIntegration()}, nil
}

// kubeadmInit is the output of the kubeadm init step: the VM that holds
// the first control plane.
type kubeadmInit struct {
	VM string `json:"vm,omitempty"`
	// Node is the node's name when it is not the VM's (see joined).
	Node string `json:"node,omitempty"`
}

func (b *builder) addKubeadm() []engine.Dep {
	s := b.s
	for _, role := range []string{infra.RoleCP, infra.RoleWP} {
		for i := 0; i < infra.Count(s, role); i++ {
			from := "the Kubernetes apt repository"
			if offline(s) {
				from = "the artifacts"
			}
			b.script(PrereqsStepID(role, i), fmt.Sprintf("containerd, kubelet, kubeadm and kubectl on %s, from %s", infra.VMName(s.Name, role, i), from),
				role, i, append(engine.Needs(engine.ID(ReadyStepID(role, i))), b.artifactNeeds(role, i)...), nil,
				func(_ context.Context, r *engine.Run) (string, error) {
					ver, err := bootstrap.KubernetesVersion(s.K8sVersion)
					if err != nil {
						return "", err
					}
					imgs, err := KubeadmImages(s)
					if err != nil {
						return "", err
					}
					off, err := b.kubeadmOffline(r, role)
					if err != nil {
						return "", err
					}
					return bootstrap.RenderKubeadmPrereqs(bootstrap.KubeadmPrereqsParams{KubernetesVersion: ver, PauseImage: imgs.Pause, Offline: off})
				})
		}
	}
	cp0 := b.infra.VM(infra.RoleCP, 0)
	initNeeds := append(engine.Needs(engine.ID(PrereqsStepID(infra.RoleCP, 0)), b.infra.Rules[infra.RoleCP], engine.ID(StepEtcdHealth), engine.ID(StepHAProxy), cp0), b.cluster()...)
	if s.ControlPlanes > 1 {
		// A replaced first control plane rejoins through the second.
		initNeeds = append(initNeeds, b.infra.VM(infra.RoleCP, 1))
	}
	engine.AddAction(b.g, engine.Action[kubeadmInit]{
		ID:    StepKubeadmInit,
		Needs: initNeeds,
		Title: fmt.Sprintf("kubeadm init on %s: external etcd, endpoint at the load balancer", infra.VMName(s.Name, infra.RoleCP, 0)),
		Do: func(ctx context.Context, r *engine.Run) (kubeadmInit, error) {
			c, err := b.kubeadmCluster(r)
			if err != nil {
				return kubeadmInit{}, err
			}
			vm, err := cp0.Get(r)
			if err != nil {
				return kubeadmInit{}, err
			}
			var prev kubeadmInit
			if r.PrevInto(&prev) && prev.VM != "" && prev.VM != vm.ID && s.ControlPlanes > 1 {
				// The cluster exists: its state is in etcd. The new first
				// control plane joins it, with certificates uploaded again
				// from the second.
				old := (&joined{Node: prev.Node}).nodeName(vm.Name)
				j := joinedAs(vm)
				return kubeadmInit{VM: j.VM, Node: j.Node}, b.rejoinFirst(ctx, r, c, vm, old)
			}
			ca, err := infra.CA(r, infra.SecretK8sCA)
			if err != nil {
				return kubeadmInit{}, err
			}
			pp, err := ca.PEM()
			if err != nil {
				return kubeadmInit{}, err
			}
			sc, err := bootstrap.RenderKubeadmInit(bootstrap.KubeadmInitParams{Cluster: c, Node: node(vm), CA: pp})
			if err != nil {
				return kubeadmInit{}, err
			}
			_, err = runOn(ctx, r, s, vm, sc)
			j := joinedAs(vm)
			return kubeadmInit{VM: j.VM, Node: j.Node}, err
		},
	})
	b.script(StepCNI, "the pod network (Flannel)", infra.RoleCP, 0, engine.Needs(engine.ID(StepKubeadmInit)), nil,
		func(context.Context, *engine.Run) (string, error) {
			imgs, err := KubeadmImages(s)
			if err != nil {
				return "", err
			}
			return bootstrap.RenderCNI(bootstrap.CNIParams{Flannel: bootstrap.FlannelParams{Image: imgs.Flannel, CNIPluginImage: imgs.FlannelCNIPlugin}})
		})
	// Fresh join credentials before joins: kubeadm deletes uploaded
	// certificates after two hours, so a join long after the create (a
	// scale, a replaced VM) still works. It runs again whenever a node
	// changes (it needs every node's VM).
	// It runs after the first control plane's API server has moved to
	// the current etcd members (which restarts it): found by the lab, a
	// refresh beside that restart failed on an API server that was down.
	refreshNeeds := append(append(engine.Needs(engine.ID(StepKubeadmInit), engine.ID(EtcdServersStepID(0))), b.nodeVMs()...), b.cluster()...)
	b.script(StepKubeadmRefresh, "refresh the join token and the uploaded control-plane certificates",
		infra.RoleCP, 0, refreshNeeds, nil,
		func(ctx context.Context, r *engine.Run) (string, error) {
			c, err := b.kubeadmCluster(r)
			if err != nil {
				return "", err
			}
			vm, err := cp0.Get(r)
			if err != nil {
				return "", err
			}
			return b.refresh(r, c, vm, s.ControlPlanes > 1)
		})
	joins := []engine.Dep{engine.ID(StepKubeadmInit), engine.ID(StepCNI)}
	join := func(role string, i int) engine.Dep {
		what := "worker"
		if role == infra.RoleCP {
			what = "control plane"
		}
		needs := append(engine.Needs(engine.ID(PrereqsStepID(role, i)), b.infra.Rules[role], engine.ID(StepKubeadmRefresh)), b.cluster()...)
		var undo func(context.Context, *engine.Run, *joined) error
		if role == infra.RoleWP {
			undo = b.drain(role, i)
		}
		return b.addJoin(JoinStepID(s, role, i), fmt.Sprintf("kubeadm join %s as a %s through the load balancer", infra.VMName(s.Name, role, i), what),
			role, i, needs, func(ctx context.Context, r *engine.Run, vm infra.VM) (string, error) {
				c, err := b.kubeadmCluster(r)
				if err != nil {
					return "", err
				}
				sec, err := b.infra.Secrets.Get(r)
				if err != nil {
					return "", err
				}
				jp := bootstrap.KubeadmJoinParams{Cluster: c, Node: node(vm), CACertHash: sec.CAHash}
				if role == infra.RoleCP {
					return bootstrap.RenderKubeadmJoinControlPlane(jp)
				}
				return bootstrap.RenderKubeadmJoinWorker(jp)
			}, undo)
	}
	for i := 1; i < s.ControlPlanes; i++ {
		joins = append(joins, join(infra.RoleCP, i))
	}
	for i := 0; i < s.Workers; i++ {
		joins = append(joins, join(infra.RoleWP, i))
	}
	b.addEtcdServers()
	return joins
}

// addEtcdServers keeps every control plane's API server pointed at the
// etcd members' current addresses: a replaced etcd VM has a new one. The
// control planes go one after the other, so that the load balancer always
// has API servers to send to while kubelet restarts one.
func (b *builder) addEtcdServers() {
	s := b.s
	var prev engine.Dep
	for i := 0; i < s.ControlPlanes; i++ {
		setup := engine.ID(StepKubeadmInit)
		if i > 0 {
			setup = engine.ID(JoinStepID(s, infra.RoleCP, i))
		}
		needs := append(engine.Needs(setup), b.etcdVMs()...)
		if prev != nil {
			needs = append(needs, prev)
		}
		prev = b.script(EtcdServersStepID(i), fmt.Sprintf("the API server of %s uses the current etcd members", infra.VMName(s.Name, infra.RoleCP, i)),
			infra.RoleCP, i, needs, nil, func(ctx context.Context, r *engine.Run) (string, error) {
				vm, err := b.infra.VM(infra.RoleCP, i).Get(r)
				if err != nil {
					return "", err
				}
				cl, err := b.etcdCluster(r)
				if err != nil {
					return "", err
				}
				return bootstrap.RenderKubeadmEtcdServers(bootstrap.KubeadmEtcdServersParams{Node: node(vm), Etcd: cl})
			})
	}
}

// rejoinFirst makes a replaced first control plane join the cluster as a
// control plane: the second control plane uploads the control-plane
// certificates again, the old VM's node (oldNode) is deleted, then the new
// VM joins with them.
func (b *builder) rejoinFirst(ctx context.Context, r *engine.Run, c bootstrap.KubeadmCluster, vm infra.VM, oldNode string) error {
	s := b.s
	cp1, err := b.infra.VM(infra.RoleCP, 1).Get(r)
	if err != nil {
		return err
	}
	refresh, err := b.refresh(r, c, cp1, true)
	if err != nil {
		return err
	}
	r.Waiting("uploading the control-plane certificates again from %s, for the new %s", cp1.Name, vm.Name)
	if _, err := runOn(ctx, r, s, cp1, refresh); err != nil {
		return err
	}
	sec, err := b.infra.Secrets.Get(r)
	if err != nil {
		return err
	}
	join, err := bootstrap.RenderKubeadmJoinControlPlane(bootstrap.KubeadmJoinParams{Cluster: c, Node: node(vm), CACertHash: sec.CAHash})
	if err != nil {
		return err
	}
	if err := b.forgetNode(ctx, r, b.infra.VM(infra.RoleCP, 1), oldNode); err != nil {
		return err
	}
	r.Waiting("joining the new %s to the cluster as a control plane", vm.Name)
	_, err = runOn(ctx, r, s, vm, join)
	return err
}

// refresh renders kubeadm-refresh-join for a control plane, with the
// cluster's configuration it uploads the certificates under.
func (b *builder) refresh(r *engine.Run, c bootstrap.KubeadmCluster, on infra.VM, upload bool) (string, error) {
	ca, err := infra.CA(r, infra.SecretK8sCA)
	if err != nil {
		return "", err
	}
	pp, err := ca.PEM()
	if err != nil {
		return "", err
	}
	return bootstrap.RenderKubeadmRefreshJoin(bootstrap.KubeadmRefreshJoinParams{Cluster: c, Node: node(on), CA: pp, Now: time.Now(), UploadCerts: upload})
}
