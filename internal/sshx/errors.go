package sshx

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"golang.org/x/crypto/ssh"
)

// ErrClosed is returned by a Client used after Close.
var ErrClosed = errors.New("ssh client is closed")

// HostKeyError says a VM presented a host key other than the one pinned
// for it. It is never retried: either the address now belongs to another
// machine or someone is in the middle.
type HostKeyError struct {
	VM        string // the target's name
	Addr      string // the address dialled (through the jump host if any)
	Expected  string // SHA256 fingerprint of the pinned key
	Presented string // SHA256 fingerprint of the key the server showed
}

// Error names the VM and both fingerprints.
func (e *HostKeyError) Error() string {
	return fmt.Sprintf("vm %s (%s) presented host key %s but kforge expects %s (the key it gave the VM at launch); refusing to connect: the address may now belong to another machine, or the connection is intercepted",
		e.VM, e.Addr, e.Presented, e.Expected)
}

// JumpHostKeyError says the jump host's key could not be verified against
// the known_hosts files: the host is not listed (Known is empty), its key
// differs from the listed ones, or the key is revoked.
type JumpHostKeyError struct {
	Host      string   // host and port as dialled
	Presented string   // SHA256 fingerprint of the key the jump host showed
	Known     []string // "file:line SHA256:..." of the listed keys, on a mismatch
	Files     []string // the known_hosts files consulted
	Revoked   bool     // the presented key is marked @revoked
}

// Error says what is wrong and how to fix known_hosts.
func (e *JumpHostKeyError) Error() string {
	host, port := splitHostPort(e.Host)
	file := "~/.ssh/known_hosts"
	if len(e.Files) > 0 {
		file = e.Files[0]
	}
	switch {
	case e.Revoked:
		return fmt.Sprintf("jump host %s presented host key %s, which %s marks @revoked; refusing to connect", e.Host, e.Presented, strings.Join(e.Files, ", "))
	case len(e.Known) == 0:
		return fmt.Sprintf("jump host %s is not in known_hosts (%s); it presented host key %s. If that is the jump host's key, add it with: ssh-keyscan -p %s %s >> %s",
			e.Host, strings.Join(e.Files, ", "), e.Presented, port, host, file)
	default:
		return fmt.Sprintf("jump host %s presented host key %s, which does not match known_hosts (%s); refusing to connect (possible man-in-the-middle). If the key changed legitimately, remove the old entry with: ssh-keygen -f %s -R '%s'",
			e.Host, e.Presented, strings.Join(e.Known, "; "), file, knownHostsName(host, port))
	}
}

// ExitError says a script ran on a VM and exited non-zero (or died from a
// signal). It carries the recipe name and the last lines of stderr, never
// the script.
type ExitError struct {
	VM     string // the target's name
	Recipe string // from the script's "# kforge-recipe:" line
	Code   int    // exit status; -1 when killed by a signal
	Signal string // the signal's name when killed by one
	Stderr string // the last lines of the script's stderr
}

// Error names the VM, the recipe and the status, then the stderr tail.
func (e *ExitError) Error() string {
	how := fmt.Sprintf("exited with status %d", e.Code)
	if e.Signal != "" {
		how = "was killed by signal " + e.Signal
	}
	msg := fmt.Sprintf("vm %s: %s %s", e.VM, recipeLabel(e.Recipe), how)
	if e.Stderr != "" {
		msg += "; last lines of stderr:\n" + e.Stderr
	}
	return msg
}

// isAuthFailure reports whether err is the client's "no authentication
// method was accepted" failure. x/crypto/ssh does not type it, so its
// stable message is matched.
func isAuthFailure(err error) bool {
	return err != nil && strings.Contains(err.Error(), "ssh: unable to authenticate")
}

// isPermanent reports whether retrying after err cannot help.
func isPermanent(err error) bool {
	var hk *HostKeyError
	var jk *JumpHostKeyError
	var oc *ssh.OpenChannelError
	switch {
	case errors.As(err, &hk), errors.As(err, &jk), errors.Is(err, ErrClosed):
		return true
	case errors.As(err, &oc):
		// The jump host forbids forwarding: it will not change by itself.
		return oc.Reason == ssh.Prohibited
	}
	var je *jumpError
	if errors.As(err, &je) {
		// The jump host answered but refused our key, or its name does
		// not resolve.
		var dns *net.DNSError
		return isAuthFailure(je.err) || (errors.As(je.err, &dns) && dns.IsNotFound)
	}
	return false
}

// jumpError marks a failure to reach or log in to the jump host.
type jumpError struct {
	jump Jump
	err  error
}

func (e *jumpError) Error() string {
	if isAuthFailure(e.err) {
		return fmt.Sprintf("jump host %s refused user %q with key %s (check the user in --ssh-jump and the key in --ssh-jump-key): %v",
			e.jump.Addr(), e.jump.User, Fingerprint(e.jump.Signer.PublicKey()), e.err)
	}
	return fmt.Sprintf("jump host %s: %v", e.jump.Addr(), e.err)
}

func (e *jumpError) Unwrap() error { return e.err }

func recipeLabel(recipe string) string {
	if recipe == "" {
		return "unnamed script"
	}
	return "recipe " + recipe
}
