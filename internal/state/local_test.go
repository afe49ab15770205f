package state

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kforge/kforge/internal/spec"
)

var ref = spec.Ref{Type: "aws", Name: "demo", Region: "us-east-1"}

func newStore(t *testing.T) *Local {
	t.Helper()
	s, err := NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPutGetRoundTripAndModes(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	c := New(spec.Spec{Ref: ref, Nodes: 3}, time.Now())
	c.Steps["vpc"] = StepRecord{Out: []byte(`{"id":"vpc-1"}`)}
	c.Secrets["ssh"] = []byte("PRIVATE KEY")
	if err := s.Put(ctx, c); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Steps["vpc"].Out) != `{"id":"vpc-1"}` || string(got.Secrets["ssh"]) != "PRIVATE KEY" || got.Spec.Nodes != 3 {
		t.Errorf("round trip lost data: %+v", got)
	}
	dir := filepath.Join(s.root, "clusters", "aws", "us-east-1", "demo")
	for _, f := range []string{"state.json", "secrets.json"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, "state.json"))
	if strings.Contains(string(b), "PRIVATE KEY") {
		t.Error("a secret leaked into state.json")
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 1 || len(list[0].Secrets) != 0 {
		t.Errorf("List = %v, %v; want one cluster without secrets", list, err)
	}
	if err := s.Delete(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, ref); !errors.Is(err, ErrNotFound) {
		t.Errorf("after delete: %v", err)
	}
	if err := s.Delete(ctx, ref); err != nil {
		t.Errorf("second delete: %v", err)
	}
}

func TestConcurrentWritersNeverTearState(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				c := New(spec.Spec{Ref: ref, Nodes: i + 1}, time.Now())
				c.Steps[fmt.Sprint("s", w)] = StepRecord{Out: []byte(`"` + strings.Repeat("x", 10000) + `"`)}
				if err := s.Put(ctx, c); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	readerErr := make(chan error, 1)
	go func() {
		defer close(readerErr)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.Get(ctx, ref); err != nil && !errors.Is(err, ErrNotFound) {
				readerErr <- err
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	if err := <-readerErr; err != nil {
		t.Fatalf("a reader saw a torn write: %v", err)
	}
}

func TestCorruptStateIsAClearError(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if err := s.Put(ctx, New(spec.Spec{Ref: ref}, time.Now())); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(s.root, "clusters", "aws", "us-east-1", "demo", "state.json")
	if err := os.WriteFile(p, []byte(`{"schema":1,"spec":{"na`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := s.Get(ctx, ref)
	var ce *CorruptError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), p) {
		t.Errorf("err = %v, want a CorruptError naming %s", err, p)
	}
	if _, err := s.List(ctx); !errors.As(err, &ce) {
		t.Errorf("List err = %v, want CorruptError", err)
	}
}

func TestLockExcludesAndNamesHolder(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	l1, err := s.Lock(ctx, ref, Holder{PID: 4242, Host: "laptop", Command: "kforge create aws"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Lock(ctx, ref, CurrentHolder("kforge delete"))
	var iu *InUseError
	if !errors.As(err, &iu) || iu.Holder.PID != 4242 || !strings.Contains(err.Error(), "kforge create aws") {
		t.Fatalf("second lock: %v, want InUseError naming pid 4242", err)
	}
	other := ref
	other.Region = "eu-west-1"
	l3, err := s.Lock(ctx, other, CurrentHolder("x"))
	if err != nil {
		t.Fatalf("a cluster of the same name in another region is another cluster: %v", err)
	}
	l3.Unlock()
	l1.Unlock()
	l1.Unlock()
	l2, err := s.Lock(ctx, ref, CurrentHolder("kforge delete"))
	if err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	l2.Unlock()
}

// TestLockOfDeadProcessIsTakenOver runs a child that takes the lock and is
// killed; the lock must then be free.
func TestLockOfDeadProcessIsTakenOver(t *testing.T) {
	if dir := os.Getenv("KFORGE_TEST_LOCK_DIR"); dir != "" {
		s, _ := NewLocal(dir)
		if _, err := s.Lock(context.Background(), ref, CurrentHolder("child")); err != nil {
			os.Exit(3)
		}
		fmt.Println("locked")
		time.Sleep(time.Hour)
		return
	}
	s := newStore(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockOfDeadProcessIsTakenOver$")
	cmd.Env = append(os.Environ(), "KFORGE_TEST_LOCK_DIR="+s.root)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := out.Read(buf); err != nil || string(buf) != "locked" {
		t.Fatalf("child did not lock: %q %v", buf, err)
	}
	var iu *InUseError
	if _, err := s.Lock(context.Background(), ref, CurrentHolder("me")); !errors.As(err, &iu) || iu.Holder.PID != cmd.Process.Pid {
		t.Fatalf("lock held by live child: got %v", err)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	l, err := s.Lock(context.Background(), ref, CurrentHolder("me"))
	if err != nil {
		t.Fatalf("lock of a dead process not taken over: %v", err)
	}
	l.Unlock()
}

// TestSchema1HAClustersKeepNoCloudIntegration: an ha-aws cluster written
// by a kforge without the cloud integration (schema 1) reads back without
// it, so a reconcile keeps its node names and kubelet settings; a new
// cluster has it; an EKS cluster is unchanged.
func TestSchema1HAClustersKeepNoCloudIntegration(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	ha := spec.Ref{Type: spec.TypeHA, Name: "old", Region: "us-east-1"}
	for _, r := range []spec.Ref{ha, ref} {
		p := filepath.Join(s.root, "clusters", r.Type, r.Region, r.Name, "state.json")
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		doc := `{"schema":1,"spec":{"type":"` + r.Type + `","name":"` + r.Name + `","region":"us-east-1"},"status":"running","pending":[{"type":"` + r.Type + `","name":"` + r.Name + `","region":"us-east-1"}]}`
		if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := s.Get(ctx, ha)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Spec.NoCloudIntegration || !c.Pending[0].NoCloudIntegration || c.Spec.CloudIntegration() || c.Schema != SchemaVersion {
		t.Errorf("schema 1 ha-aws cluster read as %+v (schema %d)", c.Spec, c.Schema)
	}
	e, err := s.Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if e.Spec.NoCloudIntegration {
		t.Error("an EKS cluster got NoCloudIntegration")
	}
	if n := New(spec.Spec{Ref: ha}, time.Now()); !n.Spec.CloudIntegration() {
		t.Error("a new ha-aws cluster has no cloud integration")
	}
}
