package director_test

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"uvs/lab"
)

// TestServerWithoutRoute: a real server the director has no route to is
// accepted, as the kernel accepts it; its packets are counted as no_route
// and the log says so once; when a route appears it is served, without a
// restart or a rule change.
func TestServerWithoutRoute(t *testing.T) {
	for _, mode := range []string{"afpacket", "tun"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, mode)
			// rs1 gets an address in a network the director has no route to.
			if err := e.n.RS[0].Addr("eth0", "198.18.5.2/24"); err != nil {
				t.Fatal(err)
			}
			e.start("--metrics", lab.DirOuterIP+":9100")
			vip := lab.DirOuterIP + ":80"
			e.ipvsadm(t, "-A", "-t", vip, "-s", "rr")
			e.ipvsadm(t, "-a", "-t", vip, "-r", "198.18.5.2", "-m")
			// A rules file with such a line is accepted whole too.
			out, errs, code, err := e.d.IpvsadmIn(strings.NewReader("-A -t "+lab.DirOuterIP+":8081 -s rr\n-a -t "+lab.DirOuterIP+":8081 -r 198.18.5.2 -m\n"), "-R")
			if err != nil || code != 0 {
				t.Fatalf("ipvsadm -R with a server without a route: code %d, %q %q, %v", code, out, errs, err)
			}
			if _, _, err := e.get("http://" + vip + "/"); err == nil {
				t.Fatal("a request reached a server the director has no route to")
			}
			if mode == "afpacket" {
				m := e.scrape(t)
				if !regexp.MustCompile(`uvs_dropped_packets_total\{reason="no_route"\} [1-9]`).MatchString(m) {
					t.Errorf("no_route not counted")
				}
			}
			if err := e.n.Director.Route("198.18.5.0/24", "eth1"); err != nil {
				t.Fatal(err)
			}
			var body string
			deadline := time.Now().Add(5 * time.Second)
			for {
				body, _, err = e.get("http://" + vip + "/")
				if err == nil || time.Now().After(deadline) {
					break
				}
			}
			if err != nil || body != "rs1" {
				t.Fatalf("after the route appeared: %q, %v", body, err)
			}
			log := e.d.Log()
			if n := strings.Count(log, "real server has no route"); mode == "afpacket" && n != 1 {
				t.Errorf("the log says %d times that the server has no route, want once:\n%s", n, log)
			}
			if mode == "afpacket" && !strings.Contains(log, "real server has a route now") {
				t.Errorf("the log does not say the route appeared:\n%s", log)
			}
		})
	}
}
