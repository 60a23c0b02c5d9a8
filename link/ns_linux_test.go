package link

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// testNS is a network namespace created for one test and removed by its
// cleanup, pass or fail.
type testNS struct {
	name string
	h    netns.NsHandle
	nl   *netlink.Handle
}

func needRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root to create network namespaces")
	}
}

func newNS(tb testing.TB) *testNS { return newPrefixedNS(tb, "uvsln") }

// newPrefixedNS makes a namespace named prefix-<random>, removed at the
// end of the test, with lo up.
func newPrefixedNS(tb testing.TB, prefix string) *testNS {
	tb.Helper()
	var suffix [4]byte
	rand.Read(suffix[:])
	name := prefix + "-" + hex.EncodeToString(suffix[:])

	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		tb.Fatalf("get netns: %v", err)
	}
	h, err := netns.NewNamed(name) // also moves this thread into it
	if rerr := netns.Set(orig); rerr != nil {
		tb.Fatalf("restore netns: %v", rerr) // thread stays locked and dies
	}
	orig.Close()
	runtime.UnlockOSThread()
	if err != nil {
		tb.Fatalf("create netns %s: %v", name, err)
	}
	ns := &testNS{name: name, h: h}
	tb.Cleanup(func() {
		if ns.nl != nil {
			ns.nl.Close()
		}
		h.Close()
		if err := netns.DeleteNamed(name); err != nil {
			tb.Errorf("delete netns %s: %v", name, err)
		}
	})
	if ns.nl, err = netlink.NewHandleAt(h); err != nil {
		tb.Fatalf("netlink handle in %s: %v", name, err)
	}
	lo, err := ns.nl.LinkByName("lo")
	if err == nil {
		err = ns.nl.LinkSetUp(lo)
	}
	if err != nil {
		tb.Fatalf("lo up in %s: %v", name, err)
	}
	return ns
}

// do runs fn on a thread inside the namespace: sockets and devices opened
// there belong to it.
func (ns *testNS) do(tb testing.TB, fn func() error) {
	tb.Helper()
	if err := inNetns(ns.h, fn); err != nil {
		tb.Fatalf("in %s: %v", ns.name, err)
	}
}

// veth joins a and b with a veth pair (ifA in a, ifB in b), both up.
func veth(tb testing.TB, a *testNS, ifA string, b *testNS, ifB string) {
	tb.Helper()
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: ifA},
		PeerName:      ifB,
		PeerNamespace: netlink.NsFd(int(b.h)),
	}
	if err := a.nl.LinkAdd(v); err != nil {
		tb.Fatalf("add veth %s-%s: %v", ifA, ifB, err)
	}
	a.up(tb, ifA)
	b.up(tb, ifB)
}

func (ns *testNS) up(tb testing.TB, ifname string) {
	tb.Helper()
	l, err := ns.nl.LinkByName(ifname)
	if err == nil {
		err = ns.nl.LinkSetUp(l)
	}
	if err != nil {
		tb.Fatalf("%s up in %s: %v", ifname, ns.name, err)
	}
}

func (ns *testNS) addr(tb testing.TB, ifname, cidr string) {
	tb.Helper()
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		tb.Fatal(err)
	}
	l, err := ns.nl.LinkByName(ifname)
	if err == nil {
		err = ns.nl.AddrAdd(l, a)
	}
	if err != nil {
		tb.Fatalf("add %s to %s in %s: %v", cidr, ifname, ns.name, err)
	}
}

// neigh adds a permanent neighbour entry so that tests do not wait on ARP.
func (ns *testNS) neigh(tb testing.TB, ifname string, ip net.IP, mac [6]byte) {
	tb.Helper()
	l, err := ns.nl.LinkByName(ifname)
	if err == nil {
		err = ns.nl.NeighAdd(&netlink.Neigh{
			LinkIndex: l.Attrs().Index, State: netlink.NUD_PERMANENT,
			IP: ip, HardwareAddr: net.HardwareAddr(mac[:]),
		})
	}
	if err != nil {
		tb.Fatalf("neigh %s on %s in %s: %v", ip, ifname, ns.name, err)
	}
}

func openAF(tb testing.TB, ns *testNS, ifname string, cfg *AFPacketConfig) *AFPacket {
	tb.Helper()
	var d *AFPacket
	ns.do(tb, func() (err error) {
		d, err = OpenAFPacket(ifname, cfg)
		return err
	})
	tb.Cleanup(func() { d.Close() })
	return d
}

// frameBufs makes n buffers big enough for a 64 KiB GSO frame after headroom.
func frameBufs(n, headroom int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, headroom+VnetHdrLen+65535)
	}
	return bufs, make([]int, n)
}

// bridge forwards frames unchanged, vnet header included, between two
// devices in both directions until they are closed: the smallest userspace
// forwarder there is.
type bridge struct {
	wg            sync.WaitGroup
	reads, frames atomic.Uint64
	gso           atomic.Uint64 // frames that were GSO super-packets
	maxFrame      atomic.Int64
	writeDrops    atomic.Uint64
	devA, devB    Device

	mu       sync.Mutex
	writeErr error // the first
}

const headroom = 64

func startBridge(a, b Device) *bridge {
	br := &bridge{devA: a, devB: b}
	br.wg.Add(2)
	go br.loop(a, b)
	go br.loop(b, a)
	return br
}

func (br *bridge) loop(src, dst Device) {
	defer br.wg.Done()
	bufs, sizes := frameBufs(src.BatchSize(), headroom)
	out := make([][]byte, len(bufs))
	var h VnetHdr
	for {
		n, err := src.Read(bufs, sizes, headroom)
		if err != nil {
			return
		}
		br.reads.Add(1)
		br.frames.Add(uint64(n))
		for i := 0; i < n; i++ {
			out[i] = bufs[i][:headroom+sizes[i]]
			h.Decode(bufs[i][headroom:])
			if h.GSOType != GSONone {
				br.gso.Add(1)
			}
			for m := br.maxFrame.Load(); int64(sizes[i]) > m && !br.maxFrame.CompareAndSwap(m, int64(sizes[i])); m = br.maxFrame.Load() {
			}
		}
		if w, err := dst.Write(out[:n], headroom); err != nil {
			br.writeDrops.Add(uint64(n - w))
			br.mu.Lock()
			if br.writeErr == nil {
				br.writeErr = err
			}
			br.mu.Unlock()
		}
	}
}

func (br *bridge) stop() {
	br.devA.Close()
	br.devB.Close()
	br.wg.Wait()
}
