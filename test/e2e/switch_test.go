package e2e

// kforge switch (issue 12, item 10): the aws exec plugin's command is a
// path that lasts, the profile of the switch goes with it, and -o json
// says what was written, for both types.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kforge/kforge/test/testutil/kforgebin"
)

// copyKforge copies the kforge binary to path and returns path.
func copyKforge(t *testing.T, path string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(kforgebin.Path(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// switchReport is what `kforge switch -o json` prints.
type switchReport struct {
	Context, Kubeconfig, Server string
	Exec                        *struct {
		Command, Profile string
		Args             []string
	}
}

func decodeSwitch(t *testing.T, stdout string) switchReport {
	t.Helper()
	var rep switchReport
	dec := json.NewDecoder(strings.NewReader(stdout))
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("switch -o json: %v\n%s", err, stdout)
	}
	if dec.More() {
		t.Errorf("switch -o json printed more than one document:\n%s", stdout)
	}
	return rep
}

func TestSwitchExecPluginPathAndProfile(t *testing.T) {
	t.Parallel()
	const name, region = "switchy", "eu-north-1"
	env := kforgebin.NewEnv(t, emu.Env()...)
	writeProfiles(t, env.Home) // [default], [profile dev] and [profile prod], with regions
	ref := []string{"--name", name, "--region", region}
	env.MustRun(t, append([]string{"create", "aws"}, ref...)...)
	t.Cleanup(func() { env.Run(t, append([]string{"delete", "aws", "--yes"}, ref...)...) })
	ctxName := "kforge-aws-" + name + "-" + region

	// A binary where `go run` puts it is refused: Go removes it. First a
	// go-build work directory under the temporary directory, then the
	// build cache named by GOCACHE.
	workDir, err := os.MkdirTemp("", "go-build") // as the go command names it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(workDir) })
	gocache := filepath.Join(t.TempDir(), "gocache")
	for _, tc := range []struct {
		what, bin string
		env       []string
	}{
		{"go-build work directory", copyKforge(t, filepath.Join(workDir, "b001", "exe", "kforge")), nil},
		{"GOCACHE", copyKforge(t, filepath.Join(gocache, "5e", "5eab12-d", "kforge")), []string{"GOCACHE=" + gocache}},
	} {
		refusedKC := filepath.Join(t.TempDir(), "refused")
		cmd := env.Cmd(t, t.Context(), append([]string{"switch", "aws", "--kubeconfig", refusedKC}, ref...)...)
		cmd.Path = tc.bin
		cmd.Env = append(append(cmd.Env, "TMPDIR="+os.TempDir()), tc.env...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(stderr.String(), "install kforge first") ||
			!strings.Contains(stderr.String(), "go install ./cmd/kforge") || !strings.Contains(stderr.String(), tc.bin) || stdout.Len() != 0 {
			t.Errorf("switch from a binary in a %s: exit %d (%v)\nstdout:\n%s\nstderr:\n%s", tc.what, code, err, stdout.String(), stderr.String())
		}
		if _, err := os.Stat(refusedKC); err == nil {
			t.Errorf("a switch refused for a %s wrote a kubeconfig", tc.what)
		}
		// --static-token needs no plugin, so it is not refused.
		static := filepath.Join(t.TempDir(), "static")
		cmd = env.Cmd(t, t.Context(), append([]string{"switch", "aws", "--static-token", "--kubeconfig", static}, ref...)...)
		cmd.Path = tc.bin
		cmd.Env = append(append(cmd.Env, "TMPDIR="+os.TempDir()), tc.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("switch --static-token from a binary in a %s: %v\n%s", tc.what, err, out)
		}
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
		if cfg.CurrentContext != ctxName {
			t.Errorf("%s: current context %q", path, cfg.CurrentContext)
		}
		return u.Exec
	}

	// Without a named profile: the plugin is the binary (in a kforge-bin-*
	// temporary directory, which lasts), with no env; the output is the
	// context name.
	plain := filepath.Join(t.TempDir(), "plain")
	r := env.MustRun(t, append([]string{"switch", "aws", "--kubeconfig", plain}, ref...)...)
	if r.Stdout != ctxName+"\n" {
		t.Errorf("switch printed %q", r.Stdout)
	}
	if x := exec(plain); len(x.Env) != 0 || x.Command != kforgebin.Path(t) {
		t.Errorf("no profile: command %s, env %+v", x.Command, x.Env)
	}

	// Under AWS_PROFILE=dev (credentials from the environment): recorded.
	devEnv := &kforgebin.Env{Home: env.Home, Extra: append(append([]string{}, env.Extra...), "AWS_PROFILE=dev")}
	dev := filepath.Join(t.TempDir(), "dev")
	devEnv.MustRun(t, append([]string{"switch", "aws", "--kubeconfig", dev}, ref...)...)
	if x := exec(dev); len(x.Env) != 1 || x.Env[0].Name != "AWS_PROFILE" || x.Env[0].Value != "dev" {
		t.Errorf("AWS_PROFILE=dev: env %+v", x.Env)
	}

	// --profile prod, with -o json: recorded, and reported.
	prod := filepath.Join(t.TempDir(), "prod")
	r = env.MustRun(t, append([]string{"switch", "aws", "--kubeconfig", prod, "--profile", "prod", "-o", "json"}, ref...)...)
	if x := exec(prod); len(x.Env) != 1 || x.Env[0].Name != "AWS_PROFILE" || x.Env[0].Value != "prod" {
		t.Errorf("--profile prod: env %+v", x.Env)
	}
	rep := decodeSwitch(t, r.Stdout)
	if rep.Context != ctxName || rep.Kubeconfig != prod || !strings.HasPrefix(rep.Server, "https://") || rep.Exec == nil ||
		rep.Exec.Command != kforgebin.Path(t) || rep.Exec.Profile != "prod" || len(rep.Exec.Args) == 0 || rep.Exec.Args[0] != "token" {
		t.Errorf("switch -o json: %+v\n%s", rep, r.Stdout)
	}
	if strings.Contains(strings.ToLower(r.Stdout), "token\":") || strings.Contains(r.Stdout, "k8s-aws-v1.") {
		t.Errorf("switch -o json shows a token:\n%s", r.Stdout)
	}
	if cfg, err := clientcmd.LoadFromFile(prod); err != nil || cfg.Clusters[ctxName] == nil || cfg.Clusters[ctxName].Server != rep.Server {
		t.Errorf("switch -o json: server %s is not the kubeconfig's (%v)", rep.Server, err)
	}

	// A profile that the shared files do not have: exit 2, listing them.
	if r := env.Run(t, append([]string{"switch", "aws", "--kubeconfig", prod, "--profile", "nosuch"}, ref...)...); r.Code != 2 || !strings.Contains(r.Stderr, "default, dev, prod") {
		t.Errorf("--profile nosuch: exit %d\n%s", r.Code, r.Stderr)
	}
}

func TestSwitchHAJSON(t *testing.T) {
	t.Parallel()
	const name, region = "switchha", "eu-south-1"
	h := newHAEnv(t, region)
	ref := []string{"--name", name, "--region", region}
	h.MustRun(t, append([]string{"create", "ha-aws", "--control-planes", "1", "--workers", "1", "--etcd", "1",
		"--ssh-cidr", "10.0.0.0/8", "--ssh-jump", h.jump()}, ref...)...)
	t.Cleanup(func() { h.Run(t, append([]string{"delete", "ha-aws", "--yes"}, ref...)...) })
	ctxName := "kforge-ha-aws-" + name + "-" + region
	lb := instances(t, h.cfg, name)["lb"]
	if len(lb) != 1 {
		t.Fatalf("%d load balancers", len(lb))
	}

	kc := filepath.Join(t.TempDir(), "kubeconfig")
	r := h.MustRun(t, append([]string{"switch", "ha-aws", "--kubeconfig", kc, "-o", "json"}, ref...)...)
	rep := decodeSwitch(t, r.Stdout)
	if rep.Context != ctxName || rep.Kubeconfig != kc || rep.Server != "https://"+aws.ToString(lb[0].PublicIpAddress)+":6443" || rep.Exec != nil {
		t.Errorf("switch ha-aws -o json: %+v\n%s", rep, r.Stdout)
	}
	if strings.Contains(r.Stdout, "BEGIN") || strings.Contains(r.Stdout, "PRIVATE") || strings.Contains(r.Stdout, "-data") {
		t.Errorf("switch ha-aws -o json shows credentials:\n%s", r.Stdout)
	}
	cfg, err := clientcmd.LoadFromFile(kc)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CurrentContext != ctxName || cfg.Clusters[ctxName] == nil || cfg.Clusters[ctxName].Server != rep.Server {
		t.Errorf("kubeconfig: current %q, clusters %v", cfg.CurrentContext, cfg.Clusters)
	}

	// A binary in a go-build directory is not refused for ha-aws: the
	// kubeconfig does not run kforge.
	gotmp := t.TempDir()
	work, err := os.MkdirTemp(gotmp, "go-build")
	if err != nil {
		t.Fatal(err)
	}
	bin := copyKforge(t, filepath.Join(work, "b001", "exe", "kforge"))
	cmd := h.Cmd(t, t.Context(), append([]string{"switch", "ha-aws", "--kubeconfig", kc}, ref...)...)
	cmd.Path = bin
	cmd.Env = append(cmd.Env, "GOTMPDIR="+gotmp)
	if out, err := cmd.Output(); err != nil || string(out) != ctxName+"\n" {
		t.Errorf("switch ha-aws from a go-build binary: %v, printed %q", err, out)
	}
}
