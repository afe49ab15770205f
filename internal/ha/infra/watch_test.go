package infra

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kforge/kforge/test/testutil/faultproxy"
	"github.com/kforge/kforge/test/testutil/moto"
)

// watchWorld is the emulator behind a proxy that counts the calls.
type watchWorld struct {
	ec2   *ec2.Client
	proxy *faultproxy.Proxy
}

func newWatchWorld(t *testing.T) *watchWorld {
	t.Helper()
	emu := moto.Start(t)
	proxy := faultproxy.Start(t, emu.URL)
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion("eu-west-1"), config.WithBaseEndpoint(proxy.URL),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(moto.AccessKeyID, moto.SecretAccessKey, "")))
	if err != nil {
		t.Fatal(err)
	}
	w := &watchWorld{ec2: ec2.NewFromConfig(cfg), proxy: proxy}
	// The emulator's first DescribeInstances is slow: not the watcher's.
	if _, err := w.ec2.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{
		Filters: []ec2types.Filter{{Name: aws.String("instance-id"), Values: []string{"i-0"}}}}); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *watchWorld) launch(t *testing.T, n int) []string {
	t.Helper()
	out, err := w.ec2.RunInstances(context.Background(), &ec2.RunInstancesInput{
		ImageId: aws.String(moto.UbuntuNobleAMD64), InstanceType: ec2types.InstanceTypeT3Micro,
		MinCount: aws.Int32(int32(n)), MaxCount: aws.Int32(int32(n)),
	})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, in := range out.Instances {
		ids = append(ids, aws.ToString(in.InstanceId))
	}
	return ids
}

func (w *watchWorld) polls() int { return w.proxy.Count(faultproxy.Actions("DescribeInstances")) }

// never is a condition no instance meets.
func never(ec2types.Instance) (bool, error) { return false, nil }

func TestWatcherBatchesWaits(t *testing.T) {
	w := newWatchWorld(t)
	ids := w.launch(t, 30)
	w.proxy.Clear()
	w.proxy.Add(faultproxy.Rule{Fault: faultproxy.Delay, Delay: 50 * time.Millisecond})
	wt := newWatcher(w.ec2)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in, err := wt.wait(context.Background(), id, running)
			if err == nil && aws.ToString(in.InstanceId) != id {
				err = errors.New("wrong instance returned")
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("wait for %s: %v", ids[i], err)
		}
	}
	// The first poll goes out at once; waits that start while it is in
	// flight go together in the next one.
	if n := w.polls(); n < 1 || n > 3 {
		t.Errorf("%d DescribeInstances for 30 concurrent waits, want 1 to 3", n)
	}
	if d := time.Since(start); d >= recheckFirst {
		t.Errorf("30 running instances seen after %s, want before the first recheck (%s)", d, recheckFirst)
	}
	// The poller stops once nobody waits.
	deadline := time.Now().Add(time.Second)
	for {
		wt.mu.Lock()
		active := wt.active
		wt.mu.Unlock()
		if !active {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the poller still runs with nobody waiting")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWatcherBacksOffAndWakesForNewWaits(t *testing.T) {
	w := newWatchWorld(t)
	ids := w.launch(t, 2)
	w.proxy.Clear()
	wt := newWatcher(w.ec2)

	// A wait that never ends is looked at once at the start, then after
	// recheckFirst, then after twice that: not in a tight loop.
	ctx, cancel := context.WithTimeout(context.Background(), recheckFirst+recheckFirst/2)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := wt.wait(ctx, ids[0], never)
		done <- err
	}()
	time.Sleep(recheckFirst / 2)
	if n := w.polls(); n != 1 {
		t.Fatalf("%d polls in the first %s, want 1", n, recheckFirst/2)
	}

	// A new wait does not wait for the first one's schedule.
	start := time.Now()
	if _, err := wt.wait(context.Background(), ids[1], running); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d >= recheckFirst {
		t.Errorf("a new wait was answered after %s, want before the first wait's recheck (%s)", d, recheckFirst)
	}

	if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the endless wait ended with %v, want its context's deadline", err)
	}
	// 1 at the start, 1 for the new wait (it included the first instance,
	// so its next look was pushed back), none in a loop.
	if n := w.polls(); n > 3 {
		t.Errorf("%d polls within %s, want at most 3", n, recheckFirst+recheckFirst/2)
	}
}

func TestWatcherWaitsForInstancesNotYetVisible(t *testing.T) {
	w := newWatchWorld(t)
	wt := newWatcher(w.ec2)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := wt.wait(ctx, "i-0123456789abcdef0", running); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait for an unknown instance: %v, want it to go on until its deadline", err)
	}
}

func TestRecheckBacksOff(t *testing.T) {
	for _, c := range []struct {
		n    int
		want time.Duration
	}{{1, recheckFirst}, {2, 2 * recheckFirst}, {3, 4 * recheckFirst}, {4, recheckMax}, {40, recheckMax}} {
		if got := recheck(c.n); got != c.want {
			t.Errorf("recheck(%d) = %s, want %s", c.n, got, c.want)
		}
	}
}

func TestWatcherReportsTerminated(t *testing.T) {
	w := newWatchWorld(t)
	ids := w.launch(t, 1)
	wt := newWatcher(w.ec2)
	if _, err := w.ec2.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: ids}); err != nil {
		t.Fatal(err)
	}
	if _, err := wt.wait(context.Background(), ids[0], running); err == nil {
		t.Fatal("waiting for a terminated instance to run succeeded")
	}
	if _, err := wt.wait(context.Background(), ids[0], terminated); err != nil {
		t.Fatalf("wait for termination: %v", err)
	}
}

// TestWatcherWaitsForLaunchesInFlight: while launches are in flight, a
// poll waits for them, so a wave of launches is seen in one poll.
func TestWatcherWaitsForLaunchesInFlight(t *testing.T) {
	w := newWatchWorld(t)
	ids := w.launch(t, 4)
	w.proxy.Clear()
	wt := newWatcher(w.ec2)
	for range ids {
		wt.launchStarted()
	}
	done := make(chan error, len(ids))
	for i, id := range ids {
		go func() {
			_, err := wt.wait(context.Background(), id, running)
			done <- err
		}()
		// The launches return one by one, as the emulator answers them.
		time.Sleep(20 * time.Millisecond)
		if i == 0 && w.polls() != 0 {
			t.Error("a poll went out while launches were in flight")
		}
		wt.launchEnded()
	}
	for range ids {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if n := w.polls(); n != 1 {
		t.Errorf("%d polls for a wave of 4 launches, want 1", n)
	}
}
