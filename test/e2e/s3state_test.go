package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
	"github.com/kforge/kforge/test/testutil/awscheck"
	"github.com/kforge/kforge/test/testutil/kforgebin"
)

// stateBucket creates a bucket in us-east-1 that blocks public access, as
// kforge requires of a state bucket, and returns a client for it.
func stateBucket(t *testing.T, name string) *s3.Client {
	t.Helper()
	ctx := context.Background()
	c := s3.NewFromConfig(emu.Config(t, "us-east-1"), func(o *s3.Options) { o.DisableLogOutputChecksumValidationSkipped = true })
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	if _, err := c.PutPublicAccessBlock(ctx, &s3.PutPublicAccessBlockInput{Bucket: aws.String(name),
		PublicAccessBlockConfiguration: &s3types.PublicAccessBlockConfiguration{
			BlockPublicAcls: aws.Bool(true), IgnorePublicAcls: aws.Bool(true), BlockPublicPolicy: aws.Bool(true), RestrictPublicBuckets: aws.Bool(true)}}); err != nil {
		t.Fatal(err)
	}
	return c
}

// bucketObjects returns the keys under prefix with their content.
func bucketObjects(t *testing.T, c *s3.Client, bucket, prefix string) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	out, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]byte{}
	for _, o := range out.Contents {
		g, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: o.Key})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(g.Body)
		g.Body.Close()
		m[aws.ToString(o.Key)] = b
	}
	return m
}

// checkEncrypted asserts that every object under prefix is encrypted at
// rest.
func checkEncrypted(t *testing.T, c *s3.Client, bucket string, keys map[string][]byte) {
	t.Helper()
	for k := range keys {
		h, err := c.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(k)})
		if err != nil {
			t.Fatal(err)
		}
		if h.ServerSideEncryption == "" {
			t.Errorf("%s is not encrypted at rest", k)
		}
	}
}

// noLocalState asserts that kforge kept nothing in the local store.
func noLocalState(t *testing.T, home string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(home, "state", "clusters")); err == nil {
		t.Error("cluster state was written to the local store")
	}
}

// TestS3StateEKS runs every command of an aws cluster's life with
// --state s3://...: nothing goes to the local store, each object is
// encrypted, and delete leaves nothing in the bucket.
func TestS3StateEKS(t *testing.T) {
	t.Parallel()
	const name, region, bucket = "s3eks", "us-east-1", "kforge-e2e-eks"
	ctx := context.Background()
	sc := stateBucket(t, bucket)
	cfg := emu.Config(t, region)
	env := kforgebin.NewEnv(t, emu.Env()...)
	st := []string{"--state", "s3://" + bucket + "/team"}
	run := func(args ...string) kforgebin.Result { return env.MustRun(t, append(st, args...)...) }

	out := run("create", "aws", "--name", name, "--region", region, "--nodes", "2")
	if !strings.Contains(out.Stderr, "state: s3://"+bucket+"/team") {
		t.Errorf("create does not name the store: %s", out.Stderr)
	}
	prefix := "team/clusters/aws/us-east-1/" + name + "/"
	objs := bucketObjects(t, sc, bucket, prefix)
	if _, ok := objs[prefix+"state.json"]; !ok || objs[prefix+"lock.json"] != nil {
		t.Fatalf("objects after create: %v (want state.json, and no lock left)", keysOf(objs))
	}
	checkEncrypted(t, sc, bucket, objs)
	noLocalState(t, env.Home)

	var list []map[string]any
	if err := json.Unmarshal([]byte(run("get", "-o", "json").Stdout), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0]["name"] != name || list[0]["status"] != "running" || list[0]["nodes"] != float64(2) {
		t.Errorf("get = %v", list)
	}
	if r := env.MustRun(t, "get", "-o", "json"); strings.TrimSpace(r.Stdout) != "[]" {
		t.Errorf("get without --state lists %s", r.Stdout)
	}
	var info struct {
		Status    string         `json:"status"`
		Resources map[string]any `json:"resources"`
	}
	if err := json.Unmarshal([]byte(run("info", "aws", "--name", name, "--region", region, "-o", "json").Stdout), &info); err != nil {
		t.Fatal(err)
	}
	if info.Status != "running" || info.Resources["vpc"] == nil {
		t.Errorf("info = %+v", info)
	}
	if got := strings.TrimSpace(run("switch", "aws", "--name", name, "--region", region).Stdout); got != "kforge-aws-s3eks-us-east-1" {
		t.Errorf("switch printed %q", got)
	}
	if conf, err := clientcmd.LoadFromFile(filepath.Join(env.Home, "kubeconfig")); err != nil || conf.CurrentContext != "kforge-aws-s3eks-us-east-1" {
		t.Errorf("kubeconfig not switched: %v", err)
	}

	run("scale", "aws", "--name", name, "--region", region, "--nodes", "3")
	kc := eks.NewFromConfig(cfg)
	inv := awscheck.Take(t, cfg, "aws", name)
	ng, err := kc.DescribeNodegroup(ctx, &eks.DescribeNodegroupInput{ClusterName: aws.String(name), NodegroupName: aws.String(inv["nodegroup"][0])})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToInt32(ng.Nodegroup.ScalingConfig.DesiredSize) != 3 {
		t.Errorf("after scale: %+v", ng.Nodegroup.ScalingConfig)
	}
	var c state.Cluster
	if err := json.Unmarshal(bucketObjects(t, sc, bucket, prefix)[prefix+"state.json"], &c); err != nil || c.Spec.Nodes != 3 {
		t.Errorf("state in S3 after scale: nodes %d, %v", c.Spec.Nodes, err)
	}

	run("delete", "aws", "--name", name, "--region", region, "--yes")
	awscheck.Empty(t, cfg, "aws", name)
	if left := bucketObjects(t, sc, bucket, "team/"); len(left) != 0 {
		t.Errorf("objects left after delete: %v", keysOf(left))
	}
	if r := run("get", "-o", "json"); strings.TrimSpace(r.Stdout) != "[]" {
		t.Errorf("get after delete: %s", r.Stdout)
	}
	noLocalState(t, env.Home)
}

func keysOf(m map[string][]byte) []string {
	var k []string
	for key := range m {
		k = append(k, key)
	}
	return k
}

// slowEndpoint returns the address of a proxy on 127.0.0.1 that forwards
// each request to target after delay.
func slowEndpoint(t *testing.T, target string, delay time.Duration) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestS3StateRaceAndUnlock races two kforge processes on one cluster in a
// shared store (exactly one proceeds), then breaks a lock left by a
// process on another machine.
func TestS3StateRaceAndUnlock(t *testing.T) {
	t.Parallel()
	const name, region, bucket = "s3race", "us-east-1", "kforge-e2e-race"
	ctx := context.Background()
	sc := stateBucket(t, bucket)
	cfg := emu.Config(t, region)
	// Through an endpoint that answers each call 10 ms late, a create
	// holds its lock for a second or more: the racers surely overlap.
	env := kforgebin.NewEnv(t, append(emu.Env(), "KFORGE_STATE=s3://"+bucket, "AWS_ENDPOINT_URL="+slowEndpoint(t, emu.URL, 10*time.Millisecond))...)

	var wg sync.WaitGroup
	results := make([]kforgebin.Result, 2)
	start := make(chan struct{})
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i] = env.Run(t, "create", "aws", "--name", name, "--region", region, "--nodes", "1")
		}()
	}
	close(start)
	wg.Wait()
	ok, inUse := 0, 0
	for _, r := range results {
		switch {
		case r.Code == 0:
			ok++
		case r.Code == 1 && strings.Contains(r.Stderr, "is in use by another kforge process"):
			inUse++
		default:
			t.Errorf("racer exited %d: %s", r.Code, r.Stderr)
		}
	}
	if ok != 1 || inUse != 1 {
		t.Fatalf("%d racers proceeded and %d were refused, want 1 and 1", ok, inUse)
	}

	// A lock left by a kforge on another machine, with a long lease.
	key := "clusters/aws/us-east-1/" + name + "/lock.json"
	holder := `{"id":"0123456789abcdef","owner":"ci","host":"ci-runner-7","pid":4242,"command":"kforge scale aws","since":"2026-01-01T00:00:00Z","expires":"` +
		time.Now().Add(time.Hour).UTC().Format(time.RFC3339) + `"}`
	if _, err := sc.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: strings.NewReader(holder)}); err != nil {
		t.Fatal(err)
	}
	r := env.Run(t, "delete", "aws", "--name", name, "--region", region, "--yes")
	if r.Code != 1 || !strings.Contains(r.Stderr, "pid 4242 on ci-runner-7") || !strings.Contains(r.Stderr, "kforge state unlock aws --name s3race --region us-east-1") {
		t.Fatalf("delete of a locked cluster: exit %d: %s", r.Code, r.Stderr)
	}
	r = env.Run(t, "state", "unlock", "aws", "--name", name, "--region", region)
	if r.Code != 2 || !strings.Contains(r.Stderr, "pass --yes") {
		t.Errorf("unlock without confirmation: exit %d: %s", r.Code, r.Stderr)
	}
	if objs := bucketObjects(t, sc, bucket, key); len(objs) != 1 {
		t.Fatal("unconfirmed unlock removed the lock")
	}
	r = env.MustRun(t, "state", "unlock", "aws", "--name", name, "--region", region, "--yes")
	if !strings.Contains(r.Stderr, "locked by pid 4242 on ci-runner-7") || !strings.Contains(r.Stderr, "Broke the lock") {
		t.Errorf("unlock said: %s", r.Stderr)
	}
	if objs := bucketObjects(t, sc, bucket, key); len(objs) != 0 {
		t.Fatal("the lock is still there")
	}
	if r := env.MustRun(t, "state", "unlock", "aws", "--name", name, "--region", region); !strings.Contains(r.Stderr, "is not locked") {
		t.Errorf("unlock of an unlocked cluster: %s", r.Stderr)
	}
	env.MustRun(t, "delete", "aws", "--name", name, "--region", region, "--yes")
	awscheck.Empty(t, cfg, "aws", name)
}

// TestS3StateHA runs an ha-aws cluster's life with KFORGE_STATE=s3://...:
// its secrets live in an encrypted object of their own, and its state
// object holds none.
func TestS3StateHA(t *testing.T) {
	t.Parallel()
	const name, region, bucket = "s3ha", "us-west-2", "kforge-e2e-ha"
	sc := stateBucket(t, bucket)
	h := newHAEnv(t, region)
	h.Extra = append(h.Extra, "KFORGE_STATE=s3://"+bucket+"/ha")

	h.MustRun(t, "create", "ha-aws", "--name", name, "--region", region, "--control-planes", "1", "--workers", "1", "--etcd", "1",
		"--ssh-cidr", "10.20.0.0/16", "--ssh-jump", h.jump())
	byRole := instances(t, h.cfg, name)
	for role, n := range map[string]int{"etcd": 1, "lb": 1, "cp": 1, "wp": 1} {
		if len(byRole[role]) != n {
			t.Errorf("%d %s instances, want %d", len(byRole[role]), role, n)
		}
	}
	noLocalState(t, h.Home)
	prefix := "ha/clusters/ha-aws/" + region + "/" + name + "/"
	objs := bucketObjects(t, sc, bucket, prefix)
	checkEncrypted(t, sc, bucket, objs)
	var secrets []string
	for k, v := range objs {
		if strings.HasPrefix(filepath.Base(k), "secrets-") {
			secrets = append(secrets, k)
			var m map[string][]byte
			if err := json.Unmarshal(v, &m); err != nil || !bytes.Contains(m["ssh-key"], []byte("PRIVATE KEY")) || len(m["admin-kubeconfig"]) == 0 {
				t.Errorf("secrets object %s lacks the SSH key or the kubeconfig: %v", k, err)
			}
		}
	}
	if len(secrets) != 1 {
		t.Errorf("secrets objects %v, want one", secrets)
	}
	if bytes.Contains(objs[prefix+"state.json"], []byte("PRIVATE KEY")) {
		t.Error("state.json holds the private key")
	}

	var list []map[string]any
	if err := json.Unmarshal([]byte(h.MustRun(t, "get", "-o", "json").Stdout), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0]["name"] != name || list[0]["status"] != "running" || list[0]["nodes"] != float64(1) {
		t.Errorf("get = %v", list)
	}
	var info struct {
		Instances []struct{ ID, Role string } `json:"instances"`
	}
	if err := json.Unmarshal([]byte(h.MustRun(t, "info", "ha-aws", "--name", name, "--region", region, "-o", "json").Stdout), &info); err != nil {
		t.Fatal(err)
	}
	if len(info.Instances) != 4 {
		t.Errorf("info lists %d instances", len(info.Instances))
	}
	if out := h.MustRun(t, "switch", "ha-aws", "--name", name, "--region", region); strings.TrimSpace(out.Stdout) != "kforge-ha-aws-s3ha-us-west-2" {
		t.Errorf("switch printed %q", out.Stdout)
	}
	h.MustRun(t, "scale", "ha-aws", "--name", name, "--region", region, "--workers", "2")
	if n := len(instances(t, h.cfg, name)["wp"]); n != 2 {
		t.Errorf("%d workers after scale", n)
	}
	h.MustRun(t, "delete", "ha-aws", "--name", name, "--region", region, "--yes")
	awscheck.Empty(t, h.cfg, "ha-aws", name)
	if left := bucketObjects(t, sc, bucket, "ha/"); len(left) != 0 {
		t.Errorf("objects left after delete: %v", keysOf(left))
	}
	noLocalState(t, h.Home)
}

// treeFiles returns the files under dir (relative path to content).
func treeFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		m[rel] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestS3StateMigrate moves a local store with a live aws cluster and an
// ha-aws cluster's secrets to S3 and back: the round trip is byte for
// byte, and each migrate switches the default store.
func TestS3StateMigrate(t *testing.T) {
	t.Parallel()
	const name, region, bucket = "s3mig", "us-east-1", "kforge-e2e-mig"
	ctx := context.Background()
	sc := stateBucket(t, bucket)
	cfg := emu.Config(t, region)
	env := kforgebin.NewEnv(t, emu.Env()...)
	env.MustRun(t, "create", "aws", "--name", name, "--region", region, "--nodes", "1")
	local, err := state.NewLocal(filepath.Join(env.Home, "state"))
	if err != nil {
		t.Fatal(err)
	}
	ha := state.New(spec.Spec{Ref: spec.Ref{Type: spec.TypeHA, Name: "s3mig-ha", Region: "eu-west-1"}, Workers: 2}, time.Now())
	ha.Secrets["ssh-key"] = []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n")
	ha.Secrets["etcd-ca"] = []byte(`{"cert":"c","key":"k"}`)
	ha.Steps["vpc"] = state.StepRecord{Out: json.RawMessage(`{"id":"vpc-1"}`), Done: time.Now().UTC()}
	if err := local.Put(ctx, ha); err != nil {
		t.Fatal(err)
	}
	orig := treeFiles(t, filepath.Join(env.Home, "state", "clusters"))
	if len(orig) != 3 {
		t.Fatalf("local store files %v", orig)
	}

	// A bucket that does not exist is refused before anything is copied.
	r := env.Run(t, "state", "migrate", "--to", "s3://kforge-e2e-none/x")
	if r.Code != 2 || !strings.Contains(r.Stderr, "bucket kforge-e2e-none does not exist") {
		t.Errorf("migrate to a missing bucket: exit %d: %s", r.Code, r.Stderr)
	}

	to := "s3://" + bucket + "/shared"
	r = env.MustRun(t, "state", "migrate", "--to", to)
	if !strings.Contains(r.Stderr, "verified all 2") {
		t.Errorf("migrate said: %s", r.Stderr)
	}
	conf := filepath.Join(env.Home, "config.json")
	if fi, err := os.Stat(conf); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config.json: %v", err)
	}
	if b, _ := os.ReadFile(conf); !strings.Contains(string(b), `"state": "`+to+`"`) {
		t.Errorf("config.json = %s", b)
	}
	// The default is S3 now: the local store is out of the way.
	if err := os.Rename(filepath.Join(env.Home, "state"), filepath.Join(env.Home, "state.old")); err != nil {
		t.Fatal(err)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(env.MustRun(t, "get", "-o", "json").Stdout), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("get after migrate = %v", list)
	}
	objs := bucketObjects(t, sc, bucket, "shared/clusters/")
	checkEncrypted(t, sc, bucket, objs)
	if !bytes.Equal(objs["shared/clusters/aws/us-east-1/s3mig/state.json"], orig[filepath.Join("aws", "us-east-1", "s3mig", "state.json")]) {
		t.Error("the state object differs from the local state file")
	}
	// Migrating to the store in force is refused.
	if r := env.Run(t, "state", "migrate", "--to", to); r.Code != 2 {
		t.Errorf("migrate to the store in force: exit %d", r.Code)
	}

	back := filepath.Join(env.Home, "back")
	env.MustRun(t, "state", "migrate", "--to", "file://"+back)
	got := treeFiles(t, filepath.Join(back, "clusters"))
	if len(got) != len(orig) {
		t.Errorf("round trip files %v, want %v", keysOf(got), keysOf(orig))
	}
	for k, v := range orig {
		if !bytes.Equal(got[k], v) {
			t.Errorf("%s differs after file -> s3 -> file:\n%s\n%s", k, v, got[k])
		}
		if fi, err := os.Stat(filepath.Join(back, "clusters", k)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v", k, err)
		}
	}
	// The file store is the default again: delete goes through it.
	env.MustRun(t, "delete", "aws", "--name", name, "--region", region, "--yes")
	awscheck.Empty(t, cfg, "aws", name)
	if _, err := os.Stat(filepath.Join(back, "clusters", "aws", "us-east-1", name, "state.json")); err == nil {
		t.Error("delete did not use the migrated-to store")
	}
}
