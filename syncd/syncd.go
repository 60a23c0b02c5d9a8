// Package syncd is the connection sync daemon, IPVS's, wire-compatible
// with it (package ipvssync): a master multicasts the director's
// connections as they change, backups put them in their own table, so that
// a backup that takes over the virtual addresses forwards the master's
// connections on.
//
// As in IPVS, a director runs at most one master and one backup daemon, at
// once if it likes (each director the master of its own connections and a
// backup of the others'), each with its own interface, group, port, TTL,
// sync ID and message size (ipvsadm --start-daemon's options), with IPVS's
// defaults: group 224.0.0.81, port 8848, TTL 1, messages of 1472 bytes
// (the master; a backup takes the interface's MTU less 28, at least 1472),
// IPv6 groups (ff02::…) too.
//
// What a master sends, and when, is IPVS's (conntrack.SyncPolicy): a TCP
// connection at its third client packet once established, every fiftieth
// packet after, and at each change to a closing state; UDP at the third
// packet and every fiftieth; each with its persistence template and the
// state's full timeout. Connections are gathered into messages, sent when
// a message is full or when its first connection has waited FlushDelay
// (IPVS: 2 s).
//
// Beyond IPVS, a backup that starts asks (an ipvssync control message,
// which Linux backups ignore) every UVS master of its group for its whole
// table, and each sends it, paced at ResyncRate messages a second and at
// most once per ResyncHoldoff; its entries carry the resync option, so
// that a backup adds the ones it lacks without overwriting what it knows.
// A Linux master does not answer (it has no such thing); a Linux backup
// that hears a dump takes it as ordinary sync messages.
package syncd

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"uvs/conntrack"
	"uvs/director"
	"uvs/ipvssync"
)

// Table is what the daemon needs of the director (director.Director).
type Table interface {
	StartSyncMaster(policy *conntrack.SyncPolicy) error
	StopSyncMaster()
	SyncDrain(fn func(c *director.SyncConn)) int
	SyncWalk(fn func(c *director.SyncConn) bool)
	SyncLearn(c *director.SyncConn) (conntrack.LearnResult, error)
	SyncDropped() uint64
}

// Config is one daemon, as ipvsadm --start-daemon gives it. Zero values
// mean IPVS's defaults; Daemons reports them filled in.
type Config struct {
	Master    bool
	Interface string
	SyncID    uint8      // a backup with 0 takes every master's messages
	MaxLen    int        // the largest message, UDP payload bytes
	Group     netip.Addr // multicast group, IPv4 or IPv6
	Port      uint16
	TTL       uint8
}

func (c Config) role() string {
	if c.Master {
		return "master"
	}
	return "backup"
}

// Options tune the daemons; nil means the defaults.
type Options struct {
	// FlushDelay is how long a partly filled message waits for more
	// connections (IPVS: 2 s).
	FlushDelay time.Duration
	// DrainEvery is how often the master takes what the workers queued.
	DrainEvery time.Duration
	// ResyncRate is how many messages a second a full table dump sends;
	// ResyncHoldoff the least time between two dumps of a master.
	ResyncRate    int
	ResyncHoldoff time.Duration
	// ResyncRepeat is when a backup asks for the tables again after its
	// first request (a master whose socket came up late); 0 asks once.
	ResyncRepeat time.Duration
	// Policy is when the master sends a connection (nil: IPVS's).
	Policy *conntrack.SyncPolicy
	// Peers, when set, makes the daemons unicast, beyond IPVS, for
	// networks without multicast (most clouds): a master sends each
	// message to every peer, a backup asks every peer for its table, and
	// both listen on the interface's own addresses rather than joining
	// the group. The port is the daemon's (--mcast-port); the group and
	// TTL are not used. Linux directors cannot take part: their backups
	// listen on the group alone.
	Peers []netip.Addr
}

func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.FlushDelay <= 0 {
		r.FlushDelay = 2 * time.Second
	}
	if r.DrainEvery <= 0 {
		r.DrainEvery = 20 * time.Millisecond
	}
	if r.ResyncRate <= 0 {
		r.ResyncRate = 1000
	}
	if r.ResyncHoldoff <= 0 {
		r.ResyncHoldoff = 2 * time.Second
	}
	if r.ResyncRepeat == 0 {
		r.ResyncRepeat = 3 * time.Second
	}
	return r
}

// Errors of Start and Stop (ipvsadm prints IPVS's words for them).
var (
	ErrRunning    = errors.New("a sync daemon of this role already runs")
	ErrNoDevice   = errors.New("no such interface")
	ErrNotRunning = errors.New("no sync daemon of this role runs")
)

// Manager runs the director's sync daemons.
type Manager struct {
	t    Table
	log  *slog.Logger
	opts Options

	mu     sync.Mutex
	master *master
	backup *backup
	stats  counters

	// With unicast peers (Options.Peers), one socket takes the masters'
	// messages and the backups' requests on the port for both daemons
	// (two sockets bound to one unicast port would split the datagrams
	// between them): uni, read by uniLoop, which finds the daemons
	// through cur.
	uni    *net.UDPConn
	uniWG  sync.WaitGroup
	self   map[netip.Addr]bool // the interface's addresses: our own datagrams
	curMst atomic.Pointer[master]
	curBak atomic.Pointer[backup]
}

// uniStart opens the unicast socket for the first daemon. m.mu is held.
func (m *Manager) uniStart(c Config, ifi *net.Interface) error {
	if len(m.opts.Peers) == 0 || m.uni != nil {
		return nil
	}
	rx, err := recvUnicast(c, ifi, m.opts.Peers[0].Is6())
	if err != nil {
		return err
	}
	m.self = map[netip.Addr]bool{}
	if addrs, err := ifi.Addrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					m.self[ip.Unmap()] = true
				}
			}
		}
	}
	m.uni = rx
	m.uniWG.Add(1)
	go m.uniLoop(rx)
	return nil
}

// uniStop closes the unicast socket when no daemon is left. m.mu is held.
func (m *Manager) uniStop() {
	if m.uni == nil || m.master != nil || m.backup != nil {
		return
	}
	m.uni.Close()
	m.uniWG.Wait()
	m.uni = nil
}

// uniLoop hands each datagram to the daemon it is for: a request for the
// table to the master, a sync message to the backup.
func (m *Manager) uniLoop(rx *net.UDPConn) {
	defer m.uniWG.Done()
	buf := make([]byte, ipvssync.MaxMessage+1)
	for {
		n, from, err := rx.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			m.log.Warn("sync: unicast receive", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if m.self[from.Addr().Unmap()] {
			continue // a peer list that names this director too
		}
		if id, typ, ok := ipvssync.ParseControl(buf[:n]); ok {
			if ms := m.curMst.Load(); ms != nil {
				ms.asked(id, typ)
			}
			continue
		}
		if b := m.curBak.Load(); b != nil {
			b.proc.message(buf[:n])
		}
	}
}

// New returns a Manager with no daemon running.
func New(t Table, log *slog.Logger, opts *Options) *Manager {
	if log == nil {
		log = slog.Default()
	}
	return &Manager{t: t, log: log, opts: opts.withDefaults()}
}

// Start starts a daemon.
func (m *Manager) Start(c Config) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	// IPVS checks the interface first.
	ifi, err := net.InterfaceByName(c.Interface)
	if err != nil {
		return fmt.Errorf("%s sync daemon on %q: %w", c.role(), c.Interface, ErrNoDevice)
	}
	if c.Master && m.master != nil || !c.Master && m.backup != nil {
		return ErrRunning
	}
	c = withDefaults(c, ifi.MTU)
	if err := m.uniStart(c, ifi); err != nil {
		return err
	}
	if c.Master {
		ms, err := m.startMaster(c, ifi)
		if err != nil {
			m.uniStop()
			return err
		}
		m.master = ms
		m.curMst.Store(ms)
	} else {
		b, err := m.startBackup(c, ifi)
		if err != nil {
			m.uniStop()
			return err
		}
		m.backup = b
		m.curBak.Store(b)
	}
	m.log.Info("sync daemon started", "role", c.role(), "interface", c.Interface, "syncid", c.SyncID,
		"maxlen", c.MaxLen, "group", c.Group, "port", c.Port, "ttl", c.TTL, "unicast_peers", m.opts.Peers)
	return nil
}

// withDefaults fills in what IPVS fills in: the group, port and TTL, and
// the message size from the interface's MTU (mtu).
func withDefaults(c Config, mtu int) Config {
	if !c.Group.IsValid() {
		c.Group = ipvssync.DefaultGroup
	}
	if c.Port == 0 {
		c.Port = ipvssync.DefaultPort
	}
	if c.TTL == 0 {
		c.TTL = ipvssync.DefaultTTL
	}
	hlen := 20 + 8
	if c.Group.Is6() {
		hlen = 40 + 8
	}
	// A master sends messages for a 1500-byte MTU whatever its own; a
	// backup takes what its interface can receive. A given size is held
	// to 1 (master) or 1024 (backup) at least.
	least, size := 1, 1500
	if !c.Master {
		least, size = 1024, min(max(mtu, 1500), 65535)
	}
	if c.MaxLen != 0 {
		c.MaxLen = min(max(c.MaxLen, least), 65535-hlen)
	} else {
		c.MaxLen = size - hlen
	}
	return c
}

// Stop stops the master or the backup daemon.
func (m *Manager) Stop(master bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if master {
		if m.master == nil {
			return ErrNotRunning
		}
		m.curMst.Store(nil)
		m.master.stop()
		m.master = nil
	} else {
		if m.backup == nil {
			return ErrNotRunning
		}
		m.curBak.Store(nil)
		m.backup.stop()
		m.backup = nil
	}
	m.uniStop()
	m.log.Info("sync daemon stopped", "role", Config{Master: master}.role())
	return nil
}

// Daemons lists the running daemons, master first, their defaults filled
// in.
func (m *Manager) Daemons() []Config {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Config
	if m.master != nil {
		out = append(out, m.master.cfg)
	}
	if m.backup != nil {
		out = append(out, m.backup.cfg)
	}
	return out
}

// Close stops both daemons.
func (m *Manager) Close() {
	m.Stop(true)
	m.Stop(false)
}

// Stats are the daemons' counters since New.
type Stats struct {
	SentMessages, SentConns, SendErrors uint64 // master
	QueueDropped                        uint64 // connections the workers could not queue
	ResyncRequests, Resyncs             uint64 // requests sent (backup), dumps sent (master)
	ReceivedMessages                    uint64 // backup: messages of its sync ID
	Learned, Updated, Kept              uint64 // connections and templates created, updated, left alone (a dump's, or an older message's)
	Dropped                             map[string]uint64
}

// Drop reasons (Stats.Dropped): whole messages, then single entries.
const (
	DropMalformed   = "malformed"    // refused whole or from a bad entry on
	DropTooLong     = "too_long"     // longer than the backup's --sync-maxlen
	DropSyncID      = "other_syncid" // another sync ID than the backup's
	DropProtocol    = "protocol"     // neither TCP nor UDP
	DropState       = "state"        // a state the protocol does not have
	DropOption      = "option"       // an option the backup may not skip
	DropPE          = "pe"           // persistence-engine data (no engine here)
	DropNoService   = "no_service"   // no such service here
	DropNoDest      = "no_dest"      // no such real server in the service here
	DropTableFull   = "table_full"
	DropTupleInUse  = "tuple_in_use" // another live connection holds its tuple
	DropEncodeError = "encode"       // master: an entry the format cannot carry
)

type counters struct {
	sentMsgs, sentConns, sendErrs, requests, resyncs atomic.Uint64
	received, learned, updated, kept                 atomic.Uint64
	mu                                               sync.Mutex
	dropped                                          map[string]uint64
}

func (c *counters) drop(reason string, n uint64) {
	c.mu.Lock()
	if c.dropped == nil {
		c.dropped = map[string]uint64{}
	}
	c.dropped[reason] += n
	c.mu.Unlock()
}

// Stats returns the counters.
func (m *Manager) Stats() Stats {
	c := &m.stats
	s := Stats{
		SentMessages: c.sentMsgs.Load(), SentConns: c.sentConns.Load(), SendErrors: c.sendErrs.Load(),
		QueueDropped: m.t.SyncDropped(), ResyncRequests: c.requests.Load(), Resyncs: c.resyncs.Load(),
		ReceivedMessages: c.received.Load(), Learned: c.learned.Load(), Updated: c.updated.Load(), Kept: c.kept.Load(),
		Dropped: map[string]uint64{},
	}
	c.mu.Lock()
	for k, v := range c.dropped {
		s.Dropped[k] = v
	}
	c.mu.Unlock()
	return s
}
