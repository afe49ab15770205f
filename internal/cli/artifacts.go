package cli

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kforge/kforge/internal/artifacts"
	"github.com/kforge/kforge/internal/ha"
	"github.com/kforge/kforge/internal/spec"
)

func (a *App) artifactsCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "artifacts",
		Short: "Prepare what ha-aws VMs install, for clusters without internet access",
		Long: `An artifacts directory holds everything the VMs of an ha-aws cluster install
(etcd, the Kubernetes binaries or k3s, the CNI plugins, the container images),
with the SHA-256 of each in SHA256SUMS. Give it to create, scale or upgrade
with --artifacts DIR and kforge uploads what each VM needs over SSH, so the
VMs need no outbound access; serve the same directory over HTTP(S) and give
its URL instead to have the VMs download from it.

Layout (<v> a version, <arch> amd64 or arm64):

  SHA256SUMS
  etcd/<v>/etcd-<v>-linux-<arch>.tar.gz
  kubernetes/<v>/bin/linux/<arch>/{kubeadm,kubelet,kubectl}
  cni-plugins/<v>/cni-plugins-linux-<arch>-<v>.tgz
  k3s/<v>/k3s (k3s-arm64), k3s/<v>/k3s-airgap-images-<arch>.tar.zst
  images/<arch>/<image reference, / and : as _>.tar

The VMs' operating system packages (containerd, conntrack, socat, HAProxy)
come from the distribution, through the package mirror the VM image uses.`,
	}
	c.AddCommand(a.artifactsFetchCommand())
	return c
}

func (a *App) artifactsFetchCommand() *cobra.Command {
	var s spec.Spec
	var dir, output string
	var arches []string
	var noImages bool
	c := &cobra.Command{
		Use:   "fetch --bootstrap kubeadm|k3s --k8s-version V --dir DIR",
		Short: "Download into DIR everything ha-aws VMs install, with checksums",
		Long: `Download, on a machine with internet access, everything the VMs of an ha-aws
cluster of that bootstrap and Kubernetes version install, into DIR, in the
layout 'kforge artifacts --help' shows, and write SHA256SUMS.

Every download is checked against the SHA-256 kforge pins for it or, for
releases kforge does not pin, the checksum file its project publishes beside
it; a file that does not match is not kept. Images are pulled by their
registries' content digests. Files already in DIR with their checksum are
kept, so running it again continues an interrupted fetch. Proxies are taken
from HTTPS_PROXY and NO_PROXY.`,
		Example: `  kforge artifacts fetch --bootstrap kubeadm --k8s-version 1.34 --dir ./artifacts
  kforge artifacts fetch --bootstrap k3s --k8s-version 1.34 --arch amd64 --dir /srv/mirror
  kforge create ha-aws --name prod --region eu-west-1 --bootstrap kubeadm --artifacts ./artifacts`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if s.Bootstrap != spec.BootstrapK3s && s.Bootstrap != spec.BootstrapKubeadm {
				return spec.Usagef("invalid --bootstrap %q: use k3s or kubeadm", s.Bootstrap)
			}
			if dir == "" {
				return spec.Usagef("--dir is required: the directory to fill")
			}
			for _, arch := range arches {
				if arch != "amd64" && arch != "arm64" {
					return spec.Usagef("invalid --arch %q: use amd64, arm64 or both", arch)
				}
			}
			s.Type = spec.TypeHA
			set, err := ha.ArtifactSet(s)
			if err != nil {
				return spec.Usagef("invalid --k8s-version: %v", err)
			}
			if s.Bootstrap == spec.BootstrapKubeadm {
				if _, err := set.Images(""); err != nil {
					return spec.Usagef("invalid --k8s-version: %v", err)
				}
			}
			ctx, cancel := a.untilStop(cmd.Context())
			defer cancel()
			start := time.Now()
			fprintf(a.Stderr, "Fetching the artifacts of %s %s for %s into %s\n", s.Bootstrap, versionOf(set), strings.Join(arches, ", "), dir)
			results, err := artifacts.Fetch(ctx, artifacts.FetchOptions{
				Set: set, Arches: arches, Images: !noImages, Dir: dir,
				Progress: func(r artifacts.FetchResult) {
					switch r.Status {
					case artifacts.FetchKept:
						fprintf(a.Stderr, "  kept     %s\n", r.Path)
					case artifacts.FetchFetched:
						fprintf(a.Stderr, "  fetched  %s (%s, %.1f MB)\n", r.Path, r.Source, float64(r.Bytes)/(1<<20))
					default:
						fprintf(a.Stderr, "  FAILED   %s: %s\n", r.Path, r.Error)
					}
				},
			})
			artifacts.SortResults(results)
			if output == outputJSON {
				if werr := writeJSON(a.Stdout, struct {
					Dir   string                  `json:"dir"`
					Files []artifacts.FetchResult `json:"files"`
				}{dir, results}); werr != nil {
					return werr
				}
			}
			var fe *artifacts.FetchError
			if errors.As(err, &fe) {
				return fmt.Errorf("%d of %d artifacts could not be fetched (see above); the others are in %s: run the same command again to retry", len(fe.Failed), len(results), dir)
			}
			if err != nil {
				return err
			}
			var total int64
			for _, r := range results {
				total += r.Bytes
			}
			fprintf(a.Stderr, "Done in %s: %d files, %.0f MB, listed in %s/%s.\nNext: kforge create ha-aws ... --bootstrap %s --k8s-version %s --artifacts %s\n",
				time.Since(start).Round(time.Second), len(results), float64(total)/(1<<20), dir, artifacts.SumsFile, s.Bootstrap, s.K8sVersion, dir)
			return nil
		},
	}
	fl := c.Flags()
	fl.StringVar(&s.Bootstrap, "bootstrap", spec.BootstrapK3s, "bootstrap tool of the clusters: k3s or kubeadm")
	fl.StringVar(&s.K8sVersion, "k8s-version", spec.DefaultK8sVersion, "Kubernetes version of the clusters")
	fl.StringVar(&dir, "dir", "", "directory to fill (created if missing)")
	fl.StringSliceVar(&arches, "arch", []string{"amd64", "arm64"}, "architectures of the VMs: amd64, arm64 or both (Graviton instance types are arm64)")
	fl.BoolVar(&noImages, "no-images", false, "leave out the container images (for clusters that pull from --image-repository)")
	fl.BoolVar(&s.NoCloudIntegration, "no-cloud-integration", false, "leave out the images of the AWS cloud controller manager and the EBS CSI driver (for clusters created with --no-cloud-integration)")
	addOutputFlag(c, &output)
	return c
}

// versionOf names the release a Set installs.
func versionOf(set artifacts.Set) string {
	if set.Kubernetes != "" {
		return set.Kubernetes
	}
	return set.K3s
}
