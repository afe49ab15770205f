package network_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/network"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
	"github.com/kforge/kforge/test/testutil/moto"
)

const region = "us-east-1"

// server is one emulator for the package; each test uses its own cluster
// names, so tests do not see each other's resources.
var server *moto.Server

func TestMain(m *testing.M) {
	moto.RunTests(m, &server)
}

func ec2Client(t *testing.T) *ec2.Client {
	t.Helper()
	cfg := server.Config(t, region)
	return ec2.NewFromConfig(cfg)
}

func ref(name string) spec.Ref { return spec.Ref{Type: spec.TypeHA, Name: name, Region: region} }

// journal returns a fresh journal for a cluster, as after a crash that lost
// the state (or before the first run).
func journal(t *testing.T, r spec.Ref) *engine.Journal {
	t.Helper()
	store, err := state.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return engine.NewJournal(store, state.New(spec.Spec{Ref: r}, time.Now()))
}

// graph is the network's graph, as a provider builds it.
func graph(c *network.Clients, s network.Spec) *engine.Graph {
	g := engine.NewGraph()
	network.Add(g, c, s)
	return g
}

// session is a provider's session: the network look-ups of one run.
type session struct{ l *network.Lookups }

func (s *session) NetworkLookups() *network.Lookups { return s.l }

// opts are the options of one run, with its own look-ups, as the
// lifecycle gives a provider's session.
func opts(c *network.Clients) engine.Options {
	return engine.Options{Context: &session{l: network.NewLookups(c.EC2)}}
}

func apply(t *testing.T, c *network.Clients, s network.Spec, j *engine.Journal) network.Network {
	t.Helper()
	if err := engine.Apply(context.Background(), graph(c, s), j, opts(c)); err != nil {
		t.Fatalf("apply: %v", err)
	}
	return journaled(t, j)
}

// journaled is the Network the journal holds.
func journaled(t *testing.T, j *engine.Journal) network.Network {
	t.Helper()
	raw, ok := j.Done(network.StepID)
	if !ok {
		t.Fatal("network step not journaled")
	}
	var n network.Network
	if err := jsonUnmarshal(raw, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

func destroy(c *network.Clients, s network.Spec, j *engine.Journal) error {
	_, err := destroyLog(c, s, j)
	return err
}

// destroyLog destroys and returns how each step ended: done, skipped or
// failed.
func destroyLog(c *network.Clients, s network.Spec, j *engine.Journal) (map[string]engine.EventKind, error) {
	ended := map[string]engine.EventKind{}
	o := opts(c)
	o.Events = func(e engine.Event) {
		switch e.Kind {
		case engine.EventDone, engine.EventSkipped, engine.EventFailed:
			ended[e.Step] = e.Kind
		}
	}
	err := engine.Destroy(context.Background(), graph(c, s), j, o)
	return ended, err
}

// checkEnded asserts that the steps in done ended as done and every other
// step of the graph as skipped.
func checkEnded(t *testing.T, ended map[string]engine.EventKind, c *network.Clients, s network.Spec, done ...string) {
	t.Helper()
	want := map[string]engine.EventKind{}
	for _, id := range graph(c, s).IDs() {
		want[id] = engine.EventSkipped
	}
	for _, id := range done {
		want[id] = engine.EventDone
	}
	name := map[engine.EventKind]string{engine.EventDone: "done", engine.EventSkipped: "skipped", engine.EventFailed: "failed"}
	for id, k := range want {
		if got, ok := ended[id]; !ok || got != k {
			t.Errorf("step %s ended %s, want %s", id, name[got], name[k])
		}
	}
}

// tagged counts the cluster's resources of each kind by tags.
func tagged(t *testing.T, c *ec2.Client, r spec.Ref) map[string]int {
	t.Helper()
	ctx := context.Background()
	f := awsx.ClusterFilters(r)
	vpcs, err := c.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	subnets, err := c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	igws, err := c.DescribeInternetGateways(ctx, &ec2.DescribeInternetGatewaysInput{Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	rtbs, err := c.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]int{"vpc": len(vpcs.Vpcs), "subnet": len(subnets.Subnets), "igw": len(igws.InternetGateways), "rtb": len(rtbs.RouteTables)}
}

func attr(t *testing.T, c *ec2.Client, vpcID string, a types.VpcAttributeName) bool {
	t.Helper()
	out, err := c.DescribeVpcAttribute(context.Background(), &ec2.DescribeVpcAttributeInput{VpcId: aws.String(vpcID), Attribute: a})
	if err != nil {
		t.Fatal(err)
	}
	if a == types.VpcAttributeNameEnableDnsSupport {
		return aws.ToBool(out.EnableDnsSupport.Value)
	}
	return aws.ToBool(out.EnableDnsHostnames.Value)
}

// checkPublicNetwork asserts, through the EC2 API, what a network with an
// internet gateway must look like.
func checkPublicNetwork(t *testing.T, c *ec2.Client, r spec.Ref, n network.Network, zones int) {
	t.Helper()
	ctx := context.Background()
	if !attr(t, c, n.VPCID, types.VpcAttributeNameEnableDnsHostnames) || !attr(t, c, n.VPCID, types.VpcAttributeNameEnableDnsSupport) {
		t.Errorf("VPC %s lacks DNS hostnames or DNS support", n.VPCID)
	}
	if len(n.Subnets) != zones {
		t.Fatalf("network has %d subnets, want %d", len(n.Subnets), zones)
	}
	out, err := c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: n.SubnetIDs()})
	if err != nil {
		t.Fatal(err)
	}
	azs := map[string]bool{}
	for _, s := range out.Subnets {
		id := aws.ToString(s.SubnetId)
		azs[aws.ToString(s.AvailabilityZone)] = true
		if aws.ToString(s.VpcId) != n.VPCID {
			t.Errorf("subnet %s is in %s, not %s", id, aws.ToString(s.VpcId), n.VPCID)
		}
		if !aws.ToBool(s.MapPublicIpOnLaunch) {
			t.Errorf("subnet %s does not map public IPs on launch", id)
		}
		for k, v := range map[string]string{
			awsx.KubernetesClusterTag(r.Name): "owned", network.TagELB: "1",
			awsx.TagCluster: r.Name, awsx.TagType: r.Type, awsx.TagRegion: r.Region,
		} {
			if got := awsx.EC2TagValue(s.Tags, k); got != v {
				t.Errorf("subnet %s: tag %s = %q, want %q", id, k, got, v)
			}
		}
		if !strings.HasPrefix(awsx.EC2TagValue(s.Tags, awsx.TagName), "kforge-"+r.Name+"-subnet-") {
			t.Errorf("subnet %s: Name %q", id, awsx.EC2TagValue(s.Tags, awsx.TagName))
		}
	}
	if len(azs) != zones {
		t.Errorf("subnets span %d zones, want %d", len(azs), zones)
	}
	igws, err := c.DescribeInternetGateways(ctx, &ec2.DescribeInternetGatewaysInput{
		Filters: []types.Filter{{Name: aws.String("attachment.vpc-id"), Values: []string{n.VPCID}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(igws.InternetGateways) != 1 || aws.ToString(igws.InternetGateways[0].InternetGatewayId) != n.InternetGatewayID {
		t.Errorf("internet gateways attached to %s: %+v, want %s", n.VPCID, igws.InternetGateways, n.InternetGatewayID)
	}
	rtbs, err := c.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{RouteTableIds: []string{n.RouteTableID}})
	if err != nil {
		t.Fatal(err)
	}
	rt := rtbs.RouteTables[0]
	route := false
	for _, x := range rt.Routes {
		route = route || aws.ToString(x.DestinationCidrBlock) == "0.0.0.0/0" && aws.ToString(x.GatewayId) == n.InternetGatewayID
	}
	if !route {
		t.Errorf("route table %s has no 0.0.0.0/0 to %s: %+v", n.RouteTableID, n.InternetGatewayID, rt.Routes)
	}
	assoc := map[string]bool{}
	for _, a := range rt.Associations {
		assoc[aws.ToString(a.SubnetId)] = true
	}
	for _, s := range n.Subnets {
		if !assoc[s.ID] {
			t.Errorf("subnet %s is not associated with route table %s", s.ID, n.RouteTableID)
		}
	}
}

func TestOwnVPC(t *testing.T) {
	t.Parallel()
	c := ec2Client(t)
	r := ref("own")
	cl := &network.Clients{EC2: c, InUseTimeout: 2 * time.Second}
	s := network.Spec{Ref: r, Zones: 3}
	j := journal(t, r)
	n := apply(t, cl, s, j)

	if !n.OwnVPC || n.VPCCIDR != "10.0.0.0/16" {
		t.Errorf("network %+v: want an own VPC of 10.0.0.0/16", n)
	}
	want := map[string]int{"vpc": 1, "subnet": 3, "igw": 1, "rtb": 1}
	if got := tagged(t, c, r); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("tagged resources %v, want %v", got, want)
	}
	checkPublicNetwork(t, c, r, n, 3)
	var cidrs []string
	for _, sn := range n.Subnets {
		cidrs = append(cidrs, sn.CIDR)
		if !sn.Own || !sn.Public {
			t.Errorf("subnet %+v: want own and public", sn)
		}
	}
	if got := strings.Join(cidrs, " "); got != "10.0.0.0/20 10.0.16.0/20 10.0.32.0/20" {
		t.Errorf("subnet CIDRs %s", got)
	}
	vpcs, _ := c.DescribeVpcs(context.Background(), &ec2.DescribeVpcsInput{VpcIds: []string{n.VPCID}})
	if name := awsx.EC2TagValue(vpcs.Vpcs[0].Tags, awsx.TagName); name != "kforge-own-vpc" {
		t.Errorf("VPC Name = %q", name)
	}

	// Again with the journal: nothing new.
	if n2 := apply(t, cl, s, j); fmt.Sprint(n2) != fmt.Sprint(n) {
		t.Errorf("second apply gave %+v, want %+v", n2, n)
	}
	// Again without it, as after a crash before the journal was written:
	// every resource is found by its tags.
	if n3 := apply(t, cl, s, journal(t, r)); fmt.Sprint(n3) != fmt.Sprint(n) {
		t.Errorf("apply with lost state gave %+v, want %+v", n3, n)
	}
	if got := tagged(t, c, r); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after re-runs: tagged resources %v, want %v", got, want)
	}

	ended, err := destroyLog(cl, s, j)
	if err != nil {
		t.Fatalf("destroy: %v", err)
	}
	// What was removed is reported as deleted; the zones and the network
	// step (no stray subnets) removed nothing.
	checkEnded(t, ended, cl, s, "vpc", "igw", "igw/attach", "rtb", "subnet/0", "subnet/1", "subnet/2", "rtb/subnet/0", "rtb/subnet/1", "rtb/subnet/2")
	none := map[string]int{"vpc": 0, "subnet": 0, "igw": 0, "rtb": 0}
	if got := tagged(t, c, r); fmt.Sprint(got) != fmt.Sprint(none) {
		t.Errorf("after destroy: %v left", got)
	}
	if len(j.Cluster().Steps) != 0 {
		t.Errorf("journal still holds %v", j.Cluster().Steps)
	}
	// A second delete, with the state and without it, finds nothing and
	// says so: every step is skipped, none reported as deleted.
	for _, jj := range []*engine.Journal{j, journal(t, r)} {
		ended, err := destroyLog(cl, s, jj)
		if err != nil {
			t.Errorf("second destroy: %v", err)
		}
		checkEnded(t, ended, cl, s)
	}
}

func TestDestroyWithLostState(t *testing.T) {
	t.Parallel()
	c := ec2Client(t)
	r := ref("lost")
	cl := &network.Clients{EC2: c, InUseTimeout: 2 * time.Second}
	// Created with 4 zones; the delete only knows a spec with 2: it still
	// finds all four subnets by their tags.
	apply(t, cl, network.Spec{Ref: r, Zones: 4, CIDR: "10.8.0.0/16"}, journal(t, r))
	s := network.Spec{Ref: r, Zones: 2}
	ended, err := destroyLog(cl, s, journal(t, r))
	if err != nil {
		t.Fatalf("destroy: %v", err)
	}
	// The network step removed the two subnets beyond the spec's count.
	checkEnded(t, ended, cl, s, "vpc", "igw", "igw/attach", "rtb", "subnet/0", "subnet/1", "network")
	none := map[string]int{"vpc": 0, "subnet": 0, "igw": 0, "rtb": 0}
	if got := tagged(t, c, r); fmt.Sprint(got) != fmt.Sprint(none) {
		t.Errorf("after destroy with lost state: %v left", got)
	}
	ended, err = destroyLog(cl, s, journal(t, r))
	if err != nil {
		t.Fatalf("second destroy: %v", err)
	}
	checkEnded(t, ended, cl, s)
}

// userVPC creates a VPC as a user would, with DNS on and, if igw, an
// internet gateway, plus one subnet of the user's.
func userVPC(t *testing.T, c *ec2.Client, cidr string, igw bool) (vpcID, subnetID, igwID string) {
	t.Helper()
	ctx := context.Background()
	v, err := c.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String(cidr),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeVpc, Tags: []types.Tag{{Key: aws.String("owner"), Value: aws.String("user")}}}}})
	if err != nil {
		t.Fatal(err)
	}
	vpcID = aws.ToString(v.Vpc.VpcId)
	for _, in := range []*ec2.ModifyVpcAttributeInput{
		{VpcId: aws.String(vpcID), EnableDnsSupport: &types.AttributeBooleanValue{Value: aws.Bool(true)}},
		{VpcId: aws.String(vpcID), EnableDnsHostnames: &types.AttributeBooleanValue{Value: aws.Bool(true)}},
	} {
		if _, err := c.ModifyVpcAttribute(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	p := netip.MustParsePrefix(cidr)
	sn, err := c.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: aws.String(vpcID), AvailabilityZone: aws.String(region + "a"),
		CidrBlock: aws.String(netip.PrefixFrom(p.Addr(), 24).String())})
	if err != nil {
		t.Fatal(err)
	}
	subnetID = aws.ToString(sn.Subnet.SubnetId)
	if igw {
		g, err := c.CreateInternetGateway(ctx, &ec2.CreateInternetGatewayInput{})
		if err != nil {
			t.Fatal(err)
		}
		igwID = aws.ToString(g.InternetGateway.InternetGatewayId)
		if _, err := c.AttachInternetGateway(ctx, &ec2.AttachInternetGatewayInput{InternetGatewayId: aws.String(igwID), VpcId: aws.String(vpcID)}); err != nil {
			t.Fatal(err)
		}
	}
	return vpcID, subnetID, igwID
}

func vpcSnapshot(t *testing.T, c *ec2.Client, vpcID string) string {
	t.Helper()
	out, err := c.DescribeVpcs(context.Background(), &ec2.DescribeVpcsInput{VpcIds: []string{vpcID}})
	if err != nil {
		t.Fatal(err)
	}
	v := out.Vpcs[0]
	return fmt.Sprintf("%s %s tags=%v dnsSupport=%v dnsHostnames=%v", aws.ToString(v.CidrBlock), v.State, awsTags(v.Tags),
		attr(t, c, vpcID, types.VpcAttributeNameEnableDnsSupport), attr(t, c, vpcID, types.VpcAttributeNameEnableDnsHostnames))
}

func awsTags(tags []types.Tag) string {
	var kv []string
	for _, t := range tags {
		kv = append(kv, aws.ToString(t.Key)+"="+aws.ToString(t.Value))
	}
	sort.Strings(kv)
	return strings.Join(kv, ",")
}

func TestExistingVPCSharedByTwoClusters(t *testing.T) {
	t.Parallel()
	c := ec2Client(t)
	ctx := context.Background()
	vpcID, userSubnet, igwID := userVPC(t, c, "10.20.0.0/16", true)
	before := vpcSnapshot(t, c, vpcID)
	cl := &network.Clients{EC2: c, InUseTimeout: 2 * time.Second}

	specs := map[string]network.Spec{}
	journals := map[string]*engine.Journal{}
	nets := map[string]network.Network{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, name := range []string{"shared-a", "shared-b"} {
		specs[name] = network.Spec{Ref: ref(name), VPCID: vpcID, Zones: 3}
		journals[name] = journal(t, ref(name))
	}
	// Both clusters create their subnets at once: they race for the same
	// free blocks.
	for name := range specs {
		wg.Go(func() {
			err := engine.Apply(ctx, graph(cl, specs[name]), journals[name], opts(cl))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("apply %s: %v", name, err)
				return
			}
			raw, _ := journals[name].Done(network.StepID)
			var n network.Network
			if err := jsonUnmarshal(raw, &n); err != nil {
				t.Error(err)
			}
			nets[name] = n
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	all := []netip.Prefix{netip.MustParsePrefix("10.20.0.0/24")} // the user's subnet
	for name, n := range nets {
		if n.VPCID != vpcID || n.OwnVPC || n.InternetGatewayID != igwID {
			t.Errorf("%s: network %+v, want VPC %s (not own) through %s", name, n, vpcID, igwID)
		}
		checkPublicNetwork(t, c, ref(name), n, 3)
		for _, s := range n.Subnets {
			p := netip.MustParsePrefix(s.CIDR)
			if p.Bits() != 24 {
				t.Errorf("%s: subnet %s is not a /24", name, s.CIDR)
			}
			for _, q := range all {
				if p.Overlaps(q) {
					t.Errorf("%s: subnet %s overlaps %s", name, p, q)
				}
			}
			all = append(all, p)
		}
	}
	if got := vpcSnapshot(t, c, vpcID); got != before {
		t.Errorf("the user's VPC changed:\n%s\nwas\n%s", got, before)
	}

	// Deleting one cluster leaves the other, the VPC, its gateway and the
	// user's subnet.
	ended, err := destroyLog(cl, specs["shared-a"], journals["shared-a"])
	if err != nil {
		t.Fatalf("destroy shared-a: %v", err)
	}
	checkEnded(t, ended, cl, specs["shared-a"], "rtb", "subnet/0", "subnet/1", "subnet/2", "rtb/subnet/0", "rtb/subnet/1", "rtb/subnet/2")
	ended, err = destroyLog(cl, specs["shared-a"], journal(t, ref("shared-a")))
	if err != nil {
		t.Fatalf("second destroy of shared-a: %v", err)
	}
	checkEnded(t, ended, cl, specs["shared-a"])
	if got := tagged(t, c, ref("shared-a")); got["subnet"]+got["rtb"] != 0 {
		t.Errorf("shared-a left %v", got)
	}
	if got := tagged(t, c, ref("shared-b")); got["subnet"] != 3 || got["rtb"] != 1 {
		t.Errorf("shared-b has %v after shared-a's delete", got)
	}
	checkPublicNetwork(t, c, ref("shared-b"), nets["shared-b"], 3)
	// Lost state: the delete finds shared-b's subnets by tags and still
	// leaves the VPC alone.
	if err := destroy(cl, network.Spec{Ref: ref("shared-b")}, journal(t, ref("shared-b"))); err != nil {
		t.Fatalf("destroy shared-b: %v", err)
	}
	if got := tagged(t, c, ref("shared-b")); got["subnet"]+got["rtb"] != 0 {
		t.Errorf("shared-b left %v", got)
	}
	if got := vpcSnapshot(t, c, vpcID); got != before {
		t.Errorf("the user's VPC changed:\n%s\nwas\n%s", got, before)
	}
	subnets, err := c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []types.Filter{{Name: aws.String("vpc-id"), Values: []string{vpcID}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(subnets.Subnets) != 1 || aws.ToString(subnets.Subnets[0].SubnetId) != userSubnet {
		t.Errorf("subnets left in the user's VPC: %+v, want only %s", subnets.Subnets, userSubnet)
	}
	igws, err := c.DescribeInternetGateways(ctx, &ec2.DescribeInternetGatewaysInput{InternetGatewayIds: []string{igwID}})
	if err != nil || len(igws.InternetGateways[0].Attachments) != 1 {
		t.Errorf("the user's internet gateway was detached or deleted: %+v, %v", igws, err)
	}
}

func TestExistingVPCWithoutGateway(t *testing.T) {
	t.Parallel()
	c := ec2Client(t)
	vpcID, _, _ := userVPC(t, c, "10.30.0.0/16", false)
	r := ref("private")
	cl := &network.Clients{EC2: c, InUseTimeout: 2 * time.Second}
	s := network.Spec{Ref: r, VPCID: vpcID, Zones: 2, SubnetPrefix: 20}
	j := journal(t, r)
	n := apply(t, cl, s, j)
	if n.InternetGatewayID != "" || n.RouteTableID != "" {
		t.Errorf("network %+v: want no gateway and no route table", n)
	}
	out, err := c.DescribeSubnets(context.Background(), &ec2.DescribeSubnetsInput{SubnetIds: n.SubnetIDs()})
	if err != nil {
		t.Fatal(err)
	}
	for _, sn := range out.Subnets {
		if aws.ToBool(sn.MapPublicIpOnLaunch) || awsx.EC2TagValue(sn.Tags, network.TagInternalELB) != "1" {
			t.Errorf("subnet %s: want private (no public IPs, internal-elb tag), got %+v", aws.ToString(sn.SubnetId), sn)
		}
		if got := aws.ToString(sn.CidrBlock); got != "10.30.16.0/20" && got != "10.30.32.0/20" {
			t.Errorf("subnet CIDR %s: want the first free /20s", got)
		}
	}
	if got := tagged(t, c, r); got["igw"]+got["rtb"] != 0 || got["subnet"] != 2 {
		t.Errorf("tagged %v", got)
	}
	if err := destroy(cl, s, j); err != nil {
		t.Fatal(err)
	}
	if got := tagged(t, c, r); got["subnet"] != 0 {
		t.Errorf("left %v", got)
	}
}

// A create that stopped after its first subnet (in an existing VPC) makes
// the second in the block next to it, the one a create in one go gives
// it: the cluster's own subnets do not shift the order of blocks, so the
// subnets of one create never depend on which is made first.
func TestSharedSubnetsKeepTheirBlocks(t *testing.T) {
	t.Parallel()
	c := ec2Client(t)
	vpcID, _, _ := userVPC(t, c, "10.31.0.0/16", false)
	r := ref("resumed")
	tags := awsx.Owned(r, awsx.Tags(r, "kforge-resumed-subnet-0", network.TagSubnet, "0", network.TagInternalELB, "1"))
	first, err := c.CreateSubnet(context.Background(), &ec2.CreateSubnetInput{VpcId: aws.String(vpcID), AvailabilityZone: aws.String(region + "a"),
		CidrBlock: aws.String("10.31.16.0/20"), TagSpecifications: awsx.EC2TagSpec(types.ResourceTypeSubnet, tags)})
	if err != nil {
		t.Fatal(err)
	}
	cl := &network.Clients{EC2: c, InUseTimeout: 2 * time.Second}
	n := apply(t, cl, network.Spec{Ref: r, VPCID: vpcID, Zones: 2, SubnetPrefix: 20}, journal(t, r))
	out, err := c.DescribeSubnets(context.Background(), &ec2.DescribeSubnetsInput{SubnetIds: n.SubnetIDs()})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, sn := range out.Subnets {
		got[awsx.EC2TagValue(sn.Tags, network.TagSubnet)] = aws.ToString(sn.CidrBlock)
	}
	if want := map[string]string{"0": "10.31.16.0/20", "1": "10.31.32.0/20"}; !maps.Equal(got, want) {
		t.Errorf("subnets by index: %v, want %v (subnet 0 is %s)", got, want, aws.ToString(first.Subnet.SubnetId))
	}
}

func TestAdoptSubnets(t *testing.T) {
	t.Parallel()
	c := ec2Client(t)
	ctx := context.Background()
	vpcID, first, _ := userVPC(t, c, "10.40.0.0/16", true)
	second, err := c.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: aws.String(vpcID), AvailabilityZone: aws.String(region + "b"), CidrBlock: aws.String("10.40.1.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{first, aws.ToString(second.Subnet.SubnetId)}
	r := ref("adopt")
	cl := &network.Clients{EC2: c, InUseTimeout: 2 * time.Second}
	s := network.Spec{Ref: r, VPCID: vpcID, SubnetIDs: ids}
	g := graph(cl, s)
	if got := strings.Join(g.IDs(), " "); got != "vpc network" {
		t.Errorf("steps %s, want vpc network", got)
	}
	j := journal(t, r)
	n := apply(t, cl, s, j)
	if strings.Join(n.SubnetIDs(), ",") != strings.Join(ids, ",") || n.VPCID != vpcID || n.OwnVPC {
		t.Errorf("network %+v, want subnets %v of %s", n, ids, vpcID)
	}
	if n.Subnets[0].Zone != region+"a" || n.Subnets[1].Zone != region+"b" || n.Subnets[0].Own {
		t.Errorf("subnets %+v", n.Subnets)
	}
	if err := destroy(cl, s, j); err != nil {
		t.Fatal(err)
	}
	out, err := c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: ids})
	if err != nil || len(out.Subnets) != 2 {
		t.Errorf("adopted subnets after destroy: %v, %v", out, err)
	}
}

func TestCheckVPC(t *testing.T) {
	t.Parallel()
	c := ec2Client(t)
	ctx := context.Background()
	good, goodSubnet, _ := userVPC(t, c, "10.50.0.0/16", true)
	goodB, err := c.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: aws.String(good), AvailabilityZone: aws.String(region + "b"), CidrBlock: aws.String("10.50.1.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	sameZone, err := c.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: aws.String(good), AvailabilityZone: aws.String(region + "a"), CidrBlock: aws.String("10.50.2.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	other, otherSubnet, _ := userVPC(t, c, "10.51.0.0/16", false)
	_ = other
	noHostnames, _, _ := userVPC(t, c, "10.52.0.0/16", false)
	if _, err := c.ModifyVpcAttribute(ctx, &ec2.ModifyVpcAttributeInput{VpcId: aws.String(noHostnames), EnableDnsHostnames: &types.AttributeBooleanValue{Value: aws.Bool(false)}}); err != nil {
		t.Fatal(err)
	}
	noSupport, err := c.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.53.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	noSupportID := aws.ToString(noSupport.Vpc.VpcId)
	if _, err := c.ModifyVpcAttribute(ctx, &ec2.ModifyVpcAttributeInput{VpcId: aws.String(noSupportID), EnableDnsSupport: &types.AttributeBooleanValue{Value: aws.Bool(false)}}); err != nil {
		t.Fatal(err)
	}
	cl := &network.Clients{EC2: c, InUseTimeout: 2 * time.Second}
	for _, tc := range []struct {
		name    string
		vpc     string
		subnets []string
		want    string // "" means accepted
	}{
		{"good", good, nil, ""},
		{"good with subnets", good, []string{goodSubnet, aws.ToString(goodB.Subnet.SubnetId)}, ""},
		{"missing VPC", "vpc-0123456789abcdef0", nil, "does not exist"},
		{"DNS hostnames off", noHostnames, nil, "--enable-dns-hostnames"},
		{"DNS support off", noSupportID, nil, "--enable-dns-support"},
		{"subnet of another VPC", good, []string{goodSubnet, otherSubnet}, "belongs to VPC " + other},
		{"missing subnet", good, []string{"subnet-0123456789abcdef0"}, "does not exist"},
		{"subnets in one zone", good, []string{goodSubnet, aws.ToString(sameZone.Subnet.SubnetId)}, "two availability zones"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := network.CheckVPC(ctx, cl, tc.vpc, tc.subnets)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ue *spec.UsageError
			if !errors.As(err, &ue) {
				t.Fatalf("error %v (%T), want a *spec.UsageError", err, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
	// The checks change nothing.
	if !attr(t, c, noHostnames, types.VpcAttributeNameEnableDnsSupport) || attr(t, c, noHostnames, types.VpcAttributeNameEnableDnsHostnames) {
		t.Error("CheckVPC modified a VPC")
	}
}

// A foreign subnet with a network interface left in the cluster's VPC
// blocks its deletion: Destroy fails naming them, after removing what it
// could.
func TestDestroyNamesBlockers(t *testing.T) {
	t.Parallel()
	c := ec2Client(t)
	ctx := context.Background()
	r := ref("blocked")
	cl := &network.Clients{EC2: c, InUseTimeout: 300 * time.Millisecond}
	s := network.Spec{Ref: r, Zones: 2, CIDR: "10.60.0.0/16"}
	j := journal(t, r)
	n := apply(t, cl, s, j)
	foreign, err := c.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: aws.String(n.VPCID), CidrBlock: aws.String("10.60.200.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	foreignID := aws.ToString(foreign.Subnet.SubnetId)
	eni, err := c.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(foreignID), Description: aws.String("left by someone")})
	if err != nil {
		t.Fatal(err)
	}
	eniID := aws.ToString(eni.NetworkInterface.NetworkInterfaceId)
	start := time.Now()
	err = destroy(cl, s, j)
	if err == nil {
		t.Fatal("destroy succeeded with a foreign subnet in the VPC")
	}
	if time.Since(start) > 20*time.Second {
		t.Errorf("destroy took %s: the in-use wait is not bounded by InUseTimeout", time.Since(start))
	}
	for _, want := range []string{"VPC " + n.VPCID, foreignID, eniID, "left by someone", "kforge delete ha-aws --name blocked --region us-east-1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %q: %v", want, err)
		}
	}
	if got := tagged(t, c, r); got["subnet"]+got["igw"]+got["rtb"] != 0 || got["vpc"] != 1 {
		t.Errorf("after a blocked destroy: %v, want only the VPC left", got)
	}
	// Once the user removes the blockers, the delete finishes.
	if _, err := c.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(eniID)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteSubnet(ctx, &ec2.DeleteSubnetInput{SubnetId: aws.String(foreignID)}); err != nil {
		t.Fatal(err)
	}
	if err := destroy(cl, s, j); err != nil {
		t.Fatalf("destroy after removing the blockers: %v", err)
	}
	if got := tagged(t, c, r); got["vpc"] != 0 {
		t.Errorf("left %v", got)
	}
}

func TestSteps(t *testing.T) {
	t.Parallel()
	cl := &network.Clients{}
	for _, tc := range []struct {
		name string
		s    network.Spec
		ids  string
	}{
		{"own", network.Spec{Ref: ref("x")}, "azs vpc igw igw/attach rtb subnet/0 subnet/1 subnet/2 rtb/route rtb/subnet/0 rtb/subnet/1 rtb/subnet/2 network"},
		{"existing", network.Spec{Ref: ref("x"), VPCID: "vpc-0123456789abcdef0", Zones: 2}, "azs vpc igw rtb subnet/0 subnet/1 rtb/route rtb/subnet/0 rtb/subnet/1 network"},
		{"adopt", network.Spec{Ref: ref("x"), VPCID: "vpc-0123456789abcdef0", SubnetIDs: []string{"subnet-01234567"}}, "vpc network"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := graph(cl, tc.s)
			if got := strings.Join(g.IDs(), " "); got != tc.ids {
				t.Errorf("steps %s, want %s", got, tc.ids)
			}
			// Steps, for callers that build graphs from steps, gives the
			// same steps.
			var ids []string
			for _, st := range network.Steps(cl, tc.s) {
				ids = append(ids, st.ID)
			}
			if got := strings.Join(ids, " "); got != tc.ids {
				t.Errorf("Steps %s, want %s", got, tc.ids)
			}
			plan, err := g.Plan(nil)
			if err != nil {
				t.Fatal(err)
			}
			if plan[len(plan)-1].Step != network.StepID {
				t.Errorf("last step %s, want %s", plan[len(plan)-1].Step, network.StepID)
			}
			for _, e := range plan {
				if e.Title == "" {
					t.Errorf("step %s has no title", e.Step)
				}
			}
		})
	}
	// Every step needs only what AWS needs first: kforge's gateway is made
	// while the VPC is, and only its attachment waits for the VPC; the
	// route table and the subnets wait for the VPC only (in an existing
	// VPC also for the gateway look-up, which decides whether they are
	// public and whether there is a table); the route waits for the
	// attachment, and each association for its subnet and the table.
	for _, tc := range []struct {
		s     network.Spec
		needs map[string]string
		chain int
	}{
		{network.Spec{Ref: ref("x")}, map[string]string{
			"vpc": "", "igw": "", "igw/attach": "vpc igw", "rtb": "vpc", "subnet/0": "azs vpc",
			"rtb/route": "vpc igw rtb igw/attach", "rtb/subnet/0": "vpc rtb subnet/0",
		}, 4},
		{network.Spec{Ref: ref("x"), VPCID: "vpc-0123456789abcdef0", Zones: 2}, map[string]string{
			"vpc": "", "igw": "vpc", "rtb": "vpc igw", "subnet/0": "azs vpc igw",
			"rtb/route": "vpc igw rtb", "rtb/subnet/1": "vpc rtb subnet/1",
		}, 5},
	} {
		g := graph(cl, tc.s)
		for id, want := range tc.needs {
			if got := strings.Join(g.Step(id).Needs, " "); got != want {
				t.Errorf("VPC %q: %s needs %q, want %q", tc.s.VPCID, id, got, want)
			}
		}
		if got := g.CriticalPath(); got != tc.chain {
			t.Errorf("VPC %q: %d steps in a row, want %d", tc.s.VPCID, got, tc.chain)
		}
	}
	g := graph(cl, network.Spec{Ref: ref("x")})
	if got := g.Step(network.StepVPC).Title; got != "VPC 10.0.0.0/16 with DNS hostnames and DNS support" {
		t.Errorf("vpc title %q", got)
	}
	if got := g.Step("subnet/1").Title; !strings.Contains(got, "10.0.16.0/20") {
		t.Errorf("subnet/1 title %q", got)
	}
	g = graph(cl, network.Spec{Ref: ref("x"), VPCID: "vpc-0123456789abcdef0"})
	if got := g.Step(network.StepVPC).Title; got != "existing VPC vpc-0123456789abcdef0 (checked, not modified)" {
		t.Errorf("vpc title %q", got)
	}
	if g.Step(network.StepVPC).Delete != nil || g.Step(network.StepIGW).Delete != nil {
		t.Error("an existing VPC or its gateway has a Delete")
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		s    network.Spec
		want string
	}{
		{"defaults", network.Spec{Ref: ref("x")}, ""},
		{"existing", network.Spec{Ref: ref("x"), VPCID: "vpc-1"}, ""},
		{"one zone", network.Spec{Ref: ref("x"), Zones: 1}, "availability zones"},
		{"subnets without VPC", network.Spec{Ref: ref("x"), SubnetIDs: []string{"subnet-1"}}, "--vpc-id"},
		{"bad CIDR", network.Spec{Ref: ref("x"), CIDR: "10.0.0.1/16"}, "invalid VPC CIDR"},
		{"IPv6 CIDR", network.Spec{Ref: ref("x"), CIDR: "fd00::/56"}, "invalid VPC CIDR"},
		{"VPC too large", network.Spec{Ref: ref("x"), CIDR: "10.0.0.0/8"}, "/16 to /28"},
		{"too many subnets", network.Spec{Ref: ref("x"), CIDR: "10.0.0.0/24", SubnetPrefix: 26, Zones: 5}, "cannot hold 5 subnets"},
		{"subnet larger than VPC", network.Spec{Ref: ref("x"), CIDR: "10.0.0.0/20", SubnetPrefix: 19}, "cannot hold"},
		{"bad ref", network.Spec{Ref: spec.Ref{Type: spec.TypeHA, Name: "Bad", Region: region}}, "invalid cluster name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.s.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ue *spec.UsageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want a usage error saying %q", err, tc.want)
			}
		})
	}
}

func jsonUnmarshal(raw []byte, v any) error { return json.Unmarshal(raw, v) }
