package ipvsadm

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadRulesErrors: a bad rules file is refused whole, and the error
// names the file, the line number and the line, with what is wrong in
// words that help (not ipvsadm's bare "Try `ipvsadm -h'").
func TestLoadRulesErrors(t *testing.T) {
	const good = "-A -t 198.18.0.100:80 -s rr\n-a -t 198.18.0.100:80 -r 198.18.1.2:80 -m -w 1\n"
	for _, c := range []struct {
		name, file string
		line       int
		text, why  string
	}{
		{"duplicate server", good + "# again\n\n-a -t 198.18.0.100:80 -r 198.18.1.2:80 -m -w 1\n",
			5, "-a -t 198.18.0.100:80 -r 198.18.1.2:80 -m -w 1", "Destination already exists"},
		{"unknown option", good + "  -a -t 198.18.0.100:80 -r 198.18.1.3 --bogus  \n",
			3, "-a -t 198.18.0.100:80 -r 198.18.1.3 --bogus", "--bogus: unknown option"},
		{"not a command", good + "frobnicate 198.18.0.100\n",
			3, "frobnicate 198.18.0.100", "not a valid ipvsadm command"},
		{"server of no service", "ipvsadm -a -t [2001:2::100]:80 -r [2001:2::2]:80 -m\n" + good,
			1, "ipvsadm -a -t [2001:2::100]:80 -r [2001:2::2]:80 -m", "Service not defined"},
		{"unknown scheduler", good + "-A -u 198.18.0.100:53 -s nosuch\n",
			3, "-A -u 198.18.0.100:53 -s nosuch", "cheduler"},
		{"version in the middle", good + "--version\n-A -u 198.18.0.100:53\n",
			3, "--version", "not a rule"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "rules")
			if err := os.WriteFile(path, []byte(c.file), 0o644); err != nil {
				t.Fatal(err)
			}
			conf, err := LoadRulesFile(path)
			if err == nil {
				t.Fatalf("accepted: %v", conf)
			}
			var re *RulesError
			if !errors.As(err, &re) {
				t.Fatalf("%v: not a *RulesError", err)
			}
			if re.File != path || re.Line != c.line || re.Text != c.text || !strings.Contains(re.Err.Error(), c.why) {
				t.Errorf("got file %q line %d text %q err %q; want %q, %d, %q, %q", re.File, re.Line, re.Text, re.Err, path, c.line, c.text, c.why)
			}
			msg := err.Error()
			for _, want := range []string{path + ":", c.text, c.why} {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q lacks %q", msg, want)
				}
			}
			if strings.Contains(msg, "Try `ipvsadm -h'") {
				t.Errorf("message %q: ipvsadm's bare hint", msg)
			}
			// Without a file name, the line still.
			if _, err := LoadRules(strings.NewReader(c.file)); err == nil || !strings.HasPrefix(err.Error(), "line ") {
				t.Errorf("LoadRules: %v", err)
			}
		})
	}
	conf, err := LoadRules(strings.NewReader("# the table\n" + good))
	if err != nil || len(conf.Services) != 1 || len(conf.Services[0].Dests) != 1 {
		t.Fatalf("good file: %v %v", conf, err)
	}
}
