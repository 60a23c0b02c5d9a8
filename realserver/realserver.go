// Package realserver is the real-server side of LVS-DR and LVS-TUN: what a
// real server behind a director that forwards by MAC address (ipvsadm -g)
// or by tunnel (ipvsadm -i) must set up to take the director's packets and
// answer the clients itself, from the VIP, straight to them.
//
// DR mode makes the tutorial's settings: every VIP on lo (as /32 or /128),
// and the ARP sysctls that keep the host from answering ARP for them on its
// other links (the director must be the only one that does):
//
//	net.ipv4.conf.lo.arp_ignore=1   net.ipv4.conf.all.arp_ignore=1
//	net.ipv4.conf.lo.arp_announce=2 net.ipv4.conf.all.arp_announce=2
//
// TUN mode takes the tunnels in userspace, needing no ipip, gre or fou
// module: raw sockets of protocols 4 (IPv4 inside), 41 (IPv6 inside) and 47
// (GRE), IPv4 and IPv6, and, with a GUE port, UDP sockets on it. Each
// datagram is checked (outer source, headers and checksums, inner
// destination a VIP) and the inner packet is written into a TUN device
// holding the VIPs, so the local stack takes it as arrived there and
// answers from the VIP through its ordinary routes. The kernel hands
// tunnel packets to raw sockets of their protocol and, when such a socket
// took them, sends no "protocol unreachable" for the missing module. The
// host changes: the TUN device, up; the VIPs on it; rp_filter 0 on it and,
// if net.ipv4.conf.all.rp_filter is 1 (strict, which would drop the inner
// packets: their sources are routed elsewhere), 2 (loose) on all; and
// arp_ignore=1, arp_announce=2 on all.
//
// Every change goes through hostconf with a state file: Close undoes them,
// and a start after a kill undoes what the killed instance left.
package realserver

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"

	"uvs/hostconf"
	"uvs/link"
)

// Config says what to set up. VIPs are required.
type Config struct {
	// DR selects DR mode; otherwise TUN mode.
	DR bool
	// VIPs are the virtual addresses the director forwards to this host.
	VIPs []netip.Addr
	// From lists the directors allowed to send tunnelled packets (their
	// outer source addresses). Empty accepts any source: anyone who can
	// reach the host can then inject packets from any address to a VIP.
	From []netip.Addr
	// GUEPort is the UDP port of GUE tunnels; 0 takes no GUE.
	GUEPort uint16
	// Name is the TUN device's name; default "uvsrs0".
	Name string
	// StateFile records the host changes for undoing after a kill
	// (hostconf.Open); "" keeps no record.
	StateFile string
	// BatchSize is the most datagrams one receive takes; default 32.
	BatchSize int
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultName is the TUN device's default name.
const DefaultName = "uvsrs0"

// Server is a running real-server setup.
type Server struct {
	cfg     Config
	log     *slog.Logger
	host    *hostconf.Changes
	tun     *link.TUN
	queues  []*link.TUN
	readers []*reader
	wg      sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// Start applies the host setup and, in TUN mode, starts receiving. On an
// error everything done so far is undone.
func Start(cfg Config) (s *Server, err error) {
	if len(cfg.VIPs) == 0 {
		return nil, errors.New("realserver: no VIP")
	}
	if cfg.DR && (len(cfg.From) > 0 || cfg.GUEPort != 0) {
		return nil, errors.New("realserver: DR mode takes no tunnel options (from, GUE port)")
	}
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 32
	}
	s = &Server{cfg: cfg, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.Default()
	}
	host, err := hostconf.Open(cfg.StateFile)
	if host == nil {
		return nil, fmt.Errorf("realserver: %w", err)
	}
	if err != nil {
		s.log.Warn("undoing the changes a previous run left", "state", cfg.StateFile, "err", err)
	}
	s.host = host
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if cfg.DR {
		err = s.setupDR()
	} else {
		err = s.setupTUN()
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// vipPrefix is a VIP as a host route: /32 or /128.
func vipPrefix(a netip.Addr) netip.Prefix {
	return netip.PrefixFrom(a, a.BitLen())
}

func (s *Server) setupDR() error {
	for _, kv := range [][2]string{
		{"net.ipv4.conf.lo.arp_ignore", "1"},
		{"net.ipv4.conf.all.arp_ignore", "1"},
		{"net.ipv4.conf.lo.arp_announce", "2"},
		{"net.ipv4.conf.all.arp_announce", "2"},
	} {
		if err := s.host.Sysctl(kv[0], kv[1]); err != nil {
			return fmt.Errorf("realserver: %w", err)
		}
	}
	for _, v := range s.cfg.VIPs {
		if err := s.host.AddAddr("lo", vipPrefix(v)); err != nil {
			return fmt.Errorf("realserver: VIP %s on lo: %w", v, err)
		}
	}
	s.log.Info("LVS-DR real server set up", "vips", s.cfg.VIPs, "on", "lo")
	return nil
}

func (s *Server) setupTUN() error {
	flt := newFilter(s.cfg.VIPs, s.cfg.From, s.cfg.GUEPort)
	if len(s.cfg.From) == 0 {
		s.log.Warn("no --from: the decapsulator is open, it takes tunnelled packets from any source and anyone reaching this host can send packets from any address to the VIPs")
	}
	t, err := link.OpenTUN(s.cfg.Name, &link.TUNConfig{MultiQueue: true, NoOffload: true, BatchSize: 1})
	if err != nil {
		return fmt.Errorf("realserver: %w", err)
	}
	s.tun = t
	s.queues = append(s.queues, t)
	name := t.Name()
	for _, kv := range [][2]string{
		{"net/ipv4/conf/" + name + "/rp_filter", "0"},
		{"net.ipv4.conf.all.arp_ignore", "1"},
		{"net.ipv4.conf.all.arp_announce", "2"},
	} {
		if err := s.host.Sysctl(kv[0], kv[1]); err != nil {
			return fmt.Errorf("realserver: %w", err)
		}
	}
	// The kernel applies the larger of all's and the device's rp_filter.
	// Strict would drop every inner packet (the route back to a client is
	// not through the TUN); loose keeps the other links checked.
	if v, err := hostconf.ReadSysctl("net.ipv4.conf.all.rp_filter"); err == nil && v == "1" {
		if err := s.host.Sysctl("net.ipv4.conf.all.rp_filter", "2"); err != nil {
			return fmt.Errorf("realserver: %w", err)
		}
	}
	for _, v := range s.cfg.VIPs {
		if err := s.host.AddAddr(name, vipPrefix(v)); err != nil {
			return fmt.Errorf("realserver: VIP %s on %s: %w", v, name, err)
		}
	}
	type sock struct {
		kind   sockKind
		family int
		proto  uint8
	}
	socks := []sock{
		{kindRaw4, unix.AF_INET, protoIPIP}, {kindRaw4, unix.AF_INET, protoIPv6}, {kindRaw4, unix.AF_INET, protoGRE},
		{kindRaw6, unix.AF_INET6, protoIPIP}, {kindRaw6, unix.AF_INET6, protoIPv6}, {kindRaw6, unix.AF_INET6, protoGRE},
	}
	if s.cfg.GUEPort != 0 {
		socks = append(socks, sock{kindUDP, unix.AF_INET, protoUDP}, sock{kindUDP, unix.AF_INET6, protoUDP})
	}
	for _, sk := range socks {
		r, err := openReader(sk.kind, sk.family, sk.proto, s.cfg.GUEPort, s.cfg.BatchSize)
		if err != nil {
			if sk.family == unix.AF_INET6 && errors.Is(err, unix.EAFNOSUPPORT) {
				s.log.Warn("no IPv6: tunnels over IPv6 are not received", "proto", sk.proto)
				continue
			}
			return fmt.Errorf("realserver: %w", err)
		}
		r.flt = flt
		s.readers = append(s.readers, r)
		if len(s.readers) == 1 {
			r.q = t
		} else if r.q, err = t.OpenQueue(); err != nil {
			return fmt.Errorf("realserver: %w", err)
		} else {
			s.queues = append(s.queues, r.q)
		}
	}
	for _, r := range s.readers {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := r.run(); err != nil {
				s.log.Error("receive stopped", "socket", r.name, "err", err)
			}
		}()
	}
	s.log.Info("LVS-TUN real server set up", "vips", s.cfg.VIPs, "device", name, "from", s.cfg.From,
		"gue_port", s.cfg.GUEPort, "sockets", len(s.readers))
	return nil
}

// Device is the TUN device's name ("" in DR mode).
func (s *Server) Device() string {
	if s.tun == nil {
		return ""
	}
	return s.tun.Name()
}

// Close stops receiving and undoes every host change: the state file is
// removed, the TUN device goes. It may be called more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		for _, r := range s.readers {
			r.close()
		}
		s.wg.Wait()
		if s.host != nil {
			errs = append(errs, s.host.Undo())
		}
		for _, q := range s.queues {
			q.Close()
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}
