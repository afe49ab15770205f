package network

import (
	"net/netip"
	"testing"
)

func TestFreeBlocks(t *testing.T) {
	t.Parallel()
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	for _, tc := range []struct {
		name string
		vpc  []string
		used []netip.Prefix
		bits int
		n    int
		want string
	}{
		{"empty VPC", []string{"10.0.0.0/16"}, nil, 24, 2, "[10.0.0.0/24 10.0.1.0/24]"},
		{"skips used", []string{"10.0.0.0/16"}, pfx("10.0.0.0/24", "10.0.2.0/23"), 24, 3, "[10.0.1.0/24 10.0.4.0/24 10.0.5.0/24]"},
		{"a large subnet covers many blocks", []string{"10.0.0.0/16"}, pfx("10.0.0.0/20"), 24, 1, "[10.0.16.0/24]"},
		{"small used inside a candidate", []string{"10.0.0.0/16"}, pfx("10.0.0.16/28"), 20, 1, "[10.0.16.0/20]"},
		{"secondary block", []string{"10.0.0.0/24", "10.1.0.0/16"}, pfx("10.0.0.0/24"), 24, 1, "[10.1.0.0/24]"},
		{"block smaller than the prefix", []string{"10.0.0.0/26"}, nil, 24, 1, "[]"},
		{"full", []string{"10.0.0.0/23"}, pfx("10.0.0.0/24", "10.0.1.0/24"), 24, 1, "[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := freeBlocks(tc.vpc, tc.used, tc.bits, tc.n)
			if s := fmtPrefixes(got); s != tc.want {
				t.Errorf("got %s, want %s", s, tc.want)
			}
		})
	}
}

func fmtPrefixes(ps []netip.Prefix) string {
	s := "["
	for i, p := range ps {
		if i > 0 {
			s += " "
		}
		s += p.String()
	}
	return s + "]"
}

func TestCarve(t *testing.T) {
	t.Parallel()
	p := netip.MustParsePrefix("10.0.0.0/16")
	for i, want := range []string{"10.0.0.0/20", "10.0.16.0/20", "10.0.240.0/20"} {
		k := []int{0, 1, 15}[i]
		got, err := carve(p, 20, k)
		if err != nil || got.String() != want {
			t.Errorf("carve #%d = %v, %v; want %s", k, got, err, want)
		}
	}
	if _, err := carve(p, 20, 16); err == nil {
		t.Error("carve beyond the VPC succeeded")
	}
}
