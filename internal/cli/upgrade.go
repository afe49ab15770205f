package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kforge/kforge/internal/eks"
	"github.com/kforge/kforge/internal/lifecycle"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
)

func (a *App) upgradeCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "upgrade <type>",
		Short: "Upgrade a cluster's Kubernetes to the next minor version",
		Long: `Upgrade a cluster's Kubernetes by one minor version, as Kubernetes requires:
skipping a minor or going down is refused (exit 2) and nothing is changed.

An upgrade is resumable like every other operation: if it stops, run the
same command again and it continues where it stopped.`,
	}
	c.AddCommand(a.upgradeEKSCommand(), upgradeHACommand())
	return c
}

// upgradeHACommand says that ha-aws clusters cannot be upgraded by kforge
// yet, and what to do instead (rather than that ha-aws is no type).
func upgradeHACommand() *cobra.Command {
	return &cobra.Command{
		Use:                "ha-aws",
		Short:              "Not available yet: upgrades of ha-aws clusters",
		DisableFlagParsing: true,
		RunE: func(*cobra.Command, []string) error {
			return spec.Usagef("kforge cannot upgrade ha-aws clusters yet: take a backup first (`kforge backup ha-aws ... --to s3://...`), then upgrade each control plane with `kubeadm upgrade` (k3s: install the new release) and each drained worker, or create a cluster at the new version and move the workloads")
		},
	}
}

// upgradeStep is one step of an upgrade's plan.
type upgradeStep struct {
	What string `json:"what"`
	Call string `json:"call"`
}

func (a *App) upgradeEKSCommand() *cobra.Command {
	var f refFlags
	var target, output string
	var dryRun bool
	c := &cobra.Command{
		Use:   "aws --name NAME --region REGION --k8s-version V",
		Short: "Upgrade an EKS cluster, its node group and its add-ons by one minor version",
		Long: `Upgrade an EKS cluster to the next Kubernetes minor version: the control
plane first (UpdateClusterVersion; EKS takes 20-40 minutes), then the
managed node group (UpdateNodegroupVersion: EKS replaces the nodes one at a
time, draining each and honouring pod disruption budgets), then the managed
add-ons to the versions EKS recommends for the new version. kforge waits for
each and records the new version in the cluster's state.

--dry-run prints the plan and changes nothing (it reads the cluster's state).`,
		Example: `  kforge upgrade aws --name demo --region us-east-1 --k8s-version 1.34 --dry-run
  kforge upgrade aws --name demo --region us-east-1 --k8s-version 1.34`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			ref, err := f.ref(spec.TypeEKS)
			if err != nil {
				return err
			}
			target = strings.TrimPrefix(target, "v")
			if target == "" {
				return spec.Usagef("--k8s-version is required: the next Kubernetes minor version, such as 1.34")
			}
			if _, ok := eks.NextMinor(target); !ok || strings.Count(target, ".") != 1 {
				return spec.Usagef("invalid --k8s-version %q: give a Kubernetes minor version such as 1.34", target)
			}
			c, err := a.loadCluster(cmd.Context(), ref)
			if err != nil {
				return err
			}
			from, err := checkUpgrade(c, target)
			if err != nil {
				return err
			}
			steps := eksUpgradePlan(c.Spec, target)
			if dryRun {
				return a.printUpgradePlan(ref, from, target, steps, output)
			}
			cfg, _, err := a.awsConfig(cmd.Context(), ref.Region)
			if err != nil {
				return err
			}
			if err := eks.CheckVersionOffered(cmd.Context(), cfg, ref, target); err != nil {
				return err
			}
			fprintf(a.Stderr, "Upgrading %s from Kubernetes %s to %s (%d steps; state: kept after each)\n", ref, from, target, len(steps))
			var p lifecycle.Provider
			var done *state.Cluster
			if err := a.operateWith(cmd.Context(), ref, "upgrade", &cfg, func(ctx context.Context, r *lifecycle.Runner, prov lifecycle.Provider) (err error) {
				p = prov
				done, err = r.Scale(ctx, prov, ref, func(s *spec.Spec) { s.Version = target })
				return err
			}); err != nil {
				return err
			}
			return a.printCreated(p, done, output)
		},
	}
	f.register(c.Flags())
	c.Flags().StringVar(&target, "k8s-version", "", "the Kubernetes minor version to upgrade to: the cluster's next one (required)")
	c.Flags().BoolVar(&dryRun, "dry-run", false, "print the plan and change nothing")
	addOutputFlag(c, &output)
	return c
}

// checkUpgrade returns the version an upgrade of cluster c to target goes
// from, or the *spec.UsageError that refuses it: Kubernetes goes up one
// minor at a time and never down. An upgrade that stopped (the state
// already names target) continues.
func checkUpgrade(c *state.Cluster, target string) (string, error) {
	from := c.Spec.Version
	for _, p := range c.Pending {
		if p.Version != "" && p.Version != c.Spec.Version {
			from = p.Version // an upgrade under way
		}
	}
	if c.Spec.Version == target {
		return from, nil // continue, or check again, an upgrade to target
	}
	if len(c.Pending) > 0 {
		return "", spec.Usagef("%s has an operation that has not completed (to %s): run it again first (`kforge create %s` or the same upgrade)", c.Ref(), c.Spec.Version, c.Ref().Args())
	}
	if eks.CompareVersions(target, from) < 0 {
		return "", spec.Usagef("%s runs Kubernetes %s: Kubernetes cannot go down to %s", c.Ref(), from, target)
	}
	next, _ := eks.NextMinor(from)
	if target != next {
		return "", spec.Usagef("%s runs Kubernetes %s: upgrade one minor version at a time, to %s first", c.Ref(), from, next)
	}
	return from, nil
}

// eksUpgradePlan lists what an upgrade of an EKS cluster to target does.
func eksUpgradePlan(s spec.Spec, target string) []upgradeStep {
	steps := []upgradeStep{
		{fmt.Sprintf("EKS cluster %s: the control plane to Kubernetes %s (EKS takes 20-40 minutes)", s.Name, target), "eks:UpdateClusterVersion"},
		{fmt.Sprintf("node group %s: its nodes to Kubernetes %s, replaced one at a time, each drained first", eks.NodegroupName(s.Name), target), "eks:UpdateNodegroupVersion"},
	}
	for _, ad := range eks.Addons {
		steps = append(steps, upgradeStep{fmt.Sprintf("add-on %s: to the version EKS recommends for Kubernetes %s", ad.Name, target), "eks:UpdateAddon"})
	}
	return steps
}

func (a *App) printUpgradePlan(ref spec.Ref, from, to string, steps []upgradeStep, output string) error {
	if output == outputJSON {
		return writeJSON(a.Stdout, struct {
			Cluster spec.Ref      `json:"cluster"`
			From    string        `json:"from"`
			To      string        `json:"to"`
			Steps   []upgradeStep `json:"steps"`
		}{ref, from, to, steps})
	}
	fprintf(a.Stdout, "Plan to upgrade %s from Kubernetes %s to %s (nothing is changed with --dry-run):\n", ref, from, to)
	for i, s := range steps {
		fprintf(a.Stdout, "  %d. %s (%s)\n", i+1, s.What, s.Call)
	}
	return nil
}
