package ekstoken

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kforge/kforge/internal/atomicfile"
	"github.com/kforge/kforge/internal/credentials"
)

// RefreshBefore is how long before its expiration a cached token stops
// being served, so that kubectl never sends a token about to lapse.
const RefreshBefore = time.Minute

// Key names one cache entry: a cluster, its region and the credentials a
// token was made with. It holds a digest of the identity, never the
// identity itself.
type Key struct {
	cluster string
	region  string
	id      string
}

// KeyFor returns the cache key of a token for cluster in region made with
// the credentials that identity names (see [Identity]).
func KeyFor(cluster, region, identity string) Key {
	return Key{cluster: cluster, region: region, id: digest(identity)}
}

func digest(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// file is where the entry for k lives in dir: a digest of the cluster and
// region, so that [Cache.Forget] finds every identity's entry, then a
// digest of the identity. Neither depends on what characters the names
// hold.
func (k Key) file(dir string) string {
	return filepath.Join(dir, clusterPrefix(k.cluster, k.region)+"-"+k.id[:24]+".json")
}

func clusterPrefix(cluster, region string) string {
	return digest(cluster, region)[:24]
}

// Cache keeps tokens in Dir (KFORGE_HOME/cache/tokens), one 0600 file per
// key, written atomically so that concurrent kubectl invocations never
// see a partial file. The zero Dir disables it: Get misses and Put does
// nothing.
type Cache struct {
	Dir string
}

// entry is a cache file's content. The cluster and region are repeated so
// that an entry is never served for another cluster.
type entry struct {
	Cluster    string    `json:"cluster"`
	Region     string    `json:"region"`
	Token      string    `json:"token"`
	Expiration time.Time `json:"expiration"`
}

// Get returns the cached token for key if there is one that stays valid
// for more than [RefreshBefore] after now. A missing, unreadable or
// corrupt entry is a miss.
func (c Cache) Get(key Key, now time.Time) (Token, bool) {
	if c.Dir == "" || key.id == "" {
		return Token{}, false
	}
	b, err := os.ReadFile(key.file(c.Dir))
	if err != nil {
		return Token{}, false
	}
	var e entry
	if err := json.Unmarshal(b, &e); err != nil {
		return Token{}, false
	}
	if e.Cluster != key.cluster || e.Region != key.region || !strings.HasPrefix(e.Token, Prefix) || len(e.Token) == len(Prefix) {
		return Token{}, false
	}
	if !now.Before(e.Expiration.Add(-RefreshBefore)) {
		return Token{}, false
	}
	return Token{Value: e.Token, Expiration: e.Expiration}, true
}

// Put stores t under key, creating Dir (0700) if needed; the file is
// 0600 and replaced atomically.
func (c Cache) Put(key Key, t Token) error {
	if c.Dir == "" || key.id == "" {
		return nil
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return fmt.Errorf("create token cache directory: %w", err)
	}
	b, err := json.Marshal(entry{Cluster: key.cluster, Region: key.region, Token: t.Value, Expiration: t.Expiration})
	if err != nil {
		return fmt.Errorf("encode cached token: %w", err)
	}
	if err := atomicfile.Write(key.file(c.Dir), b, 0o600); err != nil {
		return fmt.Errorf("write token cache in %s: %w", c.Dir, err)
	}
	return nil
}

// Forget removes every cached token of cluster in region, whatever
// credentials made them (for when the cluster is deleted).
func (c Cache) Forget(cluster, region string) error {
	if c.Dir == "" {
		return nil
	}
	matches, err := filepath.Glob(filepath.Join(c.Dir, clusterPrefix(cluster, region)+"-*.json"))
	if err != nil {
		return fmt.Errorf("list token cache: %w", err)
	}
	for _, m := range matches {
		if err := os.Remove(m); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove cached token: %w", err)
		}
	}
	return nil
}

// Identity names the credentials kforge would use, without loading the
// AWS SDK configuration and without any secret (credentials.Source.Key),
// with the endpoint overrides, so that tokens for an emulator and for AWS
// never mix. getenv is os.Getenv in production. The result is meant for
// [KeyFor]: it holds access key IDs, which are not secret but need not be
// shown either.
func Identity(getenv func(string) string, home string) (string, error) {
	src, err := credentials.Resolve(getenv, home)
	if err != nil {
		return "", err
	}
	id := src.Key()
	for _, v := range []string{"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS"} {
		id += "\x00" + v + "=" + getenv(v)
	}
	return id, nil
}
