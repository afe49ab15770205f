package preflight_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/kforge/kforge/internal/preflight"
	"github.com/kforge/kforge/test/testutil/faultproxy"
	"github.com/kforge/kforge/test/testutil/moto"
)

// The checks after the credentials do not wait for each other: with a
// round trip long enough for calls to overlap, several are in flight at
// once (measured by the proxy, not by a clock); and the report keeps its
// order.
func TestPreflightChecksRunConcurrently(t *testing.T) {
	t.Parallel()
	emu := moto.Start(t)
	proxy := faultproxy.Start(t, emu.URL)
	const region = "eu-west-1"
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion(region), config.WithBaseEndpoint(proxy.URL),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(moto.AccessKeyID, moto.SecretAccessKey, "")))
	if err != nil {
		t.Fatal(err)
	}
	s := haSpec("conc", region)
	// Warm the emulator up (its first calls in a region load data).
	preflight.Run(context.Background(), s, preflight.Options{AWS: cfg, Source: "test", Facts: facts(s)})
	proxy.Clear()
	const rtt = 100 * time.Millisecond
	proxy.Add(faultproxy.Rule{Fault: faultproxy.Delay, Delay: rtt})

	rep := preflight.Run(context.Background(), s, preflight.Options{AWS: cfg, Source: "test", Facts: facts(s)})
	calls := proxy.Count(nil)
	if calls < 12 {
		t.Fatalf("only %d calls: the test no longer measures what it should", calls)
	}
	// Sequential checks would never have two calls in flight.
	if peak := proxy.PeakInFlight(); peak < 4 {
		t.Errorf("at most %d of preflight's %d calls were in flight at once, want >= 4: checks wait for each other", peak, calls)
	}
	var names []string
	for _, c := range rep.Checks {
		names = append(names, c.Name)
	}
	want := []string{preflight.CheckRegion, preflight.CheckCredentials, preflight.CheckPermissions, preflight.CheckZones, preflight.CheckTypes,
		preflight.CheckImage, preflight.CheckVCPU, preflight.CheckVPCQuota, preflight.CheckVersion}
	if !slices.Equal(names, want) {
		t.Errorf("checks %v, want %v", names, want)
	}
}
