package s3store

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
	"github.com/kforge/kforge/test/testutil/moto"
)

func TestOpenRefusesBadBuckets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	base := bucketName(t)
	makeBucket(t, emu, base+"-eu", "eu-west-1", true)
	makeBucket(t, emu, base+"-open", region, false)
	makeBucket(t, emu, base+"-half", region, false)
	if _, err := rawClient(t).PutPublicAccessBlock(ctx, &s3.PutPublicAccessBlockInput{Bucket: aws.String(base + "-half"),
		PublicAccessBlockConfiguration: &s3types.PublicAccessBlockConfiguration{
			BlockPublicAcls: aws.Bool(true), IgnorePublicAcls: aws.Bool(true), BlockPublicPolicy: aws.Bool(false), RestrictPublicBuckets: aws.Bool(false)}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		bucket string
		want   []string
	}{
		{base + "-missing", []string{"bucket " + base + "-missing does not exist", "aws s3 mb s3://" + base + "-missing --region us-east-1", "put-public-access-block"}},
		{base + "-eu", []string{"bucket " + base + "-eu is in region eu-west-1, not us-east-1", "?region=eu-west-1"}},
		{base + "-open", []string{"refusing the state bucket " + base + "-open", "no public access block", "put-public-access-block --bucket " + base + "-open"}},
		{base + "-half", []string{"BlockPublicPolicy, RestrictPublicBuckets off"}},
	}
	for _, tt := range tests {
		_, err := Open(ctx, emu.Config(t, region), Location{Bucket: tt.bucket, Prefix: "p", SSE: "AES256"}, Options{})
		var ue *spec.UsageError
		if !errors.As(err, &ue) {
			t.Errorf("%s: %v, want a usage error", tt.bucket, err)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", tt.bucket, err, w)
			}
		}
	}
	// The bucket in eu-west-1 opens with a client in its region.
	if _, err := Open(ctx, emu.Config(t, "eu-west-1"), Location{Bucket: base + "-eu", SSE: "AES256"}, Options{}); err != nil {
		t.Errorf("open in the bucket's region: %v", err)
	}
}

// userConfig creates an IAM user with an inline policy allowing actions
// (none if empty) and returns a configuration with its keys.
func userConfig(t *testing.T, srv *moto.Server, name string, actions ...string) aws.Config {
	t.Helper()
	ctx := context.Background()
	ic := iam.NewFromConfig(srv.Config(t, region))
	if _, err := ic.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String(name)}); err != nil {
		t.Fatal(err)
	}
	if len(actions) > 0 {
		doc := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["` + strings.Join(actions, `","`) + `"],"Resource":"*"}]}`
		if _, err := ic.PutUserPolicy(ctx, &iam.PutUserPolicyInput{UserName: aws.String(name), PolicyName: aws.String("state"), PolicyDocument: aws.String(doc)}); err != nil {
			t.Fatal(err)
		}
	}
	k, err := ic.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String(name)})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(region), config.WithBaseEndpoint(srv.URL),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(aws.ToString(k.AccessKey.AccessKeyId), aws.ToString(k.AccessKey.SecretAccessKey), "")))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestAccessDenied runs against its own emulator with IAM enforcement on:
// each missing permission is named.
func TestAccessDenied(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := moto.Start(t)
	const bucket = "kf-denied"
	makeBucket(t, srv, bucket, region, true)
	nobody := userConfig(t, srv, "nobody")
	// The emulator checks HeadBucket against s3:HeadBucket and
	// GetPublicAccessBlock against s3:GetPublicAccessBlock; AWS checks
	// them against s3:ListBucket and s3:GetBucketPublicAccessBlock, which
	// kforge names. The policies grant both spellings.
	reader := userConfig(t, srv, "reader", "s3:ListBucket", "s3:HeadBucket", "s3:GetBucketPublicAccessBlock", "s3:GetPublicAccessBlock", "s3:GetObject")
	// The emulator checks GetPublicAccessBlock against s3:ListBucket
	// instead: a user with s3:HeadBucket alone passes HeadBucket only.
	noPAB := userConfig(t, srv, "header", "s3:HeadBucket")
	if err := srv.SetAuth(true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.SetAuth(false) })
	loc := Location{Bucket: bucket, Prefix: "p", SSE: "AES256"}

	var ae *AccessError
	for _, tt := range []struct {
		cfg    aws.Config
		action string
	}{{nobody, "s3:ListBucket"}, {noPAB, "s3:GetBucketPublicAccessBlock"}} {
		_, err := Open(ctx, tt.cfg, loc, Options{})
		if !errors.As(err, &ae) || ae.Action != tt.action || !strings.Contains(err.Error(), "needs "+tt.action+" on arn:aws:s3:::"+bucket) {
			t.Errorf("open: %v, want an access error naming %s", err, tt.action)
		}
	}
	s, err := Open(ctx, reader, loc, Options{})
	if err != nil {
		t.Fatalf("open with read permissions: %v", err)
	}
	// (ListObjectsV2 is not checked here: under IAM enforcement the
	// emulator miscomputes the signature of its query.)
	if _, err := s.Get(ctx, testCluster("denied").Ref()); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("get: %v", err)
	}
	c := testCluster("denied")
	if err := s.Put(ctx, c); !errors.As(err, &ae) || ae.Action != "s3:PutObject" || !strings.Contains(ae.Resource, "arn:aws:s3:::kf-denied/p/clusters/ha-aws/eu-west-1/denied/") {
		t.Errorf("put: %v, want an access error naming s3:PutObject", err)
	}
	if _, err := s.Lock(ctx, c.Ref(), state.CurrentHolder("t")); !errors.As(err, &ae) || ae.Action != "s3:PutObject" {
		t.Errorf("lock: %v, want an access error naming s3:PutObject", err)
	}
	if err := s.Put(ctx, c); err != nil && strings.Contains(err.Error(), "PRIVATE KEY") {
		t.Errorf("an error shows a secret: %v", err)
	}
}
