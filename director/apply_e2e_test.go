package director_test

import (
	"strings"
	"testing"

	"uvs/lab"
)

// TestRefusedChangeKeepsHost: a change the host refuses half-way (here a
// VIP with no route, which --io tun cannot give an interface) changes
// nothing: the service it would have replaced still serves.
func TestRefusedChangeKeepsHost(t *testing.T) {
	e := newEnv(t, "tun")
	e.start()
	vip := lab.DirOuterIP + ":80"
	e.ipvsadm(t, "-A", "-t", vip, "-s", "rr")
	e.ipvsadm(t, "-a", "-t", vip, "-r", lab.RS1IP, "-m")
	rules := "-C\n-A -t 198.18.9.1:80 -s rr\n-a -t 198.18.9.1:80 -r " + lab.RS1IP + " -m\n"
	_, errs, code, err := e.d.IpvsadmIn(strings.NewReader(rules), "-R")
	if err != nil || code == 0 {
		t.Fatalf("-R with an unroutable VIP: code %d, %q, %v; want a refusal", code, errs, err)
	}
	if out := e.ipvsadm(t, "-S", "-n"); !strings.Contains(out, vip) {
		t.Fatalf("the table changed:\n%s", out)
	}
	body, _, err := e.get("http://" + vip + "/")
	if err != nil || body != "rs1" {
		t.Fatalf("the service before the refused change: %q, %v", body, err)
	}
}
