package boot

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/kforge/kforge/internal/artifacts"
	"github.com/kforge/kforge/internal/bootstrap"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/ha/infra"
	"github.com/kforge/kforge/internal/spec"
)

// artifactsOut is what StepArtifacts keeps: the source and the checksum of
// every file the cluster's VMs install.
type artifactsOut struct {
	Source artifacts.Source `json:"source"`
	Sums   artifacts.Sums   `json:"sums"`
}

// ArtifactSet is what the cluster's VMs install.
func ArtifactSet(s spec.Spec) (artifacts.Set, error) {
	set := artifacts.Set{Bootstrap: s.Bootstrap, Etcd: bootstrap.DefaultEtcdVersion, EtcdSHA256: bootstrap.DefaultEtcdChecksums(),
		Cloud: s.CloudIntegration()}
	var err error
	if s.Bootstrap == spec.BootstrapKubeadm {
		set.Kubernetes, err = bootstrap.KubernetesVersion(s.K8sVersion)
	} else {
		set.K3s, err = bootstrap.K3sVersion(s.K8sVersion)
	}
	return set, err
}

// installsArtifacts reports whether a role installs anything from the
// artifacts (the load balancer installs HAProxy from the distribution).
func installsArtifacts(role string) bool { return role != infra.RoleLB }

// source is the spec's --artifacts (validated with the spec).
func source(s spec.Spec) artifacts.Source {
	src, _ := artifacts.ParseSource(s.Artifacts)
	return src
}

// neededFiles lists what VMs of a role and Debian architecture install
// from the artifacts.
func neededFiles(s spec.Spec, role, arch string) ([]artifacts.File, error) {
	set, err := ArtifactSet(s)
	if err != nil {
		return nil, err
	}
	return set.Files(role, arch, s.ImageRepository == "")
}

// clusterArches returns the Debian architecture of each role's instance
// type, from the images step (which the reading step must need).
func clusterArches(r *engine.Run, s spec.Spec, images engine.Ref[infra.Images]) (map[string]string, error) {
	imgs, err := images.Get(r)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, role := range infra.Roles {
		img, ok := imgs.ByType[infra.Size(s, role)]
		if !ok {
			return nil, fmt.Errorf("no image was chosen for instance type %s", infra.Size(s, role))
		}
		out[role] = artifacts.DebianArch(img.Arch)
	}
	return out, nil
}

// allNeeded lists every file the cluster's VMs install, each once.
func allNeeded(s spec.Spec, arches map[string]string) ([]artifacts.File, error) {
	seen := map[string]artifacts.File{}
	for _, role := range infra.Roles {
		if !installsArtifacts(role) || infra.Count(s, role) == 0 {
			continue
		}
		fs, err := neededFiles(s, role, arches[role])
		if err != nil {
			return nil, err
		}
		for _, f := range fs {
			seen[f.Path] = f
		}
	}
	out := make([]artifacts.File, 0, len(seen))
	for _, f := range seen {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// checkArtifacts reads the checksum list of the source and checks that
// it names every file; for a directory, that each file is there and, with
// hash, matches its checksum.
func checkArtifacts(ctx context.Context, s spec.Spec, files []artifacts.File, hash bool) (artifacts.Sums, error) {
	src := source(s)
	client := &http.Client{Timeout: time.Minute}
	all, err := artifacts.LoadSums(ctx, src, client)
	if err != nil {
		return nil, spec.Usagef("%v", err)
	}
	sums, err := all.Pick(files)
	if err != nil {
		return nil, spec.Usagef("%v in %s (fill it with 'kforge artifacts fetch --bootstrap %s --k8s-version %s --dir ...')", err, src, s.Bootstrap, s.K8sVersion)
	}
	if src.Dir != "" {
		verify := artifacts.Present
		if hash {
			verify = artifacts.Verify
		}
		if err := verify(ctx, src, sums); err != nil {
			return nil, spec.Usagef("%v in %s", err, src)
		}
	}
	return sums, nil
}

// CheckSource is the preflight's look at --artifacts: the checksum list
// names every file the cluster's VMs install, and a directory has them.
func CheckSource(ctx context.Context, c *ec2.Client, s spec.Spec) error {
	byType, err := infra.TypeArches(ctx, c, s.Region, infra.ClusterTypes(s))
	if err != nil {
		return err
	}
	arches := map[string]string{}
	for _, role := range infra.Roles {
		arches[role] = artifacts.DebianArch(byType[infra.Size(s, role)])
	}
	files, err := allNeeded(s, arches)
	if err != nil {
		return err
	}
	_, err = checkArtifacts(ctx, s, files, false)
	return err
}

// addArtifacts reads and checks the artifacts once per source; its
// outputs, kept in state, are the checksums the VMs check every file
// against, so a directory or mirror changed later cannot slip another
// file in.
func (b *builder) addArtifacts() engine.Ref[artifactsOut] {
	s := b.s
	src := source(s)
	return engine.AddAction(b.g, engine.Action[artifactsOut]{
		ID:     StepArtifacts,
		Needs:  engine.Needs(b.infra.Images),
		Title:  "check every artifact the VMs install against SHA256SUMS (" + src.Describe() + ")",
		Inputs: struct{ Source, Repo string }{src.String(), s.ImageRepository},
		Do: func(ctx context.Context, r *engine.Run) (artifactsOut, error) {
			arches, err := clusterArches(r, s, b.infra.Images)
			if err != nil {
				return artifactsOut{}, err
			}
			files, err := allNeeded(s, arches)
			if err != nil {
				return artifactsOut{}, err
			}
			r.Waiting("checking %d artifacts in %s", len(files), src)
			sums, err := checkArtifacts(ctx, s, files, true)
			if err != nil {
				return artifactsOut{}, err
			}
			return artifactsOut{Source: src, Sums: sums}, nil
		},
	})
}

// addUpload copies to VM i of a role the artifacts it lacks, each checked
// on the VM against its SHA-256 before it is kept.
func (b *builder) addUpload(role string, i int) engine.Ref[struct{}] {
	s := b.s
	vmRef := b.infra.VM(role, i)
	return engine.AddAction(b.g, engine.Action[struct{}]{
		ID:    UploadStepID(role, i),
		Needs: engine.Needs(engine.ID(ReadyStepID(role, i)), b.artifacts, b.infra.Images, vmRef, b.infra.Secrets),
		Title: fmt.Sprintf("upload the artifacts %s installs over SSH", infra.VMName(s.Name, role, i)),
		Do: func(ctx context.Context, r *engine.Run) (struct{}, error) {
			out, err := b.artifacts.Get(r)
			if err != nil {
				return struct{}{}, err
			}
			arches, err := clusterArches(r, s, b.infra.Images)
			if err != nil {
				return struct{}{}, err
			}
			files, err := neededFiles(s, role, arches[role])
			if err != nil {
				return struct{}{}, err
			}
			want := make([]bootstrap.Artifact, 0, len(files))
			for _, f := range files {
				a, err := resolve(out, f.Path)
				if err != nil {
					return struct{}{}, err
				}
				want = append(want, a)
			}
			vm, err := vmRef.Get(r)
			if err != nil {
				return struct{}{}, err
			}
			sc, err := bootstrap.RenderArtifactsMissing(bootstrap.ArtifactsMissingParams{Files: want})
			if err != nil {
				return struct{}{}, err
			}
			missing, err := runOn(ctx, r, s, vm, sc)
			if err != nil {
				return struct{}{}, err
			}
			byVMPath := map[string]string{}
			for _, f := range files {
				byVMPath[artifacts.VMPath(f.Path)] = f.Path
			}
			var todo []string
			var total int64
			for _, line := range strings.Split(strings.TrimSpace(string(missing)), "\n") {
				if line == "" {
					continue
				}
				rel, ok := byVMPath[line]
				if !ok {
					return struct{}{}, fmt.Errorf("vm %s reported an unknown missing artifact %q", vm.Name, line)
				}
				if st, err := os.Stat(out.Source.LocalPath(rel)); err == nil {
					total += st.Size()
				}
				todo = append(todo, rel)
			}
			if len(todo) == 0 {
				return struct{}{}, nil
			}
			r.Waiting("uploading %d file(s), %d MB, to %s", len(todo), total>>20, vm.Name)
			return struct{}{}, upload(ctx, r, s, vm, out, todo)
		},
	})
}

// upload sends files of the artifacts directory to a VM, a few at once.
func upload(ctx context.Context, r *engine.Run, s spec.Spec, vm infra.VM, out artifactsOut, paths []string) error {
	ss, err := sessionOf(r)
	if err != nil {
		return err
	}
	c, err := ss.sshClient(r, s)
	if err != nil {
		return err
	}
	t, err := target(r, vm)
	if err != nil {
		return err
	}
	const parallel = 4
	sem := make(chan struct{}, parallel)
	errs := make(chan error, len(paths))
	for _, rel := range paths {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			errs <- func() error {
				a, err := resolve(out, rel)
				if err != nil {
					return err
				}
				sc, err := bootstrap.RenderReceive(a)
				if err != nil {
					return err
				}
				f, err := os.Open(out.Source.LocalPath(rel))
				if err != nil {
					return fmt.Errorf("upload %s: %w", rel, err)
				}
				defer f.Close()
				if _, err := c.RunInput(ctx, t, sc, f); err != nil {
					return fmt.Errorf("upload %s: %w", rel, err)
				}
				return nil
			}()
		}()
	}
	var first error
	for range paths {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// resolve says how a VM gets a file of the artifacts: where it lives, the
// mirror URL it downloads it from (none for an uploaded file), and the
// checksum kept in state.
func resolve(out artifactsOut, rel string) (bootstrap.Artifact, error) {
	sum, ok := out.Sums[rel]
	if !ok {
		return bootstrap.Artifact{}, fmt.Errorf("the state keeps no checksum for artifact %s: run the same command again with --artifacts", rel)
	}
	return bootstrap.Artifact{Path: artifacts.VMPath(rel), URL: out.Source.URLOf(rel), SHA256: sum}, nil
}

// offline reports whether VMs install from artifacts (a directory or a
// mirror) rather than from the public upstreams.
func offline(s spec.Spec) bool { return s.Artifacts != "" }

// artifactNeeds are the steps a VM's install recipe needs for its
// artifacts: their checksums, and for a directory the upload to the VM.
func (b *builder) artifactNeeds(role string, i int) []engine.Dep {
	if !offline(b.s) {
		return nil
	}
	needs := []engine.Dep{b.artifacts, b.infra.Images}
	if source(b.s).Dir != "" {
		needs = append(needs, engine.ID(UploadStepID(role, i)))
	}
	return needs
}

// roleArtifacts returns what the VMs of a role install from: the
// journaled checksums, the cluster's Set and the role's architecture.
func (b *builder) roleArtifacts(r *engine.Run, role string) (artifactsOut, artifacts.Set, string, error) {
	out, err := b.artifacts.Get(r)
	if err != nil {
		return out, artifacts.Set{}, "", err
	}
	arches, err := clusterArches(r, b.s, b.infra.Images)
	if err != nil {
		return out, artifacts.Set{}, "", err
	}
	set, err := ArtifactSet(b.s)
	return out, set, arches[role], err
}

// etcdTarballs resolves the etcd tarball of the etcd VMs for the etcd
// recipe, or nil for the upstream download.
func (b *builder) etcdTarballs(r *engine.Run) (map[string]bootstrap.Artifact, error) {
	if !offline(b.s) {
		return nil, nil
	}
	out, set, arch, err := b.roleArtifacts(r, infra.RoleEtcd)
	if err != nil {
		return nil, err
	}
	a, err := resolve(out, set.EtcdTarball(arch))
	if err != nil {
		return nil, err
	}
	return map[string]bootstrap.Artifact{arch: a}, nil
}

// Release is the release the cluster's bootstrap installs for its
// --k8s-version: a Kubernetes release (v1.34.2) for kubeadm, a k3s one
// (v1.34.1+k3s1) for k3s; it is also what the nodes' kubelets report.
func Release(s spec.Spec) (string, error) {
	if s.Bootstrap == spec.BootstrapKubeadm {
		return bootstrap.KubernetesVersion(s.K8sVersion)
	}
	return bootstrap.K3sVersion(s.K8sVersion)
}

// KubeadmImages are the images of a kubeadm cluster, from the spec's
// image repository or the default registries.
func KubeadmImages(s spec.Spec) (artifacts.KubeadmImages, error) {
	set, err := ArtifactSet(s)
	if err != nil {
		return artifacts.KubeadmImages{}, err
	}
	return set.Images(s.ImageRepository)
}

// kubeadmOffline resolves the artifacts of a kubeadm node, or nil for an
// install from the public upstreams.
func (b *builder) kubeadmOffline(r *engine.Run, role string) (*bootstrap.KubeadmOffline, error) {
	if !offline(b.s) {
		return nil, nil
	}
	out, set, arch, err := b.roleArtifacts(r, role)
	if err != nil {
		return nil, err
	}
	var o bootstrap.KubeadmOffline
	for _, x := range []struct {
		dst *bootstrap.Artifact
		rel string
	}{
		{&o.Kubeadm, set.KubernetesBinary(arch, "kubeadm")},
		{&o.Kubelet, set.KubernetesBinary(arch, "kubelet")},
		{&o.Kubectl, set.KubernetesBinary(arch, "kubectl")},
		{&o.CNIPlugins, set.CNIPluginsTarball(arch)},
	} {
		if *x.dst, err = resolve(out, x.rel); err != nil {
			return nil, err
		}
	}
	if b.s.ImageRepository == "" {
		if o.Images, err = imageArtifacts(out, set, role, arch); err != nil {
			return nil, err
		}
	}
	return &o, nil
}

// imageArtifacts resolves the image tarballs a VM of a role and
// architecture imports.
func imageArtifacts(out artifactsOut, set artifacts.Set, role, arch string) ([]bootstrap.ImageArtifact, error) {
	files, err := set.Files(role, arch, true)
	if err != nil {
		return nil, err
	}
	var imgs []bootstrap.ImageArtifact
	for _, f := range files {
		if f.Image == "" {
			continue
		}
		a, err := resolve(out, f.Path)
		if err != nil {
			return nil, err
		}
		imgs = append(imgs, bootstrap.ImageArtifact{Ref: f.Image, Artifact: a})
	}
	return imgs, nil
}

// k3sOffline resolves the artifacts of a k3s node, or nil for an install
// with k3s's install script.
func (b *builder) k3sOffline(r *engine.Run, role string) (*bootstrap.K3sOffline, error) {
	if !offline(b.s) {
		return nil, nil
	}
	out, set, arch, err := b.roleArtifacts(r, role)
	if err != nil {
		return nil, err
	}
	var o bootstrap.K3sOffline
	if o.Binary, err = resolve(out, set.K3sBinary(arch)); err != nil {
		return nil, err
	}
	if b.s.ImageRepository == "" {
		img, err := resolve(out, set.K3sImages(arch))
		if err != nil {
			return nil, err
		}
		o.Images = &img
		// The cloud integration's images (k3s's own are in its tarball).
		if o.Extra, err = imageArtifacts(out, set, role, arch); err != nil {
			return nil, err
		}
	}
	return &o, nil
}
