package eks

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	ekstypes "github.com/aws/aws-sdk-go-v2/service/eks/types"
)

func TestPickAddonVersion(t *testing.T) {
	compat := func(k8s string, def bool) ekstypes.Compatibility {
		return ekstypes.Compatibility{ClusterVersion: aws.String(k8s), DefaultVersion: def}
	}
	infos := []ekstypes.AddonInfo{{
		AddonName: aws.String("coredns"),
		AddonVersions: []ekstypes.AddonVersionInfo{
			{AddonVersion: aws.String("v1.12.1-eksbuild.2"), Compatibilities: []ekstypes.Compatibility{compat("1.33", false), compat("1.34", true)}},
			{AddonVersion: aws.String("v1.11.4-eksbuild.14"), Compatibilities: []ekstypes.Compatibility{compat("1.33", true), compat("1.32", true)}},
			{AddonVersion: aws.String("v1.11.3-eksbuild.1"), Compatibilities: []ekstypes.Compatibility{compat("1.31", false)}},
		},
	}}
	for _, tc := range []struct{ k8s, want string }{
		{"1.33", "v1.11.4-eksbuild.14"}, // the default, not the newest
		{"1.34", "v1.12.1-eksbuild.2"},
		{"1.31", "v1.11.3-eksbuild.1"}, // no default: the first listed
	} {
		got, err := pickAddonVersion(infos, "coredns", tc.k8s)
		if err != nil || got != tc.want {
			t.Errorf("Kubernetes %s: %q, %v; want %q", tc.k8s, got, err, tc.want)
		}
	}
	if _, err := pickAddonVersion(infos, "coredns", "1.20"); err == nil {
		t.Error("no version for 1.20, yet no error")
	}
	if _, err := pickAddonVersion(infos, "vpc-cni", "1.33"); err == nil {
		t.Error("another add-on's versions were taken")
	}
}
