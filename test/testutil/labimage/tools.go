package labimage

import (
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// DefaultApplets are the busybox applets the tools layer links in /bin: a
// shell and the coreutils-like commands scripts and init containers use
// (Flannel's run `cp -f`).
var DefaultApplets = []string{
	"[", "[[", "ash", "awk", "basename", "cat", "chmod", "chown", "cp",
	"cut", "date", "dirname", "echo", "env", "false", "find", "grep",
	"head", "hostname", "id", "kill", "ln", "ls", "mkdir", "mktemp", "mv",
	"printf", "ps", "readlink", "realpath", "rm", "rmdir", "sed", "sh",
	"sleep", "sort", "stat", "tail", "tee", "test", "touch", "tr", "true",
	"uname", "uniq", "wc", "which", "xargs",
}

// XtablesNames are the commands the tools layer links to
// xtables-nft-multi in /usr/sbin: what kube-proxy and flanneld run.
var XtablesNames = []string{
	"iptables", "iptables-save", "iptables-restore",
	"ip6tables", "ip6tables-save", "ip6tables-restore",
	"iptables-nft", "iptables-nft-save", "iptables-nft-restore",
	"ip6tables-nft", "ip6tables-nft-save", "ip6tables-nft-restore",
}

// Tools names the host files of the tools layer. Its zero value takes
// those of Debian's packages busybox-static (or busybox) and iptables on
// amd64.
type Tools struct {
	// Busybox is the busybox binary; default /bin/busybox. It goes to
	// /bin/busybox, with Applets linked to it.
	Busybox string
	// Applets are linked in /bin; default DefaultApplets, less those this
	// busybox lacks (as `busybox --list` says).
	Applets []string
	// Xtables is the nf_tables iptables binary; default
	// /usr/sbin/xtables-nft-multi. It goes to /usr/sbin/xtables-nft-multi,
	// with XtablesNames linked to it.
	Xtables string
	// XtablesLibDir holds iptables' extensions (libxt_*.so, loaded at run
	// time), copied at the same path; default
	// /usr/lib/x86_64-linux-gnu/xtables.
	XtablesLibDir string
	// LibDirs are searched, in order, for the shared libraries the copied
	// programs need (ELF DT_NEEDED, recursively); default the amd64
	// multiarch and classic library directories.
	LibDirs []string
}

func (t Tools) withDefaults() Tools {
	if t.Busybox == "" {
		t.Busybox = "/bin/busybox"
	}
	if t.Xtables == "" {
		t.Xtables = "/usr/sbin/xtables-nft-multi"
	}
	if t.XtablesLibDir == "" {
		t.XtablesLibDir = "/usr/lib/x86_64-linux-gnu/xtables"
	}
	if t.LibDirs == nil {
		t.LibDirs = []string{
			"/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu",
			"/usr/lib64", "/lib64", "/usr/lib", "/lib",
		}
	}
	if t.Applets == nil {
		t.Applets = DefaultApplets
		if out, err := exec.Command(t.Busybox, "--list").Output(); err == nil {
			has := map[string]bool{}
			for _, a := range strings.Fields(string(out)) {
				has[a] = true
			}
			t.Applets = nil
			for _, a := range DefaultApplets {
				if has[a] {
					t.Applets = append(t.Applets, a)
				}
			}
		}
	}
	return t
}

// Files lists the entries of the tools layer: busybox and its applets,
// xtables-nft-multi and its names, iptables' extensions, and every shared
// library (and the dynamic loader) these need, each library at its real
// path with a link at every other path that names it (its soname, the
// loader's path in PT_INTERP). It fails when a file is missing: install
// the Debian packages busybox-static and iptables.
func (t Tools) Files() ([]File, error) {
	t = t.withDefaults()
	c := &collector{libDirs: t.LibDirs, have: map[string]bool{}}
	for _, p := range []string{t.Busybox, t.Xtables} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("tools layer: %w (install the Debian packages busybox-static and iptables)", err)
		}
	}
	if err := c.copy("/bin/busybox", t.Busybox); err != nil {
		return nil, err
	}
	for _, a := range t.Applets {
		c.link("/bin/"+a, "busybox")
	}
	if err := c.copy("/usr/sbin/xtables-nft-multi", t.Xtables); err != nil {
		return nil, err
	}
	for _, n := range XtablesNames {
		c.link("/usr/sbin/"+n, "xtables-nft-multi")
	}
	ext, err := os.ReadDir(t.XtablesLibDir)
	if err != nil {
		return nil, fmt.Errorf("tools layer: iptables extensions: %w", err)
	}
	for _, e := range ext {
		if strings.HasSuffix(e.Name(), ".so") {
			if err := c.host(filepath.Join(t.XtablesLibDir, e.Name())); err != nil {
				return nil, err
			}
		}
	}
	return c.files, nil
}

// ToolsLayer makes the tools layer of t (see Tools.Files).
func ToolsLayer(t Tools) (v1.Layer, error) {
	files, err := t.Files()
	if err != nil {
		return nil, err
	}
	return FilesLayer(files)
}

// collector gathers layer entries, each path once.
type collector struct {
	libDirs []string
	have    map[string]bool
	files   []File
}

func (c *collector) link(p, target string) {
	if !c.have[p] {
		c.have[p] = true
		c.files = append(c.files, File{Path: p, Link: target})
	}
}

// copy adds the host file src at image path p, with what it needs.
func (c *collector) copy(p, src string) error {
	if c.have[p] {
		return nil
	}
	c.have[p] = true
	c.files = append(c.files, File{Path: p, Src: src})
	return c.needs(src)
}

// host adds the host path p at the same path: its real file, and p as a
// link to it when p is (or goes through) a symbolic link.
func (c *collector) host(p string) error {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return fmt.Errorf("tools layer: %w", err)
	}
	if real != p {
		c.link(p, real)
	}
	return c.copy(real, real)
}

// needs adds the dynamic loader and the shared libraries the ELF file f
// needs; a file that is not ELF needs nothing.
func (c *collector) needs(f string) error {
	ef, err := elf.Open(f)
	if err != nil {
		var fe *elf.FormatError
		if errors.As(err, &fe) {
			return nil
		}
		return fmt.Errorf("tools layer: %w", err)
	}
	defer ef.Close()
	for _, prog := range ef.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, prog.Filesz)
		if _, err := prog.ReadAt(b, 0); err != nil {
			return fmt.Errorf("tools layer: %s: interpreter: %w", f, err)
		}
		if err := c.host(strings.TrimRight(string(b), "\x00")); err != nil {
			return err
		}
	}
	libs, err := ef.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("tools layer: %s: %w", f, err)
	}
	for _, lib := range libs {
		p, err := c.find(lib)
		if err != nil {
			return fmt.Errorf("tools layer: %s needs %s: %w", f, lib, err)
		}
		if err := c.host(p); err != nil {
			return err
		}
	}
	return nil
}

// find looks a library up in the library directories.
func (c *collector) find(lib string) (string, error) {
	if strings.Contains(lib, "/") {
		return lib, nil
	}
	for _, d := range c.libDirs {
		p := filepath.Join(d, lib)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fs.ErrNotExist
}
