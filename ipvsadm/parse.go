package ipvsadm

import (
	"math"
	"net/netip"
	"strings"
)

// maxTimeout is ipvsadm's limit for -p and --set: 31 days.
const maxTimeout = 86400 * 31

// defaultPersist is what -p without a value means, in seconds.
const defaultPersist = 360

// parse turns one argv (without the program name) into a command, running
// ipvsadm's checks in ipvsadm's order. inRestore marks a line of -R input.
func parse(args []string, inRestore bool) (*command, *exit) {
	c := &command{}
	c.svc.mask4 = 0xffffffff
	c.dest.weight = 1
	c.dest.fwd = fwdRoute
	s := &scanner{args: args}

	o, arg, _, done, perr := s.next()
	if done || perr != nil {
		return nil, tryHelp()
	}
	switch o.tag {
	case 'A':
		c.kind = cmdAdd
	case 'E':
		c.kind = cmdEdit
	case 'D':
		c.kind = cmdDel
	case 'a':
		c.kind = cmdAddDest
	case 'e':
		c.kind = cmdEditDest
	case 'd':
		c.kind = cmdDelDest
	case 'C':
		c.kind = cmdFlush
	case 'L', 'l':
		c.kind = cmdList
	case 'Z':
		c.kind = cmdZero
	case tagSet:
		c.kind = cmdTimeout
	case 'R':
		if inRestore {
			return nil, tryHelp() // no restore within a restore
		}
		c.kind = cmdRestore
	case 'S':
		c.kind = cmdSave
	case tagStartDaemon, tagStopDaemon:
		c.kind = cmdStartDaemon
		msg := "illegal start-daemon parameter specified"
		if o.tag == tagStopDaemon {
			c.kind = cmdStopDaemon
			msg = "illegal start_daemon specified"
		}
		switch arg {
		case "master":
			c.daemon.Master = true
		case "backup":
		default:
			return nil, fail(2, "%s", msg)
		}
	case 'h':
		return &command{kind: cmdHelp}, nil
	case 'v':
		return &command{kind: cmdVersion}, nil
	default:
		return nil, tryHelp()
	}

	for {
		o, arg, hasArg, done, perr := s.next()
		if perr != nil {
			return nil, perr
		}
		if done {
			break
		}
		if err := c.option(o, arg, hasArg, s.args[s.i-1]); err != nil {
			return nil, err
		}
	}

	left := s.leftovers
	if c.kind == cmdTimeout {
		if len(left) < 3 {
			return nil, fail(2, "--set option requires 3 timeout values")
		}
		for i := range 3 {
			v, err := parseTimeout(left[i], 0)
			if err != nil {
				return nil, err
			}
			c.timeouts[i] = v
		}
		left = left[3:]
	}
	if len(left) > 0 {
		return nil, fail(2, "unexpected argument %s", left[0])
	}
	if c.svc.flagsSet {
		bits, err := parseSchedFlags(c.svc.sched, c.svc.flagsArg)
		if err != nil {
			return nil, err
		}
		c.svc.schedBits = bits
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	return c, nil
}

// option applies one option after the command, as ipvsadm's option loop
// does: values are checked as they come.
func (c *command) option(o *optDef, arg string, hasArg bool, word string) *exit {
	set := func(opt int) *exit { return c.setOption(opt) }
	// setNumber records an option whose value is a number in [lo, hi].
	setNumber := func(opt int, arg string, lo, hi int64, msg string) (int64, *exit) {
		if err := set(opt); err != nil {
			return 0, err
		}
		v, ok := numberIn(arg, lo, hi)
		if !ok {
			return 0, fail(2, "%s", msg)
		}
		return v, nil
	}
	switch o.tag {
	case 't', 'u', tagSCTP:
		if err := set(optService); err != nil {
			return err
		}
		switch o.tag {
		case 't':
			c.svc.proto = 6
		case 'u':
			c.svc.proto = 17
		default:
			c.svc.proto = protoSCTP
		}
		af, addr, port, hasPort, ok := parseService(arg, c.svc.proto)
		if !ok {
			return fail(2, "illegal virtual server address[:port] specified")
		}
		c.svc.af, c.svc.addr = af, addr
		if af == af6 {
			c.svc.mask6 = 128
		}
		if hasPort {
			c.svc.port = port
		}
	case 'f':
		if err := set(optService); err != nil {
			return err
		}
		c.svc.af = af4
		c.svc.proto = 6
		v, ok := strtol(arg)
		if !ok || v <= 0 || v > 0xffffffff {
			return fail(2, "invalid fwmark value `%s' specified", arg)
		}
		c.svc.fwmark = uint32(v)
	case 's':
		if err := set(optScheduler); err != nil {
			return err
		}
		c.svc.sched = truncate(arg, 15)
	case 'p':
		if err := set(optPersistent); err != nil {
			return err
		}
		c.svc.persist = true
		c.svc.timeout = defaultPersist
		if hasArg {
			v, err := parseTimeout(arg, 1)
			if err != nil {
				return err
			}
			c.svc.timeout = v
		}
	case 'M':
		if err := set(optNetmask); err != nil {
			return err
		}
		if c.svc.af != af6 {
			// inet_aton: "24" is the address 0.0.0.24, and that is the
			// mask, prefix or not (the kernel masks clients with it
			// bitwise).
			m, ok := inetAton(arg)
			if !ok {
				return fail(2, "illegal virtual server persistent mask specified")
			}
			c.svc.mask4 = m
		} else {
			n := atoi(arg)
			if n < 1 || n > 128 {
				return fail(2, "illegal ipv6 netmask specified")
			}
			c.svc.mask6 = n
		}
	case 'r':
		if err := set(optServer); err != nil {
			return err
		}
		// The server inherits the service's family and port as they stand
		// at this point of the command line.
		af, addr, port, hasPort, ok := parseService(arg, c.svc.proto)
		if !ok {
			return fail(2, "illegal real server address[:port] specified")
		}
		c.dest.af, c.dest.addr, c.dest.port = af, addr, c.svc.port
		if hasPort {
			c.dest.port = port
		}
	case 'i', 'g', 'm':
		if err := set(optForward); err != nil {
			return err
		}
		c.dest.fwd = map[int]fwdMethod{'i': fwdTunnel, 'g': fwdRoute, 'm': fwdMasq}[o.tag]
	case 'w':
		v, err := setNumber(optWeight, arg, 0, 1<<31-1, "illegal weight specified")
		if err != nil {
			return err
		}
		c.dest.weight = int32(v)
	case 'x':
		v, err := setNumber(optUThreshold, arg, 0, 1<<31-1, "illegal u_threshold specified")
		if err != nil {
			return err
		}
		c.dest.uthresh = uint32(v)
	case 'y':
		v, err := setNumber(optLThreshold, arg, 0, 1<<31-1, "illegal l_threshold specified")
		if err != nil {
			return err
		}
		c.dest.lthresh = uint32(v)
	case 'c':
		return set(optConnection)
	case 'n':
		c.numeric = true
		return set(optNumeric)
	case tagMcastInterface:
		if err := set(optMcast); err != nil {
			return err
		}
		c.daemon.Interface = truncate(arg, 15)
	case tagSyncID:
		v, err := setNumber(optSyncID, arg, 0, 255, "illegal syncid specified")
		if err != nil {
			return err
		}
		c.daemon.SyncID = int(v)
	case tagTimeout:
		return set(optTimeout)
	case tagDaemon:
		return set(optDaemon)
	case tagStats:
		c.stats = true
		return set(optStats)
	case tagRate:
		c.rate = true
		return set(optRate)
	case tagThresholds:
		c.thresholds = true
		return set(optThresholds)
	case tagPersistentConn:
		c.persistConn = true
		return set(optPersistentConn)
	case tagNoSort:
		c.noSort = true
		return set(optNoSort)
	case tagSort:
		// the default; accepted for compatibility
	case 'X':
		c.exact = true
		return set(optExact)
	case '6':
		if c.svc.fwmark == 0 {
			return fail(2, "-6 used before -f\n")
		}
		c.svc.af = af6
		c.svc.mask6 = 128
	case 'o':
		if err := set(optOnePacket); err != nil {
			return err
		}
		c.svc.onePacket = true
	case tagPE:
		if err := set(optPE); err != nil {
			return err
		}
		c.svc.pe = truncate(arg, 15)
	case 'b':
		if err := set(optSchedFlags); err != nil {
			return err
		}
		c.svc.flagsArg, c.svc.flagsSet = truncate(arg, 127), true
	case tagMcastGroup:
		if err := set(optMcastGroup); err != nil {
			return err
		}
		if strings.Contains(arg, ":") {
			a, ok := parseIPv6(arg)
			if !ok || !a.IsMulticast() {
				return fail(2, "invalid IPv6 mcast-group `%s'", arg)
			}
			c.daemon.Group = a
		} else {
			a, err := netip.ParseAddr(arg)
			if err != nil || !a.Is4() || !a.IsMulticast() {
				return fail(2, "invalid IPv4 mcast-group `%s'", arg)
			}
			c.daemon.Group = a
		}
	case tagMcastPort:
		v, err := setNumber(optMcastPort, arg, 1, 65535, "illegal mcast-port specified")
		if err != nil {
			return err
		}
		c.daemon.Port = int(v)
	case tagMcastTTL:
		v, err := setNumber(optMcastTTL, arg, 1, 255, "illegal mcast-ttl specified")
		if err != nil {
			return err
		}
		c.daemon.TTL = int(v)
	case tagSyncMaxLen:
		v, err := setNumber(optSyncMaxLen, arg, 1, 65535-20-8, "illegal sync-maxlen specified")
		if err != nil {
			return err
		}
		c.daemon.MaxLen = int(v)
	case tagTunInfo:
		c.tunInfo = true
		return set(optTunInfo)
	case tagTunType:
		if err := set(optTunType); err != nil {
			return err
		}
		i := indexOf(tunNames, arg)
		if i < 0 {
			return fail(2, "illegal tunnel type specified")
		}
		c.dest.tunType = i
	case tagTunPort:
		v, err := setNumber(optTunPort, arg, 1, 65535, "illegal tunnel port specified")
		if err != nil {
			return err
		}
		c.dest.tunPort = uint16(v)
	case tagTunNoCsum:
		return set(optTunNoCsum)
	case tagTunCsum:
		c.dest.tunCsum |= 1
		return set(optTunCsum)
	case tagTunRemCsum:
		c.dest.tunCsum |= 2
		return set(optTunRemCsum)
	default:
		// A command letter, -h or -v after the command.
		return fail(2, "invalid option `%s'", word)
	}
	return nil
}

// check runs ipvsadm's checks that need the whole command line.
func (c *command) check() *exit {
	row := cmdOpts[c.kind]
	last, count := 0, 0
	for j := range numOpts {
		if !c.has(j) {
			if row[j] == '+' {
				return fail(2, "You need to supply the '%s' option for the '%s' command", optNames[j], cmdNames[c.kind])
			}
			continue
		}
		switch row[j] {
		case 'x':
			return fail(2, "Illegal '%s' option with the '%s' command", optNames[j], cmdNames[c.kind])
		case '1':
			count++
			if count == 1 {
				last = j
				continue
			}
			return fail(2, "The option '%s' conflicts with the '%s' option in the '%s' command", optNames[j], optNames[last], cmdNames[c.kind])
		}
	}

	switch c.kind {
	case cmdAdd, cmdEdit:
		if c.svc.fwmark == 0 && c.svc.port == 0 && !c.svc.persist {
			return fail(2, "Zero port specified for non-persistent service")
		}
		if c.svc.onePacket && c.svc.fwmark == 0 && c.svc.proto != 17 {
			return fail(2, "One-Packet Scheduling is only for UDP virtual services")
		}
		if c.svc.sched == "" {
			c.svc.sched = "wlc"
		}
	case cmdStartDaemon:
		if c.daemon.Interface == "" {
			c.daemon.Interface = "eth0"
		}
	case cmdAddDest, cmdEditDest:
		// Direct routing and tunnels cannot change the port.
		if c.svc.fwmark == 0 && (c.dest.fwd == fwdTunnel || c.dest.fwd == fwdRoute) {
			c.dest.port = c.svc.port
		}
		if c.dest.af != c.svc.af && c.dest.fwd != fwdTunnel {
			return fail(2, "Different address family is allowed only for tunneling servers")
		}
		if c.opts&(1<<optTunType|1<<optTunPort|1<<optTunNoCsum|1<<optTunCsum|1<<optTunRemCsum) != 0 && c.dest.fwd != fwdTunnel {
			return fail(2, "Tunnel options conflict with forward method")
		}
		if err := c.checkTunnel(); err != nil {
			return err
		}
	case cmdList:
		if c.opts&(1<<optConnection|1<<optTimeout|1<<optDaemon) != 0 && c.opts&(1<<optStats|1<<optRate|1<<optThresholds) != 0 ||
			c.opts&(1<<optTimeout|1<<optDaemon) != 0 && c.has(optPersistentConn) {
			return fail(2, "options conflicts in the list command")
		}
	}
	if c.svc.proto == protoSCTP {
		return fail(2, "SCTP services are not supported by this director")
	}
	return nil
}

// checkTunnel applies ipvsadm's per-tunnel-type option rules.
func (c *command) checkTunnel() *exit {
	t := c.dest.tunType
	row := tunnelOpts[t]
	last, count := 0, 0
	for j, opt := range tunOpts {
		if !c.has(opt) {
			if row[j] == '+' {
				return fail(2, "You need to supply the '%s' option for the '%s' tunnel type", optNames[opt], tunNames[t])
			}
			continue
		}
		switch row[j] {
		case 'x':
			return fail(2, "Illegal '%s' option with the '%s' tunnel type", optNames[opt], tunNames[t])
		case '1':
			count++
			if count == 1 {
				last = opt
				continue
			}
			return fail(2, "The option '%s' conflicts with the '%s' option in the '%s' tunnel type", optNames[opt], optNames[last], tunNames[t])
		}
	}
	return nil
}

// Scheduler flag bits as ipvsadm numbers them (IP_VS_SVC_F_SCHED1..3).
const (
	sched1 uint8 = 1 << iota
	sched2
	sched3
)

// parseSchedFlags reads -b for scheduler sched (wlc when -s is absent).
func parseSchedFlags(sched, arg string) (uint8, *exit) {
	if sched == "" {
		sched = "wlc"
	}
	var bits uint8
	n := 0
	for flag := range strings.SplitSeq(arg, ",") {
		if flag == "" {
			continue
		}
		n++
		need := ""
		switch flag {
		case "flag-1":
			bits |= sched1
		case "flag-2":
			bits |= sched2
		case "flag-3":
			bits |= sched3
		case "sh-fallback":
			bits, need = bits|sched1, "sh"
		case "sh-port":
			bits, need = bits|sched2, "sh"
		case "mh-fallback":
			bits, need = bits|sched1, "mh"
		case "mh-port":
			bits, need = bits|sched2, "mh"
		default:
			return 0, fail(2, "invalid scheduler flag `%s'", flag)
		}
		if need != "" && sched != need {
			return 0, fail(2, "incompatible scheduler flag `%s'", flag)
		}
	}
	if n == 0 {
		return 0, fail(2, "invalid scheduler flag `%s'", arg)
	}
	return bits, nil
}

// parseTimeout is ipvsadm's parse_timeout for a given minimum.
func parseTimeout(s string, min int64) (uint32, *exit) {
	v, ok := numberIn(s, min, maxTimeout)
	if !ok {
		return 0, fail(2, "invalid timeout value `%s' specified", s)
	}
	return uint32(v), nil
}

// numberIn is ipvsadm's string_to_number: a whole base-10 number within
// [min, max].
func numberIn(s string, min, max int64) (int64, bool) {
	v, ok := strtol(s)
	if !ok || v < min || v > max {
		return 0, false
	}
	return v, true
}

// strtol parses s as string_to_number and parse_fwmark use C's
// strtol(s, &end, 10): it reports the value and whether all of s was a
// number that fits a long (errno not ERANGE).
func strtol(s string) (int64, bool) {
	v, rangeErr, n := cStrtol(s)
	if n == 0 || n != len(s) || rangeErr {
		return 0, false
	}
	return v, true
}

// cStrtol is C's strtol(s, &end, 10) with a 64-bit long: leading white
// space, an optional sign, then decimal digits. It returns the value,
// clamped to the long range with rangeErr set when the number does not
// fit (strtol's LONG_MAX or LONG_MIN with errno ERANGE), and n, the
// length of the number in s (0 when s does not start with one, as when
// strtol sets end to s). Overflow is detected before it can happen:
// the digits are never accumulated past the limit, so no input wraps.
func cStrtol(s string) (v int64, rangeErr bool, n int) {
	i := 0
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	limit := uint64(math.MaxInt64) // the largest magnitude that fits
	if neg {
		limit++
	}
	start := i
	var u uint64
	for ; i < len(s) && isDigit(s[i]); i++ {
		d := uint64(s[i] - '0')
		if rangeErr || u > (limit-d)/10 {
			rangeErr = true // keep consuming digits, as strtol does
			continue
		}
		u = u*10 + d
	}
	if i == start {
		return 0, false, 0
	}
	switch {
	case rangeErr && neg:
		return math.MinInt64, true, i
	case rangeErr:
		return math.MaxInt64, true, i
	case neg:
		return int64(-u), false, i // -u wraps to math.MinInt64 for u == 1<<63
	}
	return int64(u), false, i
}

// atoi is glibc's atoi, (int)strtol(s, NULL, 10): the leading number,
// clamped to the long range, then cut to 32 bits; 0 when there is none.
// ipvsadm reads an IPv6 -M this way, so -M 4294967360 is 64 there too.
func atoi(s string) int {
	v, _, _ := cStrtol(s)
	return int(int32(v))
}

func isSpace(b byte) bool {
	return b == ' ' || b == '\t' || b == '\n' || b == '\v' || b == '\f' || b == '\r'
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }

// inetAton parses an IPv4 address as inet_aton does: one to four parts,
// each decimal, octal (leading 0) or hex (0x), the last filling the rest
// of the 32 bits. Returned in host order.
func inetAton(s string) (uint32, bool) {
	var parts []uint64
	i := 0
	for {
		if i >= len(s) || !isDigit(s[i]) {
			return 0, false
		}
		base := uint64(10)
		if s[i] == '0' {
			base = 8
			i++
			if i < len(s) && (s[i] == 'x' || s[i] == 'X') {
				base = 16
				i++
			}
		}
		var v uint64
		digits := i
		for ; i < len(s); i++ {
			d, ok := digitVal(s[i], base)
			if !ok {
				break
			}
			v = v*base + d // v <= 0xffffffff here, so this cannot wrap
			if v > 0xffffffff {
				return 0, false
			}
		}
		if base == 16 && i == digits {
			// strtoul reads a bare "0x" as 0 ending at the x, and an x
			// is neither a dot nor the white space that may end it.
			return 0, false
		}
		parts = append(parts, v)
		if i < len(s) && s[i] == '.' {
			if len(parts) == 4 {
				return 0, false
			}
			i++
			continue
		}
		break
	}
	// Anything after the address must start with white space.
	if i < len(s) && !isSpace(s[i]) {
		return 0, false
	}
	last := parts[len(parts)-1]
	var v uint32
	switch len(parts) {
	case 1:
		v = uint32(last)
	case 2:
		if parts[0] > 0xff || last > 0xffffff {
			return 0, false
		}
		v = uint32(parts[0]<<24 | last)
	case 3:
		if parts[0] > 0xff || parts[1] > 0xff || last > 0xffff {
			return 0, false
		}
		v = uint32(parts[0]<<24 | parts[1]<<16 | last)
	case 4:
		if parts[0] > 0xff || parts[1] > 0xff || parts[2] > 0xff || last > 0xff {
			return 0, false
		}
		v = uint32(parts[0]<<24 | parts[1]<<16 | parts[2]<<8 | last)
	}
	return v, true
}

func digitVal(b byte, base uint64) (uint64, bool) {
	var d uint64
	switch {
	case b >= '0' && b <= '9':
		d = uint64(b - '0')
	case base == 16 && b >= 'a' && b <= 'f':
		d = uint64(b-'a') + 10
	case base == 16 && b >= 'A' && b <= 'F':
		d = uint64(b-'A') + 10
	default:
		return 0, false
	}
	if d >= base {
		return 0, false
	}
	return d, true
}

// parseIPv6 is inet_pton(AF_INET6): an IPv6 address without zone.
func parseIPv6(s string) (netip.Addr, bool) {
	if !strings.Contains(s, ":") || strings.Contains(s, "%") {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() {
		return netip.Addr{}, false
	}
	return a, true
}

// parseService is ipvsadm's parse_service: host[:port] or [v6]:port, the
// port a number or a service name of proto. Host names are not looked up
// (no DNS from the director's command).
func parseService(buf string, proto uint8) (af int, addr netip.Addr, port uint16, hasPort, ok bool) {
	if allDigits(buf) {
		return
	}
	host, portStr, havePort := buf, "", false
	if strings.HasPrefix(buf, "[") {
		end := strings.IndexByte(buf, ']')
		if end < 0 || end+1 >= len(buf) || buf[end+1] != ':' {
			return
		}
		host, portStr, havePort = buf[1:end], buf[end+2:], true
	}
	if a, v6 := parseIPv6(host); v6 {
		af, addr = af6, a
	} else {
		// An IPv4 host; inside brackets ipvsadm looks for the port again.
		havePort = false
		if i := strings.LastIndexByte(host, ':'); i >= 0 {
			host, portStr, havePort = host[:i], host[i+1:], true
		}
		v, ok4 := inetAton(host)
		if !ok4 {
			return
		}
		af = af4
		addr = netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	if havePort {
		if n, okn := numberIn(portStr, 0, 65535); okn {
			port = uint16(n)
		} else if n, okn := serviceToPort(portStr, proto); okn {
			port = n
		} else {
			return 0, netip.Addr{}, 0, false, false
		}
	}
	return af, addr, port, havePort, true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}
