package spec

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func eksSpec() Spec {
	return Spec{Ref: Ref{Type: TypeEKS, Name: "demo", Region: "us-east-1"}, Version: "1.33", NodeSize: "t3.medium", Nodes: 2}
}

func haSpec() Spec {
	return Spec{Ref: Ref{Type: TypeHA, Name: "prod", Region: "eu-west-1"}, Bootstrap: BootstrapK3s, ControlPlanes: 3, Workers: 2, Etcd: 3,
		CPSize: "t3.medium", WPSize: "t3.medium", EtcdSize: "t3.small", LBSize: "t3.micro", K8sVersion: "1.33", SSHCIDR: "0.0.0.0/0"}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Spec)
		base   func() Spec
		want   string // substring of the error; "" = valid
	}{
		{"eks ok", func(*Spec) {}, eksSpec, ""},
		{"ha ok", func(*Spec) {}, haSpec, ""},
		{"unknown type", func(s *Spec) { s.Type = "gcp" }, eksSpec, "unknown cluster type"},
		{"no name", func(s *Spec) { s.Name = "" }, eksSpec, "--name is required"},
		{"upper", func(s *Spec) { s.Name = "Demo" }, eksSpec, "invalid cluster name"},
		{"digit first", func(s *Spec) { s.Name = "1demo" }, eksSpec, "invalid cluster name"},
		{"trailing dash", func(s *Spec) { s.Name = "demo-" }, eksSpec, "invalid cluster name"},
		{"41 chars", func(s *Spec) { s.Name = "a" + strings.Repeat("b", 40) }, eksSpec, "invalid cluster name"},
		{"40 chars", func(s *Spec) { s.Name = "a" + strings.Repeat("b", 39) }, eksSpec, ""},
		{"one char", func(s *Spec) { s.Name = "a" }, eksSpec, ""},
		{"region", func(s *Spec) { s.Region = "useast1" }, eksSpec, "invalid region"},
		{"gov region", func(s *Spec) { s.Region = "us-gov-west-1" }, eksSpec, ""},
		{"no region", func(s *Spec) { s.Region = "" }, eksSpec, "--region is required"},
		{"nodes -1", func(s *Spec) { s.Nodes = -1 }, eksSpec, "invalid --nodes -1"},
		{"nodes 0", func(s *Spec) { s.Nodes = 0 }, eksSpec, ""},
		{"ssh timeout 1s", func(s *Spec) { s.SSHTimeout = time.Second }, haSpec, "invalid --ssh-timeout 1s"},
		{"version", func(s *Spec) { s.Version = "latest" }, eksSpec, "invalid --k8s-version"},
		{"node size", func(s *Spec) { s.NodeSize = "big" }, eksSpec, "invalid --node-size"},
		{"subnets without vpc", func(s *Spec) { s.SubnetIDs = []string{"subnet-0123456789abcdef0"} }, eksSpec, "--subnet-ids needs --vpc-id"},
		{"one subnet eks", func(s *Spec) { s.VPCID = "vpc-0123456789abcdef0"; s.SubnetIDs = []string{"subnet-0123456789abcdef0"} }, eksSpec, "at least two subnets"},
		{"bad vpc", func(s *Spec) { s.VPCID = "vpc-x" }, eksSpec, "invalid --vpc-id"},
		{"workers 0", func(s *Spec) { s.Workers = 0 }, haSpec, "invalid --workers 0"},
		{"cp 0", func(s *Spec) { s.ControlPlanes = 0 }, haSpec, "invalid --control-planes 0"},
		{"etcd even", func(s *Spec) { s.Etcd = 2 }, haSpec, "odd number"},
		{"bootstrap", func(s *Spec) { s.Bootstrap = "rke" }, haSpec, "use k3s or kubeadm"},
		{"ssh cidr", func(s *Spec) { s.SSHCIDR = "everyone" }, haSpec, "invalid --ssh-cidr"},
		{"jump", func(s *Spec) { s.SSHJump = "host-without-user" }, haSpec, "invalid --ssh-jump"},
		{"jump ok", func(s *Spec) { s.SSHJump = "ubuntu@127.0.0.1:2222" }, haSpec, ""},
		{"ami", func(s *Spec) { s.AMI = "ubuntu" }, haSpec, "invalid --ami"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := c.base()
			c.mutate(&s)
			err := s.Validate()
			if c.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var ue *UsageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want a UsageError containing %q", err, c.want)
			}
		})
	}
}
