#!/usr/bin/python3
# flows.py GOFILE ADDR:PORT...: one TCP connection to each address, three
# lines each ("before N"); then, once GOFILE exists (up to 120 s), three
# more lines each ("after N"). Prints "before I SERVER" per connection and
# "after I SERVER ok" (or FAIL) per connection; ERROR lines for failures.
import os, socket, sys, time
go, targets = sys.argv[1], sys.argv[2:]
conns = []
for i, t in enumerate(targets):
    host, port = t.rsplit(':', 1)
    host = host.strip('[]')
    try:
        s = socket.create_connection((host, int(port)), timeout=10)
        s.settimeout(10)
        f = s.makefile('rb')
        server = None
        for k in range(3):
            s.sendall(b'before %d\n' % k)
            ans = f.readline().decode().strip()
            name = ans.split(':')[0]
            if server is not None and name != server:
                print('ERROR', i, 'two servers', server, name, flush=True)
            server = name
        conns.append((s, f, server))
        print('before', i, t, server, flush=True)
    except Exception as e:
        print('ERROR', i, t, e, flush=True)
        sys.exit(1)
end = time.time() + 120
while not os.path.exists(go) and time.time() < end:
    time.sleep(0.1)
for i, (s, f, server) in enumerate(conns):
    try:
        for k in range(3):
            s.sendall(b'after %d\n' % k)
            ans = f.readline().decode().strip()
            if ans != '%s: after %d' % (server, k):
                raise Exception('answer %r' % ans)
        print('after', i, targets[i], server, 'ok', flush=True)
    except Exception as e:
        print('after', i, targets[i], server, 'FAIL', e, flush=True)
    s.close()
