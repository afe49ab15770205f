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
)

// A lab's runtime directory holds an owner file: the PID and start time
// of the process that made the lab. A lab whose owner is gone (killed
// with SIGKILL, say) is stale, and CleanStale removes what it left.
const ownerFile = "owner"

// writeOwner records this process as the owner of the lab in dir.
func writeOwner(dir string) error {
	pid := os.Getpid()
	st, err := startTime(pid)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, ownerFile), fmt.Appendf(nil, "%d %s\n", pid, st), 0o600)
}

// startTime is a process's start time in clock ticks since boot, which
// tells it from a later process with the same PID.
func startTime(pid int) (string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", err
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return "", fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return "", fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	return f[19], nil // field 22: starttime
}

// ownerAlive reports whether the process that made lab id still runs.
func ownerAlive(id string) bool {
	b, err := os.ReadFile(filepath.Join(RuntimeRoot, id, ownerFile))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return false
	}
	st, err := startTime(pid)
	return err == nil && st == f[1]
}

// labIDs lists the IDs of every lab that left a trace on this machine: a
// runtime directory, a network namespace or a cgroup.
func labIDs() []string {
	seen := map[string]bool{}
	entries, _ := os.ReadDir(RuntimeRoot)
	for _, e := range entries {
		if e.IsDir() {
			seen[e.Name()] = true
		}
	}
	for _, n := range append(netnsNames(NamePrefix), labCgroups(NamePrefix)...) {
		id, _, _ := strings.Cut(strings.TrimPrefix(n, NamePrefix), "-")
		seen[id] = true
	}
	var ids []string
	for id := range seen {
		if id != "" {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// CleanStale removes what labs whose process is gone left on this
// machine (their processes, overlay mounts, network namespaces, cgroups
// and runtime directories) and returns their IDs. Labs of live processes
// are left alone. Start calls it.
func CleanStale(ctx context.Context) ([]string, error) {
	var cleaned []string
	var errs []error
	for _, id := range labIDs() {
		if ownerAlive(id) {
			continue
		}
		if err := cleanLab(ctx, id, func(string, ...any) {}); err != nil {
			errs = append(errs, fmt.Errorf("lab %s: %w", id, err))
		}
		cleaned = append(cleaned, id)
	}
	return cleaned, errors.Join(errs...)
}

// cleanLab removes everything of lab id, in an order that always works:
// kill its processes (by cgroup), unmount its overlays, delete its network
// namespaces (and with them its veths and bridge), remove its cgroups and
// its runtime directory.
func cleanLab(ctx context.Context, id string, logf func(string, ...any)) error {
	prefix := NamePrefix + id
	var errs []error
	groups := labCgroups(prefix)
	for _, g := range groups {
		if g != prefix && !strings.HasPrefix(g, prefix+"-") {
			continue
		}
		if err := killCgroup(ctx, g); err != nil {
			errs = append(errs, err)
		}
	}
	dir := filepath.Join(RuntimeRoot, id)
	if err := unmountUnder(dir); err != nil {
		errs = append(errs, err)
	}
	for _, ns := range netnsNames(prefix) {
		if ns != prefix && !strings.HasPrefix(ns, prefix+"-") {
			continue
		}
		if err := deleteNetns(ctx, ns); err != nil {
			errs = append(errs, err)
		}
	}
	for _, g := range groups {
		if g != prefix && !strings.HasPrefix(g, prefix+"-") {
			continue
		}
		if err := removeCgroup(ctx, g); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := os.Stat(dir); err == nil {
		if err := removeTree(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// leftovers lists what of lab id is still on the machine.
func leftovers(id string) []string {
	prefix := NamePrefix + id
	var out []string
	for _, ns := range netnsNames(prefix) {
		out = append(out, "netns "+ns)
	}
	for _, g := range labCgroups(prefix) {
		out = append(out, "cgroup lab/"+g)
	}
	dir := filepath.Join(RuntimeRoot, id)
	if m, _ := mountsUnder(dir); len(m) > 0 {
		out = append(out, "mounts "+strings.Join(m, ", "))
	}
	if _, err := os.Stat(dir); err == nil {
		out = append(out, "directory "+dir)
	}
	return out
}

// Leftovers lists what lab id left on this machine (network namespaces,
// cgroups, mounts, its runtime directory): nothing after Close.
func Leftovers(id string) []string { return leftovers(id) }
