package cloudint

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Names of the EBS CSI driver's objects, as upstream's
// deploy/kubernetes/base names them.
const (
	ebsControllerSA      = "ebs-csi-controller-sa"
	ebsNodeSA            = "ebs-csi-node-sa"
	ebsProvisionerRole   = "ebs-external-provisioner-role"
	ebsAttacherRole      = "ebs-external-attacher-role"
	ebsResizerRole       = "ebs-external-resizer-role"
	ebsNodeRole          = "ebs-csi-node-role"
	ebsProvisionerRB     = "ebs-csi-provisioner-binding"
	ebsAttacherRB        = "ebs-csi-attacher-binding"
	ebsResizerRB         = "ebs-csi-resizer-binding"
	ebsNodeRB            = "ebs-csi-node-getter-binding"
	ebsLeasesRole        = "ebs-csi-leases-role"
	ebsLeasesRoleBinding = "ebs-csi-leases-rolebinding"
	ebsAppName           = "aws-ebs-csi-driver"

	// The controller's sidecars reach the driver on a socket in a shared
	// emptyDir; the node service's socket is in the kubelet's plugin
	// directory, where the kubelet finds it through the registrar.
	controllerSocketDir = "/var/lib/csi/sockets/pluginproxy/"
	controllerSocket    = controllerSocketDir + "csi.sock"
	nodePluginDir       = "/var/lib/kubelet/plugins/" + EBSDriverName + "/"
	healthzPort         = 9808
	registrarHealthPort = 9809
)

// ebsObjects are the EBS CSI driver's objects: service accounts, the RBAC
// of the provisioner, attacher and resizer sidecars and of the node
// service, the leases the sidecars elect leaders with, the CSIDriver, the
// controller Deployment (with its disruption budget), the node DaemonSet,
// and the default StorageClass.
func ebsObjects(clusterName string, img Images) []any {
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: Namespace, Labels: map[string]string{"app.kubernetes.io/name": ebsAppName}}
	}
	clusterMeta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/name": ebsAppName}}
	}
	yes := true
	controllerSA := &corev1.ServiceAccount{TypeMeta: typeServiceAccount, ObjectMeta: meta(ebsControllerSA), AutomountServiceAccountToken: &yes}
	nodeSA := &corev1.ServiceAccount{TypeMeta: typeServiceAccount, ObjectMeta: meta(ebsNodeSA), AutomountServiceAccountToken: &yes}

	provisioner := &rbacv1.ClusterRole{TypeMeta: typeClusterRole, ObjectMeta: clusterMeta(ebsProvisionerRole), Rules: []rbacv1.PolicyRule{
		rule("", []string{"persistentvolumes"}, "get", "list", "watch", "create", "patch", "delete"),
		rule("", []string{"persistentvolumeclaims"}, "get", "list", "watch", "update"),
		rule("storage.k8s.io", []string{"storageclasses"}, "get", "list", "watch"),
		rule("", []string{"events"}, "list", "watch", "create", "update", "patch"),
		rule("snapshot.storage.k8s.io", []string{"volumesnapshots"}, "get", "list", "watch", "update"),
		rule("snapshot.storage.k8s.io", []string{"volumesnapshotcontents"}, "get", "list"),
		rule("storage.k8s.io", []string{"csinodes"}, "get", "list", "watch"),
		rule("", []string{"nodes"}, "get", "list", "watch"),
		rule("storage.k8s.io", []string{"volumeattachments"}, "get", "list", "watch"),
		rule("storage.k8s.io", []string{"volumeattributesclasses"}, "get"),
	}}
	attacher := &rbacv1.ClusterRole{TypeMeta: typeClusterRole, ObjectMeta: clusterMeta(ebsAttacherRole), Rules: []rbacv1.PolicyRule{
		rule("", []string{"persistentvolumes"}, "get", "list", "watch", "patch"),
		rule("storage.k8s.io", []string{"csinodes"}, "get", "list", "watch"),
		rule("storage.k8s.io", []string{"volumeattachments"}, "get", "list", "watch", "patch"),
		rule("storage.k8s.io", []string{"volumeattachments/status"}, "patch"),
	}}
	resizer := &rbacv1.ClusterRole{TypeMeta: typeClusterRole, ObjectMeta: clusterMeta(ebsResizerRole), Rules: []rbacv1.PolicyRule{
		rule("", []string{"persistentvolumes"}, "get", "list", "watch", "patch"),
		rule("", []string{"persistentvolumeclaims"}, "get", "list", "watch"),
		rule("", []string{"pods"}, "get", "list", "watch"),
		rule("", []string{"persistentvolumeclaims/status"}, "patch"),
		rule("", []string{"events"}, "list", "watch", "create", "update", "patch"),
		rule("storage.k8s.io", []string{"volumeattributesclasses"}, "get", "list", "watch"),
	}}
	// The node service reads its Node (metadata fallback, and the
	// pre-stop hook's wait for volume detachment), removes the
	// ebs.csi.aws.com/agent-not-ready startup taint, and reads its CSINode.
	node := &rbacv1.ClusterRole{TypeMeta: typeClusterRole, ObjectMeta: clusterMeta(ebsNodeRole), Rules: []rbacv1.PolicyRule{
		rule("storage.k8s.io", []string{"volumeattachments"}, "get", "list", "watch"),
		rule("", []string{"nodes"}, "get"),
		rule("", []string{"nodes"}, "patch", "list", "watch"),
		rule("storage.k8s.io", []string{"csinodes"}, "get"),
	}}
	clusterBinding := func(name, role, sa string) *rbacv1.ClusterRoleBinding {
		return &rbacv1.ClusterRoleBinding{
			TypeMeta: typeClusterRoleBinding, ObjectMeta: clusterMeta(name),
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects: subjects(sa),
		}
	}
	leases := &rbacv1.Role{TypeMeta: typeRole, ObjectMeta: meta(ebsLeasesRole), Rules: []rbacv1.PolicyRule{
		rule("coordination.k8s.io", []string{"leases"}, "get", "watch", "list", "delete", "update", "create"),
	}}
	leasesBinding := &rbacv1.RoleBinding{
		TypeMeta: typeRoleBinding, ObjectMeta: meta(ebsLeasesRoleBinding),
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: ebsLeasesRole},
		Subjects: subjects(ebsControllerSA),
	}
	no := false
	fsGroupPolicy := storagev1.FileFSGroupPolicy
	driver := &storagev1.CSIDriver{
		TypeMeta:   metav1.TypeMeta{APIVersion: "storage.k8s.io/v1", Kind: "CSIDriver"},
		ObjectMeta: clusterMeta(EBSDriverName),
		Spec: storagev1.CSIDriverSpec{
			AttachRequired: &yes,
			PodInfoOnMount: &no,
			FSGroupPolicy:  &fsGroupPolicy,
			// Upstream also sets nodeAllocatableUpdatePeriodSeconds, a
			// field Kubernetes 1.32 does not know (kubectl apply's strict
			// validation would reject the object there), so it is left
			// out.
		},
	}
	pdbMax := intstr.FromInt32(1)
	pdb := &policyv1.PodDisruptionBudget{
		TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: meta(EBSController),
		Spec: policyv1.PodDisruptionBudgetSpec{
			Selector:       &metav1.LabelSelector{MatchLabels: ebsSelector(EBSController)},
			MaxUnavailable: &pdbMax,
		},
	}
	return []any{
		controllerSA, nodeSA,
		provisioner, attacher, resizer, node,
		clusterBinding(ebsProvisionerRB, ebsProvisionerRole, ebsControllerSA),
		clusterBinding(ebsAttacherRB, ebsAttacherRole, ebsControllerSA),
		clusterBinding(ebsResizerRB, ebsResizerRole, ebsControllerSA),
		clusterBinding(ebsNodeRB, ebsNodeRole, ebsNodeSA),
		leases, leasesBinding,
		driver,
		ebsControllerDeployment(clusterName, img), pdb,
		ebsNodeDaemonSet(img),
		defaultStorageClass(),
	}
}

// ebsSelector is the selector labels of the controller or node pods.
func ebsSelector(app string) map[string]string {
	return map[string]string{"app": app, "app.kubernetes.io/name": ebsAppName}
}

// requests is a container's resource requests (and memory limit), as
// upstream sizes them.
func requests(cpu, memory, memoryLimit string) corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(memory)},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(memoryLimit)},
	}
}

// restricted is the security context of the containers that need no
// privilege.
func restricted() *corev1.SecurityContext {
	no, yes := false, true
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: &no,
		ReadOnlyRootFilesystem:   &yes,
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// healthz is an HTTP probe of the driver's /healthz, which the
// liveness-probe sidecar serves on the pod's port 9808 by calling the
// driver's Probe over the CSI socket.
func healthz(port string, initialDelay, timeout, period, failures int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString(port)}},
		InitialDelaySeconds: initialDelay,
		TimeoutSeconds:      timeout,
		PeriodSeconds:       period,
		FailureThreshold:    failures,
	}
}

// nodeNameEnv gives the driver its node's name (CSI_NODE_NAME), which the
// driver's Kubernetes metadata source reads the Node by when IMDS fails.
var nodeNameEnv = corev1.EnvVar{Name: "CSI_NODE_NAME", ValueFrom: &corev1.EnvVarSource{
	FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"},
}}

// ebsControllerDeployment runs the CSI controller service: the driver in
// controller mode (it calls EC2 to create, attach, modify and delete
// volumes, with the control-plane role's credentials from IMDS — the
// instances allow two IMDS hops so pods reach it) and the provisioner,
// attacher and resizer sidecars, which elect a leader among the two
// replicas.
//
// Placement: only on control planes, because only the control-plane role
// carries the EBS permissions (ControlPlanePolicy). It tolerates the
// control-plane taints, CriticalAddonsOnly and, for 300 s, NoExecute taints
// (as upstream, so a node's brief unreachability does not evict it at
// once). It does not tolerate the cloud provider's uninitialized taint nor
// node.kubernetes.io/not-ready: it runs on the pod network, which a node
// that is not ready lacks, and no pod needs a volume before the cloud
// controller manager has initialised the nodes, since workloads cannot be
// scheduled on uninitialised nodes either.
func ebsControllerDeployment(clusterName string, img Images) *appsv1.Deployment {
	replicas := int32(2)
	maxUnavailable := intstr.FromInt32(1)
	noExecuteSeconds := int64(300)
	uid, yes := int64(1000), true
	labels := ebsSelector(EBSController)
	socketMount := []corev1.VolumeMount{{Name: "socket-dir", MountPath: controllerSocketDir}}
	csiAddress := "--csi-address=" + controllerSocket
	return &appsv1.Deployment{
		TypeMeta:   typeDeployment,
		ObjectMeta: metav1.ObjectMeta{Name: EBSController, Namespace: Namespace, Labels: map[string]string{"app.kubernetes.io/name": ebsAppName}},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Strategy: appsv1.DeploymentStrategy{
				Type:          appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: &maxUnavailable},
			},
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector:       map[string]string{"kubernetes.io/os": "linux"},
					ServiceAccountName: ebsControllerSA,
					PriorityClassName:  "system-cluster-critical",
					Affinity: &corev1.Affinity{
						NodeAffinity: onControlPlanes().NodeAffinity,
						// The two replicas on different control planes.
						PodAntiAffinity: &corev1.PodAntiAffinity{
							PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
								Weight: 100,
								PodAffinityTerm: corev1.PodAffinityTerm{
									LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": EBSController}},
									TopologyKey:   "kubernetes.io/hostname",
								},
							}},
						},
					},
					Tolerations: append(controlPlaneTolerations(),
						corev1.Toleration{Key: "CriticalAddonsOnly", Operator: corev1.TolerationOpExists},
						corev1.Toleration{Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &noExecuteSeconds},
					),
					SecurityContext: &corev1.PodSecurityContext{RunAsUser: &uid, RunAsGroup: &uid, FSGroup: &uid, RunAsNonRoot: &yes},
					Containers: []corev1.Container{
						{
							Name: "ebs-plugin", Image: img.EBSDriver, ImagePullPolicy: corev1.PullIfNotPresent,
							Args: []string{
								"controller",
								"--endpoint=unix://" + controllerSocket,
								// Volumes get kubernetes.io/cluster/<name>=owned
								// (and ebs.csi.aws.com/cluster-name), which
								// kforge's delete sweeps.
								"--k8s-tag-cluster-id=" + clusterName,
								"--batching=true",
								"--user-agent-extra=kforge",
								"--logging-format=text",
								"--v=2",
							},
							Env:                      []corev1.EnvVar{nodeNameEnv},
							VolumeMounts:             socketMount,
							Ports:                    []corev1.ContainerPort{{Name: "healthz", ContainerPort: healthzPort, Protocol: corev1.ProtocolTCP}},
							LivenessProbe:            healthz("healthz", 10, 60, 10, 10),
							ReadinessProbe:           healthz("healthz", 10, 60, 10, 5),
							Resources:                requests("10m", "40Mi", "256Mi"),
							SecurityContext:          restricted(),
							TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
						},
						{
							Name: "csi-provisioner", Image: img.Provisioner, ImagePullPolicy: corev1.PullIfNotPresent,
							Args: []string{
								"--timeout=60s",
								csiAddress,
								"--v=2",
								"--feature-gates=Topology=true",
								"--extra-create-metadata",
								"--leader-election=true",
								"--default-fstype=ext4",
							},
							VolumeMounts:             socketMount,
							Resources:                requests("10m", "40Mi", "256Mi"),
							SecurityContext:          restricted(),
							TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
						},
						{
							Name: "csi-attacher", Image: img.Attacher, ImagePullPolicy: corev1.PullIfNotPresent,
							Args: []string{
								"--timeout=6m",
								csiAddress,
								"--v=2",
								"--leader-election=true",
							},
							VolumeMounts:             socketMount,
							Resources:                requests("10m", "40Mi", "256Mi"),
							SecurityContext:          restricted(),
							TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
						},
						{
							Name: "csi-resizer", Image: img.Resizer, ImagePullPolicy: corev1.PullIfNotPresent,
							Args: []string{
								"--timeout=60s",
								csiAddress,
								"--v=2",
								// EBS volumes grow while in use.
								"--handle-volume-inuse-error=false",
								"--leader-election=true",
							},
							VolumeMounts:             socketMount,
							Resources:                requests("10m", "40Mi", "256Mi"),
							SecurityContext:          restricted(),
							TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
						},
						{
							Name: "liveness-probe", Image: img.LivenessProbe, ImagePullPolicy: corev1.PullIfNotPresent,
							Args:                     []string{"--csi-address=/csi/csi.sock", "--probe-timeout=60s"},
							VolumeMounts:             []corev1.VolumeMount{{Name: "socket-dir", MountPath: "/csi"}},
							Resources:                requests("10m", "32Mi", "32Mi"),
							SecurityContext:          restricted(),
							TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
						},
					},
					Volumes: []corev1.Volume{{Name: "socket-dir", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
				},
			},
		},
	}
}

// ebsNodeDaemonSet runs the CSI node service on every Linux node: the
// privileged driver in node mode, which formats and mounts the attached
// volumes (it needs /dev and the kubelet's directory with bidirectional
// mount propagation), the registrar that registers the driver's socket
// with the kubelet, and the liveness probe. It tolerates every taint, so
// that every node, control planes and nodes not yet initialised included,
// can mount volumes.
func ebsNodeDaemonSet(img Images) *appsv1.DaemonSet {
	labels := ebsSelector(EBSNode)
	maxUnavailable := intstr.FromString("10%")
	grace := int64(30)
	root, no, yes := int64(0), false, true
	bidirectional := corev1.MountPropagationBidirectional
	hostPath := func(name, path string, t corev1.HostPathType) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path, Type: &t}}}
	}
	pluginMount := corev1.VolumeMount{Name: "plugin-dir", MountPath: "/csi"}
	unprivileged := &corev1.SecurityContext{AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &yes}
	return &appsv1.DaemonSet{
		TypeMeta:   typeDaemonSet,
		ObjectMeta: metav1.ObjectMeta{Name: EBSNode, Namespace: Namespace, Labels: map[string]string{"app.kubernetes.io/name": ebsAppName}},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{
				Type:          appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: &maxUnavailable},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector:                  map[string]string{"kubernetes.io/os": "linux"},
					ServiceAccountName:            ebsNodeSA,
					PriorityClassName:             "system-node-critical",
					TerminationGracePeriodSeconds: &grace,
					Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					SecurityContext:               &corev1.PodSecurityContext{RunAsUser: &root, RunAsGroup: &root, FSGroup: &root, RunAsNonRoot: &no},
					Containers: []corev1.Container{
						{
							Name: "ebs-plugin", Image: img.EBSDriver, ImagePullPolicy: corev1.PullIfNotPresent,
							Args: []string{
								"node",
								"--endpoint=unix:/csi/csi.sock",
								"--csi-mount-point-prefix=/var/lib/kubelet/plugins/kubernetes.io/csi/" + EBSDriverName + "/",
								"--logging-format=text",
								"--v=2",
							},
							Env: []corev1.EnvVar{nodeNameEnv},
							VolumeMounts: []corev1.VolumeMount{
								{Name: "kubelet-dir", MountPath: "/var/lib/kubelet", MountPropagation: &bidirectional},
								pluginMount,
								{Name: "device-dir", MountPath: "/dev"},
							},
							Ports:          []corev1.ContainerPort{{Name: "healthz", ContainerPort: healthzPort, Protocol: corev1.ProtocolTCP}},
							LivenessProbe:  healthz("healthz", 10, 3, 10, 5),
							ReadinessProbe: healthz("healthz", 0, 3, 5, 3),
							Resources:      requests("10m", "40Mi", "256Mi"),
							SecurityContext: &corev1.SecurityContext{
								Privileged:             &yes,
								ReadOnlyRootFilesystem: &yes,
							},
							// Before the pod goes on a drained node, the
							// driver waits for the node's volumes to detach.
							Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
								Command: []string{"/bin/aws-ebs-csi-driver", "pre-stop-hook"},
							}}},
							TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
						},
						{
							Name: "node-driver-registrar", Image: img.NodeDriverRegistrar, ImagePullPolicy: corev1.PullIfNotPresent,
							Args: []string{
								"--csi-address=/csi/csi.sock",
								"--kubelet-registration-path=" + nodePluginDir + "csi.sock",
								"--http-endpoint=0.0.0.0:9809",
								"--v=2",
							},
							Ports: []corev1.ContainerPort{{Name: "healthz-ndr", ContainerPort: registrarHealthPort, Protocol: corev1.ProtocolTCP}},
							LivenessProbe: &corev1.Probe{
								ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("healthz-ndr")}},
								InitialDelaySeconds: 30,
								TimeoutSeconds:      15,
								PeriodSeconds:       90,
							},
							VolumeMounts: []corev1.VolumeMount{
								pluginMount,
								{Name: "registration-dir", MountPath: "/registration"},
								{Name: "probe-dir", MountPath: nodePluginDir},
							},
							Resources:                requests("10m", "32Mi", "32Mi"),
							SecurityContext:          unprivileged,
							TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
						},
						{
							Name: "liveness-probe", Image: img.LivenessProbe, ImagePullPolicy: corev1.PullIfNotPresent,
							Args:                     []string{"--csi-address=/csi/csi.sock"},
							VolumeMounts:             []corev1.VolumeMount{pluginMount},
							Resources:                requests("10m", "32Mi", "32Mi"),
							SecurityContext:          unprivileged,
							TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
						},
					},
					Volumes: []corev1.Volume{
						hostPath("kubelet-dir", "/var/lib/kubelet", corev1.HostPathDirectory),
						hostPath("plugin-dir", nodePluginDir, corev1.HostPathDirectoryOrCreate),
						hostPath("registration-dir", "/var/lib/kubelet/plugins_registry/", corev1.HostPathDirectory),
						hostPath("device-dir", "/dev", corev1.HostPathDirectory),
						{Name: "probe-dir", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
					},
				},
			},
		},
	}
}

// defaultStorageClass is the cluster's default StorageClass: encrypted gp3
// volumes (with the account's default EBS key) formatted ext4, created
// once a pod is scheduled so the volume is in that pod's zone, growable,
// and deleted with their claim.
func defaultStorageClass() *storagev1.StorageClass {
	yes := true
	reclaim := corev1.PersistentVolumeReclaimDelete
	binding := storagev1.VolumeBindingWaitForFirstConsumer
	return &storagev1.StorageClass{
		TypeMeta: metav1.TypeMeta{APIVersion: "storage.k8s.io/v1", Kind: "StorageClass"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        StorageClass,
			Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"},
		},
		Provisioner: EBSDriverName,
		Parameters: map[string]string{
			"type":                      "gp3",
			"encrypted":                 "true",
			"csi.storage.k8s.io/fstype": "ext4",
		},
		ReclaimPolicy:        &reclaim,
		AllowVolumeExpansion: &yes,
		VolumeBindingMode:    &binding,
	}
}
