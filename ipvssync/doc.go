// Package ipvssync is the wire format of Linux IPVS's connection
// synchronisation: the UDP datagrams a sync master sends (by default to the
// multicast group 224.0.0.81, port 8848) so that its backups know the
// master's connections and can take them over. It encodes and decodes;
// sockets and policy belong to package syncd.
//
// # Version 1 messages (Linux 2.6.39 and later)
//
// All numbers are big-endian. A message is an 8-byte header and then
// Count connection entries:
//
//	offset 0  1 byte   0 (a version 0 receiver reads it as its entry count: it ignores the message)
//	offset 1  1 byte   sync ID: a backup with a sync ID other than 0 drops messages with another one
//	offset 2  2 bytes  the message's size in bytes, header included; it must equal the datagram's
//	offset 4  1 byte   Count, the number of entries
//	offset 5  1 byte   version: 1
//	offset 6  2 bytes  0
//
// An entry of an IPv4 connection is 36 bytes, of an IPv6 one 72, then
// options; an entry starts on a 4-byte boundary of the message (zero
// padding before it; its size field and the message's size count the
// padding of the entries before the last one, not after the last):
//
//	offset 0   1 byte   type: 0 IPv4, 1 IPv6 (Linux takes any odd type as IPv6 and refuses the rest of the message at another even one)
//	offset 1   1 byte   IP protocol (6 TCP, 17 UDP, 132 SCTP; 0 for a firewall-mark template)
//	offset 2   2 bytes  version (top 4 bits, 0) and the entry's size without padding (low 12 bits)
//	offset 4   4 bytes  flags (IPVS's IP_VS_CONN_F_*: forwarding method, template, inactive …)
//	offset 8   2 bytes  state (TCP: IPVS's TCP state numbers; UDP: 0; templates: 0 none, 1 assured)
//	offset 10  2 bytes  client port
//	offset 12  2 bytes  virtual port
//	offset 14  2 bytes  real server port
//	offset 16  4 bytes  firewall mark
//	offset 20  4 bytes  timeout in seconds: the backup's entry expires that long after it is received
//	offset 24  client, virtual and real server addresses: 3 × 4 bytes (IPv4) or 3 × 16 (IPv6)
//
// Options follow, each a type byte, a length byte (not 0) and the data:
// type 1 sequence adjustments (24 bytes: the incoming then the outgoing
// struct of initial sequence number, delta and previous delta, 3 × 4 bytes
// each; sent only when the connection has sequence adjustment flags),
// type 2 persistence-engine data (at most 255 bytes), type 3 the
// persistence engine's name (at most 16 bytes, only after type 2). A type
// with bit 6 (64) set is optional: a receiver that does not know it skips
// it; an unknown type without that bit makes the receiver skip the whole
// entry.
//
// # Version 0 messages
//
// The original format (a kernel sends it with net.ipv4.vs.sync_version=0):
// a 4-byte header (Count, sync ID, size) and 24-byte IPv4 entries (a zero
// byte, protocol, client, virtual and real server ports, the three
// addresses, 16-bit flags, 16-bit state), each followed by the 24 bytes of
// sequence adjustments when its flags ask for them. No timeout (the
// receiver uses its own for the state), no firewall mark, no IPv6. Reader
// decodes them; Writer writes version 1 only.
//
// What a receiver refuses, as Linux does: a datagram shorter than 4
// bytes or whose size field differs from its length is dropped whole; an
// entry that runs past the end, has a type other than 0 or 1, a non-zero
// version, a malformed option (length 0, past the entry's end, sequence
// data of another length than 24, the same option twice, persistence data
// over its limit) ends the message there (the entries before it stand).
//
// # UVS additions
//
// Two, both ignored by Linux backups:
//
//   - A control message: a version 1 header with Count 0 and a size of 16,
//     then "UVS", the extension's version (1), a type and three zero bytes.
//     Type 1 asks every UVS master in the group for its whole table
//     (ControlResync). Linux processes the header's 0 entries and stops.
//   - Option type 0x60 (optional: bit 6 set; its low bits name no Linux
//     option) with one data byte, bit 0 set in the entries of such a full
//     table dump (Conn.Resync): a UVS backup creates the entry if it lacks
//     it and otherwise leaves its own alone, where an ordinary entry
//     updates it. Linux skips the option and takes the entry as an
//     ordinary one.
package ipvssync
