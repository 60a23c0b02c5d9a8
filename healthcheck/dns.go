package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

// The query and the answer are packed and parsed with
// golang.org/x/net/dns/dnsmessage: it is already a dependency of the module
// (golang.org/x/net), allocates little, and parses a message one section at
// a time, so judging an answer reads only its header and question. That is
// less code to keep than a hand-made parser and no new module, which
// github.com/miekg/dns would be.

// dnsTypes are the query types of keepalived.conf(5) ("A|NS|CNAME|SOA|MX|
// TXT|AAAA") and the two keepalived 1.3.7 added (RRSIG, DNSKEY).
var dnsTypes = map[string]dnsmessage.Type{
	"A":      dnsmessage.TypeA,
	"NS":     dnsmessage.TypeNS,
	"CNAME":  dnsmessage.TypeCNAME,
	"SOA":    dnsmessage.TypeSOA,
	"MX":     dnsmessage.TypeMX,
	"TXT":    dnsmessage.TypeTXT,
	"AAAA":   dnsmessage.TypeAAAA,
	"RRSIG":  dnsmessage.Type(46),
	"DNSKEY": dnsmessage.Type(48),
}

func dnsType(s string) (dnsmessage.Type, bool) {
	t, ok := dnsTypes[strings.ToUpper(s)]
	return t, ok
}

// dnsName makes name absolute ("example.org" and "example.org." are the
// same name; "." is the root).
func dnsName(name string) (dnsmessage.Name, error) {
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	if name != "." {
		// RFC 1035 2.3.4: labels of 1-63 octets, 255 octets in all.
		for _, l := range strings.Split(name[:len(name)-1], ".") {
			if len(l) == 0 || len(l) > 63 {
				return dnsmessage.Name{}, fmt.Errorf("name %q: a label is empty or longer than 63", name)
			}
		}
		if len(name) > 254 {
			return dnsmessage.Name{}, fmt.Errorf("name %q is longer than 255 octets", name)
		}
	}
	n, err := dnsmessage.NewName(name)
	if err != nil {
		return n, fmt.Errorf("name %q: %v", name, err)
	}
	return n, nil
}

// dnsBufSize is the largest answer read; the rest of a longer datagram is
// cut, which does not matter since only the header and question are read.
const dnsBufSize = 1232

// checkDNS is DNS_CHECK: one query of type DNSType for DNSName is sent over
// UDP to s.Addr ("DNS healthchecker. Uses UDP protocol.", keepalived.conf(5)),
// and the attempt passes when a response to it arrives within
// connect_timeout: a datagram that parses as a DNS response with the query's
// ID, and, if it carries a question, the query's question. Datagrams that
// are not are ignored. keepalived documents no condition on the answer's
// rcode or records, so any rcode passes (it is in the Reason): the server
// answered. An ICMP port unreachable fails the attempt at once.
func (e env) checkDNS(ctx context.Context, s *Spec) Result {
	qtype, ok := dnsType(s.DNSType)
	if !ok {
		return fail("DNS_CHECK: unknown type %q", s.DNSType)
	}
	name, err := dnsName(s.DNSName)
	if err != nil {
		return fail("DNS_CHECK: %v", err)
	}
	q := dnsmessage.Question{Name: name, Type: qtype, Class: dnsmessage.ClassINET}
	id := uint16(rand.Uint32())
	query, err := (&dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{q},
	}).Pack()
	if err != nil {
		return fail("DNS_CHECK: %v", err)
	}

	ctx, cancel := context.WithTimeout(ctx, s.ConnectTimeout)
	defer cancel()
	c, stop, err := e.dial(ctx, "udp", s)
	if err != nil {
		return fail("DNS_CHECK %v: %s", s.Addr, why(err, s.ConnectTimeout))
	}
	defer stop()
	defer c.Close()
	if _, err := c.Write(query); err != nil {
		return fail("DNS_CHECK %v: send: %s", s.Addr, why(err, s.ConnectTimeout))
	}
	var buf [dnsBufSize]byte
	for {
		n, err := c.Read(buf[:])
		if err != nil {
			return fail("DNS_CHECK %v %s %s: %s", s.Addr, s.DNSType, s.DNSName, why(err, s.ConnectTimeout))
		}
		rcode, err := parseDNSResponse(buf[:n], id, q)
		if err == nil {
			return pass("DNS_CHECK %v %s %s: answered, %s", s.Addr, s.DNSType, s.DNSName, rcodeName(rcode))
		}
	}
}

var (
	errNotResponse = errors.New("not a response")
	errOtherID     = errors.New("another query's ID")
	errOtherQ      = errors.New("another question")
)

// parseDNSResponse reads the header and question of msg and returns its
// rcode if it is a response to the query with ID id and question q (a
// response without a question, as servers send with some errors, counts).
func parseDNSResponse(msg []byte, id uint16, q dnsmessage.Question) (dnsmessage.RCode, error) {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		return 0, err
	}
	switch {
	case !h.Response:
		return 0, errNotResponse
	case h.ID != id:
		return 0, errOtherID
	}
	got, err := p.Question()
	switch {
	case errors.Is(err, dnsmessage.ErrSectionDone):
		return h.RCode, nil
	case err != nil:
		return 0, err
	case got.Type != q.Type || got.Class != q.Class || !strings.EqualFold(got.Name.String(), q.Name.String()):
		return 0, errOtherQ
	}
	return h.RCode, nil
}

func rcodeName(r dnsmessage.RCode) string {
	// RCode.String gives "RCodeSuccess"; the names of dig are better known.
	switch r {
	case dnsmessage.RCodeSuccess:
		return "NOERROR"
	case dnsmessage.RCodeFormatError:
		return "FORMERR"
	case dnsmessage.RCodeServerFailure:
		return "SERVFAIL"
	case dnsmessage.RCodeNameError:
		return "NXDOMAIN"
	case dnsmessage.RCodeNotImplemented:
		return "NOTIMP"
	case dnsmessage.RCodeRefused:
		return "REFUSED"
	}
	return fmt.Sprintf("rcode %d", r)
}
