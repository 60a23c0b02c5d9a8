#!/usr/bin/python3
# echo.py NAME PORT: answers each line of each TCP connection (IPv4 and
# IPv6) with "NAME: line".
import socket, sys, threading
name, port = sys.argv[1].encode(), int(sys.argv[2])
def handle(c):
    with c:
        for line in c.makefile('rb'):
            c.sendall(name + b': ' + line)
def serve(fam, addr):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, port))
    s.listen(64)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()
threading.Thread(target=serve, args=(socket.AF_INET6, '::'), daemon=True).start()
serve(socket.AF_INET, '0.0.0.0')
