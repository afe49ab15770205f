package faultproxy_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kforge/kforge/test/testutil/faultproxy"
	"github.com/kforge/kforge/test/testutil/kforgebin"
	"github.com/kforge/kforge/test/testutil/sshfleet"
)

// tightEC2 is EC2's model with buckets small enough that a create of a few
// dozen VMs runs them dry within seconds: each action's bucket holds 3
// calls and gains 3 a second; RunInstances's holds 2 and gains 1 a second,
// below the pace kforge keeps its launches to (EC2's documented 5, then 2
// a second), so that EC2 still refuses launches and the retryer is tested.
func tightEC2() faultproxy.RateModel {
	m := faultproxy.DocumentedEC2()
	small := faultproxy.Bucket{Capacity: 3, Refill: 3}
	m.NonMutating, m.Unfiltered, m.Mutating, m.ResourceIntensive = small, small, small, small
	for a := range m.Actions {
		m.Actions[a] = small
	}
	m.Actions["RunInstances"] = faultproxy.Bucket{Capacity: 2, Refill: 1}
	return m
}

// TestKforgeCreatesWithinEC2RateModel runs `create ha-aws` of many workers
// against EC2's request-rate model with small buckets: the create must
// succeed with every VM launched once and tagged, although EC2 refused
// calls with RequestLimitExceeded, and it cannot be faster than the
// buckets allow.
func TestKforgeCreatesWithinEC2RateModel(t *testing.T) {
	if testing.Short() {
		t.Skip("creates a cluster of 47 VMs")
	}
	const name, region, workers = "limited", "eu-central-1", 40
	p := faultproxy.Start(t, emu.URL)
	m := tightEC2()
	p.Limit(faultproxy.NewLimiter(m, nil))
	cfg := emu.Config(t, region)
	fleet := sshfleet.Start(t, sshfleet.Options{AWS: &cfg, AuthorizeKeyPairs: true})
	env := kforgebin.NewEnv(t, append(emu.Env(), "AWS_ENDPOINT_URL="+p.URL)...)
	env.Timeout = 5 * time.Minute
	fleet.ServeKforge(t, env.Home)

	start := time.Now()
	env.MustRun(t, "create", "ha-aws", "--name", name, "--region", region, "--bootstrap", "k3s",
		"--etcd", "3", "--control-planes", "3", "--workers", fmt.Sprint(workers), "--ssh-cidr", "10.0.0.0/8", "--ssh-jump", fleet.Jump(sshfleet.VMUser))
	wall := time.Since(start)

	// Every VM exists once, with its tags.
	out, err := ec2.NewFromConfig(cfg).DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{
		{Name: aws.String("tag:kforge.io/cluster"), Values: []string{name}},
		{Name: aws.String("instance-state-name"), Values: []string{"pending", "running"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string]int{}
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			tags := map[string]string{}
			for _, tg := range in.Tags {
				tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
			}
			if tags["kforge.io/type"] != "ha-aws" || tags["kforge.io/region"] != region || tags["Name"] == "" {
				t.Errorf("%s: tags %v", aws.ToString(in.InstanceId), tags)
			}
			roles[tags["kforge.io/role"]]++
		}
	}
	want := map[string]int{"etcd": 3, "cp": 3, "lb": 1, "wp": workers}
	if fmt.Sprint(roles) != fmt.Sprint(want) {
		t.Errorf("instances by role %v, want %v", roles, want)
	}

	// EC2 refused calls, launches among them, and the create kept within
	// what the buckets admit.
	refused := map[string]int{}
	var admitted []faultproxy.Call
	for _, r := range p.Records() {
		switch {
		case r.Fault == faultproxy.Limited:
			refused[r.Action]++
		case r.Forwarded:
			admitted = append(admitted, r.Call)
		}
	}
	t.Logf("create of %d VMs: %s; RequestLimitExceeded answers by action: %s", 7+workers, wall.Round(time.Millisecond), counts(refused))
	if refused["RunInstances"] == 0 {
		t.Error("no RunInstances was refused: the test's buckets are too large to test the retryer")
	}
	// The workers launch in batches, one RunInstances per subnet: 7 for
	// the etcd members, the load balancer and the control planes, 3 for
	// the 40 workers.
	launches := 0
	for _, c := range admitted {
		if c.Action == "RunInstances" {
			launches++
		}
	}
	if launches > 10 {
		t.Errorf("%d RunInstances for %d VMs, want at most 10", launches, 7+workers)
	}
	ds := m.Demands(admitted)
	t.Logf("the buckets needed at least %s (%s: %.0f calls)", ds[0].Wait.Round(time.Millisecond), ds[0].Key, ds[0].Tokens)
	if wall < ds[0].Wait {
		t.Errorf("the create took %s, less than the %s the %s bucket needs to admit its calls: the model did not limit", wall, ds[0].Wait, ds[0].Key)
	}
}

// counts renders per-key counts, the largest first.
func counts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}
