package ha

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/ha/boot"
	"github.com/kforge/kforge/internal/ha/infra"
	"github.com/kforge/kforge/internal/preflight"
	"github.com/kforge/kforge/internal/spec"
)

// PreflightFacts is what preflight must know of an ha-aws cluster of spec
// s: its network spreads over 3 zones (2 still work, with a warning), the
// VMs' instance types, the IAM roles and instance profiles it makes, the
// Ubuntu image its VMs boot, and the Kubernetes versions its bootstrap
// installs.
func PreflightFacts(s spec.Spec) preflight.Facts {
	sizes := map[string]int{}
	sizes[s.EtcdSize] += s.Etcd
	sizes[s.LBSize]++
	sizes[s.CPSize] += s.ControlPlanes
	sizes[s.WPSize] += s.Workers
	return preflight.Facts{
		Zones:    3,
		FewZones: "the 3 etcd members share 2 zones, so losing the zone with 2 of them loses the quorum",
		Sizes:    sizes,
		Roles:    roleNames(s),
		Image: func(arch string) (in *ec2.DescribeImagesInput, owner string) {
			return infra.ImageQuery(s, arch)
		},
		Version: func(context.Context, aws.Config) preflight.Check {
			v, err := boot.Release(s)
			if err != nil {
				return preflight.Check{Status: preflight.Fail, Detail: err.Error(), Input: true,
					Fix: "pass --k8s-version with a version kforge supports for --bootstrap " + s.Bootstrap}
			}
			return preflight.Check{Status: preflight.OK, Detail: fmt.Sprintf("%s installs %s", s.Bootstrap, v)}
		},
	}
}

// Preflight implements lifecycle.Provider.
func (p *Provider) Preflight(s spec.Spec) preflight.Facts { return PreflightFacts(s) }

// roleNames are the names of the cluster's IAM roles and instance profiles.
func roleNames(s spec.Spec) []string {
	var out []string
	for _, suffix := range infra.RoleSuffixes(s) {
		out = append(out, awsx.IAMName(s.Name, suffix))
	}
	return out
}
