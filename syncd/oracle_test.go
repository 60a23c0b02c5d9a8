package syncd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"uvs/ipvssync"
)

// The oracle run: scripts/ipvs-oracle-sync.sh in the ipvs-oracle VM
// (Linux 6.1 IPVS and ipvsadm 1.31) with a static build of the director:
// a kernel master's connections learned by a UVS backup and a UVS
// master's by a kernel backup, each followed by a failover the
// connections survive. It takes minutes and needs qemu, so it runs only
// when $UVS_IPVS_ORACLE names a built oracle directory (with run.sh);
// with $UVS_IPVS_ORACLE_RECORD=1 a run that completes records its output
// in testdata/oracle-sync.out, which TestOracleRecord checks on every run.

const oracleRecord = "testdata/oracle-sync.out"

func TestOracle(t *testing.T) {
	dir := os.Getenv("UVS_IPVS_ORACLE")
	if dir == "" {
		t.Skip("set UVS_IPVS_ORACLE to a built ipvs-oracle directory (../shared/ipvs-oracle/README.md) to run")
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "director")
	build := exec.Command("go", "build", "-o", bin, "../cmd/director")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, out)
	}
	// About 5 minutes on an idle 2-core host under TCG; several times that
	// when the host is busy.
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	extra := []string{bin}
	for _, f := range []string{"echo.py", "flows.py", "dump.py"} {
		extra = append(extra, filepath.Join("..", "scripts", "oracle-sync", f))
	}
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "run.sh"), append([]string{"../scripts/ipvs-oracle-sync.sh"}, extra...)...)
	cmd.Env = append(os.Environ(), "ORACLE_TIMEOUT=2400")
	out, err := cmd.CombinedOutput()
	if os.Getenv("UVS_IPVS_ORACLE_RECORD") == "1" && err == nil {
		if werr := os.WriteFile(oracleRecord, out, 0o644); werr != nil {
			t.Error(werr)
		}
	}
	if err != nil {
		t.Fatalf("oracle run: %v\n%s", err, out)
	}
	checkOracleOutput(t, out)
}

// TestOracleRecord checks the recorded oracle run: everything passed, and
// the UVS master's datagrams it captured are what this codec reads, entry
// by entry as the connections were.
func TestOracleRecord(t *testing.T) {
	out, err := os.ReadFile(oracleRecord)
	if err != nil {
		t.Fatal(err)
	}
	checkOracleOutput(t, out)
}

func checkOracleOutput(t *testing.T, out []byte) {
	t.Helper()
	s := string(out)
	if !strings.Contains(s, "\nALL PASSED\n") || strings.Contains(s, "\nFAIL: ") {
		t.Fatalf("the oracle run did not pass:\n%s", s)
	}
	for _, want := range []string{
		"PASS: UVS's ipvsadm daemon commands print what the kernel's print",
		"PASS: the UVS backup learned the kernel master's connections",
		"PASS: kernel master -> UVS backup: all 8 connections went on after the failover",
		"PASS: the kernel backup learned the UVS master's connections",
		"PASS: UVS master -> kernel backup: all 8 connections went on after the failover",
		"PASS: kernel master -> UVS backup, IPv6 group: all 8 connections went on after the failover",
		"PASS: the kernel backup took the UVS master's full dump (entries with the UVS option)",
		"PASS: no IPVS complaint in the kernel log",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %q", want)
		}
	}
	// The UVS master's datagrams, as the kernel backup received them:
	// ordinary ones, then a full dump.
	checkOracleDatagrams(t, s, "### B. the UVS master's datagrams", false)
	checkOracleDatagrams(t, s, "### D. the UVS master's dump", true)
}

// checkOracleDatagrams decodes the datagrams from 198.18.9.1 listed
// after heading: the flows' 8 connections (2 IPv6) and their template,
// marked as a dump's if dump.
func checkOracleDatagrams(t *testing.T, s, heading string, dump bool) {
	t.Helper()
	i := strings.Index(s, heading)
	if i < 0 {
		t.Fatalf("no %q in the oracle's output", heading)
	}
	sec := s[i+len(heading):]
	if j := strings.Index(sec, "\n###"); j >= 0 {
		sec = sec[:j]
	}
	line := regexp.MustCompile(`(?m)^198\.18\.9\.1:\d+ ([0-9a-f]+)$`)
	n := 0
	sc := bufio.NewScanner(strings.NewReader(sec))
	sc.Buffer(nil, 1<<20)
	kinds := map[string]int{}
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		b, err := hex.DecodeString(m[1])
		if err != nil {
			t.Fatal(err)
		}
		var r ipvssync.Reader
		if err := r.Reset(b); err != nil {
			t.Fatalf("datagram %d: %v", n, err)
		}
		if h := r.Header(); h.Version != 1 || h.SyncID != 7 {
			t.Fatalf("datagram %d: header %+v", n, h)
		}
		var c ipvssync.Conn
		w := ipvssync.NewWriter(7, 1472)
		for r.Next(&c) {
			if c.Resync != dump {
				t.Errorf("%s: entry %+v: resync %v", heading, c, c.Resync)
			}
			switch {
			case c.Flags&ipvssync.FlagTemplate != 0:
				kinds["template"]++
				if c.Flags != ipvssync.FlagTemplate|ipvssync.FlagInactive || c.State != 1 || c.VPort != 7001 || c.CPort != 0 ||
					c.Timeout > 300 || !dump && c.Timeout != 300 {
					t.Errorf("template %+v", c)
				}
			case c.V6:
				kinds["ipv6"]++
				fallthrough
			default:
				kinds["conn"]++
				// A dump carries the time left, the others the timeout.
				if c.Proto != 6 || c.Flags != 0 || c.State != 1 || c.Timeout > 900 || !dump && c.Timeout != 900 {
					t.Errorf("connection %+v", c)
				}
			}
			if err := w.Add(&c); err != nil {
				t.Fatal(err)
			}
		}
		if r.Err() != nil {
			t.Fatalf("datagram %d: %v", n, r.Err())
		}
		if !bytes.Equal(w.Bytes(), b) {
			t.Errorf("%s: datagram %d re-encodes differently", heading, n)
		}
		n++
	}
	if n == 0 || kinds["conn"] < 8 || kinds["ipv6"] < 2 || kinds["template"] < 1 {
		t.Errorf("%s: %d datagrams, entries %v: want 8 connections (2 IPv6) and the template", heading, n, kinds)
	}
}
