package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/kforge/kforge/test/testutil/awscheck"
	"github.com/kforge/kforge/test/testutil/sshfleet"
)

// TestHABackupRestore: kforge backup takes the snapshot on an etcd member,
// copies it and stores it in S3 encrypted, with its checksum; backup list
// finds it; restore refuses without --yes, then stops every API server
// before any etcd member is restored, sends each member the snapshot,
// checks etcd's health and starts the API servers again. (The recipes
// themselves run against a real etcd in internal/bootstrap.)
func TestHABackupRestore(t *testing.T) {
	t.Parallel()
	const name, region = "saved", "ap-northeast-1"
	h := newHAEnv(t, region)
	h.MustRun(t, "create", "ha-aws", "--name", name, "--region", region, "--bootstrap", "kubeadm",
		"--control-planes", "2", "--workers", "1", "--etcd", "3", "--ssh-cidr", "10.0.0.0/8", "--ssh-jump", h.jump())
	ctx := context.Background()
	s3c := s3.NewFromConfig(h.cfg)
	if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("kforge-backups-test"),
		CreateBucketConfiguration: &s3types.CreateBucketConfiguration{LocationConstraint: s3types.BucketLocationConstraint(region)}}); err != nil {
		t.Fatal(err)
	}

	snapshot := bytes.Repeat([]byte("etcd snapshot bytes\n"), 5000)
	sum := sha256.Sum256(snapshot)
	hexSum := hex.EncodeToString(sum[:])
	h.fleet.Handle("etcd-snapshot", sshfleet.Reply(fmt.Sprintf("status {\"hash\":1234,\"revision\":4821,\"totalKey\":97,\"totalSize\":%d}\nsha256 %s\nsize %d\n", len(snapshot), hexSum, len(snapshot))))
	h.fleet.Handle("etcd-snapshot-read", sshfleet.Reply(string(snapshot)))

	to := "s3://kforge-backups-test/etcd"
	r := h.MustRun(t, "backup", "ha-aws", "--name", name, "--region", region, "--to", to, "-o", "json")
	var snap struct {
		URL      string
		Revision int64
		SHA256   string
	}
	if err := json.Unmarshal([]byte(r.Stdout), &snap); err != nil || snap.Revision != 4821 || snap.SHA256 != hexSum ||
		!strings.HasPrefix(snap.URL, to+"/"+name+"/") || !strings.HasSuffix(snap.URL, "-rev4821.db") {
		t.Fatalf("backup -o json: %v %+v\n%s", err, snap, r.Stdout)
	}
	key := strings.TrimPrefix(snap.URL, "s3://kforge-backups-test/")
	obj, err := s3c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("kforge-backups-test"), Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	var stored bytes.Buffer
	_, _ = stored.ReadFrom(obj.Body)
	obj.Body.Close()
	if obj.ServerSideEncryption != "AES256" || obj.Metadata["sha256"] != hexSum || !bytes.Equal(stored.Bytes(), snapshot) {
		t.Errorf("stored object: SSE %q, metadata %v, %d bytes (want %d)", obj.ServerSideEncryption, obj.Metadata, stored.Len(), len(snapshot))
	}
	if n := len(h.fleet.CallsOf("etcd-snapshot")); n != 1 {
		t.Errorf("etcd-snapshot ran %d times, want once", n)
	}

	var list []struct{ URL string }
	if err := json.Unmarshal([]byte(h.MustRun(t, "backup", "list", "ha-aws", "--name", name, "--region", region, "--to", to, "-o", "json").Stdout), &list); err != nil ||
		len(list) != 1 || list[0].URL != snap.URL {
		t.Errorf("backup list: %v %+v, want %s", err, list, snap.URL)
	}

	mark := len(h.fleet.Calls())
	if r := h.Run(t, "restore", "ha-aws", "--name", name, "--region", region, "--from", snap.URL); r.Code != 2 || !strings.Contains(r.Stderr, "would be lost") {
		t.Errorf("restore without --yes: exit %d\n%s", r.Code, r.Stderr)
	}
	if n := len(h.fleet.Calls()); n != mark {
		t.Errorf("a refused restore ran %d scripts", n-mark)
	}
	h.MustRun(t, "restore", "ha-aws", "--name", name, "--region", region, "--from", snap.URL, "--yes")
	var order []string
	for _, c := range h.fleet.Calls()[mark:] {
		order = append(order, c.Recipe+"@"+strings.TrimPrefix(c.VM.Name, name+"-"))
		if c.Recipe == "etcd-restore" && !bytes.HasSuffix(c.Stdin, snapshot) {
			t.Errorf("etcd-restore on %s was not sent the snapshot", c.VM.Name)
		}
	}
	want := []string{"apiserver-stop@cp-0", "apiserver-stop@cp-1", "etcd-restore@etcd-0", "etcd-restore@etcd-1", "etcd-restore@etcd-2",
		"etcd-health@etcd-0", "apiserver-start@cp-0", "apiserver-start@cp-1"}
	if !slices.Equal(order, want) {
		t.Errorf("restore ran %v,\nwant %v", order, want)
	}
	h.MustRun(t, "delete", "ha-aws", "--name", name, "--region", region, "--yes")
	awscheck.Empty(t, h.cfg, "ha-aws", name)
}
