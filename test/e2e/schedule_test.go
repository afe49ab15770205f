package e2e

import (
	"context"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/kforge/kforge/internal/bootstrap"
	"github.com/kforge/kforge/internal/etcdbackup"
	"github.com/kforge/kforge/internal/iampolicy"
	"github.com/kforge/kforge/test/testutil/awscheck"
	"github.com/kforge/kforge/test/testutil/kforgebin"
)

// TestHAScheduledBackups: create --etcd-backups gives the etcd VMs a role
// of their own (kforge-<name>-ha-etcd) whose only permissions are to
// store, list and delete the cluster's snapshots under the prefix, runs
// them with its instance profile, and installs the timer on every etcd VM
// with the interval and retention asked; info shows the schedule; backup
// and backup list default to its location; the setting is fixed at
// creation; delete removes the role and keeps the snapshots. (The agent
// itself runs against a real etcd and the emulator's S3 in
// internal/bootstrap; the units are checked by systemd-analyze there.)
func TestHAScheduledBackups(t *testing.T) {
	t.Parallel()
	const name, region, bucket = "sched", "ap-southeast-2", "kforge-sched-backups"
	h := newHAEnv(t, region)
	ctx := context.Background()
	s3c := s3.NewFromConfig(h.cfg)
	ref := []string{"--name", name, "--region", region}
	where := "s3://" + bucket + "/etcd"

	// The bucket must exist: refused before anything is made.
	r := h.Run(t, append([]string{"create", "ha-aws", "--etcd-backups", where, "--ssh-jump", h.jump()}, ref...)...)
	if r.Code != 2 || !strings.Contains(r.Stderr, `bucket "`+bucket+`" of --etcd-backups does not exist`) {
		t.Fatalf("create with a missing bucket: exit %d\n%s", r.Code, r.Stderr)
	}
	awscheck.Empty(t, h.cfg, "ha-aws", name)
	if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket),
		CreateBucketConfiguration: &s3types.CreateBucketConfiguration{LocationConstraint: s3types.BucketLocationConstraint(region)}}); err != nil {
		t.Fatal(err)
	}

	h.MustRun(t, append([]string{"create", "ha-aws", "--etcd-backups", where, "--backup-every", "2h", "--backup-keep", "5",
		"--control-planes", "1", "--workers", "1", "--etcd", "3", "--ssh-cidr", "10.0.0.0/8", "--ssh-jump", h.jump()}, ref...)...)

	// The role: exactly the documented policy, and the etcd VMs use it.
	im := iam.NewFromConfig(h.cfg)
	role := "kforge-" + name + "-ha-etcd"
	pol, err := im.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String(role), PolicyName: aws.String("kforge")})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := url.QueryUnescape(aws.ToString(pol.PolicyDocument))
	if err != nil {
		t.Fatal(err)
	}
	loc, err := etcdbackup.ScheduleLocation(where)
	if err != nil {
		t.Fatal(err)
	}
	var got, want iampolicy.Document
	if err := json.Unmarshal([]byte(doc), &got); err != nil {
		t.Fatal(err)
	}
	want = etcdbackup.RolePolicy("aws", loc, name)
	if gb, _ := json.Marshal(got); string(gb) != string(mustJSON(t, want)) {
		t.Errorf("the etcd role's policy is\n%s\nwant\n%s", gb, mustJSON(t, want))
	}
	byRole := instances(t, h.cfg, name)
	assoc, err := ec2.NewFromConfig(h.cfg).DescribeIamInstanceProfileAssociations(ctx, &ec2.DescribeIamInstanceProfileAssociationsInput{})
	if err != nil {
		t.Fatal(err)
	}
	profileOf := map[string]string{}
	for _, a := range assoc.IamInstanceProfileAssociations {
		profileOf[aws.ToString(a.InstanceId)] = aws.ToString(a.IamInstanceProfile.Arn)
	}
	for _, in := range byRole["etcd"] {
		if p := profileOf[aws.ToString(in.InstanceId)]; !strings.HasSuffix(p, ":instance-profile/"+role) {
			t.Errorf("etcd VM %s runs with profile %q, want %s", aws.ToString(in.InstanceId), p, role)
		}
	}
	for _, in := range byRole["lb"] {
		if p := profileOf[aws.ToString(in.InstanceId)]; p != "" {
			t.Errorf("the load balancer runs with profile %q, want none", p)
		}
	}

	// The timer on every etcd VM, after etcd is healthy.
	calls := h.fleet.CallsOf(bootstrap.RecipeEtcdBackupSchedule)
	var on []string
	for _, c := range calls {
		on = append(on, c.VM.Name)
		files := c.Files()
		timer := string(files["/etc/systemd/system/kforge-etcd-backup.timer"])
		agent := string(files[bootstrap.EtcdBackupAgentPath])
		if !strings.Contains(timer, "OnUnitActiveSec=7200s\n") || !strings.Contains(timer, "the last 5 kept") {
			t.Errorf("%s: timer\n%s", c.VM.Name, timer)
		}
		if !strings.Contains(agent, "# kforge-recipe: "+bootstrap.RecipeEtcdBackupAgent) || !strings.Contains(agent, "etcd/"+name+"/") ||
			!strings.Contains(agent, "https://"+bucket+".s3."+region+".amazonaws.com") || !strings.Contains(agent, "keep=5") {
			t.Errorf("%s: the agent does not store under etcd/%s/ in %s keeping 5", c.VM.Name, name, bucket)
		}
		if !strings.Contains(string(c.Stdin), "systemctl enable --now kforge-etcd-backup.timer") {
			t.Errorf("%s: the timer is not enabled", c.VM.Name)
		}
	}
	slices.Sort(on)
	if want := []string{name + "-etcd-0", name + "-etcd-1", name + "-etcd-2"}; !slices.Equal(on, want) {
		t.Errorf("the schedule was installed on %v, want %v", on, want)
	}
	health := h.fleet.CallsOf(bootstrap.RecipeEtcdHealth)
	if len(health) == 0 || len(calls) > 0 && calls[0].Time.Before(health[0].Time) {
		t.Errorf("the schedule was installed before etcd was healthy")
	}

	info := h.MustRun(t, append([]string{"info", "ha-aws", "--offline"}, ref...)...)
	if !strings.Contains(info.Stdout, "every 2h0m0s to "+where+", the last 5 kept") || !strings.Contains(info.Stdout, role) {
		t.Errorf("info does not show the schedule and the etcd role:\n%s", info.Stdout)
	}

	// backup list defaults to the schedule's location.
	key := "etcd/" + name + "/20261204T060000Z-rev42.db"
	if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: strings.NewReader("x")}); err != nil {
		t.Fatal(err)
	}
	list := h.MustRun(t, append([]string{"backup", "list", "ha-aws"}, ref...)...)
	if !strings.Contains(list.Stdout, "s3://"+bucket+"/"+key) {
		t.Errorf("backup list without --to:\n%s%s", list.Stdout, list.Stderr)
	}

	// Fixed at creation.
	r = h.Run(t, append([]string{"create", "ha-aws", "--etcd-backups", where, "--backup-every", "2h", "--backup-keep", "9",
		"--control-planes", "1", "--workers", "1", "--etcd", "3", "--ssh-cidr", "10.0.0.0/8"}, ref...)...)
	if r.Code != 2 || !strings.Contains(r.Stderr, "--backup-keep: 5 now, 9 asked") {
		t.Errorf("a create changing --backup-keep: exit %d\n%s", r.Code, r.Stderr)
	}

	h.MustRun(t, append([]string{"delete", "ha-aws", "--yes"}, ref...)...)
	awscheck.Empty(t, h.cfg, "ha-aws", name)
	if _, err := im.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(role)}); err == nil {
		t.Errorf("delete left the role %s", role)
	}
	if _, err := s3c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}); err != nil {
		t.Errorf("delete removed the snapshots: %v", err)
	}
}

// TestScheduledBackupsBadInput: the schedule's flags are checked before
// anything, with or without --dry-run.
func TestScheduledBackupsBadInput(t *testing.T) {
	t.Parallel()
	env := kforgebin.NewEnv(t)
	ref := []string{"create", "ha-aws", "--name", "bad", "--region", "eu-west-1", "--dry-run"}
	for args, want := range map[string]string{
		"--backup-every 1h": "need --etcd-backups",
		"--backup-keep 3":   "need --etcd-backups",
		"--etcd-backups s3://b-1/p --backup-every 1m":   "invalid --backup-every",
		"--etcd-backups s3://b-1/p --backup-keep 1000":  "invalid --backup-keep",
		"--etcd-backups s3://b-1/p?sse=aws:kms":         "SSE-S3 (AES256) only",
		"--etcd-backups s3://b-1/a%20b":                 "invalid --etcd-backups",
		"--etcd-backups https://b-1/p":                  "invalid --etcd-backups",
		"--etcd-backups s3://b-1/p --backup-keep -1":    "invalid --backup-keep",
		"--etcd-backups s3://b-1/p --backup-every 800h": "invalid --backup-every",
	} {
		r := env.Run(t, append(ref, strings.Fields(args)...)...)
		if r.Code != 2 || !strings.Contains(r.Stderr, want) {
			t.Errorf("%s: exit %d, want 2 saying %q\n%s", args, r.Code, want, r.Stderr)
		}
	}
	r := env.MustRun(t, append(ref, "--etcd-backups", "s3://b-1/p")...)
	if !strings.Contains(r.Stdout+r.Stderr, "etcd snapshots every 6h0m0s") {
		t.Errorf("the plan does not show the schedule with its default interval:\n%s%s", r.Stdout, r.Stderr)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
