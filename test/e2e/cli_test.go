package e2e

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"

	"github.com/kforge/kforge/test/testutil/kforgebin"
	"github.com/kforge/kforge/test/testutil/moto"
)

// deadAWS is an endpoint that counts connections and answers none: a
// command that must not call AWS is pointed at it.
func deadAWS(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return "http://" + l.Addr().String(), &n
}

func TestDryRunMakesNoAWSCallAndNeedsNoCredentials(t *testing.T) {
	t.Parallel()
	url, calls := deadAWS(t)
	env := kforgebin.NewEnv(t, "AWS_ENDPOINT_URL="+url, "AWS_EC2_METADATA_DISABLED=true")
	for _, args := range [][]string{
		{"create", "aws", "--name", "demo", "--region", "us-east-1", "--dry-run"},
		{"create", "ha-aws", "--name", "prod", "--region", "eu-west-1", "--bootstrap", "kubeadm", "--dry-run"},
		{"create", "ha-aws", "--name", "prod", "--region", "eu-west-1", "--dry-run", "-o", "json"},
	} {
		r := env.MustRun(t, args...)
		if !strings.Contains(r.Stdout, "vpc") {
			t.Errorf("%v: plan does not mention the VPC:\n%s", args, r.Stdout)
		}
	}
	r := env.MustRun(t, "create", "ha-aws", "--name", "prod", "--region", "eu-west-1", "--dry-run")
	for _, step := range []string{"vm/etcd/0", "vm/lb/0", "vm/cp/2", "vm/wp/1", "etcd-health", "haproxy", "k3s/cp/0", "nodes-ready",
		// The plan shows the spread over the zones.
		"etcd VM prod-etcd-1 (t3.small) in availability zone 2 of 3", "control planes VM prod-cp-2 (t3.medium) in availability zone 3 of 3"} {
		if !strings.Contains(r.Stdout, step) {
			t.Errorf("ha-aws plan lacks %s", step)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("--dry-run made %d connection(s) to AWS", n)
	}
	if _, err := os.Stat(filepath.Join(env.Home, "state", "clusters")); err == nil {
		t.Error("--dry-run wrote state")
	}
}

func TestBadInputExits2BeforeAnyAWSCall(t *testing.T) {
	t.Parallel()
	url, calls := deadAWS(t)
	env := kforgebin.NewEnv(t, "AWS_ENDPOINT_URL="+url, "AWS_ACCESS_KEY_ID=x", "AWS_SECRET_ACCESS_KEY=y")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"create", "aws", "--name", "Bad_Name", "--region", "us-east-1"}, "invalid cluster name"},
		{[]string{"create", "aws", "--name", "demo", "--region", "mars"}, "invalid region"},
		{[]string{"create", "aws", "--name", "demo", "--region", "us-east-1", "--nodes", "-1"}, "--nodes"},
		{[]string{"create", "ha-aws", "--name", "demo", "--region", "us-east-1", "--workers", "0"}, "--workers"},
		{[]string{"create", "ha-aws", "--name", "demo", "--region", "us-east-1", "--control-planes", "-1"}, "--control-planes"},
		{[]string{"create", "ha-aws", "--name", "demo", "--region", "us-east-1", "--etcd", "2"}, "odd"},
		{[]string{"create", "gke", "--name", "demo", "--region", "us-east-1"}, "unknown cluster type"},
		{[]string{"create", "aws", "--name", "demo", "--region", "us-east-1", "--colour", "red"}, "unknown flag"},
		{[]string{"create", "aws", "--name", "demo", "--region", "us-east-1", "--subnet-ids", "subnet-0123456789abcdef0,subnet-0123456789abcdef1"}, "--subnet-ids needs --vpc-id"},
		{[]string{"create", "aws", "--region", "us-east-1"}, "--name is required"},
		{[]string{"delete", "aws", "--name", "demo", "--region", "us-east-1"}, "--yes"},
		{[]string{"scale", "aws", "--name", "demo", "--region", "us-east-1", "--nodes", "-1"}, "--nodes"},
		{[]string{"scale", "ha-aws", "--name", "demo", "--region", "us-east-1", "--workers", "0"}, "--workers"},
		{[]string{"create", "ha-aws", "--name", "demo", "--region", "us-east-1", "--ssh-timeout", "1s"}, "--ssh-timeout"},
		{[]string{"info", "gcp", "--name", "demo", "--region", "us-east-1"}, "unknown cluster type"},
		{[]string{"get", "-o", "yaml"}, "--output"},
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"create", "ha-aws", "--name", "demo", "--region", "us-east-1", "--ssh-sessions", "0"}, "--ssh-sessions"},
		{[]string{"upgrade", "aws", "--name", "demo", "--region", "us-east-1", "--k8s-version", "1.34.2"}, "minor version"},
		{[]string{"upgrade", "ha-aws", "--name", "demo", "--region", "us-east-1", "--k8s-version", "1.34.2"}, "minor version"},
		{[]string{"upgrade", "ha-aws", "--name", "demo", "--region", "us-east-1"}, "--k8s-version is required"},
		{[]string{"create", "ha-aws", "--name", "demo", "--region", "us-east-1", "--backup-keep", "3"}, "need --etcd-backups"},
		{[]string{"backup", "ha-aws", "--name", "demo", "--region", "us-east-1"}, "--to is required"},
		{[]string{"backup", "ha-aws", "--name", "demo", "--region", "us-east-1", "--to", "gs://bucket"}, "s3://bucket/prefix"},
		{[]string{"restore", "ha-aws", "--name", "demo", "--region", "us-east-1", "--from", "s3://b/etcd/demo/20261204T101500Z-rev4.db"}, "--yes"},
		{[]string{"restore", "ha-aws", "--name", "demo", "--region", "us-east-1", "--from", "s3://b/etcd/other/20261204T101500Z-rev4.db", "--yes"}, "not \"demo\""},
	}
	for _, c := range cases {
		r := env.Run(t, c.args...)
		if r.Code != 2 || !strings.Contains(r.Stderr, c.want) {
			t.Errorf("kforge %s: exit %d, stderr %q; want exit 2 mentioning %q", strings.Join(c.args, " "), r.Code, r.Stderr, c.want)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("bad input made %d connection(s) to AWS", n)
	}
}

func TestCredentials(t *testing.T) {
	t.Parallel()
	// A private emulator: IAM enforcement rejects unknown keys.
	m := moto.Start(t)
	cfg := m.Config(t, "us-east-1")
	ic := iam.NewFromConfig(cfg)
	ctx := context.Background()
	if _, err := ic.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String("alice")}); err != nil {
		t.Fatal(err)
	}
	key, err := ic.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String("alice")})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SetAuth(true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.SetAuth(false) })
	env := kforgebin.NewEnv(t, "AWS_ENDPOINT_URL="+m.URL, "AWS_EC2_METADATA_DISABLED=true")
	credFile := filepath.Join(env.Home, "credentials.json")

	env.Stdin = "AKIANOTAREALKEY00000\nnot-a-real-secret\n"
	r := env.Run(t, "cred")
	if r.Code != 2 || !strings.Contains(r.Stderr, "rejected") {
		t.Errorf("bad keys: exit %d, %q", r.Code, r.Stderr)
	}
	if _, err := os.Stat(credFile); err == nil {
		t.Fatal("bad keys were stored")
	}

	secret := aws.ToString(key.AccessKey.SecretAccessKey)
	env.Stdin = aws.ToString(key.AccessKey.AccessKeyId) + "\n" + secret + "\n"
	env.MustRun(t, "cred")
	fi, err := os.Stat(credFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stored credentials: %v, mode %v", err, fi)
	}
	env.Stdin = ""
	r = env.MustRun(t, "cred", "--show")
	if !strings.Contains(r.Stdout, "kforge cred") || !strings.Contains(r.Stdout, "user/alice") || strings.Contains(r.Stdout+r.Stderr, secret) {
		t.Errorf("cred --show: %q", r.Stdout)
	}
	// The environment takes precedence over what is stored.
	envWithKeys := &kforgebin.Env{Home: env.Home, Extra: append(env.Extra, "AWS_ACCESS_KEY_ID="+aws.ToString(key.AccessKey.AccessKeyId), "AWS_SECRET_ACCESS_KEY="+secret)}
	if r := envWithKeys.MustRun(t, "cred", "--show"); !strings.Contains(r.Stdout, "environment") {
		t.Errorf("with keys in the environment, cred --show says %q", r.Stdout)
	}
	env.MustRun(t, "cred", "--delete")
	if _, err := os.Stat(credFile); err == nil {
		t.Error("cred --delete left the file")
	}
	if r := env.Run(t, "cred", "--show"); r.Code == 0 {
		t.Error("cred --show succeeded with no credentials anywhere")
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	r := kforgebin.NewEnv(t).MustRun(t, "version")
	if !strings.Contains(r.Stdout, "kforge") || !strings.Contains(r.Stdout, "go1.") {
		t.Errorf("version: %q", r.Stdout)
	}
}
