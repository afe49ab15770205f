package preflight

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/servicequotas"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/spec"
)

// vcpuQuota is an EC2 On-Demand quota, counted in vCPUs: its Service
// Quotas code and the instance families it covers, as AWS names them.
type vcpuQuota struct {
	code, name string
}

// Service Quotas codes.
const (
	quotaVPCs      = "L-F678F1CE" // VPCs per Region
	quotaIGWs      = "L-A4707A72" // Internet gateways per Region
	quotaSubnets   = "L-407747CB" // Subnets per VPC
	serviceEC2     = "ec2"
	serviceVPC     = "vpc"
	stateRunning   = "running"
	statePending   = "pending"
	tagEKSNodeName = "eks:cluster-name"
)

// familyQuota returns the On-Demand vCPU quota that an instance type
// counts against, by its family.
func familyQuota(instanceType string) (vcpuQuota, bool) {
	fam, _, _ := strings.Cut(instanceType, ".")
	switch {
	case strings.HasPrefix(fam, "u-"):
		return vcpuQuota{"L-43DA4232", "High Memory instances"}, true
	case strings.HasPrefix(fam, "inf"):
		return vcpuQuota{"L-1945791B", "Inf instances"}, true
	case strings.HasPrefix(fam, "trn"):
		return vcpuQuota{"L-2C3B7624", "Trn instances"}, true
	case strings.HasPrefix(fam, "dl"):
		return vcpuQuota{"L-6E869C2A", "DL instances"}, true
	case strings.HasPrefix(fam, "vt"), strings.HasPrefix(fam, "g"):
		return vcpuQuota{"L-DB2E81BA", "G and VT instances"}, true
	case strings.HasPrefix(fam, "hpc"):
		return vcpuQuota{"L-F7808C92", "HPC instances"}, true
	case strings.HasPrefix(fam, "p"):
		return vcpuQuota{"L-417A185B", "P instances"}, true
	case strings.HasPrefix(fam, "x"):
		return vcpuQuota{"L-7295265B", "X instances"}, true
	case strings.HasPrefix(fam, "f"):
		return vcpuQuota{"L-74FC7D96", "F instances"}, true
	case fam != "" && strings.ContainsRune("acdhimrtz", rune(fam[0])):
		return vcpuQuota{"L-1216C47A", "Standard (A, C, D, H, I, M, R, T, Z) instances"}, true
	}
	return vcpuQuota{}, false
}

// quota returns a quota's value: the applied value, else AWS's default.
func (r *run) quota(ctx context.Context, service, code string) (float64, error) {
	out, err := r.sq.GetServiceQuota(ctx, &servicequotas.GetServiceQuotaInput{ServiceCode: aws.String(service), QuotaCode: aws.String(code)})
	if err == nil && out.Quota != nil && out.Quota.Value != nil {
		return aws.ToFloat64(out.Quota.Value), nil
	}
	def, derr := r.sq.GetAWSDefaultServiceQuota(ctx, &servicequotas.GetAWSDefaultServiceQuotaInput{ServiceCode: aws.String(service), QuotaCode: aws.String(code)},
		func(o *servicequotas.Options) { o.Retryer = aws.NopRetryer{} })
	if derr == nil && def.Quota != nil && def.Quota.Value != nil {
		return aws.ToFloat64(def.Quota.Value), nil
	}
	if err == nil {
		err = derr
	}
	return 0, fmt.Errorf("Service Quotas has no value for %s %s (%s)", service, code, shortErr(err))
}

// ownCluster reports whether EC2 tags mark a resource as this cluster's
// (so a resumed create does not count it against the room it needs).
func (r *run) ownCluster(tags []ec2types.Tag) bool {
	return awsx.EC2TagValue(tags, awsx.TagCluster) == r.s.Name && awsx.EC2TagValue(tags, awsx.TagType) == r.s.Type &&
		awsx.EC2TagValue(tags, awsx.TagRegion) == r.s.Region ||
		r.s.Type == spec.TypeEKS && awsx.EC2TagValue(tags, tagEKSNodeName) == r.s.Name
}

func (r *run) vcpuQuota(ctx context.Context) {
	if r.types == nil {
		r.add(CheckVCPU, Warn, "not checked: the instance types are unknown", "see the instance-types check")
		return
	}
	need := map[vcpuQuota]int{}
	for t, n := range r.sizes() {
		q, ok := familyQuota(t)
		if !ok {
			r.add(CheckVCPU, Warn, "not checked: kforge does not know the vCPU quota of instance type "+t, "check the EC2 quotas in the Service Quotas console")
			return
		}
		need[q] += n * int(vcpus(r.types[t]))
	}
	// vCPUs of the region's running On-Demand instances, by quota, except
	// the cluster's own.
	usedByType := map[string]int{}
	p := ec2.NewDescribeInstancesPaginator(r.ec2, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{
		{Name: aws.String("instance-state-name"), Values: []string{statePending, stateRunning}},
	}})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			r.awsFailure(CheckVCPU, "list the region's instances", err)
			return
		}
		for _, res := range page.Reservations {
			for _, in := range res.Instances {
				if in.InstanceLifecycle == ec2types.InstanceLifecycleTypeSpot || r.ownCluster(in.Tags) {
					continue
				}
				usedByType[string(in.InstanceType)]++
			}
		}
	}
	if err := r.describeTypes(ctx, sortedKeys(usedByType)); err != nil {
		r.awsFailure(CheckVCPU, "describe the instance types in use", err)
		return
	}
	used := map[vcpuQuota]int{}
	for t, n := range usedByType {
		if q, ok := familyQuota(t); ok {
			used[q] += n * int(vcpus(r.types[t]))
		}
	}
	qs := make([]vcpuQuota, 0, len(need))
	for q := range need {
		qs = append(qs, q)
	}
	sort.Slice(qs, func(i, j int) bool { return qs[i].code < qs[j].code })
	var details []string
	status := OK
	fix := ""
	for _, q := range qs {
		limit, err := r.quota(ctx, serviceEC2, q.code)
		if err != nil {
			details = append(details, fmt.Sprintf("could not check the On-Demand %s quota: %v; the cluster needs %d vCPUs of it, %d are in use",
				q.name, err, need[q], used[q]))
			if status == OK {
				status = Warn
				fix = "check the quota in the Service Quotas console (EC2, " + q.code + ")"
			}
			continue
		}
		room := int(limit) - used[q]
		line := fmt.Sprintf("On-Demand %s: the cluster needs %d vCPUs; %d of %d in use", q.name, need[q], used[q], int(limit))
		if need[q] > room {
			status = Fail
			fix = fmt.Sprintf("request a quota increase for EC2 %s (%s) in the Service Quotas console, or use fewer or smaller instances", q.code, q.name)
			line += fmt.Sprintf(": %d short", need[q]-room)
		}
		details = append(details, line)
	}
	r.add(CheckVCPU, status, strings.Join(details, "\n"), fix)
}

func vcpus(it ec2types.InstanceTypeInfo) int32 {
	if it.VCpuInfo == nil {
		return 0
	}
	return aws.ToInt32(it.VCpuInfo.DefaultVCpus)
}

// describeTypes adds what it does not know yet of instance types to r.types.
func (r *run) describeTypes(ctx context.Context, names []string) error {
	var todo []ec2types.InstanceType
	for _, n := range names {
		if _, ok := r.types[n]; !ok {
			todo = append(todo, ec2types.InstanceType(n))
		}
	}
	for i := 0; i < len(todo); i += 100 {
		out, err := r.ec2.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: todo[i:min(i+100, len(todo))]})
		if err != nil {
			return err
		}
		for _, it := range out.InstanceTypes {
			r.types[string(it.InstanceType)] = it
		}
	}
	return nil
}

// vpcQuota checks the room for what the cluster's network creates: a VPC
// and an internet gateway of its own, or subnets in an existing VPC.
func (r *run) vpcQuota(ctx context.Context) {
	type item struct {
		code, what string
		need, used int
	}
	var items []item
	switch {
	case r.s.VPCID == "":
		vpcs, err := r.countVPCs(ctx)
		if err != nil {
			r.awsFailure(CheckVPCQuota, "list the region's VPCs", err)
			return
		}
		igws, err := r.countIGWs(ctx)
		if err != nil {
			r.awsFailure(CheckVPCQuota, "list the region's internet gateways", err)
			return
		}
		items = append(items, item{quotaVPCs, "VPCs per Region", 1, vpcs}, item{quotaIGWs, "Internet gateways per Region", 1, igws})
	case len(r.s.SubnetIDs) == 0:
		subnets, err := r.countSubnets(ctx)
		if err != nil {
			r.awsFailure(CheckVPCQuota, "list the subnets of "+r.s.VPCID, err)
			return
		}
		items = append(items, item{quotaSubnets, "Subnets per VPC (" + r.s.VPCID + ")", r.zonesWanted(), subnets})
	default:
		r.add(CheckVPCQuota, OK, "the cluster uses existing subnets and creates no VPC, gateway or subnet", "")
		return
	}
	var details []string
	status, fix := OK, ""
	for _, it := range items {
		limit, err := r.quota(ctx, serviceVPC, it.code)
		if err != nil {
			details = append(details, fmt.Sprintf("could not check %s: %v; the cluster needs %d, %d are in use", it.what, err, it.need, it.used))
			if status == OK {
				status, fix = Warn, "check the VPC quotas in the Service Quotas console"
			}
			continue
		}
		line := fmt.Sprintf("%s: the cluster needs %d; %d of %d in use", it.what, it.need, it.used, int(limit))
		if it.used+it.need > int(limit) {
			status = Fail
			fix = fmt.Sprintf("delete unused ones, or request an increase of VPC quota %s (%s) in the Service Quotas console", it.code, it.what)
			if it.code == quotaVPCs {
				fix += ", or pass --vpc-id to use an existing VPC"
			}
			line += ": no room"
		}
		details = append(details, line)
	}
	r.add(CheckVPCQuota, status, strings.Join(details, "\n"), fix)
}

func (r *run) countVPCs(ctx context.Context) (int, error) {
	n := 0
	p := ec2.NewDescribeVpcsPaginator(r.ec2, &ec2.DescribeVpcsInput{})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return 0, err
		}
		for _, v := range page.Vpcs {
			if !r.ownCluster(v.Tags) {
				n++
			}
		}
	}
	return n, nil
}

func (r *run) countIGWs(ctx context.Context) (int, error) {
	n := 0
	p := ec2.NewDescribeInternetGatewaysPaginator(r.ec2, &ec2.DescribeInternetGatewaysInput{})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return 0, err
		}
		for _, g := range page.InternetGateways {
			if !r.ownCluster(g.Tags) {
				n++
			}
		}
	}
	return n, nil
}

func (r *run) countSubnets(ctx context.Context) (int, error) {
	n := 0
	p := ec2.NewDescribeSubnetsPaginator(r.ec2, &ec2.DescribeSubnetsInput{Filters: []ec2types.Filter{{Name: aws.String("vpc-id"), Values: []string{r.s.VPCID}}}})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return 0, err
		}
		for _, s := range page.Subnets {
			if !r.ownCluster(s.Tags) {
				n++
			}
		}
	}
	return n, nil
}
