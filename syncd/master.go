package syncd

import (
	"errors"
	"net"
	"sync"
	"time"

	"uvs/director"
	"uvs/ipvssync"
)

// master sends the director's connections.
type master struct {
	m    *Manager
	cfg  Config
	tx   *out         // to the group, or the unicast peers
	rx   *net.UDPConn // control messages from backups; nil with unicast (Manager.uniLoop)
	quit chan struct{}
	wg   sync.WaitGroup

	// resync asks the loop for a full table dump.
	resync chan struct{}
}

func (m *Manager) startMaster(c Config, ifi *net.Interface) (*master, error) {
	tx, err := openOut(c, ifi, m.opts.Peers)
	if err != nil {
		return nil, err
	}
	var rx *net.UDPConn
	if len(m.opts.Peers) == 0 {
		if rx, err = recvSocket(c, ifi); err != nil {
			tx.c.Close()
			return nil, err
		}
	}
	if err := m.t.StartSyncMaster(m.opts.Policy); err != nil {
		tx.c.Close()
		if rx != nil {
			rx.Close()
		}
		return nil, err
	}
	ms := &master{m: m, cfg: c, tx: tx, rx: rx, quit: make(chan struct{}), resync: make(chan struct{}, 1)}
	ms.wg.Add(2)
	go ms.loop()
	go ms.dumper()
	if rx != nil {
		ms.wg.Add(1)
		go ms.listen()
	}
	return ms, nil
}

func (ms *master) stop() {
	ms.m.t.StopSyncMaster()
	close(ms.quit)
	if ms.rx != nil {
		ms.rx.Close() // unblocks listen
	}
	ms.wg.Wait()
	ms.tx.c.Close()
}

// asked takes a control message: a backup's request for the whole table.
func (ms *master) asked(id uint8, typ uint8) {
	if typ != ipvssync.ControlResync || id != 0 && id != ms.cfg.SyncID {
		return
	}
	select {
	case ms.resync <- struct{}{}:
	default: // one is pending
	}
}

// sender batches entries into messages and sends them.
type sender struct {
	ms    *master
	w     *ipvssync.Writer
	wc    ipvssync.Conn
	first time.Time // when the message's first entry came
	sent  int       // messages flushed
}

func (ms *master) newSender() *sender {
	return &sender{ms: ms, w: ipvssync.NewWriter(ms.cfg.SyncID, ms.cfg.MaxLen)}
}

// add puts c in the message, sending the message first if c does not fit.
func (s *sender) add(c *director.SyncConn, now time.Time) {
	toWire(c, &s.wc)
	err := s.w.Add(&s.wc)
	if errors.Is(err, ipvssync.ErrFull) {
		s.flush()
		err = s.w.Add(&s.wc)
	}
	if err != nil {
		s.ms.m.stats.drop(DropEncodeError, 1)
		return
	}
	if s.w.Count() == 1 {
		s.first = now
	}
}

// flush sends the message, if it holds anything.
func (s *sender) flush() {
	if s.w.Count() == 0 {
		return
	}
	st := &s.ms.m.stats
	s.sent++
	if err := s.ms.tx.write(s.w.Bytes()); err != nil {
		// IPVS logs and drops too; the connections go again later.
		if st.sendErrs.Add(1) == 1 {
			s.ms.m.log.Warn("sync message not sent (logged once)", "interface", s.ms.cfg.Interface, "err", err)
		}
	} else {
		st.sentMsgs.Add(1)
		st.sentConns.Add(uint64(s.w.Count()))
	}
	s.w.Reset()
}

// loop drains the workers' queues into messages; a message goes when full
// or when its first entry has waited FlushDelay.
func (ms *master) loop() {
	defer ms.wg.Done()
	s := ms.newSender()
	tick := time.NewTicker(ms.m.opts.DrainEvery)
	defer tick.Stop()
	var now time.Time
	add := func(c *director.SyncConn) { s.add(c, now) }
	for {
		select {
		case <-ms.quit:
			return
		case now = <-tick.C:
			ms.m.t.SyncDrain(add)
			if s.w.Count() > 0 && now.Sub(s.first) >= ms.m.opts.FlushDelay {
				s.flush()
			}
		}
	}
}

// listen takes backups' requests for the whole table (the UVS control
// message); everything else on the group is a backup's business.
func (ms *master) listen() {
	defer ms.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, err := ms.rx.Read(buf)
		if err != nil {
			select {
			case <-ms.quit:
				return
			default:
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			ms.m.log.Warn("sync master: reading control messages stops", "err", err)
			return
		}
		if id, typ, ok := ipvssync.ParseControl(buf[:n]); ok {
			ms.asked(id, typ)
		}
	}
}

// dumper sends the whole table when asked, at most once per
// ResyncHoldoff, paced at ResyncRate messages a second.
func (ms *master) dumper() {
	defer ms.wg.Done()
	o := &ms.m.opts
	var last time.Time
	for {
		select {
		case <-ms.quit:
			return
		case <-ms.resync:
		}
		if wait := o.ResyncHoldoff - time.Since(last); !last.IsZero() && wait > 0 {
			select {
			case <-ms.quit:
				return
			case <-time.After(wait):
			}
		}
		last = time.Now()
		ms.dump()
	}
}

func (ms *master) dump() {
	o := &ms.m.opts
	s := ms.newSender()
	every := time.Second / time.Duration(o.ResyncRate)
	next := time.Now()
	entries := 0
	stopped := false
	pace := func() bool {
		if d := time.Until(next); d > 0 {
			select {
			case <-ms.quit:
				stopped = true
				return false
			case <-time.After(d):
			}
		}
		next = next.Add(every)
		return true
	}
	ms.m.t.SyncWalk(func(c *director.SyncConn) bool {
		before := s.sent
		s.add(c, time.Now())
		entries++
		if s.sent != before {
			return pace() // a message went: wait for the next slot
		}
		return true
	})
	if !stopped {
		s.flush()
	}
	ms.m.stats.resyncs.Add(1)
	ms.m.log.Info("sync master sent its whole table", "entries", entries, "interface", ms.cfg.Interface)
}
