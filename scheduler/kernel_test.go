package scheduler

import (
	"bufio"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"uvs/service"
)

// testdata/kernel-6.1.out is what a real Linux 6.1 IPVS chose, recorded by
// testdata/kernel-6.1.sh in the ipvs-oracle VM (real servers 198.18.1.N
// answer with their N; "X" is a refused connection).
func kernelRecord(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open("testdata/kernel-6.1.out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rec := map[string][]string{}
	var cur string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			cur = strings.TrimPrefix(line, "## ")
			continue
		}
		if cur != "" {
			rec[cur] = append(rec[cur], line)
		}
	}
	return rec
}

// kernelPicks parses "src:sport=N" items.
type kernelPick struct {
	src   netip.Addr
	sport uint16
	want  int
}

func kernelPicks(t *testing.T, line string) []kernelPick {
	t.Helper()
	var out []kernelPick
	for _, it := range strings.Fields(line) {
		ap, n, ok := strings.Cut(it, "=")
		if !ok {
			t.Fatalf("bad item %q", it)
		}
		a, p, _ := strings.Cut(ap, ":")
		port, _ := strconv.Atoi(p)
		want := 0
		if n != "X" {
			want, _ = strconv.Atoi(n)
		}
		out = append(out, kernelPick{netip.MustParseAddr(a), uint16(port), want})
	}
	return out
}

// TestKernelHashing replays the kernel's client-to-server choices. The
// record also holds mh runs: our mh table does not reproduce them (the
// kernel's hash inputs could not be established from published facts; see
// mh.go), so only sh is compared here.
func TestKernelHashing(t *testing.T) {
	rec := kernelRecord(t)
	type srv struct {
		n int
		w int32
	}
	one := []srv{{2, 1}, {3, 1}, {4, 1}, {5, 1}}
	cases := []struct {
		section string
		sched   string
		flags   service.SchedFlags
		servers []srv
		quiesce int // server set to weight 0 after adding
	}{
		{"sh-fallback rs3 w0", "sh", service.SchedSHFallback, one, 3},
	}
	for _, c := range cases {
		t.Run(c.section, func(t *testing.T) {
			lines := rec[c.section]
			if len(lines) != 1 {
				t.Fatalf("record has %d lines for %q", len(lines), c.section)
			}
			l := newLab(t, c.sched, c.flags, nil)
			for _, s := range c.servers {
				l.add(s.n, s.w)
			}
			if c.quiesce != 0 {
				l.setWeight(c.quiesce, 0)
			}
			picks := kernelPicks(t, lines[0])
			bad := 0
			for _, p := range picks {
				if got := l.pickFrom(p.src, p.sport); got != p.want {
					if bad++; bad <= 5 {
						t.Errorf("%v:%d -> %d, kernel chose %d", p.src, p.sport, got, p.want)
					}
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d picks differ from the kernel", bad, len(picks))
			}
		})
	}
}

func TestKernelSequences(t *testing.T) {
	rec := kernelRecord(t)
	want := func(section string) [][]int {
		var out [][]int
		for _, line := range rec[section] {
			var seq []int
			for _, f := range strings.Fields(line) {
				n, err := strconv.Atoi(f)
				if err != nil {
					t.Fatalf("%s: %q", section, line)
				}
				seq = append(seq, n)
			}
			out = append(out, seq)
		}
		return out
	}
	check := func(t *testing.T, got []int, want []int) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("picked %v, kernel picked %v", got, want)
		}
	}
	t.Run("wrr midcycle", func(t *testing.T) {
		w := want("wrr midcycle")
		l := newLab(t, "wrr", 0, nil)
		l.add(2, 4)
		l.add(3, 3)
		l.add(4, 2)
		check(t, l.picks(len(w[0])), w[0])
		l.add(5, 3)
		check(t, l.picks(len(w[1])), w[1])
		l.setWeight(3, 0)
		check(t, l.picks(len(w[2])), w[2])
		l.del(2)
		check(t, l.picks(len(w[3])), w[3])
	})
	t.Run("rr midcycle", func(t *testing.T) {
		w := want("rr midcycle")
		l := newLab(t, "rr", 0, nil)
		for n := 2; n <= 5; n++ {
			l.add(n, 1)
		}
		check(t, l.picks(len(w[0])), w[0])
		l.del(4)
		check(t, l.picks(len(w[1])), w[1])
		l.add(4, 1)
		check(t, l.picks(len(w[2])), w[2])
		l.setWeight(2, 0)
		check(t, l.picks(len(w[3])), w[3])
	})
	t.Run("wrr gcd", func(t *testing.T) {
		w := want("wrr gcd 4 2 then edit")
		l := newLab(t, "wrr", 0, nil)
		l.add(2, 4)
		l.add(3, 2)
		check(t, l.picks(len(w[0])), w[0])
		l.setWeight(3, 6)
		check(t, l.picks(len(w[1])), w[1])
	})
	t.Run("wrr first weight 0", func(t *testing.T) {
		w := want("wrr first w0")
		l := newLab(t, "wrr", 0, nil)
		l.add(2, 0)
		l.add(3, 2)
		l.add(4, 1)
		check(t, l.picks(len(w[0])), w[0])
	})
	t.Run("wrr edit midcycle", func(t *testing.T) {
		w := want("wrr 6 4 2 then midcycle w 3")
		l := newLab(t, "wrr", 0, nil)
		l.add(2, 6)
		l.add(3, 4)
		l.add(4, 2)
		check(t, l.picks(len(w[0])), w[0])
		l.setWeight(4, 3)
		check(t, l.picks(len(w[1])), w[1])
	})
}
