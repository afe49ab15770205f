package sshx

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/kforge/kforge/internal/spec"
)

// DefaultJumpPort is the jump host's port when --ssh-jump names none.
const DefaultJumpPort = 22

// Jump is an SSH server through which the VMs are reached at their private
// addresses, as OpenSSH's ProxyJump does.
type Jump struct {
	User string
	Host string
	Port int
	// Signer logs in to the jump host; nil means the cluster key
	// (Config.Signer).
	Signer ssh.Signer
	// KnownHosts are the known_hosts files the jump host's key is checked
	// against; empty means DefaultKnownHosts. Files that do not exist count
	// as empty.
	KnownHosts []string
}

// ParseJump parses the --ssh-jump form "user@host[:port]" (IPv6 hosts in
// brackets). Signer and KnownHosts are left for the caller. Invalid input
// is a spec.UsageError.
func ParseJump(s string) (Jump, error) {
	at := strings.LastIndex(s, "@")
	if at <= 0 || at == len(s)-1 {
		return Jump{}, spec.Usagef("invalid --ssh-jump %q: want user@host[:port], for example ubuntu@bastion.example.com:22", s)
	}
	j := Jump{User: s[:at], Port: DefaultJumpPort}
	hostport := s[at+1:]
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		// No port: the whole rest is the host.
		host = strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
		port = ""
	}
	if host == "" || strings.ContainsAny(host, " /@") {
		return Jump{}, spec.Usagef("invalid --ssh-jump %q: the host is missing or malformed; want user@host[:port]", s)
	}
	j.Host = host
	if port != "" {
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return Jump{}, spec.Usagef("invalid --ssh-jump %q: port %q is not a number from 1 to 65535", s, port)
		}
		j.Port = p
	}
	return j, nil
}

// Addr is the jump host's "host:port".
func (j Jump) Addr() string {
	port := j.Port
	if port == 0 {
		port = DefaultJumpPort
	}
	return net.JoinHostPort(j.Host, strconv.Itoa(port))
}

// String is the "user@host:port" form ParseJump reads.
func (j Jump) String() string { return j.User + "@" + j.Addr() }

// DefaultKnownHosts is ~/.ssh/known_hosts, with the home directory taken
// from $HOME.
func DefaultKnownHosts() (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find ~/.ssh/known_hosts for the jump host: %w", err)
	}
	return filepath.Join(home, ".ssh", "known_hosts"), nil
}

// hostKeyCheck returns the callback that verifies the jump host's key
// against the known_hosts files, and the host key algorithms to ask for:
// those of the keys listed for the host, so that a server with several host
// keys shows the one known_hosts has (as OpenSSH does).
func (j Jump) hostKeyCheck() (ssh.HostKeyCallback, []string, error) {
	files := j.KnownHosts
	if len(files) == 0 {
		f, err := DefaultKnownHosts()
		if err != nil {
			return nil, nil, err
		}
		files = []string{f}
	}
	var existing []string
	for _, f := range files {
		_, err := os.Stat(f)
		switch {
		case err == nil:
			existing = append(existing, f)
		case !errors.Is(err, fs.ErrNotExist):
			return nil, nil, fmt.Errorf("read known_hosts: %w", err)
		}
	}
	var db ssh.HostKeyCallback
	if len(existing) > 0 {
		var err error
		if db, err = knownhosts.New(existing...); err != nil {
			return nil, nil, fmt.Errorf("read known_hosts %s: %w", strings.Join(existing, ", "), err)
		}
	}
	addr := j.Addr()
	var algos []string
	if db != nil {
		// Ask the database with a key no host has, to learn the listed ones.
		probe, err := ssh.NewPublicKey(ed25519.PublicKey(make([]byte, ed25519.PublicKeySize)))
		if err != nil {
			return nil, nil, err
		}
		var ke *knownhosts.KeyError
		if err := db(addr, &net.TCPAddr{IP: net.IPv4zero}, probe); errors.As(err, &ke) {
			for _, k := range ke.Want {
				for _, a := range algorithmsFor(k.Key) {
					if !slices.Contains(algos, a) {
						algos = append(algos, a)
					}
				}
			}
		}
	}
	check := func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		e := &JumpHostKeyError{Host: addr, Presented: Fingerprint(key), Files: files}
		if db == nil {
			return e
		}
		err := db(hostname, remote, key)
		if err == nil {
			return nil
		}
		var ke *knownhosts.KeyError
		var re *knownhosts.RevokedError
		switch {
		case errors.As(err, &re):
			e.Revoked = true
		case errors.As(err, &ke):
			for _, k := range ke.Want {
				e.Known = append(e.Known, fmt.Sprintf("%s:%d %s", k.Filename, k.Line, Fingerprint(k.Key)))
			}
		default:
			return fmt.Errorf("check the jump host key against known_hosts: %w", err)
		}
		return e
	}
	return check, algos, nil
}

// algorithmsFor lists the host key algorithms under which a server can
// present key.
func algorithmsFor(key ssh.PublicKey) []string {
	if key.Type() == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{key.Type()}
}

// splitHostPort splits "host:port", tolerating a missing port.
func splitHostPort(addr string) (host, port string) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, strconv.Itoa(DefaultJumpPort)
	}
	return h, p
}

// knownHostsName is how known_hosts names host:port ("host" for port 22,
// "[host]:port" otherwise).
func knownHostsName(host, port string) string {
	return knownhosts.Normalize(net.JoinHostPort(host, port))
}
