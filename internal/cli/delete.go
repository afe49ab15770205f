package cli

import (
	"bufio"
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kforge/kforge/internal/ekstoken"
	"github.com/kforge/kforge/internal/kubeconfig"
	"github.com/kforge/kforge/internal/lifecycle"
	"github.com/kforge/kforge/internal/spec"
)

func (a *App) deleteCommand() *cobra.Command {
	return typeCommands(&cobra.Command{
		Use:   "delete <type>",
		Short: "Delete a cluster and every AWS resource kforge made for it",
		Long: `Delete a cluster and every AWS resource kforge made for it, in reverse
order of creation, waiting for each; then its state. Without state (lost or
never written), kforge finds the resources by their kforge.io/cluster tags and
its IAM roles by their kforge-<name>- names. Running it again is safe.

On a terminal it asks for confirmation; --yes skips it. Without a terminal
and without --yes it refuses (exit 2).`,
	}, func(typ string) *cobra.Command {
		var f refFlags
		var yes bool
		var jump, jumpKey, output string
		c := &cobra.Command{
			Use:     typ + " --name NAME --region REGION",
			Short:   fmt.Sprintf("Delete an %s cluster", typ),
			Example: fmt.Sprintf("  kforge delete %s --name demo --region us-east-1 --yes", typ),
			Args:    cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				if err := checkOutput(output); err != nil {
					return err
				}
				ref, err := f.ref(typ)
				if err != nil {
					return err
				}
				if err := a.confirmDelete(ref, yes); err != nil {
					return err
				}
				var res lifecycle.DeleteResult
				if err := a.operate(cmd.Context(), ref, "delete", func(ctx context.Context, r *lifecycle.Runner, p lifecycle.Provider) (err error) {
					res, err = r.Delete(ctx, p, ref, func(s *spec.Spec) { overrideJump(s, jump, jumpKey) })
					return err
				}); err != nil {
					return err
				}
				nothing := !res.StateFound && res.Deleted == 0
				if nothing {
					fprintf(a.Stderr, "Nothing to delete: kforge has no state for %s and found no AWS resources of it.\n", ref)
				} else {
					fprintf(a.Stderr, "Deleted %s.\n", ref)
					a.forgetKubeconfig(ref)
				}
				if output == outputJSON {
					return writeJSON(a.Stdout, deleteReport{Name: ref.Name, Type: ref.Type, Region: ref.Region,
						Deleted: !nothing, StateFound: res.StateFound, Steps: res.Deleted})
				}
				return nil
			},
		}
		f.register(c.Flags())
		c.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
		addOutputFlag(c, &output)
		if typ == spec.TypeHA {
			jumpFlags(c.Flags(), &jump, &jumpKey, "SSH jump host user@host:port (default: what create was given)", "private key file for --ssh-jump")
		}
		return c
	})
}

// deleteReport is what `delete -o json` prints.
type deleteReport struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	Region string `json:"region"`
	// Deleted is false when there was nothing to delete (no state, no
	// resources found).
	Deleted bool `json:"deleted"`
	// StateFound says whether kforge had state for the cluster (else it
	// found the resources by their tags and names).
	StateFound bool `json:"stateFound"`
	// Steps counts the steps that removed something.
	Steps int `json:"steps"`
}

func (a *App) confirmDelete(ref spec.Ref, yes bool) error {
	if yes {
		return nil
	}
	if !isTerminal(a.Stdin) {
		return spec.Usagef("refusing to delete %s without confirmation: no terminal to ask on; pass --yes", ref)
	}
	fprintf(a.Stderr, "This deletes %s and every AWS resource kforge made for it.\nType the cluster name to confirm: ", ref)
	line, _ := bufio.NewReader(a.Stdin).ReadString('\n')
	if strings.TrimSpace(line) != ref.Name {
		return spec.Usagef("not confirmed; nothing was deleted")
	}
	return nil
}

// forgetKubeconfig removes a deleted cluster's context from the default
// kubeconfig and its cached tokens; failures only warn.
func (a *App) forgetKubeconfig(ref spec.Ref) {
	if err := kubeconfig.Remove(kubeconfig.Path(""), lifecycle.ContextName(ref)); err != nil {
		fprintf(a.Stderr, "Warning: could not remove context %s from the kubeconfig: %v\n", lifecycle.ContextName(ref), err)
	}
	if home, err := a.Home(); err == nil && ref.Type == spec.TypeEKS {
		_ = ekstoken.Cache{Dir: filepath.Join(home, "cache", "tokens")}.Forget(ref.Name, ref.Region)
	}
}
