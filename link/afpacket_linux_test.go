package link

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"
)

var (
	ipX = net.IPv4(198, 18, 0, 1)
	ipY = net.IPv4(198, 18, 0, 2)
)

// pair is two namespaces x and y joined by veth x0-y0, with 198.18.0.1/24
// on x0 and 198.18.0.2/24 on y0.
func pair(tb testing.TB) (x, y *testNS) { return pairIn(tb, "uvsln") }

// pairIn is pair with namespaces named prefix-<random>.
func pairIn(tb testing.TB, prefix string) (x, y *testNS) {
	x, y = newPrefixedNS(tb, prefix), newPrefixedNS(tb, prefix)
	veth(tb, x, "x0", y, "y0")
	x.addr(tb, "x0", "198.18.0.1/24")
	y.addr(tb, "y0", "198.18.0.2/24")
	return x, y
}

func macOf(tb testing.TB, ns *testNS, ifname string) [6]byte {
	tb.Helper()
	l, err := ns.nl.LinkByName(ifname)
	if err != nil {
		tb.Fatal(err)
	}
	var m [6]byte
	copy(m[:], l.Attrs().HardwareAddr)
	return m
}

func TestAFPacketInfo(t *testing.T) {
	needRoot(t)
	x, y := pair(t)
	_ = y
	d := openAF(t, x, "x0", nil)
	l, err := x.nl.LinkByName("x0")
	if err != nil {
		t.Fatal(err)
	}
	mac := d.MAC()
	if !d.Ethernet() || !d.VnetHdr() || d.Name() != "x0" || d.Index() != l.Attrs().Index ||
		d.MTU() != l.Attrs().MTU || !bytes.Equal(mac[:], l.Attrs().HardwareAddr) {
		t.Errorf("info = eth %v vnet %v %s #%d mtu %d mac %x; link is #%d mtu %d mac %s",
			d.Ethernet(), d.VnetHdr(), d.Name(), d.Index(), d.MTU(), d.MAC(),
			l.Attrs().Index, l.Attrs().MTU, l.Attrs().HardwareAddr)
	}
	if _, err := OpenAFPacket("uvsln-nosuch", nil); err == nil {
		t.Error("OpenAFPacket on a missing interface succeeded")
	}
}

func TestAFPacketWriteReachesPlainSocket(t *testing.T) {
	needRoot(t)
	for _, vnet := range []bool{true, false} {
		t.Run(fmt.Sprintf("vnet=%v", vnet), func(t *testing.T) {
			x, y := pair(t)
			d := openAF(t, x, "x0", &AFPacketConfig{NoVnetHdr: !vnet})
			if d.VnetHdr() != vnet {
				t.Fatalf("VnetHdr() = %v", d.VnetHdr())
			}
			const etherType = 0x88b5 // IEEE local experimental
			var fd int
			y.do(t, func() (err error) {
				fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(etherType)))
				if err != nil {
					return err
				}
				l, err := y.nl.LinkByName("y0")
				if err != nil {
					return err
				}
				return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(etherType), Ifindex: l.Attrs().Index})
			})
			defer unix.Close(fd)
			tv := unix.NsecToTimeval(int64(5 * time.Second))
			if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
				t.Fatal(err)
			}

			dstMAC, srcMAC := macOf(t, y, "y0"), d.MAC()
			frame := make([]byte, 14+300)
			copy(frame, dstMAC[:])
			copy(frame[6:], srcMAC[:])
			binary.BigEndian.PutUint16(frame[12:], etherType)
			rand.Read(frame[14:])
			const off = 37 // odd headroom on purpose
			hdr := 0
			if vnet {
				hdr = VnetHdrLen
			}
			buf := make([]byte, off+hdr+len(frame))
			copy(buf[off+hdr:], frame) // zero vnet header: no GSO, checksum complete
			n, err := d.Write([][]byte{buf}, off)
			if n != 1 || err != nil {
				t.Fatalf("Write = %d, %v", n, err)
			}
			got := make([]byte, 2048)
			m, _, err := unix.Recvfrom(fd, got, 0)
			if err != nil {
				t.Fatalf("plain socket got nothing: %v", err)
			}
			if !bytes.Equal(got[:m], frame) {
				t.Errorf("received frame differs:\n got %x\nwant %x", got[:m], frame)
			}
		})
	}
}

// udpOf decodes an Ethernet frame (after skip bytes of vnet header) as
// IPv4/UDP.
func udpOf(frame []byte) (*layers.IPv4, *layers.UDP) {
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.NoCopy)
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	udp, _ := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	return ip, udp
}

// dialUDP opens a UDP socket in ns connected to dst.
func dialUDP(tb testing.TB, ns *testNS, src, dst *net.UDPAddr) *net.UDPConn {
	tb.Helper()
	var c *net.UDPConn
	ns.do(tb, func() (err error) {
		c, err = net.DialUDP("udp4", src, dst)
		return err
	})
	tb.Cleanup(func() { c.Close() })
	return c
}

func TestAFPacketReadsUDPAndNotOwnOutput(t *testing.T) {
	needRoot(t)
	x, y := pair(t)
	testReadsUDP(t, x, y, nil)
}

// testReadsUDP opens y0 in y with cfg and sends datagrams from x to
// ipY:9999 until the reader has seen one (ARP may eat the first). The
// reader fails on a frame y0 sent itself and on the datagram's address or
// payload being wrong. It returns the datagram's frame, vnet header first.
// The reading runs on a goroutine of its own: a blocking reader locks it
// to its thread.
func testReadsUDP(t *testing.T, x, y *testNS, cfg *AFPacketConfig) []byte {
	t.Helper()
	return testReadsDatagram(t, x, y, cfg, []byte("uvs link test datagram"))
}

// testReadsDatagram is testReadsUDP with the given payload.
func testReadsDatagram(t *testing.T, x, y *testNS, cfg *AFPacketConfig, payload []byte) []byte {
	t.Helper()
	d := openAF(t, y, "y0", cfg)
	c := dialUDP(t, x, nil, &net.UDPAddr{IP: ipY, Port: 9999})
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; i < 200; i++ {
			c.Write(payload)
			select {
			case <-stop:
				return
			case <-time.After(25 * time.Millisecond):
			}
		}
	}()
	timer := time.AfterFunc(5*time.Second, func() { d.Close() })
	defer timer.Stop()
	type result struct {
		frame []byte
		err   error
	}
	done := make(chan result, 1)
	go func() {
		f, err := readUntilDatagram(d, payload)
		done <- result{f, err}
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.frame
}

// readUntilDatagram reads d until the UDP datagram to ipY:9999 carrying
// payload arrives and returns its frame; it fails on a frame d itself sent.
func readUntilDatagram(d *AFPacket, payload []byte) ([]byte, error) {
	bufs, sizes := frameBufs(d.BatchSize(), headroom)
	own := d.MAC()
	for {
		n, err := d.Read(bufs, sizes, headroom)
		if err != nil {
			return nil, fmt.Errorf("Read before the datagram arrived: %w", err)
		}
		if n < 1 || n > d.BatchSize() {
			return nil, fmt.Errorf("Read returned %d frames", n)
		}
		for i := 0; i < n; i++ {
			f := bufs[i][headroom : headroom+sizes[i]]
			if bytes.Equal(f[VnetHdrLen+6:VnetHdrLen+12], own[:]) {
				return nil, fmt.Errorf("read a frame y0 itself sent (ARP reply?): %x", f)
			}
			ip, udp := udpOf(f[VnetHdrLen:])
			if ip != nil && udp != nil && udp.DstPort == 9999 {
				if !ip.DstIP.Equal(ipY) || !bytes.Equal(udp.Payload, payload) {
					return nil, fmt.Errorf("datagram to %s payload %q", ip.DstIP, udp.Payload)
				}
				return f, nil
			}
		}
	}
}

// With Defrag a datagram the sender fragmented (4000 bytes over a
// 1500-byte link) is read as one frame, whole; without it, as fragments,
// which the test would not find.
func TestAFPacketDefragReassembles(t *testing.T) {
	needRoot(t)
	x, y := pair(t)
	payload := bytes.Repeat([]byte("fragmented datagram "), 200)
	f := testReadsDatagram(t, x, y, &AFPacketConfig{Defrag: true}, payload)
	ip, _ := udpOf(f[VnetHdrLen:])
	if ip.Flags&layers.IPv4MoreFragments != 0 || ip.FragOffset != 0 || int(ip.Length) != 20+8+len(payload) {
		t.Errorf("reassembled datagram: flags %v, offset %d, length %d", ip.Flags, ip.FragOffset, ip.Length)
	}
}

func TestAFPacketCloseUnblocksRead(t *testing.T) {
	needRoot(t)
	x, _ := pair(t)
	d := openAF(t, x, "x0", nil)
	testCloseUnblocks(t, d)
}

func testCloseUnblocks(t *testing.T, d Device) {
	t.Helper()
	bufs, sizes := frameBufs(4, 0)
	done := make(chan error, 1)
	go func() {
		for { // frames may arrive (IPv6 noise); wait for the error
			if _, err := d.Read(bufs, sizes, 0); err != nil {
				done <- err
				return
			}
		}
	}()
	time.Sleep(100 * time.Millisecond)
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Read after Close: %v, want os.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Read still blocked 2s after Close")
	}
}

func TestAFPacketFanoutKeepsFlowsTogether(t *testing.T) {
	needRoot(t)
	x, y := pair(t)
	x.neigh(t, "x0", ipY, macOf(t, y, "y0"))
	q0 := openAF(t, y, "y0", nil)
	q1, err := q0.OpenQueue()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q1.Close() })
	testFanout(t, x, q0, q1)
}

// testFanout sends 32 UDP flows of 10 datagrams from x to ipY and requires
// each flow to reach exactly one of q0 and q1, and both queues to get some.
func testFanout(t *testing.T, x *testNS, q0, q1 *AFPacket) {
	const flows, perFlow = 32, 10
	type seen struct{ queue, count int }
	var mu sync.Mutex
	got := map[int]*seen{} // by source port
	total := 0
	all := make(chan struct{})
	var wg sync.WaitGroup
	for qi, q := range []*AFPacket{q0, q1} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bufs, sizes := frameBufs(q.BatchSize(), 0)
			for {
				n, err := q.Read(bufs, sizes, 0)
				if err != nil {
					return
				}
				for i := 0; i < n; i++ {
					_, udp := udpOf(bufs[i][VnetHdrLen:sizes[i]])
					if udp == nil || udp.DstPort != 9999 {
						continue
					}
					mu.Lock()
					s := got[int(udp.SrcPort)]
					if s == nil {
						s = &seen{queue: qi}
						got[int(udp.SrcPort)] = s
					}
					if s.queue != qi {
						s.queue = -1
					}
					s.count++
					total++
					if total == flows*perFlow {
						close(all)
					}
					mu.Unlock()
				}
			}
		}()
	}
	dst := &net.UDPAddr{IP: ipY, Port: 9999}
	for f := 0; f < flows; f++ {
		var c *net.UDPConn
		x.do(t, func() (err error) {
			c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: ipX})
			return err
		})
		defer c.Close()
		for i := 0; i < perFlow; i++ {
			if _, err := c.WriteToUDP([]byte{byte(f), byte(i)}, dst); err != nil {
				t.Fatal(err)
			}
		}
	}
	select {
	case <-all:
	case <-time.After(5 * time.Second):
	}
	q0.Close()
	q1.Close()
	wg.Wait()

	perQueue := [2]int{}
	for port, s := range got {
		if s.queue < 0 {
			t.Errorf("flow from port %d was split across queues", port)
			continue
		}
		if s.count != perFlow {
			t.Errorf("flow from port %d: %d datagrams, want %d", port, s.count, perFlow)
		}
		perQueue[s.queue]++
	}
	if len(got) != flows {
		t.Errorf("saw %d flows, want %d", len(got), flows)
	}
	// 32 flows all hashing to one queue has odds of 2^-31.
	if perQueue[0] == 0 || perQueue[1] == 0 {
		t.Errorf("flows per queue = %v: fanout did not spread them", perQueue)
	}
}

// relay builds client ns a — bridge ns b — server ns c: veth a0-b0 and
// b1-c0, 198.18.0.1 on a0 and 198.18.0.2 on c0, one L2 segment through b,
// where two AF_PACKET devices forward frames unchanged.
func relay(tb testing.TB) (a, c *testNS, br *bridge) { return relayWith(tb, "uvsln", nil) }

// relayWith is relay with namespaces named prefix-<random> and the
// bridge's devices opened with cfg.
func relayWith(tb testing.TB, prefix string, cfg *AFPacketConfig) (a, c *testNS, br *bridge) {
	n := func() *testNS { return newPrefixedNS(tb, prefix) }
	a, b, c := n(), n(), n()
	veth(tb, a, "a0", b, "b0")
	veth(tb, b, "b1", c, "c0")
	a.addr(tb, "a0", "198.18.0.1/24")
	c.addr(tb, "c0", "198.18.0.2/24")
	a.neigh(tb, "a0", ipY, macOf(tb, c, "c0"))
	c.neigh(tb, "c0", ipX, macOf(tb, a, "a0"))
	// Opened without openAF's cleanup: the bridge closes them.
	var d0, d1 *AFPacket
	b.do(tb, func() (err error) {
		if d0, err = OpenAFPacket("b0", cfg); err != nil {
			return err
		}
		if d1, err = OpenAFPacket("b1", cfg); err != nil {
			d0.Close()
		}
		return err
	})
	br = startBridge(d0, d1)
	tb.Cleanup(br.stop)
	return a, c, br
}

// tcpPair connects a client in a to a server in c through the relay.
func tcpPair(tb testing.TB, a, c *testNS) (client, server *net.TCPConn) {
	tb.Helper()
	var ln *net.TCPListener
	c.do(tb, func() (err error) {
		ln, err = net.ListenTCP("tcp4", &net.TCPAddr{IP: ipY})
		return err
	})
	defer ln.Close()
	ln.SetDeadline(time.Now().Add(10 * time.Second))
	accepted := make(chan *net.TCPConn, 1)
	go func() {
		s, err := ln.AcceptTCP()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- s
	}()
	a.do(tb, func() error {
		d := net.Dialer{Timeout: 10 * time.Second}
		conn, err := d.Dial("tcp4", ln.Addr().String())
		if err == nil {
			client = conn.(*net.TCPConn)
		}
		return err
	})
	server = <-accepted
	if server == nil {
		client.Close()
		tb.Fatal("accept failed")
	}
	tb.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestAFPacketBridgeBulkTCP(t *testing.T) {
	needRoot(t)
	a, c, br := relay(t)
	testBridgeBulk(t, a, c, br)
}

// testBridgeBulk sends 8 MiB over TCP from a to c through the bridge and
// requires it intact, with GSO frames crossing and nothing dropped.
func testBridgeBulk(t *testing.T, a, c *testNS, br *bridge) {
	client, server := tcpPair(t, a, c)
	deadline := time.Now().Add(30 * time.Second)
	client.SetDeadline(deadline)
	server.SetDeadline(deadline)

	data := make([]byte, 8<<20)
	rand.Read(data)
	want := sha256.Sum256(data)
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	res := make(chan result, 1)
	go func() {
		h := sha256.New()
		n, err := io.Copy(h, server)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		res <- r
	}()
	start := time.Now()
	if _, err := client.Write(data); err != nil {
		t.Fatalf("client write: %v (bridge forwarded %d frames)", err, br.frames.Load())
	}
	client.CloseWrite()
	r := <-res
	elapsed := time.Since(start)
	if r.err != nil || r.n != int64(len(data)) || r.sum != want {
		t.Fatalf("server got %d bytes, err %v, sha256 match %v", r.n, r.err, r.sum == want)
	}
	// The point of the vnet header: veth hands over GSO super-packets with
	// partial checksums and they must have gone through unchanged.
	if br.gso.Load() == 0 {
		t.Errorf("no GSO frame crossed the bridge (largest %d bytes): offloads off?", br.maxFrame.Load())
	}
	if br.writeDrops.Load() != 0 {
		t.Errorf("bridge dropped %d frames on write: %v", br.writeDrops.Load(), br.writeErr)
	}
	t.Logf("8 MiB in %v (%.2f Gbit/s); %d frames in %d reads, %d GSO, largest %d bytes",
		elapsed, float64(len(data))*8/elapsed.Seconds()/1e9, br.frames.Load(), br.reads.Load(),
		br.gso.Load(), br.maxFrame.Load())
}

func TestAFPacketReadWriteDoNotAllocate(t *testing.T) {
	needRoot(t)
	x, y := pair(t)
	dx := openAF(t, x, "x0", nil)
	dy := openAF(t, y, "y0", nil)
	// Drain whatever the new links sent (IPv6 router solicitations etc.)
	// so that each Read below gets our frame.
	frame := make([]byte, headroom+VnetHdrLen+14+64)
	dst := macOf(t, y, "y0")
	src := dx.MAC()
	copy(frame[headroom+VnetHdrLen:], dst[:])
	copy(frame[headroom+VnetHdrLen+6:], src[:])
	binary.BigEndian.PutUint16(frame[headroom+VnetHdrLen+12:], 0x88b5)
	out := [][]byte{frame}
	bufs, sizes := frameBufs(8, headroom)
	timer := time.AfterFunc(10*time.Second, func() { dy.Close() })
	defer timer.Stop()
	allocs := testing.AllocsPerRun(200, func() {
		if n, err := dx.Write(out, headroom); n != 1 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		if _, err := dy.Read(bufs, sizes, headroom); err != nil {
			t.Fatalf("Read: %v", err)
		}
	})
	if allocs != 0 {
		t.Errorf("Write+Read allocate %.1f times per frame, want 0", allocs)
	}
}

// BenchmarkBridgeTCP moves one TCP stream through the AF_PACKET bridge; one
// op is 1 MiB. allocs/op counts the whole process: the bridge, the client
// and the server.
func BenchmarkBridgeTCP(b *testing.B) {
	needRoot(b)
	a, c, br := relay(b)
	client, server := tcpPair(b, a, c)
	const chunk = 1 << 20
	data := make([]byte, chunk)
	rand.Read(data)
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 256<<10)
		var total int64
		want := int64(b.N) * chunk
		for total < want {
			n, err := server.Read(buf)
			total += int64(n)
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	client.SetDeadline(time.Now().Add(5 * time.Minute))
	reads0, frames0 := br.reads.Load(), br.frames.Load()
	b.SetBytes(chunk)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := client.Write(data); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	reads, frames := br.reads.Load()-reads0, br.frames.Load()-frames0
	b.ReportMetric(float64(b.N)*chunk*8/b.Elapsed().Seconds()/1e9, "Gbit/s")
	if reads > 0 {
		b.ReportMetric(float64(frames)/float64(reads), "frames/read")
	}
}

// testFrame is vnet header (zero) + an Ethernet frame of the local
// experimental type 0x88b5 with size bytes after the Ethernet header, each
// the byte mark.
func testFrame(off int, dst, src [6]byte, size int, mark byte) []byte {
	b := make([]byte, off+VnetHdrLen+14+size)
	f := b[off+VnetHdrLen:]
	copy(f, dst[:])
	copy(f[6:], src[:])
	binary.BigEndian.PutUint16(f[12:], 0x88b5)
	for i := range f[14:] {
		f[14+i] = mark
	}
	return b
}

func TestAFPacketDropsTruncatedFrames(t *testing.T) {
	needRoot(t)
	x, y := pair(t)
	dx := openAF(t, x, "x0", nil)
	dy := openAF(t, y, "y0", nil)
	dst, src := macOf(t, y, "y0"), dx.MAC()
	big, small := testFrame(0, dst, src, 1000, 'B'), testFrame(0, dst, src, 50, 's')
	if n, err := dx.Write([][]byte{big, small}, 0); n != 2 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	timer := time.AfterFunc(5*time.Second, func() { dy.Close() })
	defer timer.Stop()
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 300) // room for the small frame and noise, not the big one
	}
	sizes := make([]int, len(bufs))
	for {
		n, err := dy.Read(bufs, sizes, 0)
		if err != nil {
			t.Fatalf("Read before the small frame arrived: %v", err)
		}
		for i := 0; i < n; i++ {
			f := bufs[i][VnetHdrLen:sizes[i]]
			if binary.BigEndian.Uint16(f[12:]) != 0x88b5 {
				continue
			}
			if len(f) != 14+50 || f[14] != 's' {
				t.Fatalf("got frame of %d bytes starting %q, want the 64-byte small one", len(f), f[14])
			}
			st, err := dy.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if st.ReadDrops != 1 {
				t.Errorf("ReadDrops = %d, want 1 (the truncated big frame)", st.ReadDrops)
			}
			return
		}
	}
}

// A socket nobody reads overflows: the kernel's drops show in Stats, and
// they add up across calls although the kernel resets its count on every
// read.
func TestAFPacketStatsCountKernelDrops(t *testing.T) {
	needRoot(t)
	x, y := pair(t)
	dx := openAF(t, x, "x0", nil)
	dy := openAF(t, y, "y0", &AFPacketConfig{SocketBuffer: 64 << 10})
	dst, src := macOf(t, y, "y0"), dx.MAC()
	const burst = 2000
	frames := make([][]byte, burst)
	for i := range frames {
		frames[i] = testFrame(0, dst, src, 1000, 'D')
	}
	send := func() {
		t.Helper()
		if n, err := dx.Write(frames, 0); n != burst || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	send()
	first, err := dy.Stats()
	if err != nil {
		t.Fatal(err)
	}
	// 2000 frames of 1 KiB do not fit a 64 KiB queue (twice that, as the
	// kernel counts): most are dropped, and every one is counted once.
	if first.KernelDrops < burst/2 || first.KernelPackets < burst || first.KernelDrops > first.KernelPackets {
		t.Fatalf("after one burst: %+v, want %d packets seen, most dropped", first, burst)
	}
	send()
	second, err := dy.Stats()
	if err != nil {
		t.Fatal(err)
	}
	// At least: the interface may add a stray frame of its own (IPv6
	// router solicitation, MLD).
	if second.KernelPackets < first.KernelPackets+burst || second.KernelDrops < first.KernelDrops+burst {
		t.Fatalf("after a second burst into the full queue: %+v, want at least %d more packets and drops than %+v", second, burst, first)
	}
}

// BenchmarkAFPacketSmallFrames writes a batch of 64-byte frames on one veth
// end and reads them on the other: one op is one frame.
func BenchmarkAFPacketSmallFrames(b *testing.B) {
	needRoot(b)
	x, y := pair(b)
	dx := openAF(b, x, "x0", nil)
	dy := openAF(b, y, "y0", nil)
	dst, src := macOf(b, y, "y0"), dx.MAC()
	out := make([][]byte, dx.BatchSize())
	for i := range out {
		out[i] = testFrame(headroom, dst, src, 50, byte(i))
	}
	bufs, sizes := frameBufs(dy.BatchSize(), headroom)
	timer := time.AfterFunc(5*time.Minute, func() { dy.Close() })
	defer timer.Stop()
	var reads, frames int
	b.ReportAllocs()
	b.ResetTimer()
	for sent := 0; sent < b.N; {
		k := min(len(out), b.N-sent)
		w, err := dx.Write(out[:k], headroom)
		if err != nil {
			b.Fatal(err)
		}
		sent += w
		for got := 0; got < w; {
			n, err := dy.Read(bufs, sizes, headroom)
			if err != nil {
				b.Fatal(err)
			}
			reads++
			for i := 0; i < n; i++ {
				if binary.BigEndian.Uint16(bufs[i][headroom+VnetHdrLen+12:]) == 0x88b5 {
					got++
				}
			}
			frames += n
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(frames)/float64(reads), "frames/read")
}
