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
// answer with their N; "X" is a refused connection); kernel-6.1-mh.out,
// recorded by kernel-6.1-mh.sh, holds more mh choices (IPv6, weight edits,
// deletions, quiesced servers).
func kernelRecord(t *testing.T, file string) map[string][]string {
	t.Helper()
	f, err := os.Open(file)
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

// kernelPicks parses "src:sport=N" items ("[src]:sport=N" for IPv6).
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
		a, err := netip.ParseAddrPort(ap) // "[v6]:port" for IPv6
		if err != nil {
			t.Fatalf("bad item %q: %v", it, err)
		}
		want := 0
		if n != "X" {
			want, _ = strconv.Atoi(n)
		}
		out = append(out, kernelPick{a.Addr(), a.Port(), want})
	}
	return out
}

// TestKernelHashing replays the kernel's client-to-server choices for sh and
// mh: every recorded pick must match.
func TestKernelHashing(t *testing.T) {
	rec := kernelRecord(t, "testdata/kernel-6.1.out")
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
		{"mh equal", "mh", 0, one, 0},
		{"mh weights 4321", "mh", 0, []srv{{2, 4}, {3, 3}, {4, 2}, {5, 1}}, 0},
		{"mh big weight 100 1 1", "mh", 0, []srv{{2, 100}, {3, 1}, {4, 1}}, 0},
		{"mh-port", "mh", service.SchedMHPort, one, 0},
		{"mh-fallback rs3 w0", "mh", service.SchedMHFallback, one, 3},
		{"mh nofallback rs3 w0", "mh", 0, one, 3},
		// rs3 added with weight 0 (and left so): it takes no slot.
		{"mh added w0 then 1 (rs3)", "mh", 0, []srv{{2, 1}, {3, 0}, {4, 1}, {5, 1}}, 0},
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
			replay(t, l, kernelPicks(t, lines[0]))
		})
	}
}

// TestKernelMH replays kernel-6.1-mh.out: each section is one service's
// choices after the edits its title names, made in that order.
func TestKernelMH(t *testing.T) {
	rec := kernelRecord(t, "testdata/kernel-6.1-mh.out")
	check := func(t *testing.T, l *lab, section string) {
		t.Helper()
		lines := rec[section]
		if len(lines) != 1 {
			t.Fatalf("record has %d lines for %q", len(lines), section)
		}
		replay(t, l, kernelPicks(t, lines[0]))
	}
	// add adds real servers 2, 3, ... with the weights, in that order.
	add := func(l *lab, weights ...int32) {
		for i, w := range weights {
			l.add(2+i, w)
		}
	}
	t.Run("e2e clients", func(t *testing.T) {
		l := newLab(t, "mh", service.SchedMHFallback, nil)
		add(l, 4, 3, 2)
		check(t, l, "e2e mh-fallback 2w4 3w3 4w2")
		l.setWeight(3, 0)
		check(t, l, "e2e then rs3 w0")
		l = newLab(t, "mh", service.SchedMHPort, nil)
		add(l, 1, 1, 1)
		check(t, l, "e2e mh-port 2w1 3w1 4w1")
	})
	t.Run("IPv6", func(t *testing.T) {
		l := newLab6(t, "mh", 0, nil)
		add(l, 4, 3, 2, 1)
		check(t, l, "v6 2w4 3w3 4w2 5w1")
		l = newLab6(t, "mh", service.SchedMHFallback, nil)
		add(l, 1, 1, 1, 1)
		l.setWeight(4, 0)
		check(t, l, "v6 mh-fallback 2w1 3w1 4w1 5w1 then rs4 w0")
	})
	t.Run("edits", func(t *testing.T) {
		l := newLab(t, "mh", 0, nil)
		add(l, 1, 1, 1, 1)
		check(t, l, "edits 2w1 3w1 4w1 5w1")
		l.setWeight(3, 3)
		check(t, l, "edits then rs3 w3")
		l.del(4)
		check(t, l, "edits then del rs4")
		l.add(4, 2) // now the newest: first in the list
		check(t, l, "edits then add rs4 w2")
	})
	t.Run("added with weight 0, then 1", func(t *testing.T) {
		l := newLab(t, "mh", 0, nil)
		add(l, 1, 0, 1, 1)
		l.setWeight(3, 1)
		check(t, l, "added w0 2w1 3w0 4w1 5w1 then rs3 w1")
	})
	t.Run("fallback past two quiesced servers", func(t *testing.T) {
		l := newLab(t, "mh", service.SchedMHFallback, nil)
		add(l, 4, 3, 2, 1)
		l.setWeight(2, 0)
		l.setWeight(4, 0)
		check(t, l, "fallback 2w4 3w3 4w2 5w1 rs2 rs4 w0")
		l.setWeight(2, 5)
		check(t, l, "fallback then rs2 w5")
	})
	t.Run("mh-port and mh-fallback", func(t *testing.T) {
		l := newLab(t, "mh", service.SchedMHPort|service.SchedMHFallback, nil)
		add(l, 4, 3, 2, 1)
		l.setWeight(3, 0)
		check(t, l, "mh-port,mh-fallback 2w4 3w3 4w2 5w1 rs3 w0")
	})
}

// replay checks each recorded pick.
func replay(t *testing.T, l *lab, picks []kernelPick) {
	t.Helper()
	if len(picks) == 0 {
		t.Fatal("no picks recorded")
	}
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
}

// The SipHash round and the kernel's 4-byte hsiphash against published
// vectors (key bytes 00..0f, message bytes 00 01 02 03): SipHash-2-4 from
// the reference implementation, hsiphash (SipHash-1-3 truncated) from the
// kernel's self-test for 64-bit machines.
func TestSipHashVectors(t *testing.T) {
	const k0, k1, m = 0x0706050403020100, 0x0f0e0d0c0b0a0908, 0x03020100
	if got := hsiphash4(m, k0, k1); got != 0x88d38328 {
		t.Errorf("hsiphash = %#x, want 0x88d38328", got)
	}
	v0 := uint64(0x736f6d6570736575) ^ k0
	v1 := uint64(0x646f72616e646f6d) ^ k1
	v2 := uint64(0x6c7967656e657261) ^ k0
	v3 := uint64(0x7465646279746573) ^ k1
	b := uint64(4)<<56 | m
	v3 ^= b
	for range 2 {
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	}
	v0 ^= b
	v2 ^= 0xff
	for range 4 {
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	}
	if got := v0 ^ v1 ^ v2 ^ v3; got != 0xcf2794e0277187b7 {
		t.Errorf("SipHash-2-4 = %#x, want 0xcf2794e0277187b7", got)
	}
}

func TestKernelSequences(t *testing.T) {
	rec := kernelRecord(t, "testdata/kernel-6.1.out")
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
