package boot

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/bootstrap"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/etcdbackup"
	"github.com/kforge/kforge/internal/ha/infra"
)

// EtcdBackupsStepID installs the scheduled snapshots on etcd member i.
func EtcdBackupsStepID(i int) string { return fmt.Sprintf("etcd-backups/%d", i) }

// addBackupSchedule installs, on every etcd member once etcd is healthy,
// the systemd timer that snapshots etcd into --etcd-backups (package
// bootstrap, etcd-backup-schedule): every member runs it, the leader of
// the moment uploads with the etcd role's instance profile.
func (b *builder) addBackupSchedule() {
	s := b.s
	if s.EtcdBackups == "" {
		return
	}
	inputs := struct {
		Where string
		Every time.Duration
		Keep  int
	}{s.EtcdBackups, s.BackupEvery, s.BackupKeep}
	for i := 0; i < s.Etcd; i++ {
		needs := append(engine.Needs(engine.ID(StepEtcdHealth), engine.ID(EtcdStepID(i))), b.etcdVMs()...)
		b.script(EtcdBackupsStepID(i), fmt.Sprintf("etcd snapshots every %s from %s to %s, the last %d kept",
			s.BackupEvery, infra.VMName(s.Name, infra.RoleEtcd, i), s.EtcdBackups, s.BackupKeep),
			infra.RoleEtcd, i, needs, inputs, func(ctx context.Context, r *engine.Run) (string, error) {
				cl, err := b.etcdCluster(r)
				if err != nil {
					return "", err
				}
				loc, err := etcdbackup.ScheduleLocation(s.EtcdBackups)
				if err != nil {
					return "", err
				}
				region := cmp.Or(loc.Region, s.Region)
				return bootstrap.RenderEtcdBackupSchedule(bootstrap.EtcdBackupScheduleParams{
					Cluster: cl, Member: cl.Members[i], ClusterName: s.Name,
					Bucket: loc.Bucket, Prefix: loc.Prefix, Region: region, DNSSuffix: awsx.DNSSuffix(region),
					Every: s.BackupEvery, Keep: s.BackupKeep,
				})
			})
	}
}
