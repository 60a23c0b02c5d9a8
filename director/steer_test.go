package director

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/bpf"

	"uvs/link"
	"uvs/packet/packettest"
	"uvs/testbed"
)

// The steering program, run by the kernel: two ports, each a fanout group
// of two queues, as the director opens them. A client's packet to the VIP
// on one port and the real server's reply on the other must reach the same
// queue number, for every client port; and the connections must spread
// over both queues.
func TestSteeringKeepsConnectionsOnOneQueue(t *testing.T) {
	x, y := steerHosts(t, "uvsst")
	cases := []struct {
		name            string
		client, vip, rs netip.Addr
	}{
		{name: "IPv4", client: netip.MustParseAddr("198.18.0.2"), vip: netip.MustParseAddr("198.18.0.1"),
			rs: netip.MustParseAddr("198.18.1.2")},
		{name: "IPv6", client: netip.MustParseAddr("2001:2::2"), vip: netip.MustParseAddr("2001:2::1"),
			rs: netip.MustParseAddr("2001:2:0:1::2")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Other real servers' addresses around it, as a real rule
			// set has; an IPv6 one shares the client's low word.
			v4 := []uint32{0xc6120001, 0xc6120103, 0xc6130102}
			v6 := [][4]uint32{{0x20010002, 0, 0, 3}, {0x20010002, 0, 1, 2}, {0x20010002, 1, 0, 2}}
			b := c.rs.AsSlice()
			if c.rs.Is4() {
				v4 = append(v4, binary.BigEndian.Uint32(b))
			} else {
				v6 = append(v6, [4]uint32{binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:]),
					binary.BigEndian.Uint32(b[8:]), binary.BigEndian.Uint32(b[12:])})
			}
			prog, err := steerFor(v4, v6, false)
			if err != nil {
				t.Fatal(err)
			}
			testSteering(t, x, y, prog, c.client, c.vip, c.rs)
		})
	}
}

func testSteering(t *testing.T, x, y *testbed.Host, prog []bpf.RawInstruction, client, vip, rs netip.Addr) {
	const flows = 32
	var in [2][2]*link.AFPacket // [port][queue]
	cfg := &link.AFPacketConfig{FanoutBPF: true}
	for p, name := range []string{"y0", "y1"} {
		err := y.Do(func() error {
			q0, err := link.OpenAFPacket(name, cfg)
			if err != nil {
				return err
			}
			in[p][0] = q0
			in[p][1], err = q0.OpenQueue()
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := in[p][0].SetFanoutProgram(prog); err != nil {
			t.Fatal(err)
		}
	}
	var out [2]*link.AFPacket
	for p, name := range []string{"x0", "x1"} {
		if err := x.Do(func() (err error) { out[p], err = link.OpenAFPacket(name, nil); return err }); err != nil {
			t.Fatal(err)
		}
	}
	closeIn := func() {
		for p := range in {
			in[p][0].Close()
			in[p][1].Close()
		}
	}
	defer func() {
		closeIn()
		out[0].Close()
		out[1].Close()
	}()

	// seen[port][client port] is the queue the flow's packet reached, +1.
	mu, seen, wg := watchQueues([2][]*link.AFPacket{in[0][:], in[1][:]}, func(f []byte, reply bool) (uint32, bool) {
		cport, ok := flowOf(f, reply)
		return uint32(cport), ok
	})
	defer wg.Wait()
	defer closeIn()

	// Client to VIP on port 0, real server to client on port 1; then the
	// same after both receiving interfaces went down and up, which takes
	// the sockets out of their fanout groups and puts them back.
	dst0, dst1 := y.MAC("y0"), y.MAC("y1")
	for round, base := range []uint16{40000, 50000} {
		if round == 1 {
			for _, ifn := range []string{"y0", "y1"} {
				for _, st := range []string{"down", "up"} {
					if out, err := y.Exec("ip", "link", "set", ifn, st); err != nil {
						t.Fatal(out, err)
					}
				}
			}
		}
		ports := make([]uint16, flows)
		for f := range ports {
			ports[f] = base + uint16(7*f)
			orig := packettest.Frame{Ether: true, DstMAC: dst0, Src: client, Dst: vip, Proto: packettest.TCP,
				SrcPort: ports[f], DstPort: 80, TCPFlags: 2, TTL: 64}.Bytes()
			reply := packettest.Frame{Ether: true, DstMAC: dst1, Src: rs, Dst: client, Proto: packettest.TCP,
				SrcPort: 8080, DstPort: ports[f], TCPFlags: 0x12, TTL: 64}.Bytes()
			for p, fr := range [][]byte{orig, reply} {
				buf := append(make([]byte, link.VnetHdrLen), fr...)
				// Right after the interfaces come up, the sender's side
				// may still report them down for a moment.
				for try := 0; ; try++ {
					n, err := out[p].Write([][]byte{buf}, 0)
					if n == 1 && err == nil {
						break
					}
					if try == 50 {
						t.Fatalf("write: %d, %v", n, err)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			mu.Lock()
			n := 0
			for _, cp := range ports {
				if seen[0][uint32(cp)] != 0 && seen[1][uint32(cp)] != 0 {
					n++
				}
			}
			mu.Unlock()
			if n == flows || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		mu.Lock()
		used := [2]int{}
		for _, cport := range ports {
			q0, q1 := seen[0][uint32(cport)], seen[1][uint32(cport)]
			switch {
			case q0 == 0 || q1 == 0:
				t.Errorf("round %d, client port %d: packet to the VIP on queue %d, reply on queue %d (-1: not seen)", round, cport, q0-1, q1-1)
			case q0 != q1:
				t.Errorf("round %d, client port %d: packet to the VIP on queue %d, the reply on queue %d", round, cport, q0-1, q1-1)
			default:
				used[q0-1]++
			}
		}
		mu.Unlock()
		// 32 connections on one queue: odds of 2^-31 for a fair hash.
		if used[0] == 0 || used[1] == 0 {
			t.Errorf("round %d: connections per queue %v: not spread", round, used)
		}
	}
	downs := uint64(0)
	for p := range in {
		for _, q := range in[p] {
			st, _ := q.Stats()
			downs += st.LinkDowns
		}
	}
	if downs == 0 {
		t.Error("no reader saw its interface go down")
	}
}

// flowOf returns the client port of a TCP frame: the source port of a
// packet to the VIP, the destination port of a reply.
func flowOf(f []byte, reply bool) (uint16, bool) {
	if len(f) < 14 {
		return 0, false
	}
	var l4 []byte
	switch binary.BigEndian.Uint16(f[12:]) {
	case 0x0800:
		if len(f) < 34 || f[23] != 6 {
			return 0, false
		}
		l4 = f[14+int(f[14]&0xf)*4:]
	case 0x86dd:
		if len(f) < 54 || f[20] != 6 {
			return 0, false
		}
		l4 = f[54:]
	default:
		return 0, false
	}
	if len(l4) < 4 {
		return 0, false
	}
	if reply {
		return binary.BigEndian.Uint16(l4[2:]), true
	}
	return binary.BigEndian.Uint16(l4[0:]), true
}

// The program compares each real server's address once, and a rule set
// with more real servers than it compares still gives a valid program.
func TestSteeringAddresses(t *testing.T) {
	d, _ := testWorker(t, 0)
	v4, v6 := natServerWords(d.snap.Load())
	if len(v4) != 1 || v4[0] != binary.BigEndian.Uint32(rs1.AsSlice()) || len(v6) != 0 {
		t.Errorf("words %x %x, want [%x] []", v4, v6, rs1.AsSlice())
	}
	many4 := make([]uint32, maxSteerAddrs)
	many6 := make([][4]uint32, maxSteerAddrs)
	for i := range many4 {
		many4[i] = uint32(i)
		many6[i] = [4]uint32{0x20010002, 0, 1, uint32(i)}
	}
	for _, syn := range []bool{false, true} {
		if _, err := steerFor(many4, many6, syn); err != nil {
			t.Errorf("%d real servers per family, SYN queues %v: %v", maxSteerAddrs, syn, err)
		}
	}
	var a steerAsm
	a.op(bpf.RetA{})
	a.jeq(1, "nowhere", "")
	if _, err := a.assemble(); err == nil {
		t.Error("a jump to a missing label assembled")
	}
}

// With SYN queues, the program run by the kernel: two ports, each a fanout
// group of four queues (two workers). A connection's SYN (to the VIP on
// one port) and SYN-ACK (from the real server on the other) reach the
// same odd queue 2k+1, its other packets both ways queue 2k; IPv4 with
// and without options, IPv6; an IPv4 non-first fragment whose payload
// has the SYN bit where a TCP header's would be is ordinary. The same
// after the receiving interfaces went down and up.
func TestSteeringGivesSYNsTheirQueues(t *testing.T) {
	x, y := steerHosts(t, "uvssy")
	// The real servers, 198.18.1.2 and 2001:2:0:1::2, and another of each.
	v4 := []uint32{0xc6120102, 0xc6130102}
	v6 := [][4]uint32{{0x20010002, 1, 0, 2}, {0x20010002, 0, 1, 2}}
	prog, err := steerFor(v4, v6, true)
	if err != nil {
		t.Fatal(err)
	}
	const nq = 4
	var in [2][nq]*link.AFPacket // [port][queue]
	cfg := &link.AFPacketConfig{FanoutBPF: true}
	for p, name := range []string{"y0", "y1"} {
		err := y.Do(func() error {
			q0, err := link.OpenAFPacket(name, cfg)
			if err != nil {
				return err
			}
			in[p][0] = q0
			for k := 1; k < nq; k++ {
				if in[p][k], err = q0.OpenQueue(); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := in[p][0].SetFanoutProgram(prog); err != nil {
			t.Fatal(err)
		}
	}
	var out [2]*link.AFPacket
	for p, name := range []string{"x0", "x1"} {
		if err := x.Do(func() (err error) { out[p], err = link.OpenAFPacket(name, nil); return err }); err != nil {
			t.Fatal(err)
		}
	}
	closeIn := func() {
		for p := range in {
			for _, q := range in[p] {
				if q != nil {
					q.Close()
				}
			}
		}
	}
	defer func() {
		closeIn()
		out[0].Close()
		out[1].Close()
	}()

	// seen[port][client port<<8 | TCP flags] is the queue the packet reached, +1.
	mu, seen, wg := watchQueues([2][]*link.AFPacket{in[0][:], in[1][:]}, synKeyOf)
	defer wg.Wait()
	defer closeIn()

	cases := []struct {
		name            string
		client, vip, rs netip.Addr
		opts            bool
	}{
		{name: "IPv4", client: netip.MustParseAddr("198.18.0.2"), vip: netip.MustParseAddr("198.18.0.1"),
			rs: netip.MustParseAddr("198.18.1.2")},
		{name: "IPv4 options", client: netip.MustParseAddr("198.18.0.2"), vip: netip.MustParseAddr("198.18.0.1"),
			rs: netip.MustParseAddr("198.18.1.2"), opts: true},
		{name: "IPv6", client: netip.MustParseAddr("2001:2::2"), vip: netip.MustParseAddr("2001:2::1"),
			rs: netip.MustParseAddr("2001:2:0:1::2")},
	}
	const flows = 16
	dst := [2]net.HardwareAddr{y.MAC("y0"), y.MAC("y1")}
	send := func(p int, fr packettest.Frame) {
		fr.Ether, fr.DstMAC, fr.Proto, fr.TTL = true, dst[p], packettest.TCP, 64
		buf := append(make([]byte, link.VnetHdrLen), fr.Bytes()...)
		// Right after the interfaces come up, the sender's side may
		// still report them down for a moment.
		for try := 0; ; try++ {
			n, err := out[p].Write([][]byte{buf}, 0)
			if n == 1 && err == nil {
				return
			}
			if try == 50 {
				t.Fatalf("write: %d, %v", n, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// A connection's packets: to the VIP on port 0, the replies on port 1.
	kinds := []struct {
		port  int
		flags uint8
		syn   bool
	}{{0, 0x02, true}, {1, 0x12, true}, {0, 0x10, false}, {1, 0x18, false}, {0, 0x11, false}}
	base := uint16(20000)
	for round := range 2 {
		if round == 1 {
			for _, ifn := range []string{"y0", "y1"} {
				for _, st := range []string{"down", "up"} {
					if out, err := y.Exec("ip", "link", "set", ifn, st); err != nil {
						t.Fatal(out, err)
					}
				}
			}
		}
		for _, c := range cases {
			var ports []uint16
			var frags []uint16
			for range flows {
				cp := base
				base += 7
				ports = append(ports, cp)
				for _, k := range kinds {
					fr := packettest.Frame{Src: c.client, Dst: c.vip, SrcPort: cp, DstPort: 80, TCPFlags: k.flags, IPv4Options: c.opts}
					if k.port == 1 {
						fr = packettest.Frame{Src: c.rs, Dst: c.client, SrcPort: 8080, DstPort: cp, TCPFlags: k.flags, IPv4Options: c.opts}
					}
					send(k.port, fr)
				}
				if c.client.Is4() {
					// A later fragment: its payload is not a TCP header.
					cp := base
					base += 7
					frags = append(frags, cp)
					pl := make([]byte, 20)
					binary.BigEndian.PutUint16(pl, cp)
					pl[13] = 0x02
					send(0, packettest.Frame{Src: c.client, Dst: c.vip, FragOffset: 100, IPv4Options: c.opts, Payload: pl})
				}
			}
			want := flows*len(kinds) + len(frags)
			deadline := time.Now().Add(5 * time.Second)
			for {
				mu.Lock()
				n := 0
				for _, cp := range ports {
					for _, k := range kinds {
						if seen[k.port][uint32(cp)<<8|uint32(k.flags)] != 0 {
							n++
						}
					}
				}
				for _, cp := range frags {
					if seen[0][uint32(cp)<<8|0x02] != 0 {
						n++
					}
				}
				mu.Unlock()
				if n == want || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			mu.Lock()
			used := [nq / 2]int{}
			for _, cp := range ports {
				worker := -1
				for _, k := range kinds {
					q := seen[k.port][uint32(cp)<<8|uint32(k.flags)] - 1
					switch {
					case q < 0:
						t.Errorf("round %d, %s, client port %d: packet with flags %#x on port %d not seen", round, c.name, cp, k.flags, k.port)
						continue
					case k.syn != (q%2 == 1):
						t.Errorf("round %d, %s, client port %d: packet with flags %#x on port %d on queue %d", round, c.name, cp, k.flags, k.port, q)
					case worker >= 0 && q/2 != worker:
						t.Errorf("round %d, %s, client port %d: packet with flags %#x on port %d on worker %d's queue %d, earlier ones on worker %d's", round, c.name, cp, k.flags, k.port, q/2, q, worker)
					}
					worker = q / 2
				}
				if worker >= 0 {
					used[worker]++
				}
			}
			for _, cp := range frags {
				if q := seen[0][uint32(cp)<<8|0x02] - 1; q < 0 || q%2 != 0 {
					t.Errorf("round %d, %s: a later fragment (client port %d) on queue %d (-1: not seen), want an ordinary one", round, c.name, cp, q)
				}
			}
			mu.Unlock()
			// 16 connections on one worker: odds of 2^-15 for a fair hash.
			if used[0] == 0 || used[1] == 0 {
				t.Errorf("round %d, %s: connections per worker %v: not spread", round, c.name, used)
			}
		}
	}
}

// synKeyOf returns a TCP frame's client port<<8 | TCP flags: the source
// port of a packet to the VIP, the destination port of a reply. For an
// IPv4 later fragment, the ports and flags are read where a TCP header
// would be.
func synKeyOf(f []byte, reply bool) (uint32, bool) {
	if len(f) < 14 {
		return 0, false
	}
	var l4 []byte
	switch binary.BigEndian.Uint16(f[12:]) {
	case 0x0800:
		if len(f) < 34 || f[23] != 6 {
			return 0, false
		}
		l4 = f[14+int(f[14]&0xf)*4:]
	case 0x86dd:
		if len(f) < 54 || f[20] != 6 {
			return 0, false
		}
		l4 = f[54:]
	default:
		return 0, false
	}
	if len(l4) < 14 {
		return 0, false
	}
	cp := binary.BigEndian.Uint16(l4[0:])
	if reply {
		cp = binary.BigEndian.Uint16(l4[2:])
	}
	return uint32(cp)<<8 | uint32(l4[13]), true
}

// watchQueues reads every queue of in ([port][queue]) until they are
// closed, and records in seen[port][key] the first queue (+1) a packet
// with that key reached; key picks the packets to record. Hold mu to read
// seen; wait on wg after closing the queues.
func watchQueues(in [2][]*link.AFPacket, key func(frame []byte, reply bool) (uint32, bool)) (*sync.Mutex, *[2]map[uint32]int, *sync.WaitGroup) {
	mu, wg := new(sync.Mutex), new(sync.WaitGroup)
	seen := &[2]map[uint32]int{{}, {}}
	for p := range in {
		for qi, q := range in[p] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				bufs := make([][]byte, q.BatchSize())
				for i := range bufs {
					bufs[i] = make([]byte, 2048)
				}
				sizes := make([]int, len(bufs))
				for {
					n, err := q.Read(bufs, sizes, 0)
					if err != nil {
						return
					}
					for i := 0; i < n; i++ {
						k, ok := key(bufs[i][link.VnetHdrLen:sizes[i]], p == 1)
						if !ok {
							continue
						}
						mu.Lock()
						if _, dup := seen[p][k]; !dup {
							seen[p][k] = qi + 1
						}
						mu.Unlock()
					}
				}
			}()
		}
	}
	return mu, seen, wg
}

// steerHosts makes two hosts in a new bed named after prefix, x and y,
// joined by two veth pairs x0-y0 and x1-y1 (the director's two ports, and
// the wire their packets come in on); it skips without root.
func steerHosts(t *testing.T, prefix string) (x, y *testbed.Host) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if err := testbed.Available(); err != nil {
		t.Skip(err)
	}
	bed, err := testbed.New(prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bed.Close() })
	if x, err = bed.Host("x"); err != nil {
		t.Fatal(err)
	}
	if y, err = bed.Host("y"); err != nil {
		t.Fatal(err)
	}
	for _, l := range [][2]string{{"x0", "y0"}, {"x1", "y1"}} {
		if err := bed.Link(x, l[0], y, l[1]); err != nil {
			t.Fatal(err)
		}
	}
	return x, y
}
