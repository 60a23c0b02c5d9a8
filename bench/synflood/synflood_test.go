package synflood

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var (
	srcMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	dstMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
)

func config4() Config {
	return Config{
		Dst:      netip.MustParseAddrPort("198.18.0.1:80"),
		Sources:  netip.MustParsePrefix("198.19.0.0/16"),
		Exclude:  []netip.Addr{netip.MustParseAddr("198.19.0.2")},
		Count:    1000,
		Duration: time.Second,
		Batch:    32,
		Seed:     7,
	}
}

func config6() Config {
	c := config4()
	c.Dst = netip.MustParseAddrPort("[2001:2::1]:443")
	c.Sources = netip.MustParsePrefix("2001:2:0:ff00::/56")
	c.Exclude = nil
	return c
}

// decode checks one frame of c's flood field by field and its checksums
// against gopacket's, and returns its source address and port.
func decode(t *testing.T, c Config, f []byte) (netip.Addr, uint16) {
	t.Helper()
	p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("decode: %v", el.Error())
	}
	eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if !bytes.Equal(eth.SrcMAC, srcMAC) || !bytes.Equal(eth.DstMAC, dstMAC) {
		t.Fatalf("MACs %v > %v", eth.SrcMAC, eth.DstMAC)
	}
	tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !ok {
		t.Fatalf("no TCP layer: %v", p)
	}
	var src netip.Addr
	var net gopacket.SerializableLayer
	switch ip := p.NetworkLayer().(type) {
	case *layers.IPv4:
		src, _ = netip.AddrFromSlice(ip.SrcIP)
		dst, _ := netip.AddrFromSlice(ip.DstIP)
		if dst != c.Dst.Addr() || ip.TTL != 64 || ip.Flags != layers.IPv4DontFragment || ip.Length != 44 || ip.IHL != 5 {
			t.Fatalf("IPv4 header %+v", ip)
		}
		_ = tcp.SetNetworkLayerForChecksum(ip)
		net = ip
	case *layers.IPv6:
		src, _ = netip.AddrFromSlice(ip.SrcIP)
		dst, _ := netip.AddrFromSlice(ip.DstIP)
		if dst != c.Dst.Addr() || ip.HopLimit != 64 || ip.NextHeader != layers.IPProtocolTCP || ip.Length != 24 {
			t.Fatalf("IPv6 header %+v", ip)
		}
		_ = tcp.SetNetworkLayerForChecksum(ip)
		net = ip
	default:
		t.Fatalf("network layer %T", ip)
	}
	if !c.Sources.Contains(src) {
		t.Fatalf("source %v outside %v", src, c.Sources)
	}
	for _, x := range c.Exclude {
		if src == x {
			t.Fatalf("excluded source %v used", src)
		}
	}
	if uint16(tcp.DstPort) != c.Dst.Port() || tcp.SrcPort < minPort || !tcp.SYN || tcp.ACK || tcp.RST || tcp.FIN || tcp.PSH || tcp.Ack != 0 || tcp.Window != window || len(tcp.Payload) != 0 {
		t.Fatalf("TCP header %+v", tcp)
	}
	if len(tcp.Options) != 1 || tcp.Options[0].OptionType != layers.TCPOptionKindMSS || !bytes.Equal(tcp.Options[0].OptionData, []byte{mss >> 8, mss & 0xff}) {
		t.Fatalf("TCP options %v", tcp.Options)
	}
	// gopacket computes both checksums afresh from the decoded fields:
	// the frame must come out byte for byte the same.
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, eth, net, tcp); err != nil {
		t.Fatal(err)
	}
	// (gopacket pads an Ethernet frame to 60 bytes; a veth sends it as is.)
	if out := buf.Bytes(); len(out) < len(f) || !bytes.Equal(out[:len(f)], f) || strings.Trim(string(out[len(f):]), "\x00") != "" {
		t.Fatalf("frame differs from gopacket's with checksums computed:\n got %x\nwant %x", f, buf.Bytes())
	}
	return src, uint16(tcp.SrcPort)
}

func TestFrames(t *testing.T) {
	for name, c := range map[string]Config{"ipv4": config4(), "ipv6": config6()} {
		t.Run(name, func(t *testing.T) {
			b, err := newBatch(srcMAC, dstMAC, c)
			if err != nil {
				t.Fatal(err)
			}
			want := Frame4
			if c.Dst.Addr().Is6() {
				want = Frame6
			}
			if b.frameLen != want {
				t.Fatalf("frame length %d, want %d", b.frameLen, want)
			}
			srcs := map[netip.Addr]bool{}
			ports := map[uint16]bool{}
			for range 20 { // the same buffers, refilled
				b.fill(b.size)
				for i := range b.size {
					s, p := decode(t, c, b.frame(i))
					srcs[s], ports[p] = true, true
				}
			}
			// 640 draws from 65536 addresses and 64512 ports: a few
			// collisions at most.
			if len(srcs) < 600 || len(ports) < 600 {
				t.Fatalf("%d sources and %d ports in 640 frames: not random", len(srcs), len(ports))
			}
		})
	}
}

// TestExclude: a prefix of four addresses, three excluded, gives the
// fourth every time.
func TestExclude(t *testing.T) {
	c := config4()
	c.Sources = netip.MustParsePrefix("198.19.7.4/30")
	c.Exclude = []netip.Addr{netip.MustParseAddr("198.19.7.4"), netip.MustParseAddr("198.19.7.5"), netip.MustParseAddr("198.19.7.7")}
	b, err := newBatch(srcMAC, dstMAC, c)
	if err != nil {
		t.Fatal(err)
	}
	b.fill(b.size)
	for i := range b.size {
		if s, _ := decode(t, c, b.frame(i)); s != netip.MustParseAddr("198.19.7.6") {
			t.Fatalf("source %v", s)
		}
	}
	c.Exclude = append(c.Exclude, netip.MustParseAddr("198.19.7.6"))
	if err := c.Check(); err == nil {
		t.Fatal("a prefix with every address excluded was accepted")
	}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Count = 0 }, "count"},
		{func(c *Config) { c.Duration = 0 }, "duration"},
		{func(c *Config) { c.Rate = -1 }, "negative"},
		{func(c *Config) { c.Dst = netip.MustParseAddrPort("203.0.113.1:80") }, "outside"},
		{func(c *Config) { c.Dst = netip.MustParseAddrPort("198.18.0.1:0") }, "ADDR:PORT"},
		{func(c *Config) { c.Sources = netip.MustParsePrefix("203.0.113.0/24") }, "198.18.0.0/15"},
		{func(c *Config) { c.Sources = netip.MustParsePrefix("198.0.0.0/8") }, "not inside"},
		{func(c *Config) { c.Sources = netip.MustParsePrefix("2001:2::/64") }, "families"},
		{func(c *Config) { c.Sources = netip.Prefix{} }, "no source"},
		{func(c *Config) { c.Batch = 5000 }, "batch"},
	} {
		c := config4()
		tc.edit(&c)
		if err := c.Check(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", c, err, tc.want)
		}
	}
	c6 := config6()
	c6.Sources = netip.MustParsePrefix("2001:db8::/64")
	if err := c6.Check(); err == nil {
		t.Error("IPv6 sources outside 2001:2::/48 accepted")
	}
	for _, c := range []Config{config4(), config6()} {
		if err := c.Check(); err != nil {
			t.Error(err)
		}
	}
}

// TestFillAllocs: making a batch of frames allocates nothing.
func TestFillAllocs(t *testing.T) {
	for _, c := range []Config{config4(), config6()} {
		b, err := newBatch(srcMAC, dstMAC, c)
		if err != nil {
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(100, func() { b.fill(b.size) }); n != 0 {
			t.Errorf("%v: %v allocations per batch", c.Dst, n)
		}
	}
}

func BenchmarkFill(b *testing.B) {
	bt, err := newBatch(srcMAC, dstMAC, config4())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		bt.fill(bt.size)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*bt.size), "ns/frame")
}
