package lab

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"uvs/forward/tun"
	"uvs/testbed"
)

// Hop is one interface of one host to capture on.
type Hop struct {
	Host *testbed.Host
	Name string // how the trace calls the host: "client", "director", "rs1"
	If   string
}

// Packet is one frame captured on a hop.
type Packet struct {
	Time time.Time // the kernel's timestamp
	Hop  string    // Name and If of the hop
	Out  bool      // sent by the host (else received, or seen passing)
	Data []byte    // the Ethernet frame
}

// Trace captures every frame on a set of hops, with AF_PACKET sockets
// opened inside each host's namespace, until Stop.
type Trace struct {
	stop atomic.Bool
	wg   sync.WaitGroup
	mu   sync.Mutex
	pkts []Packet
}

// Bounds of a trace: frames kept per hop, and how long a trace may run
// even if nobody stops it.
const (
	traceMaxFrames = 2000
	traceMaxTime   = 30 * time.Second
)

// StartTrace opens a capture socket on every hop; when it returns, every
// frame from now on is being caught.
func StartTrace(hops []Hop) (*Trace, error) {
	t := &Trace{}
	var fds []int
	for _, h := range hops {
		var fd int
		err := h.Host.Do(func() error {
			var err error
			fd, err = openCapture(h.If)
			return err
		})
		if err != nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
			return nil, fmt.Errorf("%s %s: %w", h.Name, h.If, err)
		}
		fds = append(fds, fd)
	}
	// The kernel turns receive timestamps on for the whole machine a
	// moment after the first socket asks (a static key switched from a
	// work queue); until then frames would be stamped when read.
	time.Sleep(50 * time.Millisecond)
	deadline := time.Now().Add(traceMaxTime)
	for i, h := range hops {
		t.wg.Add(1)
		go t.read(fds[i], h.Name+" "+h.If, deadline)
	}
	return t, nil
}

// openCapture opens a packet socket on ifname (in the namespace of the
// calling thread) that returns every frame in and out with its kernel
// timestamp, and gives up a read after 50 ms so the reader can look at
// the stop flag.
func openCapture(ifname string) (int, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return -1, err
	}
	// Protocol 0 takes nothing until bound: no frame of another
	// interface slips in before the bind.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	if err == nil {
		tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
		err = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	}
	if err == nil {
		err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	}
	if err == nil {
		err = unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (t *Trace) read(fd int, hop string, deadline time.Time) {
	defer t.wg.Done()
	defer unix.Close(fd)
	buf := make([]byte, 65536)
	oob := make([]byte, 128)
	for n := 0; n < traceMaxFrames && !t.stop.Load() && time.Now().Before(deadline); {
		l, oobn, _, from, err := unix.Recvmsg(fd, buf, oob, unix.MSG_TRUNC)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		l = min(l, len(buf))
		p := Packet{Time: stamp(oob[:oobn]), Hop: hop, Data: append([]byte(nil), buf[:l]...)}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok {
			p.Out = ll.Pkttype == unix.PACKET_OUTGOING
		}
		t.mu.Lock()
		t.pkts = append(t.pkts, p)
		t.mu.Unlock()
		n++
	}
}

// stamp is the SO_TIMESTAMPNS time in oob, or now.
func stamp(oob []byte) time.Time {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err == nil {
		for _, m := range msgs {
			if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SO_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
				ts := (*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
				return time.Unix(ts.Unix())
			}
		}
	}
	return time.Now()
}

// Stop ends the capture and returns the frames of every hop in time order.
func (t *Trace) Stop() []Packet {
	t.stop.Store(true)
	t.wg.Wait()
	t.mu.Lock()
	defer t.mu.Unlock()
	sort.SliceStable(t.pkts, func(i, j int) bool { return t.pkts[i].Time.Before(t.pkts[j].Time) })
	return t.pkts
}

// Filter picks the frames of one request: TCP or UDP from or to the
// client's port, inside a tunnel or not, and ARP.
type Filter struct {
	ClientPort uint16
	GUEPort    uint16 // UDP port of GUE tunnels; 0: none
	NoARP      bool
}

// FormatTrace describes the frames f picks, one line each, at most
// perHop of each hop:
//
//	[director eth0 in ]   0.412ms 02:..:01 > 02:..:0a  198.18.0.2:40000 > 198.18.0.100:80 TCP SYN
func FormatTrace(pkts []Packet, f Filter, perHop int) []string {
	width := 0
	for _, p := range pkts {
		width = max(width, len(p.Hop))
	}
	var lines []string
	count := map[string]int{}
	var t0 time.Time
	for _, p := range pkts {
		d, ok := Describe(p.Data, f)
		if !ok {
			continue
		}
		if count[p.Hop] >= perHop {
			continue
		}
		count[p.Hop]++
		if t0.IsZero() {
			t0 = p.Time
		}
		dir := "in "
		if p.Out {
			dir = "out"
		}
		ms := float64(p.Time.Sub(t0).Microseconds()) / 1000
		lines = append(lines, fmt.Sprintf("[%-*s %s] %8.3fms %s", width, p.Hop, dir, ms, d))
	}
	for hop, n := range count {
		if n >= perHop {
			lines = append(lines, fmt.Sprintf("# (at most %d frames shown for %s)", perHop, hop))
		}
	}
	return lines
}

// Describe is one line for an Ethernet frame: its MAC addresses, then
// its IP headers, outer first ("IPIP 198.18.0.1 > 198.18.2.2 | ..."), and
// TCP or UDP; ok is false if f does not pick it.
func Describe(frame []byte, f Filter) (line string, ok bool) {
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
	eth, _ := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if eth == nil {
		return "", false
	}
	macs := eth.SrcMAC.String() + " > " + eth.DstMAC.String() + "  "
	if arp, _ := pkt.Layer(layers.LayerTypeARP).(*layers.ARP); arp != nil {
		if f.NoARP {
			return "", false
		}
		switch arp.Operation {
		case layers.ARPRequest:
			return macs + fmt.Sprintf("ARP who-has %s tell %s", net.IP(arp.DstProtAddress), net.IP(arp.SourceProtAddress)), true
		case layers.ARPReply:
			return macs + fmt.Sprintf("ARP %s is-at %s", net.IP(arp.SourceProtAddress), net.HardwareAddr(arp.SourceHwAddress)), true
		}
		return "", false
	}
	var parts []string
	var ips []string // source and destination of the innermost IP header
	tunnel := "IP"
	ls := pkt.Layers()
	for i := 0; i < len(ls) && i < 16; i++ {
		switch l := ls[i].(type) {
		case *layers.IPv4:
			if ips != nil {
				parts = append(parts, tunnel+" "+ips[0]+" > "+ips[1]+" |")
			}
			ips, tunnel = []string{l.SrcIP.String(), l.DstIP.String()}, "IP"
			if l.Protocol == layers.IPProtocolIPv4 || l.Protocol == layers.IPProtocolIPv6 {
				tunnel = "IPIP"
			}
		case *layers.IPv6:
			if ips != nil {
				parts = append(parts, tunnel+" "+ips[0]+" > "+ips[1]+" |")
			}
			ips, tunnel = []string{l.SrcIP.String(), l.DstIP.String()}, "IP"
			if l.NextHeader == layers.IPProtocolIPv4 || l.NextHeader == layers.IPProtocolIPv6 {
				tunnel = "IPIP"
			}
		case *layers.GRE:
			tunnel = "GRE"
		case *layers.UDP:
			if ips == nil {
				return "", false
			}
			if f.GUEPort != 0 && uint16(l.DstPort) == f.GUEPort {
				in, n, err := tun.DecapPayload(17, l.Payload)
				if err != nil || n == 0 {
					return "", false
				}
				inner := gopacket.NewPacket(l.Payload[in:in+n], ipLayer(l.Payload[in]), gopacket.DecodeOptions{Lazy: true, NoCopy: true})
				parts = append(parts, fmt.Sprintf("GUE %s:%d > %s:%d |", ips[0], l.SrcPort, ips[1], l.DstPort))
				ips = nil
				ls = append(ls[:i+1:i+1], inner.Layers()...)
				continue
			}
			if uint16(l.SrcPort) != f.ClientPort && uint16(l.DstPort) != f.ClientPort {
				return "", false
			}
			parts = append(parts, fmt.Sprintf("%s > %s UDP len %d", hostPort(ips[0], uint16(l.SrcPort)), hostPort(ips[1], uint16(l.DstPort)), len(l.Payload)))
			return macs + strings.Join(parts, " "), true
		case *layers.TCP:
			if ips == nil {
				return "", false
			}
			if uint16(l.SrcPort) != f.ClientPort && uint16(l.DstPort) != f.ClientPort {
				return "", false
			}
			s := fmt.Sprintf("%s > %s TCP %s", hostPort(ips[0], uint16(l.SrcPort)), hostPort(ips[1], uint16(l.DstPort)), tcpFlags(l))
			if len(l.Payload) > 0 {
				s += fmt.Sprintf(" len %d", len(l.Payload))
			}
			parts = append(parts, s)
			return macs + strings.Join(parts, " "), true
		}
	}
	return "", false
}

func ipLayer(first byte) gopacket.LayerType {
	if first>>4 == 6 {
		return layers.LayerTypeIPv6
	}
	return layers.LayerTypeIPv4
}

func hostPort(ip string, port uint16) string { return net.JoinHostPort(ip, fmt.Sprint(port)) }

func tcpFlags(t *layers.TCP) string {
	var f []string
	for _, x := range []struct {
		on   bool
		name string
	}{{t.SYN, "SYN"}, {t.FIN, "FIN"}, {t.RST, "RST"}, {t.PSH, "PSH"}, {t.ACK, "ACK"}} {
		if x.on {
			f = append(f, x.name)
		}
	}
	return strings.Join(f, "-")
}
