package bootstrap

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/kforge/kforge/internal/etcdbackup"
	"github.com/kforge/kforge/internal/pki"
	"github.com/kforge/kforge/test/testutil/moto"
)

// TestEtcdBackupRestoreReal proves the backup and restore recipes on a
// real etcd: a three-member cluster with kforge's PKI gets keys; the
// etcd-snapshot recipe snapshots it, and the snapshot is stored in the
// emulator's S3 (encrypted, with its checksum); more keys are written;
// the snapshot is downloaded and restored by the etcd-restore recipe into
// each member of a new three-member cluster (a new token), which starts
// with exactly the keys of the snapshot. A restore run again restores
// nothing twice.
func TestEtcdBackupRestoreReal(t *testing.T) {
	t.Parallel()
	etcd := lookTool(t, "etcd", "apt-get install -y etcd-server")
	etcdctl := lookTool(t, "etcdctl", "apt-get install -y etcd-client")
	ctx := context.Background()
	ca, err := pki.NewCA("kforge-test-etcd-ca")
	if err != nil {
		t.Fatal(err)
	}
	ips := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	newCluster := func(token string) EtcdCluster {
		c := EtcdCluster{Token: token, ClientPort: freePort(t, ips...)}
		for c.PeerPort = freePort(t, ips...); c.PeerPort == c.ClientPort; c.PeerPort = freePort(t, ips...) {
		}
		for i, ip := range ips {
			c.Members = append(c.Members, Node{Name: fmt.Sprintf("etcd-%d", i), PrivateIP: ip})
		}
		return c
	}
	old := newCluster("kforge-old")
	oldPKI, oldProcs := startEtcdCluster(t, etcd, ca, old, t.TempDir())
	ctl := func(c EtcdCluster, pkiDir string, args ...string) string {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(cctx, etcdctl, append([]string{"--endpoints=" + strings.Join(c.ClientURLs(), ","),
			"--cacert=" + filepath.Join(pkiDir, "ca.crt"), "--cert=" + filepath.Join(pkiDir, "client.crt"), "--key=" + filepath.Join(pkiDir, "client.key"),
			"--dial-timeout=3s", "--command-timeout=10s"}, args...)...)
		cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("etcdctl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if s, err := RenderEtcdHealth(EtcdHealthParams{Cluster: old, PKIDir: oldPKI[0], Etcdctl: etcdctl, Wait: time.Minute}); err != nil {
		t.Fatal(err)
	} else if _, stderr, err := runScript(t, s, 90*time.Second); err != nil {
		t.Fatalf("the old cluster is not healthy: %v\n%s", err, stderr)
	}
	for _, k := range []string{"/registry/a", "/registry/b", "/registry/c"} {
		ctl(old, oldPKI[0], "put", k, "before")
	}

	// Backup: the recipe on member 1, stored in S3.
	backupDir := t.TempDir()
	snap, err := RenderEtcdSnapshot(EtcdSnapshotParams{Cluster: old, Member: old.Members[1], PKIDir: oldPKI[1],
		EtcdBackupTools: EtcdBackupTools{Etcdctl: etcdctl, Etcdutl: "/nonexistent/etcdutl", Dir: backupDir}})
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := runScript(t, snap, time.Minute)
	if err != nil {
		t.Fatalf("etcd-snapshot: %v\n%s", err, stderr)
	}
	got, err := ParseEtcdSnapshot([]byte(stdout))
	if err != nil {
		t.Fatal(err)
	}
	if got.TotalKey < 3 {
		t.Errorf("the snapshot has %d keys, want at least 3", got.TotalKey)
	}
	if fi, err := os.Stat(filepath.Join(backupDir, "snapshot.db")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("snapshot file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	emu := moto.Start(t)
	cfg := emu.Config(t, "us-east-1")
	s3c := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })
	if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("backups")}); err != nil {
		t.Fatal(err)
	}
	loc, err := etcdbackup.ParseLocation("s3://backups/etcd")
	if err != nil {
		t.Fatal(err)
	}
	stored, err := etcdbackup.Put(ctx, s3c, loc, "prod", time.Now(), got.Revision, got.SHA256, filepath.Join(backupDir, "snapshot.db"))
	if err != nil {
		t.Fatal(err)
	}
	head, err := s3c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("backups"), Key: aws.String(strings.TrimPrefix(stored.URL, "s3://backups/"))})
	if err != nil || head.ServerSideEncryption != "AES256" || head.Metadata["sha256"] != got.SHA256 {
		t.Errorf("stored snapshot: %v, SSE %q, metadata %v", err, head.ServerSideEncryption, head.Metadata)
	}
	list, err := etcdbackup.List(ctx, s3c, loc, "prod")
	if err != nil || len(list) != 1 || list[0].URL != stored.URL || list[0].Revision != got.Revision {
		t.Fatalf("list: %v %+v, want %s", err, list, stored.URL)
	}

	// Written after the snapshot: not in the restored cluster.
	ctl(old, oldPKI[0], "put", "/registry/after", "lost")
	for _, p := range oldProcs {
		_ = p.Process.Kill()
	}

	// Restore into a new cluster from S3.
	file := filepath.Join(t.TempDir(), "restore.db")
	from, err := etcdbackup.ParseSnapshotURL(stored.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := etcdbackup.Get(ctx, s3c, from, file); err != nil {
		t.Fatal(err)
	}
	restored := newCluster("kforge-restore-1")
	root := t.TempDir()
	restore := func(m Node) string {
		t.Helper()
		s, err := RenderEtcdRestore(EtcdRestoreParams{Cluster: restored, Member: m, SHA256: got.SHA256, Unmanaged: true,
			DataDir:         filepath.Join(root, m.Name, "data"),
			EtcdBackupTools: EtcdBackupTools{Etcdctl: etcdctl, Etcdutl: "/nonexistent/etcdutl", Dir: filepath.Join(root, m.Name, "backup")}})
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd := exec.Command("bash", "-s")
		cmd.Stdin = io.MultiReader(strings.NewReader(s), f)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("etcd-restore on %s: %v\n%s", m.Name, err, errb.String())
		}
		return out.String() + errb.String()
	}
	for _, m := range restored.Members {
		restore(m)
	}
	if out := restore(restored.Members[0]); !strings.Contains(out, "already restored") {
		t.Errorf("a second restore did not see the first:\n%s", out)
	}
	newPKI, _ := startEtcdCluster(t, etcd, ca, restored, root)
	if s, err := RenderEtcdHealth(EtcdHealthParams{Cluster: restored, PKIDir: newPKI[0], Etcdctl: etcdctl, Wait: time.Minute}); err != nil {
		t.Fatal(err)
	} else if _, stderr, err := runScript(t, s, 90*time.Second); err != nil {
		t.Fatalf("the restored cluster is not healthy: %v\n%s", err, stderr)
	}
	keys := strings.Fields(ctl(restored, newPKI[2], "get", "/registry/", "--prefix", "--keys-only"))
	if want := []string{"/registry/a", "/registry/b", "/registry/c"}; !slices.Equal(keys, want) {
		t.Errorf("the restored cluster has keys %v, want exactly %v", keys, want)
	}
	if n := strings.Count(ctl(restored, newPKI[0], "member", "list"), ", started, "); n != 3 {
		t.Errorf("%d started members after the restore, want 3", n)
	}
}
