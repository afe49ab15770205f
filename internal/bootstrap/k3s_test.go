package bootstrap

import (
	"bytes"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func TestK3sServerConfig(t *testing.T) {
	c := newCluster(t)
	for i, cp := range c.cps {
		out, err := K3sServerConfig(K3sServerParams{
			Node: cp, LoadBalancer: c.lb, Join: i > 0, Token: c.k3sToken, Version: "v1.33.5+k3s1", Etcd: c.etcdClient,
		})
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := yaml.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{
			"token":                 c.k3sToken,
			"node-name":             cp.Name,
			"node-ip":               cp.PrivateIP,
			"advertise-address":     cp.PrivateIP,
			"datastore-endpoint":    "https://10.0.1.5:2379,https://10.0.2.5:2379,https://10.0.3.5:2379",
			"datastore-cafile":      K3sEtcdPKIDir + "/ca.crt",
			"datastore-certfile":    K3sEtcdPKIDir + "/client.crt",
			"datastore-keyfile":     K3sEtcdPKIDir + "/client.key",
			"cluster-init":          false,
			"write-kubeconfig-mode": "0600",
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s = %v, want %v", cp.Name, k, got[k], v)
			}
		}
		if sans, _ := got["tls-san"].([]any); len(sans) != 2 || sans[0] != "10.0.0.10" || sans[1] != "54.10.0.10" {
			t.Errorf("%s: tls-san = %v", cp.Name, got["tls-san"])
		}
		server, hasServer := got["server"]
		if i == 0 && hasServer {
			t.Errorf("the first server names a server to join: %v", server)
		}
		if i > 0 && server != "https://10.0.0.10:6443" {
			t.Errorf("%s: server = %v, want the load balancer", cp.Name, server)
		}
	}
}

func TestK3sAgentConfig(t *testing.T) {
	c := newCluster(t)
	out, err := K3sAgentConfig(K3sAgentParams{Node: c.workers[1], LoadBalancer: c.lb, Token: c.k3sToken, Version: "v1.33.5+k3s1"})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := yaml.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"token": c.k3sToken, "server": "https://10.0.0.10:6443", "node-name": "wp-1", "node-ip": "10.0.2.20"}
	if len(got) != len(want) {
		t.Errorf("agent configuration has %d keys, want %d: %v", len(got), len(want), got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

func TestK3sScripts(t *testing.T) {
	c := newCluster(t)
	server, err := RenderK3sServer(K3sServerParams{
		Node: c.cps[1], LoadBalancer: c.lb, Join: true, Token: c.k3sToken, Version: "v1.33.5+k3s1", Etcd: c.etcdClient,
	})
	if err != nil {
		t.Fatal(err)
	}
	files := filesOf(t, server)
	wantFiles := map[string]struct {
		mode    string
		content []byte
	}{
		K3sEtcdPKIDir + "/ca.crt":     {"0644", c.etcdClient.CA},
		K3sEtcdPKIDir + "/client.crt": {"0644", c.etcdClient.Client.Cert},
		K3sEtcdPKIDir + "/client.key": {"0600", c.etcdClient.Client.Key},
	}
	for path, w := range wantFiles {
		f, ok := files[path]
		if !ok || f.mode != w.mode || !bytes.Equal(f.content, w.content) {
			t.Errorf("%s: written %v mode %s, want mode %s and the given content", path, ok, f.mode, w.mode)
		}
	}
	cfg := files[K3sConfigPath]
	if cfg.mode != "0600" || !bytes.Contains(cfg.content, []byte("token: "+c.k3sToken)) {
		t.Errorf("config.yaml: mode %s (want 0600, it holds the token) or token missing", cfg.mode)
	}
	for _, want := range []string{"INSTALL_K3S_VERSION=\"$version\"", "version='v1.33.5+k3s1'", "INSTALL_K3S_EXEC=server", "INSTALL_K3S_SKIP_START=true", K3sInstallURL, "systemctl enable k3s.service"} {
		if !strings.Contains(server, want) {
			t.Errorf("server script lacks %q", want)
		}
	}

	agent, err := RenderK3sAgent(K3sAgentParams{Node: c.workers[0], LoadBalancer: c.lb, Token: c.k3sToken, Version: "v1.33.5+k3s1"})
	if err != nil {
		t.Fatal(err)
	}
	files = filesOf(t, agent)
	if len(files) != 1 || files[K3sConfigPath].mode != "0600" {
		t.Errorf("agent script should write only config.yaml (0600): %v", files)
	}
	for _, want := range []string{"INSTALL_K3S_EXEC=agent", "systemctl enable k3s-agent.service"} {
		if !strings.Contains(agent, want) {
			t.Errorf("agent script lacks %q", want)
		}
	}
}

func TestK3sRejects(t *testing.T) {
	c := newCluster(t)
	base := K3sServerParams{Node: c.cps[0], LoadBalancer: c.lb, Token: c.k3sToken, Version: "v1.33.5+k3s1", Etcd: c.etcdClient}
	tests := []struct {
		name string
		mod  func(*K3sServerParams)
	}{
		{"short token", func(p *K3sServerParams) { p.Token = "short" }},
		{"token with space", func(p *K3sServerParams) { p.Token = strings.Repeat("a", 20) + " b" }},
		{"minor version", func(p *K3sServerParams) { p.Version = "1.33" }},
		{"kubernetes version", func(p *K3sServerParams) { p.Version = "v1.33.5" }},
		{"no load balancer", func(p *K3sServerParams) { p.LoadBalancer = Node{} }},
		{"no etcd", func(p *K3sServerParams) { p.Etcd = EtcdClient{} }},
		{"etcd key of another cert", func(p *K3sServerParams) { p.Etcd.Client.Key = c.etcdCerts[0].Client.Key }},
		{"bad node IP", func(p *K3sServerParams) { p.Node.PrivateIP = "nope" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := base
			tt.mod(&p)
			_, err := RenderK3sServer(p)
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.Contains(err.Error(), c.k3sToken) {
				t.Errorf("the error quotes the token: %v", err)
			}
		})
	}
}

func TestVersions(t *testing.T) {
	tests := []struct {
		in, k8s, k3s string
	}{
		{"1.33", "v1.33.5", "v1.33.5+k3s1"},
		{"v1.34", "v1.34.2", "v1.34.1+k3s1"},
		{"1.32", "v1.32.9", "v1.32.9+k3s1"},
		{"1.33.4", "v1.33.4", "v1.33.4+k3s1"},
		{"v1.33.5+k3s2", "", "v1.33.5+k3s2"},
		{"1.20", "", ""},
		{"latest", "", ""},
	}
	for _, tt := range tests {
		k8s, err := KubernetesVersion(tt.in)
		if (err == nil) != (tt.k8s != "") || k8s != tt.k8s {
			t.Errorf("KubernetesVersion(%q) = %q, %v; want %q", tt.in, k8s, err, tt.k8s)
		}
		k3s, err := K3sVersion(tt.in)
		if (err == nil) != (tt.k3s != "") || k3s != tt.k3s {
			t.Errorf("K3sVersion(%q) = %q, %v; want %q", tt.in, k3s, err, tt.k3s)
		}
	}
}
