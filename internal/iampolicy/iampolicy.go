// Package iampolicy is the one IAM policy an AWS account needs for kforge:
// a table of every action kforge calls (Permissions), rendered as a policy
// document per cluster type (Policy), and the concrete permission checks
// a cluster needs (Requests) for preflight to simulate or evaluate.
//
// Scoping. IAM role actions are limited to roles named kforge-* and
// instance-profile actions to instance profiles named kforge-* (the names
// kforge gives them, docs/CONTRACT.md). iam:PassRole is limited to kforge-*
// roles and, with the condition iam:PassedToService, to the service that
// receives them: eks.amazonaws.com for aws, ec2.amazonaws.com for ha-aws.
// The read-only actions preflight uses to read the caller's own
// permissions are limited to the caller (user/${aws:username}), groups and
// managed policies. ec2:CreateTags is limited by ec2:CreateAction to the
// create calls that tag what they create. Every other action is granted on
// "*": most EC2 Describe actions and several create actions support no
// resource-level permissions, and kforge cannot name in advance the IDs
// of what it creates or of what Kubernetes leaves behind.
//
// Implicit actions. A few actions are never called by kforge but AWS
// checks them on kforge's calls: iam:PassRole, tag on create (ec2:CreateTags,
// iam:TagRole, iam:TagInstanceProfile, eks:TagResource) and the EKS
// service-linked roles that EKS creates with the caller's permissions
// (iam:CreateServiceLinkedRole). They carry their reason in
// Permission.Implicit; the test that compares the policy with recorded
// calls allows exactly these.
//
// Known limits. A principal that may create kforge-* roles, put policies
// on them and pass them to EC2 can grant those roles more than kforge
// does; the kforge-* scoping confines this to roles of that name. Accounts
// that need more should add a permissions boundary to the kforge-* roles
// (kforge does not set one). Default EBS encryption with a customer managed
// KMS key needs KMS grants on that key, which this policy does not give.
package iampolicy

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Cluster-type selectors for Policy besides the types themselves.
const (
	// All is the union of both cluster types' policies.
	All = "all"
)

// Scope says on which resources a permission is granted.
type Scope int

// Scopes.
const (
	// ScopeAny grants the action on "*".
	ScopeAny Scope = iota
	// ScopeRole grants it on roles named kforge-*.
	ScopeRole
	// ScopeInstanceProfile grants it on instance profiles named kforge-*.
	ScopeInstanceProfile
	// ScopePassRole grants iam:PassRole on kforge-* roles, for the
	// services that receive them.
	ScopePassRole
	// ScopeServiceLinkedRole grants iam:CreateServiceLinkedRole for the
	// EKS service-linked roles only.
	ScopeServiceLinkedRole
	// ScopeTagOnCreate grants ec2:CreateTags only within the create calls
	// that tag their resources (condition ec2:CreateAction).
	ScopeTagOnCreate
	// ScopeOwnIdentity grants read access to the caller's own user, its
	// groups and managed policies (and, with Options.CallerRole, its role).
	ScopeOwnIdentity
	// ScopeKforgeTagged grants a destructive action only on resources that
	// carry the kforge.io/cluster tag (condition Null
	// aws:ResourceTag/kforge.io/cluster = false): the policy cannot delete
	// what kforge did not make.
	ScopeKforgeTagged
	// ScopeBatchNames grants ec2:CreateTags on the instances of a batched
	// launch (condition Null aws:ResourceTag/kforge.io/batch = false),
	// for the tags that name a VM after its slot only (aws:TagKeys).
	ScopeBatchNames
	// ScopeKubernetesMade grants a delete of what Kubernetes made in a
	// cluster (load balancers, target groups, volumes) only on resources
	// that carry a tag one of the Kubernetes components sets on what it
	// makes (KubernetesMadeTags), one statement per tag.
	ScopeKubernetesMade
)

// KubernetesMadeTags are the tags, and their statements, by which the
// policy knows what Kubernetes made: the cloud provider's load balancers
// and their target groups (kubernetes.io/service-name), the AWS Load
// Balancer Controller's (elbv2.k8s.aws/cluster), and the volumes of
// PersistentVolumeClaims (kubernetes.io/created-for/pvc/name, set by the
// in-tree provider and the EBS CSI driver; ebs.csi.aws.com/cluster, set by
// the CSI driver). The per-cluster key kubernetes.io/cluster/<name> cannot
// be named by one policy for every cluster.
var KubernetesMadeTags = [][2]string{
	{"kubernetes.io/service-name", "DeleteLoadBalancersOfServices"},
	{"elbv2.k8s.aws/cluster", "DeleteWhatTheLoadBalancerControllerMade"},
	{"kubernetes.io/created-for/pvc/name", "DeleteVolumesOfClaims"},
	{"ebs.csi.aws.com/cluster", "DeleteVolumesOfTheEBSCSIDriver"},
}

// ClusterTagKey is the tag every resource kforge makes carries (the
// contract's kforge.io/cluster); repeated here so that this package stays
// a leaf.
const ClusterTagKey = "kforge.io/cluster"

// BatchTagKey marks the instances of a batched launch (ha-aws), and
// BatchNameTagKeys are the tags kforge adds to each of them afterwards:
// its Name and its slot (repeated from package infra).
const BatchTagKey = "kforge.io/batch"

// BatchNameTagKeys are the tags that name a VM of a batch after its slot.
var BatchNameTagKeys = []string{"Name", "kforge.io/slot"}

// Permission is one IAM action kforge needs.
type Permission struct {
	// Action is the IAM action, "ec2:RunInstances".
	Action string
	// Types lists the cluster types that need it.
	Types []string
	// Scopes are the resources it is granted on (none: ScopeAny).
	Scopes []Scope
	// TagOnCreate marks an EC2 create call that tags what it creates,
	// so the ec2:CreateTags statement names it in ec2:CreateAction.
	TagOnCreate bool
	// Why says what kforge does with it.
	Why string
	// Implicit, when set, says why AWS checks the action although kforge
	// never calls it.
	Implicit string
}

// scopes returns the permission's scopes, ScopeAny when none is set.
func (p Permission) scopes() []Scope {
	if len(p.Scopes) == 0 {
		return []Scope{ScopeAny}
	}
	return p.Scopes
}

// For reports whether the permission serves the cluster type (or All).
func (p Permission) For(typ string) bool {
	if typ == All {
		return true
	}
	for _, t := range p.Types {
		if t == typ {
			return true
		}
	}
	return false
}

// ForType returns the permissions a cluster type needs (All: every one).
func ForType(typ string) ([]Permission, error) {
	if err := checkType(typ); err != nil {
		return nil, err
	}
	var out []Permission
	for _, p := range Permissions() {
		if p.For(typ) {
			out = append(out, p)
		}
	}
	return out, nil
}

// Actions returns the sorted IAM actions of a cluster type's policy.
func Actions(typ string) ([]string, error) {
	perms, err := ForType(typ)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(perms))
	for _, p := range perms {
		out = append(out, p.Action)
	}
	sort.Strings(out)
	return slices.Compact(out), nil // All lists an action of both types once
}

func checkType(typ string) error {
	switch typ {
	case typeEKS, typeHA, All:
		return nil
	}
	return fmt.Errorf("unknown cluster type %q: use %s, %s or %s", typ, typeEKS, typeHA, All)
}

// Options fill in what the policy cannot know by itself.
type Options struct {
	// Account is the 12-digit account ID; empty means "*".
	Account string
	// Partition is the AWS partition ("aws", "aws-cn", "aws-us-gov");
	// empty means "aws".
	Partition string
	// CallerRole, if set, is the name of a role kforge runs as (SSO,
	// instance role): preflight may then read that role's policies.
	CallerRole string
}

func (o Options) account() string {
	if o.Account == "" {
		return "*"
	}
	return o.Account
}

func (o Options) partition() string {
	if o.Partition == "" {
		return "aws"
	}
	return o.Partition
}

// Document is an IAM policy document.
type Document struct {
	Version   string      `json:"Version"`
	Statement []Statement `json:"Statement"`
}

// Statement is one statement of a Document that kforge renders: Allow,
// with lists of actions and resources and an optional condition.
type Statement struct {
	Sid       string                         `json:"Sid"`
	Effect    string                         `json:"Effect"`
	Action    []string                       `json:"Action"`
	Resource  []string                       `json:"Resource"`
	Condition map[string]map[string][]string `json:"Condition,omitempty"`
}

// JSON renders the document, indented, with a final newline.
func (d Document) JSON() []byte {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		panic(err) // strings, slices and maps of strings always marshal
	}
	return append(b, '\n')
}

// Statement IDs of the rendered policy.
const (
	SidEC2         = "EC2"
	SidEKS         = "EKS"
	SidELB         = "LoadBalancersKubernetesMade"
	SidQuotas      = "ServiceQuotas"
	SidSTS         = "CallerIdentity"
	SidRoles       = "KforgeRoles"
	SidProfiles    = "KforgeInstanceProfiles"
	SidPassRole    = "PassKforgeRoles"
	SidSLR         = "EKSServiceLinkedRoles"
	SidTagOnCreate = "TagOnCreate"
	SidOwnIdentity = "ReadOwnPermissions"
	SidTagged      = "DeleteOnlyWhatKforgeMade"
	SidBatchNames  = "NameVMsOfBatchedLaunches"
	// SidKubernetesMade collects the actions of ScopeKubernetesMade; they
	// are granted in one statement per tag of KubernetesMadeTags.
	SidKubernetesMade = "KubernetesMade"
)

// kforgeIAMPrefix starts the name of every role and instance profile
// kforge makes (awsx.IAMName).
const kforgeIAMPrefix = "kforge-"

// ARN helpers.

func iamARN(o Options, account, resource string) string {
	return fmt.Sprintf("arn:%s:iam::%s:%s", o.partition(), account, resource)
}

// RoleARN is the ARN of a role of the account (o.Account, else "*").
func RoleARN(o Options, name string) string { return iamARN(o, o.account(), "role/"+name) }

// InstanceProfileARN is the ARN of an instance profile.
func InstanceProfileARN(o Options, name string) string {
	return iamARN(o, o.account(), "instance-profile/"+name)
}

// passedTo returns the services kforge hands roles to, per type.
func passedTo(typ string, o Options) []string {
	var out []string
	if typ == typeEKS || typ == All {
		out = append(out, "eks.amazonaws.com")
	}
	if typ == typeHA || typ == All {
		out = append(out, "ec2.amazonaws.com")
		if o.partition() == "aws-cn" {
			out = append(out, "ec2.amazonaws.com.cn")
		}
	}
	return out
}

// EKS service-linked roles, which EKS creates at the first cluster and
// node group of an account.
func eksServiceLinkedRoles() [][2]string {
	return [][2]string{
		{"eks.amazonaws.com", "AWSServiceRoleForAmazonEKS"},
		{"eks-nodegroup.amazonaws.com", "AWSServiceRoleForAmazonEKSNodegroup"},
	}
}

func slrARN(o Options, service, name string) string {
	return iamARN(o, o.account(), "role/aws-service-role/"+service+"/"+name)
}

// ownIdentityResources are what preflight reads of the caller.
func ownIdentityResources(o Options) []string {
	res := []string{
		iamARN(o, o.account(), "user/${aws:username}"),
		iamARN(o, o.account(), "group/*"),
		iamARN(o, o.account(), "policy/*"),
		iamARN(o, "aws", "policy/*"),
	}
	if o.CallerRole != "" {
		res = append(res, RoleARN(o, o.CallerRole))
	}
	return res
}

// Policy renders the policy of a cluster type (aws, ha-aws or All).
func Policy(typ string, o Options) (Document, error) {
	perms, err := ForType(typ)
	if err != nil {
		return Document{}, err
	}
	if o.Account != "" && !isAccount(o.Account) {
		return Document{}, fmt.Errorf("invalid account ID %q: want 12 digits", o.Account)
	}
	if o.CallerRole != "" && !validRoleName(o.CallerRole) {
		return Document{}, fmt.Errorf("invalid role name %q: give the role's name (with its path, if any), not its ARN", o.CallerRole)
	}
	bySid := map[string][]string{}
	var creates []string
	for _, p := range perms {
		if p.TagOnCreate {
			creates = append(creates, strings.TrimPrefix(p.Action, "ec2:"))
		}
		for _, sc := range p.scopes() {
			sid := sidOf(p.Action, sc)
			bySid[sid] = append(bySid[sid], p.Action)
		}
	}
	sort.Strings(creates)
	var stmts []Statement
	add := func(sid string, resources []string, cond map[string]map[string][]string) {
		actions := bySid[sid]
		if len(actions) == 0 {
			return
		}
		actions = slices.Compact(slices.Sorted(slices.Values(actions))) // All lists an action of both types once
		stmts = append(stmts, Statement{Sid: sid, Effect: "Allow", Action: actions, Resource: resources, Condition: cond})
	}
	star := []string{"*"}
	add(SidSTS, star, nil)
	add(SidEC2, star, nil)
	add(SidELB, star, nil)
	add(SidEKS, star, nil)
	add(SidQuotas, star, nil)
	add(SidTagOnCreate, star, map[string]map[string][]string{"StringEquals": {"ec2:CreateAction": creates}})
	add(SidRoles, []string{RoleARN(o, kforgeIAMPrefix+"*")}, nil)
	add(SidProfiles, []string{InstanceProfileARN(o, kforgeIAMPrefix+"*")}, nil)
	add(SidPassRole, []string{RoleARN(o, kforgeIAMPrefix+"*")},
		map[string]map[string][]string{"StringEquals": {"iam:PassedToService": passedTo(typ, o)}})
	var slrs, slrServices []string
	for _, s := range eksServiceLinkedRoles() {
		slrs = append(slrs, slrARN(o, s[0], s[1]))
		slrServices = append(slrServices, s[0])
	}
	add(SidSLR, slrs, map[string]map[string][]string{"StringEquals": {"iam:AWSServiceName": slrServices}})
	add(SidOwnIdentity, ownIdentityResources(o), nil)
	add(SidTagged, star, map[string]map[string][]string{"Null": {"aws:ResourceTag/" + ClusterTagKey: {"false"}}})
	add(SidBatchNames, []string{fmt.Sprintf("arn:%s:ec2:*:%s:instance/*", o.partition(), o.account())}, map[string]map[string][]string{
		"Null":                      {"aws:ResourceTag/" + BatchTagKey: {"false"}},
		"ForAllValues:StringEquals": {"aws:TagKeys": BatchNameTagKeys},
	})
	for _, kt := range KubernetesMadeTags {
		bySid[kt[1]] = bySid[SidKubernetesMade]
		add(kt[1], star, map[string]map[string][]string{"Null": {"aws:ResourceTag/" + kt[0]: {"false"}}})
	}
	return Document{Version: "2012-10-17", Statement: stmts}, nil
}

// sidOf returns the statement an action goes to under a scope.
func sidOf(action string, sc Scope) string {
	switch sc {
	case ScopeRole:
		return SidRoles
	case ScopeInstanceProfile:
		return SidProfiles
	case ScopePassRole:
		return SidPassRole
	case ScopeServiceLinkedRole:
		return SidSLR
	case ScopeTagOnCreate:
		return SidTagOnCreate
	case ScopeBatchNames:
		return SidBatchNames
	case ScopeOwnIdentity:
		return SidOwnIdentity
	case ScopeKforgeTagged:
		return SidTagged
	case ScopeKubernetesMade:
		return SidKubernetesMade
	}
	switch service(action) {
	case "ec2":
		return SidEC2
	case "eks":
		return SidEKS
	case "elasticloadbalancing":
		return SidELB
	case "servicequotas":
		return SidQuotas
	}
	return SidSTS
}

// service returns the prefix of an action ("ec2" of "ec2:RunInstances").
func service(action string) string {
	s, _, _ := strings.Cut(action, ":")
	return s
}

func isAccount(s string) bool {
	if len(s) != 12 {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func validRoleName(s string) bool {
	if s == "" || len(s) > 512 || strings.HasPrefix(s, "arn:") {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("+=,.@_-/", r)) {
			return false
		}
	}
	return true
}
