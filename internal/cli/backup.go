package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/spf13/cobra"

	"github.com/kforge/kforge/internal/etcdbackup"
	"github.com/kforge/kforge/internal/ha/backup"
	"github.com/kforge/kforge/internal/lifecycle"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
	"github.com/kforge/kforge/internal/state/s3store"
)

// backupFlags are the flags of backup, backup list and restore.
type backupFlags struct {
	refFlags
	output, jump, jumpKey string
}

func (f *backupFlags) register(c *cobra.Command) {
	f.refFlags.register(c.Flags())
	addOutputFlag(c, &f.output)
	jumpFlags(c.Flags(), &f.jump, &f.jumpKey, "SSH jump host user@host:port (default: what create was given)", "private key file for --ssh-jump")
}

func (a *App) backupCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "backup",
		Short: "Take etcd snapshots of ha-aws clusters into S3, and list them",
	}
	c.AddCommand(a.backupHACommand(), a.backupListCommand())
	return c
}

func (a *App) backupHACommand() *cobra.Command {
	var f backupFlags
	var to string
	c := &cobra.Command{
		Use:   "ha-aws --name NAME --region REGION [--to s3://BUCKET/PREFIX]",
		Short: "Take an etcd snapshot of an ha-aws cluster and store it in S3",
		Long: `Take a snapshot of the cluster's etcd on one healthy member (etcdctl snapshot
save with kforge's client certificate), check it (snapshot status), copy it
over SSH and store it in S3, encrypted (SSE: AES256, or ?sse=aws:kms), as
<prefix>/<cluster>/<time>-rev<revision>.db with its SHA-256 in the object's
metadata. The bucket must exist; ?region= names its region when it is not
the cluster's. --to takes the parameters of a state URL (region, sse,
kms-key). Without --to, the snapshot goes where the cluster's scheduled
snapshots go (create --etcd-backups), and counts toward their retention.`,
		Example: `  kforge backup ha-aws --name prod --region eu-west-1 --to s3://acme-backups/etcd
  kforge backup list ha-aws --name prod --region eu-west-1 --to s3://acme-backups/etcd`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.checkTo(to); err != nil {
				return err
			}
			if to == "" {
				// Before any AWS call: is there a schedule to default to?
				ref, err := f.ref(spec.TypeHA)
				if err != nil {
					return err
				}
				if c, err := a.loadCluster(cmd.Context(), ref); err != nil || c.Spec.EtcdBackups == "" {
					_, err := f.location("", "")
					return err
				}
			}
			var snap etcdbackup.Snapshot
			err := a.backupOp(cmd.Context(), f, "backup", func(ctx context.Context, d backupDeps, c *state.Cluster, s spec.Spec) (err error) {
				loc, err := f.location(to, s.EtcdBackups)
				if err != nil {
					return err
				}
				d.S3 = etcdbackup.NewClient(d.cfg, loc)
				snap, err = backup.Take(ctx, d.Deps, c, s, loc)
				return err
			})
			if err != nil {
				return err
			}
			if f.output == outputJSON {
				return writeJSON(a.Stdout, snap)
			}
			fprintf(a.Stderr, "Stored the snapshot of %s at revision %d (%.1f MB).\n", f.refString(), snap.Revision, float64(snap.Size)/(1<<20))
			fprintf(a.Stdout, "%s\n", snap.URL)
			return nil
		},
	}
	f.register(c)
	c.Flags().StringVar(&to, "to", "", "where to store the snapshot: s3://bucket/prefix (default: the cluster's --etcd-backups; required without)")
	return c
}

func (a *App) backupListCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "list",
		Short: "List the etcd snapshots of a cluster",
	}
	var f backupFlags
	var to string
	sub := &cobra.Command{
		Use:     "ha-aws --name NAME --region REGION [--to s3://BUCKET/PREFIX]",
		Short:   "List the etcd snapshots of an ha-aws cluster, oldest first",
		Example: `  kforge backup list ha-aws --name prod --region eu-west-1 --to s3://acme-backups/etcd -o json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.checkTo(to); err != nil {
				return err
			}
			ref, err := f.ref(spec.TypeHA)
			if err != nil {
				return err
			}
			scheduled := ""
			if to == "" {
				c, err := a.loadCluster(cmd.Context(), ref)
				if err != nil {
					return err
				}
				scheduled = c.Spec.EtcdBackups
			}
			loc, err := f.location(to, scheduled)
			if err != nil {
				return err
			}
			cfg, _, err := a.awsConfig(cmd.Context(), ref.Region)
			if err != nil {
				return err
			}
			list, err := etcdbackup.List(cmd.Context(), etcdbackup.NewClient(cfg, loc), loc, ref.Name)
			if err != nil {
				return err
			}
			if f.output == outputJSON {
				if list == nil {
					list = []etcdbackup.Snapshot{}
				}
				return writeJSON(a.Stdout, list)
			}
			if len(list) == 0 {
				fprintf(a.Stderr, "No snapshots of %s under %s.\n", ref, loc)
				return nil
			}
			for _, s := range list {
				fprintf(a.Stdout, "%s  revision %-10d %8.1f MB  %s\n", s.Taken.Format(time.RFC3339), s.Revision, float64(s.Size)/(1<<20), s.URL)
			}
			return nil
		},
	}
	f.register(sub)
	sub.Flags().StringVar(&to, "to", "", "where the snapshots are: s3://bucket/prefix, as given to kforge backup (default: the cluster's --etcd-backups)")
	c.AddCommand(sub)
	return c
}

func (a *App) restoreCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "restore",
		Short: "Restore a cluster's etcd from a snapshot",
	}
	var f backupFlags
	var from string
	var yes bool
	sub := &cobra.Command{
		Use:   "ha-aws --name NAME --region REGION --from s3://... --yes",
		Short: "Restore the etcd of an ha-aws cluster from a snapshot in S3",
		Long: `Restore the cluster's etcd from a snapshot that kforge backup stored.

Everything written to the cluster after the snapshot is lost: objects
created, changed or deleted since are back as they were. kforge stops every
API server, restores every etcd member from the snapshot as a member of a
new etcd cluster (the old data directories are kept beside the new ones),
waits for etcd to be healthy, then starts the API servers again. The
snapshot is checked against the SHA-256 stored with it.

It refuses to run without --yes. If it stops, run the same command again:
it continues the same restore.`,
		Example: `  kforge backup list ha-aws --name prod --region eu-west-1 --to s3://acme-backups/etcd
  kforge restore ha-aws --name prod --region eu-west-1 --from s3://acme-backups/etcd/prod/20261204T101500Z-rev48213.db --yes`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" {
				return spec.Usagef("--from is required: the s3:// URL of a snapshot, as `kforge backup list` prints it")
			}
			snap, err := etcdbackup.ParseSnapshotURL(from)
			if err != nil {
				return err
			}
			ref, err := f.ref(spec.TypeHA)
			if err != nil {
				return err
			}
			if snap.Cluster != ref.Name {
				return spec.Usagef("%s is a snapshot of cluster %q, not %q", from, snap.Cluster, ref.Name)
			}
			if !yes {
				return spec.Usagef("refusing to restore %s without --yes: everything written to it after %s (revision %d) would be lost", ref, snap.Taken.Format(time.RFC3339), snap.Revision)
			}
			loc, err := etcdbackup.ParseLocation(from)
			if err != nil {
				return err
			}
			err = a.backupOp(cmd.Context(), f, "restore", func(ctx context.Context, d backupDeps, c *state.Cluster, s spec.Spec) error {
				d.S3 = etcdbackup.NewClient(d.cfg, s3store.Location{Bucket: loc.Bucket, Region: loc.Region})
				return backup.Restore(ctx, d.Deps, c, s, snap)
			})
			if err != nil {
				return err
			}
			if f.output == outputJSON {
				return writeJSON(a.Stdout, snap)
			}
			fprintf(a.Stderr, "Restored %s from %s (revision %d).\n", ref, snap.URL, snap.Revision)
			return nil
		},
	}
	f.register(sub)
	sub.Flags().StringVar(&from, "from", "", "the snapshot: its s3:// URL, as `kforge backup list` prints it (required)")
	sub.Flags().BoolVar(&yes, "yes", false, "restore: everything written after the snapshot is lost")
	c.AddCommand(sub)
	return c
}

// checkTo checks the output flag and --to if given, before the state is
// read.
func (f *backupFlags) checkTo(to string) error {
	if err := checkOutput(f.output); err != nil {
		return err
	}
	if to == "" {
		return nil
	}
	_, err := etcdbackup.ParseLocation(to)
	return err
}

// location parses --to, which defaults to the cluster's scheduled
// snapshots' location (scheduled).
func (f *backupFlags) location(to, scheduled string) (s3store.Location, error) {
	switch {
	case to != "":
		return etcdbackup.ParseLocation(to)
	case scheduled != "":
		return etcdbackup.ParseLocation(scheduled)
	}
	return s3store.Location{}, spec.Usagef("--to is required: an s3://bucket/prefix (the cluster has no --etcd-backups to default to)")
}

func (f *backupFlags) refString() string {
	return fmt.Sprintf("ha-aws cluster %q in %s", f.name, f.region)
}

// backupDeps are backup.Deps with the AWS configuration the S3 client
// is made from.
type backupDeps struct {
	backup.Deps
	cfg aws.Config
}

// backupOp runs op with the cluster's lock held and its state read, its
// spec given the command's jump host flags, and progress on stderr.
func (a *App) backupOp(ctx context.Context, f backupFlags, verb string, op func(context.Context, backupDeps, *state.Cluster, spec.Spec) error) error {
	if err := checkOutput(f.output); err != nil {
		return err
	}
	ref, err := f.ref(spec.TypeHA)
	if err != nil {
		return err
	}
	cfg, _, err := a.awsConfig(ctx, ref.Region)
	if err != nil {
		return err
	}
	start := time.Now()
	d := backupDeps{cfg: cfg, Deps: backup.Deps{Progress: func(format string, args ...any) {
		fprintf(a.Stderr, "[%6s] %s\n", time.Since(start).Round(time.Second), fmt.Sprintf(format, args...))
	}}}
	return a.operateWith(ctx, ref, verb, &cfg, func(ctx context.Context, r *lifecycle.Runner, _ lifecycle.Provider) error {
		return r.Locked(ctx, ref, func(ctx context.Context, c *state.Cluster) error {
			s := c.Spec
			overrideJump(&s, f.jump, f.jumpKey)
			return op(ctx, d, c, s)
		})
	})
}
