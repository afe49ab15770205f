// Package ha is the `ha-aws` cluster type: Kubernetes on EC2 VMs that
// kforge creates and bootstraps itself. It only builds the graph: package
// infra makes the AWS infrastructure (network, key pair, security groups,
// IAM roles, VMs) and package boot bootstraps the VMs over SSH (etcd with
// kforge's PKI, HAProxy, then k3s or kubeadm). What one operation shares
// (batched look-ups, the instance watcher, SSH connections) lives in its
// Session.
package ha

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

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
	"github.com/kforge/kforge/internal/etcdbackup"
	"github.com/kforge/kforge/internal/ha/boot"
	"github.com/kforge/kforge/internal/ha/infra"
	"github.com/kforge/kforge/internal/iamrole"
	"github.com/kforge/kforge/internal/leftovers"
	"github.com/kforge/kforge/internal/lifecycle"
	"github.com/kforge/kforge/internal/network"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
)

// CanonicalOwner is the AWS account of Canonical's Ubuntu images.
const CanonicalOwner = infra.CanonicalOwner

// StepVMs is the teardown step that terminates every VM of a cluster.
const StepVMs = infra.StepVMs

// ArtifactSet is what the cluster's VMs install (see package artifacts).
func ArtifactSet(s spec.Spec) (artifacts.Set, error) { return boot.ArtifactSet(s) }

// Provider builds the steps of ha-aws clusters.
type Provider struct {
	infra *infra.Clients
	elb   *elasticloadbalancing.Client
	elb2  *elasticloadbalancingv2.Client
	home  string
	log   io.Writer
	// aws is for the S3 client of a bucket in another region.
	aws aws.Config
}

// New returns the ha-aws provider. It makes no AWS call.
func New(env lifecycle.Env) lifecycle.Provider {
	return &Provider{
		infra: &infra.Clients{EC2: ec2.NewFromConfig(env.AWS), IAM: iam.NewFromConfig(env.AWS)},
		elb:   elasticloadbalancing.NewFromConfig(env.AWS),
		elb2:  elasticloadbalancingv2.NewFromConfig(env.AWS),
		home:  env.Home,
		log:   env.Log,
		aws:   env.AWS,
	}
}

// session is what one operation's steps share.
type session struct {
	net   *network.Lookups
	infra *infra.Session
	boot  *boot.Session
}

func (s *session) NetworkLookups() *network.Lookups { return s.net }
func (s *session) InfraSession() *infra.Session     { return s.infra }
func (s *session) BootSession() *boot.Session       { return s.boot }

// Close implements lifecycle.Session: the SSH connections of the run.
func (s *session) Close() error { return s.boot.Close() }

// Session implements lifecycle.Provider.
func (p *Provider) Session() lifecycle.Session {
	return &session{net: network.NewLookups(p.infra.EC2), boot: &boot.Session{
		Console: func(ctx context.Context, id string) (string, error) { return infra.ConsoleOutput(ctx, p.infra, id) },
	}}
}

// leftoversStep removes, on delete, what Kubernetes made in the cluster's
// VPC: after the VMs (the teardown's step that terminates them needs it),
// before the network (which it needs).
func (p *Provider) leftoversStep(s spec.Spec, g *engine.Graph) {
	g.Add(leftovers.Step(&leftovers.Clients{EC2: p.infra.EC2, ELB: p.elb, ELBv2: p.elb2}, s.Ref, []string{network.StepID}))
}

// Graph implements lifecycle.Provider. A Kubernetes version the bootstrap
// cannot install is refused here, before anything is made.
func (p *Provider) Graph(s spec.Spec) (*engine.Graph, error) {
	g, _, err := p.graph(s)
	return g, err
}

// UpgradeGraph implements lifecycle.Upgrader: every node to s.K8sVersion,
// one at a time (boot.AddUpgrade), with the artifacts of the new release;
// the cluster's other steps are only read.
func (p *Provider) UpgradeGraph(s spec.Spec) (*engine.Graph, error) {
	g, refs, err := p.graph(s)
	if err != nil {
		return nil, err
	}
	boot.AddUpgrade(g, s, refs)
	return g.Only(boot.InUpgrade), nil
}

// graph is the cluster's graph: the infrastructure, what Kubernetes left
// to remove on delete, and the bootstrap.
func (p *Provider) graph(s spec.Spec) (*engine.Graph, infra.Refs, error) {
	if err := CheckVersion(s); err != nil {
		return nil, infra.Refs{}, err
	}
	g := engine.NewGraph()
	refs := infra.Add(g, p.infra, s, true)
	p.leftoversStep(s, g)
	boot.Add(g, s, refs)
	return g, refs, nil
}

// CheckVersion refuses (exit 2) a Kubernetes version the cluster's
// bootstrap cannot install.
func CheckVersion(s spec.Spec) error {
	if _, err := boot.Release(s); err != nil {
		return spec.Usagef("invalid --k8s-version: %v", err)
	}
	if s.Bootstrap == spec.BootstrapKubeadm {
		if _, err := boot.KubeadmImages(s); err != nil {
			return spec.Usagef("invalid --k8s-version: %v", err)
		}
	}
	return nil
}

// Teardown implements lifecycle.Provider: the infrastructure in reverse,
// after one step that terminates every VM of the cluster, found by tags,
// and waits for them to be gone (security groups and subnets cannot go
// while instances use them).
func (p *Provider) Teardown(s spec.Spec) (*engine.Graph, error) {
	g := engine.NewGraph()
	infra.Add(g, p.infra, s, false)
	p.leftoversStep(s, g)
	var needs []engine.Dep
	for _, id := range g.IDs() {
		needs = append(needs, engine.ID(id))
	}
	infra.AddTeardown(g, p.infra, s, needs)
	return g, nil
}

// Check implements lifecycle.Provider: an existing VPC's DNS settings, the
// cluster name, the IAM names and the key pair name must be free for this
// cluster, and --artifacts must hold what the VMs install. The checks are
// independent look-ups, made at once.
func (p *Provider) Check(ctx context.Context, s spec.Spec) error {
	net := &network.Clients{EC2: p.infra.EC2}
	checks := []func(context.Context) error{}
	if s.VPCID != "" {
		checks = append(checks, func(ctx context.Context) error { return network.CheckVPC(ctx, net, s.VPCID, nil) })
	}
	checks = append(checks, func(ctx context.Context) error { return network.CheckNameFree(ctx, net, s.Ref) })
	for _, suffix := range infra.RoleSuffixes(s) {
		checks = append(checks, func(ctx context.Context) error {
			err := iamrole.CheckOwner(ctx, p.infra.IAM, s.Ref, suffix)
			if _, ok := err.(*iamrole.OwnerError); ok {
				return spec.Usagef("%v", err)
			}
			return err
		})
	}
	checks = append(checks, func(ctx context.Context) error { return infra.CheckKeyPair(ctx, p.infra, s.Ref) })
	if s.EtcdBackups != "" {
		checks = append(checks, func(ctx context.Context) error {
			loc, err := etcdbackup.ScheduleLocation(s.EtcdBackups)
			if err != nil {
				return err
			}
			return etcdbackup.CheckBucket(ctx, etcdbackup.NewClient(p.aws, loc), loc)
		})
	}
	if s.Artifacts != "" {
		checks = append(checks, func(ctx context.Context) error { return boot.CheckSource(ctx, p.infra.EC2, s) })
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
	for _, role := range infra.Roles {
		var sg infra.Group
		if decode(c, infra.SGStepID(role), &sg) {
			sgs = append(sgs, sg.ID)
		}
	}
	if len(sgs) > 0 {
		info.Resources["securityGroups"] = sgs
	}
	var kp infra.KeyPair
	if decode(c, infra.StepKeyPair, &kp) {
		info.Resources["keyPair"] = kp.Name
	}
	var roles, profiles []string
	for _, id := range []string{infra.StepCPRole, infra.StepWPRole, infra.StepEtcdRole} {
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
		vm, err := infra.DecodeVM(rec.Out)
		if err != nil {
			continue
		}
		info.Instances = append(info.Instances, lifecycle.Instance{ID: vm.ID, Role: vm.Role, Name: vm.Name, Zone: vm.Zone, PrivateIP: vm.PrivateIP, PublicIP: vm.PublicIP})
		ids = append(ids, vm.ID)
		if vm.Role == infra.RoleLB && vm.PublicIP != "" {
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
	for i, r := range infra.Roles {
		if r == role {
			return i
		}
	}
	return len(infra.Roles)
}

func decode(c *state.Cluster, id string, v any) bool {
	r, ok := c.Steps[id]
	if !ok || len(r.Out) == 0 {
		return false
	}
	return jsonUnmarshal(r.Out, v) == nil
}

// Cost implements lifecycle.Provider: every VM, its encrypted gp3 root
// volume and its public IPv4 address.
func (p *Provider) Cost(s spec.Spec) []cost.Item {
	var items []cost.Item
	vms := 0
	for _, role := range infra.Roles {
		n := infra.Count(s, role)
		vms += n
		items = append(items,
			cost.Item{Kind: cost.KindInstance, Type: infra.Size(s, role), Count: n, For: infra.RoleTitles[role]},
			cost.Item{Kind: cost.KindVolume, Type: "gp3", GiB: int(infra.RootGiB[role]), Count: n, For: infra.RoleTitles[role]})
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
	src, _ := artifacts.ParseSource(s.Artifacts)
	out = append(out, "etcd, Kubernetes and the images: "+src.Describe())
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
