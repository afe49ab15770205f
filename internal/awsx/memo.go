package awsx

import (
	"context"
	"encoding/json"
	"sync"

	awsmw "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go/middleware"
)

// memoized reports whether an operation is a look-up whose answer does
// not change while one kforge command runs: what an instance type is,
// which images and availability zones a region offers. The preflight and
// the steps of a create ask the same questions; AWS is asked once.
func memoized(service, operation string) bool {
	if service != "EC2" {
		return false
	}
	switch operation {
	case "DescribeInstanceTypes", "DescribeImages", "DescribeAvailabilityZones":
		return true
	}
	return false
}

// memo keeps the answers of memoized look-ups made with one configuration,
// keyed by operation and parameters.
type memo struct {
	mu      sync.Mutex
	answers map[string]any
}

func newMemo() *memo { return &memo{answers: map[string]any{}} }

// middleware answers a memoized look-up made before with the same
// parameters from memory; it makes no call, so the trace shows none.
func (m *memo) middleware(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("kforgeMemo",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			service, op := awsmw.GetServiceID(ctx), awsmw.GetOperationName(ctx)
			if !memoized(service, op) {
				return next.HandleInitialize(ctx, in)
			}
			params, err := json.Marshal(in.Parameters)
			if err != nil {
				return next.HandleInitialize(ctx, in)
			}
			key := service + ":" + op + ":" + string(params)
			m.mu.Lock()
			answer, ok := m.answers[key]
			m.mu.Unlock()
			if ok {
				return middleware.InitializeOutput{Result: answer}, middleware.Metadata{}, nil
			}
			out, md, err := next.HandleInitialize(ctx, in)
			if err == nil {
				m.mu.Lock()
				m.answers[key] = out.Result
				m.mu.Unlock()
			}
			return out, md, err
		}), middleware.Before)
}
