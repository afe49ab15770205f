// Package credentials is the one place that says where kforge's AWS
// credentials come from, in order: the AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY environment variables, then the keys `kforge cred`
// stored under KFORGE_HOME, then the AWS SDK's default chain (profiles,
// SSO, web identity, container and instance roles). Everything that picks
// credentials (the SDK configuration, the EKS token cache, `kforge cred`)
// asks Resolve.
package credentials

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/kforge/kforge/internal/atomicfile"
)

// Kinds of Source, in order of precedence; the strings are what
// `kforge cred --show` prints.
const (
	Env    = "environment (AWS_ACCESS_KEY_ID)"
	Stored = "kforge cred"
	Chain  = "AWS SDK default chain"
)

// Howto says where kforge finds credentials, for the messages of a
// command that found none, or none that work.
const Howto = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or store keys with `kforge cred`, or log in with your AWS profile (aws sso login)"

// Keys are an access key pair (and session token).
type Keys struct {
	AccessKeyID     string `json:"accessKeyId"`
	SecretAccessKey string `json:"secretAccessKey"`
	SessionToken    string `json:"sessionToken,omitempty"`
}

// Source is where the credentials of this process come from.
type Source struct {
	// Kind is Env, Stored or Chain.
	Kind string
	// Keys are the stored keys (Kind Stored only: the environment's keys
	// and the chain are left to the SDK, which reads them itself).
	Keys *Keys
	key  string
}

// chainSettings are the environment variables that select what the SDK's
// default chain finds.
var chainSettings = []string{
	"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
	"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
	"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
}

// Resolve finds the credentials' source, by kforge's precedence. getenv
// is os.Getenv in production; home is KFORGE_HOME (empty: nothing
// stored).
func Resolve(getenv func(string) string, home string) (Source, error) {
	if id := getenv("AWS_ACCESS_KEY_ID"); id != "" && getenv("AWS_SECRET_ACCESS_KEY") != "" {
		return Source{Kind: Env, key: "env:" + id}, nil
	}
	k, err := Read(home)
	if err != nil {
		return Source{}, err
	}
	if k != nil {
		return Source{Kind: Stored, Keys: k, key: "stored:" + k.AccessKeyID}, nil
	}
	var b strings.Builder
	b.WriteString("chain")
	for _, v := range chainSettings {
		b.WriteString("\x00" + v + "=" + getenv(v))
	}
	return Source{Kind: Chain, key: b.String()}, nil
}

// Key names the credentials without any secret (access key IDs, or the
// settings of the SDK's chain): equal keys mean the same credentials. It
// is meant to key caches, not to be shown.
func (s Source) Key() string { return s.key }

// Path is where `kforge cred` stores keys under home.
func Path(home string) string { return filepath.Join(home, "credentials.json") }

// Read returns the stored keys, or nil if there are none.
func Read(home string) (*Keys, error) {
	if home == "" {
		return nil, nil
	}
	b, err := os.ReadFile(Path(home))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read stored credentials: %w", err)
	}
	var k Keys
	if err := json.Unmarshal(b, &k); err != nil || k.AccessKeyID == "" || k.SecretAccessKey == "" {
		return nil, fmt.Errorf("the stored credentials at %s are unreadable: run `kforge cred --delete`, then `kforge cred`", Path(home))
	}
	return &k, nil
}

// Store writes keys under home with mode 0600 (atomically).
func Store(home string, k Keys) error {
	if err := os.MkdirAll(home, 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(k)
	if err != nil {
		return err
	}
	return atomicfile.Write(Path(home), b, 0o600)
}

// Delete removes the stored keys; it reports whether there were any.
func Delete(home string) (bool, error) {
	err := os.Remove(Path(home))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}
