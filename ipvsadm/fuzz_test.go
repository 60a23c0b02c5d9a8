package ipvsadm

import (
	"bytes"
	"io"
	"strconv"
	"strings"
	"testing"
)

// fuzzTable is a table with one of everything, for fuzzed commands to
// work on.
func fuzzTable(t testing.TB) *fakeState {
	st := newFake()
	for _, l := range []string{
		"-A -t 198.18.0.100:80 -s wrr",
		"-a -t 198.18.0.100:80 -r 198.18.1.2:80 -m -w 4",
		"-A -u 198.18.0.100:53 -s sh -b sh-port -o",
		"-a -u 198.18.0.100:53 -r 198.18.1.3 -i --tun-type gue --tun-port 6080",
		"-A -t [2001:2::100]:80 -s rr -p 60",
		"-a -t [2001:2::100]:80 -r [2001:2::1:2]:80 -m -x 10 -y 5",
		"-A -f 20 -6 -s mh -b mh-fallback -p",
	} {
		var e bytes.Buffer
		if rc := Run(strings.Fields(l), nil, io.Discard, &e, st); rc != 0 {
			t.Fatalf("%s: %s", l, e.String())
		}
	}
	st.updates = 0
	return st
}

// FuzzArgs: any argv is handled without panic, and a command that fails
// changes nothing.
func FuzzArgs(f *testing.F) {
	f.Add("-L\x00-n")
	f.Add("-A\x00-t\x00198.18.0.1:80\x00-p")
	f.Add("-a\x00-t\x00198.18.0.100:80\x00-r\x00198.18.1.9\x00-x\x0010\x00-y\x0020")
	f.Fuzz(func(t *testing.T, argv string) {
		args := strings.Split(argv, "\x00")
		if len(args) > 64 {
			return
		}
		st := fuzzTable(t)
		before := st.Config()
		saved := save(st)
		var out, errb bytes.Buffer
		rc := Run(args, strings.NewReader(""), &out, &errb, st)
		switch rc {
		case 0, 1, 2, 255:
		default:
			t.Fatalf("exit code %d", rc)
		}
		if rc != 0 {
			if st.Config() != before || st.updates != 0 {
				t.Fatalf("failed command (rc=%d %q) changed the table", rc, errb.String())
			}
			if errb.Len() == 0 {
				t.Fatalf("rc=%d without a message", rc)
			}
		}
		if save(st) != saved && st.updates == 0 {
			t.Fatal("table changed without an update")
		}
		if before != st.Config() && save(&fakeState{cfg: before}) != saved {
			t.Fatal("a published snapshot was modified")
		}
	})
}

// FuzzRestore: any -R input is handled without panic and applied all or
// nothing.
func FuzzRestore(f *testing.F) {
	f.Add("-A -t 198.18.0.1:80 -s rr\n-a -t 198.18.0.1:80 -r 198.18.1.1 -m\n")
	f.Add("-A -t 198.18.0.1:80\n-A -t 198.18.0.100:80\n")
	f.Add("# c\nipvsadm -C\n--set 1 2 3\n-Z\n-L -n\n")
	f.Fuzz(func(t *testing.T, input string) {
		if len(input) > 1<<16 {
			return
		}
		st := fuzzTable(t)
		before := st.Config()
		saved := save(st)
		var out, errb bytes.Buffer
		rc := Run([]string{"-R"}, strings.NewReader(input), &out, &errb, st)
		if rc != 0 {
			if st.Config() != before || st.updates != 0 {
				t.Fatalf("failed restore (rc=%d %q) changed the table", rc, errb.String())
			}
		}
		if st.updates > 1 {
			t.Fatalf("restore made %d updates", st.updates)
		}
		if save(&fakeState{cfg: before}) != saved {
			t.Fatal("a published snapshot was modified")
		}
	})
}

// save is the table as -S -n prints it, plus the timeouts.
func save(st *fakeState) string {
	var out bytes.Buffer
	Run([]string{"-S", "-n"}, nil, &out, io.Discard, st)
	Run([]string{"-L", "--timeout"}, nil, &out, io.Discard, st)
	return out.String()
}

// BenchmarkListN measures ipvsadm -L -n over a table of 100 services with
// 10 servers each (the control path, not the packet path).
func BenchmarkListN(b *testing.B) {
	st := newFake()
	for i := range 100 {
		svc := "198.18.2." + itoa(i) + ":80"
		Run([]string{"-A", "-t", svc}, nil, io.Discard, io.Discard, st)
		for j := range 10 {
			Run([]string{"-a", "-t", svc, "-r", "198.18.3." + itoa(j), "-m"}, nil, io.Discard, io.Discard, st)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		Run([]string{"-L", "-n"}, nil, io.Discard, io.Discard, st)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
