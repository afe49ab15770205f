package bootstrap

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/kforge/kforge/internal/etcdbackup"
	"github.com/kforge/kforge/internal/pki"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/test/testutil/moto"
)

// fakeIMDS serves IMDSv2 on 127.0.0.1: a token for a PUT, then the
// instance profile's role and credentials only to requests that carry
// it. It counts the credential reads and the requests it refused.
type fakeIMDS struct {
	*httptest.Server
	reads, refused atomic.Int32
}

func newFakeIMDS(t *testing.T, role, keyID, secret string) *fakeIMDS {
	t.Helper()
	const token = "imds-token-for-the-test"
	f := &fakeIMDS{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && r.URL.Path == "/latest/api/token" && r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") != "" {
			fmt.Fprint(w, token)
			return
		}
		if r.Method != http.MethodGet || r.Header.Get("X-aws-ec2-metadata-token") != token {
			f.refused.Add(1)
			http.Error(w, "IMDSv2 only", http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/latest/meta-data/iam/security-credentials/":
			fmt.Fprintln(w, role)
		case "/latest/meta-data/iam/security-credentials/" + role:
			f.reads.Add(1)
			doc, _ := json.MarshalIndent(map[string]string{"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": keyID,
				"SecretAccessKey": secret, "Token": "session-token-of-the-role", "Expiration": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}, "", "  ")
			w.Write(doc)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(f.Close)
	return f
}

// TestEtcdScheduledBackupReal proves the scheduled backup's agent on a
// real three-member etcd with kforge's PKI, against the emulator's S3 and
// an IMDSv2 double: run on every member, only the leader stores a
// snapshot (encrypted, with the checksum and revision a restore checks,
// under etcdbackup's name); after more rounds than the retention, exactly
// the newest snapshots are left, and objects that are not the cluster's
// snapshots are never touched.
func TestEtcdScheduledBackupReal(t *testing.T) {
	t.Parallel()
	etcd := lookTool(t, "etcd", "apt-get install -y etcd-server")
	etcdctl := lookTool(t, "etcdctl", "apt-get install -y etcd-client")
	lookTool(t, "curl", "apt-get install -y curl")
	ctx := context.Background()
	ca, err := pki.NewCA("kforge-test-etcd-ca")
	if err != nil {
		t.Fatal(err)
	}
	ips := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	cl := EtcdCluster{Token: "kforge-sched", ClientPort: freePort(t, ips...)}
	for cl.PeerPort = freePort(t, ips...); cl.PeerPort == cl.ClientPort; cl.PeerPort = freePort(t, ips...) {
	}
	for i, ip := range ips {
		cl.Members = append(cl.Members, Node{Name: fmt.Sprintf("etcd-%d", i), PrivateIP: ip})
	}
	root := t.TempDir()
	pkiDirs, _ := startEtcdCluster(t, etcd, ca, cl, root)
	if s, err := RenderEtcdHealth(EtcdHealthParams{Cluster: cl, PKIDir: pkiDirs[0], Etcdctl: etcdctl, Wait: time.Minute}); err != nil {
		t.Fatal(err)
	} else if _, stderr, err := runScript(t, s, 90*time.Second); err != nil {
		t.Fatalf("the cluster is not healthy: %v\n%s", err, stderr)
	}
	put := func(k string) {
		t.Helper()
		cmd := exec.Command(etcdctl, "--endpoints="+strings.Join(cl.ClientURLs(), ","), "--cacert="+filepath.Join(pkiDirs[0], "ca.crt"),
			"--cert="+filepath.Join(pkiDirs[0], "client.crt"), "--key="+filepath.Join(pkiDirs[0], "client.key"), "put", k, "v")
		cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("etcdctl put: %v\n%s", err, out)
		}
	}

	emu := moto.Start(t)
	s3c := s3.NewFromConfig(emu.Config(t, "eu-west-1"), func(o *s3.Options) { o.UsePathStyle = true })
	if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("backups"),
		CreateBucketConfiguration: &s3types.CreateBucketConfiguration{LocationConstraint: s3types.BucketLocationConstraintEuWest1}}); err != nil {
		t.Fatal(err)
	}
	// Not the cluster's snapshots: a note beside them, another cluster's.
	for _, k := range []string{"etcd/prod/demo/README.txt", "etcd/prod/other/20200101T000000Z-rev1.db"} {
		if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("backups"), Key: aws.String(k), Body: strings.NewReader("x")}); err != nil {
			t.Fatal(err)
		}
	}
	imds := newFakeIMDS(t, "kforge-demo-ha-etcd", moto.AccessKeyID, moto.SecretAccessKey)
	env := []string{"AWS_EC2_METADATA_SERVICE_ENDPOINT=" + imds.URL, "AWS_ENDPOINT_URL_S3=" + emu.URL, "AWS_ENDPOINT_URL="}

	const keep = 2
	agents := make([]string, len(cl.Members))
	for i, m := range cl.Members {
		agents[i], err = RenderEtcdBackupAgent(EtcdBackupScheduleParams{Cluster: cl, Member: m, PKIDir: pkiDirs[i],
			EtcdBackupTools: EtcdBackupTools{Etcdctl: etcdctl, Etcdutl: "/nonexistent/etcdutl", Dir: filepath.Join(root, m.Name, "backup")},
			ClusterName:     "demo", Bucket: "backups", Prefix: "etcd/prod", Region: "eu-west-1", Every: time.Hour, Keep: keep})
		if err != nil {
			t.Fatal(err)
		}
	}
	loc, err := etcdbackup.ParseLocation("s3://backups/etcd/prod")
	if err != nil {
		t.Fatal(err)
	}
	var stored []string
	for round := 1; round <= keep+2; round++ {
		put(fmt.Sprintf("/registry/round-%d", round))
		var uploads []string
		for i, a := range agents {
			stdout, stderr, err := runScript(t, a, time.Minute, env...)
			if err != nil {
				t.Fatalf("round %d, the agent on %s: %v\n%s", round, cl.Members[i].Name, err, stderr)
			}
			if u := strings.TrimSpace(stdout); u != "" {
				uploads = append(uploads, u)
			} else if !strings.Contains(stderr, "does not lead") {
				t.Errorf("round %d: %s neither stored a snapshot nor said it does not lead:\n%s", round, cl.Members[i].Name, stderr)
			}
		}
		if len(uploads) != 1 {
			t.Fatalf("round %d: %d members stored a snapshot (%v), want exactly the leader", round, len(uploads), uploads)
		}
		stored = append(stored, uploads[0])
		time.Sleep(1100 * time.Millisecond) // one name per second
	}

	list, err := etcdbackup.List(ctx, s3c, loc, "demo")
	if err != nil {
		t.Fatal(err)
	}
	var urls []string
	for _, s := range list {
		urls = append(urls, s.URL)
	}
	if want := stored[len(stored)-keep:]; !slices.Equal(urls, want) {
		t.Fatalf("after %d rounds with %d kept, the bucket holds %v, want %v", len(stored), keep, urls, want)
	}
	for _, s := range list {
		key := strings.TrimPrefix(s.URL, "s3://backups/")
		head, err := s3c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("backups"), Key: aws.String(key)})
		if err != nil {
			t.Fatal(err)
		}
		if head.ServerSideEncryption != "AES256" || head.Metadata["revision"] != fmt.Sprint(s.Revision) || head.Metadata["kforge-cluster"] != "demo" {
			t.Errorf("%s: SSE %q, metadata %v", key, head.ServerSideEncryption, head.Metadata)
		}
		// What a restore checks: the object's SHA-256 is its metadata's.
		file := filepath.Join(t.TempDir(), "got.db")
		snap, err := etcdbackup.ParseSnapshotURL(s.URL)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := etcdbackup.Get(ctx, s3c, snap, file); err != nil {
			t.Errorf("a restore could not fetch %s: %v", s.URL, err)
		}
	}
	for _, k := range []string{"etcd/prod/demo/README.txt", "etcd/prod/other/20200101T000000Z-rev1.db"} {
		if _, err := s3c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("backups"), Key: aws.String(k)}); err != nil {
			t.Errorf("the retention removed %s, which is no snapshot of the cluster: %v", k, err)
		}
	}
	if imds.reads.Load() != int32(len(stored)) || imds.refused.Load() != 0 {
		t.Errorf("credentials read %d times for %d uploads, %d requests without the IMDSv2 token", imds.reads.Load(), len(stored), imds.refused.Load())
	}
}

// TestEtcdBackupUnits checks the schedule's systemd units with
// systemd-analyze verify (any warning fails) and that the timer says the
// interval.
func TestEtcdBackupUnits(t *testing.T) {
	analyze := lookTool(t, "systemd-analyze", "apt-get install -y systemd")
	dir := t.TempDir()
	agent := writeTemp(t, dir, "agent", []byte("#!/bin/sh\n"), 0o755)
	service, timer := EtcdBackupUnits(EtcdBackupScheduleParams{ClusterName: "demo", Bucket: "backups", Prefix: "etcd", Region: "eu-west-1", Every: 6 * time.Hour, Keep: 28})
	if !strings.Contains(string(timer), "OnUnitActiveSec=21600s\n") || !strings.Contains(string(service), "ExecStart="+EtcdBackupAgentPath+"\n") {
		t.Fatalf("units:\n%s\n%s", service, timer)
	}
	// verify checks that ExecStart exists: point it at a stand-in.
	service = []byte(strings.Replace(string(service), "ExecStart="+EtcdBackupAgentPath, "ExecStart="+agent, 1))
	svc := writeTemp(t, dir, EtcdBackupUnit+".service", service, 0o644)
	tmr := writeTemp(t, dir, EtcdBackupUnit+".timer", timer, 0o644)
	out, err := exec.Command(analyze, "verify", tmr, svc).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) != 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestEtcdBackupScheduleRefuses checks the bounds of a schedule.
func TestEtcdBackupScheduleRefuses(t *testing.T) {
	c := newCluster(t)
	good := EtcdBackupScheduleParams{Cluster: c.etcd, Member: c.etcd.Members[0], ClusterName: "demo", Bucket: "backups", Region: "eu-west-1", Every: time.Hour, Keep: 3}
	if _, err := RenderEtcdBackupSchedule(good); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*EtcdBackupScheduleParams){
		"too often":      func(p *EtcdBackupScheduleParams) { p.Every = time.Minute },
		"keep none":      func(p *EtcdBackupScheduleParams) { p.Keep = 0 },
		"keep too many":  func(p *EtcdBackupScheduleParams) { p.Keep = spec.MaxBackupKeep + 1 },
		"bad bucket":     func(p *EtcdBackupScheduleParams) { p.Bucket = "Bad_Bucket" },
		"quote in key":   func(p *EtcdBackupScheduleParams) { p.Prefix = "a'b" },
		"space in key":   func(p *EtcdBackupScheduleParams) { p.Prefix = "a b" },
		"no region":      func(p *EtcdBackupScheduleParams) { p.Region = "" },
		"bad cluster":    func(p *EtcdBackupScheduleParams) { p.ClusterName = "Demo" },
		"relative tools": func(p *EtcdBackupScheduleParams) { p.Etcdctl = "etcdctl" },
	} {
		p := good
		mod(&p)
		if _, err := RenderEtcdBackupSchedule(p); err == nil {
			t.Errorf("%s: rendered", name)
		}
	}
}
