//go:build lab && linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// netnsDir is where "ip netns" keeps named network namespaces.
const netnsDir = "/run/netns"

// netnsPath is the file of the named network namespace name.
func netnsPath(name string) string { return filepath.Join(netnsDir, name) }

// addNetns creates the named network namespace name with its loopback up.
func addNetns(ctx context.Context, name string) error {
	if _, err := run(ctx, "ip", "netns", "add", name); err != nil {
		return err
	}
	_, err := ipIn(ctx, name, "link", "set", "lo", "up")
	return err
}

// deleteNetns deletes the named network namespace name (and with it the
// interfaces in it); a missing one is not an error.
func deleteNetns(ctx context.Context, name string) error {
	if _, err := os.Stat(netnsPath(name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	_, err := run(ctx, "ip", "netns", "delete", name)
	return err
}

// netnsNames lists the named network namespaces that start with prefix.
func netnsNames(prefix string) []string {
	entries, _ := os.ReadDir(netnsDir)
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// ipIn runs "ip" in the named network namespace ns.
func ipIn(ctx context.Context, ns string, args ...string) ([]byte, error) {
	return run(ctx, "ip", append([]string{"-n", ns}, args...)...)
}

// inNetns runs fn on an OS thread that is in the network namespace at
// path, then puts the thread back. A socket keeps the namespace it was
// created in, so fn may create sockets (a dial, a listen) and return them
// for use from any goroutine. If the thread cannot be put back it is left
// locked, and Go ends it with its goroutine.
func inNetns(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open this thread's network namespace: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open(path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open network namespace %s: %w", path, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace %s: %w", path, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Stay locked: this thread must never run other goroutines.
			errc <- errors.Join(ferr, fmt.Errorf("leave network namespace %s: %w", path, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// dialIn opens a TCP connection from inside the network namespace at path.
func dialIn(ctx context.Context, path, addr string) (net.Conn, error) {
	var conn net.Conn
	err := inNetns(path, func() error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		conn = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s in %s: %w", addr, filepath.Base(path), err)
	}
	return conn, nil
}

// writeSysctlIn writes a /proc/sys/net value as seen from the network
// namespace at path (those files belong to the namespace of who opens
// them).
func writeSysctlIn(path, key, value string) error {
	return inNetns(path, func() error {
		p := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
		}
		return nil
	})
}
