package leftovers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancing"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancing/types"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbv2types "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/leftovers"
	"github.com/kforge/kforge/internal/network"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
	"github.com/kforge/kforge/test/testutil/moto"
)

const region = "us-east-1"

var server *moto.Server

func TestMain(m *testing.M) {
	moto.RunTests(m, &server)
}

type env struct {
	ec2   *ec2.Client
	elbv2 *elasticloadbalancingv2.Client
	elb   *elasticloadbalancing.Client
}

func newEnv(t *testing.T) env {
	t.Helper()
	cfg := server.Config(t, region)
	return env{ec2: ec2.NewFromConfig(cfg), elbv2: elasticloadbalancingv2.NewFromConfig(cfg), elb: elasticloadbalancing.NewFromConfig(cfg)}
}

// cluster is a network and the leftovers step, as providers wire them.
type cluster struct {
	ref spec.Ref
	g   *engine.Graph
	j   *engine.Journal
	net network.Network
}

func newCluster(t *testing.T, e env, ref spec.Ref, cidr string, timeout time.Duration) *cluster {
	t.Helper()
	g := engine.NewGraph()
	g.Add(network.Steps(&network.Clients{EC2: e.ec2, InUseTimeout: timeout}, network.Spec{Ref: ref, Zones: 2, CIDR: cidr})...)
	g.Add(leftovers.Step(&leftovers.Clients{EC2: e.ec2, ELBv2: e.elbv2, ELB: e.elb, InUseTimeout: timeout}, ref, []string{network.StepID}))
	store, err := state.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	j := engine.NewJournal(store, state.New(spec.Spec{Ref: ref}, time.Now()))
	if err := engine.Apply(context.Background(), g, j, engine.Options{}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	c := &cluster{ref: ref, g: g, j: j}
	raw, _ := j.Done(network.StepID)
	if err := jsonUnmarshal(raw, &c.net); err != nil {
		t.Fatal(err)
	}
	return c
}

// destroy runs a destroy of the cluster's graph with journal j and returns
// how each step ended: done, skipped or failed.
func (c *cluster) destroy(j *engine.Journal) (map[string]engine.EventKind, error) {
	ended := map[string]engine.EventKind{}
	err := engine.Destroy(context.Background(), c.g, j, engine.Options{Events: func(e engine.Event) {
		switch e.Kind {
		case engine.EventDone, engine.EventSkipped, engine.EventFailed:
			ended[e.Step] = e.Kind
		}
	}})
	return ended, err
}

// lostState is a journal of the cluster without any step, as after the
// state was lost.
func (c *cluster) lostState(t *testing.T) *engine.Journal {
	t.Helper()
	store, err := state.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return engine.NewJournal(store, state.New(spec.Spec{Ref: c.ref}, time.Now()))
}

// checkAllSkipped asserts that a destroy found nothing: every step ended
// skipped, none done.
func checkAllSkipped(t *testing.T, c *cluster, ended map[string]engine.EventKind) {
	t.Helper()
	for _, id := range c.g.IDs() {
		if k, ok := ended[id]; !ok || k != engine.EventSkipped {
			t.Errorf("step %s ended with event kind %d, want skipped (%d)", id, k, engine.EventSkipped)
		}
	}
}

func tagSpec(rt ec2types.ResourceType, kv ...string) []ec2types.TagSpecification {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return awsx.EC2TagSpec(rt, m)
}

func elbv2Tags(kv ...string) []elbv2types.Tag {
	var out []elbv2types.Tag
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, elbv2types.Tag{Key: aws.String(kv[i]), Value: aws.String(kv[i+1])})
	}
	return out
}

// k8sResources is what Kubernetes would leave in a VPC.
type k8sResources struct {
	lbARNs  []string
	tgARNs  []string
	classic string
	sgs     []string
	volume  string
	eni     string
	nodesSG string // kforge's own group, with a rule from the LB group
	lbSG    string
}

func makeK8sResources(t *testing.T, e env, name, vpcID string, subnets []string, zone string, kv []string, controllerKV []string) k8sResources {
	t.Helper()
	ctx := context.Background()
	var res k8sResources
	sg := func(group string, kv ...string) string {
		out, err := e.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(group), Description: aws.String(group),
			VpcId: aws.String(vpcID), TagSpecifications: tagSpec(ec2types.ResourceTypeSecurityGroup, kv...)})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(out.GroupId)
	}
	res.lbSG = sg("k8s-elb-"+name, kv...)
	res.sgs = append(res.sgs, res.lbSG)
	if controllerKV != nil {
		res.sgs = append(res.sgs, sg("k8s-traffic-"+name, controllerKV...))
	}
	// kforge's own node group carries both tags and refers to the LB group.
	res.nodesSG = sg("kforge-"+name+"-nodes", append([]string{awsx.TagCluster, name}, kv...)...)
	if _, err := e.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(res.nodesSG),
		IpPermissions: []ec2types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(30000), ToPort: aws.Int32(32767),
			UserIdGroupPairs: []ec2types.UserIdGroupPair{{GroupId: aws.String(res.lbSG)}}}}}); err != nil {
		t.Fatal(err)
	}

	lbTagSets := [][]string{append([]string{"kubernetes.io/service-name", "default/web"}, kv...)}
	if controllerKV != nil {
		lbTagSets = append(lbTagSets, append([]string{"service.k8s.aws/stack", "default/api"}, controllerKV...))
	}
	for i, tags := range lbTagSets {
		lb, err := e.elbv2.CreateLoadBalancer(ctx, &elasticloadbalancingv2.CreateLoadBalancerInput{Name: aws.String(fmt.Sprintf("k8s-%s-%d", name, i)),
			Subnets: subnets, SecurityGroups: []string{res.lbSG}, Tags: elbv2Tags(tags...)})
		if err != nil {
			t.Fatal(err)
		}
		lbARN := aws.ToString(lb.LoadBalancers[0].LoadBalancerArn)
		tg, err := e.elbv2.CreateTargetGroup(ctx, &elasticloadbalancingv2.CreateTargetGroupInput{Name: aws.String(fmt.Sprintf("k8s-%s-tg%d", name, i)),
			Protocol: elbv2types.ProtocolEnumHttp, Port: aws.Int32(80), VpcId: aws.String(vpcID), Tags: elbv2Tags(tags...)})
		if err != nil {
			t.Fatal(err)
		}
		tgARN := aws.ToString(tg.TargetGroups[0].TargetGroupArn)
		if _, err := e.elbv2.CreateListener(ctx, &elasticloadbalancingv2.CreateListenerInput{LoadBalancerArn: aws.String(lbARN),
			Protocol: elbv2types.ProtocolEnumHttp, Port: aws.Int32(80),
			DefaultActions: []elbv2types.Action{{Type: elbv2types.ActionTypeEnumForward, TargetGroupArn: aws.String(tgARN)}}}); err != nil {
			t.Fatal(err)
		}
		res.lbARNs = append(res.lbARNs, lbARN)
		res.tgARNs = append(res.tgARNs, tgARN)
	}

	res.classic = "k8s-classic-" + name
	var ctags []elbtypes.Tag
	for i := 0; i+1 < len(kv); i += 2 {
		ctags = append(ctags, elbtypes.Tag{Key: aws.String(kv[i]), Value: aws.String(kv[i+1])})
	}
	if _, err := e.elb.CreateLoadBalancer(ctx, &elasticloadbalancing.CreateLoadBalancerInput{LoadBalancerName: aws.String(res.classic),
		Subnets: subnets, SecurityGroups: []string{res.lbSG}, Tags: ctags,
		Listeners: []elbtypes.Listener{{Protocol: aws.String("TCP"), LoadBalancerPort: 80, InstancePort: aws.Int32(30080)}}}); err != nil {
		t.Fatal(err)
	}

	vol, err := e.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String(zone), Size: aws.Int32(1),
		TagSpecifications: tagSpec(ec2types.ResourceTypeVolume, kv...)})
	if err != nil {
		t.Fatal(err)
	}
	res.volume = aws.ToString(vol.VolumeId)
	eni, err := e.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(subnets[0]),
		TagSpecifications: tagSpec(ec2types.ResourceTypeNetworkInterface, kv...)})
	if err != nil {
		t.Fatal(err)
	}
	res.eni = aws.ToString(eni.NetworkInterface.NetworkInterfaceId)
	return res
}

// exists reports, per resource, whether it is still there.
func exists(t *testing.T, e env, r k8sResources) map[string]bool {
	t.Helper()
	ctx := context.Background()
	out := map[string]bool{}
	for _, arn := range r.lbARNs {
		_, err := e.elbv2.DescribeLoadBalancers(ctx, &elasticloadbalancingv2.DescribeLoadBalancersInput{LoadBalancerArns: []string{arn}})
		out[arn] = err == nil
	}
	for _, arn := range r.tgARNs {
		_, err := e.elbv2.DescribeTargetGroups(ctx, &elasticloadbalancingv2.DescribeTargetGroupsInput{TargetGroupArns: []string{arn}})
		out[arn] = err == nil
	}
	lbs, err := e.elb.DescribeLoadBalancers(ctx, &elasticloadbalancing.DescribeLoadBalancersInput{LoadBalancerNames: []string{r.classic}})
	out[r.classic] = err == nil && len(lbs.LoadBalancerDescriptions) == 1
	for _, id := range append([]string{r.nodesSG}, r.sgs...) {
		_, err := e.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{id}})
		out[id] = err == nil
	}
	vols, err := e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{r.volume}})
	out[r.volume] = err == nil && len(vols.Volumes) == 1
	enis, err := e.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{r.eni}})
	out[r.eni] = err == nil && len(enis.NetworkInterfaces) == 1
	return out
}

func TestDestroyRemovesKubernetesLeftovers(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ref := spec.Ref{Type: spec.TypeEKS, Name: "lo", Region: region}
	c := newCluster(t, e, ref, "10.70.0.0/16", time.Second)
	mine := makeK8sResources(t, e, "lo", c.net.VPCID, c.net.SubnetIDs(), c.net.Subnets[0].Zone,
		[]string{awsx.KubernetesClusterTag("lo"), "owned"}, []string{leftovers.TagLBController, "lo"})

	// Another cluster's resources, in another VPC of the region.
	other := newCluster(t, e, spec.Ref{Type: spec.TypeEKS, Name: "other", Region: region}, "10.71.0.0/16", time.Second)
	theirs := makeK8sResources(t, e, "other", other.net.VPCID, other.net.SubnetIDs(), other.net.Subnets[0].Zone,
		[]string{awsx.KubernetesClusterTag("other"), "owned"}, []string{leftovers.TagLBController, "other"})

	// A volume of kforge's own (say, an etcd data disk) is its step's to delete.
	kv, err := e.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String(c.net.Subnets[0].Zone), Size: aws.Int32(1),
		TagSpecifications: tagSpec(ec2types.ResourceTypeVolume, awsx.TagCluster, "lo", awsx.KubernetesClusterTag("lo"), "owned")})
	if err != nil {
		t.Fatal(err)
	}

	ended, err := c.destroy(c.j)
	if err != nil {
		t.Fatalf("destroy: %v", err)
	}
	for _, id := range []string{leftovers.StepID, network.StepVPC} {
		if ended[id] != engine.EventDone {
			t.Errorf("step %s ended with event kind %d, want done", id, ended[id])
		}
	}
	if vols, err := e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{aws.ToString(kv.VolumeId)}}); err != nil || len(vols.Volumes) != 1 {
		t.Errorf("kforge's own volume was deleted by the leftovers step: %v", err)
	}
	for id, there := range exists(t, e, mine) {
		if id == mine.nodesSG {
			if !there {
				t.Errorf("kforge's own security group %s was deleted by the leftovers step", id)
			}
			continue
		}
		if there {
			t.Errorf("%s is still there", id)
		}
	}
	// The rule of kforge's group that referred to the LB group is gone.
	sg, err := e.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{mine.nodesSG}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range sg.SecurityGroups[0].IpPermissions {
		for _, pair := range p.UserIdGroupPairs {
			if aws.ToString(pair.GroupId) == mine.lbSG {
				t.Errorf("kforge's group still refers to deleted %s", mine.lbSG)
			}
		}
	}
	// The network went after the leftovers.
	vpcs, err := e.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: awsx.ClusterFilters(ref)})
	if err != nil || len(vpcs.Vpcs) != 0 {
		t.Errorf("VPCs left: %+v, %v", vpcs, err)
	}
	for id, there := range exists(t, e, theirs) {
		if !there {
			t.Errorf("%s of another cluster was deleted", id)
		}
	}
	if _, ok := c.j.Done(leftovers.StepID); ok {
		t.Error("the leftovers step is still journaled")
	}
	// A second delete, with the state or without it, finds nothing.
	for _, j := range []*engine.Journal{c.j, c.lostState(t)} {
		ended, err := c.destroy(j)
		if err != nil {
			t.Fatalf("second destroy: %v", err)
		}
		checkAllSkipped(t, c, ended)
	}
}

// A cluster in which Kubernetes made nothing: the step says it found
// nothing, while the network is deleted.
func TestDestroyWithoutLeftovers(t *testing.T) {
	e := newEnv(t)
	c := newCluster(t, e, spec.Ref{Type: spec.TypeHA, Name: "lo-none", Region: region}, "10.73.0.0/16", time.Second)
	ended, err := c.destroy(c.j)
	if err != nil {
		t.Fatalf("destroy: %v", err)
	}
	if ended[leftovers.StepID] != engine.EventSkipped || ended[network.StepVPC] != engine.EventDone {
		t.Errorf("leftovers ended with %d, vpc with %d: want skipped (%d) and done (%d)",
			ended[leftovers.StepID], ended[network.StepVPC], engine.EventSkipped, engine.EventDone)
	}
	ended, err = c.destroy(c.lostState(t))
	if err != nil {
		t.Fatalf("second destroy: %v", err)
	}
	checkAllSkipped(t, c, ended)
}

// An attached volume that kforge does not own the instance of cannot be
// removed: the delete fails naming it, and leaves the network for later.
func TestDestroyNamesWhatCannotBeRemoved(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ref := spec.Ref{Type: spec.TypeHA, Name: "lo-blocked", Region: region}
	c := newCluster(t, e, ref, "10.72.0.0/16", 300*time.Millisecond)
	run, err := e.ec2.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(moto.UbuntuNobleAMD64), InstanceType: ec2types.InstanceTypeT3Micro,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SubnetId: aws.String(c.net.Subnets[0].ID)})
	if err != nil {
		t.Fatal(err)
	}
	instance := aws.ToString(run.Instances[0].InstanceId)
	vol, err := e.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String(c.net.Subnets[0].Zone), Size: aws.Int32(1),
		TagSpecifications: tagSpec(ec2types.ResourceTypeVolume, awsx.KubernetesClusterTag(ref.Name), "owned",
			"kubernetes.io/created-for/pvc/namespace", "db", "kubernetes.io/created-for/pvc/name", "data")})
	if err != nil {
		t.Fatal(err)
	}
	volID := aws.ToString(vol.VolumeId)
	if _, err := e.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(volID), InstanceId: aws.String(instance), Device: aws.String("/dev/sdf")}); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	err = engine.Destroy(ctx, c.g, c.j, engine.Options{})
	if err == nil {
		t.Fatal("destroy succeeded with an attached volume of the cluster")
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("destroy took %s: the wait is not bounded by InUseTimeout", d)
	}
	for _, want := range []string{volID, instance, "PVC db/data", "kforge delete ha-aws --name lo-blocked --region us-east-1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %q: %v", want, err)
		}
	}
	vpcs, derr := e.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{VpcIds: []string{c.net.VPCID}})
	if derr != nil || len(vpcs.Vpcs) != 1 {
		t.Errorf("the network was deleted although the leftovers step failed: %v", derr)
	}

	// Once the volume is free, the delete finishes.
	if _, err := e.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(volID), InstanceId: aws.String(instance), Device: aws.String("/dev/sdf")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{instance}}); err != nil {
		t.Fatal(err)
	}
	if err := engine.Destroy(ctx, c.g, c.j, engine.Options{}); err != nil {
		t.Fatalf("destroy after freeing the volume: %v", err)
	}
	if vols, err := e.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{volID}}); err == nil && len(vols.Volumes) > 0 {
		t.Errorf("volume %s is still there", volID)
	}
}

func TestEnsureMakesNoCall(t *testing.T) {
	// Nil clients: any AWS call would panic.
	s := leftovers.Step(&leftovers.Clients{}, spec.Ref{Type: spec.TypeHA, Name: "x", Region: region}, []string{network.StepID})
	if s.ID != leftovers.StepID || len(s.Needs) != 1 || s.Needs[0] != network.StepID {
		t.Errorf("step %s needs %v", s.ID, s.Needs)
	}
	out, err := s.Ensure(context.Background(), nil)
	if out != nil || err != nil {
		t.Errorf("Ensure = %v, %v; want nil, nil", out, err)
	}
}

func jsonUnmarshal(raw []byte, v any) error { return json.Unmarshal(raw, v) }

// TestLostStateSweepsOnlyTheClustersVPC: without state, the step finds the
// cluster's VPC by kforge's tags and leaves alone what a cluster of the same
// name made elsewhere (one kforge does not own, say); with no network of
// the cluster left, it sweeps nothing.
func TestLostStateSweepsOnlyTheClustersVPC(t *testing.T) {
	e := newEnv(t)
	ref := spec.Ref{Type: spec.TypeHA, Name: "twin", Region: region}
	c := newCluster(t, e, ref, "10.72.0.0/16", time.Second)
	mine := makeK8sResources(t, e, "twin-mine", c.net.VPCID, c.net.SubnetIDs(), c.net.Subnets[0].Zone,
		[]string{awsx.KubernetesClusterTag("twin"), "owned"}, nil)
	// A foreign cluster of the same name (not kforge's), in its own VPC.
	foreign, err := e.ec2.CreateVpc(context.Background(), &ec2.CreateVpcInput{CidrBlock: aws.String("10.73.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	fsub, err := e.ec2.CreateSubnet(context.Background(), &ec2.CreateSubnetInput{VpcId: foreign.Vpc.VpcId, CidrBlock: aws.String("10.73.1.0/24"), AvailabilityZone: aws.String(c.net.Subnets[0].Zone)})
	if err != nil {
		t.Fatal(err)
	}
	fsub2, err := e.ec2.CreateSubnet(context.Background(), &ec2.CreateSubnetInput{VpcId: foreign.Vpc.VpcId, CidrBlock: aws.String("10.73.2.0/24"), AvailabilityZone: aws.String(c.net.Subnets[1].Zone)})
	if err != nil {
		t.Fatal(err)
	}
	theirs := makeK8sResources(t, e, "twin-theirs", aws.ToString(foreign.Vpc.VpcId),
		[]string{aws.ToString(fsub.Subnet.SubnetId), aws.ToString(fsub2.Subnet.SubnetId)}, c.net.Subnets[0].Zone,
		[]string{awsx.KubernetesClusterTag("twin"), "owned"}, nil)

	if _, err := c.destroy(c.lostState(t)); err != nil {
		t.Fatalf("destroy without state: %v", err)
	}
	for id, there := range exists(t, e, mine) {
		if there && id != mine.nodesSG && id != mine.volume {
			t.Errorf("%s of the cluster's VPC remains", id)
		}
	}
	for id, there := range exists(t, e, theirs) {
		if !there && id != theirs.volume && id != theirs.nodesSG {
			t.Errorf("%s of a foreign cluster of the same name, in another VPC, was deleted", id)
		}
	}
}
