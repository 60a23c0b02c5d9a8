#!/usr/bin/python3
# q.py VIP NAME_PREFIX SRC_FIRST SRC_COUNT [SPORT_FIRST]
# one HTTP GET per source address 198.18.2.X (or per source port from one address)
import socket, sys
vip = sys.argv[1]; first = int(sys.argv[2]); cnt = int(sys.argv[3])
sport = int(sys.argv[4]) if len(sys.argv) > 4 else 0
out = []
for i in range(cnt):
    if sport:
        src, sp = "198.18.2.1", sport + i
    else:
        x = first + i
        src, sp = "198.18.%d.%d" % (2 + x // 250, 1 + x % 250), 0
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((src, sp)); s.settimeout(3)
    try:
        s.connect((vip, 80)); s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        buf = b""
        while True:
            d = s.recv(4096)
            if not d: break
            buf += d
            if b"\r\n\r\n" in buf:
                h, b = buf.split(b"\r\n\r\n", 1)
                cl = [l for l in h.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                if cl and len(b) >= int(cl[0].split(b":")[1]): break
        name = buf.split(b"\r\n\r\n", 1)[-1].decode().strip()
    except OSError as e:
        name = "X"
    finally:
        s.close()
    out.append("%s:%d=%s" % (src, sp, name))
print(" ".join(out), flush=True)
