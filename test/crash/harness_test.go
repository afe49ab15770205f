package crash

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kforge/kforge/test/testutil/awscheck"
	"github.com/kforge/kforge/test/testutil/faultproxy"
	"github.com/kforge/kforge/test/testutil/kforgebin"
	"github.com/kforge/kforge/test/testutil/sshfleet"
)

// Cluster types and the regions their tests use.
const (
	typeEKS  = "aws"
	typeHA   = "ha-aws"
	regionAW = "us-east-1"
	regionHA = "eu-west-1"
)

// names makes every cluster name of the package unique, so tests share
// emulators.
var names atomic.Int64

// cluster is one cluster of a test, created by kforge processes that
// reach the emulator through the worker's proxy.
type cluster struct {
	t      *testing.T
	w      *worker
	typ    string
	name   string
	region string
	env    *kforgebin.Env
	cfg    aws.Config // straight to the emulator, for assertions
	fleet  *sshfleet.Fleet
	// extra are the create flags besides type, name and region.
	extra []string
}

// haWorkers is the worker count of an ha-aws test cluster.
const haWorkers = 4

// newCluster prepares a cluster of type typ on worker w: a small one (one
// etcd, one control plane, haWorkers workers for ha-aws; two nodes for
// aws), an SSH fleet as jump host for ha-aws.
func newCluster(t *testing.T, w *worker, typ string) *cluster {
	t.Helper()
	c := &cluster{t: t, w: w, typ: typ, name: fmt.Sprintf("%s%d", map[string]string{typeEKS: "e", typeHA: "h"}[typ], names.Add(1))}
	env := append(w.emu.Env(), "AWS_ENDPOINT_URL="+w.px.URL)
	c.env = kforgebin.NewEnv(t, env...)
	c.env.Timeout = 4 * time.Minute
	switch typ {
	case typeEKS:
		c.region = regionAW
		c.cfg = w.emu.Config(t, c.region)
		c.extra = []string{"--nodes", "2"}
	case typeHA:
		c.region = regionHA
		c.cfg = w.emu.Config(t, c.region)
		c.fleet = sshfleet.Start(t, sshfleet.Options{AWS: &c.cfg, AuthorizeKeyPairs: true})
		c.fleet.ServeKforge(t, c.env.Home)
		// Four workers: 0 and 3 share the first zone's subnet, so they
		// launch in one batch (one RunInstances, then a CreateTags each).
		c.extra = []string{"--bootstrap", "k3s", "--control-planes", "1", "--workers", fmt.Sprint(haWorkers), "--etcd", "1",
			"--ssh-cidr", "10.0.0.0/8", "--ssh-jump", c.fleet.Jump("ubuntu")}
	}
	return c
}

// ref is the cluster's type, name and region as flags.
func (c *cluster) ref() []string { return []string{c.typ, "--name", c.name, "--region", c.region} }

// createArgs is the command line of the cluster's create.
func (c *cluster) createArgs() []string {
	return append(append([]string{"create"}, c.ref()...), c.extra...)
}

// deleteArgs is the command line of the cluster's delete.
func (c *cluster) deleteArgs() []string {
	return append(append([]string{"delete"}, c.ref()...), "--yes")
}

// scaleArgs scales the worker pool to n.
func (c *cluster) scaleArgs(n int) []string {
	flag := "--nodes"
	if c.typ == typeHA {
		flag = "--workers"
	}
	return append(append([]string{"scale"}, c.ref()...), flag, fmt.Sprint(n))
}

// mustRun runs kforge and fails the test unless it exits 0.
func (c *cluster) mustRun(args ...string) kforgebin.Result {
	c.t.Helper()
	return c.env.MustRun(c.t, args...)
}

// signalled is a kforge run that may have been stopped by a signal.
type signalled struct {
	kforgebin.Result
	// Signalled is true when the process died of the signal.
	Signalled bool
	Elapsed   time.Duration
}

// start starts kforge with args, and returns its pid and a function that
// waits for it to end.
func (c *cluster) start(args ...string) (pid func() int, wait func() signalled) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), c.env.Timeout)
	cmd := c.env.Cmd(c.t, ctx, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		cancel()
		c.t.Fatalf("start kforge: %v", err)
	}
	id := cmd.Process.Pid
	return func() int { return id }, func() signalled {
		defer cancel()
		err := cmd.Wait()
		r := signalled{Result: kforgebin.Result{Stdout: out.String(), Stderr: errb.String()}, Elapsed: time.Since(begin)}
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			r.Code = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				r.Signalled = true
			}
		case err != nil:
			c.t.Fatalf("run kforge %v: %v", args, err)
		}
		return r
	}
}

// runArmed runs kforge with args; arm, called before the process starts,
// sets the proxy's rules and hooks, and gets the process's pid (valid once
// it has started, which hooks may wait for). The proxy records the run's
// calls; its rules and hooks are removed when the run ends.
func (c *cluster) runArmed(arm func(pid func() int), args ...string) signalled {
	c.t.Helper()
	c.w.px.Clear()
	var pid func() int
	ready := make(chan struct{})
	arm(func() int {
		<-ready
		return pid()
	})
	pid, wait := c.start(args...)
	close(ready)
	r := wait()
	c.w.px.ClearRules()
	if r.Signalled && !c.w.px.Settle(time.Minute) {
		c.t.Fatalf("calls of the killed kforge were still in flight a minute after the kill")
	}
	return r
}

// runKilled runs kforge and SIGKILLs it right after the answer of its
// k-th mutating AWS call was delivered.
func (c *cluster) runKilled(k int, args ...string) signalled {
	c.t.Helper()
	return c.runArmed(func(pid func() int) {
		c.w.px.SignalAfter(faultproxy.Mutating, k, syscall.SIGKILL, pid)
	}, args...)
}

// inventory counts what exists of the cluster in the emulator.
func (c *cluster) inventory() awscheck.Inventory {
	c.t.Helper()
	return awscheck.Take(c.t, c.cfg, c.typ, c.name)
}

// counts is an inventory's number of resources by kind.
func counts(inv awscheck.Inventory) map[string]int {
	m := map[string]int{}
	for k, ids := range inv {
		if len(ids) > 0 {
			m[k] = len(ids)
		}
	}
	return m
}

func showCounts(m map[string]int) string {
	keys := slices.Sorted(maps.Keys(m))
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// sameCounts fails the test unless the cluster has exactly the resources
// a clean run made, kind by kind.
func (c *cluster) sameCounts(what string, want map[string]int) {
	c.t.Helper()
	inv := c.inventory()
	if got := counts(inv); !maps.Equal(got, want) {
		c.t.Errorf("%s: resources differ from a clean run's:\n got  %s\n want %s\n (%s)", what, showCounts(got), showCounts(want), inv)
	}
}

// named fails the test unless the cluster's live instances are exactly
// one per wanted slot (one etcd, load balancer and control plane, workers
// workers), each named after its slot and carrying the cluster's tags:
// none left unnamed from a batch, none twice.
func (c *cluster) named(what string, workers int) {
	c.t.Helper()
	if c.typ != typeHA {
		return
	}
	out, err := ec2.NewFromConfig(c.cfg).DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{
		{Name: aws.String("tag:kforge.io/cluster"), Values: []string{c.name}},
		{Name: aws.String("instance-state-name"), Values: []string{"pending", "running", "stopping", "stopped"}},
	}})
	if err != nil {
		c.t.Fatalf("%s: describe instances: %v", what, err)
	}
	want := map[string]bool{"etcd/0": true, "lb/0": true, "cp/0": true}
	for i := range workers {
		want[fmt.Sprintf("wp/%d", i)] = true
	}
	seen := map[string]string{}
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			id, tags := aws.ToString(in.InstanceId), map[string]string{}
			for _, tg := range in.Tags {
				tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
			}
			slot := tags["kforge.io/slot"]
			role, idx, _ := strings.Cut(slot, "/")
			switch {
			case slot == "":
				c.t.Errorf("%s: instance %s has no slot (tags %v)", what, id, tags)
				continue
			case seen[slot] != "":
				c.t.Errorf("%s: slot %s has two instances, %s and %s", what, slot, seen[slot], id)
			case !want[slot]:
				c.t.Errorf("%s: instance %s is in slot %s, which is not wanted", what, id, slot)
			}
			seen[slot] = id
			if tags["Name"] != c.name+"-"+role+"-"+idx || tags["kforge.io/role"] != role || tags["kforge.io/type"] != c.typ ||
				tags["kforge.io/region"] != c.region || tags["kubernetes.io/cluster/"+c.name] != "owned" {
				c.t.Errorf("%s: instance %s in slot %s has tags %v", what, id, slot, tags)
			}
		}
	}
	for slot := range want {
		if seen[slot] == "" {
			c.t.Errorf("%s: no instance in slot %s", what, slot)
		}
	}
}

// empty fails the test unless nothing of the cluster is left.
func (c *cluster) empty(what string) {
	c.t.Helper()
	if inv := c.inventory(); inv.Total() != 0 {
		c.t.Errorf("%s: resources left: %s", what, inv)
	}
}

// mutatingCalls lists the mutating calls the proxy carried out, in order.
func mutatingCalls(p *faultproxy.Proxy) []string {
	var out []string
	for _, r := range p.Records() {
		if r.Forwarded && r.Mutating {
			out = append(out, r.Action)
		}
	}
	return out
}

// histogram renders calls as "Action xN" sorted by name.
func histogram(calls []string) string {
	m := map[string]int{}
	for _, c := range calls {
		m[c]++
	}
	keys := slices.Sorted(maps.Keys(m))
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s x%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// want is what a clean create of a test cluster makes (workers: the
// ha-aws worker count): one VPC with its gateway, route table and one
// subnet per zone; for aws the two roles, the EKS cluster and its node
// group; for ha-aws a security group per role, the key pair, two roles
// with their instance profiles, one instance per etcd, load balancer and
// control plane slot and the workers, each with its root volume.
func want(typ string, workers int) map[string]int {
	if typ == typeEKS {
		return map[string]int{"vpc": 1, "subnet": 2, "igw": 1, "rtb": 1, "role": 2, "eks-cluster": 1, "nodegroup": 1}
	}
	return map[string]int{"vpc": 1, "subnet": 3, "igw": 1, "rtb": 1, "sg": 4, "keypair": 1, "role": 2, "instance-profile": 2,
		"instance/etcd": 1, "instance/lb": 1, "instance/cp": 1, "instance/wp": workers, "volume": 3 + workers}
}

// stateDir is where the local store keeps the cluster's state.
func (c *cluster) stateDir() string {
	return filepath.Join(c.env.Home, "state", "clusters", c.typ, c.region, c.name)
}
