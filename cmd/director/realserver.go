package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"uvs/control"
	"uvs/realserver"
)

// realserverMain runs `director realserver`: the real-server side of
// LVS-DR (--dr) or LVS-TUN, in the foreground until SIGINT or SIGTERM,
// which undo every host change.
func realserverMain(args []string) int {
	const cmd = "director realserver"
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are said below; --help prints the usage itself
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage:
  director realserver --dr --vip VIP[,VIP...] [--state FILE]
  director realserver --vip VIP[,VIP...] [--from DIRECTOR[,...]] [--gue-port P] [--name DEV]
                      [--state FILE] [--metrics ADDR]

--dr sets the host up as an LVS-DR real server: the VIPs on lo, arp_ignore=1 and
arp_announce=2 on lo and all. Without it, an LVS-TUN real server: IPIP, GRE and (with
--gue-port) GUE tunnels are taken in userspace, no kernel tunnel module needed, and their
inner packets handed to the local stack through a TUN device holding the VIPs.
Every host change is undone at SIGINT/SIGTERM, and after a kill at the next start.

`)
		fs.PrintDefaults()
	}
	dr := fs.Bool("dr", false, "LVS-DR real server (VIPs on lo, ARP sysctls); otherwise LVS-TUN")
	vips := fs.String("vip", "", "the virtual addresses, comma-separated (required)")
	from := fs.String("from", "", "TUN: the directors' addresses allowed as tunnel sources, comma-separated (default: any, which is open to spoofing)")
	guePort := fs.String("gue-port", "", "TUN: UDP port to take GUE tunnels on (default: no GUE)")
	name := fs.String("name", realserver.DefaultName, "TUN: name of the TUN device")
	state := fs.String("state", "", "file listing the host changes, for undoing them after a kill (default: "+
		"realserver-dr.state or realserver-DEV.state beside the control socket, in /run/uvs)")
	metricsAddr := fs.String("metrics", "", "serve Prometheus metrics on this address, e.g. :9101")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			// Asked for: the usage on standard output, as `director run
			// --help` prints it.
			fs.SetOutput(os.Stdout)
			fs.Usage()
			return 0
		}
		fmt.Fprintf(os.Stderr, "%s: %v\n", cmd, err)
		fs.SetOutput(os.Stderr)
		fs.Usage()
		return 2
	}
	bad := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, cmd+": "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return bad("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	cfg := realserver.Config{DR: *dr, Name: *name, StateFile: *state}
	if !set["vip"] {
		return bad("--vip is required")
	}
	var err error
	if cfg.VIPs, err = realserver.ParseAddrs(*vips); err != nil {
		return bad("--vip: %v", err)
	}
	if *dr {
		for _, f := range []string{"from", "gue-port", "name", "metrics"} {
			if set[f] {
				return bad("--%s is for LVS-TUN; it cannot be combined with --dr", f)
			}
		}
	}
	if set["from"] {
		if cfg.From, err = realserver.ParseAddrs(*from); err != nil {
			return bad("--from: %v", err)
		}
	}
	if set["gue-port"] {
		p, err := strconv.ParseUint(*guePort, 10, 16)
		if err != nil || p == 0 {
			return bad("--gue-port: %q is not a port (1-65535)", *guePort)
		}
		cfg.GUEPort = uint16(p)
	}
	if !*dr {
		if err := checkIfName(*name); err != nil {
			return bad("--name: %v", err)
		}
	}
	if set["metrics"] {
		if _, _, err := net.SplitHostPort(*metricsAddr); err != nil {
			return bad("--metrics: %v", err)
		}
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		return bad("--log-level: %v", err)
	}
	if cfg.StateFile == "" {
		base := "realserver-dr.state"
		if !*dr {
			base = "realserver-" + *name + ".state"
		}
		cfg.StateFile = filepath.Join(filepath.Dir(control.SocketPath()), base)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, cmd+": must run as root (it changes sysctls and addresses, and opens raw sockets and a TUN device)")
		return 1
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
	slog.SetDefault(log)
	cfg.Logger = log

	// Signals are caught from here on, so a stop during the setup still
	// undoes it.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	s, err := realserver.Start(cfg)
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	if *metricsAddr != "" {
		ln, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			log.Error("metrics", "err", err)
			s.Close()
			return 1
		}
		ms := &http.Server{Handler: s.MetricsHandler(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := ms.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics", "err", err)
			}
		}()
		defer ms.Close()
		log.Info("serving metrics", "addr", ln.Addr().String())
	}
	got := <-sig
	log.Info("stopping", "signal", got.String())
	code := 0
	if err := s.Close(); err != nil {
		log.Error("stop: undoing the host changes", "err", err)
		code = 1
	}
	st := s.Stats()
	var drops []any
	for reason, n := range st.Drops {
		if n > 0 {
			drops = append(drops, reason, n)
		}
	}
	if !*dr {
		log.Info("stopped; packets delivered (ipip, gue, gre) and dropped by reason",
			append([]any{"delivered", st.Packets}, drops...)...)
	}
	return code
}

// checkIfName refuses what cannot be an interface name.
func checkIfName(s string) error {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return fmt.Errorf("%q: 1-15 characters", s)
	}
	for _, c := range s {
		if c <= ' ' || c == '/' || c == ':' || c > '~' {
			return fmt.Errorf("%q: no spaces, slashes, colons or non-ASCII characters", s)
		}
	}
	return nil
}
