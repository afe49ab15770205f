package crash

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbv2types "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/test/testutil/faultproxy"
)

var types = []string{typeEKS, typeHA}

// TestInterrupt sends SIGINT during a create slowed down by the proxy.
// Once: kforge lets the running steps finish, saves state, exits 1 and
// prints the command that resumes. Twice: it stops at once, and the state
// is still consistent. Either way the same create then finishes with
// exactly the resources of a clean run.
func TestInterrupt(t *testing.T) {
	for _, typ := range types {
		for _, twice := range []bool{false, true} {
			name := typ + "/once"
			if twice {
				name = typ + "/twice"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				w := acquire(t)
				c := newCluster(t, w, typ)
				delay := 100 * time.Millisecond
				if twice {
					delay = 400 * time.Millisecond // running steps would take seconds to finish
				}
				var mu sync.Mutex
				var second time.Time
				r := c.runArmed(func(pid func() int) {
					w.px.Add(faultproxy.Rule{Fault: faultproxy.Delay, Delay: delay})
					w.px.After(faultproxy.Mutating, 4, func(faultproxy.Call) {
						_ = syscall.Kill(pid(), syscall.SIGINT)
						if twice {
							time.Sleep(50 * time.Millisecond)
							mu.Lock()
							second = time.Now()
							mu.Unlock()
							_ = syscall.Kill(pid(), syscall.SIGINT)
						}
					})
				}, c.createArgs()...)
				if r.Signalled || r.Code != 1 {
					t.Fatalf("interrupted create: exit %d (signalled %v), want 1\n%s", r.Code, r.Signalled, r.Stderr)
				}
				for _, s := range []string{"stopping: waiting for running steps to finish and saving state", "state is saved", "Resume with:\n  kforge " + strings.Join(c.createArgs(), " ")} {
					if !strings.Contains(r.Stderr, s) {
						t.Errorf("stderr lacks %q:\n%s", s, r.Stderr)
					}
				}
				if strings.Contains(r.Stderr, "panic") || strings.Contains(r.Stderr, "goroutine ") {
					t.Errorf("stderr:\n%s", r.Stderr)
				}
				mu.Lock()
				if late := time.Since(second); twice && late > 3*time.Second {
					t.Errorf("kforge took %s to stop after the second SIGINT", late)
				}
				mu.Unlock()
				if st := c.listed()[c.name]; st != "failed" {
					t.Errorf("interrupted cluster is %q, want failed", st)
				}
				c.mustRun(c.createArgs()...)
				c.sameCounts("create after the interruption", want(typ, haWorkers))
				c.named("create after the interruption", haWorkers)
				c.mustRun(c.deleteArgs()...)
				c.empty("delete")
			})
		}
	}
}

// firstOfEachAction selects the first call of every mutating operation.
func firstOfEachAction() func(faultproxy.Call) bool {
	var mu sync.Mutex
	seen := map[string]bool{}
	return func(c faultproxy.Call) bool {
		if !c.Mutating {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		if seen[c.Action] {
			return false
		}
		seen[c.Action] = true
		return true
	}
}

// dropped lists the operations whose answers the proxy dropped.
func dropped(p *faultproxy.Proxy) []string {
	var out []string
	for _, r := range p.Records() {
		if r.Fault == faultproxy.Drop {
			out = append(out, r.Action)
		}
	}
	slices.Sort(out)
	return out
}

// TestLostResponses drops the answer of the first call of every mutating
// operation after the emulator carried it out (a connection reset after
// the request was sent). Create and delete must still succeed in one run,
// with no duplicate: creates with an idempotency token are retried with
// the same token, the others look for what they made before trying again.
func TestLostResponses(t *testing.T) {
	mustDrop := map[string][]string{
		typeEKS: {"CreateCluster", "CreateNodegroup", "CreateRole", "CreateSubnet", "CreateVpc", "CreateInternetGateway", "CreateRouteTable"},
		typeHA: {"CreateInstanceProfile", "CreateRole", "CreateSecurityGroup", "CreateSubnet", "CreateVpc", "ImportKeyPair", "RunInstances",
			"AuthorizeSecurityGroupIngress", "AddRoleToInstanceProfile"},
	}
	for _, typ := range types {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			w := acquire(t)
			c := newCluster(t, w, typ)
			w.px.Add(faultproxy.Rule{Match: firstOfEachAction(), Fault: faultproxy.Drop})
			r := c.mustRun(c.createArgs()...)
			got := dropped(w.px)
			for _, a := range mustDrop[typ] {
				if !slices.Contains(got, a) {
					t.Errorf("the answer of %s was not dropped (dropped: %v)", a, got)
				}
			}
			t.Logf("create survived lost answers of %d operations: %s", len(got), strings.Join(got, ", "))
			c.sameCounts("create with lost answers", want(typ, haWorkers))
			c.named("create with lost answers", haWorkers)
			checkTokens(t, w.px, typ)
			if t.Failed() {
				t.Log(r.Stderr)
			}

			w.px.Clear()
			w.px.Add(faultproxy.Rule{Match: firstOfEachAction(), Fault: faultproxy.Drop})
			c.mustRun(c.deleteArgs()...)
			t.Logf("delete survived lost answers of: %s", strings.Join(dropped(w.px), ", "))
			c.empty("delete with lost answers")
		})
	}
}

// checkTokens checks the idempotency tokens of the creates that have
// one: kforge's own (derived from the cluster and the step, not the SDK's
// random default), one per resource, the same on every retry.
func checkTokens(t *testing.T, p *faultproxy.Proxy, typ string) {
	t.Helper()
	byAction := map[string]map[string]int{}
	for _, r := range p.Records() {
		switch r.Action {
		case "RunInstances", "CreateCluster", "CreateNodegroup", "CreateRouteTable":
		default:
			continue
		}
		if !strings.HasPrefix(r.Token, "kforge-") {
			t.Errorf("%s sent token %q, not kforge's stable one", r.Action, r.Token)
		}
		if byAction[r.Action] == nil {
			byAction[r.Action] = map[string]int{}
		}
		byAction[r.Action][r.Token]++
	}
	wantTokens := map[string]int{"CreateCluster": 1, "CreateNodegroup": 1, "CreateRouteTable": 1}
	if typ == typeHA {
		// The etcd member, load balancer, control plane, workers 1 and 2
		// alone, and the batch of workers 0 and 3.
		wantTokens = map[string]int{"RunInstances": 6, "CreateRouteTable": 1}
	}
	for a, n := range wantTokens {
		if len(byAction[a]) != n {
			t.Errorf("%s: %d distinct tokens %v, want %d (one per resource, reused by retries)", a, len(byAction[a]), byAction[a], n)
		}
	}
	// The dropped CreateCluster and CreateNodegroup were retried with the
	// same token.
	for _, a := range []string{"CreateCluster", "CreateNodegroup"} {
		for tok, n := range byAction[a] {
			if n < 2 {
				t.Errorf("%s with token %s sent %d times: the lost answer was not retried with the same token", a, tok, n)
			}
		}
	}
}

// traceMax returns the most attempts any AWS call needed, from the trace
// kforge writes with KFORGE_AWS_TRACE, and how many attempts it saw.
func traceMax(t *testing.T, path string) (maxAttempt, attempts int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var rec awsx.TraceRecord
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("trace: %v", err)
		}
		attempts++
		maxAttempt = max(maxAttempt, rec.Attempt)
	}
	return maxAttempt, attempts
}

// TestThrottlingAndServerErrors throttles a fifth of all calls with each
// service's throttling error and answers 5% with HTTP 500: both cluster
// types are still created with exactly their resources and deleted, the
// retries are bounded, and progress shows kforge waiting on AWS.
func TestThrottlingAndServerErrors(t *testing.T) {
	for _, typ := range types {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			w := acquire(t)
			c := newCluster(t, w, typ)
			trace := filepath.Join(t.TempDir(), "trace.jsonl")
			c.env.Extra = append(c.env.Extra, "KFORGE_AWS_TRACE="+trace)
			faults := []faultproxy.Rule{
				{Fault: faultproxy.Throttle, Rate: 0.2},
				{Fault: faultproxy.ServerFault, Rate: 0.05},
				// At least one 5xx on a mutating call, whatever the dice say.
				{Match: faultproxy.Mutating, Fault: faultproxy.ServerFault, Skip: 3, Times: 1},
			}
			for i, op := range [][]string{c.createArgs(), c.deleteArgs()} {
				w.px.Clear()
				w.px.Seed(uint64(i+1), 7)
				w.px.Add(faults...)
				start := time.Now()
				r := c.mustRun(op...)
				throttled, failed := w.px.Faulted(faultproxy.Throttle, nil), w.px.Faulted(faultproxy.ServerFault, nil)
				t.Logf("%s %s: %d calls throttled, %d answered 500, in %s", op[0], typ, throttled, failed, time.Since(start).Round(100*time.Millisecond))
				if throttled == 0 || failed == 0 {
					t.Errorf("%s: no fault injected", op[0])
				}
				if !strings.Contains(r.Stderr, "retrying with backoff") {
					t.Errorf("%s: progress does not show the retries:\n%s", op[0], r.Stderr)
				}
				if i == 0 {
					c.sameCounts("create under throttling", want(typ, haWorkers))
					c.named("create under throttling", haWorkers)
				}
			}
			c.empty("delete under throttling")
			most, n := traceMax(t, trace)
			if most > awsx.MaxAttempts || most < 2 {
				t.Errorf("a call took %d attempts: want retries, bounded by %d", most, awsx.MaxAttempts)
			}
			t.Logf("%d attempts in all, at most %d for one call", n, most)
		})
	}
}

// TestEventualConsistency answers, as AWS does for seconds after IAM
// changes, that EC2 does not know the new instance profile yet and that
// EKS cannot assume the new role: kforge waits and retries instead of
// failing.
func TestEventualConsistency(t *testing.T) {
	profile := func(c faultproxy.Call) bool {
		return c.Action == "RunInstances" && (c.Params.Get("IamInstanceProfile.Arn") != "" || c.Params.Get("IamInstanceProfile.Name") != "")
	}
	cases := []struct {
		typ   string
		rules []faultproxy.Rule
	}{
		{typeHA, []faultproxy.Rule{
			{Match: profile, Fault: faultproxy.Respond, Times: 1, Error: faultproxy.APIError{Status: 400, Code: "InvalidParameterValue",
				Message: "Value (arn:aws:iam::123456789012:instance-profile/kforge-x-ha-cp) for parameter iamInstanceProfile.arn is invalid. Invalid IAM Instance Profile ARN"}},
			{Match: profile, Fault: faultproxy.Respond, Times: 1, Error: faultproxy.APIError{Status: 400, Code: "InvalidParameterValue",
				Message: "Invalid IAM Instance Profile name"}},
		}},
		{typeEKS, []faultproxy.Rule{
			{Match: faultproxy.Actions("CreateCluster"), Fault: faultproxy.Respond, Times: 2, Error: faultproxy.APIError{Status: 400, Code: "InvalidParameterException",
				Message: "Role with arn: arn:aws:iam::123456789012:role/kforge-x-cp-role, could not be assumed because it does not exist or the trusted entity is not correct"}},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.typ, func(t *testing.T) {
			t.Parallel()
			w := acquire(t)
			c := newCluster(t, w, tc.typ)
			w.px.Add(tc.rules...)
			r := c.mustRun(c.createArgs()...)
			answered := 0
			for _, rule := range tc.rules {
				answered += rule.Times
			}
			if n := w.px.Faulted(faultproxy.Respond, nil); n != answered {
				t.Errorf("%d eventual-consistency errors answered, want %d", n, answered)
			}
			if strings.Contains(r.Stderr, "FAILED") {
				t.Errorf("IAM propagation reported as a failure:\n%s", r.Stderr)
			}
			if code := tc.rules[0].Error.Code; !strings.Contains(r.Stderr, "AWS answered "+code+"; retrying with backoff") {
				t.Errorf("progress does not show that kforge waits for IAM (%s):\n%s", code, r.Stderr)
			}
			c.sameCounts("create through IAM propagation delays", want(tc.typ, haWorkers))
			c.named("create through IAM propagation delays", haWorkers)
			c.mustRun(c.deleteArgs()...)
			c.empty("delete")
		})
	}
}

// TestStateLost deletes a cluster whose state is gone: kforge finds every
// resource by its tags (IAM roles and instance profiles by name) and
// removes it.
func TestStateLost(t *testing.T) {
	for _, typ := range types {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			w := acquire(t)
			c := newCluster(t, w, typ)
			c.mustRun(c.createArgs()...)
			if err := os.RemoveAll(filepath.Join(c.env.Home, "state")); err != nil {
				t.Fatal(err)
			}
			r := c.mustRun(c.deleteArgs()...)
			if strings.Contains(r.Stderr, "Nothing to delete") {
				t.Errorf("delete without state found nothing:\n%s", r.Stderr)
			}
			c.empty("delete without state")
			// Again: nothing left, and it says so.
			if r := c.mustRun(c.deleteArgs()...); !strings.Contains(r.Stderr, "Nothing to delete") {
				t.Errorf("second delete without state:\n%s", r.Stderr)
			}
		})
	}
}

// k8sMade is what the test makes in a cluster's VPC as Kubernetes would:
// a load balancer with its listener and target group, its security group
// (referenced by a rule of one of kforge's groups for ha-aws), a volume of
// a persistent volume and a detached network interface, all tagged
// kubernetes.io/cluster/<name>=owned.
type k8sMade struct {
	lb, tg, sg, vol, eni string
}

func (c *cluster) seedKubernetes(ctx context.Context) k8sMade {
	c.t.Helper()
	inv := c.inventory()
	vpc, subnets := inv["vpc"][0], inv["subnet"]
	ec := ec2.NewFromConfig(c.cfg)
	elb := elasticloadbalancingv2.NewFromConfig(c.cfg)
	owned := []ec2types.Tag{{Key: aws.String("kubernetes.io/cluster/" + c.name), Value: aws.String("owned")},
		{Key: aws.String("kubernetes.io/service-name"), Value: aws.String("default/web")}}
	must := func(err error) {
		c.t.Helper()
		if err != nil {
			c.t.Fatalf("seed Kubernetes resources: %v", err)
		}
	}
	var m k8sMade
	sg, err := ec.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("k8s-elb-" + c.name), Description: aws.String("Security group for Kubernetes ELB"),
		VpcId: aws.String(vpc), TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSecurityGroup, Tags: owned}}})
	must(err)
	m.sg = aws.ToString(sg.GroupId)
	elbTags := []elbv2types.Tag{{Key: aws.String("kubernetes.io/cluster/" + c.name), Value: aws.String("owned")},
		{Key: aws.String("kubernetes.io/service-name"), Value: aws.String("default/web")}}
	lb, err := elb.CreateLoadBalancer(ctx, &elasticloadbalancingv2.CreateLoadBalancerInput{Name: aws.String("k8s-" + c.name + "-web"),
		Subnets: subnets[:2], SecurityGroups: []string{m.sg}, Tags: elbTags})
	must(err)
	m.lb = aws.ToString(lb.LoadBalancers[0].LoadBalancerArn)
	tg, err := elb.CreateTargetGroup(ctx, &elasticloadbalancingv2.CreateTargetGroupInput{Name: aws.String("k8s-" + c.name + "-tg"),
		Protocol: elbv2types.ProtocolEnumHttp, Port: aws.Int32(30080), VpcId: aws.String(vpc), TargetType: elbv2types.TargetTypeEnumInstance, Tags: elbTags})
	must(err)
	m.tg = aws.ToString(tg.TargetGroups[0].TargetGroupArn)
	_, err = elb.CreateListener(ctx, &elasticloadbalancingv2.CreateListenerInput{LoadBalancerArn: aws.String(m.lb), Protocol: elbv2types.ProtocolEnumHttp, Port: aws.Int32(80),
		DefaultActions: []elbv2types.Action{{Type: elbv2types.ActionTypeEnumForward, TargetGroupArn: aws.String(m.tg)}}})
	must(err)
	subnet, err := ec.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: subnets[:1]})
	must(err)
	vol, err := ec.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: subnet.Subnets[0].AvailabilityZone, Size: aws.Int32(1),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeVolume, Tags: append([]ec2types.Tag{
			{Key: aws.String("kubernetes.io/created-for/pvc/namespace"), Value: aws.String("default")},
			{Key: aws.String("kubernetes.io/created-for/pvc/name"), Value: aws.String("data")}}, owned[0])}}})
	must(err)
	m.vol = aws.ToString(vol.VolumeId)
	eni, err := ec.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(subnets[0]), Groups: []string{m.sg},
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeNetworkInterface, Tags: owned[:1]}}})
	must(err)
	m.eni = aws.ToString(eni.NetworkInterface.NetworkInterfaceId)
	if c.typ == typeHA {
		// The cloud provider opens the workers' NodePorts to the load
		// balancer's group.
		groups, err := ec.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{
			{Name: aws.String("tag:kforge.io/cluster"), Values: []string{c.name}}, {Name: aws.String("tag:kforge.io/role"), Values: []string{"wp"}}}})
		must(err)
		_, err = ec.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: groups.SecurityGroups[0].GroupId,
			IpPermissions: []ec2types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(30080), ToPort: aws.Int32(30080),
				UserIdGroupPairs: []ec2types.UserIdGroupPair{{GroupId: aws.String(m.sg)}}}}})
		must(err)
	}
	return m
}

// remaining names what of m still exists.
func (c *cluster) remaining(ctx context.Context, m k8sMade) []string {
	c.t.Helper()
	ec := ec2.NewFromConfig(c.cfg)
	elb := elasticloadbalancingv2.NewFromConfig(c.cfg)
	var left []string
	if out, err := elb.DescribeLoadBalancers(ctx, &elasticloadbalancingv2.DescribeLoadBalancersInput{LoadBalancerArns: []string{m.lb}}); err == nil && len(out.LoadBalancers) > 0 {
		left = append(left, "load balancer "+m.lb)
	}
	if out, err := elb.DescribeTargetGroups(ctx, &elasticloadbalancingv2.DescribeTargetGroupsInput{TargetGroupArns: []string{m.tg}}); err == nil && len(out.TargetGroups) > 0 {
		left = append(left, "target group "+m.tg)
	}
	if out, err := ec.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{{Name: aws.String("group-id"), Values: []string{m.sg}}}}); err == nil && len(out.SecurityGroups) > 0 {
		left = append(left, "security group "+m.sg)
	}
	if out, err := ec.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []ec2types.Filter{{Name: aws.String("volume-id"), Values: []string{m.vol}}}}); err == nil {
		for _, v := range out.Volumes {
			if v.State != ec2types.VolumeStateDeleted && v.State != ec2types.VolumeStateDeleting {
				left = append(left, "volume "+m.vol)
			}
		}
	}
	if out, err := ec.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: []ec2types.Filter{{Name: aws.String("network-interface-id"), Values: []string{m.eni}}}}); err == nil && len(out.NetworkInterfaces) > 0 {
		left = append(left, "network interface "+m.eni)
	}
	return left
}

// TestKubernetesLeftovers seeds what a cluster's Kubernetes makes in AWS
// (tagged kubernetes.io/cluster/<name>=owned) into its VPC: delete
// removes it before the network. Then a leftover AWS refuses to delete
// (a volume whose delete is denied) makes delete exit 1 at once, naming
// the volume and its owner; once the cause is gone, delete finishes.
func TestKubernetesLeftovers(t *testing.T) {
	for _, typ := range types {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			w := acquire(t)
			c := newCluster(t, w, typ)
			c.mustRun(c.createArgs()...)
			m := c.seedKubernetes(ctx)

			// A leftover that cannot be removed: delete names it and fails.
			blocked := func(call faultproxy.Call) bool {
				return call.Action == "DeleteVolume" && call.Params.Get("VolumeId") == m.vol
			}
			start := time.Now()
			r := c.runArmed(func(func() int) {
				w.px.Add(faultproxy.Rule{Match: blocked, Fault: faultproxy.Respond, Error: faultproxy.APIError{Status: 403, Code: "UnauthorizedOperation",
					Message: "You are not authorized to perform this operation."}})
			}, c.deleteArgs()...)
			if r.Code != 1 {
				t.Fatalf("delete with a blocked leftover: exit %d, want 1\n%s", r.Code, r.Stderr)
			}
			for _, s := range []string{"volume " + m.vol, "PVC default/data", "not authorized", "kforge delete " + strings.Join(c.ref(), " ")} {
				if !strings.Contains(r.Stderr, s) {
					t.Errorf("the failure does not name %q:\n%s", s, r.Stderr)
				}
			}
			if el := time.Since(start); el > time.Minute {
				t.Errorf("delete took %s to report the blocker", el)
			}
			if inv := c.inventory(); inv.Count("vpc") != 1 {
				t.Errorf("the network was deleted although a leftover remains: %s", inv)
			}
			// What could go went, and the network was left alone.
			first := w.px.Records()
			if left := c.remaining(ctx, m); len(left) != 1 || left[0] != "volume "+m.vol {
				t.Errorf("after the failed delete, left: %v; want only the blocked volume", left)
			}

			r = c.runArmed(func(func() int) {}, c.deleteArgs()...)
			if r.Code != 0 {
				t.Fatalf("delete: exit %d\n%s", r.Code, r.Stderr)
			}
			if left := c.remaining(ctx, m); len(left) > 0 {
				t.Errorf("Kubernetes leftovers remain: %s", strings.Join(left, ", "))
			}
			c.empty("delete")
			// Everything Kubernetes made went before the network.
			deleted, networkAt := deletions(first, m)
			if networkAt >= 0 {
				t.Errorf("the failed delete deleted network resources (call %d)", networkAt)
			}
			for _, a := range []string{"DeleteLoadBalancer", "DeleteTargetGroup", "DeleteNetworkInterface", "DeleteSecurityGroup"} {
				if _, ok := deleted[a]; !ok {
					t.Errorf("the first delete made no %s", a)
				}
			}
			deleted, networkAt = deletions(w.px.Records(), m)
			if at, ok := deleted["DeleteVolume"]; !ok || networkAt < 0 || at > networkAt {
				t.Errorf("DeleteVolume at call %d (made: %v), network deleted from call %d: Kubernetes leftovers must go first", at, ok, networkAt)
			}
		})
	}
}

// deletions returns where, in records, the last delete of each kind of
// Kubernetes leftover of m happened, and where the first delete of the
// network did (-1: none).
func deletions(records []faultproxy.Record, m k8sMade) (map[string]int, int) {
	networkAt := -1
	at := map[string]int{}
	for i, rec := range records {
		if !rec.Forwarded {
			continue
		}
		switch rec.Action {
		case "DeleteSubnet", "DeleteVpc", "DeleteInternetGateway":
			if networkAt < 0 {
				networkAt = i
			}
		case "DeleteLoadBalancer", "DeleteTargetGroup", "DeleteNetworkInterface", "DeleteVolume":
			at[rec.Action] = i
		case "DeleteSecurityGroup":
			if rec.Params.Get("GroupId") == m.sg {
				at[rec.Action] = i
			}
		}
	}
	return at, networkAt
}

// TestOneWriter runs two kforge processes on one cluster at once: the
// second exits 1 naming the first's pid. A lock left by a killed process
// is taken over, and a corrupt state file gives a clear error, no panic.
func TestOneWriter(t *testing.T) {
	t.Run("concurrent", func(t *testing.T) {
		t.Parallel()
		w := acquire(t)
		c := newCluster(t, w, typeEKS)
		started := make(chan struct{})
		var once sync.Once
		w.px.Add(faultproxy.Rule{Fault: faultproxy.Delay, Delay: 150 * time.Millisecond})
		w.px.After(faultproxy.Mutating, 1, func(faultproxy.Call) { once.Do(func() { close(started) }) })
		pid, wait := c.start(c.createArgs()...)
		select {
		case <-started:
		case <-time.After(time.Minute):
			t.Fatal("the first create made no AWS call")
		}
		for _, args := range [][]string{c.createArgs(), c.deleteArgs(), c.scaleArgs(3)} {
			r := c.env.Run(t, args...)
			if r.Code != 1 || !strings.Contains(r.Stderr, "in use by another kforge process") || !strings.Contains(r.Stderr, fmt.Sprintf("pid %d", pid())) {
				t.Errorf("kforge %s while a create runs: exit %d, want 1 naming pid %d:\n%s", args[0], r.Code, pid(), r.Stderr)
			}
		}
		if r := wait(); r.Code != 0 {
			t.Fatalf("the first create failed: exit %d\n%s", r.Code, r.Stderr)
		}
		w.px.Clear()
		c.sameCounts("create with concurrent writers refused", want(typeEKS, 1))
		c.mustRun(c.deleteArgs()...)
		c.empty("delete")
	})
	t.Run("dead-holder", func(t *testing.T) {
		t.Parallel()
		w := acquire(t)
		c := newCluster(t, w, typeEKS)
		r := c.runKilled(3, c.createArgs()...)
		if !r.Signalled {
			t.Fatalf("create was not killed: exit %d", r.Code)
		}
		lock := filepath.Join(c.env.Home, "state", "locks", fmt.Sprintf("%s_%s_%s.lock", c.typ, c.region, c.name))
		b, err := os.ReadFile(lock)
		if err != nil || !strings.Contains(string(b), `"pid"`) {
			t.Fatalf("the killed process left no lock record (%v): %q", err, b)
		}
		c.mustRun(c.createArgs()...)
		c.sameCounts("create after the lock holder died", want(typeEKS, 1))
		c.mustRun(c.deleteArgs()...)
		c.empty("delete")
	})
	t.Run("corrupt-state", func(t *testing.T) {
		t.Parallel()
		w := acquire(t)
		c := newCluster(t, w, typeHA)
		c.mustRun(c.createArgs()...)
		path := filepath.Join(c.stateDir(), "state.json")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, corrupt := range [][]byte{b[:len(b)/2], {0, 0, 0, 0}, {}} {
			if err := os.WriteFile(path, corrupt, 0o600); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{c.createArgs(), {"get"}, append([]string{"info"}, c.ref()...), c.scaleArgs(2)} {
				r := c.env.Run(t, args...)
				if r.Code != 1 || !strings.Contains(r.Stderr, "corrupt") || !strings.Contains(r.Stderr, path) ||
					strings.Contains(r.Stderr, "panic") || strings.Contains(r.Stderr, "goroutine ") {
					t.Errorf("kforge %s with a state file of %d bytes: exit %d, want 1 and a clear error naming %s:\n%s", args[0], len(corrupt), r.Code, path, r.Stderr)
				}
			}
		}
		// Delete does not need the state: it finds everything by tags.
		c.mustRun(c.deleteArgs()...)
		c.empty("delete with corrupt state")
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("the corrupt state file is still there after the delete: %v", err)
		}
	})
}
