// Command director is UVS, a userspace virtual server: an L4 load balancer
// that does what Linux IPVS does, without the IPVS module.
//
//	director run [flags]        run the director in the foreground
//	director ipvsadm ARGS...    talk to a running director, ipvsadm style
//	director lab NAME [flags]   build an LVS lab (nat, dr, ssl, pcc, fwmark, tun) in namespaces and show it working
//	director realserver [flags] the real-server side of LVS-DR and LVS-TUN
//	director version            print the version
//
// Invoked through a symlink named ipvsadm, it behaves as `director ipvsadm`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"uvs/bgp"
	"uvs/checker"
	"uvs/control"
	"uvs/director"
	"uvs/ipvsadm"
	"uvs/keepalived"
	"uvs/lab"
	"uvs/metrics"
	"uvs/sdnotify"
	"uvs/service"
	"uvs/syncd"
)

func main() {
	if filepath.Base(os.Args[0]) == "ipvsadm" {
		os.Exit(ipvsadmMain(os.Args[1:]))
	}
	os.Exit(directorMain(os.Args[1:], os.Stdout, os.Stderr))
}

// directorMain runs `director ARGS...`.
func directorMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	rest := args[1:]
	switch args[0] {
	case "run":
		return runMain(rest, stdout, stderr)
	case "ipvsadm":
		return ipvsadmMain(rest)
	case "lab":
		return labMain(rest)
	case "realserver":
		return realserverMain(rest)
	case "install":
		return installMain(rest, stdout, stderr)
	case "version", "--version", "-version", "-V":
		fmt.Fprintln(stdout, versionString())
		return 0
	case "-h", "--help", "-help", "help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "director: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
}

func usage(w io.Writer) {
	fs, _ := runFlags()
	fmt.Fprintf(w, `usage:
  director run %s
  director ipvsadm ARGS...     (or through a symlink named ipvsadm)
  director lab nat|dr|ssl|pcc|fwmark|tun [--keep] [--trace] [--io afpacket|tun] [--tun-type ipip|gue|gre] [--tun-port P]
  director realserver [--dr] --vip VIP[,...] [--from DIRECTOR[,...]] [--gue-port P] [--name DEV]
  director install [--prefix DIR] [--unit-dir DIR] [--etc-dir DIR] [--dry-run]
  director version

director run --help, director lab --help and director realserver --help explain their flags;
director ipvsadm -h shows ipvsadm's usage.
`, synopsis(fs, "               "))
}

// synopsis lists every flag of fs, "[--name ARG]", wrapped with indent.
func synopsis(fs *flag.FlagSet, indent string) string {
	var b strings.Builder
	col := len(indent)
	fs.VisitAll(func(f *flag.Flag) {
		name, _ := flag.UnquoteUsage(f)
		item := "[--" + f.Name
		if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); !isBool && name != "" {
			item += " " + name
		}
		item += "]"
		if col+len(item) > 100 && b.Len() > 0 {
			b.WriteString("\n" + indent)
			col = len(indent)
		} else if b.Len() > 0 {
			b.WriteByte(' ')
			col++
		}
		b.WriteString(item)
		col += len(item)
	})
	return b.String()
}

// version is the director's version; a build from a module version, or
// from a git checkout, adds what it knows (debug.ReadBuildInfo).
const version = "0.1.0"

func versionString() string {
	s := "director (UVS) " + version
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return s
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		s += ", module " + v
	}
	var rev, when string
	modified := false
	for _, kv := range bi.Settings {
		switch kv.Key {
		case "vcs.revision":
			rev = kv.Value
		case "vcs.time":
			when = kv.Value
		case "vcs.modified":
			modified = kv.Value == "true"
		}
	}
	if rev != "" {
		s += ", revision " + rev
		if when != "" {
			s += " (" + when + ")"
		}
		if modified {
			s += " with local changes"
		}
	}
	return s + ", " + bi.GoVersion
}

// runOptions are `director run`'s flags.
type runOptions struct {
	rules, keepalived, io, socket, interfaces, logLevel, pprof, metrics string
	workers, capacity                                                   int
	ring, blocking, affine, synQueues, sloppyTCP, expireNodest          bool
	spin                                                                time.Duration
	bgp                                                                 bgpOptions
	syncPeers, config                                                   string
	peers                                                               []netip.Addr // syncPeers, checked
}

// bgpOptions are the --bgp-* flags: as given, then as checked.
type bgpOptions struct {
	asn, peers, routerID, markVIPs string
	holdTime, drain                time.Duration
	cfg                            *bgp.Config // set by check when --bgp-asn is given
}

// runFlags declares `director run`'s flags; usage shows every one.
func runFlags() (*flag.FlagSet, *runOptions) {
	o := &runOptions{}
	fs := flag.NewFlagSet("director run", flag.ContinueOnError)
	fs.StringVar(&o.config, "config", "", "read flags from a `FILE` first, one per line: `name value`, or `name` for a true one (# starts a comment); flags on the command line override it")
	fs.StringVar(&o.rules, "rules", "", "the rules, a `FILE` in the form ipvsadm -S writes; loaded at start, reloaded on SIGHUP (a bad file is refused whole)")
	fs.StringVar(&o.keepalived, "keepalived", "", "keepalived's configuration, a `FILE` (keepalived.conf): its virtual servers, with real servers taken out and put back as their health checks say; read at start, reloaded on SIGHUP (a bad file is refused whole); beside --rules, each keeps to its own services")
	fs.StringVar(&o.io, "io", director.IOAFPacket, "packet I/O, `MODE` afpacket or tun")
	fs.StringVar(&o.socket, "socket", control.SocketPath(), "the control socket's `PATH` (clients: $UVS_SOCKET); the directory also holds director.lock and, with --io tun, host-changes")
	fs.StringVar(&o.interfaces, "interfaces", "", "afpacket: the interfaces to serve, a comma-separated `LIST` (default: every Ethernet interface that is up)")
	fs.IntVar(&o.workers, "workers", 0, "`N` packet workers (0: one per core); with --afpacket-affine=false, --afpacket-blocking=false or --afpacket-ring, the readers per interface")
	fs.IntVar(&o.capacity, "capacity", 1<<20, "the connection table's limit, `N` entries; when full, new connections are dropped")
	fs.BoolVar(&o.ring, "afpacket-ring", false, "afpacket: receive through a TPACKET_V3 ring instead of recvmmsg (experimental)")
	fs.BoolVar(&o.blocking, "afpacket-blocking", true, "afpacket: wait for frames in a blocking wait on a thread of its own; =false waits in the Go poller (the ring always does)")
	fs.DurationVar(&o.spin, "afpacket-spin", 0, "afpacket: retry an empty socket this long (a `DURATION`, e.g. 20us) before waiting (experimental; burns CPU)")
	fs.BoolVar(&o.affine, "afpacket-affine", true, "afpacket: one worker per core reading every interface, each connection's packets both ways on one worker; =false gives each interface its own workers (the poller and the ring always do)")
	fs.BoolVar(&o.synQueues, "afpacket-syn-queues", true, "afpacket, affine workers: TCP packets with SYN set (new connections) get queues of their own, read after the others, so that a SYN flood does not crowd out established connections; =false shares the queues")
	fs.StringVar(&o.syncPeers, "sync-peers", "", "connection sync by unicast, for networks without multicast: the other directors' `ADDR[,ADDR…]`; the daemons that ipvsadm --start-daemon starts send to them and listen on the interface's own addresses instead of the group (UVS directors only)")
	fs.BoolVar(&o.expireNodest, "expire-nodest-conn", false, "IPVS's expire_nodest_conn: a client packet of a connection whose real server was deleted removes the entry (the packet is dropped), so that the next one is scheduled afresh; with --sloppy-tcp a director whose servers came back takes such flows on")
	fs.BoolVar(&o.sloppyTCP, "sloppy-tcp", false, "IPVS's sloppy_tcp: a TCP packet of a connection the director does not know (other than a RST) is scheduled instead of dropped, so that with -s sh or mh a director taking a flow over mid-way sends it to the server it had")
	fs.StringVar(&o.logLevel, "log-level", "info", "the log's `LEVEL`: debug, info, warn or error")
	fs.StringVar(&o.pprof, "pprof", "", "serve Go's /debug/pprof on this `ADDR` (for profiling the data path)")
	fs.StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics (node_exporter's node_ipvs_* names) on this `ADDR`, e.g. :9100")
	fs.StringVar(&o.bgp.asn, "bgp-asn", "", "announce the VIPs over BGP from this AS number `N` (with --bgp-peer): each VIP as a /32 or /128 while a service on it has a real server of weight > 0")
	fs.StringVar(&o.bgp.peers, "bgp-peer", "", "BGP: the routers to peer with, a comma-separated `LIST` of ADDR or ADDR:ASN ([IPV6]:ASN); without an ASN, iBGP (the --bgp-asn); the director connects, it does not listen")
	fs.StringVar(&o.bgp.routerID, "bgp-router-id", "", "BGP: the router `ID`, an IPv4 address (default: this host's address towards the first IPv4 peer)")
	fs.DurationVar(&o.bgp.holdTime, "bgp-hold-time", bgp.DefaultHoldTime, "BGP: the hold time offered, whole seconds, at least 3s (a keepalive every third of it)")
	fs.DurationVar(&o.bgp.drain, "bgp-drain", bgp.DefaultDrain, "BGP: at stop, how long to go on forwarding after withdrawing the VIPs, before closing the sessions")
	fs.StringVar(&o.bgp.markVIPs, "bgp-fwmark-vip", "", "BGP: the addresses of firewall-mark services, a comma-separated `LIST` of MARK=ADDR, announced while the mark's service has a real server of weight > 0")
	return fs, o
}

func runUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, `usage: director run [flags]

Runs the director in the foreground, as root: it serves the rules given by ipvsadm
(director ipvsadm, or the binary invoked as ipvsadm) through its control socket, those of
--rules, and the virtual servers of --keepalived, whose real servers it health-checks as
keepalived does (taken out when they fail, back when they pass; quorum and sorry server). It
logs to stderr, reloads --rules and --keepalived on SIGHUP (only the difference is applied),
and at SIGTERM or SIGINT stops and undoes every host change. One director runs per network
namespace (a second is refused before it changes anything).
With --bgp-asn and --bgp-peer it announces its VIPs to routers over BGP, for several
directors behind ECMP: each VIP while one of its real servers has a weight above 0; at stop
it withdraws them, drains (--bgp-drain) and only then stops forwarding.

Flags (--flag or -flag):
`)
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// parseConfigFile sets fs's flags from the file at path: one per line,
// "name value" or "name" (a true bool), blank lines and # comments
// skipped. An error names the file and line.
func parseConfigFile(fs *flag.FlagSet, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	for i, line := range strings.Split(string(b), "\n") {
		if c := strings.IndexByte(line, '#'); c >= 0 {
			line = line[:c]
		}
		name, value, hasValue := strings.Cut(strings.TrimSpace(line), " ")
		if name == "" {
			continue
		}
		name = strings.TrimLeft(name, "-")
		arg := "--" + name
		if hasValue {
			arg += "=" + strings.TrimSpace(value)
		}
		if name == "config" {
			return fmt.Errorf("%s:%d: a config file cannot name another", path, i+1)
		}
		if err := fs.Parse([]string{arg}); err != nil {
			return fmt.Errorf("%s:%d: %v", path, i+1, err)
		}
		if fs.NArg() > 0 {
			return fmt.Errorf("%s:%d: unexpected %q", path, i+1, fs.Arg(0))
		}
	}
	return nil
}

// parsePeers checks --sync-peers into o.peers.
func (o *runOptions) parsePeers() error {
	o.peers = nil
	for _, f := range strings.Split(o.syncPeers, ",") {
		a, err := netip.ParseAddr(f)
		if err != nil || a.IsMulticast() || a.IsUnspecified() {
			return fmt.Errorf("--sync-peers %q: %q is not a unicast address", o.syncPeers, f)
		}
		if len(o.peers) > 0 && a.Is4() != o.peers[0].Is4() {
			return fmt.Errorf("--sync-peers %q: one address family, please", o.syncPeers)
		}
		o.peers = append(o.peers, a.Unmap())
	}
	return nil
}

// check validates the flags; set holds those given.
func (o *runOptions) check(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.io != director.IOAFPacket && o.io != director.IOTUN:
		return fmt.Errorf("--io %q: want afpacket or tun", o.io)
	case o.workers < 0:
		return fmt.Errorf("--workers %d: want 0 (one per core) or more", o.workers)
	case o.capacity < 1:
		return fmt.Errorf("--capacity %d: want 1 or more", o.capacity)
	case o.spin < 0:
		return fmt.Errorf("--afpacket-spin %v: want 0 or more", o.spin)
	case o.syncPeers != "" && o.parsePeers() != nil:
		return o.parsePeers()
	case o.socket == "":
		return errors.New("--socket: want a path")
	case o.ring && o.blocking && set["afpacket-blocking"]:
		return errors.New("--afpacket-ring reads through the poller: it cannot be combined with --afpacket-blocking")
	case o.affine && set["afpacket-affine"] && (o.ring || !o.blocking):
		return errors.New("--afpacket-affine reads with blocking waits: it cannot be combined with --afpacket-ring or --afpacket-blocking=false")
	}
	if o.io == director.IOTUN {
		for _, f := range []string{"interfaces", "afpacket-ring", "afpacket-blocking", "afpacket-spin", "afpacket-affine", "afpacket-syn-queues"} {
			if set[f] {
				return fmt.Errorf("--%s is for --io afpacket", f)
			}
		}
	}
	if o.interfaces != "" && slices.Contains(strings.Split(o.interfaces, ","), "") {
		return fmt.Errorf("--interfaces %q: an empty name", o.interfaces)
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	return o.bgp.check(set)
}

// check validates the --bgp-* flags and builds the speaker's Config.
func (o *bgpOptions) check(set map[string]bool) error {
	if o.asn == "" {
		for _, f := range []string{"bgp-peer", "bgp-router-id", "bgp-hold-time", "bgp-drain", "bgp-fwmark-vip"} {
			if set[f] {
				return fmt.Errorf("--%s needs --bgp-asn", f)
			}
		}
		return nil
	}
	asn, err := bgp.ParseASN(o.asn)
	if err != nil {
		return fmt.Errorf("--bgp-asn: %w", err)
	}
	if o.peers == "" {
		return errors.New("--bgp-asn needs --bgp-peer")
	}
	c := &bgp.Config{ASN: asn, HoldTime: o.holdTime, Drain: o.drain}
	if c.Peers, err = bgp.ParsePeers(o.peers); err != nil {
		return fmt.Errorf("--bgp-peer: %w", err)
	}
	if o.routerID != "" {
		if c.RouterID, err = netip.ParseAddr(o.routerID); err != nil || !c.RouterID.Is4() {
			return fmt.Errorf("--bgp-router-id %q: want an IPv4 address", o.routerID)
		}
	}
	if !bgp.ValidHoldTime(o.holdTime) {
		return fmt.Errorf("--bgp-hold-time %v: want whole seconds from 3s to 65535s", o.holdTime)
	}
	if o.drain < 0 {
		return fmt.Errorf("--bgp-drain %v: want 0 or more", o.drain)
	}
	if o.markVIPs != "" {
		if c.MarkVIPs, err = bgp.ParseMarkVIPs(o.markVIPs); err != nil {
			return fmt.Errorf("--bgp-fwmark-vip: %w", err)
		}
	}
	o.cfg = c
	return nil
}

func runMain(args []string, stdout, stderr io.Writer) int {
	fs, o := runFlags()
	fs.SetOutput(stderr)
	fs.Usage = func() {} // errors are shown alone, --help on stdout
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			runUsage(stdout, fs)
			return 0
		}
		fmt.Fprintln(stderr, "see director run --help")
		return 2
	}
	if o.config != "" {
		// The file first, then the command line again over it.
		path := o.config
		fs, o = runFlags()
		fs.SetOutput(io.Discard)
		if err := parseConfigFile(fs, path); err != nil {
			fmt.Fprintf(stderr, "director run: %v\n", err)
			return 2
		}
		fs.SetOutput(stderr)
		if err := fs.Parse(args); err != nil {
			return 2 // parsed once already
		}
	}
	if err := o.check(fs); err != nil {
		fmt.Fprintf(stderr, "director run: %v\n", err)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "director run: must run as root (it opens packet sockets and changes nftables, routing and sysctls)")
		return 1
	}
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(o.logLevel))
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	slog.SetDefault(log)
	// Signals are taken from here on: one that comes during the setup
	// stops the director once it is set up, with the host restored.
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sig)

	cfg := director.Config{IO: o.io, Workers: o.workers, Capacity: o.capacity, AFPacketRing: o.ring,
		StateDir:       filepath.Dir(o.socket),
		AFPacketPoller: !o.blocking, AFPacketSpin: o.spin, AFPacketPerPort: !o.affine,
		AFPacketNoSYNQueues: !o.synQueues, SloppyTCP: o.sloppyTCP,
		ExpireNodestConn: o.expireNodest, Logger: log}
	if o.interfaces != "" {
		cfg.Interfaces = strings.Split(o.interfaces, ",")
	}
	// Read the rules and the keepalived file before touching the host: a
	// bad file changes nothing.
	var initial = loadRulesFile(o.rules, log)
	if o.rules != "" && initial == nil {
		return 1
	}
	var kaFile *keepalived.File
	if o.keepalived != "" {
		if kaFile = loadKeepalivedFile(o.keepalived, log); kaFile == nil {
			return 1
		}
		if initial != nil {
			kc, _ := kaFile.Config() // checked by loadKeepalivedFile
			var keys []service.Key
			for _, s := range kc.Services {
				keys = append(keys, s.Key)
			}
			if err := sharedServices(initial, keys); err != nil {
				log.Error("not started", "rules", o.rules, "keepalived", o.keepalived, "err", err)
				return 1
			}
		}
	}
	// Nothing touches the host before this director knows it is the only
	// one: a second one must neither remove the first one's setup as
	// leftovers nor undo it when it gives up.
	lock, err := control.Acquire(o.socket)
	if err != nil {
		log.Error("not started", "err", err)
		return 1
	}
	defer lock.Release() // after the host is restored (deferred below)
	// The listeners too come first: an address in use stops the start
	// before the host is changed.
	var metricsLn, pprofLn net.Listener
	for _, l := range []struct {
		addr string
		ln   *net.Listener
		what string
	}{{o.metrics, &metricsLn, "--metrics"}, {o.pprof, &pprofLn, "--pprof"}} {
		if l.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			log.Error("not started", "flag", l.what, "err", err)
			return 1
		}
		defer ln.Close()
		*l.ln = ln
	}
	d, err := director.New(cfg)
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	defer func() {
		var drops []any
		for reason, n := range d.Drops() {
			if n > 0 {
				drops = append(drops, reason, n)
			}
		}
		if err := d.Close(); err != nil {
			log.Error("stop", "err", err)
		}
		log.Info("stopped; packets dropped by reason", drops...)
	}()
	if initial != nil {
		if err := d.Replace(initial); err != nil {
			log.Error("apply rules file", "file", o.rules, "err", err)
			return 1
		}
	}
	var chk *checker.Checker
	if kaFile != nil {
		chk, err = checker.New(d, kaFile, checker.Options{Log: log})
		if err != nil {
			log.Error("apply keepalived file", "file", o.keepalived, "err", err)
			return 1
		}
		// Before the director closes (deferred above): no check then
		// changes a table that is going.
		defer chk.Close()
		log.Info("keepalived file applied", "file", o.keepalived, "services", len(chk.Keys()))
	}
	// The connection sync daemons (ipvsadm --start-daemon), stopped
	// before the director.
	st := &syncState{Director: d, sync: syncd.New(d, log, &syncd.Options{Peers: o.peers})}
	defer func() {
		st.sync.Close()
		if s := st.sync.Stats(); s.SentMessages+s.ReceivedMessages > 0 {
			log.Info("connection sync", "sent_messages", s.SentMessages, "sent_conns", s.SentConns,
				"send_errors", s.SendErrors, "queue_dropped", s.QueueDropped, "received_messages", s.ReceivedMessages,
				"learned", s.Learned, "updated", s.Updated, "kept", s.Kept, "dropped", s.Dropped)
		}
	}()
	if kaFile != nil && kaFile.SyncDaemon != nil {
		// keepalived without a VRRP instance runs both daemons; with
		// one they follow its state, which a director without VRRP
		// cannot: both run here (each director master of its own
		// connections and backup of the others').
		sd := kaFile.SyncDaemon
		if sd.Instance != "" {
			log.Warn("keepalived: lvs_sync_daemon: no VRRP here, so the master and backup daemons both run, whatever the state of the instance",
				"at", sd.Pos.String(), "instance", sd.Instance)
		}
		for _, master := range []bool{true, false} {
			c := syncd.Config{Master: master, Interface: sd.Interface, SyncID: sd.SyncID, MaxLen: sd.MaxLen,
				Group: sd.Group, Port: sd.Port, TTL: sd.TTL}
			if err := st.sync.Start(c); err != nil {
				log.Error("keepalived: lvs_sync_daemon", "at", sd.Pos.String(), "err", err)
				return 1
			}
		}
	}
	srv, err := control.Listen(o.socket, func(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
		return ipvsadm.Run(args, stdin, stdout, stderr, st)
	}, log)
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	defer srv.Close()
	var extra []prometheus.Collector
	if c := o.bgp.cfg; c != nil {
		c.Logger = log
		sp, err := bgp.Start(*c, d)
		if err != nil {
			log.Error("start", "err", err)
			return 1
		}
		// Deferred last, so it runs first at stop: the VIPs are
		// withdrawn and drained while the director still forwards.
		defer func() {
			if err := sp.Close(); err != nil {
				log.Error("stop BGP", "err", err)
			}
		}()
		extra = append(extra, bgp.NewCollector(sp))
	}
	extra = append(extra, st.sync.Collector())
	if metricsLn != nil {
		if chk != nil {
			extra = append(extra, chk.Collector())
		}
		ms := &http.Server{Handler: metrics.Handler(d, extra...), ReadHeaderTimeout: 10 * time.Second}
		go ms.Serve(metricsLn)
		defer ms.Close()
		log.Info("serving metrics", "addr", metricsLn.Addr().String())
	}
	if pprofLn != nil {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		ps := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go ps.Serve(pprofLn)
		defer ps.Close()
		log.Info("serving pprof", "addr", pprofLn.Addr().String())
	}
	log.Info("director running", "io", cfg.IO, "socket", o.socket)
	// Under systemd (Type=notify): started, reloading and ready again
	// (whatever the reload's outcome: the rules in force are served),
	// stopping.
	notify := func(err error) {
		if err != nil {
			log.Warn("systemd notification", "err", err)
		}
	}
	notify(sdnotify.Ready())

	for s := range sig {
		if s != syscall.SIGHUP {
			notify(sdnotify.Stopping())
			log.Info("stopping", "signal", s.String())
			return 0
		}
		notify(sdnotify.Reloading())
		notify(sdnotify.Status(reload(d, o, chk, log)))
		notify(sdnotify.Ready())
	}
	return 0
}

// reload re-reads the rules file and the keepalived file (SIGHUP) and
// returns the outcome for systemd's status line.
func reload(d *director.Director, o *runOptions, chk *checker.Checker, log *slog.Logger) string {
	if o.rules == "" && o.keepalived == "" {
		log.Warn("SIGHUP without --rules or --keepalived: nothing to reload")
		return "SIGHUP without --rules or --keepalived: nothing to reload"
	}
	var rules *service.Config
	rulesStatus := ""
	if o.rules != "" {
		if rules = loadRulesFile(o.rules, log); rules == nil {
			rulesStatus = rulesRefused
		}
	}
	// The rules go first, but after the keepalived file when they name one
	// of its services: a service moved from the keepalived file to the
	// rules file is gone from the one before the other has it.
	rulesLast := rules != nil && chk != nil && sharedServices(rules, chk.Keys()) != nil
	if rules != nil && !rulesLast {
		rulesStatus = applyRules(d, o.rules, rules, chk, log)
	}
	kaStatus := ""
	if o.keepalived != "" {
		kaStatus = reloadKeepalived(chk, o.keepalived, log)
	}
	if rulesLast {
		rulesStatus = applyRules(d, o.rules, rules, chk, log)
	}
	var status []string
	for _, st := range []string{rulesStatus, kaStatus} {
		if st != "" {
			status = append(status, st)
		}
	}
	return strings.Join(status, "; ")
}

// rulesRefused is systemd's status line for a rules file refused.
const rulesRefused = "reload refused (see the log): the previous rules stay"

// applyRules makes the table c, the rules file at path, but for the
// services of the keepalived file (chk, if not nil), which stay as they
// are; it returns the outcome for systemd's status line.
func applyRules(d *director.Director, path string, c *service.Config, chk *checker.Checker, log *slog.Logger) string {
	var owned []service.Key
	if chk != nil {
		// Read before Update: the checker edits the table with its own
		// lock held.
		owned = chk.Keys()
	}
	if err := sharedServices(c, owned); err != nil {
		log.Error("rules file rejected, nothing applied", "file", path, "err", err)
		return rulesRefused
	}
	err := d.Update(func(cur *service.Config) error {
		want := c.Clone()
		for _, k := range owned {
			if s := cur.Service(k); s != nil {
				want.Services = append(want.Services, s)
			}
		}
		*cur = *service.Carry(cur, want)
		return nil
	})
	if err != nil {
		log.Error("reload rules: kept the current table", "file", path, "err", err)
		return rulesRefused
	}
	log.Info("rules reloaded", "file", path, "services", len(c.Services))
	return fmt.Sprintf("rules reloaded from %s: %d services", path, len(c.Services))
}

// reloadKeepalived re-reads the keepalived file and has chk apply the
// difference; it returns the outcome for systemd's status line.
func reloadKeepalived(chk *checker.Checker, path string, log *slog.Logger) string {
	const refused = "keepalived reload refused (see the log): the previous configuration stays"
	f := loadKeepalivedFile(path, log)
	if f == nil {
		return refused
	}
	if err := chk.Reload(f); err != nil {
		log.Error("reload keepalived file: kept the current configuration", "file", path, "err", err)
		return refused
	}
	log.Info("keepalived file reloaded", "file", path, "virtual_servers", len(f.VirtualServers))
	return fmt.Sprintf("keepalived file reloaded from %s: %d virtual servers", path, len(f.VirtualServers))
}

// sharedServices is an error naming the services of keys that rules has
// too: each service belongs to the rules or to the keepalived file.
func sharedServices(rules *service.Config, keys []service.Key) error {
	var both []string
	for _, k := range keys {
		if rules.Service(k) != nil {
			both = append(both, k.String())
		}
	}
	if len(both) > 0 {
		return fmt.Errorf("the rules file and the keepalived file both have %s: a service belongs to one of them", strings.Join(both, ", "))
	}
	return nil
}

// loadKeepalivedFile reads and checks a keepalived file, logging what it
// skips once; nil (and a log line naming the file and line) when it is
// bad.
func loadKeepalivedFile(path string, log *slog.Logger) *keepalived.File {
	f, warnings, err := keepalived.Parse(path)
	if err == nil {
		err = checker.Check(f)
	}
	if err != nil {
		log.Error("keepalived file rejected, nothing applied", "file", path, "err", err)
		return nil
	}
	for _, w := range warnings {
		log.Warn("keepalived file: "+w.Msg, "at", w.Pos.String())
	}
	return f
}

// loadRulesFile reads and checks a rules file; nil (and a log line) when
// it is bad or there is none.
func loadRulesFile(path string, log *slog.Logger) *service.Config {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		log.Error("rules file rejected, nothing applied", "file", path, "err", err)
		return nil
	}
	defer f.Close()
	c, err := ipvsadm.LoadRules(f)
	if err != nil {
		var re *ipvsadm.RulesError
		if errors.As(err, &re) {
			log.Error("rules file rejected, nothing applied", "file", path, "line", re.Line, "rule", re.Text, "err", re.Err.Error())
		} else {
			log.Error("rules file rejected, nothing applied", "file", path, "err", err)
		}
		return nil
	}
	return c
}

func ipvsadmMain(args []string) int {
	var stdin []byte
	for _, a := range args {
		if a == "-R" || a == "--restore" {
			b, err := io.ReadAll(os.Stdin)
			if err != nil {
				fmt.Fprintf(os.Stderr, "ipvsadm: read rules: %v\n", err)
				return 1
			}
			stdin = b
			break
		}
	}
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "--version" || args[0] == "-v") {
		// Help needs no director.
		return ipvsadm.Run(args, nil, os.Stdout, os.Stderr, ipvsadm.NewTable())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := control.Call(ctx, control.SocketPath(), control.Request{Args: args, Stdin: stdin})
	if err != nil {
		fmt.Fprintf(os.Stderr, "ipvsadm: %v\n", err)
		return 1
	}
	os.Stdout.Write(resp.Stdout)
	os.Stderr.Write(resp.Stderr)
	return resp.Code
}

const labUsage = "usage: director lab nat|dr|ssl|pcc|fwmark|tun [--keep] [--trace] [--io afpacket|tun] [--tun-type ipip|gue|gre] [--tun-port P]"

func labMain(args []string) int {
	if len(args) == 0 || !slices.Contains(lab.Names, args[0]) {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Println(labUsage)
			return 0
		}
		if len(args) > 0 {
			fmt.Fprintf(os.Stderr, "director lab: no lab %q\n", args[0])
		}
		fmt.Fprintln(os.Stderr, labUsage)
		return 2
	}
	name := args[0]
	fs := flag.NewFlagSet("director lab "+name, flag.ContinueOnError)
	keep := fs.Bool("keep", false, "leave the lab running and print how to enter each namespace")
	ioMode := fs.String("io", director.IOAFPacket, "the director's packet I/O: afpacket or tun")
	trace := fs.Bool("trace", false, "capture the first request's packets on every hop and print them")
	tunType := fs.String("tun-type", "ipip", "lab tun: the encapsulation, ipip, gue or gre")
	tunPort := fs.Uint("tun-port", 0, "lab tun: the GUE port (with --tun-type gue), e.g. 6080")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "director lab %s: unexpected argument %q\n%s\n", name, fs.Arg(0), labUsage)
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if name != "tun" && (set["tun-type"] || set["tun-port"]) {
		fmt.Fprintf(os.Stderr, "director lab %s: --tun-type and --tun-port are for lab tun\n", name)
		return 2
	}
	switch {
	case *tunType != "ipip" && *tunType != "gue" && *tunType != "gre":
		fmt.Fprintf(os.Stderr, "director lab tun: --tun-type %q: ipip, gue or gre\n", *tunType)
		return 2
	case *tunType == "gue" && (*tunPort == 0 || *tunPort > 65535):
		fmt.Fprintln(os.Stderr, "director lab tun: --tun-type gue needs --tun-port (1-65535), e.g. 6080")
		return 2
	case *tunType != "gue" && set["tun-port"]:
		fmt.Fprintln(os.Stderr, "director lab tun: --tun-port is for --tun-type gue")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "lab: %v\n", err)
		return 1
	}
	o := lab.Options{IO: *ioMode, Keep: *keep, Out: os.Stdout, Binary: self,
		Trace: *trace, TunType: *tunType, TunPort: uint16(*tunPort)}
	if err := lab.Run(ctx, name, o); err != nil {
		fmt.Fprintf(os.Stderr, "lab %s: %v\n", name, err)
		return 1
	}
	return 0
}
