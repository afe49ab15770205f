package s3store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go/middleware"

	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
	"github.com/kforge/kforge/test/testutil/moto"
)

// emu is the emulator shared by this package's tests; each test uses its
// own bucket.
var emu *moto.Server

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		helperProcess()
		return
	}
	moto.RunTests(m, &emu)
}

const region = "us-east-1"

// bucketName returns a bucket name unique to the test.
func bucketName(t *testing.T) string {
	r := strings.NewReplacer("/", "-", "_", "-")
	n := strings.ToLower(r.Replace(t.Name()))
	if len(n) > 40 {
		n = n[:40]
	}
	var id [4]byte
	_, _ = rand.Read(id[:])
	return "kf-" + strings.Trim(n, "-") + "-" + hex.EncodeToString(id[:])
}

// makeBucket creates a bucket in region, blocking public access when
// block is set.
func makeBucket(t *testing.T, srv *moto.Server, bucket, region string, block bool) {
	t.Helper()
	ctx := context.Background()
	c := s3.NewFromConfig(srv.Config(t, region))
	in := &s3.CreateBucketInput{Bucket: aws.String(bucket)}
	if region != "us-east-1" {
		in.CreateBucketConfiguration = &s3types.CreateBucketConfiguration{LocationConstraint: s3types.BucketLocationConstraint(region)}
	}
	if _, err := c.CreateBucket(ctx, in); err != nil {
		t.Fatalf("create bucket %s: %v", bucket, err)
	}
	if block {
		if _, err := c.PutPublicAccessBlock(ctx, &s3.PutPublicAccessBlockInput{Bucket: aws.String(bucket),
			PublicAccessBlockConfiguration: &s3types.PublicAccessBlockConfiguration{
				BlockPublicAcls: aws.Bool(true), IgnorePublicAcls: aws.Bool(true), BlockPublicPolicy: aws.Bool(true), RestrictPublicBuckets: aws.Bool(true)}}); err != nil {
			t.Fatal(err)
		}
	}
}

// newStore makes a bucket for the test and opens a store on it.
func newStore(t *testing.T, o Options) (*Store, Location) {
	t.Helper()
	loc := Location{Bucket: bucketName(t), Prefix: "team/a", SSE: "AES256"}
	makeBucket(t, emu, loc.Bucket, region, true)
	return openStore(t, loc, o), loc
}

func openStore(t *testing.T, loc Location, o Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), emu.Config(t, region), loc, o)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return s
}

// rawClient is an S3 client for looking at the bucket behind the store.
func rawClient(t *testing.T) *s3.Client {
	return s3.NewFromConfig(emu.Config(t, region), func(o *s3.Options) { o.DisableLogOutputChecksumValidationSkipped = true })
}

// objects lists the keys under prefix.
func objects(t *testing.T, bucket, prefix string) []string {
	t.Helper()
	out, err := rawClient(t).ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	return keys
}

func testCluster(name string) *state.Cluster {
	c := state.New(spec.Spec{Ref: spec.Ref{Type: spec.TypeHA, Name: name, Region: "eu-west-1"}, Workers: 1}, time.Now())
	c.Secrets["ssh/private"] = []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-key\n")
	return c
}

func TestParseURL(t *testing.T) {
	tests := []struct {
		raw  string
		want Location
		bad  string
	}{
		{raw: "s3://b", want: Location{Bucket: "b", SSE: "AES256"}},
		{raw: "s3://b/team/prod/", want: Location{Bucket: "b", Prefix: "team/prod", SSE: "AES256"}},
		{raw: "s3://b/p?region=eu-west-1", want: Location{Bucket: "b", Prefix: "p", Region: "eu-west-1", SSE: "AES256"}},
		{raw: "s3://b/p?sse=aws:kms&kms-key=alias/kforge", want: Location{Bucket: "b", Prefix: "p", SSE: "aws:kms", KMSKeyID: "alias/kforge"}},
		{raw: "s3:///p", bad: "use s3://bucket/prefix"},
		{raw: "s3://b?color=red", bad: `unknown parameter "color"`},
		{raw: "s3://b?sse=des", bad: "use AES256 or aws:kms"},
		{raw: "s3://b?kms-key=k", bad: "kms-key needs sse=aws:kms"},
	}
	for _, tt := range tests {
		got, err := ParseURL(tt.raw)
		if tt.bad != "" {
			var ue *spec.UsageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.bad) {
				t.Errorf("ParseURL(%q) error %v, want a usage error with %q", tt.raw, err, tt.bad)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", tt.raw, got, err, tt.want)
		}
	}
	if l, _ := ParseURL("s3://b/team/prod?region=x"); l.String() != "s3://b/team/prod" {
		t.Errorf("String() = %s", l)
	}
}

// recordGets returns cfg with a middleware that records the key of every
// GetObject call.
func recordGets(cfg aws.Config, keys *[]string, mu *sync.Mutex) aws.Config {
	cfg.APIOptions = append(cfg.APIOptions, func(st *middleware.Stack) error {
		return st.Initialize.Add(middleware.InitializeMiddlewareFunc("recordGets", func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			if g, ok := in.Parameters.(*s3.GetObjectInput); ok {
				mu.Lock()
				*keys = append(*keys, aws.ToString(g.Key))
				mu.Unlock()
			}
			return next.HandleInitialize(ctx, in)
		}), middleware.After)
	})
	return cfg
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, loc := newStore(t, Options{})
	if got := s.Location(); got != "s3://"+loc.Bucket+"/team/a" {
		t.Errorf("Location() = %s", got)
	}
	a, b := testCluster("alpha"), testCluster("beta")
	b.Spec.Ref.Type = spec.TypeEKS
	for _, c := range []*state.Cluster{a, b} {
		if err := s.Put(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Get(ctx, a.Ref())
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Secrets["ssh/private"]) != string(a.Secrets["ssh/private"]) || got.Spec.Workers != 1 || got.Status != state.StatusCreating {
		t.Errorf("Get = %+v", got)
	}
	if _, err := s.Get(ctx, spec.Ref{Type: spec.TypeHA, Name: "nope", Region: "eu-west-1"}); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("Get of a missing cluster: %v", err)
	}

	// The state object holds no secret; both objects are encrypted at
	// rest.
	raw := rawClient(t)
	dir := "team/a/clusters/ha-aws/eu-west-1/alpha/"
	keys := objects(t, loc.Bucket, dir)
	if len(keys) != 2 || keys[0] != dir+"state.json" && keys[1] != dir+"state.json" {
		t.Fatalf("objects %v, want state.json and one secrets object", keys)
	}
	for _, key := range keys {
		h, err := raw.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(loc.Bucket), Key: aws.String(key)})
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		if h.ServerSideEncryption != s3types.ServerSideEncryptionAes256 {
			t.Errorf("%s: server-side encryption %q, want AES256", key, h.ServerSideEncryption)
		}
	}
	obj, err := raw.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(loc.Bucket), Key: aws.String("team/a/clusters/ha-aws/eu-west-1/alpha/state.json")})
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 1<<16)
	n, _ := obj.Body.Read(body)
	obj.Body.Close()
	if strings.Contains(string(body[:n]), "PRIVATE KEY") || strings.Contains(string(body[:n]), "bm90LWEta2V5") {
		t.Errorf("state.json holds a secret: %s", body[:n])
	}

	// List reads state objects only: no secret is downloaded.
	keys = nil
	var mu sync.Mutex
	ls, err := Open(ctx, recordGets(emu.Config(t, region), &keys, &mu), loc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	list, err := ls.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Spec.Name != "beta" || list[1].Spec.Name != "alpha" {
		t.Fatalf("List = %v", list)
	}
	for _, c := range list {
		if len(c.Secrets) != 0 {
			t.Errorf("List returned secrets of %s", c.Spec.Name)
		}
	}
	if len(keys) != 2 {
		t.Errorf("List read %v, want the two state objects", keys)
	}
	for _, k := range keys {
		if !strings.HasSuffix(k, "/state.json") {
			t.Errorf("List read %s", k)
		}
	}

	if err := s.Delete(ctx, a.Ref()); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, a.Ref()); err != nil {
		t.Errorf("second Delete: %v", err)
	}
	if left := objects(t, loc.Bucket, "team/a/clusters/ha-aws/"); len(left) != 0 {
		t.Errorf("objects left after Delete: %v", left)
	}
	if list, _ := s.List(ctx); len(list) != 1 || list[0].Spec.Name != "beta" {
		t.Errorf("List after Delete = %v", list)
	}
}

func TestKMSEncryption(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	loc := Location{Bucket: bucketName(t), SSE: "aws:kms", KMSKeyID: "alias/kforge-state"}
	makeBucket(t, emu, loc.Bucket, region, true)
	s := openStore(t, loc, Options{})
	c := testCluster("kms")
	if err := s.Put(ctx, c); err != nil {
		t.Fatal(err)
	}
	keys := objects(t, loc.Bucket, "clusters/ha-aws/eu-west-1/kms/")
	if len(keys) != 2 {
		t.Fatalf("objects %v", keys)
	}
	for _, k := range keys {
		h, err := rawClient(t).HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(loc.Bucket), Key: aws.String(k)})
		if err != nil {
			t.Fatal(err)
		}
		if h.ServerSideEncryption != s3types.ServerSideEncryptionAwsKms || aws.ToString(h.SSEKMSKeyId) == "" {
			t.Errorf("%s: encryption %q key %q, want aws:kms with a key", k, h.ServerSideEncryption, aws.ToString(h.SSEKMSKeyId))
		}
	}
}

func TestConflictingWriters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, loc := newStore(t, Options{})
	b := openStore(t, loc, Options{})
	c := testCluster("shared")

	// Both create: the second never read the object, so it must not
	// overwrite it.
	if err := a.Put(ctx, c); err != nil {
		t.Fatal(err)
	}
	var ce *ConflictError
	if err := b.Put(ctx, c.Clone()); !errors.As(err, &ce) || !strings.Contains(err.Error(), "changed under us") {
		t.Fatalf("a second creator got %v, want a ConflictError", err)
	}

	// Both read; a writes; b's view is stale.
	bc, err := b.Get(ctx, c.Ref())
	if err != nil {
		t.Fatal(err)
	}
	ac, err := a.Get(ctx, c.Ref())
	if err != nil {
		t.Fatal(err)
	}
	ac.Status = state.StatusRunning
	if err := a.Put(ctx, ac); err != nil {
		t.Fatal(err)
	}
	bc.Status = state.StatusFailed
	if err := b.Put(ctx, bc); !errors.As(err, &ce) {
		t.Fatalf("stale writer got %v, want a ConflictError", err)
	}
	// A stale write with new secrets fails too, and leaves no secrets
	// behind.
	bc.Secrets["token"] = []byte("x")
	if err := b.Put(ctx, bc); !errors.As(err, &ce) {
		t.Fatalf("stale secrets writer got %v", err)
	}
	if keys := objects(t, loc.Bucket, "team/a/clusters/ha-aws/eu-west-1/shared/"); len(keys) != 2 {
		t.Errorf("objects after a refused write: %v, want the state and one secrets object", keys)
	}
	if err := b.Delete(ctx, c.Ref()); !errors.As(err, &ce) {
		t.Fatalf("stale delete got %v, want a ConflictError", err)
	}
	got, err := a.Get(ctx, c.Ref())
	if err != nil || got.Status != state.StatusRunning || got.Secrets["token"] != nil {
		t.Fatalf("the stale writes changed the state: %+v, %v", got, err)
	}
	// After reading again, b may write.
	bc, _ = b.Get(ctx, c.Ref())
	bc.Status = state.StatusDeleting
	if err := b.Put(ctx, bc); err != nil {
		t.Fatalf("writer with a fresh view: %v", err)
	}
	// a's view is stale now, and it learns so.
	if err := a.Put(ctx, ac); !errors.As(err, &ce) {
		t.Fatalf("a stale after b's write got %v", err)
	}
}

// TestConcurrentWriters runs 50 writers (each its own store, as 50 kforge
// processes would be) on 50 clusters in one bucket: each locks its
// cluster, writes it several times, and unlocks; no update is lost.
func TestConcurrentWriters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, loc := newStore(t, Options{})
	const writers, updates = 50, 5
	stores := make([]*Store, writers)
	for i := range stores {
		stores[i] = openStore(t, loc, Options{})
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[i]
			c := testCluster(fmt.Sprintf("c%02d", i))
			lk, err := s.Lock(ctx, c.Ref(), state.CurrentHolder("test"))
			if err != nil {
				errs <- err
				return
			}
			defer lk.Unlock()
			for u := 1; u <= updates; u++ {
				c.Spec.Workers = u
				c.Secrets["n"] = []byte(fmt.Sprint(u))
				if err := s.Put(ctx, c); err != nil {
					errs <- fmt.Errorf("writer %d update %d: %w", i, u, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	list, err := openStore(t, loc, Options{}).List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != writers {
		t.Fatalf("%d clusters listed, want %d", len(list), writers)
	}
	for i, c := range list {
		if c.Spec.Name != fmt.Sprintf("c%02d", i) || c.Spec.Workers != updates {
			t.Errorf("cluster %s has %d workers, want %d", c.Spec.Name, c.Spec.Workers, updates)
		}
	}
	for i := range writers {
		got, err := stores[0].Get(ctx, spec.Ref{Type: spec.TypeHA, Name: fmt.Sprintf("c%02d", i), Region: "eu-west-1"})
		if err != nil || string(got.Secrets["n"]) != fmt.Sprint(updates) {
			t.Errorf("c%02d secrets %q, %v", i, got.Secrets["n"], err)
		}
	}
}
