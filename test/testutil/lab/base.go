//go:build lab && linux

package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The base root: Debian bookworm, what a golden AMI for air-gapped hosts
// holds. Lab hosts have no route out of the machine, so every OS package a
// bootstrap script may need must be in the image.
const (
	baseSuite  = "bookworm"
	baseMirror = "http://deb.debian.org/debian"
	// baseRecipeVersion changes when a build step changes in a way the
	// lists and files below do not show; it is part of the recipe hash.
	baseRecipeVersion = "1"
)

// debootstrapPackages are installed by debootstrap itself (minbase).
var debootstrapPackages = []string{
	"systemd", "systemd-sysv", "dbus", "libpam-systemd", "openssh-server",
	"iproute2", "ca-certificates", "curl",
}

// aptPackages are installed with apt-get in the chroot afterwards:
// debootstrap's --include cannot resolve cloud-init's virtual
// dependencies.
var aptPackages = []string{
	"cloud-init", "sudo", "iptables", "kmod", "gpg", "conntrack", "socat",
	"ethtool", "containerd", "haproxy", "procps", "less", "netbase",
	"python3-cryptography", "ebtables",
}

// disabledUnits are present but not started at boot: kforge's scripts
// configure and enable them.
var disabledUnits = []string{"containerd.service", "haproxy.service"}

// labInit is PID 1 of every host. nspawn mounts the legacy cgroup
// controllers read-only; they must be writable before systemd starts, or
// systemd never manages memory, pids and devices (which the kubelet's
// systemd cgroup driver needs). The kubelet also refuses to start without
// /dev/kmsg.
const labInit = `#!/bin/sh
# PID 1 of a kforge lab host (test/testutil/lab): make this host's cgroup
# hierarchies writable before systemd starts, give the kubelet a
# /dev/kmsg, then become systemd.
for d in /sys/fs/cgroup/*/; do
	mount -o remount,bind,rw "$d" || echo "lab-init: cannot remount $d read-write" >&2
done
[ -e /dev/kmsg ] || ln -s /dev/console /dev/kmsg
exec /lib/systemd/systemd "$@"
`

// cloudConfig configures cloud-init in the base: the NoCloud seed the
// lab writes before boot, and the defaults of Ubuntu's cloud images.
const cloudConfig = `# Installed by kforge's lab (test/testutil/lab). The lab writes each host's
# NoCloud seed (/var/lib/cloud/seed/nocloud) from its EC2 instance before
# the host boots.
datasource_list: [NoCloud, None]
# eth0 is configured from outside the host, as the VPC does it: cloud-init
# must not render a DHCP configuration of its own.
network:
  config: disabled
# The root is an overlay of a directory: no partition to grow, no boot
# loader.
growpart:
  mode: "off"
resize_rootfs: false
grub_dpkg:
  enabled: false
# Ubuntu's cloud images log in as "ubuntu", with passwordless sudo.
system_info:
  default_user:
    name: ubuntu
    lock_passwd: true
    gecos: Ubuntu
    groups: [adm, audio, cdrom, dialout, dip, floppy, plugdev, sudo, video]
    sudo: ["ALL=(ALL) NOPASSWD:ALL"]
    shell: /bin/bash
`

// journaldConfig keeps journald off /dev/kmsg (see baseFiles).
const journaldConfig = `# Installed by kforge's lab (test/testutil/lab): /dev/kmsg is a link to
# the console here (for the kubelet), not the kernel's log.
[Journal]
ReadKMsg=no
`

// baseFile is a file the recipe writes into the base.
type baseFile struct {
	path string
	mode os.FileMode
	data string
}

var baseFiles = []baseFile{
	{"/usr/local/sbin/lab-init", 0o755, labInit},
	{"/etc/cloud/cloud.cfg.d/90_kforge_lab.cfg", 0o644, cloudConfig},
	// As on Ubuntu's cloud images. It also keeps cloud-init's locale
	// module from running update-locale, which minbase lacks.
	{"/etc/default/locale", 0o644, "LANG=C.UTF-8\n"},
	// lab-init links /dev/kmsg to the console for the kubelet; journald
	// reading it gets end-of-file at once, again and again, and spins at
	// a whole CPU (and takes 10 s to stop).
	{"/etc/systemd/journald.conf.d/90-kforge-lab.conf", 0o644, journaldConfig},
	// Each host writes its own hostname and machine ID.
	{"/etc/hostname", 0o644, "localhost\n"},
	{"/etc/machine-id", 0o444, ""},
}

// baseRemoved are removed from the base: host keys come from each
// instance's user-data (a key in the base would be every host's key until
// cloud-init replaces it); resolv.conf is per host.
var baseRemoved = []string{
	"/etc/ssh/ssh_host_*", "/etc/resolv.conf", "/var/lib/dbus/machine-id",
}

// packagesHash identifies the packages stage of the recipe (debootstrap
// and apt-get: the slow part).
func packagesHash() string {
	h := sha256.New()
	fmt.Fprintf(h, "version %s\nsuite %s\nmirror %s\n", baseRecipeVersion, baseSuite, baseMirror)
	fmt.Fprintf(h, "debootstrap %s\napt %s\ndisabled %s\n",
		strings.Join(debootstrapPackages, ","), strings.Join(aptPackages, ","), strings.Join(disabledUnits, ","))
	return hex.EncodeToString(h.Sum(nil))
}

// recipeHash identifies the whole base recipe: a change to any list or
// file above rebuilds the cached base (a change to the files alone
// reuses the packages stage: seconds, not minutes).
func recipeHash() string {
	h := sha256.New()
	fmt.Fprintf(h, "packages %s\nremoved %s\n", packagesHash(), strings.Join(baseRemoved, ","))
	for _, f := range baseFiles {
		fmt.Fprintf(h, "file %s %o %d\n%s", f.path, f.mode, len(f.data), f.data)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// CacheDir is where the lab caches its base root:
// $KFORGE_LAB_CACHE, else $HOME/.cache/kforge-lab.
func CacheDir() string {
	if d := os.Getenv("KFORGE_LAB_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/root"
	}
	return filepath.Join(home, ".cache", "kforge-lab")
}

// EnsureBase returns the directory of the base root every lab host boots
// from, <CacheDir>/base, building it first if it is missing or its recipe
// changed. It is built in two cached stages: <CacheDir>/packages
// (debootstrap and apt-get from the Debian mirror, about 2 minutes) and
// the base (a copy of the packages with the lab's files, seconds). Builds
// are serialised across processes with a lock file. Progress and the
// time it took go to stderr.
func EnsureBase(ctx context.Context) (string, error) {
	return ensureBase(ctx, stderrLogf)
}

func stderrLogf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kforge-lab: "+format+"\n", args...)
}

func ensureBase(ctx context.Context, logf func(string, ...any)) (string, error) {
	start := time.Now()
	cache := CacheDir()
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", fmt.Errorf("lab cache: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(cache, "base.lock"))
	if err != nil {
		return "", fmt.Errorf("lock the base: %w", err)
	}
	defer unlock()
	logFile, err := os.OpenFile(filepath.Join(cache, "base-build.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return "", fmt.Errorf("base build log: %w", err)
	}
	defer logFile.Close()

	pkgs, err := ensureStage(ctx, cache, "packages", packagesHash(), "usr/bin/cloud-init", logf, func(tmp string) error {
		logf("building the packages of the base root (debootstrap and apt-get from %s, about 2 minutes; log in %s)", baseMirror, logFile.Name())
		return buildPackages(ctx, tmp, logFile, logf)
	})
	if err != nil {
		return "", err
	}
	dir, err := ensureStage(ctx, cache, "base", recipeHash(), "usr/local/sbin/lab-init", logf, func(tmp string) error {
		return customiseBase(ctx, pkgs, tmp, logFile, logf)
	})
	if err != nil {
		return "", err
	}
	removeOldStages(cache, logf)
	logf("base root %s ready in %s", dir, time.Since(start).Round(100*time.Millisecond))
	return dir, nil
}

// ensureStage returns <cache>/<name>, building it with build (into a
// temporary directory, then renamed) unless <cache>/<name>.recipe says it
// was built from hash and marker exists in it.
func ensureStage(ctx context.Context, cache, name, hash, marker string, logf func(string, ...any), build func(tmp string) error) (string, error) {
	dir := filepath.Join(cache, name)
	stamp := filepath.Join(cache, name+".recipe")
	if got, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(got)) == hash {
		if _, err := os.Stat(filepath.Join(dir, marker)); err == nil {
			return dir, nil
		}
	}
	t0 := time.Now()
	tmp, err := os.MkdirTemp(cache, name+".tmp-")
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	built := false
	defer func() {
		if !built {
			if err := removeTree(tmp); err != nil {
				logf("leaving %s: %v", tmp, err)
			}
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	if err := build(tmp); err != nil {
		return "", fmt.Errorf("build %s (log: %s): %w", dir, filepath.Join(cache, "base-build.log"), err)
	}
	if err := os.Remove(stamp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	if _, err := os.Stat(dir); err == nil {
		// Hosts of a running lab may still use the old base as their
		// lower layer: set it aside and remove it once unused.
		if err := os.Rename(dir, fmt.Sprintf("%s.old-%d", dir, time.Now().UnixNano())); err != nil {
			return "", fmt.Errorf("set the old %s aside: %w", name, err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", fmt.Errorf("install %s: %w", dir, err)
	}
	built = true
	if err := os.WriteFile(stamp, []byte(hash+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("%s stamp: %w", name, err)
	}
	logf("%s built in %s (recipe %.12s)", dir, time.Since(t0).Round(100*time.Millisecond), hash)
	return dir, nil
}

// buildStep runs one build command, its output into log.
func buildStep(ctx context.Context, log io.Writer, logf func(string, ...any), what, name string, args ...string) error {
	t := time.Now()
	fmt.Fprintf(log, "\n### %s: %s %s\n", what, name, strings.Join(args, " "))
	cmd := command(ctx, name, args...)
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"DEBIAN_FRONTEND=noninteractive", "LC_ALL=C.UTF-8", "HOME=/root",
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %s %s: %w", what, name, strings.Join(args, " "), err)
	}
	logf("base: %s took %s", what, time.Since(t).Round(100*time.Millisecond))
	return nil
}

// buildPackages makes the packages stage in root: debootstrap, then
// apt-get in the chroot, with no service started and the packages'
// caches cleaned.
func buildPackages(ctx context.Context, root string, log io.Writer, logf func(string, ...any)) error {
	chroot := func(what string, args ...string) error {
		return buildStep(ctx, log, logf, what, "chroot", append([]string{root}, args...)...)
	}
	if err := buildStep(ctx, log, logf, "debootstrap", "debootstrap", "--variant=minbase",
		"--include="+strings.Join(debootstrapPackages, ","), baseSuite, root, baseMirror); err != nil {
		return err
	}
	// While building: no service starts (policy-rc.d), the mirror's
	// Release files may be older than their Valid-Until, and apt needs the
	// machine's resolver.
	buildOnly := []baseFile{
		{"/usr/sbin/policy-rc.d", 0o755, "#!/bin/sh\nexit 101\n"},
		{"/etc/apt/apt.conf.d/99kforge-lab-build", 0o644, "Acquire::Check-Valid-Until \"false\";\n"},
	}
	resolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return fmt.Errorf("read the machine's resolv.conf: %w", err)
	}
	buildOnly = append(buildOnly, baseFile{"/etc/resolv.conf", 0o644, string(resolv)})
	if err := writeFiles(root, buildOnly); err != nil {
		return err
	}
	if err := chroot("apt-get update", "apt-get", "update"); err != nil {
		return err
	}
	if err := chroot("apt-get install", append([]string{"apt-get", "install", "-y", "--no-install-recommends"}, aptPackages...)...); err != nil {
		return err
	}
	if err := chroot("disable units", append([]string{"systemctl", "disable"}, disabledUnits...)...); err != nil {
		return err
	}
	if err := chroot("apt-get clean", "apt-get", "clean"); err != nil {
		return err
	}
	for _, f := range buildOnly {
		if err := os.Remove(filepath.Join(root, f.path)); err != nil {
			return fmt.Errorf("base: %w", err)
		}
	}
	return nil
}

// customiseBase makes the base in root: a copy of the packages stage
// with the lab's files, and without what each host must have its own.
func customiseBase(ctx context.Context, pkgs, root string, log io.Writer, logf func(string, ...any)) error {
	if err := buildStep(ctx, log, logf, "copy the packages", "cp", "-a", pkgs+"/.", root+"/"); err != nil {
		return err
	}
	for _, pattern := range baseRemoved {
		matches, err := filepath.Glob(filepath.Join(root, pattern))
		if err != nil {
			return fmt.Errorf("base: %w", err)
		}
		for _, m := range matches {
			if err := os.Remove(m); err != nil {
				return fmt.Errorf("base: %w", err)
			}
		}
	}
	if err := writeFiles(root, baseFiles); err != nil {
		return err
	}
	// dbus reads the machine ID each host writes to /etc/machine-id.
	if err := os.Symlink("/etc/machine-id", filepath.Join(root, "var/lib/dbus/machine-id")); err != nil {
		return fmt.Errorf("base: %w", err)
	}
	return nil
}

// writeFiles writes files under root, creating their directories and
// replacing what is there.
func writeFiles(root string, files []baseFile) error {
	for _, f := range files {
		p := filepath.Join(root, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("write %s: %w", f.path, err)
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("write %s: %w", f.path, err)
		}
		if err := os.WriteFile(p, []byte(f.data), f.mode); err != nil {
			return fmt.Errorf("write %s: %w", f.path, err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			return fmt.Errorf("write %s: %w", f.path, err)
		}
	}
	return nil
}

// removeOldStages removes stages set aside by a rebuild once no overlay
// uses them any more.
func removeOldStages(cache string, logf func(string, ...any)) {
	old, _ := filepath.Glob(filepath.Join(cache, "*.old-*"))
	for _, dir := range old {
		if inUse, err := overlayUses(dir); err != nil || inUse {
			continue
		}
		if err := removeTree(dir); err != nil {
			logf("cannot remove the old %s: %v", dir, err)
		}
	}
}

// lockFile takes an exclusive flock on path, waiting until ctx ends.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	err = poll(ctx, 200*time.Millisecond, "the lock "+path, func() (bool, error) {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return true, nil
		}
		if errors.Is(err, unix.EWOULDBLOCK) {
			return false, nil
		}
		return true, err
	})
	if err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}
