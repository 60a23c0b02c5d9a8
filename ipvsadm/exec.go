package ipvsadm

import (
	"bytes"
	"errors"
	"slices"
	"time"

	"uvs/service"
)

// errNoSync is the answer of a director without a connection sync daemon.
var errNoSync = errors.New("connection sync daemon not supported by this director")

// exec runs parsed commands. Commands that leave the rule table alone
// (listings, -Z, the sync daemon) work on the current snapshot; the others
// run inside one State.Update so that a batch (-R) is applied all or
// nothing.
func (r *runner) exec(cmds []*command) error {
	var buf bytes.Buffer // listings, shown once the batch is through
	var after []func() error
	batch := func(cfg *service.Config) error {
		buf.Reset()
		after = after[:0]
		for _, c := range cmds {
			if err := r.apply(cfg, c, &buf, &after); err != nil {
				return err
			}
		}
		return nil
	}
	var err error
	if slices.ContainsFunc(cmds, (*command).changesTable) {
		err = r.st.Update(batch)
	} else {
		err = batch(r.st.Config())
	}
	r.out.Write(buf.Bytes())
	if err != nil {
		return kernelError(err, cmds)
	}
	for _, f := range after {
		if err := f(); err != nil {
			return &exit{code: 255, msg: err.Error()}
		}
	}
	return nil
}

// changesTable reports whether the command edits the rule table.
func (c *command) changesTable() bool {
	switch c.kind {
	case cmdList, cmdSave, cmdZero, cmdStartDaemon, cmdStopDaemon:
		return false
	}
	return true
}

// failedCmd remembers which command of a batch the kernel refused, so its
// error reads as libipvs words it for that operation.
type failedCmd struct {
	kind int
	err  error
}

func (f *failedCmd) Error() string { return f.err.Error() }
func (f *failedCmd) Unwrap() error { return f.err }

// kernelError turns an error from Update into ipvsadm's message and code.
func kernelError(err error, cmds []*command) error {
	var e *exit
	if errors.As(err, &e) {
		return e
	}
	kind := cmds[0].kind
	var f *failedCmd
	if errors.As(err, &f) {
		kind = f.kind
	}
	known := []error{service.ErrServiceExists, service.ErrNoService, service.ErrNoServiceDef,
		service.ErrDestExists, service.ErrNoDest, service.ErrNoScheduler, service.ErrRange}
	msg := err.Error()
	for _, k := range known {
		if errors.Is(err, k) {
			msg = k.Error()
			break
		}
	}
	// libipvs reports a missing service for any server command this way.
	if errors.Is(err, service.ErrNoService) && (kind == cmdAddDest || kind == cmdEditDest || kind == cmdDelDest) {
		msg = service.ErrNoServiceDef.Error()
	}
	return &exit{code: 255, msg: msg}
}

// apply performs one command on the working copy cfg. Work that is not
// part of the rule table (zeroing counters, the sync daemon) is queued in
// after, to run once the table is published.
func (r *runner) apply(cfg *service.Config, c *command, out *bytes.Buffer, after *[]func() error) error {
	wrap := func(err error) error {
		if err == nil {
			return nil
		}
		return &failedCmd{kind: c.kind, err: err}
	}
	switch c.kind {
	case cmdList, cmdSave:
		return r.list(cfg, c, out)
	case cmdFlush:
		cfg.Clear()
	case cmdAdd:
		return wrap(cfg.AddService(c.service()))
	case cmdEdit:
		return wrap(cfg.EditService(c.service()))
	case cmdDel:
		return wrap(cfg.DeleteService(c.key()))
	case cmdAddDest, cmdEditDest:
		d := c.destination()
		if d.LThresh > d.UThresh {
			return wrap(service.ErrRange) // the kernel's check, before anything else
		}
		if c.kind == cmdAddDest {
			return wrap(cfg.AddDest(c.key(), d))
		}
		return wrap(cfg.EditDest(c.key(), d))
	case cmdDelDest:
		return wrap(cfg.DeleteDest(c.key(), c.dest.addr, c.dest.port))
	case cmdTimeout:
		// 0 keeps the current value.
		for i, p := range []*time.Duration{&cfg.Timeouts.TCP, &cfg.Timeouts.TCPFin, &cfg.Timeouts.UDP} {
			if c.timeouts[i] != 0 {
				*p = time.Duration(c.timeouts[i]) * time.Second
			}
		}
	case cmdZero:
		var svcs []*service.Service
		if c.has(optService) {
			s := cfg.Service(c.key())
			if s == nil {
				return wrap(service.ErrNoService)
			}
			svcs = []*service.Service{s}
		} else {
			svcs = cfg.Services
		}
		*after = append(*after, func() error {
			for _, s := range svcs {
				r.zero(s.Stats)
				for _, d := range s.Dests {
					if d.DestState != nil {
						r.zero(&d.DestState.Stats)
					}
				}
			}
			return nil
		})
	case cmdStartDaemon, cmdStopDaemon:
		sy, ok := r.st.(Syncer)
		if !ok {
			return errNoSync
		}
		d := c.daemon
		if c.kind == cmdStartDaemon {
			*after = append(*after, func() error { return sy.StartDaemon(d) })
		} else {
			*after = append(*after, func() error { return sy.StopDaemon(d.Master) })
		}
	}
	return nil
}

// zero restarts a stats object's counters and, if the director can, its
// rate estimate.
func (r *runner) zero(s *service.Stats) {
	if s == nil {
		return
	}
	s.Zero()
	if z, ok := r.st.(RateZeroer); ok {
		z.ZeroRates(s)
	}
}

// key is the service a command names.
func (c *command) key() service.Key {
	if c.svc.fwmark != 0 {
		return service.Key{FWMark: c.svc.fwmark, V6: c.svc.af == af6}
	}
	return service.Key{Proto: c.svc.proto, Addr: c.svc.addr, Port: c.svc.port}
}

// service is the virtual service -A or -E describes.
func (c *command) service() *service.Service {
	k := c.key()
	s := &service.Service{
		Key:        k,
		Scheduler:  c.svc.sched,
		Flags:      modelFlags(c.svc.sched, c.svc.schedBits),
		Persistent: c.svc.persist,
		OnePacket:  c.svc.onePacket,
		PE:         c.svc.pe,
	}
	if s.Persistent {
		s.Timeout = time.Duration(c.svc.timeout) * time.Second
	}
	if k.Is6() {
		s.Netmask = c.svc.mask6
	} else {
		s.Netmask = service.Netmask4(c.svc.mask4)
	}
	return s
}

// destination is the real server -a or -e describes.
func (c *command) destination() *service.Dest {
	d := &service.Dest{
		Addr:    c.dest.addr,
		Port:    c.dest.port,
		Weight:  c.dest.weight,
		UThresh: c.dest.uthresh,
		LThresh: c.dest.lthresh,
	}
	switch c.dest.fwd {
	case fwdMasq:
		d.Fwd = service.FwdMasq
	case fwdTunnel:
		d.Fwd = service.FwdTunnel
		d.TunType = tunNames[c.dest.tunType]
		d.TunPort = c.dest.tunPort
		if c.dest.tunType != 0 {
			d.TunCsum = tunCsumModel[c.dest.tunCsum]
		}
	default:
		d.Fwd = service.FwdRoute
	}
	return d
}

// The model keeps sh and mh flags apart; ipvsadm has three generic bits
// whose names depend on the scheduler. The third bit, which neither sh nor
// mh uses, is kept in the other scheduler's fallback flag.
func modelFlags(sched string, b uint8) service.SchedFlags {
	var f service.SchedFlags
	fb, port, third := service.SchedSHFallback, service.SchedSHPort, service.SchedMHFallback
	if sched == "mh" {
		fb, port, third = service.SchedMHFallback, service.SchedMHPort, service.SchedSHFallback
	}
	if b&sched1 != 0 {
		f |= fb
	}
	if b&sched2 != 0 {
		f |= port
	}
	if b&sched3 != 0 {
		f |= third
	}
	return f
}

// schedBits is the inverse of modelFlags.
func schedBits(sched string, f service.SchedFlags) uint8 {
	fb, port, third := service.SchedSHFallback, service.SchedSHPort, service.SchedMHFallback
	if sched == "mh" {
		fb, port, third = service.SchedMHFallback, service.SchedMHPort, service.SchedSHFallback
	}
	var b uint8
	if f&fb != 0 {
		b |= sched1
	}
	if f&port != 0 {
		b |= sched2
	}
	if f&third != 0 {
		b |= sched3
	}
	return b
}
