package infra

import (
	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/cloudint"
	"github.com/kforge/kforge/internal/etcdbackup"
	"github.com/kforge/kforge/internal/spec"
)

// cpRolePolicy is the inline policy of the control planes' role: with the
// cloud integration, exactly what the AWS cloud controller manager and the
// EBS CSI driver's controller document (package cloudint); without it,
// none, as nothing on those VMs calls AWS then. The workers' role carries
// none either way: the EBS CSI node service calls no AWS API, and nothing
// else on a worker does. An empty policy means the role carries no inline
// policy; one a role still has (from an earlier release) is removed.
func cpRolePolicy(s spec.Spec) (string, error) {
	if !s.CloudIntegration() {
		return "", nil
	}
	return cloudint.ControlPlanePolicy(awsx.Partition(s.Region))
}

// etcdRolePolicy is the inline policy of the etcd VMs' role: to store,
// list and delete the cluster's snapshots at --etcd-backups, nothing else
// (package etcdbackup). The location was checked with the spec.
func etcdRolePolicy(s spec.Spec) string {
	loc, err := etcdbackup.ScheduleLocation(s.EtcdBackups)
	if err != nil {
		return ""
	}
	return string(etcdbackup.RolePolicy(awsx.Partition(s.Region), loc, s.Name).JSON())
}
