package conntrack

import (
	"testing"
	"time"

	"pgregory.net/rapid"
)

// mconn is the model's view of one connection.
type mconn struct {
	present bool
	state   State
	expires int64 // clock ns
}

// The pool: connection n is NAT when n%3 != 2, UDP when n%4 == 3.
const poolSize = 12

func poolConn(n int) Conn {
	proto := uint8(protoTCP)
	if n%4 == 3 {
		proto = protoUDP
	}
	return mkConn(n, n%3 == 2, proto)
}

func modelTimeout(s State, to Timeouts) time.Duration {
	switch s {
	case StateEstablished:
		return to.TCP
	case StateFinWait:
		return to.TCPFin
	case StateUDP:
		return to.UDP
	}
	return defaultTimeouts[s]
}

// TestAccountingModel drives the table with random packets, clock jumps,
// sweeps, removals and templates, against a model of which connections
// live in which state. After every step the real-server counts the hooks
// reported must equal a recount of the table; whenever the model knows
// for sure, lookups must agree with it; and after a full sweep the counts
// must equal the model's.
func TestAccountingModel(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		tt := newTestTable(rt, Config{Shards: rapid.SampledFrom([]int{1, 2, 16}).Draw(rt, "shards")})
		to := Timeouts{TCP: defaultTimeouts[StateEstablished], TCPFin: defaultTimeouts[StateFinWait], UDP: defaultTimeouts[StateUDP]}
		model := make([]mconn, poolSize)
		var refs [4]TemplateRef
		flagsGen := rapid.SampledFrom([]uint8{syn, synack, ack, psh, fin, rst, rstack, 0, FlagFIN | FlagSYN})

		// settled reports whether the model knows connection n's fate
		// now: the table's ticks may put an expiry a few ms later.
		now := func() int64 { return tt.clock.Now() }
		settled := func(m *mconn) bool {
			return !m.present || now() < m.expires || now() >= m.expires+int64(10*time.Millisecond)
		}
		alive := func(m *mconn) bool { return m.present && now() < m.expires }

		actions := map[string]func(*rapid.T){
			"insert": func(rt *rapid.T) {
				n := rapid.IntRange(0, poolSize-1).Draw(rt, "n")
				flags := flagsGen.Draw(rt, "flags")
				c := poolConn(n)
				if k := rapid.IntRange(-1, 3).Draw(rt, "tmpl"); k >= 0 {
					c.Tmpl = refs[k]
				}
				m := &model[n]
				if !settled(m) {
					rt.Skip("at an expiry boundary")
				}
				err := tt.Insert(&c, flags)
				if alive(m) {
					if err != ErrExists {
						rt.Fatalf("insert over live conn %d: %v", n, err)
					}
					return
				}
				if err != nil {
					rt.Fatalf("insert %d: %v", n, err)
				}
				st := StateUDP
				if c.Proto == protoTCP {
					st = Next(StateNone, flags, Orig, c.InputOnly)
				}
				*m = mconn{present: true, state: st, expires: now() + int64(modelTimeout(st, to))}
			},
			"packet": func(rt *rapid.T) {
				n := rapid.IntRange(0, poolSize-1).Draw(rt, "n")
				d := Dir(rapid.IntRange(0, 1).Draw(rt, "dir"))
				flags := flagsGen.Draw(rt, "flags")
				c := poolConn(n)
				m := &model[n]
				if !settled(m) {
					rt.Skip("at an expiry boundary")
				}
				tp := c.Orig()
				if d == Reply {
					tp = c.Reply()
				}
				var got Conn
				gd, ok := tt.Lookup(&tp, flags, &got)
				nat := !c.InputOnly
				if !alive(m) || d == Reply && !nat {
					if ok {
						rt.Fatalf("conn %d %v found, model says gone", n, d)
					}
					if !alive(m) && (d == Orig || nat) {
						m.present = false // met and reaped
					}
					return
				}
				if c.Proto == protoTCP && d == Orig && flags&(FlagSYN|FlagACK|FlagRST) == FlagSYN &&
					(m.state == StateTimeWait || m.state == StateClose) {
					if ok {
						rt.Fatalf("SYN on %v returned the old entry", m.state)
					}
					m.present = false
					return
				}
				if !ok || gd != d {
					rt.Fatalf("conn %d %v: lookup %v %v", n, d, gd, ok)
				}
				if c.Proto == protoTCP {
					m.state = Next(m.state, flags, d, !nat)
				}
				if got.State != m.state {
					rt.Fatalf("conn %d: state %v, model %v", n, got.State, m.state)
				}
				m.expires = now() + int64(modelTimeout(m.state, to))
			},
			"remove": func(rt *rapid.T) {
				n := rapid.IntRange(0, poolSize-1).Draw(rt, "n")
				c := poolConn(n)
				tp := c.Orig()
				if !c.InputOnly && rapid.Bool().Draw(rt, "byReply") {
					tp = c.Reply()
				}
				m := &model[n]
				ok := tt.Remove(&tp)
				if alive(m) && now() < m.expires && !ok {
					rt.Fatalf("remove of live conn %d failed", n)
				}
				if !m.present && ok {
					rt.Fatalf("removed conn %d the model never had", n)
				}
				m.present = false
			},
			"removeDest": func(rt *rapid.T) {
				d := uint32(rapid.IntRange(1, 3).Draw(rt, "dest"))
				tt.RemoveDest(d)
				for n := range model {
					if poolConn(n).Dest == d {
						model[n].present = false
					}
				}
			},
			"advance": func(rt *rapid.T) {
				tt.clock.Advance(time.Duration(rapid.IntRange(0, 400).Draw(rt, "s")) * time.Second)
			},
			"timeouts": func(rt *rapid.T) {
				to.TCP = time.Duration(rapid.IntRange(1, 1000).Draw(rt, "tcp")) * time.Second
				tt.SetTimeouts(to)
			},
			"sweep": func(rt *rapid.T) {
				b := rapid.IntRange(1, 5).Draw(rt, "budget")
				if got := tt.Sweep(b); got > b {
					rt.Fatalf("Sweep(%d) = %d", b, got)
				}
			},
			"fullSweep": func(rt *rapid.T) {
				for tt.Sweep(1<<20) > 0 {
				}
				var active, inactive [4]int32
				for n := range model {
					m := &model[n]
					if !settled(m) {
						return // cannot tell
					}
					if alive(m) {
						d := poolConn(n).Dest
						if m.state.Active() {
							active[d]++
						} else {
							inactive[d]++
						}
					} else {
						m.present = false
					}
				}
				for d := uint32(1); d <= 3; d++ {
					if a, i := tt.counts.get(d); a != active[d] || i != inactive[d] {
						rt.Fatalf("dest %d: %d/%d, model %d/%d", d, a, i, active[d], inactive[d])
					}
				}
			},
			"template": func(rt *rapid.T) {
				k := rapid.IntRange(0, 3).Draw(rt, "k")
				key := TemplateKey{Proto: protoTCP, Client: rs[k%3], VAddr: vip, VPort: uint16(k)}
				switch rapid.IntRange(0, 2).Draw(rt, "op") {
				case 0:
					r, err := tt.InsertTemplate(&key, &Template{Dest: uint32(k%3 + 1), Timeout: 100 * time.Second})
					if err != nil {
						rt.Fatal(err)
					}
					refs[k] = r
				case 1:
					var tp Template
					if r, ok := tt.LookupTemplate(&key, &tp); ok {
						refs[k] = r
					}
				case 2:
					tt.RemoveTemplate(&key)
				}
			},
			"": func(rt *rapid.T) {
				checkInvariants(rt, tt)
			},
		}
		// Repeat runs about 30 actions; long histories find more.
		for range 8 {
			rt.Repeat(actions)
		}
	})
}
