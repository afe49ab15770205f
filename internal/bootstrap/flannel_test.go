package bootstrap

import (
	"bytes"
	"encoding/json"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// TestFlannelManifest decodes every object of the manifest strictly into
// its Kubernetes type and checks what the nodes depend on.
func TestFlannelManifest(t *testing.T) {
	p := testFlannel
	p.PodSubnet = "10.244.0.0/16"
	out, err := FlannelManifest(p)
	if err != nil {
		t.Fatal(err)
	}
	docs := bytes.Split(out, []byte("---\n"))
	kinds := []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet"}
	if len(docs) != len(kinds) {
		t.Fatalf("%d documents, want %d", len(docs), len(kinds))
	}
	var ds appsv1.DaemonSet
	var cm corev1.ConfigMap
	for i, doc := range docs {
		var target any
		switch kinds[i] {
		case "Namespace":
			target = &corev1.Namespace{}
		case "ServiceAccount":
			target = &corev1.ServiceAccount{}
		case "ClusterRole":
			target = &rbacv1.ClusterRole{}
		case "ClusterRoleBinding":
			target = &rbacv1.ClusterRoleBinding{}
		case "ConfigMap":
			target = &cm
		case "DaemonSet":
			target = &ds
		}
		if err := yaml.UnmarshalStrict(doc, target); err != nil {
			t.Fatalf("document %d (%s): %v", i, kinds[i], err)
		}
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil || meta.Kind != kinds[i] {
			t.Errorf("document %d is a %q, want %s", i, meta.Kind, kinds[i])
		}
	}
	if ds.Name != FlannelDaemonSet || ds.Namespace != FlannelNamespace || !ds.Spec.Template.Spec.HostNetwork {
		t.Errorf("daemonset %s/%s hostNetwork=%v", ds.Namespace, ds.Name, ds.Spec.Template.Spec.HostNetwork)
	}
	images := map[string]bool{}
	for _, c := range append(ds.Spec.Template.Spec.InitContainers, ds.Spec.Template.Spec.Containers...) {
		images[c.Image] = true
		if c.ImagePullPolicy != corev1.PullIfNotPresent {
			t.Errorf("container %s pulls %s; imported images must be used as they are", c.Name, c.ImagePullPolicy)
		}
	}
	if len(images) != 2 || !images[p.Image] || !images[p.CNIPluginImage] {
		t.Errorf("images = %v", images)
	}
	var net flannelNetConf
	if err := json.Unmarshal([]byte(cm.Data["net-conf.json"]), &net); err != nil || net.Network != p.PodSubnet || net.Backend.Type != "vxlan" {
		t.Errorf("net-conf.json = %q (%v)", cm.Data["net-conf.json"], err)
	}
	var conf cniConfList
	if err := json.Unmarshal([]byte(cm.Data["cni-conf.json"]), &conf); err != nil || len(conf.Plugins) != 2 || conf.Plugins[0].Type != "flannel" {
		t.Errorf("cni-conf.json = %q (%v)", cm.Data["cni-conf.json"], err)
	}
	if _, err := FlannelManifest(FlannelParams{PodSubnet: "10.244.0.0/16", Image: "", CNIPluginImage: p.CNIPluginImage}); err == nil {
		t.Errorf("a manifest without an image was accepted")
	}
}
