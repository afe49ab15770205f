// Package cloudint is the AWS cloud integration of self-managed (ha-aws)
// clusters: the out-of-tree AWS cloud controller manager
// (kubernetes/cloud-provider-aws), which initialises the nodes of a
// cluster whose kubelets run with --cloud-provider=external and serves
// Services of type LoadBalancer, and the AWS EBS CSI driver
// (kubernetes-sigs/aws-ebs-csi-driver), which gives the cluster
// PersistentVolumes on EBS. Both are built here as Kubernetes objects from
// the Go API types (Manifest), together with the IAM policy that the
// control-plane role needs for them (ControlPlanePolicy). The workers' role
// needs none: nothing on a worker calls AWS.
//
// Versions, flags, RBAC rules and policies follow what the upstream
// projects document at the pinned releases; UPSTREAM.md in this directory
// names the file each fact was read from.
package cloudint

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// Names of the objects other packages wait for or refer to.
const (
	// Namespace holds every namespaced object of the manifest; the cloud
	// controller manager needs kube-system for its RoleBinding to
	// extension-apiserver-authentication-reader.
	Namespace = "kube-system"
	// CCMDaemonSet runs the cloud controller manager on the control
	// planes.
	CCMDaemonSet = "aws-cloud-controller-manager"
	// EBSController is the Deployment of the EBS CSI controller service
	// (the driver and its provisioner, attacher and resizer sidecars).
	EBSController = "ebs-csi-controller"
	// EBSNode is the DaemonSet of the EBS CSI node service, which mounts
	// volumes on every node.
	EBSNode = "ebs-csi-node"
	// EBSDriverName is the CSI driver's name, the provisioner of its
	// StorageClasses.
	EBSDriverName = "ebs.csi.aws.com"
	// StorageClass is the cluster's default StorageClass (gp3 EBS volumes).
	StorageClass = "gp3"
)

// Params configures the manifest.
type Params struct {
	// ClusterName is the kforge cluster name. The cloud controller
	// manager gets it as --cluster-name and the EBS CSI driver as
	// --k8s-tag-cluster-id, so that the volumes it creates carry
	// kubernetes.io/cluster/<name>=owned, which kforge's delete sweeps.
	ClusterName string
	// KubernetesVersion is the cluster's release, such as v1.34.2; its
	// minor selects the cloud controller manager release.
	KubernetesVersion string
	// ImageRepository, when set, replaces the upstream registries: every
	// image is taken from this repository under its last path element and
	// tag (repo/cloud-controller-manager:v1.34.4, repo/csi-provisioner:...),
	// for clusters that pull from a mirror or import image tarballs.
	ImageRepository string
}

// Upstream releases. The cloud controller manager is released per
// Kubernetes minor (its release-1.N branches); one EBS CSI driver release
// and the sidecar versions its own manifests use at that release serve
// every minor kforge supports.
var ccmReleases = map[string]string{
	"1.32": "v1.32.8",
	"1.33": "v1.33.4",
	"1.34": "v1.34.4",
}

// Upstream image repositories and versions; see UPSTREAM.md.
const (
	ccmRepository = "registry.k8s.io/provider-aws/cloud-controller-manager"

	ebsDriverRepository = "public.ecr.aws/ebs-csi-driver/aws-ebs-csi-driver"
	ebsDriverVersion    = "v1.63.1"

	sigStorage                 = "registry.k8s.io/sig-storage/"
	provisionerImage           = sigStorage + "csi-provisioner:v6.3.0"
	attacherImage              = sigStorage + "csi-attacher:v4.12.0"
	resizerImage               = sigStorage + "csi-resizer:v2.2.1"
	livenessProbeImage         = sigStorage + "livenessprobe:v2.19.0"
	nodeDriverRegistrarImage   = sigStorage + "csi-node-driver-registrar:v2.17.0"
	ebsDriverImage             = ebsDriverRepository + ":" + ebsDriverVersion
	ccmImageRepositoryAndColon = ccmRepository + ":"
)

// Images are the images the manifest runs.
type Images struct {
	// CCM is the AWS cloud controller manager.
	CCM string
	// EBSDriver is the EBS CSI driver, run by both the controller and the
	// node service.
	EBSDriver string
	// Provisioner, Attacher and Resizer are the CSI sidecars of the
	// controller service.
	Provisioner, Attacher, Resizer string
	// LivenessProbe serves the driver's /healthz in both services.
	LivenessProbe string
	// NodeDriverRegistrar registers the driver with each kubelet.
	NodeDriverRegistrar string
}

// ControlPlane returns the images only control planes run: the cloud
// controller manager, and the EBS CSI controller service (the driver, its
// sidecars and the liveness probe). Control planes are nodes too, so they
// need Node() as well.
func (i Images) ControlPlane() []string {
	return []string{i.CCM, i.EBSDriver, i.Provisioner, i.Attacher, i.Resizer, i.LivenessProbe}
}

// Node returns the images every node runs: the EBS CSI node service (the
// driver, the node driver registrar and the liveness probe).
func (i Images) Node() []string {
	return []string{i.EBSDriver, i.NodeDriverRegistrar, i.LivenessProbe}
}

var minorRE = regexp.MustCompile(`^v?(1\.[0-9]+)(\.[0-9]+)?([-+].*)?$`)

// minorOf returns the "1.N" of a Kubernetes release.
func minorOf(version string) (string, error) {
	m := minorRE.FindStringSubmatch(version)
	if m == nil {
		return "", fmt.Errorf("kubernetes version %q is not a release such as v1.34.2", version)
	}
	return m[1], nil
}

var repositoryRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._:/-]*[a-z0-9])?$`)

// ImagesFor returns the images for a Kubernetes release, from the upstream
// registries or, with repo set, from repo (each image under its last path
// element and tag). It fails for a minor it has no cloud controller
// manager release for.
func ImagesFor(kubernetesVersion, repo string) (Images, error) {
	minor, err := minorOf(kubernetesVersion)
	if err != nil {
		return Images{}, err
	}
	ccm, ok := ccmReleases[minor]
	if !ok {
		return Images{}, fmt.Errorf("no AWS cloud controller manager release is pinned for Kubernetes %s (known: %s)", minor, strings.Join(knownMinors(), ", "))
	}
	img := Images{
		CCM:                 ccmImageRepositoryAndColon + ccm,
		EBSDriver:           ebsDriverImage,
		Provisioner:         provisionerImage,
		Attacher:            attacherImage,
		Resizer:             resizerImage,
		LivenessProbe:       livenessProbeImage,
		NodeDriverRegistrar: nodeDriverRegistrarImage,
	}
	if repo == "" {
		return img, nil
	}
	repo = strings.TrimSuffix(repo, "/")
	if !repositoryRE.MatchString(repo) {
		return Images{}, fmt.Errorf("image repository %q is not valid", repo)
	}
	for _, p := range []*string{&img.CCM, &img.EBSDriver, &img.Provisioner, &img.Attacher, &img.Resizer, &img.LivenessProbe, &img.NodeDriverRegistrar} {
		*p = repo + "/" + (*p)[strings.LastIndex(*p, "/")+1:]
	}
	return img, nil
}

// knownMinors lists the minors ImagesFor knows, sorted.
func knownMinors() []string {
	out := make([]string, 0, len(ccmReleases))
	for m := range ccmReleases {
		out = append(out, m)
	}
	sort.Strings(out) // two-digit minors of one major sort as strings
	return out
}

// clusterNameRE is what a cluster name may be here: it lands in command
// lines (--cluster-name, --k8s-tag-cluster-id) and in EBS tag keys.
var clusterNameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$`)

// Manifest returns the cloud integration as one YAML stream (documents
// separated by "---\n"), built from the Kubernetes API types: the cloud
// controller manager (service account, RBAC, DaemonSet on the control
// planes), the EBS CSI driver (service accounts, RBAC, CSIDriver, the
// controller Deployment on the control planes, the node DaemonSet on every
// node) and the default gp3 StorageClass.
func Manifest(p Params) ([]byte, error) {
	if !clusterNameRE.MatchString(p.ClusterName) {
		return nil, fmt.Errorf("cloud integration manifest: cluster name %q is not valid", p.ClusterName)
	}
	img, err := ImagesFor(p.KubernetesVersion, p.ImageRepository)
	if err != nil {
		return nil, fmt.Errorf("cloud integration manifest: %w", err)
	}
	objects := append(ccmObjects(p.ClusterName, img), ebsObjects(p.ClusterName, img)...)
	var out bytes.Buffer
	for i, o := range objects {
		b, err := yaml.Marshal(o)
		if err != nil {
			return nil, fmt.Errorf("cloud integration manifest: %w", err)
		}
		if i > 0 {
			out.WriteString("---\n")
		}
		out.Write(b)
	}
	if out.Len() == 0 {
		return nil, errors.New("cloud integration manifest: no objects")
	}
	return out.Bytes(), nil
}
