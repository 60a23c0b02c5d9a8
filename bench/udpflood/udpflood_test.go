package udpflood

import (
	"context"
	"net"
	"testing"
	"time"

	"uvs/testbed"
)

// host is a namespace of the test's own with 198.18.254.1 on its loopback:
// the floods stay inside it, on the benchmarking range.
func host(tb testing.TB) *testbed.Host {
	tb.Helper()
	if err := testbed.Available(); err != nil {
		tb.Skip(err)
	}
	bed, err := testbed.New("uvsflood")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { bed.Close() })
	h, err := bed.Host("h")
	if err != nil {
		tb.Fatal(err)
	}
	if err := h.Addr("lo", "198.18.254.1/32"); err != nil {
		tb.Fatal(err)
	}
	return h
}

func sink(t *testing.T) (*Sink, *net.UDPAddr, *testbed.Host) {
	t.Helper()
	h := host(t)
	pc, err := h.ListenPacket("udp", "198.18.254.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := pc.(*net.UDPConn)
	s, err := NewSink(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, c.LocalAddr().(*net.UDPAddr), h
}

func flows(t *testing.T, h *testbed.Host, to *net.UDPAddr, n int) []*net.UDPConn {
	t.Helper()
	var cs []*net.UDPConn
	for range n {
		c, err := h.Dial(context.Background(), "udp", to.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cs = append(cs, c.(*net.UDPConn))
	}
	return cs
}

// waitFor polls until cond holds or a second has passed.
func waitFor(cond func() bool) {
	for deadline := time.Now().Add(time.Second); !cond() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSendCount(t *testing.T) {
	s, addr, h := sink(t)
	r, err := Send(context.Background(), flows(t, h, addr, 3), Config{Size: 64, Count: 1001, Duration: 5 * time.Second, Batch: 8})
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent != 1001 {
		t.Errorf("sent %d, want exactly the count 1001", r.Sent)
	}
	waitFor(func() bool { return s.Received() == r.Sent })
	// Loopback may drop under a flood, but never invents datagrams.
	if got := s.Received(); got <= 0 || got > r.Sent {
		t.Errorf("received %d of %d", got, r.Sent)
	}
	if s.Others() != 0 {
		t.Errorf("%d datagrams without the marker", s.Others())
	}
}

func TestSendStopsAtDuration(t *testing.T) {
	_, addr, h := sink(t)
	start := time.Now()
	r, err := Send(context.Background(), flows(t, h, addr, 2), Config{Size: 64, Count: 1 << 40, Duration: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("a 100ms flood took %v", took)
	}
	if r.Sent <= 0 || r.Sent >= 1<<40 {
		t.Errorf("sent %d", r.Sent)
	}
}

func TestSinkIgnoresStrangers(t *testing.T) {
	s, addr, h := sink(t)
	c := flows(t, h, addr, 1)[0]
	for _, p := range []string{"hello", "uvsbench", "uvsbenchXXXXXXXX"} {
		if _, err := c.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(func() bool { return s.Received()+s.Others() == 3 })
	// Only the last has the marker and a sequence number.
	if s.Received() != 1 || s.Others() != 2 {
		t.Errorf("received %d, others %d; want 1 and 2", s.Received(), s.Others())
	}
}

func TestSendRejects(t *testing.T) {
	_, addr, h := sink(t)
	cs := flows(t, h, addr, 1)
	for _, c := range []Config{
		{Size: 8, Count: 1, Duration: time.Second},
		{Size: 70000, Count: 1, Duration: time.Second},
		{Size: 64, Count: 0, Duration: time.Second},
		{Size: 64, Count: 1, Duration: 0},
	} {
		if _, err := Send(context.Background(), cs, c); err == nil {
			t.Errorf("Send with %+v: no error", c)
		}
	}
	if _, err := Send(context.Background(), nil, Config{Size: 64, Count: 1, Duration: time.Second}); err == nil {
		t.Error("Send without sockets: no error")
	}
}

func BenchmarkSend(b *testing.B) {
	h := host(b)
	pc, err := h.ListenPacket("udp", "198.18.254.1:0")
	if err != nil {
		b.Fatal(err)
	}
	c := pc.(*net.UDPConn)
	s, _ := NewSink(c)
	defer s.Close()
	dc, err := h.Dial(context.Background(), "udp", c.LocalAddr().String())
	if err != nil {
		b.Fatal(err)
	}
	d := dc.(*net.UDPConn)
	defer d.Close()
	b.ReportAllocs()
	b.ResetTimer()
	r, err := Send(context.Background(), []*net.UDPConn{d}, Config{Size: 64, Count: int64(b.N), Duration: time.Minute})
	if err != nil || r.Sent != int64(b.N) {
		b.Fatalf("sent %d of %d: %v", r.Sent, b.N, err)
	}
}

// A paced flood keeps to its schedule: 400 datagrams at 4000/s over two
// sockets cannot be done before the last batch is due, 100 ms less one
// gap (unpaced, they leave within a few milliseconds).
func TestSendPaced(t *testing.T) {
	s, addr, h := sink(t)
	r, err := Send(context.Background(), flows(t, h, addr, 2), Config{Size: 64, Count: 400, Duration: 5 * time.Second, Batch: 8, Rate: 4000})
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent != 400 {
		t.Fatalf("sent %d, want 400", r.Sent)
	}
	// Each socket sends 25 batches of 8, 4 ms apart: the last leaves at 96 ms.
	if r.Elapsed < 90*time.Millisecond {
		t.Errorf("400 datagrams at 4000/s took %v, want at least 96ms", r.Elapsed)
	}
	waitFor(func() bool { return s.Received() == r.Sent })
	if _, err := Send(context.Background(), flows(t, h, addr, 1), Config{Size: 64, Count: 1, Duration: time.Second, Rate: -1}); err == nil {
		t.Error("negative rate: no error")
	}
}
