package conntrack

import (
	"errors"
	"testing"
	"time"
)

// TestSyncPolicy follows one NAT TCP connection through the default
// policy: which client packets a master sends, as IPVS does.
func TestSyncPolicy(t *testing.T) {
	tt := newTestTable(t, Config{})
	if err := tt.SetSync(&DefaultSyncPolicy); err != nil {
		t.Fatal(err)
	}
	c := mkConn(1, false, protoTCP)
	if err := tt.Insert(&c, syn); err != nil {
		t.Fatal(err)
	}
	if c.Sync {
		t.Error("SYN (SYN_RECV) sent")
	}
	o, r := c.Orig(), c.Reply()
	var got Conn
	step := func(tp *Tuple, flags uint8) bool {
		t.Helper()
		if _, ok := tt.Lookup(tp, flags, &got); !ok {
			t.Fatal("lookup")
		}
		return got.Sync
	}
	if step(&r, syn|ack) {
		t.Error("server's SYN-ACK sent")
	}
	if step(&o, ack) { // packet 2: ESTABLISHED, below the threshold
		t.Error("packet 2 sent")
	}
	if !step(&o, ack) { // packet 3: the threshold
		t.Error("packet 3 not sent")
	}
	for n := 4; n <= 52; n++ {
		if step(&o, ack) {
			t.Fatalf("packet %d sent", n)
		}
		if step(&r, ack) {
			t.Fatalf("reply after packet %d sent", n)
		}
	}
	if !step(&o, ack) { // 53 = 3 + 50
		t.Error("packet 53 not sent")
	}
	if !step(&o, fin) || got.State != StateCloseWait { // a change of state: at once
		t.Errorf("client FIN: sent %v, state %s", got.Sync, got.State)
	}
	if step(&o, ack) {
		t.Error("no change of state, sent")
	}
	// The server's FIN moves the state, but replies send nothing; the
	// next client packet sends TIME_WAIT.
	if step(&r, fin) || got.State != StateTimeWait {
		t.Errorf("server FIN: sent %v, state %s", got.Sync, got.State)
	}
	if !step(&o, ack) || got.State != StateTimeWait {
		t.Errorf("TIME_WAIT not sent on the next client packet (state %s)", got.State)
	}
	tt.SetSync(nil)
	for range 100 {
		if step(&o, ack) {
			t.Fatal("sent with the master stopped")
		}
	}
}

func TestSyncPolicyUDPAndTemplates(t *testing.T) {
	tt := newTestTable(t, Config{})
	tt.SetSync(&DefaultSyncPolicy)
	key := TemplateKey{Proto: protoUDP, Client: mkConn(2, false, protoUDP).Client, VAddr: vip, VPort: 80}
	ref, err := tt.InsertTemplate(&key, &Template{Svc: 1, Dest: 3, DAddr: rs[2], DPort: 8080, Timeout: 300 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c := mkConn(2, false, protoUDP)
	c.Tmpl = ref
	if err := tt.Insert(&c, 0); err != nil || c.Sync {
		t.Fatalf("insert: %v, sync %v", err, c.Sync)
	}
	o := c.Orig()
	var got Conn
	var sent []int
	for n := 2; n <= 103; n++ {
		tt.Lookup(&o, 0, &got)
		if got.Sync {
			sent = append(sent, n)
			if got.Tmpl != ref {
				t.Fatalf("packet %d: template ref %x, want %x", n, got.Tmpl, ref)
			}
			var tc Conn
			to, ok := tt.TemplateConn(got.Tmpl, &tc)
			if !ok || to != 300*time.Second || !tc.Template || tc.DAddr != rs[2] || tc.Client != key.Client || tc.VPort != 80 {
				t.Fatalf("template %+v, timeout %v, ok %v", tc, to, ok)
			}
		}
	}
	if len(sent) != 3 || sent[0] != 3 || sent[1] != 53 || sent[2] != 103 {
		t.Errorf("UDP packets sent: %v, want 3 53 103", sent)
	}
	tt.RemoveTemplate(&key)
	if _, ok := tt.TemplateConn(ref, &Conn{}); ok {
		t.Error("a removed template still found by its ref")
	}
	for _, p := range []SyncPolicy{{-1, 50}, {50, 50}, {3, 256}, {255, 0}} {
		if err := tt.SetSync(&p); err == nil {
			t.Errorf("policy %+v accepted", p)
		}
	}
	// Period 0: the threshold packet alone.
	tt.SetSync(&SyncPolicy{Threshold: 2})
	c2 := mkConn(5, false, protoUDP)
	tt.Insert(&c2, 0)
	o2 := c2.Orig()
	sent = sent[:0]
	for n := 2; n <= 600; n++ {
		if tt.Lookup(&o2, 0, &got); got.Sync {
			sent = append(sent, n)
		}
	}
	if len(sent) != 1 || sent[0] != 2 {
		t.Errorf("period 0: sent at %v, want 2", sent)
	}
}

func TestLearn(t *testing.T) {
	tt := newTestTable(t, Config{})
	c := mkConn(7, false, protoTCP)
	c.State = StateEstablished
	c.PeerIf, c.PeerMAC = 0, [6]byte{}
	if res, err := tt.Learn(&c, 900*time.Second, false); err != nil || res != LearnCreated {
		t.Fatalf("learn: %v %v", res, err)
	}
	checkInvariants(t, tt)
	if a, _ := tt.counts.get(c.Dest); a != 1 {
		t.Errorf("active %d", a)
	}
	// Found both ways, learned, with the state given.
	o, r := c.Orig(), c.Reply()
	var got Conn
	if d, ok := tt.Peek(&r, &got); !ok || d != Reply || got.State != StateEstablished || !got.Learned || got.Fwd != c.Fwd {
		t.Fatalf("reply lookup: %v %+v", ok, got)
	}
	// Its client's whereabouts are set once, by the first packet.
	tt.SetPeer(&o, peerM, 4)
	tt.SetPeer(&o, [6]byte{9}, 5)
	if tt.Peek(&o, &got); got.PeerMAC != peerM || got.PeerIf != 4 {
		t.Errorf("peer %v %d", got.PeerMAC, got.PeerIf)
	}
	// An update: state and expiry.
	c.State = StateFinWait
	if res, err := tt.Learn(&c, 10*time.Second, false); err != nil || res != LearnUpdated {
		t.Fatalf("update: %v %v", res, err)
	}
	if a, i := tt.counts.get(c.Dest); a != 0 || i != 1 {
		t.Errorf("after FIN_WAIT: active %d inactive %d", a, i)
	}
	tt.clock.Advance(9 * time.Second)
	if _, ok := tt.Peek(&o, &got); !ok || got.State != StateFinWait {
		t.Fatal("gone before its timeout")
	}
	// A full dump does not change it.
	c.State = StateEstablished
	if res, _ := tt.Learn(&c, 900*time.Second, true); res != LearnKept {
		t.Errorf("onlyNew on an existing entry: %v", res)
	}
	tt.clock.Advance(2 * time.Second)
	if _, ok := tt.Peek(&o, &got); ok {
		t.Fatal("alive after the timeout it was learned with")
	}
	checkInvariants(t, tt)

	// Another real server: an inactive message is ignored, an
	// established one replaces the entry.
	c = mkConn(8, false, protoTCP)
	c.State = StateEstablished
	tt.Learn(&c, time.Minute, false)
	other := c
	other.DAddr, other.Dest = rs[0], 1
	if other.DAddr == c.DAddr {
		other.DAddr, other.Dest = rs[1], 2
	}
	other.State = StateTimeWait
	if res, _ := tt.Learn(&other, time.Minute, false); res != LearnIgnored {
		t.Errorf("inactive message for another server: %v", res)
	}
	other.State = StateEstablished
	if res, _ := tt.Learn(&other, time.Minute, false); res != LearnReplaced {
		t.Errorf("established message for another server: %v", res)
	}
	o = c.Orig()
	if tt.Peek(&o, &got); got.DAddr != other.DAddr {
		t.Errorf("not replaced: %v", got.DAddr)
	}
	checkInvariants(t, tt)

	// DR: no reply index. UDP takes StateUDP only.
	dr := mkConn(9, true, protoUDP)
	dr.State = StateUDP
	if _, err := tt.Learn(&dr, time.Minute, false); err != nil {
		t.Fatal(err)
	}
	rr := dr.Reply()
	if _, ok := tt.Peek(&rr, &got); ok {
		t.Error("an input-only entry found by its reply")
	}
	bad := mkConn(10, false, protoUDP)
	bad.State = StateEstablished
	if _, err := tt.Learn(&bad, time.Minute, false); err == nil {
		t.Error("UDP in ESTABLISHED learned")
	}
	checkInvariants(t, tt)

	// A learned entry later sent by a master that is also a backup: only
	// after a period or a change of state.
	tt.SetSync(&DefaultSyncPolicy)
	c = mkConn(11, false, protoTCP)
	c.State = StateEstablished
	tt.Learn(&c, time.Minute, false)
	o = c.Orig()
	n := 0
	for range 49 {
		if tt.Lookup(&o, ack, &got); got.Sync {
			n++
		}
	}
	if tt.Lookup(&o, ack, &got); n != 0 || !got.Sync {
		t.Errorf("learned entry: %d sends in 49 packets, then %v", n, got.Sync)
	}
	if st := tt.Stats(); st.Learned != 5 {
		t.Errorf("stats: %d learned", st.Learned)
	}
}

func TestLearnCapacity(t *testing.T) {
	tt := newTestTable(t, Config{Capacity: 2, Shards: 1})
	for i := range 2 {
		c := mkConn(i, false, protoTCP)
		c.State = StateEstablished
		if _, err := tt.Learn(&c, time.Minute, false); err != nil {
			t.Fatal(err)
		}
	}
	c := mkConn(3, false, protoTCP)
	c.State = StateEstablished
	if _, err := tt.Learn(&c, time.Minute, false); !errors.Is(err, ErrFull) {
		t.Errorf("over capacity: %v", err)
	}
	// Half-open entries give way.
	tt2 := newTestTable(t, Config{Capacity: 1, Shards: 1})
	h := mkConn(1, false, protoTCP)
	tt2.Insert(&h, syn)
	c.State = StateEstablished
	if _, err := tt2.Learn(&c, time.Minute, false); err != nil {
		t.Errorf("half-open entry not evicted: %v", err)
	}
	checkInvariants(t, tt)
	checkInvariants(t, tt2)
}

func TestLearnTemplate(t *testing.T) {
	tt := newTestTable(t, Config{})
	k := TemplateKey{FWMark: 20, Client: addr("198.18.0.2")}
	tp := Template{Svc: 2, Dest: 1, DAddr: rs[0], DPort: 0, Timeout: 1200 * time.Second}
	if made, err := tt.LearnTemplate(&k, &tp, 30*time.Second, true, false); !made || err != nil {
		t.Fatalf("%v %v", made, err)
	}
	var walked []Conn
	tt.Walk(func(c *Conn, _ time.Duration) bool { walked = append(walked, *c); return true })
	if len(walked) != 1 || walked[0].FWMark != 20 || walked[0].State != StateAssured || !walked[0].Learned {
		t.Fatalf("walk: %+v", walked)
	}
	var got Template
	if _, ok := tt.LookupTemplate(&k, &got); !ok || got.Dest != 1 || got.Timeout != 1200*time.Second {
		t.Fatalf("lookup: %v %+v", ok, got)
	}
	// The lookup re-armed it for its persistence timeout; a refresh
	// from the master sets the expiry it sends, and keeps the server.
	other := tp
	other.Dest = 2
	if made, _ := tt.LearnTemplate(&k, &other, 5*time.Second, false, false); made {
		t.Error("refresh made a new template")
	}
	tt.clock.Advance(6 * time.Second)
	if _, ok := tt.LookupTemplate(&k, &got); ok {
		t.Error("alive past the refreshed expiry")
	}
	if made, _ := tt.LearnTemplate(&k, &tp, time.Minute, false, false); !made {
		t.Error("not made again")
	}
	if made, _ := tt.LearnTemplate(&k, &other, time.Hour, false, true); made {
		t.Error("onlyNew replaced")
	}
	checkInvariants(t, tt)
}

func TestSyncAllocs(t *testing.T) {
	tt := newTestTable(t, Config{})
	tt.SetSync(&DefaultSyncPolicy)
	key := TemplateKey{Proto: protoTCP, Client: mkConn(0, false, protoTCP).Client, VAddr: vip, VPort: 80}
	ref, _ := tt.InsertTemplate(&key, &Template{Dest: 1})
	c := mkConn(0, false, protoTCP)
	c.Tmpl = ref
	tt.Insert(&c, syn)
	o := c.Orig()
	var got Conn
	tt.Lookup(&o, ack, &got)
	l := mkConn(1, false, protoTCP)
	l.State = StateEstablished
	if a := testing.AllocsPerRun(1000, func() {
		tt.Lookup(&o, ack, &got)
		if got.Sync {
			tt.TemplateConn(got.Tmpl, &Conn{})
		}
		tt.Learn(&l, time.Minute, false)
	}); a != 0 {
		t.Errorf("Lookup (sync on), TemplateConn and Learn allocate %v", a)
	}
}
