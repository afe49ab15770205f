package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kforge/kforge/internal/eks"
	"github.com/kforge/kforge/internal/ha"
	"github.com/kforge/kforge/internal/ha/boot"
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
	c.AddCommand(a.upgradeEKSCommand(), a.upgradeHACommand())
	return c
}

func (a *App) upgradeHACommand() *cobra.Command {
	var f refFlags
	var target, output, jump, jumpKey, source, repo string
	var dryRun bool
	c := &cobra.Command{
		Use:   "ha-aws --name NAME --region REGION --k8s-version V",
		Short: "Upgrade an ha-aws cluster's Kubernetes by one minor version, node by node",
		Long: `Upgrade an ha-aws cluster to the next Kubernetes minor version, one node at
a time, as kubeadm and k3s document it: the first control plane first
(kubeadm upgrade apply; with k3s, its server replaced at the new release),
then the other control planes (kubeadm upgrade node), then the workers,
each drained first (pod disruption budgets are honoured: a drain they block
fails after its timeout and the node stays cordoned) and uncordoned once
its kubelet runs the new release. Then the cloud integration of the new
minor is applied, and kforge waits for every node to be Ready at the new
version. etcd is not touched: take a backup first (kforge backup ha-aws).

Killed or failed, the same command continues with the node it was on;
nodes already upgraded are not upgraded again. Until the upgrade finishes,
create and scale refuse to run on the cluster.

With --artifacts (a directory or a mirror, as create takes), the nodes
install the new release from it: fill it with
'kforge artifacts fetch --k8s-version V'. --dry-run prints the plan.`,
		Example: `  kforge backup ha-aws --name prod --region eu-west-1 --to s3://acme-backups/etcd
  kforge upgrade ha-aws --name prod --region eu-west-1 --k8s-version 1.34 --dry-run
  kforge upgrade ha-aws --name prod --region eu-west-1 --k8s-version 1.34`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ref, c, from, err := a.upgradeOf(cmd.Context(), f, spec.TypeHA, &target, output, func(s spec.Spec) string { return haMinor(s.K8sVersion) })
			if err != nil {
				return err
			}
			next := c.Spec
			next.K8sVersion = target
			if err := ha.CheckVersion(next); err != nil {
				return err
			}
			steps := haUpgradePlan(next)
			if dryRun {
				return a.printUpgradePlan(ref, from, target, steps, output)
			}
			fprintf(a.Stderr, "Upgrading %s from Kubernetes %s to %s, one node at a time (%d steps; state: kept after each)\n", ref, from, target, len(steps))
			var p lifecycle.Provider
			var done *state.Cluster
			if err := a.operate(cmd.Context(), ref, "upgrade", func(ctx context.Context, r *lifecycle.Runner, prov lifecycle.Provider) (err error) {
				p = prov
				done, err = r.Upgrade(ctx, prov, ref, func(s *spec.Spec) {
					if haMinor(s.K8sVersion) != target {
						s.K8sVersion = target
					}
					overrideVMAccess(s, jump, jumpKey, source, repo)
				})
				return err
			}); err != nil {
				return err
			}
			return a.printCreated(p, done, output)
		},
	}
	upgradeFlags(c, &f, &target, &dryRun)
	jumpFlags(c.Flags(), &jump, &jumpKey, "SSH jump host user@host:port (default: what create was given)", "private key file for --ssh-jump")
	artifactFlags(c.Flags(), &source, &repo)
	addOutputFlag(c, &output)
	return c
}

// upgradeFlags registers the flags every upgrade takes.
func upgradeFlags(c *cobra.Command, f *refFlags, target *string, dryRun *bool) {
	f.register(c.Flags())
	c.Flags().StringVar(target, "k8s-version", "", "the Kubernetes minor version to upgrade to: the cluster's next one (required)")
	c.Flags().BoolVar(dryRun, "dry-run", false, "print the plan and change nothing")
}

// upgradeOf checks an upgrade's flags and reads the cluster's state: the
// cluster, and the version it goes from (version reads it from a spec).
// *target is made a bare minor version.
func (a *App) upgradeOf(ctx context.Context, f refFlags, typ string, target *string, output string, version func(spec.Spec) string) (spec.Ref, *state.Cluster, string, error) {
	if err := checkOutput(output); err != nil {
		return spec.Ref{}, nil, "", err
	}
	ref, err := f.ref(typ)
	if err != nil {
		return ref, nil, "", err
	}
	if *target, err = minorFlag(*target); err != nil {
		return ref, nil, "", err
	}
	c, err := a.loadCluster(ctx, ref)
	if err != nil {
		return ref, nil, "", err
	}
	from, err := checkUpgrade(c, *target, version)
	return ref, c, from, err
}

// minorFlag checks --k8s-version of an upgrade: a minor version (1.34).
func minorFlag(v string) (string, error) {
	v = strings.TrimPrefix(v, "v")
	if v == "" {
		return "", spec.Usagef("--k8s-version is required: the next Kubernetes minor version, such as 1.34")
	}
	if _, ok := eks.NextMinor(v); !ok || strings.Count(v, ".") != 1 {
		return "", spec.Usagef("invalid --k8s-version %q: give a Kubernetes minor version such as 1.34", v)
	}
	return v, nil
}

// haMinor is the minor version of an ha-aws cluster's --k8s-version
// (1.34 of 1.34, v1.34.2 or v1.34.2+k3s1).
func haMinor(v string) string {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) < 2 {
		return v
	}
	return parts[0] + "." + parts[1]
}

// haUpgradePlan lists what an upgrade of an ha-aws cluster to spec s does.
func haUpgradePlan(s spec.Spec) []upgradeStep {
	var steps []upgradeStep
	for _, n := range boot.UpgradeOrder(s) {
		steps = append(steps, upgradeStep{n.VM + ": " + n.What, "ssh"})
	}
	if s.CloudIntegration() {
		steps = append(steps, upgradeStep{"the AWS cloud controller manager and the EBS CSI driver of the new release", "ssh (kubectl apply)"})
	}
	return append(steps, upgradeStep{"wait for every node to be Ready at the new version", "ssh (kubectl)"})
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
			ref, c, from, err := a.upgradeOf(cmd.Context(), f, spec.TypeEKS, &target, output, func(s spec.Spec) string { return s.Version })
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
	upgradeFlags(c, &f, &target, &dryRun)
	addOutputFlag(c, &output)
	return c
}

// checkUpgrade returns the version an upgrade of cluster c to target goes
// from, or the *spec.UsageError that refuses it: Kubernetes goes up one
// minor at a time and never down. An upgrade that stopped (the state
// already names target) continues.
func checkUpgrade(c *state.Cluster, target string, version func(spec.Spec) string) (string, error) {
	current := version(c.Spec)
	from := current
	for _, p := range c.Pending {
		if v := version(p); v != "" && v != current {
			from = v // an upgrade under way
		}
	}
	if current == target {
		return from, nil // continue, or check again, an upgrade to target
	}
	if len(c.Pending) > 0 {
		return "", spec.Usagef("%s has an operation that has not completed (to %s): run it again first (`kforge create %s` or the same upgrade)", c.Ref(), current, c.Ref().Args())
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
