package cloudint

import (
	"bytes"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"sigs.k8s.io/yaml"
)

var testParams = Params{ClusterName: "prod-eu1", KubernetesVersion: "v1.34.2"}

// manifestKinds are the kinds of the manifest's documents, in order.
var manifestKinds = []string{
	// Cloud controller manager.
	"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "RoleBinding", "DaemonSet",
	// EBS CSI driver.
	"ServiceAccount", "ServiceAccount",
	"ClusterRole", "ClusterRole", "ClusterRole", "ClusterRole",
	"ClusterRoleBinding", "ClusterRoleBinding", "ClusterRoleBinding", "ClusterRoleBinding",
	"Role", "RoleBinding",
	"CSIDriver", "Deployment", "PodDisruptionBudget", "DaemonSet",
	"StorageClass",
}

// decodeManifest renders the manifest of p and decodes every document
// strictly into its Kubernetes type, checking the kinds and their order.
func decodeManifest(t *testing.T, p Params) []any {
	t.Helper()
	out, err := Manifest(p)
	if err != nil {
		t.Fatal(err)
	}
	docs := bytes.Split(out, []byte("---\n"))
	if len(docs) != len(manifestKinds) {
		t.Fatalf("%d documents, want %d", len(docs), len(manifestKinds))
	}
	var objs []any
	for i, doc := range docs {
		var target any
		switch manifestKinds[i] {
		case "ServiceAccount":
			target = &corev1.ServiceAccount{}
		case "ClusterRole":
			target = &rbacv1.ClusterRole{}
		case "ClusterRoleBinding":
			target = &rbacv1.ClusterRoleBinding{}
		case "Role":
			target = &rbacv1.Role{}
		case "RoleBinding":
			target = &rbacv1.RoleBinding{}
		case "DaemonSet":
			target = &appsv1.DaemonSet{}
		case "Deployment":
			target = &appsv1.Deployment{}
		case "PodDisruptionBudget":
			target = &policyv1.PodDisruptionBudget{}
		case "CSIDriver":
			target = &storagev1.CSIDriver{}
		case "StorageClass":
			target = &storagev1.StorageClass{}
		default:
			t.Fatalf("no type for kind %s", manifestKinds[i])
		}
		if err := yaml.UnmarshalStrict(doc, target); err != nil {
			t.Fatalf("document %d (%s): %v", i, manifestKinds[i], err)
		}
		var meta struct{ APIVersion, Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil || meta.Kind != manifestKinds[i] || meta.APIVersion == "" {
			t.Fatalf("document %d is a %q (%q), want %s", i, meta.Kind, meta.APIVersion, manifestKinds[i])
		}
		objs = append(objs, target)
	}
	return objs
}

// find returns the object of type T named name.
func find[T any](t *testing.T, objs []any, name string) T {
	t.Helper()
	for _, o := range objs {
		if v, ok := o.(T); ok {
			if m, ok := any(v).(interface{ GetName() string }); ok && m.GetName() == name {
				return v
			}
		}
	}
	var zero T
	t.Fatalf("no %T named %s", zero, name)
	return zero
}

// podSpecs returns the pod templates of the manifest's workloads.
func podSpecs(objs []any) map[string]corev1.PodSpec {
	out := map[string]corev1.PodSpec{}
	for _, o := range objs {
		switch o := o.(type) {
		case *appsv1.DaemonSet:
			out[o.Name] = o.Spec.Template.Spec
		case *appsv1.Deployment:
			out[o.Name] = o.Spec.Template.Spec
		}
	}
	return out
}

func sortedSet(s []string) []string {
	out := slices.Clone(s)
	sort.Strings(out)
	return slices.Compact(out)
}

// TestManifestImages checks that the manifest runs exactly the images
// ImagesFor lists, pulled only if not present (offline clusters import
// image tarballs), and that an image repository replaces every registry.
func TestManifestImages(t *testing.T) {
	for _, repo := range []string{"", "mirror.example.com:5000/kforge", "mirror.example.com/kforge/"} {
		p := testParams
		p.ImageRepository = repo
		img, err := ImagesFor(p.KubernetesVersion, repo)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for name, spec := range podSpecs(decodeManifest(t, p)) {
			for _, c := range append(spec.InitContainers, spec.Containers...) {
				got = append(got, c.Image)
				if c.ImagePullPolicy != corev1.PullIfNotPresent {
					t.Errorf("%s/%s pulls %q", name, c.Name, c.ImagePullPolicy)
				}
				if repo != "" && !strings.HasPrefix(c.Image, strings.TrimSuffix(repo, "/")+"/") {
					t.Errorf("%s/%s runs %s, not from %s", name, c.Name, c.Image, repo)
				}
				if strings.Contains(c.Image, "//") {
					t.Errorf("%s/%s runs %s", name, c.Name, c.Image)
				}
			}
		}
		want := sortedSet(append(img.ControlPlane(), img.Node()...))
		if g := sortedSet(got); !slices.Equal(g, want) {
			t.Errorf("repo %q: images %v, want %v", repo, g, want)
		}
	}
}

// TestImagesFor checks the pinned releases and the image repository
// rewriting, and that an unknown minor is refused.
func TestImagesFor(t *testing.T) {
	for version, ccm := range map[string]string{
		"v1.32.0": "registry.k8s.io/provider-aws/cloud-controller-manager:v1.32.8",
		"1.33.5":  "registry.k8s.io/provider-aws/cloud-controller-manager:v1.33.4",
		"v1.34.2": "registry.k8s.io/provider-aws/cloud-controller-manager:v1.34.4",
	} {
		img, err := ImagesFor(version, "")
		if err != nil || img.CCM != ccm {
			t.Errorf("ImagesFor(%s) CCM = %q (%v), want %s", version, img.CCM, err, ccm)
		}
	}
	img, err := ImagesFor("v1.34.2", "")
	if err != nil {
		t.Fatal(err)
	}
	want := Images{
		CCM:                 "registry.k8s.io/provider-aws/cloud-controller-manager:v1.34.4",
		EBSDriver:           "public.ecr.aws/ebs-csi-driver/aws-ebs-csi-driver:v1.63.1",
		Provisioner:         "registry.k8s.io/sig-storage/csi-provisioner:v6.3.0",
		Attacher:            "registry.k8s.io/sig-storage/csi-attacher:v4.12.0",
		Resizer:             "registry.k8s.io/sig-storage/csi-resizer:v2.2.1",
		LivenessProbe:       "registry.k8s.io/sig-storage/livenessprobe:v2.19.0",
		NodeDriverRegistrar: "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.17.0",
	}
	if img != want {
		t.Errorf("ImagesFor = %+v, want %+v", img, want)
	}
	if !slices.Contains(img.ControlPlane(), img.CCM) || slices.Contains(img.Node(), img.CCM) {
		t.Errorf("the CCM image is not a control-plane-only image: %v / %v", img.ControlPlane(), img.Node())
	}
	if slices.Contains(img.ControlPlane(), img.NodeDriverRegistrar) || !slices.Contains(img.Node(), img.NodeDriverRegistrar) {
		t.Errorf("the registrar is not a node image: %v / %v", img.ControlPlane(), img.Node())
	}
	mirrored, err := ImagesFor("v1.34.2", "registry.local/k")
	if err != nil {
		t.Fatal(err)
	}
	if mirrored.CCM != "registry.local/k/cloud-controller-manager:v1.34.4" ||
		mirrored.EBSDriver != "registry.local/k/aws-ebs-csi-driver:v1.63.1" ||
		mirrored.Provisioner != "registry.local/k/csi-provisioner:v6.3.0" {
		t.Errorf("mirrored images = %+v", mirrored)
	}
	for _, bad := range []string{"v1.20.0", "v1.31.4", "v1.35.0", "latest", "", "v2.0.0"} {
		if _, err := ImagesFor(bad, ""); err == nil {
			t.Errorf("ImagesFor(%q) succeeded", bad)
		}
	}
	if _, err := ImagesFor("v1.34.2", "Bad Repo"); err == nil {
		t.Errorf("an invalid repository was accepted")
	}
}

// TestManifestRejects checks the parameters Manifest refuses.
func TestManifestRejects(t *testing.T) {
	for _, p := range []Params{
		{ClusterName: "", KubernetesVersion: "v1.34.2"},
		{ClusterName: "a b", KubernetesVersion: "v1.34.2"},
		{ClusterName: "x,y=z", KubernetesVersion: "v1.34.2"},
		{ClusterName: "ok", KubernetesVersion: "v1.20.0"},
	} {
		if _, err := Manifest(p); err == nil {
			t.Errorf("Manifest(%+v) succeeded", p)
		}
	}
}

// requiresControlPlane reports whether a pod may run only on nodes with
// the control-plane role label, whatever its value.
func requiresControlPlane(spec corev1.PodSpec) bool {
	if spec.Affinity == nil || spec.Affinity.NodeAffinity == nil || spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return false
	}
	terms := spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	if len(terms) == 0 {
		return false
	}
	// Terms are ORed: every term must require the label.
	for _, term := range terms {
		ok := false
		for _, e := range term.MatchExpressions {
			if e.Key == "node-role.kubernetes.io/control-plane" && e.Operator == corev1.NodeSelectorOpExists {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	_, bySelector := spec.NodeSelector["node-role.kubernetes.io/control-plane"]
	return !bySelector // a selector value would miss kubeadm's "" or k3s's "true"
}

// tolerates reports whether a pod tolerates a taint, by the scheduler's
// rules for the Exists and Equal operators.
func tolerates(spec corev1.PodSpec, taint corev1.Taint) bool {
	for _, tol := range spec.Tolerations {
		if tol.Effect != "" && tol.Effect != taint.Effect || tol.Key != "" && tol.Key != taint.Key {
			continue
		}
		switch tol.Operator {
		case corev1.TolerationOpExists:
			return true
		case corev1.TolerationOpEqual, "":
			if tol.Value == taint.Value {
				return true
			}
		}
	}
	return false
}

// TestPlacementAndWiring checks where the components run, what they are
// told about the cluster, and the default StorageClass.
func TestPlacementAndWiring(t *testing.T) {
	objs := decodeManifest(t, testParams)
	specs := podSpecs(objs)
	uninitialized := corev1.Taint{Key: "node.cloudprovider.kubernetes.io/uninitialized", Value: "true", Effect: corev1.TaintEffectNoSchedule}
	controlPlane := corev1.Taint{Key: "node-role.kubernetes.io/control-plane", Effect: corev1.TaintEffectNoSchedule}

	ccm := specs[CCMDaemonSet]
	if !requiresControlPlane(ccm) || !ccm.HostNetwork || ccm.PriorityClassName != "system-node-critical" {
		t.Errorf("CCM: control planes only %v, hostNetwork %v, priority %q", requiresControlPlane(ccm), ccm.HostNetwork, ccm.PriorityClassName)
	}
	for _, taint := range []corev1.Taint{uninitialized, controlPlane,
		{Key: "node-role.kubernetes.io/master", Effect: corev1.TaintEffectNoSchedule},
		{Key: "node.kubernetes.io/not-ready", Effect: corev1.TaintEffectNoSchedule}} {
		if !tolerates(ccm, taint) {
			t.Errorf("CCM does not tolerate %s", taint.ToString())
		}
	}
	if len(ccm.Containers) != 1 || !slices.Contains(ccm.Containers[0].Args, "--cluster-name="+testParams.ClusterName) ||
		!slices.Contains(ccm.Containers[0].Args, "--cloud-provider=aws") ||
		!slices.Contains(ccm.Containers[0].Args, "--configure-cloud-routes=false") {
		t.Errorf("CCM args = %v", ccm.Containers[0].Args)
	}

	ctrl := specs[EBSController]
	if !requiresControlPlane(ctrl) || !tolerates(ctrl, controlPlane) || ctrl.PriorityClassName != "system-cluster-critical" {
		t.Errorf("EBS controller: control planes only %v, priority %q", requiresControlPlane(ctrl), ctrl.PriorityClassName)
	}
	if tolerates(ctrl, uninitialized) {
		t.Errorf("EBS controller tolerates the uninitialized taint")
	}
	dep := find[*appsv1.Deployment](t, objs, EBSController)
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 {
		t.Errorf("EBS controller replicas = %v", dep.Spec.Replicas)
	}
	args := map[string][]string{}
	for _, c := range ctrl.Containers {
		args[c.Name] = c.Args
	}
	if !slices.Contains(args["ebs-plugin"], "--k8s-tag-cluster-id="+testParams.ClusterName) || args["ebs-plugin"][0] != "controller" {
		t.Errorf("EBS controller args = %v", args["ebs-plugin"])
	}
	for _, want := range []string{"--feature-gates=Topology=true", "--extra-create-metadata", "--leader-election=true", "--default-fstype=ext4"} {
		if !slices.Contains(args["csi-provisioner"], want) {
			t.Errorf("csi-provisioner lacks %s: %v", want, args["csi-provisioner"])
		}
	}
	for _, sidecar := range []string{"csi-provisioner", "csi-attacher", "csi-resizer"} {
		if !slices.Contains(args[sidecar], "--leader-election=true") || !slices.Contains(args[sidecar], "--csi-address="+controllerSocket) {
			t.Errorf("%s args = %v", sidecar, args[sidecar])
		}
	}

	node := specs[EBSNode]
	if requiresControlPlane(node) || !tolerates(node, uninitialized) || !tolerates(node, corev1.Taint{Key: "anything", Effect: corev1.TaintEffectNoExecute}) {
		t.Errorf("EBS node service does not run on every node")
	}
	for _, c := range node.Containers {
		if c.Name != "ebs-plugin" {
			continue
		}
		if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
			t.Errorf("the node plugin is not privileged")
		}
		for _, m := range c.VolumeMounts {
			if m.MountPath == "/var/lib/kubelet" && (m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationBidirectional) {
				t.Errorf("the kubelet directory is not mounted bidirectionally")
			}
		}
	}

	driver := find[*storagev1.CSIDriver](t, objs, EBSDriverName)
	if driver.Spec.AttachRequired == nil || !*driver.Spec.AttachRequired || driver.Spec.FSGroupPolicy == nil || *driver.Spec.FSGroupPolicy != storagev1.FileFSGroupPolicy {
		t.Errorf("CSIDriver spec = %+v", driver.Spec)
	}

	sc := find[*storagev1.StorageClass](t, objs, StorageClass)
	if sc.Annotations["storageclass.kubernetes.io/is-default-class"] != "true" || sc.Provisioner != EBSDriverName ||
		sc.Parameters["type"] != "gp3" || sc.Parameters["encrypted"] != "true" ||
		sc.VolumeBindingMode == nil || *sc.VolumeBindingMode != storagev1.VolumeBindingWaitForFirstConsumer ||
		sc.AllowVolumeExpansion == nil || !*sc.AllowVolumeExpansion ||
		sc.ReclaimPolicy == nil || *sc.ReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
		t.Errorf("StorageClass = %+v", sc)
	}

	// Every service account a workload runs as exists, and every binding
	// names an existing role and service account.
	accounts := map[string]bool{}
	roles := map[string]bool{"Role/" + authReaderRole: true} // kube-apiserver's own
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.ServiceAccount:
			accounts[o.Name] = o.Namespace == Namespace
		case *rbacv1.ClusterRole:
			roles["ClusterRole/"+o.Name] = true
		case *rbacv1.Role:
			roles["Role/"+o.Name] = o.Namespace == Namespace
		}
	}
	for name, spec := range specs {
		if !accounts[spec.ServiceAccountName] {
			t.Errorf("%s runs as missing service account %q", name, spec.ServiceAccountName)
		}
	}
	for _, o := range objs {
		var ref rbacv1.RoleRef
		var subj []rbacv1.Subject
		switch o := o.(type) {
		case *rbacv1.ClusterRoleBinding:
			ref, subj = o.RoleRef, o.Subjects
		case *rbacv1.RoleBinding:
			ref, subj = o.RoleRef, o.Subjects
			if o.Namespace != Namespace {
				t.Errorf("RoleBinding %s in %q", o.Name, o.Namespace)
			}
		default:
			continue
		}
		if !roles[ref.Kind+"/"+ref.Name] {
			t.Errorf("binding to missing %s/%s", ref.Kind, ref.Name)
		}
		for _, s := range subj {
			if s.Kind != "ServiceAccount" || !accounts[s.Name] || s.Namespace != Namespace {
				t.Errorf("binding to %s %s/%s", s.Kind, s.Namespace, s.Name)
			}
		}
	}
}
