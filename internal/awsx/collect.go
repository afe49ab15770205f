package awsx

import "context"

// Pager is what every paginator of the AWS SDK for Go v2 is
// (ec2.DescribeVpcsPaginator, ec2.DescribeSubnetsPaginator, ...): Page is
// the output of one call, Opts the service's options.
type Pager[Page, Opts any] interface {
	HasMorePages() bool
	NextPage(ctx context.Context, optFns ...func(Opts)) (Page, error)
}

// Collect drains a paginator: it asks for every page in turn and returns
// the items that items picks from each, in order. It is the one
// list-every-page loop of kforge's look-ups:
//
//	vpcs, err := awsx.Collect(ctx, ec2.NewDescribeVpcsPaginator(c, in),
//		func(o *ec2.DescribeVpcsOutput) []types.Vpc { return o.Vpcs })
//
// optFns are passed to every page's call. On an error, the items of the
// pages read so far are returned with it.
func Collect[Page, Opts, Item any](ctx context.Context, p Pager[Page, Opts], items func(Page) []Item, optFns ...func(Opts)) ([]Item, error) {
	var out []Item
	for p.HasMorePages() {
		page, err := p.NextPage(ctx, optFns...)
		if err != nil {
			return out, err
		}
		out = append(out, items(page)...)
	}
	return out, nil
}

// Select returns the items for which keep is true, in order.
func Select[Item any](all []Item, keep func(Item) bool) []Item {
	var out []Item
	for _, it := range all {
		if keep(it) {
			out = append(out, it)
		}
	}
	return out
}
