package s3store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
	"github.com/kforge/kforge/test/testutil/moto"
)

var lockRef = spec.Ref{Type: spec.TypeEKS, Name: "locked", Region: "us-west-2"}

func TestLockRace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, loc := newStore(t, Options{})
	const racers = 8
	// Several rounds: each starts racers stores at once on one cluster;
	// exactly one gets the lock, the others an InUseError naming it.
	for round := range 5 {
		stores := make([]*Store, racers)
		for i := range stores {
			stores[i] = openStore(t, loc, Options{})
		}
		locks := make([]state.Lock, racers)
		errs := make([]error, racers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				h := state.CurrentHolder(fmt.Sprintf("racer %d", i))
				locks[i], errs[i] = stores[i].Lock(ctx, lockRef, h)
			}()
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			var iu *state.InUseError
			var le *LockedError
			switch {
			case err == nil:
				if winner >= 0 {
					t.Fatalf("round %d: racers %d and %d both got the lock", round, winner, i)
				}
				winner = i
			case errors.As(err, &iu) && errors.As(err, &le):
				if iu.Holder.PID != os.Getpid() || !strings.Contains(err.Error(), "kforge state unlock aws --name locked --region us-west-2") {
					t.Errorf("in-use error: %v", err)
				}
			default:
				t.Fatalf("round %d racer %d: %v", round, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: nobody got the lock: %v", round, errs)
		}
		if err := locks[winner].Unlock(); err != nil {
			t.Fatal(err)
		}
		if err := locks[winner].Unlock(); err != nil {
			t.Errorf("second Unlock: %v", err)
		}
	}
	if _, err := openStore(t, loc, Options{}).ReadLock(ctx, lockRef); !errors.Is(err, ErrNotLocked) {
		t.Errorf("lock left after Unlock: %v", err)
	}
}

// TestLeaseRenewed shows that a held lock outlives its lease while the
// holder runs: the renewal pushes it forward.
func TestLeaseRenewed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// A lease several renewals long: a renewal slowed by a busy machine
	// (the emulator answers one call at a time) must not let it lapse.
	o := Options{Lease: 1500 * time.Millisecond, Renew: 200 * time.Millisecond}
	a, loc := newStore(t, o)
	b := openStore(t, loc, o)
	lk, err := a.Lock(ctx, lockRef, state.CurrentHolder("a"))
	if err != nil {
		t.Fatal(err)
	}
	first, err := b.ReadLock(ctx, lockRef)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * o.Lease)
	var iu *state.InUseError
	if _, err := b.Lock(ctx, lockRef, state.CurrentHolder("b")); !errors.As(err, &iu) {
		t.Fatalf("lock taken while its holder renews it: %v", err)
	}
	now, _ := b.ReadLock(ctx, lockRef)
	if !now.Holder.Expires.After(first.Holder.Expires) || now.Holder.ID != first.Holder.ID {
		t.Errorf("lease not renewed: %+v then %+v", first.Holder, now.Holder)
	}
	select {
	case <-lk.(*Lease).Lost():
		t.Fatal("renewed lock reported lost")
	default:
	}
	if err := a.Put(ctx, testCluster("x")); err != nil {
		t.Errorf("holder's write: %v", err)
	}
	if err := lk.Unlock(); err != nil {
		t.Fatal(err)
	}
	lb, err := b.Lock(ctx, lockRef, state.CurrentHolder("b"))
	if err != nil {
		t.Fatalf("lock after Unlock: %v", err)
	}
	lb.Unlock()
}

// TestLockLost breaks a held lock (as `kforge state unlock` does) and lets
// another store take it: the first holder learns it lost the lock at its
// next renewal, its writes are refused, and its Unlock leaves the new
// holder's lock alone.
func TestLockLost(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	o := Options{Lease: time.Second, Renew: 100 * time.Millisecond}
	a, loc := newStore(t, o)
	b := openStore(t, loc, o)
	c := testCluster("lost")
	c.Spec.Ref = lockRef
	la, err := a.Lock(ctx, lockRef, state.CurrentHolder("a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Put(ctx, c); err != nil {
		t.Fatal(err)
	}
	info, err := b.ReadLock(ctx, lockRef)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.BreakLock(ctx, lockRef, info); err != nil {
		t.Fatal(err)
	}
	lb, err := b.Lock(ctx, lockRef, state.CurrentHolder("b"))
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Unlock()
	select {
	case <-la.(*Lease).Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("the first holder did not learn that it lost its lock")
	}
	var lost *LockLostError
	if err := a.Put(ctx, c); !errors.As(err, &lost) {
		t.Fatalf("write after losing the lock: %v", err)
	}
	if err := a.Delete(ctx, c.Ref()); !errors.As(err, &lost) {
		t.Fatalf("delete after losing the lock: %v", err)
	}
	if err := la.Unlock(); err != nil {
		t.Fatal(err)
	}
	now, err := b.ReadLock(ctx, lockRef)
	if err != nil || now.Holder.Command != "b" {
		t.Fatalf("the new holder's lock: %+v, %v", now.Holder, err)
	}
	// A stale break (the lock changed since it was read) is refused.
	var ce *ConflictError
	if err := b.BreakLock(ctx, lockRef, info); !errors.As(err, &ce) {
		t.Errorf("stale break: %v", err)
	}
}

const (
	helperEnv      = "KFORGE_S3STORE_TEST_HELPER"
	helperEndpoint = "KFORGE_S3STORE_TEST_ENDPOINT"
	helperBucket   = "KFORGE_S3STORE_TEST_BUCKET"
)

// helperProcess is the test binary re-run as a kforge-like process that
// takes a lock with a 2 s lease and holds it until it is killed.
func helperProcess() {
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(region), config.WithBaseEndpoint(os.Getenv(helperEndpoint)),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(moto.AccessKeyID, moto.SecretAccessKey, "")))
	if err == nil {
		var s *Store
		s, err = Open(ctx, cfg, Location{Bucket: os.Getenv(helperBucket), SSE: "AES256"}, Options{Lease: 2 * time.Second, Renew: 300 * time.Millisecond})
		if err == nil {
			_, err = s.Lock(ctx, lockRef, state.CurrentHolder("helper"))
		}
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("locked")
	select {}
}

// TestKilledHolderTakenOver kills a process that holds a lock: its lock
// stays until the lease expires, then another process takes it over.
func TestKilledHolderTakenOver(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bucket := bucketName(t)
	makeBucket(t, emu, bucket, region, true)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", helperEndpoint+"="+emu.URL, helperBucket+"="+bucket)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "locked" {
		t.Fatalf("helper: %q", line)
	}
	var log bytes.Buffer
	s := openStore(t, Location{Bucket: bucket, SSE: "AES256"}, Options{Log: &log})
	var le *LockedError
	if _, err := s.Lock(ctx, lockRef, state.CurrentHolder("b")); !errors.As(err, &le) || le.Holder.PID != cmd.Process.Pid {
		t.Fatalf("lock of a live holder: %v", err)
	}
	// Outlive a lease while the helper renews it.
	time.Sleep(2500 * time.Millisecond)
	if _, err := s.Lock(ctx, lockRef, state.CurrentHolder("b")); !errors.As(err, &le) {
		t.Fatalf("lock of a live holder after its first lease: %v", err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killed := time.Now()
	if _, err := s.Lock(ctx, lockRef, state.CurrentHolder("b")); !errors.As(err, &le) {
		t.Fatalf("lock of a just-killed holder (lease not expired): %v", err)
	}
	var lk state.Lock
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		l, err := s.Lock(ctx, lockRef, state.CurrentHolder("b"))
		if errors.As(err, &le) {
			return false, nil
		}
		lk = l
		return err == nil, err
	})
	if err != nil {
		t.Fatalf("lock of a killed holder not taken over: %v", err)
	}
	defer lk.Unlock()
	if d := time.Since(killed); d > 3*time.Second {
		t.Errorf("taken over %v after the kill, want within the 2 s lease", d)
	}
	if !strings.Contains(log.String(), fmt.Sprintf("Took over the lock on %s from pid %d", lockRef, cmd.Process.Pid)) {
		t.Errorf("no takeover notice: %q", log.String())
	}
	info, err := s.ReadLock(ctx, lockRef)
	if err != nil || info.Holder.Command != "b" || info.Holder.PID != os.Getpid() {
		t.Errorf("lock after takeover: %+v, %v", info.Holder, err)
	}
}
