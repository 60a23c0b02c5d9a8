package syncd

import (
	"errors"
	"net"
	"sync"
	"time"

	"uvs/conntrack"
	"uvs/director"
	"uvs/ipvssync"
)

// backup puts the connections masters send into the director's table.
type backup struct {
	m    *Manager
	cfg  Config
	rx   *net.UDPConn // nil with unicast: Manager.uniLoop hands it proc's messages
	tx   *out         // for resync requests
	proc *processor
	quit chan struct{}
	wg   sync.WaitGroup
}

func (m *Manager) startBackup(c Config, ifi *net.Interface) (*backup, error) {
	var rx *net.UDPConn
	if len(m.opts.Peers) == 0 {
		var err error
		if rx, err = recvSocket(c, ifi); err != nil {
			return nil, err
		}
	}
	tx, err := openOut(c, ifi, m.opts.Peers)
	if err != nil {
		if rx != nil {
			rx.Close()
		}
		return nil, err
	}
	b := &backup{m: m, cfg: c, rx: rx, tx: tx, quit: make(chan struct{}),
		proc: &processor{m: m, syncID: c.SyncID, maxLen: c.MaxLen}}
	b.wg.Add(1)
	go b.ask()
	if rx != nil {
		b.wg.Add(1)
		go b.loop()
	}
	return b, nil
}

func (b *backup) stop() {
	close(b.quit)
	if b.rx != nil {
		b.rx.Close()
	}
	b.wg.Wait()
	b.tx.c.Close()
}

// ask requests every UVS master's table: at once (the receiving socket is
// up) and once more after ResyncRepeat, for a master that was not
// listening yet.
func (b *backup) ask() {
	defer b.wg.Done()
	msg := ipvssync.AppendControl(nil, b.cfg.SyncID, ipvssync.ControlResync)
	for i := 0; ; i++ {
		if err := b.tx.write(msg); err != nil {
			b.m.log.Warn("sync backup: asking the masters for their tables failed", "err", err)
		} else {
			b.m.stats.requests.Add(1)
		}
		if i == 1 || b.m.opts.ResyncRepeat < 0 {
			return
		}
		select {
		case <-b.quit:
			return
		case <-time.After(b.m.opts.ResyncRepeat):
		}
	}
}

func (b *backup) loop() {
	defer b.wg.Done()
	buf := make([]byte, ipvssync.MaxMessage+1)
	p := b.proc
	for {
		n, err := b.rx.Read(buf)
		if err != nil {
			select {
			case <-b.quit:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			b.m.log.Warn("sync backup: receive", "err", err)
			select {
			case <-b.quit:
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		p.message(buf[:n])
	}
}

// processor is a backup's handling of one message, apart from its socket.
type processor struct {
	m      *Manager
	syncID uint8
	maxLen int
	r      ipvssync.Reader
	wc     ipvssync.Conn
	sc     director.SyncConn
}

// message takes one datagram in, as an IPVS backup does.
func (p *processor) message(b []byte) {
	st := &p.m.stats
	if len(b) > p.maxLen {
		// IPVS reads at most --sync-maxlen bytes: the rest is cut, and
		// the message's size no longer matches.
		st.drop(DropTooLong, 1)
		return
	}
	if _, _, ok := ipvssync.ParseControl(b); ok {
		return // for masters
	}
	if err := p.r.Reset(b); err != nil {
		st.drop(DropMalformed, 1)
		return
	}
	if h := p.r.Header(); p.syncID != 0 && h.SyncID != p.syncID {
		st.drop(DropSyncID, 1)
		return
	}
	st.received.Add(1)
	for p.r.Next(&p.wc) {
		if why := fromWire(&p.wc, &p.sc); why != "" {
			st.drop(why, 1)
			continue
		}
		res, err := p.m.t.SyncLearn(&p.sc)
		switch {
		case err == nil && (res == conntrack.LearnCreated || res == conntrack.LearnReplaced):
			st.learned.Add(1)
		case err == nil && (res == conntrack.LearnKept || res == conntrack.LearnIgnored):
			st.kept.Add(1)
		case err == nil:
			st.updated.Add(1)
		case errors.Is(err, director.ErrSyncNoService):
			st.drop(DropNoService, 1)
		case errors.Is(err, director.ErrSyncNoDest):
			st.drop(DropNoDest, 1)
		case errors.Is(err, conntrack.ErrFull):
			st.drop(DropTableFull, 1)
		case errors.Is(err, conntrack.ErrExists):
			st.drop(DropTupleInUse, 1)
		default:
			st.drop(DropState, 1)
		}
	}
	if n := p.r.Skipped(); n > 0 {
		st.drop(DropOption, uint64(n))
	}
	if p.r.Err() != nil {
		st.drop(DropMalformed, 1)
	}
}
