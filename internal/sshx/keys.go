package sshx

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"
)

// KeyPair is an ed25519 SSH key pair in the encodings kforge stores and
// hands out: the private half as an OpenSSH PEM block (what ssh-keygen
// writes, what cloud-init's ssh_keys and `ssh -i` read), the public half as
// one authorized_keys line. It serves both as the per-cluster login key and
// as a VM's host key.
type KeyPair struct {
	// PrivatePEM is the unencrypted "OPENSSH PRIVATE KEY" PEM block. It is
	// a secret: store it 0600 and never log it.
	PrivatePEM []byte
	// Public is the public key in authorized_keys form without a trailing
	// newline: "ssh-ed25519 AAAA... comment".
	Public string
}

// GenerateKey returns a fresh ed25519 key pair; comment ends up in both
// halves (for example "kforge-demo").
func GenerateKey(comment string) (KeyPair, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return KeyPair{}, fmt.Errorf("generate ed25519 key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return KeyPair{}, fmt.Errorf("encode ed25519 private key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return KeyPair{}, fmt.Errorf("encode ed25519 public key: %w", err)
	}
	return KeyPair{PrivatePEM: pem.EncodeToMemory(block), Public: AuthorizedKey(sshPub, comment)}, nil
}

// Signer parses the private half for authenticating or serving with it.
func (k KeyPair) Signer() (ssh.Signer, error) { return ParsePrivateKey(k.PrivatePEM) }

// PublicKey parses the public half.
func (k KeyPair) PublicKey() (ssh.PublicKey, error) { return ParsePublicKey(k.Public) }

// String describes the key pair by its public fingerprint, so that a key
// pair printed by mistake does not reveal its private half.
func (k KeyPair) String() string {
	pub, err := k.PublicKey()
	if err != nil {
		return "ssh key pair (invalid public key)"
	}
	return "ssh key pair " + Fingerprint(pub)
}

// GoString is String, for %#v.
func (k KeyPair) GoString() string { return k.String() }

// ParsePrivateKey parses an unencrypted private key in OpenSSH (or PKCS#1,
// PKCS#8) PEM form. Its errors never contain the key material.
func ParsePrivateKey(pemBytes []byte) (ssh.Signer, error) {
	if len(pemBytes) == 0 {
		return nil, errors.New("parse ssh private key: empty")
	}
	s, err := ssh.ParsePrivateKey(pemBytes)
	if err != nil {
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, errors.New("parse ssh private key: it is protected by a passphrase; kforge needs an unencrypted key (or load it into ssh-agent and export it without a passphrase)")
		}
		return nil, fmt.Errorf("parse ssh private key: %w", err)
	}
	return s, nil
}

// ParsePublicKey parses one public key in authorized_keys form ("type
// base64 [comment]", options allowed).
func ParsePublicKey(s string) (ssh.PublicKey, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("parse ssh public key: empty")
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		return nil, fmt.Errorf("parse ssh public key: %w", err)
	}
	return pub, nil
}

// AuthorizedKey renders pub as one authorized_keys line without a trailing
// newline, followed by comment when it is not empty.
func AuthorizedKey(pub ssh.PublicKey, comment string) string {
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	if c := strings.TrimSpace(comment); c != "" {
		line += " " + c
	}
	return line
}

// Fingerprint is the SHA256 fingerprint of pub as OpenSSH prints it
// ("SHA256:..."), or "(none)" for a nil key.
func Fingerprint(pub ssh.PublicKey) string {
	if pub == nil {
		return "(none)"
	}
	return ssh.FingerprintSHA256(pub)
}

// SameKey reports whether a and b are the same public key.
func SameKey(a, b ssh.PublicKey) bool {
	if a == nil || b == nil {
		return false
	}
	return a.Type() == b.Type() && string(a.Marshal()) == string(b.Marshal())
}
