package awsx_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/kforge/kforge/internal/awsx"
)

// A burst of calls larger than MaxConnsPerEndpoint opens at most that many
// connections, and the next burst reuses them instead of opening new ones.
func TestHTTPClientBoundsAndReusesConnections(t *testing.T) {
	t.Parallel()
	var opened, open, peak atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		w.Header().Set("Content-Type", "text/xml")
		_, _ = w.Write([]byte(`<DescribeVpcsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><vpcSet/></DescribeVpcsResponse>`))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			opened.Add(1)
			n := open.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	srv.Start()
	defer srv.Close()
	c := ec2.New(ec2.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), HTTPClient: awsx.NewHTTPClient(),
		Retryer: awsx.NewRetryer(), Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")})
	burst := func() {
		var wg sync.WaitGroup
		for range 3 * awsx.MaxConnsPerEndpoint {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := c.DescribeVpcs(context.Background(), &ec2.DescribeVpcsInput{}); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	burst()
	if p := peak.Load(); p > awsx.MaxConnsPerEndpoint {
		t.Errorf("%d connections open at once, want at most %d", p, awsx.MaxConnsPerEndpoint)
	}
	first := opened.Load()
	burst()
	if n := opened.Load() - first; n > 0 {
		t.Errorf("the second burst opened %d new connections, want it to reuse the %d idle ones", n, first)
	}
}
