package infra

import (
	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/cloudint"
	"github.com/kforge/kforge/internal/etcdbackup"
	"github.com/kforge/kforge/internal/spec"
)

// rolePolicies are the inline policies of the control planes' and the
// workers' roles. With the cloud integration, the control planes' role
// gets exactly what the AWS cloud controller manager and the EBS CSI
// driver's controller document (package cloudint), and the workers' role
// none: the EBS CSI node service calls no AWS API, and nothing else on a
// worker does. Without the integration neither gets one: nothing on those
// VMs calls AWS then. An empty policy means the role carries no inline
// policy; one a role still has (from an earlier release) is removed.
func rolePolicies(s spec.Spec) (cp, wp string, err error) {
	if !s.CloudIntegration() {
		return "", "", nil
	}
	if cp, err = cloudint.ControlPlanePolicy(awsx.Partition(s.Region)); err != nil {
		return "", "", err
	}
	return cp, "", nil
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
