package infra

import (
	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/cloudint"
	"github.com/kforge/kforge/internal/etcdbackup"
	"github.com/kforge/kforge/internal/spec"
)

// rolePolicies are the inline policies of the control planes' and the
// workers' roles: exactly what the AWS cloud controller manager and the
// EBS CSI driver document (package cloudint) for a cluster with the cloud
// integration, and none without it: nothing on those VMs calls AWS then.
func rolePolicies(s spec.Spec) (cp, wp string, err error) {
	if !s.CloudIntegration() {
		return "", "", nil
	}
	part := awsx.Partition(s.Region)
	if cp, err = cloudint.ControlPlanePolicy(part); err != nil {
		return "", "", err
	}
	if wp, err = cloudint.NodePolicy(part); err != nil {
		return "", "", err
	}
	return cp, wp, nil
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
