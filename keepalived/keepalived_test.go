package keepalived

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fixtures are the site configurations in testdata; keepalived itself
// must accept each of them.
var fixtures = []string{"testdata/site/keepalived.conf", "testdata/compact/keepalived.conf"}

// keepalivedBinary finds Debian's keepalived; without it the tests that
// run it are skipped, except in CI (CI=true), where they must run.
func keepalivedBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("keepalived"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/keepalived"); err == nil {
		return "/usr/sbin/keepalived" // not in a non-root PATH
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("keepalived is not installed (apt-get install keepalived); CI=true needs it")
	}
	t.Skip("keepalived is not installed (apt-get install keepalived)")
	return ""
}

// configTest runs keepalived --config-test -f path: it checks the file and
// its includes, prints what it finds on standard error and exits (it does
// not start). Exit status: 0 when it reported nothing (and, as measured
// with keepalived 2.2.7, also for some things it does report, see below), 5
// when it reported a configuration error, 2 when a keyword lacks its
// parameter, 6 when scripts would run without script security.
func configTest(t *testing.T, bin, path string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "--config-test", "-f", path)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String()
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		return exit.ExitCode(), out.String()
	}
	t.Fatalf("keepalived --config-test -f %s: %v\n%s", path, err, out.String())
	return 0, ""
}

// TestKeepalivedAcceptsFixtures: the fixtures are real keepalived
// configurations, not just ones this package reads.
func TestKeepalivedAcceptsFixtures(t *testing.T) {
	bin := keepalivedBinary(t)
	for _, path := range fixtures {
		t.Run(path, func(t *testing.T) {
			code, out := configTest(t, bin, path)
			if code != 0 || out != "" {
				t.Errorf("keepalived --config-test: exit %d\n%s", code, out)
			}
		})
	}
}

// TestKeepalivedAgrees runs keepalived on inputs this package refuses:
// where keepalived refuses them too, and where it does not (the
// differences this package makes on purpose).
func TestKeepalivedAgrees(t *testing.T) {
	bin := keepalivedBinary(t)
	tests := []struct {
		name  string
		files map[string]string
		code  int    // keepalived's exit status
		out   string // a line keepalived prints (a regexp)
	}{
		// Refused by both.
		{"block not closed", map[string]string{"keepalived.conf": strings.TrimSuffix(vs(""), "}\n")}, 5, `There are 1 missing '}'s or extra '{'s`},
		{"extra brace", map[string]string{"keepalived.conf": vs("") + "}\n"}, 5, `Extra '}' found`},
		{"bad address", map[string]string{"keepalived.conf": vs("real_server 198.18.1.300 80 {\n}")}, 5, `Invalid real server ip address/port 198\.18\.1\.300/80`},
		{"bad number", map[string]string{"keepalived.conf": rs("weight 1.5")}, 5, `invalid number '1\.5'`},
		{"bad timer", map[string]string{"keepalived.conf": vs("delay_loop 1.0000001")}, 5, `too many decimal places`},
		{"missing argument", map[string]string{"keepalived.conf": rs("weight")}, 2, `missing a parameter after keyword .weight.`},
		{"unterminated quote", map[string]string{"keepalived.conf": vs(`virtualhost "abc`)}, 5, `Unterminated quote`},
		{"unknown scheduler", map[string]string{"keepalived.conf": vs("lvs_sched RR")}, 5, `Invalid lvs_scheduler 'RR'`},
		{"bad digest", map[string]string{"keepalived.conf": rs("HTTP_GET {\nurl {\npath /\ndigest abc\n}\n}")}, 5, `digest 'abc' character length should be 32`},
		{"status code 600", map[string]string{"keepalived.conf": rs("HTTP_GET {\nurl {\npath /\nstatus_code 600\n}\n}")}, 5, `Invalid HTTP_GET status code '600'`},
		{"bad range", map[string]string{"keepalived.conf": "virtual_server_group G {\n198.18.2.10/29 80\n}\n" + strings.Replace(vs(""), "198.18.0.1 80", "group G", 1)}, 5, `Address mask bits not empty`},
		{"family mismatch", map[string]string{"keepalived.conf": vs("real_server 2001:2::5 80 {\n}")}, 5, `Address family of virtual server and real server 2001:2::5 don't match`},
		{"duplicate real server", map[string]string{"keepalived.conf": vs("real_server 198.18.1.2 80 {\n}\nreal_server 198.18.1.2 80 {\n}")}, 5, `is duplicated - removing second rs`},

		// Refused here, accepted by keepalived.
		{"SCTP, which keepalived supports", map[string]string{"keepalived.conf": strings.Replace(rs(""), "protocol TCP", "protocol SCTP", 1)}, 0, `^$`},
		{"lthreshold above uthreshold, which the kernel refuses", map[string]string{"keepalived.conf": rs("uthreshold 10\nlthreshold 20")}, 0, `^$`},
		{"unknown group, which keepalived leaves unused", map[string]string{"keepalived.conf": strings.Replace(rs(""), "198.18.0.1 80", "group NOPE", 1)}, 0, `^$`},
		{"duplicate virtual server", map[string]string{"keepalived.conf": rs("") + rs("")}, 0, `^$`},
		// keepalived prints these but exits 0.
		{"missing include", map[string]string{"keepalived.conf": "include nothere.conf\n" + rs("")}, 0, `Config files missing 'nothere\.conf'`},
		{"include cycle", map[string]string{"keepalived.conf": "include b.conf\n" + rs(""), "b.conf": "include keepalived.conf\n"}, 0, `open problem \(Too many open files\)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, text := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			path := filepath.Join(dir, "keepalived.conf")
			if _, _, err := Parse(path); err == nil {
				t.Errorf("Parse accepted it")
			}
			code, out := configTest(t, bin, path)
			if code != tt.code || !regexp.MustCompile("(?m)"+tt.out).MatchString(out) {
				t.Errorf("keepalived --config-test: exit %d, want %d; output should match %q:\n%s", code, tt.code, tt.out, out)
			}
		})
	}
}

// TestTestdataAddresses keeps testdata to the documentation ranges: IPv4
// 198.18.0.0/15 and IPv6 2001:2::/48.
func TestTestdataAddresses(t *testing.T) {
	v4 := regexp.MustCompile(`\b\d{1,3}(\.\d{1,3}){3}\b`)
	v6 := regexp.MustCompile(`\b[0-9a-fA-F]{1,4}:[0-9a-fA-F:]*:[0-9a-fA-F:]*\b`)
	err := filepath.WalkDir("testdata", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		text := string(data)
		if strings.HasPrefix(text, "go test fuzz v1\n") {
			// A fuzz corpus file: its strings are Go-quoted.
			var b strings.Builder
			for _, line := range strings.Split(text, "\n") {
				if q, ok := strings.CutPrefix(line, "string("); ok {
					s, err := strconv.Unquote(strings.TrimSuffix(q, ")"))
					if err != nil {
						return fmt.Errorf("%s: %v", path, err)
					}
					b.WriteString(s + "\n")
				}
			}
			text = b.String()
		}
		for _, a := range v4.FindAllString(text, -1) {
			if !strings.HasPrefix(a, "198.18.") && !strings.HasPrefix(a, "198.19.") {
				t.Errorf("%s: address %s outside 198.18.0.0/15", path, a)
			}
		}
		for _, a := range v6.FindAllString(text, -1) {
			if !strings.HasPrefix(a, "2001:2:") {
				t.Errorf("%s: address %s outside 2001:2::/48", path, a)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
