package awsx_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/kforge/kforge/internal/awsx"
)

func TestAllRunsAtOnceAndReportsTheFirstFailure(t *testing.T) {
	t.Parallel()
	first, second := errors.New("first"), errors.New("second")
	var started sync.WaitGroup
	started.Add(3)
	all := make(chan struct{})
	go func() { started.Wait(); close(all) }()
	// Each call returns only once all three have started: run one after
	// the other, they would never return.
	call := func(err error, delay time.Duration) func(context.Context) error {
		return func(ctx context.Context) error {
			started.Done()
			select {
			case <-all:
			case <-time.After(5 * time.Second):
				return errors.New("the calls did not run at once")
			}
			time.Sleep(delay)
			return err
		}
	}
	// The second argument fails last but is reported: argument order, not
	// time order.
	err := awsx.All(context.Background(), call(nil, 0), call(first, 30*time.Millisecond), call(second, 0))
	if !errors.Is(err, first) {
		t.Fatalf("All = %v, want the error of the first failing argument", err)
	}
	if err := awsx.All(context.Background()); err != nil {
		t.Fatalf("All of nothing = %v", err)
	}
}
