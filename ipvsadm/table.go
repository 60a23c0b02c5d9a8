package ipvsadm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
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

// LoadRules reads a rules file in `ipvsadm -S` / `ipvsadm -R` form. Either
// every line is good and the whole table comes back, or nothing does.
func LoadRules(r io.Reader) (*service.Config, error) {
	t := NewTable()
	var errb bytes.Buffer
	if rc := Run([]string{"-R"}, r, io.Discard, &errb, t); rc != 0 {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = fmt.Sprintf("ipvsadm -R exited %d", rc)
		}
		return nil, errors.New(msg)
	}
	return t.Conf, nil
}
