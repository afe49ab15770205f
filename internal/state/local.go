package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"

	"github.com/kforge/kforge/internal/atomicfile"
	"github.com/kforge/kforge/internal/spec"
)

// Local is the default store: one directory per cluster under a root,
// written with atomic renames, and locked with flock(2), so a lock dies with
// the process that held it.
//
// Layout: <root>/clusters/<type>/<region>/<name>/{state.json,secrets.json}
// and <root>/locks/<type>_<region>_<name>.lock.
type Local struct {
	root string
}

// NewLocal returns a local store rooted at dir, creating it (mode 0700).
func NewLocal(dir string) (*Local, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	return &Local{root: dir}, nil
}

// Location implements Store.
func (l *Local) Location() string { return l.root }

func (l *Local) dir(ref spec.Ref) string {
	return filepath.Join(l.root, "clusters", ref.Type, ref.Region, ref.Name)
}

// Get implements Store.
func (l *Local) Get(_ context.Context, ref spec.Ref) (*Cluster, error) {
	c, err := readCluster(filepath.Join(l.dir(ref), "state.json"))
	if err != nil {
		return nil, err
	}
	sp := filepath.Join(l.dir(ref), "secrets.json")
	b, err := os.ReadFile(sp)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read secrets: %w", err)
	default:
		if err := json.Unmarshal(b, &c.Secrets); err != nil {
			return nil, &CorruptError{Where: sp, Err: err}
		}
	}
	if c.Secrets == nil {
		c.Secrets = map[string][]byte{}
	}
	return c, nil
}

func readCluster(path string) (*Cluster, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var c Cluster
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, &CorruptError{Where: path, Err: err}
	}
	if c.Schema > SchemaVersion {
		return nil, fmt.Errorf("the state at %s was written by a newer kforge (schema %d); upgrade kforge", path, c.Schema)
	}
	c.Upgrade()
	if c.Steps == nil {
		c.Steps = map[string]StepRecord{}
	}
	return &c, nil
}

// Put implements Store. Secrets are written first, so the state never names
// a step whose secrets are missing.
func (l *Local) Put(_ context.Context, c *Cluster) error {
	d := l.dir(c.Ref())
	if err := os.MkdirAll(d, 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	if len(c.Secrets) > 0 {
		b, err := json.Marshal(c.Secrets)
		if err != nil {
			return err
		}
		if err := atomicfile.Write(filepath.Join(d, "secrets.json"), b, 0o600); err != nil {
			return fmt.Errorf("write secrets: %w", err)
		}
	}
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(d, "state.json"), b, 0o600); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

// Delete implements Store.
func (l *Local) Delete(_ context.Context, ref spec.Ref) error {
	d := l.dir(ref)
	for _, f := range []string{"state.json", "secrets.json"} {
		if err := os.Remove(filepath.Join(d, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("delete state: %w", err)
		}
	}
	// Remove the now empty directories up to the root; failures (a
	// directory still holding something) are harmless.
	for p := d; p != l.root && len(p) > len(l.root); p = filepath.Dir(p) {
		if os.Remove(p) != nil {
			break
		}
	}
	return nil
}

// List implements Store. Clusters are read concurrently and returned sorted
// by type, region and name.
func (l *Local) List(_ context.Context) ([]*Cluster, error) {
	paths, err := filepath.Glob(filepath.Join(l.root, "clusters", "*", "*", "*", "state.json"))
	if err != nil {
		return nil, err
	}
	out := make([]*Cluster, len(paths))
	errs := make([]error, len(paths))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, p := range paths {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i], errs[i] = readCluster(p)
		}()
	}
	wg.Wait()
	var list []*Cluster
	for i, c := range out {
		if errs[i] != nil {
			return nil, errs[i]
		}
		list = append(list, c)
	}
	SortClusters(list)
	return list, nil
}

// SortClusters orders clusters by type, region and name.
func SortClusters(list []*Cluster) {
	sort.Slice(list, func(i, j int) bool {
		a, b := list[i].Spec.Ref, list[j].Spec.Ref
		if a.Type != b.Type {
			return a.Type < b.Type
		}
		if a.Region != b.Region {
			return a.Region < b.Region
		}
		return a.Name < b.Name
	})
}

type localLock struct {
	once sync.Once
	f    *os.File
}

func (l *localLock) Unlock() error {
	var err error
	l.once.Do(func() {
		_ = l.f.Truncate(0)
		err = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
		if cerr := l.f.Close(); err == nil {
			err = cerr
		}
	})
	return err
}

// Lock implements Store with flock(2) on a lock file that also records the
// holder. The kernel releases the lock when its process dies, so a lock left
// by a crashed kforge is taken over at once.
func (l *Local) Lock(_ context.Context, ref spec.Ref, h Holder) (Lock, error) {
	dir := filepath.Join(l.root, "locks")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create lock directory: %w", err)
	}
	path := filepath.Join(dir, fmt.Sprintf("%s_%s_%s.lock", ref.Type, ref.Region, ref.Name))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			var other Holder
			b, _ := os.ReadFile(path)
			_ = json.Unmarshal(b, &other)
			return nil, &InUseError{Ref: ref, Holder: other}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	b, _ := json.Marshal(h)
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt(b, 0)
	}
	return &localLock{f: f}, nil
}
