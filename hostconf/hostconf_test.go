package hostconf

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"uvs/testbed"
)

// newHost gives a fresh namespace with an interface "d0" (a bridge: the dummy module may be missing), removed at
// the end of the test.
func newHost(t *testing.T) *testbed.Host {
	t.Helper()
	if err := testbed.Available(); err != nil {
		t.Skip(err)
	}
	bed, err := testbed.New("hc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bed.Close() })
	h, err := bed.Host("h")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Do(func() error {
		return netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "d0"}})
	}); err != nil {
		t.Fatal(err)
	}
	return h
}

// hostState is what the tests compare: a few sysctls and the addresses of
// lo and d0.
func hostState(t *testing.T, h *testbed.Host) string {
	t.Helper()
	var b strings.Builder
	err := h.Do(func() error {
		for _, k := range []string{"net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.lo.arp_announce", "net/ipv4/conf/d0/rp_filter", "net.ipv4.ip_local_port_range"} {
			v, err := ReadSysctl(k)
			if err != nil {
				return err
			}
			b.WriteString(k + "=" + v + "\n")
		}
		for _, name := range []string{"lo", "d0"} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
			if err != nil {
				return err
			}
			var as []string
			for _, a := range addrs {
				as = append(as, a.IPNet.String())
			}
			slices.Sort(as)
			b.WriteString(name + ": " + strings.Join(as, ",") + "\n")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

var (
	vip4 = netip.MustParsePrefix("198.18.0.100/32")
	vip6 = netip.MustParsePrefix("2001:2::100/128")
	net4 = netip.MustParsePrefix("198.18.3.1/24")
)

// apply makes the test's set of changes.
func apply(c *Changes) error {
	for _, kv := range [][2]string{
		{"net.ipv4.conf.all.arp_ignore", "1"},
		{"net.ipv4.conf.lo.arp_announce", "2"},
		{"net/ipv4/conf/d0/rp_filter", "2"},
		{"net.ipv4.conf.all.arp_ignore", "2"}, // twice: Undo restores the first old value
		{"net.ipv4.ip_local_port_range", "40000 50000"},
	} {
		if err := c.Sysctl(kv[0], kv[1]); err != nil {
			return err
		}
	}
	for _, a := range []struct {
		ifname string
		p      netip.Prefix
	}{{"lo", vip4}, {"lo", vip6}, {"d0", net4}, {"lo", vip4}} {
		if err := c.AddAddr(a.ifname, a.p); err != nil {
			return err
		}
	}
	return nil
}

func TestChangesUndo(t *testing.T) {
	h := newHost(t)
	before := hostState(t, h)
	var c Changes
	if err := h.Do(func() error { return apply(&c) }); err != nil {
		t.Fatal(err)
	}
	during := hostState(t, h)
	for _, want := range []string{"all.arp_ignore=2\n", "lo.arp_announce=2\n", "d0/rp_filter=2\n", "port_range=40000\t50000\n",
		"198.18.0.100/32", "2001:2::100/128", "d0: 198.18.3.1/24"} {
		if !strings.Contains(during, want) {
			t.Errorf("after the changes, want %q in\n%s", want, during)
		}
	}
	if got := c.Added(); len(got) != 3 {
		t.Errorf("Added() = %v, want 3 addresses (the repeated one once)", got)
	}
	if err := h.Do(c.Undo); err != nil {
		t.Fatal(err)
	}
	if after := hostState(t, h); after != before {
		t.Errorf("Undo left\n%s\nwant\n%s", after, before)
	}
	if err := h.Do(c.Undo); err != nil {
		t.Errorf("second Undo: %v", err)
	}
}

// A change that was there already is not recorded, so Undo keeps it.
func TestChangesKeepsWhatWasThere(t *testing.T) {
	h := newHost(t)
	if err := h.Sysctl("net.ipv4.conf.all.arp_ignore", "1"); err != nil {
		t.Fatal(err)
	}
	if err := h.Addr("lo", vip4.String()); err != nil {
		t.Fatal(err)
	}
	before := hostState(t, h)
	var c Changes
	err := h.Do(func() error {
		if err := c.Sysctl("net.ipv4.conf.all.arp_ignore", "1"); err != nil {
			return err
		}
		if err := c.AddAddr("lo", vip4); err != nil {
			return err
		}
		return c.Undo()
	})
	if err != nil {
		t.Fatal(err)
	}
	if after := hostState(t, h); after != before {
		t.Errorf("Undo changed what it did not make:\n%s\nwant\n%s", after, before)
	}
}

func TestChangesErrors(t *testing.T) {
	h := newHost(t)
	var c Changes
	err := h.Do(func() error {
		for _, k := range []string{"net/../../etc/passwd", "/net/ipv4/ip_forward", "net.ipv4.no_such_thing", ""} {
			if err := c.Sysctl(k, "1"); err == nil {
				t.Errorf("Sysctl(%q) did not fail", k)
			}
		}
		if err := c.AddAddr("nosuch0", vip4); err == nil {
			t.Error("AddAddr on a missing interface did not fail")
		}
		if err := c.AddAddr("lo", netip.Prefix{}); err == nil {
			t.Error("AddAddr of an invalid prefix did not fail")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.list) != 0 {
		t.Errorf("failed changes were recorded: %v", c.list)
	}
}

// DelAddr removes an address it added and forgets it; one it did not add
// stays.
func TestChangesDelAddr(t *testing.T) {
	h := newHost(t)
	if err := h.Addr("d0", net4.String()); err != nil {
		t.Fatal(err)
	}
	before := hostState(t, h)
	state := filepath.Join(t.TempDir(), "state")
	err := h.Do(func() error {
		c, err := Open(state)
		if err != nil {
			return err
		}
		if err := c.AddAddr("lo", vip4); err != nil {
			return err
		}
		if err := c.DelAddr("d0", net4); err != nil {
			return err
		}
		if err := c.DelAddr("lo", vip4); err != nil {
			return err
		}
		if len(c.Added()) != 0 {
			t.Errorf("Added() after DelAddr = %v", c.Added())
		}
		return c.Close() // as if killed: the file lists nothing in force
	})
	if err != nil {
		t.Fatal(err)
	}
	if after := hostState(t, h); after != before {
		t.Errorf("after DelAddr\n%s\nwant\n%s", after, before)
	}
	b, _ := os.ReadFile(state)
	list, _, err := parse(b)
	if err != nil || len(list) != 0 {
		t.Errorf("state file lists %v (%v), want nothing:\n%s", list, err, b)
	}
}

// A holder killed before Undo leaves the state file; the next Open undoes
// what it lists, and a clean Undo removes it.
func TestOpenUndoesLeftChanges(t *testing.T) {
	h := newHost(t)
	before := hostState(t, h)
	state := filepath.Join(t.TempDir(), "sub", "state")
	err := h.Do(func() error {
		c, err := Open(state)
		if err != nil {
			return err
		}
		if err := apply(c); err != nil {
			return err
		}
		if _, err := Open(state); err == nil || !strings.Contains(err.Error(), "another running process") {
			t.Errorf("second Open while held: err = %v", err)
		}
		return c.Close() // killed: the lock goes, the file stays
	})
	if err != nil {
		t.Fatal(err)
	}
	if hostState(t, h) == before {
		t.Fatal("changes did not happen")
	}
	b, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("state file left:\n%s", b)
	err = h.Do(func() error {
		c, err := Open(state)
		if err != nil {
			return err
		}
		if after := hostState(t, h); after != before {
			t.Errorf("Open did not undo the left changes:\n%s\nwant\n%s", after, before)
		}
		if err := c.Sysctl("net.ipv4.conf.all.arp_ignore", "1"); err != nil {
			return err
		}
		return c.Undo()
	})
	if err != nil {
		t.Fatal(err)
	}
	if after := hostState(t, h); after != before {
		t.Errorf("after Undo\n%s\nwant\n%s", after, before)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("state file still there after Undo: %v", err)
	}
}

// A state file from another namespace is refused, not applied here.
func TestOpenOtherNamespace(t *testing.T) {
	h := newHost(t)
	h2 := newHost(t)
	state := filepath.Join(t.TempDir(), "state")
	if err := h.Do(func() error {
		c, err := Open(state)
		if err != nil {
			return err
		}
		if err := c.Sysctl("net.ipv4.conf.all.arp_ignore", "1"); err != nil {
			return err
		}
		return c.Close()
	}); err != nil {
		t.Fatal(err)
	}
	err := h2.Do(func() error {
		_, err := Open(state)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "network namespace") {
		t.Errorf("Open in another namespace: err = %v", err)
	}
}

func TestParse(t *testing.T) {
	b := []byte(header + "42\n" +
		"sysctl net/ipv4/conf/all/arp_ignore \"0\"\n" +
		"addr lo 198.18.0.100/32\n" +
		"addr lo 2001:2::100/128\n" +
		"undone addr lo 198.18.0.100/32\n" +
		"sysctl net/ipv4/ip_local_port_range \"32768\\t60999\"\n" +
		"addr d0 198.18.") // cut short
	list, ns, err := parse(b)
	if err != nil {
		t.Fatal(err)
	}
	want := []change{
		{kind: kindSysctl, key: "net/ipv4/conf/all/arp_ignore", old: "0"},
		{kind: kindAddr, ifname: "lo", prefix: vip6},
		{kind: kindSysctl, key: "net/ipv4/ip_local_port_range", old: "32768\t60999"},
	}
	if ns != "42" || !slices.Equal(list, want) {
		t.Errorf("parse = %v, %q; want %v, \"42\"", list, ns, want)
	}
	for _, bad := range []string{"", "hello\n", header + "1\nsysctl ../x \"1\"\n", header + "1\naddr lo nonsense\n", header + "1\nsysctl a/b 1\n"} {
		if _, _, err := parse([]byte(bad)); err == nil {
			t.Errorf("parse(%q) did not fail", bad)
		}
	}
}

// FuzzParse: parse never panics, and what it accepts prints back to lines
// it accepts the same way.
func FuzzParse(f *testing.F) {
	f.Add([]byte(header + "1\nsysctl net/ipv4/ip_forward \"0\"\naddr lo 198.18.0.100/32\nundone addr lo 198.18.0.100/32\n"))
	f.Add([]byte(header + "1\naddr eth0 2001:2::1/64\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		list, ns, err := parse(b)
		if err != nil {
			return
		}
		var out strings.Builder
		out.WriteString(header + ns + "\n")
		for _, ch := range list {
			out.WriteString(ch.String() + "\n")
		}
		list2, ns2, err := parse([]byte(out.String()))
		if err != nil || ns2 != ns || !slices.Equal(list, list2) {
			t.Fatalf("round trip: %v %q %v, want %v %q", list2, ns2, err, list, ns)
		}
	})
}
