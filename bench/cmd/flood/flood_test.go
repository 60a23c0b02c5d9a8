package main

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestRecovery(t *testing.T) {
	end := time.Unix(1000, 0)
	at := func(ms int, ok bool) attempt {
		a := attempt{start: end.Add(time.Duration(ms) * time.Millisecond)}
		if !ok {
			a.err = "timeout"
		}
		return a
	}
	var as []attempt
	as = append(as, at(-100, false)) // during the flood: not counted
	for i := range 10 {
		as = append(as, at(i*50, i%2 == 0)) // flaky: no run of 20
	}
	for i := range recoveryRun {
		as = append(as, at(1000+i*50, true))
	}
	d, ok := recovery(as, end, end.Add(time.Hour))
	if !ok || d != time.Second {
		t.Fatalf("recovery %v %v, want 1s", d, ok)
	}
	// The last of the run still in flight: not recovered yet.
	if _, ok := recovery(as, end, end.Add(1000*time.Millisecond+(recoveryRun-1)*50*time.Millisecond)); ok {
		t.Fatal("recovered before the run's last attempt was known")
	}
	// No failure after the flood: recovered at once.
	if d, ok := recovery(as[len(as)-recoveryRun:], end.Add(time.Second), end.Add(time.Hour)); !ok || d != 0 {
		t.Fatalf("recovery %v %v, want 0", d, ok)
	}
}

func TestConfigCheck(t *testing.T) {
	good := func() config {
		return config{paths: paths[:1], rate: 30000, duration: 30 * time.Second, count: 900000, senders: 1,
			keepalive: 20, kaInterval: 100 * time.Millisecond, kaTimeout: 5 * time.Second, newRate: 20,
			newTimeout: 2 * time.Second, pre: 5 * time.Second, after: 90 * time.Second,
			sources: netip.MustParsePrefix("198.19.0.0/16")}
	}
	c := good()
	if err := c.check(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		edit func(*config)
		want string
	}{
		{func(c *config) { c.duration = 61 * time.Second }, "-duration"},
		{func(c *config) { c.sources = netip.MustParsePrefix("198.18.0.0/16") }, "overlaps"},
		{func(c *config) { c.sources = netip.MustParsePrefix("198.18.1.128/25") }, "overlaps"},
		{func(c *config) { c.after = time.Second }, "-after"},
		{func(c *config) { c.paths = nil }, "no path"},
	} {
		c := good()
		tc.edit(&c)
		if err := c.check(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v, want %q", err, tc.want)
		}
	}
}

func TestErrKind(t *testing.T) {
	for e, want := range map[string]string{
		`Get "http://198.18.0.1/small.html": context deadline exceeded (Client.Timeout exceeded while awaiting headers)`: "timeout",
		"read tcp 198.18.0.2:1->198.18.0.1:80: read: connection reset by peer":                                           "reset",
		"dial tcp 198.18.0.1:80: connect: connection refused":                                                            "refused",
	} {
		if got := errKind(e); got != want {
			t.Errorf("errKind(%q) = %q, want %q", e, got, want)
		}
	}
}
