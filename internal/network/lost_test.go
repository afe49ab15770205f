package network_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/network"
	"github.com/kforge/kforge/test/testutil/moto"
)

// lossyProxy forwards EC2 calls to the emulator on 127.0.0.1. The first
// call of the action it is told to lose reaches the emulator, which carries
// it out, but its answer never comes back: the proxy closes the client's
// connection instead, as a network failure after the request was sent does.
type lossyProxy struct {
	rp *httputil.ReverseProxy

	mu    sync.Mutex
	lose  string         // the action whose next answer is lost
	lost  int            // answers lost
	calls map[string]int // calls per action
}

func startLossyProxy(t *testing.T, lose string) (*lossyProxy, string) {
	t.Helper()
	target, err := url.Parse(server.URL)
	if err != nil {
		t.Fatal(err)
	}
	p := &lossyProxy{lose: lose, calls: map[string]int{}, rp: &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(target)
		pr.Out.Host = pr.In.Host // as signed
	}}}
	srv := httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(srv.Close)
	return p, srv.URL
}

func (p *lossyProxy) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	form, _ := url.ParseQuery(string(body))
	action := form.Get("Action")
	p.mu.Lock()
	p.calls[action]++
	lose := action == p.lose
	if lose {
		p.lose = ""
	}
	p.mu.Unlock()
	if !lose {
		p.rp.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	p.rp.ServeHTTP(rec, r)
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err) // the test server supports hijacking
	}
	conn.Close()
	p.mu.Lock()
	if rec.Code == http.StatusOK {
		p.lost++
	}
	p.mu.Unlock()
}

func (p *lossyProxy) stats(action string) (calls, lost int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[action], p.lost
}

// A create whose answer is lost after AWS carried it out leaves exactly one
// resource: kforge neither lets the SDK send it blindly again nor fails,
// but finds what the first call made by its tags.
func TestLostCreateAnswerMakesNoDuplicate(t *testing.T) {
	t.Parallel()
	for i, tc := range []struct {
		action string
		calls  int // how often the action must reach AWS
	}{
		{"CreateVpc", 1},
		{"CreateInternetGateway", 1},
		{"CreateSubnet", 3},
	} {
		t.Run(tc.action, func(t *testing.T) {
			t.Parallel()
			p, proxyURL := startLossyProxy(t, tc.action)
			cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion(region), config.WithBaseEndpoint(proxyURL),
				config.WithRetryer(awsx.NewRetryer), // kforge's retry policy, as awsx.Load sets it
				config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(moto.AccessKeyID, moto.SecretAccessKey, "")))
			if err != nil {
				t.Fatal(err)
			}
			r := ref(fmt.Sprintf("lost-%d", i))
			cl := &network.Clients{EC2: ec2.NewFromConfig(cfg), InUseTimeout: 2 * time.Second}
			s := network.Spec{Ref: r, Zones: 3, CIDR: fmt.Sprintf("10.%d.0.0/16", 90+i)}
			j := journal(t, r)
			n := apply(t, cl, s, j)

			calls, lost := p.stats(tc.action)
			if lost != 1 {
				t.Fatalf("the proxy lost %d answers of %s, want 1", lost, tc.action)
			}
			if calls != tc.calls {
				t.Errorf("%s reached AWS %d times, want %d: a lost answer was retried blindly", tc.action, calls, tc.calls)
			}
			// Counted in the emulator itself, not through the proxy.
			direct := ec2Client(t)
			want := map[string]int{"vpc": 1, "subnet": 3, "igw": 1, "rtb": 1}
			if got := tagged(t, direct, r); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("tagged resources %v, want %v", got, want)
			}
			checkPublicNetwork(t, direct, r, n, 3)
			if err := destroy(&network.Clients{EC2: direct, InUseTimeout: 2 * time.Second}, s, j); err != nil {
				t.Fatalf("destroy: %v", err)
			}
		})
	}
}
