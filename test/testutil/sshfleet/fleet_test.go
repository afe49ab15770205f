package sshfleet_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/crypto/ssh"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"

	"github.com/kforge/kforge/internal/sshx"
	"github.com/kforge/kforge/test/testutil/faultproxy"
	"github.com/kforge/kforge/test/testutil/moto"
	"github.com/kforge/kforge/test/testutil/sshfleet"
)

const region = "us-east-1"

// world is the emulator with a cluster key pair, two running instances
// carrying host keys in their user-data, and a fleet serving them.
type world struct {
	ec2        *ec2.Client
	fleet      *sshfleet.Fleet
	clusterKey ssh.Signer
	clusterPEM []byte
	knownHosts string
	vms        []sshx.Target // cp-0, wp-0
	ids        []string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	srv := moto.Start(t)
	cfg := srv.Config(t, region)
	w := &world{ec2: ec2.NewFromConfig(cfg)}
	ctx := context.Background()

	ck, err := sshx.GenerateKey("kforge-demo")
	if err != nil {
		t.Fatal(err)
	}
	if w.clusterKey, err = ck.Signer(); err != nil {
		t.Fatal(err)
	}
	w.clusterPEM = ck.PrivatePEM
	if _, err := w.ec2.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{KeyName: aws.String("kforge-demo"), PublicKeyMaterial: []byte(ck.Public)}); err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{"cp", "wp"} {
		hk, err := sshx.GenerateKey(role + "-0")
		if err != nil {
			t.Fatal(err)
		}
		id := launch(t, w.ec2, role, "kforge-demo", cloudConfig(t, hk, false))
		out, err := w.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil {
			t.Fatal(err)
		}
		in := out.Reservations[0].Instances[0]
		pub, _ := hk.PublicKey()
		w.ids = append(w.ids, id)
		w.vms = append(w.vms, sshx.Target{Name: role + "-0", PrivateIP: aws.ToString(in.PrivateIpAddress), PublicIP: aws.ToString(in.PublicIpAddress), HostKey: pub})
	}
	w.fleet = sshfleet.Start(t, sshfleet.Options{AWS: &cfg, AuthorizeKeyPairs: true})
	w.knownHosts = filepath.Join(t.TempDir(), "ssh", "known_hosts")
	w.fleet.WriteKnownHosts(t, w.knownHosts)
	return w
}

// cloudConfig renders user-data as kforge hands it to a VM.
func cloudConfig(t *testing.T, hk sshx.KeyPair, gz bool) []byte {
	t.Helper()
	b, err := yaml.Marshal(map[string]any{
		"hostname": "vm",
		"ssh_keys": map[string]string{"ed25519_private": string(hk.PrivatePEM), "ed25519_public": hk.Public},
	})
	if err != nil {
		t.Fatal(err)
	}
	b = append([]byte("#cloud-config\n"), b...)
	if gz {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(b)
		_ = zw.Close()
		b = buf.Bytes()
	}
	return b
}

func launch(t *testing.T, c *ec2.Client, role, keyName string, userData []byte) string {
	t.Helper()
	in := &ec2.RunInstancesInput{
		ImageId:      aws.String(moto.UbuntuNobleAMD64),
		InstanceType: ec2types.InstanceTypeT3Small,
		MinCount:     aws.Int32(1),
		MaxCount:     aws.Int32(1),
		UserData:     aws.String(base64.StdEncoding.EncodeToString(userData)),
		TagSpecifications: []ec2types.TagSpecification{{
			ResourceType: ec2types.ResourceTypeInstance,
			Tags: []ec2types.Tag{
				{Key: aws.String("Name"), Value: aws.String("demo-" + role + "-0")},
				{Key: aws.String("kforge.io/role"), Value: aws.String(role)},
			},
		}},
	}
	if keyName != "" {
		in.KeyName = aws.String(keyName)
	}
	out, err := c.RunInstances(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.Instances[0].InstanceId)
}

func (w *world) client(t *testing.T, mod func(*sshx.Config)) *sshx.Client {
	t.Helper()
	cfg := sshx.Config{
		Signer:    w.clusterKey,
		Jump:      &sshx.Jump{User: "tester", Host: "127.0.0.1", Port: w.fleet.Port(), KnownHosts: []string{w.knownHosts}},
		Backoff:   wait.Backoff{Duration: 5 * time.Millisecond, Factor: 1.5, Steps: 1 << 30, Cap: 40 * time.Millisecond},
		AuthGrace: 100 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := sshx.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

const kubeconfig = "apiVersion: v1\nkind: Config\nclusters: []\n"

func recipe(name, body string) string {
	return "#!/usr/bin/env bash\n# kforge-recipe: " + name + "\nset -euo pipefail\n" + body
}

// Through the fleet, each VM presents the host key of its user-data, admits
// the cluster key, answers with the installed responders, and every call is
// recorded with the VM it ran on.
func TestFleetServesInstances(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.fleet.Handle("fetch-kubeconfig", func(vm sshfleet.VM, cmd string, stdin []byte) ([]byte, []byte, int) {
		if vm.Role != "cp" {
			return nil, []byte("no kubeconfig on a " + vm.Role + "\n"), 1
		}
		return []byte(kubeconfig), nil, 0
	})
	c := w.client(t, nil)
	ctx := context.Background()
	cp, wp := w.vms[0], w.vms[1]
	for _, vm := range w.vms {
		if err := c.WaitReachable(ctx, vm, nil); err != nil {
			t.Fatal(err)
		}
	}

	fetch := recipe("fetch-kubeconfig", "cat /etc/rancher/k3s/k3s.yaml\n")
	out, err := c.Run(ctx, cp, fetch)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != kubeconfig {
		t.Fatalf("stdout = %q", out)
	}
	_, err = c.Run(ctx, wp, fetch)
	var ee *sshx.ExitError
	if !errors.As(err, &ee) || ee.Code != 1 || ee.Stderr != "no kubeconfig on a wp" {
		t.Fatalf("Run on the worker = %v", err)
	}
	if out, err := c.Run(ctx, wp, recipe("join", "true\n")); err != nil || len(out) != 0 {
		t.Fatalf("default responder: %q, %v", out, err)
	}

	calls := w.fleet.CallsFor(w.ids[0])
	if len(calls) != 1 {
		t.Fatalf("%d calls on cp-0, want 1", len(calls))
	}
	got := calls[0]
	if got.VM.PrivateIP != cp.PrivateIP || got.VM.Role != "cp" || got.VM.Name != "demo-cp-0" || got.VM.KeyName != "kforge-demo" ||
		got.Command != sshx.RemoteCommand || string(got.Stdin) != fetch || got.Recipe != "fetch-kubeconfig" || got.Exit != 0 || got.Time.IsZero() {
		t.Fatalf("recorded call %+v", got)
	}
	if !sshx.SameKey(got.VM.HostKey, cp.HostKey) || !strings.HasPrefix(string(got.VM.UserData), "#cloud-config") {
		t.Fatal("the recorded VM lacks its host key or user-data")
	}
	if n := len(w.fleet.CallsOf("fetch-kubeconfig")); n != 2 {
		t.Fatalf("%d fetch-kubeconfig calls, want 2", n)
	}
	if n := len(w.fleet.CallsFor(w.ids[1])); n != 2 {
		t.Fatalf("%d calls on wp-0, want 2", n)
	}
	if w.fleet.JumpLogins() != 1 || w.fleet.Logins(w.ids[0]) != 1 || w.fleet.Logins(w.ids[1]) != 1 {
		t.Fatalf("logins: jump %d, cp %d, wp %d; want one each", w.fleet.JumpLogins(), w.fleet.Logins(w.ids[0]), w.fleet.Logins(w.ids[1]))
	}
}

// The fleet refuses what a real VM or jump host would refuse.
func TestFleetRefuses(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	cp, wp := w.vms[0], w.vms[1]
	stranger, err := sshx.GenerateKey("stranger")
	if err != nil {
		t.Fatal(err)
	}
	strangerSigner, _ := stranger.Signer()
	swapped := cp
	swapped.HostKey = wp.HostKey
	unknown := cp
	unknown.PrivateIP = "10.255.255.254"

	tests := []struct {
		name   string
		mod    func(*sshx.Config)
		target sshx.Target
		check  func(t *testing.T, err error)
	}{
		{"another VM's host key", nil, swapped, func(t *testing.T, err error) {
			var hk *sshx.HostKeyError
			if !errors.As(err, &hk) || hk.Presented != sshx.Fingerprint(cp.HostKey) {
				t.Fatalf("want a HostKeyError presenting cp-0's key, got %v", err)
			}
		}},
		{"login key not the key pair's", func(c *sshx.Config) { c.Jump.Signer = c.Signer; c.Signer = strangerSigner }, cp, func(t *testing.T, err error) {
			if err == nil || !strings.Contains(err.Error(), "refused the cluster key") {
				t.Fatalf("want the cluster key refused, got %v", err)
			}
		}},
		{"jump key not authorized", func(c *sshx.Config) { c.Jump.Signer = strangerSigner }, cp, func(t *testing.T, err error) {
			if err == nil || !strings.Contains(err.Error(), "jump host") || !strings.Contains(err.Error(), "unable to authenticate") {
				t.Fatalf("want the jump host to refuse the key, got %v", err)
			}
		}},
		{"unknown address", func(c *sshx.Config) { c.ReachTimeout = 300 * time.Millisecond }, unknown, func(t *testing.T, err error) {
			if err == nil || !strings.Contains(err.Error(), "Connection refused") {
				t.Fatalf("want connection refused, got %v", err)
			}
		}},
		{"port other than 22", func(c *sshx.Config) { c.Port = 2222; c.ReachTimeout = 300 * time.Millisecond }, cp, func(t *testing.T, err error) {
			if err == nil || !strings.Contains(err.Error(), "port 2222: Connection refused") {
				t.Fatalf("want connection refused, got %v", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := w.client(t, tc.mod).WaitReachable(context.Background(), tc.target, nil)
			tc.check(t, err)
			if len(w.fleet.Calls()) != 0 {
				t.Fatal("a command ran")
			}
		})
	}

	t.Run("terminated instance", func(t *testing.T) {
		c := w.client(t, func(c *sshx.Config) { c.ReachTimeout = 300 * time.Millisecond })
		if _, err := w.ec2.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{w.ids[1]}}); err != nil {
			t.Fatal(err)
		}
		err := c.WaitReachable(context.Background(), wp, nil)
		if err == nil || !strings.Contains(err.Error(), "Connection refused") {
			t.Fatalf("want connection refused, got %v", err)
		}
	})
}

// Faults: a wrong host key is refused at once; a booting VM is waited for.
func TestFleetFaults(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	cp, wp := w.vms[0], w.vms[1]
	w.fleet.SetFault(w.ids[0], sshfleet.Fault{WrongHostKey: true})
	w.fleet.SetFault(w.ids[1], sshfleet.Fault{RefuseFirst: 3})
	c := w.client(t, nil)

	var hk *sshx.HostKeyError
	if err := c.WaitReachable(context.Background(), cp, nil); !errors.As(err, &hk) || hk.Expected != sshx.Fingerprint(cp.HostKey) {
		t.Fatalf("WaitReachable on a VM with the wrong key = %v", err)
	}
	if n := w.fleet.Attempts(w.ids[0]); n != 1 {
		t.Fatalf("%d attempts on the VM with the wrong key, want 1 (not retried)", n)
	}
	progress := 0
	if err := c.WaitReachable(context.Background(), wp, func(time.Duration, error) { progress++ }); err != nil {
		t.Fatal(err)
	}
	if progress != 3 || w.fleet.Attempts(w.ids[1]) != 4 {
		t.Fatalf("%d progress reports, %d attempts; want 3 and 4", progress, w.fleet.Attempts(w.ids[1]))
	}
	w.fleet.SetFault(w.ids[0], sshfleet.Fault{})
	if _, err := c.Run(context.Background(), cp, recipe("x", "true\n")); err != nil {
		t.Fatalf("after healing: %v", err)
	}
}

// Without a jump host: the fleet serves a VM by its public IP on a
// loopback port of its own.
func TestFleetDirect(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	cp := w.vms[0]
	if cp.PublicIP == "" {
		t.Skip("the emulator gave the instance no public IP")
	}
	addr := w.fleet.ServeDirect(t, cp.PublicIP)
	var port int
	if _, err := fmt.Sscanf(addr[strings.LastIndex(addr, ":")+1:], "%d", &port); err != nil {
		t.Fatal(err)
	}
	c, err := sshx.New(sshx.Config{Signer: w.clusterKey, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	target := cp
	target.PublicIP = "127.0.0.1"
	w.fleet.Handle("hello", sshfleet.Reply("hi\n"))
	out, err := c.Run(context.Background(), target, recipe("hello", "echo hi\n"))
	if err != nil || string(out) != "hi\n" {
		t.Fatalf("Run = %q, %v", out, err)
	}
	if calls := w.fleet.CallsFor(w.ids[0]); len(calls) != 1 || calls[0].VM.PublicIP != cp.PublicIP {
		t.Fatalf("calls %+v", calls)
	}
}

// OpenSSH's own client goes through the fleet with ProxyJump (ssh -J): the
// fleet behaves as a real jump host and VM.
func TestFleetOpenSSHProxyJump(t *testing.T) {
	t.Parallel()
	sshBin, err := exec.LookPath("ssh")
	if err != nil {
		t.Skip("OpenSSH client not installed")
	}
	w := newWorld(t)
	cp := w.vms[0]
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(keyPath, w.clusterPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	// The VM's pinned key, as kforge would accept it.
	kh, err := os.OpenFile(w.knownHosts, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(kh, "%s %s\n", cp.PrivateIP, sshx.AuthorizedKey(cp.HostKey, ""))
	kh.Close()
	conf := filepath.Join(dir, "ssh_config")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`Host *
  IdentityFile %s
  IdentitiesOnly yes
  UserKnownHostsFile %s
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 10
`, keyPath, w.knownHosts)), 0o600); err != nil {
		t.Fatal(err)
	}
	w.fleet.Handle("via-openssh", func(vm sshfleet.VM, cmd string, stdin []byte) ([]byte, []byte, int) {
		return []byte("served " + vm.InstanceID + "\n"), []byte("bye\n"), 3
	})
	cmd := exec.Command(sshBin, "-F", conf, "-J", w.fleet.Jump("tester"), "ubuntu@"+cp.PrivateIP, sshx.RemoteCommand)
	cmd.Stdin = strings.NewReader(recipe("via-openssh", "echo hi\n"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 3 {
		t.Fatalf("ssh -J: %v, want exit 3; stderr: %s", err, stderr.String())
	}
	if stdout.String() != "served "+w.ids[0]+"\n" || !strings.Contains(stderr.String(), "bye") {
		t.Fatalf("ssh -J stdout %q stderr %q", stdout.String(), stderr.String())
	}
	calls := w.fleet.CallsOf("via-openssh")
	if len(calls) != 1 || calls[0].Command != sshx.RemoteCommand || calls[0].VM.InstanceID != w.ids[0] {
		t.Fatalf("calls %+v", calls)
	}
}

func TestParseUserData(t *testing.T) {
	t.Parallel()
	hk, err := sshx.GenerateKey("vm")
	if err != nil {
		t.Fatal(err)
	}
	other, err := sshx.GenerateKey("other")
	if err != nil {
		t.Fatal(err)
	}
	mismatched, _ := yaml.Marshal(map[string]any{"ssh_keys": map[string]string{"ed25519_private": string(hk.PrivatePEM), "ed25519_public": other.Public}})
	tests := []struct {
		name    string
		data    []byte
		wantErr string
	}{
		{"plain", cloudConfig(t, hk, false), ""},
		{"gzip", cloudConfig(t, hk, true), ""},
		{"not cloud-config", []byte("#!/bin/bash\necho hi\n"), "not #cloud-config"},
		{"no host key", []byte("#cloud-config\nhostname: x\n"), "no ssh_keys.ed25519_private"},
		{"halves differ", append([]byte("#cloud-config\n"), mismatched...), "not the public half"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := sshfleet.ParseUserData(tc.data)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseUserData = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want, _ := hk.PublicKey()
			if !sshx.SameKey(s.PublicKey(), want) {
				t.Fatal("wrong host key")
			}
		})
	}
}

// A fleet refuses an AWS configuration that is not the local emulator.
func TestFleetRefusesRealAWS(t *testing.T) {
	t.Parallel()
	ft := &fatalRecorder{TB: t}
	func() {
		defer func() { _ = recover() }()
		sshfleet.Start(ft, sshfleet.Options{AWS: &aws.Config{Region: region}})
	}()
	if !ft.fataled {
		t.Fatal("Start accepted an AWS configuration without the emulator's endpoint")
	}
}

// fatalRecorder records a Fatal instead of ending the test.
type fatalRecorder struct {
	testing.TB
	fataled bool
}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.fataled = true
	panic(fmt.Sprintf(format, args...))
}

// Connections to many VMs at once cost the fleet a few DescribeInstances
// in all, not one each (its look-ups are batched), and each instance's
// user-data and key pair are read once however often it is reached; yet an
// instance terminated after it was served is refused at once, as the
// batches never answer from a stale view.
func TestFleetBatchesLookUps(t *testing.T) {
	t.Parallel()
	const n = 16
	srv := moto.Start(t)
	direct := srv.Config(t, region)
	c := ec2.NewFromConfig(direct)
	ck, err := sshx.GenerateKey("kforge-many")
	if err != nil {
		t.Fatal(err)
	}
	clusterKey, _ := ck.Signer()
	if _, err := c.ImportKeyPair(context.Background(), &ec2.ImportKeyPairInput{KeyName: aws.String("kforge-many"), PublicKeyMaterial: []byte(ck.Public)}); err != nil {
		t.Fatal(err)
	}
	var targets []sshx.Target
	var ids []string
	for i := range n {
		hk, err := sshx.GenerateKey(fmt.Sprintf("wp-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		id := launch(t, c, "wp", "kforge-many", cloudConfig(t, hk, i%2 == 0))
		out, err := c.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := hk.PublicKey()
		ids = append(ids, id)
		targets = append(targets, sshx.Target{Name: fmt.Sprintf("wp-%d", i), PrivateIP: aws.ToString(out.Reservations[0].Instances[0].PrivateIpAddress), HostKey: pub})
	}

	// The fleet reads the emulator through a proxy that counts its calls
	// and holds each DescribeInstances 200 ms, so that the look-ups of the
	// connections below surely arrive while one is in flight.
	px := faultproxy.Start(t, srv.URL)
	px.Add(faultproxy.Rule{Match: faultproxy.Actions("DescribeInstances"), Fault: faultproxy.Delay, Delay: 200 * time.Millisecond})
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion(region), config.WithBaseEndpoint(px.URL),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(moto.AccessKeyID, moto.SecretAccessKey, "")))
	if err != nil {
		t.Fatal(err)
	}
	fleet := sshfleet.Start(t, sshfleet.Options{AWS: &cfg, AuthorizedKeys: []ssh.PublicKey{clusterKey.PublicKey()}})
	knownHosts := filepath.Join(t.TempDir(), "known_hosts")
	fleet.WriteKnownHosts(t, knownHosts)
	fleet.Handle("whoami", func(vm sshfleet.VM, _ string, _ []byte) ([]byte, []byte, int) {
		return []byte(vm.InstanceID), nil, 0
	})
	connectAll := func(t *testing.T) {
		t.Helper()
		cl, err := sshx.New(sshx.Config{
			Signer:  clusterKey,
			Jump:    &sshx.Jump{User: "tester", Host: "127.0.0.1", Port: fleet.Port(), KnownHosts: []string{knownHosts}},
			Backoff: wait.Backoff{Duration: 5 * time.Millisecond, Factor: 1.5, Steps: 1 << 30, Cap: 40 * time.Millisecond},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		errs := make(chan error, n)
		for i, tg := range targets {
			go func() {
				out, err := cl.Run(context.Background(), tg, recipe("whoami", "true\n"))
				if err == nil && string(out) != ids[i] {
					err = fmt.Errorf("%s answered as %q, want %s", tg.Name, out, ids[i])
				}
				errs <- err
			}()
		}
		for range targets {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	}
	count := func(action string) int { return px.Count(faultproxy.Actions(action)) }

	connectAll(t)
	t.Logf("%d VMs reached at once: %d DescribeInstances, %d DescribeInstanceAttribute, %d DescribeKeyPairs",
		n, count("DescribeInstances"), count("DescribeInstanceAttribute"), count("DescribeKeyPairs"))
	if got := count("DescribeInstances"); got < 1 || got > 3 {
		t.Errorf("%d DescribeInstances for %d VMs reached at once, want 1 to 3", got, n)
	}
	if got := count("DescribeInstanceAttribute"); got != n {
		t.Errorf("%d user-data reads for %d VMs, want one each", got, n)
	}
	if got := count("DescribeKeyPairs"); got < 1 || got > 3 {
		t.Errorf("%d DescribeKeyPairs for %d VMs of one key pair, want one per batch", got, n)
	}
	// Again, on new connections: the instances are looked up again (they
	// may be gone), their user-data and key pairs are not.
	before, beforeKeys := count("DescribeInstances"), count("DescribeKeyPairs")
	connectAll(t)
	if got := count("DescribeInstances") - before; got < 1 || got > 3 {
		t.Errorf("%d more DescribeInstances to reach %d known VMs again, want 1 to 3", got, n)
	}
	if got := count("DescribeInstanceAttribute"); got != n {
		t.Errorf("%d user-data reads after reaching %d VMs twice, want %d", got, n, n)
	}
	if got := count("DescribeKeyPairs"); got != beforeKeys {
		t.Errorf("key pairs read again for VMs already served")
	}

	px.ClearRules()
	if _, err := c.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{ids[0]}}); err != nil {
		t.Fatal(err)
	}
	cl, err := sshx.New(sshx.Config{
		Signer:       clusterKey,
		Jump:         &sshx.Jump{User: "tester", Host: "127.0.0.1", Port: fleet.Port(), KnownHosts: []string{knownHosts}},
		ReachTimeout: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.WaitReachable(context.Background(), targets[0], nil); err == nil || !strings.Contains(err.Error(), "Connection refused") {
		t.Fatalf("reaching a VM terminated after it was served: %v, want connection refused", err)
	}
}
