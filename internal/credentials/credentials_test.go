package credentials

import (
	"os"
	"strings"
	"testing"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestResolvePrecedence(t *testing.T) {
	stored := t.TempDir()
	if err := Store(stored, Keys{AccessKeyID: "AKIASTORED", SecretAccessKey: "s"}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(Path(stored)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stored keys: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	empty := t.TempDir()
	tests := []struct {
		name string
		env  map[string]string
		home string
		want string
	}{
		{"environment wins", map[string]string{"AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_SECRET_ACCESS_KEY": "x"}, stored, Env},
		{"a key ID without secret is not the environment's", map[string]string{"AWS_ACCESS_KEY_ID": "AKIAENV"}, stored, Stored},
		{"stored before the chain", nil, stored, Stored},
		{"chain when nothing else", map[string]string{"AWS_PROFILE": "dev"}, empty, Chain},
		{"no home", nil, "", Chain},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Resolve(env(tc.env), tc.home)
			if err != nil {
				t.Fatal(err)
			}
			if s.Kind != tc.want {
				t.Fatalf("kind %q, want %q", s.Kind, tc.want)
			}
			if (s.Kind == Stored) != (s.Keys != nil) {
				t.Fatalf("keys %v for kind %q", s.Keys, s.Kind)
			}
			if strings.Contains(s.Key(), "x") && s.Kind == Env {
				t.Fatalf("key %q holds the secret", s.Key())
			}
		})
	}
}

func TestKeyTellsCredentialsApart(t *testing.T) {
	a, _ := Resolve(env(map[string]string{"AWS_PROFILE": "a"}), "")
	b, _ := Resolve(env(map[string]string{"AWS_PROFILE": "b"}), "")
	c, _ := Resolve(env(map[string]string{"AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": "secret"}), "")
	if a.Key() == b.Key() {
		t.Fatal("two profiles share a key")
	}
	if strings.Contains(c.Key(), "secret") {
		t.Fatalf("key %q holds the secret", c.Key())
	}
}

func TestUnreadableAndDelete(t *testing.T) {
	home := t.TempDir()
	if err := os.WriteFile(Path(home), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Resolve(env(nil), home); err == nil || !strings.Contains(err.Error(), "kforge cred --delete") {
		t.Fatalf("unreadable keys: %v, want an error saying what to do", err)
	}
	if ok, err := Delete(home); !ok || err != nil {
		t.Fatalf("delete: %v %v", ok, err)
	}
	if ok, err := Delete(home); ok || err != nil {
		t.Fatalf("second delete: %v %v, want false, nil", ok, err)
	}
}
