package healthcheck

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// miscGrace is how long a MISC_CHECK program has between SIGTERM, sent when
// misc_timeout expires, and SIGKILL to its process group. keepalived sends
// SIGTERM to a script "it is awaiting its exit status and it has run for
// too long" (keepalived.conf(5), SCRIPTS) and "SIGKILL is send to processes
// if they take too long time to shutdown" (ChangeLog of 1.1.0, where
// misc_timeout was added); how long it waits is not documented.
const miscGrace = time.Second

// checkMisc is MISC_CHECK: misc_path is run and its exit status judged.
//
// The program is started directly, not through a shell: keepalived.conf(5)
// says of scripts with parameters that "unquoted spaces will separate the
// parameters. If it is required for a parameter to contain a space, it
// should be enclosed in single quotes", which SplitArgs does. It runs in a
// process group of its own, with stdin, stdout and stderr on /dev/null, the
// director's environment (keepalived documents none), and SIGTERM as its
// parent-death signal ("All processes/scripts run by keepalived are run with
// parent death signal set to SIGTERM").
//
// Exit status 0 is up; anything else, a signal or misc_timeout is down
// ("LVS checker misc scripts that will cause a real server to be configured
// down if they exit with a non-zero status"). With misc_dynamic: 0 is up
// at the configured weight, 1 is down, 2-255 is up with weight status − 2
// (keepalived.conf(5), MISC_CHECK: 0 is "weight unchanged", that is not
// increased; keepalived 2.0.20's ChangeLog: after a status of 2 or more, a
// 0 now updates "the weight of a real server and the quorum").
func (e env) checkMisc(ctx context.Context, s *Spec) Result {
	args := SplitArgs(s.MiscPath)
	if len(args) == 0 {
		return fail("MISC_CHECK: no misc_path")
	}
	ctx, cancel := context.WithTimeout(ctx, s.MiscTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = miscGrace
	// Started inside e.run: a child is born in the network namespace of the
	// thread that forks it.
	if err := e.run(cmd.Start); err != nil {
		return fail("MISC_CHECK %s: %v", args[0], err)
	}
	err := cmd.Wait()
	if ctx.Err() != nil {
		// Whatever of the group is still there (a leader that ignored
		// SIGTERM is already killed by WaitDelay).
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fail("MISC_CHECK %s: misc_timeout %v exceeded", args[0], s.MiscTimeout)
		}
		return fail("MISC_CHECK %s: cancelled", args[0])
	}
	if err == nil {
		return pass("MISC_CHECK %s: exit status 0", args[0])
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return fail("MISC_CHECK %s: %v", args[0], err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return fail("MISC_CHECK %s: killed by %v", args[0], ws.Signal())
	}
	code := ee.ExitCode()
	if s.MiscDynamic && code >= 2 && code <= 255 {
		r := pass("MISC_CHECK %s: exit status %d, weight %d", args[0], code, code-2)
		r.Weight = code - 2
		return r
	}
	return fail("MISC_CHECK %s: exit status %d", args[0], code)
}

// SplitArgs splits a misc_path (or a notify_up, quorum_up, … script) into
// program and arguments as keepalived does: unquoted blanks separate them,
// and single quotes keep blanks in one (the quotes themselves are dropped).
// Double quotes and backslash escapes are the configuration parser's, done
// before this.
func SplitArgs(s string) []string {
	var args []string
	var cur strings.Builder
	inArg, quoted := false, false
	for _, r := range s {
		switch {
		case r == '\'':
			quoted = !quoted
			inArg = true
		case !quoted && (r == ' ' || r == '\t' || r == '\n' || r == '\r'):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteRune(r)
			inArg = true
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args
}
