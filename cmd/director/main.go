// Command director is UVS, a userspace virtual server: an L4 load balancer
// that does what Linux IPVS does, without the IPVS module.
//
//	director run [flags]        run the director in the foreground
//	director ipvsadm ARGS...    talk to a running director, ipvsadm style
//	director lab NAME [flags]   build an LVS lab (nat, dr, ssl, pcc, tun) in namespaces and show it working
//
// Invoked through a symlink named ipvsadm, it behaves as `director ipvsadm`.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"uvs/control"
	"uvs/director"
	"uvs/ipvsadm"
	"uvs/lab"
	"uvs/metrics"
	"uvs/service"
)

func main() {
	if filepath.Base(os.Args[0]) == "ipvsadm" {
		os.Exit(ipvsadmMain(os.Args[1:]))
	}
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "run":
		os.Exit(runMain(args))
	case "ipvsadm":
		os.Exit(ipvsadmMain(args))
	case "lab":
		os.Exit(labMain(args))
	case "realserver":
		os.Exit(realserverMain(args))
	case "-h", "--help", "help":
		usage(os.Stdout)
	default:
		fmt.Fprintf(os.Stderr, "director: unknown command %q\n", os.Args[1])
		usage(os.Stderr)
		os.Exit(2)
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  director run [--rules FILE] [--io afpacket|tun] [--socket PATH] [--interfaces IF,...]
  director ipvsadm ARGS...     (or through a symlink named ipvsadm)
  director lab nat|dr|ssl|pcc|tun [--keep] [--trace] [--io afpacket|tun] [--tun-type ipip|gue|gre] [--tun-port P]
  director realserver [--dr] --vip VIP[,...] [--from DIRECTOR[,...]] [--gue-port P] [--name DEV]
`)
}

func runMain(args []string) int {
	fs := flag.NewFlagSet("director run", flag.ContinueOnError)
	rules := fs.String("rules", "", "rules file in `ipvsadm -S` form; loaded at start, reloaded on SIGHUP")
	ioMode := fs.String("io", director.IOAFPacket, "packet I/O: afpacket or tun")
	sock := fs.String("socket", control.SocketPath(), "control socket")
	ifs := fs.String("interfaces", "", "comma-separated interfaces to serve (afpacket; default: every Ethernet interface that is up)")
	workers := fs.Int("workers", 0, "packet workers per interface (0 = one per core, spread over the interfaces)")
	capacity := fs.Int("capacity", 1<<20, "connection table limit")
	ring := fs.Bool("afpacket-ring", false, "afpacket: receive through a TPACKET_V3 ring instead of recvmmsg (experimental)")
	blocking := fs.Bool("afpacket-blocking", true, "afpacket: wait for frames in a blocking recvmmsg on a locked thread; =false waits in the Go poller (the ring always does)")
	spin := fs.Duration("afpacket-spin", 0, "afpacket: retry an empty socket this long before waiting, e.g. 20us (experimental; burns CPU)")
	affine := fs.Bool("afpacket-affine", true, "afpacket: one worker per core reading every interface, each connection's packets both ways on one worker; =false gives each interface its own workers (the poller and the ring always do)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	pprofAddr := fs.String("pprof", "", "serve Go's /debug/pprof on this address (for profiling the data path)")
	metricsAddr := fs.String("metrics", "", "serve Prometheus metrics (node_exporter's node_ipvs_* names) on this address, e.g. :9100")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	setFlags := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { setFlags[f.Name] = true })
	if *ring && *blocking && setFlags["afpacket-blocking"] {
		fmt.Fprintln(os.Stderr, "director run: --afpacket-ring reads through the poller: it cannot be combined with --afpacket-blocking")
		return 2
	}
	if *affine && setFlags["afpacket-affine"] && (*ring || !*blocking) {
		fmt.Fprintln(os.Stderr, "director run: --afpacket-affine reads with blocking waits: it cannot be combined with --afpacket-ring or --afpacket-blocking=false")
		return 2
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(os.Stderr, "director run: --log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
	slog.SetDefault(log)

	cfg := director.Config{IO: *ioMode, Workers: *workers, Capacity: *capacity, AFPacketRing: *ring,
		StateDir:       filepath.Dir(*sock),
		AFPacketPoller: !*blocking, AFPacketSpin: *spin, AFPacketPerPort: !*affine, Logger: log}
	if *ifs != "" {
		cfg.Interfaces = strings.Split(*ifs, ",")
	}
	// Read the rules before touching the host: a bad file changes nothing.
	var initial = loadRulesFile(*rules, log)
	if *rules != "" && initial == nil {
		return 1
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
			log.Error("apply rules file", "file", *rules, "err", err)
			return 1
		}
	}
	srv, err := control.Listen(*sock, func(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
		return ipvsadm.Run(args, stdin, stdout, stderr, d)
	}, log)
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	defer srv.Close()
	if *metricsAddr != "" {
		ms := &http.Server{Addr: *metricsAddr, Handler: metrics.Handler(d), ReadHeaderTimeout: 10 * time.Second}
		ln, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			log.Error("metrics", "err", err)
			return 1
		}
		go ms.Serve(ln)
		defer ms.Close()
		log.Info("serving metrics", "addr", ln.Addr().String())
	}
	if *pprofAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		ps := &http.Server{Addr: *pprofAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go ps.ListenAndServe()
		defer ps.Close()
	}
	log.Info("director running", "io", cfg.IO, "socket", *sock)

	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	for s := range sig {
		if s != syscall.SIGHUP {
			log.Info("stopping", "signal", s.String())
			return 0
		}
		if *rules == "" {
			log.Warn("SIGHUP without --rules: nothing to reload")
			continue
		}
		if c := loadRulesFile(*rules, log); c != nil {
			if err := d.Replace(c); err != nil {
				log.Error("reload rules: kept the current table", "file", *rules, "err", err)
			} else {
				log.Info("rules reloaded", "file", *rules, "services", len(c.Services))
			}
		}
	}
	return 0
}

// loadRulesFile reads and checks a rules file; nil (and a log line) when
// it is bad or there is none.
func loadRulesFile(path string, log *slog.Logger) *service.Config {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		log.Error("rules file", "err", err)
		return nil
	}
	defer f.Close()
	c, err := ipvsadm.LoadRules(f)
	if err != nil {
		log.Error("rules file rejected, nothing applied", "file", path, "err", err)
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

const labUsage = "usage: director lab nat|dr|ssl|pcc|tun [--keep] [--trace] [--io afpacket|tun] [--tun-type ipip|gue|gre] [--tun-port P]"

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
