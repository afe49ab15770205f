package bootstrap

import (
	"errors"
	"fmt"
	"strings"
)

// HAProxyConfigPath is where the haproxy recipe installs the configuration.
const HAProxyConfigPath = "/etc/haproxy/haproxy.cfg"

// HAProxyParams configures the load balancer in front of the control planes.
type HAProxyParams struct {
	// ControlPlanes are the backends, reached at their private IPs (IPv4).
	ControlPlanes []Node
	// BindAddress is the IPv4 address the frontend listens on; empty means
	// every address of the VM.
	BindAddress string
	// Port is the frontend port and BackendPort the control planes' API
	// port; both default to APIServerPort (6443).
	Port        int
	BackendPort int
}

func (p HAProxyParams) withDefaults() HAProxyParams {
	p.Port = orDefault(p.Port, APIServerPort)
	p.BackendPort = orDefault(p.BackendPort, APIServerPort)
	return p
}

func (p HAProxyParams) validate() error {
	if len(p.ControlPlanes) == 0 {
		return errors.New("at least one control plane is required")
	}
	seen := map[string]bool{}
	for _, cp := range p.ControlPlanes {
		if err := cp.validate("control plane", true); err != nil {
			return err
		}
		if !cp.privateAddr().Is4() {
			return fmt.Errorf("control plane %s: the private IP must be IPv4", cp.Name)
		}
		if seen[cp.Name] {
			return fmt.Errorf("control plane name %q appears twice", cp.Name)
		}
		seen[cp.Name] = true
	}
	if p.BindAddress != "" {
		a, err := parseIP(p.BindAddress)
		if err != nil || !a.Is4() {
			return fmt.Errorf("bind address %q must be an IPv4 address", p.BindAddress)
		}
	}
	if err := validPort("frontend port", p.Port); err != nil {
		return err
	}
	return validPort("backend port", p.BackendPort)
}

// HAProxyConfig renders haproxy.cfg: a TCP frontend on Port that balances
// round-robin over every control plane's API port. TLS passes through
// untouched, so clients see the API servers' own certificates.
//
// Health checks are TCP connects (every 5s; down after 3 failures, up after
// 2 successes). An HTTPS check of /healthz would not work for both
// bootstraps: k3s disables anonymous access to the API, so it answers 401.
// A control plane whose API port stops accepting connections is taken out of
// rotation; a connection that fails at connect time is retried on another
// control plane (option redispatch). Client and server timeouts are long
// (4h) so that watches, logs and exec sessions survive. maxconn is 4000,
// ample for an API endpoint and within the usual open-file limit haproxy
// needs for it (twice maxconn).
func HAProxyConfig(p HAProxyParams) (string, error) {
	p = p.withDefaults()
	if err := p.validate(); err != nil {
		return "", fmt.Errorf("render haproxy configuration: %w", err)
	}
	var b strings.Builder
	b.WriteString(`# Written by kforge: the Kubernetes API load balancer. Changes are overwritten.
global
	log /dev/log local0
	maxconn 4000
	user haproxy
	group haproxy

defaults
	mode tcp
	log global
	option tcplog
	option dontlognull
	option redispatch
	retries 3
	timeout connect 5s
	timeout client 4h
	timeout server 4h
	timeout check 5s

frontend kube-apiserver
`)
	fmt.Fprintf(&b, "\tbind %s:%d\n", p.BindAddress, p.Port)
	b.WriteString(`	default_backend kube-apiserver

backend kube-apiserver
	balance roundrobin
	default-server check inter 5s fall 3 rise 2
`)
	for _, cp := range p.ControlPlanes {
		fmt.Fprintf(&b, "\tserver %s %s\n", cp.Name, hostPort(cp.privateAddr(), p.BackendPort))
	}
	return b.String(), nil
}

type haproxyScript struct {
	Config []byte
	Count  int
}

const haproxyBody = `
main() {
	kforge_apt_install haproxy
	kforge_changed=0
	{{write "` + HAProxyConfigPath + `" "0644" "root:root" .Config "haproxy" "-c" "-q" "-f"}}
	systemctl enable --now haproxy.service
	if ((kforge_changed)); then
		kforge_log "configuration changed; reloading haproxy"
		systemctl reload haproxy.service
	fi
	echo "haproxy balancing {{.Count}} control planes"
}
`

// RenderHAProxy renders the haproxy recipe: install haproxy from the Ubuntu
// archive if missing, install the configuration from HAProxyConfig (checked
// with `haproxy -c` before it replaces the old one), enable and start
// haproxy, and reload it when the configuration changed.
func RenderHAProxy(p HAProxyParams) (string, error) {
	cfg, err := HAProxyConfig(p)
	if err != nil {
		return "", fmt.Errorf("haproxy recipe: %w", err)
	}
	return renderScript(RecipeHAProxy, haproxyBody, haproxyScript{Config: []byte(cfg), Count: len(p.ControlPlanes)})
}
