package awsx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/kforge/kforge/internal/atomicfile"
)

// StoredCredentials are the keys `kforge cred` keeps under KFORGE_HOME.
type StoredCredentials struct {
	AccessKeyID     string `json:"accessKeyId"`
	SecretAccessKey string `json:"secretAccessKey"`
	SessionToken    string `json:"sessionToken,omitempty"`
}

// CredentialsPath is where `kforge cred` stores keys.
func CredentialsPath(home string) string { return filepath.Join(home, "credentials.json") }

// ReadStoredCredentials returns the stored keys, or nil if there are none.
func ReadStoredCredentials(home string) (*StoredCredentials, error) {
	if home == "" {
		return nil, nil
	}
	b, err := os.ReadFile(CredentialsPath(home))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read stored credentials: %w", err)
	}
	var c StoredCredentials
	if err := json.Unmarshal(b, &c); err != nil || c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return nil, fmt.Errorf("the stored credentials at %s are unreadable: run `kforge cred --delete`, then `kforge cred`", CredentialsPath(home))
	}
	return &c, nil
}

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
func VerifyCredentials(ctx context.Context, cfg aws.Config, c StoredCredentials) (Identity, error) {
	cfg = cfg.Copy()
	cfg.Credentials = aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken))
	cfg.Retryer = func() aws.Retryer { return aws.NopRetryer{} }
	return WhoAmI(ctx, cfg)
}

// StoreCredentials writes keys to KFORGE_HOME with mode 0600.
func StoreCredentials(home string, c StoredCredentials) error {
	if err := os.MkdirAll(home, 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return atomicfile.Write(CredentialsPath(home), b, 0o600)
}

// DeleteStoredCredentials removes stored keys; it reports whether any were.
func DeleteStoredCredentials(home string) (bool, error) {
	err := os.Remove(CredentialsPath(home))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}
