package spec

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestKnownRegions(t *testing.T) {
	for _, r := range []string{"us-east-1", "eu-west-3", "af-south-1", "ap-east-1", "ap-south-2", "ap-southeast-3", "ap-southeast-7",
		"ca-west-1", "eu-central-2", "eu-south-1", "eu-south-2", "il-central-1", "me-central-1", "me-south-1", "mx-central-1",
		"cn-north-1", "cn-northwest-1", "us-gov-east-1", "us-gov-west-1"} {
		if !KnownRegion(r) {
			t.Errorf("%s is not known", r)
		}
		if !regionRE.MatchString(r) {
			t.Errorf("%s does not match the region format", r)
		}
	}
	for _, r := range []string{"us-east-9", "eu-west-4", "mars-1", "", "US-EAST-1"} {
		if KnownRegion(r) {
			t.Errorf("%s is known", r)
		}
	}
	seen := map[string]bool{}
	for _, r := range regions {
		if seen[r.Code] {
			t.Errorf("%s is listed twice", r.Code)
		}
		seen[r.Code] = true
		if !regionRE.MatchString(r.Code) {
			t.Errorf("%s does not match the region format", r.Code)
		}
		if home := HomeRegion(r.Code); home == "" || !KnownRegion(home) {
			t.Errorf("%s: home region %q", r.Code, home)
		} else if h, _ := LookupRegion(home); h.OptIn || h.Partition != r.Partition {
			t.Errorf("%s: home region %s is opt-in or of another partition", r.Code, home)
		}
	}
	if r, _ := LookupRegion("me-south-1"); !r.OptIn || HomeRegion("me-south-1") != "us-east-1" {
		t.Errorf("me-south-1: %+v, home %s", r, HomeRegion("me-south-1"))
	}
	if HomeRegion("eu-west-1") != "eu-west-1" || HomeRegion("cn-northwest-1") != "cn-northwest-1" {
		t.Error("a region that needs no opt-in is not its own home")
	}
}

func TestCheckRegion(t *testing.T) {
	cases := []struct {
		region string
		want   []string
		near   []string
	}{
		{"us-east-9", []string{`unknown region "us-east-9"`, "did you mean us-east-1 or us-east-2?", "aws-us-gov", "mx-central-1"}, []string{"us-east-1", "us-east-2"}},
		{"eu-wets-1", []string{`unknown region "eu-wets-1"`, "eu-west-1"}, nil},
		{"useast1", []string{`invalid region "useast1"`, "did you mean us-east-1?"}, []string{"us-east-1"}},
		{"mars", []string{`invalid region "mars"`, "cn-north-1"}, []string{}},
		{"", []string{"--region is required", "AWS_REGION", "AWS_DEFAULT_REGION", "profile"}, nil},
	}
	for _, c := range cases {
		err := CheckRegion(c.region)
		var ue *UsageError
		if !errors.As(err, &ue) {
			t.Errorf("%q: %v, want a usage error", c.region, err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: %q lacks %q", c.region, err, w)
			}
		}
		if c.near != nil {
			if got := NearestRegions(c.region); !slices.Equal(got, c.near) && (len(got) != 0 || len(c.near) != 0) {
				t.Errorf("nearest to %q: %v, want %v", c.region, got, c.near)
			}
		}
	}
	if err := CheckRegion("ap-southeast-7"); err != nil {
		t.Error(err)
	}
}
