package ekstoken

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/kforge/kforge/internal/awsx"
)

func staticConfig(region, accessKey string) aws.Config {
	return aws.Config{
		Region:      region,
		Credentials: credentials.NewStaticCredentialsProvider(accessKey, "not-a-real-secret", ""),
	}
}

// decode returns the presigned URL inside a token.
func decode(t *testing.T, tok Token) *url.URL {
	t.Helper()
	rest, ok := strings.CutPrefix(tok.Value, Prefix)
	if !ok {
		t.Fatalf("token does not start with %q", Prefix)
	}
	if strings.ContainsAny(rest, "=+/") {
		t.Fatalf("token is not unpadded base64url: %q", rest)
	}
	raw, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		t.Fatalf("decode token: %v", err)
	}
	u, err := url.Parse(string(raw))
	if err != nil {
		t.Fatalf("parse presigned URL: %v", err)
	}
	return u
}

func TestGenerate(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		region, cluster, accessKey, host string
	}{
		{"us-east-1", "prod", "AKIAEXAMPLE000000001", "sts.us-east-1.amazonaws.com"},
		{"eu-west-3", "dev-2", "AKIAEXAMPLE000000002", "sts.eu-west-3.amazonaws.com"},
		{"ap-southeast-2", "a", "ASIAEXAMPLE000000003", "sts.ap-southeast-2.amazonaws.com"},
	}
	for _, tt := range tests {
		t.Run(tt.region, func(t *testing.T) {
			before := time.Now().UTC().Add(-time.Minute)
			tok, err := Generate(context.Background(), staticConfig(tt.region, tt.accessKey), tt.cluster, now)
			if err != nil {
				t.Fatal(err)
			}
			if !tok.Expiration.Equal(now.Add(14 * time.Minute)) {
				t.Errorf("expiration = %v, want now+14m", tok.Expiration)
			}
			u := decode(t, tok)
			if u.Scheme != "https" || u.Host != tt.host || (u.Path != "/" && u.Path != "") {
				t.Errorf("URL = %s://%s%s, want https://%s/", u.Scheme, u.Host, u.Path, tt.host)
			}
			q := u.Query()
			want := map[string]string{
				"Action":          "GetCallerIdentity",
				"Version":         "2011-06-15",
				"X-Amz-Expires":   "60",
				"X-Amz-Algorithm": "AWS4-HMAC-SHA256",
			}
			for k, v := range want {
				if q.Get(k) != v {
					t.Errorf("%s = %q, want %q", k, q.Get(k), v)
				}
			}
			signed := strings.Split(q.Get("X-Amz-SignedHeaders"), ";")
			if !slices.Contains(signed, "host") || !slices.Contains(signed, ClusterIDHeader) {
				t.Errorf("X-Amz-SignedHeaders = %v, want host and %s", signed, ClusterIDHeader)
			}
			cred := strings.Split(q.Get("X-Amz-Credential"), "/")
			if len(cred) != 5 || cred[0] != tt.accessKey || cred[2] != tt.region || cred[3] != "sts" || cred[4] != "aws4_request" {
				t.Errorf("X-Amz-Credential = %q, want %s/<date>/%s/sts/aws4_request", q.Get("X-Amz-Credential"), tt.accessKey, tt.region)
			}
			signedAt, err := time.Parse("20060102T150405Z", q.Get("X-Amz-Date"))
			if err != nil || signedAt.Before(before) || signedAt.After(time.Now().Add(time.Minute)) {
				t.Errorf("X-Amz-Date = %q, want the signing time", q.Get("X-Amz-Date"))
			}
			if len(q.Get("X-Amz-Signature")) != 64 {
				t.Errorf("X-Amz-Signature = %q", q.Get("X-Amz-Signature"))
			}
			if strings.Contains(tok.Value, "not-a-real-secret") || strings.Contains(u.String(), "not-a-real-secret") {
				t.Error("the token holds the secret key")
			}
		})
	}
}

func TestGenerateBindsCluster(t *testing.T) {
	cfg := staticConfig("us-east-1", "AKIAEXAMPLE000000001")
	now := time.Now()
	a, err := Generate(context.Background(), cfg, "alpha", now)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Generate(context.Background(), cfg, "beta", now)
	if err != nil {
		t.Fatal(err)
	}
	// The cluster name is not in the URL, only in the signature: tokens
	// for two clusters differ by their signatures.
	if decode(t, a).Query().Get("X-Amz-Signature") == decode(t, b).Query().Get("X-Amz-Signature") {
		t.Error("tokens for two clusters have the same signature: the cluster header is not signed")
	}
}

func TestGenerateErrors(t *testing.T) {
	tests := []struct {
		name    string
		cfg     aws.Config
		cluster string
	}{
		{"no cluster", staticConfig("us-east-1", "AKIA1"), ""},
		{"no region", staticConfig("", "AKIA1"), "c"},
		{"no credentials", aws.Config{Region: "us-east-1"}, "c"},
		{"anonymous credentials", aws.Config{Region: "us-east-1", Credentials: aws.AnonymousCredentials{}}, "c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Generate(context.Background(), tt.cfg, tt.cluster, time.Now()); err == nil {
				t.Error("Generate succeeded, want an error")
			}
		})
	}
}

func TestExecCredential(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 18, 5, 0, time.FixedZone("CET", 3600))
	b, err := ExecCredential(Token{Value: "k8s-aws-v1.abc", Expiration: exp})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Status     struct {
			Token               string `json:"token"`
			ExpirationTimestamp string `json:"expirationTimestamp"`
		} `json:"status"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if got.APIVersion != "client.authentication.k8s.io/v1beta1" || got.Kind != "ExecCredential" {
		t.Errorf("apiVersion/kind = %s/%s", got.APIVersion, got.Kind)
	}
	if got.Status.Token != "k8s-aws-v1.abc" {
		t.Errorf("status.token = %q", got.Status.Token)
	}
	if got.Status.ExpirationTimestamp != "2030-01-02T02:18:05Z" {
		t.Errorf("status.expirationTimestamp = %q, want RFC 3339 UTC", got.Status.ExpirationTimestamp)
	}
}

// TestSignatureVerifies checks a token as STS does: it recomputes the
// SigV4 query-string signature from the URL, the host and the
// x-k8s-aws-id header with the secret key, following the published
// algorithm (independently of the SDK's signer), and compares. A token
// replayed for another cluster, or signed with another secret, fails.
// (The emulator cannot serve this check: moto_server routes a request
// without an Authorization header to S3, whatever its URL says.)
func TestSignatureVerifies(t *testing.T) {
	const secret = "not-a-real-secret"
	tok, err := Generate(context.Background(), staticConfig("eu-central-1", "AKIAEXAMPLE000000001"), "prod", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	u := decode(t, tok)
	tests := []struct {
		name, cluster, secret string
		ok                    bool
	}{
		{"as issued", "prod", secret, true},
		{"other cluster", "prod2", secret, false},
		{"other secret", "prod", secret + "x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := verifySigV4(u, tt.cluster, tt.secret); got != tt.ok {
				t.Errorf("signature verifies = %v, want %v", got, tt.ok)
			}
		})
	}
}

// verifySigV4 recomputes a presigned GET's signature (AWS Signature
// Version 4, query string authentication) for a request that carries the
// host and x-k8s-aws-id headers.
func verifySigV4(u *url.URL, cluster, secret string) bool {
	q := u.Query()
	scope := strings.SplitN(q.Get("X-Amz-Credential"), "/", 2)
	if len(scope) != 2 {
		return false
	}
	parts := strings.Split(scope[1], "/") // date, region, service, aws4_request
	if len(parts) != 4 {
		return false
	}
	keys := make([]string, 0, len(q))
	for k := range q {
		if k != "X-Amz-Signature" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var cq []string
	for _, k := range keys {
		cq = append(cq, uriEncode(k)+"="+uriEncode(q.Get(k)))
	}
	headers := map[string]string{"host": u.Host, ClusterIDHeader: cluster}
	signed := strings.Split(q.Get("X-Amz-SignedHeaders"), ";")
	var ch strings.Builder
	for _, h := range signed {
		v, ok := headers[h]
		if !ok {
			return false
		}
		ch.WriteString(h + ":" + v + "\n")
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	emptyHash := sha256.Sum256(nil)
	canonical := strings.Join([]string{"GET", path, strings.Join(cq, "&"), ch.String(), strings.Join(signed, ";"), hex.EncodeToString(emptyHash[:])}, "\n")
	crHash := sha256.Sum256([]byte(canonical))
	toSign := strings.Join([]string{"AWS4-HMAC-SHA256", q.Get("X-Amz-Date"), scope[1], hex.EncodeToString(crHash[:])}, "\n")
	key := []byte("AWS4" + secret)
	for _, p := range parts {
		key = hmacSHA256(key, p)
	}
	return hmac.Equal([]byte(hex.EncodeToString(hmacSHA256(key, toSign))), []byte(q.Get("X-Amz-Signature")))
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// uriEncode is SigV4's URI encoding: every byte but A-Z a-z 0-9 - _ . ~
// as %XY with upper-case hex.
func uriEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("-_.~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// TestGenerateWithKforgeConfig makes a token with the configuration the
// CLI uses (awsx.Load, whose call middleware presigning must not trip on).
func TestGenerateWithKforgeConfig(t *testing.T) {
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":           "AKIAEXAMPLE000000009",
		"AWS_SECRET_ACCESS_KEY":       "not-a-real-secret",
		"AWS_SESSION_TOKEN":           "",
		"AWS_PROFILE":                 "",
		"AWS_ENDPOINT_URL":            "",
		"AWS_ENDPOINT_URL_STS":        "",
		"AWS_CONFIG_FILE":             filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED":   "true",
	} {
		t.Setenv(k, v)
	}
	cfg, _, err := awsx.Load(context.Background(), awsx.Options{Region: "sa-east-1", Home: dir, TracePath: filepath.Join(dir, "trace.jsonl")})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := Generate(context.Background(), cfg, "prod", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	u := decode(t, tok)
	if u.Host != "sts.sa-east-1.amazonaws.com" || !strings.HasPrefix(u.Query().Get("X-Amz-Credential"), "AKIAEXAMPLE000000009/") {
		t.Errorf("token URL = %s", u.Redacted())
	}
	if !verifySigV4(u, "prod", "not-a-real-secret") {
		t.Error("the token's signature does not verify")
	}
}
