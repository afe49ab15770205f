package network_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmw "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go/middleware"

	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/network"
)

// calls counts the EC2 operations a client makes (each page of a
// paginated call counts).
type calls struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *calls) middleware(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("countCalls",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			c.mu.Lock()
			c.n[awsmw.GetOperationName(ctx)]++
			c.mu.Unlock()
			return next.HandleInitialize(ctx, in)
		}), middleware.After)
}

// take returns the counts since the last take.
func (c *calls) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.n
	c.n = map[string]int{}
	return n
}

// mutating lists the operations of n that may change something.
func mutating(n map[string]int) []string {
	var out []string
	for op := range n {
		if !strings.HasPrefix(op, "Describe") {
			out = append(out, op)
		}
	}
	slices.Sort(out)
	return out
}

// countingClients are network clients whose calls are counted.
func countingClients(t *testing.T) (*network.Clients, *calls) {
	t.Helper()
	cnt := &calls{n: map[string]int{}}
	c := ec2.NewFromConfig(server.Config(t, region), func(o *ec2.Options) { o.APIOptions = append(o.APIOptions, cnt.middleware) })
	return &network.Clients{EC2: c, InUseTimeout: 2 * time.Second}, cnt
}

func diff(t *testing.T, c *network.Clients, s network.Spec, j *engine.Journal) []engine.Change {
	t.Helper()
	ch, err := engine.Diff(context.Background(), graph(c, s), j, opts(c))
	if err != nil {
		t.Fatalf("diff: %v", err)
	}
	return ch
}

// hasChange fails the test unless changes hold one of step, kind and a
// detail that says want.
func hasChange(t *testing.T, changes []engine.Change, step, kind, want string) {
	t.Helper()
	for _, c := range changes {
		if c.Step == step && c.Kind == kind && strings.Contains(c.Detail, want) {
			return
		}
	}
	t.Errorf("diff %+v has no %s of %s saying %q", changes, kind, step, want)
}

// inSync fails the test unless a diff finds nothing to change.
func inSync(t *testing.T, c *network.Clients, s network.Spec, j *engine.Journal) {
	t.Helper()
	if ch := diff(t, c, s, j); len(ch) != 0 {
		t.Errorf("diff after the repair: %+v, want none", ch)
	}
}

// A reconcile of an unchanged network changes nothing and asks AWS once
// per kind of resource; its diff too.
func TestUnchangedReconcileCallBudget(t *testing.T) {
	t.Parallel()
	cl, cnt := countingClients(t)
	userVPCID, _, _ := userVPC(t, cl.EC2, "10.71.0.0/16", true)
	for _, tc := range []struct {
		name string
		s    network.Spec
		// DescribeVpcAttribute calls: none for kforge's own VPC, whose DNS
		// settings kforge made; both attributes of an existing VPC.
		attrs int
	}{
		{"own", network.Spec{Ref: ref("budget-own"), Zones: 3, CIDR: "10.70.0.0/16"}, 0},
		{"existing", network.Spec{Ref: ref("budget-existing"), VPCID: userVPCID, Zones: 3}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := journal(t, tc.s.Ref)
			n := apply(t, cl, tc.s, j)
			before := tagged(t, cl.EC2, tc.s.Ref)
			cnt.take()
			for _, run := range []string{"apply", "diff"} {
				if run == "apply" {
					if n2 := apply(t, cl, tc.s, j); fmt.Sprint(n2) != fmt.Sprint(n) {
						t.Errorf("reconcile gave %+v, want %+v", n2, n)
					}
				} else {
					inSync(t, cl, tc.s, j)
				}
				got := cnt.take()
				t.Logf("%s of an unchanged %s network: %v", run, tc.name, got)
				if m := mutating(got); len(m) > 0 {
					t.Errorf("%s of an unchanged network made mutating calls %v", run, m)
				}
				want := map[string]int{"DescribeVpcs": 1, "DescribeSubnets": 1, "DescribeInternetGateways": 1, "DescribeRouteTables": 1}
				if tc.attrs > 0 {
					want["DescribeVpcAttribute"] = tc.attrs
				}
				if !maps.Equal(got, want) {
					t.Errorf("%s of an unchanged network made calls %v, want %v", run, got, want)
				}
			}
			if after := tagged(t, cl.EC2, tc.s.Ref); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Errorf("tagged resources %v after the reconciles, were %v", after, before)
			}
			if err := destroy(cl, tc.s, j); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Each drift of kforge's own network, made outside kforge, is reported
// by a diff (which changes nothing) and repaired by a reconcile, which
// makes nothing twice.
func TestRepairDrift(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for i, tc := range []struct {
		name string
		// drift changes the network outside kforge and returns what the
		// diff must say about which step.
		drift func(t *testing.T, c *ec2.Client, n network.Network) (step, kind, detail string)
		// check asserts the repair through the EC2 API, beyond what
		// checkPublicNetwork asserts.
		check func(t *testing.T, c *ec2.Client, before, after network.Network)
	}{
		{
			name: "subnet deleted",
			drift: func(t *testing.T, c *ec2.Client, n network.Network) (string, string, string) {
				sn := n.Subnets[1]
				disassociate(t, c, n.RouteTableID, sn.ID)
				must(t)(c.DeleteSubnet(ctx, &ec2.DeleteSubnetInput{SubnetId: aws.String(sn.ID)}))
				return "subnet/1", engine.ChangeRecreate, fmt.Sprintf("subnet %s (%s in %s) was deleted outside kforge", sn.ID, sn.CIDR, sn.Zone)
			},
			check: func(t *testing.T, c *ec2.Client, before, after network.Network) {
				b, a := before.Subnets[1], after.Subnets[1]
				if a.ID == b.ID || a.CIDR != b.CIDR || a.Zone != b.Zone {
					t.Errorf("subnet 1 made again as %+v, want a new ID with %s in %s", a, b.CIDR, b.Zone)
				}
				out, err := c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{a.ID}})
				if err != nil {
					t.Fatal(err)
				}
				if got := tagValue(out.Subnets[0].Tags, network.TagSubnet); got != "1" {
					t.Errorf("the new subnet's index tag is %q, want 1", got)
				}
			},
		},
		{
			name: "default route deleted",
			drift: func(t *testing.T, c *ec2.Client, n network.Network) (string, string, string) {
				must(t)(c.DeleteRoute(ctx, &ec2.DeleteRouteInput{RouteTableId: aws.String(n.RouteTableID), DestinationCidrBlock: aws.String("0.0.0.0/0")}))
				return network.StepRoute, engine.ChangeRecreate, fmt.Sprintf("route 0.0.0.0/0 of %s to %s was deleted outside kforge", n.RouteTableID, n.InternetGatewayID)
			},
		},
		{
			name: "default route pointing elsewhere",
			drift: func(t *testing.T, c *ec2.Client, n network.Network) (string, string, string) {
				eni, err := c.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(n.Subnets[0].ID)})
				if err != nil {
					t.Fatal(err)
				}
				eniID := aws.ToString(eni.NetworkInterface.NetworkInterfaceId)
				t.Cleanup(func() {
					_, _ = c.DeleteNetworkInterface(context.Background(), &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(eniID)})
				})
				must(t)(c.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{RouteTableId: aws.String(n.RouteTableID),
					DestinationCidrBlock: aws.String("0.0.0.0/0"), NetworkInterfaceId: aws.String(eniID)}))
				return network.StepRoute, engine.ChangeUpdate, fmt.Sprintf("route 0.0.0.0/0 of %s points to %s instead of the internet gateway %s", n.RouteTableID, eniID, n.InternetGatewayID)
			},
		},
		{
			name: "association removed",
			drift: func(t *testing.T, c *ec2.Client, n network.Network) (string, string, string) {
				sn := n.Subnets[2].ID
				disassociate(t, c, n.RouteTableID, sn)
				return network.AssociationStepID(2), engine.ChangeRecreate, fmt.Sprintf("subnet %s is not associated with route table %s", sn, n.RouteTableID)
			},
		},
		{
			name: "gateway detached",
			drift: func(t *testing.T, c *ec2.Client, n network.Network) (string, string, string) {
				must(t)(c.DetachInternetGateway(ctx, &ec2.DetachInternetGatewayInput{InternetGatewayId: aws.String(n.InternetGatewayID), VpcId: aws.String(n.VPCID)}))
				return network.StepIGWAttach, engine.ChangeRecreate, fmt.Sprintf("internet gateway %s was detached from VPC %s outside kforge", n.InternetGatewayID, n.VPCID)
			},
			check: func(t *testing.T, c *ec2.Client, before, after network.Network) {
				if after.InternetGatewayID != before.InternetGatewayID {
					t.Errorf("gateway %s, want %s attached again", after.InternetGatewayID, before.InternetGatewayID)
				}
			},
		},
		{
			name: "gateway deleted",
			drift: func(t *testing.T, c *ec2.Client, n network.Network) (string, string, string) {
				must(t)(c.DetachInternetGateway(ctx, &ec2.DetachInternetGatewayInput{InternetGatewayId: aws.String(n.InternetGatewayID), VpcId: aws.String(n.VPCID)}))
				must(t)(c.DeleteInternetGateway(ctx, &ec2.DeleteInternetGatewayInput{InternetGatewayId: aws.String(n.InternetGatewayID)}))
				return network.StepIGW, engine.ChangeRecreate, fmt.Sprintf("internet gateway %s was deleted outside kforge", n.InternetGatewayID)
			},
			check: func(t *testing.T, c *ec2.Client, before, after network.Network) {
				if after.InternetGatewayID == before.InternetGatewayID || after.InternetGatewayID == "" {
					t.Errorf("gateway %s, want a new one", after.InternetGatewayID)
				}
			},
		},
		{
			name: "public IPs turned off",
			drift: func(t *testing.T, c *ec2.Client, n network.Network) (string, string, string) {
				sn := n.Subnets[0].ID
				must(t)(c.ModifySubnetAttribute(ctx, &ec2.ModifySubnetAttributeInput{SubnetId: aws.String(sn),
					MapPublicIpOnLaunch: &types.AttributeBooleanValue{Value: aws.Bool(false)}}))
				return "subnet/0", engine.ChangeUpdate, fmt.Sprintf("MapPublicIpOnLaunch of public subnet %s was turned off outside kforge", sn)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cl, cnt := countingClients(t)
			r := ref(fmt.Sprintf("drift-%d", i))
			s := network.Spec{Ref: r, Zones: 3, CIDR: fmt.Sprintf("10.%d.0.0/16", 110+i)}
			j := journal(t, r)
			before := apply(t, cl, s, j)
			want := map[string]int{"vpc": 1, "subnet": 3, "igw": 1, "rtb": 1}

			step, kind, detail := tc.drift(t, cl.EC2, before)
			cnt.take()
			changes := diff(t, cl, s, j)
			hasChange(t, changes, step, kind, detail)
			if m := mutating(cnt.take()); len(m) > 0 {
				t.Errorf("diff made mutating calls %v", m)
			}

			after := apply(t, cl, s, j)
			inSync(t, cl, s, j)
			if got := tagged(t, cl.EC2, r); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("after the repair: tagged resources %v, want %v", got, want)
			}
			checkPublicNetwork(t, cl.EC2, r, after, 3)
			if tc.check != nil {
				tc.check(t, cl.EC2, before, after)
			}
			// A repaired network stays repaired: the next reconcile
			// changes nothing.
			cnt.take()
			apply(t, cl, s, j)
			if m := mutating(cnt.take()); len(m) > 0 {
				t.Errorf("the reconcile after the repair made mutating calls %v", m)
			}
			if err := destroy(cl, s, j); err != nil {
				t.Fatalf("destroy: %v", err)
			}
		})
	}
}

// Drift kforge must not repair stops a reconcile with a DriftError that
// says what was found and what to do; a diff reports it as unsafe; and
// nothing is deleted or modified.
func TestUnsafeDrift(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for i, tc := range []struct {
		name string
		// setup makes the network's spec; drift changes AWS outside
		// kforge and returns the step and what its drift must say.
		setup func(t *testing.T, c *ec2.Client, r network.Spec) network.Spec
		drift func(t *testing.T, c *ec2.Client, cl *network.Clients, s network.Spec, n network.Network) (step string, says []string)
		// after asserts that nothing was changed by the refused runs.
		after func(t *testing.T, c *ec2.Client, s network.Spec, n network.Network)
	}{
		{
			name: "existing VPC lost DNS hostnames",
			setup: func(t *testing.T, c *ec2.Client, s network.Spec) network.Spec {
				s.VPCID, _, _ = userVPC(t, c, "10.130.0.0/16", true)
				return s
			},
			drift: func(t *testing.T, c *ec2.Client, cl *network.Clients, s network.Spec, n network.Network) (string, []string) {
				must(t)(c.ModifyVpcAttribute(ctx, &ec2.ModifyVpcAttributeInput{VpcId: aws.String(s.VPCID), EnableDnsHostnames: &types.AttributeBooleanValue{Value: aws.Bool(false)}}))
				return network.StepVPC, []string{"VPC " + s.VPCID + " (--vpc-id) no longer has DNS hostnames enabled", "aws ec2 modify-vpc-attribute --vpc-id " + s.VPCID + " --enable-dns-hostnames"}
			},
			after: func(t *testing.T, c *ec2.Client, s network.Spec, n network.Network) {
				if attr(t, c, s.VPCID, types.VpcAttributeNameEnableDnsHostnames) {
					t.Error("kforge turned DNS hostnames of a VPC it did not create back on")
				}
				if got := tagged(t, c, s.Ref); got["subnet"] != 3 || got["rtb"] != 1 {
					t.Errorf("the cluster's network is %v after the refused reconcile", got)
				}
			},
		},
		{
			name: "existing VPC deleted",
			setup: func(t *testing.T, c *ec2.Client, s network.Spec) network.Spec {
				s.VPCID, _, _ = userVPC(t, c, "10.131.0.0/16", false)
				s.SubnetPrefix = 20
				return s
			},
			drift: func(t *testing.T, c *ec2.Client, cl *network.Clients, s network.Spec, n network.Network) (string, []string) {
				// The VPC's owner deletes everything in it, then the VPC.
				if err := destroy(cl, s, journal(t, s.Ref)); err != nil {
					t.Fatal(err)
				}
				out, err := c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []types.Filter{{Name: aws.String("vpc-id"), Values: []string{s.VPCID}}}})
				if err != nil {
					t.Fatal(err)
				}
				for _, sn := range out.Subnets {
					must(t)(c.DeleteSubnet(ctx, &ec2.DeleteSubnetInput{SubnetId: sn.SubnetId}))
				}
				must(t)(c.DeleteVpc(ctx, &ec2.DeleteVpcInput{VpcId: aws.String(s.VPCID)}))
				return network.StepVPC, []string{"VPC " + s.VPCID + " (--vpc-id) no longer exists", "kforge delete ha-aws --name"}
			},
			after: func(t *testing.T, c *ec2.Client, s network.Spec, n network.Network) {
				if got := tagged(t, c, s.Ref); got["subnet"]+got["vpc"] != 0 {
					t.Errorf("the refused reconcile made %v", got)
				}
			},
		},
		{
			name: "adopted subnet deleted",
			setup: func(t *testing.T, c *ec2.Client, s network.Spec) network.Spec {
				vpcID, first, _ := userVPC(t, c, "10.132.0.0/16", true)
				second, err := c.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: aws.String(vpcID), AvailabilityZone: aws.String(region + "b"), CidrBlock: aws.String("10.132.1.0/24")})
				if err != nil {
					t.Fatal(err)
				}
				s.VPCID, s.SubnetIDs = vpcID, []string{first, aws.ToString(second.Subnet.SubnetId)}
				return s
			},
			drift: func(t *testing.T, c *ec2.Client, cl *network.Clients, s network.Spec, n network.Network) (string, []string) {
				must(t)(c.DeleteSubnet(ctx, &ec2.DeleteSubnetInput{SubnetId: aws.String(s.SubnetIDs[1])}))
				return network.StepID, []string{"subnets " + s.SubnetIDs[1] + " (--subnet-ids) no longer exist in VPC " + s.VPCID, "kforge delete ha-aws --name"}
			},
			after: func(t *testing.T, c *ec2.Client, s network.Spec, n network.Network) {
				out, err := c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: s.SubnetIDs[:1]})
				if err != nil || len(out.Subnets) != 1 {
					t.Errorf("the adopted subnet that remains: %+v, %v", out, err)
				}
			},
		},
		{
			name: "own VPC deleted",
			drift: func(t *testing.T, c *ec2.Client, cl *network.Clients, s network.Spec, n network.Network) (string, []string) {
				// Someone deletes the whole network, by hand.
				if err := destroy(cl, s, journal(t, s.Ref)); err != nil {
					t.Fatal(err)
				}
				return network.StepVPC, []string{"VPC " + n.VPCID + ", which kforge made for the cluster, was deleted outside kforge",
					"run `kforge delete " + s.Ref.Args() + "`, then create the cluster again"}
			},
			after: func(t *testing.T, c *ec2.Client, s network.Spec, n network.Network) {
				if got := tagged(t, c, s.Ref); fmt.Sprint(got) != fmt.Sprint(map[string]int{"vpc": 0, "subnet": 0, "igw": 0, "rtb": 0}) {
					t.Errorf("the refused reconcile made %v", got)
				}
			},
		},
		{
			name: "subnet taken by another cluster",
			drift: func(t *testing.T, c *ec2.Client, cl *network.Clients, s network.Spec, n network.Network) (string, []string) {
				must(t)(c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{n.Subnets[0].ID},
					Tags: []types.Tag{{Key: aws.String("kforge.io/cluster"), Value: aws.String("someone-else")}}}))
				return "subnet/0", []string{"subnet " + n.Subnets[0].ID + " now carries the tags of ha-aws cluster \"someone-else\""}
			},
			after: func(t *testing.T, c *ec2.Client, s network.Spec, n network.Network) {
				out, err := c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{n.Subnets[0].ID}})
				if err != nil || len(out.Subnets) != 1 || !aws.ToBool(out.Subnets[0].MapPublicIpOnLaunch) {
					t.Errorf("the taken subnet: %+v, %v", out, err)
				}
				if got := tagged(t, c, s.Ref); got["subnet"] != 2 {
					t.Errorf("the cluster has %d subnets by tags, want the 2 others and no new one", got["subnet"])
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cl, cnt := countingClients(t)
			r := ref(fmt.Sprintf("unsafe-%d", i))
			s := network.Spec{Ref: r, Zones: 3, CIDR: fmt.Sprintf("10.%d.0.0/16", 140+i)}
			if tc.setup != nil {
				s = tc.setup(t, cl.EC2, s)
			}
			j := journal(t, r)
			n := apply(t, cl, s, j)
			step, says := tc.drift(t, cl.EC2, cl, s, n)

			cnt.take()
			changes := diff(t, cl, s, j)
			for _, w := range says {
				hasChange(t, changes, step, engine.ChangeUnsafe, w)
			}
			err := engine.Apply(ctx, graph(cl, s), j, opts(cl))
			var de *engine.DriftError
			if !errors.As(err, &de) || de.Step != step {
				t.Fatalf("reconcile: %v, want a DriftError of step %s", err, step)
			}
			for _, w := range says {
				if !strings.Contains(de.Error(), w) {
					t.Errorf("the drift error %q does not say %q", de, w)
				}
			}
			if m := mutating(cnt.take()); len(m) > 0 {
				t.Errorf("the diff and the refused reconcile made mutating calls %v", m)
			}
			tc.after(t, cl.EC2, s, n)
			if err := destroy(cl, s, j); err != nil {
				t.Errorf("destroy: %v", err)
			}
		})
	}
}

// A crash right after a create call, before the journal was written,
// leaves a resource that the next run finds by its tags and finishes as a
// repair (a gateway to attach, a route and associations to make, public
// IPs to turn on), without making a second one.
func TestResumeFinishesHalfMadeResources(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cl, _ := countingClients(t)
	r := ref("half")
	s := network.Spec{Ref: r, Zones: 2, CIDR: "10.150.0.0/16"}
	n := apply(t, cl, s, journal(t, r))
	c := cl.EC2
	// Undo what each create did after its create call.
	must(t)(c.DetachInternetGateway(ctx, &ec2.DetachInternetGatewayInput{InternetGatewayId: aws.String(n.InternetGatewayID), VpcId: aws.String(n.VPCID)}))
	must(t)(c.DeleteRoute(ctx, &ec2.DeleteRouteInput{RouteTableId: aws.String(n.RouteTableID), DestinationCidrBlock: aws.String("0.0.0.0/0")}))
	for _, sn := range n.Subnets {
		disassociate(t, c, n.RouteTableID, sn.ID)
		must(t)(c.ModifySubnetAttribute(ctx, &ec2.ModifySubnetAttributeInput{SubnetId: aws.String(sn.ID),
			MapPublicIpOnLaunch: &types.AttributeBooleanValue{Value: aws.Bool(false)}}))
	}
	must(t)(c.ModifyVpcAttribute(ctx, &ec2.ModifyVpcAttributeInput{VpcId: aws.String(n.VPCID), EnableDnsHostnames: &types.AttributeBooleanValue{Value: aws.Bool(false)}}))

	j := journal(t, r) // the state was lost with the crash
	changes := diff(t, cl, s, j)
	hasChange(t, changes, network.StepVPC, engine.ChangeUpdate, "found by its tags, has DNS hostnames off")
	hasChange(t, changes, network.StepIGWAttach, engine.ChangeCreate, "found by its tags, is not attached")
	// The subnets wait for the zones, an action that runs again with the
	// state lost: the reconcile finds them.
	hasChange(t, changes, "subnet/1", engine.ChangePending, "after azs")
	if n2 := apply(t, cl, s, j); fmt.Sprint(n2) != fmt.Sprint(n) {
		t.Errorf("resumed network %+v, want %+v", n2, n)
	}
	inSync(t, cl, s, j)
	if got, want := tagged(t, c, r), map[string]int{"vpc": 1, "subnet": 2, "igw": 1, "rtb": 1}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("tagged resources %v, want %v", got, want)
	}
	checkPublicNetwork(t, c, r, n, 2)
	if err := destroy(cl, s, j); err != nil {
		t.Fatal(err)
	}
}

// must fails the test on the error of a call.
func must(t *testing.T) func(any, error) {
	return func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// disassociate removes a subnet's association with a route table.
func disassociate(t *testing.T, c *ec2.Client, rtbID, subnetID string) {
	t.Helper()
	out, err := c.DescribeRouteTables(context.Background(), &ec2.DescribeRouteTablesInput{RouteTableIds: []string{rtbID}})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range out.RouteTables[0].Associations {
		if aws.ToString(a.SubnetId) == subnetID {
			must(t)(c.DisassociateRouteTable(context.Background(), &ec2.DisassociateRouteTableInput{AssociationId: a.RouteTableAssociationId}))
			return
		}
	}
	t.Fatalf("subnet %s is not associated with %s", subnetID, rtbID)
}

func tagValue(tags []types.Tag, key string) string {
	for _, tg := range tags {
		if aws.ToString(tg.Key) == key {
			return aws.ToString(tg.Value)
		}
	}
	return ""
}
