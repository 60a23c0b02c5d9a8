package service

import (
	"net/netip"
	"time"
)

// Conn is one connection entry as a director reports it (ipvsadm -L -c).
type Conn struct {
	Proto                 uint8  // TCP / UDP; 0 (IP) for a firewall-mark template, whose Virtual holds the mark
	State                 string // "ESTABLISHED", "TIME_WAIT", "UDP", "NONE" (templates), "ASSURED"...
	Expires               time.Duration
	Client, Virtual, Dest netip.AddrPort
}
