package e2e

// kforge switch aws (issue 12, item 10): the exec plugin's command is a
// path that lasts, the profile of the switch goes with it, and -o json
// says what was written.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kforge/kforge/test/testutil/kforgebin"
)

func TestSwitchExecPluginPathAndProfile(t *testing.T) {
	t.Parallel()
	const name, region = "switchy", "eu-north-1"
	env := kforgebin.NewEnv(t, emu.Env()...)
	writeProfiles(t, env.Home) // profiles default, dev and prod
	ref := []string{"--name", name, "--region", region}
	env.MustRun(t, append([]string{"create", "aws"}, ref...)...)
	t.Cleanup(func() { env.Run(t, append([]string{"delete", "aws", "--yes"}, ref...)...) })
	ctxName := "kforge-aws-" + name + "-" + region

	// A binary where `go run` puts it is refused: Go removes it.
	goRun := filepath.Join(os.TempDir(), "go-build"+strings.ReplaceAll(t.Name(), "/", "-"), "b001", "exe", "kforge")
	if err := os.MkdirAll(filepath.Dir(goRun), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(filepath.Dir(filepath.Dir(goRun)))) })
	bin, err := os.ReadFile(kforgebin.Path(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(goRun, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	refusedKC := filepath.Join(t.TempDir(), "refused")
	cmd := env.Cmd(t, t.Context(), append([]string{"switch", "aws", "--kubeconfig", refusedKC}, ref...)...)
	cmd.Path = goRun
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), "install kforge first") {
		t.Errorf("switch from a go-run binary: exit %d (%v)\n%s", code, err, out)
	}
	if _, err := os.Stat(refusedKC); err == nil {
		t.Error("a refused switch wrote a kubeconfig")
	}

	exec := func(path string) *clientcmdapi.ExecConfig {
		t.Helper()
		cfg, err := clientcmd.LoadFromFile(path)
		if err != nil {
			t.Fatal(err)
		}
		u := cfg.AuthInfos[ctxName]
		if u == nil || u.Exec == nil {
			t.Fatalf("%s: no exec user %s", path, ctxName)
		}
		return u.Exec
	}

	// Without a named profile: no env in the plugin.
	plain := filepath.Join(t.TempDir(), "plain")
	env.MustRun(t, append([]string{"switch", "aws", "--kubeconfig", plain}, ref...)...)
	if x := exec(plain); len(x.Env) != 0 || x.Command != kforgebin.Path(t) {
		t.Errorf("no profile: command %s, env %+v", x.Command, x.Env)
	}

	// Under AWS_PROFILE=dev, and with --profile prod: recorded.
	devEnv := &kforgebin.Env{Home: env.Home, Extra: append(append([]string{}, env.Extra...), "AWS_PROFILE=dev")}
	dev := filepath.Join(t.TempDir(), "dev")
	devEnv.MustRun(t, append([]string{"switch", "aws", "--kubeconfig", dev}, ref...)...)
	if x := exec(dev); len(x.Env) != 1 || x.Env[0].Name != "AWS_PROFILE" || x.Env[0].Value != "dev" {
		t.Errorf("AWS_PROFILE=dev: env %+v", x.Env)
	}
	prod := filepath.Join(t.TempDir(), "prod")
	r := env.MustRun(t, append([]string{"switch", "aws", "--kubeconfig", prod, "--profile", "prod", "-o", "json"}, ref...)...)
	if x := exec(prod); len(x.Env) != 1 || x.Env[0].Value != "prod" {
		t.Errorf("--profile prod: env %+v", x.Env)
	}
	var rep struct {
		Context, Kubeconfig, Server string
		Exec                        struct {
			Command, Profile string
			Args             []string
		}
	}
	if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
		t.Fatalf("switch -o json: %v\n%s", err, r.Stdout)
	}
	if rep.Context != ctxName || rep.Kubeconfig != prod || !strings.HasPrefix(rep.Server, "https://") ||
		rep.Exec.Command != kforgebin.Path(t) || rep.Exec.Profile != "prod" || len(rep.Exec.Args) == 0 {
		t.Errorf("switch -o json: %+v", rep)
	}
	if r := env.Run(t, append([]string{"switch", "aws", "--kubeconfig", prod, "--profile", "nosuch"}, ref...)...); r.Code != 2 || !strings.Contains(r.Stderr, "default, dev, prod") {
		t.Errorf("--profile nosuch: exit %d\n%s", r.Code, r.Stderr)
	}
}
