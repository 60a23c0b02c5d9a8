package dr

import (
	"bytes"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var (
	dirMAC = [6]byte{0x02, 0, 0, 0, 0, 1}
	rsMAC  = [6]byte{0x02, 0, 0, 0, 0, 2}
)

// frame builds a TCP SYN from a client to the VIP, as the director reads it.
func frame(t *testing.T, v6 bool) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: []byte{2, 0, 0, 0, 0, 9}, DstMAC: dirMAC[:], EthernetType: layers.EthernetTypeIPv4}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 80, SYN: true, Seq: 1, Window: 100}
	var ip gopacket.NetworkLayer
	if v6 {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
			SrcIP: []byte{0x20, 1, 0, 2, 15: 2}, DstIP: []byte{0x20, 1, 0, 2, 14: 1, 15: 0}}
		ip = ip6
	} else {
		ip = &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP,
			SrcIP: []byte{198, 18, 0, 2}, DstIP: []byte{198, 18, 0, 100}}
	}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	b := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(b, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip.(gopacket.SerializableLayer), tcp, gopacket.Payload("hello")); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestSetMACs(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		f := frame(t, v6)
		orig := append([]byte(nil), f...)
		if !SetMACs(f, dirMAC, rsMAC) {
			t.Fatal("SetMACs refused a whole frame")
		}
		pkt := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
		e := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		if !bytes.Equal(e.DstMAC, rsMAC[:]) || !bytes.Equal(e.SrcMAC, dirMAC[:]) {
			t.Errorf("v6=%v: MACs %s -> %s, want %x -> %x", v6, e.SrcMAC, e.DstMAC, dirMAC, rsMAC)
		}
		if !bytes.Equal(f[EtherLen:], orig[EtherLen:]) {
			t.Errorf("v6=%v: the IP packet changed", v6)
		}
		if pkt.ErrorLayer() != nil {
			t.Errorf("v6=%v: %v", v6, pkt.ErrorLayer().Error())
		}
	}
	if SetMACs(make([]byte, 13), dirMAC, rsMAC) {
		t.Error("SetMACs took a 13-byte frame")
	}
}

func TestPrependEther(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		f := frame(t, v6)
		ip := f[EtherLen:]
		buf := make([]byte, 64+len(ip))
		copy(buf[64:], ip)
		start, ok := PrependEther(buf, 64, dirMAC, rsMAC)
		if !ok || start != 64-EtherLen {
			t.Fatalf("v6=%v: PrependEther = %d, %v", v6, start, ok)
		}
		want := append([]byte(nil), f...)
		SetMACs(want, dirMAC, rsMAC)
		if !bytes.Equal(buf[start:], want) {
			t.Errorf("v6=%v: frame\n%x\nwant\n%x", v6, buf[start:], want)
		}
	}
	buf := make([]byte, 40)
	if _, ok := PrependEther(buf, 10, dirMAC, rsMAC); ok {
		t.Error("no room: took it")
	}
	buf[20] = 0x50
	if _, ok := PrependEther(buf, 20, dirMAC, rsMAC); ok {
		t.Error("IP version 5: took it")
	}
}

func FuzzPrependEther(f *testing.F) {
	f.Add([]byte{0x45, 0, 0, 20}, 14)
	f.Add([]byte{0x60}, 0)
	f.Fuzz(func(t *testing.T, b []byte, off int) {
		buf := append(make([]byte, 32), b...)
		if off < 0 || off > len(buf) {
			off = 32
		}
		start, ok := PrependEther(buf, off, dirMAC, rsMAC)
		if ok && (start != off-EtherLen || !bytes.Equal(buf[start:start+6], rsMAC[:])) {
			t.Fatalf("start %d for off %d", start, off)
		}
	})
}

func BenchmarkSetMACs(b *testing.B) {
	f := make([]byte, 1514)
	b.ReportAllocs()
	for b.Loop() {
		SetMACs(f, dirMAC, rsMAC)
	}
}
