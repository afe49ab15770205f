// Package backup takes etcd snapshots of ha-aws clusters into S3 and
// restores a cluster's etcd from one, over SSH from the cluster's state
// (boot.Remote), with the recipes of package bootstrap and the S3 objects
// of package etcdbackup.
package backup

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/kforge/kforge/internal/bootstrap"
	"github.com/kforge/kforge/internal/etcdbackup"
	"github.com/kforge/kforge/internal/ha/boot"
	"github.com/kforge/kforge/internal/ha/infra"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
	"github.com/kforge/kforge/internal/state/s3store"
)

// Deps are what backups and restores use.
type Deps struct {
	S3 *s3.Client
	// Progress is told what is being done (nil: nothing).
	Progress func(format string, a ...any)
	// Now is the clock (time.Now if nil).
	Now func() time.Time
}

func (d Deps) say(format string, a ...any) {
	if d.Progress != nil {
		d.Progress(format, a...)
	}
}

func (d Deps) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

// checkCluster refuses a cluster that is not an ha-aws cluster at rest.
func checkCluster(c *state.Cluster, what string) error {
	if c.Spec.Type != spec.TypeHA {
		return spec.Usagef("%s is for ha-aws clusters; EKS keeps the etcd of %s", what, c.Ref())
	}
	if c.Status != state.StatusRunning || len(c.Pending) > 0 {
		return fmt.Errorf("%s is %s: finish its create or scale first (`kforge create %s`)", c.Ref(), c.Status, c.Ref().Args())
	}
	return nil
}

// etcdToken is the token of the cluster's etcd as created.
func etcdToken(s spec.Spec) string { return fmt.Sprintf("kforge-%s-%s", s.Name, s.Region) }

// Take snapshots the etcd of cluster c on the first member that can take
// one, checks the snapshot, and stores it at loc. s is c's spec with the
// command's SSH flags.
func Take(ctx context.Context, d Deps, c *state.Cluster, s spec.Spec, loc s3store.Location) (etcdbackup.Snapshot, error) {
	if err := checkCluster(c, "kforge backup"); err != nil {
		return etcdbackup.Snapshot{}, err
	}
	r, err := boot.NewRemote(c, s)
	if err != nil {
		return etcdbackup.Snapshot{}, err
	}
	defer r.Close()
	vms, err := r.VMs(infra.RoleEtcd)
	if err != nil {
		return etcdbackup.Snapshot{}, err
	}
	cluster := boot.EtcdCluster(vms, etcdToken(s))
	var errs []error
	for _, vm := range vms {
		snap, err := takeOn(ctx, d, r, cluster, vm, c.Spec.Name, loc)
		if err == nil {
			return snap, nil
		}
		d.say("the snapshot on %s failed: %v", vm.Name, err)
		errs = append(errs, fmt.Errorf("%s: %w", vm.Name, err))
	}
	return etcdbackup.Snapshot{}, fmt.Errorf("no etcd member could take a snapshot (run `kforge diff %s` to see what is wrong): %v", c.Ref().Args(), errs)
}

func takeOn(ctx context.Context, d Deps, r *boot.Remote, cluster bootstrap.EtcdCluster, vm infra.VM, name string, loc s3store.Location) (etcdbackup.Snapshot, error) {
	p := bootstrap.EtcdSnapshotParams{Cluster: cluster, Member: boot.Node(vm)}
	sc, err := bootstrap.RenderEtcdSnapshot(p)
	if err != nil {
		return etcdbackup.Snapshot{}, err
	}
	d.say("taking a snapshot on %s", vm.Name)
	taken := d.now()
	out, err := r.Run(ctx, vm, sc)
	if err != nil {
		return etcdbackup.Snapshot{}, err
	}
	st, err := bootstrap.ParseEtcdSnapshot(out)
	if err != nil {
		return etcdbackup.Snapshot{}, err
	}
	d.say("snapshot at revision %d: %d keys, %.1f MB; copying it from %s", st.Revision, st.TotalKey, float64(st.Size)/(1<<20), vm.Name)
	read, err := bootstrap.RenderEtcdSnapshotRead(p.SnapshotPath())
	if err != nil {
		return etcdbackup.Snapshot{}, err
	}
	f, err := os.CreateTemp("", "kforge-etcd-snapshot-*.db") // 0600
	if err != nil {
		return etcdbackup.Snapshot{}, err
	}
	defer os.Remove(f.Name())
	err = r.Stream(ctx, vm, read, nil, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return etcdbackup.Snapshot{}, err
	}
	d.say("storing it under %s", loc)
	return etcdbackup.Put(ctx, d.S3, loc, name, taken, st.Revision, st.SHA256, f.Name())
}

// Restore restores the etcd of cluster c from snapshot snap: it stops
// every API server, restores every member as a member of a new etcd
// cluster (a token derived from the snapshot, so that a restore run again
// after a crash continues the same one), waits for etcd to be healthy and
// starts the API servers again. Everything written after the snapshot is
// lost.
func Restore(ctx context.Context, d Deps, c *state.Cluster, s spec.Spec, snap etcdbackup.Snapshot) error {
	if err := checkCluster(c, "kforge restore"); err != nil {
		return err
	}
	f, err := os.CreateTemp("", "kforge-etcd-restore-*.db")
	if err != nil {
		return err
	}
	f.Close()
	defer os.Remove(f.Name())
	d.say("downloading %s", snap.URL)
	if snap, err = etcdbackup.Get(ctx, d.S3, snap, f.Name()); err != nil {
		return err
	}
	r, err := boot.NewRemote(c, s)
	if err != nil {
		return err
	}
	defer r.Close()
	cps, err := r.VMs(infra.RoleCP)
	if err != nil {
		return err
	}
	etcds, err := r.VMs(infra.RoleEtcd)
	if err != nil {
		return err
	}
	api := bootstrap.APIServerParams{Kubeadm: s.Bootstrap == spec.BootstrapKubeadm}
	stop, err := bootstrap.RenderAPIServerStop(api)
	if err != nil {
		return err
	}
	if err := onEach(ctx, d, r, cps, stop, "stopping the API server on %s"); err != nil {
		return err
	}
	cluster := boot.EtcdCluster(etcds, fmt.Sprintf("kforge-%s-r%s", s.Name, snap.SHA256[:12]))
	for _, vm := range etcds {
		sc, err := bootstrap.RenderEtcdRestore(bootstrap.EtcdRestoreParams{Cluster: cluster, Member: boot.Node(vm), SHA256: snap.SHA256})
		if err != nil {
			return err
		}
		in, err := os.Open(f.Name())
		if err != nil {
			return err
		}
		d.say("restoring etcd member %s from revision %d", vm.Name, snap.Revision)
		var out bytes.Buffer
		err = r.Stream(ctx, vm, sc, in, &out)
		in.Close()
		if err != nil {
			return err
		}
	}
	health, err := bootstrap.RenderEtcdHealth(bootstrap.EtcdHealthParams{Cluster: cluster})
	if err != nil {
		return err
	}
	d.say("waiting for the restored etcd to be healthy")
	if _, err := r.Run(ctx, etcds[0], health); err != nil {
		return err
	}
	start, err := bootstrap.RenderAPIServerStart(api)
	if err != nil {
		return err
	}
	return onEach(ctx, d, r, cps, start, "starting the API server on %s")
}

// onEach runs script on each VM in turn, saying what for each.
func onEach(ctx context.Context, d Deps, r *boot.Remote, vms []infra.VM, script, what string) error {
	for _, vm := range vms {
		d.say(what, vm.Name)
		if _, err := r.Run(ctx, vm, script); err != nil {
			return err
		}
	}
	return nil
}
