package sshx

import (
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	secrets := []string{
		"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkQ\n-----END EC PRIVATE KEY-----",
		"abcdef.0123456789abcdef",
		"K10e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855::server:s3cr3t",
		strings.Repeat("ab", 32),
		"YXBpVmVyc2lvbjogdjEKY2x1c3RlcnM6Ci0gY2x1c3RlcjoK",
		"AKIAIOSFODNN7EXAMPLE",
	}
	for _, s := range secrets {
		out := Redact("error: something " + s + " went wrong")
		if strings.Contains(out, s) || !strings.Contains(out, Redacted) || !strings.Contains(out, "went wrong") {
			t.Errorf("Redact(%q) = %q", s, out)
		}
	}
	for in, want := range map[string]string{
		"token: hunter2abc":           "token: " + Redacted,
		`"password":"p4ss"`:           `"password":"` + Redacted + `"`,
		"--certificate-key=0f0f":      "--certificate-key=" + Redacted,
		"kubeadm join failed: exit 1": "kubeadm join failed: exit 1",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
	// Ordinary output stays readable.
	plain := "kforge: error: kubeadm join failed on cp-1; see journalctl -u kubelet on the VM (10.0.1.5:6443 refused)"
	if got := Redact(plain); got != plain {
		t.Errorf("Redact changed plain text: %q", got)
	}
}
