// Package ha is the `ha-aws` cluster type: Kubernetes on EC2 VMs that
// kforge creates and bootstraps itself. It turns a spec into the engine's
// steps: the network (shared with aws), security groups per role, IAM
// roles and instance profiles, a key pair, one step per VM (each its own
// RunInstances with its own user-data and ClientToken), and the bootstrap
// over SSH: etcd with kforge's PKI, HAProxy, then k3s or kubeadm.
package ha

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancing"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/iam"

	"github.com/kforge/kforge/internal/artifacts"
	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/bootstrap"
	"github.com/kforge/kforge/internal/cost"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/iamrole"
	"github.com/kforge/kforge/internal/leftovers"
	"github.com/kforge/kforge/internal/lifecycle"
	"github.com/kforge/kforge/internal/network"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
)

// VM roles, as the kforge.io/role tag says.
const (
	RoleEtcd = "etcd"
	RoleLB   = "lb"
	RoleCP   = "cp"
	RoleWP   = "wp"
)

// Roles lists the VM roles in launch order.
var Roles = []string{RoleEtcd, RoleLB, RoleCP, RoleWP}

// Step IDs.
const (
	StepSecrets = "secrets"
	StepKeyPair = "keypair"
	StepImages  = "images"
	StepCPRole  = "role/cp"
	StepWPRole  = "role/wp"
	StepVMs     = "vms" // teardown only: every VM of the cluster
	// StepInventory looks up the cluster's live instances once per run.
	StepInventory = "instances"
)

// IAM suffixes: kforge-<name>-ha-cp and kforge-<name>-ha-wp.
const (
	CPRoleSuffix = "ha-cp"
	WPRoleSuffix = "ha-wp"
)

// SGStepID is the step that makes the security group of a role.
func SGStepID(role string) string { return "sg/" + role }

// RulesStepID is the step that sets the ingress rules of a role's group.
func RulesStepID(role string) string { return "sg-rules/" + role }

// VMStepID is the step that launches VM i of a role.
func VMStepID(role string, i int) string { return fmt.Sprintf("vm/%s/%d", role, i) }

// Provider builds the steps of ha-aws clusters.
type Provider struct {
	ec2  *ec2.Client
	iam  *iam.Client
	elb  *elasticloadbalancing.Client
	elb2 *elasticloadbalancingv2.Client
	home string
	log  io.Writer

	watch *watcher
	// launches is the retry policy shared by every RunInstances of a run:
	// EC2 allows 5 at once, then 2 a second (see awsx.NewAdaptiveRetryer).
	launches aws.Retryer

	invMu sync.Mutex
	inv   map[spec.Ref]*inventory

	sshMu sync.Mutex
	ssh   *sshPool
}

// New returns the ha-aws provider. It makes no AWS call.
func New(env lifecycle.Env) lifecycle.Provider {
	c := ec2.NewFromConfig(env.AWS)
	return &Provider{
		ec2:      c,
		iam:      iam.NewFromConfig(env.AWS),
		elb:      elasticloadbalancing.NewFromConfig(env.AWS),
		elb2:     elasticloadbalancingv2.NewFromConfig(env.AWS),
		home:     env.Home,
		log:      env.Log,
		watch:    newWatcher(c),
		launches: awsx.NewAdaptiveRetryer(),
		inv:      map[spec.Ref]*inventory{},
	}
}

// count returns how many VMs of a role the spec wants.
func count(s spec.Spec, role string) int {
	switch role {
	case RoleEtcd:
		return s.Etcd
	case RoleLB:
		return 1
	case RoleCP:
		return s.ControlPlanes
	case RoleWP:
		return s.Workers
	}
	return 0
}

// size returns the instance type of a role.
func size(s spec.Spec, role string) string {
	switch role {
	case RoleEtcd:
		return s.EtcdSize
	case RoleLB:
		return s.LBSize
	case RoleCP:
		return s.CPSize
	}
	return s.WPSize
}

func (p *Provider) netSpec(s spec.Spec) network.Spec {
	return network.Spec{Ref: s.Ref, VPCID: s.VPCID, Zones: 3}
}

// infra returns the steps of everything but the VMs and the bootstrap.
func (p *Provider) infra(s spec.Spec) []*engine.Step {
	var steps []*engine.Step
	steps = append(steps, network.Steps(&network.Clients{EC2: p.ec2}, p.netSpec(s))...)
	steps = append(steps,
		leftovers.Step(&leftovers.Clients{EC2: p.ec2, ELB: p.elb, ELBv2: p.elb2}, s.Ref, []string{network.StepID}),
		p.secretsStep(s),
		p.keyPairStep(s),
		p.imagesStep(s),
		iamrole.Step(p.iam, s.Ref, StepCPRole, iamrole.Role{Suffix: CPRoleSuffix, Service: "ec2.amazonaws.com", Inline: cpPolicy, Profile: true}),
		iamrole.Step(p.iam, s.Ref, StepWPRole, iamrole.Role{Suffix: WPRoleSuffix, Service: "ec2.amazonaws.com", Inline: wpPolicy, Profile: true}),
	)
	for _, role := range Roles {
		steps = append(steps, p.sgStep(s, role))
	}
	for _, role := range Roles {
		steps = append(steps, p.rulesStep(s, role))
	}
	return steps
}

// Graph implements lifecycle.Provider. A Kubernetes version the bootstrap
// cannot install is refused here, before anything is made.
func (p *Provider) Graph(s spec.Spec) (*engine.Graph, error) {
	resolve := bootstrap.K3sVersion
	if s.Bootstrap == spec.BootstrapKubeadm {
		resolve = bootstrap.KubernetesVersion
	}
	if _, err := resolve(s.K8sVersion); err != nil {
		return nil, spec.Usagef("invalid --k8s-version: %v", err)
	}
	if s.Bootstrap == spec.BootstrapKubeadm {
		if _, err := kubeadmImages(s); err != nil {
			return nil, spec.Usagef("invalid --k8s-version: %v", err)
		}
	}
	g := engine.NewGraph()
	g.Add(p.infra(s)...)
	g.Add(p.inventoryStep(s))
	for _, role := range Roles {
		for i := 0; i < count(s, role); i++ {
			g.Add(p.vmStep(s, role, i))
		}
	}
	g.Add(p.bootstrapSteps(s)...)
	if offline(s) {
		g.Add(p.artifactsStep(s))
		if source(s).Dir != "" {
			for _, role := range Roles {
				if !installsArtifacts(role) {
					continue
				}
				for i := 0; i < count(s, role); i++ {
					g.Add(p.uploadStep(s, role, i))
				}
			}
		}
	}
	return g, nil
}

// Teardown implements lifecycle.Provider: the infrastructure in reverse,
// after one step that terminates every VM of the cluster, found by tags,
// and waits for them to be gone (security groups and subnets cannot go
// while instances use them).
func (p *Provider) Teardown(s spec.Spec) (*engine.Graph, error) {
	g := engine.NewGraph()
	infra := p.infra(s)
	g.Add(infra...)
	var needs []string
	for _, st := range infra {
		needs = append(needs, st.ID)
	}
	g.Add(p.vmsTeardownStep(s, needs))
	return g, nil
}

// Check implements lifecycle.Provider: an existing VPC's DNS settings, the
// cluster name, the IAM names and the key pair name must be free for this
// cluster. The checks are independent look-ups, made at once.
func (p *Provider) Check(ctx context.Context, s spec.Spec) error {
	checks := []func(context.Context) error{}
	if s.VPCID != "" {
		checks = append(checks, func(ctx context.Context) error {
			return network.CheckVPC(ctx, &network.Clients{EC2: p.ec2}, s.VPCID, nil)
		})
	}
	checks = append(checks, func(ctx context.Context) error {
		return network.CheckNameFree(ctx, &network.Clients{EC2: p.ec2}, s.Ref)
	})
	for _, suffix := range []string{CPRoleSuffix, WPRoleSuffix} {
		checks = append(checks, func(ctx context.Context) error {
			err := iamrole.CheckOwner(ctx, p.iam, s.Ref, suffix)
			if _, ok := err.(*iamrole.OwnerError); ok {
				return spec.Usagef("%v", err)
			}
			return err
		})
	}
	checks = append(checks, func(ctx context.Context) error { return p.checkKeyPair(ctx, s.Ref) })
	if offline(s) {
		checks = append(checks, func(ctx context.Context) error { return p.checkSource(ctx, s) })
	}
	return awsx.All(ctx, checks...)
}

// Info implements lifecycle.Provider.
func (p *Provider) Info(c *state.Cluster) lifecycle.Info {
	s := c.Spec
	info := lifecycle.Info{
		Name: s.Name, Type: s.Type, Region: s.Region, Status: c.Status, Nodes: s.Workers, Created: c.Created,
		Error: c.Error, Spec: s, Resources: map[string]any{},
		Versions: map[string]string{"kubernetes": s.K8sVersion, "bootstrap": s.Bootstrap},
	}
	var net network.Network
	if decode(c, network.StepID, &net) {
		for k, v := range net.Resources() {
			info.Resources[k] = v
		}
	}
	var sgs []string
	for _, role := range Roles {
		var sg sgOut
		if decode(c, SGStepID(role), &sg) {
			sgs = append(sgs, sg.ID)
		}
	}
	if len(sgs) > 0 {
		info.Resources["securityGroups"] = sgs
	}
	var kp keyPairOut
	if decode(c, StepKeyPair, &kp) {
		info.Resources["keyPair"] = kp.Name
	}
	var roles, profiles []string
	for _, id := range []string{StepCPRole, StepWPRole} {
		var r iamrole.Out
		if decode(c, id, &r) {
			roles = append(roles, r.Name)
			profiles = append(profiles, r.Name)
		}
	}
	if len(roles) > 0 {
		info.Resources["iamRoles"] = roles
		info.Resources["instanceProfiles"] = profiles
	}
	var ids []string
	for id, rec := range c.Steps {
		if !strings.HasPrefix(id, "vm/") {
			continue
		}
		var vm VMOut
		if jsonUnmarshal(rec.Out, &vm) != nil {
			continue
		}
		info.Instances = append(info.Instances, lifecycle.Instance{ID: vm.ID, Role: vm.Role, Name: vm.Name, Zone: vm.Zone, PrivateIP: vm.PrivateIP, PublicIP: vm.PublicIP})
		ids = append(ids, vm.ID)
		if vm.Role == RoleLB && vm.PublicIP != "" {
			info.Endpoint = "https://" + vm.PublicIP + ":6443"
		}
	}
	sort.Slice(info.Instances, func(i, j int) bool {
		a, b := info.Instances[i], info.Instances[j]
		if roleOrder(a.Role) != roleOrder(b.Role) {
			return roleOrder(a.Role) < roleOrder(b.Role)
		}
		return a.Name < b.Name
	})
	sort.Strings(ids)
	if len(ids) > 0 {
		info.Resources["instances"] = ids
	}
	return info
}

func roleOrder(role string) int {
	for i, r := range Roles {
		if r == role {
			return i
		}
	}
	return len(Roles)
}

func decode(c *state.Cluster, id string, v any) bool {
	r, ok := c.Steps[id]
	if !ok || len(r.Out) == 0 {
		return false
	}
	return jsonUnmarshal(r.Out, v) == nil
}

// vmName is the Name tag and hostname of VM i of a role.
func vmName(cluster, role string, i int) string { return fmt.Sprintf("%s-%s-%d", cluster, role, i) }

func isTransient(err error) bool { return awsx.IsTransient(err) }

var _ = aws.String

// roleNames are the roles as the cost table names them.
var roleNames = map[string]string{RoleEtcd: "etcd", RoleLB: "load balancer", RoleCP: "control planes", RoleWP: "workers"}

// Cost implements lifecycle.Provider: every VM, its encrypted gp3 root
// volume and its public IPv4 address.
func (p *Provider) Cost(s spec.Spec) []cost.Item {
	var items []cost.Item
	vms := 0
	for _, role := range Roles {
		n := count(s, role)
		vms += n
		items = append(items,
			cost.Item{Kind: cost.KindInstance, Type: size(s, role), Count: n, For: roleNames[role]},
			cost.Item{Kind: cost.KindVolume, Type: "gp3", GiB: int(rootGiB[role]), Count: n, For: roleNames[role]})
	}
	items = append(items, cost.Item{Kind: cost.KindPublicIPv4, Count: vms, For: "one per VM"})
	return cost.Merge(items)
}

// Review implements lifecycle.Provider.
func (p *Provider) Review(s spec.Spec) []string {
	var out []string
	if s.Bootstrap == spec.BootstrapKubeadm {
		if v, err := bootstrap.KubernetesVersion(s.K8sVersion); err == nil {
			out = append(out, fmt.Sprintf("Kubernetes %s (kubeadm), external etcd %s, pod network Flannel %s",
				v, bootstrap.DefaultEtcdVersion, artifacts.FlannelVersion))
		}
	} else if v, err := bootstrap.K3sVersion(s.K8sVersion); err == nil {
		out = append(out, fmt.Sprintf("Kubernetes with k3s %s, external etcd %s", v, bootstrap.DefaultEtcdVersion))
	}
	out = append(out, "etcd, Kubernetes and the images: "+source(s).Describe())
	if s.ImageRepository != "" {
		out = append(out, "Container images from "+s.ImageRepository)
	}
	if s.SSHCIDR == "0.0.0.0/0" || s.SSHCIDR == "::/0" {
		out = append(out, "Warning: SSH (port 22) of every VM is open to the whole internet ("+s.SSHCIDR+"); restrict it with --ssh-cidr <your address>/32")
	} else {
		out = append(out, "SSH (port 22) of the VMs is open to "+s.SSHCIDR)
	}
	if s.SSHJump != "" {
		out = append(out, "kforge reaches the VMs through "+s.SSHJump)
	}
	out = append(out, "The API (port 6443 of the load balancer) is open to the internet; the admin kubeconfig (kforge switch) holds a client certificate of system:masters")
	return out
}

// session is what one operation's steps share.
type session struct {
	p   *Provider
	net *network.Lookups
}

// NetworkLookups implements network.LookupsHolder.
func (s *session) NetworkLookups() *network.Lookups { return s.net }

// Close implements lifecycle.Session: the SSH connections of the run.
func (s *session) Close() error { return s.p.Close() }

// Session implements lifecycle.Provider.
func (p *Provider) Session() lifecycle.Session {
	return &session{p: p, net: network.NewLookups(p.ec2)}
}
