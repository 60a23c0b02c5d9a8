#!/usr/bin/python3
# dump.py GROUP PORT IFADDR SECONDS OUTFILE: join GROUP on the interface with
# IFADDR, write every datagram as "hex" lines to OUTFILE for SECONDS.
import socket, struct, sys, time, binascii
grp, port, ifaddr, secs, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), sys.argv[5]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('', port))
mreq = socket.inet_aton(grp) + socket.inet_aton(ifaddr)
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
s.settimeout(0.2)
end = time.time() + secs
with open(out, 'w') as f:
    while time.time() < end:
        try:
            d, a = s.recvfrom(65535)
        except socket.timeout:
            continue
        f.write('%s:%d %s\n' % (a[0], a[1], binascii.hexlify(d).decode()))
        f.flush()
