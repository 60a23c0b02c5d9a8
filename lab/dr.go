package lab

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"

	"uvs/testbed"
)

// drLab is the DR topology of the DR, SSL and PCC labs, built and set up
// as the tutorial's example 2 has it, with the director running.
type drLab struct {
	*session
	n *DRNet
}

// drPort is a service a DR lab's real servers offer.
type drPort struct {
	addr string
	tls  bool
}

// buildDRLab builds the DR topology, types the real servers' and the
// director's setup and starts the director. The real servers serve
// "welcome realserver N" on every port in ports.
func buildDRLab(s *session, title string, ports ...drPort) (*drLab, error) {
	s.say("# %s: building namespaces (client, director, two real servers, one switch joining them all)", title)
	n, err := BuildDR(s.o.Prefix, 2)
	if err != nil {
		return nil, err
	}
	s.bed = n.Bed
	l := &drLab{session: s, n: n}
	var cfg *tls.Config
	for _, p := range ports {
		if p.tls && cfg == nil {
			if cfg, err = selfSigned(DRVIP); err != nil {
				return nil, err
			}
		}
	}
	var served []string
	for _, p := range ports {
		c := (*tls.Config)(nil)
		name := "HTTP"
		if p.tls {
			c, name = cfg, "HTTPS"
		}
		served = append(served, name+" on "+strings.TrimPrefix(p.addr, ":"))
		for i, rs := range n.RS {
			if err := s.serve(rs, p.addr, fmt.Sprintf("welcome realserver %d", i+1), c); err != nil {
				return nil, err
			}
		}
	}
	s.say("#   client    %-10s eth0 %s/24", n.Client.Name, DRClientIP)
	s.say("#   director  %-10s eth0 %s/24 (DIP) and %s/32 (VIP)", n.Director.Name, DRDirIP, DRVIP)
	for i, rs := range n.RS {
		s.say("#   rs%d       %-10s eth0 %s/24, lo %s/32 (VIP); %s: \"welcome realserver %d\"", i+1, rs.Name, DRRSIP(i), DRVIP, strings.Join(served, ", "), i+1)
	}
	if cfg != nil {
		s.say("#   (the HTTPS certificate is self-signed, made at lab start; the client skips its verification, as curl -k)")
	}

	s.say("\n# on each real server: keep quiet about the VIP on ARP, hold it on lo")
	for _, c := range DRRealServerCommands(DRVIP) {
		s.say("$ %s", c)
	}
	for _, rs := range n.RS {
		if err := SetupDRRealServer(rs, DRVIP); err != nil {
			return nil, err
		}
	}
	s.say("#   (or, with this program: director realserver --dr --vip %s)", DRVIP)

	s.say("\n# on the director: the VIP on eth0, done while building the lab; the tutorial's")
	s.say("#   ifconfig eth0:1 %s broadcast %s netmask 255.255.255.255 up", DRVIP, DRVIP)
	s.say("#   route add -host %s dev eth0:1", DRVIP)
	s.say("# is today's")
	s.say("#   ip addr add %s/32 dev eth0 label eth0:1", DRVIP)
	if err := s.startDirector(n.Director); err != nil {
		return nil, err
	}
	return l, nil
}

// hops are where a DR lab's trace looks.
func (l *drLab) hops() []Hop {
	return []Hop{
		{l.n.Client, "client", "eth0"},
		{l.n.Director, "director", "eth0"},
		{l.n.RS[0], "rs1", "eth0"},
		{l.n.RS[1], "rs2", "eth0"},
	}
}

func (l *drLab) hosts() []*testbed.Host {
	return append([]*testbed.Host{l.n.Client, l.n.Director}, l.n.RS...)
}

// DR runs the LVS-DR lab: the tutorial's example 2, including its first
// director line, which ipvsadm refuses.
func DR(ctx context.Context, o Options) (err error) {
	s, err := newSession(ctx, o)
	if err != nil {
		return err
	}
	defer s.close(&err)
	l, err := buildDRLab(s, "LVS-DR lab", drPort{addr: ":80"})
	if err != nil {
		return err
	}
	vip := DRVIP + ":80"
	bad := []string{"-A", "-t", vip, "-s", "rr", "-g"}
	s.say("$ ipvsadm %s", strings.Join(bad, " "))
	so, se, code, err := s.d.Ipvsadm(bad...)
	if err != nil {
		return err
	}
	s.say("%s%s(exit status %d)", so, se, code)
	if code == 0 {
		return fmt.Errorf("ipvsadm %s was accepted; the tutorial's ipvsadm refuses it", strings.Join(bad, " "))
	}
	s.say("# the forwarding method belongs to each real server (-a ... -g), and -g is the default there:")
	if err := s.ipvsadm(
		[]string{"-A", "-t", vip, "-s", "rr"},
		[]string{"-a", "-t", vip, "-r", DRRSIP(0)},
		[]string{"-a", "-t", vip, "-r", DRRSIP(1)},
		[]string{"-L", "-n"},
	); err != nil {
		return err
	}
	s.say("\n# on the client: fetch http://%s/ six times", DRVIP)
	bodies, err := s.fetchAll(l.n.Client, repeat(fetch{url: "http://" + DRVIP + "/"}, 6), l.hops(), 0)
	if err != nil {
		return err
	}
	s.sayAlternation(bodies)
	s.say("# the replies went from the real servers straight to the client: the director saw none (OutPkts 0 below)")
	return s.finish(l.hosts()...)
}

// SSL runs the tutorial's example 3: an HTTPS service on 443, forwarded
// by LVS-DR; the director does not look inside, the real servers do TLS.
func SSL(ctx context.Context, o Options) (err error) {
	s, err := newSession(ctx, o)
	if err != nil {
		return err
	}
	defer s.close(&err)
	l, err := buildDRLab(s, "LVS-DR SSL lab", drPort{addr: ":443", tls: true})
	if err != nil {
		return err
	}
	vip := DRVIP + ":443"
	if err := s.ipvsadm(
		[]string{"-A", "-t", vip, "-s", "rr"},
		[]string{"-a", "-t", vip, "-r", DRRSIP(0), "-g"},
		[]string{"-a", "-t", vip, "-r", DRRSIP(1), "-g"},
		[]string{"-L", "-n"},
	); err != nil {
		return err
	}
	s.say("\n# on the client: fetch https://%s/ six times (curl -k: the certificate is self-signed, not verified)", DRVIP)
	bodies, err := s.fetchAll(l.n.Client, repeat(fetch{url: "https://" + DRVIP + "/"}, 6), l.hops(), 0)
	if err != nil {
		return err
	}
	s.sayAlternation(bodies)
	s.say("# the director forwarded TCP to 443 without touching TLS: each real server did its own handshake")
	return s.finish(l.hosts()...)
}

// PCCClient2 is the second client address the PCC lab adds to the
// client's eth0.
const PCCClient2 = "198.18.0.3"

// PCC runs the tutorial's example 4: a persistent service on every port
// of the VIP (port 0), so every service a client asks for goes to the
// same real server while the persistence lasts.
func PCC(ctx context.Context, o Options) (err error) {
	s, err := newSession(ctx, o)
	if err != nil {
		return err
	}
	defer s.close(&err)
	l, err := buildDRLab(s, "LVS-DR persistence (PCC) lab", drPort{addr: ":80"}, drPort{addr: ":8080"}, drPort{addr: ":443", tls: true})
	if err != nil {
		return err
	}
	vip := DRVIP + ":0"
	if err := s.ipvsadm(
		[]string{"-A", "-t", vip, "-p", "1200"},
		[]string{"-a", "-t", vip, "-r", DRRSIP(0), "-g", "-w", "10"},
		[]string{"-a", "-t", vip, "-r", DRRSIP(1), "-g", "-w", "5"},
		[]string{"-L", "-n"},
	); err != nil {
		return err
	}
	urls := []string{"http://" + DRVIP + "/", "http://" + DRVIP + ":8080/", "https://" + DRVIP + "/"}
	var fs []fetch
	for range 2 {
		for _, u := range urls {
			fs = append(fs, fetch{url: u})
		}
	}
	s.say("\n# on the client (%s): ports 80, 8080 and 443 (HTTPS, not verified), twice", DRClientIP)
	bodies, err := s.fetchAll(l.n.Client, fs, l.hops(), 0)
	if err != nil {
		return err
	}
	if same(bodies) {
		s.say("# every answer came from the same real server: the client sticks to it, whatever the port")
	} else {
		s.say("# the answers came from more than one real server")
	}
	s.say("")
	if err := s.ipvsadm([]string{"-L", "-n", "-c"}); err != nil {
		return err
	}
	s.say("# the entry with port 0 (%s:0 -> server:0) is the persistence template: it sends every", DRClientIP)
	s.say("# new connection of that client to that server for 1200 s after its last one (its state is")
	s.say("# NONE until a connection through it is established, ASSURED after)")

	if err := l.secondClient(urls, bodies[0], "wlc: the other server had no connections"); err != nil {
		return err
	}
	return s.finish(l.hosts()...)
}

// secondClient adds PCCClient2 to the client, fetches urls from it and
// says whether it stuck to one server, and whether that is not first's
// (why: what made the scheduler pick the other).
func (l *drLab) secondClient(urls []string, first, why string) error {
	s := l.session
	s.say("\n# a second client address on the client, %s, is another client for persistence:", PCCClient2)
	s.say("$ ip addr add %s/24 dev eth0", PCCClient2)
	if err := l.n.Client.Addr("eth0", PCCClient2+"/24"); err != nil {
		return err
	}
	var fs []fetch
	for _, u := range urls {
		fs = append(fs, fetch{url: u, from: PCCClient2})
	}
	bodies, err := s.fetchAll(l.n.Client, fs, nil, 0)
	if err != nil {
		return err
	}
	switch {
	case !same(bodies):
		s.say("# the answers to %s came from more than one real server", PCCClient2)
	case bodies[0] != first:
		s.say("# %s was scheduled anew (%s) and sticks to its server too", PCCClient2, why)
	default:
		s.say("# %s was scheduled anew, to the same server, and sticks to it too", PCCClient2)
	}
	return nil
}

// selfSigned makes a certificate for ip, valid for a day, and its key.
func selfSigned(ip string) (*tls.Config, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: ip},
		IPAddresses:  []net.IP{net.ParseIP(ip)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, nil
}
