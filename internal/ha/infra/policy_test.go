package infra

import (
	"testing"

	"github.com/kforge/kforge/internal/cloudint"
	"github.com/kforge/kforge/internal/spec"
)

// TestRolePolicies: with the cloud integration the control planes' role
// gets the documented policy in every partition (the graph drops an
// error, so there must be none); without it, none. (The workers' role
// never carries one: TestHACloudIntegration reads it from the emulator.)
func TestRolePolicies(t *testing.T) {
	for _, region := range []string{"us-east-1", "cn-north-1", "us-gov-west-1"} {
		s := spec.Spec{Ref: spec.Ref{Type: spec.TypeHA, Name: "p", Region: region}}
		cp, err := cpRolePolicy(s)
		want, _ := cloudint.ControlPlanePolicy(map[string]string{"us-east-1": "aws", "cn-north-1": "aws-cn", "us-gov-west-1": "aws-us-gov"}[region])
		if err != nil || cp == "" || cp != want {
			t.Errorf("%s: control-plane policy %d bytes (want %d), %v", region, len(cp), len(want), err)
		}
		s.NoCloudIntegration = true
		if cp, err := cpRolePolicy(s); err != nil || cp != "" {
			t.Errorf("%s without the cloud integration: %q %v", region, cp, err)
		}
	}
}
