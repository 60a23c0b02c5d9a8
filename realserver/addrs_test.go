package realserver

import (
	"slices"
	"strings"
	"testing"
)

func TestParseAddrs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // comma-joined, or "" for an error
	}{
		{"198.18.0.100", "198.18.0.100"},
		{"198.18.0.100,2001:2::100", "198.18.0.100,2001:2::100"},
		{" 198.18.0.100 , 198.18.0.101 ", "198.18.0.100,198.18.0.101"},
		{"::ffff:198.18.0.100", "198.18.0.100"},
		{"", ""},
		{" ", ""},
		{"198.18.0.100,", ""},
		{",198.18.0.100", ""},
		{"198.18.0.100,,198.18.0.101", ""},
		{"198.18.0.100/32", ""},
		{"fe80::1%eth0", ""},
		{"fe80::1", ""},
		{"0.0.0.0", ""},
		{"::", ""},
		{"127.0.0.1", ""},
		{"224.0.0.1", ""},
		{"198.18.0.100,::ffff:198.18.0.100", ""},
		{"host.example", ""},
		{"198.18.0.256", ""},
	} {
		got, err := ParseAddrs(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParseAddrs(%q) = %v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseAddrs(%q): %v", tc.in, err)
			continue
		}
		var s []string
		for _, a := range got {
			s = append(s, a.String())
		}
		if strings.Join(s, ",") != tc.want {
			t.Errorf("ParseAddrs(%q) = %v, want %s", tc.in, s, tc.want)
		}
	}
}

// FuzzParseAddrs: no panics; an accepted list holds distinct, valid,
// unmapped addresses without zones, and printing it back parses the same.
func FuzzParseAddrs(f *testing.F) {
	for _, s := range []string{"198.18.0.100", "198.18.0.100,2001:2::100", " 2001:2::100 ,198.18.2.1", "::ffff:1.2.3.4", "fe80::1%lo", "1.2.3.4,,", ","} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		as, err := ParseAddrs(s)
		if err != nil {
			return
		}
		if len(as) == 0 {
			t.Fatal("accepted an empty list")
		}
		var strs []string
		for i, a := range as {
			if !a.IsValid() || a.Zone() != "" || a.Is4In6() || slices.Contains(as[:i], a) {
				t.Fatalf("ParseAddrs(%q) gave %v", s, as)
			}
			strs = append(strs, a.String())
		}
		again, err := ParseAddrs(strings.Join(strs, ","))
		if err != nil || !slices.Equal(again, as) {
			t.Fatalf("round trip of %v: %v, %v", as, again, err)
		}
	})
}
