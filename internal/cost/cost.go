// Package cost estimates what a cluster costs to run: the on-demand price
// of each thing its plan creates (instances by type, EBS volumes, public
// IPv4 addresses, the EKS control plane), per hour and per month.
//
// Prices come from the AWS Price List API when kforge can reach it, else
// from a table shipped with kforge (TableDate says when it was read), whose
// figures are those of us-east-1; an estimate says which it used.
package cost

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// HoursPerMonth is AWS's convention for monthly prices (730 hours).
const HoursPerMonth = 730

// Kinds of billed items.
const (
	KindInstance   = "instance"
	KindVolume     = "volume"
	KindPublicIPv4 = "public-ipv4"
	KindEKS        = "eks-cluster"
)

// Item is something a cluster runs and pays for.
type Item struct {
	Kind string `json:"kind"`
	// Type is the instance type (instances), the volume type (volumes).
	Type string `json:"type,omitempty"`
	// Count is how many; GiB the size of each volume.
	Count int `json:"count"`
	GiB   int `json:"gib,omitempty"`
	// For says what it is for ("control planes"), for the table.
	For string `json:"for,omitempty"`
}

// Line is the price of one item.
type Line struct {
	Item
	// UnitHourlyUSD is the price of one (per hour; per GiB-month for
	// volumes, converted to hours).
	UnitHourlyUSD float64 `json:"unitHourlyUsd"`
	HourlyUSD     float64 `json:"hourlyUsd"`
	MonthlyUSD    float64 `json:"monthlyUsd"`
	// Unpriced is true when no price is known for it: the totals leave
	// it out.
	Unpriced bool `json:"unpriced,omitempty"`
}

// Estimate is the price of a cluster.
type Estimate struct {
	Region     string  `json:"region"`
	Lines      []Line  `json:"lines"`
	HourlyUSD  float64 `json:"hourlyUsd"`
	MonthlyUSD float64 `json:"monthlyUsd"`
	// Source says where the prices come from: "AWS Price List API" or
	// "kforge's price table of <date> (us-east-1 on-demand prices)".
	Source string `json:"source"`
	// Approximate is true when the table's us-east-1 prices stand in for
	// another region's.
	Approximate bool `json:"approximate,omitempty"`
}

// Prices gives on-demand prices in USD.
type Prices interface {
	// Hourly is the hourly price of one item of a kind and type (for
	// volumes: of one GiB), and whether it is known.
	Hourly(region, kind, typ string) (float64, bool)
	// Source describes the prices.
	Source(region string) (source string, approximate bool)
}

// Of prices items in a region.
func Of(region string, items []Item, p Prices) Estimate {
	e := Estimate{Region: region}
	e.Source, e.Approximate = p.Source(region)
	for _, it := range items {
		if it.Count == 0 {
			continue
		}
		l := Line{Item: it}
		unit, ok := p.Hourly(region, it.Kind, it.Type)
		switch {
		case !ok:
			l.Unpriced = true
		case it.Kind == KindVolume:
			l.UnitHourlyUSD = unit * float64(it.GiB)
		default:
			l.UnitHourlyUSD = unit
		}
		l.HourlyUSD = l.UnitHourlyUSD * float64(it.Count)
		l.MonthlyUSD = l.HourlyUSD * HoursPerMonth
		e.HourlyUSD += l.HourlyUSD
		e.MonthlyUSD += l.MonthlyUSD
		e.Lines = append(e.Lines, l)
	}
	return e
}

// Write prints an estimate as a short table.
func (e Estimate) Write(w io.Writer) {
	fmt.Fprintf(w, "Estimated cost in %s (on-demand, before taxes and data transfer):\n", e.Region)
	for _, l := range e.Lines {
		what := l.Kind
		switch l.Kind {
		case KindInstance:
			what = fmt.Sprintf("%d x %s", l.Count, l.Type)
		case KindVolume:
			what = fmt.Sprintf("%d x %d GiB %s volume", l.Count, l.GiB, l.Type)
		case KindPublicIPv4:
			what = fmt.Sprintf("%d x public IPv4 address", l.Count)
		case KindEKS:
			what = "EKS control plane"
		}
		if l.For != "" {
			what += " (" + l.For + ")"
		}
		price := fmt.Sprintf("$%8.4f/h  $%9.2f/month", l.HourlyUSD, l.MonthlyUSD)
		if l.Unpriced {
			price = "no price known (left out of the total)"
		}
		fmt.Fprintf(w, "  %-52s %s\n", what, price)
	}
	fmt.Fprintf(w, "  %-52s $%8.4f/h  $%9.2f/month\n", "total", e.HourlyUSD, e.MonthlyUSD)
	note := "prices: " + e.Source
	if e.Approximate {
		note += "; " + e.Region + " may differ"
	}
	fmt.Fprintf(w, "  (%s)\n", note)
}

// Merge adds up items of the same kind, type and size, keeping the
// first item's purpose when they share one and joining them otherwise.
func Merge(items []Item) []Item {
	type key struct {
		kind, typ string
		gib       int
	}
	idx := map[key]int{}
	var out []Item
	for _, it := range items {
		k := key{it.Kind, it.Type, it.GiB}
		if i, ok := idx[k]; ok {
			out[i].Count += it.Count
			if it.For != "" && !strings.Contains(out[i].For, it.For) {
				out[i].For += ", " + it.For
			}
			continue
		}
		idx[k] = len(out)
		out = append(out, it)
	}
	sort.SliceStable(out, func(i, j int) bool { return kindOrder(out[i].Kind) < kindOrder(out[j].Kind) })
	return out
}

func kindOrder(k string) int {
	switch k {
	case KindEKS:
		return 0
	case KindInstance:
		return 1
	case KindVolume:
		return 2
	}
	return 3
}
