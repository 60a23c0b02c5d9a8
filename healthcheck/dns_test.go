package healthcheck

import (
	"errors"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

var fuzzQuestion = dnsmessage.Question{Name: dnsmessage.MustNewName("uvs.test."), Type: dnsmessage.TypeSOA, Class: dnsmessage.ClassINET}

func packDNS(t testing.TB, h dnsmessage.Header, qs ...dnsmessage.Question) []byte {
	b, err := (&dnsmessage.Message{Header: h, Questions: qs}).Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseDNSResponse(t *testing.T) {
	q := fuzzQuestion
	upper := q
	upper.Name = dnsmessage.MustNewName("UVS.Test.")
	other := q
	other.Type = dnsmessage.TypeA
	resp := dnsmessage.Header{ID: 7, Response: true}
	for _, c := range []struct {
		name  string
		msg   []byte
		rcode dnsmessage.RCode
		err   error
	}{
		{"response", packDNS(t, resp, q), dnsmessage.RCodeSuccess, nil},
		{"name in other case", packDNS(t, resp, upper), dnsmessage.RCodeSuccess, nil},
		{"no question", packDNS(t, dnsmessage.Header{ID: 7, Response: true, RCode: dnsmessage.RCodeFormatError}), dnsmessage.RCodeFormatError, nil},
		{"NXDOMAIN", packDNS(t, dnsmessage.Header{ID: 7, Response: true, RCode: dnsmessage.RCodeNameError}, q), dnsmessage.RCodeNameError, nil},
		{"query", packDNS(t, dnsmessage.Header{ID: 7}, q), 0, errNotResponse},
		{"other ID", packDNS(t, dnsmessage.Header{ID: 8, Response: true}, q), 0, errOtherID},
		{"other question", packDNS(t, resp, other), 0, errOtherQ},
		{"short", []byte{0, 7, 0x80}, 0, errors.New("any")},
		{"cut question", packDNS(t, resp, q)[:15], 0, errors.New("any")},
	} {
		rcode, err := parseDNSResponse(c.msg, 7, q)
		switch {
		case c.err == nil && (err != nil || rcode != c.rcode):
			t.Errorf("%s: %v, %v; want %v", c.name, rcode, err, c.rcode)
		case c.err != nil && err == nil:
			t.Errorf("%s: accepted", c.name)
		case c.err != nil && c.err.Error() != "any" && !errors.Is(err, c.err):
			t.Errorf("%s: %v, want %v", c.name, err, c.err)
		}
	}
}

// FuzzParseDNSResponse feeds the parser of answers arbitrary datagrams: it
// must not panic, and what it accepts must be a response to the query.
// testdata/fuzz/FuzzParseDNSResponse keeps the corpus.
func FuzzParseDNSResponse(f *testing.F) {
	f.Add(packDNS(f, dnsmessage.Header{ID: 7, Response: true}, fuzzQuestion), uint16(7))
	f.Add(packDNS(f, dnsmessage.Header{ID: 7, Response: true, RCode: dnsmessage.RCodeRefused}), uint16(7))
	f.Add([]byte{}, uint16(0))
	f.Fuzz(func(t *testing.T, msg []byte, id uint16) {
		rcode, err := parseDNSResponse(msg, id, fuzzQuestion)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(msg)
		if err != nil || h.ID != id || !h.Response || h.RCode != rcode {
			t.Fatalf("accepted %x: header %+v, %v", msg, h, err)
		}
	})
}
