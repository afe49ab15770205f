package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"sigs.k8s.io/yaml"

	"github.com/kforge/kforge/test/testutil/awscheck"
	"github.com/kforge/kforge/test/testutil/moto"
	"github.com/kforge/kforge/test/testutil/sshfleet"
)

func TestHAKubeadm(t *testing.T) {
	t.Parallel()
	const name, region = "kadm", "eu-central-1"
	h := newHAEnv(t, region)
	h.MustRun(t, "create", "ha-aws", "--name", name, "--region", region, "--bootstrap", "kubeadm",
		"--control-planes", "3", "--workers", "2", "--etcd", "3", "--ssh-cidr", "10.0.0.0/8", "--ssh-jump", h.jump())

	byRole := instances(t, h.cfg, name)
	lbPrivate := aws.ToString(byRole["lb"][0].PrivateIpAddress)
	lbPublic := aws.ToString(byRole["lb"][0].PublicIpAddress)
	etcdIPs := privateIPs(byRole["etcd"])

	inits := h.fleet.CallsOf("kubeadm-init")
	if len(inits) != 1 || inits[0].VM.Name != name+"-cp-0" {
		t.Fatalf("kubeadm init ran %d times (want once, on cp-0)", len(inits))
	}
	var cfgFile []byte
	for path, content := range inits[0].Files() {
		if strings.HasSuffix(path, ".yaml") && strings.Contains(string(content), "ClusterConfiguration") {
			cfgFile = content
		}
	}
	if cfgFile == nil {
		t.Fatal("kubeadm init wrote no ClusterConfiguration")
	}
	var cc struct {
		ControlPlaneEndpoint string `json:"controlPlaneEndpoint"`
		Etcd                 struct {
			External struct {
				Endpoints []string `json:"endpoints"`
			} `json:"external"`
		} `json:"etcd"`
		APIServer struct {
			CertSANs []string `json:"certSANs"`
		} `json:"apiServer"`
	}
	for _, doc := range strings.Split(string(cfgFile), "\n---\n") {
		if strings.Contains(doc, "kind: ClusterConfiguration") {
			if err := yaml.Unmarshal([]byte(doc), &cc); err != nil {
				t.Fatal(err)
			}
		}
	}
	if cc.ControlPlaneEndpoint != lbPrivate+":6443" {
		t.Errorf("controlPlaneEndpoint %q, want %s:6443", cc.ControlPlaneEndpoint, lbPrivate)
	}
	if len(cc.Etcd.External.Endpoints) != 3 {
		t.Errorf("external etcd endpoints %v", cc.Etcd.External.Endpoints)
	}
	for _, ip := range etcdIPs {
		if !strings.Contains(strings.Join(cc.Etcd.External.Endpoints, ","), "https://"+ip+":2379") {
			t.Errorf("etcd endpoint %s missing from %v", ip, cc.Etcd.External.Endpoints)
		}
	}
	if !strings.Contains(strings.Join(cc.APIServer.CertSANs, ","), lbPublic) {
		t.Errorf("API certificate SANs %v lack the LB public IP %s", cc.APIServer.CertSANs, lbPublic)
	}
	if n := len(h.fleet.CallsOf("kubeadm-prereqs")); n != 5 {
		t.Errorf("prerequisites installed on %d VMs, want 5", n)
	}
	joinCP := h.fleet.CallsOf("kubeadm-join-cp")
	joinWP := h.fleet.CallsOf("kubeadm-join-worker")
	if len(joinCP) != 2 || len(joinWP) != 2 {
		t.Errorf("%d control planes and %d workers joined, want 2 and 2", len(joinCP), len(joinWP))
	}
	for _, c := range append(joinCP, joinWP...) {
		if !strings.Contains(c.Text(), lbPrivate+":6443") {
			t.Errorf("%s does not join through the load balancer", c.VM.Name)
		}
	}
	for _, c := range joinCP {
		if !strings.Contains(c.Text(), "certificateKey") {
			t.Errorf("control plane %s joins without the certificate key", c.VM.Name)
		}
	}
	if n := len(h.fleet.CallsOf("cni")); n != 1 {
		t.Errorf("CNI installed %d times", n)
	}
	h.MustRun(t, "scale", "ha-aws", "--name", name, "--region", region, "--workers", "3")
	if n := len(h.fleet.CallsOf("kubeadm-join-worker")); n != 3 {
		t.Errorf("after scale up, %d worker joins", n)
	}
	h.MustRun(t, "delete", "ha-aws", "--name", name, "--region", region, "--yes")
	awscheck.Empty(t, h.cfg, "ha-aws", name)
}

// TestHAHostKeyPinned: a VM that presents another host key than the one
// kforge gave it is refused; once it presents its own, the same create
// continues.
func TestHAHostKeyPinned(t *testing.T) {
	t.Parallel()
	const name, region = "pinned", "eu-west-2"
	h := newHAEnv(t, region)
	h.fleet.SetFault("", sshfleet.Fault{WrongHostKey: true})
	args := []string{"create", "ha-aws", "--name", name, "--region", region, "--control-planes", "1", "--workers", "1", "--etcd", "1", "--ssh-jump", h.jump()}
	r := h.Run(t, args...)
	if r.Code != 1 || !strings.Contains(strings.ToLower(r.Stderr), "host key") {
		t.Fatalf("wrong host keys: exit %d\n%s", r.Code, r.Stderr)
	}
	if len(h.fleet.CallsOf("etcd")) != 0 {
		t.Error("a script ran on a VM with the wrong host key")
	}
	h.fleet.SetFault("", sshfleet.Fault{})
	h.MustRun(t, args...)
	if inv := awscheck.Take(t, h.cfg, "ha-aws", name); inv.Count("instance/etcd") != 1 || inv.Count("instance/cp") != 1 || inv.Count("vpc") != 1 {
		t.Errorf("after resume: %s", inv)
	}
	h.MustRun(t, "delete", "ha-aws", "--name", name, "--region", region, "--yes")
	awscheck.Empty(t, h.cfg, "ha-aws", name)
}

// jammyAMI is an image of the emulator's seed that kforge would not pick
// itself (Ubuntu 22.04).
const jammyAMI = "ami-0a1b2c3d4e5f60004"

// TestHATwoClustersShareAVPC: two clusters in one existing VPC get their
// own subnets; deleting one leaves the other and the VPC.
func TestHATwoClustersShareAVPC(t *testing.T) {
	t.Parallel()
	const region = "sa-east-1"
	h := newHAEnv(t, region)
	ec := ec2.NewFromConfig(h.cfg)
	vpc := userVPC(t, ec, "10.70.0.0/16", true, true)
	before := vpcSnapshot(t, ec, vpc)
	// alpha's workers are Graviton (arm64) VMs; beta runs an image given
	// with --ami.
	extra := map[string][]string{"alpha": {"--wp-size", "t4g.small"}, "beta": {"--ami", jammyAMI}}
	for _, n := range []string{"alpha", "beta"} {
		h.MustRun(t, append([]string{"create", "ha-aws", "--name", n, "--region", region, "--vpc-id", vpc,
			"--control-planes", "1", "--workers", "1", "--etcd", "1", "--ssh-jump", h.jump(), "--ssh-cidr", "10.70.0.0/16"}, extra[n]...)...)
	}
	for role, list := range instances(t, h.cfg, "alpha") {
		want := moto.UbuntuNobleAMD64
		if role == "wp" {
			want = moto.UbuntuNobleARM64
		}
		if got := aws.ToString(list[0].ImageId); got != want {
			t.Errorf("alpha %s runs %s, want %s (image by the instance type's architecture)", role, got, want)
		}
	}
	for role, list := range instances(t, h.cfg, "beta") {
		if got := aws.ToString(list[0].ImageId); got != jammyAMI {
			t.Errorf("beta %s runs %s, want --ami %s", role, got, jammyAMI)
		}
	}
	alpha, beta := awscheck.Take(t, h.cfg, "ha-aws", "alpha"), awscheck.Take(t, h.cfg, "ha-aws", "beta")
	for _, inv := range []awscheck.Inventory{alpha, beta} {
		if inv.Count("vpc") != 0 || inv.Count("subnet") < 2 || inv.Count("instance/cp") != 1 {
			t.Errorf("in a shared VPC: %s", inv)
		}
	}
	h.MustRun(t, "delete", "ha-aws", "--name", "alpha", "--region", region, "--yes")
	awscheck.Empty(t, h.cfg, "ha-aws", "alpha")
	if after := awscheck.Take(t, h.cfg, "ha-aws", "beta"); after.String() != beta.String() {
		t.Errorf("deleting alpha changed beta:\n before %s\n after  %s", beta, after)
	}
	if after := vpcSnapshot(t, ec, vpc); after != before {
		t.Errorf("the shared VPC changed: %s -> %s", before, after)
	}
	h.MustRun(t, "delete", "ha-aws", "--name", "beta", "--region", region, "--yes")
	awscheck.Empty(t, h.cfg, "ha-aws", "beta")
	if _, err := ec.DescribeVpcs(context.Background(), &ec2.DescribeVpcsInput{VpcIds: []string{vpc}}); err != nil {
		t.Errorf("the shared VPC is gone: %v", err)
	}
}

// TestHASSHTimeout: --ssh-timeout bounds the wait for a VM that never
// answers SSH, and the error says how long kforge waited and what to do.
func TestHASSHTimeout(t *testing.T) {
	t.Parallel()
	const name, region = "sshwait", "eu-west-2"
	h := newHAEnv(t, region)
	h.fleet.SetFault("", sshfleet.Fault{RefuseFirst: 1 << 30})
	args := []string{"create", "ha-aws", "--name", name, "--region", region, "--control-planes", "1", "--workers", "1", "--etcd", "1",
		"--ssh-jump", h.jump(), "--ssh-timeout", "12s"}
	r := h.Run(t, args...)
	if r.Code != 1 || !strings.Contains(r.Stderr, "did not answer SSH within 12s") || !strings.Contains(r.Stderr, "Connection refused") {
		t.Fatalf("VMs that never answer: exit %d\n%s", r.Code, r.Stderr)
	}
	if len(h.fleet.Calls()) != 0 {
		t.Error("a script ran on a VM that never answered")
	}
	h.fleet.SetFault("", sshfleet.Fault{})
	h.MustRun(t, "delete", "ha-aws", "--name", name, "--region", region, "--yes")
	awscheck.Empty(t, h.cfg, "ha-aws", name)
}

// TestHASSHSessionsBound: the bootstrap of many VMs goes through one
// connection to the jump host, with at most --ssh-sessions scripts running
// at once on all VMs; without the bound more run at once.
func TestHASSHSessionsBound(t *testing.T) {
	t.Parallel()
	const name, region = "fanout", "ap-south-1"
	h := newHAEnv(t, region)
	// Scripts that take a moment, so that they overlap.
	h.fleet.Handle("wait-ready", func(sshfleet.VM, string, []byte) ([]byte, []byte, int) {
		time.Sleep(300 * time.Millisecond)
		return []byte("ready\n"), nil, 0
	})
	h.MustRun(t, "create", "ha-aws", "--name", name, "--region", region, "--bootstrap", "kubeadm", "--ssh-sessions", "2",
		"--control-planes", "1", "--workers", "4", "--etcd", "1", "--ssh-cidr", "10.0.0.0/8", "--ssh-jump", h.jump())
	if n := h.fleet.MaxRunning(); n != 2 {
		t.Errorf("at most %d scripts ran at once with --ssh-sessions 2, want 2", n)
	}
	if n := h.fleet.JumpLogins(); n != 1 {
		t.Errorf("%d connections to the jump host, want 1 (every VM's session over it)", n)
	}
	// The default bound lets the 7 VMs' readiness checks overlap.
	h.MustRun(t, "scale", "ha-aws", "--name", name, "--region", region, "--workers", "8", "--ssh-sessions", "32")
	if n := h.fleet.MaxRunning(); n <= 2 {
		t.Errorf("at most %d scripts ran at once with --ssh-sessions 32", n)
	}
	if r := h.Run(t, "scale", "ha-aws", "--name", name, "--region", region, "--workers", "4", "--ssh-sessions", "0"); r.Code != 2 {
		t.Errorf("--ssh-sessions 0: exit %d, want 2", r.Code)
	}
	h.MustRun(t, "delete", "ha-aws", "--name", name, "--region", region, "--yes")
	awscheck.Empty(t, h.cfg, "ha-aws", name)
}
