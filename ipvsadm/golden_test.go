package ipvsadm

import (
	"bufio"
	"bytes"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// goldenCase is one command of a golden transcript: "$ cmd", its stdout,
// its stderr ("2> " lines) and "[rc=N]".
type goldenCase struct {
	line           int
	cmd            string
	stdout, stderr string
	rc             int
}

func readGolden(t *testing.T, name string) []goldenCase {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var cases []goldenCase
	var cur *goldenCase
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "$ "):
			cases = append(cases, goldenCase{line: n, cmd: l[2:]})
			cur = &cases[len(cases)-1]
		case cur == nil:
		case strings.HasPrefix(l, "[rc=") && strings.HasSuffix(l, "]"):
			rc, err := strconv.Atoi(l[4 : len(l)-1])
			if err != nil {
				t.Fatalf("%s:%d: %v", name, n, err)
			}
			cur.rc = rc
			cur = nil
		case strings.HasPrefix(l, "2> "):
			cur.stderr += l[3:] + "\n"
		default:
			cur.stdout += l + "\n"
		}
	}
	return cases
}

// restoreInputs are the files formats.sh feeds to -R, read from the script.
func restoreInputs(t *testing.T) map[string]string {
	data, err := os.ReadFile("testdata/formats.sh")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	m := map[string]string{}
	i := strings.Index(s, "cat > /tmp/rules <<'R'\n")
	if i < 0 {
		t.Fatal("formats.sh: no /tmp/rules heredoc")
	}
	rest := s[i+len("cat > /tmp/rules <<'R'\n"):]
	m["/tmp/rules"] = rest[:strings.Index(rest, "\nR\n")+1]
	p := regexp.MustCompile(`printf -- '([^']*)' > (/tmp/rules2)`).FindStringSubmatch(s)
	if p == nil {
		t.Fatal("formats.sh: no /tmp/rules2")
	}
	m[p[2]] = strings.ReplaceAll(p[1], `\n`, "\n")
	return m
}

// TestGoldenFormats replays formats.sh, command by command, against a fake
// director and compares stdout, stderr and exit code byte for byte. Only
// the /proc files, which are not ipvsadm's output, are skipped.
func TestGoldenFormats(t *testing.T) {
	inputs := restoreInputs(t)
	st := newFake()
	ran := 0
	for _, gc := range readGolden(t, "formats.out") {
		if !strings.HasPrefix(gc.cmd, "ipvsadm") {
			continue // cat /proc/...
		}
		f := strings.Fields(gc.cmd)[1:]
		var stdin *strings.Reader
		merged := false
		if i := slices.Index(f, "<"); i >= 0 {
			in, ok := inputs[f[i+1]]
			if !ok {
				t.Fatalf("line %d: unknown input %s", gc.line, f[i+1])
			}
			stdin = strings.NewReader(in)
			f = f[:i]
			merged = true // the script ran these with 2>&1
		}
		var out, errb bytes.Buffer
		var rc int
		if stdin != nil {
			rc = Run(f, stdin, &out, &errb, st)
		} else {
			rc = Run(f, nil, &out, &errb, st)
		}
		ran++
		gotOut, gotErr := out.String(), errb.String()
		wantOut, wantErr := gc.stdout, gc.stderr
		if merged {
			gotOut, gotErr = gotOut+gotErr, ""
		}
		if slices.Contains(f, "-c") || slices.Contains(f, "--connection") {
			gotOut, wantOut = sortedLines(gotOut), sortedLines(wantOut)
		}
		if gotOut != wantOut || gotErr != wantErr || rc != gc.rc {
			t.Errorf("line %d: $ %s\n--- got rc=%d stdout:\n%s--- stderr:\n%s--- want rc=%d stdout:\n%s--- stderr:\n%s",
				gc.line, gc.cmd, rc, gotOut, gotErr, gc.rc, wantOut, wantErr)
		}
	}
	t.Logf("replayed %d commands", ran)
	if ran < 100 {
		t.Fatalf("replayed only %d commands", ran)
	}
}

// sortedLines compares listings whose order is the kernel's hash order.
func sortedLines(s string) string {
	l := strings.SplitAfter(s, "\n")
	slices.Sort(l)
	return strings.Join(l, "")
}
