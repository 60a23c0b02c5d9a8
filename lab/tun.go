package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"uvs/testbed"
)

// TUN runs the LVS-TUN lab: the real servers are in another network,
// behind a router; the director wraps each client packet in a tunnel to
// one of them, and they answer the client directly through the router.
func TUN(ctx context.Context, o Options) (err error) {
	s, err := newSession(ctx, o)
	if err != nil {
		return err
	}
	defer s.close(&err)
	typ := s.o.TunType
	if typ == "" {
		typ = "ipip"
	}
	var tunOpts, rsOpts []string
	switch typ {
	case "ipip":
	case "gre":
		tunOpts = []string{"--tun-type", "gre"}
	case "gue":
		if s.o.TunPort == 0 {
			return errors.New("--tun-type gue needs --tun-port (e.g. 6080)")
		}
		p := fmt.Sprint(s.o.TunPort)
		tunOpts = []string{"--tun-type", "gue", "--tun-port", p}
		rsOpts = []string{"--gue-port", p}
	default:
		return fmt.Errorf("--tun-type %q: ipip, gue or gre", typ)
	}
	guePort := uint16(0)
	if typ == "gue" {
		guePort = s.o.TunPort
	}

	s.say("# LVS-TUN lab: building namespaces (client and director on one network, a router, two real servers on another)")
	n, err := BuildTUN(s.o.Prefix, 2)
	if err != nil {
		return err
	}
	s.bed = n.Bed
	for i, rs := range n.RS {
		if err := s.serve(rs, ":80", fmt.Sprintf("welcome realserver %d", i+1), nil); err != nil {
			return err
		}
	}
	s.say("#   client    %-10s eth0 %s/24", n.Client.Name, TUNClientIP)
	s.say("#   director  %-10s eth0 %s/24 (DIP) and %s/32 (VIP); 198.18.2.0/24 via %s", n.Director.Name, TUNDirIP, TUNVIP, TUNRouterIP)
	s.say("#   router    %-10s eth0 %s/24, eth1 %s/24", n.Router.Name, TUNRouterIP, TUNRouterIPB)
	for i, rs := range n.RS {
		s.say("#   rs%d       %-10s eth0 %s/24, default via %s; serves \"welcome realserver %d\"", i+1, rs.Name, TUNRSIP(i), TUNRouterIPB, i+1)
	}

	s.say("\n# on each real server: take the tunnels, hold the VIP. This host has no ipip module, so")
	s.say("# `director realserver` takes IPIP, GRE and GUE in userspace and hands the inner packets")
	s.say("# to a TUN device holding the VIP. With the ipip module, the tutorial's way does the same:")
	s.say("#   modprobe ipip; ip addr add %s/32 dev tunl0; ip link set tunl0 up", TUNVIP)
	s.say("#   echo 0 > /proc/sys/net/ipv4/conf/tunl0/rp_filter, and the DR lab's arp_ignore/arp_announce lines")
	args := append([]string{"--vip", TUNVIP, "--from", TUNDirIP}, rsOpts...)
	s.say("$ director realserver %s &", strings.Join(args, " "))
	for i, rs := range n.RS {
		if err := s.startRealServer(rs, fmt.Sprintf("rs%d", i+1), args...); err != nil {
			return err
		}
	}

	s.say("\n# on the director: the VIP on eth0 (done while building the lab)")
	if err := s.startDirector(n.Director); err != nil {
		return err
	}
	vip := TUNVIP + ":80"
	if err := s.ipvsadm(
		[]string{"-A", "-t", vip, "-s", "rr"},
		append([]string{"-a", "-t", vip, "-r", TUNRSIP(0), "-i"}, tunOpts...),
		append([]string{"-a", "-t", vip, "-r", TUNRSIP(1), "-i"}, tunOpts...),
		[]string{"-L", "-n"},
	); err != nil {
		return err
	}
	s.say("\n# on the client: fetch http://%s/ six times", TUNVIP)
	hops := []Hop{
		{n.Client, "client", "eth0"},
		{n.Director, "director", "eth0"},
		{n.Router, "router", "eth0"},
		{n.Router, "router", "eth1"},
		{n.RS[0], "rs1", "eth0"},
		{n.RS[1], "rs2", "eth0"},
	}
	bodies, err := s.fetchAll(n.Client, repeat(fetch{url: "http://" + TUNVIP + "/"}, 6), hops, guePort)
	if err != nil {
		return err
	}
	s.sayAlternation(bodies)
	s.say("# the replies went from the real servers through the router straight to the client, not through the director")
	return s.finish(append([]*testbed.Host{n.Client, n.Director, n.Router}, n.RS...)...)
}

// startRealServer runs `director realserver ARGS...` in h until the lab
// ends, and waits until its TUN device holds the VIP.
func (s *session) startRealServer(h *testbed.Host, name string, args ...string) error {
	state := filepath.Join(s.dir, name+".state")
	cmd := h.Command(s.o.Binary, append([]string{"realserver", "--state", state}, args...)...)
	log := new(logBuffer)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: director realserver: %w", name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	s.atClose(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("%s: director realserver exited (%v):\n%s", name, err, log.String())
		default:
		}
		if hasAddr(h, "uvsrs0", TUNVIP) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: director realserver not ready after 10 s:\n%s", name, log.String())
		}
		if err := s.ctx.Err(); err != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hasAddr reports whether ifname in h holds ip.
func hasAddr(h *testbed.Host, ifname, ip string) bool {
	found := false
	_ = h.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if p, ok := a.(*net.IPNet); ok && p.IP.String() == ip {
				found = true
			}
		}
		return nil
	})
	return found
}
