// Package keepalived reads the LVS part of a keepalived.conf: virtual
// servers, virtual server groups, real servers and their health checkers,
// into plain data, and turns it into the ipvsadm-level rule table.
//
// The syntax and meaning are keepalived's, as keepalived.conf(5) (keepalived
// 2.2.7) documents them; where the page is silent, what keepalived
// --config-test reports was taken as the fact, and the comment says so.
// Sections this package does not handle (vrrp_instance, global_defs but
// for its lvs_sync_daemon, ...) and keywords it does not know are skipped
// with a warning; anything
// malformed is an error naming the file and line, and then nothing is
// returned.
//
// Settings are resolved as keepalived resolves them: a value given for a
// virtual server is the default for its real servers, a real server's is
// the default for its checkers, and what nobody gave is keepalived's
// documented default. The model holds the resolved values.
//
// Not supported, with an error: protocol SCTP (the director has none),
// conditional configuration ("@id" lines) where it touches the LVS part,
// parameter substitution ("$NAME", "${NAME}") in the LVS part. Skipped
// with a warning: every other section, the checkers SMTP_CHECK,
// UDP_CHECK, PING_CHECK, BFD_CHECK and FILE_CHECK, and keywords such as
// smtp_alert, ha_suspend, snmp_name, http_protocol and regex.
package keepalived

import (
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"uvs/service"
)

// Pos is where something is written: a file as the configuration names it
// and a line, from 1.
type Pos struct {
	File string
	Line int
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d", p.File, p.Line) }

// Warning is something skipped or corrected; the configuration is still
// used.
type Warning struct {
	Pos Pos
	Msg string
}

func (w Warning) String() string { return w.Pos.String() + ": " + w.Msg }

// Error is a configuration that cannot be used: "FILE:LINE: message".
type Error struct {
	Pos Pos
	Msg string
}

func (e *Error) Error() string { return e.Pos.String() + ": " + e.Msg }

func errorf(p Pos, format string, args ...any) error {
	return &Error{Pos: p, Msg: fmt.Sprintf(format, args...)}
}

// File is the LVS configuration of a keepalived.conf and its includes.
type File struct {
	VirtualServers []*VirtualServer  // in file order
	Groups         map[string]*Group // virtual_server_group, by name
	// SyncDaemon is global_defs' lvs_sync_daemon, nil if none.
	SyncDaemon *SyncDaemon
}

// SyncDaemon is global_defs' lvs_sync_daemon: IPVS's connection sync.
// Without a VRRP instance keepalived runs the master and the backup
// daemon both, as long as it runs; with one, the daemons follow the
// instance's state (which the director, having no VRRP, cannot: it runs
// both).
type SyncDaemon struct {
	Pos       Pos
	Interface string
	Instance  string     // the VRRP instance named, "" for none
	SyncID    uint8      // id; keepalived's default is the instance's VRID, here 0 when not given
	MaxLen    int        // 0: IPVS's default
	Port      uint16     // 0: IPVS's default (8848)
	TTL       uint8      // 0: IPVS's default (1)
	Group     netip.Addr // unset: IPVS's default (224.0.0.81)
}

// Group is a virtual_server_group: services that share one set of real
// servers.
type Group struct {
	Pos     Pos
	Name    string
	Members []Member
}

// Member is one line of a virtual_server_group: an address range and port,
// or a firewall mark.
type Member struct {
	Pos         Pos
	First, Last netip.Addr // inclusive; equal for a single address; unset for a fwmark
	Port        uint16     // 0 when not given (persistent services only)
	FWMark      uint32
	// Family is what "fwmark N inet|inet6" gave: "inet", "inet6", or ""
	// for the virtual server's family.
	Family string
}

// VirtualServer is a virtual_server block. Exactly one of Addr (IP PORT),
// FWMark and Group names the service or services.
type VirtualServer struct {
	Pos    Pos
	Addr   netip.AddrPort // the port is 0 when not given
	FWMark uint32
	Group  string

	// IPv6 is the family: the address's, or for a fwmark (and a group's
	// fwmarks without one) ip_family, else the one persistence_granularity
	// or the real servers imply.
	IPv6     bool
	Protocol uint8 // service.TCP or service.UDP; 0 for a fwmark

	Sched       string             // lvs_sched (lb_algo)
	SchedFlags  service.SchedFlags // flag-N, sh-port, ... in the service model's terms
	OnePacket   bool               // ops
	Persistent  bool
	Timeout     time.Duration // persistence_timeout, when Persistent
	Granularity int           // persistence_granularity as service.Service.Netmask holds it; -1 when not given
	PE          string        // persistence_engine

	Method service.Fwd // lvs_method (lb_kind): the real servers' default
	Tunnel Tunnel      // its tunnel options when Method is FwdTunnel

	DelayLoop  time.Duration
	Quorum     int
	Hysteresis int
	QuorumUp   Script
	QuorumDown Script
	Alpha      bool // on startup every real server is down until its checks pass
	Omega      bool // on shutdown the quorum_down and notify_down scripts run

	// InhibitOnFailure and VirtualHost are the real servers' defaults, kept
	// for reference: the real servers and checkers hold what applies.
	InhibitOnFailure bool
	VirtualHost      string

	Sorry *RealServer // sorry_server, nil if none; it has no checkers
	Reals []*RealServer
}

// Tunnel is lvs_method TUN's options, as service.Dest holds them.
type Tunnel struct {
	Type string // ipip, gue, gre
	Port uint16 // gue's port
	Csum string // "" for ipip; nocsum (the default), csum or remcsum
}

// Script is a command keepalived runs: notify_up, quorum_down, misc_path.
// Command is as written (its parameters separated by spaces, a single-
// quoted parameter may hold spaces); User and Group are "" when not given.
type Script struct {
	Command     string
	User, Group string
}

// RealServer is a real_server block (or a sorry_server line).
type RealServer struct {
	Pos Pos
	// Addr's port is as written, 0 when not given. For a service with an
	// address and port (not a fwmark or group), a missing port is the
	// service's, and DR and TUN servers have the service's port, as
	// keepalived and ipvsadm set them. For groups Config does this per
	// member.
	Addr       netip.AddrPort
	Weight     int
	Method     service.Fwd
	Tunnel     Tunnel
	UThreshold uint32 // 0: none
	LThreshold uint32
	NotifyUp   Script
	NotifyDown Script

	InhibitOnFailure bool // on failure set the weight to 0 rather than remove the server
	Alpha            bool
	Checkers         []*Checker
}

// Checker kinds handled.
const (
	TCPCheck  = "TCP_CHECK"
	HTTPGet   = "HTTP_GET"
	SSLGet    = "SSL_GET"
	MiscCheck = "MISC_CHECK"
	DNSCheck  = "DNS_CHECK"
)

// Checker is a health checker of a real server, its settings resolved.
type Checker struct {
	Pos  Pos
	Kind string // TCPCheck, HTTPGet, SSLGet, MiscCheck or DNSCheck

	// ConnectIP and ConnectPort default to the real server's address and
	// port; ConnectPort is 0 when that port depends on the service (a
	// group or fwmark service whose real server has no port).
	ConnectIP   netip.Addr
	ConnectPort uint16
	BindTo      netip.Addr // unset: the system chooses
	BindPort    uint16

	ConnectTimeout   time.Duration
	Retry            int
	DelayBeforeRetry time.Duration
	Warmup           time.Duration // the most a first check is delayed, at random
	DelayLoop        time.Duration
	Alpha            bool

	// HTTP_GET, SSL_GET
	URLs        []URL
	VirtualHost string
	EnableSNI   bool // SSL_GET

	// MISC_CHECK
	Misc        Script
	MiscTimeout time.Duration
	MiscDynamic bool

	// DNS_CHECK
	DNSType string // A, NS, CNAME, SOA, MX, TXT, AAAA
	DNSName string
}

// URL is an HTTP_GET or SSL_GET url block.
type URL struct {
	Path        string
	Digest      string      // lower-case hex MD5 of the body, "" for none
	StatusCodes []CodeRange // the codes that mean up
	VirtualHost string      // resolved: the url's, else the checker's
}

// CodeRange is an inclusive range of HTTP status codes.
type CodeRange struct{ Min, Max int }

// Parse reads the configuration file at path and the files it includes.
func Parse(path string) (*File, []Warning, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, nil, err
	}
	// The whole file system, so that absolute includes work; names in it
	// have no leading slash.
	return parse(os.DirFS("/"), strings.TrimPrefix(filepath.ToSlash(abs), "/"), path, "/")
}

// ParseFS is Parse for a file of fsys: includes are read from fsys, an
// absolute include name from its root.
func ParseFS(fsys fs.FS, name string) (*File, []Warning, error) {
	return parse(fsys, name, name, "")
}
