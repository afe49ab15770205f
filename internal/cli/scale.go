package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kforge/kforge/internal/lifecycle"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
)

func (a *App) scaleCommand() *cobra.Command {
	return typeCommands(&cobra.Command{
		Use:   "scale <type>",
		Short: "Grow or shrink a cluster's worker pool",
	}, func(typ string) *cobra.Command {
		var f refFlags
		var output, jump, jumpKey, source, repo string
		var n, sshSessions int
		var sshTimeout time.Duration
		flag := "nodes"
		long := "Change the EKS managed node group's desired size (and its minimum and\nmaximum as needed), and wait until it is ACTIVE."
		if typ == spec.TypeHA {
			flag = "workers"
			long = "Add worker VMs (launched and joined) or remove the newest ones (drained and\ndeleted from Kubernetes before their VMs are terminated)."
		}
		c := &cobra.Command{
			Use:     fmt.Sprintf("%s --name NAME --region REGION --%s K", typ, flag),
			Short:   fmt.Sprintf("Set the number of worker nodes of an %s cluster", typ),
			Long:    long,
			Example: fmt.Sprintf("  kforge scale %s --name demo --region us-east-1 --%s 5", typ, flag),
			Args:    cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				if err := checkOutput(output); err != nil {
					return err
				}
				ref, err := f.ref(typ)
				if err != nil {
					return err
				}
				if !cmd.Flags().Changed(flag) {
					return spec.Usagef("--%s is required: the number of worker nodes wanted", flag)
				}
				// EKS lets a node group scale to zero nodes; an ha-aws
				// cluster keeps at least one worker.
				least := 1
				if typ == spec.TypeEKS {
					least = 0
				}
				if n < least || n > spec.MaxNodesPerCluster {
					return spec.Usagef("invalid --%s %d: use a number from %d to %d", flag, n, least, spec.MaxNodesPerCluster)
				}
				if err := spec.CheckSSHTimeout(sshTimeout); err != nil {
					return err
				}
				if cmd.Flags().Changed("ssh-sessions") {
					if err := spec.CheckSSHSessions(sshSessions); err != nil {
						return err
					}
				}
				var c *state.Cluster
				var p lifecycle.Provider
				if err := a.operate(cmd.Context(), ref, "scale", func(ctx context.Context, r *lifecycle.Runner, prov lifecycle.Provider) (err error) {
					p = prov
					c, err = r.Scale(ctx, prov, ref, func(s *spec.Spec) {
						if typ == spec.TypeEKS {
							s.Nodes = n
						} else {
							s.Workers = n
						}
						overrideVMAccess(s, jump, jumpKey, source, repo)
						if cmd.Flags().Changed("ssh-timeout") {
							s.SSHTimeout = sshTimeout
						}
						if cmd.Flags().Changed("ssh-sessions") {
							s.SSHSessions = sshSessions
						}
					})
					return err
				}); err != nil {
					return err
				}
				return a.printCreated(p, c, output)
			},
		}
		f.register(c.Flags())
		c.Flags().IntVar(&n, flag, 0, "number of worker nodes wanted")
		addOutputFlag(c, &output)
		if typ == spec.TypeHA {
			jumpFlags(c.Flags(), &jump, &jumpKey, "SSH jump host user@host:port (default: what create was given)", "private key file for --ssh-jump")
			artifactFlags(c.Flags(), &source, &repo)
			sshTimeoutFlag(c.Flags(), &sshTimeout)
			sshSessionsFlag(c.Flags(), &sshSessions)
		}
		return c
	})
}

// overrideVMAccess gives an operation on an existing ha-aws cluster the
// jump host and the artifacts (source, image repository) its flags name,
// where they name any.
func overrideVMAccess(s *spec.Spec, jump, jumpKey, source, repo string) {
	overrideJump(s, jump, jumpKey)
	if source != "" {
		s.Artifacts = absArtifacts(source)
	}
	if repo != "" {
		s.ImageRepository = repo
	}
}
