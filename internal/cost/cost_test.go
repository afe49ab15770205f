package cost

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestOf(t *testing.T) {
	items := Merge([]Item{
		{Kind: KindInstance, Type: "t3.medium", Count: 3, For: "control planes"},
		{Kind: KindInstance, Type: "t3.medium", Count: 2, For: "workers"},
		{Kind: KindVolume, Type: "gp3", GiB: 50, Count: 2, For: "workers"},
		{Kind: KindPublicIPv4, Count: 5},
		{Kind: KindEKS, Count: 1},
		{Kind: KindInstance, Type: "x9.nonesuch", Count: 1},
		{Kind: KindInstance, Type: "t3.micro", Count: 0},
	})
	e := Of("us-east-1", items, Table)
	if e.Lines[0].Kind != KindEKS || len(e.Lines) != 5 {
		t.Fatalf("lines = %+v", e.Lines)
	}
	want := 0.10 + 5*0.0416 + 2*50*0.08/HoursPerMonth + 5*0.005
	if !near(e.HourlyUSD, want) || !near(e.MonthlyUSD, want*HoursPerMonth) {
		t.Errorf("hourly %v monthly %v, want %v and %v", e.HourlyUSD, e.MonthlyUSD, want, want*HoursPerMonth)
	}
	if e.Lines[1].Count != 5 || e.Lines[1].For != "control planes, workers" {
		t.Errorf("merged line = %+v", e.Lines[1])
	}
	var unpriced int
	for _, l := range e.Lines {
		if l.Unpriced {
			unpriced++
		}
	}
	if unpriced != 1 || e.Approximate {
		t.Errorf("unpriced %d, approximate %v", unpriced, e.Approximate)
	}
	var b bytes.Buffer
	e.Write(&b)
	for _, want := range []string{"5 x t3.medium (control planes, workers)", "no price known", "total", TableDate} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
	if e := Of("eu-west-1", items, Table); !e.Approximate || !strings.Contains(e.Source, "us-east-1") {
		t.Errorf("another region's estimate from the table must say it is approximate: %+v", e)
	}
}
