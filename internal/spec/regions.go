package spec

import (
	"fmt"
	"sort"
	"strings"
)

// Partitions of AWS, as their ARNs name them.
const (
	PartitionAWS   = "aws"        // the commercial regions
	PartitionChina = "aws-cn"     // Beijing and Ningxia
	PartitionGov   = "aws-us-gov" // GovCloud (US)
)

// Region is an AWS region kforge knows.
type Region struct {
	// Code is the region's name in the API, such as us-east-1.
	Code string
	// Partition is the partition the region belongs to.
	Partition string
	// OptIn marks a region that an account must enable before using it
	// (AWS Console > Account > AWS Regions); preflight checks that it is.
	OptIn bool
}

// regions is the table of the regions of each partition. AWS adds
// regions now and then: a region missing here is refused as a typo (exit
// 2) until it is added.
var regions = []Region{
	// aws: enabled in every account.
	{"us-east-1", PartitionAWS, false},
	{"us-east-2", PartitionAWS, false},
	{"us-west-1", PartitionAWS, false},
	{"us-west-2", PartitionAWS, false},
	{"ap-south-1", PartitionAWS, false},
	{"ap-northeast-1", PartitionAWS, false},
	{"ap-northeast-2", PartitionAWS, false},
	{"ap-northeast-3", PartitionAWS, false},
	{"ap-southeast-1", PartitionAWS, false},
	{"ap-southeast-2", PartitionAWS, false},
	{"ca-central-1", PartitionAWS, false},
	{"eu-central-1", PartitionAWS, false},
	{"eu-west-1", PartitionAWS, false},
	{"eu-west-2", PartitionAWS, false},
	{"eu-west-3", PartitionAWS, false},
	{"eu-north-1", PartitionAWS, false},
	{"sa-east-1", PartitionAWS, false},
	// aws: opt-in regions (launched since March 2019).
	{"af-south-1", PartitionAWS, true},
	{"ap-east-1", PartitionAWS, true},
	{"ap-east-2", PartitionAWS, true},
	{"ap-south-2", PartitionAWS, true},
	{"ap-southeast-3", PartitionAWS, true},
	{"ap-southeast-4", PartitionAWS, true},
	{"ap-southeast-5", PartitionAWS, true},
	{"ap-southeast-6", PartitionAWS, true},
	{"ap-southeast-7", PartitionAWS, true},
	{"ca-west-1", PartitionAWS, true},
	{"eu-central-2", PartitionAWS, true},
	{"eu-south-1", PartitionAWS, true},
	{"eu-south-2", PartitionAWS, true},
	{"il-central-1", PartitionAWS, true},
	{"me-central-1", PartitionAWS, true},
	{"me-south-1", PartitionAWS, true},
	{"mx-central-1", PartitionAWS, true},
	// aws-cn.
	{"cn-north-1", PartitionChina, false},
	{"cn-northwest-1", PartitionChina, false},
	// aws-us-gov.
	{"us-gov-east-1", PartitionGov, false},
	{"us-gov-west-1", PartitionGov, false},
	// The isolated partitions (aws-iso, aws-iso-b, aws-iso-e, aws-iso-f),
	// which the region format has always accepted.
	{"us-iso-east-1", "aws-iso", false},
	{"us-iso-west-1", "aws-iso", false},
	{"us-isob-east-1", "aws-iso-b", false},
	{"eu-isoe-west-1", "aws-iso-e", false},
	{"us-isof-south-1", "aws-iso-f", false},
	{"us-isof-east-1", "aws-iso-f", false},
}

// homeRegions are regions of each partition that every account has: where
// a question about the partition's regions is asked.
var homeRegions = map[string]string{
	PartitionAWS:   "us-east-1",
	PartitionChina: "cn-north-1",
	PartitionGov:   "us-gov-west-1",
	"aws-iso":      "us-iso-east-1",
	"aws-iso-b":    "us-isob-east-1",
	"aws-iso-e":    "eu-isoe-west-1",
	"aws-iso-f":    "us-isof-south-1",
}

// LookupRegion returns what kforge knows of a region.
func LookupRegion(code string) (Region, bool) {
	for _, r := range regions {
		if r.Code == code {
			return r, true
		}
	}
	return Region{}, false
}

// KnownRegion reports whether code is a region of an AWS partition.
func KnownRegion(code string) bool {
	_, ok := LookupRegion(code)
	return ok
}

// HomeRegion returns a region of the partition of region code that needs
// no opt-in (code itself when it needs none), or "" for an unknown region.
func HomeRegion(code string) string {
	r, ok := LookupRegion(code)
	switch {
	case !ok:
		return ""
	case !r.OptIn:
		return r.Code
	default:
		return homeRegions[r.Partition]
	}
}

// RegionsOf returns the regions of a partition, sorted.
func RegionsOf(partition string) []string {
	var out []string
	for _, r := range regions {
		if r.Partition == partition {
			out = append(out, r.Code)
		}
	}
	sort.Strings(out)
	return out
}

// RegionHelp is how to give a region when --region is left out.
// kforge looks for a region where the AWS CLI and eksctl do.
const RegionHelp = "pass --region (for example us-east-1), or set AWS_REGION or AWS_DEFAULT_REGION, or give your AWS profile a region (aws configure set region REGION)"

// CheckRegion returns a UsageError unless code is a region kforge knows.
// The message names the nearest known regions and lists the regions of
// the main partitions.
func CheckRegion(code string) error {
	if code == "" {
		return Usagef("--region is required: %s", RegionHelp)
	}
	if KnownRegion(code) {
		return nil
	}
	var b strings.Builder
	if regionRE.MatchString(code) {
		fmt.Fprintf(&b, "unknown region %q", code)
	} else {
		fmt.Fprintf(&b, "invalid region %q: use an AWS region code such as us-east-1 or eu-west-1", code)
	}
	if near := NearestRegions(code); len(near) > 0 {
		fmt.Fprintf(&b, "; did you mean %s?", orList(near))
	}
	b.WriteString("\nAWS regions:")
	for _, p := range []string{PartitionAWS, PartitionChina, PartitionGov} {
		fmt.Fprintf(&b, "\n  %-10s  %s", p, wrap(RegionsOf(p), 64, "\n"+strings.Repeat(" ", 14)))
	}
	return &UsageError{Msg: b.String()}
}

// NearestRegions returns the known regions closest to code by edit
// distance (at most four, and none when nothing is close).
func NearestRegions(code string) []string {
	best := -1
	var near []string
	for _, r := range regions {
		d := editDistance(code, r.Code)
		if d > max(2, len(r.Code)/3) {
			continue
		}
		switch {
		case best < 0 || d < best:
			best, near = d, []string{r.Code}
		case d == best:
			near = append(near, r.Code)
		}
	}
	sort.Strings(near)
	if len(near) > 4 {
		near = near[:4]
	}
	return near
}

// wrap joins words with ", " in lines of at most width characters,
// separated by sep.
func wrap(words []string, width int, sep string) string {
	var b strings.Builder
	n := 0
	for i, w := range words {
		switch {
		case i == 0:
		case n+2+len(w) > width:
			b.WriteString("," + sep)
			n = 0
		default:
			b.WriteString(", ")
			n += 2
		}
		b.WriteString(w)
		n += len(w)
	}
	return b.String()
}

func orList(s []string) string {
	if len(s) == 1 {
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
