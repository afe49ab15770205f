package bootstrap

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kforge/kforge/internal/pki"
)

// cluster is a representative ha-aws cluster: three etcd members, a load
// balancer, three control planes and two workers, with every credential.
type cluster struct {
	etcdCA     *pki.KeyPair
	etcd       EtcdCluster
	etcdCerts  []EtcdCerts
	etcdClient EtcdClient
	lb         Node
	cps        []Node
	workers    []Node
	k3sToken   string
	kubeCA     *pki.KeyPair
	kubeCAPEM  pki.PEMPair
	kubeadm    KubeadmCluster
	caHash     string
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{
		lb: Node{Name: "lb", PrivateIP: "10.0.0.10", PublicIP: "54.10.0.10"},
		cps: []Node{
			{Name: "cp-0", PrivateIP: "10.0.1.10", PublicIP: "54.10.1.10"},
			{Name: "cp-1", PrivateIP: "10.0.2.10", PublicIP: "54.10.2.10"},
			{Name: "cp-2", PrivateIP: "10.0.3.10", PublicIP: "54.10.3.10"},
		},
		workers: []Node{
			{Name: "wp-0", PrivateIP: "10.0.1.20", PublicIP: "54.10.1.20"},
			{Name: "wp-1", PrivateIP: "10.0.2.20"},
		},
	}
	var err error
	if c.etcdCA, err = pki.NewCA("kforge-test-etcd-ca"); err != nil {
		t.Fatal(err)
	}
	c.etcd = EtcdCluster{
		Token: "kforge-test-us-east-1",
		Members: []Node{
			{Name: "etcd-0", PrivateIP: "10.0.1.5", PublicIP: "54.10.1.5"},
			{Name: "etcd-1", PrivateIP: "10.0.2.5", PublicIP: "54.10.2.5"},
			{Name: "etcd-2", PrivateIP: "10.0.3.5", PublicIP: "54.10.3.5"},
		},
	}
	for _, m := range c.etcd.Members {
		certs, err := IssueEtcdCerts(c.etcdCA, m)
		if err != nil {
			t.Fatal(err)
		}
		c.etcdCerts = append(c.etcdCerts, certs)
	}
	if c.etcdClient, err = IssueEtcdClient(c.etcdCA, c.etcd, "kube-apiserver-etcd-client"); err != nil {
		t.Fatal(err)
	}
	if c.k3sToken, err = NewK3sToken(); err != nil {
		t.Fatal(err)
	}
	if c.kubeCA, err = pki.NewCA("kubernetes"); err != nil {
		t.Fatal(err)
	}
	if c.kubeCAPEM, err = c.kubeCA.PEM(); err != nil {
		t.Fatal(err)
	}
	token, err := NewBootstrapToken()
	if err != nil {
		t.Fatal(err)
	}
	key, err := NewCertificateKey()
	if err != nil {
		t.Fatal(err)
	}
	c.kubeadm = KubeadmCluster{
		Name:              "kforge-test",
		KubernetesVersion: "v1.33.5",
		LoadBalancer:      c.lb,
		Etcd:              c.etcdClient,
		Token:             token,
		CertificateKey:    key,
	}
	c.caHash = pki.SPKIHash(c.kubeCA.Cert)
	return c
}

// renderedScript is one rendered recipe with the secrets it must not show.
type renderedScript struct {
	name    string
	recipe  string
	script  string
	secrets []string
}

// allScripts renders every recipe with representative parameters, for both
// bootstraps.
func (c *cluster) allScripts(t *testing.T) []renderedScript {
	t.Helper()
	var out []renderedScript
	add := func(name, recipe string, s string, err error, secrets ...string) {
		t.Helper()
		if err != nil {
			t.Fatalf("render %s: %v", name, err)
		}
		out = append(out, renderedScript{name: name, recipe: recipe, script: s, secrets: secrets})
	}
	keys := func(ps ...pki.PEMPair) []string {
		var s []string
		for _, p := range ps {
			s = append(s, string(p.Key))
		}
		return s
	}

	s, err := RenderWaitReady(WaitReadyParams{})
	add("wait-ready", RecipeWaitReady, s, err)
	for i, m := range c.etcd.Members {
		s, err := RenderEtcd(EtcdParams{
			EtcdConfigParams: EtcdConfigParams{Cluster: c.etcd, Member: m},
			Certs:            c.etcdCerts[i],
		})
		add("etcd/"+m.Name, RecipeEtcd, s, err, keys(c.etcdCerts[i].Server, c.etcdCerts[i].Peer, c.etcdCerts[i].Client)...)
	}
	s, err = RenderEtcd(EtcdParams{
		EtcdConfigParams: EtcdConfigParams{Cluster: c.etcd, Member: c.etcd.Members[0]},
		Certs:            c.etcdCerts[0],
		Tarballs:         map[string]Artifact{"amd64": testArtifact("etcd.tar.gz", ""), "arm64": testArtifact("etcd-arm64.tar.gz", "https://mirror.example/etcd-arm64.tar.gz")},
	})
	add("etcd/offline", RecipeEtcd, s, err, keys(c.etcdCerts[0].Server, c.etcdCerts[0].Peer, c.etcdCerts[0].Client)...)
	s, err = RenderArtifactsMissing(ArtifactsMissingParams{Files: []Artifact{testArtifact("a", ""), testArtifact("b/c", "")}})
	add("artifacts-missing", RecipeArtifactsMissing, s, err)
	s, err = RenderReceive(testArtifact("kubelet", ""))
	add("receive", RecipeReceive, s, err)
	s, err = RenderEtcdReplaceMember(EtcdReplaceMemberParams{Cluster: c.etcd, Member: c.etcd.Members[1]})
	add("etcd-replace-member", RecipeEtcdReplaceMember, s, err)
	s, err = RenderEtcd(EtcdParams{
		EtcdConfigParams: EtcdConfigParams{Cluster: c.etcd, Member: c.etcd.Members[1], Existing: true},
		Certs:            c.etcdCerts[1],
	})
	add("etcd/existing", RecipeEtcd, s, err, keys(c.etcdCerts[1].Server, c.etcdCerts[1].Peer, c.etcdCerts[1].Client)...)
	s, err = RenderEtcdHealth(EtcdHealthParams{Cluster: c.etcd})
	add("etcd-health", RecipeEtcdHealth, s, err)
	s, err = RenderEtcdSnapshot(EtcdSnapshotParams{Cluster: c.etcd, Member: c.etcd.Members[0]})
	add("etcd-snapshot", RecipeEtcdSnapshot, s, err)
	s, err = RenderEtcdSnapshotRead(DefaultEtcdBackupDir + "/snapshot.db")
	add("etcd-snapshot-read", RecipeEtcdSnapshotRead, s, err)
	for _, bucket := range []string{"backups", "backups.example.com"} {
		sp := EtcdBackupScheduleParams{Cluster: c.etcd, Member: c.etcd.Members[1], ClusterName: "demo",
			Bucket: bucket, Prefix: "etcd/prod", Region: "eu-west-1", Every: 6 * time.Hour, Keep: 28}
		s, err = RenderEtcdBackupAgent(sp)
		add("etcd-backup-agent/"+bucket, RecipeEtcdBackupAgent, s, err)
		s, err = RenderEtcdBackupSchedule(sp)
		add("etcd-backup-schedule/"+bucket, RecipeEtcdBackupSchedule, s, err)
	}
	for _, kubeadm := range []bool{false, true} {
		s, err = RenderAPIServerStop(APIServerParams{Kubeadm: kubeadm})
		add("apiserver-stop", RecipeAPIServerStop, s, err)
		s, err = RenderAPIServerStart(APIServerParams{Kubeadm: kubeadm})
		add("apiserver-start", RecipeAPIServerStart, s, err)
	}
	for _, unmanaged := range []bool{false, true} {
		s, err = RenderEtcdRestore(EtcdRestoreParams{Cluster: c.etcd, Member: c.etcd.Members[2], SHA256: strings.Repeat("ab", 32), Unmanaged: unmanaged})
		add("etcd-restore", RecipeEtcdRestore, s, err)
	}
	s, err = RenderHAProxy(HAProxyParams{ControlPlanes: c.cps})
	add("haproxy", RecipeHAProxy, s, err)

	// k3s
	for i, cp := range c.cps {
		s, err := RenderK3sServer(K3sServerParams{
			Node: cp, LoadBalancer: c.lb, Join: i > 0, Token: c.k3sToken,
			Version: "v1.33.5+k3s1", Etcd: c.etcdClient,
		})
		add("k3s-server/"+cp.Name, RecipeK3sServer, s, err, append(keys(c.etcdClient.Client), c.k3sToken)...)
	}
	for _, w := range c.workers {
		s, err := RenderK3sAgent(K3sAgentParams{Node: w, LoadBalancer: c.lb, Token: c.k3sToken, Version: "v1.33.5+k3s1"})
		add("k3s-agent/"+w.Name, RecipeK3sAgent, s, err, c.k3sToken)
	}
	images := testArtifact("k3s-airgap-images-amd64.tar.zst", "")
	offline := &K3sOffline{Binary: testArtifact("k3s", ""), Images: &images}
	s, err = RenderK3sServer(K3sServerParams{
		Node: c.cps[0], LoadBalancer: c.lb, Token: c.k3sToken, Version: "v1.33.5+k3s1", Etcd: c.etcdClient,
		Offline: offline, SystemDefaultRegistry: "registry.example.com/mirror",
	})
	add("k3s-server/offline", RecipeK3sServer, s, err, append(keys(c.etcdClient.Client), c.k3sToken)...)
	s, err = RenderK3sAgent(K3sAgentParams{Node: c.workers[0], LoadBalancer: c.lb, Token: c.k3sToken, Version: "v1.33.5+k3s1",
		Offline: &K3sOffline{Binary: testArtifact("k3s", "https://mirror.example/k3s")}})
	add("k3s-agent/offline", RecipeK3sAgent, s, err, c.k3sToken)
	s, err = RenderK3sServer(K3sServerParams{
		Node: withProviderID(c.cps[0]), LoadBalancer: c.lb, Token: c.k3sToken, Version: "v1.33.5+k3s1", Etcd: c.etcdClient,
		ExternalCloudProvider: true,
	})
	add("k3s-server/cloud", RecipeK3sServer, s, err, append(keys(c.etcdClient.Client), c.k3sToken)...)
	s, err = RenderK3sAgent(K3sAgentParams{Node: withProviderID(c.workers[0]), LoadBalancer: c.lb, Token: c.k3sToken, Version: "v1.33.5+k3s1",
		ExternalCloudProvider: true, Offline: &K3sOffline{Binary: testArtifact("k3s", ""), Images: &images,
			Extra: []ImageArtifact{{Ref: "registry.k8s.io/provider-aws/cloud-controller-manager:v1.34.4", Artifact: testArtifact("images/ccm.tar", "")}}}})
	add("k3s-agent/cloud", RecipeK3sAgent, s, err, c.k3sToken)
	for _, kc := range []string{K3sKubeconfig, KubeadmKubeconfig} {
		s, err = RenderCloudIntegration(CloudIntegrationParams{Kubeconfig: kc, Manifest: []byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n")})
		add("cloud-integration/"+kc, RecipeCloudIntegration, s, err)
		s, err = RenderNodesReady(NodesReadyParams{Kubeconfig: kc, Count: 5, Initialized: true})
		add("nodes-ready/initialized/"+kc, RecipeNodesReady, s, err)
	}
	for _, kc := range []string{K3sKubeconfig, KubeadmKubeconfig} {
		s, err = RenderNodesReady(NodesReadyParams{Kubeconfig: kc, Count: 5})
		add("nodes-ready/"+kc, RecipeNodesReady, s, err)
		s, err = RenderDrainNode(DrainNodeParams{Kubeconfig: kc, Node: "wp-1"})
		add("drain-node/"+kc, RecipeDrainNode, s, err)
		s, err = RenderFetchKubeconfig(FetchKubeconfigParams{Kubeconfig: kc})
		add("fetch-kubeconfig/"+kc, RecipeFetchKubeconfig, s, err)
	}

	// kubeadm
	s, err = RenderKubeadmPrereqs(KubeadmPrereqsParams{KubernetesVersion: c.kubeadm.KubernetesVersion, PauseImage: testPause})
	add("kubeadm-prereqs", RecipeKubeadmPrereqs, s, err)
	s, err = RenderKubeadmPrereqs(KubeadmPrereqsParams{KubernetesVersion: c.kubeadm.KubernetesVersion, PauseImage: testPause, Offline: testOffline()})
	add("kubeadm-prereqs/offline", RecipeKubeadmPrereqs, s, err)
	for _, first := range []bool{true, false} {
		s, err = RenderKubeadmUpgrade(KubeadmUpgradeParams{KubernetesVersion: "v1.34.2", First: first})
		add("kubeadm-upgrade/first="+strconv.FormatBool(first), RecipeKubeadmUpgrade, s, err)
		s, err = RenderKubeadmUpgrade(KubeadmUpgradeParams{KubernetesVersion: "v1.34.2", First: first, Offline: testOffline()})
		add("kubeadm-upgrade/offline/first="+strconv.FormatBool(first), RecipeKubeadmUpgrade, s, err)
	}
	s, err = RenderUncordonNode(UncordonNodeParams{Kubeconfig: KubeadmKubeconfig, Node: "wp-1"})
	add("uncordon-node", RecipeUncordonNode, s, err)
	s, err = RenderDrainNode(DrainNodeParams{Kubeconfig: KubeadmKubeconfig, Node: "wp-1", Keep: true})
	add("drain-node/keep", RecipeDrainNode, s, err)
	s, err = RenderNodesReady(NodesReadyParams{Kubeconfig: KubeadmKubeconfig, Count: 5, KubeletVersion: "v1.34.2"})
	add("nodes-ready/kubelet-version", RecipeNodesReady, s, err)
	kubeadmSecrets := append(keys(c.etcdClient.Client, c.kubeCAPEM), c.kubeadm.Token, c.kubeadm.CertificateKey)
	s, err = RenderKubeadmInit(KubeadmInitParams{Cluster: c.kubeadm, Node: c.cps[0], CA: c.kubeCAPEM})
	add("kubeadm-init", RecipeKubeadmInit, s, err, kubeadmSecrets...)
	s, err = RenderCNI(CNIParams{Flannel: testFlannel})
	add("cni", RecipeCNI, s, err)
	custom := testFlannel
	custom.PodSubnet = "192.168.0.0/16"
	s, err = RenderCNI(CNIParams{Flannel: custom})
	add("cni/custom-subnet", RecipeCNI, s, err)
	for _, upload := range []bool{false, true} {
		s, err = RenderKubeadmRefreshJoin(KubeadmRefreshJoinParams{Cluster: c.kubeadm, Node: c.cps[0], CA: c.kubeCAPEM, Now: time.Now(), UploadCerts: upload})
		add("kubeadm-refresh-join", RecipeKubeadmRefreshJoin, s, err, c.kubeadm.Token, c.kubeadm.CertificateKey)
	}
	s, err = RenderKubeadmEtcdServers(KubeadmEtcdServersParams{Node: c.cps[0], Etcd: c.kubeadm.Etcd.Cluster})
	add("kubeadm-etcd-servers", RecipeKubeadmEtcdServers, s, err)
	for _, cp := range c.cps[1:] {
		s, err := RenderKubeadmJoinControlPlane(KubeadmJoinParams{Cluster: c.kubeadm, Node: cp, CACertHash: c.caHash})
		add("kubeadm-join-cp/"+cp.Name, RecipeKubeadmJoinControlPlane, s, err, kubeadmSecrets...)
	}
	for _, w := range c.workers {
		s, err := RenderKubeadmJoinWorker(KubeadmJoinParams{Cluster: c.kubeadm, Node: w, CACertHash: c.caHash})
		add("kubeadm-join-worker/"+w.Name, RecipeKubeadmJoinWorker, s, err, c.kubeadm.Token)
	}
	cloud := c.kubeadm
	cloud.ExternalCloudProvider = true
	s, err = RenderKubeadmInit(KubeadmInitParams{Cluster: cloud, Node: withProviderID(c.cps[0]), CA: c.kubeCAPEM})
	add("kubeadm-init/cloud", RecipeKubeadmInit, s, err, kubeadmSecrets...)
	s, err = RenderKubeadmJoinWorker(KubeadmJoinParams{Cluster: cloud, Node: withProviderID(c.workers[0]), CACertHash: c.caHash})
	add("kubeadm-join-worker/cloud", RecipeKubeadmJoinWorker, s, err, c.kubeadm.Token)
	return out
}

// withProviderID gives a node the provider ID of an instance, as nodes of
// clusters with an external cloud provider have.
func withProviderID(n Node) Node {
	n.ProviderID = "aws:///us-east-1a/i-0123456789abcdef0"
	return n
}

// Test images and artifacts.
const testPause = "registry.k8s.io/pause:3.10.1"

var testFlannel = FlannelParams{Image: "ghcr.io/flannel-io/flannel:v0.27.4", CNIPluginImage: "ghcr.io/flannel-io/flannel-cni-plugin:v1.8.0-flannel1"}

// testArtifact is an artifact under /var/lib/kforge/artifacts with a
// checksum made from its name.
func testArtifact(name, url string) Artifact {
	sum := sha256.Sum256([]byte(name))
	return Artifact{Path: "/var/lib/kforge/artifacts/" + name, URL: url, SHA256: hex.EncodeToString(sum[:])}
}

// testOffline are the artifacts of a kubeadm node.
func testOffline() *KubeadmOffline {
	return &KubeadmOffline{
		Kubeadm: testArtifact("kubeadm", ""), Kubelet: testArtifact("kubelet", ""), Kubectl: testArtifact("kubectl", ""),
		CNIPlugins: testArtifact("cni-plugins.tgz", "https://mirror.example/cni-plugins.tgz"),
		Images: []ImageArtifact{
			{Ref: testPause, Artifact: testArtifact("images/pause.tar", "")},
			{Ref: testFlannel.Image, Artifact: testArtifact("images/flannel.tar", "")},
		},
	}
}

// writtenFile is a file a script writes with kforge_write.
type writtenFile struct {
	mode, owner string
	content     []byte
}

// filesOf extracts the files a rendered script writes (kforge_write calls
// with base64 heredocs), keyed by path.
func filesOf(t *testing.T, script string) map[string]writtenFile {
	t.Helper()
	files := map[string]writtenFile{}
	sc := bufio.NewScanner(strings.NewReader(script))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "kforge_write '") || !strings.HasSuffix(line, "<<'"+heredocEnd+"'") {
			continue
		}
		f := strings.Fields(line)
		path := strings.Trim(f[1], "'")
		var b64 strings.Builder
		for sc.Scan() && sc.Text() != heredocEnd {
			b64.WriteString(sc.Text())
		}
		content, err := base64.StdEncoding.DecodeString(b64.String())
		if err != nil {
			t.Fatalf("file %s: bad base64: %v", path, err)
		}
		files[path] = writtenFile{mode: f[2], owner: f[3], content: content}
	}
	return files
}

// lookTool finds an external tool or skips the test.
func lookTool(t *testing.T, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed (CI installs it: %s)", name, install)
	}
	return p
}

// writeTemp writes a file in dir and returns its path.
func writeTemp(t *testing.T, dir, name string, data []byte, perm os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, perm); err != nil {
		t.Fatal(err)
	}
	return p
}
