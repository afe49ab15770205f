// Package infra is the AWS infrastructure of an ha-aws cluster, as engine
// resources: the network (package network), the cluster's secrets (kept in
// state), its EC2 key pair, the images its VMs boot, a security group per
// role with its ingress rules, the control planes' and workers' IAM roles
// and instance profiles (and the etcd VMs', for scheduled snapshots), and
// one VM per slot (role and index). The new workers of a subnet are
// launched together, in batched RunInstances calls, each VM still with its
// own step, hostname and host key (batch.go).
//
// Every resource is found again on every run, from batched look-ups held
// in the run's Session (one DescribeInstances for every VM, one
// DescribeSecurityGroups for every group and its rules), and repaired when
// it drifted: a VM terminated outside kforge is launched again in its slot
// with the same private address, host key and hostname, so what the VMs
// know of each other (etcd peers, HAProxy's backends, the API endpoint)
// stays true; a stopped VM is started; a revoked rule is authorized again.
// Package boot bootstraps what the VMs run.
package infra

import (
	"fmt"
	"strconv"

	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/iamrole"
	"github.com/kforge/kforge/internal/network"
	"github.com/kforge/kforge/internal/spec"
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

// RoleTitles name the roles in titles and messages.
var RoleTitles = map[string]string{RoleEtcd: "etcd", RoleLB: "load balancer", RoleCP: "control planes", RoleWP: "workers"}

// Step IDs (stable: they key the journal of existing clusters).
const (
	StepSecrets = "secrets"
	StepKeyPair = "keypair"
	StepImages  = "images"
	StepCPRole  = "role/cp"
	StepWPRole  = "role/wp"
	// StepEtcdRole makes the etcd VMs' role, for scheduled snapshots.
	StepEtcdRole = "role/etcd"
	StepVMs      = "vms" // teardown only: every VM of the cluster
	// StepInventory looks up the cluster's instances once per run.
	StepInventory = "instances"
)

// IAM suffixes: kforge-<name>-ha-cp and kforge-<name>-ha-wp, and
// kforge-<name>-ha-etcd for a cluster with scheduled etcd snapshots.
const (
	CPRoleSuffix   = "ha-cp"
	WPRoleSuffix   = "ha-wp"
	EtcdRoleSuffix = "ha-etcd"
)

// RoleSuffixes are the suffixes of the IAM roles (and instance profiles)
// of a cluster.
func RoleSuffixes(s spec.Spec) []string {
	out := []string{CPRoleSuffix, WPRoleSuffix}
	if s.EtcdBackups != "" {
		out = append(out, EtcdRoleSuffix)
	}
	return out
}

// SGStepID is the step that makes the security group of a role.
func SGStepID(role string) string { return "sg/" + role }

// RulesStepID is the step that keeps the ingress rules of a role's group.
func RulesStepID(role string) string { return "sg-rules/" + role }

// VMStepID is the step of VM i of a role.
func VMStepID(role string, i int) string { return fmt.Sprintf("vm/%s/%d", role, i) }

// Count returns how many VMs of a role the spec wants.
func Count(s spec.Spec, role string) int {
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

// Size returns the instance type of a role.
func Size(s spec.Spec, role string) string {
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

// VMName is the Name tag and hostname of VM i of a role.
func VMName(cluster, role string, i int) string { return fmt.Sprintf("%s-%s-%d", cluster, role, i) }

// SlotOf is a VM's slot: its role and index ("cp/0").
func SlotOf(role string, i int) string { return role + "/" + strconv.Itoa(i) }

// Refs are the handles on the infrastructure's outputs.
type Refs struct {
	Network network.Refs
	Secrets engine.Ref[Secrets]
	KeyPair engine.Ref[KeyPair]
	Images  engine.Ref[Images]
	Roles   map[string]engine.Ref[iamrole.Out] // RoleCP, RoleWP, RoleEtcd (with scheduled snapshots)
	Groups  map[string]engine.Ref[Group]       // by role
	Rules   map[string]engine.Ref[Rules]       // by role
	vms     map[string]engine.Ref[VM]          // by slot
}

// VM returns the handle on VM i of a role.
func (r Refs) VM(role string, i int) engine.Ref[VM] {
	if ref, ok := r.vms[SlotOf(role, i)]; ok {
		return ref
	}
	return engine.RefTo[VM](VMStepID(role, i))
}

// VMsOf returns the handles on every VM of a role.
func (r Refs) VMsOf(s spec.Spec, role string) []engine.Ref[VM] {
	out := make([]engine.Ref[VM], Count(s, role))
	for i := range out {
		out[i] = r.VM(role, i)
	}
	return out
}

// NetworkZones is how many availability zones an ha-aws network spans
// (one subnet each): the VMs of each role go round robin over them, so
// that 3 etcd members or control planes are in 3 zones.
const NetworkZones = 3

// Add adds the cluster's infrastructure to g: the network, the secrets,
// the key pair, the images, the roles, the security groups and their
// rules, and, with vms, the VMs (a teardown removes them all in one step,
// AddTeardown). A VM needs its subnet, not the network's routes: it is
// launched while they are made.
func Add(g *engine.Graph, c *Clients, s spec.Spec, vms bool) Refs {
	refs := Refs{
		Groups: map[string]engine.Ref[Group]{}, Rules: map[string]engine.Ref[Rules]{},
		Roles: map[string]engine.Ref[iamrole.Out]{}, vms: map[string]engine.Ref[VM]{},
	}
	refs.Network = network.Add(g, &network.Clients{EC2: c.EC2}, network.Spec{Ref: s.Ref, VPCID: s.VPCID, Zones: NetworkZones})
	refs.Secrets = addSecrets(g, s)
	refs.KeyPair = addKeyPair(g, c, s, refs.Secrets)
	refs.Images = addImages(g, c, s)
	// The policy is built from constant documents; an error is a bug that
	// the policy tests catch, and leaves the role without policy.
	cpPolicy, _ := cpRolePolicy(s)
	refs.Roles[RoleCP] = addRole(g, c, s, StepCPRole, iamrole.Role{Suffix: CPRoleSuffix, Service: "ec2.amazonaws.com", Inline: cpPolicy, Profile: true})
	refs.Roles[RoleWP] = addRole(g, c, s, StepWPRole, iamrole.Role{Suffix: WPRoleSuffix, Service: "ec2.amazonaws.com", Profile: true})
	if s.EtcdBackups != "" {
		refs.Roles[RoleEtcd] = addRole(g, c, s, StepEtcdRole, iamrole.Role{Suffix: EtcdRoleSuffix, Service: "ec2.amazonaws.com", Inline: etcdRolePolicy(s), Profile: true})
	}
	for _, role := range Roles {
		refs.Groups[role] = addGroup(g, c, s, role, refs.Network.VPC)
	}
	for _, role := range Roles {
		refs.Rules[role] = addRules(g, c, s, role, refs.Groups)
	}
	if !vms {
		return refs
	}
	inv := addInventory(g, c, s)
	for _, role := range Roles {
		for i := 0; i < Count(s, role); i++ {
			refs.vms[SlotOf(role, i)] = addVM(g, c, s, role, i, refs, inv)
		}
	}
	return refs
}

// addRole adds the IAM role (and instance profile) of a role's VMs.
func addRole(g *engine.Graph, c *Clients, s spec.Spec, id string, role iamrole.Role) engine.Ref[iamrole.Out] {
	return iamrole.Add(g, c.IAM, s.Ref, id, role)
}

// AddTeardown adds what only a delete needs: one step that terminates
// every VM of the cluster (found by its tags) after the steps of needs.
func AddTeardown(g *engine.Graph, c *Clients, s spec.Spec, needs []engine.Dep) {
	g.Add(vmsTeardownStep(c, s, needs))
}
