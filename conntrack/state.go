package conntrack

import "time"

// State is a connection's state as IPVS names it. TCP connections move
// through the TCP states; UDP (and any other protocol) stays in StateUDP.
type State uint8

const (
	StateNone State = iota
	StateEstablished
	StateSynSent
	StateSynRecv
	StateFinWait
	StateTimeWait
	StateClose
	StateCloseWait
	StateLastAck
	StateListen
	StateSynAck
	StateUDP
	// StateAssured is a persistence template's state once a connection
	// made through it was established (TCP) or answered; before that a
	// template is in StateNone.
	StateAssured

	numStates
	numTCPStates = StateUDP
)

var stateNames = [numStates]string{
	"NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT",
	"CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK", "UDP", "ASSURED",
}

// String is the name ipvsadm -L -c prints.
func (s State) String() string {
	if s < numStates {
		return stateNames[s]
	}
	return "ERR!"
}

// halfOpen reports a TCP connection not established yet: the entries a
// SYN flood with forged sources leaves, shed first under pressure.
func (s State) halfOpen() bool {
	return s == StateSynRecv || s == StateSynAck || s == StateSynSent
}

// Active reports whether a connection in state s counts in its real
// server's ActiveConn (the project's shared rule, IPVS.md "Schedulers"):
// the TCP handshake states and ESTABLISHED. Everything else, and UDP
// always, counts as inactive.
func (s State) Active() bool {
	switch s {
	case StateEstablished, StateSynSent, StateSynRecv, StateSynAck:
		return true
	}
	return false
}

// TCP header flag bits, as in the flags byte of the TCP header.
const (
	FlagFIN = 0x01
	FlagSYN = 0x02
	FlagRST = 0x04
	FlagPSH = 0x08
	FlagACK = 0x10
)

// mode is which packets of a connection the director gets to see.
type mode uint8

const (
	modeIn     mode = iota // client -> server, on a connection whose replies pass the director (NAT)
	modeOut                // server -> client (NAT replies)
	modeInOnly             // client -> server, replies bypass the director (DR, tunnel)
)

// event is what a packet means to the state machine. A packet counts as
// its most significant flag: RST, then SYN, then FIN, then ACK.
type event uint8

const (
	evSYN event = iota
	evFIN
	evACK
	evRST
	numEvents
	evNone = numEvents // none of the four flags: the state stays
)

func classify(flags uint8) event {
	switch {
	case flags&FlagRST != 0:
		return evRST
	case flags&FlagSYN != 0:
		return evSYN
	case flags&FlagFIN != 0:
		return evFIN
	case flags&FlagACK != 0:
		return evACK
	}
	return evNone
}

// Abbreviations for the transition tables below.
const (
	nO = StateNone
	eS = StateEstablished
	sS = StateSynSent
	sR = StateSynRecv
	fW = StateFinWait
	tW = StateTimeWait
	cL = StateClose
	cW = StateCloseWait
	lA = StateLastAck
	lI = StateListen
	sA = StateSynAck
)

// transitions[mode][state] lists the next state after a SYN, FIN, ACK
// and RST, in that order. They are IPVS's TCP transitions (its default
// table, not the secure_tcp one), written out per state:
//
//   - A director that sees both directions (NAT) treats a client FIN as
//     the server's peer closing (CLOSE_WAIT) and a server FIN as the
//     server closing (FIN_WAIT); the second FIN leads to TIME_WAIT.
//   - A director that sees only the client (DR, tunnel) cannot tell who
//     closed: any FIN on an established connection means FIN_WAIT, which
//     carries the --set tcpfin timeout.
//   - A client RST during the handshake leaves SYN_RECV alone (a spoofed
//     RST must not free a half-open entry early); otherwise RST means
//     CLOSE.
//   - The server's SYN+ACK leaves SYN_RECV as it is, with its 60 s
//     timeout: until the client's ACK, a half-open entry is held no
//     longer than one whose server never answered (a SYN flood's forged
//     entries expire alike either way). The client's ACK then gives
//     ESTABLISHED. SYNACK is only reached under secure_tcp, which UVS
//     does not have; its rows are IPVS's all the same.
//   - A client SYN on an old entry restarts the handshake in SYN_RECV.
//
// testdata/oracle/transitions.txt lists, packet by packet, what a real
// IPVS (Linux 6.1) did for crafted sequences in NAT, DR and tunnel mode;
// TestOracleTransitions replays them. testdata/oracle/states.* hold the
// end states of whole connections (TestOracleScenarios).
var transitions = [3][numTCPStates][numEvents]State{
	modeIn: {
		//        SYN FIN ACK RST
		nO: {sR, cL, eS, cL},
		eS: {eS, cW, eS, cL},
		sS: {eS, sS, sS, cL},
		sR: {sR, tW, eS, sR},
		fW: {sR, tW, fW, cL},
		tW: {sR, tW, tW, cL},
		cL: {sR, cL, cL, cL},
		cW: {sR, cW, cW, cL},
		lA: {sR, lA, cL, lA},
		lI: {sR, lI, lI, lI},
		sA: {sR, tW, eS, sR},
	},
	modeOut: {
		//        SYN FIN ACK RST
		nO: {sS, tW, eS, cL},
		eS: {eS, fW, eS, cL},
		sS: {sS, sS, sS, sS},
		sR: {sR, tW, eS, cL},
		fW: {sS, fW, fW, cL},
		tW: {sS, tW, tW, tW},
		cL: {sS, cL, cL, cL},
		cW: {sS, tW, cW, cL},
		lA: {sS, lA, lA, cL},
		lI: {lI, lI, eS, cL},
		sA: {sR, tW, eS, cL},
	},
	modeInOnly: {
		//        SYN FIN ACK RST
		nO: {sR, cL, eS, cL},
		eS: {eS, fW, eS, cL},
		sS: {eS, sS, sS, cL},
		sR: {sR, tW, eS, sR},
		fW: {sR, fW, fW, cL},
		tW: {sR, tW, tW, cL},
		cL: {sR, cL, cL, cL},
		cW: {sR, cW, cW, cL},
		lA: {sR, lA, cL, lA},
		lI: {sR, lI, lI, lI},
		sA: {sR, tW, eS, cL},
	},
}

// next is the state after a packet with the given TCP flags.
func next(s State, flags uint8, m mode) State {
	if s >= numTCPStates {
		return s
	}
	ev := classify(flags)
	if ev == evNone {
		return s
	}
	return transitions[m][s][ev]
}

// Next is the state a TCP connection in state s moves to on a packet with
// the given TCP flags, seen in direction d. inputOnly is set for
// connections whose replies bypass the director (DR, tunnel); then d is
// always Orig.
func Next(s State, tcpFlags uint8, d Dir, inputOnly bool) State {
	m := modeIn
	switch {
	case d == Reply:
		m = modeOut
	case inputOnly:
		m = modeInOnly
	}
	return next(s, tcpFlags, m)
}

// Default state timeouts (IPVS.md "Connections"). ESTABLISHED, FIN_WAIT
// and UDP follow the --set values.
var defaultTimeouts = [numStates]time.Duration{
	StateNone:        2 * time.Second,
	StateEstablished: 900 * time.Second,
	StateSynSent:     120 * time.Second,
	StateSynRecv:     60 * time.Second,
	StateFinWait:     120 * time.Second,
	StateTimeWait:    120 * time.Second,
	StateClose:       10 * time.Second,
	StateCloseWait:   60 * time.Second,
	StateLastAck:     30 * time.Second,
	StateListen:      120 * time.Second,
	StateSynAck:      120 * time.Second,
	StateUDP:         300 * time.Second,
}
