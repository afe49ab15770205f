package spec

import (
	"cmp"
	"regexp"
	"time"
)

// Scheduled etcd snapshots (--etcd-backups, --backup-every, --backup-keep).
const (
	DefaultBackupEvery = 6 * time.Hour
	DefaultBackupKeep  = 28
	MinBackupEvery     = 15 * time.Minute
	MaxBackupEvery     = 31 * 24 * time.Hour
	// MaxBackupKeep keeps a retention within one page of an S3 listing,
	// with room to spare.
	MaxBackupKeep = 900
)

// backupsRE is s3://bucket[/prefix][?parameters]: a bucket name, and a
// key prefix of letters, digits and . _ - / (what the etcd VMs' agent
// puts in a URL as it is). The parameters are checked where the URL is
// parsed (package etcdbackup).
var backupsRE = regexp.MustCompile(`^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9._/-]*)?(\?.*)?$`)

// WithBackupDefaults gives a schedule of etcd snapshots its default
// interval and retention where the flags left them out.
func (s Spec) WithBackupDefaults() Spec {
	if s.EtcdBackups != "" {
		s.BackupEvery = cmp.Or(s.BackupEvery, DefaultBackupEvery)
		s.BackupKeep = cmp.Or(s.BackupKeep, DefaultBackupKeep)
	}
	return s
}

// checkBackups checks the schedule of an ha-aws cluster's etcd snapshots.
func (s Spec) checkBackups() error {
	if s.EtcdBackups == "" {
		if s.BackupEvery != 0 || s.BackupKeep != 0 {
			return Usagef("--backup-every and --backup-keep need --etcd-backups s3://bucket/prefix: where the etcd VMs store their snapshots")
		}
		return nil
	}
	if !backupsRE.MatchString(s.EtcdBackups) {
		return Usagef("invalid --etcd-backups %q: give s3://bucket/prefix, the prefix of letters, digits and . _ - /", s.EtcdBackups)
	}
	if s.BackupEvery < MinBackupEvery || s.BackupEvery > MaxBackupEvery {
		return Usagef("invalid --backup-every %s: give a duration from %s to %s, such as %s", s.BackupEvery, MinBackupEvery, "744h", DefaultBackupEvery)
	}
	return count("--backup-keep", s.BackupKeep, 1, MaxBackupKeep)
}
