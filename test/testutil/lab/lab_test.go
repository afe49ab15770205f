//go:build lab && linux

package lab

import (
	"bufio"
	"context"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/kforge/kforge/test/testutil/moto"
)

// startLab starts a lab for a test and closes it when the test ends,
// checking that nothing is left behind.
func startLab(t *testing.T, ctx context.Context, opts Options) *Lab {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	t0 := time.Now()
	l, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING lab start (base warm, jump host up): %s", time.Since(t0).Round(time.Millisecond))
	t.Cleanup(func() {
		t0 := time.Now()
		if err := l.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		t.Logf("TIMING lab close: %s", time.Since(t0).Round(time.Millisecond))
		assertNothingLeft(t, l.ID())
	})
	return l
}

// assertNothingLeft checks with the system's own tools that lab id left
// no network namespace, cgroup, mount, directory or process.
func assertNothingLeft(t testing.TB, id string) {
	t.Helper()
	prefix := NamePrefix + id
	if left := Leftovers(id); len(left) > 0 {
		t.Errorf("lab %s left: %s", id, strings.Join(left, "; "))
	}
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), prefix) {
		t.Errorf("ip netns still lists %s:\n%s", prefix, out)
	}
	if out, _ := exec.Command("mount").Output(); strings.Contains(string(out), filepath.Join(RuntimeRoot, id)) {
		t.Errorf("mount still lists %s", filepath.Join(RuntimeRoot, id))
	}
	if m, _ := filepath.Glob("/sys/fs/cgroup/*/lab/" + prefix + "*"); len(m) > 0 {
		t.Errorf("cgroups left: %v", m)
	}
	// nspawn loops name the host (-M klab-...), sshd its configuration
	// under the runtime directory.
	if out, _ := exec.Command("ps", "-eo", "pid,args").Output(); len(out) > 0 {
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, prefix) || strings.Contains(line, filepath.Join(RuntimeRoot, id)) {
				t.Errorf("process left: %s", line)
			}
		}
	}
}

// TestLab boots three hosts for three instances and proves what kforge
// relies on: cloud-init ran the instance's user-data (host key, ubuntu
// with the key pair and sudo), SSH through the real jump host, the VPC's
// network and nothing beyond it, stop and start, termination, and a
// clean Close.
func TestLab(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	t0 := time.Now()
	if _, err := EnsureBase(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING base (EnsureBase): %s", time.Since(t0).Round(time.Millisecond))

	emu := moto.Start(t)
	cfg := emu.Config(t, "us-east-1")
	vpc := newTestVPC(t, ctx, cfg)
	logDir := t.TempDir()
	l := startLab(t, ctx, Options{AWS: cfg, VPCID: vpc.vpcID, AuthorizeKeyPairs: true, LogDir: logDir})

	vms := []testVM{
		vpc.runVM(t, ctx, "labtest-cp-1", "cp"),
		vpc.runVM(t, ctx, "labtest-wp-1", "wp"),
		vpc.runVM(t, ctx, "labtest-etcd-1", "etcd"),
	}

	// Every host boots; cloud-init processes its user-data.
	var wg sync.WaitGroup
	for _, vm := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := l.WaitHost(ctx, vm.id)
			if err != nil {
				t.Error(err)
				return
			}
			launched := time.Since(vm.launched)
			if err := l.WaitSSH(ctx, vm.id); err != nil {
				t.Error(err)
				return
			}
			sshUp := time.Since(vm.launched)
			status, err := l.WaitCloudInit(ctx, vm.id)
			if err != nil {
				t.Error(err)
				return
			}
			ciDone := time.Since(vm.launched)
			if !strings.Contains(status, "status: done") {
				t.Errorf("%s: cloud-init status:\n%s", vm.id, status)
			}
			if err := l.WaitBooted(ctx, vm.id); err != nil {
				t.Error(err)
			}
			t.Logf("TIMING %s (%s, %s): host launched %s, sshd answers %s, cloud-init done %s, systemd running %s after RunInstances",
				vm.id, h.Name, vm.role, launched.Round(time.Millisecond), sshUp.Round(time.Millisecond),
				ciDone.Round(time.Millisecond), time.Since(vm.launched).Round(time.Millisecond))
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	hosts := map[string]Host{}
	for _, vm := range vms {
		h, ok := l.Host(vm.id)
		if !ok {
			t.Fatalf("no host for %s", vm.id)
		}
		if h.Role != vm.role || h.EC2Name != vm.hostname || h.PrivateIP == "" || h.PublicIP == "" {
			t.Errorf("host %+v does not match instance %s (%s, %s)", h, vm.id, vm.role, vm.hostname)
		}
		hosts[vm.id] = h
	}
	if n := len(l.Hosts()); n != len(vms) {
		t.Errorf("Hosts() lists %d hosts, want %d", n, len(vms))
	}

	t.Run("cloud-init", func(t *testing.T) {
		for _, vm := range vms {
			pub, err := l.Exec(ctx, vm.id, "cat", "/etc/ssh/ssh_host_ed25519_key.pub")
			if err != nil {
				t.Fatal(err)
			}
			k, _, _, _, err := ssh.ParseAuthorizedKey(pub)
			if err != nil {
				t.Fatal(err)
			}
			if string(k.Marshal()) != string(vm.hostKey.Marshal()) {
				t.Errorf("%s: host key %s, user-data's %s", vm.id, ssh.FingerprintSHA256(k), ssh.FingerprintSHA256(vm.hostKey))
			}
			if out, err := l.Exec(ctx, vm.id, "sh", "-c", "ls /etc/ssh/ssh_host_*_key"); err != nil || strings.TrimSpace(string(out)) != "/etc/ssh/ssh_host_ed25519_key" {
				t.Errorf("%s: host keys %q (%v), want only the user-data's ed25519 key", vm.id, out, err)
			}
			if out, err := l.Exec(ctx, vm.id, "hostname"); err != nil || strings.TrimSpace(string(out)) != vm.hostname {
				t.Errorf("%s: hostname %q (%v), want %s", vm.id, out, err, vm.hostname)
			}
			// The kubelet's needs that lab-init provides.
			if _, err := l.Exec(ctx, vm.id, "test", "-e", "/dev/kmsg"); err != nil {
				t.Errorf("%s: no /dev/kmsg: %v", vm.id, err)
			}
			if _, err := l.Exec(ctx, vm.id, "test", "-d", "/sys/fs/cgroup/memory/system.slice"); err != nil {
				t.Errorf("%s: systemd does not manage the memory controller: %v", vm.id, err)
			}
			// containerd's overlay snapshotter cannot work on an overlay.
			if out, err := l.Exec(ctx, vm.id, "stat", "-f", "-c", "%T", "/var/lib/containerd"); err != nil || strings.Contains(string(out), "overlay") {
				t.Errorf("%s: /var/lib/containerd is on %q (%v)", vm.id, out, err)
			}
			// The kubelet measures the host's own disk (nodefs: the root;
			// imagefs: containerd's), not the machine's.
			for _, dir := range []string{"/", "/var/lib/containerd"} {
				out, err := l.Exec(ctx, vm.id, "stat", "-f", "-c", "%S %b", dir)
				var bsize, blocks int64
				if _, serr := fmt.Sscan(string(out), &bsize, &blocks); err != nil || serr != nil || bsize*blocks > DiskGiB<<30 || bsize*blocks < (DiskGiB-2)<<30 {
					t.Errorf("%s: %s is on a filesystem of %d bytes (%q, %v), want the host's disk of %d GiB", vm.id, dir, bsize*blocks, out, err, DiskGiB)
				}
			}
			if out, err := l.Exec(ctx, vm.id, "sh", "-c", "grep -c 'WARNING\\|ERROR' /var/log/cloud-init.log || true"); err == nil && strings.TrimSpace(string(out)) != "0" {
				log, _ := l.Exec(ctx, vm.id, "grep", "WARNING\\|ERROR", "/var/log/cloud-init.log")
				t.Logf("%s: cloud-init logged warnings:\n%s", vm.id, log)
			}
		}
	})

	t.Run("services", func(t *testing.T) {
		// What kforge's scripts start: the image's disabled services, a
		// working overlay snapshotter, and systemd's resource control (the
		// kubelet's systemd cgroup driver).
		vm := vms[1]
		if out, err := l.Exec(ctx, vm.id, "systemctl", "enable", "--now", "containerd", "haproxy"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if out, err := l.Exec(ctx, vm.id, "systemctl", "is-active", "containerd", "haproxy"); err != nil {
			t.Errorf("%v: %s", err, out)
		}
		ctx5, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := poll(ctx5, 200*time.Millisecond, "containerd's plugins", func() (bool, error) {
			out, err := l.Exec(ctx5, vm.id, "ctr", "plugins", "ls")
			for _, line := range strings.Split(string(out), "\n") {
				if f := strings.Fields(line); len(f) >= 4 && f[1] == "overlayfs" {
					if f[3] == "ok" {
						return true, nil
					}
					return false, fmt.Errorf("overlayfs snapshotter: %s", line)
				}
			}
			return false, err
		}); err != nil {
			t.Error(err)
		}
		out, err := l.Exec(ctx, vm.id, "systemd-run", "--wait", "--quiet", "-p", "MemoryMax=64M", "-p", "TasksMax=50",
			"sh", "-c", "cat /sys/fs/cgroup/memory$(grep :memory: /proc/self/cgroup | cut -d: -f3)/memory.limit_in_bytes > /run/lab-limit")
		if err != nil {
			t.Errorf("systemd-run: %v\n%s", err, out)
		}
		if out, err := l.Exec(ctx, vm.id, "cat", "/run/lab-limit"); err != nil || strings.TrimSpace(string(out)) != "67108864" {
			t.Errorf("systemd did not set MemoryMax: %q, %v", out, err)
		}
	})

	t.Run("ssh through the jump host", func(t *testing.T) {
		// kforge checks the jump host against ~/.ssh/known_hosts.
		kh := filepath.Join(t.TempDir(), ".ssh", "known_hosts")
		if err := os.MkdirAll(filepath.Dir(kh), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(kh, []byte("[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEqUdKc1vd5KQvEYBm3EPhXqcrQvgWTMk9NHMSdvtfmU stale\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := l.WriteKnownHosts(kh); err != nil {
			t.Fatal(err)
		}
		if err := l.WriteKnownHosts(kh); err != nil { // idempotent
			t.Fatal(err)
		}
		b, _ := os.ReadFile(kh)
		if n := strings.Count(string(b), "[127.0.0.1]:"); n != 2 {
			t.Errorf("known_hosts has %d lines for 127.0.0.1, want the stale one and the lab's:\n%s", n, b)
		}
		check, err := knownhosts.New(kh)
		if err != nil {
			t.Fatal(err)
		}
		for _, vm := range vms {
			t0 := time.Now()
			c, done, err := sshVia(ctx, l, check, vpc.login, hosts[vm.id].PrivateIP, vm.hostKey)
			if err != nil {
				t.Fatal(err)
			}
			out, err := runSSH(c, "sudo -n true && id -un && hostname && echo $SHELL")
			done()
			if err != nil || out != "ubuntu\n"+vm.hostname+"\n/bin/bash" {
				t.Errorf("%s: %q, %v", vm.id, out, err)
			}
			t.Logf("TIMING %s: SSH login and command through the jump host %s", vm.id, time.Since(t0).Round(time.Millisecond))
		}
		// The jump host admits only authorized keys.
		if stranger, err := ssh.NewSignerFromKey(newKey(t)); err == nil {
			if _, done, err := sshVia(ctx, l, check, stranger, hosts[vms[0].id].PrivateIP, vms[0].hostKey); err == nil {
				done()
				t.Error("the jump host admitted an unknown key")
			}
		}
		// A wrong host key is refused (kforge pins the user-data's).
		other := vms[1].hostKey
		if _, done, err := sshVia(ctx, l, check, vpc.login, hosts[vms[0].id].PrivateIP, other); err == nil {
			done()
			t.Error("a host presenting another key was accepted")
		}
	})

	t.Run("openssh ProxyJump", func(t *testing.T) {
		dir := t.TempDir()
		keyFile := filepath.Join(dir, "id")
		block, err := ssh.MarshalPrivateKey(vpc.loginKey, "")
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, keyFile, string(pem.EncodeToMemory(block)))
		kh := filepath.Join(dir, "known_hosts")
		if err := l.WriteKnownHosts(kh); err != nil {
			t.Fatal(err)
		}
		h := hosts[vms[0].id]
		f, _ := os.OpenFile(kh, os.O_APPEND|os.O_WRONLY, 0o600)
		fmt.Fprintln(f, knownhosts.Line([]string{h.PrivateIP}, vms[0].hostKey))
		f.Close()
		conf := filepath.Join(dir, "config")
		writeFile(t, conf, fmt.Sprintf("Host *\n  IdentityFile %s\n  IdentitiesOnly yes\n  UserKnownHostsFile %s\n  StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 10\n", keyFile, kh))
		out, err := exec.CommandContext(ctx, "ssh", "-F", conf, "-J", l.JumpSpec(), "ubuntu@"+h.PrivateIP, "sudo -n hostname").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != vms[0].hostname {
			t.Errorf("ssh -J: %q, %v", out, err)
		}
	})

	t.Run("network", func(t *testing.T) {
		a, b := hosts[vms[0].id], hosts[vms[1].id]
		// Host to host over the VPC's addresses, public included.
		for _, ip := range []string{b.PrivateIP, b.PublicIP} {
			out, err := l.Exec(ctx, vms[0].id, "timeout", "5", "bash", "-c", "exec 3<>/dev/tcp/"+ip+"/22; head -c 4 <&3")
			if err != nil || string(out) != "SSH-" {
				t.Errorf("%s -> %s:22: %q, %v", a.Name, ip, out, err)
			}
		}
		// The lab namespace reaches each host's public address.
		for _, vm := range vms {
			ip := hosts[vm.id].PublicIP
			out, err := l.ExecInLab(ctx, "timeout", "5", "bash", "-c", "exec 3<>/dev/tcp/"+ip+"/22; head -c 4 <&3")
			if err != nil || string(out) != "SSH-" {
				t.Errorf("lab -> %s:22: %q, %v", ip, out, err)
			}
			c, err := l.DialContext(ctx, "tcp", ip+":22")
			if err != nil {
				t.Errorf("DialContext %s: %v", ip, err)
			} else {
				c.Close()
			}
		}
		// Nothing leads out: the host's only way out is the lab's router,
		// which has no route beyond the VPC.
		out, err := l.Exec(ctx, vms[0].id, "ip", "route", "get", "8.8.8.8")
		if err == nil && !strings.Contains(string(out), "via "+l.Gateway()+" dev eth0") {
			t.Errorf("host route to 8.8.8.8 not through the lab's router: %s", out)
		}
		if out, err := l.ExecInLab(ctx, "ip", "route", "get", "8.8.8.8"); err == nil {
			t.Errorf("the lab namespace has a route to 8.8.8.8: %s", out)
		}
		if out, err := l.Exec(ctx, vms[0].id, "timeout", "5", "bash", "-c", "exec 3<>/dev/tcp/8.8.8.8/53"); err == nil {
			t.Errorf("a host reached 8.8.8.8:53: %s", out)
		} else {
			t.Logf("host -> 8.8.8.8:53 fails as it must: %v", err)
		}
		// The host's own network sysctls are writable (the kubelet and
		// kubeadm's preflight need ip_forward), the machine's are not.
		if out, err := l.Exec(ctx, vms[0].id, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward && cat /proc/sys/net/ipv4/ip_forward"); err != nil || strings.TrimSpace(string(out)) != "1" {
			t.Errorf("ip_forward in a host: %q, %v", out, err)
		}
		routes, _ := l.Exec(ctx, vms[0].id, "ip", "route")
		t.Logf("routes of %s:\n%s", a.Name, routes)
		// The VPC's resolver address answers nothing: a lookup fails at once.
		t0 := time.Now()
		if out, err := l.Exec(ctx, vms[0].id, "getent", "hosts", "example.com"); err == nil {
			t.Errorf("a name outside the lab resolved: %s", out)
		}
		t.Logf("TIMING failed DNS lookup in a host: %s", time.Since(t0).Round(time.Millisecond))
	})

	t.Run("stop and start", func(t *testing.T) {
		vm := vms[2]
		if _, err := l.Exec(ctx, vm.id, "sh", "-c", "echo kept > /var/lib/lab-marker"); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		if err := l.Stop(ctx, vm.id); err != nil {
			t.Fatal(err)
		}
		t.Logf("TIMING stop (poweroff): %s", time.Since(t0).Round(time.Millisecond))
		if h, _ := l.Host(vm.id); h.State != HostStopped {
			t.Fatalf("state after Stop: %s", h.State)
		}
		if ok, _ := sshBanner(ctx, netnsPath(l.Namespace()), hosts[vm.id].PrivateIP+":22"); ok {
			t.Error("sshd answers on a stopped host")
		}
		// The watcher leaves it off although its instance runs.
		time.Sleep(3 * l.opts.PollInterval)
		if h, _ := l.Host(vm.id); h.State != HostStopped {
			t.Fatalf("the watcher changed a stopped host to %s", h.State)
		}
		t0 = time.Now()
		if err := l.Start(ctx, vm.id); err != nil {
			t.Fatal(err)
		}
		if err := l.WaitSSH(ctx, vm.id); err != nil {
			t.Fatal(err)
		}
		t.Logf("TIMING boot again to sshd: %s", time.Since(t0).Round(time.Millisecond))
		if out, err := l.Exec(ctx, vm.id, "cat", "/var/lib/lab-marker"); err != nil || strings.TrimSpace(string(out)) != "kept" {
			t.Errorf("the disk was not kept: %q, %v", out, err)
		}
		if status, err := l.WaitCloudInit(ctx, vm.id); err != nil {
			t.Errorf("cloud-init after a reboot: %v\n%s", err, status)
		}
		_, done, err := sshVia(ctx, l, ssh.FixedHostKey(l.JumpHostKey()), vpc.login, hosts[vm.id].PrivateIP, vm.hostKey)
		if err != nil {
			t.Fatal(err)
		}
		done()
		// A reboot from inside is a reboot, not a stop.
		hh, err := l.host(vm.id)
		if err != nil {
			t.Fatal(err)
		}
		before, err := hh.pid1()
		if err != nil {
			t.Fatal(err)
		}
		t1 := time.Now()
		if _, err := l.Exec(ctx, vm.id, "systemctl", "reboot"); err != nil {
			t.Logf("systemctl reboot: %v", err)
		}
		sctx, scancel := context.WithTimeout(ctx, 60*time.Second)
		defer scancel()
		if err := poll(sctx, 100*time.Millisecond, "the host to reboot", func() (bool, error) {
			p, err := hh.pid1()
			return err == nil && p != before, err
		}); err != nil {
			t.Fatal(err)
		}
		t.Logf("TIMING reboot from inside to a new PID 1: %s", time.Since(t1).Round(time.Millisecond))
		if err := l.WaitBooted(ctx, vm.id); err != nil {
			t.Error(err)
		}
		if h, _ := l.Host(vm.id); h.State != HostRunning {
			t.Errorf("state after a reboot: %s", h.State)
		}
	})

	t.Run("ec2 stop and start", func(t *testing.T) {
		vm := vms[0]
		if _, err := l.Exec(ctx, vm.id, "sh", "-c", "echo kept > /var/lib/lab-marker"); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		if _, err := vpc.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{vm.id}}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.WaitState(ctx, vm.id, HostStopped); err != nil {
			t.Fatal(err)
		}
		t.Logf("TIMING StopInstances to host stopped: %s", time.Since(t0).Round(time.Millisecond))
		t0 = time.Now()
		if _, err := vpc.ec2.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{vm.id}}); err != nil {
			t.Fatal(err)
		}
		if err := l.WaitSSH(ctx, vm.id); err != nil {
			t.Fatal(err)
		}
		t.Logf("TIMING StartInstances to sshd: %s", time.Since(t0).Round(time.Millisecond))
		if out, err := l.Exec(ctx, vm.id, "cat", "/var/lib/lab-marker"); err != nil || strings.TrimSpace(string(out)) != "kept" {
			t.Errorf("the disk was not kept: %q, %v", out, err)
		}
		h, _ := l.Host(vm.id)
		if h.PublicIP != hosts[vm.id].PublicIP {
			t.Logf("public IP changed on restart: %s -> %s", hosts[vm.id].PublicIP, h.PublicIP)
		}
		hosts[vm.id] = h
		_, done, err := sshVia(ctx, l, ssh.FixedHostKey(l.JumpHostKey()), vpc.login, h.PrivateIP, vm.hostKey)
		if err != nil {
			t.Fatal(err)
		}
		done()
		if out, err := l.ExecInLab(ctx, "timeout", "5", "bash", "-c", "exec 3<>/dev/tcp/"+h.PublicIP+"/22; head -c 4 <&3"); err != nil || string(out) != "SSH-" {
			t.Errorf("lab -> %s:22 after a restart: %q, %v", h.PublicIP, out, err)
		}
	})

	t.Run("terminate", func(t *testing.T) {
		vm := vms[1]
		h := hosts[vm.id]
		t0 := time.Now()
		if _, err := vpc.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{vm.id}}); err != nil {
			t.Fatal(err)
		}
		if err := l.WaitRemoved(ctx, vm.id); err != nil {
			t.Fatal(err)
		}
		t.Logf("TIMING terminate to host removed: %s", time.Since(t0).Round(time.Millisecond))
		if _, err := os.Stat(netnsPath(h.Name)); err == nil {
			t.Errorf("netns %s left", h.Name)
		}
		if m, _ := filepath.Glob("/sys/fs/cgroup/*/lab/" + h.Name); len(m) > 0 {
			t.Errorf("cgroups left: %v", m)
		}
		if h.Root != "" {
			if _, err := os.Stat(filepath.Dir(h.Root)); err == nil {
				t.Errorf("host directory %s left", filepath.Dir(h.Root))
			}
		}
		if _, err := l.Exec(ctx, vm.id, "true"); err == nil {
			t.Error("a removed host still runs commands")
		}
		// The others are untouched.
		if _, err := l.Exec(ctx, vms[0].id, "true"); err != nil {
			t.Error(err)
		}
	})

	t.Run("memory", func(t *testing.T) {
		h := hosts[vms[0].id]
		hh, err := l.host(vms[0].id)
		if err != nil {
			t.Fatal(err)
		}
		pid, err := hh.pid1()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("host %s after SSH logins and a restart: %s", h.Name, pssOfTree(pid))
		h2 := hosts[vms[2].id]
		hh2, err := l.host(vms[2].id)
		if err != nil {
			t.Fatal(err)
		}
		if pid, err := hh2.pid1(); err == nil {
			t.Logf("host %s after SSH logins and a reboot: %s", h2.Name, pssOfTree(pid))
		}
	})
}

func writeFile(t testing.TB, path string, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// pssOfTree sums the proportional set size of a process and its
// descendants (the host: PID 1 and everything it runs).
func pssOfTree(pid int) string {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var p int
		if _, err := fmt.Sscan(e.Name(), &p); err != nil {
			continue
		}
		children[parentPID(p)] = append(children[parentPID(p)], p)
	}
	total, n := 0, 0
	var names []string
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		queue = append(queue, children[p]...)
		names = append(names, strings.TrimSpace(readFile(fmt.Sprintf("/proc/%d/comm", p))))
		f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", p))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var kb int
			if _, err := fmt.Sscanf(sc.Text(), "Pss: %d kB", &kb); err == nil {
				total += kb
			}
		}
		f.Close()
		n++
	}
	return fmt.Sprintf("%d processes, %d MB PSS: %s", n, total/1024, strings.Join(names, " "))
}
