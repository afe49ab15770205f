package ha

import (
	"context"
	"fmt"
	"time"

	"github.com/kforge/kforge/internal/bootstrap"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/spec"
)

// Bootstrap step IDs.
const (
	StepEtcdHealth     = "etcd-health"
	StepHAProxy        = "haproxy"
	StepKubeadmInit    = "kubeadm/init"
	StepKubeadmRefresh = "kubeadm/refresh"
	StepCNI            = "cni"
	StepKubeconfig     = "kubeconfig"
	StepNodesReady     = "nodes-ready"
)

// ReadyStepID waits for VM i of a role to answer SSH and finish cloud-init.
func ReadyStepID(role string, i int) string { return fmt.Sprintf("ready/%s/%d", role, i) }

// EtcdStepID installs etcd member i.
func EtcdStepID(i int) string { return fmt.Sprintf("etcd/%d", i) }

// PrereqsStepID installs containerd and the Kubernetes packages (kubeadm).
func PrereqsStepID(role string, i int) string { return fmt.Sprintf("prereqs/%s/%d", role, i) }

// JoinStepID installs (k3s) or joins (kubeadm) node i of a role; for the
// first control plane it is the cluster's first server (k3s).
func JoinStepID(s spec.Spec, role string, i int) string {
	return fmt.Sprintf("%s/%s/%d", s.Bootstrap, role, i)
}

// vmOut reads the journaled output of a VM step.
func vmOut(r *engine.Run, role string, i int) (VMOut, error) {
	return engine.Out[VMOut](r, VMStepID(role, i))
}

func node(vm VMOut) bootstrap.Node {
	return bootstrap.Node{Name: vm.Name, PrivateIP: vm.PrivateIP, PublicIP: vm.PublicIP}
}

func (p *Provider) etcdCluster(r *engine.Run, s spec.Spec) (bootstrap.EtcdCluster, error) {
	c := bootstrap.EtcdCluster{Token: fmt.Sprintf("kforge-%s-%s", s.Name, s.Region)}
	for i := 0; i < s.Etcd; i++ {
		vm, err := vmOut(r, RoleEtcd, i)
		if err != nil {
			return c, err
		}
		c.Members = append(c.Members, node(vm))
	}
	return c, nil
}

// etcdClient issues the API servers' client certificate for etcd.
func (p *Provider) etcdClient(r *engine.Run, s spec.Spec) (bootstrap.EtcdClient, error) {
	cl, err := p.etcdCluster(r, s)
	if err != nil {
		return bootstrap.EtcdClient{}, err
	}
	ca, err := caFrom(r, secretEtcdCA)
	if err != nil {
		return bootstrap.EtcdClient{}, err
	}
	return bootstrap.IssueEtcdClient(ca, cl, "kube-apiserver-etcd-client")
}

// script is a step that renders one script and runs it on one VM.
func (p *Provider) script(s spec.Spec, id, title, role string, i int, needs []string, inputs any,
	render func(ctx context.Context, r *engine.Run) (string, error)) *engine.Step {
	// The script reads the VM it runs on, and what every recipe of the
	// cluster shares: the etcd members, the load balancer, the secrets.
	needs = append(append([]string(nil), needs...), VMStepID(role, i), VMStepID(RoleLB, 0), StepSecrets)
	for m := 0; m < s.Etcd; m++ {
		needs = append(needs, VMStepID(RoleEtcd, m))
	}
	return &engine.Step{
		ID: id, Needs: needs, Title: title, Inputs: inputs,
		Ensure: func(ctx context.Context, r *engine.Run) (any, error) {
			vm, err := vmOut(r, role, i)
			if err != nil {
				return nil, err
			}
			sc, err := render(ctx, r)
			if err != nil {
				return nil, err
			}
			if _, err := p.runOn(ctx, r, s, vm, sc); err != nil {
				return nil, err
			}
			return nil, nil
		},
	}
}

// kubeconfigPath is where the admin kubeconfig lives on control planes.
func kubeconfigPath(s spec.Spec) string {
	if s.Bootstrap == spec.BootstrapKubeadm {
		return bootstrap.KubeadmKubeconfig
	}
	return bootstrap.K3sKubeconfig
}

// bootstrapSteps returns the SSH steps: readiness of every VM, etcd, the
// load balancer, then k3s or kubeadm, the admin kubeconfig and the wait for
// every node to be Ready. Etcd members, workers and joining control planes
// run concurrently.
func (p *Provider) bootstrapSteps(s spec.Spec) []*engine.Step {
	var steps []*engine.Step
	for _, role := range Roles {
		for i := 0; i < count(s, role); i++ {
			steps = append(steps, p.script(s, ReadyStepID(role, i), fmt.Sprintf("wait for %s to answer SSH and finish cloud-init", vmName(s.Name, role, i)),
				role, i, []string{VMStepID(role, i), RulesStepID(role), StepSecrets}, nil,
				func(context.Context, *engine.Run) (string, error) {
					return bootstrap.RenderWaitReady(bootstrap.WaitReadyParams{})
				}))
		}
	}

	// etcd: every member at once (each waits for its peers), then health.
	var allEtcdVMs, etcdSteps []string
	for i := 0; i < s.Etcd; i++ {
		allEtcdVMs = append(allEtcdVMs, VMStepID(RoleEtcd, i))
	}
	for i := 0; i < s.Etcd; i++ {
		i := i
		needs := append([]string{ReadyStepID(RoleEtcd, i), RulesStepID(RoleEtcd)}, allEtcdVMs...)
		needs = append(needs, artifactNeeds(s, RoleEtcd, i)...)
		steps = append(steps, p.script(s, EtcdStepID(i), fmt.Sprintf("etcd member %s with TLS (client and peer)", vmName(s.Name, RoleEtcd, i)),
			RoleEtcd, i, needs, nil, func(ctx context.Context, r *engine.Run) (string, error) {
				cl, err := p.etcdCluster(r, s)
				if err != nil {
					return "", err
				}
				ca, err := caFrom(r, secretEtcdCA)
				if err != nil {
					return "", err
				}
				certs, err := bootstrap.IssueEtcdCerts(ca, cl.Members[i])
				if err != nil {
					return "", err
				}
				tarballs, err := etcdTarballs(r, s)
				if err != nil {
					return "", err
				}
				return bootstrap.RenderEtcd(bootstrap.EtcdParams{EtcdConfigParams: bootstrap.EtcdConfigParams{Cluster: cl, Member: cl.Members[i]}, Certs: certs, Tarballs: tarballs})
			}))
		etcdSteps = append(etcdSteps, EtcdStepID(i))
	}
	steps = append(steps, p.script(s, StepEtcdHealth, "check that every etcd member is healthy", RoleEtcd, 0, etcdSteps, nil,
		func(ctx context.Context, r *engine.Run) (string, error) {
			cl, err := p.etcdCluster(r, s)
			if err != nil {
				return "", err
			}
			return bootstrap.RenderEtcdHealth(bootstrap.EtcdHealthParams{Cluster: cl})
		}))

	// HAProxy in front of every control plane.
	haNeeds := []string{ReadyStepID(RoleLB, 0), RulesStepID(RoleLB), VMStepID(RoleLB, 0)}
	for i := 0; i < s.ControlPlanes; i++ {
		haNeeds = append(haNeeds, VMStepID(RoleCP, i))
	}
	steps = append(steps, p.script(s, StepHAProxy, fmt.Sprintf("HAProxy: TCP 6443 to the %d control planes, with health checks", s.ControlPlanes),
		RoleLB, 0, haNeeds, nil, func(ctx context.Context, r *engine.Run) (string, error) {
			var cps []bootstrap.Node
			for i := 0; i < s.ControlPlanes; i++ {
				vm, err := vmOut(r, RoleCP, i)
				if err != nil {
					return "", err
				}
				cps = append(cps, node(vm))
			}
			return bootstrap.RenderHAProxy(bootstrap.HAProxyParams{ControlPlanes: cps})
		}))

	var joins []string
	if s.Bootstrap == spec.BootstrapKubeadm {
		steps, joins = p.kubeadmSteps(s, steps)
	} else {
		steps, joins = p.k3sSteps(s, steps)
	}
	first := JoinStepID(s, RoleCP, 0)
	if s.Bootstrap == spec.BootstrapKubeadm {
		first = StepKubeadmInit
	}
	steps = append(steps, &engine.Step{
		ID: StepKubeconfig, Needs: []string{first, VMStepID(RoleCP, 0), StepSecrets}, Title: "read the admin kubeconfig from the first control plane (kept in state)",
		Ensure: func(ctx context.Context, r *engine.Run) (any, error) {
			vm, err := vmOut(r, RoleCP, 0)
			if err != nil {
				return nil, err
			}
			sc, err := bootstrap.RenderFetchKubeconfig(bootstrap.FetchKubeconfigParams{Kubeconfig: kubeconfigPath(s)})
			if err != nil {
				return nil, err
			}
			out, err := p.runOn(ctx, r, s, vm, sc)
			if err != nil {
				return nil, err
			}
			if len(out) == 0 {
				return nil, fmt.Errorf("the first control plane returned an empty kubeconfig")
			}
			return nil, r.SetSecret(ctx, secretAdmin, out)
		},
	})
	nodes := s.ControlPlanes + s.Workers
	steps = append(steps, p.script(s, StepNodesReady, fmt.Sprintf("wait for the %d nodes to be Ready", nodes), RoleCP, 0,
		append(joins, StepKubeconfig), struct{ Nodes int }{nodes},
		func(context.Context, *engine.Run) (string, error) {
			return bootstrap.RenderNodesReady(bootstrap.NodesReadyParams{Kubeconfig: kubeconfigPath(s), Count: nodes})
		}))
	return steps
}

// drain is the Delete of a worker's join step (a scale down): drain the
// node and delete it from Kubernetes, on the first control plane, before
// its VM is terminated.
func (p *Provider) drain(s spec.Spec, role string, i int) func(context.Context, *engine.Run) error {
	return func(ctx context.Context, r *engine.Run) error {
		cp, ok := engine.Lookup[VMOut](r, VMStepID(RoleCP, 0))
		if !ok {
			return fmt.Errorf("cannot drain %s: the first control plane is not in the state", vmName(s.Name, role, i))
		}
		sc, err := bootstrap.RenderDrainNode(bootstrap.DrainNodeParams{Kubeconfig: kubeconfigPath(s), Node: vmName(s.Name, role, i)})
		if err != nil {
			return err
		}
		_, err = p.runOn(ctx, r, s, cp, sc)
		return err
	}
}

// k3sInputs is what every k3s node's recipe needs.
type k3sInputs struct {
	node, lb       bootstrap.Node
	token, version string
}

// k3sNodeInputs reads the inputs of k3s node i of a role from the journal
// and the secrets.
func k3sNodeInputs(r *engine.Run, s spec.Spec, role string, i int) (k3sInputs, error) {
	var in k3sInputs
	vm, err := vmOut(r, role, i)
	if err != nil {
		return in, err
	}
	lb, err := vmOut(r, RoleLB, 0)
	if err != nil {
		return in, err
	}
	tok, err := secret(r, secretToken)
	if err != nil {
		return in, err
	}
	ver, err := bootstrap.K3sVersion(s.K8sVersion)
	if err != nil {
		return in, err
	}
	return k3sInputs{node: node(vm), lb: node(lb), token: string(tok), version: ver}, nil
}

func (p *Provider) k3sSteps(s spec.Spec, steps []*engine.Step) ([]*engine.Step, []string) {
	var joins []string
	first := JoinStepID(s, RoleCP, 0)
	server := func(i int) *engine.Step {
		needs := []string{ReadyStepID(RoleCP, i), RulesStepID(RoleCP), StepEtcdHealth, StepHAProxy, VMStepID(RoleLB, 0)}
		needs = append(needs, artifactNeeds(s, RoleCP, i)...)
		title := fmt.Sprintf("k3s server %s (first; external etcd)", vmName(s.Name, RoleCP, i))
		if i > 0 {
			needs = append(needs, first)
			title = fmt.Sprintf("k3s server %s, joined through the load balancer", vmName(s.Name, RoleCP, i))
		}
		return p.script(s, JoinStepID(s, RoleCP, i), title, RoleCP, i, needs, nil, func(ctx context.Context, r *engine.Run) (string, error) {
			in, err := k3sNodeInputs(r, s, RoleCP, i)
			if err != nil {
				return "", err
			}
			etcd, err := p.etcdClient(r, s)
			if err != nil {
				return "", err
			}
			off, err := k3sOffline(r, s, RoleCP)
			if err != nil {
				return "", err
			}
			return bootstrap.RenderK3sServer(bootstrap.K3sServerParams{Node: in.node, LoadBalancer: in.lb, Join: i > 0, Token: in.token, Version: in.version, Etcd: etcd,
				Offline: off, SystemDefaultRegistry: s.ImageRepository})
		})
	}
	for i := 0; i < s.ControlPlanes; i++ {
		steps = append(steps, server(i))
		joins = append(joins, JoinStepID(s, RoleCP, i))
	}
	for i := 0; i < s.Workers; i++ {
		i := i
		st := p.script(s, JoinStepID(s, RoleWP, i), fmt.Sprintf("k3s agent %s, joined through the load balancer", vmName(s.Name, RoleWP, i)),
			RoleWP, i, append([]string{ReadyStepID(RoleWP, i), RulesStepID(RoleWP), first}, artifactNeeds(s, RoleWP, i)...), nil,
			func(ctx context.Context, r *engine.Run) (string, error) {
				in, err := k3sNodeInputs(r, s, RoleWP, i)
				if err != nil {
					return "", err
				}
				off, err := k3sOffline(r, s, RoleWP)
				if err != nil {
					return "", err
				}
				return bootstrap.RenderK3sAgent(bootstrap.K3sAgentParams{Node: in.node, LoadBalancer: in.lb, Token: in.token, Version: in.version,
					Offline: off, SystemDefaultRegistry: s.ImageRepository})
			})
		st.Delete = p.drain(s, RoleWP, i)
		st.Needs = append(st.Needs, VMStepID(RoleCP, 0)) // drain reads it
		steps = append(steps, st)
		joins = append(joins, st.ID)
	}
	return steps, joins
}

func (p *Provider) kubeadmCluster(r *engine.Run, s spec.Spec) (bootstrap.KubeadmCluster, error) {
	var c bootstrap.KubeadmCluster
	lb, err := vmOut(r, RoleLB, 0)
	if err != nil {
		return c, err
	}
	etcd, err := p.etcdClient(r, s)
	if err != nil {
		return c, err
	}
	tok, err := secret(r, secretToken)
	if err != nil {
		return c, err
	}
	key, err := secret(r, secretCertKey)
	if err != nil {
		return c, err
	}
	ver, err := bootstrap.KubernetesVersion(s.K8sVersion)
	if err != nil {
		return c, err
	}
	return bootstrap.KubeadmCluster{Name: s.Name, KubernetesVersion: ver, LoadBalancer: node(lb), Etcd: etcd, Token: string(tok), CertificateKey: string(key),
		ImageRepository: s.ImageRepository}, nil
}

func (p *Provider) kubeadmSteps(s spec.Spec, steps []*engine.Step) ([]*engine.Step, []string) {
	var joins []string
	for _, role := range []string{RoleCP, RoleWP} {
		for i := 0; i < count(s, role); i++ {
			from := "the Kubernetes apt repository"
			if offline(s) {
				from = "the artifacts"
			}
			steps = append(steps, p.script(s, PrereqsStepID(role, i), fmt.Sprintf("containerd, kubelet, kubeadm and kubectl on %s, from %s", vmName(s.Name, role, i), from),
				role, i, append([]string{ReadyStepID(role, i)}, artifactNeeds(s, role, i)...), nil, func(_ context.Context, r *engine.Run) (string, error) {
					ver, err := bootstrap.KubernetesVersion(s.K8sVersion)
					if err != nil {
						return "", err
					}
					imgs, err := kubeadmImages(s)
					if err != nil {
						return "", err
					}
					off, err := kubeadmOffline(r, s, role)
					if err != nil {
						return "", err
					}
					return bootstrap.RenderKubeadmPrereqs(bootstrap.KubeadmPrereqsParams{KubernetesVersion: ver, PauseImage: imgs.Pause, Offline: off})
				}))
		}
	}
	steps = append(steps, p.script(s, StepKubeadmInit, fmt.Sprintf("kubeadm init on %s: external etcd, endpoint at the load balancer", vmName(s.Name, RoleCP, 0)),
		RoleCP, 0, []string{PrereqsStepID(RoleCP, 0), RulesStepID(RoleCP), StepEtcdHealth, StepHAProxy, VMStepID(RoleLB, 0)}, nil,
		func(ctx context.Context, r *engine.Run) (string, error) {
			c, err := p.kubeadmCluster(r, s)
			if err != nil {
				return "", err
			}
			vm, err := vmOut(r, RoleCP, 0)
			if err != nil {
				return "", err
			}
			ca, err := caFrom(r, secretK8sCA)
			if err != nil {
				return "", err
			}
			pp, err := ca.PEM()
			if err != nil {
				return "", err
			}
			return bootstrap.RenderKubeadmInit(bootstrap.KubeadmInitParams{Cluster: c, Node: node(vm), CA: pp})
		}))
	steps = append(steps, p.script(s, StepCNI, "the pod network (Flannel)", RoleCP, 0, []string{StepKubeadmInit}, nil,
		func(context.Context, *engine.Run) (string, error) {
			imgs, err := kubeadmImages(s)
			if err != nil {
				return "", err
			}
			return bootstrap.RenderCNI(bootstrap.CNIParams{Flannel: bootstrap.FlannelParams{Image: imgs.Flannel, CNIPluginImage: imgs.FlannelCNIPlugin}})
		}))
	// A fresh bootstrap token and certificate upload before joins: kubeadm
	// deletes uploaded certificates after two hours, so a scale long after
	// the create still joins. It runs again whenever the node count changes.
	steps = append(steps, p.script(s, StepKubeadmRefresh, "refresh the join token and the uploaded control-plane certificates",
		RoleCP, 0, []string{StepKubeadmInit}, struct{ CP, WP int }{s.ControlPlanes, s.Workers},
		func(ctx context.Context, r *engine.Run) (string, error) {
			c, err := p.kubeadmCluster(r, s)
			if err != nil {
				return "", err
			}
			return bootstrap.RenderKubeadmRefreshJoin(bootstrap.KubeadmRefreshJoinParams{Cluster: c, Now: time.Now(), UploadCerts: s.ControlPlanes > 1})
		}))
	joins = append(joins, StepKubeadmInit, StepCNI)
	join := func(role string, i int) *engine.Step {
		what := "worker"
		if role == RoleCP {
			what = "control plane"
		}
		st := p.script(s, JoinStepID(s, role, i), fmt.Sprintf("kubeadm join %s as a %s through the load balancer", vmName(s.Name, role, i), what),
			role, i, []string{PrereqsStepID(role, i), RulesStepID(role), StepKubeadmRefresh}, nil,
			func(ctx context.Context, r *engine.Run) (string, error) {
				c, err := p.kubeadmCluster(r, s)
				if err != nil {
					return "", err
				}
				vm, err := vmOut(r, role, i)
				if err != nil {
					return "", err
				}
				sec, err := engine.Out[secretsOut](r, StepSecrets)
				if err != nil {
					return "", err
				}
				jp := bootstrap.KubeadmJoinParams{Cluster: c, Node: node(vm), CACertHash: sec.CAHash}
				if role == RoleCP {
					return bootstrap.RenderKubeadmJoinControlPlane(jp)
				}
				return bootstrap.RenderKubeadmJoinWorker(jp)
			})
		if role == RoleWP {
			st.Delete = p.drain(s, role, i)
			st.Needs = append(st.Needs, VMStepID(RoleCP, 0)) // drain reads it
		}
		return st
	}
	for i := 1; i < s.ControlPlanes; i++ {
		steps = append(steps, join(RoleCP, i))
		joins = append(joins, JoinStepID(s, RoleCP, i))
	}
	for i := 0; i < s.Workers; i++ {
		steps = append(steps, join(RoleWP, i))
		joins = append(joins, JoinStepID(s, RoleWP, i))
	}
	return steps, joins
}
