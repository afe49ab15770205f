//go:build lab && linux

package labtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kforge/kforge/internal/ha/infra"
	"github.com/kforge/kforge/test/testutil/awscheck"
	"github.com/kforge/kforge/test/testutil/kforgebin"
	"github.com/kforge/kforge/test/testutil/lab"
)

// phase is a kind of work of a create, by the IDs of its steps.
type phase struct {
	name     string
	prefixes []string
}

// phases: what AWS does (the network, IAM, security groups, the VMs until
// they run), the VMs' boot (until SSH answers and cloud-init is done),
// the installs (artifacts, etcd, HAProxy, containerd and Kubernetes), and
// the joins (kubeadm, the pod network, the cloud integration, until every
// node is Ready).
var phases = []phase{
	{"AWS", []string{"azs", "vpc", "igw", "rtb", "route", "subnet", "secrets", "keypair", "images", "role/", "sg/", "sg-rules/", "instances", "vm/", "leftovers", "network"}},
	{"boot", []string{"ready/"}},
	{"install", []string{"artifacts", "upload/", "prereqs/", "etcd/", "etcd-member/", "etcd-health", "etcd-backups/", "haproxy"}},
	{"join", []string{"kubeadm", "cni", "etcd-servers/", "cloud-integration", "kubeconfig", "nodes-ready"}},
}

func phaseOf(step string) string {
	for _, p := range phases {
		for _, pre := range p.prefixes {
			if strings.HasPrefix(step, pre) {
				return p.name
			}
		}
	}
	return "other"
}

// doneRE is a progress line of a finished step: "[  12.3s] done     vm/wp/0  (4.1s)".
var doneRE = regexp.MustCompile(`^\[\s*([0-9a-zµ.]+)\] done\s+(\S+)\s+\(([0-9a-zµ.]+)\)`)

// span is when the steps of a phase ran, from kforge's progress.
type span struct {
	first, last time.Duration // the first start, the last end
	busy        time.Duration // the sum of the steps' times
	steps       int
}

// spans reads kforge's progress output.
func spans(stderr string) map[string]*span {
	out := map[string]*span{}
	for _, line := range strings.Split(stderr, "\n") {
		m := doneRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		end, err1 := time.ParseDuration(m[1])
		took, err2 := time.ParseDuration(m[3])
		if err1 != nil || err2 != nil {
			continue
		}
		p := phaseOf(m[2])
		s := out[p]
		if s == nil {
			s = &span{first: end - took}
			out[p] = s
		}
		s.first = min(s.first, end-took)
		s.last = max(s.last, end)
		s.busy += took
		s.steps++
	}
	return out
}

// checkBatched fails unless at least two of the cluster's instances came
// from one batched launch, each with its own name and launch index.
func checkBatched(ctx context.Context, t *testing.T, cfg aws.Config, cluster string) {
	t.Helper()
	out, err := ec2.NewFromConfig(cfg).DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{
		{Name: aws.String("tag:kforge.io/cluster"), Values: []string{cluster}},
		{Name: aws.String("tag-key"), Values: []string{infra.TagBatch}},
		{Name: aws.String("instance-state-name"), Values: []string{"running"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	batches := map[string][]ec2types.Instance{}
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			batches[tagOf(in, infra.TagBatch)] = append(batches[tagOf(in, infra.TagBatch)], in)
		}
	}
	for id, ins := range batches {
		if len(ins) < 2 {
			continue
		}
		names, indexes := map[string]bool{}, map[int32]bool{}
		var desc []string
		for _, in := range ins {
			names[tagOf(in, "Name")] = true
			indexes[aws.ToInt32(in.AmiLaunchIndex)] = true
			desc = append(desc, fmt.Sprintf("%s (%s, launch index %d)", aws.ToString(in.InstanceId), tagOf(in, "Name"), aws.ToInt32(in.AmiLaunchIndex)))
		}
		if len(names) != len(ins) || len(indexes) != len(ins) {
			t.Fatalf("batch %s: instances share a name or launch index: %s", id, strings.Join(desc, ", "))
		}
		t.Logf("batch %s on real hosts: %s", id, strings.Join(desc, ", "))
		return
	}
	t.Fatalf("no batched launch among the instances of %s: %d batch tags", cluster, len(batches))
}

// TestCreateTimings measures, on the lab's real hosts, the time from
// `kforge create ha-aws` to every node Ready for 1 and for 4 workers (1
// etcd member, 1 control plane, kubeadm, offline from the artifacts), and
// where it goes: when each phase (AWS, boot, install, join) ran. It adds
// minutes to the lab, so it runs only with KFORGE_LAB_TIMINGS=1; the
// figures go to bench/RESULTS.md.
func TestCreateTimings(t *testing.T) {
	if os.Getenv("KFORGE_LAB_TIMINGS") == "" {
		t.Skip("set KFORGE_LAB_TIMINGS=1 to measure create times on the lab's hosts")
	}
	ctx := context.Background()
	artifactsDir, _ := build(t)
	cfg := emu.Config(t, region)
	var report []string
	for _, workers := range []int{1, 4} {
		// A lab of its own for each cluster.
		l, err := lab.Start(ctx, lab.Options{AWS: cfg, AuthorizeKeyPairs: true, Logf: t.Logf, LogDir: filepath.Join(t.TempDir(), "logs")})
		if err != nil {
			t.Fatal(err)
		}
		env := kforgebin.NewEnv(t, emu.Env()...)
		env.Timeout = 20 * time.Minute
		if err := l.WriteKnownHosts(filepath.Join(env.Home, ".ssh", "known_hosts")); err != nil {
			t.Fatal(err)
		}
		cluster := fmt.Sprintf("timing%d", workers)
		start := time.Now()
		r := env.MustRun(t, "create", "ha-aws", "--name", cluster, "--region", region, "--bootstrap", "kubeadm",
			"--etcd", "1", "--control-planes", "1", "--workers", fmt.Sprint(workers), "--ssh-cidr", "10.0.0.0/8",
			"--artifacts", artifactsDir, "--ssh-jump", l.JumpSpec())
		wall := time.Since(start)
		if !strings.Contains(r.Stderr, "done     nodes-ready") {
			t.Fatalf("the create did not wait for the nodes:\n%s", r.Stderr)
		}
		if workers > 3 {
			// Workers 0 and 3 share a subnet: they were launched in one
			// batch, with one user-data for both. Each still came up
			// with its own host key (kforge pins it) and joined.
			checkBatched(ctx, t, cfg, cluster)
		}
		sp := spans(r.Stderr)
		names := make([]string, 0, len(sp))
		for n := range sp {
			names = append(names, n)
		}
		sort.Slice(names, func(i, j int) bool { return sp[names[i]].first < sp[names[j]].first })
		line := fmt.Sprintf("%d worker(s): create to every node Ready %s;", workers, wall.Round(100*time.Millisecond))
		for _, n := range names {
			s := sp[n]
			line += fmt.Sprintf(" %s %s-%s (%d steps, %s of step time);", n, s.first.Round(100*time.Millisecond), s.last.Round(100*time.Millisecond), s.steps, s.busy.Round(100*time.Millisecond))
		}
		report = append(report, line)
		t.Log(line)
		env.MustRun(t, "delete", "ha-aws", "--name", cluster, "--region", region, "--yes")
		awscheck.Empty(t, cfg, "ha-aws", cluster)
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	}
	t.Logf("timings:\n%s", strings.Join(report, "\n"))
}
