package cloudint

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// ccmDocumentedControlPlane is the Action list of the "Control Plane
// Policy" of kubernetes/cloud-provider-aws docs/prerequisites.md (the same
// at v1.32.8, v1.33.4 and v1.34.4), as written there (it names
// elasticloadbalancing:AddTags twice).
var ccmDocumentedControlPlane = []string{
	"autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeLaunchConfigurations",
	"autoscaling:DescribeTags", "ec2:DescribeInstances", "ec2:DescribeRegions",
	"ec2:DescribeRouteTables", "ec2:DescribeSecurityGroups", "ec2:DescribeSubnets",
	"ec2:DescribeVolumes", "ec2:DescribeAvailabilityZones", "ec2:CreateSecurityGroup",
	"ec2:CreateTags", "ec2:CreateVolume", "ec2:ModifyInstanceAttribute", "ec2:ModifyVolume",
	"ec2:AttachVolume", "ec2:AuthorizeSecurityGroupIngress", "ec2:CreateRoute",
	"ec2:DeleteRoute", "ec2:DeleteSecurityGroup", "ec2:DeleteVolume", "ec2:DetachVolume",
	"ec2:RevokeSecurityGroupIngress", "ec2:DescribeVpcs", "ec2:DescribeInstanceTopology",
	"elasticloadbalancing:AddTags", "elasticloadbalancing:AttachLoadBalancerToSubnets",
	"elasticloadbalancing:ApplySecurityGroupsToLoadBalancer", "elasticloadbalancing:CreateLoadBalancer",
	"elasticloadbalancing:CreateLoadBalancerPolicy", "elasticloadbalancing:CreateLoadBalancerListeners",
	"elasticloadbalancing:ConfigureHealthCheck", "elasticloadbalancing:DeleteLoadBalancer",
	"elasticloadbalancing:DeleteLoadBalancerListeners", "elasticloadbalancing:DescribeLoadBalancers",
	"elasticloadbalancing:DescribeLoadBalancerAttributes", "elasticloadbalancing:DetachLoadBalancerFromSubnets",
	"elasticloadbalancing:DeregisterInstancesFromLoadBalancer", "elasticloadbalancing:ModifyLoadBalancerAttributes",
	"elasticloadbalancing:RegisterInstancesWithLoadBalancer", "elasticloadbalancing:SetLoadBalancerPoliciesForBackendServer",
	"elasticloadbalancing:AddTags", "elasticloadbalancing:CreateListener", "elasticloadbalancing:CreateTargetGroup",
	"elasticloadbalancing:DeleteListener", "elasticloadbalancing:DeleteTargetGroup",
	"elasticloadbalancing:DescribeListeners", "elasticloadbalancing:DescribeLoadBalancerPolicies",
	"elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetHealth",
	"elasticloadbalancing:ModifyListener", "elasticloadbalancing:ModifyTargetGroup",
	"elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets",
	"elasticloadbalancing:SetLoadBalancerPoliciesOfListener", "iam:CreateServiceLinkedRole",
	"kms:DescribeKey",
}

// ebsDocumented are the actions of kubernetes-sigs/aws-ebs-csi-driver
// docs/AmazonEBSCSIDriverPolicyV2.json at v1.63.1, the example policy
// docs/install.md names. (docs/example-iam-policy.json, the older example
// kept beside it, has the same actions plus ec2:DescribeTags.)
var ebsDocumented = []string{
	"ec2:DescribeAvailabilityZones", "ec2:DescribeInstances", "ec2:DescribeInstanceTypes",
	"ec2:DescribeSnapshots", "ec2:DescribeVolumes", "ec2:DescribeVolumesModifications",
	"ec2:DescribeVolumeStatus", "ec2:CreateVolume", "ec2:CopyVolumes", "ec2:CreateSnapshot",
	"ec2:ModifyVolume", "ec2:AttachVolume", "ec2:DetachVolume", "ec2:DeleteVolume",
	"ec2:EnableFastSnapshotRestores", "ec2:DeleteSnapshot", "ec2:LockSnapshot",
	"ec2:CreateTags", "ec2:DeleteTags",
}

// TestPolicyActions compares the control-plane policy's actions with the
// documented lists. (The cloud controller manager's "Node Policy" has no
// counterpart: see ControlPlanePolicy.)
func TestPolicyActions(t *testing.T) {
	if got, want := ControlPlaneActions(), sortedSet(append(slices.Clone(ccmDocumentedControlPlane), ebsDocumented...)); !slices.Equal(got, want) {
		t.Errorf("ControlPlaneActions =\n%v\nwant\n%v", got, want)
	}
	if actions := ControlPlaneActions(); !slices.IsSorted(actions) || len(slices.Compact(slices.Clone(actions))) != len(actions) {
		t.Errorf("actions not sorted and unique: %v", actions)
	}
}

// decodedPolicy is a policy document as IAM reads it: Action and Resource
// may be a string or a list.
type decodedPolicy struct {
	Version   string
	Statement []struct {
		Sid       string
		Effect    string
		Action    []string
		Resource  []string
		Condition map[string]map[string]json.RawMessage
	}
}

var sidRE = regexp.MustCompile(`^[A-Za-z0-9]+$`)

// TestPolicyDocuments checks the control-plane document for each partition: valid JSON,
// the policy language version, unique alphanumeric Sids, ARNs of the
// partition only, and IAM's size limit for a role's inline policies.
func TestPolicyDocuments(t *testing.T) {
	for _, partition := range []string{"aws", "aws-cn", "aws-us-gov"} {
		doc, err := ControlPlanePolicy(partition)
		if err != nil {
			t.Fatalf("%s: %v", partition, err)
		}
		var p decodedPolicy
		if err := json.Unmarshal([]byte(doc), &p); err != nil {
			t.Fatalf("%s: %v", partition, err)
		}
		if p.Version != "2012-10-17" || len(p.Statement) == 0 {
			t.Errorf("%s: version %q, %d statements", partition, p.Version, len(p.Statement))
		}
		sids := map[string]bool{}
		for _, s := range p.Statement {
			if !sidRE.MatchString(s.Sid) || sids[s.Sid] {
				t.Errorf("%s: Sid %q invalid or repeated", partition, s.Sid)
			}
			sids[s.Sid] = true
			if s.Effect != "Allow" || len(s.Action) == 0 || len(s.Resource) == 0 {
				t.Errorf("%s: statement %s = %+v", partition, s.Sid, s)
			}
			for _, r := range s.Resource {
				if r != "*" && !strings.HasPrefix(r, "arn:"+partition+":ec2:") {
					t.Errorf("%s: statement %s names %s", partition, s.Sid, r)
				}
			}
		}
		// IAM limits a role's inline policies to 10,240 characters
		// (whitespace aside); leave room for kforge's own.
		if len(doc) > 7000 {
			t.Errorf("%s: %d characters", partition, len(doc))
		}
	}
	for _, bad := range []string{"", "aws-iso", "AWS"} {
		if _, err := ControlPlanePolicy(bad); err == nil {
			t.Errorf("ControlPlanePolicy(%q) succeeded", bad)
		}
	}
}

// TestPolicyConditions checks that the EBS CSI driver's documented
// conditions hold in the control-plane policy as a whole: no statement
// grants a volume, snapshot or tag change unconditionally on volumes or
// snapshots, or on "*" (which would void the conditions), and the
// conditions are those of the documented policy.
func TestPolicyConditions(t *testing.T) {
	doc, err := ControlPlanePolicy("aws")
	if err != nil {
		t.Fatal(err)
	}
	var p decodedPolicy
	if err := json.Unmarshal([]byte(doc), &p); err != nil {
		t.Fatal(err)
	}
	guarded := []string{
		"ec2:CreateVolume", "ec2:DeleteVolume", "ec2:ModifyVolume", "ec2:CopyVolumes",
		"ec2:CreateSnapshot", "ec2:DeleteSnapshot", "ec2:LockSnapshot",
		"ec2:CreateTags", "ec2:DeleteTags", "ec2:EnableFastSnapshotRestores",
	}
	conditionOf := map[string][]string{} // action -> the conditions it is granted under on volumes/snapshots
	for _, s := range p.Statement {
		for _, a := range s.Action {
			if !slices.Contains(guarded, a) && a != "ec2:AttachVolume" && a != "ec2:DetachVolume" {
				continue
			}
			for _, r := range s.Resource {
				switch {
				case r == "*":
					t.Errorf("statement %s grants %s on *", s.Sid, a)
				case strings.Contains(r, ":volume/") || strings.Contains(r, ":snapshot/"):
					if len(s.Condition) == 0 {
						t.Errorf("statement %s grants %s on %s without a condition", s.Sid, a, r)
					}
					b, _ := json.Marshal(s.Condition)
					conditionOf[a] = append(conditionOf[a], string(b))
				}
			}
		}
	}
	has := func(action, fragment string) bool {
		for _, c := range conditionOf[action] {
			if strings.Contains(c, fragment) {
				return true
			}
		}
		return false
	}
	for _, c := range []struct{ action, fragment string }{
		{"ec2:CreateTags", `"ec2:CreateAction":["CreateVolume","CreateSnapshot","CopyVolumes"]`},
		{"ec2:CreateVolume", `"aws:RequestTag/ebs.csi.aws.com/cluster":["true"]`},
		{"ec2:DeleteVolume", `"ec2:ResourceTag/ebs.csi.aws.com/cluster":["true"]`},
		{"ec2:DeleteVolume", `"ec2:ResourceTag/kubernetes.io/created-for/pvc/name":["*"]`},
		{"ec2:DeleteTags", `"ForAllValues:StringNotEquals":{"aws:TagKeys":["ebs.csi.aws.com/cluster","ebs.csi.aws.com/cluster-name","kubernetes.io/created-for/pvc/name"]}`},
		{"ec2:DeleteSnapshot", `"ec2:ResourceTag/ebs.csi.aws.com/cluster":["true"]`},
	} {
		if !has(c.action, c.fragment) {
			t.Errorf("%s is not granted under %s (granted under %v)", c.action, c.fragment, conditionOf[c.action])
		}
	}
	for _, a := range []string{"ec2:DeleteVolume", "ec2:CreateTags"} {
		for _, c := range conditionOf[a] {
			if !strings.Contains(c, "ebs.csi.aws.com/cluster") && !strings.Contains(c, "kubernetes.io/created-for/pvc/name") && !strings.Contains(c, "ec2:CreateAction") {
				t.Errorf("%s granted under an undocumented condition %s", a, c)
			}
		}
	}
}
