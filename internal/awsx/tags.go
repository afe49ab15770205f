package awsx

import (
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"

	"github.com/kforge/kforge/internal/spec"
)

// The tags that mark what kforge owns (docs/CONTRACT.md, "Names and
// tags": users and scripts rely on them).
const (
	TagCluster = "kforge.io/cluster"
	TagType    = "kforge.io/type"
	TagRegion  = "kforge.io/region"
	TagRole    = "kforge.io/role"
	TagName    = "Name"
)

// KubernetesClusterTag is the key the AWS cloud provider uses for resources
// of a cluster; its value is "owned" or "shared".
func KubernetesClusterTag(cluster string) string { return "kubernetes.io/cluster/" + cluster }

// Tags returns the ownership tags of a resource of ref named name, plus
// extra pairs.
func Tags(ref spec.Ref, name string, extra ...string) map[string]string {
	m := map[string]string{TagCluster: ref.Name, TagType: ref.Type, TagRegion: ref.Region, TagName: name}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i]] = extra[i+1]
	}
	return m
}

// Owned adds the kubernetes.io/cluster/<name>=owned tag that subnets,
// security groups and instances carry.
func Owned(ref spec.Ref, m map[string]string) map[string]string {
	m[KubernetesClusterTag(ref.Name)] = "owned"
	return m
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// EC2Tags converts tags for EC2.
func EC2Tags(m map[string]string) []ec2types.Tag {
	out := make([]ec2types.Tag, 0, len(m))
	for _, k := range sortedKeys(m) {
		out = append(out, ec2types.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return out
}

// EC2TagSpec tags a resource in the call that creates it.
func EC2TagSpec(rt ec2types.ResourceType, m map[string]string) []ec2types.TagSpecification {
	return []ec2types.TagSpecification{{ResourceType: rt, Tags: EC2Tags(m)}}
}

// IAMTags converts tags for IAM.
func IAMTags(m map[string]string) []iamtypes.Tag {
	out := make([]iamtypes.Tag, 0, len(m))
	for _, k := range sortedKeys(m) {
		out = append(out, iamtypes.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return out
}

// ClusterFilters selects the EC2 resources of a cluster by its tags, plus
// extra tag pairs (key, value, ...).
func ClusterFilters(ref spec.Ref, extra ...string) []ec2types.Filter {
	f := []ec2types.Filter{
		{Name: aws.String("tag:" + TagCluster), Values: []string{ref.Name}},
		{Name: aws.String("tag:" + TagType), Values: []string{ref.Type}},
		{Name: aws.String("tag:" + TagRegion), Values: []string{ref.Region}},
	}
	for i := 0; i+1 < len(extra); i += 2 {
		f = append(f, ec2types.Filter{Name: aws.String("tag:" + extra[i]), Values: []string{extra[i+1]}})
	}
	return f
}

// EC2TagValue returns the value of key among EC2 tags.
func EC2TagValue(tags []ec2types.Tag, key string) string {
	for _, t := range tags {
		if aws.ToString(t.Key) == key {
			return aws.ToString(t.Value)
		}
	}
	return ""
}

// IAMName returns the account-global name of a cluster's IAM role or
// instance profile: kforge-<cluster>-<suffix>.
func IAMName(cluster, suffix string) string { return "kforge-" + cluster + "-" + suffix }

// Partition returns the AWS partition of a region ("aws", "aws-cn",
// "aws-us-gov").
func Partition(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		return "aws-us-gov"
	}
	return "aws"
}

// DNSSuffix is the domain of a region's service endpoints
// (amazonaws.com, or amazonaws.com.cn in China).
func DNSSuffix(region string) string {
	if Partition(region) == "aws-cn" {
		return "amazonaws.com.cn"
	}
	return "amazonaws.com"
}
