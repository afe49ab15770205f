// Package labartifacts lays out an artifacts directory (see package
// artifacts) from what the lab built on this machine: binaries from the Go
// module sources and container images made from them, in exactly the
// layout and with the names kforge asks for, with SHA256SUMS. kforge then
// installs a cluster from it with --artifacts, as it would from a
// directory filled by `kforge artifacts fetch`.
package labartifacts

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/kforge/kforge/internal/artifacts"
)

// Inputs are what the lab built.
type Inputs struct {
	// Bin holds the binaries (scripts/build-lab.sh): kubeadm, kubelet,
	// kubectl, etcd, etcdctl, etcdutl, bridge, host-local, loopback,
	// portmap, ...
	Bin string
	// Images maps an image reference to its docker-archive tarball.
	Images map[string]string
	// Arch is the Debian architecture of the binaries.
	Arch string
}

// cniPlugins are the CNI plugins Flannel delegates to.
var cniPlugins = []string{"bridge", "host-local", "loopback", "portmap"}

// Assemble writes the files of set that a kubeadm cluster of one
// architecture installs into dir, in the artifacts layout, and the
// SHA256SUMS of them all. Files are hard-linked (copied across file
// systems) from the inputs; tarballs are written fresh.
func Assemble(ctx context.Context, set artifacts.Set, in Inputs, dir string) error {
	files, err := set.All([]string{in.Arch}, true)
	if err != nil {
		return err
	}
	sums := artifacts.Sums{}
	for _, f := range files {
		if f.Arch != "" && f.Arch != in.Arch {
			continue
		}
		if set.Bootstrap == artifacts.Kubeadm && strings.HasPrefix(f.Path, "k3s/") {
			continue
		}
		dst := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		switch {
		case f.Image != "":
			src, ok := in.Images[f.Image]
			if !ok {
				return fmt.Errorf("labartifacts: no image %s was built", f.Image)
			}
			err = link(src, dst)
		case f.Path == set.EtcdTarball(in.Arch):
			err = writeTarball(dst, fmt.Sprintf("etcd-%s-linux-%s/", set.Etcd, in.Arch), in.Bin, []string{"etcd", "etcdctl", "etcdutl"})
		case f.Path == set.CNIPluginsTarball(in.Arch):
			err = writeTarball(dst, "./", in.Bin, cniPlugins)
		case strings.HasPrefix(f.Path, "kubernetes/"):
			err = link(filepath.Join(in.Bin, filepath.Base(f.Path)), dst)
		default:
			err = fmt.Errorf("labartifacts: the lab does not build %s", f.Path)
		}
		if err != nil {
			return err
		}
		if sums[f.Path], err = artifacts.HashFile(ctx, dst); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, artifacts.SumsFile), sums.Format(), 0o644)
}

// link hard-links src at dst, or copies it.
func link(src, dst string) error {
	_ = os.Remove(dst)
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// writeTarball writes a gzipped tarball of the named files of dir under
// prefix, as the upstream release tarballs are made (etcd's under a
// directory, the CNI plugins' at "./").
func writeTarball(dst, prefix, dir string, names []string) error {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer f.Close()
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	sorted := append([]string(nil), names...)
	sort.Strings(sorted)
	if prefix != "./" {
		if err := tw.WriteHeader(&tar.Header{Name: prefix, Mode: 0o755, Typeflag: tar.TypeDir}); err != nil {
			return err
		}
	}
	for _, n := range sorted {
		src := filepath.Join(dir, n)
		st, err := os.Stat(src)
		if err != nil {
			return fmt.Errorf("labartifacts: %w", err)
		}
		if err := tw.WriteHeader(&tar.Header{Name: prefix + n, Mode: 0o755, Size: st.Size(), Typeflag: tar.TypeReg, ModTime: st.ModTime()}); err != nil {
			return err
		}
		in, err := os.Open(src)
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, in)
		in.Close()
		if err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := gz.Close(); err != nil {
		return err
	}
	return f.Close()
}
