package director_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"uvs/lab"
)

// TestSloppyTCP restarts the director under an established connection:
// the new director knows nothing of it. By default its next segment is
// dropped (only a SYN opens a connection); with --sloppy-tcp it is
// scheduled, and sh sends it to the server it had, so the connection
// goes on.
func TestSloppyTCP(t *testing.T) {
	for _, mode := range []string{"afpacket", "tun"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, mode)
			vip := net.JoinHostPort(lab.DirOuterIP, "7000")
			rules := filepath.Join(e.dir, "rules")
			rs := "-A -t " + vip + " -s sh\n" +
				"-a -t " + vip + " -r " + lab.RS1IP + ":7000 -m -w 1\n" +
				"-a -t " + vip + " -r " + lab.RS2IP + ":7000 -m -w 1\n"
			if err := os.WriteFile(rules, []byte(rs), 0o600); err != nil {
				t.Fatal(err)
			}
			restart := func(extra ...string) {
				t.Helper()
				if e.d != nil {
					if err := e.d.Stop(); err != nil {
						t.Fatal(err)
					}
				}
				e.start(append([]string{"--rules", rules}, extra...)...)
			}

			restart()
			c, r, _, err := e.echoConn(t, vip)
			if err != nil {
				t.Fatal(err)
			}
			restart()
			c.SetDeadline(time.Now().Add(2 * time.Second))
			if got, err := echo(c, r, "lost"); err == nil {
				t.Fatalf("without --sloppy-tcp a connection the director does not know went on: %q", got)
			}
			c.Close()

			c, r, name, err := e.echoConn(t, vip)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			restart("--sloppy-tcp")
			for _, line := range []string{"one", "two", "three"} {
				got, err := echo(c, r, line)
				if err != nil || got != name+": "+line {
					t.Fatalf("after a restart with --sloppy-tcp: %q %v, want %q", got, err, name+": "+line)
				}
			}
			if out := e.ipvsadm(t, "-L", "-n", "-c"); !strings.Contains(out, "ESTABLISHED") {
				t.Errorf("the connection taken over is not listed ESTABLISHED:\n%s", out)
			}
		})
	}
}

// TestExpireNodestConn: a real server deleted and added again under an
// established connection. By default the connection's entry still names
// the deleted server and its packets are dropped until it times out; with
// --expire-nodest-conn and --sloppy-tcp the first packet removes the entry
// and the retransmission is scheduled again, by sh to the same server.
func TestExpireNodestConn(t *testing.T) {
	for _, mode := range []string{"afpacket", "tun"} {
		t.Run(mode, func(t *testing.T) {
			for _, on := range []bool{false, true} {
				e := newEnv(t, mode)
				if on {
					e.start("--sloppy-tcp", "--expire-nodest-conn")
				} else {
					e.start("--sloppy-tcp")
				}
				vip := net.JoinHostPort(lab.DirOuterIP, "7000")
				e.ipvsadm(t, "-A", "-t", vip, "-s", "sh")
				e.ipvsadm(t, "-a", "-t", vip, "-r", lab.RS1IP, "-m")
				c, r, name, err := e.echoConn(t, vip)
				if err != nil || name != "rs1" {
					t.Fatalf("echo: %q %v", name, err)
				}
				e.ipvsadm(t, "-d", "-t", vip, "-r", lab.RS1IP)
				e.ipvsadm(t, "-a", "-t", vip, "-r", lab.RS1IP, "-m")
				got, err := echo(c, r, "again")
				c.Close()
				switch {
				case on && (err != nil || got != "rs1: again"):
					t.Fatalf("with --expire-nodest-conn the connection did not go on: %q %v", got, err)
				case !on && err == nil:
					t.Fatalf("without --expire-nodest-conn a connection of a deleted server went on: %q", got)
				}
			}
		})
	}
}
