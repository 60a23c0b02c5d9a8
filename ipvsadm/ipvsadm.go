// Package ipvsadm is the ipvsadm 1.31 command, run against a userspace
// director instead of the kernel: the same options, the same checks in the
// same order, the same messages and exit codes, and byte-identical
// listings (see /work/shared/ipvs-golden).
//
// Run parses one invocation the way ipvsadm's popt-based parser does,
// applies ipvsadm's own checks (commands_v_options table, port and
// address-family rules, tunnel option rules), then either lists from the
// director's current snapshot or hands the change to State.Update, whose
// errors play the part of the kernel's answers.
package ipvsadm

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"

	"uvs/rate"
	"uvs/service"
)

// State is what a running director offers the ipvsadm command.
type State interface {
	Config() *service.Config // the current published snapshot; never modify it
	// Update clones the current config, calls fn on the clone, and publishes
	// the clone atomically if fn and the director's own validation succeed.
	// On any error nothing is published and the error is returned (e.g.
	// service.ErrNoScheduler for an unknown scheduler, or a
	// director-specific error whose text should be printed as-is).
	Update(fn func(c *service.Config) error) error
	Conns() []Conn                     // connection entries, for -L -c
	Rates(s *service.Stats) rate.Rates // current rate estimates of a stats object, for --rate
}

// RateZeroer is an optional capability of a State: -Z calls it for every
// stats object it zeroes, so that rate estimates restart from zero as
// the kernel's do.
type RateZeroer interface {
	ZeroRates(s *service.Stats)
}

// Daemon is one connection sync daemon as --daemon lists it.
type Daemon struct {
	Master    bool // master, else backup
	Interface string
	SyncID    int
	MaxLen    int        // 0 = not shown
	Group     netip.Addr // zero = not shown
	Port      int        // 0 = not shown
	TTL       int        // 0 = not shown
}

// Syncer is an optional capability of a State: the connection sync
// daemon. Without it --start-daemon and --stop-daemon fail as a kernel
// without sync support would, and --daemon lists nothing.
type Syncer interface {
	StartDaemon(d Daemon) error
	StopDaemon(master bool) error
	Daemons() []Daemon
}

// Conn is one connection entry as -L -c shows it.
type Conn = service.Conn

// exit ends an invocation: msg goes to stderr (with a newline) and code is
// the exit status, as ipvsadm's fail() and friends do.
type exit struct {
	code int
	msg  string
}

func (e *exit) Error() string { return e.msg }

// fail is ipvsadm's fail(): a message and an exit code.
func fail(code int, format string, a ...any) *exit {
	return &exit{code: code, msg: fmt.Sprintf(format, a...)}
}

// tryHelp is ipvsadm's tryhelp_exit(argv[0], -1).
func tryHelp() *exit {
	return &exit{code: 255, msg: "Try `ipvsadm -h' or 'ipvsadm --help' for more information."}
}

// Run executes one ipvsadm invocation (args exclude the program name), like
// the real binary: writes stdout/stderr exactly as ipvsadm does and returns
// its exit code (0, 1, 2, 255 as in the goldens). stdin is read only for -R.
func Run(args []string, stdin io.Reader, stdout, stderr io.Writer, st State) int {
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	r := &runner{st: st, out: out}
	err := r.run(args, stdin)
	if err == nil {
		return 0
	}
	out.Flush()
	var e *exit
	if !errors.As(err, &e) {
		e = &exit{code: 255, msg: err.Error()}
	}
	if e.msg != "" {
		fmt.Fprintln(stderr, e.msg)
	}
	return e.code
}

// runner holds one invocation's outputs.
type runner struct {
	st  State
	out *bufio.Writer
}

func (r *runner) run(args []string, stdin io.Reader) error {
	if len(args) == 0 {
		// No arguments: list the table, names and all.
		return r.list(r.st.Config(), &command{kind: cmdList}, r.out)
	}
	cmd, err := parse(args, false)
	if err != nil {
		return err
	}
	switch cmd.kind {
	case cmdHelp:
		io.WriteString(r.out, usage)
		return nil
	case cmdVersion:
		io.WriteString(r.out, version+"\n")
		return nil
	case cmdRestore:
		return r.restore(stdin)
	}
	return r.exec([]*command{cmd})
}
