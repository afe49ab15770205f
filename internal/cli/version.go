package cli

import (
	"runtime"

	"github.com/spf13/cobra"
)

func (a *App) versionCommand() *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "version",
		Short: "Print kforge's version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			v := map[string]string{"version": a.Build.Version, "commit": a.Build.Commit, "go": runtime.Version(), "platform": runtime.GOOS + "/" + runtime.GOARCH}
			if output == outputJSON {
				return writeJSON(a.Stdout, v)
			}
			fprintf(a.Stdout, "kforge %s (commit %s, %s, %s)\n", v["version"], orDash(v["commit"]), v["go"], v["platform"])
			return nil
		},
	}
	addOutputFlag(c, &output)
	return c
}
