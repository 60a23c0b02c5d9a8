package ipvsadm

import (
	"math"
	"math/big"
	"strconv"
	"strings"
	"testing"
)

// Numbers past 64 bits used to wrap in the parser (the overflow check came
// after the multiplication), so 2^64+80 was read as 80. ipvsadm's strtol
// says ERANGE and the option is refused, with the option's own message.
func TestNumberOverflow(t *testing.T) {
	const (
		two64p80 = "18446744073709551696" // 2^64 + 80
		two64p1  = "18446744073709551617" // 2^64 + 1
		two63    = "9223372036854775808"  // LONG_MAX + 1
	)
	svcAddr := "illegal virtual server address[:port] specified"
	cases := []struct {
		args string
		err  string
	}{
		{"-A -t 198.18.0.1:" + two64p80, svcAddr},
		{"-A -u 198.18.0.1:" + two64p80, svcAddr},
		{"-A -t [2001:2::1]:" + two64p80, svcAddr},
		{"-A -t 198.18.0.1:" + two63, svcAddr},
		{"-A -t 198.18.0.1:-" + two64p80, svcAddr},
		{"-A -t 198.18.0.1:80 -p " + two64p80, "invalid timeout value `" + two64p80 + "' specified"},
		{"-A -t 198.18.0.1:80 --persistent=18446744073709551976", "invalid timeout value `18446744073709551976' specified"},
		{"-A -f 4294967297", "invalid fwmark value `4294967297' specified"},
		{"-A -f " + two64p1, "invalid fwmark value `" + two64p1 + "' specified"},
		{"-A -f 36893488147419103233", "invalid fwmark value `36893488147419103233' specified"}, // 2^65 + 1
		{"-A -f -" + two64p1, "invalid fwmark value `-" + two64p1 + "' specified"},
		{"-A -f " + two63, "invalid fwmark value `" + two63 + "' specified"},
		{"-A -f -1", "invalid fwmark value `-1' specified"},
		{"-A -f 1 -6 -p -M 18446744073709551680", "illegal ipv6 netmask specified"}, // 2^64 + 64
		{"-a -t 198.18.0.1:80 -r 198.18.1.1:" + two64p80 + " -m", "illegal real server address[:port] specified"},
		{"-a -t 198.18.0.1:80 -r 198.18.1.1 -w " + two64p1, "illegal weight specified"},
		{"-a -t 198.18.0.1:80 -r 198.18.1.1 -w 2147483648", "illegal weight specified"},
		{"-a -t 198.18.0.1:80 -r 198.18.1.1 -w 4294967297", "illegal weight specified"},
		{"-a -t 198.18.0.1:80 -r 198.18.1.1 -x " + two64p1, "illegal u_threshold specified"},
		{"-a -t 198.18.0.1:80 -r 198.18.1.1 -y " + two64p1, "illegal l_threshold specified"},
		{"-a -t 198.18.0.1:80 -r 198.18.1.1 -i --tun-type gue --tun-port " + two64p80, "illegal tunnel port specified"},
		{"--set " + two64p1 + " 2 3", "invalid timeout value `" + two64p1 + "' specified"},
		{"--set 1 " + two64p1 + " 3", "invalid timeout value `" + two64p1 + "' specified"},
		{"--set 1 2 " + two64p1, "invalid timeout value `" + two64p1 + "' specified"},
		{"--start-daemon master --syncid " + two64p1, "illegal syncid specified"},
		{"--start-daemon master --mcast-port " + two64p80, "illegal mcast-port specified"},
		{"--start-daemon master --mcast-ttl " + two64p1, "illegal mcast-ttl specified"},
		{"--start-daemon master --sync-maxlen " + two64p80, "illegal sync-maxlen specified"},
		{"-A -t 198.18.0.1:80 -M 0x", "illegal virtual server persistent mask specified"},
		{"-A -t 198.18.0.1:80 -M 255.255.255.0x", "illegal virtual server persistent mask specified"},
		{"-A -t 198.18.0.0x:80", svcAddr},
	}
	for _, c := range cases {
		st := newFake()
		got := runAll(st, "", strings.Fields(c.args)...)
		if got.err != c.err+"\n" || got.rc != 2 || got.out != "" {
			t.Errorf("ipvsadm %s: rc=%d stderr=%q stdout=%q; want rc=2 stderr=%q", c.args, got.rc, got.err, got.out, c.err)
		}
		if st.updates != 0 {
			t.Errorf("ipvsadm %s: a rejected command changed the table", c.args)
		}
		// The same line in -R input fails the same way.
		st = newFake()
		if got := runAll(st, c.args+"\n", "-R"); got.err != c.err+"\n" || got.rc != 2 || st.updates != 0 {
			t.Errorf("ipvsadm -R <<< %s: rc=%d stderr=%q; want rc=2 stderr=%q", c.args, got.rc, got.err, c.err)
		}
	}

	// The largest values that fit are still taken, in strtol's forms.
	st := setup(t,
		"-A -f 4294967295 -s rr",
		"-A -t 198.18.0.1:+65535 -s rr",
		"-a -t 198.18.0.1:65535 -r 198.18.1.1:0080 -m -w 2147483647 -x +2147483647 -y 0",
		"--set 2678400 +1 0002",
	)
	want := "-A -t 198.18.0.1:65535 -s rr\n" +
		"-a -t 198.18.0.1:65535 -r 198.18.1.1:80 -m -w 2147483647\n" +
		"-A -f 4294967295 -s rr\n"
	if got := run(t, st, "-S", "-n"); got != want {
		t.Errorf("-S -n:\n%s\nwant:\n%s", got, want)
	}
	if got := run(t, st, "-L", "--timeout"); got != "Timeout (tcp tcpfin udp): 2678400 1 2\n" {
		t.Errorf("-L --timeout: %q", got)
	}
}

// The C conversions, value by value.
func TestCStrtol(t *testing.T) {
	cases := []struct {
		in       string
		v        int64
		rangeErr bool
		n        int
	}{
		{"", 0, false, 0},
		{"-", 0, false, 0},
		{" +", 0, false, 0},
		{"80", 80, false, 2},
		{" \t+80x", 80, false, 5},
		{"-0", 0, false, 2},
		{"9223372036854775807", math.MaxInt64, false, 19},
		{"9223372036854775808", math.MaxInt64, true, 19},
		{"-9223372036854775808", math.MinInt64, false, 20},
		{"-9223372036854775809", math.MinInt64, true, 20},
		{"18446744073709551696", math.MaxInt64, true, 20},
		{"-18446744073709551696", math.MinInt64, true, 21},
		{"000000000000000000000000000042", 42, false, 30},
		{"99999999999999999999999999999999 ", math.MaxInt64, true, 32},
	}
	for _, c := range cases {
		v, rangeErr, n := cStrtol(c.in)
		if v != c.v || rangeErr != c.rangeErr || n != c.n {
			t.Errorf("cStrtol(%q) = %d, %v, %d; want %d, %v, %d", c.in, v, rangeErr, n, c.v, c.rangeErr, c.n)
		}
	}
	// glibc's atoi is (int)strtol: the long, clamped, then cut to 32 bits.
	for in, want := range map[string]int{
		"64":                    64,
		"64/x":                  64,
		"4294967360":            64, // 2^32 + 64
		"-4294967232":           64, // -(2^32) + 64
		"18446744073709551680":  -1, // LONG_MAX, cut
		"-99999999999999999999": 0,  // LONG_MIN, cut
		"x64":                   0,
	} {
		if got := atoi(in); got != want {
			t.Errorf("atoi(%q) = %d, want %d", in, got, want)
		}
	}
}

// numOpt is one numeric option for the oracle: the command line that
// carries value s, the range string_to_number is given, the message on
// rejection and where the value lands.
type numOpt struct {
	name   string
	args   func(s string) []string
	lo, hi int64
	msg    func(s string) string
	value  func(c *command) int64
	ref    func(s string, lo, hi int64) (int64, bool) // refNumber unless set
	usable func(s string) bool                        // whether s can be put on this command line
}

func fixed(m string) func(string) string { return func(string) string { return m } }

func noColon(s string) bool { return !strings.Contains(s, ":") }

var numericOptions = []numOpt{
	{
		name: "-t port",
		args: func(s string) []string { return []string{"-L", "-t", "198.18.0.1:" + s} },
		lo:   0, hi: 65535,
		msg:    fixed("illegal virtual server address[:port] specified"),
		value:  func(c *command) int64 { return int64(c.svc.port) },
		ref:    portRef,
		usable: noColon,
	},
	{
		name: "-r port",
		args: func(s string) []string { return []string{"-a", "-t", "198.18.0.1:80", "-r", "198.18.1.1:" + s, "-m"} },
		lo:   0, hi: 65535,
		msg:    fixed("illegal real server address[:port] specified"),
		value:  func(c *command) int64 { return int64(c.dest.port) },
		ref:    portRef,
		usable: noColon,
	},
	{
		name: "-f",
		args: func(s string) []string { return []string{"-A", "--fwmark-service=" + s} },
		lo:   1, hi: math.MaxUint32,
		msg:   func(s string) string { return "invalid fwmark value `" + s + "' specified" },
		value: func(c *command) int64 { return int64(c.svc.fwmark) },
	},
	{
		name: "-p",
		args: func(s string) []string { return []string{"-A", "-t", "198.18.0.1:80", "--persistent=" + s} },
		lo:   1, hi: maxTimeout,
		msg:   func(s string) string { return "invalid timeout value `" + s + "' specified" },
		value: func(c *command) int64 { return int64(c.svc.timeout) },
	},
	{
		name: "-M (IPv6)",
		args: func(s string) []string { return []string{"-A", "-f", "1", "-6", "-p", "--netmask=" + s} },
		lo:   1, hi: 128,
		msg:   fixed("illegal ipv6 netmask specified"),
		value: func(c *command) int64 { return int64(c.svc.mask6) },
		ref:   atoiRef,
	},
	{
		name: "-w",
		args: func(s string) []string {
			return []string{"-a", "-t", "198.18.0.1:80", "-r", "198.18.1.1", "--weight=" + s}
		},
		lo: 0, hi: math.MaxInt32,
		msg:   fixed("illegal weight specified"),
		value: func(c *command) int64 { return int64(c.dest.weight) },
	},
	{
		name: "-x",
		args: func(s string) []string {
			return []string{"-a", "-t", "198.18.0.1:80", "-r", "198.18.1.1", "--u-threshold=" + s}
		},
		lo: 0, hi: math.MaxInt32,
		msg:   fixed("illegal u_threshold specified"),
		value: func(c *command) int64 { return int64(c.dest.uthresh) },
	},
	{
		name: "-y",
		args: func(s string) []string {
			return []string{"-a", "-t", "198.18.0.1:80", "-r", "198.18.1.1", "--l-threshold=" + s}
		},
		lo: 0, hi: math.MaxInt32,
		msg:   fixed("illegal l_threshold specified"),
		value: func(c *command) int64 { return int64(c.dest.lthresh) },
	},
	{
		name: "--tun-port",
		args: func(s string) []string {
			return []string{"-a", "-t", "198.18.0.1:80", "-r", "198.18.1.1", "-i", "--tun-type", "gue", "--tun-port=" + s}
		},
		lo: 1, hi: 65535,
		msg:   fixed("illegal tunnel port specified"),
		value: func(c *command) int64 { return int64(c.dest.tunPort) },
	},
	{
		name: "--set",
		args: func(s string) []string { return []string{"--set", "--", "7", "8", s} },
		lo:   0, hi: maxTimeout,
		msg:   func(s string) string { return "invalid timeout value `" + s + "' specified" },
		value: func(c *command) int64 { return int64(c.timeouts[2]) },
	},
	{
		name: "--syncid",
		args: func(s string) []string { return []string{"--start-daemon", "master", "--syncid=" + s} },
		lo:   0, hi: 255,
		msg:   fixed("illegal syncid specified"),
		value: func(c *command) int64 { return int64(c.daemon.SyncID) },
	},
	{
		name: "--mcast-port",
		args: func(s string) []string { return []string{"--start-daemon", "master", "--mcast-port=" + s} },
		lo:   1, hi: 65535,
		msg:   fixed("illegal mcast-port specified"),
		value: func(c *command) int64 { return int64(c.daemon.Port) },
	},
	{
		name: "--mcast-ttl",
		args: func(s string) []string { return []string{"--start-daemon", "master", "--mcast-ttl=" + s} },
		lo:   1, hi: 255,
		msg:   fixed("illegal mcast-ttl specified"),
		value: func(c *command) int64 { return int64(c.daemon.TTL) },
	},
	{
		name: "--sync-maxlen",
		args: func(s string) []string { return []string{"--start-daemon", "master", "--sync-maxlen=" + s} },
		lo:   1, hi: 65535 - 20 - 8,
		msg:   fixed("illegal sync-maxlen specified"),
		value: func(c *command) int64 { return int64(c.daemon.MaxLen) },
	},
}

// leadingNumber splits s as strtol reads it: C white space, at most one
// sign, then the digits. ok is false when no digit follows.
func leadingNumber(s string) (sign, digits, rest string, ok bool) {
	t := strings.TrimLeft(s, " \t\n\v\f\r")
	if t != "" && (t[0] == '+' || t[0] == '-') {
		sign, t = t[:1], t[1:]
	}
	n := 0
	for n < len(t) && t[n] >= '0' && t[n] <= '9' {
		n++
	}
	return sign, t[:n], t[n:], n > 0
}

// refNumber is ipvsadm's string_to_number from its definition, in
// unbounded integers: the whole of s is one number and its value lies in
// [lo, hi]. Every option's range lies within a long, so strtol's ERANGE
// needs no case of its own: a value too large for a long is out of range.
func refNumber(s string, lo, hi int64) (int64, bool) {
	sign, digits, rest, ok := leadingNumber(s)
	if !ok || rest != "" {
		return 0, false
	}
	v, _ := new(big.Int).SetString(sign+digits, 10)
	if v.Cmp(big.NewInt(lo)) < 0 || v.Cmp(big.NewInt(hi)) > 0 {
		return 0, false
	}
	return v.Int64(), true
}

// portRef is parse_service's port: a number in range, else a service name.
func portRef(s string, lo, hi int64) (int64, bool) {
	if v, ok := refNumber(s, lo, hi); ok {
		return v, true
	}
	p, ok := serviceToPort(s, 6)
	return int64(p), ok
}

// atoiRef is -M for IPv6: glibc's atoi, (int)strtol(s, NULL, 10), the
// leading number clamped to a long and cut to 32 bits, stored in a __u32
// and checked against [lo, hi].
func atoiRef(s string, lo, hi int64) (int64, bool) {
	v := new(big.Int)
	if sign, digits, _, ok := leadingNumber(s); ok {
		v.SetString(sign+digits, 10)
	}
	if v.Cmp(big.NewInt(math.MaxInt64)) > 0 {
		v.SetInt64(math.MaxInt64)
	}
	if v.Cmp(big.NewInt(math.MinInt64)) < 0 {
		v.SetInt64(math.MinInt64)
	}
	m := int64(uint32(v.Int64()))
	return m, lo <= m && m <= hi
}

// checkNumber runs s through every numeric option and compares the
// parser with the big-integer reference.
func checkNumber(t *testing.T, s string) {
	t.Helper()
	if strings.IndexByte(s, 0) >= 0 {
		return // a C argument cannot hold a NUL
	}
	for _, o := range numericOptions {
		if o.usable != nil && !o.usable(s) {
			continue
		}
		ref := o.ref
		if ref == nil {
			ref = refNumber
		}
		want, ok := ref(s, o.lo, o.hi)
		c, err := parse(o.args(s), false)
		switch {
		case ok && err != nil:
			t.Errorf("%s %q: rejected (%q), want %d", o.name, s, err.msg, want)
		case ok && o.value(c) != want:
			t.Errorf("%s %q: read as %d, want %d", o.name, s, o.value(c), want)
		case !ok && err == nil:
			t.Errorf("%s %q: accepted as %d, want %q", o.name, s, o.value(c), o.msg(s))
		case !ok && (err.msg != o.msg(s) || err.code != 2):
			t.Errorf("%s %q: rc=%d %q, want rc=2 %q", o.name, s, err.code, err.msg, o.msg(s))
		}
	}
}

// FuzzNumber: every numeric option reads any string as ipvsadm would,
// checked against a big-integer reference. Each input is also tried with
// 2^32 and 2^64 (and their multiples) added to its value, which is where
// a parser that wraps would go wrong.
func FuzzNumber(f *testing.F) {
	for _, s := range []string{
		"0", "1", "80", "+80", "-1", "-0", " 7", "\t\n\v\f\r8", "128", "129", "255", "256",
		"65507", "65535", "65536", "2678400", "2678401", "2147483647", "2147483648",
		"4294967295", "4294967296", "4294967297", "4294967360",
		"9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
		"18446744073709551615", "18446744073709551616", "18446744073709551617", "18446744073709551696",
		"36893488147419103232", "00000000000000000000080", "80 ", "8 0", "0x50", "1e3", "http", "",
	} {
		f.Add(s)
	}
	wraps := []*big.Int{
		new(big.Int).Lsh(big.NewInt(1), 32),
		new(big.Int).Lsh(big.NewInt(1), 64),
		new(big.Int).Lsh(big.NewInt(3), 64),
		new(big.Int).Lsh(big.NewInt(1), 65),
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 100 {
			return
		}
		checkNumber(t, s)
		sign, digits, rest, ok := leadingNumber(s)
		if !ok || len(digits) > 40 {
			return
		}
		v, _ := new(big.Int).SetString(sign+digits, 10)
		prefix := s[:len(s)-len(rest)-len(digits)-len(sign)]
		for _, w := range wraps {
			for _, u := range []*big.Int{new(big.Int).Add(v, w), new(big.Int).Sub(v, w)} {
				checkNumber(t, prefix+u.String()+rest)
			}
		}
	})
}

// The oracle itself on a few inputs whose answers are known.
func TestNumberOracle(t *testing.T) {
	for _, c := range []struct {
		s      string
		lo, hi int64
		v      int64
		ok     bool
	}{
		{"80", 0, 65535, 80, true},
		{" +80", 0, 65535, 80, true},
		{"80 ", 0, 65535, 0, false},
		{"18446744073709551696", 0, 65535, 0, false},
		{"-0", 0, 1, 0, true},
		{"+-1", -5, 5, 0, false},
		{"4294967295", 1, math.MaxUint32, math.MaxUint32, true},
	} {
		if v, ok := refNumber(c.s, c.lo, c.hi); v != c.v || ok != c.ok {
			t.Errorf("refNumber(%q) = %d, %v", c.s, v, ok)
		}
	}
	for _, s := range []string{"0", "65535", "18446744073709551696", "4294967297", strconv.Itoa(math.MaxInt32 + 1)} {
		checkNumber(t, s)
	}
}
