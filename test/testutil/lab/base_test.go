//go:build lab && linux

package lab

import (
	"context"
	"testing"
	"time"
)

// TestBase builds (or finds) the cached base root and prints how long it
// took.
func TestBase(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	start := time.Now()
	dir, err := EnsureBase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING base ready in %s: %s", time.Since(start).Round(100*time.Millisecond), dir)
}
