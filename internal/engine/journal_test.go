package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/state"
)

// slowStore is a store whose saves take a while, and which remembers what
// each save held.
type slowStore struct {
	state.Store
	mu    sync.Mutex
	saves int
	last  *state.Cluster
}

func (s *slowStore) Put(_ context.Context, c *state.Cluster) error {
	time.Sleep(20 * time.Millisecond)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.saves++
	s.last = c.Clone()
	return nil
}

func (s *slowStore) holds(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.last.Steps[id]
	return ok
}

// Steps that finish at once share saves, and each returns only once a save
// holds its record.
func TestJournalGroupsConcurrentSaves(t *testing.T) {
	st := &slowStore{}
	j := NewJournal(st, state.New(spec.Spec{Ref: spec.Ref{Type: "aws", Name: "t", Region: "us-east-1"}}, time.Now()))
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprint("vm/", i)
			if err := j.Record(context.Background(), id, json.RawMessage(`{}`)); err != nil {
				errs <- err
				return
			}
			if !st.holds(id) {
				errs <- fmt.Errorf("%s returned before a save held it", id)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st.saves > n/5 {
		t.Errorf("%d saves for %d records made at once, want them grouped (at most %d)", st.saves, n, n/5)
	}
	if len(st.last.Steps) != n {
		t.Errorf("the last save holds %d records, want %d", len(st.last.Steps), n)
	}
}
