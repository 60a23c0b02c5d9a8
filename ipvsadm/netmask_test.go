package ipvsadm

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"uvs/service"
)

// netmaskTranscript is testdata/netmask.out, what ipvsadm 1.31 on a real
// IPVS printed for testdata/netmask.sh.
type netmaskTranscript struct {
	cmds []netmaskCmd
	// listings after the commands: -L -n, -S -n, -L -n -t 198.18.0.100:80
	// and -L -n --stats -t 198.18.0.100:80.
	list, save, listOne, stats string
}

type netmaskCmd struct {
	args []string
	err  string
	rc   int
}

func readNetmaskTranscript(t *testing.T) netmaskTranscript {
	t.Helper()
	b, err := os.ReadFile("testdata/netmask.out")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	parse := text[strings.Index(text, "### parse\n")+len("### parse\n") : strings.Index(text, "### listings\n")]
	var tr netmaskTranscript
	var cur *netmaskCmd
	for _, l := range strings.SplitAfter(parse, "\n") {
		switch {
		case l == "":
		case strings.HasPrefix(l, "$ ipvsadm "):
			tr.cmds = append(tr.cmds, netmaskCmd{args: strings.Fields(l[len("$ ipvsadm "):])})
			cur = &tr.cmds[len(tr.cmds)-1]
		case strings.HasPrefix(l, "rc="):
			rc, err := strconv.Atoi(strings.TrimSpace(l[3:]))
			if err != nil {
				t.Fatal(err)
			}
			cur.rc = rc
		default:
			cur.err += l
		}
	}
	lst := text[strings.Index(text, "### listings\n")+len("### listings\n") : strings.Index(text, "### persistence")]
	lines := strings.SplitAfter(lst, "\n")
	i := 0
	for i < len(lines) && !strings.HasPrefix(lines[i], "-A ") {
		i++
	}
	tr.list = strings.Join(lines[:i], "")
	j := i
	for j < len(lines) && strings.HasPrefix(lines[j], "-A ") {
		j++
	}
	tr.save = strings.Join(lines[i:j], "")
	tr.listOne = strings.Join(lines[j:j+3], "")
	tr.stats = strings.Join(lines[j+3:j+7], "")
	return tr
}

// TestNetmaskAsIpvsadm replays testdata/netmask.sh: IPv4 -M is inet_aton,
// so "-M 24" is the mask 0.0.0.24 (and 255.0.255.0, 0x18 or 1.2 are masks
// too); IPv6 -M is a prefix length. Messages, exit codes and the -L -n,
// -S -n and --stats listings must be ipvsadm's, byte for byte.
func TestNetmaskAsIpvsadm(t *testing.T) {
	tr := readNetmaskTranscript(t)
	if len(tr.cmds) < 10 {
		t.Fatalf("only %d commands in the transcript", len(tr.cmds))
	}
	st := newFake()
	for _, c := range tr.cmds {
		r := runAll(st, "", c.args...)
		if r.rc != c.rc || r.err != c.err || r.out != "" {
			t.Errorf("ipvsadm %s: rc=%d err=%q out=%q; ipvsadm 1.31: rc=%d err=%q",
				strings.Join(c.args, " "), r.rc, r.err, r.out, c.rc, c.err)
		}
	}
	for _, l := range []struct {
		args []string
		want string
	}{
		{[]string{"-L", "-n"}, tr.list},
		{[]string{"-S", "-n"}, tr.save},
		{[]string{"-L", "-n", "-t", "198.18.0.100:80"}, tr.listOne},
		{[]string{"-L", "-n", "--stats", "-t", "198.18.0.100:80"}, tr.stats},
	} {
		if got := run(t, st, l.args...); got != l.want {
			t.Errorf("ipvsadm %s:\n%s\nipvsadm 1.31:\n%s", strings.Join(l.args, " "), got, l.want)
		}
	}
	// -S output restores the same masks.
	st2 := newFake()
	if r := runAll(st2, tr.save, "-R"); r.rc != 0 {
		t.Fatalf("-R: rc=%d %s", r.rc, r.err)
	}
	if got := run(t, st2, "-S", "-n"); got != tr.save {
		t.Errorf("restored:\n%s\nwant:\n%s", got, tr.save)
	}
}

// TestNetmaskModel pins how the model holds -M: a prefix mask as its
// length, any other IPv4 mask as service.RawMask4|mask (director/persist.go
// maskAddr reads that), an IPv6 -M as the prefix length.
func TestNetmaskModel(t *testing.T) {
	cases := []struct {
		svc, mask string
		want      int
		text      string
	}{
		{"198.18.0.1:80", "24", service.RawMask4 | 24, "0.0.0.24"},
		{"198.18.0.1:80", "255.255.255.0", 24, "255.255.255.0"},
		{"198.18.0.1:80", "255.0.255.0", service.RawMask4 | 0xff00ff00, "255.0.255.0"},
		{"198.18.0.1:80", "0", 0, "0.0.0.0"},
		{"198.18.0.1:80", "4294967295", 32, ""},
		{"198.18.0.1:80", "128.0.0.0", 1, "128.0.0.0"},
		{"198.18.0.1:80", "255.255.255.254", 31, "255.255.255.254"},
		{"198.18.0.1:80", "1", service.RawMask4 | 1, "0.0.0.1"},
		{"[2001:2::1]:80", "64", 64, "64"},
		{"[2001:2::1]:80", "128", 128, ""},
	}
	for _, c := range cases {
		st := setup(t, "-A -t "+c.svc+" -s rr -p 60 -M "+c.mask)
		s := st.Config().Services[0]
		if s.Netmask != c.want {
			t.Errorf("-t %s -M %s: Netmask %#x, want %#x", c.svc, c.mask, s.Netmask, c.want)
		}
		if got := maskText(s, s.Is6()); got != c.text {
			t.Errorf("-t %s -M %s: shown as %q, want %q", c.svc, c.mask, got, c.text)
		}
	}
	for n := 0; n <= 32; n++ {
		if m := service.Mask4(n); service.Netmask4(m) != n {
			t.Errorf("prefix %d: mask %#x comes back as %d", n, m, service.Netmask4(m))
		}
	}
}
