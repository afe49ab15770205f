package awsx

import (
	"context"
	"sync"
)

// All makes independent AWS calls at once, so that they cost one round
// trip instead of one each: it runs every fn concurrently, waits for all of
// them, and returns the error of the first fn (in argument order) that
// failed, or nil.
func All(ctx context.Context, fns ...func(context.Context) error) error {
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(ctx)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
