package infra

import (
	"testing"

	"github.com/kforge/kforge/internal/cloudint"
	"github.com/kforge/kforge/internal/spec"
)

// TestRolePolicies: with the cloud integration the control planes' role
// gets the documented policy in every partition (the graph drops an
// error, so there must be none) and the workers' role none; without it,
// neither gets one.
func TestRolePolicies(t *testing.T) {
	for _, region := range []string{"us-east-1", "cn-north-1", "us-gov-west-1"} {
		s := spec.Spec{Ref: spec.Ref{Type: spec.TypeHA, Name: "p", Region: region}}
		cp, wp, err := rolePolicies(s)
		want, _ := cloudint.ControlPlanePolicy(map[string]string{"us-east-1": "aws", "cn-north-1": "aws-cn", "us-gov-west-1": "aws-us-gov"}[region])
		if err != nil || cp == "" || cp != want || wp != "" {
			t.Errorf("%s: control-plane policy %d bytes (want %d), worker policy %q, %v", region, len(cp), len(want), wp, err)
		}
		s.NoCloudIntegration = true
		if cp, wp, err := rolePolicies(s); err != nil || cp != "" || wp != "" {
			t.Errorf("%s without the cloud integration: %q %q %v", region, cp, wp, err)
		}
	}
}
