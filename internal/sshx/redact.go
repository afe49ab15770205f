package sshx

import "regexp"

// Redacted stands in for a secret removed from text that came from a VM.
const Redacted = "[redacted]"

// secretPatterns match what looks like a secret in a script's output:
// PEM blocks (keys, certificates), kubeadm bootstrap tokens, k3s tokens,
// 64-digit hex strings (certificate keys, checksums), long base64 runs
// (encoded keys and kubeconfig data), AWS access key IDs, and the value
// of anything named like a token, password, secret or key.
var secretPatterns = []*regexp.Regexp{
	regexp.MustCompile(`(?s)-----BEGIN [A-Z0-9 ]+-----.*?(-----END [A-Z0-9 ]+-----|$)`),
	regexp.MustCompile(`\bK10[0-9a-f]{20,}::[^\s"']+`),
	regexp.MustCompile(`\b[a-z0-9]{6}\.[a-z0-9]{16}\b`),
	regexp.MustCompile(`\b[0-9a-fA-F]{64}\b`),
	regexp.MustCompile(`[A-Za-z0-9+/_-]{40,}={0,2}`),
	regexp.MustCompile(`\b(AKIA|ASIA)[0-9A-Z]{16}\b`),
	regexp.MustCompile(`(?i)((?:token|password|passwd|secret|certificate[-_]?key|private[-_]?key|client[-_]?key)[a-z_-]*["']?\s*[:=]\s*["']?)[^\s"',}]+`),
}

// Redact replaces what looks like a secret in text from a VM (a failing
// script's last lines) with Redacted, before it is printed, logged or
// stored in state.
func Redact(s string) string {
	for i, re := range secretPatterns {
		if i == len(secretPatterns)-1 {
			s = re.ReplaceAllString(s, "${1}"+Redacted)
			continue
		}
		s = re.ReplaceAllString(s, Redacted)
	}
	return s
}
