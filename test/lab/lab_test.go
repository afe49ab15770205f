//go:build lab && linux

// Package labtest proves, with real hosts, that the cluster kforge makes
// works: kforge (the real binary) talks to the AWS emulator, the lab
// (test/testutil/lab) turns every instance into a Linux host with a real
// systemd, OpenSSH and cloud-init, and kforge's own scripts install a
// kubeadm cluster on them from an artifacts directory built from source
// (test/testutil/labartifacts), without any network out of the machine.
// Run it with test/lab/run (root).
package labtest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	corev1 "k8s.io/api/core/v1"

	"github.com/kforge/kforge/internal/artifacts"
	"github.com/kforge/kforge/internal/bootstrap"
	"github.com/kforge/kforge/internal/cloudint"
	"github.com/kforge/kforge/test/testutil/awscheck"
	"github.com/kforge/kforge/test/testutil/kforgebin"
	"github.com/kforge/kforge/test/testutil/lab"
	"github.com/kforge/kforge/test/testutil/labartifacts"
	"github.com/kforge/kforge/test/testutil/labimage"
	"github.com/kforge/kforge/test/testutil/moto"
)

var emu *moto.Server

func TestMain(m *testing.M) { moto.RunTests(kforgebin.Cleaning(m), &emu) }

const (
	name   = "lab"
	region = "us-east-1"
)

// build makes what the hosts install: the binaries (scripts/build-lab.sh,
// cached), their images and the artifacts directory kforge uploads from.
func build(t *testing.T) (artifactsDir, bin string) {
	t.Helper()
	start := time.Now()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(root, "scripts", "build-lab.sh")).Output()
	if err != nil {
		t.Fatalf("scripts/build-lab.sh: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	bin = lines[len(lines)-1]
	t.Logf("binaries ready in %s (%s)", bin, time.Since(start).Round(time.Second))

	start = time.Now()
	imgs, err := labimage.BuildKubeadmImages(bin, filepath.Join(labimage.CacheDir(), "images"))
	if err != nil {
		t.Fatalf("images: %v", err)
	}
	in := labartifacts.Inputs{Bin: bin, Arch: "amd64", Images: map[string]string{}}
	for _, img := range imgs {
		in.Images[img.Ref] = img.Path
	}
	// The cloud integration's images need AWS: the lab runs stand-ins
	// under their references (see labimage/standin).
	cloud, err := cloudint.Manifest(cloudint.Params{ClusterName: name, KubernetesVersion: labimage.KubernetesVersion})
	if err != nil {
		t.Fatal(err)
	}
	standins, err := labimage.BuildStandins(cloud, filepath.Join(labimage.CacheDir(), "images", "standins"), standinMode)
	if err != nil {
		t.Fatalf("stand-in images: %v", err)
	}
	for _, img := range standins {
		in.Images[img.Ref] = img.Path
	}
	t.Logf("images ready (%s)", time.Since(start).Round(time.Second))

	set := artifacts.Set{Bootstrap: artifacts.Kubeadm, Kubernetes: labimage.KubernetesVersion, Etcd: bootstrap.DefaultEtcdVersion, Cloud: true}
	artifactsDir = filepath.Join(labimage.CacheDir(), "artifacts", "kubeadm-"+set.Kubernetes+"-amd64")
	start = time.Now()
	if err := labartifacts.Assemble(context.Background(), set, in, artifactsDir); err != nil {
		t.Fatalf("artifacts: %v", err)
	}
	t.Logf("artifacts directory %s ready (%s)", artifactsDir, time.Since(start).Round(time.Second))
	return artifactsDir, bin
}

// standinMode is what the stand-in of a container of the cloud
// integration does: the cloud controller initialises nodes, the CSI
// livenessprobe sidecar answers the driver's probes (9808) and the node
// driver registrar its own (9809), the rest waits.
func standinMode(workload string, c corev1.Container) string {
	switch {
	case workload == cloudint.CCMDaemonSet:
		return labimage.StandinCCM
	case c.Name == "liveness-probe":
		return labimage.StandinServe(9808)
	case c.Name == "node-driver-registrar":
		return labimage.StandinServe(9809)
	}
	return labimage.StandinSleep
}

// kubectl runs the lab's kubectl inside the lab network, where the load
// balancer's public address is.
type kubectl struct {
	l          *lab.Lab
	bin        string
	kubeconfig string
}

func (k kubectl) run(ctx context.Context, args ...string) (string, error) {
	out, err := k.l.ExecInLab(ctx, append([]string{k.bin, "--kubeconfig", k.kubeconfig, "--request-timeout=10s"}, args...)...)
	return string(out), err
}

// readyNodes returns the nodes and whether each is Ready.
func (k kubectl) readyNodes(ctx context.Context) (map[string]bool, error) {
	out, err := k.run(ctx, "get", "nodes", "-o", "json")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []struct {
			Metadata struct{ Name string }
			Status   struct {
				Conditions []struct{ Type, Status string }
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, err
	}
	nodes := map[string]bool{}
	for _, n := range list.Items {
		for _, c := range n.Status.Conditions {
			if c.Type == "Ready" {
				nodes[n.Metadata.Name] = c.Status == "True"
			}
		}
	}
	return nodes, nil
}

// checkImagesPinned checks that every image kforge imported on a host
// (every tagged image: the hosts are offline) carries containerd's pinned
// label, which keeps it from the kubelet's image garbage collection.
func checkImagesPinned(ctx context.Context, t *testing.T, l *lab.Lab, h lab.Host) {
	t.Helper()
	out, err := l.Exec(ctx, h.InstanceID, "ctr", "-n", "k8s.io", "images", "ls")
	if err != nil {
		t.Errorf("%s: ctr images ls: %v\n%s", h.EC2Name, err, out)
		return
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n")[1:] {
		ref, _, _ := strings.Cut(line, " ")
		if ref == "" || strings.HasPrefix(ref, "sha256:") || strings.Contains(ref, "@") {
			continue // the runtime's own names for an image: its ID and digest
		}
		n++
		if !strings.Contains(line, "io.cri-containerd.pinned=pinned") {
			t.Errorf("%s: image %s is not pinned: %s", h.EC2Name, ref, line)
		}
	}
	if n < 3 {
		t.Errorf("%s: %d tagged images, want kforge's offline images:\n%s", h.EC2Name, n, out)
	}
	t.Logf("%s: %d images imported, every one pinned", h.EC2Name, n)
}

// apiServerDiag is what a control plane says of its API server, for a
// failure: the static pod manifests (and any held aside by a restore), the
// API server's containers, and the kubelet's last lines about it and its
// volumes.
func apiServerDiag(ctx context.Context, l *lab.Lab, h lab.Host) string {
	out, _ := l.Exec(ctx, h.InstanceID, "bash", "-c", "ls -l --time-style=full-iso /etc/kubernetes/manifests /etc/kubernetes/kforge-held 2>&1; crictl ps -a --name kube-apiserver; "+
		"journalctl -u kubelet --no-pager -o short-monotonic | grep -E 'kube-apiserver|volume' | grep -v status_manager | tail -n 40 | cut -c1-400")
	return string(out)
}

// dumpCluster logs, after a failure, what the cluster says of itself:
// nodes, pods and the latest events, for a failure seen only on another
// machine.
func dumpCluster(t *testing.T, k kubectl) {
	if !t.Failed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, args := range [][]string{
		{"get", "nodes", "-o", "wide"},
		{"get", "pods", "-A", "-o", "wide"},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
	} {
		out, err := k.run(ctx, args...)
		if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) > 40 {
			out = strings.Join(lines[len(lines)-40:], "\n")
		}
		t.Logf("after the failure, kubectl %s (%v):\n%s", strings.Join(args, " "), err, out)
	}
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s (last error: %v)", what, timeout, last)
		}
		time.Sleep(2 * time.Second)
	}
}

// allReady is a condition: exactly want nodes, all Ready.
func allReady(ctx context.Context, k kubectl, want int) func() (bool, error) {
	return func() (bool, error) {
		nodes, err := k.readyNodes(ctx)
		if err != nil {
			return false, err
		}
		ready := 0
		for _, r := range nodes {
			if r {
				ready++
			}
		}
		return len(nodes) == want && ready == want, fmt.Errorf("nodes %v", nodes)
	}
}

// hostOf finds the lab host of a VM by its Name tag.
func hostOf(t *testing.T, l *lab.Lab, ec2Name string) lab.Host {
	t.Helper()
	for _, h := range l.Hosts() {
		if h.EC2Name == ec2Name && h.State == lab.HostRunning {
			return h
		}
	}
	t.Fatalf("no running host for VM %s", ec2Name)
	return lab.Host{}
}

func TestKubeadmCluster(t *testing.T) {
	ctx := context.Background()
	artifactsDir, bin := build(t)

	cfg := emu.Config(t, region)
	l, err := lab.Start(ctx, lab.Options{AWS: cfg, AuthorizeKeyPairs: true, Logf: t.Logf, LogDir: filepath.Join(t.TempDir(), "logs")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	env := kforgebin.NewEnv(t, emu.Env()...)
	env.Timeout = 20 * time.Minute
	if err := l.WriteKnownHosts(filepath.Join(env.Home, ".ssh", "known_hosts")); err != nil {
		t.Fatal(err)
	}
	// The bucket of the scheduled snapshots and of kforge backup.
	if _, err := s3.NewFromConfig(cfg).CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("lab-backups")}); err != nil {
		t.Fatal(err)
	}
	create := []string{"create", "ha-aws", "--name", name, "--region", region, "--bootstrap", "kubeadm",
		"--etcd", "3", "--control-planes", "2", "--workers", "1", "--ssh-cidr", "10.0.0.0/8",
		"--etcd-backups", "s3://lab-backups/scheduled", "--backup-every", "1h", "--backup-keep", "3",
		"--artifacts", artifactsDir, "--ssh-jump", l.JumpSpec()}

	// 1. A create killed (SIGKILL) during the kubeadm join of the second
	// control plane, then run again, converges.
	start := time.Now()
	killedAt := killDuring(t, env, create, "kubeadm/cp/1", 5*time.Second)
	t.Logf("first create killed during kubeadm/cp/1 after %s", killedAt.Round(time.Second))
	resume := time.Now()
	r := env.MustRun(t, create...)
	t.Logf("the same create again: done in %s; %s from the first create to every node Ready", time.Since(resume).Round(time.Second), time.Since(start).Round(time.Second))
	if !strings.Contains(r.Stderr, "done     nodes-ready") {
		t.Errorf("the create did not wait for the nodes:\n%s", r.Stderr)
	}

	// 2. The kubeconfig from kforge switch reaches the API through the
	// load balancer: 3 Ready nodes, and a Deployment runs.
	kc := filepath.Join(env.Home, "kubeconfig")
	env.MustRun(t, "switch", "ha-aws", "--name", name, "--region", region, "--kubeconfig", kc)
	k := kubectl{l: l, bin: filepath.Join(bin, "kubectl"), kubeconfig: kc}
	t.Cleanup(func() { dumpCluster(t, k) }) // before the lab closes
	waitFor(t, "3 Ready nodes through the load balancer", 3*time.Minute, allReady(ctx, k, 3))
	deploy := fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: lab-pause, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: lab-pause}}
  template:
    metadata: {labels: {app: lab-pause}}
    spec:
      tolerations: [{operator: Exists}]
      containers: [{name: pause, image: "registry.k8s.io/pause:%s", imagePullPolicy: Never}]
`, labimage.PauseVersion)
	manifest := filepath.Join(l.Dir(), "deploy.yaml")
	if err := os.WriteFile(manifest, []byte(deploy), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := k.run(ctx, "apply", "-f", manifest); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	waitFor(t, "a Deployment of 2 replicas available", 3*time.Minute, func() (bool, error) {
		out, err := k.run(ctx, "get", "deployment", "lab-pause", "-o", "jsonpath={.status.availableReplicas}")
		return strings.TrimSpace(out) == "2", fmt.Errorf("available %q: %v", out, err)
	})
	// Every system pod runs: the control plane, kube-proxy, Flannel and
	// CoreDNS (which needs the pod network and the service network).
	waitFor(t, "every kube-system and kube-flannel pod Ready", 3*time.Minute, func() (bool, error) {
		out, err := k.run(ctx, "get", "pods", "-A", "-o", `jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`)
		if err != nil {
			return false, err
		}
		var notReady []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(line); len(f) != 2 || f[1] != "True" {
				notReady = append(notReady, line)
			}
		}
		return len(notReady) == 0, fmt.Errorf("not ready: %v", notReady)
	})
	out, _ := k.run(ctx, "get", "pods", "-A", "-o", "wide")
	t.Logf("pods:\n%s", out)
	checkCloudIntegration(ctx, t, k, cfg)
	for _, vm := range []string{name + "-cp-0", name + "-wp-0"} {
		checkImagesPinned(ctx, t, l, hostOf(t, l, vm))
	}

	// 3. etcd: three started members over TLS with kforge's client
	// certificate (the one the etcd recipe leaves on each member).
	etcd0 := hostOf(t, l, name+"-etcd-0")
	members, err := l.Exec(ctx, etcd0.InstanceID, "etcdctl", "--endpoints=https://"+etcd0.PrivateIP+":2379",
		"--cacert=/etc/etcd/pki/ca.crt", "--cert=/etc/etcd/pki/client.crt", "--key=/etc/etcd/pki/client.key", "member", "list")
	if err != nil || strings.Count(string(members), ", started, ") != 3 {
		t.Errorf("etcdctl member list: %v\n%s", err, members)
	}

	// 3b. Scheduled snapshots under the real systemd of the etcd VMs.
	checkBackupSchedule(ctx, t, l)

	// 4. High availability: the API answers through HAProxy with an etcd
	// member down, then also with the first control plane down.
	for _, vm := range []string{name + "-etcd-0", name + "-cp-0"} {
		h := hostOf(t, l, vm)
		if err := l.Stop(ctx, h.InstanceID); err != nil {
			t.Fatalf("stop %s: %v", vm, err)
		}
		t.Logf("stopped %s", vm)
		waitFor(t, "the API answers through the load balancer without "+vm, 2*time.Minute, func() (bool, error) {
			out, err := k.run(ctx, "get", "--raw", "/readyz")
			return err == nil && strings.TrimSpace(out) == "ok", fmt.Errorf("readyz %q: %v", out, err)
		})
		if _, err := k.run(ctx, "get", "nodes"); err != nil {
			t.Errorf("kubectl get nodes without %s: %v", vm, err)
		}
	}
	for _, vm := range []string{name + "-etcd-0", name + "-cp-0"} {
		var id string
		for _, h := range l.Hosts() {
			if h.EC2Name == vm {
				id = h.InstanceID
			}
		}
		if err := l.Start(ctx, id); err != nil {
			t.Fatalf("start %s: %v", vm, err)
		}
	}
	restarted := time.Now()
	waitFor(t, "every node Ready again after the restarts", 5*time.Minute, allReady(ctx, k, 3))
	t.Logf("every node Ready again %s after the restarts", time.Since(restarted).Round(time.Second))
	// Every control plane serves the API itself again (not only through
	// the load balancer): the first one's kubelet talks to its own API
	// server, and kforge's later repairs wait for each.
	for _, cp := range []string{name + "-cp-0", name + "-cp-1"} {
		h := hostOf(t, l, cp)
		ok := false
		for deadline := time.Now().Add(4 * time.Minute); !ok && time.Now().Before(deadline); time.Sleep(2 * time.Second) {
			out, err := l.Exec(ctx, h.InstanceID, "kubectl", "--kubeconfig=/etc/kubernetes/admin.conf", "--server=https://"+h.PrivateIP+":6443",
				"--request-timeout=5s", "get", "--raw=/readyz")
			ok = err == nil && strings.TrimSpace(string(out)) == "ok"
		}
		t.Logf("the API server of %s answers itself %s after the restarts", cp, time.Since(restarted).Round(time.Second))
		if ok && time.Since(restarted) > time.Minute && cp == name+"-cp-0" {
			// Slow: say where the time went, for the record.
			diag, _ := l.Exec(ctx, h.InstanceID, "bash", "-c", "journalctl -b -u kubelet -u containerd --no-pager -o short-monotonic | grep -E 'apiserver|Started|Starting|back-off|Back-off|failed|Failed' | grep -v status_manager | head -n 60 | cut -c1-300")
			t.Logf("the kubelet of %s since its boot:\n%s", cp, diag)
		}
		if !ok {
			t.Fatalf("the API server of %s did not come back after the restarts:\n%s", cp, apiServerDiag(ctx, l, h))
		}
	}

	// 5. Drift: an etcd VM terminated outside kforge. kforge diff names
	// it; the same create replaces it: the new VM (a new address) takes
	// the member's place in the member list, every API server follows it,
	// and the cluster never stops answering.
	old := hostOf(t, l, name+"-etcd-1")
	if err := terminate(ctx, cfg, old.InstanceID); err != nil {
		t.Fatal(err)
	}
	if d := env.Run(t, "diff", "ha-aws", "--name", name, "--region", region); d.Code != 1 || !strings.Contains(d.Stdout, "terminated outside kforge") {
		t.Errorf("kforge diff after an etcd VM was terminated: exit %d\n%s%s", d.Code, d.Stdout, d.Stderr)
	}
	repair := time.Now()
	r = env.MustRun(t, create...)
	t.Logf("etcd member replaced by the same create in %s", time.Since(repair).Round(time.Second))
	if !strings.Contains(r.Stderr, "drift") {
		t.Errorf("the repair shows no drift:\n%s", r.Stderr)
	}
	etcd1 := hostOf(t, l, name+"-etcd-1")
	if etcd1.InstanceID == old.InstanceID {
		t.Fatalf("etcd-1 was not replaced")
	}
	members, err = l.Exec(ctx, etcd1.InstanceID, "etcdctl", "--endpoints=https://"+etcd1.PrivateIP+":2379",
		"--cacert=/etc/etcd/pki/ca.crt", "--cert=/etc/etcd/pki/client.crt", "--key=/etc/etcd/pki/client.key", "member", "list")
	if err != nil || strings.Count(string(members), ", started, ") != 3 || !strings.Contains(string(members), "https://"+etcd1.PrivateIP+":2380") {
		t.Errorf("etcdctl member list after the replacement: %v\n%s", err, members)
	}
	for _, cp := range []string{name + "-cp-0", name + "-cp-1"} {
		h := hostOf(t, l, cp)
		out, err := l.Exec(ctx, h.InstanceID, "grep", "--", "--etcd-servers=", bootstrap.KubeadmAPIServerManifest)
		if err != nil || !strings.Contains(string(out), "https://"+etcd1.PrivateIP+":2379") || strings.Contains(string(out), "https://"+old.PrivateIP+":2379") {
			t.Errorf("the API server of %s does not use the new etcd member %s: %v\n%s", cp, etcd1.PrivateIP, err, out)
		}
	}
	waitFor(t, "every node Ready after the etcd replacement", 3*time.Minute, allReady(ctx, k, 3))
	if d := env.Run(t, "diff", "ha-aws", "--name", name, "--region", region); d.Code != 0 {
		t.Errorf("kforge diff after the repair: exit %d\n%s%s", d.Code, d.Stdout, d.Stderr)
	}

	// 5b. Backup and restore on the real cluster: a snapshot stored in the
	// emulator's S3, then a restore from it; what was written after the
	// snapshot is gone, what was before is there, and the cluster works.
	backupAndRestore(ctx, t, env, k, l, cfg)

	// 6. Scale: a real worker joins, then is drained and removed.
	scaled := time.Now()
	env.MustRun(t, "scale", "ha-aws", "--name", name, "--region", region, "--workers", "2")
	waitFor(t, "4 Ready nodes after scale up", 2*time.Minute, allReady(ctx, k, 4))
	t.Logf("scale up to 2 workers: 4 Ready nodes in %s", time.Since(scaled).Round(time.Second))
	wp1 := nodeNames(ctx, t, cfg)[name+"-wp-1"]
	env.MustRun(t, "scale", "ha-aws", "--name", name, "--region", region, "--workers", "1")
	waitFor(t, "3 nodes after scale down", 2*time.Minute, allReady(ctx, k, 3))
	nodes, _ := k.readyNodes(ctx)
	if _, ok := nodes[wp1]; ok || wp1 == "" {
		t.Errorf("the removed worker (node %q) is still a node: %v", wp1, nodes)
	}

	// 7. Delete: nothing left in AWS, no host left in the lab.
	env.MustRun(t, "delete", "ha-aws", "--name", name, "--region", region, "--yes")
	awscheck.Empty(t, cfg, "ha-aws", name)
	waitFor(t, "every host removed", time.Minute, func() (bool, error) {
		var left []string
		for _, h := range l.Hosts() {
			if h.State != lab.HostRemoved {
				left = append(left, h.EC2Name+" "+string(h.State))
			}
		}
		return len(left) == 0, fmt.Errorf("hosts %v", left)
	})
}

// backupAndRestore takes a backup with kforge backup into the emulator's
// S3, writes a ConfigMap after it, restores with kforge restore, and
// checks that the cluster is back as it was at the snapshot: the
// ConfigMap from before is there, the one from after is not, the API
// answers through the load balancer, every node is Ready and etcd has
// three started members.
func backupAndRestore(ctx context.Context, t *testing.T, env *kforgebin.Env, k kubectl, l *lab.Lab, cfg aws.Config) {
	t.Helper()
	if out, err := k.run(ctx, "create", "configmap", "lab-before", "--from-literal=when=before"); err != nil {
		t.Fatalf("create configmap: %v\n%s", err, out)
	}
	start := time.Now()
	r := env.MustRun(t, "backup", "ha-aws", "--name", name, "--region", region, "--to", "s3://lab-backups/etcd", "-o", "json")
	var snap struct {
		URL      string
		Revision int64
		Size     int64
	}
	if err := json.Unmarshal([]byte(r.Stdout), &snap); err != nil || snap.URL == "" {
		t.Fatalf("backup -o json: %v\n%s", err, r.Stdout)
	}
	t.Logf("backup: revision %d, %d bytes, in %s", snap.Revision, snap.Size, time.Since(start).Round(time.Second))
	if out, err := k.run(ctx, "create", "configmap", "lab-after", "--from-literal=when=after"); err != nil {
		t.Fatalf("create configmap: %v\n%s", err, out)
	}
	start = time.Now()
	restore := []string{"restore", "ha-aws", "--name", name, "--region", region, "--from", snap.URL, "--yes"}
	if r := env.Run(t, restore...); r.Code != 0 {
		// Say what each control plane's kubelet made of the API server's
		// return, for a failure seen only on another machine.
		for _, cp := range []string{name + "-cp-0", name + "-cp-1"} {
			t.Logf("%s after the failed restore:\n%s", cp, apiServerDiag(ctx, l, hostOf(t, l, cp)))
		}
		t.Fatalf("kforge %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(restore, " "), r.Code, r.Stdout, r.Stderr)
	}
	t.Logf("restore: %s", time.Since(start).Round(time.Second))
	waitFor(t, "the API answers through the load balancer after the restore", 5*time.Minute, func() (bool, error) {
		out, err := k.run(ctx, "get", "--raw", "/readyz")
		return err == nil && strings.TrimSpace(out) == "ok", fmt.Errorf("readyz %q: %v", out, err)
	})
	if out, err := k.run(ctx, "get", "configmap", "lab-before", "-o", "jsonpath={.data.when}"); err != nil || out != "before" {
		t.Errorf("the ConfigMap written before the snapshot: %q, %v", out, err)
	}
	if out, err := k.run(ctx, "get", "configmap", "lab-after"); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("the ConfigMap written after the snapshot: %v\n%s; want NotFound", err, out)
	}
	waitFor(t, "every node Ready after the restore", 3*time.Minute, allReady(ctx, k, 3))
	etcd0 := hostOf(t, l, name+"-etcd-0")
	members, err := l.Exec(ctx, etcd0.InstanceID, "etcdctl", "--endpoints=https://"+etcd0.PrivateIP+":2379",
		"--cacert=/etc/etcd/pki/ca.crt", "--cert=/etc/etcd/pki/client.crt", "--key=/etc/etcd/pki/client.key", "member", "list")
	if err != nil || strings.Count(string(members), ", started, ") != 3 {
		t.Errorf("etcdctl member list after the restore: %v\n%s", err, members)
	}
	// The restored revision went well past the snapshot's, so that the
	// cluster's watches list again rather than wait at a revision from
	// before the restore.
	status, err := l.Exec(ctx, etcd0.InstanceID, "etcdctl", "--endpoints=https://"+etcd0.PrivateIP+":2379",
		"--cacert=/etc/etcd/pki/ca.crt", "--cert=/etc/etcd/pki/client.crt", "--key=/etc/etcd/pki/client.key", "endpoint", "status", "-w", "json")
	var st []struct {
		Status struct {
			Header struct {
				Revision int64 `json:"revision"`
			} `json:"header"`
		}
	}
	if err == nil {
		err = json.Unmarshal(status, &st)
	}
	if err != nil || len(st) != 1 || st[0].Status.Header.Revision < snap.Revision+bootstrap.RestoreRevisionBump {
		t.Errorf("etcd's revision after the restore: %v, want at least the snapshot's %d + %d\n%s", err, snap.Revision, int64(bootstrap.RestoreRevisionBump), status)
	} else {
		t.Logf("etcd's revision after the restore: %d (the snapshot's: %d)", st[0].Status.Header.Revision, snap.Revision)
	}
}

// checkBackupSchedule checks the scheduled snapshots on the real etcd VMs:
// systemd accepted the timer, it is enabled and waiting; run once, the
// agent on the etcd leader takes and checks a real snapshot and then asks
// for the instance profile's credentials (at a loopback address of the
// VM, where nothing answers: the lab has no instance metadata and no S3),
// while the other members only say that they do not lead.
func checkBackupSchedule(ctx context.Context, t *testing.T, l *lab.Lab) {
	t.Helper()
	const unit = "kforge-etcd-backup"
	var leaders, followers []string
	for i := 0; i < 3; i++ {
		vm := fmt.Sprintf("%s-etcd-%d", name, i)
		h := hostOf(t, l, vm)
		run := func(args ...string) string {
			out, _ := l.Exec(ctx, h.InstanceID, args...)
			return strings.TrimSpace(string(out))
		}
		if en, act := run("systemctl", "is-enabled", unit+".timer"), run("systemctl", "is-active", unit+".timer"); en != "enabled" || act != "active" {
			t.Errorf("%s: the timer is %q and %q, want enabled and active", vm, en, act)
		}
		if next := run("systemctl", "show", unit+".timer", "-p", "NextElapseUSecMonotonic", "--value"); next == "" || next == "infinity" || next == "0" {
			t.Errorf("%s: the timer has no next run (%q)", vm, next)
		}
		if out := run("bash", "-c", "systemctl set-environment AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:9 && "+
			"{ systemctl start "+unit+".service; systemctl unset-environment AWS_EC2_METADATA_SERVICE_ENDPOINT; }"); out != "" {
			t.Logf("%s: systemctl start %s: %s", vm, unit, out)
		}
		journal := run("journalctl", "-u", unit+".service", "--no-pager", "-o", "cat")
		switch {
		case strings.Contains(journal, "does not lead the etcd cluster"):
			followers = append(followers, vm)
		case strings.Contains(journal, "no instance metadata token (IMDSv2) from http://127.0.0.1:9"):
			leaders = append(leaders, vm)
			if st := run("etcdutl", "snapshot", "status", "/var/lib/kforge/backup/scheduled.db", "--write-out=json"); !strings.Contains(st, `"revision":`) {
				t.Errorf("%s: the leader's snapshot fails etcdutl snapshot status: %s", vm, st)
			}
		default:
			t.Errorf("%s: the agent neither deferred to the leader nor reached the credentials:\n%s", vm, journal)
		}
	}
	if len(leaders) != 1 || len(followers) != 2 {
		t.Errorf("scheduled snapshots: leaders %v, followers %v; want exactly one leader", leaders, followers)
	}
	t.Logf("scheduled snapshots: timers active on 3 members; %v took a snapshot, %v deferred to it", leaders, followers)
}

// nodeNames maps the cluster's live VMs (by Name tag) to their expected
// Kubernetes node names: their private DNS names, as the emulator gives
// them.
func nodeNames(ctx context.Context, t *testing.T, cfg aws.Config) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, in := range runningVMs(ctx, t, cfg) {
		m[tagOf(in, "Name")] = aws.ToString(in.PrivateDnsName)
	}
	return m
}

// runningVMs are the cluster's running instances, from the emulator.
func runningVMs(ctx context.Context, t *testing.T, cfg aws.Config) []ec2types.Instance {
	t.Helper()
	out, err := ec2.NewFromConfig(cfg).DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{
		{Name: aws.String("tag:kforge.io/cluster"), Values: []string{name}},
		{Name: aws.String("instance-state-name"), Values: []string{"running"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var vms []ec2types.Instance
	for _, r := range out.Reservations {
		vms = append(vms, r.Instances...)
	}
	return vms
}

func tagOf(in ec2types.Instance, key string) string {
	for _, tag := range in.Tags {
		if aws.ToString(tag.Key) == key {
			return aws.ToString(tag.Value)
		}
	}
	return ""
}

// checkCloudIntegration checks, on the real cluster, what kforge's cloud
// integration sets up and the lab can run (its containers are stand-ins:
// see labimage/standin): every node is named by its private DNS name and
// carries its provider ID (kubelets with an external cloud provider), no
// node is left uninitialised, the cloud controller runs on exactly the
// control planes and the EBS CSI controller on control planes only, the
// CSI node plugin on every node, the CSIDriver is registered, and gp3 is
// the only default StorageClass.
func checkCloudIntegration(ctx context.Context, t *testing.T, k kubectl, cfg aws.Config) {
	t.Helper()
	out, err := k.run(ctx, "get", "nodes", "-o", "json")
	if err != nil {
		t.Fatalf("get nodes: %v", err)
	}
	var nodes corev1.NodeList
	if err := json.Unmarshal([]byte(out), &nodes); err != nil {
		t.Fatal(err)
	}
	byName := map[string]corev1.Node{}
	for _, n := range nodes.Items {
		byName[n.Name] = n
		for _, taint := range n.Spec.Taints {
			if taint.Key == bootstrap.UninitializedTaint {
				t.Errorf("node %s is still tainted %s", n.Name, taint.Key)
			}
		}
	}
	ids := map[string]string{}
	cps := map[string]bool{}
	for _, in := range runningVMs(ctx, t, cfg) {
		role := tagOf(in, "kforge.io/role")
		if role != "cp" && role != "wp" {
			continue
		}
		dns := aws.ToString(in.PrivateDnsName)
		ids[dns] = "aws:///" + aws.ToString(in.Placement.AvailabilityZone) + "/" + aws.ToString(in.InstanceId)
		if role == "cp" {
			cps[dns] = true
		}
	}
	if len(byName) != len(ids) {
		t.Errorf("nodes %v, want one per node VM %v", keysOf(byName), ids)
	}
	for dns, id := range ids {
		n, ok := byName[dns]
		if !ok {
			t.Errorf("no node named %s (the VM's private DNS name)", dns)
			continue
		}
		if n.Spec.ProviderID != id {
			t.Errorf("node %s has provider ID %q, want %s", dns, n.Spec.ProviderID, id)
		}
	}
	// Where each component's pods run.
	out, err = k.run(ctx, "get", "pods", "-n", cloudint.Namespace, "-o", "json")
	if err != nil {
		t.Fatalf("get pods: %v", err)
	}
	var pods corev1.PodList
	if err := json.Unmarshal([]byte(out), &pods); err != nil {
		t.Fatal(err)
	}
	on := map[string]map[string]bool{}
	for _, p := range pods.Items {
		for _, owner := range []string{cloudint.CCMDaemonSet, cloudint.EBSController, cloudint.EBSNode} {
			if strings.HasPrefix(p.Name, owner+"-") {
				if on[owner] == nil {
					on[owner] = map[string]bool{}
				}
				on[owner][p.Spec.NodeName] = true
			}
		}
	}
	if len(on[cloudint.CCMDaemonSet]) != len(cps) {
		t.Errorf("the cloud controller runs on %v, want every control plane %v", on[cloudint.CCMDaemonSet], cps)
	}
	for _, owner := range []string{cloudint.CCMDaemonSet, cloudint.EBSController} {
		if len(on[owner]) == 0 {
			t.Errorf("no pod of %s", owner)
		}
		for n := range on[owner] {
			if !cps[n] {
				t.Errorf("%s runs on %s, which is not a control plane", owner, n)
			}
		}
	}
	if len(on[cloudint.EBSNode]) != len(ids) {
		t.Errorf("the EBS CSI node plugin runs on %v, want every node", on[cloudint.EBSNode])
	}
	if out, err := k.run(ctx, "get", "csidriver", cloudint.EBSDriverName); err != nil {
		t.Errorf("CSIDriver %s: %v\n%s", cloudint.EBSDriverName, err, out)
	}
	out, err = k.run(ctx, "get", "storageclass", "-o", `jsonpath={range .items[*]}{.metadata.name} {.metadata.annotations.storageclass\.kubernetes\.io/is-default-class}{"\n"}{end}`)
	if err != nil {
		t.Fatalf("get storageclass: %v", err)
	}
	var defaults []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[1] == "true" {
			defaults = append(defaults, f[0])
		}
	}
	if len(defaults) != 1 || defaults[0] != cloudint.StorageClass {
		t.Errorf("default StorageClasses %v, want only %s", defaults, cloudint.StorageClass)
	}
}

func keysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// terminate terminates an instance through the emulator, as someone
// outside kforge would.
func terminate(ctx context.Context, cfg aws.Config, id string) error {
	_, err := ec2.NewFromConfig(cfg).TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
	return err
}

// killDuring starts kforge with args and SIGKILLs it after delay once the
// step starts; it returns how long kforge ran.
func killDuring(t *testing.T, env *kforgebin.Env, args []string, step string, delay time.Duration) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := env.Cmd(t, ctx, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	var tail []string
	for sc.Scan() {
		line := sc.Text()
		tail = append(tail, line)
		if strings.Contains(line, "start    "+step+" ") {
			time.Sleep(delay)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	err = cmd.Wait()
	ran := time.Since(start)
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("kforge was not killed during %s (%v):\n%s", step, err, strings.Join(tail, "\n"))
	}
	return ran
}
