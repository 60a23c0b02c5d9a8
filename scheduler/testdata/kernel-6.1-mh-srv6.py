#!/usr/bin/python3
# kernel-6.1-mh-srv6.py NAME PORT ADDR6: srv.py's HTTP answer over IPv6 (the client closes first).
import socket, sys, threading
name, port, bind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def handle(c):
    try:
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = c.recv(4096)
            if not d: return
            buf += d
        body = (name + "\n").encode()
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        c.settimeout(10)
        while c.recv(4096): pass
    except OSError:
        pass
    finally:
        c.close()
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((bind, port)); s.listen(512)
while True:
    c, _ = s.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
