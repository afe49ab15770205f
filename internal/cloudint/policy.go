package cloudint

import (
	"encoding/json"
	"fmt"
	"sort"

	"github.com/kforge/kforge/internal/iampolicy"
)

// policyVersion is the IAM policy language version.
const policyVersion = "2012-10-17"

// partitions are the AWS partitions ARNs may name.
var partitions = map[string]bool{"aws": true, "aws-cn": true, "aws-us-gov": true}

// ccmControlPlaneActions are the actions of the control-plane policy of the
// cloud controller manager's docs/prerequisites.md, except ec2:CreateTags
// (see ccmStatements) and its volume actions: ec2:CreateVolume,
// ec2:ModifyVolume, ec2:AttachVolume, ec2:DetachVolume and
// ec2:DeleteVolume, which it grants on "*". Those date from the in-tree
// EBS volume plugin; the pinned releases make no such call (the EC2 volume
// calls in pkg/providers/v1 are in its test fakes only). The control-plane
// role still has them, from the EBS CSI statements, but with those
// statements' tag conditions, which granting them on "*" as well would
// void.
var ccmControlPlaneActions = []string{
	"autoscaling:DescribeAutoScalingGroups",
	"autoscaling:DescribeLaunchConfigurations",
	"autoscaling:DescribeTags",
	"ec2:DescribeInstances",
	"ec2:DescribeRegions",
	"ec2:DescribeRouteTables",
	"ec2:DescribeSecurityGroups",
	"ec2:DescribeSubnets",
	"ec2:DescribeVolumes",
	"ec2:DescribeAvailabilityZones",
	"ec2:CreateSecurityGroup",
	"ec2:ModifyInstanceAttribute",
	"ec2:AuthorizeSecurityGroupIngress",
	"ec2:CreateRoute",
	"ec2:DeleteRoute",
	"ec2:DeleteSecurityGroup",
	"ec2:RevokeSecurityGroupIngress",
	"ec2:DescribeVpcs",
	"ec2:DescribeInstanceTopology",
	"elasticloadbalancing:AddTags",
	"elasticloadbalancing:AttachLoadBalancerToSubnets",
	"elasticloadbalancing:ApplySecurityGroupsToLoadBalancer",
	"elasticloadbalancing:CreateLoadBalancer",
	"elasticloadbalancing:CreateLoadBalancerPolicy",
	"elasticloadbalancing:CreateLoadBalancerListeners",
	"elasticloadbalancing:ConfigureHealthCheck",
	"elasticloadbalancing:DeleteLoadBalancer",
	"elasticloadbalancing:DeleteLoadBalancerListeners",
	"elasticloadbalancing:DescribeLoadBalancers",
	"elasticloadbalancing:DescribeLoadBalancerAttributes",
	"elasticloadbalancing:DetachLoadBalancerFromSubnets",
	"elasticloadbalancing:DeregisterInstancesFromLoadBalancer",
	"elasticloadbalancing:ModifyLoadBalancerAttributes",
	"elasticloadbalancing:RegisterInstancesWithLoadBalancer",
	"elasticloadbalancing:SetLoadBalancerPoliciesForBackendServer",
	"elasticloadbalancing:CreateListener",
	"elasticloadbalancing:CreateTargetGroup",
	"elasticloadbalancing:DeleteListener",
	"elasticloadbalancing:DeleteTargetGroup",
	"elasticloadbalancing:DescribeListeners",
	"elasticloadbalancing:DescribeLoadBalancerPolicies",
	"elasticloadbalancing:DescribeTargetGroups",
	"elasticloadbalancing:DescribeTargetHealth",
	"elasticloadbalancing:ModifyListener",
	"elasticloadbalancing:ModifyTargetGroup",
	"elasticloadbalancing:RegisterTargets",
	"elasticloadbalancing:DeregisterTargets",
	"elasticloadbalancing:SetLoadBalancerPoliciesOfListener",
	"iam:CreateServiceLinkedRole",
	"kms:DescribeKey",
}

// ccmStatements are the cloud controller manager's control-plane
// statements. Its only ec2:CreateTags call tags the security groups it
// creates for load balancers (pkg/providers/v1 tags.go; the tagging
// controller, which tags instances, is off by default), so that action is
// granted on security groups only: on "*" it would void the EBS CSI
// statement that allows tagging volumes and snapshots only as they are
// created.
func ccmStatements(partition string) []iampolicy.Statement {
	return []iampolicy.Statement{
		{Sid: "CloudControllerManager", Effect: "Allow", Action: ccmControlPlaneActions, Resource: []string{"*"}},
		{
			Sid: "CloudControllerManagerTagSecurityGroups", Effect: "Allow",
			Action:   []string{"ec2:CreateTags"},
			Resource: []string{"arn:" + partition + ":ec2:*:*:security-group/*"},
		},
	}
}

// ebsStatements are the EBS CSI driver's documented example policy
// (docs/AmazonEBSCSIDriverPolicyV2.json, which docs/install.md names as
// the example policy at the pinned release), with its conditions: the
// driver creates volumes and snapshots only with the
// ebs.csi.aws.com/cluster=true tag, changes, attaches and deletes only
// volumes and snapshots that carry it (or, for volumes migrated from the
// in-tree plugin, kubernetes.io/created-for/pvc/name), tags only as it
// creates, and may not change its own marker tags afterwards.
func ebsStatements(partition string) []iampolicy.Statement {
	arn := func(resource string) string { return "arn:" + partition + ":ec2:*:*:" + resource }
	volume, volumeID, snapshot, instance := arn("volume/*"), arn("volume/vol-*"), arn("snapshot/*"), arn("instance/*")
	managed := map[string]map[string][]string{"StringEquals": {"ec2:ResourceTag/ebs.csi.aws.com/cluster": {"true"}}}
	requestManaged := map[string]map[string][]string{"StringEquals": {"aws:RequestTag/ebs.csi.aws.com/cluster": {"true"}}}
	migrated := map[string]map[string][]string{"StringLike": {"ec2:ResourceTag/kubernetes.io/created-for/pvc/name": {"*"}}}
	return []iampolicy.Statement{
		{
			Sid: "EBSCSIReadOnlyDescribeOperations", Effect: "Allow",
			Action: []string{
				"ec2:DescribeAvailabilityZones",
				"ec2:DescribeInstances",
				"ec2:DescribeInstanceTypes",
				"ec2:DescribeSnapshots",
				"ec2:DescribeVolumes",
				"ec2:DescribeVolumesModifications",
				"ec2:DescribeVolumeStatus",
			},
			Resource: []string{"*"},
		},
		{Sid: "EBSCSICreateAndCopyVolumesWithManagedTag", Effect: "Allow", Action: []string{"ec2:CreateVolume", "ec2:CopyVolumes"}, Resource: []string{volume}, Condition: requestManaged},
		{Sid: "EBSCSICopyManagedVolumes", Effect: "Allow", Action: []string{"ec2:CopyVolumes"}, Resource: []string{volumeID}, Condition: managed},
		{Sid: "EBSCSICopyCSIMigratedVolumes", Effect: "Allow", Action: []string{"ec2:CopyVolumes"}, Resource: []string{volumeID}, Condition: migrated},
		{Sid: "EBSCSICreateSnapshotsWithManagedTag", Effect: "Allow", Action: []string{"ec2:CreateSnapshot"}, Resource: []string{snapshot}, Condition: requestManaged},
		{Sid: "EBSCSICreateSnapshotsFromManagedVolumes", Effect: "Allow", Action: []string{"ec2:CreateSnapshot"}, Resource: []string{volume}, Condition: managed},
		{
			Sid: "EBSCSIManageManagedVolumes", Effect: "Allow",
			Action:   []string{"ec2:ModifyVolume", "ec2:AttachVolume", "ec2:DetachVolume", "ec2:DeleteVolume"},
			Resource: []string{volume}, Condition: managed,
		},
		{
			Sid: "EBSCSIManageCSIMigratedVolumes", Effect: "Allow",
			Action:   []string{"ec2:ModifyVolume", "ec2:AttachVolume", "ec2:DetachVolume", "ec2:DeleteVolume"},
			Resource: []string{volume}, Condition: migrated,
		},
		{
			Sid: "EBSCSICreateVolumesFromAndEnableFSROnManagedSnapshots", Effect: "Allow",
			Action:   []string{"ec2:CreateVolume", "ec2:EnableFastSnapshotRestores"},
			Resource: []string{snapshot}, Condition: managed,
		},
		{Sid: "EBSCSIAttachDetachVolumesToAnyInstance", Effect: "Allow", Action: []string{"ec2:AttachVolume", "ec2:DetachVolume"}, Resource: []string{instance}},
		{Sid: "EBSCSIDeleteAndLockManagedSnapshots", Effect: "Allow", Action: []string{"ec2:DeleteSnapshot", "ec2:LockSnapshot"}, Resource: []string{snapshot}, Condition: managed},
		{
			Sid: "EBSCSITagResourcesOnCreation", Effect: "Allow",
			Action:   []string{"ec2:CreateTags"},
			Resource: []string{volume, snapshot},
			Condition: map[string]map[string][]string{"StringEquals": {
				"ec2:CreateAction": {"CreateVolume", "CreateSnapshot", "CopyVolumes"},
			}},
		},
		{
			Sid: "EBSCSIModifyTagsOnManagedVolumes", Effect: "Allow",
			Action:   []string{"ec2:CreateTags", "ec2:DeleteTags"},
			Resource: []string{volume},
			Condition: map[string]map[string][]string{
				"StringEquals": {"ec2:ResourceTag/ebs.csi.aws.com/cluster": {"true"}},
				"Null":         {"aws:TagKeys": {"false"}},
				"ForAllValues:StringNotEquals": {"aws:TagKeys": {
					"ebs.csi.aws.com/cluster",
					"ebs.csi.aws.com/cluster-name",
					"kubernetes.io/created-for/pvc/name",
				}},
			},
		},
	}
}

// controlPlaneStatements are the control-plane role's statements: the
// cloud controller manager's and the EBS CSI driver's, whose controller
// runs on the control planes only.
func controlPlaneStatements(partition string) []iampolicy.Statement {
	return append(ccmStatements(partition), ebsStatements(partition)...)
}

// render renders statements as a policy document.
func render(statements []iampolicy.Statement) (string, error) {
	b, err := json.Marshal(iampolicy.Document{Version: policyVersion, Statement: statements})
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// checkPartition rejects a partition the policies cannot name.
func checkPartition(partition string) error {
	if !partitions[partition] {
		return fmt.Errorf("unknown AWS partition %q (want aws, aws-cn or aws-us-gov)", partition)
	}
	return nil
}

// ControlPlanePolicy is the inline IAM policy document (JSON) of the
// control-plane role: the cloud controller manager's control-plane policy
// and the EBS CSI driver's policy (the driver's controller service runs on
// the control planes only, with the role's credentials from IMDS).
// partition ("aws", "aws-cn" or "aws-us-gov") is the partition of the ARNs
// in resources.
//
// There is no policy for the workers' role: what runs on every node needs
// none. The EBS CSI node service calls no AWS API (it reads IMDS or its
// Node). The cloud controller manager's documented "Node Policy" is left
// out: its instance and region look-ups are what a kubelet of the in-tree
// AWS provider made, and its ECR reads what the kubelet's ECR image
// credential provider (docs/credential_provider.md there) makes; kforge's
// kubelets run with --cloud-provider=external and no credential provider.
func ControlPlanePolicy(partition string) (string, error) {
	if err := checkPartition(partition); err != nil {
		return "", err
	}
	return render(controlPlaneStatements(partition))
}

// ControlPlaneActions are the sorted, de-duplicated actions of
// ControlPlanePolicy, for preflight checks and for comparing with the
// documented policies.
func ControlPlaneActions() []string { return actionsOf(controlPlaneStatements("aws")) }

// actionsOf returns the sorted, de-duplicated actions of statements.
func actionsOf(statements []iampolicy.Statement) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range statements {
		for _, a := range s.Action {
			if !seen[a] {
				seen[a] = true
				out = append(out, a)
			}
		}
	}
	sort.Strings(out)
	return out
}
