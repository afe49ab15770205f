package ekstoken

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kforge/kforge/internal/credentials"
)

func TestCacheReuseAndExpiry(t *testing.T) {
	c := Cache{Dir: filepath.Join(t.TempDir(), "cache", "tokens")}
	made := time.Date(2030, 1, 2, 3, 0, 0, 0, time.UTC)
	key := KeyFor("prod", "us-east-1", "env:AKIA1")
	tok := Token{Value: Prefix + "first", Expiration: made.Add(Lifetime)}
	if _, ok := c.Get(key, made); ok {
		t.Fatal("hit on an empty cache")
	}
	if err := c.Put(key, tok); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		after time.Duration
		hit   bool
	}{
		{0, true},
		{5 * time.Minute, true},
		{Lifetime - RefreshBefore - time.Second, true},
		{Lifetime - RefreshBefore, false},
		{Lifetime, false},
		{time.Hour, false},
	}
	for _, tt := range tests {
		got, ok := c.Get(key, made.Add(tt.after))
		if ok != tt.hit {
			t.Errorf("Get at +%v: hit = %v, want %v", tt.after, ok, tt.hit)
		}
		if ok && (got.Value != tok.Value || !got.Expiration.Equal(tok.Expiration)) {
			t.Errorf("Get at +%v = %+v, want %+v", tt.after, got, tok)
		}
	}
	// After expiry a new token replaces the old one.
	next := Token{Value: Prefix + "second", Expiration: made.Add(13*time.Minute + Lifetime)}
	if err := c.Put(key, next); err != nil {
		t.Fatal(err)
	}
	if got, ok := c.Get(key, made.Add(13*time.Minute)); !ok || got.Value != next.Value {
		t.Errorf("after regeneration Get = %+v, %v; want the new token", got, ok)
	}
}

func TestCacheFiles(t *testing.T) {
	home := t.TempDir()
	c := Cache{Dir: filepath.Join(home, "cache", "tokens")}
	key := KeyFor("prod", "us-east-1", "env:AKIAEXAMPLE000000001")
	if err := c.Put(key, Token{Value: Prefix + "x", Expiration: time.Now().Add(Lifetime)}); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(c.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("cache holds %d files, want 1", len(entries))
	}
	fi, err := entries[0].Info()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("cache file mode = %v, want 0600", fi.Mode().Perm())
	}
	if strings.Contains(fi.Name(), "AKIA") {
		t.Errorf("cache file name %q shows the access key ID", fi.Name())
	}
	di, err := os.Stat(c.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("cache directory mode = %v, want 0700", di.Mode().Perm())
	}
	b, err := os.ReadFile(filepath.Join(c.Dir, fi.Name()))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "AKIA") {
		t.Errorf("cache file shows the access key ID: %s", b)
	}
}

func TestCacheSeparateEntries(t *testing.T) {
	c := Cache{Dir: t.TempDir()}
	exp := time.Now().Add(Lifetime)
	keys := []Key{
		KeyFor("prod", "us-east-1", "env:AKIA1"),
		KeyFor("prod", "us-east-1", "env:AKIA2"),
		KeyFor("prod", "eu-west-1", "env:AKIA1"),
		KeyFor("dev", "us-east-1", "env:AKIA1"),
		KeyFor("prod", "us-east-1", "stored:AKIA1"),
		// Names that would collide if joined naively.
		KeyFor("a-b", "c", "x"),
		KeyFor("a", "b-c", "x"),
	}
	for i, k := range keys {
		if err := c.Put(k, Token{Value: Prefix + string(rune('A'+i)), Expiration: exp}); err != nil {
			t.Fatal(err)
		}
	}
	for i, k := range keys {
		got, ok := c.Get(k, time.Now())
		if want := Prefix + string(rune('A'+i)); !ok || got.Value != want {
			t.Errorf("key %d: Get = %q, %v; want %q", i, got.Value, ok, want)
		}
	}
	if err := c.Forget("prod", "us-east-1"); err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		_, ok := c.Get(k, time.Now())
		gone := k.cluster == "prod" && k.region == "us-east-1"
		if ok == gone {
			t.Errorf("key %d after Forget(prod, us-east-1): hit = %v", i, ok)
		}
	}
}

func TestCacheCorruptIsMiss(t *testing.T) {
	key := KeyFor("prod", "us-east-1", "env:AKIA1")
	exp := time.Now().Add(Lifetime).UTC().Format(time.RFC3339)
	tests := map[string]string{
		"empty":         "",
		"garbage":       "\x00\x01not json",
		"truncated":     `{"cluster":"prod","region":"us-east-1","token":"k8s-aws-v1.abc","expi`,
		"no token":      `{"cluster":"prod","region":"us-east-1","expiration":"` + exp + `"}`,
		"bad prefix":    `{"cluster":"prod","region":"us-east-1","token":"abc","expiration":"` + exp + `"}`,
		"other cluster": `{"cluster":"dev","region":"us-east-1","token":"k8s-aws-v1.abc","expiration":"` + exp + `"}`,
		"bad time":      `{"cluster":"prod","region":"us-east-1","token":"k8s-aws-v1.abc","expiration":"soon"}`,
		"no expiration": `{"cluster":"prod","region":"us-east-1","token":"k8s-aws-v1.abc"}`,
	}
	for name, content := range tests {
		t.Run(name, func(t *testing.T) {
			c := Cache{Dir: t.TempDir()}
			if err := os.WriteFile(key.file(c.Dir), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if got, ok := c.Get(key, time.Now()); ok {
				t.Errorf("Get on a corrupt entry = %+v, want a miss", got)
			}
			// A fresh token replaces the corrupt entry.
			if err := c.Put(key, Token{Value: Prefix + "new", Expiration: time.Now().Add(Lifetime)}); err != nil {
				t.Fatal(err)
			}
			if got, ok := c.Get(key, time.Now()); !ok || got.Value != Prefix+"new" {
				t.Errorf("Get after Put = %+v, %v", got, ok)
			}
		})
	}
}

func TestCacheDisabled(t *testing.T) {
	var c Cache
	key := KeyFor("prod", "us-east-1", "env:AKIA1")
	if err := c.Put(key, Token{Value: Prefix + "x", Expiration: time.Now().Add(Lifetime)}); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Get(key, time.Now()); ok {
		t.Error("a cache without a directory hit")
	}
	if _, ok := (Cache{Dir: t.TempDir()}).Get(Key{}, time.Now()); ok {
		t.Error("the zero key hit")
	}
}

// TestCacheConcurrent has many writers and readers on one entry, as
// parallel kubectl invocations do: every read is a miss or a whole token.
func TestCacheConcurrent(t *testing.T) {
	c := Cache{Dir: t.TempDir()}
	key := KeyFor("prod", "us-east-1", "env:AKIA1")
	cfg := staticConfig("us-east-1", "AKIAEXAMPLE000000001")
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 10; j++ {
				now := time.Now()
				if tok, ok := c.Get(key, now); ok {
					if _, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(tok.Value, Prefix)); err != nil {
						errs <- fmt.Errorf("cached token is damaged: %w", err)
						return
					}
					continue
				}
				tok, err := Generate(context.Background(), cfg, "prod", now)
				if err != nil {
					errs <- err
					return
				}
				if err := c.Put(key, tok); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	entries, _ := os.ReadDir(c.Dir)
	if len(entries) != 1 {
		names := []string{}
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("cache directory holds %v, want one entry and no temporary files", names)
	}
}

func TestIdentity(t *testing.T) {
	stored := t.TempDir()
	if err := credentials.Store(stored, credentials.Keys{AccessKeyID: "AKIASTORED", SecretAccessKey: "stored-secret"}); err != nil {
		t.Fatal(err)
	}
	corrupt := t.TempDir()
	if err := os.WriteFile(credentials.Path(corrupt), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	tests := []struct {
		name    string
		env     map[string]string
		home    string
		want    string // a part the identity must hold
		wantErr bool
	}{
		{name: "env keys", env: map[string]string{"AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_SECRET_ACCESS_KEY": "s"}, home: stored, want: "env:AKIAENV"},
		{name: "env key without secret falls to stored", env: map[string]string{"AWS_ACCESS_KEY_ID": "AKIAENV"}, home: stored, want: "stored:AKIASTORED"},
		{name: "stored", home: stored, want: "stored:AKIASTORED"},
		{name: "chain default", home: empty, want: "chain"},
		{name: "chain profile", env: map[string]string{"AWS_PROFILE": "work"}, home: empty, want: "AWS_PROFILE=work"},
		{name: "no home", env: map[string]string{"AWS_PROFILE": "work"}, want: "AWS_PROFILE=work"},
		{name: "endpoint", env: map[string]string{"AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_SECRET_ACCESS_KEY": "s", "AWS_ENDPOINT_URL": "http://127.0.0.1:5000"}, want: "AWS_ENDPOINT_URL=http://127.0.0.1:5000"},
		{name: "corrupt stored", home: corrupt, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string { return tt.env[k] }
			id, err := Identity(getenv, tt.home)
			if tt.wantErr {
				if err == nil {
					t.Errorf("Identity = %q, want an error", id)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(id, tt.want) {
				t.Errorf("Identity = %q, want it to hold %q", id, tt.want)
			}
			if strings.Contains(id, "secret") || strings.Contains(id, "=s\x00") {
				t.Errorf("Identity = %q holds a secret", id)
			}
		})
	}
	// Different credentials give different identities.
	a, _ := Identity(func(k string) string { return map[string]string{"AWS_PROFILE": "a"}[k] }, empty)
	b, _ := Identity(func(k string) string { return map[string]string{"AWS_PROFILE": "b"}[k] }, empty)
	if a == b {
		t.Error("two profiles have the same identity")
	}
}

// warmEnv is the environment of a `kforge token` run with keys in the
// environment.
func warmEnv(k string) string {
	return map[string]string{"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE000000001", "AWS_SECRET_ACCESS_KEY": "x"}[k]
}

// BenchmarkWarm is `kforge token` with a cached token: the identity from
// the environment, one file read, the ExecCredential encoded.
func BenchmarkWarm(b *testing.B) {
	c := Cache{Dir: b.TempDir()}
	id, err := Identity(warmEnv, "")
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Put(KeyFor("prod", "us-east-1", id), Token{Value: Prefix + strings.Repeat("a", 600), Expiration: time.Now().Add(Lifetime)}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		id, err := Identity(warmEnv, "")
		if err != nil {
			b.Fatal(err)
		}
		tok, ok := c.Get(KeyFor("prod", "us-east-1", id), time.Now())
		if !ok {
			b.Fatal("miss")
		}
		if _, err := ExecCredential(tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCold is `kforge token` without a cached token, given an SDK
// configuration with static credentials: presign, store, encode.
func BenchmarkCold(b *testing.B) {
	c := Cache{Dir: b.TempDir()}
	cfg := staticConfig("us-east-1", "AKIAEXAMPLE000000001")
	key := KeyFor("prod", "us-east-1", "env:AKIAEXAMPLE000000001")
	for b.Loop() {
		tok, err := Generate(context.Background(), cfg, "prod", time.Now())
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Put(key, tok); err != nil {
			b.Fatal(err)
		}
		if _, err := ExecCredential(tok); err != nil {
			b.Fatal(err)
		}
	}
}
