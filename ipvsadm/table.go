package ipvsadm

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"uvs/rate"
	"uvs/scheduler"
	"uvs/service"
)

// Table is an State with no data path: a rule table in memory.
// LoadRules uses one to read a rules file; tests and tools may too.
type Table struct {
	Conf *service.Config
}

// NewTable returns an empty table.
func NewTable() *Table { return &Table{Conf: service.NewConfig()} }

func (t *Table) Config() *service.Config { return t.Conf }

// Update applies fn to a copy and keeps it if fn and the scheduler names
// are good.
func (t *Table) Update(fn func(*service.Config) error) error {
	next := t.Conf.Clone()
	if err := fn(next); err != nil {
		return err
	}
	for _, s := range next.Services {
		if _, err := scheduler.New(s.Scheduler, s.Flags, nil); err != nil {
			return err
		}
	}
	t.Conf = next
	return nil
}

func (t *Table) Conns() []Conn                   { return nil }
func (t *Table) Rates(*service.Stats) rate.Rates { return rate.Rates{} }

// RulesError is what is wrong with a rules file: its first bad line.
type RulesError struct {
	File string // the file's name ("" when read by LoadRules)
	Line int    // counted from 1
	Text string // the line, without surrounding blanks
	Err  error  // what is wrong with it, in ipvsadm's words where they say something
}

func (e *RulesError) Error() string {
	where := fmt.Sprintf("line %d", e.Line)
	if e.File != "" {
		where = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	return fmt.Sprintf("%s: %q: %v", where, e.Text, e.Err)
}

func (e *RulesError) Unwrap() error { return e.Err }

// LoadRules reads a rules file in `ipvsadm -S` / `ipvsadm -R` form. Either
// every line is good and the whole table comes back, or nothing does, and
// the error is a *RulesError naming the first bad line.
func LoadRules(r io.Reader) (*service.Config, error) { return loadRules("", r) }

// LoadRulesFile is LoadRules on the file at path; its errors name the file.
func LoadRulesFile(path string) (*service.Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return loadRules(path, f)
}

// rule is one command of a rules file, with where it comes from.
type rule struct {
	line int
	text string
	cmd  *command
}

func (r rule) error(name string, err error) *RulesError {
	var e *exit
	if errors.As(err, &e) && e.msg == tryHelp().msg {
		// What ipvsadm says of a bad command line helps no one reading
		// a file.
		err = errors.New("not a valid ipvsadm command (ipvsadm -h shows the syntax)")
	}
	return &RulesError{File: name, Line: r.line, Text: r.text, Err: err}
}

func loadRules(name string, rd io.Reader) (*service.Config, error) {
	data, err := io.ReadAll(io.LimitReader(rd, maxRestore+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxRestore {
		return nil, fmt.Errorf("rules file %s: larger than %d MiB", cmp.Or(name, "(unnamed)"), maxRestore>>20)
	}
	var rules []rule
	n := 0
	for line := range strings.Lines(string(data)) {
		n++
		args := restoreArgs(line)
		if len(args) == 0 {
			continue
		}
		r := rule{line: n, text: strings.TrimSpace(line)}
		c, e := parse(args, true)
		if e != nil {
			return nil, r.error(name, e)
		}
		if c.kind == cmdHelp || c.kind == cmdVersion {
			// -R would stop there and apply nothing, silently.
			return nil, r.error(name, errors.New("not a rule (help or version)"))
		}
		r.cmd = c
		rules = append(rules, r)
	}
	// The runner's own table answers what a command asks of the state
	// (there is no sync daemon to start); its output goes nowhere.
	rn := &runner{st: NewTable(), out: bufio.NewWriter(io.Discard)}
	t := NewTable()
	// As -R does, in one update; but knowing which line failed.
	failed := -1
	err = t.Update(func(cfg *service.Config) error {
		for i, r := range rules {
			if err := applyRule(rn, cfg, r); err != nil {
				failed = i
				return err
			}
		}
		return nil
	})
	if err == nil {
		return t.Conf, nil
	}
	if failed < 0 {
		// The table refused the result (a scheduler's check): find the
		// line, one update per line.
		t := NewTable()
		for i, r := range rules {
			if err = t.Update(func(cfg *service.Config) error { return applyRule(rn, cfg, r) }); err != nil {
				failed = i
				break
			}
		}
		if failed < 0 {
			return nil, fmt.Errorf("rules file %s: %w", cmp.Or(name, "(unnamed)"), err)
		}
	}
	r := rules[failed]
	return nil, r.error(name, kernelError(err, []*command{r.cmd}))
}

// applyRule applies one rule to cfg as -R does; what it would print (a
// listing in a rules file) and do besides the table (zeroing counters)
// is dropped.
func applyRule(rn *runner, cfg *service.Config, r rule) error {
	var (
		buf   bytes.Buffer
		after []func() error
	)
	return rn.apply(cfg, r.cmd, &buf, &after)
}
