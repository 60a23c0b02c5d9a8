package conntrack

import (
	"testing"
	"time"
)

// TestOracleScenarios replays the packets the director saw in each case
// of testdata/oracle/states.sh, run against real IPVS (Linux 6.1,
// ipvsadm 1.31) by the shared IPVS oracle, and expects what that run
// printed in testdata/oracle/states.out: the state, its timeout and
// whether the connection counts as active.
func TestOracleScenarios(t *testing.T) {
	type pkt struct {
		d     Dir
		flags uint8
	}
	est := []pkt{{Reply, synack}, {Orig, ack}, {Orig, psh}, {Reply, psh}, {Orig, ack}}
	estDR := []pkt{{Orig, ack}, {Orig, psh}, {Orig, ack}}
	cases := []struct {
		name    string
		inOnly  bool  // DR
		packets []pkt // after the inserting SYN
		want    State
		timeout time.Duration
		active  bool
	}{
		{"1 NAT held", false, est, StateEstablished, 900 * time.Second, true},
		{"1 DR held", true, estDR, StateEstablished, 900 * time.Second, true},
		{"1/5 NAT client closes first", false,
			append(est, pkt{Orig, fin}, pkt{Reply, ack}, pkt{Reply, fin}, pkt{Orig, ack}), StateTimeWait, 120 * time.Second, false},
		{"1/5 DR client closes first", true,
			append(estDR, pkt{Orig, fin}, pkt{Orig, ack}), StateFinWait, 120 * time.Second, false},
		{"2 NAT silent server", false, []pkt{{Orig, syn}}, StateSynRecv, 60 * time.Second, true},
		{"2 DR silent server", true, []pkt{{Orig, syn}}, StateSynRecv, 60 * time.Second, true},
		{"3 NAT client RST", false, append(est, pkt{Orig, rstack}), StateClose, 10 * time.Second, false},
		{"3 DR client RST", true, append(estDR, pkt{Orig, rstack}), StateClose, 10 * time.Second, false},
		{"4 NAT SYN+ACK answered by RST", false, []pkt{{Reply, synack}, {Orig, rst}}, StateSynRecv, 60 * time.Second, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tt := newTestTable(t, Config{Shards: 2})
			c := mkConn(1, tc.inOnly, protoTCP)
			if err := tt.Insert(&c, syn); err != nil {
				t.Fatal(err)
			}
			var got Conn
			for _, p := range tc.packets {
				tp := c.Orig()
				if p.d == Reply {
					tp = c.Reply()
				}
				if _, ok := tt.Lookup(&tp, p.flags, &got); !ok {
					t.Fatalf("lookup %v %#x failed", p.d, p.flags)
				}
			}
			left, _ := expiresOf(tt, c.Orig())
			if got := stateOf(tt, c.Orig()); got != tc.want {
				t.Fatalf("state %v, IPVS shows %v", got, tc.want)
			}
			if left < tc.timeout-time.Second || left > tc.timeout+time.Second {
				t.Fatalf("expires in %v, IPVS shows %v", left, tc.timeout)
			}
			a, i := tt.counts.get(c.Dest)
			if tc.active && (a != 1 || i != 0) || !tc.active && (a != 0 || i != 1) {
				t.Fatalf("ActiveConn %d InActConn %d", a, i)
			}
		})
	}
}

// stateOf reads a connection's state through Walk, without a packet.
func stateOf(tt *testTable, o Tuple) State {
	st := State(255)
	tt.Walk(func(c *Conn, _ time.Duration) bool {
		if !c.Template && c.Orig() == o {
			st = c.State
		}
		return true
	})
	return st
}
