package bootstrap

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// k3s paths and defaults.
const (
	// K3sConfigPath is the k3s configuration file the k3s recipes write.
	K3sConfigPath = "/etc/rancher/k3s/config.yaml"
	// K3sEtcdPKIDir holds the etcd CA and client certificate of k3s servers.
	K3sEtcdPKIDir = "/etc/rancher/k3s/etcd"
	// K3sInstallURL is the official k3s install script.
	K3sInstallURL = "https://get.k3s.io"
	// DefaultK3sStartTimeout bounds the wait for k3s to report ready.
	DefaultK3sStartTimeout = 10 * time.Minute
	// k3sImagesFile is where k3s imports its air-gap images from at start.
	k3sImagesFile = "/var/lib/rancher/k3s/agent/images/k3s-airgap-images.tar.zst"
)

// validRegistry checks an optional registry host and path.
func validRegistry(r string) error {
	if r != "" && !imageRepoRE.MatchString(r) {
		return fmt.Errorf("registry %q: want a registry host and path such as registry.example.com/k8s", r)
	}
	return nil
}

// K3sServerParams configures k3s-server on one control plane.
type K3sServerParams struct {
	// Node is this control plane.
	Node Node
	// LoadBalancer is the API load balancer; its private and public IPs go
	// into the API certificate's SANs.
	LoadBalancer Node
	// Join is false on the first control plane and true on the others,
	// which then name the load balancer as their server. With an external
	// datastore the servers share their state through etcd, so the first
	// server must be running (this recipe waits for it) before the others.
	Join bool
	// Token is the cluster's shared secret (see NewK3sToken).
	Token string
	// Version is the k3s release, such as v1.33.5+k3s1 (see K3sVersion).
	Version string
	// Etcd is how k3s reaches the external etcd datastore.
	Etcd EtcdClient
	// StartTimeout bounds the wait for k3s to start (default
	// DefaultK3sStartTimeout).
	StartTimeout time.Duration
	// Offline, if set, installs k3s from the cluster's artifacts instead
	// of with the install script from get.k3s.io.
	Offline *K3sOffline
	// SystemDefaultRegistry, if set, is where k3s pulls its system images
	// from (k3s's system-default-registry).
	SystemDefaultRegistry string
	// ExternalCloudProvider disables k3s's embedded cloud controller, its
	// ServiceLB and its local-path storage (the AWS cloud controller
	// manager and the EBS CSI driver take their places), and runs the
	// kubelet with --cloud-provider=external and Node.ProviderID.
	ExternalCloudProvider bool
}

// K3sAgentParams configures k3s-agent on one worker.
type K3sAgentParams struct {
	Node                  Node
	LoadBalancer          Node
	Token                 string
	Version               string
	StartTimeout          time.Duration
	Offline               *K3sOffline
	SystemDefaultRegistry string
	// ExternalCloudProvider runs the kubelet with --cloud-provider=external
	// and Node.ProviderID.
	ExternalCloudProvider bool
}

// k3sDisabledWithCloud are the packaged components of k3s that a cluster
// with the AWS cloud integration leaves out: ServiceLB would answer
// LoadBalancer Services before the cloud controller, and local-path would
// be a second default StorageClass.
var k3sDisabledWithCloud = []string{"servicelb", "local-storage"}

// externalKubeletArgs are the kubelet arguments of a node whose cloud
// provider is external, in k3s's kubelet-arg form.
func externalKubeletArgs(n Node, external bool) []string {
	if !external {
		return nil
	}
	return []string{"cloud-provider=external", "provider-id=" + n.ProviderID}
}

// K3sOffline are the artifacts a k3s node installs: the k3s binary and,
// unless the node pulls from a registry, k3s's air-gap images.
type K3sOffline struct {
	Binary Artifact
	Images *Artifact
	// Extra are more images (docker archives) that k3s imports at start,
	// such as the cloud integration's.
	Extra []ImageArtifact
}

func (o *K3sOffline) validate() error {
	if o == nil {
		return nil
	}
	if err := o.Binary.validate(); err != nil {
		return err
	}
	for _, e := range o.Extra {
		if err := validImageRef(e.Ref); err != nil {
			return err
		}
		if err := e.validate(); err != nil {
			return err
		}
	}
	if o.Images != nil {
		return o.Images.validate()
	}
	return nil
}

// k3sServerConfig is the subset of k3s server options kforge sets.
type k3sServerConfig struct {
	Token               string   `json:"token"`
	Server              string   `json:"server,omitempty"`
	NodeName            string   `json:"node-name"`
	NodeIP              string   `json:"node-ip"`
	AdvertiseAddress    string   `json:"advertise-address"`
	TLSSAN              []string `json:"tls-san"`
	DatastoreEndpoint   string   `json:"datastore-endpoint"`
	DatastoreCAFile     string   `json:"datastore-cafile"`
	DatastoreCertFile   string   `json:"datastore-certfile"`
	DatastoreKeyFile    string   `json:"datastore-keyfile"`
	ClusterInit         bool     `json:"cluster-init"`
	WriteKubeconfigMode string   `json:"write-kubeconfig-mode"`
	// SystemDefaultRegistry prefixes k3s's system images.
	SystemDefaultRegistry  string   `json:"system-default-registry,omitempty"`
	DisableCloudController bool     `json:"disable-cloud-controller,omitempty"`
	Disable                []string `json:"disable,omitempty"`
	KubeletArg             []string `json:"kubelet-arg,omitempty"`
}

// k3sAgentConfig is the subset of k3s agent options kforge sets.
type k3sAgentConfig struct {
	Token    string `json:"token"`
	Server   string `json:"server"`
	NodeName string `json:"node-name"`
	NodeIP   string `json:"node-ip"`
	// SystemDefaultRegistry prefixes k3s's system images.
	SystemDefaultRegistry string   `json:"system-default-registry,omitempty"`
	KubeletArg            []string `json:"kubelet-arg,omitempty"`
}

func validK3sCommon(node, lb Node, token, version string, timeout time.Duration, external bool) error {
	if err := node.validate("node", true); err != nil {
		return err
	}
	if err := node.validateProviderID(external); err != nil {
		return err
	}
	if err := lb.validate("load balancer", false); err != nil {
		return err
	}
	if err := validSecret("the k3s token", token, 16); err != nil {
		return err
	}
	if !k3sVersionRE.MatchString(version) {
		return fmt.Errorf("k3s version %q: want a release such as v1.33.5+k3s1", version)
	}
	if timeout < 0 {
		return errors.New("the start timeout must not be negative")
	}
	return nil
}

func lbURL(lb Node) string {
	return httpsURL(lb.privateAddr(), APIServerPort)
}

// K3sServerConfig renders a control plane's /etc/rancher/k3s/config.yaml:
// the token, the external etcd datastore (every member's client URL, with the
// CA and client certificate), tls-san with the load balancer's private and
// public IPs, node-ip and advertise-address set to the node's private IP,
// cluster-init false (the datastore is external), an admin kubeconfig
// readable by root only, and for joining servers, server set to the load
// balancer. Without ExternalCloudProvider k3s keeps its embedded cloud
// controller: it is what initialises nodes when no cloud provider is
// installed.
func K3sServerConfig(p K3sServerParams) ([]byte, error) {
	if err := validK3sCommon(p.Node, p.LoadBalancer, p.Token, p.Version, p.StartTimeout, p.ExternalCloudProvider); err != nil {
		return nil, fmt.Errorf("render k3s server configuration: %w", err)
	}
	if err := p.Etcd.validate(); err != nil {
		return nil, fmt.Errorf("render k3s server configuration: %w", err)
	}
	if err := validRegistry(p.SystemDefaultRegistry); err != nil {
		return nil, fmt.Errorf("render k3s server configuration: %w", err)
	}
	sans := []string{p.LoadBalancer.PrivateIP}
	if p.LoadBalancer.PublicIP != "" {
		sans = append(sans, p.LoadBalancer.PublicIP)
	}
	cfg := k3sServerConfig{
		Token:                 p.Token,
		NodeName:              p.Node.Name,
		NodeIP:                p.Node.PrivateIP,
		AdvertiseAddress:      p.Node.PrivateIP,
		TLSSAN:                sans,
		DatastoreEndpoint:     strings.Join(p.Etcd.Cluster.ClientURLs(), ","),
		DatastoreCAFile:       K3sEtcdPKIDir + "/ca.crt",
		DatastoreCertFile:     K3sEtcdPKIDir + "/client.crt",
		DatastoreKeyFile:      K3sEtcdPKIDir + "/client.key",
		ClusterInit:           false,
		WriteKubeconfigMode:   "0600",
		SystemDefaultRegistry: p.SystemDefaultRegistry,
		KubeletArg:            externalKubeletArgs(p.Node, p.ExternalCloudProvider),
	}
	if p.ExternalCloudProvider {
		cfg.DisableCloudController = true
		cfg.Disable = k3sDisabledWithCloud
	}
	if p.Join {
		cfg.Server = lbURL(p.LoadBalancer)
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("render k3s server configuration: %w", err)
	}
	return out, nil
}

// K3sAgentConfig renders a worker's /etc/rancher/k3s/config.yaml: the token,
// server set to the load balancer, node-name and node-ip.
func K3sAgentConfig(p K3sAgentParams) ([]byte, error) {
	if err := validK3sCommon(p.Node, p.LoadBalancer, p.Token, p.Version, p.StartTimeout, p.ExternalCloudProvider); err != nil {
		return nil, fmt.Errorf("render k3s agent configuration: %w", err)
	}
	if err := validRegistry(p.SystemDefaultRegistry); err != nil {
		return nil, fmt.Errorf("render k3s agent configuration: %w", err)
	}
	out, err := yaml.Marshal(k3sAgentConfig{
		Token:                 p.Token,
		Server:                lbURL(p.LoadBalancer),
		NodeName:              p.Node.Name,
		NodeIP:                p.Node.PrivateIP,
		SystemDefaultRegistry: p.SystemDefaultRegistry,
		KubeletArg:            externalKubeletArgs(p.Node, p.ExternalCloudProvider),
	})
	if err != nil {
		return nil, fmt.Errorf("render k3s agent configuration: %w", err)
	}
	return out, nil
}

type k3sScript struct {
	Mode, Service, Version, Name string
	Config                       []byte
	Etcd                         *EtcdClient
	StartTimeout                 time.Duration
	Offline                      *K3sOffline
	Unit                         []byte
	ImagesFile                   string
	// ImagesDir is where k3s imports image archives from at start.
	ImagesDir string
}

// k3sUnit is the systemd unit of k3s (server or agent) for nodes installed
// from artifacts, as k3s's install script writes it.
const k3sUnit = `[Unit]
Description=Lightweight Kubernetes (kforge)
Documentation=https://k3s.io
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/%N
KillMode=process
Delegate=yes
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/k3s MODE
`

const k3sBody = `
main() {
	local version={{q .Version}}
	kforge_dir /etc/rancher 0755 root:root
	kforge_dir /etc/rancher/k3s 0755 root:root
	kforge_changed=0
{{- if .Etcd}}
	kforge_dir ` + K3sEtcdPKIDir + ` 0700 root:root
	{{write "` + K3sEtcdPKIDir + `/ca.crt" "0644" "root:root" .Etcd.CA}}
	{{write "` + K3sEtcdPKIDir + `/client.crt" "0644" "root:root" .Etcd.Client.Cert}}
	{{write "` + K3sEtcdPKIDir + `/client.key" "0600" "root:root" .Etcd.Client.Key}}
{{- end}}
	{{write "` + K3sConfigPath + `" "0600" "root:root" .Config}}
	local changed=$kforge_changed

{{- if .Offline}}{{with .Offline}}
	kforge_artifact {{q .Binary.Path}} {{q .Binary.URL}} {{q .Binary.SHA256}}
	if ! cmp -s {{q .Binary.Path}} /usr/local/bin/k3s; then
		kforge_log "installing k3s $version ({{$.Mode}}) from the artifacts"
		install -m 0755 {{q .Binary.Path}} /usr/local/bin/k3s
		changed=1
	fi
	local link
	for link in kubectl crictl ctr; do
		if [[ ! -e /usr/local/bin/$link ]]; then
			ln -s k3s "/usr/local/bin/$link"
		fi
	done
{{- with .Images}}
	kforge_artifact {{q .Path}} {{q .URL}} {{q .SHA256}}
	if ! cmp -s {{q .Path}} {{q $.ImagesFile}}; then
		install -D -m 0644 {{q .Path}} {{q $.ImagesFile}}
		changed=1
	fi
{{- end}}
{{- range $i, $e := .Extra}}
	kforge_artifact {{q $e.Path}} {{q $e.URL}} {{q $e.SHA256}}
	if ! cmp -s {{q $e.Path}} {{q (printf "%s/kforge-%d.tar" $.ImagesDir $i)}}; then
		install -D -m 0644 {{q $e.Path}} {{q (printf "%s/kforge-%d.tar" $.ImagesDir $i)}}
		changed=1
	fi
{{- end}}
{{- end}}
	kforge_changed=0
	{{write (printf "/etc/systemd/system/%s.service" .Service) "0644" "root:root" .Unit}}
	if ((kforge_changed)); then
		systemctl daemon-reload
		changed=1
	fi
{{- else}}
	if [[ ! -f /etc/systemd/system/{{.Service}}.service ]] || [[ ! -x /usr/local/bin/k3s ]] ||
		[[ $(/usr/local/bin/k3s --version 2>/dev/null | head -n 1) != "k3s version $version "* ]]; then
		kforge_log "installing k3s $version ({{.Mode}})"
		local tmp
		tmp=$(mktemp -d)
		# shellcheck disable=SC2064 # expand now: tmp is local to main
		trap "rm -rf '$tmp'" EXIT
		kforge_download ` + K3sInstallURL + ` "$tmp/install.sh"
		INSTALL_K3S_VERSION="$version" INSTALL_K3S_EXEC={{.Mode}} INSTALL_K3S_SKIP_START=true \
			sh "$tmp/install.sh" >&2
		changed=1
	fi
{{- end}}

	systemctl enable {{.Service}}.service
	if ((changed)) && systemctl is-active --quiet {{.Service}}.service; then
		kforge_log "configuration changed; restarting {{.Service}}"
		timeout {{seconds .StartTimeout}} systemctl restart {{.Service}}.service ||
			kforge_fail "{{.Service}} did not restart within {{seconds .StartTimeout}}s; see journalctl -u {{.Service}} on the VM"
	fi
	timeout {{seconds .StartTimeout}} systemctl start {{.Service}}.service ||
		kforge_fail "{{.Service}} did not start within {{seconds .StartTimeout}}s; see journalctl -u {{.Service}} on the VM"
	echo "k3s {{.Mode}} {{.Name}} running ($version)"
}
`

// RenderK3sServer renders k3s-server: write the etcd client certificate and
// the configuration from K3sServerConfig (0600: it holds the token), install
// the pinned k3s release with the official install script if it is missing
// or another version, then enable and start k3s (restarting it when
// something changed) and wait, bounded, for it to report ready.
func RenderK3sServer(p K3sServerParams) (string, error) {
	p.StartTimeout = orDefault(p.StartTimeout, DefaultK3sStartTimeout)
	cfg, err := K3sServerConfig(p)
	if err != nil {
		return "", fmt.Errorf("k3s-server recipe: %w", err)
	}
	if err := p.Offline.validate(); err != nil {
		return "", fmt.Errorf("k3s-server recipe: %w", err)
	}
	return renderScript(RecipeK3sServer, k3sBody, k3sScript{
		Mode: "server", Service: "k3s", Version: p.Version, Name: p.Node.Name,
		Config: cfg, Etcd: &p.Etcd, StartTimeout: p.StartTimeout,
		Offline: p.Offline, Unit: []byte(strings.Replace(k3sUnit, "MODE", "server", 1)), ImagesFile: k3sImagesFile, ImagesDir: path.Dir(k3sImagesFile),
	})
}

// RenderK3sAgent renders k3s-agent: as k3s-server, for a worker joining
// through the load balancer.
func RenderK3sAgent(p K3sAgentParams) (string, error) {
	p.StartTimeout = orDefault(p.StartTimeout, DefaultK3sStartTimeout)
	cfg, err := K3sAgentConfig(p)
	if err != nil {
		return "", fmt.Errorf("k3s-agent recipe: %w", err)
	}
	if err := p.Offline.validate(); err != nil {
		return "", fmt.Errorf("k3s-agent recipe: %w", err)
	}
	return renderScript(RecipeK3sAgent, k3sBody, k3sScript{
		Mode: "agent", Service: "k3s-agent", Version: p.Version, Name: p.Node.Name,
		Config: cfg, StartTimeout: p.StartTimeout,
		Offline: p.Offline, Unit: []byte(strings.Replace(k3sUnit, "MODE", "agent", 1)), ImagesFile: k3sImagesFile, ImagesDir: path.Dir(k3sImagesFile),
	})
}
