package e2e

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kforge/kforge/test/testutil/awscheck"
	"github.com/kforge/kforge/test/testutil/faultproxy"
	"github.com/kforge/kforge/test/testutil/kforgebin"
	"github.com/kforge/kforge/test/testutil/sshfleet"
)

// launches returns the RunInstances calls the proxy forwarded, as their
// instance counts (MaxCount), and how many CreateTags it forwarded.
func launches(p *faultproxy.Proxy) (counts []int, createTags int) {
	for _, r := range p.Records() {
		if !r.Forwarded {
			continue
		}
		switch r.Action {
		case "RunInstances":
			n, _ := strconv.Atoi(r.Params.Get("MaxCount"))
			counts = append(counts, n)
		case "CreateTags":
			createTags++
		}
	}
	slices.Sort(counts)
	return counts, createTags
}

// TestHABatchedWorkers: the workers of one subnet launch in one
// RunInstances (MinCount = MaxCount), each then named after its slot and
// served with its own host key (the SSH double reads each VM's part of the
// batch's user-data by its launch index, and kforge accepts only the key
// it gave that VM); a scale up batches its new workers the same way; the
// cluster is in sync afterwards, every worker with its instance profile.
func TestHABatchedWorkers(t *testing.T) {
	t.Parallel()
	const name, region, workers = "batched", "ap-southeast-3", 20
	p := faultproxy.Start(t, emu.URL)
	cfg := emu.Config(t, region)
	fleet := sshfleet.Start(t, sshfleet.Options{AWS: &cfg, AuthorizeKeyPairs: true})
	env := kforgebin.NewEnv(t, append(emu.Env(), "AWS_ENDPOINT_URL="+p.URL)...)
	fleet.ServeKforge(t, env.Home)
	ref := []string{"--name", name, "--region", region}

	env.MustRun(t, append([]string{"create", "ha-aws", "--etcd", "1", "--control-planes", "1", "--workers", fmt.Sprint(workers),
		"--ssh-cidr", "10.0.0.0/8", "--ssh-jump", fleet.Jump("ubuntu")}, ref...)...)
	// One call each for the etcd member, the load balancer and the control
	// plane; one per subnet for the 20 workers (7, 7 and 6 of them).
	counts, tags := launches(p)
	t.Logf("create with %d workers: RunInstances of %v instances, %d CreateTags", workers, counts, tags)
	if want := []int{1, 1, 1, 6, 7, 7}; !slices.Equal(counts, want) {
		t.Errorf("RunInstances of %v instances, want %v", counts, want)
	}
	if tags != workers {
		t.Errorf("%d CreateTags, want one per worker (%d)", tags, workers)
	}
	checkWorkers(t, cfg, name, workers)

	p.Clear()
	env.MustRun(t, append([]string{"scale", "ha-aws", "--workers", "26"}, ref...)...)
	// Workers 20 to 25: two in each subnet.
	if counts, tags := launches(p); !slices.Equal(counts, []int{2, 2, 2}) || tags != 6 {
		t.Errorf("scale up to 26: RunInstances of %v instances and %d CreateTags, want [2 2 2] and 6", counts, tags)
	}
	checkWorkers(t, cfg, name, 26)
	if r := env.Run(t, append([]string{"diff", "ha-aws"}, ref...)...); r.Code != 0 {
		t.Errorf("diff after a batched create and scale: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}

	env.MustRun(t, append([]string{"delete", "ha-aws", "--yes"}, ref...)...)
	awscheck.Empty(t, cfg, "ha-aws", name)
}

// checkWorkers checks that the cluster's workers are exactly wp/0 to
// wp/n-1, each named after its slot, launched in a batch (but those alone
// in their subnet), with the workers' instance profile.
func checkWorkers(t *testing.T, cfg aws.Config, name string, n int) {
	t.Helper()
	c := ec2.NewFromConfig(cfg)
	wp := instances(t, cfg, name)["wp"]
	if len(wp) != n {
		t.Fatalf("%d workers, want %d", len(wp), n)
	}
	var ids []string
	seen := map[string]bool{}
	for _, in := range wp {
		tags := tagMap(in.Tags)
		slot := tags["kforge.io/slot"]
		var i int
		if _, err := fmt.Sscanf(slot, "wp/%d", &i); err != nil || seen[slot] || i >= n || tags["Name"] != fmt.Sprintf("%s-wp-%d", name, i) {
			t.Errorf("worker %s: slot %q, Name %q", aws.ToString(in.InstanceId), slot, tags["Name"])
		}
		seen[slot] = true
		if tags["kforge.io/batch"] == "" || tags["kforge.io/cluster"] != name || tags["kubernetes.io/cluster/"+name] != "owned" {
			t.Errorf("worker %s (%s): tags %v", aws.ToString(in.InstanceId), slot, tags)
		}
		ids = append(ids, aws.ToString(in.InstanceId))
	}
	out, err := c.DescribeIamInstanceProfileAssociations(context.Background(), &ec2.DescribeIamInstanceProfileAssociationsInput{
		Filters: []ec2types.Filter{{Name: aws.String("instance-id"), Values: ids}},
	})
	if err != nil {
		t.Fatal(err)
	}
	with := map[string]bool{}
	for _, a := range out.IamInstanceProfileAssociations {
		if a.IamInstanceProfile != nil && a.State == ec2types.IamInstanceProfileAssociationStateAssociated {
			with[aws.ToString(a.InstanceId)] = true
		}
	}
	if len(with) != n {
		t.Errorf("%d of %d workers have an instance profile", len(with), n)
	}
}
