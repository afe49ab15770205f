// Command kforge creates, operates and deletes Kubernetes clusters on AWS.
// It only wires the command line to the providers; see internal/cli.
package main

import (
	"os"

	"github.com/kforge/kforge/internal/cli"
	"github.com/kforge/kforge/internal/eks"
	"github.com/kforge/kforge/internal/ha"
)

// Set by the linker: -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = ""
)

func main() {
	os.Exit(cli.Main(&cli.App{
		Stdin:  os.Stdin,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		Getenv: os.Getenv,
		Args:   os.Args[1:],
		Build:  cli.Build{Version: version, Commit: commit},
		Providers: map[string]cli.ProviderFactory{
			"aws":    eks.New,
			"ha-aws": ha.New,
		},
	}))
}
