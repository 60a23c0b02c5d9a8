package director

import (
	"encoding/binary"
	"fmt"
	"slices"

	"golang.org/x/net/bpf"
)

// Affine workers (the default; see Config.AFPacketPerPort) read one queue
// of every port, and each port's fanout program picks a frame's queue by
// the connection's client endpoint: the source of a packet from a client, the destination
// of a NAT real server's reply. NAT leaves the client endpoint as it is,
// so both directions of a connection reach the same worker. A reply is
// told from a client's packet by its source address: one of the NAT real
// servers'. The program is rebuilt with every rule change.
//
// Steering is only an optimisation: a frame that reaches another worker
// is handled all the same (the connection table is shared). So the
// program keeps to what classic BPF does cheaply: IPv4 with options, and
// IPv6 without extension headers, hashing the low 32 bits of its client
// address. Anything else (ARP, ICMP, fragments, VLAN-tagged frames) goes
// by the kernel's flow hash.
//
// With SYN queues (the default; see Config.AFPacketNoSYNQueues), each
// port has two queues per worker, and the program sends a TCP packet with
// SYN set (a client's SYN, a real server's SYN-ACK) to the worker's
// second one, which it reads at a lower priority (link.NewMultiPrio): a
// SYN flood then fills those queues, and established connections' packets
// still find room in the first ones. Worker k's queues are 2k and 2k+1,
// and the program returns twice the hash, plus one for a SYN: the
// kernel's modulo by the 2N queues gives 2(hash mod N) + SYN, so the
// program does not depend on the number of workers.

// maxSteerAddrs bounds the real-server addresses a program compares per
// family: the IPv4 comparisons' jumps must stay within their
// 255-instruction reach, and the whole program within the kernel's 4096
// instructions (9 per IPv6 address). Beyond it, replies from the others
// are spread by their source.
const maxSteerAddrs = 200

// Offsets relative to the network header (SKF_NET_OFF), which is where
// the kernel's fanout sees it whatever the link layer.
const netOff = -0x100000

func netAt(off int) uint32 { return uint32(int32(netOff + off)) }

// Hash multipliers (odd; the golden ratio's and MurmurHash3's finaliser's).
const (
	steerK1 = 0x9e3779b1
	steerK2 = 0x85ebca6b
	steerK3 = 0xc2b2ae35
)

// steerProgram builds the fanout program for snapshot s, for ports with
// SYN queues if syn.
func steerProgram(s *snapshot, syn bool) ([]bpf.RawInstruction, error) {
	v4, v6 := natServerWords(s)
	return steerFor(v4, v6, syn)
}

// steerFor builds the fanout program that takes packets from the given
// IPv4 addresses and IPv6 addresses (four words each, big-endian) for NAT
// real servers' replies; with syn, for ports with SYN queues.
func steerFor(v4 []uint32, v6 [][4]uint32, syn bool) ([]bpf.RawInstruction, error) {
	var a steerAsm
	fallback := func() {
		a.op(bpf.LoadExtension{Num: bpf.ExtRXHash})
		if syn {
			a.op(bpf.ALUOpConstant{Op: bpf.ALUOpShiftLeft, Val: 1}) // an ordinary queue
		}
		a.op(bpf.RetA{})
	}
	// synBit stores in M[1] whether the packet is TCP with SYN set (1) or
	// not (0), given the protocol byte's offset and the TCP header's
	// (from X if indirect).
	synBit := func(protoOff, flagsOff int, indirect bool, name string) {
		if !syn {
			return
		}
		a.op(bpf.LoadAbsolute{Off: netAt(protoOff), Size: 1})
		a.jeq(6, name+"tcp", "")
		a.op(bpf.LoadConstant{Dst: bpf.RegA, Val: 0})
		a.ja(name + "st")
		a.label(name + "tcp")
		if indirect {
			a.op(bpf.LoadIndirect{Off: netAt(flagsOff), Size: 1})
		} else {
			a.op(bpf.LoadAbsolute{Off: netAt(flagsOff), Size: 1})
		}
		a.op(bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 1}) // SYN is 0x02
		a.op(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 1})
		a.label(name + "st")
		a.op(bpf.StoreScratch{Src: bpf.RegA, N: 1})
	}
	// tcpOrUDP goes on at label l4 if the protocol byte at off is TCP's or
	// UDP's, else falls back.
	tcpOrUDP := func(off int, l4 string) {
		a.op(bpf.LoadAbsolute{Off: netAt(off), Size: 1})
		a.jeq(6, l4, "")
		a.jeq(17, l4, "")
		fallback()
		a.label(l4)
	}
	// endpoint loads the client endpoint for "mix": M[0] = address * K1,
	// A = port.
	endpoint := func(addr, port bpf.Instruction) {
		a.op(addr)
		a.op(bpf.ALUOpConstant{Op: bpf.ALUOpMul, Val: steerK1})
		a.op(bpf.StoreScratch{Src: bpf.RegA, N: 0})
		a.op(port)
	}
	a.op(bpf.LoadExtension{Num: bpf.ExtProto})
	a.jeq(0x0800, "v4", "")
	a.jeq(0x86dd, "v6", "")
	fallback()

	// IPv4: TCP or UDP, not a later fragment; X = header length.
	a.label("v4")
	tcpOrUDP(9, "v4l4")
	a.op(bpf.LoadAbsolute{Off: netAt(6), Size: 2})
	a.jset(0x1fff, "v4frag", "")
	a.op(bpf.LoadAbsolute{Off: netAt(0), Size: 1})
	a.op(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf})
	a.op(bpf.ALUOpConstant{Op: bpf.ALUOpShiftLeft, Val: 2})
	a.op(bpf.TAX{})
	synBit(9, 13, true, "v4syn")
	a.op(bpf.LoadAbsolute{Off: netAt(12), Size: 4})
	for _, w := range v4 {
		a.jeq(w, "v4reply", "")
	}
	// From a client: the source.
	endpoint(bpf.LoadAbsolute{Off: netAt(12), Size: 4}, bpf.LoadIndirect{Off: netAt(0), Size: 2})
	a.ja("mix")
	a.label("v4reply") // the destination
	endpoint(bpf.LoadAbsolute{Off: netAt(16), Size: 4}, bpf.LoadIndirect{Off: netAt(2), Size: 2})
	a.ja("mix")
	a.label("v4frag")
	fallback()

	// IPv6: TCP or UDP right after the fixed header.
	a.label("v6")
	tcpOrUDP(6, "v6l4")
	synBit(6, 40+13, false, "v6syn")
	for i, ws := range v6 {
		// The source, word by word; on the first difference, the next
		// address.
		next := fmt.Sprintf("v6rs%d", i+1)
		for k, w := range ws {
			a.op(bpf.LoadAbsolute{Off: netAt(8 + 4*k), Size: 4})
			a.jeq(w, "", next)
		}
		a.ja("v6reply")
		a.label(next)
	}
	// The source's low word, or the destination's.
	endpoint(bpf.LoadAbsolute{Off: netAt(20), Size: 4}, bpf.LoadAbsolute{Off: netAt(40), Size: 2})
	a.ja("mix")
	a.label("v6reply")
	endpoint(bpf.LoadAbsolute{Off: netAt(36), Size: 4}, bpf.LoadAbsolute{Off: netAt(42), Size: 2})

	// A = port, M[0] = address * K1. The kernel takes the result modulo
	// the number of queues, so the high bits are folded into the low ones.
	a.label("mix")
	a.op(bpf.ALUOpConstant{Op: bpf.ALUOpMul, Val: steerK2})
	a.op(bpf.LoadScratch{Dst: bpf.RegX, N: 0})
	a.op(bpf.ALUOpX{Op: bpf.ALUOpXor})
	a.op(bpf.TAX{})
	a.op(bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 16})
	a.op(bpf.ALUOpX{Op: bpf.ALUOpXor})
	a.op(bpf.ALUOpConstant{Op: bpf.ALUOpMul, Val: steerK3})
	a.op(bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 16})
	if syn {
		// 2 × hash + SYN.
		a.op(bpf.ALUOpConstant{Op: bpf.ALUOpShiftLeft, Val: 1})
		a.op(bpf.LoadScratch{Dst: bpf.RegX, N: 1})
		a.op(bpf.ALUOpX{Op: bpf.ALUOpOr})
	}
	a.op(bpf.RetA{})
	return a.assemble()
}

// natServerWords returns the NAT real servers' IPv4 and IPv6 addresses as
// the program compares them, each list sorted, without repeats and cut at
// maxSteerAddrs.
func natServerWords(s *snapshot) (v4 []uint32, v6 [][4]uint32) {
	for _, n := range s.nat {
		a := n.addr
		if a.Netip().Is4() {
			v4 = append(v4, binary.BigEndian.Uint32(a[12:]))
			continue
		}
		var ws [4]uint32
		for k := range ws {
			ws[k] = binary.BigEndian.Uint32(a[4*k:])
		}
		v6 = append(v6, ws)
	}
	slices.Sort(v4)
	v4 = slices.Compact(v4)
	slices.SortFunc(v6, func(a, b [4]uint32) int { return slices.Compare(a[:], b[:]) })
	v6 = slices.Compact(v6)
	return v4[:min(len(v4), maxSteerAddrs)], v6[:min(len(v6), maxSteerAddrs)]
}

// steerAsm assembles a classic BPF program with labelled jumps.
type steerAsm struct {
	insns  []bpf.Instruction
	fix    []steerFix
	labels map[string]int
}

type steerFix struct {
	at          int
	true, false string // "" is the next instruction
}

func (a *steerAsm) op(i bpf.Instruction) { a.insns = append(a.insns, i) }

func (a *steerAsm) label(name string) {
	if a.labels == nil {
		a.labels = make(map[string]int)
	}
	a.labels[name] = len(a.insns)
}

func (a *steerAsm) jeq(v uint32, t, f string) {
	a.fix = append(a.fix, steerFix{len(a.insns), t, f})
	a.op(bpf.JumpIf{Cond: bpf.JumpEqual, Val: v})
}

func (a *steerAsm) jset(v uint32, t, f string) {
	a.fix = append(a.fix, steerFix{len(a.insns), t, f})
	a.op(bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: v})
}

func (a *steerAsm) ja(t string) {
	a.fix = append(a.fix, steerFix{len(a.insns), t, ""})
	a.op(bpf.Jump{})
}

// assemble resolves the jumps and encodes the program.
func (a *steerAsm) assemble() ([]bpf.RawInstruction, error) {
	skip := func(from int, to string) (int, error) {
		if to == "" {
			return 0, nil
		}
		at, ok := a.labels[to]
		if !ok || at <= from {
			return 0, fmt.Errorf("steering program: bad jump to %q", to)
		}
		return at - from - 1, nil
	}
	for _, f := range a.fix {
		t, err := skip(f.at, f.true)
		if err != nil {
			return nil, err
		}
		switch j := a.insns[f.at].(type) {
		case bpf.Jump:
			j.Skip = uint32(t)
			a.insns[f.at] = j
		case bpf.JumpIf:
			e, err := skip(f.at, f.false)
			if err != nil {
				return nil, err
			}
			if t > 255 || e > 255 {
				return nil, fmt.Errorf("steering program: jump of %d instructions", max(t, e))
			}
			j.SkipTrue, j.SkipFalse = uint8(t), uint8(e)
			a.insns[f.at] = j
		}
	}
	return bpf.Assemble(a.insns)
}
