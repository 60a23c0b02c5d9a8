package ipvsadm

import (
	"net/netip"
	"strings"
)

// Commands, in ipvsadm's order (the row order of cmdOpts).
const (
	cmdNone = iota
	cmdAdd
	cmdEdit
	cmdDel
	cmdFlush
	cmdList
	cmdAddDest
	cmdDelDest
	cmdEditDest
	cmdTimeout
	cmdStartDaemon
	cmdStopDaemon
	cmdRestore
	cmdSave
	cmdZero
	// Not table rows: they print and leave before any check.
	cmdHelp
	cmdVersion
)

var cmdNames = [...]string{"", "add-service", "edit-service", "delete-service", "flush", "list",
	"add-server", "delete-server", "edit-server", "set", "start-daemon", "stop-daemon",
	"restore", "save", "zero"}

// Options, as bit numbers in ipvsadm's order: error messages name the
// first offending option in this order.
const (
	optNumeric = iota
	optConnection
	optService
	optScheduler
	optPersistent
	optNetmask
	optServer
	optForward
	optWeight
	optUThreshold
	optLThreshold
	optMcast
	optTimeout
	optDaemon
	optStats
	optRate
	optThresholds
	optPersistentConn
	optNoSort
	optSyncID
	optExact
	optOnePacket
	optPE
	optSchedFlags
	optMcastGroup
	optMcastPort
	optMcastTTL
	optSyncMaxLen
	optTunInfo
	optTunType
	optTunPort
	optTunNoCsum
	optTunCsum
	optTunRemCsum
	numOpts
)

var optNames = [numOpts]string{"numeric", "connection", "service-address", "scheduler",
	"persistent", "netmask", "real-server", "forwarding-method", "weight", "u-threshold",
	"l-threshold", "mcast-interface", "timeout", "daemon", "stats", "rate", "thresholds",
	"persistent-conn", "nosort", "syncid", "exact", "ops", "pe", "sched-flags", "mcast-group",
	"mcast-port", "mcast-ttl", "sync-maxlen", "tun-info", "tun-type", "tun-port",
	"tun-nocsum", "tun-csum", "tun-remcsum"}

// cmdOpts says, per command and option: '+' required, 'x' illegal, '1' at
// most one of the '1' options, ' ' optional. These are ipvsadm's rules.
var cmdOpts = [...]string{
	// columns: the options above, in order
	cmdAdd:         "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx",
	cmdEdit:        "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx",
	cmdDel:         "xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	cmdFlush:       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	cmdList:        " 11xxxxxxxxx11       xxxxxxx xxxxx",
	cmdAddDest:     "xx+xxx+    xxxxxxxxxxxxxxxxxx     ",
	cmdDelDest:     "xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx",
	cmdEditDest:    "xx+xxx+    xxxxxxxxxxxxxxxxxx     ",
	cmdTimeout:     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	cmdStartDaemon: "xxxxxxxxxxx xxxxxxx xxxx    xxxxxx",
	cmdStopDaemon:  "xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxx",
	cmdRestore:     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	cmdSave:        " xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	cmdZero:        "xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
}

// Argument kinds of an option.
const (
	argNone = iota
	argRequired
	argOptional
)

// tags for options without a short letter.
const (
	tagSet = 128 + iota
	tagStartDaemon
	tagStopDaemon
	tagMcastInterface
	tagTimeout
	tagDaemon
	tagStats
	tagRate
	tagThresholds
	tagPersistentConn
	tagSort
	tagNoSort
	tagPE
	tagSCTP
	tagMcastGroup
	tagMcastPort
	tagMcastTTL
	tagSyncMaxLen
	tagTunInfo
	tagTunType
	tagTunPort
	tagTunNoCsum
	tagTunCsum
	tagTunRemCsum
	tagSyncID
)

type optDef struct {
	long  string
	short byte // 0 = long only
	arg   int
	tag   int // the short letter, or a tag
}

// optTable is ipvsadm's option list: long names as its help text shows.
var optTable = []optDef{
	{"add-service", 'A', argNone, 'A'},
	{"edit-service", 'E', argNone, 'E'},
	{"delete-service", 'D', argNone, 'D'},
	{"clear", 'C', argNone, 'C'},
	{"list", 'L', argNone, 'L'},
	{"list", 'l', argNone, 'l'},
	{"zero", 'Z', argNone, 'Z'},
	{"add-server", 'a', argNone, 'a'},
	{"edit-server", 'e', argNone, 'e'},
	{"delete-server", 'd', argNone, 'd'},
	{"set", 0, argNone, tagSet},
	{"help", 'h', argNone, 'h'},
	{"version", 'v', argNone, 'v'},
	{"restore", 'R', argNone, 'R'},
	{"save", 'S', argNone, 'S'},
	{"start-daemon", 0, argRequired, tagStartDaemon},
	{"stop-daemon", 0, argRequired, tagStopDaemon},
	{"tcp-service", 't', argRequired, 't'},
	{"udp-service", 'u', argRequired, 'u'},
	{"sctp-service", 0, argRequired, tagSCTP},
	{"fwmark-service", 'f', argRequired, 'f'},
	{"scheduler", 's', argRequired, 's'},
	{"persistent", 'p', argOptional, 'p'},
	{"netmask", 'M', argRequired, 'M'},
	{"real-server", 'r', argRequired, 'r'},
	{"masquerading", 'm', argNone, 'm'},
	{"ipip", 'i', argNone, 'i'},
	{"gatewaying", 'g', argNone, 'g'},
	{"weight", 'w', argRequired, 'w'},
	{"u-threshold", 'x', argRequired, 'x'},
	{"l-threshold", 'y', argRequired, 'y'},
	{"numeric", 'n', argNone, 'n'},
	{"connection", 'c', argNone, 'c'},
	{"mcast-interface", 0, argRequired, tagMcastInterface},
	{"syncid", 0, argRequired, tagSyncID},
	{"timeout", 0, argNone, tagTimeout},
	{"daemon", 0, argNone, tagDaemon},
	{"stats", 0, argNone, tagStats},
	{"rate", 0, argNone, tagRate},
	{"thresholds", 0, argNone, tagThresholds},
	{"persistent-conn", 0, argNone, tagPersistentConn},
	{"nosort", 0, argNone, tagNoSort},
	{"sort", 0, argNone, tagSort},
	{"exact", 'X', argNone, 'X'},
	{"ipv6", '6', argNone, '6'},
	{"ops", 'o', argNone, 'o'},
	{"pe", 0, argRequired, tagPE},
	{"sched-flags", 'b', argRequired, 'b'},
	{"mcast-group", 0, argRequired, tagMcastGroup},
	{"mcast-port", 0, argRequired, tagMcastPort},
	{"mcast-ttl", 0, argRequired, tagMcastTTL},
	{"sync-maxlen", 0, argRequired, tagSyncMaxLen},
	{"tun-info", 0, argNone, tagTunInfo},
	{"tun-type", 0, argRequired, tagTunType},
	{"tun-port", 0, argRequired, tagTunPort},
	{"tun-nocsum", 0, argNone, tagTunNoCsum},
	{"tun-csum", 0, argNone, tagTunCsum},
	{"tun-remcsum", 0, argNone, tagTunRemCsum},
}

// scanner walks argv the way popt does: long options with an optional
// "=value", clusters of short options where an option taking an argument
// eats the rest of the cluster or the next word, "--" ending options, and
// every other word kept aside as a leftover argument.
type scanner struct {
	args      []string
	i         int    // next word
	cluster   string // rest of a short-option cluster being read
	word      string // the word the last option came from, for messages
	onlyArgs  bool   // after "--"
	leftovers []string
}

// popt's error texts.
const (
	errBadOpt = "unknown option"
	errNoArg  = "missing argument"
)

// next returns the next option and its argument (hasArg tells whether one
// was given), done at the end, or a popt error naming the bad word.
func (s *scanner) next() (o *optDef, arg string, hasArg bool, done bool, err *exit) {
	if s.cluster == "" {
		for {
			if s.i >= len(s.args) {
				return nil, "", false, true, nil
			}
			w := s.args[s.i]
			s.i++
			switch {
			case s.onlyArgs || len(w) < 2 || w[0] != '-':
				s.leftovers = append(s.leftovers, w)
				continue
			case w == "--":
				s.onlyArgs = true
				continue
			}
			s.word = w
			if strings.HasPrefix(w, "--") {
				return s.long(w)
			}
			s.cluster = w[1:]
			break
		}
	}
	c := s.cluster[0]
	s.cluster = s.cluster[1:]
	o = findShort(c)
	if o == nil {
		s.cluster = ""
		return nil, "", false, false, s.popt(errBadOpt)
	}
	switch o.arg {
	case argRequired:
		if s.cluster != "" {
			arg, s.cluster = s.cluster, ""
			return o, arg, true, false, nil
		}
		if s.i >= len(s.args) {
			return nil, "", false, false, s.popt(errNoArg)
		}
		arg = s.args[s.i]
		s.i++
		return o, arg, true, false, nil
	case argOptional:
		if s.cluster != "" {
			arg, s.cluster = s.cluster, ""
			return o, arg, true, false, nil
		}
		if s.i < len(s.args) && !strings.HasPrefix(s.args[s.i], "-") && !s.onlyArgs {
			arg = s.args[s.i]
			s.i++
			return o, arg, true, false, nil
		}
	}
	return o, "", false, false, nil
}

func (s *scanner) long(w string) (*optDef, string, bool, bool, *exit) {
	name, val, hasVal := strings.Cut(w[2:], "=")
	o := findLong(name)
	if o == nil {
		return nil, "", false, false, s.popt(errBadOpt)
	}
	switch o.arg {
	case argNone:
		if hasVal {
			return nil, "", false, false, s.popt("option does not take an argument")
		}
	case argRequired:
		if !hasVal {
			if s.i >= len(s.args) {
				return nil, "", false, false, s.popt(errNoArg)
			}
			val, hasVal = s.args[s.i], true
			s.i++
		}
	case argOptional:
		if !hasVal && s.i < len(s.args) && !strings.HasPrefix(s.args[s.i], "-") {
			val, hasVal = s.args[s.i], true
			s.i++
		}
	}
	return o, val, hasVal, false, nil
}

// popt is ipvsadm's report of a popt error: "word: reason", exit 255.
func (s *scanner) popt(reason string) *exit {
	return &exit{code: 255, msg: s.word + ": " + reason}
}

func findShort(c byte) *optDef {
	for i := range optTable {
		if optTable[i].short == c {
			return &optTable[i]
		}
	}
	return nil
}

func findLong(name string) *optDef {
	for i := range optTable {
		if optTable[i].long == name {
			return &optTable[i]
		}
	}
	return nil
}

// Address families as ipvsadm tracks them while parsing.
const (
	af4 = 4
	af6 = 6
)

// Protocols beyond service.TCP/UDP.
const protoSCTP = 132

// svcSpec is the virtual service an invocation names and sets.
type svcSpec struct {
	af        int
	proto     uint8
	addr      netip.Addr
	port      uint16
	fwmark    uint32
	sched     string
	persist   bool
	timeout   uint32 // seconds
	mask4     uint32 // IPv4 netmask, host order
	mask6     int    // IPv6 prefix length
	onePacket bool
	pe        string
	flagsArg  string // -b, parsed once the scheduler is known
	flagsSet  bool
	schedBits uint8 // ipvsadm's SCHED1..3 bits
}

// destSpec is the real server an invocation names and sets.
type destSpec struct {
	af      int
	addr    netip.Addr
	port    uint16
	fwd     fwdMethod
	weight  int32
	uthresh uint32
	lthresh uint32
	tunType int
	tunPort uint16
	tunCsum int // index in tunCsumNames
}

type fwdMethod int

const (
	fwdMasq fwdMethod = iota
	fwdTunnel
	fwdRoute
)

// Tunnel types and checksum options, as ipvsadm numbers them.
var (
	tunNames     = []string{"ipip", "gue", "gre"}
	tunCsumFlags = []string{"-c", "+c", "r+c"} // --tun-info spellings
	tunCsumOpts  = []string{"--tun-nocsum", "--tun-csum", "--tun-remcsum"}
	tunCsumModel = []string{"nocsum", "csum", "remcsum"}
)

// tunOpts are the options tunnelOpts constrains, in its column order.
var tunOpts = [4]int{optTunPort, optTunNoCsum, optTunCsum, optTunRemCsum}

// tunnelOpts says, per tunnel type, what each of tunOpts is: '+', 'x', '1'.
var tunnelOpts = [...]string{
	"xxxx", // ipip
	"+111", // gue
	"x11x", // gre
}

// command is one parsed invocation.
type command struct {
	kind     int
	opts     uint64
	svc      svcSpec
	dest     destSpec
	timeouts [3]uint32 // --set
	daemon   Daemon
	// list format
	numeric, stats, rate, thresholds, persistConn, noSort, exact, tunInfo bool
	rule                                                                  bool
}

func (c *command) has(opt int) bool { return c.opts&(1<<opt) != 0 }

// setOption is ipvsadm's set_option: each option at most once.
func (c *command) setOption(opt int) *exit {
	if c.has(opt) {
		return fail(2, "multiple '%s' options specified", optNames[opt])
	}
	c.opts |= 1 << opt
	return nil
}
