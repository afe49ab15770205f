// Package s3store keeps kforge's cluster state in an S3 bucket, so that a
// team or a fleet of CI pipelines can share its clusters.
//
// Layout, under an optional key prefix:
//
//	<prefix>/clusters/<type>/<region>/<name>/state.json         the state (no secrets)
//	<prefix>/clusters/<type>/<region>/<name>/secrets-<id>.json  keys, tokens, kubeconfigs
//	<prefix>/clusters/<type>/<region>/<name>/lock.json          the cluster's lock
//
// state.json holds exactly what the local store's state.json holds; its
// object metadata (kforge-secrets) names the secrets object that goes
// with it. Secrets are written to a new object first and the state, which
// names it, second: the state write is the commit point of both, so a
// failed or refused write leaves the previous pair intact, and a reader
// never sees state with secrets of another version. Every object is
// written with server-side encryption (SSE-S3 by default, SSE-KMS on
// request), and Open refuses a bucket that does not block public access.
//
// No lost update: a Store remembers the ETag of each state object it read
// or wrote, and writes with If-Match on it (If-None-Match: * for one it
// found absent or never read), so a writer whose view is stale fails with a
// *ConflictError instead of overwriting what another kforge wrote.
//
// No two writers: a cluster's lock is an object created with
// If-None-Match: *, holding its owner, host, pid, command and the expiry of
// a lease that a goroutine renews (with If-Match on the lock's ETag) while
// the operation runs. A lock whose lease has expired (its holder was
// killed or lost its network) is taken over with If-Match on the stale
// ETag. A holder that finds its lock taken over or broken closes the
// lock's Lost channel and the store refuses its further writes to that
// cluster. Expiry compares the holder's recorded expiry with the local
// clock, so the machines sharing a bucket must keep their clocks in sync
// (NTP) to well under the lease.
package s3store

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
)

// Object names inside a cluster's folder.
const (
	stateObject = "state.json"
	lockObject  = "lock.json"
	// secretsMeta is the state object's metadata key that names its
	// secrets object.
	secretsMeta = "kforge-secrets"
)

// DefaultLease is how long a cluster's lock lives without renewal: a
// killed kforge's lock is taken over this long after its last renewal.
const DefaultLease = 60 * time.Second

// Location is a parsed s3:// state URL:
//
//	s3://BUCKET[/PREFIX][?region=REGION][&sse=aws:kms[&kms-key=KEY]]
type Location struct {
	Bucket string
	// Prefix is the key prefix, without leading or trailing slash.
	Prefix string
	// Region is the bucket's region as the URL gives it ("" if absent).
	Region string
	// SSE is the server-side encryption: "AES256" (default) or "aws:kms".
	SSE string
	// KMSKeyID is the KMS key for SSE aws:kms ("" for the account's
	// aws/s3 key).
	KMSKeyID string
}

// ParseURL parses an s3:// state URL. Errors are *spec.UsageError.
func ParseURL(raw string) (Location, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Location{}, spec.Usagef("invalid state URL %q: %v", raw, err)
	}
	if u.Scheme != "s3" || u.Host == "" {
		return Location{}, spec.Usagef("invalid state URL %q: use s3://bucket/prefix", raw)
	}
	loc := Location{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/"), SSE: string(s3types.ServerSideEncryptionAes256)}
	q := u.Query()
	for k := range q {
		switch k {
		case "region", "sse", "kms-key":
		default:
			return Location{}, spec.Usagef("invalid state URL %q: unknown parameter %q (known: region, sse, kms-key)", raw, k)
		}
	}
	loc.Region = q.Get("region")
	switch sse := q.Get("sse"); sse {
	case "", "AES256":
	case "aws:kms":
		loc.SSE = sse
	default:
		return Location{}, spec.Usagef("invalid state URL %q: sse=%s: use AES256 or aws:kms", raw, sse)
	}
	loc.KMSKeyID = q.Get("kms-key")
	if loc.KMSKeyID != "" && loc.SSE != "aws:kms" {
		return Location{}, spec.Usagef("invalid state URL %q: kms-key needs sse=aws:kms", raw)
	}
	return loc, nil
}

// String renders the location as a URL without its parameters.
func (l Location) String() string {
	if l.Prefix == "" {
		return "s3://" + l.Bucket
	}
	return "s3://" + l.Bucket + "/" + l.Prefix
}

// Options tune a Store.
type Options struct {
	// Lease is how long a lock lives without renewal (DefaultLease if 0).
	Lease time.Duration
	// Renew is how often a held lock's lease is renewed (Lease/3 if 0).
	Renew time.Duration
	// Log receives notices meant for the user (a lock taken over), or
	// nothing if nil.
	Log io.Writer
	// Now is the clock (time.Now if nil).
	Now func() time.Time
}

// Store is a state.Store in an S3 bucket. It is safe for concurrent use.
type Store struct {
	client *s3.Client
	loc    Location
	region string
	opts   Options

	mu   sync.Mutex
	refs map[spec.Ref]*refState
}

var _ state.Store = (*Store)(nil)

// refState is what the store knows of one cluster's objects.
type refState struct {
	// mu serialises the writes of one cluster.
	mu sync.Mutex
	// stateTag is the ETag of the state object last read or written; ""
	// means absent or never read, so the next write must create it.
	stateTag string
	// secrets names the secrets object the state points to ("" if none),
	// with its ETag and the digest of its content, so unchanged secrets
	// are not uploaded again.
	secrets, secretsTag string
	secretsSum          [sha256.Size]byte
	// lease is the lock this store holds on the cluster, if any.
	lease *Lease
}

// Open checks the bucket of loc and returns a store on it. cfg's region
// must be the bucket's: a bucket in another region, a missing bucket and a
// bucket that does not block public access are refused with a
// *spec.UsageError that says what to do; a missing permission is an
// *AccessError naming it. AWS_ENDPOINT_URL applies, as for every client;
// an endpoint given as an IP address is addressed path-style.
func Open(ctx context.Context, cfg aws.Config, loc Location, o Options) (*Store, error) {
	if o.Lease <= 0 {
		o.Lease = DefaultLease
	}
	if o.Renew <= 0 || o.Renew >= o.Lease {
		o.Renew = o.Lease / 3
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if loc.SSE == "" {
		loc.SSE = string(s3types.ServerSideEncryptionAes256)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		// Objects written without a checksum (by other tools, or S3
		// emulators) are no cause for a warning on every read.
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	s := &Store{client: client, loc: loc, region: cfg.Region, opts: o, refs: map[spec.Ref]*refState{}}
	if err := s.checkBucket(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Location implements state.Store.
func (s *Store) Location() string { return s.loc.String() }

// checkBucket makes sure the bucket exists in the client's region and
// blocks public access.
func (s *Store) checkBucket(ctx context.Context) error {
	b := s.loc.Bucket
	out, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(b)})
	if r := bucketRegion(out, err); r != "" && r != s.region {
		hint := ""
		if s.loc.Region == "" {
			hint = fmt.Sprintf(" (or set AWS_REGION=%s)", r)
		}
		return spec.Usagef("the state bucket %s is in region %s, not %s: use --state %s?region=%s%s", b, r, s.region, s.loc, r, hint)
	}
	switch {
	case err == nil:
	case awsx.HTTPStatus(err) == 404 || awsx.HasCode(err, "NotFound", "NoSuchBucket"):
		return spec.Usagef("the state bucket %s does not exist: create it with `aws s3 mb s3://%s --region %s`, then block public access with `aws s3api put-public-access-block --bucket %s --public-access-block-configuration %s`", b, b, s.region, b, blockAll)
	case awsx.IsAccessDenied(err) || awsx.HTTPStatus(err) == 403:
		return &AccessError{Action: "s3:ListBucket", Resource: "arn:aws:s3:::" + b, Err: err,
			Hint: "or the bucket belongs to another AWS account: choose another name"}
	default:
		return fmt.Errorf("check the state bucket %s: %w", b, err)
	}
	pab, err := s.client.GetPublicAccessBlock(ctx, &s3.GetPublicAccessBlockInput{Bucket: aws.String(b)})
	switch {
	case err == nil:
	case awsx.HasCode(err, "NoSuchPublicAccessBlockConfiguration"):
		return publicError(b, "it has no public access block")
	case awsx.IsAccessDenied(err):
		return &AccessError{Action: "s3:GetBucketPublicAccessBlock", Resource: "arn:aws:s3:::" + b, Err: err}
	default:
		return fmt.Errorf("check the public access block of the state bucket %s: %w", b, err)
	}
	c := pab.PublicAccessBlockConfiguration
	if c == nil {
		return publicError(b, "it has no public access block")
	}
	var open []string
	for _, f := range []struct {
		name string
		on   *bool
	}{{"BlockPublicAcls", c.BlockPublicAcls}, {"IgnorePublicAcls", c.IgnorePublicAcls}, {"BlockPublicPolicy", c.BlockPublicPolicy}, {"RestrictPublicBuckets", c.RestrictPublicBuckets}} {
		if !aws.ToBool(f.on) {
			open = append(open, f.name)
		}
	}
	if len(open) > 0 {
		return publicError(b, strings.Join(open, ", ")+" off")
	}
	return nil
}

const blockAll = "BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true"

func publicError(bucket, why string) error {
	return spec.Usagef("refusing the state bucket %s: it does not block public access (%s), and kforge's state holds secrets; run `aws s3api put-public-access-block --bucket %s --public-access-block-configuration %s`", bucket, why, bucket, blockAll)
}

// bucketRegion returns the region HeadBucket reported, from its output or
// from the header of a refusal (S3 answers 301 for another region).
func bucketRegion(out *s3.HeadBucketOutput, err error) string {
	if out != nil && aws.ToString(out.BucketRegion) != "" {
		return aws.ToString(out.BucketRegion)
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		return re.Response.Header.Get("X-Amz-Bucket-Region")
	}
	return ""
}

// AccessError says which S3 permission kforge lacks.
type AccessError struct {
	// Action is the IAM action, for example s3:PutObject.
	Action string
	// Resource is the ARN it is needed on.
	Resource string
	// Hint adds what else may be wrong.
	Hint string
	Err  error
}

// Error names the missing permission.
func (e *AccessError) Error() string {
	s := fmt.Sprintf("access denied to the state store: the AWS identity in use (see `kforge cred --show`) needs %s on %s", e.Action, e.Resource)
	if e.Hint != "" {
		s += "; " + e.Hint
	}
	return s
}

// Unwrap returns the AWS error.
func (e *AccessError) Unwrap() error { return e.Err }

// ConflictError is returned by a write that finds the object changed since
// this store last read or wrote it: another kforge wrote the cluster's
// state, and this one's view is stale.
type ConflictError struct {
	Ref spec.Ref
	// Object is the object's key.
	Object string
}

// Error says that the state changed under this writer.
func (e *ConflictError) Error() string {
	return fmt.Sprintf("the state of %s changed under us: another kforge wrote it (s3 object %s); nothing was overwritten; re-run the command", e.Ref, e.Object)
}

// LockLostError is returned by the writes of a store whose lock on the
// cluster was taken over (its lease expired) or broken.
type LockLostError struct {
	Ref spec.Ref
}

// Error says that the lock was lost and what to do.
func (e *LockLostError) Error() string {
	return fmt.Sprintf("lost the lock on %s: its lease expired or it was broken (`kforge state unlock`), so another kforge may work on it now; this run stopped writing its state. See `kforge info %s`, then run the command again", e.Ref, e.Ref.Args())
}

func (s *Store) dir(ref spec.Ref) string {
	return path.Join(s.loc.Prefix, "clusters", ref.Type, ref.Region, ref.Name)
}

func (s *Store) key(ref spec.Ref, object string) string { return path.Join(s.dir(ref), object) }

func (s *Store) ref(r spec.Ref) *refState {
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := s.refs[r]
	if rs == nil {
		rs = &refState{}
		s.refs[r] = rs
	}
	return rs
}

// errAbsent is getObject's answer for a missing object.
var errAbsent = errors.New("absent")

// object is an object as read.
type object struct {
	body []byte
	tag  string
	meta map[string]string
}

// getObject reads an object with its ETag and metadata.
func (s *Store) getObject(ctx context.Context, key string) (object, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.loc.Bucket), Key: aws.String(key)})
	if err != nil {
		if awsx.HasCode(err, "NoSuchKey") {
			return object{}, errAbsent
		}
		return object{}, s.objectError(err, "s3:GetObject", key, "read")
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return object{}, fmt.Errorf("read %s: %w", s.url(key), err)
	}
	return object{body: b, tag: aws.ToString(out.ETag), meta: out.Metadata}, nil
}

// putObject writes an object with server-side encryption: with If-Match on
// etag, or If-None-Match: * when etag is "". A refused condition (the
// object changed, appeared or vanished) is errPrecondition.
func (s *Store) putObject(ctx context.Context, key string, body []byte, etag string, meta map[string]string) (string, error) {
	in := &s3.PutObjectInput{
		Bucket:               aws.String(s.loc.Bucket),
		Key:                  aws.String(key),
		Body:                 bytes.NewReader(body),
		ContentType:          aws.String("application/json"),
		ServerSideEncryption: s3types.ServerSideEncryption(s.loc.SSE),
		Metadata:             meta,
	}
	if s.loc.KMSKeyID != "" {
		in.SSEKMSKeyId = aws.String(s.loc.KMSKeyID)
	}
	if etag == "" {
		in.IfNoneMatch = aws.String("*")
	} else {
		in.IfMatch = aws.String(etag)
	}
	out, err := s.client.PutObject(ctx, in)
	if err != nil {
		if isPrecondition(err) {
			return "", errPrecondition
		}
		return "", s.objectError(err, "s3:PutObject", key, "write")
	}
	return aws.ToString(out.ETag), nil
}

// deleteObject removes an object, with If-Match on etag when it is given.
// An absent object is no error.
func (s *Store) deleteObject(ctx context.Context, key, etag string) error {
	in := &s3.DeleteObjectInput{Bucket: aws.String(s.loc.Bucket), Key: aws.String(key)}
	if etag != "" {
		in.IfMatch = aws.String(etag)
	}
	_, err := s.client.DeleteObject(ctx, in)
	switch {
	case err == nil, awsx.HasCode(err, "NoSuchKey"), awsx.HTTPStatus(err) == 404:
		return nil
	case isPrecondition(err):
		return errPrecondition
	default:
		return s.objectError(err, "s3:DeleteObject", key, "delete")
	}
}

// errPrecondition is a conditional write that found the object changed.
var errPrecondition = errors.New("precondition failed")

// isPrecondition reports whether a conditional write was refused: 412, or
// 409 when another conditional write raced it, or 404 for If-Match on an
// object that is gone.
func isPrecondition(err error) bool {
	return awsx.HasCode(err, "PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey") ||
		awsx.HTTPStatus(err) == 412 || awsx.HTTPStatus(err) == 409
}

func (s *Store) objectError(err error, action, key, verb string) error {
	if awsx.IsAccessDenied(err) {
		return &AccessError{Action: action, Resource: "arn:aws:s3:::" + s.loc.Bucket + "/" + key, Err: err}
	}
	return fmt.Errorf("%s %s: %w", verb, s.url(key), err)
}

func (s *Store) url(key string) string { return "s3://" + s.loc.Bucket + "/" + key }

// Get implements state.Store: the state object, then the secrets object it
// names. If a writer replaced the pair between the two reads, it reads
// again.
func (s *Store) Get(ctx context.Context, ref spec.Ref) (*state.Cluster, error) {
	rs := s.ref(ref)
	rs.mu.Lock()
	defer rs.mu.Unlock()
	key := s.key(ref, stateObject)
	for range 3 {
		st, err := s.getObject(ctx, key)
		if errors.Is(err, errAbsent) {
			rs.stateTag = ""
			return nil, state.ErrNotFound
		}
		if err != nil {
			return nil, err
		}
		c, err := decodeCluster(st.body, s.url(key))
		if err != nil {
			return nil, err
		}
		var sec object
		name := st.meta[secretsMeta]
		if name != "" {
			skey := s.key(ref, name)
			sec, err = s.getObject(ctx, skey)
			if errors.Is(err, errAbsent) {
				continue // replaced since the state was read
			}
			if err != nil {
				return nil, err
			}
			if err := json.Unmarshal(sec.body, &c.Secrets); err != nil {
				return nil, &state.CorruptError{Where: s.url(skey), Err: err}
			}
		}
		if c.Secrets == nil {
			c.Secrets = map[string][]byte{}
		}
		rs.stateTag, rs.secrets, rs.secretsTag, rs.secretsSum = st.tag, name, sec.tag, sha256.Sum256(sec.body)
		return c, nil
	}
	return nil, &state.CorruptError{Where: s.url(key), Err: errors.New("it names a secrets object that does not exist")}
}

func decodeCluster(b []byte, where string) (*state.Cluster, error) {
	var c state.Cluster
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, &state.CorruptError{Where: where, Err: err}
	}
	if c.Schema > state.SchemaVersion {
		return nil, fmt.Errorf("the state at %s was written by a newer kforge (schema %d); upgrade kforge", where, c.Schema)
	}
	c.Upgrade()
	if c.Steps == nil {
		c.Steps = map[string]state.StepRecord{}
	}
	return &c, nil
}

// Put implements state.Store. Changed secrets go to a new object first;
// the state, written with If-Match on the ETag this store last saw (a
// stale view fails with *ConflictError), then names it, and only then is
// the previous secrets object removed. Unchanged secrets are not written
// again. As with the local store, empty secrets leave the stored ones.
func (s *Store) Put(ctx context.Context, c *state.Cluster) error {
	ref := c.Ref()
	rs := s.ref(ref)
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.lease != nil && rs.lease.isLost() {
		return &LockLostError{Ref: ref}
	}
	secrets, secretsTag := rs.secrets, rs.secretsTag
	var sum [sha256.Size]byte
	if len(c.Secrets) > 0 {
		b, err := json.Marshal(c.Secrets)
		if err != nil {
			return err
		}
		if sum = sha256.Sum256(b); sum != rs.secretsSum || secrets == "" {
			var id [8]byte
			if _, err := rand.Read(id[:]); err != nil {
				return err
			}
			secrets = "secrets-" + hex.EncodeToString(id[:]) + ".json"
			if secretsTag, err = s.putObject(ctx, s.key(ref, secrets), b, "", nil); err != nil {
				return fmt.Errorf("write secrets: %w", err)
			}
		}
	}
	fresh := secrets != rs.secrets
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	var meta map[string]string
	if secrets != "" {
		meta = map[string]string{secretsMeta: secrets}
	}
	key := s.key(ref, stateObject)
	tag, err := s.putObject(ctx, key, b, rs.stateTag, meta)
	if err != nil {
		if errors.Is(err, errPrecondition) {
			if fresh {
				// Nothing names the new secrets: remove them. (After
				// another failure the state may have been written, so
				// they stay; Delete removes strays with the cluster.)
				_ = s.deleteObject(context.WithoutCancel(ctx), s.key(ref, secrets), secretsTag)
			}
			return &ConflictError{Ref: ref, Object: key}
		}
		return fmt.Errorf("write state: %w", err)
	}
	if fresh && rs.secrets != "" {
		// The previous secrets are named by nothing now; a failure leaves
		// a stray object that Delete removes with the cluster.
		_ = s.deleteObject(ctx, s.key(ref, rs.secrets), rs.secretsTag)
	}
	rs.stateTag = tag
	if fresh {
		rs.secrets, rs.secretsTag, rs.secretsSum = secrets, secretsTag, sum
	}
	return nil
}

// Delete implements state.Store: the state object with If-Match on the
// ETag this store last saw (unconditionally if it never read it), then
// every other object of the cluster but its lock.
func (s *Store) Delete(ctx context.Context, ref spec.Ref) error {
	rs := s.ref(ref)
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.lease != nil && rs.lease.isLost() {
		return &LockLostError{Ref: ref}
	}
	key := s.key(ref, stateObject)
	err := s.deleteObject(ctx, key, rs.stateTag)
	if errors.Is(err, errPrecondition) {
		return &ConflictError{Ref: ref, Object: key}
	}
	if err != nil {
		return fmt.Errorf("delete state: %w", err)
	}
	rs.stateTag, rs.secrets, rs.secretsTag, rs.secretsSum = "", "", "", [sha256.Size]byte{}
	keys, err := s.listKeys(ctx, s.dir(ref)+"/")
	if err != nil {
		return fmt.Errorf("delete secrets: %w", err)
	}
	for _, k := range keys {
		if path.Base(k) == lockObject {
			continue
		}
		if err := s.deleteObject(ctx, k, ""); err != nil {
			return fmt.Errorf("delete secrets: %w", err)
		}
	}
	return nil
}

// listKeys returns the keys under prefix.
func (s *Store) listKeys(ctx context.Context, prefix string) ([]string, error) {
	keys, err := awsx.Collect(ctx, s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(s.loc.Bucket), Prefix: aws.String(prefix)}),
		func(o *s3.ListObjectsV2Output) []string {
			var keys []string
			for _, obj := range o.Contents {
				keys = append(keys, aws.ToString(obj.Key))
			}
			return keys
		})
	if err != nil {
		if awsx.IsAccessDenied(err) {
			return nil, &AccessError{Action: "s3:ListBucket", Resource: "arn:aws:s3:::" + s.loc.Bucket, Err: err}
		}
		return nil, fmt.Errorf("list %s: %w", s.url(prefix), err)
	}
	return keys, nil
}

// List implements state.Store. It reads only the state objects, never the
// secrets, concurrently, and returns them sorted by type, region and name.
func (s *Store) List(ctx context.Context) ([]*state.Cluster, error) {
	prefix := path.Join(s.loc.Prefix, "clusters") + "/"
	all, err := s.listKeys(ctx, prefix)
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, k := range all {
		// <type>/<region>/<name>/state.json below the prefix.
		if rest := strings.TrimPrefix(k, prefix); strings.Count(rest, "/") == 3 && path.Base(rest) == stateObject {
			keys = append(keys, k)
		}
	}
	out := make([]*state.Cluster, len(keys))
	errs := make([]error, len(keys))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, k := range keys {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			o, err := s.getObject(ctx, k)
			if err != nil {
				errs[i] = err
				return
			}
			out[i], errs[i] = decodeCluster(o.body, s.url(k))
		}()
	}
	wg.Wait()
	list := make([]*state.Cluster, 0, len(keys))
	for i, c := range out {
		switch {
		case errors.Is(errs[i], errAbsent):
			// Deleted while listing.
		case errs[i] != nil:
			return nil, errs[i]
		default:
			list = append(list, c)
		}
	}
	state.SortClusters(list)
	return list, nil
}
