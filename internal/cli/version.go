package cli

import (
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// buildVersion returns the version and commit of this build: those the
// linker set (-X), else what Go recorded in the binary: the module version
// (`go install module@version`) and the VCS revision of the checkout it was
// built from, with "-dirty" when it had uncommitted changes.
func buildVersion(b Build) (version, commit string) {
	info, ok := debug.ReadBuildInfo()
	return buildVersionOf(b, info, ok)
}

// buildVersionOf is buildVersion with the build information given.
func buildVersionOf(b Build, info *debug.BuildInfo, ok bool) (version, commit string) {
	version, commit = b.Version, b.Commit
	if !ok || info == nil {
		return orDefault(version, "dev"), commit
	}
	if (version == "" || version == "dev") && info.Main.Version != "" && info.Main.Version != "(devel)" {
		version = info.Main.Version
	}
	if commit == "" {
		modified := false
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if commit != "" && modified {
			commit += "-dirty"
		}
	}
	return orDefault(version, "dev"), commit
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (a *App) versionCommand() *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "version",
		Short: "Print kforge's version, commit and Go version",
		Long: `Print kforge's version, the commit it was built from, and the Go version.
A release build carries the version its linker flags set; a build from
'go install' or 'go build' in a checkout says the module version and the
VCS revision Go recorded ("-dirty" when the checkout had changes).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			version, commit := buildVersion(a.Build)
			v := map[string]string{"version": version, "commit": commit, "go": runtime.Version(), "platform": runtime.GOOS + "/" + runtime.GOARCH}
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
