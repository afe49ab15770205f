package labimage

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

const standinPackage = "github.com/kforge/kforge/test/testutil/labimage/standin"

// Stand-in modes (see the standin program); StandinServe answers HTTP on
// a port.
const (
	StandinCCM   = "ccm"
	StandinSleep = "sleep"
)

// StandinServe is the mode that answers HTTP 200 on port.
func StandinServe(port int) string { return fmt.Sprintf("serve:%d", port) }

// StandinSpecs returns, for every image a manifest's Deployments and
// DaemonSets run, the Spec of a stand-in image: the standin program (at
// standin) as its entrypoint, and at the path of the container's command
// if it has one, with its mode in /standin-mode. mode picks the mode of a
// container of a workload.
func StandinSpecs(manifest []byte, standin string, mode func(workload string, c corev1.Container) string) (map[string]Spec, error) {
	specs := map[string]Spec{}
	modes := map[string]string{}
	add := func(workload string, pod corev1.PodSpec) error {
		for _, c := range append(append([]corev1.Container(nil), pod.InitContainers...), pod.Containers...) {
			m := mode(workload, c)
			if old, ok := modes[c.Image]; ok && old != m {
				return fmt.Errorf("image %s runs as %s and as %s", c.Image, old, m)
			}
			modes[c.Image] = m
			files := []File{
				{Path: "/standin", Src: standin, Mode: 0o755},
				{Path: "/standin-mode", Data: []byte(m + "\n")},
			}
			if len(c.Command) > 0 && c.Command[0] != "/standin" {
				files = append(files, File{Path: c.Command[0], Link: "/standin"})
			}
			if old, ok := specs[c.Image]; ok {
				// Another workload runs the same image: keep every
				// command path.
				files = mergeFiles(old.Files, files)
			}
			specs[c.Image] = Spec{Entrypoint: []string{"/standin"}, Files: files}
		}
		return nil
	}
	for _, doc := range bytes.Split(manifest, []byte("\n---\n")) {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return nil, err
		}
		switch meta.Kind {
		case "Deployment":
			var d appsv1.Deployment
			if err := yaml.Unmarshal(doc, &d); err != nil {
				return nil, err
			}
			if err := add(d.Name, d.Spec.Template.Spec); err != nil {
				return nil, err
			}
		case "DaemonSet":
			var d appsv1.DaemonSet
			if err := yaml.Unmarshal(doc, &d); err != nil {
				return nil, err
			}
			if err := add(d.Name, d.Spec.Template.Spec); err != nil {
				return nil, err
			}
		}
	}
	return specs, nil
}

func mergeFiles(a, b []File) []File {
	seen := map[string]bool{}
	var out []File
	for _, f := range append(append([]File(nil), a...), b...) {
		if !seen[f.Path] {
			seen[f.Path] = true
			out = append(out, f)
		}
	}
	return out
}

// BuildStandins writes the stand-in images of a manifest (StandinSpecs)
// into outDir, building the standin program there first.
func BuildStandins(manifest []byte, outDir string, mode func(workload string, c corev1.Container) string) ([]Image, error) {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	standin := filepath.Join(outDir, "standin")
	if err := buildProgram(standinPackage, standin); err != nil {
		return nil, err
	}
	specs, err := StandinSpecs(manifest, standin, mode)
	if err != nil {
		return nil, err
	}
	return buildAll(specs, outDir)
}
