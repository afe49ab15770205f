package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kforge/kforge/test/testutil/awscheck"
	"github.com/kforge/kforge/test/testutil/kforgebin"
	"github.com/kforge/kforge/test/testutil/moto"
	"github.com/kforge/kforge/test/testutil/sshfleet"
)

// haEnv is a kforge environment with an SSH fleet as jump host, its key in
// known_hosts, and an admin kubeconfig answered by the first control plane.
type haEnv struct {
	*kforgebin.Env
	fleet *sshfleet.Fleet
	cfg   aws.Config
}

func newHAEnv(t *testing.T, region string) *haEnv {
	t.Helper()
	cfg := emu.Config(t, region)
	fleet := sshfleet.Start(t, sshfleet.Options{AWS: &cfg, AuthorizeKeyPairs: true})
	env := kforgebin.NewEnv(t, emu.Env()...)
	fleet.ServeKforge(t, env.Home)
	return &haEnv{Env: env, fleet: fleet, cfg: cfg}
}

func (h *haEnv) jump() string { return h.fleet.Jump("ubuntu") }

// instances returns the cluster's live instances by role.
func instances(t *testing.T, cfg aws.Config, name string) map[string][]ec2types.Instance {
	t.Helper()
	out, err := ec2.NewFromConfig(cfg).DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{
		{Name: aws.String("tag:kforge.io/cluster"), Values: []string{name}},
		{Name: aws.String("instance-state-name"), Values: []string{"pending", "running"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]ec2types.Instance{}
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			role := tagMap(in.Tags)["kforge.io/role"]
			m[role] = append(m[role], in)
		}
	}
	for _, l := range m {
		sort.Slice(l, func(i, j int) bool { return tagMap(l[i].Tags)["Name"] < tagMap(l[j].Tags)["Name"] })
	}
	return m
}

func privateIPs(l []ec2types.Instance) []string {
	var ips []string
	for _, in := range l {
		ips = append(ips, aws.ToString(in.PrivateIpAddress))
	}
	sort.Strings(ips)
	return ips
}

func TestHAK3sLifecycle(t *testing.T) {
	t.Parallel()
	const name, region = "prod", "eu-west-1"
	h := newHAEnv(t, region)
	ctx := context.Background()
	ec := ec2.NewFromConfig(h.cfg)

	h.MustRun(t, "create", "ha-aws", "--name", name, "--region", region, "--bootstrap", "k3s",
		"--control-planes", "3", "--workers", "2", "--etcd", "3", "--ssh-cidr", "10.20.0.0/16", "--ssh-jump", h.jump())

	byRole := instances(t, h.cfg, name)
	for role, n := range map[string]int{"etcd": 3, "lb": 1, "cp": 3, "wp": 2} {
		if len(byRole[role]) != n {
			t.Errorf("%d %s instances, want %d", len(byRole[role]), role, n)
		}
	}
	zones := map[string]bool{}   // of the etcd members
	cpZones := map[string]bool{} // of the control planes
	for role, list := range byRole {
		for _, in := range list {
			id := aws.ToString(in.InstanceId)
			checkTags(t, id, tagMap(in.Tags), "ha-aws", name, region, true)
			if in.MetadataOptions == nil || in.MetadataOptions.HttpTokens != ec2types.HttpTokensStateRequired {
				t.Errorf("%s: IMDSv2 not required: %+v", id, in.MetadataOptions)
			}
			if aws.ToString(in.ImageId) != moto.UbuntuNobleAMD64 {
				t.Errorf("%s runs %s, want the newest Canonical Ubuntu 24.04 amd64 image %s", id, aws.ToString(in.ImageId), moto.UbuntuNobleAMD64)
			}
			if aws.ToString(in.KeyName) != "kforge-"+name {
				t.Errorf("%s key pair %s", id, aws.ToString(in.KeyName))
			}
			hasProfile := in.IamInstanceProfile != nil
			if want := role == "cp" || role == "wp"; hasProfile != want {
				t.Errorf("%s (%s) instance profile %v, want %v", id, role, in.IamInstanceProfile, want)
			} else if hasProfile && !strings.HasSuffix(aws.ToString(in.IamInstanceProfile.Arn), "/kforge-"+name+"-ha-"+role) {
				t.Errorf("%s instance profile %s", id, aws.ToString(in.IamInstanceProfile.Arn))
			}
			for _, bd := range in.BlockDeviceMappings {
				vols, err := ec.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{aws.ToString(bd.Ebs.VolumeId)}})
				if err != nil {
					t.Fatal(err)
				}
				v := vols.Volumes[0]
				if !aws.ToBool(v.Encrypted) || v.VolumeType != ec2types.VolumeTypeGp3 {
					t.Errorf("%s volume %s encrypted=%v type=%s", id, aws.ToString(v.VolumeId), aws.ToBool(v.Encrypted), v.VolumeType)
				}
			}
			switch role {
			case "etcd":
				zones[aws.ToString(in.Placement.AvailabilityZone)] = true
			case "cp":
				cpZones[aws.ToString(in.Placement.AvailabilityZone)] = true
			}
		}
	}
	if len(zones) != 3 {
		t.Errorf("etcd members in %d zones, want 3 (one zone lost must not lose quorum)", len(zones))
	}
	if len(cpZones) != 3 {
		t.Errorf("control planes in %d zones, want 3 (one per zone)", len(cpZones))
	}

	// Security groups: the only rules open to the world are 6443 on the LB.
	sgs, err := ec.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{{Name: aws.String("tag:kforge.io/cluster"), Values: []string{name}}}})
	if err != nil {
		t.Fatal(err)
	}
	groupRole := map[string]string{}
	for _, g := range sgs.SecurityGroups {
		groupRole[aws.ToString(g.GroupId)] = tagMap(g.Tags)["kforge.io/role"]
	}
	type src struct {
		proto    string
		from, to int32
		source   string
	}
	got := map[string][]src{}
	for _, g := range sgs.SecurityGroups {
		role := tagMap(g.Tags)["kforge.io/role"]
		for _, p := range g.IpPermissions {
			for _, r := range p.IpRanges {
				got[role] = append(got[role], src{aws.ToString(p.IpProtocol), aws.ToInt32(p.FromPort), aws.ToInt32(p.ToPort), aws.ToString(r.CidrIp)})
			}
			for _, u := range p.UserIdGroupPairs {
				got[role] = append(got[role], src{aws.ToString(p.IpProtocol), aws.ToInt32(p.FromPort), aws.ToInt32(p.ToPort), "sg:" + groupRole[aws.ToString(u.GroupId)]})
			}
		}
	}
	want := map[string][]src{
		"lb":   {{"tcp", 6443, 6443, "0.0.0.0/0"}, {"tcp", 22, 22, "10.20.0.0/16"}},
		"etcd": {{"tcp", 2379, 2379, "sg:cp"}, {"tcp", 2379, 2379, "sg:etcd"}, {"tcp", 2380, 2380, "sg:etcd"}, {"tcp", 22, 22, "10.20.0.0/16"}},
		"cp": {{"tcp", 6443, 6443, "sg:lb"}, {"tcp", 6443, 6443, "sg:cp"}, {"tcp", 6443, 6443, "sg:wp"}, {"tcp", 10250, 10250, "sg:cp"}, {"tcp", 10250, 10250, "sg:wp"},
			{"udp", 8472, 8472, "sg:cp"}, {"udp", 8472, 8472, "sg:wp"}, {"tcp", 22, 22, "10.20.0.0/16"}},
		"wp": {{"tcp", 10250, 10250, "sg:cp"}, {"tcp", 10250, 10250, "sg:wp"}, {"udp", 8472, 8472, "sg:cp"}, {"udp", 8472, 8472, "sg:wp"},
			{"tcp", 30000, 32767, "sg:lb"}, {"tcp", 30000, 32767, "sg:cp"}, {"tcp", 30000, 32767, "sg:wp"}, {"tcp", 22, 22, "10.20.0.0/16"}},
	}
	key := func(s src) string { return fmt.Sprintf("%s/%d-%d<-%s", s.proto, s.from, s.to, s.source) }
	for role, w := range want {
		var a, b []string
		for _, s := range got[role] {
			a = append(a, key(s))
		}
		for _, s := range w {
			b = append(b, key(s))
		}
		sort.Strings(a)
		sort.Strings(b)
		if !slices.Equal(a, b) {
			t.Errorf("rules of %s:\n got  %v\n want %v", role, a, b)
		}
	}

	// What each VM was asked to do.
	lb := byRole["lb"][0]
	lbPrivate, lbPublic := aws.ToString(lb.PrivateIpAddress), aws.ToString(lb.PublicIpAddress)
	etcdIPs := privateIPs(byRole["etcd"])
	for _, c := range h.fleet.CallsOf("etcd") {
		for _, ip := range etcdIPs {
			if !strings.Contains(c.Text(), "https://"+ip+":2380") {
				t.Errorf("etcd script on %s does not name peer %s", c.VM.Name, ip)
			}
		}
		if !strings.Contains(c.Text(), "client-cert-auth: true") {
			t.Errorf("etcd script on %s does not require client certificates", c.VM.Name)
		}
	}
	if n := len(h.fleet.CallsOf("etcd")); n != 3 {
		t.Errorf("etcd installed %d times, want 3", n)
	}
	if n := len(h.fleet.CallsOf("etcd-health")); n != 1 {
		t.Errorf("etcd health checked %d times", n)
	}
	hp := h.fleet.CallsOf("haproxy")
	if len(hp) != 1 || hp[0].VM.Role != "lb" {
		t.Fatalf("haproxy calls: %d", len(hp))
	}
	for _, ip := range privateIPs(byRole["cp"]) {
		if !strings.Contains(hp[0].Text(), ip+":6443") {
			t.Errorf("HAProxy backends miss control plane %s", ip)
		}
	}
	servers := h.fleet.CallsOf("k3s-server")
	if len(servers) != 3 {
		t.Errorf("%d k3s servers, want 3", len(servers))
	}
	joined := 0
	for _, c := range servers {
		if strings.Contains(c.Text(), "https://"+lbPrivate+":6443") {
			joined++
		}
		if !strings.Contains(c.Text(), lbPublic) {
			t.Errorf("k3s server %s: the LB public IP is not a TLS SAN", c.VM.Name)
		}
	}
	if joined < 2 {
		t.Errorf("%d k3s servers joined through the load balancer, want >= 2", joined)
	}
	agents := h.fleet.CallsOf("k3s-agent")
	if len(agents) != 2 {
		t.Errorf("%d k3s agents, want 2", len(agents))
	}
	for _, c := range agents {
		if !strings.Contains(c.Text(), "https://"+lbPrivate+":6443") {
			t.Errorf("k3s agent %s does not join through the load balancer", c.VM.Name)
		}
	}

	// switch writes the admin kubeconfig with the LB's public address.
	out := h.MustRun(t, "switch", "ha-aws", "--name", name, "--region", region)
	if strings.TrimSpace(out.Stdout) != "kforge-ha-aws-prod-eu-west-1" {
		t.Errorf("switch printed %q", out.Stdout)
	}
	conf, err := clientcmd.LoadFromFile(filepath.Join(h.Home, "kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	if s := conf.Clusters["kforge-ha-aws-prod-eu-west-1"].Server; s != "https://"+lbPublic+":6443" {
		t.Errorf("kubeconfig server %s, want https://%s:6443", s, lbPublic)
	}

	// info lists instances with roles, addresses and availability zones,
	// the zones the emulator reports for them (as JSON and as a table).
	var info struct {
		Instances []struct{ ID, Role, Zone, PrivateIP, PublicIP string } `json:"instances"`
	}
	if err := json.Unmarshal([]byte(h.MustRun(t, "info", "ha-aws", "--name", name, "--region", region, "-o", "json").Stdout), &info); err != nil {
		t.Fatal(err)
	}
	if len(info.Instances) != 9 {
		t.Errorf("info lists %d instances", len(info.Instances))
	}
	zoneOf := map[string]string{} // instance ID -> the emulator's zone
	for _, l := range byRole {
		for _, in := range l {
			zoneOf[aws.ToString(in.InstanceId)] = aws.ToString(in.Placement.AvailabilityZone)
		}
	}
	for _, in := range info.Instances {
		if want, ok := zoneOf[in.ID]; !ok || want == "" || in.Zone != want {
			t.Errorf("info -o json: %s %s in zone %q, want %q", in.Role, in.ID, in.Zone, want)
		}
	}
	table := h.MustRun(t, "info", "ha-aws", "--name", name, "--region", region).Stdout
	for id, zone := range zoneOf {
		found := false
		for _, line := range strings.Split(table, "\n") {
			// ROLE NAME ID ZONE PRIVATE-IP PUBLIC-IP
			if f := strings.Fields(line); len(f) >= 4 && f[2] == id {
				found = true
				if f[3] != zone {
					t.Errorf("info: %s in zone %q, want %q:\n%s", id, f[3], zone, line)
				}
			}
		}
		if !found {
			t.Errorf("info does not list instance %s:\n%s", id, table)
		}
	}

	// Scale up, then down: the newest workers are drained, then terminated.
	h.MustRun(t, "scale", "ha-aws", "--name", name, "--region", region, "--workers", "3")
	scaled := instances(t, h.cfg, name)["wp"]
	if len(scaled) != 3 {
		t.Fatalf("%d workers after scale up", len(scaled))
	}
	// Nodes are named by their VMs' private DNS names.
	wantDrained := []string{aws.ToString(scaled[1].PrivateDnsName), aws.ToString(scaled[2].PrivateDnsName)}
	sort.Strings(wantDrained)
	h.MustRun(t, "scale", "ha-aws", "--name", name, "--region", region, "--workers", "1")
	wps := instances(t, h.cfg, name)["wp"]
	if len(wps) != 1 || tagMap(wps[0].Tags)["Name"] != "prod-wp-0" {
		t.Errorf("after scale down: %d workers", len(wps))
	}
	var drained []string
	for _, c := range h.fleet.CallsOf("drain-node") {
		for _, n := range wantDrained {
			if strings.Contains(c.Text(), "'"+n+"'") {
				drained = append(drained, n)
			}
		}
		if c.VM.Role != "cp" {
			t.Errorf("drain ran on %s, not on a control plane", c.VM.Role)
		}
	}
	sort.Strings(drained)
	if !slices.Equal(drained, wantDrained) || wantDrained[0] == "" {
		t.Errorf("drained %v, want %v", drained, wantDrained)
	}

	h.MustRun(t, "delete", "ha-aws", "--name", name, "--region", region, "--yes")
	awscheck.Empty(t, h.cfg, "ha-aws", name)
}

var _ = os.Getenv
