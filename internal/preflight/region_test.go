package preflight_test

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/kforge/kforge/internal/preflight"
	"github.com/kforge/kforge/test/testutil/faultproxy"
	"github.com/kforge/kforge/test/testutil/moto"
)

// proxied returns a configuration for region whose calls go through a
// fault proxy in front of a fresh emulator.
func proxied(t *testing.T, region string) (*faultproxy.Proxy, func() preflight.Options) {
	t.Helper()
	emu := moto.Start(t)
	proxy := faultproxy.Start(t, emu.URL)
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion(region), config.WithBaseEndpoint(proxy.URL),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(moto.AccessKeyID, moto.SecretAccessKey, "")))
	if err != nil {
		t.Fatal(err)
	}
	return proxy, func() preflight.Options { return preflight.Options{AWS: cfg, Source: "test"} }
}

// An opt-in region is checked in its partition's home region, and one the
// account has not enabled fails the preflight with how to enable it, before
// any other check calls the region's endpoints. A region every account
// has needs no call.
func TestPreflightRegion(t *testing.T) {
	t.Parallel()
	// The emulator lists me-south-1 as not opted in, af-south-1 as not
	// needing opt-in (AWS: opted in or not, per account).
	t.Run("opt-in region not enabled", func(t *testing.T) {
		t.Parallel()
		proxy, opts := proxied(t, "me-south-1")
		s := haSpec("optin", "me-south-1")
		o := opts()
		o.Facts = facts(s)
		rep := preflight.Run(context.Background(), s, o)
		c := status(t, rep, preflight.CheckRegion)
		if c.Status != preflight.Fail || !strings.Contains(c.Detail, "not enabled in this account") ||
			!strings.Contains(c.Fix, "aws account enable-region --region-name me-south-1") {
			t.Errorf("region check: %+v", c)
		}
		if rep.OK() || len(rep.Checks) != 1 {
			t.Errorf("want only the failed region check:\n%s", describe(rep))
		}
		recs := proxy.Records()
		if len(recs) != 1 || recs[0].Action != "DescribeRegions" || recs[0].Region != "us-east-1" {
			t.Errorf("calls %+v, want one DescribeRegions in us-east-1", recs)
		}
	})
	t.Run("opt-in region enabled", func(t *testing.T) {
		t.Parallel()
		proxy, opts := proxied(t, "af-south-1")
		s := eksSpec("optin", "af-south-1")
		o := opts()
		o.Facts = facts(s)
		rep := preflight.Run(context.Background(), s, o)
		if c := status(t, rep, preflight.CheckRegion); c.Status != preflight.OK || !strings.Contains(c.Detail, "enabled in this account") {
			t.Errorf("region check: %+v", c)
		}
		if proxy.Count(faultproxy.Actions("DescribeRegions")) != 1 {
			t.Errorf("DescribeRegions called %d times, want 1", proxy.Count(faultproxy.Actions("DescribeRegions")))
		}
	})
	t.Run("region every account has", func(t *testing.T) {
		t.Parallel()
		proxy, opts := proxied(t, "eu-west-3")
		s := eksSpec("std", "eu-west-3")
		o := opts()
		o.Facts = facts(s)
		rep := preflight.Run(context.Background(), s, o)
		if c := status(t, rep, preflight.CheckRegion); c.Status != preflight.OK {
			t.Errorf("region check: %+v", c)
		}
		if n := proxy.Count(faultproxy.Actions("DescribeRegions")); n != 0 {
			t.Errorf("DescribeRegions called %d times for a region that needs no opt-in", n)
		}
	})
}

// Preflight fails, not warns, when it cannot check the availability zones
// or the instance types at all: a create must not start unchecked.
func TestPreflightUncheckedZonesAndTypesFail(t *testing.T) {
	t.Parallel()
	for _, action := range []string{"DescribeAvailabilityZones", "DescribeInstanceTypes"} {
		t.Run(action, func(t *testing.T) {
			t.Parallel()
			proxy, opts := proxied(t, "eu-west-1")
			proxy.Add(faultproxy.Rule{Match: faultproxy.Actions(action), Fault: faultproxy.ServerFault})
			s := haSpec("unchecked", "eu-west-1")
			o := opts()
			o.Facts = facts(s)
			rep := preflight.Run(context.Background(), s, o)
			want := preflight.CheckTypes
			if action == "DescribeAvailabilityZones" {
				want = preflight.CheckZones
			}
			if c := status(t, rep, want); c.Status != preflight.Fail || !strings.Contains(c.Detail, "could not") {
				t.Errorf("%s: %+v\n%s", want, c, describe(rep))
			}
			if rep.OK() {
				t.Errorf("the report passes with %s failing:\n%s", action, describe(rep))
			}
		})
	}
}
