// Package e2e runs the real kforge binary against the AWS emulator
// (moto_server on 127.0.0.1) and checks, through the emulator's AWS API,
// what each command made or removed.
package e2e

import (
	"testing"

	"github.com/kforge/kforge/test/testutil/kforgebin"
	"github.com/kforge/kforge/test/testutil/moto"
)

// emu is the emulator shared by the tests of this package; each test uses
// its own cluster names, so they run in parallel.
var emu *moto.Server

func TestMain(m *testing.M) {
	moto.RunTests(kforgebin.Cleaning(m), &emu)
}
