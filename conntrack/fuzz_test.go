package conntrack

import (
	"testing"
	"time"
)

// FuzzTable runs a byte string as a program of table operations, each
// three bytes (operation, connection, TCP flags or argument), and checks
// after each that the table's accounting and index are intact. The TCP
// flags byte comes straight from packets, so every value must be safe.
func FuzzTable(f *testing.F) {
	f.Add([]byte{0, 1, syn, 1, 1, synack, 2, 1, ack, 1, 1, fin, 2, 1, fin, 0, 1, syn})
	f.Add([]byte{0, 2, syn, 5, 0, 61, 6, 0, 10, 2, 2, ack})
	f.Add([]byte{7, 3, 0, 0, 3, syn, 3, 3, 0, 5, 0, 200, 6, 0, 100, 8, 3, 0})
	f.Add([]byte{0, 9, 0xff, 2, 9, 0xff, 1, 9, 0xff, 4, 9, 0})
	f.Fuzz(func(t *testing.T, prog []byte) {
		if len(prog) > 3*200 {
			prog = prog[:3*200]
		}
		tt := newTestTable(t, Config{Shards: 2, Capacity: 16})
		var refs [4]TemplateRef
		var got Conn
		var tp Template
		for ; len(prog) >= 3; prog = prog[3:] {
			op, n, arg := prog[0], int(prog[1]&31), prog[2]
			inputOnly := n&1 == 1 // NAT for even n
			proto := uint8(protoTCP)
			if n&8 != 0 {
				proto = protoUDP
			}
			c := mkConn(n, inputOnly, proto)
			key := TemplateKey{Proto: proto, Client: c.Client, VAddr: vip, VPort: 80}
			switch op % 11 {
			case 0:
				c.Tmpl = refs[n&3]
				tt.Insert(&c, arg)
			case 1:
				o := c.Orig()
				tt.Lookup(&o, arg, &got)
			case 2:
				r := c.Reply()
				tt.Lookup(&r, arg, &got)
			case 3:
				o := c.Orig()
				tt.Remove(&o)
			case 4:
				r := c.Reply()
				tt.Remove(&r)
			case 5:
				tt.clock.Advance(time.Duration(arg) * time.Second)
			case 6:
				if got := tt.Sweep(int(arg % 8)); got > int(arg%8) {
					t.Fatalf("Sweep(%d) = %d", arg%8, got)
				}
			case 7:
				refs[n&3], _ = tt.InsertTemplate(&key, &Template{Dest: c.Dest, Timeout: time.Duration(arg) * time.Second})
			case 8:
				if r, ok := tt.LookupTemplate(&key, &tp); ok {
					refs[n&3] = r
				}
			case 9:
				tt.RemoveTemplate(&key)
			case 10:
				tt.RemoveDest(uint32(arg % 4))
			}
			checkInvariants(t, tt)
		}
	})
}
