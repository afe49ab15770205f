package awsx

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/aws"
	awscreds "github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/kforge/kforge/internal/credentials"
)

// Identity is who a set of credentials belongs to.
type Identity struct {
	Account string `json:"account"`
	ARN     string `json:"arn"`
	UserID  string `json:"userId"`
}

// WhoAmI calls sts:GetCallerIdentity.
func WhoAmI(ctx context.Context, cfg aws.Config) (Identity, error) {
	out, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return Identity{}, err
	}
	return Identity{Account: aws.ToString(out.Account), ARN: aws.ToString(out.Arn), UserID: aws.ToString(out.UserId)}, nil
}

// VerifyCredentials checks keys with sts:GetCallerIdentity, using cfg for
// everything but the credentials.
func VerifyCredentials(ctx context.Context, cfg aws.Config, c credentials.Keys) (Identity, error) {
	cfg = cfg.Copy()
	cfg.Credentials = aws.NewCredentialsCache(awscreds.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken))
	cfg.Retryer = func() aws.Retryer { return aws.NopRetryer{} }
	return WhoAmI(ctx, cfg)
}
