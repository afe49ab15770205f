package sshx_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/sshx"
)

func TestGenerateKeyRoundTrip(t *testing.T) {
	k, err := sshx.GenerateKey("kforge-demo")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(k.PrivatePEM), "-----BEGIN OPENSSH PRIVATE KEY-----") {
		t.Fatalf("private key is not OpenSSH PEM: %.40q", k.PrivatePEM)
	}
	if !strings.HasPrefix(k.Public, "ssh-ed25519 AAAA") || !strings.HasSuffix(k.Public, " kforge-demo") || strings.Contains(k.Public, "\n") {
		t.Fatalf("public key is not one authorized_keys line: %q", k.Public)
	}
	signer, err := k.Signer()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := k.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	if !sshx.SameKey(signer.PublicKey(), pub) {
		t.Fatal("the private and public halves do not match")
	}
	other, err := sshx.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	otherPub, _ := other.PublicKey()
	if sshx.SameKey(pub, otherPub) {
		t.Fatal("two generated keys are equal")
	}
	if got := sshx.AuthorizedKey(pub, "kforge-demo"); got != k.Public {
		t.Fatalf("AuthorizedKey = %q, want %q", got, k.Public)
	}
	if fp := sshx.Fingerprint(pub); !strings.HasPrefix(fp, "SHA256:") {
		t.Fatalf("fingerprint %q", fp)
	}
	// Printing a key pair by mistake shows no secret.
	for _, s := range []string{k.String(), k.GoString()} {
		if strings.Contains(s, "PRIVATE") || !strings.Contains(s, sshx.Fingerprint(pub)) {
			t.Fatalf("String() = %q", s)
		}
	}
}

// OpenSSH itself reads the private key kforge writes and derives the same
// public key.
func TestGenerateKeyReadByOpenSSH(t *testing.T) {
	keygen, err := exec.LookPath("ssh-keygen")
	if err != nil {
		t.Skip("ssh-keygen not installed")
	}
	k, err := sshx.GenerateKey("interop")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(path, k.PrivatePEM, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(keygen, "-y", "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen -y: %v: %s", err, out)
	}
	got, err := sshx.ParsePublicKey(string(out))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := k.PublicKey()
	if !sshx.SameKey(got, want) {
		t.Fatalf("ssh-keygen derived %s, want %s", out, k.Public)
	}
}

func TestParseKeysErrors(t *testing.T) {
	secret := "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LW1hdGVyaWFs\n-----END OPENSSH PRIVATE KEY-----\n"
	tests := []struct {
		name string
		run  func() error
	}{
		{"empty private", func() error { _, err := sshx.ParsePrivateKey(nil); return err }},
		{"garbage private", func() error { _, err := sshx.ParsePrivateKey([]byte(secret)); return err }},
		{"empty public", func() error { _, err := sshx.ParsePublicKey("  "); return err }},
		{"garbage public", func() error { _, err := sshx.ParsePublicKey("ssh-ed25519 bm90LWEta2V5"); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			if err == nil {
				t.Fatal("no error")
			}
			if strings.Contains(err.Error(), "c2VjcmV0") {
				t.Fatalf("error reveals key material: %v", err)
			}
		})
	}
}

func TestRecipeName(t *testing.T) {
	tests := []struct {
		script, want string
	}{
		{"#!/usr/bin/env bash\n# kforge-recipe: install-k3s\nset -euo pipefail\n", "install-k3s"},
		{"#!/usr/bin/env bash\n#   kforge-recipe: x\n", ""},
		{"#!/usr/bin/env bash\n# kforge-recipe:   fetch-kubeconfig  \r\n", "fetch-kubeconfig"},
		{"#!/usr/bin/env bash\necho hi\n", ""},
		{"", ""},
		{"#!/usr/bin/env bash\n\n\n\n\n# kforge-recipe: too-late\n", ""},
	}
	for _, tc := range tests {
		if got := sshx.RecipeName(tc.script); got != tc.want {
			t.Errorf("RecipeName(%q) = %q, want %q", tc.script, got, tc.want)
		}
	}
}

func TestParseJump(t *testing.T) {
	tests := []struct {
		in      string
		want    string // Jump.String(), "" for an error
		user    string
		host    string
		port    int
		wantErr string
	}{
		{in: "ubuntu@bastion.example.com:2222", want: "ubuntu@bastion.example.com:2222", user: "ubuntu", host: "bastion.example.com", port: 2222},
		{in: "ec2-user@10.0.0.5", want: "ec2-user@10.0.0.5:22", user: "ec2-user", host: "10.0.0.5", port: 22},
		{in: "me@[::1]:2200", want: "me@[::1]:2200", user: "me", host: "::1", port: 2200},
		{in: "me@[::1]", want: "me@[::1]:22", user: "me", host: "::1", port: 22},
		{in: "a@b@host:22", want: "a@b@host:22", user: "a@b", host: "host", port: 22},
		{in: "bastion:22", wantErr: "want user@host"},
		{in: "@bastion", wantErr: "want user@host"},
		{in: "ubuntu@", wantErr: "want user@host"},
		{in: "ubuntu@host:0", wantErr: "port"},
		{in: "ubuntu@host:ssh", wantErr: "port"},
		{in: "ubuntu@:22", wantErr: "host is missing"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			j, err := sshx.ParseJump(tc.in)
			if tc.wantErr != "" {
				var ue *spec.UsageError
				if err == nil || !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseJump(%q) = %v, %v; want a usage error with %q", tc.in, j, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if j.User != tc.user || j.Host != tc.host || j.Port != tc.port || j.String() != tc.want {
				t.Fatalf("ParseJump(%q) = %+v (%s)", tc.in, j, j)
			}
		})
	}
}
