// Package leftovers removes what Kubernetes itself created in AWS for a
// cluster, so that the cluster's network can be deleted after it: load
// balancers and target groups made for Services and Ingresses (by the cloud
// controller or the AWS Load Balancer Controller), their security groups,
// EBS volumes of persistent volumes, and detached network interfaces.
//
// It is one engine step, StepID. Its Ensure does nothing. Its Delete finds
// the resources by the tags Kubernetes puts on them,
// kubernetes.io/cluster/<name>=owned and, for EKS, elbv2.k8s.aws/cluster=<name>
// (for network interfaces of the VPC CNI, cluster.k8s.amazonaws.com/name),
// restricted to the cluster's VPC when the network step's output is known.
// Security groups, interfaces and volumes that carry kforge.io/cluster are
// kforge's own, deleted by their own steps (or with their instances), and
// left alone. The step needs the network steps, so a
// destroy runs it before the network; providers make their cluster and
// instance steps need it, so it runs after those are gone.
//
// The look-ups (load balancers, target groups, interfaces, security groups,
// volumes) are made at once, one round trip in all when there is nothing
// to remove; the deletions then go in order: load balancers (listeners go
// with them), waiting until they are gone; target groups; detached network interfaces; security groups, after
// revoking the rules of other groups that reference them; available EBS
// volumes. Whatever still cannot be removed after a bounded wait
// (Clients.InUseTimeout) is named, with its ID and owner, in the error.
// When it finds nothing Kubernetes made, Delete returns engine.ErrAbsent,
// so the step is reported as skipped rather than deleted.
package leftovers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
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
	"github.com/kforge/kforge/internal/network"
	"github.com/kforge/kforge/internal/spec"
)

// StepID is the ID of the step.
const StepID = "k8s-leftovers"

// Tags Kubernetes components put on what they create.
const (
	// TagLBController is set by the AWS Load Balancer Controller.
	TagLBController = "elbv2.k8s.aws/cluster"
	// TagVPCCNI is set by the Amazon VPC CNI on the interfaces it makes.
	TagVPCCNI = "cluster.k8s.amazonaws.com/name"
)

// Clients are the AWS clients the step uses, and how long its delete waits
// for resources that are still in use to be released.
type Clients struct {
	EC2   *ec2.Client
	ELBv2 *elasticloadbalancingv2.Client
	ELB   *elasticloadbalancing.Client
	// InUseTimeout bounds the waits for each kind of resource to be
	// released: load balancers to be gone, target groups, interfaces and
	// volumes to be detached, security groups to be unused (default
	// network.DefaultInUseTimeout).
	InUseTimeout time.Duration
}

func (c *Clients) timeout() time.Duration {
	if c.InUseTimeout > 0 {
		return c.InUseTimeout
	}
	return network.DefaultInUseTimeout
}

// Step returns the step that removes the cluster's Kubernetes-made
// resources on delete. needs are the steps it must run before on delete
// (network.StepID is enough: the network's other steps come after it).
func Step(c *Clients, ref spec.Ref, needs []string) *engine.Step {
	return &engine.Step{
		ID:    StepID,
		Needs: needs,
		Title: "on delete: load balancers, volumes, security groups and interfaces that Kubernetes made",
		Ensure: func(context.Context, *engine.Run) (any, error) {
			return nil, nil
		},
		Delete: func(ctx context.Context, r *engine.Run) error {
			d := &deleter{c: c, ref: ref, r: r}
			if n, ok := engine.Lookup[network.Network](r, network.StepID); ok {
				d.vpc = n.VPCID
			}
			if d.vpc == "" {
				// No state: find the cluster's VPC by kforge's tags. A
				// cluster with no network left has nothing Kubernetes could
				// have made in it, and sweeping the region by the
				// kubernetes.io/cluster/<name> tag alone could take what
				// another cluster of that name owns.
				vpc, err := network.ClusterVPC(ctx, &network.Clients{EC2: c.EC2}, ref)
				if err != nil {
					return err
				}
				if vpc == "" {
					return engine.ErrAbsent
				}
				d.vpc = vpc
			}
			return d.run(ctx)
		},
	}
}

// deleter is one run of the step's Delete.
type deleter struct {
	c   *Clients
	ref spec.Ref
	r   *engine.Run
	vpc string // "" when unknown: the whole region
	// left names what could not be removed; errs are AWS failures.
	left []string
	errs []error
	// removed counts what was deleted.
	removed int
}

// deadline returns when the waits of a kind of resource must end.
func (d *deleter) deadline() time.Time { return time.Now().Add(d.c.timeout()) }

func (d *deleter) fail(format string, a ...any) { d.errs = append(d.errs, fmt.Errorf(format, a...)) }

func (d *deleter) waiting(format string, a ...any) {
	if d.r != nil {
		d.r.Waiting(format, a...)
	}
}

func (d *deleter) run(ctx context.Context) error {
	f := d.find(ctx)
	d.loadBalancers(ctx, f)
	d.targetGroups(ctx, f)
	d.interfaces(ctx, f)
	d.securityGroups(ctx, f)
	d.volumes(ctx, f)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if len(d.left) == 0 && len(d.errs) == 0 {
		if d.removed == 0 {
			return engine.ErrAbsent
		}
		return nil
	}
	var msg strings.Builder
	if len(d.left) > 0 {
		fmt.Fprintf(&msg, "resources Kubernetes created in AWS for the cluster remain: %s. Remove them (or what holds them)", strings.Join(d.left, "; "))
	} else {
		msg.WriteString("could not remove all resources Kubernetes created in AWS for the cluster. Fix the cause below")
	}
	fmt.Fprintf(&msg, ", then run `kforge delete %s` again", d.ref.Args())
	if len(d.errs) > 0 {
		return fmt.Errorf("%s: %w", msg.String(), errors.Join(d.errs...))
	}
	return errors.New(msg.String())
}

// found is what Kubernetes made for the cluster, as the look-ups of one
// delete found it.
type found struct {
	lbs         []elbv2types.LoadBalancer
	lbTags      map[string]map[string]string // by ARN
	classic     []elbtypes.LoadBalancerDescription
	classicTags map[string]map[string]string // by name
	tgs         []elbv2types.TargetGroup
	tgTags      map[string]map[string]string // by ARN
	enis        []ec2types.NetworkInterface
	sgs         map[string]ec2types.SecurityGroup // by ID
	vols        []ec2types.Volume
}

// find makes every look-up of the delete at once: none needs another's
// answer, and nothing makes new resources for the cluster once its
// instances are gone, so what they find is what the deletions must remove,
// which then go in their order. A kind whose look-up failed is recorded
// and left alone.
func (d *deleter) find(ctx context.Context) *found {
	f := &found{}
	eniSets := d.ec2Filters("vpc-id", d.eniTags()...)
	sgSets := d.ec2Filters("vpc-id", d.sgTags()...)
	volSets := d.ec2Filters("", awsx.KubernetesClusterTag(d.ref.Name), "owned")
	eniPages, eniErrs := make([][]ec2types.NetworkInterface, len(eniSets)), make([]error, len(eniSets))
	sgPages, sgErrs := make([][]ec2types.SecurityGroup, len(sgSets)), make([]error, len(sgSets))
	volPages, volErrs := make([][]ec2types.Volume, len(volSets)), make([]error, len(volSets))
	var lbErr, classicErr, tgErr error

	// Each look-up keeps its own error; All only waits for them.
	lookups := []func(context.Context) error{
		func(ctx context.Context) error {
			f.lbs, f.lbTags, lbErr = d.elbv2LoadBalancers(ctx)
			return nil
		},
		func(ctx context.Context) error {
			f.classic, f.classicTags, classicErr = d.classicLoadBalancers(ctx)
			return nil
		},
		func(ctx context.Context) error {
			f.tgs, f.tgTags, tgErr = d.listTargetGroups(ctx)
			return nil
		},
	}
	for i, set := range eniSets {
		lookups = append(lookups, func(ctx context.Context) error {
			eniPages[i], eniErrs[i] = d.listInterfaces(ctx, set)
			return nil
		})
	}
	for i, set := range sgSets {
		lookups = append(lookups, func(ctx context.Context) error {
			sgPages[i], sgErrs[i] = d.listSecurityGroups(ctx, set)
			return nil
		})
	}
	for i, set := range volSets {
		lookups = append(lookups, func(ctx context.Context) error {
			volPages[i], volErrs[i] = d.listVolumes(ctx, set)
			return nil
		})
	}
	_ = awsx.All(ctx, lookups...)

	if lbErr != nil {
		d.fail("list load balancers: %w", lbErr)
	}
	if classicErr != nil {
		d.fail("list classic load balancers: %w", classicErr)
	}
	if tgErr != nil {
		d.fail("%w", tgErr)
	}
	if err := errors.Join(eniErrs...); err != nil {
		d.fail("list network interfaces: %w", err)
	} else {
		seen := map[string]bool{}
		for _, page := range eniPages {
			for _, ni := range page {
				if id := aws.ToString(ni.NetworkInterfaceId); !seen[id] {
					seen[id] = true
					f.enis = append(f.enis, ni)
				}
			}
		}
	}
	if err := errors.Join(sgErrs...); err != nil {
		d.fail("list security groups: %w", err)
	} else {
		f.sgs = map[string]ec2types.SecurityGroup{}
		for _, page := range sgPages {
			for _, g := range page {
				f.sgs[aws.ToString(g.GroupId)] = g
			}
		}
	}
	if err := errors.Join(volErrs...); err != nil {
		d.fail("list volumes: %w", err)
	} else {
		for _, page := range volPages {
			f.vols = append(f.vols, page...)
		}
	}
	return f
}

// retryDelete runs del under awsx.RetryInUse until deadline and counts
// the resource as removed if del removed it.
func (d *deleter) retryDelete(ctx context.Context, deadline time.Time, what string, del func(context.Context) error) error {
	return awsx.RetryInUse(ctx, time.Until(deadline), d.waiting, what, func(ctx context.Context) error {
		err := del(ctx)
		if err == nil {
			d.removed++
		}
		return err
	})
}

// owns reports whether a resource's tags say Kubernetes made it for this
// cluster.
func (d *deleter) owns(tags map[string]string) bool {
	if tags[awsx.KubernetesClusterTag(d.ref.Name)] == "owned" {
		return true
	}
	return d.ref.Type == spec.TypeEKS && tags[TagLBController] == d.ref.Name
}

func (d *deleter) inVPC(vpc *string) bool { return d.vpc == "" || aws.ToString(vpc) == d.vpc }

// k8sOwner says which Kubernetes object a resource was made for, from the
// tags controllers set.
func k8sOwner(tags map[string]string) string {
	for _, k := range []string{"kubernetes.io/service-name", "service.k8s.aws/stack", "ingress.k8s.aws/stack"} {
		if v := tags[k]; v != "" {
			kind := "service"
			if strings.HasPrefix(k, "ingress") {
				kind = "ingress"
			}
			return kind + " " + v
		}
	}
	if ns, name := tags["kubernetes.io/created-for/pvc/namespace"], tags["kubernetes.io/created-for/pvc/name"]; name != "" {
		return "PVC " + ns + "/" + name
	}
	return ""
}

func describe(id string, details ...string) string {
	var parts []string
	for _, s := range details {
		if s != "" {
			parts = append(parts, s)
		}
	}
	if len(parts) == 0 {
		return id
	}
	return id + " (" + strings.Join(parts, ", ") + ")"
}

// loadBalancers deletes the cluster's ELBv2 and classic load balancers and
// waits for the ELBv2 ones to be gone.
func (d *deleter) loadBalancers(ctx context.Context, f *found) {
	lbs, tags := f.lbs, f.lbTags
	var deleted []elbv2types.LoadBalancer
	deadline := d.deadline()
	for _, lb := range lbs {
		arn := aws.ToString(lb.LoadBalancerArn)
		_, err := d.c.ELBv2.DeleteLoadBalancer(ctx, &elasticloadbalancingv2.DeleteLoadBalancerInput{LoadBalancerArn: lb.LoadBalancerArn})
		switch {
		case err == nil:
			d.removed++
			deleted = append(deleted, lb)
		case awsx.IsNotFound(err):
			deleted = append(deleted, lb)
		default:
			d.left = append(d.left, describe("load balancer "+aws.ToString(lb.LoadBalancerName), arn, k8sOwner(tags[arn]), awsx.Message(err)))
		}
	}
	for _, lb := range deleted {
		arn := aws.ToString(lb.LoadBalancerArn)
		if time.Until(deadline) <= 0 {
			d.left = append(d.left, describe("load balancer "+aws.ToString(lb.LoadBalancerName), arn, k8sOwner(tags[arn]), "still being deleted"))
			continue
		}
		d.waiting("waiting for load balancer %s to be deleted", aws.ToString(lb.LoadBalancerName))
		err := elasticloadbalancingv2.NewLoadBalancersDeletedWaiter(d.c.ELBv2, func(o *elasticloadbalancingv2.LoadBalancersDeletedWaiterOptions) {
			o.MinDelay = 2 * time.Second
		}).Wait(ctx, &elasticloadbalancingv2.DescribeLoadBalancersInput{LoadBalancerArns: []string{arn}}, time.Until(deadline))
		if err != nil {
			d.left = append(d.left, describe("load balancer "+aws.ToString(lb.LoadBalancerName), arn, k8sOwner(tags[arn]), "still being deleted: "+err.Error()))
		}
	}

	classic, ctags := f.classic, f.classicTags
	for _, lb := range classic {
		name := aws.ToString(lb.LoadBalancerName)
		_, err := d.c.ELB.DeleteLoadBalancer(ctx, &elasticloadbalancing.DeleteLoadBalancerInput{LoadBalancerName: lb.LoadBalancerName})
		switch {
		case err == nil:
			d.removed++
		case !awsx.IsNotFound(err):
			d.left = append(d.left, describe("classic load balancer "+name, k8sOwner(ctags[name]), awsx.Message(err)))
		}
	}
}

// elbv2LoadBalancers returns the cluster's ELBv2 load balancers with the
// tags of each, by ARN.
func (d *deleter) elbv2LoadBalancers(ctx context.Context) ([]elbv2types.LoadBalancer, map[string]map[string]string, error) {
	all, err := awsx.Collect(ctx, elasticloadbalancingv2.NewDescribeLoadBalancersPaginator(d.c.ELBv2, &elasticloadbalancingv2.DescribeLoadBalancersInput{}),
		func(o *elasticloadbalancingv2.DescribeLoadBalancersOutput) []elbv2types.LoadBalancer {
			return o.LoadBalancers
		})
	if err != nil {
		return nil, nil, err
	}
	all = awsx.Select(all, func(lb elbv2types.LoadBalancer) bool { return d.inVPC(lb.VpcId) })
	arns := make([]string, len(all))
	for i, lb := range all {
		arns[i] = aws.ToString(lb.LoadBalancerArn)
	}
	tags, err := d.elbv2Tags(ctx, arns)
	if err != nil {
		return nil, nil, err
	}
	var out []elbv2types.LoadBalancer
	for _, lb := range all {
		if d.owns(tags[aws.ToString(lb.LoadBalancerArn)]) {
			out = append(out, lb)
		}
	}
	return out, tags, nil
}

// elbv2Tags returns the tags of ELBv2 resources by ARN, 20 per call (the
// API's limit).
func (d *deleter) elbv2Tags(ctx context.Context, arns []string) (map[string]map[string]string, error) {
	out := map[string]map[string]string{}
	for i := 0; i < len(arns); i += 20 {
		res, err := d.c.ELBv2.DescribeTags(ctx, &elasticloadbalancingv2.DescribeTagsInput{ResourceArns: arns[i:min(i+20, len(arns))]})
		if err != nil {
			return nil, fmt.Errorf("read load balancer tags: %w", err)
		}
		for _, td := range res.TagDescriptions {
			m := map[string]string{}
			for _, t := range td.Tags {
				m[aws.ToString(t.Key)] = aws.ToString(t.Value)
			}
			out[aws.ToString(td.ResourceArn)] = m
		}
	}
	return out, nil
}

// classicLoadBalancers returns the cluster's classic load balancers with
// the tags of each, by name.
func (d *deleter) classicLoadBalancers(ctx context.Context) ([]elbtypes.LoadBalancerDescription, map[string]map[string]string, error) {
	all, err := awsx.Collect(ctx, elasticloadbalancing.NewDescribeLoadBalancersPaginator(d.c.ELB, &elasticloadbalancing.DescribeLoadBalancersInput{}),
		func(o *elasticloadbalancing.DescribeLoadBalancersOutput) []elbtypes.LoadBalancerDescription {
			return o.LoadBalancerDescriptions
		})
	if err != nil {
		return nil, nil, err
	}
	all = awsx.Select(all, func(lb elbtypes.LoadBalancerDescription) bool { return d.inVPC(lb.VPCId) })
	tags := map[string]map[string]string{}
	for i := 0; i < len(all); i += 20 {
		var names []string
		for _, lb := range all[i:min(i+20, len(all))] {
			names = append(names, aws.ToString(lb.LoadBalancerName))
		}
		res, err := d.c.ELB.DescribeTags(ctx, &elasticloadbalancing.DescribeTagsInput{LoadBalancerNames: names})
		if err != nil {
			return nil, nil, fmt.Errorf("read classic load balancer tags: %w", err)
		}
		for _, td := range res.TagDescriptions {
			m := map[string]string{}
			for _, t := range td.Tags {
				m[aws.ToString(t.Key)] = aws.ToString(t.Value)
			}
			tags[aws.ToString(td.LoadBalancerName)] = m
		}
	}
	var out []elbtypes.LoadBalancerDescription
	for _, lb := range all {
		if d.owns(tags[aws.ToString(lb.LoadBalancerName)]) {
			out = append(out, lb)
		}
	}
	return out, tags, nil
}

// listTargetGroups returns the target groups of the cluster's VPC with the
// tags of each, by ARN.
func (d *deleter) listTargetGroups(ctx context.Context) ([]elbv2types.TargetGroup, map[string]map[string]string, error) {
	all, err := awsx.Collect(ctx, elasticloadbalancingv2.NewDescribeTargetGroupsPaginator(d.c.ELBv2, &elasticloadbalancingv2.DescribeTargetGroupsInput{}),
		func(o *elasticloadbalancingv2.DescribeTargetGroupsOutput) []elbv2types.TargetGroup {
			return o.TargetGroups
		})
	if err != nil {
		return nil, nil, fmt.Errorf("list target groups: %w", err)
	}
	all = awsx.Select(all, func(tg elbv2types.TargetGroup) bool { return d.inVPC(tg.VpcId) })
	arns := make([]string, len(all))
	for i, tg := range all {
		arns[i] = aws.ToString(tg.TargetGroupArn)
	}
	tags, err := d.elbv2Tags(ctx, arns)
	if err != nil {
		return nil, nil, err
	}
	return all, tags, nil
}

// targetGroups deletes the cluster's target groups, retrying while a load
// balancer that is going away still uses one.
func (d *deleter) targetGroups(ctx context.Context, f *found) {
	all, tags := f.tgs, f.tgTags
	deadline := d.deadline()
	for _, tg := range all {
		arn := aws.ToString(tg.TargetGroupArn)
		if !d.owns(tags[arn]) {
			continue
		}
		name := aws.ToString(tg.TargetGroupName)
		err := d.retryDelete(ctx, deadline, "target group "+name, func(ctx context.Context) error {
			_, err := d.c.ELBv2.DeleteTargetGroup(ctx, &elasticloadbalancingv2.DeleteTargetGroupInput{TargetGroupArn: tg.TargetGroupArn})
			return err
		})
		if err != nil {
			d.left = append(d.left, describe("target group "+name, arn, k8sOwner(tags[arn]), "used by "+strings.Join(tg.LoadBalancerArns, " "), awsx.Message(err)))
		}
	}
}

// ec2Filters returns the filter sets that select the cluster's EC2
// resources (one query each), within its VPC if known.
func (d *deleter) ec2Filters(vpcFilter string, tags ...string) [][]ec2types.Filter {
	var sets [][]ec2types.Filter
	for i := 0; i+1 < len(tags); i += 2 {
		f := []ec2types.Filter{{Name: aws.String("tag:" + tags[i]), Values: []string{tags[i+1]}}}
		if d.vpc != "" && vpcFilter != "" {
			f = append(f, ec2types.Filter{Name: aws.String(vpcFilter), Values: []string{d.vpc}})
		}
		sets = append(sets, f)
	}
	return sets
}

func ec2TagMap(tags []ec2types.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

// eniTags are the tag pairs (key, value, ...) of the interfaces Kubernetes
// makes for the cluster: one look-up each.
func (d *deleter) eniTags() []string {
	tags := []string{awsx.KubernetesClusterTag(d.ref.Name), "owned"}
	if d.ref.Type == spec.TypeEKS {
		tags = append(tags, TagVPCCNI, d.ref.Name)
	}
	return tags
}

// listInterfaces returns the network interfaces that filters select,
// except kforge's own (deleted by their own steps).
func (d *deleter) listInterfaces(ctx context.Context, filters []ec2types.Filter) ([]ec2types.NetworkInterface, error) {
	all, err := awsx.Collect(ctx, ec2.NewDescribeNetworkInterfacesPaginator(d.c.EC2, &ec2.DescribeNetworkInterfacesInput{Filters: filters}),
		func(o *ec2.DescribeNetworkInterfacesOutput) []ec2types.NetworkInterface { return o.NetworkInterfaces })
	if err != nil {
		return nil, err
	}
	return awsx.Select(all, func(ni ec2types.NetworkInterface) bool {
		return awsx.EC2TagValue(ni.TagSet, awsx.TagCluster) == ""
	}), nil
}

// interfaces deletes the cluster's network interfaces, waiting for those
// still attached to be released.
func (d *deleter) interfaces(ctx context.Context, f *found) {
	enis := f.enis
	deadline := d.deadline()
	for _, ni := range enis {
		id := aws.ToString(ni.NetworkInterfaceId)
		if ni.Status != ec2types.NetworkInterfaceStatusAvailable && time.Until(deadline) > 0 {
			// Wait until it is detached; whatever the wait ends with, the
			// delete below says whether it can go.
			d.waiting("waiting for network interface %s to be released", id)
			_ = ec2.NewNetworkInterfaceAvailableWaiter(d.c.EC2, func(o *ec2.NetworkInterfaceAvailableWaiterOptions) {
				o.MinDelay = 2 * time.Second
			}).Wait(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{id}}, time.Until(deadline))
		}
		_, err := d.c.EC2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(id)})
		switch {
		case err == nil:
			d.removed++
		case !awsx.IsNotFound(err):
			d.left = append(d.left, "network interface "+network.DescribeENI(ni)+": "+awsx.Message(err))
		}
	}
}

// sgTags are the tag pairs (key, value, ...) of the security groups
// Kubernetes makes for the cluster: one look-up each.
func (d *deleter) sgTags() []string {
	tags := []string{awsx.KubernetesClusterTag(d.ref.Name), "owned"}
	if d.ref.Type == spec.TypeEKS {
		tags = append(tags, TagLBController, d.ref.Name)
	}
	return tags
}

// listSecurityGroups returns the security groups that filters select,
// except kforge's own (deleted by their own steps) and default groups.
func (d *deleter) listSecurityGroups(ctx context.Context, filters []ec2types.Filter) ([]ec2types.SecurityGroup, error) {
	all, err := awsx.Collect(ctx, ec2.NewDescribeSecurityGroupsPaginator(d.c.EC2, &ec2.DescribeSecurityGroupsInput{Filters: filters}),
		func(o *ec2.DescribeSecurityGroupsOutput) []ec2types.SecurityGroup { return o.SecurityGroups })
	if err != nil {
		return nil, err
	}
	return awsx.Select(all, func(g ec2types.SecurityGroup) bool {
		return awsx.EC2TagValue(g.Tags, awsx.TagCluster) == "" && aws.ToString(g.GroupName) != "default"
	}), nil
}

// securityGroups deletes the security groups Kubernetes made, after
// revoking the rules of other groups that reference them, retrying while
// the interfaces of deleted load balancers still use them.
func (d *deleter) securityGroups(ctx context.Context, f *found) {
	targets := f.sgs
	if len(targets) == 0 {
		return
	}
	ids := make([]string, 0, len(targets))
	vpcs := map[string]bool{}
	for id, g := range targets {
		ids = append(ids, id)
		vpcs[aws.ToString(g.VpcId)] = true
	}
	sort.Strings(ids)
	for vpc := range vpcs {
		d.revokeReferences(ctx, vpc, targets)
	}
	deadline := d.deadline()
	for _, id := range ids {
		g := targets[id]
		err := d.retryDelete(ctx, deadline, "security group "+id, func(ctx context.Context) error {
			_, err := d.c.EC2.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(id)})
			return err
		})
		if err == nil {
			continue
		}
		var users []string
		if res, lerr := d.c.EC2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{
			Filters: []ec2types.Filter{{Name: aws.String("group-id"), Values: []string{id}}}}); lerr == nil {
			for _, ni := range res.NetworkInterfaces {
				users = append(users, network.DescribeENI(ni))
			}
		}
		used := ""
		if len(users) > 0 {
			used = "used by " + strings.Join(users, ", ")
		}
		d.left = append(d.left, describe("security group "+id, aws.ToString(g.GroupName), "owner "+aws.ToString(g.OwnerId),
			k8sOwner(ec2TagMap(g.Tags)), used, awsx.Message(err)))
	}
}

// revokeReferences removes, from every group of a VPC, the rules that
// refer to one of targets (other than a target's rules to itself), since
// AWS refuses to delete a group that another group's rule references.
func (d *deleter) revokeReferences(ctx context.Context, vpc string, targets map[string]ec2types.SecurityGroup) {
	p := ec2.NewDescribeSecurityGroupsPaginator(d.c.EC2, &ec2.DescribeSecurityGroupsInput{
		Filters: []ec2types.Filter{{Name: aws.String("vpc-id"), Values: []string{vpc}}},
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			d.fail("list the security groups of VPC %s: %w", vpc, err)
			return
		}
		for _, g := range page.SecurityGroups {
			gid := aws.ToString(g.GroupId)
			ingress := referencing(g.IpPermissions, gid, targets)
			egress := referencing(g.IpPermissionsEgress, gid, targets)
			if len(ingress) > 0 {
				_, err := d.c.EC2.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: g.GroupId, IpPermissions: ingress})
				if err != nil && !awsx.IsNotFound(err) {
					d.fail("revoke the rules of security group %s that refer to the cluster's load balancer groups: %w", gid, err)
				}
			}
			if len(egress) > 0 {
				_, err := d.c.EC2.RevokeSecurityGroupEgress(ctx, &ec2.RevokeSecurityGroupEgressInput{GroupId: g.GroupId, IpPermissions: egress})
				if err != nil && !awsx.IsNotFound(err) {
					d.fail("revoke the egress rules of security group %s that refer to the cluster's load balancer groups: %w", gid, err)
				}
			}
		}
	}
}

// referencing returns the parts of perms that refer to a group in targets
// other than self.
func referencing(perms []ec2types.IpPermission, self string, targets map[string]ec2types.SecurityGroup) []ec2types.IpPermission {
	var out []ec2types.IpPermission
	for _, p := range perms {
		var pairs []ec2types.UserIdGroupPair
		for _, pair := range p.UserIdGroupPairs {
			ref := aws.ToString(pair.GroupId)
			if _, ok := targets[ref]; ok && ref != self {
				pairs = append(pairs, ec2types.UserIdGroupPair{GroupId: pair.GroupId, UserId: pair.UserId})
			}
		}
		if len(pairs) > 0 {
			out = append(out, ec2types.IpPermission{IpProtocol: p.IpProtocol, FromPort: p.FromPort, ToPort: p.ToPort, UserIdGroupPairs: pairs})
		}
	}
	return out
}

// listVolumes returns the volumes that filters select, except kforge's
// own.
func (d *deleter) listVolumes(ctx context.Context, filters []ec2types.Filter) ([]ec2types.Volume, error) {
	all, err := awsx.Collect(ctx, ec2.NewDescribeVolumesPaginator(d.c.EC2, &ec2.DescribeVolumesInput{Filters: filters}),
		func(o *ec2.DescribeVolumesOutput) []ec2types.Volume { return o.Volumes })
	if err != nil {
		return nil, err
	}
	return awsx.Select(all, func(v ec2types.Volume) bool {
		return awsx.EC2TagValue(v.Tags, awsx.TagCluster) == "" // else kforge's own
	}), nil
}

// volumes deletes the cluster's EBS volumes, waiting for attached ones to
// be released.
func (d *deleter) volumes(ctx context.Context, f *found) {
	vols := f.vols
	deadline := d.deadline()
	for _, v := range vols {
		id := aws.ToString(v.VolumeId)
		if v.State == ec2types.VolumeStateDeleting || v.State == ec2types.VolumeStateDeleted {
			continue
		}
		if v.State != ec2types.VolumeStateAvailable && time.Until(deadline) > 0 {
			// Wait until it is detached; whatever the wait ends with, the
			// delete below says whether it can go.
			d.waiting("waiting for volume %s to be detached", id)
			_ = ec2.NewVolumeAvailableWaiter(d.c.EC2, func(o *ec2.VolumeAvailableWaiterOptions) {
				o.MinDelay = 2 * time.Second
			}).Wait(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{id}}, time.Until(deadline))
		}
		_, err := d.c.EC2.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(id)})
		switch {
		case err == nil:
			d.removed++
		case !awsx.IsNotFound(err):
			d.left = append(d.left, describeVolume(v)+": "+awsx.Message(err))
		}
	}
}

func describeVolume(v ec2types.Volume) string {
	var attached []string
	for _, a := range v.Attachments {
		attached = append(attached, aws.ToString(a.InstanceId))
	}
	at := ""
	if len(attached) > 0 {
		at = "attached to " + strings.Join(attached, " ")
	}
	return describe("volume "+aws.ToString(v.VolumeId), string(v.State), at, k8sOwner(ec2TagMap(v.Tags)))
}
