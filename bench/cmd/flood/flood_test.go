package main

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"uvs/bench/floodmeasure"
)

func TestConfigCheck(t *testing.T) {
	good := func() config {
		return config{paths: paths[:1], Config: floodmeasure.Config{Rate: 30000, Duration: 30 * time.Second, Count: 900000, Senders: 1,
			Keepalive: 20, KAInterval: 100 * time.Millisecond, KATimeout: 5 * time.Second, NewRate: 20,
			NewTimeout: 2 * time.Second, Pre: 5 * time.Second, After: 90 * time.Second, Wait10: true,
			Sources: netip.MustParsePrefix("198.19.0.0/16")}}
	}
	c := good()
	if err := c.check(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		edit func(*config)
		want string
	}{
		{func(c *config) { c.Duration = 61 * time.Second }, "-duration"},
		{func(c *config) { c.Sources = netip.MustParsePrefix("198.18.0.0/16") }, "overlaps"},
		{func(c *config) { c.Sources = netip.MustParsePrefix("198.18.1.128/25") }, "overlaps"},
		{func(c *config) { c.After = time.Second }, "-after"},
		{func(c *config) { c.paths = nil }, "no path"},
		{func(c *config) { c.capacity = -1 }, "-capacity"},
	} {
		c := good()
		tc.edit(&c)
		if err := c.check(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v, want %q", err, tc.want)
		}
	}
}
