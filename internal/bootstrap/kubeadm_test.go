package bootstrap

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kforge/kforge/internal/pki"
)

// findKubeadm locates kubeadm: $KFORGE_KUBEADM, else the cache of
// scripts/build-kubeadm.sh, else PATH.
func findKubeadm(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("KFORGE_KUBEADM"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("KFORGE_KUBEADM=%s: %v", p, err)
		}
		return p
	}
	cache := os.Getenv("KFORGE_TOOLS")
	if cache == "" {
		if home, err := os.UserHomeDir(); err == nil {
			cache = filepath.Join(home, ".cache", "kforge-tools")
		}
	}
	if cache != "" {
		p := filepath.Join(cache, "kubeadm")
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath("kubeadm"); err == nil {
		return p
	}
	t.Skip("kubeadm not found: build it with scripts/build-kubeadm.sh (CI does), or set KFORGE_KUBEADM")
	return ""
}

// validate runs `kubeadm config validate` on a configuration.
func kubeadmValidate(t *testing.T, kubeadm string, cfg []byte) (string, error) {
	t.Helper()
	path := writeTemp(t, t.TempDir(), "kubeadm.yaml", cfg, 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, kubeadm, "config", "validate", "--config", path).CombinedOutput()
	return string(out), err
}

// TestKubeadmConfigValidate has the real kubeadm validate the configurations
// the kubeadm recipes write, for two Kubernetes versions, and reject broken
// variants of them.
func TestKubeadmConfigValidate(t *testing.T) {
	t.Parallel()
	kubeadm := findKubeadm(t)
	c := newCluster(t)
	for _, variant := range []string{"v1.33.5", "v1.34.2", "v1.34.2+cloud"} {
		version, cloud := strings.CutSuffix(variant, "+cloud")
		kc := c.kubeadm
		kc.KubernetesVersion = version
		// With the cloud integration: an external cloud provider and
		// provider IDs in the kubelet arguments.
		kc.ExternalCloudProvider = cloud
		nodeOf := func(n Node) Node {
			if cloud {
				return withProviderID(n)
			}
			return n
		}
		initScript, err := RenderKubeadmInit(KubeadmInitParams{Cluster: kc, Node: nodeOf(c.cps[0]), CA: c.kubeCAPEM})
		if err != nil {
			t.Fatal(err)
		}
		joinCP, err := RenderKubeadmJoinControlPlane(KubeadmJoinParams{Cluster: kc, Node: nodeOf(c.cps[1]), CACertHash: c.caHash})
		if err != nil {
			t.Fatal(err)
		}
		joinWorker, err := RenderKubeadmJoinWorker(KubeadmJoinParams{Cluster: kc, Node: nodeOf(c.workers[0]), CACertHash: c.caHash})
		if err != nil {
			t.Fatal(err)
		}
		configs := map[string][]byte{
			"init":        filesOf(t, initScript)[KubeadmInitConfigPath].content,
			"join-cp":     filesOf(t, joinCP)[KubeadmJoinConfigPath].content,
			"join-worker": filesOf(t, joinWorker)[KubeadmJoinConfigPath].content,
		}
		for name, cfg := range configs {
			t.Run(variant+"/"+name, func(t *testing.T) {
				if cloud && !bytes.Contains(cfg, []byte("value: external")) {
					t.Fatal("the configuration names no external cloud provider")
				}
				if len(cfg) == 0 {
					t.Fatal("the script writes no kubeadm configuration")
				}
				if out, err := kubeadmValidate(t, kubeadm, cfg); err != nil {
					t.Fatalf("kubeadm config validate: %v\n%s\n%s", err, out, cfg)
				}
				// The same configuration with a malformed token is rejected,
				// so the success above means something.
				bad := bytes.ReplaceAll(cfg, []byte(kc.Token), []byte("not-a-token"))
				if out, err := kubeadmValidate(t, kubeadm, bad); err == nil {
					t.Errorf("kubeadm accepts a malformed token:\n%s", out)
				}
			})
		}
	}
}

func TestKubeadmInitConfigContent(t *testing.T) {
	c := newCluster(t)
	out, err := KubeadmInitConfig(KubeadmInitParams{Cluster: c.kubeadm, Node: c.cps[0], CA: c.kubeCAPEM})
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(string(out), "---\n")
	if len(docs) != 2 {
		t.Fatalf("want 2 YAML documents, got %d:\n%s", len(docs), out)
	}
	var initCfg, clusterCfg map[string]any
	if err := yaml.Unmarshal([]byte(docs[0]), &initCfg); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(docs[1]), &clusterCfg); err != nil {
		t.Fatal(err)
	}
	get := func(m map[string]any, path ...string) any {
		var v any = m
		for _, p := range path {
			mm, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = mm[p]
		}
		return v
	}
	checks := []struct {
		doc  map[string]any
		path []string
		want any
	}{
		{initCfg, []string{"apiVersion"}, "kubeadm.k8s.io/v1beta4"},
		{initCfg, []string{"kind"}, "InitConfiguration"},
		{initCfg, []string{"certificateKey"}, c.kubeadm.CertificateKey},
		{initCfg, []string{"nodeRegistration", "name"}, "cp-0"},
		{initCfg, []string{"localAPIEndpoint", "advertiseAddress"}, "10.0.1.10"},
		{clusterCfg, []string{"kind"}, "ClusterConfiguration"},
		{clusterCfg, []string{"kubernetesVersion"}, "v1.33.5"},
		{clusterCfg, []string{"controlPlaneEndpoint"}, "10.0.0.10:6443"},
		{clusterCfg, []string{"networking", "podSubnet"}, DefaultPodSubnet},
		{clusterCfg, []string{"etcd", "external", "caFile"}, kubeadmEtcdCAFile},
	}
	for _, ch := range checks {
		if got := get(ch.doc, ch.path...); got != ch.want {
			t.Errorf("%s = %v, want %v", strings.Join(ch.path, "."), got, ch.want)
		}
	}
	tokens, _ := initCfg["bootstrapTokens"].([]any)
	if len(tokens) != 1 || get(tokens[0].(map[string]any), "token") != c.kubeadm.Token {
		t.Errorf("bootstrapTokens = %v", initCfg["bootstrapTokens"])
	}
	if sans := get(clusterCfg, "apiServer", "certSANs"); len(sans.([]any)) != 2 || sans.([]any)[0] != "10.0.0.10" || sans.([]any)[1] != "54.10.0.10" {
		t.Errorf("certSANs = %v", sans)
	}
	eps, _ := get(clusterCfg, "etcd", "external", "endpoints").([]any)
	if len(eps) != 3 || eps[0] != "https://10.0.1.5:2379" {
		t.Errorf("etcd endpoints = %v", eps)
	}
}

func TestKubeadmInitScriptFiles(t *testing.T) {
	c := newCluster(t)
	s, err := RenderKubeadmInit(KubeadmInitParams{Cluster: c.kubeadm, Node: c.cps[0], CA: c.kubeCAPEM})
	if err != nil {
		t.Fatal(err)
	}
	files := filesOf(t, s)
	want := map[string]struct {
		mode    string
		content []byte
	}{
		"/etc/kubernetes/pki/ca.crt": {"0644", c.kubeCAPEM.Cert},
		"/etc/kubernetes/pki/ca.key": {"0600", c.kubeCAPEM.Key},
		kubeadmEtcdCAFile:            {"0644", c.etcdClient.CA},
		kubeadmEtcdCertFile:          {"0644", c.etcdClient.Client.Cert},
		kubeadmEtcdKeyFile:           {"0600", c.etcdClient.Client.Key},
	}
	for path, w := range want {
		f, ok := files[path]
		if !ok || f.mode != w.mode || !bytes.Equal(f.content, w.content) {
			t.Errorf("%s: written %v with mode %s, want mode %s and the given content", path, ok, f.mode, w.mode)
		}
	}
	if f := files[KubeadmInitConfigPath]; f.mode != "0600" {
		t.Errorf("the kubeadm configuration (it holds the token) has mode %s, want 0600", f.mode)
	}
	for _, want := range []string{"--upload-certs", "--skip-token-print", "--skip-certificate-key-print"} {
		if !strings.Contains(s, want) {
			t.Errorf("kubeadm init lacks %s", want)
		}
	}

	// The discovery hash pins the CA written above.
	cert, err := pki.ParseCertificate(files["/etc/kubernetes/pki/ca.crt"].content)
	if err != nil {
		t.Fatal(err)
	}
	if pki.SPKIHash(cert) != c.caHash {
		t.Errorf("the CA written on the first control plane does not match the joins' discovery hash")
	}
}

func TestKubeadmJoinConfigContent(t *testing.T) {
	c := newCluster(t)
	for _, cp := range []bool{true, false} {
		out, err := KubeadmJoinConfig(KubeadmJoinParams{Cluster: c.kubeadm, Node: c.workers[0], CACertHash: c.caHash}, cp)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(out, &m); err != nil {
			t.Fatal(err)
		}
		bt, _ := m["discovery"].(map[string]any)["bootstrapToken"].(map[string]any)
		if bt["apiServerEndpoint"] != "10.0.0.10:6443" || bt["token"] != c.kubeadm.Token {
			t.Errorf("discovery = %v", bt)
		}
		if hashes, _ := bt["caCertHashes"].([]any); len(hashes) != 1 || hashes[0] != c.caHash {
			t.Errorf("caCertHashes = %v", bt["caCertHashes"])
		}
		_, hasCP := m["controlPlane"]
		if hasCP != cp {
			t.Errorf("controlPlane present = %v, want %v", hasCP, cp)
		}
		if cp {
			if key := m["controlPlane"].(map[string]any)["certificateKey"]; key != c.kubeadm.CertificateKey {
				t.Errorf("controlPlane.certificateKey = %v", key)
			}
		} else if strings.Contains(string(out), c.kubeadm.CertificateKey) {
			t.Errorf("a worker's configuration carries the certificate key")
		}
	}
}

func TestKubeadmRejects(t *testing.T) {
	c := newCluster(t)
	mod := func(f func(*KubeadmCluster)) KubeadmCluster {
		kc := c.kubeadm
		f(&kc)
		return kc
	}
	tests := []struct {
		name    string
		cluster KubeadmCluster
	}{
		{"bad token", mod(func(k *KubeadmCluster) { k.Token = "abc.def" })},
		{"bad certificate key", mod(func(k *KubeadmCluster) { k.CertificateKey = "xyz" })},
		{"minor version only", mod(func(k *KubeadmCluster) { k.KubernetesVersion = "1.33" })},
		{"bad pod subnet", mod(func(k *KubeadmCluster) { k.PodSubnet = "10.244.0.0" })},
		{"no load balancer", mod(func(k *KubeadmCluster) { k.LoadBalancer = Node{} })},
		{"bad cluster name", mod(func(k *KubeadmCluster) { k.Name = "My Cluster" })},
		{"no etcd", mod(func(k *KubeadmCluster) { k.Etcd = EtcdClient{} })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := KubeadmInitConfig(KubeadmInitParams{Cluster: tt.cluster, Node: c.cps[0], CA: c.kubeCAPEM})
			if err == nil {
				t.Fatal("KubeadmInitConfig succeeded, want an error")
			}
			for _, secret := range []string{c.kubeadm.Token, c.kubeadm.CertificateKey} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("the error quotes a secret: %v", err)
				}
			}
		})
	}
	// The cluster CA must carry its key and be a CA.
	leaf, err := c.kubeCA.Issue(pki.Request{CommonName: "x", Usage: pki.Client})
	if err != nil {
		t.Fatal(err)
	}
	leafPEM, err := leaf.PEM()
	if err != nil {
		t.Fatal(err)
	}
	for name, ca := range map[string]pki.PEMPair{"no key": {Cert: c.kubeCAPEM.Cert}, "not a CA": leafPEM} {
		if _, err := KubeadmInitConfig(KubeadmInitParams{Cluster: c.kubeadm, Node: c.cps[0], CA: ca}); err == nil {
			t.Errorf("%s: KubeadmInitConfig succeeded, want an error", name)
		}
	}
	if _, err := KubeadmJoinConfig(KubeadmJoinParams{Cluster: c.kubeadm, Node: c.workers[0], CACertHash: "sha256:abc"}, false); err == nil {
		t.Errorf("a malformed CA hash was accepted")
	}
	// A worker needs neither etcd nor the certificate key.
	worker := mod(func(k *KubeadmCluster) { k.Etcd = EtcdClient{}; k.CertificateKey = "" })
	if _, err := KubeadmJoinConfig(KubeadmJoinParams{Cluster: worker, Node: c.workers[0], CACertHash: c.caHash}, false); err != nil {
		t.Errorf("worker join without etcd and certificate key: %v", err)
	}
}

func TestKubeadmPrereqs(t *testing.T) {
	s, err := RenderKubeadmPrereqs(KubeadmPrereqsParams{KubernetesVersion: "v1.34.2", PauseImage: testPause})
	if err != nil {
		t.Fatal(err)
	}
	files := filesOf(t, s)
	// The apt source of the release's minor (kforge_kube_repo writes it).
	if !strings.Contains(s, "kforge_kube_repo 'v1.34'") || !strings.Contains(s, "https://pkgs.k8s.io/core:/stable:/%s/deb/ /") {
		t.Errorf("the script does not use the apt repository of v1.34")
	}
	if got := string(files["/etc/modules-load.d/kforge-kubernetes.conf"].content); got != "overlay\nbr_netfilter\n" {
		t.Errorf("modules = %q", got)
	}
	if got := string(files["/etc/sysctl.d/99-kforge-kubernetes.conf"].content); !strings.Contains(got, "net.ipv4.ip_forward = 1") || !strings.Contains(got, "net.bridge.bridge-nf-call-iptables = 1") {
		t.Errorf("sysctl = %q", got)
	}
	for _, want := range []string{"version='1.34.2'", `kforge_kube_packages "$version" kubelet kubeadm kubectl`, `apt-mark hold "$@"`, "SystemdCgroup = true",
		"pause='" + testPause + "'", "sandbox_image = ", "restrict_oom_score_adj", "sysctl -q -p /etc/sysctl.d/99-kforge-kubernetes.conf"} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q", want)
		}
	}
	// Only kforge's sysctls are applied: the system's others may be
	// read-only (a container) and must not fail the script.
	if strings.Contains(s, "sysctl --system") {
		t.Errorf("script applies every sysctl file")
	}
	if strings.Contains(s, "/usr/local/bin/kubelet") || strings.Contains(s, "kforge_image ") {
		t.Errorf("an online install uses artifacts")
	}
	for _, bad := range []string{"1.34", "v1.34", "latest", ""} {
		if _, err := RenderKubeadmPrereqs(KubeadmPrereqsParams{KubernetesVersion: bad, PauseImage: testPause}); err == nil {
			t.Errorf("version %q accepted", bad)
		}
	}
	if _, err := RenderKubeadmPrereqs(KubeadmPrereqsParams{KubernetesVersion: "v1.34.2"}); err == nil {
		t.Errorf("no pause image accepted")
	}
}

func TestKubeadmPrereqsOffline(t *testing.T) {
	o := testOffline()
	s, err := RenderKubeadmPrereqs(KubeadmPrereqsParams{KubernetesVersion: "v1.34.2", PauseImage: testPause, Offline: o})
	if err != nil {
		t.Fatal(err)
	}
	files := filesOf(t, s)
	if _, ok := files["/etc/apt/sources.list.d/kubernetes.list"]; ok {
		t.Errorf("an offline install adds the Kubernetes apt repository")
	}
	if got := files["/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"].content; !bytes.Contains(got, []byte("ExecStart=/usr/local/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS")) {
		t.Errorf("kubelet drop-in = %q", got)
	}
	if strings.Contains(s, "pkgs.k8s.io") || strings.Contains(s, "apt-transport-https") {
		t.Errorf("an offline install reaches the Kubernetes apt repository")
	}
	// Every artifact is checked before use, and every image imported.
	for bin, a := range map[string]Artifact{"kubeadm": o.Kubeadm, "kubelet": o.Kubelet, "kubectl": o.Kubectl} {
		if !strings.Contains(s, "kforge_binary '"+a.Path+"' '"+a.URL+"' '"+a.SHA256+"' "+bin+"\n") {
			t.Errorf("script does not check and install %s", a.Path)
		}
	}
	if a := o.CNIPlugins; !strings.Contains(s, "kforge_artifact '"+a.Path+"' '"+a.URL+"' '"+a.SHA256+"'") {
		t.Errorf("script does not check %s", a.Path)
	}
	for _, img := range o.Images {
		if !strings.Contains(s, "kforge_image '"+img.Path+"' '"+img.URL+"' '"+img.SHA256+"' '"+img.Ref+"'") {
			t.Errorf("script does not import %s", img.Ref)
		}
	}
	bad := *o
	bad.Kubelet.SHA256 = "abc"
	if _, err := RenderKubeadmPrereqs(KubeadmPrereqsParams{KubernetesVersion: "v1.34.2", PauseImage: testPause, Offline: &bad}); err == nil {
		t.Errorf("an artifact without a SHA-256 was accepted")
	}
}

func TestBootstrapTokenSecret(t *testing.T) {
	expires := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	out, err := BootstrapTokenSecret("abcdef.0123456789abcdef", "d", expires)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Kind       string            `json:"kind"`
		Type       string            `json:"type"`
		Metadata   map[string]string `json:"metadata"`
		StringData map[string]string `json:"stringData"`
	}
	if err := yaml.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	if m.Kind != "Secret" || m.Type != "bootstrap.kubernetes.io/token" ||
		m.Metadata["name"] != "bootstrap-token-abcdef" || m.Metadata["namespace"] != "kube-system" {
		t.Errorf("secret = %+v", m)
	}
	if m.StringData["token-id"] != "abcdef" || m.StringData["token-secret"] != "0123456789abcdef" ||
		m.StringData["expiration"] != "2030-01-02T03:04:05Z" || m.StringData["usage-bootstrap-authentication"] != "true" ||
		m.StringData["auth-extra-groups"] != defaultTokenGroup {
		t.Errorf("stringData = %v", m.StringData)
	}
	if _, err := BootstrapTokenSecret("nope", "d", expires); err == nil {
		t.Errorf("malformed token accepted")
	}
}

func TestRefreshJoinScript(t *testing.T) {
	c := newCluster(t)
	for _, upload := range []bool{false, true} {
		s, err := RenderKubeadmRefreshJoin(KubeadmRefreshJoinParams{Cluster: c.kubeadm, Node: c.cps[0], CA: c.kubeCAPEM, Now: time.Now(), UploadCerts: upload})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(s, "upload-certs --upload-certs --skip-certificate-key-print"); got != upload {
			t.Errorf("UploadCerts=%v: script uploads certificates: %v", upload, got)
		}
	}
	if _, err := RenderKubeadmRefreshJoin(KubeadmRefreshJoinParams{Cluster: c.kubeadm}); err == nil {
		t.Errorf("a refresh without the current time was accepted")
	}
}

func TestCNI(t *testing.T) {
	s, err := RenderCNI(CNIParams{Flannel: testFlannel})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(s, "kforge_download") || strings.Contains(s, "https://") {
		t.Errorf("the CNI recipe downloads something")
	}
	for _, want := range []string{"kubectl --kubeconfig \"$kubeconfig\" --request-timeout=60s apply -f -", "rollout status daemonset/kube-flannel-ds"} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q", want)
		}
	}
	for _, p := range []CNIParams{
		{Flannel: FlannelParams{PodSubnet: "192.168.0.1/16", Image: testFlannel.Image, CNIPluginImage: testFlannel.CNIPluginImage}},
		{Flannel: FlannelParams{PodSubnet: "fd00::/64", Image: testFlannel.Image, CNIPluginImage: testFlannel.CNIPluginImage}},
		{Flannel: FlannelParams{Image: "Bad Image"}},
		{Flannel: testFlannel, Kubeconfig: "admin.conf"},
	} {
		if _, err := RenderCNI(p); err == nil {
			t.Errorf("%+v accepted", p)
		}
	}
}

func TestTokens(t *testing.T) {
	tokenRE := regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)
	keyRE := regexp.MustCompile(`^[a-f0-9]{64}$`)
	seen := map[string]bool{}
	for range 50 {
		tok, err := NewBootstrapToken()
		if err != nil {
			t.Fatal(err)
		}
		if !tokenRE.MatchString(tok) {
			t.Errorf("bootstrap token %q has the wrong form", tok)
		}
		key, err := NewCertificateKey()
		if err != nil {
			t.Fatal(err)
		}
		if !keyRE.MatchString(key) {
			t.Errorf("certificate key %q has the wrong form", key)
		}
		k3s, err := NewK3sToken()
		if err != nil {
			t.Fatal(err)
		}
		if err := validSecret("k3s token", k3s, 32); err != nil {
			t.Errorf("k3s token: %v", err)
		}
		for _, s := range []string{tok, key, k3s} {
			if seen[s] {
				t.Errorf("a random secret repeated")
			}
			seen[s] = true
		}
	}
}

// TestKubeadmUpgradeDryRun has the real kubeadm dry-run `kubeadm upgrade
// apply` and `kubeadm upgrade node` with the UpgradeConfiguration that
// kubeadm-upgrade writes (online and offline), in a root of its own
// (--rootfs: nothing is written outside it), and refuse a broken variant:
// kubeadm config validate does not check this kind.
func TestKubeadmUpgradeDryRun(t *testing.T) {
	kubeadm := findKubeadm(t)
	out, err := exec.Command(kubeadm, "version", "-o", "short").Output()
	if err != nil {
		t.Fatal(err)
	}
	version := strings.TrimSpace(string(out))
	run := func(cfg []byte, sub string) (string, error) {
		t.Helper()
		root := t.TempDir()
		writeTemp(t, root, "upgrade.yaml", cfg, 0o600)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		args := []string{"upgrade", sub, "--rootfs", root, "--config", "/upgrade.yaml", "--dry-run", "--ignore-preflight-errors=all"}
		if sub == "apply" {
			args = append(args, "--yes")
		}
		b, err := exec.CommandContext(ctx, kubeadm, args...).CombinedOutput()
		return string(b), err
	}
	for _, offline := range []*KubeadmOffline{nil, testOffline()} {
		cfg, err := KubeadmUpgradeConfig(KubeadmUpgradeParams{KubernetesVersion: version, Offline: offline})
		if err != nil {
			t.Fatal(err)
		}
		if offline != nil && !strings.Contains(string(cfg), "imagePullPolicy: Never") {
			t.Errorf("offline, the images are pulled:\n%s", cfg)
		}
		for _, sub := range []string{"apply", "node"} {
			out, err := run(cfg, sub)
			t.Logf("%s: %d bytes of output", sub, len(out))
			if err != nil || !strings.Contains(out, "Finished dryrunning successfully") {
				t.Errorf("kubeadm upgrade %s --dry-run (offline %v): %v\n%s\n%s", sub, offline != nil, err, out, cfg)
			}
		}
		broken := strings.Replace(string(cfg), "etcdUpgrade: false", "etcdUpgrade: nope", 1)
		if out, err := run([]byte(broken), "apply"); err == nil {
			t.Errorf("kubeadm accepted a broken UpgradeConfiguration:\n%s\n%s", broken, out)
		}
	}
}
