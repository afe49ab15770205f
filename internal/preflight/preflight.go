// Package preflight checks, before anything is created, that a cluster
// can be made: the credentials work, the caller is allowed every action of
// kforge's policy (internal/iampolicy), an existing VPC has DNS hostnames
// and DNS support, the region has enough availability zones, the instance
// types are offered there, the image is found, the vCPU and VPC quotas
// leave room, and the Kubernetes version is supported.
//
// Each check ends as ok, warn (it could not be checked, or it may cause
// trouble later) or fail (the create would fail), with the fix for what is
// not ok. Run makes only read calls (Describe, Get, List, Simulate), so it
// is safe to run at any time; `kforge create` runs it first and stops on a
// failure.
//
// Permissions are checked with iam:SimulatePrincipalPolicy where the
// account allows it. Where it is unavailable (denied, or an emulator
// without it), the caller's identity policies are read (user: its inline
// and managed policies, its groups' policies and its permissions boundary;
// role: the role's policies and boundary) and evaluated locally by
// iampolicy.Evaluator. The report says which method was used. Quotas come
// from Service Quotas; where it cannot answer, the check is a warning
// that says so, never a failure.
package preflight

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/servicequotas"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/credentials"
	"github.com/kforge/kforge/internal/network"
	"github.com/kforge/kforge/internal/spec"
)

// Status is the outcome of a check.
type Status string

// Outcomes.
const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Check names, as the JSON report carries them.
const (
	CheckCredentials = "credentials"
	CheckRegion      = "region"
	CheckPermissions = "permissions"
	CheckVPC         = "vpc"
	CheckZones       = "availability-zones"
	CheckTypes       = "instance-types"
	CheckImage       = "image"
	CheckVCPU        = "vcpu-quota"
	CheckVPCQuota    = "vpc-quota"
	CheckVersion     = "kubernetes-version"
)

// Check is one line of the checklist.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	// Detail says what was found.
	Detail string `json:"detail"`
	// Fix says what to do when the check is not ok.
	Fix string `json:"fix,omitempty"`
	// Input marks a failure of the user's input (a VPC without DNS
	// support, an unknown instance type, image or version), which a
	// create refuses as invalid usage.
	Input bool `json:"input,omitempty"`
}

// Permission methods.
const (
	MethodSimulate = "iam:SimulatePrincipalPolicy"
	MethodLocal    = "local evaluation of the caller's policies"
	MethodNone     = "not checked"
)

// Report is the outcome of a preflight.
type Report struct {
	Cluster spec.Ref `json:"cluster"`
	// Caller is the ARN of the credentials' principal.
	Caller string  `json:"caller,omitempty"`
	Checks []Check `json:"checks"`
	// PermissionMethod says how the permissions were checked.
	PermissionMethod string `json:"permissionMethod"`
	// Denied lists the permission checks that failed, as "action on
	// resource".
	Denied []string `json:"denied,omitempty"`
}

// OK reports whether no check failed.
func (r Report) OK() bool {
	for _, c := range r.Checks {
		if c.Status == Fail {
			return false
		}
	}
	return true
}

// Count returns how many checks ended with status s.
func (r Report) Count(s Status) int {
	n := 0
	for _, c := range r.Checks {
		if c.Status == s {
			n++
		}
	}
	return n
}

// InputError reports whether a failed check is a failure of the user's
// input (Check.Input).
func (r Report) InputError() bool {
	for _, c := range r.Checks {
		if c.Status == Fail && c.Input {
			return true
		}
	}
	return false
}

// Get returns the check named name.
func (r Report) Get(name string) (Check, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return Check{}, false
}

// Write prints the checklist for people: one line per check with its
// outcome, then the detail and the fix of what is not ok.
func (r Report) Write(w io.Writer) {
	fmt.Fprintf(w, "Preflight for %s:\n", r.Cluster)
	width := 0
	for _, c := range r.Checks {
		width = max(width, len(c.Name))
	}
	for _, c := range r.Checks {
		mark := map[Status]string{OK: "[ok]  ", Warn: "[warn]", Fail: "[FAIL]"}[c.Status]
		lines := strings.Split(c.Detail, "\n")
		fmt.Fprintf(w, "  %s %-*s  %s\n", mark, width, c.Name, lines[0])
		pad := strings.Repeat(" ", 2+6+1+width+2)
		for _, l := range lines[1:] {
			fmt.Fprintf(w, "%s%s\n", pad, l)
		}
		if c.Fix != "" && c.Status != OK {
			for i, l := range strings.Split(c.Fix, "\n") {
				if i == 0 {
					l = "fix: " + l
				} else {
					l = "     " + l
				}
				fmt.Fprintf(w, "%s%s\n", pad, l)
			}
		}
	}
	switch {
	case !r.OK():
		fmt.Fprintf(w, "Preflight failed: %d check(s) failed, %d warning(s). Nothing was created.\n", r.Count(Fail), r.Count(Warn))
	case r.Count(Warn) > 0:
		fmt.Fprintf(w, "Preflight passed with %d warning(s).\n", r.Count(Warn))
	default:
		fmt.Fprintf(w, "Preflight passed.\n")
	}
}

// Options are what Run needs besides the spec.
type Options struct {
	// AWS is the configuration for the cluster's region.
	AWS aws.Config
	// Source names where the credentials come from, for the report.
	Source string
	// Facts is what the cluster type's provider knows of it.
	Facts Facts
}

// Facts is what preflight must know of a cluster type that only the
// type's provider knows (lifecycle.Provider.Preflight supplies it), so that
// preflight needs no provider.
type Facts struct {
	// Zones is how many availability zones the network spreads over.
	// FewZones, if set, is the warning for a region with fewer (but at
	// least 2); without it, fewer is a failure.
	Zones    int
	FewZones string
	// Sizes are the instance types the cluster runs, with how many of
	// each.
	Sizes map[string]int
	// Roles are the names of the IAM roles the cluster makes, which are
	// also the names of its instance profiles.
	Roles []string
	// Image returns the look-up of the image that the VMs of an
	// architecture boot, and the account that must own it (empty: any).
	// Nil when AWS picks the image: ImageNote then says which.
	Image     func(arch string) (*ec2.DescribeImagesInput, string)
	ImageNote func(archs []string) string
	// Version checks the Kubernetes version; preflight names the check.
	Version func(ctx context.Context, cfg aws.Config) Check
}

// run is one preflight.
type run struct {
	s      spec.Spec
	facts  Facts
	source string
	ec2    *ec2.Client
	iam    *iam.Client
	sq     *servicequotas.Client
	cfg    aws.Config
	id     awsx.Identity

	// mu guards rep and results: the checks run concurrently.
	mu      sync.Mutex
	rep     Report
	results map[string]Check

	// Look-ups that several checks share, each made once.
	zones lookup[[]string]                             // usable zones, sorted
	types lookup[map[string]ec2types.InstanceTypeInfo] // the cluster's instance types
}

// lookup is the result of an AWS look-up that several checks need: the
// first to ask makes it, the others wait for its answer.
type lookup[T any] struct {
	once sync.Once
	v    T
	err  error
}

func (l *lookup[T]) get(fetch func() (T, error)) (T, error) {
	l.once.Do(func() { l.v, l.err = fetch() })
	return l.v, l.err
}

// checkOrder returns the order of the checks in the report.
func checkOrder() []string {
	return []string{CheckRegion, CheckCredentials, CheckPermissions, CheckVPC, CheckZones, CheckTypes, CheckImage, CheckVCPU, CheckVPCQuota, CheckVersion}
}

// Run checks spec s (already validated) and returns the report. It makes
// no mutating AWS call.
//
// The region is checked first: in an opt-in region the account has not
// enabled, every other call fails in ways that hide the cause (it makes a
// call only for opt-in regions, so most preflights wait for nothing).
// Then the credentials (the permissions need the caller's identity, and
// nothing else works without them); the other checks do not
// depend on each other and run at once, sharing the look-ups some of them
// need (the zones, the instance types), so that a preflight takes about as
// long as its longest chain of dependent calls, not the sum of its calls.
func Run(ctx context.Context, s spec.Spec, o Options) Report {
	r := &run{
		s: s, facts: o.Facts, source: o.Source, cfg: o.AWS,
		ec2: ec2.NewFromConfig(o.AWS), iam: iam.NewFromConfig(o.AWS),
		sq:      servicequotas.NewFromConfig(o.AWS),
		rep:     Report{Cluster: s.Ref, PermissionMethod: MethodNone},
		results: map[string]Check{},
	}
	if r.region(ctx) && r.credentials(ctx) {
		checks := []func(context.Context){r.permissions, r.availabilityZones, r.instanceTypes, r.image, r.vcpuQuota, r.vpcQuota, r.kubernetesVersion}
		if s.VPCID != "" {
			checks = append(checks, r.vpc)
		}
		var wg sync.WaitGroup
		for _, check := range checks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				check(ctx)
			}()
		}
		wg.Wait()
	}
	for _, name := range checkOrder() {
		if c, ok := r.results[name]; ok {
			r.rep.Checks = append(r.rep.Checks, c)
		}
	}
	return r.rep
}

// record keeps the outcome of a check.
func (r *run) record(c Check) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results[c.Name] = c
}

func (r *run) add(name string, st Status, detail, fix string) {
	r.record(Check{Name: name, Status: st, Detail: detail, Fix: fix})
}

// inputFailure records a failure of the user's input.
func (r *run) inputFailure(name, detail, fix string) {
	r.record(Check{Name: name, Status: Fail, Detail: detail, Fix: fix, Input: true})
}

// awsFailure records a check that AWS refused or failed to answer: a
// warning, as what it checks may well be fine.
func (r *run) awsFailure(name, what string, err error) {
	r.awsFailureAs(Warn, name, what, err)
}

// awsFailureAs records a check that AWS refused or failed to answer with
// status st when AWS failed (a refusal is always a failure). The checks
// that nothing can be created without (the region's zones, the instance
// types) fail: passing them unchecked would let a create start that
// cannot succeed.
func (r *run) awsFailureAs(st Status, name, what string, err error) {
	if awsx.IsAccessDenied(err) {
		r.add(name, Fail, fmt.Sprintf("not allowed to %s: %s", what, awsx.Message(err)),
			fmt.Sprintf("attach the policy `kforge policy %s` prints to %s", r.s.Type, r.rep.Caller))
		return
	}
	r.add(name, st, fmt.Sprintf("could not %s: %v", what, err), "run `kforge preflight` again; if it persists, check the AWS service health of "+r.s.Region)
}

// region checks that the account may use the cluster's region: an opt-in
// region (one launched since 2019) must be enabled first. The question is
// asked in a region of the same partition that every account has, since a
// disabled region's endpoints refuse the account.
func (r *run) region(ctx context.Context) bool {
	reg, ok := spec.LookupRegion(r.s.Region)
	if !ok {
		r.inputFailure(CheckRegion, fmt.Sprintf("unknown region %q", r.s.Region), "give a region such as us-east-1")
		return false
	}
	if !reg.OptIn {
		r.add(CheckRegion, OK, fmt.Sprintf("%s (partition %s; every account has it)", reg.Code, reg.Partition), "")
		return true
	}
	home := spec.HomeRegion(reg.Code)
	out, err := r.ec2.DescribeRegions(ctx, &ec2.DescribeRegionsInput{AllRegions: aws.Bool(true), RegionNames: []string{reg.Code}},
		func(o *ec2.Options) { o.Region = home })
	if err != nil {
		r.awsFailureAs(Fail, CheckRegion, "ask in "+home+" whether opt-in region "+reg.Code+" is enabled", err)
		return false
	}
	status := ""
	for _, rg := range out.Regions {
		if aws.ToString(rg.RegionName) == reg.Code {
			status = aws.ToString(rg.OptInStatus)
		}
	}
	verdict, detail, fix := optInVerdict(reg.Code, status)
	r.add(CheckRegion, verdict, detail, fix)
	return verdict != Fail
}

// optInVerdict judges the opt-in status EC2 gives for an opt-in region.
func optInVerdict(region, status string) (Status, string, string) {
	switch status {
	case "opted-in", "opt-in-not-required":
		return OK, fmt.Sprintf("%s (opt-in region, enabled in this account)", region), ""
	case "":
		return Fail, fmt.Sprintf("%s: EC2 does not list it for this account", region),
			"choose a region EC2 lists: aws ec2 describe-regions --all-regions"
	default:
		return Fail, fmt.Sprintf("%s is an opt-in region and is not enabled in this account (status %s)", region, status),
			fmt.Sprintf("enable it (AWS console: Account > AWS Regions, or `aws account enable-region --region-name %s`; it takes a few minutes), or choose another region", region)
	}
}

func (r *run) credentials(ctx context.Context) bool {
	id, err := awsx.WhoAmI(ctx, r.cfg)
	if err != nil {
		r.add(CheckCredentials, Fail, "the AWS credentials do not work: "+awsx.Message(err),
			credentials.Howto)
		return false
	}
	r.id = id
	r.rep.Caller = id.ARN
	r.add(CheckCredentials, OK, fmt.Sprintf("%s (account %s, from %s)", id.ARN, id.Account, r.source), "")
	return true
}

func (r *run) vpc(ctx context.Context) {
	err := network.CheckVPC(ctx, &network.Clients{EC2: r.ec2}, r.s.VPCID, r.s.SubnetIDs)
	var ue *spec.UsageError
	switch {
	case err == nil:
		detail := fmt.Sprintf("%s exists and has DNS hostnames and DNS support", r.s.VPCID)
		if len(r.s.SubnetIDs) > 0 {
			detail += fmt.Sprintf("; subnets %s are in it", strings.Join(r.s.SubnetIDs, ", "))
		}
		r.add(CheckVPC, OK, detail, "")
	case errors.As(err, &ue):
		r.inputFailure(CheckVPC, ue.Msg, "fix the VPC as the message says, or leave out --vpc-id to let kforge create one")
	default:
		r.awsFailure(CheckVPC, "check VPC "+r.s.VPCID, err)
	}
}

// zonesWanted is how many availability zones the cluster's network uses.
func (r *run) zonesWanted() int { return max(r.facts.Zones, 2) }

// usableZones returns the region's usable availability zones, sorted:
// the same zones the network step picks from.
func (r *run) usableZones(ctx context.Context) ([]string, error) {
	return r.zones.get(func() ([]string, error) {
		out, err := r.ec2.DescribeAvailabilityZones(ctx, &ec2.DescribeAvailabilityZonesInput{})
		if err != nil {
			return nil, err
		}
		var zones []string
		for _, z := range out.AvailabilityZones {
			if z.State != ec2types.AvailabilityZoneStateAvailable ||
				z.ZoneType != nil && aws.ToString(z.ZoneType) != "availability-zone" ||
				z.OptInStatus == ec2types.AvailabilityZoneOptInStatusNotOptedIn {
				continue
			}
			zones = append(zones, aws.ToString(z.ZoneName))
		}
		sort.Strings(zones)
		return zones, nil
	})
}

func (r *run) availabilityZones(ctx context.Context) {
	zones, err := r.usableZones(ctx)
	if err != nil {
		r.awsFailureAs(Fail, CheckZones, "list the availability zones", err)
		return
	}
	want, n := r.zonesWanted(), len(zones)
	detail := fmt.Sprintf("%d usable in %s: %s", n, r.s.Region, strings.Join(zones, ", "))
	switch {
	case n >= want:
		r.add(CheckZones, OK, detail, "")
	case r.facts.FewZones != "" && n >= 2:
		r.add(CheckZones, Warn, detail+"; "+r.facts.FewZones,
			fmt.Sprintf("choose a region with %d or more availability zones for a cluster that survives the loss of a zone", want))
	default:
		r.add(CheckZones, Fail, fmt.Sprintf("%s; a %s cluster needs at least 2", detail, r.s.Type), "choose another region")
	}
}

// sizes returns the instance types the cluster uses with how many of each.
func (r *run) sizes() map[string]int { return r.facts.Sizes }

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// clusterZones are the zones the cluster's subnets will be in: the zones
// of --subnet-ids, else the first usable zones by name (as the network
// step picks them).
func (r *run) clusterZones(ctx context.Context) ([]string, error) {
	if len(r.s.SubnetIDs) > 0 {
		out, err := r.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: r.s.SubnetIDs})
		if err != nil {
			return nil, err
		}
		set := map[string]bool{}
		for _, sn := range out.Subnets {
			set[aws.ToString(sn.AvailabilityZone)] = true
		}
		return sortedKeys(set), nil
	}
	zones, err := r.usableZones(ctx)
	if err != nil {
		return nil, nil // the availability-zones check reports it
	}
	if len(zones) > r.zonesWanted() {
		return zones[:r.zonesWanted()], nil
	}
	return zones, nil
}

// instanceTypeInfo describes the cluster's instance types (one call for
// all of them). An unknown type is an error (InvalidInstanceType) or is
// missing from the map.
func (r *run) instanceTypeInfo(ctx context.Context) (map[string]ec2types.InstanceTypeInfo, error) {
	return r.types.get(func() (map[string]ec2types.InstanceTypeInfo, error) {
		var its []ec2types.InstanceType
		for _, n := range sortedKeys(r.sizes()) {
			its = append(its, ec2types.InstanceType(n))
		}
		out, err := r.ec2.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: its})
		if err != nil {
			return nil, err
		}
		types := map[string]ec2types.InstanceTypeInfo{}
		for _, it := range out.InstanceTypes {
			types[string(it.InstanceType)] = it
		}
		return types, nil
	})
}

func (r *run) instanceTypes(ctx context.Context) {
	names := sortedKeys(r.sizes())
	types, err := r.instanceTypeInfo(ctx)
	if awsx.HasCode(err, "InvalidInstanceType") {
		r.inputFailure(CheckTypes, "unknown instance type: "+awsx.Message(err), "give instance types EC2 knows, such as t3.medium")
		return
	}
	if err != nil {
		r.awsFailureAs(Fail, CheckTypes, "describe the instance types", err)
		return
	}
	var unknown []string
	for _, n := range names {
		if _, ok := types[n]; !ok {
			unknown = append(unknown, n)
		}
	}
	if len(unknown) > 0 {
		r.inputFailure(CheckTypes, "unknown instance type(s) in "+r.s.Region+": "+strings.Join(unknown, ", "), "give instance types EC2 offers there, such as t3.medium")
		return
	}
	zones, err := r.clusterZones(ctx)
	if err != nil {
		r.awsFailureAs(Fail, CheckTypes, "find the zones of the subnets", err)
		return
	}
	if len(zones) == 0 {
		r.add(CheckTypes, Fail, "no availability zone to check the instance types in", "see the availability-zones check")
		return
	}
	offered := map[string]map[string]bool{}
	p := ec2.NewDescribeInstanceTypeOfferingsPaginator(r.ec2, &ec2.DescribeInstanceTypeOfferingsInput{
		LocationType: ec2types.LocationTypeAvailabilityZone,
		Filters: []ec2types.Filter{
			{Name: aws.String("instance-type"), Values: names},
			{Name: aws.String("location"), Values: zones},
		},
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			r.awsFailureAs(Fail, CheckTypes, "list the instance type offerings", err)
			return
		}
		for _, o := range page.InstanceTypeOfferings {
			t := string(o.InstanceType)
			if offered[t] == nil {
				offered[t] = map[string]bool{}
			}
			offered[t][aws.ToString(o.Location)] = true
		}
	}
	var missing []string
	for _, n := range names {
		for _, z := range zones {
			if !offered[n][z] {
				missing = append(missing, n+" in "+z)
			}
		}
	}
	if len(missing) > 0 {
		r.inputFailure(CheckTypes, "not offered: "+strings.Join(missing, ", "),
			"choose instance types offered in every zone the cluster uses (aws ec2 describe-instance-type-offerings --location-type availability-zone), or another region")
		return
	}
	r.add(CheckTypes, OK, fmt.Sprintf("%s offered in %s", strings.Join(names, ", "), strings.Join(zones, ", ")), "")
}

// arch returns the architecture of an instance type, as images name it.
func arch(it ec2types.InstanceTypeInfo) string {
	if it.ProcessorInfo != nil {
		for _, a := range it.ProcessorInfo.SupportedArchitectures {
			if a == ec2types.ArchitectureTypeArm64 {
				return "arm64"
			}
		}
	}
	return "x86_64"
}

func (r *run) image(ctx context.Context) {
	types, err := r.instanceTypeInfo(ctx)
	if err != nil {
		r.add(CheckImage, Warn, "not checked: the instance types are unknown", "see the instance-types check")
		return
	}
	archs := map[string]bool{}
	for t := range r.sizes() {
		archs[arch(types[t])] = true
	}
	if r.facts.Image == nil {
		note := "AWS picks the image"
		if r.facts.ImageNote != nil {
			note = r.facts.ImageNote(sortedKeys(archs))
		}
		r.add(CheckImage, OK, note, "")
		return
	}
	var found []string
	for _, a := range sortedKeys(archs) {
		in, owner := r.facts.Image(a)
		out, err := r.ec2.DescribeImages(ctx, in)
		if err != nil && !awsx.IsNotFound(err) {
			r.awsFailure(CheckImage, "look up images", err)
			return
		}
		var best *ec2types.Image
		if out != nil {
			for i := range out.Images {
				im := &out.Images[i]
				if owner != "" && aws.ToString(im.OwnerId) != owner {
					continue
				}
				if best == nil || aws.ToString(im.CreationDate) > aws.ToString(best.CreationDate) ||
					aws.ToString(im.CreationDate) == aws.ToString(best.CreationDate) && aws.ToString(im.Name) > aws.ToString(best.Name) {
					best = im
				}
			}
		}
		switch {
		case best == nil && r.s.AMI != "":
			r.inputFailure(CheckImage, fmt.Sprintf("image %s is not found in %s", r.s.AMI, r.s.Region), "give an AMI of this region with --ami, or leave it out to use Ubuntu 24.04 LTS")
			return
		case best == nil:
			r.add(CheckImage, Fail, fmt.Sprintf("no Ubuntu 24.04 LTS image of Canonical for %s in %s", a, r.s.Region), "pass an AMI of this region with --ami")
			return
		case string(best.Architecture) != a:
			r.add(CheckImage, Fail, fmt.Sprintf("image %s is for %s, but the instance types need %s", aws.ToString(best.ImageId), best.Architecture, a),
				"give an image of the instance types' architecture with --ami, or instance types of the image's")
			return
		}
		found = append(found, fmt.Sprintf("%s (%s, %s)", aws.ToString(best.ImageId), aws.ToString(best.Name), a))
	}
	r.add(CheckImage, OK, strings.Join(found, "; "), "")
}

func (r *run) kubernetesVersion(ctx context.Context) {
	if r.facts.Version == nil {
		return
	}
	c := r.facts.Version(ctx, r.cfg)
	c.Name = CheckVersion
	r.record(c)
}

// ShortErr is an AWS error's code and HTTP status, or its first line.
func ShortErr(err error) string {
	if c := awsx.Code(err); c != "" {
		return c
	}
	if st := awsx.HTTPStatus(err); st != 0 {
		return fmt.Sprintf("HTTP %d", st)
	}
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
