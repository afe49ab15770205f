//go:build lab && linux

package lab

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestDefaultSuiteUnaffected: without the lab tag, this package is only
// its documentation (no code, no tests), so "go test ./..." neither
// builds nor runs anything of the lab.
func TestDefaultSuiteUnaffected(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := exec.LookPath(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			t.Skip("no go command")
		}
	}
	out, err := exec.Command(goBin, "list", "-f", "{{.GoFiles}} {{.TestGoFiles}} {{.XTestGoFiles}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "[doc.go] [] []" {
		t.Errorf("without the lab tag the package has %s, want only doc.go", got)
	}
}
