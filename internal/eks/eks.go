// Package eks is the `aws` cluster type: managed EKS. It turns a spec into
// the engine's steps: the network (shared with ha-aws), the two IAM roles
// kforge-<name>-cp-role and kforge-<name>-wp-role, the EKS cluster, one
// managed node group and the managed add-ons (Addons).
package eks

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancing"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/iam"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/cost"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/iamrole"
	"github.com/kforge/kforge/internal/leftovers"
	"github.com/kforge/kforge/internal/lifecycle"
	"github.com/kforge/kforge/internal/network"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
)

// Step IDs.
const (
	StepCPRole    = "role/cp"
	StepWPRole    = "role/wp"
	StepCluster   = "eks-cluster"
	StepNodegroup = "nodegroup"
)

// Role suffixes: kforge-<name>-cp-role and kforge-<name>-wp-role.
const (
	CPRoleSuffix = "cp-role"
	WPRoleSuffix = "wp-role"
)

// Managed policies of the roles.
var (
	CPPolicies = []string{"AmazonEKSClusterPolicy"}
	// The nodes' role also serves the EBS CSI driver's controller, which
	// runs on the nodes.
	WPPolicies = []string{"AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly", "service-role/AmazonEBSCSIDriverPolicy"}
)

// Provider builds the steps of EKS clusters.
type Provider struct {
	ec2  *ec2.Client
	iam  *iam.Client
	eks  *eks.Client
	elb  *elasticloadbalancing.Client
	elb2 *elasticloadbalancingv2.Client
	cfg  aws.Config
	log  io.Writer
}

// New returns the EKS provider. It makes no AWS call.
func New(env lifecycle.Env) lifecycle.Provider {
	return &Provider{
		ec2:  ec2.NewFromConfig(env.AWS),
		iam:  iam.NewFromConfig(env.AWS),
		eks:  eks.NewFromConfig(env.AWS),
		elb:  elasticloadbalancing.NewFromConfig(env.AWS),
		elb2: elasticloadbalancingv2.NewFromConfig(env.AWS),
		cfg:  env.AWS,
		log:  env.Log,
	}
}

func (p *Provider) netSpec(s spec.Spec) network.Spec {
	return network.Spec{Ref: s.Ref, VPCID: s.VPCID, SubnetIDs: s.SubnetIDs, Zones: 2}
}

// Graph implements lifecycle.Provider.
func (p *Provider) Graph(s spec.Spec) (*engine.Graph, error) {
	g := engine.NewGraph()
	net := network.Add(g, &network.Clients{EC2: p.ec2}, p.netSpec(s))
	g.Add(leftovers.Step(&leftovers.Clients{EC2: p.ec2, ELB: p.elb, ELBv2: p.elb2}, s.Ref, []string{net.Network.ID()}))
	cp := iamrole.Add(g, p.iam, s.Ref, StepCPRole, iamrole.Role{Suffix: CPRoleSuffix, Service: "eks.amazonaws.com", Managed: CPPolicies})
	wp := iamrole.Add(g, p.iam, s.Ref, StepWPRole, iamrole.Role{Suffix: WPRoleSuffix, Service: ec2Service(s.Region), Managed: WPPolicies})
	cluster := p.addCluster(g, s, net.Network, cp)
	nodegroup := p.addNodegroup(g, s, cluster, wp, net.Network)
	for _, a := range Addons {
		p.addAddon(g, s, a, cluster, nodegroup)
	}
	return g, nil
}

// Teardown implements lifecycle.Provider: the same graph, run in reverse.
func (p *Provider) Teardown(s spec.Spec) (*engine.Graph, error) { return p.Graph(s) }

func ec2Service(region string) string {
	if strings.HasPrefix(region, "cn-") {
		return "ec2.amazonaws.com.cn"
	}
	return "ec2.amazonaws.com"
}

// Check implements lifecycle.Provider: the VPC's DNS settings, the IAM role
// names, and the EKS cluster name must be free for this cluster.
func (p *Provider) Check(ctx context.Context, s spec.Spec) error {
	// The checks are independent look-ups: they are made at once.
	checks := []func(context.Context) error{}
	if s.VPCID != "" {
		checks = append(checks, func(ctx context.Context) error {
			return network.CheckVPC(ctx, &network.Clients{EC2: p.ec2}, s.VPCID, s.SubnetIDs)
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
	checks = append(checks, func(ctx context.Context) error {
		out, err := p.eks.DescribeCluster(ctx, &eks.DescribeClusterInput{Name: aws.String(s.Name)})
		switch {
		case err == nil && !ownedBy(out.Cluster.Tags, s.Ref):
			return spec.Usagef("an EKS cluster named %s already exists in %s and was not made by kforge for this cluster: pick another name", s.Name, s.Region)
		case err != nil && !awsx.IsNotFound(err) && ctx.Err() == nil && p.log != nil:
			// The cluster step looks again before it creates anything,
			// and refuses a cluster that is not this one's.
			fmt.Fprintf(p.log, "Warning: could not check whether an EKS cluster named %s exists: %s\n", s.Name, awsx.Message(err))
		}
		return nil
	})
	return awsx.All(ctx, checks...)
}

// Info implements lifecycle.Provider.
func (p *Provider) Info(c *state.Cluster) lifecycle.Info {
	s := c.Spec
	info := lifecycle.Info{
		Name: s.Name, Type: s.Type, Region: s.Region, Status: c.Status, Nodes: s.Nodes, Created: c.Created,
		Error: c.Error, Spec: s, Versions: map[string]string{"kubernetes": s.Version}, Resources: map[string]any{},
	}
	var net network.Network
	if decode(c, network.StepID, &net) {
		info.Resources["vpc"] = net.VPCID
		var subnets []string
		for _, sn := range net.Subnets {
			subnets = append(subnets, sn.ID)
		}
		info.Resources["subnets"] = subnets
	}
	var role iamrole.Out
	if decode(c, StepCPRole, &role) {
		info.Resources["cpRole"] = role.Name
	}
	if decode(c, StepWPRole, &role) {
		info.Resources["wpRole"] = role.Name
	}
	var cl ClusterOut
	if decode(c, StepCluster, &cl) {
		info.Resources["eksCluster"] = cl.ARN
		info.Endpoint = cl.Endpoint
		if cl.Version != "" {
			info.Versions["kubernetes"] = cl.Version
		}
		if cl.PlatformVersion != "" {
			info.Versions["eksPlatform"] = cl.PlatformVersion
		}
	}
	var ng NodegroupOut
	if decode(c, StepNodegroup, &ng) {
		info.Resources["nodegroup"] = ng.ARN
	}
	addons := map[string]string{} // name -> ARN; the versions are in Versions
	for _, a := range Addons {
		var out AddonOut
		if decode(c, AddonStepID(a.Name), &out) {
			addons[a.Name] = out.ARN
			info.Versions[a.Name] = out.Version
		}
	}
	if len(addons) > 0 {
		info.Resources["addons"] = addons
	}
	return info
}

func addonNames() string {
	var names []string
	for _, a := range Addons {
		names = append(names, a.Name)
	}
	return strings.Join(names, ", ")
}

func decode(c *state.Cluster, id string, v any) bool {
	r, ok := c.Steps[id]
	if !ok || len(r.Out) == 0 {
		return false
	}
	return jsonUnmarshal(r.Out, v) == nil
}

// NodegroupName is the name of the cluster's managed node group.
func NodegroupName(cluster string) string { return cluster + "-workers" }

// nodeDiskGiB is the root volume of a managed node group's nodes (EKS's
// default, which kforge keeps).
const nodeDiskGiB = 20

// Cost implements lifecycle.Provider: the EKS control plane, and the node
// group's instances with their root volumes and public IPv4 addresses
// (kforge's subnets are public).
func (p *Provider) Cost(s spec.Spec) []cost.Item {
	return []cost.Item{
		{Kind: cost.KindEKS, Count: 1, For: "Kubernetes " + s.Version},
		{Kind: cost.KindInstance, Type: s.NodeSize, Count: s.Nodes, For: "nodes"},
		{Kind: cost.KindVolume, Type: "gp3", GiB: nodeDiskGiB, Count: s.Nodes, For: "nodes"},
		{Kind: cost.KindPublicIPv4, Count: s.Nodes, For: "one per node"},
	}
}

// Review implements lifecycle.Provider.
func (p *Provider) Review(s spec.Spec) []string {
	return []string{
		"Kubernetes " + s.Version + " on EKS, with a managed node group of " + fmt.Sprint(s.Nodes) + " x " + s.NodeSize,
		"API endpoint: public (from any address) and private (inside the VPC)",
		"Managed add-ons: " + addonNames() + ", at the versions EKS recommends for Kubernetes " + s.Version,
		"Cluster admin: the IAM identity that runs the create (EKS access entry for the cluster creator); others need access entries",
	}
}

// session is what one operation's steps share.
type session struct {
	net *network.Lookups
}

// NetworkLookups implements network.LookupsHolder.
func (s *session) NetworkLookups() *network.Lookups { return s.net }

// Close implements lifecycle.Session.
func (s *session) Close() error { return nil }

// Session implements lifecycle.Provider.
func (p *Provider) Session() lifecycle.Session {
	return &session{net: network.NewLookups(p.ec2)}
}
