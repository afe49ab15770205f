package cloudint

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Names of the cloud controller manager's objects, as upstream's
// examples/existing-cluster/base names them.
const (
	ccmServiceAccount   = "cloud-controller-manager"
	ccmClusterRole      = "system:cloud-controller-manager"
	ccmAuthReaderRB     = "cloud-controller-manager:apiserver-authentication-reader"
	authReaderRole      = "extension-apiserver-authentication-reader"
	controlPlaneRoleKey = "node-role.kubernetes.io/control-plane"
	// uninitializedTaint is the taint the kubelet (--cloud-provider=
	// external) puts on a new node until the cloud controller manager has
	// initialised it (provider ID, addresses, zone labels).
	uninitializedTaint = "node.cloudprovider.kubernetes.io/uninitialized"
)

var (
	typeServiceAccount     = metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}
	typeClusterRole        = metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"}
	typeClusterRoleBinding = metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"}
	typeRole               = metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"}
	typeRoleBinding        = metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"}
	typeDaemonSet          = metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"}
	typeDeployment         = metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"}
)

// rule is one RBAC rule.
func rule(group string, resources []string, verbs ...string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{APIGroups: []string{group}, Resources: resources, Verbs: verbs}
}

// onControlPlanes is a required node affinity to nodes that carry the
// control-plane role label with any value: kubeadm sets it to "" and k3s
// to "true", so a nodeSelector (which matches one value) would miss one
// of them.
func onControlPlanes() *corev1.Affinity {
	return &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{
				{Key: controlPlaneRoleKey, Operator: corev1.NodeSelectorOpExists},
			}}},
		},
	}}
}

// controlPlaneTolerations tolerate the taints kubeadm (control-plane) and
// older or other installers (master) put on control planes.
func controlPlaneTolerations() []corev1.Toleration {
	return []corev1.Toleration{
		{Key: controlPlaneRoleKey, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
		{Key: "node-role.kubernetes.io/master", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	}
}

// subjects names a service account in Namespace as a binding's subject.
func subjects(sa string) []rbacv1.Subject {
	return []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: Namespace}}
}

// ccmObjects are the cloud controller manager's objects: its service
// account, its ClusterRole and binding (the rules of upstream's example
// plus the token and access reviews of its Helm chart, which delegated
// authentication and authorization of its secure port use), the
// RoleBinding that lets it read the API server's client CA for that
// authentication, and the DaemonSet that runs it on the control planes.
func ccmObjects(clusterName string, img Images) []any {
	labels := map[string]string{"k8s-app": CCMDaemonSet}
	sa := &corev1.ServiceAccount{TypeMeta: typeServiceAccount, ObjectMeta: metav1.ObjectMeta{Name: ccmServiceAccount, Namespace: Namespace}}
	role := &rbacv1.ClusterRole{
		TypeMeta:   typeClusterRole,
		ObjectMeta: metav1.ObjectMeta{Name: ccmClusterRole},
		Rules: []rbacv1.PolicyRule{
			rule("", []string{"events"}, "create", "patch", "update"),
			rule("", []string{"nodes"}, "*"),
			rule("", []string{"nodes/status"}, "patch"),
			rule("", []string{"services"}, "list", "patch", "update", "watch"),
			rule("", []string{"services/status"}, "list", "patch", "update", "watch"),
			// --use-service-account-credentials: the manager runs each
			// controller with a token of its own service account.
			rule("", []string{"serviceaccounts"}, "create", "get", "list", "watch"),
			rule("", []string{"persistentvolumes"}, "get", "list", "update", "watch"),
			rule("", []string{"endpoints"}, "create", "get", "list", "watch", "update"),
			rule("coordination.k8s.io", []string{"leases"}, "create", "get", "list", "watch", "update"),
			rule("", []string{"serviceaccounts/token"}, "create"),
			rule("authentication.k8s.io", []string{"tokenreviews"}, "create"),
			rule("authorization.k8s.io", []string{"subjectaccessreviews"}, "create"),
		},
	}
	binding := &rbacv1.ClusterRoleBinding{
		TypeMeta:   typeClusterRoleBinding,
		ObjectMeta: metav1.ObjectMeta{Name: ccmClusterRole},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: ccmClusterRole},
		Subjects:   subjects(ccmServiceAccount),
	}
	authReader := &rbacv1.RoleBinding{
		TypeMeta:   typeRoleBinding,
		ObjectMeta: metav1.ObjectMeta{Name: ccmAuthReaderRB, Namespace: Namespace},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: authReaderRole},
		Subjects:   subjects(ccmServiceAccount),
	}
	ds := &appsv1.DaemonSet{
		TypeMeta:   typeDaemonSet,
		ObjectMeta: metav1.ObjectMeta{Name: CCMDaemonSet, Namespace: Namespace, Labels: labels},
		Spec: appsv1.DaemonSetSpec{
			Selector:       &metav1.LabelSelector{MatchLabels: labels},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					// The manager initialises nodes, so it cannot wait for
					// the pod network: it runs on the host network and
					// resolves names (the EC2 and ELB endpoints) as the
					// host does, before cluster DNS runs.
					HostNetwork:        true,
					DNSPolicy:          corev1.DNSDefault,
					PriorityClassName:  "system-node-critical",
					ServiceAccountName: ccmServiceAccount,
					NodeSelector:       map[string]string{"kubernetes.io/os": "linux"},
					Affinity:           onControlPlanes(),
					// The manager removes the uninitialized taint, so it
					// must tolerate it, and not-ready: a node is not ready
					// until its pod network runs, which may itself wait
					// for initialisation.
					Tolerations: append([]corev1.Toleration{
						{Key: uninitializedTaint, Operator: corev1.TolerationOpEqual, Value: "true", Effect: corev1.TaintEffectNoSchedule},
						{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
					}, controlPlaneTolerations()...),
					Containers: []corev1.Container{{
						Name:            CCMDaemonSet,
						Image:           img.CCM,
						ImagePullPolicy: corev1.PullIfNotPresent,
						Args: []string{
							"--v=2",
							"--cloud-provider=aws",
							// Names the cluster's load balancers and routes.
							// The AWS cluster ID itself comes from the
							// kubernetes.io/cluster/<name> tag of the
							// instances kforge launches.
							"--cluster-name=" + clusterName,
							// One token per controller, with the bootstrap
							// roles of the Kubernetes controllers.
							"--use-service-account-credentials=true",
							// The pod network is Flannel (VXLAN), not VPC
							// routes, so the route controller stays off.
							"--configure-cloud-routes=false",
						},
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceCPU: resource.MustParse("200m"),
						}},
					}},
				},
			},
		},
	}
	return []any{sa, role, binding, authReader, ds}
}
