package eks

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	ekstypes "github.com/aws/aws-sdk-go-v2/service/eks/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kforge/kforge/internal/engine"
)

// updatePoll is how an EKS update is looked at while it runs (EKS has no
// waiter for updates): at once, then after 2 s, growing to every 30 s.
var updatePoll = wait.Backoff{Duration: 2 * time.Second, Factor: 1.5, Cap: 30 * time.Second, Steps: math.MaxInt32}

// CompareVersions compares two Kubernetes minor versions such as "1.33"
// (a leading "v" and a patch are ignored): -1, 0 or 1. A version that
// does not parse compares as equal, so that it is never acted on.
func CompareVersions(a, b string) int {
	am, aok := minorOf(a)
	bm, bok := minorOf(b)
	if !aok || !bok || am == bm {
		return 0
	}
	if am < bm {
		return -1
	}
	return 1
}

// minorOf returns the minor of a 1.x version.
func minorOf(v string) (int, bool) {
	v = strings.TrimPrefix(v, "v")
	major, rest, ok := strings.Cut(v, ".")
	if !ok || major != "1" {
		return 0, false
	}
	minor, _, _ := strings.Cut(rest, ".")
	n, err := strconv.Atoi(minor)
	return n, err == nil
}

// NextMinor is the minor version after v ("1.33" gives "1.34").
func NextMinor(v string) (string, bool) {
	m, ok := minorOf(v)
	if !ok {
		return "", false
	}
	return fmt.Sprintf("1.%d", m+1), true
}

// waitUpdate waits for an EKS update (of the cluster, or of a node group
// when in names one) to end, and returns an error naming EKS's reasons if
// it did not succeed.
func (p *Provider) waitUpdate(ctx context.Context, r *engine.Run, in *eks.DescribeUpdateInput, what string, timeout time.Duration) error {
	r.Waiting("waiting for EKS to update %s (update %s)", what, aws.ToString(in.UpdateId))
	var last *ekstypes.Update
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	look := func(ctx context.Context) (bool, error) {
		out, err := p.eks.DescribeUpdate(ctx, in)
		if err != nil {
			return false, err // the SDK's retryer has retried what it could
		}
		last = out.Update
		return last.Status != ekstypes.UpdateStatusInProgress, nil
	}
	done, err := look(ctx)
	if err == nil && !done {
		err = wait.ExponentialBackoffWithContext(ctx, updatePoll, look)
	}
	if err != nil {
		return fmt.Errorf("wait for EKS to update %s: %w", what, err)
	}
	if last.Status != ekstypes.UpdateStatusSuccessful {
		var reasons []string
		for _, e := range last.Errors {
			reasons = append(reasons, fmt.Sprintf("%s: %s", e.ErrorCode, aws.ToString(e.ErrorMessage)))
		}
		if len(reasons) == 0 {
			reasons = append(reasons, "no details from EKS")
		}
		return fmt.Errorf("EKS update %s of %s is %s: %s", aws.ToString(in.UpdateId), what, last.Status, strings.Join(reasons, "; "))
	}
	return nil
}
