package synflood

import (
	"context"
	"encoding/binary"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"uvs/lab"
	"uvs/testbed"
)

// natLab is the LVS-NAT lab's topology and a sender on the client's eth0
// addressed to the director's eth0, found in the client's neighbour table.
func natLab(t *testing.T) (*lab.NATNet, *Sender) {
	t.Helper()
	if err := testbed.Available(); err != nil {
		t.Skip(err)
	}
	n, err := lab.BuildNAT("uvssyn", 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Bed.Close() })
	var s *Sender
	err = n.Client.Do(func() error {
		mac, err := Neighbour("eth0", netip.MustParseAddr(lab.DirOuterIP), 3*time.Second)
		if err != nil {
			return err
		}
		if got := n.Director.MAC("eth0"); got.String() != mac.String() {
			t.Errorf("neighbour table says %v, the director's eth0 is %v", mac, got)
		}
		s, err = Open("eth0", mac)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return n, s
}

// sniffSYNs counts the TCP SYNs from sources in prefix to dst that
// arrive at h's eth0, until the returned function is called.
func sniffSYNs(t *testing.T, h *testbed.Host, prefix netip.Prefix, dst netip.AddrPort) func() int64 {
	t.Helper()
	var fd int
	err := h.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_IP)))
		if err != nil {
			return err
		}
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20)
		tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	var stop atomic.Bool
	done := make(chan struct{})
	d4 := dst.Addr().As4()
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for !stop.Load() {
			k, from, err := unix.Recvfrom(fd, buf, 0)
			if err != nil || k < 40 {
				continue
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			ip, tcp := buf[:20], buf[20:40]
			if ip[9] == unix.IPPROTO_TCP && [4]byte(ip[16:20]) == d4 &&
				prefix.Contains(netip.AddrFrom4([4]byte(ip[12:16]))) &&
				binary.BigEndian.Uint16(tcp[2:]) == dst.Port() && tcp[13] == 0x02 {
				n.Add(1)
			}
		}
	}()
	return func() int64 {
		stop.Store(true)
		<-done
		unix.Close(fd)
		return n.Load()
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// TestDirectorSeesFlood: a paced flood from the client reaches the
// director's eth0, every SYN of it, from the forged sources to the VIP.
func TestDirectorSeesFlood(t *testing.T) {
	n, s := natLab(t)
	c := config4()
	c.Count, c.Duration, c.Rate, c.Seed = 3000, 10*time.Second, 10000, 0
	stop := sniffSYNs(t, n.Director, c.Sources, c.Dst)
	r, err := s.Send(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	got := stop()
	t.Logf("sent %d (%d refused) in %v (%.0f/s); the director saw %d", r.Sent, r.Refused, r.Elapsed, r.Rate(), got)
	if r.Sent != c.Count || got != c.Count {
		t.Errorf("sent %d, the director saw %d, want %d", r.Sent, got, c.Count)
	}
	// 3000 at 10 000/s in batches of 32: about 0.3 s; never much less.
	if r.Elapsed < 250*time.Millisecond {
		t.Errorf("paced at 10 000/s, 3000 took %v", r.Elapsed)
	}
}

// TestFloodBounds: an unpaced flood stops at its count, or at its
// duration, whichever comes first, and allocates nothing per packet.
func TestFloodBounds(t *testing.T) {
	_, s := natLab(t)
	c := config4()
	c.Count, c.Duration, c.Batch = 100_000, 20*time.Second, 64
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	r, err := Flood(context.Background(), []*Sender{s}, c)
	runtime.ReadMemStats(&m1)
	if err != nil {
		t.Fatal(err)
	}
	allocs := m1.Mallocs - m0.Mallocs
	t.Logf("unpaced: sent %d (%d refused) in %v (%.0f/s), %d allocations", r.Sent, r.Refused, r.Elapsed, r.Rate(), allocs)
	if r.Sent+r.Refused != c.Count {
		t.Errorf("sent %d + refused %d, want %d", r.Sent, r.Refused, c.Count)
	}
	// The flood's setup allocates (the batch, the context, the timer), a
	// packet nothing; the runtime's own background work adds a few.
	if allocs > 200 {
		t.Errorf("%d allocations for %d packets", allocs, c.Count)
	}
	c.Count, c.Duration, c.Rate = 1_000_000, 300*time.Millisecond, 10000
	start := time.Now()
	r, err = Flood(context.Background(), []*Sender{s}, c)
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > time.Second || r.Sent > 5000 {
		t.Errorf("a 300 ms flood at 10 000/s took %v and sent %d", el, r.Sent)
	}
}
