package bootstrap

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeBin installs fake commands (bash scripts) in a directory and returns
// the PATH that puts them first.
func fakeBin(t *testing.T, cmds map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range cmds {
		writeTemp(t, dir, name, []byte("#!/usr/bin/env bash\n"+body), 0o755)
	}
	return "PATH=" + dir + ":" + os.Getenv("PATH")
}

func TestWaitReadyRuns(t *testing.T) {
	t.Parallel()
	lookTool(t, "bash", "apt-get install -y bash")
	lookTool(t, "timeout", "apt-get install -y coreutils")
	fake := `
if [[ $1 == status && ${2:-} == --long ]]; then echo "status: error"; exit 1; fi
[[ $1 == status && $2 == --wait ]] || { echo "unexpected: $*" >&2; exit 99; }
sleep "${FAKE_SLEEP:-0}"
exit "${FAKE_RC:-0}"
`
	path := fakeBin(t, map[string]string{"cloud-init": fake})
	s, err := RenderWaitReady(WaitReadyParams{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		env     []string
		wantErr bool
		stderr  string
	}{
		{"done", []string{"FAKE_RC=0"}, false, ""},
		{"recoverable errors", []string{"FAKE_RC=2"}, false, "recoverable"},
		{"failed", []string{"FAKE_RC=1"}, true, "cloud-init failed"},
		{"timeout", []string{"FAKE_SLEEP=5"}, true, "did not finish within 1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, err := runScript(t, s, 20*time.Second, append(tt.env, path)...)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v\nstderr: %s", err, tt.wantErr, stderr)
			}
			if !tt.wantErr && stdout != "ready\n" {
				t.Errorf("stdout = %q, want ready", stdout)
			}
			if tt.wantErr && stdout != "" {
				t.Errorf("stdout = %q on failure, want nothing", stdout)
			}
			if !strings.Contains(stderr, tt.stderr) {
				t.Errorf("stderr = %q, want it to mention %q", stderr, tt.stderr)
			}
		})
	}
}

// fakeKubectl simulates kubectl over files in a state directory: "ready"
// holds the Ready status of each node (one line each, possibly changing
// after "flip_after" calls to the content of "ready_later"), "exists" marks
// that the node exists, "drain_rc" is drain's exit status (and with
// "drain_removes" a failed drain removes the node), "api_down" makes every
// call fail. Every call is appended to "calls".
const fakeKubectl = `
state=$FAKE_STATE
echo "$*" >>"$state/calls"
[[ -e $state/api_down ]] && { echo "connection refused" >&2; exit 1; }
args=" $* "
case $args in
*" get nodes "*)
	n=$(($(cat "$state/count" 2>/dev/null || echo 0) + 1)); echo "$n" >"$state/count"
	if [[ -f $state/ready_later && $n -gt $(cat "$state/flip_after") ]]; then cat "$state/ready_later"; else cat "$state/ready"; fi ;;
*" get node "*)
	[[ -e $state/exists ]] && echo "node/$FAKE_NODE"; exit 0 ;;
*" drain "*)
	rc=$(cat "$state/drain_rc" 2>/dev/null || echo 0)
	[[ $rc != 0 && -e $state/drain_removes ]] && rm -f "$state/exists"
	exit "$rc" ;;
*" delete node "*)
	rm -f "$state/exists"; echo "node deleted" ;;
*) echo "unexpected kubectl $*" >&2; exit 99 ;;
esac
`

func TestNodesReadyRuns(t *testing.T) {
	t.Parallel()
	lookTool(t, "bash", "apt-get install -y bash")
	path := fakeBin(t, map[string]string{"kubectl": fakeKubectl})
	kubeconfig := writeTemp(t, t.TempDir(), "admin.conf", []byte("kubeconfig"), 0o600)
	s, err := RenderNodesReady(NodesReadyParams{Kubeconfig: kubeconfig, Count: 3, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		ready      string
		later      string
		wantErr    bool
		wantStdout string
	}{
		{"all ready", "True\nTrue\nTrue\n", "", false, "3/3 nodes ready\n"},
		{"more than asked", "True\nTrue\nTrue\nTrue\n", "", false, "4/3 nodes ready\n"},
		{"become ready", "True\nFalse\n", "True\nTrue\nTrue\n", false, "3/3 nodes ready\n"},
		{"never ready", "True\nFalse\nFalse\n", "", true, ""},
		{"no nodes", "", "", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			state := t.TempDir()
			writeTemp(t, state, "ready", []byte(tt.ready), 0o644)
			if tt.later != "" {
				writeTemp(t, state, "ready_later", []byte(tt.later), 0o644)
				writeTemp(t, state, "flip_after", []byte("1"), 0o644)
			}
			stdout, stderr, err := runScript(t, s, 20*time.Second, path, "FAKE_STATE="+state)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v\nstderr: %s", err, tt.wantErr, stderr)
			}
			if stdout != tt.wantStdout {
				t.Errorf("stdout = %q, want %q", stdout, tt.wantStdout)
			}
			if tt.wantErr && !strings.Contains(stderr, "of 3 nodes are Ready after 2s") {
				t.Errorf("stderr = %q", stderr)
			}
			calls, _ := os.ReadFile(filepath.Join(state, "calls"))
			if !strings.Contains(string(calls), "--kubeconfig "+kubeconfig) {
				t.Errorf("kubectl not called with the admin kubeconfig: %s", calls)
			}
		})
	}
}

func TestDrainNodeRuns(t *testing.T) {
	lookTool(t, "bash", "apt-get install -y bash")
	path := fakeBin(t, map[string]string{"kubectl": fakeKubectl})
	kubeconfig := writeTemp(t, t.TempDir(), "admin.conf", []byte("kubeconfig"), 0o600)
	s, err := RenderDrainNode(DrainNodeParams{Kubeconfig: kubeconfig, Node: "wp-1", Timeout: 90 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		exists     bool
		drainRC    string
		removes    bool
		apiDown    bool
		wantErr    bool
		wantStdout string
		wantDrain  bool
		wantDelete bool
	}{
		{name: "drained and deleted", exists: true, drainRC: "0", wantStdout: "node wp-1 drained and deleted\n", wantDrain: true, wantDelete: true},
		{name: "already gone", exists: false, wantStdout: "node wp-1 already gone\n"},
		{name: "drain blocked", exists: true, drainRC: "1", wantErr: true, wantDrain: true},
		{name: "gone during drain", exists: true, drainRC: "1", removes: true, wantStdout: "node wp-1 already gone\n", wantDrain: true},
		{name: "API unreachable", exists: true, apiDown: true, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state := t.TempDir()
			if tt.exists {
				writeTemp(t, state, "exists", nil, 0o644)
			}
			if tt.drainRC != "" {
				writeTemp(t, state, "drain_rc", []byte(tt.drainRC), 0o644)
			}
			if tt.removes {
				writeTemp(t, state, "drain_removes", nil, 0o644)
			}
			if tt.apiDown {
				writeTemp(t, state, "api_down", nil, 0o644)
			}
			stdout, stderr, err := runScript(t, s, 20*time.Second, path, "FAKE_STATE="+state, "FAKE_NODE=wp-1")
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v\nstderr: %s", err, tt.wantErr, stderr)
			}
			if stdout != tt.wantStdout {
				t.Errorf("stdout = %q, want %q", stdout, tt.wantStdout)
			}
			calls, _ := os.ReadFile(filepath.Join(state, "calls"))
			drained := strings.Contains(string(calls), "drain wp-1 --ignore-daemonsets --delete-emptydir-data --force --timeout=90s")
			deleted := strings.Contains(string(calls), "delete node wp-1")
			if drained != tt.wantDrain || deleted != tt.wantDelete {
				t.Errorf("drained %v deleted %v, want %v %v; calls:\n%s", drained, deleted, tt.wantDrain, tt.wantDelete, calls)
			}
		})
	}
}

func TestFetchKubeconfigRuns(t *testing.T) {
	lookTool(t, "bash", "apt-get install -y bash")
	dir := t.TempDir()
	content := "apiVersion: v1\nkind: Config\nclusters: []\n"
	present := writeTemp(t, dir, "k3s.yaml", []byte(content), 0o600)
	s, err := RenderFetchKubeconfig(FetchKubeconfigParams{Kubeconfig: present})
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := runScript(t, s, 10*time.Second)
	if err != nil || stdout != content {
		t.Errorf("stdout = %q, err %v (stderr %s); want the kubeconfig exactly", stdout, err, stderr)
	}
	s, err = RenderFetchKubeconfig(FetchKubeconfigParams{Kubeconfig: filepath.Join(dir, "missing.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err = runScript(t, s, 10*time.Second)
	if err == nil || stdout != "" || !strings.Contains(stderr, "not bootstrapped") {
		t.Errorf("missing kubeconfig: stdout %q, stderr %q, err %v", stdout, stderr, err)
	}
}

func TestClusterActionsReject(t *testing.T) {
	tests := []struct {
		name string
		fn   func() (string, error)
	}{
		{"nodes-ready relative kubeconfig", func() (string, error) {
			return RenderNodesReady(NodesReadyParams{Kubeconfig: "admin.conf", Count: 1})
		}},
		{"nodes-ready zero count", func() (string, error) {
			return RenderNodesReady(NodesReadyParams{Kubeconfig: KubeadmKubeconfig})
		}},
		{"drain-node bad name", func() (string, error) {
			return RenderDrainNode(DrainNodeParams{Kubeconfig: KubeadmKubeconfig, Node: "wp-1; rm -rf /"})
		}},
		{"drain-node no name", func() (string, error) {
			return RenderDrainNode(DrainNodeParams{Kubeconfig: KubeadmKubeconfig})
		}},
		{"fetch-kubeconfig empty", func() (string, error) {
			return RenderFetchKubeconfig(FetchKubeconfigParams{})
		}},
		{"wait-ready negative", func() (string, error) {
			return RenderWaitReady(WaitReadyParams{Timeout: -time.Second})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.fn(); err == nil {
				t.Errorf("accepted")
			}
		})
	}
}

// TestScriptsIgnoreTrailingInput checks that a script sent on standard input
// cannot be cut short by a command that reads standard input: main runs
// with /dev/null as input, so the trailing text is never executed as input.
func TestScriptsIgnoreTrailingInput(t *testing.T) {
	bash := lookTool(t, "bash", "apt-get install -y bash")
	s, err := renderScript("test", "\nmain() {\n\tcat\n\techo done\n}\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bash, "-s")
	cmd.Stdin = strings.NewReader(s + "echo SWALLOWED\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "done\nSWALLOWED\n" {
		t.Errorf("output %q: main read the script's own input", out)
	}
}
