package cli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kforge/kforge/internal/cost"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/lifecycle"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
)

// listItem is one cluster in `kforge get -o json`.
type listItem struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	Region string `json:"region"`
	Status string `json:"status"`
	Nodes  int    `json:"nodes"`
	// Kubernetes is the cluster's Kubernetes version (as asked: 1.34).
	Kubernetes string    `json:"kubernetesVersion"`
	Created    time.Time `json:"created"`
	Updated    time.Time `json:"updated"`
	Error      string    `json:"error,omitempty"`
}

func (a *App) getCommand() *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:     "get",
		Aliases: []string{"list", "ls"},
		Short:   "List every cluster in the state store",
		Long: `List every cluster in the state store, one row each: name, type, region,
status (creating, running, failed, deleting), worker nodes, Kubernetes
version and creation time.
It reads only the state store: no AWS call and no secret is read.`,
		Example: `  kforge get
  kforge get -o json | jq -r '.[] | select(.status=="failed") | .name'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			store, err := a.openStore(cmd.Context())
			if err != nil {
				return err
			}
			list, err := store.List(cmd.Context())
			if err != nil {
				return err
			}
			items := make([]listItem, 0, len(list))
			for _, c := range list {
				items = append(items, listItem{Name: c.Spec.Name, Type: c.Spec.Type, Region: c.Spec.Region, Status: c.Status,
					Nodes: c.Spec.WorkerCount(), Kubernetes: c.Spec.Version + c.Spec.K8sVersion, Created: c.Created, Updated: c.Updated, Error: c.Error})
			}
			if output == outputJSON {
				return writeJSON(a.Stdout, items)
			}
			if len(items) == 0 {
				fprintf(a.Stderr, "No clusters in %s. Create one with: kforge create aws --name demo --region us-east-1\n", store.Location())
				return nil
			}
			t := newTable(a.Stdout)
			fmt.Fprintln(t, "NAME\tTYPE\tREGION\tSTATUS\tNODES\tKUBERNETES\tCREATED")
			for _, i := range items {
				fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", i.Name, i.Type, i.Region, i.Status, i.Nodes, i.Kubernetes, i.Created.Format(time.RFC3339))
			}
			return t.Flush()
		},
	}
	addOutputFlag(c, &output)
	return c
}

// typeCommands adds one subcommand per cluster type to parent, built by mk.
func typeCommands(parent *cobra.Command, mk func(typ string) *cobra.Command) *cobra.Command {
	for _, t := range spec.Types {
		parent.AddCommand(mk(t))
	}
	return parent
}

func (a *App) infoCommand() *cobra.Command {
	return typeCommands(&cobra.Command{
		Use:   "info <type>",
		Short: "Show a cluster's resources, nodes, versions and status",
	}, func(typ string) *cobra.Command {
		var f refFlags
		var output string
		var offline bool
		c := &cobra.Command{
			Use:   typ + " --name NAME --region REGION",
			Short: fmt.Sprintf("Show an %s cluster's AWS resources, nodes, versions and status", typ),
			Long: `Show what kforge knows of a cluster: its settings, status, versions, AWS
resources, VMs and estimated cost, from its state; then look up every
resource in AWS and say, per resource, whether it was found as recorded.
Drift is named (see 'kforge diff' for everything a reconcile would change);
with --offline nothing is looked up and no AWS credentials are needed.`,
			Example: fmt.Sprintf("  kforge info %s --name demo --region us-east-1\n  kforge info %s --name demo --region us-east-1 --offline -o json", typ, typ),
			Args:    cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				if err := checkOutput(output); err != nil {
					return err
				}
				ref, err := f.ref(typ)
				if err != nil {
					return err
				}
				c, err := a.loadCluster(cmd.Context(), ref)
				if err != nil {
					return err
				}
				p, err := a.offlineProvider(typ)
				if err != nil {
					return err
				}
				info := describe(p, c)
				if !offline {
					info.Check = a.checkResources(cmd.Context(), ref)
				}
				if output == outputJSON {
					return writeJSON(a.Stdout, info)
				}
				writeInfo(a.Stdout, info)
				return nil
			},
		}
		f.register(c.Flags())
		c.Flags().BoolVar(&offline, "offline", false, "show only what the state records: look nothing up in AWS")
		addOutputFlag(c, &output)
		return c
	})
}

// writeInfo prints a cluster's description for people.
func writeInfo(w io.Writer, i lifecycle.Info) {
	t := newTable(w)
	fmt.Fprintf(t, "Name:\t%s\nType:\t%s\nRegion:\t%s\nStatus:\t%s\nNodes:\t%d\nCreated:\t%s\n", i.Name, i.Type, i.Region, i.Status, i.Nodes, i.Created.Format(time.RFC3339))
	if i.Endpoint != "" {
		fmt.Fprintf(t, "Endpoint:\t%s\n", i.Endpoint)
	}
	if i.Error != "" {
		fmt.Fprintf(t, "Last error:\t%s\n", i.Error)
	}
	if i.Spec.EtcdBackups != "" {
		fmt.Fprintf(t, "etcd backups:\tevery %s to %s, the last %d kept (kforge backup list %s)\n",
			i.Spec.BackupEvery, i.Spec.EtcdBackups, i.Spec.BackupKeep, i.Spec.Ref.Args())
	}
	keys := make([]string, 0, len(i.Versions))
	for k := range i.Versions {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(t, "Version (%s):\t%s\n", k, i.Versions[k])
	}
	t.Flush()
	if len(i.Resources) > 0 {
		fmt.Fprintln(w, "\nResources:")
		keys = keys[:0]
		for k := range i.Resources {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		t = newTable(w)
		for _, k := range keys {
			v := i.Resources[k]
			if l, ok := v.([]string); ok {
				v = strings.Join(l, ", ")
			}
			fmt.Fprintf(t, "  %s\t%v\n", k, v)
		}
		t.Flush()
	}
	if len(i.Instances) > 0 {
		fmt.Fprintln(w, "\nInstances:")
		t = newTable(w)
		fmt.Fprintln(t, "  ROLE\tNAME\tID\tZONE\tPRIVATE IP\tPUBLIC IP")
		for _, in := range i.Instances {
			fmt.Fprintf(t, "  %s\t%s\t%s\t%s\t%s\t%s\n", in.Role, orDash(in.Name), in.ID, orDash(in.Zone), orDash(in.PrivateIP), orDash(in.PublicIP))
		}
		t.Flush()
	}
	if c := i.Check; c != nil {
		fmt.Fprintln(w, "\nChecked against AWS:")
		switch {
		case c.Error != "":
			fmt.Fprintf(w, "  not checked: %s\n", c.Error)
		default:
			t = newTable(w)
			for _, r := range c.Resources {
				status := r.Status
				if r.Detail != "" {
					status += ": " + r.Detail
				}
				fmt.Fprintf(t, "  %s\t%s\n", r.Step, status)
			}
			t.Flush()
			if c.Reruns > 0 {
				fmt.Fprintf(w, "  and %d other step(s) would run again (scripts on the VMs, computed values)\n", c.Reruns)
			}
			if c.InSync {
				fmt.Fprintln(w, "  every resource was found as recorded")
			} else {
				fmt.Fprintf(w, "  drift found: see kforge diff %s; kforge create repairs it\n", i.Type)
			}
		}
	}
	if i.Cost != nil {
		fmt.Fprintln(w)
		i.Cost.Write(w)
	}
}

// checkResources looks up every resource of a cluster in AWS, as kforge
// diff does, and says per resource whether it was found as recorded. A
// check that cannot run (no credentials, say) is reported, not fatal:
// what the state records is shown anyway.
func (a *App) checkResources(ctx context.Context, ref spec.Ref) *lifecycle.ResourceCheck {
	var all []engine.Change
	err := a.operateQuiet(ctx, ref, func(ctx context.Context, r *lifecycle.Runner, p lifecycle.Provider) (err error) {
		all, _, err = r.Check(ctx, p, ref)
		return err
	})
	if err != nil {
		return &lifecycle.ResourceCheck{Error: err.Error()}
	}
	return lifecycle.CheckResources(all)
}

// describe is a provider's Info of a cluster, with its estimated cost.
func describe(p lifecycle.Provider, c *state.Cluster) lifecycle.Info {
	info := p.Info(c)
	est := cost.Of(c.Spec.Region, p.Cost(c.Spec), cost.Table)
	info.Cost = &est
	return info
}
