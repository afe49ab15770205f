package infra

import (
	"testing"

	"github.com/kforge/kforge/internal/spec"
)

// TestRolePolicies: with the cloud integration the roles get the
// documented policies in every partition (the graph drops an error, so
// there must be none); without it, none.
func TestRolePolicies(t *testing.T) {
	for _, region := range []string{"us-east-1", "cn-north-1", "us-gov-west-1"} {
		s := spec.Spec{Ref: spec.Ref{Type: spec.TypeHA, Name: "p", Region: region}}
		cp, wp, err := rolePolicies(s)
		if err != nil || cp == "" || wp == "" {
			t.Errorf("%s: policies %d and %d bytes, %v", region, len(cp), len(wp), err)
		}
		s.NoCloudIntegration = true
		if cp, wp, err := rolePolicies(s); err != nil || cp != "" || wp != "" {
			t.Errorf("%s without the cloud integration: %q %q %v", region, cp, wp, err)
		}
	}
}
