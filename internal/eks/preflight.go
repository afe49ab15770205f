package eks

import (
	"context"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	ekstypes "github.com/aws/aws-sdk-go-v2/service/eks/types"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/preflight"
	"github.com/kforge/kforge/internal/spec"
)

// PreflightFacts is what preflight must know of an EKS cluster of spec s:
// its network spreads over 2 zones, the node group's instance type, the
// IAM roles it makes, that EKS picks the node image, and whether EKS
// offers the Kubernetes version.
func PreflightFacts(s spec.Spec) preflight.Facts {
	return preflight.Facts{
		Zones: 2,
		Sizes: map[string]int{s.NodeSize: s.Nodes},
		Roles: []string{awsx.IAMName(s.Name, CPRoleSuffix), awsx.IAMName(s.Name, WPRoleSuffix)},
		ImageNote: func(archs []string) string {
			return fmt.Sprintf("EKS picks the node image (AMI type %s)", amiType(s.NodeSize))
		},
		Version: func(ctx context.Context, cfg aws.Config) preflight.Check {
			return checkVersion(ctx, eks.NewFromConfig(cfg), s)
		},
	}
}

// Preflight implements lifecycle.Provider.
func (p *Provider) Preflight(s spec.Spec) preflight.Facts { return PreflightFacts(s) }

// checkVersion asks EKS whether it offers s.Version, and in which support.
func checkVersion(ctx context.Context, c *eks.Client, s spec.Spec) preflight.Check {
	out, err := c.DescribeClusterVersions(ctx, &eks.DescribeClusterVersionsInput{ClusterVersions: []string{s.Version}, IncludeAll: aws.Bool(true)},
		func(o *eks.Options) { o.Retryer = aws.NopRetryer{} })
	if err != nil {
		why := preflight.ShortErr(err)
		return preflight.Check{Status: preflight.Warn,
			Detail: fmt.Sprintf("could not ask EKS which versions it offers (%s); EKS refuses an unsupported version when the cluster is created", why),
			Fix:    "see https://docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html"}
	}
	for _, v := range out.ClusterVersions {
		if aws.ToString(v.ClusterVersion) != s.Version {
			continue
		}
		st := string(v.VersionStatus)
		if st == "" {
			st = string(v.Status)
		}
		switch strings.ToUpper(strings.ReplaceAll(st, "-", "_")) {
		case string(ekstypes.VersionStatusStandardSupport):
			return preflight.Check{Status: preflight.OK, Detail: fmt.Sprintf("EKS offers Kubernetes %s (standard support)", s.Version)}
		case string(ekstypes.VersionStatusExtendedSupport):
			return preflight.Check{Status: preflight.Warn, Detail: fmt.Sprintf("EKS offers Kubernetes %s in extended support only, at extra cost", s.Version), Fix: "pass a newer --version"}
		default:
			return preflight.Check{Status: preflight.Fail, Input: true, Detail: fmt.Sprintf("EKS does not support Kubernetes %s (%s)", s.Version, st),
				Fix: "pass a supported --version (aws eks describe-cluster-versions)"}
		}
	}
	return preflight.Check{Status: preflight.Fail, Input: true, Detail: fmt.Sprintf("EKS does not offer Kubernetes %s in %s", s.Version, s.Region),
		Fix: "pass a version EKS offers (aws eks describe-cluster-versions), such as " + spec.DefaultEKSVersion}
}

// CheckVersionOffered refuses (a *spec.UsageError) an upgrade of cluster
// ref to a Kubernetes version EKS does not offer in its region. When EKS
// cannot be asked, EKS itself refuses an unsupported version later.
func CheckVersionOffered(ctx context.Context, cfg aws.Config, ref spec.Ref, version string) error {
	c := checkVersion(ctx, eks.NewFromConfig(cfg), spec.Spec{Ref: ref, Version: version})
	if c.Status == preflight.Fail {
		return spec.Usagef("%s; %s", c.Detail, c.Fix)
	}
	return nil
}
