# pkt.py SRC SPORT DST DPORT FLAGS ROLE: one crafted TCP segment, raw IP.
# FLAGS letters S A F R P; ROLE c (client) or s (server) picks plausible numbers.
import socket, struct, sys
src, sport, dst, dport, flags, role = sys.argv[1:7]
sport, dport = int(sport), int(dport)
bits = {"F": 1, "S": 2, "R": 4, "P": 8, "A": 16}
fl = 0
for ch in flags:
    fl |= bits[ch]
if role == "c":
    seq, ack = (1000, 0) if flags == "S" else (1001, 5001)
else:
    seq, ack = (5000, 1001) if "S" in flags else (5001, 1001)
if not fl & 16:
    ack = 0
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff
sa, da = socket.inet_aton(src), socket.inet_aton(dst)
tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, fl, 65535, 0, 0)
c = csum(sa + da + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, sa, da)
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
r.sendto(ip + tcp, (dst, 0))
