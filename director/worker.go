package director

import (
	"fmt"
	"uvs/conntrack"
	"uvs/link"
	"uvs/packet"
	"uvs/reasm"
	"uvs/scheduler"
)

// worker reads one queue of one port, or with affine workers one queue of
// every port, and handles what it reads.
type worker struct {
	d  *Director
	id int
	in *port
	q  link.Device
	// multi, when set, reads one queue of every port (affine workers);
	// ins[i] is the port of its queue i, and in follows each batch.
	multi *link.Multi
	ins   []*port
	bufs  [][]byte
	lens  []int
	pend  [][][]byte // per port: frames to write, sliced from bufs or scratch
	scr   [][]byte
	nscr  int

	// IPv6 fragments, reassembled here (the kernel does IPv4's): the
	// table, made at the first fragment, and buffers for the datagrams a
	// batch completes. fragMax is the longest fragment of the datagram
	// being handled, 0 when it came whole.
	reasm   *reasm.Table
	rbufs   [][]byte
	nrbuf   int
	fragMax int

	// The worker's share of the ICMP errors the director may send (see
	// icmpAllowed): a token bucket, started at the first error.
	icmpEvery int64 // ns per token; 0: the whole rate (one worker)
	icmpBurst int
	icmp      bucket
	icmpPeers [icmpPeerSlots]icmpPeer

	// GSO packets to tunnel are cut into segments here (xmitTunnel),
	// made at the first.
	segBuf  []byte
	segs    [][]byte
	segLens []int

	p    packet.Parsed
	tp   conntrack.Tuple
	c    conntrack.Conn
	flow scheduler.Flow
	vh   link.VnetHdr
	tk   conntrack.TemplateKey
	tmpl conntrack.TemplateRef // the template pick used, if any
	// syncRec is the record syncPush fills (sync.go).
	syncRec syncRecord
	mark    uint32 // the current packet's firewall mark (marks.go), 0 for none
}

func (d *Director) startWorkers() error {
	if d.affine() {
		return d.startAffineWorkers()
	}
	var ws []*worker
	for _, pt := range d.ports {
		if pt.egress {
			continue
		}
		for _, q := range pt.queues {
			w := &worker{d: d, id: len(ws), in: pt, q: q}
			w.alloc(q.BatchSize())
			ws = append(ws, w)
		}
	}
	d.launch(ws)
	return nil
}

// launch starts the workers, each with its share of the ICMP error rate.
func (d *Director) launch(ws []*worker) {
	d.nworkers = len(ws)
	for _, w := range ws {
		w.setICMPShare(len(ws))
		d.wg.Add(1)
		go w.run()
	}
}

// startAffineWorkers starts one worker per queue index, each reading that
// queue of every port (link.Multi); the fanout programs (steer.go) send
// both directions of a connection to the same queue index. With SYN
// queues, worker k reads queues 2k and, at a lower priority, 2k+1.
func (d *Director) startAffineWorkers() error {
	nq := len(d.ports[0].queues)
	per := 1
	if d.synQueues() {
		per = 2
	}
	ws := make([]*worker, 0, nq/per)
	for k := 0; k < nq/per; k++ {
		w := &worker{d: d, id: k, in: d.ports[0]}
		var qs [2][]*link.AFPacket // by priority
		for j := range per {
			for _, pt := range d.ports {
				if len(pt.queues) != nq || nq%per != 0 {
					return fmt.Errorf("affine workers: port %s has %d queues, port %s %d", pt.name, len(pt.queues), d.ports[0].name, nq)
				}
				q, ok := pt.queues[per*k+j].(*link.AFPacket)
				if !ok {
					return fmt.Errorf("affine workers: port %s queue %d is not AF_PACKET", pt.name, per*k+j)
				}
				qs[j] = append(qs[j], q)
				w.ins = append(w.ins, pt) // Multi numbers the high queues, then the low
			}
		}
		m, err := link.NewMultiPrio(qs[0], qs[1])
		if err != nil {
			return err
		}
		w.multi = m
		w.alloc(qs[0][0].BatchSize())
		ws = append(ws, w)
	}
	d.launch(ws)
	return nil
}

// synQueues reports whether the affine workers have SYN queues
// (Config.AFPacketNoSYNQueues).
func (d *Director) synQueues() bool {
	return d.affine() && !d.cfg.AFPacketNoSYNQueues
}

// alloc makes the worker's buffers for batches of n frames.
func (w *worker) alloc(n int) {
	w.bufs = make([][]byte, n)
	for i := range w.bufs {
		w.bufs[i] = make([]byte, bufSize)
	}
	w.lens = make([]int, n)
	w.pend = make([][][]byte, len(w.d.ports))
	for i := range w.pend {
		w.pend[i] = make([][]byte, 0, n+scratchN)
	}
	w.scr = make([][]byte, scratchN)
	for i := range w.scr {
		w.scr[i] = make([]byte, headroom+link.VnetHdrLen+2048)
	}
}

func (w *worker) run() {
	defer w.d.wg.Done()
	defer func() {
		// A bug here must not leave the host diverting traffic to a dead
		// process: undo the host changes, then crash as before.
		if r := recover(); r != nil {
			w.d.log.Error("worker panic; restoring the host and exiting", "port", w.in.name, "panic", r)
			w.d.restoreHost()
			panic(r)
		}
	}()
	for {
		var n int
		var err error
		if w.multi != nil {
			var from int
			n, from, err = w.multi.Read(w.bufs, w.lens, headroom)
			w.in = w.ins[from]
		} else {
			n, err = w.q.Read(w.bufs, w.lens, headroom)
		}
		if err != nil {
			select {
			case <-w.d.stop:
			default:
				w.d.log.Error("read failed; worker stops", "port", w.in.name, "err", err)
			}
			return
		}
		w.d.clock.Tick()
		s := w.d.snap.Load()
		w.nscr, w.nrbuf = 0, 0
		for i := 0; i < n; i++ {
			w.frame(s, w.bufs[i][:headroom+w.lens[i]])
		}
		w.flush()
	}
}

// flush writes every port's pending frames.
func (w *worker) flush() {
	for i, fr := range w.pend {
		if len(fr) == 0 {
			continue
		}
		pt := w.d.ports[i]
		if err := pt.write(w.id, fr); err != nil && w.d.debug {
			// Counted by the socket (send_failed); the arguments are
			// boxed only when someone reads debug logs.
			w.d.log.Debug("write", "port", pt.name, "err", err)
		}
		clear(fr)
		w.pend[i] = fr[:0]
	}
}

// write sends frames on the queue writer picks (workers spread over the
// queues by their id), holding that queue's write lock.
func (pt *port) write(writer int, frames [][]byte) error {
	if len(pt.queues) == 0 {
		_, err := pt.dev.Write(frames, 0)
		return err
	}
	i := writer % len(pt.queues)
	pt.wmu[i].Lock()
	_, err := pt.queues[i].Write(frames, 0)
	pt.wmu[i].Unlock()
	return err
}

// send queues frame for pt: the frame from its virtio-net header (if pt
// has them) to its end. Frames start where their last header was written:
// after the headroom, or earlier for an encapsulated packet.
func (w *worker) send(pt *port, frame []byte) {
	w.pend[pt.pos] = append(w.pend[pt.pos], frame)
}

// scratch returns a buffer for a generated reply, or nil when the batch
// has used them all (the reply is then skipped; it is best effort).
func (w *worker) scratch() []byte {
	if w.nscr == len(w.scr) {
		return nil
	}
	b := w.scr[w.nscr]
	w.nscr++
	return b
}

// frameOff is where the frame starts in a buffer of the current port:
// after the headroom and, if the port has one, the virtio-net header.
func (w *worker) frameOff() int {
	if w.in.vnet {
		return headroom + link.VnetHdrLen
	}
	return headroom
}
