// Package ekstoken makes the bearer tokens an EKS cluster accepts, as
// `aws eks get-token` and aws-iam-authenticator make them, and caches them
// on disk so that kubectl, which runs `kforge token` before every request,
// pays for a token once per thirteen minutes instead of on every call.
//
// A token is a presigned sts:GetCallerIdentity URL that also signs the
// x-k8s-aws-id header with the cluster's name; EKS replays it to STS to
// learn who the caller is. Presigning is local: making a token calls no
// AWS API (only the credentials provider may, for roles or SSO).
//
// The cache is built for the warm path: [Identity] reads only environment
// variables and the small file `kforge cred` writes, and [Cache.Get] reads
// one small file, so a cached token is served without loading the AWS SDK
// configuration.
package ekstoken

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientauthv1beta1 "k8s.io/client-go/pkg/apis/clientauthentication/v1beta1"
)

const (
	// Prefix starts every EKS token; the rest is the unpadded base64url
	// encoding of the presigned URL.
	Prefix = "k8s-aws-v1."
	// ClusterIDHeader is the signed header that binds a token to one
	// cluster.
	ClusterIDHeader = "x-k8s-aws-id"
	// PresignExpiry is the X-Amz-Expires the presigned URL carries, as the
	// AWS tools set it. STS and EKS accept an EKS token for 15 minutes from
	// its signing time regardless.
	PresignExpiry = 60 * time.Second
	// Lifetime is how long after its making a token is reported valid: one
	// minute short of the 15 minutes EKS accepts it, as the AWS CLI does.
	Lifetime = 14 * time.Minute
)

// Token is an EKS bearer token and the time it stops being usable.
type Token struct {
	Value      string
	Expiration time.Time
}

// Generate makes a token for the EKS cluster clusterName with cfg's
// credentials, signed for the STS endpoint of cfg.Region (or the endpoint
// cfg overrides, such as AWS_ENDPOINT_URL). now is the time the token is
// made; it expires [Lifetime] later.
func Generate(ctx context.Context, cfg aws.Config, clusterName string, now time.Time) (Token, error) {
	if clusterName == "" {
		return Token{}, errors.New("make EKS token: no cluster name")
	}
	if cfg.Region == "" {
		return Token{}, errors.New("make EKS token: no AWS region: pass --region")
	}
	if cfg.Credentials == nil {
		return Token{}, errors.New("make EKS token: no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, run `kforge cred`, or configure an AWS profile")
	}
	// Presigning is not an API call: middleware added for calls (a trace,
	// retry notices) does not apply, and may expect the retry step that
	// presigning removes.
	cfg = cfg.Copy()
	cfg.APIOptions = nil
	presigner := sts.NewPresignClient(sts.NewFromConfig(cfg))
	req, err := presigner.PresignGetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}, func(po *sts.PresignOptions) {
		po.ClientOptions = append(po.ClientOptions, func(o *sts.Options) {
			o.APIOptions = append(o.APIOptions,
				smithyhttp.SetHeaderValue(ClusterIDHeader, clusterName),
				addPresignExpiry,
			)
		})
	})
	if err != nil {
		return Token{}, fmt.Errorf("make EKS token for cluster %s: presign sts:GetCallerIdentity (check your AWS credentials): %w", clusterName, err)
	}
	u, err := url.Parse(req.URL)
	if err != nil || u.Query().Get("X-Amz-Signature") == "" {
		return Token{}, fmt.Errorf("make EKS token for cluster %s: the AWS credentials in use are anonymous or unusable: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, run `kforge cred`, or configure an AWS profile", clusterName)
	}
	return Token{
		Value:      Prefix + base64.RawURLEncoding.EncodeToString([]byte(req.URL)),
		Expiration: now.Add(Lifetime),
	}, nil
}

// addPresignExpiry sets X-Amz-Expires on the request before it is
// presigned, so that the signature covers it.
func addPresignExpiry(stack *middleware.Stack) error {
	return stack.Build.Add(middleware.BuildMiddlewareFunc("kforgePresignExpiry",
		func(ctx context.Context, in middleware.BuildInput, next middleware.BuildHandler) (middleware.BuildOutput, middleware.Metadata, error) {
			req, ok := in.Request.(*smithyhttp.Request)
			if !ok {
				return middleware.BuildOutput{}, middleware.Metadata{}, fmt.Errorf("presign EKS token: unexpected request type %T", in.Request)
			}
			q := req.URL.Query()
			q.Set("X-Amz-Expires", fmt.Sprint(int64(PresignExpiry/time.Second)))
			req.URL.RawQuery = q.Encode()
			return next.HandleBuild(ctx, in)
		}), middleware.After)
}

// ExecCredential returns t as the JSON document a kubectl exec credential
// plugin prints: an ExecCredential of client.authentication.k8s.io/v1beta1
// with status.token and status.expirationTimestamp (RFC 3339, UTC).
func ExecCredential(t Token) ([]byte, error) {
	exp := metav1.NewTime(t.Expiration.UTC())
	ec := clientauthv1beta1.ExecCredential{
		TypeMeta: metav1.TypeMeta{
			APIVersion: clientauthv1beta1.SchemeGroupVersion.String(),
			Kind:       "ExecCredential",
		},
		Status: &clientauthv1beta1.ExecCredentialStatus{
			Token:               t.Value,
			ExpirationTimestamp: &exp,
		},
	}
	b, err := json.Marshal(ec)
	if err != nil {
		return nil, fmt.Errorf("encode ExecCredential: %w", err)
	}
	return b, nil
}
