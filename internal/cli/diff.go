package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/lifecycle"
)

func (a *App) diffCommand() *cobra.Command {
	return typeCommands(&cobra.Command{
		Use:   "diff <type>",
		Short: "Show what a reconcile would change: drift made outside kforge",
	}, func(typ string) *cobra.Command {
		var f refFlags
		var output string
		c := &cobra.Command{
			Use:   typ + " --name NAME --region REGION",
			Short: fmt.Sprintf("Show what `kforge create %s` would change in a cluster, without changing anything", typ),
			Long: `Look up every resource of the cluster in AWS (and what kforge runs on its
VMs) and print what a reconcile, that is 'kforge create' with the same
settings, would change: resources deleted outside kforge (recreated), settings
changed outside kforge (put back), drift kforge does not repair itself
(reported with what to do), and the steps that would run again. Nothing is
changed, in AWS or in the cluster's state.

Exit codes: 0 in sync, 1 drift found (or the look-ups failed), 2 invalid usage.`,
			Example: fmt.Sprintf("  kforge diff %s --name demo --region us-east-1\n  kforge diff %s --name demo --region us-east-1 -o json", typ, typ),
			Args:    cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				if err := checkOutput(output); err != nil {
					return err
				}
				ref, err := f.ref(typ)
				if err != nil {
					return err
				}
				var changes []engine.Change
				if err := a.operate(cmd.Context(), ref, "diff", func(ctx context.Context, r *lifecycle.Runner, p lifecycle.Provider) (err error) {
					changes, _, err = r.Diff(ctx, p, ref)
					return err
				}); err != nil {
					return err
				}
				if output == outputJSON {
					if err := writeJSON(a.Stdout, struct {
						InSync  bool            `json:"inSync"`
						Changes []engine.Change `json:"changes"`
					}{len(changes) == 0, nonNil(changes)}); err != nil {
						return err
					}
				} else if len(changes) == 0 {
					fprintf(a.Stdout, "%s is in sync: every resource was found as recorded.\n", ref)
				} else {
					fprintf(a.Stdout, "%s has drifted: a reconcile would make %d change(s):\n", ref, len(changes))
					t := newTable(a.Stdout)
					for _, ch := range changes {
						fprintf(t, "  %s\t%s\t%s\n", ch.Kind, ch.Step, orDash(ch.Detail))
					}
					t.Flush()
					fprintf(a.Stdout, "\nRepair it with: kforge create %s (with the flags it was created with)\n", ref.Args())
				}
				if len(changes) > 0 {
					return errSilent
				}
				return nil
			},
		}
		f.register(c.Flags())
		addOutputFlag(c, &output)
		return c
	})
}

func nonNil(c []engine.Change) []engine.Change {
	if c == nil {
		return []engine.Change{}
	}
	return c
}
