package iampolicy

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// The destructive actions on what kforge makes are granted only on
// resources that carry kforge.io/cluster: by the policy evaluator, the
// action on a tagged resource is allowed, on an untagged one denied.
func TestDestructiveActionsNeedTheClusterTag(t *testing.T) {
	want := map[string][]string{
		typeHA: {"ec2:DeleteInternetGateway", "ec2:DeleteKeyPair", "ec2:DeleteRouteTable", "ec2:DeleteSubnet", "ec2:DeleteVpc", "ec2:DetachInternetGateway", "ec2:TerminateInstances"},
		typeEKS: {"ec2:DeleteInternetGateway", "ec2:DeleteRouteTable", "ec2:DeleteSubnet", "ec2:DeleteVpc", "ec2:DetachInternetGateway", "eks:DeleteAddon", "eks:DeleteCluster", "eks:DeleteNodegroup",
			"eks:UpdateAddon", "eks:UpdateClusterVersion", "eks:UpdateNodegroupVersion"},
	}
	for typ, actions := range want {
		doc, err := Policy(typ, Options{})
		if err != nil {
			t.Fatal(err)
		}
		var scoped []string
		for _, s := range doc.Statement {
			if s.Sid == SidTagged {
				scoped = s.Action
				if got := s.Condition["Null"]["aws:ResourceTag/kforge.io/cluster"]; !slices.Equal(got, []string{"false"}) || len(s.Condition) != 1 {
					t.Errorf("%s: condition %v", typ, s.Condition)
				}
			}
		}
		if !slices.Equal(scoped, actions) {
			t.Errorf("%s: scoped actions %v, want %v", typ, scoped, actions)
		}
		ev, err := NewEvaluator([]NamedPolicy{{Name: "kforge", Document: string(doc.JSON())}}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		region := []string{"eu-west-1"}
		for _, a := range actions {
			tagged := Request{Action: a, Resource: "*", Context: map[string][]string{KeyRequestedRegion: region, KeyClusterTag: {"prod"}}}
			if d := ev.Decide(tagged); !d.Allowed {
				t.Errorf("%s: %s on a resource tagged kforge.io/cluster denied: %s", typ, a, d.Reason)
			}
			untagged := Request{Action: a, Resource: "*", Context: map[string][]string{KeyRequestedRegion: region}}
			if d := ev.Decide(untagged); d.Allowed || len(d.Uncertain) > 0 {
				t.Errorf("%s: %s on an untagged resource: allowed %v (%s, uncertain %v)", typ, a, d.Allowed, d.Reason, d.Uncertain)
			}
		}
		// No other statement grants them unconditionally.
		for _, s := range doc.Statement {
			if s.Sid == SidTagged {
				continue
			}
			for _, a := range s.Action {
				if slices.Contains(actions, a) {
					t.Errorf("%s: %s is also granted by statement %s", typ, a, s.Sid)
				}
			}
		}
	}
}

// What Kubernetes made is deleted only where one of its tags is: a load
// balancer of a Service, a volume of a claim; not an untagged one.
func TestKubernetesMadeDeletesNeedItsTags(t *testing.T) {
	doc, err := Policy(All, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := NewEvaluator([]NamedPolicy{{Name: "kforge", Document: string(doc.JSON())}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	region := []string{"eu-west-1"}
	for _, a := range []string{"elasticloadbalancing:DeleteLoadBalancer", "elasticloadbalancing:DeleteTargetGroup", "ec2:DeleteVolume"} {
		for _, kt := range KubernetesMadeTags {
			tagged := Request{Action: a, Resource: "*", Context: map[string][]string{KeyRequestedRegion: region, "aws:resourcetag/" + kt[0]: {"x"}}}
			if d := ev.Decide(tagged); !d.Allowed {
				t.Errorf("%s on a resource tagged %s denied: %s", a, kt[0], d.Reason)
			}
		}
		untagged := Request{Action: a, Resource: "*", Context: map[string][]string{KeyRequestedRegion: region}}
		if d := ev.Decide(untagged); d.Allowed || len(d.Uncertain) > 0 {
			t.Errorf("%s on an untagged resource: allowed %v (%s, uncertain %v)", a, d.Allowed, d.Reason, d.Uncertain)
		}
		onlyCluster := Request{Action: a, Resource: "*", Context: map[string][]string{KeyRequestedRegion: region, KeyClusterTag: {"prod"}}}
		if d := ev.Decide(onlyCluster); d.Allowed {
			t.Errorf("%s is allowed on what kforge made: it deletes only what Kubernetes made", a)
		}
	}
	// A managed policy holds 6,144 characters, whitespace not counted.
	var compact bytes.Buffer
	if err := json.Compact(&compact, doc.JSON()); err != nil {
		t.Fatal(err)
	}
	if n := compact.Len(); n > 6144 {
		t.Errorf("the policy for all types is %d characters: more than a managed policy holds", n)
	}
}

// Every IAM call internal/iamrole makes (finding, repairing and deleting
// the roles and instance profiles kforge makes) is allowed by the policy
// on those roles and profiles, in both cluster types. A find that reads a
// role's inline policy needed iam:GetRolePolicy there, which the policy
// once granted only on the caller's own role.
func TestRoleActionsAllowedOnKforgeRoles(t *testing.T) {
	var actions []string
	for a, files := range sourceActions(t) {
		for _, f := range files {
			if strings.HasPrefix(a, "iam:") && strings.Contains(filepath.ToSlash(f), "internal/iamrole/") {
				actions = append(actions, a)
				break
			}
		}
	}
	if len(actions) < 10 {
		t.Fatalf("only %d IAM actions found in internal/iamrole: %v", len(actions), actions)
	}
	sort.Strings(actions)
	o := Options{}
	for _, typ := range []string{typeHA, typeEKS} {
		doc, err := Policy(typ, o)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := NewEvaluator([]NamedPolicy{{Name: "kforge", Document: string(doc.JSON())}}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		perms, err := ForType(typ)
		if err != nil {
			t.Fatal(err)
		}
		granted := map[string]bool{}
		for _, p := range perms {
			granted[p.Action] = true
		}
		for _, a := range actions {
			if !granted[a] {
				continue // not this type's (EKS roles have no inline policy or profile): TestPolicyMatchesSource
			}
			resource := RoleARN(o, "kforge-demo-cp-role")
			if strings.Contains(a, "InstanceProfile") && a != "iam:ListInstanceProfilesForRole" {
				resource = InstanceProfileARN(o, "kforge-demo-ha-cp")
			}
			req := Request{Action: a, Resource: resource, Context: map[string][]string{KeyRequestedRegion: {"us-east-1"}}}
			if a == "iam:PassRole" {
				continue // scoped by the service it is passed to: TestScopedPolicy
			}
			if d := ev.Decide(req); !d.Allowed {
				t.Errorf("%s: %s on %s denied: %s", typ, a, resource, d.Reason)
			}
		}
	}
}
