package director_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"

	"uvs/lab"
	"uvs/testbed"
)

// TestSecondDirectorRefused: a second `director run` on a host where one
// already runs is refused before it touches the host, whether it names the
// same control socket or another one (the lock is per network namespace),
// and the first goes on serving: HTTP through it, ipvsadm changes, its
// nftables table, its TUN setup. A director in another namespace that
// names the same socket directory is refused too (the directory holds the
// socket and the host-changes file).
func TestSecondDirectorRefused(t *testing.T) {
	for _, io := range []string{"afpacket", "tun"} {
		t.Run(io, func(t *testing.T) { testSecondDirectorRefused(t, io) })
	}
}

func testSecondDirectorRefused(t *testing.T, io string) {
	e := newEnv(t, io)
	e.start()
	vip := lab.DirOuterIP + ":80" // a host address: without the filter the kernel answers with resets
	e.ipvsadm(t, "-A", "-t", vip, "-s", "rr")
	e.ipvsadm(t, "-a", "-t", vip, "-r", lab.RS1IP, "-m")
	e.ipvsadm(t, "-A", "-t", "198.18.0.100:80", "-s", "rr") // not a host address (TUN adds it)
	e.ipvsadm(t, "-a", "-t", "198.18.0.100:80", "-r", lab.RS1IP, "-m")
	if body, _, err := e.get("http://" + vip + "/"); err != nil || body != "rs1" {
		t.Fatalf("first director: %q %v", body, err)
	}
	before := hostState(t, e.n.Director)
	pid := strconv.Itoa(e.d.Pid())

	otherDir := t.TempDir()
	for _, c := range []struct {
		name string
		h    *testbed.Host
		dir  string
	}{
		{"same socket", e.n.Director, e.dir},
		{"another socket, same namespace", e.n.Director, otherDir},
		{"same socket directory, another namespace", e.n.Client, e.dir},
	} {
		clientBefore := hostState(t, e.n.Client)
		out, code := runSecond(t, c.h, c.dir, io)
		if code == 0 || !strings.Contains(out, "another director is running") || !regexp.MustCompile(`\bpid `+pid+`\b`).MatchString(out) ||
			!strings.Contains(out, e.d.Socket) {
			t.Errorf("%s: second director: exit %d, want a refusal naming pid %s and socket %s:\n%s", c.name, code, pid, e.d.Socket, out)
		}
		if strings.Contains(out, "serving interface") || strings.Contains(out, "serving through TUN") {
			t.Errorf("%s: second director set up the host before it was refused:\n%s", c.name, out)
		}
		if after := hostState(t, e.n.Director); after != before {
			t.Errorf("%s: second director changed the host.\nbefore:\n%s\nafter:\n%s", c.name, before, after)
		}
		if after := hostState(t, e.n.Client); after != clientBefore {
			t.Errorf("%s: second director changed the client's host.\nbefore:\n%s\nafter:\n%s", c.name, clientBefore, after)
		}
		if body, _, err := e.get("http://" + vip + "/"); err != nil || !strings.HasPrefix(body, "rs") {
			t.Errorf("%s: first director no longer serves: %q %v", c.name, body, err)
		}
		if _, err := os.Stat(e.d.Socket); err != nil {
			t.Errorf("%s: first director's socket: %v", c.name, err)
		}
	}
	// The first still takes changes.
	e.ipvsadm(t, "-a", "-t", vip, "-r", lab.RS2IP, "-m")
	seen := map[string]bool{}
	for range 4 {
		body, _, err := e.get("http://" + vip + "/")
		if err != nil {
			t.Fatal(err)
		}
		seen[body] = true
	}
	if !seen["rs1"] || !seen["rs2"] {
		t.Errorf("after the refusals, round robin over both servers: saw %v", seen)
	}
	e.ipvsadm(t, "-C")
	// And it still restores the host at stop.
	if err := e.d.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "director.lock")); !os.IsNotExist(err) {
		t.Errorf("lock file left after stop: %v", err)
	}
	// With the first stopped, one in its place starts.
	e.start()
}

// runSecond runs `director run` in h with its socket in dir and returns
// what it printed and its exit code.
func runSecond(t *testing.T, h *testbed.Host, dir, io string) (string, int) {
	t.Helper()
	return runToExit(t, h, "run", "--socket", filepath.Join(dir, "director.sock"), "--io", io)
}

// runToExit runs the director binary in h with args; it must exit within
// 20 s. It returns what it printed and its exit code.
func runToExit(t *testing.T, h *testbed.Host, args ...string) (string, int) {
	t.Helper()
	cmd := h.Command(binary, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
	err := cmd.Wait()
	if !timer.Stop() {
		t.Fatalf("director %s did not exit:\n%s", strings.Join(args, " "), out.String())
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), 0
}

// TestRulesFileErrors: a rules file with a bad line is refused whole at
// start and on SIGHUP, and the log names the file, the line number and
// the line; on SIGHUP the table in force stays.
func TestRulesFileErrors(t *testing.T) {
	e := newEnv(t, "afpacket")
	rules := filepath.Join(t.TempDir(), "rules")
	good := fmt.Sprintf("-A -t %s:80 -s rr\n-a -t %s:80 -r %s:80 -m -w 1\n", lab.DirOuterIP, lab.DirOuterIP, lab.RS1IP)
	bad := good + "# a comment\n\n" + fmt.Sprintf("-a -t %s:80 -r %s:80 -m -w 1\n", lab.DirOuterIP, lab.RS1IP)
	if err := os.WriteFile(rules, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := runRules(t, e.n.Director, e.dir, rules)
	if code == 0 {
		t.Fatalf("director started with a bad rules file:\n%s", out)
	}
	for _, want := range []string{rules, "line=5", `-a -t ` + lab.DirOuterIP + `:80 -r ` + lab.RS1IP + `:80 -m -w 1`, "Destination already exists"} {
		if !strings.Contains(out, want) {
			t.Errorf("start with a bad rules file: log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "serving interface") {
		t.Errorf("a bad rules file reached the host:\n%s", out)
	}

	if err := os.WriteFile(rules, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	e.start("--rules", rules)
	listed := e.ipvsadm(t, "-S", "-n")
	if err := os.WriteFile(rules, []byte(good+"-A -t 198.18.0.100:80 -s nosuch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(e.d.Log(), "line=3") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	log := e.d.Log()
	for _, want := range []string{"rules file rejected", rules, "line=3", "-A -t 198.18.0.100:80 -s nosuch"} {
		if !strings.Contains(log, want) {
			t.Errorf("SIGHUP with a bad rules file: log lacks %q:\n%s", want, log)
		}
	}
	if now := e.ipvsadm(t, "-S", "-n"); now != listed {
		t.Errorf("a bad reload changed the table:\n%s\nwas:\n%s", now, listed)
	}
}

// runRules runs `director run --rules FILE` in h, to its exit.
func runRules(t *testing.T, h *testbed.Host, dir, rules string) (string, int) {
	t.Helper()
	return runToExit(t, h, "run", "--socket", filepath.Join(dir, "director.sock"), "--rules", rules)
}

// TestHostChangeFailureLogged: a rule change the host refuses reaches the
// ipvsadm client and the director's log, which says that the previous
// rules stay in force (with TUN, a VIP without a route). With AF_PACKET,
// the director's nftables table removed from under it is made again at
// the next change.
func TestHostChangeFailureLogged(t *testing.T) {
	for _, io := range []string{"afpacket", "tun"} {
		t.Run(io, func(t *testing.T) {
			e := newEnv(t, io)
			e.start()
			vip := lab.DirOuterIP + ":80"
			e.ipvsadm(t, "-A", "-t", vip, "-s", "rr")
			e.ipvsadm(t, "-a", "-t", vip, "-r", lab.RS1IP, "-m")
			args := []string{"-A", "-t", "198.18.9.1:80"} // no route: TUN cannot place it
			if io == "afpacket" {
				err := e.n.Director.Do(func() error {
					c, err := nftables.New()
					if err != nil {
						return err
					}
					c.DelTable(&nftables.Table{Family: nftables.TableFamilyNetdev, Name: "uvs"})
					return c.Flush()
				})
				if err != nil {
					t.Fatal(err)
				}
				// The director makes its table again at the next change,
				// rather than refusing every change from then on.
				e.ipvsadm(t, "-a", "-t", vip, "-r", lab.RS2IP, "-m")
				if out, err := e.n.Director.Exec("nft", "list", "table", "netdev", "uvs"); err != nil {
					t.Fatalf("the table was not made again: %v\n%s", err, out)
				}
				if !strings.Contains(e.d.Log(), "made again") {
					t.Errorf("the log does not say the table was made again:\n%s", e.d.Log())
				}
				if body, _, err := e.get("http://" + vip + "/"); err != nil || (body != "rs1" && body != "rs2") {
					t.Errorf("after the table was made again: %q, %v", body, err)
				}
				return
			}
			_, errs, code, err := e.d.Ipvsadm(args...)
			if err != nil || code == 0 {
				t.Fatalf("ipvsadm %v: code %d, %q, %v; want a refusal", args, code, errs, err)
			}
			deadline := time.Now().Add(2 * time.Second)
			for !strings.Contains(e.d.Log(), "level=ERROR") && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			log := e.d.Log()
			if !regexp.MustCompile(`level=ERROR msg="rule change failed on the host; the previous rules stay in force[^"]*" err="set up host for new rules: [^"]+`).MatchString(log) {
				t.Errorf("the director's log does not report the failed host change:\n%s", log)
			}
		})
	}
}
