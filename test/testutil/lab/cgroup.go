//go:build lab && linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Every process the lab starts lives in a cgroup lab/<name> under every
// hierarchy of /sys/fs/cgroup (cgroup v1 hybrid here): a host's nspawn
// loop and everything in the host, the jump host's sshd. So stopping
// anything is "kill the cgroup", which also finds what a lab killed with
// SIGKILL left behind.
const (
	cgroupFS     = "/sys/fs/cgroup"
	cgroupParent = "lab"
)

// hierarchies lists the mounted cgroup hierarchies under /sys/fs/cgroup.
func hierarchies() ([]string, error) {
	all, err := mounts()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range all {
		if (m.fstype == "cgroup" || m.fstype == "cgroup2") && filepath.Dir(m.point) == cgroupFS {
			out = append(out, m.point)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no cgroup hierarchy is mounted under " + cgroupFS)
	}
	sort.Strings(out)
	return out, nil
}

// cgroupDirs are the directories of cgroup lab/<name>, one per hierarchy.
func cgroupDirs(name string) ([]string, error) {
	hs, err := hierarchies()
	if err != nil {
		return nil, err
	}
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = filepath.Join(h, cgroupParent, name)
	}
	return out, nil
}

// makeCgroup creates lab/<name> under every hierarchy and returns its
// directories. A new cpuset has no CPUs and no memory nodes: they are
// copied from the parent first.
func makeCgroup(name string) ([]string, error) {
	hs, err := hierarchies()
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, h := range hs {
		parent := filepath.Join(h, cgroupParent)
		dir := filepath.Join(parent, name)
		for _, d := range []string{parent, dir} {
			if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return nil, fmt.Errorf("cgroup %s: %w", d, err)
			}
			if _, err := os.Stat(filepath.Join(d, "cpuset.cpus")); err == nil {
				if err := inheritCpuset(d); err != nil {
					return nil, err
				}
			}
		}
		dirs = append(dirs, dir)
	}
	return dirs, nil
}

// inheritCpuset copies cpuset.cpus and cpuset.mems from dir's parent when
// dir has none.
func inheritCpuset(dir string) error {
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		cur, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return fmt.Errorf("cgroup %s: %w", dir, err)
		}
		if strings.TrimSpace(string(cur)) != "" {
			continue
		}
		v, err := os.ReadFile(filepath.Join(filepath.Dir(dir), f))
		if err != nil {
			return fmt.Errorf("cgroup %s: %w", dir, err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
			return fmt.Errorf("cgroup %s: set %s: %w", dir, f, err)
		}
	}
	return nil
}

// cgroupPids lists the processes in dir and every cgroup below it.
func cgroupPids(dir string) []int {
	var pids []int
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// killCgroup kills every process in lab/<name> (and below, in every
// hierarchy) and waits until none is left. Killing a host's PID 1 ends
// every process of its PID namespace.
func killCgroup(ctx context.Context, name string) error {
	dirs, err := cgroupDirs(name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return poll(ctx, 50*time.Millisecond, "the processes of cgroup lab/"+name+" to end", func() (bool, error) {
		left := 0
		for _, dir := range dirs {
			// cgroup v2 kills a whole subtree at once.
			_ = os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0o644)
			for _, pid := range cgroupPids(dir) {
				if err := unix.Kill(pid, unix.SIGKILL); err == nil || !errors.Is(err, unix.ESRCH) {
					left++
				}
			}
		}
		return left == 0, nil
	})
}

// removeCgroup kills what is left in lab/<name> and removes it (and the
// cgroups the host's systemd made below it) from every hierarchy.
func removeCgroup(ctx context.Context, name string) error {
	if err := killCgroup(ctx, name); err != nil {
		return err
	}
	dirs, err := cgroupDirs(name)
	if err != nil {
		return err
	}
	var errs []error
	for _, dir := range dirs {
		if err := rmdirTree(ctx, dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// clearCgroupChildren removes every cgroup below each of dirs, keeping
// dirs themselves (what is in them must have been killed).
func clearCgroupChildren(ctx context.Context, dirs []string) error {
	var errs []error
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		for _, e := range entries {
			if e.IsDir() {
				if err := rmdirTree(ctx, filepath.Join(dir, e.Name())); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// rmdirTree removes a cgroup directory and its children, deepest first
// (a cgroup is removed with rmdir, never by deleting its files). A cgroup
// whose last process just died can be busy for a moment.
func rmdirTree(ctx context.Context, dir string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return poll(ctx, 50*time.Millisecond, "removing cgroup "+dir, func() (bool, error) {
		var subdirs []string
		_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				subdirs = append(subdirs, p)
			}
			return nil
		})
		var last error
		for i := len(subdirs) - 1; i >= 0; i-- {
			if err := unix.Rmdir(subdirs[i]); err != nil && !errors.Is(err, unix.ENOENT) {
				last = fmt.Errorf("rmdir %s: %w", subdirs[i], err)
			}
		}
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			return true, nil
		}
		return false, last
	})
}

// labCgroups lists the names under lab/ (in any hierarchy) that start
// with prefix.
func labCgroups(prefix string) []string {
	hs, err := hierarchies()
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for _, h := range hs {
		entries, _ := os.ReadDir(filepath.Join(h, cgroupParent))
		for _, e := range entries {
			if e.IsDir() && strings.HasPrefix(e.Name(), prefix) && !seen[e.Name()] {
				seen[e.Name()] = true
				out = append(out, e.Name())
			}
		}
	}
	sort.Strings(out)
	return out
}

// joinCgroupScript is a shell prologue that moves the shell itself into
// the cgroup directories dirs (before it starts anything), so that the
// processes it starts are born there.
func joinCgroupScript(dirs []string) string {
	var b strings.Builder
	for _, d := range dirs {
		fmt.Fprintf(&b, "echo $$ > %s/cgroup.procs || exit 97\n", d)
	}
	return b.String()
}
