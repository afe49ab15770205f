package ha

import (
	"context"
	"fmt"
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/network"
	"github.com/kforge/kforge/internal/spec"
)

// Ports the roles serve.
const (
	portSSH        = 22
	portAPI        = 6443
	portEtcdClient = 2379
	portEtcdPeer   = 2380
	portKubelet    = 10250
	portVXLAN      = 8472 // flannel's VXLAN overlay (k3s and the kubeadm CNI)
	nodePortFirst  = 30000
	nodePortLast   = 32767
)

type sgOut struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

func sgName(cluster, role string) string { return fmt.Sprintf("kforge-%s-%s", cluster, role) }

var roleTitles = map[string]string{RoleEtcd: "etcd", RoleLB: "load balancer", RoleCP: "control planes", RoleWP: "workers"}

func (p *Provider) findSG(ctx context.Context, s spec.Spec, role, vpcID, prevID string) (sgOut, bool, error) {
	in := &ec2.DescribeSecurityGroupsInput{Filters: awsx.ClusterFilters(s.Ref, awsx.TagRole, role)}
	if vpcID != "" {
		in.Filters = append(in.Filters, ec2types.Filter{Name: aws.String("vpc-id"), Values: []string{vpcID}})
	}
	if prevID != "" {
		in = &ec2.DescribeSecurityGroupsInput{GroupIds: []string{prevID}}
	}
	out, err := p.ec2.DescribeSecurityGroups(ctx, in)
	if awsx.IsNotFound(err) {
		return sgOut{}, false, nil
	}
	if err != nil {
		return sgOut{}, false, fmt.Errorf("look up security group of %s: %w", role, err)
	}
	for _, g := range out.SecurityGroups {
		return sgOut{ID: aws.ToString(g.GroupId), Name: aws.ToString(g.GroupName)}, true, nil
	}
	return sgOut{}, false, nil
}

// sgStep makes a role's security group, without rules (they reference the
// other roles' groups, made concurrently).
func (p *Provider) sgStep(s spec.Spec, role string) *engine.Step {
	name := sgName(s.Name, role)
	return &engine.Step{
		ID: SGStepID(role),
		// Only the VPC: not the subnets and routes.
		Needs: []string{network.StepVPC},
		Title: fmt.Sprintf("security group %s for the %s", name, roleTitles[role]),
		Ensure: func(ctx context.Context, r *engine.Run) (any, error) {
			vpcID, err := network.VPCOf(r)
			if err != nil {
				return nil, err
			}
			find := func(ctx context.Context) (sgOut, bool, error) { return p.findSG(ctx, s, role, vpcID, "") }
			if g, ok, err := find(ctx); err != nil || ok {
				return g, err
			}
			return awsx.CreateOnce(ctx, find, func(ctx context.Context) (sgOut, error) {
				out, err := p.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{
					GroupName:         aws.String(name),
					Description:       aws.String(fmt.Sprintf("kforge %s: %s", s.Name, roleTitles[role])),
					VpcId:             aws.String(vpcID),
					TagSpecifications: awsx.EC2TagSpec(ec2types.ResourceTypeSecurityGroup, awsx.Owned(s.Ref, awsx.Tags(s.Ref, name, awsx.TagRole, role))),
				}, safe)
				if err != nil {
					return sgOut{}, fmt.Errorf("create security group %s: %w", name, err)
				}
				return sgOut{ID: aws.ToString(out.GroupId), Name: name}, nil
			})
		},
		Delete: func(ctx context.Context, r *engine.Run) error {
			var prev sgOut
			r.PrevInto(&prev)
			g, ok, err := p.findSG(ctx, s, role, "", prev.ID)
			if err != nil {
				return err
			}
			if !ok {
				return engine.ErrAbsent
			}
			// AWS refuses to delete a group that an instance or a network
			// interface still uses: the teardown waits for the VMs to be
			// terminated first; what remains is waited on, then named.
			return awsx.RetryInUse(ctx, network.DefaultInUseTimeout, r.Waiting, "security group "+g.ID, func(ctx context.Context) error {
				_, err := p.ec2.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(g.ID)})
				if awsx.IsNotFound(err) {
					return nil
				}
				return err
			})
		},
	}
}

func safe(o *ec2.Options) { o.Retryer = awsx.SafeRetryer(o.Retryer) }

// rule is one ingress rule: a port range from a CIDR or another role's
// group.
type rule struct {
	Proto    string `json:"proto"`
	From, To int32
	CIDR     string `json:"cidr,omitempty"`
	Role     string `json:"role,omitempty"`
	Why      string `json:"why"`
}

// rules are the least-open ingress rules of each role: only 6443 on the
// load balancer and SSH (from --ssh-cidr) come from outside the cluster.
func rules(s spec.Spec, role string) []rule {
	ssh := rule{Proto: "tcp", From: portSSH, To: portSSH, CIDR: s.SSHCIDR, Why: "SSH from --ssh-cidr"}
	// What every node (control plane or worker) accepts from the others.
	nodes := []rule{
		{Proto: "tcp", From: portKubelet, To: portKubelet, Role: RoleCP, Why: "kubelet"},
		{Proto: "tcp", From: portKubelet, To: portKubelet, Role: RoleWP, Why: "kubelet"},
		{Proto: "udp", From: portVXLAN, To: portVXLAN, Role: RoleCP, Why: "pod network (VXLAN)"},
		{Proto: "udp", From: portVXLAN, To: portVXLAN, Role: RoleWP, Why: "pod network (VXLAN)"},
	}
	switch role {
	case RoleLB:
		return []rule{
			{Proto: "tcp", From: portAPI, To: portAPI, CIDR: "0.0.0.0/0", Why: "Kubernetes API"},
			ssh,
		}
	case RoleEtcd:
		return []rule{
			{Proto: "tcp", From: portEtcdClient, To: portEtcdClient, Role: RoleCP, Why: "etcd clients: API servers"},
			{Proto: "tcp", From: portEtcdClient, To: portEtcdClient, Role: RoleEtcd, Why: "etcd clients: members"},
			{Proto: "tcp", From: portEtcdPeer, To: portEtcdPeer, Role: RoleEtcd, Why: "etcd peers"},
			ssh,
		}
	case RoleCP:
		return append(append([]rule{
			{Proto: "tcp", From: portAPI, To: portAPI, Role: RoleLB, Why: "API through the load balancer"},
			{Proto: "tcp", From: portAPI, To: portAPI, Role: RoleCP, Why: "API from control planes"},
			{Proto: "tcp", From: portAPI, To: portAPI, Role: RoleWP, Why: "API from workers"},
		}, nodes...), ssh)
	default: // workers
		return append(append([]rule{}, nodes...),
			rule{Proto: "tcp", From: nodePortFirst, To: nodePortLast, Role: RoleLB, Why: "NodePorts"},
			rule{Proto: "tcp", From: nodePortFirst, To: nodePortLast, Role: RoleCP, Why: "NodePorts"},
			rule{Proto: "tcp", From: nodePortFirst, To: nodePortLast, Role: RoleWP, Why: "NodePorts"},
			ssh)
	}
}

func (p *Provider) rulesStep(s spec.Spec, role string) *engine.Step {
	rs := rules(s, role)
	needs := []string{SGStepID(role)}
	for _, r := range Roles {
		if r != role {
			needs = append(needs, SGStepID(r))
		}
	}
	sort.Strings(needs)
	return &engine.Step{
		ID:     RulesStepID(role),
		Needs:  needs,
		Title:  fmt.Sprintf("ingress rules of the %s (%d)", roleTitles[role], len(rs)),
		Inputs: rs,
		Ensure: func(ctx context.Context, r *engine.Run) (any, error) {
			self, err := engine.Out[sgOut](r, SGStepID(role))
			if err != nil {
				return nil, err
			}
			groups := map[string]string{}
			for _, ro := range Roles {
				g, err := engine.Out[sgOut](r, SGStepID(ro))
				if err != nil {
					return nil, err
				}
				groups[ro] = g.ID
			}
			want := make([]ec2types.IpPermission, 0, len(rs))
			for _, ru := range rs {
				want = append(want, permission(ru, groups))
			}
			cur, err := p.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{self.ID}})
			if err != nil {
				return nil, fmt.Errorf("look up security group %s: %w", self.ID, err)
			}
			var have []ec2types.IpPermission
			if len(cur.SecurityGroups) > 0 {
				have = cur.SecurityGroups[0].IpPermissions
			}
			add, remove := diffPermissions(want, have)
			if len(remove) > 0 {
				if _, err := p.ec2.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: aws.String(self.ID), IpPermissions: remove}); err != nil && !awsx.IsNotFound(err) {
					return nil, fmt.Errorf("revoke outdated rules of %s: %w", self.ID, err)
				}
			}
			if len(add) > 0 {
				_, err := p.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{
					GroupId: aws.String(self.ID), IpPermissions: add,
					TagSpecifications: awsx.EC2TagSpec(ec2types.ResourceTypeSecurityGroupRule, awsx.Tags(s.Ref, sgName(s.Name, role))),
				})
				if err != nil && !awsx.HasCode(err, "InvalidPermission.Duplicate") {
					return nil, fmt.Errorf("authorize ingress rules of %s: %w", self.ID, err)
				}
			}
			return struct {
				Group string `json:"group"`
				Rules int    `json:"rules"`
			}{self.ID, len(rs)}, nil
		},
		Delete: func(ctx context.Context, r *engine.Run) error {
			// Rules referencing other groups must go before those groups
			// can be deleted.
			var prev sgOut
			if g, ok := engine.Lookup[sgOut](r, SGStepID(role)); ok {
				prev = g
			}
			g, ok, err := p.findSG(ctx, s, role, "", prev.ID)
			if err != nil || !ok {
				if err == nil {
					return engine.ErrAbsent
				}
				return err
			}
			cur, err := p.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{g.ID}})
			if awsx.IsNotFound(err) {
				return engine.ErrAbsent
			}
			if err != nil {
				return fmt.Errorf("look up security group %s: %w", g.ID, err)
			}
			if len(cur.SecurityGroups) == 0 || len(cur.SecurityGroups[0].IpPermissions) == 0 {
				return engine.ErrAbsent
			}
			if _, err := p.ec2.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{
				GroupId: aws.String(g.ID), IpPermissions: cur.SecurityGroups[0].IpPermissions}); err != nil && !awsx.IsNotFound(err) {
				return fmt.Errorf("revoke rules of %s: %w", g.ID, err)
			}
			return nil
		},
	}
}

func permission(r rule, groups map[string]string) ec2types.IpPermission {
	p := ec2types.IpPermission{IpProtocol: aws.String(r.Proto), FromPort: aws.Int32(r.From), ToPort: aws.Int32(r.To)}
	if r.CIDR != "" {
		p.IpRanges = []ec2types.IpRange{{CidrIp: aws.String(r.CIDR), Description: aws.String(r.Why)}}
	} else {
		p.UserIdGroupPairs = []ec2types.UserIdGroupPair{{GroupId: aws.String(groups[r.Role]), Description: aws.String(r.Why)}}
	}
	return p
}

// permKey identifies one source of one port range.
type permKey struct {
	proto    string
	from, to int32
	source   string
}

func explode(ps []ec2types.IpPermission) map[permKey]ec2types.IpPermission {
	m := map[permKey]ec2types.IpPermission{}
	for _, p := range ps {
		base := ec2types.IpPermission{IpProtocol: p.IpProtocol, FromPort: p.FromPort, ToPort: p.ToPort}
		k := permKey{proto: aws.ToString(p.IpProtocol), from: aws.ToInt32(p.FromPort), to: aws.ToInt32(p.ToPort)}
		for _, r := range p.IpRanges {
			one := base
			one.IpRanges = []ec2types.IpRange{r}
			k.source = aws.ToString(r.CidrIp)
			m[k] = one
		}
		for _, g := range p.UserIdGroupPairs {
			one := base
			one.UserIdGroupPairs = []ec2types.UserIdGroupPair{{GroupId: g.GroupId, Description: g.Description}}
			k.source = aws.ToString(g.GroupId)
			m[k] = one
		}
		for _, r := range p.Ipv6Ranges {
			one := base
			one.Ipv6Ranges = []ec2types.Ipv6Range{r}
			k.source = aws.ToString(r.CidrIpv6)
			m[k] = one
		}
	}
	return m
}

// diffPermissions returns the rules to add and those to revoke so that a
// group has exactly want.
func diffPermissions(want, have []ec2types.IpPermission) (add, remove []ec2types.IpPermission) {
	w, h := explode(want), explode(have)
	for k, p := range w {
		if _, ok := h[k]; !ok {
			add = append(add, p)
		}
	}
	for k, p := range h {
		if _, ok := w[k]; !ok {
			remove = append(remove, p)
		}
	}
	return add, remove
}
