package checker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"os/user"
	"strconv"
	"sync"
	"syscall"
	"time"

	"uvs/healthcheck"
	"uvs/keepalived"
)

// maxScripts bounds the scripts running at once: a flapping pool of many
// real servers must not fork without end. The others wait their turn.
const maxScripts = 16

// scriptGrace is how long a script has between SIGTERM and SIGKILL.
const scriptGrace = 2 * time.Second

// scripts runs notify and quorum scripts, each on a goroutine of its own,
// and counts how they end.
type scripts struct {
	do      func(func() error) error
	timeout time.Duration
	log     *slog.Logger
	sem     chan struct{}
	wg      sync.WaitGroup

	mu     sync.Mutex
	counts map[scriptResult]uint64
	closed bool
}

type scriptResult struct{ script, result string }

func newScripts(do func(func() error) error, timeout time.Duration, log *slog.Logger) *scripts {
	return &scripts{do: do, timeout: timeout, log: log, sem: make(chan struct{}, maxScripts), counts: map[scriptResult]uint64{}}
}

// start runs s, the script called what (notify_up, ...), unless it is
// empty; it does not wait for it.
func (sc *scripts) start(what string, s keepalived.Script) {
	if s.Command == "" {
		return
	}
	sc.mu.Lock()
	if sc.closed {
		sc.mu.Unlock()
		return
	}
	sc.wg.Add(1)
	sc.mu.Unlock()
	go func() {
		defer sc.wg.Done()
		sc.sem <- struct{}{}
		defer func() { <-sc.sem }()
		result, err := sc.exec(s)
		sc.mu.Lock()
		sc.counts[scriptResult{what, result}]++
		sc.mu.Unlock()
		if err != nil {
			sc.log.Warn("keepalived: script failed", "script", what, "command", s.Command, "result", result, "err", err)
			return
		}
		sc.log.Debug("keepalived: script ran", "script", what, "command", s.Command)
	}()
}

// exec runs s and waits for it: result is "ok", "failed" or "timeout".
func (sc *scripts) exec(s keepalived.Script) (result string, err error) {
	args := healthcheck.SplitArgs(s.Command)
	if len(args) == 0 {
		return "failed", errors.New("no program")
	}
	ctx, cancel := context.WithTimeout(context.Background(), sc.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	// As MISC_CHECK's programs: a process group of its own, so a timeout
	// ends its children too, and SIGTERM if the director dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = scriptGrace
	if s.User != "" {
		cred, err := credential(s.User, s.Group)
		if err != nil {
			return "failed", err
		}
		cmd.SysProcAttr.Credential = cred
	}
	startCmd := cmd.Start
	if sc.do != nil {
		// A child is born in the network namespace of the thread that
		// forks it.
		startCmd = func() error { return sc.do(cmd.Start) }
	}
	if err := startCmd(); err != nil {
		return "failed", err
	}
	err = cmd.Wait()
	if ctx.Err() != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		return "timeout", fmt.Errorf("not done after %v", sc.timeout)
	}
	if err != nil {
		return "failed", err
	}
	return "ok", nil
}

// credential is the user and group a script runs as: keepalived.conf(5),
// "[username [groupname]]", the user's group when no group is given.
func credential(name, group string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, err
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %s: uid %q", name, u.Uid)
	}
	gidText := u.Gid
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return nil, err
		}
		gidText = g.Gid
	}
	gid, err := strconv.ParseUint(gidText, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("group of %s: gid %q", name, gidText)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// close waits for the scripts running or waiting; none start after.
func (sc *scripts) close() {
	sc.mu.Lock()
	sc.closed = true
	sc.mu.Unlock()
	sc.wg.Wait()
}

// results returns the counts of how scripts ended.
func (sc *scripts) results() map[scriptResult]uint64 {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	m := make(map[scriptResult]uint64, len(sc.counts))
	for k, v := range sc.counts {
		m[k] = v
	}
	return m
}
