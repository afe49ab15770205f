package etcdbackup

import (
	"testing"

	"github.com/kforge/kforge/internal/iampolicy"
)

// TestRolePolicy evaluates the etcd VMs' policy: it allows storing,
// listing and deleting the cluster's snapshots, and nothing beside them.
func TestRolePolicy(t *testing.T) {
	loc, err := ScheduleLocation("s3://acme-backups/etcd/prod")
	if err != nil {
		t.Fatal(err)
	}
	doc := RolePolicy("aws", loc, "demo")
	e, err := iampolicy.NewEvaluator([]iampolicy.NamedPolicy{{Name: "etcd role", Document: string(doc.JSON())}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	obj := func(key string) string { return "arn:aws:s3:::acme-backups/" + key }
	list := func(prefix string) iampolicy.Request {
		return iampolicy.Request{Action: "s3:ListBucket", Resource: "arn:aws:s3:::acme-backups", Context: map[string][]string{"s3:prefix": {prefix}}}
	}
	for _, c := range []struct {
		r    iampolicy.Request
		want bool
	}{
		{iampolicy.Request{Action: "s3:PutObject", Resource: obj("etcd/prod/demo/20261204T000000Z-rev9.db")}, true},
		{iampolicy.Request{Action: "s3:DeleteObject", Resource: obj("etcd/prod/demo/20261204T000000Z-rev9.db")}, true},
		{list("etcd/prod/demo/"), true},
		// Another cluster's snapshots, the prefix above, another bucket.
		{iampolicy.Request{Action: "s3:PutObject", Resource: obj("etcd/prod/other/x.db")}, false},
		{iampolicy.Request{Action: "s3:DeleteObject", Resource: obj("etcd/prod/demo-2/x.db")}, false},
		{iampolicy.Request{Action: "s3:PutObject", Resource: obj("etcd/x.db")}, false},
		{iampolicy.Request{Action: "s3:PutObject", Resource: "arn:aws:s3:::other-bucket/etcd/prod/demo/x.db"}, false},
		{list("etcd/prod/"), false},
		{list(""), false},
		// No read of the snapshots, nothing else in S3.
		{iampolicy.Request{Action: "s3:GetObject", Resource: obj("etcd/prod/demo/20261204T000000Z-rev9.db")}, false},
		{iampolicy.Request{Action: "s3:DeleteBucket", Resource: "arn:aws:s3:::acme-backups"}, false},
	} {
		if got := e.Decide(c.r).Allowed; got != c.want {
			t.Errorf("%s: allowed %v, want %v", c.r, got, c.want)
		}
	}
	// The partition names the ARNs.
	cn := RolePolicy("aws-cn", loc, "demo")
	if r := cn.Statement[0].Resource[0]; r != "arn:aws-cn:s3:::acme-backups/etcd/prod/demo/*" {
		t.Errorf("aws-cn resource %s", r)
	}
}

// TestScheduleLocation refuses what the VMs cannot do.
func TestScheduleLocation(t *testing.T) {
	for _, raw := range []string{"s3://b/p?sse=aws:kms", "s3://b/p?kms-key=alias/x", "http://b/p", "s3://"} {
		if _, err := ScheduleLocation(raw); err == nil {
			t.Errorf("%s: accepted", raw)
		}
	}
	loc, err := ScheduleLocation("s3://acme-backups?region=us-west-2")
	if err != nil || loc.Region != "us-west-2" || ClusterPrefix(loc, "demo") != "demo/" {
		t.Errorf("region parameter: %+v %v", loc, err)
	}
}
