package etcdbackup

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/kforge/kforge/internal/iampolicy"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state/s3store"
)

// ScheduleLocation parses --etcd-backups: where the etcd VMs store their
// scheduled snapshots. They encrypt with SSE-S3 (AES256): their role has
// no KMS permission. Errors are *spec.UsageError.
func ScheduleLocation(raw string) (s3store.Location, error) {
	loc, err := ParseLocation(raw)
	if err != nil {
		return loc, err
	}
	if loc.SSE != "AES256" {
		return loc, spec.Usagef("invalid --etcd-backups %q: the etcd VMs store snapshots with SSE-S3 (AES256) only; leave out sse and kms-key", raw)
	}
	return loc, nil
}

// ClusterPrefix is where the snapshots of cluster go at loc:
// <prefix>/<cluster>/.
func ClusterPrefix(loc s3store.Location, cluster string) string {
	return path.Join(loc.Prefix, cluster) + "/"
}

// RolePolicy is the inline policy of the etcd VMs' role of a cluster with
// scheduled snapshots: to store, list and delete the cluster's snapshots
// at loc, and nothing else (no other key, no other bucket, no read).
func RolePolicy(partition string, loc s3store.Location, cluster string) iampolicy.Document {
	prefix := ClusterPrefix(loc, cluster)
	bucket := "arn:" + partition + ":s3:::" + loc.Bucket
	return iampolicy.Document{Version: "2012-10-17", Statement: []iampolicy.Statement{
		{Sid: "StoreAndPruneSnapshots", Effect: "Allow", Action: []string{"s3:PutObject", "s3:DeleteObject"}, Resource: []string{bucket + "/" + prefix + "*"}},
		{Sid: "ListSnapshots", Effect: "Allow", Action: []string{"s3:ListBucket"}, Resource: []string{bucket},
			Condition: map[string]map[string][]string{"StringLike": {"s3:prefix": {prefix + "*"}}}},
	}}
}

// CheckBucket checks, before a create, that the bucket of scheduled
// snapshots exists. A bucket the caller may not look at passes: the etcd
// VMs write with their own role. Errors for a missing bucket are
// *spec.UsageError.
func CheckBucket(ctx context.Context, c *s3.Client, loc s3store.Location) error {
	_, err := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(loc.Bucket)})
	var notFound *s3types.NotFound
	var re *smithyhttp.ResponseError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &notFound) || errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound:
		return spec.Usagef("the bucket %q of --etcd-backups does not exist: create it first (aws s3 mb s3://%s), then run the create again", loc.Bucket, loc.Bucket)
	case errors.As(err, &re) && (re.HTTPStatusCode() == http.StatusForbidden || re.HTTPStatusCode() == http.StatusMovedPermanently):
		return nil
	}
	return fmt.Errorf("look up the bucket %q of --etcd-backups: %w", loc.Bucket, err)
}
