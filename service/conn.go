package service

import (
	"net/netip"
	"time"
)

// Conn is one connection entry as a director reports it (ipvsadm -L -c).
type Conn struct {
	Proto                 uint8  // TCP / UDP
	State                 string // "ESTABLISHED", "TIME_WAIT", "UDP", "NONE" (templates), "ASSURED"...
	Expires               time.Duration
	Client, Virtual, Dest netip.AddrPort
}
