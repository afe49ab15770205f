package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
	"github.com/kforge/kforge/internal/state/s3store"
)

func (a *App) stateCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "state",
		Short: "Manage the state store: move it, break a lock",
		Long: `Manage the state store.

The store in force is --state, else KFORGE_STATE, else the default that
'kforge state migrate' recorded in KFORGE_HOME/config.json, else the local
store under KFORGE_HOME. A store in S3 (s3://bucket/prefix) is shared by
everyone who uses it: writes are conditional, so a stale writer fails
instead of overwriting, and each cluster's lock is a lease that a killed
kforge loses after 60 seconds. The client uses the bucket's region as the
URL gives it (s3://bucket/prefix?region=eu-west-1), else AWS_REGION, else
us-east-1. Objects are encrypted at rest (SSE-S3; add ?sse=aws:kms and
optionally &kms-key=KEY for SSE-KMS), and a bucket that does not block
public access is refused.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return spec.Usagef("unknown command %q for %q: use migrate or unlock", args[0], cmd.CommandPath())
			}
			return spec.Usagef("%q needs a command: migrate or unlock\nRun '%s --help' for usage.", cmd.CommandPath(), cmd.CommandPath())
		},
	}
	c.AddCommand(a.stateMigrateCommand(), a.stateUnlockCommand())
	return c
}

func (a *App) stateMigrateCommand() *cobra.Command {
	var to string
	c := &cobra.Command{
		Use:   "migrate --to URL",
		Short: "Copy every cluster's state to another store and make it the default",
		Long: `Copy every cluster's state and secrets from the store in force to the store
at --to (s3://bucket/prefix, file:///path or a directory), read each back and
compare it byte for byte, and only then make --to the default store (in
KFORGE_HOME/config.json). Each cluster is locked in both stores while it is
copied, so nothing changes under the copy. The old store is left as it was.

Run it again after a failure: clusters already copied identically are
skipped; a destination that holds a cluster with other content is refused.`,
		Example: `  kforge state migrate --to s3://acme-kforge/prod
  kforge state migrate --to s3://acme-kforge/prod?region=eu-west-1
  kforge --state s3://acme-kforge/prod state migrate --to file://$HOME/.kforge/state`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.migrate(cmd.Context(), to)
		},
	}
	c.Flags().StringVar(&to, "to", "", "the store to copy to and use from now on (required)")
	return c
}

// encoded is a cluster's state and secrets as stores write them.
type encoded struct{ state, secrets []byte }

func encodeCluster(c *state.Cluster) (encoded, error) {
	st, err := json.Marshal(c)
	if err != nil {
		return encoded{}, err
	}
	sec := []byte("{}")
	if len(c.Secrets) > 0 {
		if sec, err = json.Marshal(c.Secrets); err != nil {
			return encoded{}, err
		}
	}
	return encoded{st, sec}, nil
}

func (e encoded) equal(o encoded) bool {
	return bytes.Equal(e.state, o.state) && bytes.Equal(e.secrets, o.secrets)
}

// migrate copies every cluster to the store at to, verifies the copies,
// and makes it the default.
func (a *App) migrate(ctx context.Context, to string) error {
	if to == "" {
		return spec.Usagef("--to is required: the store to migrate to, for example s3://bucket/prefix or file:///path")
	}
	if !strings.Contains(to, "://") {
		abs, err := filepath.Abs(to)
		if err != nil {
			return spec.Usagef("invalid --to %q: %v", to, err)
		}
		to = "file://" + abs
	}
	src, err := a.openStore(ctx)
	if err != nil {
		return err
	}
	dst, err := a.openStoreURL(ctx, to)
	if err != nil {
		return err
	}
	if src.Location() == dst.Location() {
		return spec.Usagef("%s is already the store in force: nothing to migrate", dst.Location())
	}
	list, err := src.List(ctx)
	if err != nil {
		return fmt.Errorf("list the clusters in %s: %w", src.Location(), err)
	}
	holder := state.CurrentHolder("kforge state migrate --to " + to)
	var locks []state.Lock
	defer func() {
		for _, lk := range locks {
			_ = lk.Unlock()
		}
	}()
	want := map[spec.Ref]encoded{}
	copied := 0
	for _, item := range list {
		ref := item.Ref()
		for _, s := range []state.Store{src, dst} {
			lk, err := s.Lock(ctx, ref, holder)
			if err != nil {
				return fmt.Errorf("migrate %s: %w; nothing was switched", ref, err)
			}
			locks = append(locks, lk)
		}
		c, err := src.Get(ctx, ref)
		if errors.Is(err, state.ErrNotFound) {
			continue // deleted since the listing
		}
		if err != nil {
			return fmt.Errorf("migrate %s: %w; nothing was switched", ref, err)
		}
		enc, err := encodeCluster(c)
		if err != nil {
			return err
		}
		want[ref] = enc
		old, err := dst.Get(ctx, ref)
		switch {
		case errors.Is(err, state.ErrNotFound):
			if err := dst.Put(ctx, c); err != nil {
				return fmt.Errorf("copy %s to %s: %w; nothing was switched", ref, dst.Location(), err)
			}
			copied++
		case err != nil:
			return fmt.Errorf("migrate %s: %w; nothing was switched", ref, err)
		default:
			have, err := encodeCluster(old)
			if err != nil {
				return err
			}
			if !have.equal(enc) {
				return fmt.Errorf("%s already holds %s with other content; nothing was switched: remove it there (or migrate to another place) and run again", dst.Location(), ref)
			}
		}
	}
	// Read every copy back through a store of its own, so nothing this
	// process remembers stands in for what the destination holds.
	check, err := a.openStoreURL(ctx, to)
	if err != nil {
		return err
	}
	for ref, enc := range want {
		c, err := check.Get(ctx, ref)
		if err != nil {
			return fmt.Errorf("verify the copy of %s in %s: %w; nothing was switched", ref, dst.Location(), err)
		}
		got, err := encodeCluster(c)
		if err != nil {
			return err
		}
		if !got.equal(enc) {
			return fmt.Errorf("verify the copy of %s in %s: it differs from the original; nothing was switched", ref, dst.Location())
		}
	}
	if err := a.writeConfig(kforgeConfig{State: to}); err != nil {
		return err
	}
	fprintf(a.Stderr, "Copied %d cluster(s) to %s (%d already there) and verified all %d byte for byte.\nkforge now uses %s by default. The old store %s is left as it was; remove it once you are satisfied.\n",
		copied, dst.Location(), len(want)-copied, len(want), to, src.Location())
	if a.stateFlag != "" || a.Getenv("KFORGE_STATE") != "" {
		fprintf(a.Stderr, "Note: --state and KFORGE_STATE still take precedence over the default.\n")
	}
	return nil
}

func (a *App) stateUnlockCommand() *cobra.Command {
	return typeCommands(&cobra.Command{
		Use:   "unlock <type>",
		Short: "Break a cluster's lock in a shared state store",
		Long: `Break a cluster's lock in a shared (S3) state store, for when the kforge
that held it is gone and you cannot wait for its lease to expire. It shows
who holds the lock and asks for confirmation on a terminal; --yes skips it;
with no terminal and no --yes it refuses (exit 2). If the holder still runs,
it finds out at its next lease renewal and stops without writing state.

A local store's lock ends with the process that holds it: there is nothing
to break.`,
	}, func(typ string) *cobra.Command {
		var f refFlags
		var yes bool
		c := &cobra.Command{
			Use:     typ + " --name NAME --region REGION",
			Short:   fmt.Sprintf("Break the lock of an %s cluster", typ),
			Example: fmt.Sprintf("  kforge state unlock %s --name demo --region us-east-1", typ),
			Args:    cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				ref, err := f.ref(typ)
				if err != nil {
					return err
				}
				return a.unlock(cmd.Context(), ref, yes)
			},
		}
		f.register(c.Flags())
		c.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
		return c
	})
}

func (a *App) unlock(ctx context.Context, ref spec.Ref, yes bool) error {
	store, err := a.openStore(ctx)
	if err != nil {
		return err
	}
	s3s, ok := store.(*s3store.Store)
	if !ok {
		lk, err := store.Lock(ctx, ref, state.CurrentHolder("kforge state unlock"))
		var iu *state.InUseError
		if errors.As(err, &iu) {
			return fmt.Errorf("%s is locked by a running kforge (%s); a local lock ends with its process: stop that process (kill %d) instead", ref, iu.Holder, iu.Holder.PID)
		}
		if err != nil {
			return err
		}
		_ = lk.Unlock()
		fprintf(a.Stderr, "%s is not locked.\n", ref)
		return nil
	}
	info, err := s3s.ReadLock(ctx, ref)
	if errors.Is(err, s3store.ErrNotLocked) {
		fprintf(a.Stderr, "%s is not locked.\n", ref)
		return nil
	}
	if err != nil {
		return err
	}
	h := state.Holder{PID: info.Holder.PID, Host: info.Holder.Host, User: info.Holder.Owner, Command: info.Holder.Command, Since: info.Holder.Since}
	lease := "its lease expired at " + info.Holder.Expires.UTC().Format(time.RFC3339)
	if time.Now().Before(info.Holder.Expires) {
		lease = "its lease runs until " + info.Holder.Expires.UTC().Format(time.RFC3339) + ", so it may still be working"
	}
	fprintf(a.Stderr, "%s is locked by %s; %s.\n", ref, h, lease)
	if !yes {
		if !isTerminal(a.Stdin) {
			return spec.Usagef("refusing to break the lock of %s without confirmation: no terminal to ask on; pass --yes", ref)
		}
		fprintf(a.Stderr, "Type the cluster name to break its lock: ")
		line, _ := bufio.NewReader(a.Stdin).ReadString('\n')
		if strings.TrimSpace(line) != ref.Name {
			return spec.Usagef("not confirmed; the lock was left alone")
		}
	}
	var ce *s3store.ConflictError
	if err := s3s.BreakLock(ctx, ref, info); errors.As(err, &ce) {
		return fmt.Errorf("the lock of %s changed since it was read (renewed, released or taken by another kforge); nothing was broken: run the command again to see who holds it", ref)
	} else if err != nil {
		return err
	}
	fprintf(a.Stderr, "Broke the lock of %s. If its holder still runs, it stops at its next lease renewal without writing state.\n", ref)
	return nil
}
