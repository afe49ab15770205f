package bootstrap

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kforge/kforge/internal/pki"
)

// kubeadm paths and defaults.
const (
	// KubeadmConfigDir holds the kubeadm configuration files kforge writes
	// (0700: they hold the bootstrap token and the certificate key).
	KubeadmConfigDir = "/etc/kubernetes/kforge"
	// KubeadmInitConfigPath and KubeadmJoinConfigPath are those files.
	KubeadmInitConfigPath = KubeadmConfigDir + "/kubeadm-init.yaml"
	KubeadmJoinConfigPath = KubeadmConfigDir + "/kubeadm-join.yaml"

	// DefaultPodSubnet is the pod network, Flannel's default.
	DefaultPodSubnet = "10.244.0.0/16"
	// DefaultBootstrapTokenTTL is how long kubeadm-init's bootstrap token,
	// and a token refreshed by kubeadm-refresh-join, stays valid.
	DefaultBootstrapTokenTTL = 24 * time.Hour
	// DefaultKubeadmTimeout bounds kubeadm init and join.
	DefaultKubeadmTimeout = 15 * time.Minute

	kubeadmAPIVersion = "kubeadm.k8s.io/v1beta4"
	containerdSocket  = "unix:///var/run/containerd/containerd.sock"
	defaultTokenGroup = "system:bootstrappers:kubeadm:default-node-token"

	// Where kubeadm finds the external etcd's CA and client certificate on
	// control planes (kubeadm's own names for them).
	kubeadmEtcdCAFile   = "/etc/kubernetes/pki/etcd/ca.crt"
	kubeadmEtcdCertFile = "/etc/kubernetes/pki/apiserver-etcd-client.crt"
	kubeadmEtcdKeyFile  = "/etc/kubernetes/pki/apiserver-etcd-client.key"
)

// KubeadmCluster is what every kubeadm recipe of one cluster shares.
type KubeadmCluster struct {
	// Name is the cluster name kubeadm records (the kforge cluster name).
	Name string
	// KubernetesVersion is a full release such as v1.33.5 (see
	// KubernetesVersion); the packages of that release are installed.
	KubernetesVersion string
	// LoadBalancer fronts the API: controlPlaneEndpoint is its private IP
	// and port 6443; its private and public IPs are API certificate SANs.
	LoadBalancer Node
	// Etcd is the external etcd: members, CA and the API servers' client
	// certificate.
	Etcd EtcdClient
	// PodSubnet defaults to DefaultPodSubnet; the CNI must use the same.
	PodSubnet string
	// ImageRepository, if set, is where the nodes pull the control-plane
	// images from (kubeadm's imageRepository) instead of registry.k8s.io.
	ImageRepository string
	// Token is the bootstrap token joining nodes authenticate with (see
	// NewBootstrapToken); TokenTTL its lifetime from kubeadm init (default
	// DefaultBootstrapTokenTTL).
	Token    string
	TokenTTL time.Duration
	// CertificateKey encrypts the control-plane certificates that
	// kubeadm init uploads for joining control planes (see
	// NewCertificateKey). kubeadm deletes the upload after two hours;
	// kubeadm-refresh-join uploads them again.
	CertificateKey string
	// ExternalCloudProvider runs every kubelet with --cloud-provider=external
	// and the node's provider ID (Node.ProviderID): the AWS cloud controller
	// manager initialises the nodes.
	ExternalCloudProvider bool
}

func (c KubeadmCluster) withDefaults() KubeadmCluster {
	c.PodSubnet = orDefault(c.PodSubnet, DefaultPodSubnet)
	c.TokenTTL = orDefault(c.TokenTTL, DefaultBootstrapTokenTTL)
	return c
}

func (c KubeadmCluster) validate(needEtcd bool) error {
	if c.Name == "" || !nodeName.MatchString(c.Name) {
		return fmt.Errorf("cluster name %q: want lowercase letters, digits and '-'", c.Name)
	}
	if !k8sVersionRE.MatchString(c.KubernetesVersion) {
		return fmt.Errorf("kubernetes version %q: want a release such as v1.33.5", c.KubernetesVersion)
	}
	if err := c.LoadBalancer.validate("load balancer", false); err != nil {
		return err
	}
	if needEtcd {
		if err := c.Etcd.validate(); err != nil {
			return err
		}
	}
	if c.ImageRepository != "" && !imageRepoRE.MatchString(c.ImageRepository) {
		return fmt.Errorf("image repository %q: want a registry host and path such as registry.example.com/k8s", c.ImageRepository)
	}
	if _, err := netip.ParsePrefix(c.PodSubnet); err != nil {
		return fmt.Errorf("pod subnet %q is not a CIDR", c.PodSubnet)
	}
	if !bootstrapTokenRE.MatchString(c.Token) {
		return errors.New("the bootstrap token must have the form [a-z0-9]{6}.[a-z0-9]{16}")
	}
	if c.TokenTTL < time.Minute {
		return errors.New("the bootstrap token TTL must be at least a minute")
	}
	if needEtcd && !certificateKeyRE.MatchString(c.CertificateKey) {
		return errors.New("the certificate key must be 64 lowercase hex digits")
	}
	return nil
}

// controlPlaneEndpoint is the load balancer's private address and API port.
func (c KubeadmCluster) controlPlaneEndpoint() string {
	return hostPort(c.LoadBalancer.privateAddr(), APIServerPort)
}

// The types below mirror the parts of kubeadm's v1beta4 API that kforge
// sets (k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/v1beta4).

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

type initConfiguration struct {
	typeMeta         `json:",inline"`
	BootstrapTokens  []bootstrapToken `json:"bootstrapTokens"`
	NodeRegistration nodeRegistration `json:"nodeRegistration"`
	LocalAPIEndpoint apiEndpoint      `json:"localAPIEndpoint"`
	CertificateKey   string           `json:"certificateKey"`
}

type bootstrapToken struct {
	Token       string   `json:"token"`
	Description string   `json:"description,omitempty"`
	TTL         string   `json:"ttl,omitempty"`
	Usages      []string `json:"usages,omitempty"`
	Groups      []string `json:"groups,omitempty"`
}

type nodeRegistration struct {
	Name                  string   `json:"name"`
	CRISocket             string   `json:"criSocket"`
	KubeletExtraArgs      []arg    `json:"kubeletExtraArgs,omitempty"`
	IgnorePreflightErrors []string `json:"ignorePreflightErrors,omitempty"`
}

type arg struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type apiEndpoint struct {
	AdvertiseAddress string `json:"advertiseAddress"`
	BindPort         int32  `json:"bindPort"`
}

type clusterConfiguration struct {
	typeMeta             `json:",inline"`
	ClusterName          string          `json:"clusterName"`
	KubernetesVersion    string          `json:"kubernetesVersion"`
	ControlPlaneEndpoint string          `json:"controlPlaneEndpoint"`
	ImageRepository      string          `json:"imageRepository,omitempty"`
	APIServer            apiServer       `json:"apiServer"`
	Etcd                 etcdSource      `json:"etcd"`
	Networking           networking      `json:"networking"`
	FeatureGates         map[string]bool `json:"featureGates,omitempty"`
}

// kubeadmFeatureGates are the kubeadm feature gates kforge sets.
//
// ControlPlaneKubeletLocalMode (beta, on by default since kubeadm v1.33)
// points a control plane's kubelet at its own API server instead of the
// cluster endpoint. Found by the lab: after a control plane rebooted, its
// kubelet could not start the API server's static pod, because it waits
// for its API source (that very API server) before it cleans up the pod
// from before the boot (kubernetes#109596). Through the load balancer the
// kubelet reaches the other control planes and the API server comes back.
var kubeadmFeatureGates = map[string]bool{"ControlPlaneKubeletLocalMode": false}

type apiServer struct {
	CertSANs []string `json:"certSANs"`
}

type etcdSource struct {
	External *externalEtcd `json:"external"`
}

type externalEtcd struct {
	Endpoints []string `json:"endpoints"`
	CAFile    string   `json:"caFile"`
	CertFile  string   `json:"certFile"`
	KeyFile   string   `json:"keyFile"`
}

type networking struct {
	PodSubnet string `json:"podSubnet"`
}

type joinConfiguration struct {
	typeMeta         `json:",inline"`
	NodeRegistration nodeRegistration  `json:"nodeRegistration"`
	Discovery        discovery         `json:"discovery"`
	ControlPlane     *joinControlPlane `json:"controlPlane,omitempty"`
}

type discovery struct {
	BootstrapToken bootstrapTokenDiscovery `json:"bootstrapToken"`
}

type bootstrapTokenDiscovery struct {
	Token             string   `json:"token"`
	APIServerEndpoint string   `json:"apiServerEndpoint"`
	CACertHashes      []string `json:"caCertHashes"`
}

type joinControlPlane struct {
	LocalAPIEndpoint apiEndpoint `json:"localAPIEndpoint"`
	CertificateKey   string      `json:"certificateKey"`
}

// ignoredPreflightChecks are kubeadm checks that fail on a kforge node
// for reasons that do not apply to it: HTTPProxyCIDR parses
// "https://[<IPv4>]:1234/", which Go releases since 1.24.9 and 1.25.3
// reject, so kubeadm binaries built with them fail it (kubernetes#135013);
// it only matters with an HTTP proxy, and kforge's nodes use none.
var ignoredPreflightChecks = []string{"HTTPProxyCIDR"}

func registration(c KubeadmCluster, n Node) nodeRegistration {
	args := []arg{{Name: "node-ip", Value: n.PrivateIP}}
	if c.ExternalCloudProvider {
		// The kubelet registers the node tainted uninitialized until the
		// cloud controller manager has set its addresses and zone; the
		// provider ID is set from the start, so the cloud controller
		// finds the instance by ID rather than by name.
		args = append(args, arg{Name: "cloud-provider", Value: "external"}, arg{Name: "provider-id", Value: n.ProviderID})
	}
	return nodeRegistration{
		Name:                  n.Name,
		CRISocket:             containerdSocket,
		KubeletExtraArgs:      args,
		IgnorePreflightErrors: ignoredPreflightChecks,
	}
}

// marshalDocs marshals objects as one multi-document YAML stream.
func marshalDocs(objs ...any) ([]byte, error) {
	var docs []string
	for _, o := range objs {
		b, err := yaml.Marshal(o)
		if err != nil {
			return nil, err
		}
		docs = append(docs, string(b))
	}
	return []byte(strings.Join(docs, "---\n")), nil
}

// KubeadmInitParams configures kubeadm-init on the first control plane.
type KubeadmInitParams struct {
	Cluster KubeadmCluster
	// Node is the first control plane.
	Node Node
	// CA is the Kubernetes cluster CA (certificate and key), made by kforge
	// so that joining nodes can pin it (CACertHash) without reading it back.
	CA pki.PEMPair
}

func (p KubeadmInitParams) validate() error {
	if err := p.Cluster.validate(true); err != nil {
		return err
	}
	if err := p.Node.validate("control plane", true); err != nil {
		return err
	}
	if err := p.Node.validateProviderID(p.Cluster.ExternalCloudProvider); err != nil {
		return err
	}
	kp, err := pki.ParseKeyPair(p.CA)
	if err != nil {
		return fmt.Errorf("cluster CA: %w", err)
	}
	if !kp.Cert.IsCA {
		return errors.New("cluster CA: the certificate is not a CA")
	}
	return nil
}

// KubeadmInitConfig renders the kubeadm configuration of the first control
// plane: an InitConfiguration (bootstrap token, certificate key, node name and
// IP, containerd) and a ClusterConfiguration (version, cluster name,
// controlPlaneEndpoint on the load balancer, its IPs as API certificate
// SANs, the external etcd, the pod subnet), both kubeadm.k8s.io/v1beta4.
func KubeadmInitConfig(p KubeadmInitParams) ([]byte, error) {
	p.Cluster = p.Cluster.withDefaults()
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("render kubeadm init configuration: %w", err)
	}
	c := p.Cluster
	sans := []string{c.LoadBalancer.PrivateIP}
	if c.LoadBalancer.PublicIP != "" {
		sans = append(sans, c.LoadBalancer.PublicIP)
	}
	initCfg := initConfiguration{
		typeMeta: typeMeta{APIVersion: kubeadmAPIVersion, Kind: "InitConfiguration"},
		BootstrapTokens: []bootstrapToken{{
			Token:       c.Token,
			Description: "kforge: joins the nodes of cluster " + c.Name,
			TTL:         c.TokenTTL.String(),
			Usages:      []string{"signing", "authentication"},
			Groups:      []string{defaultTokenGroup},
		}},
		NodeRegistration: registration(c, p.Node),
		LocalAPIEndpoint: apiEndpoint{AdvertiseAddress: p.Node.PrivateIP, BindPort: APIServerPort},
		CertificateKey:   c.CertificateKey,
	}
	clusterCfg := clusterConfiguration{
		typeMeta:             typeMeta{APIVersion: kubeadmAPIVersion, Kind: "ClusterConfiguration"},
		ClusterName:          c.Name,
		KubernetesVersion:    c.KubernetesVersion,
		ControlPlaneEndpoint: c.controlPlaneEndpoint(),
		ImageRepository:      c.ImageRepository,
		APIServer:            apiServer{CertSANs: sans},
		Etcd: etcdSource{External: &externalEtcd{
			Endpoints: c.Etcd.Cluster.ClientURLs(),
			CAFile:    kubeadmEtcdCAFile,
			CertFile:  kubeadmEtcdCertFile,
			KeyFile:   kubeadmEtcdKeyFile,
		}},
		Networking:   networking{PodSubnet: c.PodSubnet},
		FeatureGates: kubeadmFeatureGates,
	}
	out, err := marshalDocs(initCfg, clusterCfg)
	if err != nil {
		return nil, fmt.Errorf("render kubeadm init configuration: %w", err)
	}
	return out, nil
}

// KubeadmJoinParams configures kubeadm-join-cp and kubeadm-join-worker.
type KubeadmJoinParams struct {
	Cluster KubeadmCluster
	// Node is the joining node.
	Node Node
	// CACertHash pins the cluster CA: "sha256:" and the hex SHA-256 of its
	// SubjectPublicKeyInfo (see pki.SPKIHash).
	CACertHash string
}

func (p KubeadmJoinParams) validate(controlPlane bool) error {
	if err := p.Cluster.validate(controlPlane); err != nil {
		return err
	}
	if err := p.Node.validate("node", true); err != nil {
		return err
	}
	if err := p.Node.validateProviderID(p.Cluster.ExternalCloudProvider); err != nil {
		return err
	}
	if !caHashRE.MatchString(p.CACertHash) {
		return fmt.Errorf("CA certificate hash %q: want sha256: and 64 lowercase hex digits", p.CACertHash)
	}
	return nil
}

// imageRepoRE is a registry host (with an optional port) and path.
var imageRepoRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*$`)

var caHashRE = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)

// KubeadmJoinConfig renders a joining node's JoinConfiguration
// (kubeadm.k8s.io/v1beta4): bootstrap-token discovery through the load
// balancer pinned to the CA hash, the node's name and IP, and for a control
// plane its API endpoint and the certificate key that decrypts the uploaded
// control-plane certificates.
func KubeadmJoinConfig(p KubeadmJoinParams, controlPlane bool) ([]byte, error) {
	p.Cluster = p.Cluster.withDefaults()
	if err := p.validate(controlPlane); err != nil {
		return nil, fmt.Errorf("render kubeadm join configuration: %w", err)
	}
	cfg := joinConfiguration{
		typeMeta:         typeMeta{APIVersion: kubeadmAPIVersion, Kind: "JoinConfiguration"},
		NodeRegistration: registration(p.Cluster, p.Node),
		Discovery: discovery{BootstrapToken: bootstrapTokenDiscovery{
			Token:             p.Cluster.Token,
			APIServerEndpoint: p.Cluster.controlPlaneEndpoint(),
			CACertHashes:      []string{p.CACertHash},
		}},
	}
	if controlPlane {
		cfg.ControlPlane = &joinControlPlane{
			LocalAPIEndpoint: apiEndpoint{AdvertiseAddress: p.Node.PrivateIP, BindPort: APIServerPort},
			CertificateKey:   p.Cluster.CertificateKey,
		}
	}
	out, err := marshalDocs(cfg)
	if err != nil {
		return nil, fmt.Errorf("render kubeadm join configuration: %w", err)
	}
	return out, nil
}
