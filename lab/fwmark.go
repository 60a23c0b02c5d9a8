package lab

import (
	"context"
	"fmt"
	"strings"
)

// FWMarkRules are the tutorial's example 5 marking lines, with the lab's
// VIP: ports 80 and 443 of the VIP get mark 20.
func FWMarkRules(vip string) [][]string {
	var out [][]string
	for _, port := range []string{"80", "443"} {
		out = append(out, []string{"-t", "mangle", "-A", "PREROUTING", "-i", "eth0", "-p", "tcp", "-d", vip, "--dport", port, "-j", "MARK", "--set-mark", "20"})
	}
	return out
}

// FWMark runs the tutorial's example 5: the host's iptables rules mark
// ports 80 and 443 of the VIP with 20, and one persistent firewall-mark
// service balances the mark, so a client keeps its real server across
// both ports.
func FWMark(ctx context.Context, o Options) (err error) {
	s, err := newSession(ctx, o)
	if err != nil {
		return err
	}
	defer s.close(&err)
	l, err := buildDRLab(s, "LVS-DR firewall-mark (port affinity) lab", drPort{addr: ":80"}, drPort{addr: ":443", tls: true})
	if err != nil {
		return err
	}
	s.say("\n# on the director: the host's own netfilter marks ports 80 and 443 of the VIP with 20")
	for _, r := range FWMarkRules(DRVIP) {
		s.say("$ iptables %s", strings.Join(r, " "))
		if out, err := l.n.Director.Exec("iptables", r...); err != nil {
			return fmt.Errorf("iptables %s: %v: %s", strings.Join(r, " "), err, out)
		}
	}
	if err := s.ipvsadm(
		[]string{"-A", "-f", "20", "-s", "wlc", "-p", "1200"},
		[]string{"-a", "-f", "20", "-r", DRRSIP(0), "-g", "-w", "3"},
		[]string{"-a", "-f", "20", "-r", DRRSIP(1), "-g", "-w", "2"},
		[]string{"-L", "-n"},
	); err != nil {
		return err
	}
	urls := []string{"http://" + DRVIP + "/", "https://" + DRVIP + "/"}
	var fs []fetch
	for range 2 {
		for _, u := range urls {
			fs = append(fs, fetch{url: u})
		}
	}
	s.say("\n# on the client (%s): ports 80 and 443 (HTTPS, not verified), twice", DRClientIP)
	bodies, err := s.fetchAll(l.n.Client, fs, l.hops(), 0)
	if err != nil {
		return err
	}
	if same(bodies) {
		s.say("# every answer came from the same real server: one mark, one service, one persistence template")
	} else {
		s.say("# the answers came from more than one real server")
	}
	s.say("")
	if err := s.ipvsadm([]string{"-L", "-n", "-c"}); err != nil {
		return err
	}
	s.say("# the entry with port 0 is the template: the client and the mark (20), whatever the port")

	if err := l.secondClient(urls, bodies[0], "wlc: the other server had fewer connections for its weight"); err != nil {
		return err
	}
	s.say("\n# port 8080 is not marked: no service takes it, and the director's own host answers (a reset)")
	if _, err := get(ctx, client(l.n.Client, ""), "http://"+DRVIP+":8080/"); err == nil {
		return fmt.Errorf("port 8080 was served; nothing marks it")
	} else {
		s.say("curl http://%s:8080/: %v", DRVIP, shortErr(err))
	}
	return s.finish(l.hosts()...)
}

// shortErr is the last part of a dial error ("connection refused").
func shortErr(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		return msg[i+2:]
	}
	return msg
}
