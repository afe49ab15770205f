package bootstrap

import (
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Flannel's objects, as the cni recipe waits for them.
const (
	FlannelNamespace = "kube-flannel"
	FlannelDaemonSet = "kube-flannel-ds"
)

// FlannelParams configures the pod network of a kubeadm cluster.
type FlannelParams struct {
	// PodSubnet is the cluster's pod network (kubeadm's podSubnet).
	PodSubnet string
	// Image runs flanneld; CNIPluginImage carries the flannel CNI plugin,
	// copied to the nodes' /opt/cni/bin.
	Image, CNIPluginImage string
}

// flannelNetConf is Flannel's net-conf.json: the pod network, and VXLAN
// between nodes (UDP 8472, which the security groups open among nodes).
type flannelNetConf struct {
	Network        string         `json:"Network"`
	EnableNFTables bool           `json:"EnableNFTables"`
	Backend        flannelBackend `json:"Backend"`
}

type flannelBackend struct {
	Type string `json:"Type"`
}

// cniConfList is the CNI configuration Flannel installs on each node:
// the flannel plugin (which delegates to bridge and host-local) and
// portmap for hostPort.
type cniConfList struct {
	Name       string      `json:"name"`
	CNIVersion string      `json:"cniVersion"`
	Plugins    []cniPlugin `json:"plugins"`
}

type cniPlugin struct {
	Type         string          `json:"type"`
	Delegate     map[string]bool `json:"delegate,omitempty"`
	Capabilities map[string]bool `json:"capabilities,omitempty"`
}

// FlannelManifest returns Flannel's objects as one YAML stream, built from
// the Kubernetes API types: its namespace, service account and RBAC, its
// configuration, and the DaemonSet that runs flanneld on every node
// (host network, with init containers that install the CNI plugin and
// configuration on the node).
func FlannelManifest(p FlannelParams) ([]byte, error) {
	for _, ref := range []string{p.Image, p.CNIPluginImage} {
		if err := validImageRef(ref); err != nil {
			return nil, fmt.Errorf("flannel manifest: %w", err)
		}
	}
	netConf, err := json.MarshalIndent(flannelNetConf{Network: p.PodSubnet, Backend: flannelBackend{Type: "vxlan"}}, "", "  ")
	if err != nil {
		return nil, err
	}
	cniConf, err := json.MarshalIndent(cniConfList{
		Name: "cbr0", CNIVersion: "0.3.1",
		Plugins: []cniPlugin{
			{Type: "flannel", Delegate: map[string]bool{"hairpinMode": true, "isDefaultGateway": true}},
			{Type: "portmap", Capabilities: map[string]bool{"portMappings": true}},
		},
	}, "", "  ")
	if err != nil {
		return nil, err
	}
	labels := map[string]string{"app": "flannel", "k8s-app": "flannel", "tier": "node"}
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: FlannelNamespace, Labels: labels}
	}
	ns := &corev1.Namespace{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: FlannelNamespace, Labels: map[string]string{
			"k8s-app": "flannel", "pod-security.kubernetes.io/enforce": "privileged",
		}},
	}
	sa := &corev1.ServiceAccount{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}, ObjectMeta: meta("flannel")}
	role := &rbacv1.ClusterRole{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"},
		ObjectMeta: metav1.ObjectMeta{Name: "flannel", Labels: labels},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
			{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"patch"}},
		},
	}
	binding := &rbacv1.ClusterRoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: "flannel", Labels: labels},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "flannel"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "flannel", Namespace: FlannelNamespace}},
	}
	cm := &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: meta("kube-flannel-cfg"),
		Data:       map[string]string{"cni-conf.json": string(cniConf) + "\n", "net-conf.json": string(netConf) + "\n"},
	}
	hostPath := func(name, path string, t corev1.HostPathType) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path, Type: &t}}}
	}
	fieldEnv := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	cfgMount := corev1.VolumeMount{Name: "flannel-cfg", MountPath: "/etc/kube-flannel/"}
	ds := &appsv1.DaemonSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"},
		ObjectMeta: meta(FlannelDaemonSet),
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "flannel"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					HostNetwork:        true,
					PriorityClassName:  "system-node-critical",
					ServiceAccountName: "flannel",
					NodeSelector:       map[string]string{"kubernetes.io/os": "linux"},
					Tolerations:        []corev1.Toleration{{Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
					InitContainers: []corev1.Container{
						{
							Name: "install-cni-plugin", Image: p.CNIPluginImage, ImagePullPolicy: corev1.PullIfNotPresent,
							Command:      []string{"cp"},
							Args:         []string{"-f", "/flannel", "/opt/cni/bin/flannel"},
							VolumeMounts: []corev1.VolumeMount{{Name: "cni-plugin", MountPath: "/opt/cni/bin"}},
						},
						{
							Name: "install-cni", Image: p.Image, ImagePullPolicy: corev1.PullIfNotPresent,
							Command:      []string{"cp"},
							Args:         []string{"-f", "/etc/kube-flannel/cni-conf.json", "/etc/cni/net.d/10-flannel.conflist"},
							VolumeMounts: []corev1.VolumeMount{{Name: "cni", MountPath: "/etc/cni/net.d"}, cfgMount},
						},
					},
					Containers: []corev1.Container{{
						Name: "kube-flannel", Image: p.Image, ImagePullPolicy: corev1.PullIfNotPresent,
						Command: []string{"/opt/bin/flanneld"},
						Args:    []string{"--ip-masq", "--kube-subnet-mgr"},
						Env: []corev1.EnvVar{
							fieldEnv("POD_NAME", "metadata.name"),
							fieldEnv("POD_NAMESPACE", "metadata.namespace"),
							{Name: "EVENT_QUEUE_DEPTH", Value: "5000"},
						},
						SecurityContext: &corev1.SecurityContext{
							Privileged:   new(bool),
							Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}},
						},
						VolumeMounts: []corev1.VolumeMount{
							{Name: "run", MountPath: "/run/flannel"},
							cfgMount,
							{Name: "xtables-lock", MountPath: "/run/xtables.lock"},
						},
					}},
					Volumes: []corev1.Volume{
						hostPath("run", "/run/flannel", corev1.HostPathUnset),
						hostPath("cni-plugin", "/opt/cni/bin", corev1.HostPathUnset),
						hostPath("cni", "/etc/cni/net.d", corev1.HostPathUnset),
						{Name: "flannel-cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: "kube-flannel-cfg"},
						}}},
						hostPath("xtables-lock", "/run/xtables.lock", corev1.HostPathFileOrCreate),
					},
				},
			},
		},
	}
	var out []byte
	for i, o := range []any{ns, sa, role, binding, cm, ds} {
		b, err := yaml.Marshal(o)
		if err != nil {
			return nil, fmt.Errorf("flannel manifest: %w", err)
		}
		if i > 0 {
			out = append(out, "---\n"...)
		}
		out = append(out, b...)
	}
	return out, nil
}
