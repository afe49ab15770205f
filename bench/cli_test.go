package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
	"github.com/kforge/kforge/test/testutil/moto"
)

// samples is how many times each command of the token and listing
// benchmarks runs (BENCH_SAMPLES overrides it); the report shows medians.
func samples() int {
	if v, err := strconv.Atoi(os.Getenv("BENCH_SAMPLES")); err == nil && v > 0 {
		return v
	}
	return 21
}

// timed runs a command and returns its wall time and stdout; it fails the
// benchmark unless the command exits 0.
func timed(b *testing.B, cmd *exec.Cmd) (time.Duration, []byte) {
	b.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		b.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, errb.String())
	}
	return d, out.Bytes()
}

// tokenOf checks that out is an ExecCredential with an EKS token.
func tokenOf(b *testing.B, who string, out []byte) {
	b.Helper()
	var ec struct {
		Kind   string `json:"kind"`
		Status struct {
			Token string `json:"token"`
		} `json:"status"`
	}
	if err := json.Unmarshal(out, &ec); err != nil || ec.Kind != "ExecCredential" || !strings.HasPrefix(ec.Status.Token, "k8s-aws-v1.") {
		b.Fatalf("%s printed no EKS token (%v):\n%s", who, err, out)
	}
}

// BenchmarkToken compares `kforge token` (with a warm cache, and cold:
// no cached token) with `aws eks get-token`, side by side against the
// emulator: the three commands run in turn, samples() times each.
func BenchmarkToken(b *testing.B) {
	awsCLI, err := exec.LookPath("aws")
	if err != nil {
		b.Skipf("the AWS CLI (aws) is not installed, nothing to compare with: %v", err)
	}
	for range b.N {
		emu := moto.Start(b)
		home := b.TempDir()
		env := []string{
			"PATH=" + os.Getenv("PATH"), "HOME=" + home, "KFORGE_HOME=" + home,
			"AWS_ENDPOINT_URL=" + emu.URL, "AWS_ACCESS_KEY_ID=" + moto.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + moto.SecretAccessKey,
			"AWS_EC2_METADATA_DISABLED=true",
		}
		kforge := func() *exec.Cmd {
			cmd := exec.Command(kforgePath(b), "token", "--name", clusterName, "--region", region)
			cmd.Env = env
			return cmd
		}
		cli := func() *exec.Cmd {
			cmd := exec.Command(awsCLI, "eks", "get-token", "--cluster-name", clusterName, "--region", region)
			cmd.Env = env
			return cmd
		}
		cache := filepath.Join(home, "cache")
		// Once each first: the page cache holds both programs.
		timed(b, cli())
		timed(b, kforge())
		var warm, cold, awsT []time.Duration
		for range samples() {
			d, out := timed(b, cli())
			tokenOf(b, "aws eks get-token", out)
			awsT = append(awsT, d)
			if err := os.RemoveAll(cache); err != nil {
				b.Fatal(err)
			}
			d, out = timed(b, kforge())
			tokenOf(b, "kforge token (cold)", out)
			cold = append(cold, d)
			d, out = timed(b, kforge())
			tokenOf(b, "kforge token (warm)", out)
			warm = append(warm, d)
		}
		a, c, wm := medianDuration(awsT), medianDuration(cold), medianDuration(warm)
		fmt.Printf("\n== token: kforge token vs aws eks get-token (median of %d each, run in turn) ==\n", len(warm))
		fmt.Printf("aws eks get-token:           %s\n", a.Round(100*time.Microsecond))
		fmt.Printf("kforge token, cold cache:    %s  (%.1fx faster; goal: at least 3x)\n", c.Round(100*time.Microsecond), a.Seconds()/c.Seconds())
		fmt.Printf("kforge token, warm cache:    %s  (%.1fx faster; goal: at least 20x)\n", wm.Round(100*time.Microsecond), a.Seconds()/wm.Seconds())
		b.ReportMetric(a.Seconds()/wm.Seconds(), "x-warm")
		b.ReportMetric(a.Seconds()/c.Seconds(), "x-cold")
	}
}

// BenchmarkGet times `kforge get` (table and -o json) with 1,000 clusters
// in the local store: copies of the state of a real ha-aws and a real aws
// cluster, made against the emulator, under other names and regions.
func BenchmarkGet(b *testing.B) {
	for range b.N {
		w := newWorld(b, region, spec.TypeHA)
		ctx := context.Background()
		for _, args := range [][]string{haArgs(w, 2), {"create", "aws", "--name", "eks", "--region", region}} {
			if out, err := w.command(ctx, w.emu.URL, args...).CombinedOutput(); err != nil {
				b.Fatalf("kforge %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		src, err := state.NewLocal(filepath.Join(w.home, "state"))
		if err != nil {
			b.Fatal(err)
		}
		var templates []*state.Cluster
		for _, ref := range []spec.Ref{{Type: spec.TypeHA, Name: clusterName, Region: region}, {Type: spec.TypeEKS, Name: "eks", Region: region}} {
			c, err := src.Get(ctx, ref)
			if err != nil {
				b.Fatal(err)
			}
			templates = append(templates, c)
		}
		home := b.TempDir()
		dst, err := state.NewLocal(filepath.Join(home, "state"))
		if err != nil {
			b.Fatal(err)
		}
		regions := []string{"us-east-1", "eu-west-1", "us-west-2", "ap-southeast-2"}
		const clusters = 1000
		for i := range clusters {
			c := templates[i%len(templates)].Clone()
			c.Spec.Name = fmt.Sprintf("c%04d", i)
			c.Spec.Region = regions[i%len(regions)]
			if err := dst.Put(ctx, c); err != nil {
				b.Fatal(err)
			}
		}
		get := func(args ...string) *exec.Cmd {
			cmd := exec.Command(kforgePath(b), append([]string{"get"}, args...)...)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "KFORGE_HOME=" + home}
			return cmd
		}
		timed(b, get())
		var table, js []time.Duration
		for range samples() {
			d, out := timed(b, get())
			if n := strings.Count(string(out), "\n"); n != clusters+1 {
				b.Fatalf("kforge get printed %d lines, want %d", n, clusters+1)
			}
			table = append(table, d)
			d, out = timed(b, get("-o", "json"))
			var items []map[string]any
			if err := json.Unmarshal(out, &items); err != nil || len(items) != clusters {
				b.Fatalf("kforge get -o json: %d items (%v)", len(items), err)
			}
			js = append(js, d)
		}
		t, j := medianDuration(table), medianDuration(js)
		fmt.Printf("\n== listing: kforge get with %d clusters in the local store (median of %d) ==\n", clusters, len(table))
		fmt.Printf("kforge get:          %s  (goal: under 100ms)\n", t.Round(100*time.Microsecond))
		fmt.Printf("kforge get -o json:  %s\n", j.Round(100*time.Microsecond))
		b.ReportMetric(float64(t.Microseconds())/1000, "ms-get")
	}
}
