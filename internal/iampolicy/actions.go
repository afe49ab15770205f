package iampolicy

// Cluster types a permission serves (spec.TypeEKS and spec.TypeHA; the
// strings are repeated here so that this package stays a leaf).
const (
	typeEKS = "aws"
	typeHA  = "ha-aws"
)

// Permissions returns the table this package is built on: every IAM action
// kforge needs, for which cluster types, on which resources, and why. It
// is the single source of truth for `kforge policy`, for preflight's
// permission check, and for the test that compares the policy with the
// calls kforge makes.
//
// Each call makes a new slice, so callers may keep or change it.
func Permissions() []Permission {
	// Each permission gets its own slices: nothing is shared between
	// calls.
	both := func() []string { return []string{typeEKS, typeHA} }
	eksTyp := func() []string { return []string{typeEKS} }
	haTyp := func() []string { return []string{typeHA} }
	own := func() []Scope { return []Scope{ScopeOwnIdentity} }
	// tagged: a destructive action on what kforge made only (the
	// resource must carry kforge.io/cluster). Security groups and network
	// interfaces that Kubernetes left carry only the per-cluster key
	// kubernetes.io/cluster/<name>, which a policy for every cluster
	// cannot name: their deletes stay unscoped.
	tagged := func() []Scope { return []Scope{ScopeKforgeTagged} }
	// k8sMade: a delete of what Kubernetes made, on resources carrying one
	// of the tags its components set (KubernetesMadeTags).
	k8sMade := func() []Scope { return []Scope{ScopeKubernetesMade} }
	roles := func() []Scope { return []Scope{ScopeRole} }
	profiles := func() []Scope { return []Scope{ScopeInstanceProfile} }
	return []Permission{
		// Who the caller is: `kforge cred`, preflight. STS answers it for
		// every principal; it is listed so that the policy says everything.
		{Action: "sts:GetCallerIdentity", Types: both(), Why: "check credentials (cred, preflight)"},

		// Preflight: read the caller's own permissions. Simulation first,
		// else the policies of the user, of its groups, and of its
		// permissions boundary, evaluated locally.
		{Action: "iam:SimulatePrincipalPolicy", Types: both(), Scopes: own(), Why: "preflight: simulate the caller's permissions"},
		{Action: "iam:GetUser", Types: both(), Scopes: own(), Why: "preflight: the caller's permissions boundary"},
		{Action: "iam:ListAttachedUserPolicies", Types: both(), Scopes: own(), Why: "preflight: the caller's managed policies"},
		{Action: "iam:ListUserPolicies", Types: both(), Scopes: own(), Why: "preflight: the caller's inline policies"},
		{Action: "iam:GetUserPolicy", Types: both(), Scopes: own(), Why: "preflight: the caller's inline policies"},
		{Action: "iam:ListGroupsForUser", Types: both(), Scopes: own(), Why: "preflight: the caller's groups"},
		{Action: "iam:ListAttachedGroupPolicies", Types: both(), Scopes: own(), Why: "preflight: the managed policies of the caller's groups"},
		{Action: "iam:ListGroupPolicies", Types: both(), Scopes: own(), Why: "preflight: the inline policies of the caller's groups"},
		{Action: "iam:GetGroupPolicy", Types: both(), Scopes: own(), Why: "preflight: the inline policies of the caller's groups"},
		{Action: "iam:GetPolicy", Types: both(), Scopes: own(), Why: "preflight: the default version of a managed policy"},
		{Action: "iam:GetPolicyVersion", Types: both(), Scopes: own(), Why: "preflight: the document of a managed policy"},
		{Action: "iam:GetRolePolicy", Types: both(), Scopes: []Scope{ScopeRole, ScopeOwnIdentity}, Why: "read the inline policy of a role kforge made, to find drift; preflight, when kforge runs as a role: the role's inline policies (allowed only on the role named with `kforge policy --caller-role`)"},

		// Preflight: region, instance types, images, quotas.
		{Action: "ec2:DescribeRegions", Types: both(), Why: "preflight: is an opt-in region enabled in the account"},
		{Action: "ec2:DescribeAvailabilityZones", Types: both(), Why: "pick availability zones (network, preflight)"},
		{Action: "ec2:DescribeInstanceTypeOfferings", Types: both(), Why: "preflight: the instance types are offered in the zones"},
		{Action: "ec2:DescribeInstanceTypes", Types: both(), Why: "architecture and vCPUs of the instance types (ha-aws images, preflight quotas)"},
		{Action: "ec2:DescribeInstances", Types: both(), Why: "find and watch the cluster's VMs; preflight: vCPUs in use; what blocks a delete"},
		{Action: "servicequotas:GetServiceQuota", Types: both(), Why: "preflight: vCPU and VPC quotas"},
		{Action: "servicequotas:GetAWSDefaultServiceQuota", Types: both(), Why: "preflight: a quota's default when no applied value exists"},
		{Action: "eks:DescribeClusterVersions", Types: eksTyp(), Why: "preflight: the Kubernetes version is offered by EKS"},
		{Action: "ec2:DescribeImages", Types: haTyp(), Why: "find the Ubuntu image (ha-aws, preflight)"},

		// Network (shared by both types).
		{Action: "ec2:CreateVpc", Types: both(), TagOnCreate: true, Why: "create the VPC"},
		{Action: "ec2:DescribeVpcs", Types: both(), Why: "find the VPC; preflight: VPCs in use"},
		{Action: "ec2:DescribeVpcAttribute", Types: both(), Why: "check DNS hostnames and DNS support of a VPC"},
		{Action: "ec2:ModifyVpcAttribute", Types: both(), Why: "turn on DNS hostnames and DNS support of kforge's own VPC"},
		{Action: "ec2:DeleteVpc", Types: both(), Scopes: tagged(), Why: "delete kforge's own VPC"},
		{Action: "ec2:CreateInternetGateway", Types: both(), TagOnCreate: true, Why: "create the internet gateway"},
		{Action: "ec2:AttachInternetGateway", Types: both(), Why: "attach the internet gateway"},
		{Action: "ec2:DescribeInternetGateways", Types: both(), Why: "find the internet gateway; preflight: gateways in use"},
		{Action: "ec2:DetachInternetGateway", Types: both(), Scopes: tagged(), Why: "detach the internet gateway on delete"},
		{Action: "ec2:DeleteInternetGateway", Types: both(), Scopes: tagged(), Why: "delete the internet gateway"},
		{Action: "ec2:CreateRouteTable", Types: both(), TagOnCreate: true, Why: "create the route table"},
		{Action: "ec2:DescribeRouteTables", Types: both(), Why: "find the route table and its associations"},
		{Action: "ec2:CreateRoute", Types: both(), Why: "route 0.0.0.0/0 to the internet gateway"},
		{Action: "ec2:ReplaceRoute", Types: both(), Why: "repair a default route that points elsewhere"},
		{Action: "ec2:AssociateRouteTable", Types: both(), Why: "associate the route table with a subnet"},
		{Action: "ec2:ReplaceRouteTableAssociation", Types: both(), Why: "move a subnet to kforge's route table"},
		{Action: "ec2:DisassociateRouteTable", Types: both(), Why: "release the route table on delete"},
		{Action: "ec2:DeleteRouteTable", Types: both(), Scopes: tagged(), Why: "delete the route table"},
		{Action: "ec2:CreateSubnet", Types: both(), TagOnCreate: true, Why: "create the subnets"},
		{Action: "ec2:DescribeSubnets", Types: both(), Why: "find the subnets; check --subnet-ids; preflight: subnets in use"},
		{Action: "ec2:ModifySubnetAttribute", Types: both(), Why: "map public IPs on launch in public subnets"},
		{Action: "ec2:DeleteSubnet", Types: both(), Scopes: tagged(), Why: "delete the subnets"},
		{Action: "ec2:DescribeNatGateways", Types: both(), Why: "name what blocks the delete of a subnet or VPC"},
		{Action: "ec2:DescribeVpcEndpoints", Types: both(), Why: "name what blocks the delete of a subnet or VPC"},
		{Action: "ec2:DescribeVpnGateways", Types: both(), Why: "name what blocks the delete of a VPC"},

		// What Kubernetes made in AWS, removed before the network on delete.
		{Action: "ec2:DescribeNetworkInterfaces", Types: both(), Why: "find network interfaces Kubernetes left; name what blocks a delete"},
		{Action: "ec2:DeleteNetworkInterface", Types: both(), Why: "delete network interfaces Kubernetes left"},
		{Action: "ec2:DescribeSecurityGroups", Types: both(), Why: "find security groups (ha-aws's own, and those Kubernetes left)"},
		{Action: "ec2:RevokeSecurityGroupIngress", Types: both(), Why: "revoke rules that reference groups to delete; ha-aws: rule drift"},
		{Action: "ec2:RevokeSecurityGroupEgress", Types: both(), Why: "revoke egress rules that reference groups Kubernetes left"},
		{Action: "ec2:DeleteSecurityGroup", Types: both(), Why: "delete security groups (ha-aws's own, and those Kubernetes left)"},
		{Action: "ec2:DescribeVolumes", Types: both(), Why: "find EBS volumes Kubernetes left"},
		{Action: "ec2:DeleteVolume", Types: both(), Scopes: k8sMade(), Why: "delete EBS volumes Kubernetes left"},
		{Action: "elasticloadbalancing:DescribeLoadBalancers", Types: both(), Why: "find load balancers Kubernetes made"},
		{Action: "elasticloadbalancing:DescribeTags", Types: both(), Why: "tell which load balancers and target groups belong to the cluster"},
		{Action: "elasticloadbalancing:DeleteLoadBalancer", Types: both(), Scopes: k8sMade(), Why: "delete load balancers Kubernetes made"},
		{Action: "elasticloadbalancing:DescribeTargetGroups", Types: both(), Why: "find target groups Kubernetes made"},
		{Action: "elasticloadbalancing:DeleteTargetGroup", Types: both(), Scopes: k8sMade(), Why: "delete target groups Kubernetes made"},

		// ha-aws VMs.
		{Action: "ec2:CreateSecurityGroup", Types: haTyp(), TagOnCreate: true, Why: "one security group per VM role"},
		{Action: "ec2:AuthorizeSecurityGroupIngress", Types: haTyp(), TagOnCreate: true, Why: "the ingress rules of each role (tagged)"},
		{Action: "ec2:DescribeKeyPairs", Types: haTyp(), Why: "find the cluster's key pair"},
		{Action: "ec2:ImportKeyPair", Types: haTyp(), TagOnCreate: true, Why: "import the cluster's SSH key"},
		{Action: "ec2:DeleteKeyPair", Types: haTyp(), Scopes: tagged(), Why: "delete the key pair (or replace a stale one)"},
		{Action: "ec2:RunInstances", Types: haTyp(), TagOnCreate: true, Why: "launch the VMs"},
		{Action: "ec2:TerminateInstances", Types: haTyp(), Scopes: tagged(), Why: "terminate VMs on scale down and delete"},
		{Action: "ec2:StartInstances", Types: haTyp(), Why: "drift: start a VM that was stopped outside kforge"},
		{Action: "ec2:GetConsoleOutput", Types: haTyp(), Why: "show the end of a VM's console output when it does not answer SSH"},
		{Action: "ec2:ModifyInstanceAttribute", Types: haTyp(), Why: "drift: give a VM back its security group"},
		{Action: "ec2:DescribeIamInstanceProfileAssociations", Types: haTyp(), Why: "drift: find a VM's instance profile association"},
		{Action: "ec2:AssociateIamInstanceProfile", Types: haTyp(), Why: "drift: give a VM back its instance profile"},
		{Action: "ec2:ReplaceIamInstanceProfileAssociation", Types: haTyp(), Why: "drift: replace a VM's foreign instance profile with its own"},

		// IAM roles (both) and instance profiles (ha-aws), named kforge-*.
		{Action: "iam:GetRole", Types: both(), Scopes: []Scope{ScopeRole, ScopeOwnIdentity}, Why: "find a role and check whose it is; preflight as a role: its boundary"},
		{Action: "iam:CreateRole", Types: both(), Scopes: roles(), Why: "create the cluster's roles"},
		{Action: "iam:DeleteRole", Types: both(), Scopes: roles(), Why: "delete the cluster's roles"},
		{Action: "iam:AttachRolePolicy", Types: eksTyp(), Scopes: roles(), Why: "attach the EKS managed policies"},
		{Action: "iam:DetachRolePolicy", Types: eksTyp(), Scopes: roles(), Why: "detach the EKS managed policies on delete"},
		{Action: "iam:ListAttachedRolePolicies", Types: both(), Scopes: []Scope{ScopeRole, ScopeOwnIdentity}, Why: "list what to detach on delete; preflight as a role"},
		{Action: "iam:PutRolePolicy", Types: haTyp(), Scopes: roles(), Why: "the cloud provider's inline policy of the VMs"},
		{Action: "iam:ListRolePolicies", Types: both(), Scopes: []Scope{ScopeRole, ScopeOwnIdentity}, Why: "list inline policies to delete; preflight as a role"},
		{Action: "iam:DeleteRolePolicy", Types: haTyp(), Scopes: roles(), Why: "delete the inline policy on delete, or one a role should no longer carry"},
		{Action: "iam:ListInstanceProfilesForRole", Types: both(), Scopes: roles(), Why: "take a role out of its instance profiles before deleting it"},
		{Action: "iam:GetInstanceProfile", Types: both(), Scopes: profiles(), Why: "find an instance profile (delete looks for one for every role)"},
		{Action: "iam:CreateInstanceProfile", Types: haTyp(), Scopes: profiles(), Why: "the VMs' instance profiles"},
		{Action: "iam:AddRoleToInstanceProfile", Types: haTyp(), Scopes: profiles(), Why: "put the role in its instance profile"},
		{Action: "iam:RemoveRoleFromInstanceProfile", Types: haTyp(), Scopes: profiles(), Why: "take the role out of its instance profile on delete"},
		{Action: "iam:DeleteInstanceProfile", Types: haTyp(), Scopes: profiles(), Why: "delete the instance profiles"},

		// EKS.
		{Action: "eks:DescribeCluster", Types: eksTyp(), Why: "find the EKS cluster and wait for it"},
		{Action: "eks:CreateCluster", Types: eksTyp(), Why: "create the EKS cluster"},
		{Action: "eks:DeleteCluster", Types: eksTyp(), Scopes: tagged(), Why: "delete the EKS cluster"},
		{Action: "eks:DescribeNodegroup", Types: eksTyp(), Why: "find the node group and wait for it"},
		{Action: "eks:CreateNodegroup", Types: eksTyp(), Why: "create the managed node group"},
		{Action: "eks:UpdateNodegroupConfig", Types: eksTyp(), Why: "scale the node group"},
		{Action: "eks:DeleteNodegroup", Types: eksTyp(), Scopes: tagged(), Why: "delete the node group"},
		{Action: "eks:DescribeAddonVersions", Types: eksTyp(), Why: "the add-on versions EKS recommends for the cluster's Kubernetes version"},
		{Action: "eks:DescribeAddon", Types: eksTyp(), Why: "find the managed add-ons and wait for them"},
		{Action: "eks:CreateAddon", Types: eksTyp(), Why: "install the managed add-ons (vpc-cni, kube-proxy, coredns, aws-ebs-csi-driver)"},
		{Action: "eks:DeleteAddon", Types: eksTyp(), Scopes: tagged(), Why: "remove the managed add-ons before the cluster"},
		{Action: "eks:UpdateClusterVersion", Types: eksTyp(), Scopes: tagged(), Why: "upgrade: the EKS cluster to the next Kubernetes minor"},
		{Action: "eks:UpdateNodegroupVersion", Types: eksTyp(), Scopes: tagged(), Why: "upgrade: the node group to the cluster's Kubernetes version"},
		{Action: "eks:UpdateAddon", Types: eksTyp(), Scopes: tagged(), Why: "upgrade: the managed add-ons to the versions EKS recommends for the new Kubernetes version"},
		{Action: "eks:DescribeUpdate", Types: eksTyp(), Why: "upgrade: wait for an EKS update to end"},

		// What AWS checks although kforge never calls the action itself.
		{Action: "iam:PassRole", Types: both(), Scopes: []Scope{ScopePassRole},
			Implicit: "AWS checks it when CreateCluster and CreateNodegroup (aws) or RunInstances and AssociateIamInstanceProfile with an instance profile (ha-aws) hand a kforge-* role to the service"},
		{Action: "ec2:CreateTags", Types: eksTyp(), Scopes: []Scope{ScopeTagOnCreate},
			Implicit: "AWS checks it for the TagSpecifications of EC2 create calls (tag on create); the condition ec2:CreateAction limits it to those calls"},
		{Action: "ec2:CreateTags", Types: haTyp(), Scopes: []Scope{ScopeTagOnCreate, ScopeBatchNames},
			Why: "tag on create (the TagSpecifications of EC2 create calls, condition ec2:CreateAction); and name each VM of a batched launch after its slot (Name, kforge.io/slot), only on instances that carry kforge.io/batch"},
		{Action: "iam:TagRole", Types: both(), Scopes: roles(),
			Implicit: "AWS checks it for the Tags of CreateRole"},
		{Action: "iam:TagInstanceProfile", Types: haTyp(), Scopes: profiles(),
			Implicit: "AWS checks it for the Tags of CreateInstanceProfile"},
		{Action: "eks:TagResource", Types: eksTyp(),
			Implicit: "AWS checks it for the tags of CreateCluster, CreateNodegroup and CreateAddon (tag on create)"},
		{Action: "iam:CreateServiceLinkedRole", Types: eksTyp(), Scopes: []Scope{ScopeServiceLinkedRole},
			Implicit: "EKS creates its service-linked roles (AWSServiceRoleForAmazonEKS, AWSServiceRoleForAmazonEKSNodegroup) with the caller's permissions at the account's first cluster and node group"},
	}
}
