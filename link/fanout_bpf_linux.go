package link

import (
	"fmt"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// byFlowHash is the program a FanoutBPF group starts with: the skb's flow
// hash, as PACKET_FANOUT_HASH would use (0 where none was computed).
var byFlowHash = mustAssemble(
	bpf.LoadExtension{Num: bpf.ExtRXHash},
	bpf.RetA{},
)

// maxBPF is the kernel's limit on a classic BPF program (BPF_MAXINSNS).
const maxBPF = 4096

func mustAssemble(insns ...bpf.Instruction) []bpf.RawInstruction {
	raw, err := bpf.Assemble(insns)
	if err != nil {
		panic(err)
	}
	return raw
}

// SetFanoutProgram replaces the classic BPF program that picks the queue
// of each frame in d's fanout group (AFPacketConfig.FanoutBPF): its return
// value modulo the number of queues. It takes effect at once for every
// queue of the group; d must have joined it (a second queue was opened).
func (d *AFPacket) SetFanoutProgram(prog []bpf.RawInstruction) error {
	if !d.cfg.FanoutBPF {
		return fmt.Errorf("af_packet %s: fanout program: the queues were not opened with FanoutBPF", d.name)
	}
	if len(prog) == 0 || len(prog) > maxBPF {
		return fmt.Errorf("af_packet %s: fanout program of %d instructions", d.name, len(prog))
	}
	fp := unix.SockFprog{Len: uint16(len(prog)), Filter: (*unix.SockFilter)(unsafe.Pointer(&prog[0]))}
	var serr error
	err := d.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_PACKET, unix.PACKET_FANOUT_DATA, &fp)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("af_packet %s: set fanout program: %w", d.name, err)
	}
	return nil
}
