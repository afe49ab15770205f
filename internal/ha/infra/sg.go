package infra

import (
	"context"
	"fmt"
	"sort"
	"strings"

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

// Group is the output of a security group step.
type Group struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// SGName is the security group of a role: kforge-<cluster>-<role>.
func SGName(cluster, role string) string { return fmt.Sprintf("kforge-%s-%s", cluster, role) }

// findGroupByTags looks a role's group up by the cluster's tags in a VPC.
func findGroupByTags(ctx context.Context, c *ec2.Client, s spec.Spec, role, vpcID string) (Group, bool, error) {
	in := &ec2.DescribeSecurityGroupsInput{Filters: append(awsx.ClusterFilters(s.Ref, awsx.TagRole, role),
		ec2types.Filter{Name: aws.String("vpc-id"), Values: []string{vpcID}})}
	out, err := c.DescribeSecurityGroups(ctx, in)
	if err != nil {
		return Group{}, false, fmt.Errorf("look up security group of %s: %w", role, err)
	}
	for _, g := range out.SecurityGroups {
		return Group{ID: aws.ToString(g.GroupId), Name: aws.ToString(g.GroupName)}, true, nil
	}
	return Group{}, false, nil
}

// groupByID returns a group from the run's batched look-up, else (a group
// that no longer carries the cluster's tags) by its ID.
func groupByID(ctx context.Context, sess *Session, id string) (*ec2types.SecurityGroup, error) {
	all, err := sess.groups(ctx)
	if err != nil {
		return nil, err
	}
	for i := range all {
		if aws.ToString(all[i].GroupId) == id {
			return &all[i], nil
		}
	}
	out, err := sess.c.EC2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{id}})
	if awsx.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up security group %s: %w", id, err)
	}
	if len(out.SecurityGroups) == 0 {
		return nil, nil
	}
	return &out.SecurityGroups[0], nil
}

// addGroup makes a role's security group, without rules (they reference
// the other roles' groups, made concurrently). It needs only the VPC.
func addGroup(g *engine.Graph, c *Clients, s spec.Spec, role string, vpc engine.Ref[network.VPC]) engine.Ref[Group] {
	name := SGName(s.Name, role)
	return engine.Add(g, engine.Resource[Group]{
		ID:    SGStepID(role),
		Needs: engine.Needs(vpc),
		Title: fmt.Sprintf("security group %s for the %s", name, RoleTitles[role]),
		Find: func(ctx context.Context, r *engine.Run, prev *Group) (engine.Observation[Group], error) {
			sess := sessionOf(r, c, s.Ref)
			if prev != nil && prev.ID != "" {
				sg, err := groupByID(ctx, sess, prev.ID)
				if err != nil {
					return engine.Observation[Group]{}, err
				}
				if sg == nil {
					return engine.Gone[Group]("security group %s of the %s was deleted outside kforge", prev.ID, RoleTitles[role]), nil
				}
				if o := ec2Owner(sg.Tags); o != s.Ref {
					return engine.Unsafe[Group]("security group %s now carries the tags of %v: kforge does not take it back; remove those tags or delete the group, then run the same command again", prev.ID, o), nil
				}
				return engine.InSync(*prev), nil
			}
			v, err := vpc.Get(r)
			if err != nil {
				return engine.Observation[Group]{}, err
			}
			all, err := sess.groups(ctx)
			if err != nil {
				return engine.Observation[Group]{}, err
			}
			for _, sg := range all {
				if aws.ToString(sg.VpcId) == v.ID && awsx.EC2TagValue(sg.Tags, awsx.TagRole) == role {
					return engine.InSync(Group{ID: aws.ToString(sg.GroupId), Name: aws.ToString(sg.GroupName)}), nil
				}
			}
			return engine.Missing[Group](), nil
		},
		Create: func(ctx context.Context, r *engine.Run) (Group, error) {
			v, err := vpc.Get(r)
			if err != nil {
				return Group{}, err
			}
			find := func(ctx context.Context) (Group, bool, error) { return findGroupByTags(ctx, c.EC2, s, role, v.ID) }
			return awsx.CreateOnce(ctx, find, func(ctx context.Context) (Group, error) {
				out, err := c.EC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{
					GroupName:         aws.String(name),
					Description:       aws.String(fmt.Sprintf("kforge %s: %s", s.Name, RoleTitles[role])),
					VpcId:             aws.String(v.ID),
					TagSpecifications: awsx.EC2TagSpec(ec2types.ResourceTypeSecurityGroup, awsx.Owned(s.Ref, awsx.Tags(s.Ref, name, awsx.TagRole, role))),
				}, safe)
				if err != nil {
					return Group{}, fmt.Errorf("create security group %s: %w", name, err)
				}
				return Group{ID: aws.ToString(out.GroupId), Name: name}, nil
			})
		},
		Delete: func(ctx context.Context, r *engine.Run, prev *Group) error {
			g, ok, err := findGroup(ctx, c.EC2, s, role, prev)
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
				_, err := c.EC2.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(g.ID)})
				if awsx.IsNotFound(err) {
					return nil
				}
				return err
			})
		},
	})
}

// findGroup finds a role's group for a delete: by its journaled ID, else
// by the cluster's tags (any VPC: the state may be lost).
func findGroup(ctx context.Context, c *ec2.Client, s spec.Spec, role string, prev *Group) (Group, bool, error) {
	in := &ec2.DescribeSecurityGroupsInput{Filters: awsx.ClusterFilters(s.Ref, awsx.TagRole, role)}
	if prev != nil && prev.ID != "" {
		in = &ec2.DescribeSecurityGroupsInput{GroupIds: []string{prev.ID}}
	}
	out, err := c.DescribeSecurityGroups(ctx, in)
	if awsx.IsNotFound(err) {
		return Group{}, false, nil
	}
	if err != nil {
		return Group{}, false, fmt.Errorf("look up security group of %s: %w", role, err)
	}
	for _, g := range out.SecurityGroups {
		return Group{ID: aws.ToString(g.GroupId), Name: aws.ToString(g.GroupName)}, true, nil
	}
	return Group{}, false, nil
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

// Rules is the output of a rules step.
type Rules struct {
	Group string `json:"group"`
	Rules int    `json:"rules"`
}

// addRules keeps exactly the role's ingress rules on its group: a rule
// revoked outside kforge is authorized again, one added outside kforge is
// revoked.
func addRules(g *engine.Graph, c *Clients, s spec.Spec, role string, groups map[string]engine.Ref[Group]) engine.Ref[Rules] {
	rs := rules(s, role)
	var needs []engine.Dep
	for _, r := range Roles {
		needs = append(needs, groups[r])
	}
	ids := func(r *engine.Run) (self string, byRole map[string]string, err error) {
		byRole = map[string]string{}
		for _, ro := range Roles {
			g, err := groups[ro].Get(r)
			if err != nil {
				return "", nil, err
			}
			byRole[ro] = g.ID
		}
		return byRole[role], byRole, nil
	}
	want := func(byRole map[string]string) []ec2types.IpPermission {
		out := make([]ec2types.IpPermission, 0, len(rs))
		for _, ru := range rs {
			out = append(out, permission(ru, byRole))
		}
		return out
	}
	apply := func(ctx context.Context, r *engine.Run) (Rules, error) {
		self, byRole, err := ids(r)
		if err != nil {
			return Rules{}, err
		}
		cur, err := c.EC2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{self}})
		if err != nil {
			return Rules{}, fmt.Errorf("look up security group %s: %w", self, err)
		}
		var have []ec2types.IpPermission
		if len(cur.SecurityGroups) > 0 {
			have = cur.SecurityGroups[0].IpPermissions
		}
		add, remove := diffPermissions(want(byRole), have)
		if len(remove) > 0 {
			if _, err := c.EC2.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: aws.String(self), IpPermissions: remove}); err != nil && !awsx.IsNotFound(err) {
				return Rules{}, fmt.Errorf("revoke outdated rules of %s: %w", self, err)
			}
		}
		if len(add) > 0 {
			_, err := c.EC2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{
				GroupId: aws.String(self), IpPermissions: add,
				TagSpecifications: awsx.EC2TagSpec(ec2types.ResourceTypeSecurityGroupRule, awsx.Tags(s.Ref, SGName(s.Name, role))),
			})
			if err != nil && !awsx.HasCode(err, "InvalidPermission.Duplicate") {
				return Rules{}, fmt.Errorf("authorize ingress rules of %s: %w", self, err)
			}
		}
		return Rules{Group: self, Rules: len(rs)}, nil
	}
	return engine.Add(g, engine.Resource[Rules]{
		ID:     RulesStepID(role),
		Needs:  needs,
		Title:  fmt.Sprintf("ingress rules of the %s (%d)", RoleTitles[role], len(rs)),
		Inputs: rs,
		Find: func(ctx context.Context, r *engine.Run, prev *Rules) (engine.Observation[Rules], error) {
			self, byRole, err := ids(r)
			if err != nil {
				return engine.Observation[Rules]{}, err
			}
			sg, err := groupByID(ctx, sessionOf(r, c, s.Ref), self)
			if err != nil {
				return engine.Observation[Rules]{}, err
			}
			out := Rules{Group: self, Rules: len(rs)}
			if sg == nil {
				return engine.Missing[Rules](), nil
			}
			add, remove := diffPermissions(want(byRole), sg.IpPermissions)
			if len(add)+len(remove) == 0 {
				return engine.InSync(out), nil
			}
			if prev == nil && len(remove) == 0 && len(add) == len(rs) {
				return engine.Missing[Rules](), nil
			}
			return engine.Drifted(out, "security group %s: %s", self, describePermissions(add, remove, byRole)), nil
		},
		Create: apply,
		Update: func(ctx context.Context, r *engine.Run, _ Rules) (Rules, error) { return apply(ctx, r) },
		Delete: func(ctx context.Context, r *engine.Run, _ *Rules) error {
			// Rules referencing other groups must go before those groups
			// can be deleted.
			var prevGroup *Group
			if g, ok := engine.Lookup[Group](r, SGStepID(role)); ok {
				prevGroup = &g
			}
			g, ok, err := findGroup(ctx, c.EC2, s, role, prevGroup)
			if err != nil || !ok {
				if err == nil {
					return engine.ErrAbsent
				}
				return err
			}
			cur, err := c.EC2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{g.ID}})
			if awsx.IsNotFound(err) {
				return engine.ErrAbsent
			}
			if err != nil {
				return fmt.Errorf("look up security group %s: %w", g.ID, err)
			}
			if len(cur.SecurityGroups) == 0 || len(cur.SecurityGroups[0].IpPermissions) == 0 {
				return engine.ErrAbsent
			}
			if _, err := c.EC2.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{
				GroupId: aws.String(g.ID), IpPermissions: cur.SecurityGroups[0].IpPermissions}); err != nil && !awsx.IsNotFound(err) {
				return fmt.Errorf("revoke rules of %s: %w", g.ID, err)
			}
			return nil
		},
	})
}

// describePermissions says, for a drift message, which rules are missing
// and which are extra.
func describePermissions(add, remove []ec2types.IpPermission, byRole map[string]string) string {
	names := map[string]string{}
	for role, id := range byRole {
		names[id] = RoleTitles[role] + " (" + id + ")"
	}
	one := func(p ec2types.IpPermission) string {
		src := ""
		switch {
		case len(p.IpRanges) > 0:
			src = aws.ToString(p.IpRanges[0].CidrIp)
		case len(p.UserIdGroupPairs) > 0:
			id := aws.ToString(p.UserIdGroupPairs[0].GroupId)
			src = names[id]
			if src == "" {
				src = id
			}
		case len(p.Ipv6Ranges) > 0:
			src = aws.ToString(p.Ipv6Ranges[0].CidrIpv6)
		}
		ports := fmt.Sprint(aws.ToInt32(p.FromPort))
		if aws.ToInt32(p.ToPort) != aws.ToInt32(p.FromPort) {
			ports += fmt.Sprintf("-%d", aws.ToInt32(p.ToPort))
		}
		return fmt.Sprintf("%s/%s from %s", aws.ToString(p.IpProtocol), ports, src)
	}
	var parts []string
	for _, p := range add {
		parts = append(parts, "rule "+one(p)+" is missing (revoked outside kforge)")
	}
	for _, p := range remove {
		parts = append(parts, "rule "+one(p)+" was added outside kforge")
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
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
