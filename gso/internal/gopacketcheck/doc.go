// Package gopacketcheck holds the tests of package gso that build GSO
// super-packets with gopacket and decode the segments with it as the
// reference. It has no code of its own.
//
// They live apart from package gso so that gso's test binary does not link
// gopacket: go test -fuzz instruments every package in the binary for
// coverage, and gopacket's counters made FuzzSegment run fifty times slower
// (about 230 against 44,000 executions per second on the same machine).
package gopacketcheck
