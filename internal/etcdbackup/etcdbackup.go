// Package etcdbackup stores etcd snapshots of ha-aws clusters in S3 and
// finds them again: one object per snapshot, named by cluster, time and
// etcd revision (<prefix>/<cluster>/<time>-rev<revision>.db), encrypted at
// rest (SSE: AES256 by default, or aws:kms), with its SHA-256 and revision
// in the object's metadata so that a restore checks what it downloads.
// The locations are s3:// URLs in the syntax of the S3 state store.
package etcdbackup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state/s3store"
)

// Snapshot is one stored snapshot.
type Snapshot struct {
	// URL is s3://bucket/key.
	URL      string    `json:"url"`
	Cluster  string    `json:"cluster"`
	Taken    time.Time `json:"taken"`
	Revision int64     `json:"revision"`
	Size     int64     `json:"size"`
	SHA256   string    `json:"sha256,omitempty"`
}

// timeLayout names snapshots by time, sortable as text.
const timeLayout = "20060102T150405Z"

var keyRE = regexp.MustCompile(`(?:^|/)([a-z][a-z0-9-]*)/(\d{8}T\d{6}Z)-rev(\d+)\.db$`)

// NewClient returns the S3 client of a location: in its region when the
// URL names one (else cfg's).
func NewClient(cfg aws.Config, loc s3store.Location) *s3.Client {
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		if loc.Region != "" {
			o.Region = loc.Region
		}
		// The SHA-256 in each snapshot's metadata is what Get checks.
		o.DisableLogOutputChecksumValidationSkipped = true
	})
}

// ParseLocation parses where snapshots go: s3://bucket[/prefix] with the
// parameters of a state URL (region, sse, kms-key).
func ParseLocation(raw string) (s3store.Location, error) { return s3store.ParseURL(raw) }

// Key is the object key of a snapshot of cluster taken at t at revision.
func Key(loc s3store.Location, cluster string, t time.Time, revision int64) string {
	return path.Join(loc.Prefix, cluster, fmt.Sprintf("%s-rev%d.db", t.UTC().Format(timeLayout), revision))
}

// Put stores the snapshot file of cluster (its SHA-256 and revision as
// etcd reported them) at loc, after checking the file against the SHA-256.
func Put(ctx context.Context, c *s3.Client, loc s3store.Location, cluster string, taken time.Time, revision int64, sum, file string) (Snapshot, error) {
	f, err := os.Open(file)
	if err != nil {
		return Snapshot{}, err
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return Snapshot{}, err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return Snapshot{}, fmt.Errorf("the snapshot read from the etcd member has SHA-256 %s, but etcd-snapshot reported %s: not stored", got, sum)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Snapshot{}, err
	}
	key := Key(loc, cluster, taken, revision)
	in := &s3.PutObjectInput{
		Bucket: aws.String(loc.Bucket), Key: aws.String(key), Body: f, ContentLength: aws.Int64(size),
		ContentType:          aws.String("application/octet-stream"),
		ServerSideEncryption: s3types.ServerSideEncryption(loc.SSE),
		Metadata:             map[string]string{"sha256": sum, "revision": strconv.FormatInt(revision, 10), "kforge-cluster": cluster},
	}
	if loc.KMSKeyID != "" {
		in.SSEKMSKeyId = aws.String(loc.KMSKeyID)
	}
	if _, err := c.PutObject(ctx, in); err != nil {
		return Snapshot{}, fmt.Errorf("store the snapshot at s3://%s/%s: %w", loc.Bucket, key, err)
	}
	return Snapshot{URL: "s3://" + loc.Bucket + "/" + key, Cluster: cluster, Taken: taken.UTC().Truncate(time.Second),
		Revision: revision, Size: size, SHA256: sum}, nil
}

// List returns the snapshots of cluster at loc, oldest first.
func List(ctx context.Context, c *s3.Client, loc s3store.Location, cluster string) ([]Snapshot, error) {
	prefix := path.Join(loc.Prefix, cluster) + "/"
	var out []Snapshot
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(loc.Bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list the snapshots at s3://%s/%s: %w", loc.Bucket, prefix, err)
		}
		for _, o := range page.Contents {
			s, ok := parseKey(loc.Bucket, aws.ToString(o.Key))
			if !ok || s.Cluster != cluster {
				continue
			}
			s.Size = aws.ToInt64(o.Size)
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].URL < out[j].URL })
	return out, nil
}

func parseKey(bucket, key string) (Snapshot, bool) {
	m := keyRE.FindStringSubmatch(key)
	if m == nil {
		return Snapshot{}, false
	}
	t, err := time.Parse(timeLayout, m[2])
	if err != nil {
		return Snapshot{}, false
	}
	rev, err := strconv.ParseInt(m[3], 10, 64)
	if err != nil {
		return Snapshot{}, false
	}
	return Snapshot{URL: "s3://" + bucket + "/" + key, Cluster: m[1], Taken: t, Revision: rev}, true
}

// ParseSnapshotURL checks that raw names a snapshot object
// (s3://bucket/.../<cluster>/<time>-rev<revision>.db) and returns it.
// Errors are *spec.UsageError.
func ParseSnapshotURL(raw string) (Snapshot, error) {
	rest, ok := strings.CutPrefix(raw, "s3://")
	bucket, key, _ := strings.Cut(rest, "/")
	if !ok || bucket == "" || key == "" {
		return Snapshot{}, spec.Usagef("invalid --from %q: give the s3:// URL of a snapshot, as `kforge backup list` prints it", raw)
	}
	s, ok := parseKey(bucket, key)
	if !ok {
		return Snapshot{}, spec.Usagef("invalid --from %q: not a kforge snapshot (<cluster>/<time>-rev<revision>.db)", raw)
	}
	return s, nil
}

// Get downloads snapshot s into file (mode 0600), checks it against the
// SHA-256 its metadata records, and returns the snapshot with its
// checksum and size.
func Get(ctx context.Context, c *s3.Client, s Snapshot, file string) (Snapshot, error) {
	rest := strings.TrimPrefix(s.URL, "s3://")
	bucket, key, _ := strings.Cut(rest, "/")
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return s, fmt.Errorf("download %s: %w", s.URL, err)
	}
	defer out.Body.Close()
	want := out.Metadata["sha256"]
	if want == "" {
		return s, fmt.Errorf("%s has no sha256 in its metadata: kforge did not store it", s.URL)
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return s, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), out.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return s, fmt.Errorf("download %s: %w", s.URL, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return s, errors.New("the downloaded snapshot does not match the SHA-256 stored with it: " + s.URL)
	}
	s.SHA256, s.Size = want, n
	return s, nil
}
