package ipvsadm

import (
	"strings"
	"testing"
)

// TestSchedFlagsAgainstKernel replays -b cases recorded with the real
// ipvsadm 1.31 on a 6.1 kernel (ipvs-oracle): the flags are checked
// against the -s given anywhere on the line, or wlc without -s, also for
// -E of a service whose scheduler is already sh.
func TestSchedFlagsAgainstKernel(t *testing.T) {
	refused := []struct{ args, flag string }{
		{"-A -t 198.18.0.101:80 -s rr -b sh-port", "sh-port"},
		{"-A -t 198.18.0.101:80 -s sh -b mh-fallback", "mh-fallback"},
		{"-A -t 198.18.0.101:80 -s mh -b sh-fallback", "sh-fallback"},
		{"-A -t 198.18.0.101:80 -b mh-port", "mh-port"},
		{"-E -t 198.18.0.100:80 -b sh-fallback", "sh-fallback"},
		{"-E -t 198.18.0.100:80 -b mh-port", "mh-port"},
		{"-A -t 198.18.0.101:80 -s sh -b sh-port,mh-port", "mh-port"},
	}
	for _, c := range refused {
		st := setup(t, "-A -t 198.18.0.100:80 -s sh")
		before, updates := st.Config(), st.updates
		got := runAll(st, "", strings.Fields(c.args)...)
		want := "incompatible scheduler flag `" + c.flag + "'\n"
		if got.rc != 2 || got.err != want || got.out != "" {
			t.Errorf("ipvsadm %s: rc=%d stderr=%q; want rc=2 stderr=%q", c.args, got.rc, got.err, want)
		}
		if st.Config() != before || st.updates != updates {
			t.Errorf("ipvsadm %s: a refused command changed the table", c.args)
		}
	}
	st := setup(t,
		"-A -t 198.18.0.100:80 -b sh-port -s sh",
		"-A -t 198.18.0.101:80 -s rr -b flag-1",
	)
	want := "TCP  198.18.0.100:80 sh (sh-port)\nTCP  198.18.0.101:80 rr (flag-1)\n"
	if got := run(t, st, "-L", "-n"); !strings.HasSuffix(got, want) {
		t.Errorf("-L -n:\n%s\nwant it to end with:\n%s", got, want)
	}
}
