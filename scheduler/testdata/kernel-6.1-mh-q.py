#!/usr/bin/python3
# kernel-6.1-mh-q.py VIP PORT SRC[,SPORT] ...
# one HTTP GET per item from source address SRC (source port SPORT, or any);
# prints "SRC:SPORT=NAME" items ("[SRC]:SPORT" for IPv6; X = no answer).
import socket, sys
vip, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in vip else socket.AF_INET
out = []
for it in sys.argv[3:]:
    src, _, sp = it.partition(",")
    sp = int(sp or 0)
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((src, sp)); s.settimeout(3)
    try:
        s.connect((vip, port)); s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        buf = b""
        while True:
            d = s.recv(4096)
            if not d: break
            buf += d
            if b"\r\n\r\n" in buf:
                h, b = buf.split(b"\r\n\r\n", 1)
                cl = [l for l in h.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                if cl and len(b) >= int(cl[0].split(b":")[1]): break
        name = buf.split(b"\r\n\r\n", 1)[-1].decode().strip() or "X"
    except OSError:
        name = "X"
    finally:
        s.close()
    a = "[%s]" % src if fam == socket.AF_INET6 else src
    out.append("%s:%d=%s" % (a, sp, name))
print(" ".join(out), flush=True)
