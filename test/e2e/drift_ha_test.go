package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/test/testutil/awscheck"
	"github.com/kforge/kforge/test/testutil/kforgebin"
	"github.com/kforge/kforge/test/testutil/sshfleet"
)

// diffOut is what `kforge diff -o json` prints.
type diffOut struct {
	InSync  bool `json:"inSync"`
	Changes []struct {
		Step, Title, Kind, Detail string
	} `json:"changes"`
}

// diff runs `kforge diff ha-aws` and decodes its JSON; want is the exit
// code.
func (h *haEnv) diff(t *testing.T, name, region string, want int) diffOut {
	t.Helper()
	return runDiff(t, h.Env, "ha-aws", name, region, want)
}

// runDiff runs `kforge diff` and decodes its JSON; want is the exit code.
func runDiff(t *testing.T, env *kforgebin.Env, typ, name, region string, want int) diffOut {
	t.Helper()
	r := env.Run(t, "diff", typ, "--name", name, "--region", region, "-o", "json")
	if r.Code != want {
		t.Fatalf("kforge diff: exit %d, want %d\n%s\n%s", r.Code, want, r.Stdout, r.Stderr)
	}
	var d diffOut
	if err := json.Unmarshal([]byte(r.Stdout), &d); err != nil {
		t.Fatalf("kforge diff -o json: %v\n%s", err, r.Stdout)
	}
	return d
}

// infoCheck is the "check" of `kforge info -o json`.
type infoCheck struct {
	InSync    bool `json:"inSync"`
	Reruns    int  `json:"reruns"`
	Error     string
	Resources []struct{ Step, Status, Detail string }
}

func (c infoCheck) status(step string) string {
	for _, r := range c.Resources {
		if r.Step == step {
			return r.Status
		}
	}
	return ""
}

func (h *haEnv) infoCheck(t *testing.T, name, region string) infoCheck {
	t.Helper()
	var info struct{ Check *infoCheck }
	r := h.MustRun(t, "info", "ha-aws", "--name", name, "--region", region, "-o", "json")
	if err := json.Unmarshal([]byte(r.Stdout), &info); err != nil || info.Check == nil {
		t.Fatalf("kforge info -o json: %v\n%s", err, r.Stdout)
	}
	if info.Check.Error != "" {
		t.Fatalf("kforge info could not check: %s", info.Check.Error)
	}
	return *info.Check
}

// change finds the change of a step in a diff.
func (d diffOut) change(step string) (kind, detail string, ok bool) {
	for _, c := range d.Changes {
		if c.Step == step {
			return c.Kind, c.Detail, true
		}
	}
	return "", "", false
}

// vmByName returns the live instance with a Name tag.
func vmByName(t *testing.T, cfg aws.Config, name string) ec2types.Instance {
	t.Helper()
	out, err := ec2.NewFromConfig(cfg).DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{
		{Name: aws.String("tag:Name"), Values: []string{name}},
		{Name: aws.String("instance-state-name"), Values: []string{"pending", "running", "stopping", "stopped"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var found []ec2types.Instance
	for _, r := range out.Reservations {
		found = append(found, r.Instances...)
	}
	if len(found) != 1 {
		t.Fatalf("%d live instances named %s, want 1", len(found), name)
	}
	return found[0]
}

// callsAfter returns the recipes the fleet ran from call n on, on the VM of
// an instance.
func recipesOn(fleet *sshfleet.Fleet, instanceID string) []string {
	var out []string
	for _, c := range fleet.CallsFor(instanceID) {
		out = append(out, c.Recipe)
	}
	return out
}

// TestHADriftRepaired makes drift of each kind outside kforge in a kubeadm
// cluster of 9 VMs: `kforge diff` names it, `kforge create` (the same
// command) repairs it, `kforge diff` is then clean, and the AWS API shows
// the same inventory as after the create. A reconcile of the unchanged
// cluster makes no mutating call and at most one call of each look-up.
func TestHADriftRepaired(t *testing.T) {
	t.Parallel()
	const name, region = "drifty", "eu-west-3"
	h := newHAEnv(t, region)
	ctx := context.Background()
	ec := ec2.NewFromConfig(h.cfg)
	create := []string{"create", "ha-aws", "--name", name, "--region", region, "--bootstrap", "kubeadm",
		"--etcd", "3", "--control-planes", "2", "--workers", "3", "--ssh-cidr", "10.0.0.0/8", "--ssh-jump", h.jump()}
	h.MustRun(t, create...)
	before := awscheck.Take(t, h.cfg, "ha-aws", name)
	if d := h.diff(t, name, region, 0); !d.InSync || len(d.Changes) != 0 {
		t.Fatalf("a fresh cluster is not in sync: %+v", d)
	}

	t.Run("unchanged reconcile: no change, one look-up of each kind", func(t *testing.T) {
		trace := filepath.Join(t.TempDir(), "trace.jsonl")
		env := *h.Env
		env.Extra = append(append([]string(nil), h.Extra...), "KFORGE_AWS_TRACE="+trace)
		calls := len(h.fleet.Calls())
		env.MustRun(t, append(create, "--skip-preflight")...)
		if n := len(h.fleet.Calls()) - calls; n != 0 {
			t.Errorf("an unchanged reconcile ran %d scripts on the VMs", n)
		}
		f, err := os.Open(trace)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		seen := map[string]int{}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var rec awsx.TraceRecord
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				t.Fatal(err)
			}
			op := rec.Service + ":" + rec.Operation
			if !strings.HasPrefix(rec.Operation, "Describe") && !strings.HasPrefix(rec.Operation, "Get") && !strings.HasPrefix(rec.Operation, "List") {
				t.Errorf("an unchanged reconcile called %s (step %s)", op, rec.Step)
			}
			if rec.Attempt <= 1 {
				seen[op]++
			}
		}
		for op, n := range seen {
			if strings.HasPrefix(op, "EC2:Describe") && n > 1 {
				t.Errorf("%s was called %d times, want at most once", op, n)
			}
			if strings.HasPrefix(op, "IAM:") && n > 2 {
				t.Errorf("%s was called %d times, want at most once per role", op, n)
			}
		}
		t.Logf("calls of an unchanged reconcile: %v", seen)
	})

	repair := func(t *testing.T, wantChanges map[string]string) {
		t.Helper()
		d := h.diff(t, name, region, 1)
		for step, detail := range wantChanges {
			_, got, ok := d.change(step)
			if !ok || !strings.Contains(got, detail) {
				t.Errorf("diff does not name %s with %q: %+v", step, detail, d.Changes)
			}
		}
		r := h.MustRun(t, create...)
		if !strings.Contains(r.Stderr, "drift") {
			t.Errorf("the repair shows no drift line:\n%s", r.Stderr)
		}
		h.diff(t, name, region, 0)
		if check := h.infoCheck(t, name, region); !check.InSync || len(check.Resources) == 0 {
			t.Errorf("info after the repair: %+v", check)
		} else {
			for _, r := range check.Resources {
				if r.Status != "found as recorded" {
					t.Errorf("info after the repair: %s is %s (%s)", r.Step, r.Status, r.Detail)
				}
			}
		}
		after := awscheck.Take(t, h.cfg, "ha-aws", name)
		for _, kind := range []string{"vpc", "subnet", "igw", "rtb", "sg", "instance", "role", "instance-profile"} {
			if after.Count(kind) != before.Count(kind) {
				t.Errorf("%s: %d after the repair, %d after the create", kind, after.Count(kind), before.Count(kind))
			}
		}
	}

	// oldNodes are the node names (private DNS names) of the VMs
	// terminated, by VM label ("cp-1").
	oldNodes := map[string]string{}
	terminate := func(t *testing.T, vms ...string) map[string]ec2types.Instance {
		old := map[string]ec2types.Instance{}
		var ids []string
		for _, vm := range vms {
			in := vmByName(t, h.cfg, vm)
			old[vm] = in
			oldNodes[strings.TrimPrefix(vm, name+"-")] = aws.ToString(in.PrivateDnsName)
			ids = append(ids, aws.ToString(in.InstanceId))
		}
		if _, err := ec.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids}); err != nil {
			t.Fatal(err)
		}
		return old
	}
	replaced := func(t *testing.T, old ec2types.Instance, vm string) ec2types.Instance {
		t.Helper()
		now := vmByName(t, h.cfg, vm)
		if aws.ToString(now.InstanceId) == aws.ToString(old.InstanceId) {
			t.Fatalf("%s was not replaced", vm)
		}
		// Same slot, same subnet; a new address (only the load balancer,
		// the cluster's endpoint, keeps its own).
		if aws.ToString(now.SubnetId) != aws.ToString(old.SubnetId) {
			t.Errorf("%s came back in %s, want its subnet %s", vm, aws.ToString(now.SubnetId), aws.ToString(old.SubnetId))
		}
		return now
	}

	// forgotten returns the nodes deleted from Kubernetes (drain-node for a
	// replaced VM) from call mark on, by the VM that ran it.
	forgotten := func(mark int) []string {
		var out []string
		for _, c := range h.fleet.Calls()[mark:] {
			if c.Recipe == "drain-node" && strings.Contains(c.Text(), "its VM was replaced") {
				for vm, node := range oldNodes {
					if node != "" && strings.Contains(c.Text(), "node='"+node+"'") {
						out = append(out, c.VM.Name+":"+vm)
					}
				}
			}
		}
		slices.Sort(out)
		return out
	}

	t.Run("a worker and a control plane terminated", func(t *testing.T) {
		old := terminate(t, name+"-wp-1", name+"-cp-1")
		mark := len(h.fleet.Calls())
		// kforge info says, per resource, what was found.
		check := h.infoCheck(t, name, region)
		if check.InSync || check.status("vm/wp/1") != "recreate" || check.status("vm/cp/1") != "recreate" || check.status("vm/wp/0") != "found as recorded" ||
			check.status("vpc") != "found as recorded" || check.Reruns == 0 {
			t.Errorf("info after two VMs were terminated: %+v", check)
		}
		if r := h.MustRun(t, "info", "ha-aws", "--name", name, "--region", region); !strings.Contains(r.Stdout, "vm/wp/1") ||
			!strings.Contains(r.Stdout, "terminated outside kforge") || !strings.Contains(r.Stdout, "drift found") {
			t.Errorf("kforge info does not name the drift:\n%s", r.Stdout)
		}
		repair(t, map[string]string{"vm/wp/1": "terminated outside kforge", "vm/cp/1": "terminated outside kforge"})
		wp := replaced(t, old[name+"-wp-1"], name+"-wp-1")
		cp := replaced(t, old[name+"-cp-1"], name+"-cp-1")
		if got := recipesOn(h.fleet, aws.ToString(wp.InstanceId)); !slices.Contains(got, "kubeadm-join-worker") {
			t.Errorf("the new worker ran %v, not a kubeadm join", got)
		}
		if got := recipesOn(h.fleet, aws.ToString(cp.InstanceId)); !slices.Contains(got, "kubeadm-join-cp") {
			t.Errorf("the new control plane ran %v, not a control-plane join", got)
		}
		// Their old nodes (named by the old VMs' private DNS names) are
		// deleted from Kubernetes (on the first control plane) before the
		// new VMs join under their own.
		if got := forgotten(mark); !slices.Equal(got, []string{name + "-cp-0:cp-1", name + "-cp-0:wp-1"}) {
			t.Errorf("old nodes deleted: %v; want cp-1 and wp-1, on cp-0", got)
		}
	})

	t.Run("an etcd VM terminated", func(t *testing.T) {
		old := terminate(t, name+"-etcd-1")
		helper := vmByName(t, h.cfg, name+"-etcd-2")
		mark := len(h.fleet.Calls())
		repair(t, map[string]string{"vm/etcd/1": "terminated outside kforge"})
		etcd := replaced(t, old[name+"-etcd-1"], name+"-etcd-1")
		// On a healthy member, the old member is removed and the new one
		// added, before the new one starts (as an existing member).
		replaceAt, startAt := -1, -1
		for i, c := range h.fleet.Calls()[mark:] {
			switch {
			case c.VM.InstanceID == aws.ToString(helper.InstanceId) && c.Recipe == "etcd-replace-member":
				replaceAt = i
				if !strings.Contains(string(c.Stdin), "member remove") || !strings.Contains(string(c.Stdin), "member add") {
					t.Errorf("the replacement does not remove and add the member")
				}
			case c.VM.InstanceID == aws.ToString(etcd.InstanceId) && c.Recipe == "etcd":
				startAt = i
				if !strings.Contains(c.Text(), "initial-cluster-state: existing") {
					t.Errorf("the new member does not join as an existing member")
				}
			}
		}
		if replaceAt < 0 || startAt < 0 || replaceAt > startAt {
			t.Errorf("member replaced at call %d, new member started at call %d: want the replacement first", replaceAt, startAt)
		}
		// The new member has a new address: every API server, one after
		// the other, and the configuration joins read, follow it.
		newURL := "https://" + aws.ToString(etcd.PrivateIpAddress) + ":2379"
		var servers []string
		refreshed := false
		for _, c := range h.fleet.Calls()[mark:] {
			switch c.Recipe {
			case "kubeadm-etcd-servers":
				if !strings.Contains(c.Text(), newURL) || strings.Contains(c.Text(), "https://"+aws.ToString(old[name+"-etcd-1"].PrivateIpAddress)+":2379") {
					t.Errorf("etcd-servers on %s does not name the new member %s only", c.VM.Name, newURL)
				}
				servers = append(servers, c.VM.Name)
			case "kubeadm-refresh-join":
				refreshed = refreshed || (strings.Contains(c.Text(), "upload-config kubeadm") && strings.Contains(c.Text(), newURL))
			}
		}
		if !slices.Equal(servers, []string{name + "-cp-0", name + "-cp-1"}) {
			t.Errorf("the API servers were pointed at the new member on %v, want cp-0 then cp-1", servers)
		}
		if !refreshed {
			t.Errorf("the kubeadm configuration in the cluster was not uploaded again with the new member")
		}
	})

	t.Run("a security group rule revoked", func(t *testing.T) {
		lb := vmByName(t, h.cfg, name+"-lb-0")
		group := aws.ToString(lb.SecurityGroups[0].GroupId)
		_, err := ec.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: aws.String(group), IpPermissions: []ec2types.IpPermission{{
			IpProtocol: aws.String("tcp"), FromPort: aws.Int32(6443), ToPort: aws.Int32(6443), IpRanges: []ec2types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		repair(t, map[string]string{"sg-rules/lb": "tcp/6443 from 0.0.0.0/0 is missing"})
		out, err := ec.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{group}})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, p := range out.SecurityGroups[0].IpPermissions {
			for _, r := range p.IpRanges {
				found = found || (aws.ToInt32(p.FromPort) == 6443 && aws.ToString(r.CidrIp) == "0.0.0.0/0")
			}
		}
		if !found {
			t.Errorf("the API rule of the load balancer was not put back")
		}
	})

	t.Run("an instance profile deleted", func(t *testing.T) {
		ic := iam.NewFromConfig(h.cfg)
		profile := aws.String("kforge-" + name + "-ha-wp")
		old, err := ic.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: profile})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ic.RemoveRoleFromInstanceProfile(ctx, &iam.RemoveRoleFromInstanceProfileInput{InstanceProfileName: profile, RoleName: profile}); err != nil {
			t.Fatal(err)
		}
		if _, err := ic.DeleteInstanceProfile(ctx, &iam.DeleteInstanceProfileInput{InstanceProfileName: profile}); err != nil {
			t.Fatal(err)
		}
		repair(t, map[string]string{"role/wp": "instance profile kforge-" + name + "-ha-wp was deleted outside kforge"})
		now, err := ic.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: profile})
		if err != nil {
			t.Fatalf("the instance profile was not made again: %v", err)
		}
		p := now.InstanceProfile
		if aws.ToString(p.InstanceProfileId) == aws.ToString(old.InstanceProfile.InstanceProfileId) || len(p.Roles) != 1 || aws.ToString(p.Roles[0].RoleName) != *profile {
			t.Errorf("instance profile after the repair: id %s (was %s), roles %d; want a new one holding the role",
				aws.ToString(p.InstanceProfileId), aws.ToString(old.InstanceProfile.InstanceProfileId), len(p.Roles))
		}
		if tags := iamTags(p.Tags); tags["kforge.io/cluster"] != name || tags["kforge.io/type"] != "ha-aws" {
			t.Errorf("the new instance profile is not tagged for the cluster: %v", tags)
		}
		// Every worker runs with the new profile.
		for i := range 3 {
			vm := vmByName(t, h.cfg, fmt.Sprintf("%s-wp-%d", name, i))
			out, err := ec.DescribeIamInstanceProfileAssociations(ctx, &ec2.DescribeIamInstanceProfileAssociationsInput{
				Filters: []ec2types.Filter{{Name: aws.String("instance-id"), Values: []string{aws.ToString(vm.InstanceId)}}}})
			if err != nil {
				t.Fatal(err)
			}
			ok := false
			for _, a := range out.IamInstanceProfileAssociations {
				ok = ok || (a.State == ec2types.IamInstanceProfileAssociationStateAssociated && aws.ToString(a.IamInstanceProfile.Id) == aws.ToString(p.InstanceProfileId))
			}
			if !ok {
				t.Errorf("%s is not associated with the new instance profile: %+v", aws.ToString(vm.InstanceId), out.IamInstanceProfileAssociations)
			}
		}
	})

	t.Run("a subnet route deleted", func(t *testing.T) {
		out, err := ec.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{Filters: []ec2types.Filter{
			{Name: aws.String("tag:kforge.io/cluster"), Values: []string{name}}, {Name: aws.String("tag:kforge.io/region"), Values: []string{region}}}})
		if err != nil || len(out.RouteTables) != 1 {
			t.Fatalf("route tables of the cluster: %v, %d", err, len(out.RouteTables))
		}
		rtb := out.RouteTables[0].RouteTableId
		if _, err := ec.DeleteRoute(ctx, &ec2.DeleteRouteInput{RouteTableId: rtb, DestinationCidrBlock: aws.String("0.0.0.0/0")}); err != nil {
			t.Fatal(err)
		}
		repair(t, map[string]string{"rtb/route": "route 0.0.0.0/0 of " + aws.ToString(rtb)})
		out, err = ec.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{RouteTableIds: []string{aws.ToString(rtb)}})
		if err != nil {
			t.Fatal(err)
		}
		routed := 0
		for _, r := range out.RouteTables[0].Routes {
			if aws.ToString(r.DestinationCidrBlock) == "0.0.0.0/0" && strings.HasPrefix(aws.ToString(r.GatewayId), "igw-") {
				routed++
			}
		}
		if routed != 1 {
			t.Errorf("%d default routes to the internet gateway after the repair, want 1", routed)
		}
	})

	t.Run("the first control plane terminated", func(t *testing.T) {
		old := terminate(t, name+"-cp-0")
		cp1 := vmByName(t, h.cfg, name+"-cp-1")
		mark := len(h.fleet.Calls())
		repair(t, map[string]string{"vm/cp/0": "terminated outside kforge"})
		cp0 := replaced(t, old[name+"-cp-0"], name+"-cp-0")
		// The cluster lives on in etcd: the new first control plane joins
		// it (certificates uploaded again from the second), never inits.
		var got []string
		for _, c := range h.fleet.Calls()[mark:] {
			switch c.VM.InstanceID {
			case aws.ToString(cp0.InstanceId):
				got = append(got, "cp-0:"+c.Recipe)
			case aws.ToString(cp1.InstanceId):
				got = append(got, "cp-1:"+c.Recipe)
			}
		}
		if f := forgotten(mark); !slices.Equal(f, []string{name + "-cp-1:cp-0"}) {
			t.Errorf("old nodes deleted: %v; want cp-0, on cp-1", f)
		}
		if slices.Contains(got, "cp-0:kubeadm-init") || !slices.Contains(got, "cp-1:kubeadm-refresh-join") || !slices.Contains(got, "cp-0:kubeadm-join-cp") {
			t.Errorf("the new first control plane ran %v; want a refresh on cp-1, then a control-plane join, and no init", got)
		}
	})

	h.MustRun(t, "delete", "ha-aws", "--name", name, "--region", region, "--yes")
	awscheck.Empty(t, h.cfg, "ha-aws", name)
}

func iamTags(tags []iamtypes.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}
