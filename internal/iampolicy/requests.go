package iampolicy

import (
	"fmt"
	"sort"
	"strings"
)

// Context keys kforge knows the value (or the absence) of for each of its
// requests. Condition keys are case-insensitive; these are lower case.
const (
	KeyRequestedRegion = "aws:requestedregion"
	KeyPassedToService = "iam:passedtoservice"
	KeyAWSServiceName  = "iam:awsservicename"
	KeyCreateAction    = "ec2:createaction"
	KeyClusterTag      = "aws:resourcetag/" + ClusterTagKey
	KeyBatchTag        = "aws:resourcetag/" + BatchTagKey
	KeyTagKeys         = "aws:tagkeys"
)

// knownKeys are the keys Decide treats as decided: present with the
// request's value, or known to be absent. A condition on any other key
// cannot be evaluated locally.
func knownKeys() []string {
	keys := []string{KeyRequestedRegion, KeyPassedToService, KeyAWSServiceName, KeyCreateAction, KeyClusterTag}
	for _, kt := range KubernetesMadeTags {
		keys = append(keys, "aws:resourcetag/"+kt[0])
	}
	return keys
}

// Request is one permission check: an action on a resource, with the
// context keys AWS would evaluate for kforge's call.
type Request struct {
	Action   string              `json:"action"`
	Resource string              `json:"resource"`
	Context  map[string][]string `json:"context,omitempty"`
}

// String names the request in messages: "iam:PassRole on
// arn:aws:iam::1:role/kforge-x-cp-role (iam:PassedToService=eks.amazonaws.com)".
func (r Request) String() string {
	s := r.Action + " on " + r.Resource
	var ctx []string
	for k, v := range r.Context {
		if k == KeyRequestedRegion {
			continue
		}
		ctx = append(ctx, displayKey(k)+"="+strings.Join(v, ","))
	}
	sort.Strings(ctx)
	if len(ctx) > 0 {
		s += " (" + strings.Join(ctx, " ") + ")"
	}
	return s
}

func displayKey(k string) string {
	switch k {
	case KeyPassedToService:
		return "iam:PassedToService"
	case KeyAWSServiceName:
		return "iam:AWSServiceName"
	case KeyCreateAction:
		return "ec2:CreateAction"
	case KeyRequestedRegion:
		return "aws:RequestedRegion"
	case KeyClusterTag:
		return "aws:ResourceTag/" + ClusterTagKey
	}
	return k
}

// Target is the cluster a permission check is for.
type Target struct {
	// Type is the cluster type (aws or ha-aws).
	Type string
	// Name is the cluster's name, the value of the kforge.io/cluster tag
	// on what it deletes.
	Name string
	// Region is the cluster's region.
	Region string
	// Account and Partition name the account ("aws" if empty).
	Account   string
	Partition string
	// Roles are the names of the cluster's IAM roles (kforge-<name>-...).
	Roles []string
	// Profiles are the names of the instance profiles kforge makes or
	// looks for: for both types, one of each role's name (a delete looks
	// for an instance profile of every role, also for aws).
	Profiles []string
}

// iamRegion is the region that IAM requests carry in
// aws:RequestedRegion: IAM is global and answers in one region per
// partition.
func iamRegion(partition string) string {
	switch partition {
	case "aws-cn":
		return "cn-north-1"
	case "aws-us-gov":
		return "us-gov-west-1"
	}
	return "us-east-1"
}

// Requests returns what a principal must be allowed to do to create,
// scale and delete a cluster of t, and to run preflight: every action of
// the type's policy on the cluster's resources, with the context of
// kforge's calls. The actions preflight uses to read the caller's own
// permissions are left out: the check that uses them shows whether they
// work.
func Requests(t Target) ([]Request, error) {
	if t.Type != typeEKS && t.Type != typeHA {
		return nil, fmt.Errorf("unknown cluster type %q", t.Type)
	}
	perms, err := ForType(t.Type)
	if err != nil {
		return nil, err
	}
	o := Options{Account: t.Account, Partition: t.Partition}
	var creates []string
	for _, p := range perms {
		if p.TagOnCreate {
			creates = append(creates, strings.TrimPrefix(p.Action, "ec2:"))
		}
	}
	sort.Strings(creates)
	var out []Request
	add := func(action, resource string, kv ...string) {
		region := t.Region
		if service(action) == "iam" {
			region = iamRegion(o.partition())
		}
		ctx := map[string][]string{KeyRequestedRegion: {region}}
		for i := 0; i+1 < len(kv); i += 2 {
			ctx[kv[i]] = append(ctx[kv[i]], kv[i+1])
		}
		out = append(out, Request{Action: action, Resource: resource, Context: ctx})
	}
	for _, p := range perms {
		for _, sc := range p.scopes() {
			switch sc {
			case ScopeAny:
				add(p.Action, "*")
			case ScopeRole:
				for _, r := range t.Roles {
					add(p.Action, RoleARN(o, r))
				}
			case ScopeInstanceProfile:
				for _, r := range t.Profiles {
					add(p.Action, InstanceProfileARN(o, r))
				}
			case ScopePassRole:
				for _, r := range t.Roles {
					for _, svc := range passedTo(t.Type, o)[:1] {
						add(p.Action, RoleARN(o, r), KeyPassedToService, svc)
					}
				}
			case ScopeServiceLinkedRole:
				for _, s := range eksServiceLinkedRoles() {
					add(p.Action, slrARN(o, s[0], s[1]), KeyAWSServiceName, s[0])
				}
			case ScopeTagOnCreate:
				for _, c := range creates {
					add(p.Action, "*", KeyCreateAction, c)
				}
			case ScopeKubernetesMade:
				// What Kubernetes made carries one of its tags: a load
				// balancer its Service's, a volume its claim's.
				key := "aws:resourcetag/kubernetes.io/service-name"
				if p.Action == "ec2:DeleteVolume" {
					key = "aws:resourcetag/kubernetes.io/created-for/pvc/name"
				}
				add(p.Action, "*", key, "made-by-kubernetes")
			case ScopeBatchNames:
				// Naming a VM of a batch: an instance that carries the
				// batch's tag, with its Name and slot.
				kv := []string{KeyBatchTag, "batch"}
				for _, k := range BatchNameTagKeys {
					kv = append(kv, KeyTagKeys, k)
				}
				add(p.Action, fmt.Sprintf("arn:%s:ec2:%s:%s:instance/i-0123456789abcdef0", o.partition(), t.Region, o.account()), kv...)
			case ScopeKforgeTagged:
				// Deletes act on resources kforge tagged for the cluster.
				add(p.Action, "*", KeyClusterTag, orName(t.Name))
			case ScopeOwnIdentity:
				// Shown by whether preflight can read the caller's
				// permissions at all.
			}
		}
	}
	return out, nil
}

// orName is the cluster name of a request, a placeholder when the check is
// for no cluster in particular.
func orName(name string) string {
	if name == "" {
		return "any-cluster"
	}
	return name
}
