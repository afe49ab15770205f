package preflight

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

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
	return 0, fmt.Errorf("Service Quotas has no value for %s %s (%s)", service, code, ShortErr(err))
}

// ownCluster reports whether EC2 tags mark a resource as this cluster's
// (so a resumed create does not count it against the room it needs).
func (r *run) ownCluster(tags []ec2types.Tag) bool {
	return awsx.EC2TagValue(tags, awsx.TagCluster) == r.s.Name && awsx.EC2TagValue(tags, awsx.TagType) == r.s.Type &&
		awsx.EC2TagValue(tags, awsx.TagRegion) == r.s.Region ||
		r.s.Type == spec.TypeEKS && awsx.EC2TagValue(tags, tagEKSNodeName) == r.s.Name
}

func (r *run) vcpuQuota(ctx context.Context) {
	// Which quotas the cluster counts against follows from the type names
	// alone, so the look-ups below (the cluster's instance types, the
	// region's instances and the quotas) all start at once.
	sizes := r.sizes()
	var codes []vcpuQuota
	seen := map[vcpuQuota]bool{}
	for _, t := range sortedKeys(sizes) {
		q, ok := familyQuota(t)
		if !ok {
			r.add(CheckVCPU, Warn, "not checked: kforge does not know the vCPU quota of instance type "+t, "check the EC2 quotas in the Service Quotas console")
			return
		}
		if !seen[q] {
			seen[q] = true
			codes = append(codes, q)
		}
	}
	sort.Slice(codes, func(i, j int) bool { return codes[i].code < codes[j].code })
	var (
		types             map[string]ec2types.InstanceTypeInfo
		typesErr          error
		usedByType        map[string]int
		usedTypes         map[string]ec2types.InstanceTypeInfo
		listErr, descrErr error
		limits            = make([]float64, len(codes))
		limitErrs         = make([]error, len(codes))
		wg                sync.WaitGroup
	)
	wg.Add(2 + len(codes))
	go func() {
		defer wg.Done()
		types, typesErr = r.instanceTypeInfo(ctx)
	}()
	go func() {
		defer wg.Done()
		usedByType, usedTypes, listErr, descrErr = r.instancesInUse(ctx)
	}()
	for i, q := range codes {
		go func() {
			defer wg.Done()
			limits[i], limitErrs[i] = r.quota(ctx, serviceEC2, q.code)
		}()
	}
	wg.Wait()
	switch {
	case typesErr != nil:
		r.add(CheckVCPU, Warn, "not checked: the instance types are unknown", "see the instance-types check")
		return
	case listErr != nil:
		r.awsFailure(CheckVCPU, "list the region's instances", listErr)
		return
	case descrErr != nil:
		r.awsFailure(CheckVCPU, "describe the instance types in use", descrErr)
		return
	}
	need := map[vcpuQuota]int{}
	for t, n := range sizes {
		q, _ := familyQuota(t)
		need[q] += n * int(vcpus(types[t]))
	}
	used := map[vcpuQuota]int{}
	for t, n := range usedByType {
		if q, ok := familyQuota(t); ok {
			info, known := types[t]
			if !known {
				info = usedTypes[t]
			}
			used[q] += n * int(vcpus(info))
		}
	}
	var details []string
	status := OK
	fix := ""
	for i, q := range codes {
		limit, err := limits[i], limitErrs[i]
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

// instancesInUse counts the region's running On-Demand instances by type,
// except the cluster's own, and describes the types among them that are
// not the cluster's (listErr: the listing failed; descrErr: describing the
// types did).
func (r *run) instancesInUse(ctx context.Context) (byType map[string]int, other map[string]ec2types.InstanceTypeInfo, listErr, descrErr error) {
	byType = map[string]int{}
	p := ec2.NewDescribeInstancesPaginator(r.ec2, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{
		{Name: aws.String("instance-state-name"), Values: []string{statePending, stateRunning}},
	}})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, nil, err, nil
		}
		for _, res := range page.Reservations {
			for _, in := range res.Instances {
				if in.InstanceLifecycle == ec2types.InstanceLifecycleTypeSpot || r.ownCluster(in.Tags) {
					continue
				}
				byType[string(in.InstanceType)]++
			}
		}
	}
	sizes := r.sizes()
	var todo []ec2types.InstanceType
	for _, n := range sortedKeys(byType) {
		if _, ours := sizes[n]; !ours {
			todo = append(todo, ec2types.InstanceType(n))
		}
	}
	other = map[string]ec2types.InstanceTypeInfo{}
	for i := 0; i < len(todo); i += 100 {
		out, err := r.ec2.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: todo[i:min(i+100, len(todo))]})
		if err != nil {
			return nil, nil, nil, err
		}
		for _, it := range out.InstanceTypes {
			other[string(it.InstanceType)] = it
		}
	}
	return byType, other, nil, nil
}

func vcpus(it ec2types.InstanceTypeInfo) int32 {
	if it.VCpuInfo == nil {
		return 0
	}
	return aws.ToInt32(it.VCpuInfo.DefaultVCpus)
}

// vpcQuota checks the room for what the cluster's network creates: a VPC
// and an internet gateway of its own, or subnets in an existing VPC.
func (r *run) vpcQuota(ctx context.Context) {
	type item struct {
		code, what string
		need       int
		count      func(context.Context) (int, error)
		failed     string
		used       int
		countErr   error
		limit      float64
		limitErr   error
	}
	var items []*item
	switch {
	case r.s.VPCID == "":
		items = []*item{
			{code: quotaVPCs, what: "VPCs per Region", need: 1, count: r.countVPCs, failed: "list the region's VPCs"},
			{code: quotaIGWs, what: "Internet gateways per Region", need: 1, count: r.countIGWs, failed: "list the region's internet gateways"},
		}
	case len(r.s.SubnetIDs) == 0:
		items = []*item{{code: quotaSubnets, what: "Subnets per VPC (" + r.s.VPCID + ")", need: r.zonesWanted(), count: r.countSubnets,
			failed: "list the subnets of " + r.s.VPCID}}
	default:
		r.add(CheckVPCQuota, OK, "the cluster uses existing subnets and creates no VPC, gateway or subnet", "")
		return
	}
	// What is in use and the quotas are independent look-ups: all at once.
	var wg sync.WaitGroup
	for _, it := range items {
		wg.Add(2)
		go func() {
			defer wg.Done()
			it.used, it.countErr = it.count(ctx)
		}()
		go func() {
			defer wg.Done()
			it.limit, it.limitErr = r.quota(ctx, serviceVPC, it.code)
		}()
	}
	wg.Wait()
	for _, it := range items {
		if it.countErr != nil {
			r.awsFailure(CheckVPCQuota, it.failed, it.countErr)
			return
		}
	}
	var details []string
	status, fix := OK, ""
	for _, it := range items {
		if it.limitErr != nil {
			details = append(details, fmt.Sprintf("could not check %s: %v; the cluster needs %d, %d are in use", it.what, it.limitErr, it.need, it.used))
			if status == OK {
				status, fix = Warn, "check the VPC quotas in the Service Quotas console"
			}
			continue
		}
		line := fmt.Sprintf("%s: the cluster needs %d; %d of %d in use", it.what, it.need, it.used, int(it.limit))
		if it.used+it.need > int(it.limit) {
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
