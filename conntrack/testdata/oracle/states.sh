# conntrack states and ActiveConn/InActConn in real IPVS: NAT and true DR (replies bypass the director)
set -u
sysctl -qw net.ipv4.ip_forward=1
# LAN br0: director 198.18.0.1 (+ VIPs), client 198.18.0.2, DR real server 198.18.0.5
ip link add br0 type bridge; ip link set br0 up; ip addr add 198.18.0.1/24 dev br0
for v in 100 200 201; do ip addr add 198.18.0.$v/32 dev br0; done
ip netns add client
ip link add vcl type veth peer name eth0 netns client; ip link set vcl master br0 up
ip -n client link set lo up; ip -n client link set eth0 up; ip -n client addr add 198.18.0.2/24 dev eth0
ip -n client route add 198.18.1.0/24 via 198.18.0.1
ip netns add rs5
ip link add vrs5 type veth peer name eth0 netns rs5; ip link set vrs5 master br0 up
ip -n rs5 link set lo up; ip -n rs5 link set eth0 up; ip -n rs5 addr add 198.18.0.5/24 dev eth0
ip netns exec rs5 sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 net.ipv4.conf.eth0.arp_ignore=1 net.ipv4.conf.eth0.arp_announce=2
ip -n rs5 addr add 198.18.0.200/32 dev lo
ip netns exec rs5 srv.py rs5 80 >/dev/null 2>&1 &
# NAT side: br1 198.18.1.0/24, real server rs2 198.18.1.2 (default via director)
ip link add br1 type bridge; ip link set br1 up; ip addr add 198.18.1.1/24 dev br1
ip netns add rs2
ip link add vrs2 type veth peer name eth0 netns rs2; ip link set vrs2 master br1 up
ip -n rs2 link set lo up; ip -n rs2 link set eth0 up; ip -n rs2 addr add 198.18.1.2/24 dev eth0
ip -n rs2 route add default via 198.18.1.1
ip netns exec rs2 srv.py rs2 80 >/dev/null 2>&1 &
sleep 1
C() { ip netns exec client "$@"; }
show() { echo "--- $1"; ipvsadm -L -n; ipvsadm -L -n -c | sort; }

ipvsadm -A -t 198.18.0.100:80 -s rr; ipvsadm -a -t 198.18.0.100:80 -r 198.18.1.2:80 -m
ipvsadm -A -t 198.18.0.200:80 -s rr; ipvsadm -a -t 198.18.0.200:80 -r 198.18.0.5:80 -g
ipvsadm -A -t 198.18.0.201:80 -s rr; ipvsadm -a -t 198.18.0.201:80 -r 198.18.0.9:80 -g   # silent server
ipvsadm -A -t 198.18.0.100:81 -s rr; ipvsadm -a -t 198.18.0.100:81 -r 198.18.1.9:81 -m   # silent server

echo "### 1 held connections (NAT and DR), established"
C hold.py 198.18.0.100 80 1 3 > /dev/null &
C hold.py 198.18.0.200 80 1 3 > /dev/null &
sleep 1.5; show "while held"
sleep 3; show "after client closed (held)"
ipvsadm -C
ipvsadm -A -t 198.18.0.100:80 -s rr; ipvsadm -a -t 198.18.0.100:80 -r 198.18.1.2:80 -m
ipvsadm -A -t 198.18.0.200:80 -s rr; ipvsadm -a -t 198.18.0.200:80 -r 198.18.0.5:80 -g
ipvsadm -A -t 198.18.0.201:80 -s rr; ipvsadm -a -t 198.18.0.201:80 -r 198.18.0.9:80 -g
ipvsadm -A -t 198.18.0.100:81 -s rr; ipvsadm -a -t 198.18.0.100:81 -r 198.18.1.9:81 -m

echo "### 2 SYN to a silent server (NAT :81, DR .201)"
C timeout 4 nc -w 3 198.18.0.100 81 </dev/null &
C timeout 4 nc -w 3 198.18.0.201 80 </dev/null &
sleep 1.5; show "half-open"
sleep 3

echo "### 3 client RST on an established connection (DR and NAT)"
C python3 -c '
import socket, struct, time
for vip in ("198.18.0.200", "198.18.0.100"):
    s = socket.socket(); s.connect((vip, 80)); s.sendall(b"HOLD\n"); s.recv(100)
    time.sleep(0.3)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); s.close()
'
sleep 0.5; show "after RST"

echo "### 4 raw SYN, the client kernel answers the SYN+ACK with RST (NAT)"
C python3 -c '
import socket, struct
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b)//2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
src, dst = socket.inet_aton("198.18.0.2"), socket.inet_aton("198.18.0.100")
for sport in (40001,):
    h = struct.pack("!HHIIBBHHH", sport, 80, 1000, 0, 5 << 4, 0x02, 65535, 0, 0)
    c = csum(src + dst + struct.pack("!BBH", 0, 6, len(h)) + h)
    h = h[:16] + struct.pack("!H", c) + h[18:]
    r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP); r.sendto(h, ("198.18.0.100", 0))
'
sleep 1; show "raw SYN"

echo "### 5 curl, client closes first (DR and NAT)"
C curl -s --max-time 3 http://198.18.0.200/; echo
C curl -s --max-time 3 http://198.18.0.100/; echo
sleep 0.5; show "after curl"
