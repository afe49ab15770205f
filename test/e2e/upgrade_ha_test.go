package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/kforge/kforge/internal/artifacts"
	"github.com/kforge/kforge/internal/bootstrap"
	"github.com/kforge/kforge/test/testutil/sshfleet"
)

// upgradeCall is one script of an upgrade as the fleet recorded it: which
// recipe ran on which VM (drains and uncordons run on the first control
// plane; the node they name is in the script).
type upgradeCall struct{ Recipe, VM, Node string }

var upgradeNodeRE = regexp.MustCompile(`(?:node=|uncordon )'([^']+)'`)

// upgradeCalls lists the upgrade's scripts among calls, with the node a
// drain or uncordon names by its VM's name (vmOf maps node names, such as
// private DNS names, to VM names).
func upgradeCalls(calls []sshfleet.Call, vmOf map[string]string) []upgradeCall {
	var out []upgradeCall
	for _, c := range calls {
		switch c.Recipe {
		case bootstrap.RecipeKubeadmUpgrade, bootstrap.RecipeK3sServer, bootstrap.RecipeK3sAgent:
			out = append(out, upgradeCall{c.Recipe, c.VM.Name, ""})
		case bootstrap.RecipeDrainNode, bootstrap.RecipeUncordonNode:
			node := ""
			if m := upgradeNodeRE.FindSubmatch(c.Stdin); m != nil {
				node = string(m[1])
			}
			if vm, ok := vmOf[node]; ok {
				node = vm
			}
			out = append(out, upgradeCall{c.Recipe, c.VM.Name, node})
		}
	}
	return out
}

// nodeVMs maps the cluster's node names (private DNS names) to VM names.
func nodeVMs(t *testing.T, h *haEnv, name string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, l := range instances(t, h.cfg, name) {
		for _, in := range l {
			out[aws.ToString(in.PrivateDnsName)] = tagMap(in.Tags)["Name"]
		}
	}
	return out
}

// TestHAKubeadmUpgrade: `kforge upgrade ha-aws` refuses what Kubernetes
// forbids (exit 2, nothing run), plans without changing anything, then
// upgrades node by node in kubeadm's order: kubeadm upgrade apply on the
// first control plane, kubeadm upgrade node on the second, then each
// worker drained (on the first control plane), upgraded and uncordoned,
// one after the other; then the cloud integration of the new minor and a
// wait for every node at the new kubelet version. Killed after the second
// control plane, the same command continues with the first worker and
// upgrades no control plane again; a failed worker upgrade leaves the
// cluster refusing create and scale until the upgrade, run again, ends.
func TestHAKubeadmUpgrade(t *testing.T) {
	t.Parallel()
	const name, region = "upha", "us-west-1"
	h := newHAEnv(t, region)
	ref := []string{"--name", name, "--region", region}
	h.MustRun(t, append([]string{"create", "ha-aws", "--bootstrap", "kubeadm", "--k8s-version", "1.33",
		"--control-planes", "2", "--workers", "2", "--etcd", "1", "--ssh-cidr", "10.0.0.0/8", "--ssh-jump", h.jump()}, ref...)...)
	upgrade := func(args ...string) []string { return append(append([]string{"upgrade", "ha-aws"}, ref...), args...) }
	mark := len(h.fleet.Calls())

	for _, bad := range []struct{ version, says string }{
		{"1.35", "one minor version at a time, to 1.34 first"},
		{"1.32", "cannot go down"},
		{"1.34.2", "minor version"},
		{"1.99", "one minor version at a time"},
	} {
		if r := h.Run(t, upgrade("--k8s-version", bad.version)...); r.Code != 2 || !strings.Contains(r.Stderr, bad.says) {
			t.Errorf("upgrade to %s: exit %d, want 2 saying %q\n%s", bad.version, r.Code, bad.says, r.Stderr)
		}
	}
	r := h.MustRun(t, upgrade("--k8s-version", "1.34", "--dry-run", "-o", "json")...)
	var plan struct {
		From, To string
		Steps    []struct{ What string }
	}
	if err := json.Unmarshal([]byte(r.Stdout), &plan); err != nil || plan.From != "1.33" || plan.To != "1.34" || len(plan.Steps) != 6 ||
		!strings.HasPrefix(plan.Steps[0].What, name+"-cp-0: kubeadm upgrade apply") || !strings.HasPrefix(plan.Steps[2].What, name+"-wp-0: drained") {
		t.Errorf("plan: %v %+v", err, plan)
	}
	if n := len(h.fleet.Calls()); n != mark {
		t.Fatalf("refusals and the plan ran %d scripts", n-mark)
	}

	// Killed once the second control plane is done.
	killAfterStep(t, h, "upgrade/cp/1", upgrade("--k8s-version", "1.34")...)
	vmOf := nodeVMs(t, h, name)
	first := upgradeCalls(h.fleet.Calls()[mark:], vmOf)
	want := []upgradeCall{{"kubeadm-upgrade", name + "-cp-0", ""}, {"kubeadm-upgrade", name + "-cp-1", ""}}
	if !slices.Equal(first, want) {
		t.Fatalf("before the kill: %+v, want %+v", first, want)
	}
	for _, c := range h.fleet.CallsOf(bootstrap.RecipeKubeadmUpgrade) {
		cfg := string(c.Files()[bootstrap.KubeadmUpgradeConfigPath])
		text := string(c.Stdin)
		apply := strings.Contains(text, "kubeadm upgrade apply --config")
		if !strings.Contains(cfg, "kubernetesVersion: v1.34.") || !strings.Contains(cfg, "etcdUpgrade: false") || apply != (c.VM.Name == name+"-cp-0") {
			t.Errorf("%s: apply %v, configuration\n%s", c.VM.Name, apply, cfg)
		}
	}

	// A worker's upgrade fails: create and scale refuse, the upgrade
	// continues with that worker.
	fails := 1
	h.fleet.Handle(bootstrap.RecipeKubeadmUpgrade, func(vm sshfleet.VM, _ string, _ []byte) ([]byte, []byte, int) {
		if vm.Name == name+"-wp-0" && fails > 0 {
			fails--
			return nil, []byte("kubeadm upgrade node failed"), 1
		}
		return []byte("upgraded\n"), nil, 0
	})
	if r := h.Run(t, upgrade("--k8s-version", "1.34")...); r.Code != 1 {
		t.Fatalf("an upgrade whose worker fails: exit %d\n%s", r.Code, r.Stderr)
	}
	if r := h.Run(t, append([]string{"scale", "ha-aws", "--workers", "3"}, ref...)...); r.Code != 2 || !strings.Contains(r.Stderr, "did not finish") {
		t.Errorf("scale during an unfinished upgrade: exit %d\n%s", r.Code, r.Stderr)
	}
	h.MustRun(t, upgrade("--k8s-version", "1.34")...)
	all := upgradeCalls(h.fleet.Calls()[mark:], vmOf)
	want = []upgradeCall{
		{"kubeadm-upgrade", name + "-cp-0", ""}, {"kubeadm-upgrade", name + "-cp-1", ""},
		{"drain-node", name + "-cp-0", name + "-wp-0"}, {"kubeadm-upgrade", name + "-wp-0", ""}, // failed
		{"drain-node", name + "-cp-0", name + "-wp-0"}, {"kubeadm-upgrade", name + "-wp-0", ""}, {"uncordon-node", name + "-cp-0", name + "-wp-0"},
		{"drain-node", name + "-cp-0", name + "-wp-1"}, {"kubeadm-upgrade", name + "-wp-1", ""}, {"uncordon-node", name + "-cp-0", name + "-wp-1"},
	}
	if !slices.Equal(all, want) {
		t.Errorf("upgrade calls:\n%+v\nwant\n%+v", all, want)
	}
	var tail []string
	for _, c := range h.fleet.Calls()[mark:] {
		if c.Recipe == bootstrap.RecipeCloudIntegration || c.Recipe == bootstrap.RecipeNodesReady {
			tail = append(tail, c.Recipe)
			if c.Recipe == bootstrap.RecipeNodesReady && !strings.Contains(string(c.Stdin), "v='v1.34.") {
				t.Errorf("the final wait does not count nodes at kubelet v1.34")
			}
		}
	}
	if !slices.Equal(tail, []string{"cloud-integration", "nodes-ready"}) {
		t.Errorf("after the nodes: %v, want the cloud integration then the wait", tail)
	}
	var list []struct{ Name, KubernetesVersion string }
	if err := json.Unmarshal([]byte(h.MustRun(t, "get", "-o", "json").Stdout), &list); err != nil {
		t.Fatal(err)
	}
	for _, c := range list {
		if c.Name == name && c.KubernetesVersion != "1.34" {
			t.Errorf("get after the upgrade: Kubernetes %q", c.KubernetesVersion)
		}
	}
	var info struct{ Versions map[string]string }
	if err := json.Unmarshal([]byte(h.MustRun(t, append([]string{"info", "ha-aws", "--offline", "-o", "json"}, ref...)...).Stdout), &info); err != nil || info.Versions["kubernetes"] != "1.34" {
		t.Errorf("info after the upgrade: %v %v", err, info.Versions)
	}

	// Again: nothing to do; the next minor, which kforge cannot install
	// yet, is refused. Then a scale installs the new release.
	mark = len(h.fleet.Calls())
	h.MustRun(t, upgrade("--k8s-version", "1.34")...)
	if r := h.Run(t, upgrade("--k8s-version", "1.35")...); r.Code != 2 || !strings.Contains(r.Stderr, "invalid --k8s-version") {
		t.Errorf("an upgrade to a release kforge cannot install: exit %d\n%s", r.Code, r.Stderr)
	}
	if n := len(h.fleet.Calls()) - mark; n != 0 {
		t.Errorf("the same upgrade again ran %d scripts", n)
	}
	h.MustRun(t, append([]string{"scale", "ha-aws", "--workers", "3"}, ref...)...)
	for _, c := range h.fleet.Calls()[mark:] {
		if c.Recipe == bootstrap.RecipeKubeadmPrereqs && (c.VM.Name != name+"-wp-2" || !strings.Contains(string(c.Stdin), "version='1.34.")) {
			t.Errorf("after the upgrade, a scale installed the prerequisites on %s:\n%.200s", c.VM.Name, c.Stdin)
		}
	}
	h.MustRun(t, append([]string{"delete", "ha-aws", "--yes"}, ref...)...)
}

// killAfterStep runs kforge with args and kills it (SIGKILL) as soon as it
// reports step done.
func killAfterStep(t *testing.T, h *haEnv, step string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := h.Cmd(t, ctx, args...)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	for sc := bufio.NewScanner(stderr); sc.Scan(); {
		if strings.Contains(sc.Text(), "done     "+step+" ") {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			killed = true
			break
		}
	}
	_ = cmd.Wait()
	if !killed {
		t.Fatalf("kforge %s never reported %s done", strings.Join(args, " "), step)
	}
}

// TestHAK3sUpgrade: with k3s, each node's k3s is replaced at the new
// release in the same order, workers drained and uncordoned. The upgrade
// is killed after each node in turn: each run again continues with the
// next node, and no node is upgraded twice.
func TestHAK3sUpgrade(t *testing.T) {
	t.Parallel()
	const name, region = "upk3s", "af-south-1"
	h := newHAEnv(t, region)
	ref := []string{"--name", name, "--region", region}
	h.MustRun(t, append([]string{"create", "ha-aws", "--k8s-version", "1.33", "--no-cloud-integration",
		"--control-planes", "2", "--workers", "1", "--etcd", "1", "--ssh-cidr", "10.0.0.0/8", "--ssh-jump", h.jump()}, ref...)...)
	mark := len(h.fleet.Calls())
	upgrade := append([]string{"upgrade", "ha-aws", "--k8s-version", "1.34"}, ref...)
	for _, step := range []string{"upgrade/cp/0", "upgrade/cp/1", "upgrade/wp/0"} {
		killAfterStep(t, h, step, upgrade...)
	}
	h.MustRun(t, upgrade...)
	got := upgradeCalls(h.fleet.Calls()[mark:], nil)
	want := []upgradeCall{
		{"k3s-server", name + "-cp-0", ""}, {"k3s-server", name + "-cp-1", ""},
		{"drain-node", name + "-cp-0", name + "-wp-0"}, {"k3s-agent", name + "-wp-0", ""}, {"uncordon-node", name + "-cp-0", name + "-wp-0"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("upgrade calls:\n%+v\nwant\n%+v", got, want)
	}
	for _, c := range h.fleet.Calls()[mark:] {
		if (c.Recipe == bootstrap.RecipeK3sServer || c.Recipe == bootstrap.RecipeK3sAgent) && !strings.Contains(string(c.Stdin), "version='v1.34.") {
			t.Errorf("%s: k3s is not installed at v1.34", c.VM.Name)
		}
	}
	h.MustRun(t, append([]string{"delete", "ha-aws", "--yes"}, ref...)...)
}

// TestHAKubeadmUpgradeOffline: a cluster that installs from an artifacts
// directory is upgraded from it: the new release's files are checked and
// uploaded to the nodes, each kubeadm-upgrade installs kubeadm, kubelet
// and kubectl of the new release from them and imports its images; and
// nothing of the create (prerequisites, etcd, joins) runs again.
func TestHAKubeadmUpgradeOffline(t *testing.T) {
	t.Parallel()
	const name, region = "upoff", "us-east-1"
	h := newHAEnv(t, region)
	reportAllMissing(h.fleet)
	old, err := bootstrap.KubernetesVersion("1.33")
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := fakeArtifactsOf(t, []string{old, "v1.34.2"})
	ref := []string{"--name", name, "--region", region}
	h.MustRun(t, append([]string{"create", "ha-aws", "--bootstrap", "kubeadm", "--k8s-version", "1.33", "--no-cloud-integration", "--artifacts", dir,
		"--control-planes", "1", "--workers", "1", "--etcd", "1", "--ssh-cidr", "10.0.0.0/8", "--ssh-jump", h.jump()}, ref...)...)
	mark := len(h.fleet.Calls())
	h.MustRun(t, append([]string{"upgrade", "ha-aws", "--k8s-version", "1.34"}, ref...)...)

	set := artifacts.Set{Bootstrap: artifacts.Kubeadm, Kubernetes: "v1.34.2", Etcd: "v3.5.27"}
	uploaded := map[string]bool{}
	for vm, files := range received(t, h.fleet) {
		for path := range files {
			uploaded[vm+" "+path] = true
		}
	}
	for _, c := range h.fleet.Calls()[mark:] {
		switch c.Recipe {
		case bootstrap.RecipeKubeadmPrereqs, bootstrap.RecipeEtcd, bootstrap.RecipeKubeadmInit, bootstrap.RecipeKubeadmJoinWorker:
			t.Errorf("the upgrade ran %s on %s again", c.Recipe, c.VM.Name)
		case bootstrap.RecipeKubeadmUpgrade:
			text := string(c.Stdin)
			for _, bin := range []string{"kubeadm", "kubelet", "kubectl"} {
				p := "/var/lib/kforge/artifacts/" + set.KubernetesBinary("amd64", bin)
				if !strings.Contains(text, "kforge_binary '"+p+"'") || !strings.Contains(text, "' "+bin+"\n") || !uploaded[c.VM.Name+" "+p] {
					t.Errorf("%s: %s of v1.34.2 is not installed from the uploaded artifacts (uploaded: %v)", c.VM.Name, bin, uploaded[c.VM.Name+" "+p])
				}
			}
			if !strings.Contains(text, "kforge_image ") || !strings.Contains(text, "kube-apiserver:v1.34.2") && c.VM.Name == name+"-cp-0" {
				t.Errorf("%s: the images of v1.34.2 are not imported", c.VM.Name)
			}
			if cfg := string(c.Files()[bootstrap.KubeadmUpgradeConfigPath]); !strings.Contains(cfg, "imagePullPolicy: Never") {
				t.Errorf("%s: offline, kubeadm may pull images:\n%s", c.VM.Name, cfg)
			}
		}
	}
	if n := len(h.fleet.CallsOf(bootstrap.RecipeKubeadmUpgrade)); n != 2 {
		t.Errorf("%d kubeadm upgrades, want 2", n)
	}
	h.MustRun(t, append([]string{"delete", "ha-aws", "--yes"}, ref...)...)
}
