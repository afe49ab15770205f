package awsx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// fakePager serves pages of ints; it fails at page fail (0: never).
type fakePager struct {
	pages [][]int
	next  int
	fail  int
	opts  int
}

type fakeOpts struct{ n *int }

func (p *fakePager) HasMorePages() bool { return p.next < len(p.pages) }

func (p *fakePager) NextPage(ctx context.Context, optFns ...func(*fakeOpts)) ([]int, error) {
	o := &fakeOpts{n: &p.opts}
	for _, f := range optFns {
		f(o)
	}
	p.next++
	if p.next == p.fail {
		return nil, errors.New("page failed")
	}
	return p.pages[p.next-1], nil
}

func TestCollect(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	double := func(page []int) []string {
		var out []string
		for _, v := range page {
			out = append(out, fmt.Sprint(v*2))
		}
		return out
	}
	count := func(o *fakeOpts) { *o.n++ }
	p := &fakePager{pages: [][]int{{1, 2}, {}, {3}}}
	got, err := Collect(ctx, p, double, count)
	if err != nil || strings.Join(got, " ") != "2 4 6" {
		t.Errorf("Collect = %v, %v; want 2 4 6", got, err)
	}
	if p.opts != 3 {
		t.Errorf("the options reached %d of 3 pages", p.opts)
	}
	p = &fakePager{pages: [][]int{{1}, {2}, {3}}, fail: 2}
	got, err = Collect(ctx, p, double)
	if err == nil || strings.Join(got, " ") != "2" || p.next != 2 {
		t.Errorf("Collect with page 2 failing = %v, %v after %d pages; want the first page's items, the error, no page after it", got, err, p.next)
	}
	if got, err := Collect(ctx, &fakePager{}, double); err != nil || got != nil {
		t.Errorf("Collect of no page = %v, %v", got, err)
	}
	if got := Select([]int{1, 2, 3, 4}, func(v int) bool { return v%2 == 0 }); fmt.Sprint(got) != "[2 4]" {
		t.Errorf("Select = %v", got)
	}
}

// An SDK paginator is drained with its types inferred: every page is
// asked for, with its token, and the items come back in order.
func TestCollectSDKPaginator(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var tokens []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		v, _ := url.ParseQuery(string(b))
		mu.Lock()
		tokens = append(tokens, v.Get("NextToken"))
		mu.Unlock()
		w.Header().Set("Content-Type", "text/xml")
		vpc, next := "vpc-1", "<nextToken>page2</nextToken>"
		if v.Get("NextToken") == "page2" {
			vpc, next = "vpc-2", ""
		}
		fmt.Fprintf(w, `<DescribeVpcsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><vpcSet><item><vpcId>%s</vpcId></item></vpcSet>%s</DescribeVpcsResponse>`, vpc, next)
	}))
	t.Cleanup(srv.Close)
	c := ec2.New(ec2.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")})
	vpcs, err := Collect(context.Background(), ec2.NewDescribeVpcsPaginator(c, &ec2.DescribeVpcsInput{}),
		func(o *ec2.DescribeVpcsOutput) []types.Vpc { return o.Vpcs })
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, v := range vpcs {
		ids = append(ids, aws.ToString(v.VpcId))
	}
	if strings.Join(ids, " ") != "vpc-1 vpc-2" || strings.Join(tokens, ",") != ",page2" {
		t.Errorf("VPCs %v with tokens %q; want vpc-1 vpc-2 over two pages", ids, tokens)
	}
}
