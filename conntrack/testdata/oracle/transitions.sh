# IPVS TCP state transitions, packet by packet, in real IPVS (NAT, DR, TUN).
# Every packet is crafted: the client 198.18.0.77 and the real servers
# 198.18.1.9 (NAT), 198.18.0.9 (DR), 198.18.1.10 (TUN) are addresses nobody
# holds (static neighbour entries to unused MACs), so no stack answers and
# the director sees exactly the listed packets. c:X is a client packet to
# the VIP, s:X a server packet to the client (NAT: through the director).
set -u
sysctl -qw net.ipv4.ip_forward=1
ip link add br0 type bridge; ip link set br0 up; ip addr add 198.18.0.1/24 dev br0
for v in 100 200 201; do ip addr add 198.18.0.$v/32 dev br0; done
ip link add br1 type bridge; ip link set br1 up; ip addr add 198.18.1.1/24 dev br1
ip netns add cl
ip link add vcl type veth peer name eth0 netns cl; ip link set vcl master br0 up
ip -n cl link set lo up; ip -n cl link set eth0 up; ip -n cl addr add 198.18.0.2/24 dev eth0
ip netns add sv
ip link add vsv type veth peer name eth0 netns sv; ip link set vsv master br1 up
ip -n sv link set lo up; ip -n sv link set eth0 up; ip -n sv addr add 198.18.1.2/24 dev eth0
ip -n sv route add default via 198.18.1.1
ip neigh replace 198.18.0.77 lladdr 02:00:00:00:00:77 dev br0 nud permanent
ip neigh replace 198.18.0.9 lladdr 02:00:00:00:00:09 dev br0 nud permanent
ip neigh replace 198.18.1.9 lladdr 02:00:00:00:01:09 dev br1 nud permanent
ip neigh replace 198.18.1.10 lladdr 02:00:00:00:01:10 dev br1 nud permanent
ip netns exec sv srv.py rs 8080 >/dev/null 2>&1 &
ipvsadm -A -t 198.18.0.100:80 -s rr; ipvsadm -a -t 198.18.0.100:80 -r 198.18.1.9:80 -m
ipvsadm -A -t 198.18.0.200:80 -s rr; ipvsadm -a -t 198.18.0.200:80 -r 198.18.0.9:80 -g
ipvsadm -A -t 198.18.0.201:80 -s rr; ipvsadm -a -t 198.18.0.201:80 -r 198.18.1.10:80 -i
ipvsadm -A -t 198.18.0.100:8080 -s rr; ipvsadm -a -t 198.18.0.100:8080 -r 198.18.1.2:8080 -m
ipvsadm -L -n
sleep 1
PORT=40000
vip() { case $1 in nat) echo 198.18.0.100;; dr) echo 198.18.0.200;; tun) echo 198.18.0.201;; esac; }
state() { ipvsadm -L -c -n | awk -v s="198.18.0.77:$1" '$4 == s {print $3, $2; f=1} END {if (!f) print "none -"}'; }
# run METHOD NAME STEP...
run() {
    local m=$1 name=$2; shift 2
    PORT=$((PORT + 1))
    local v; v=$(vip "$m") seq=""
    for st in "$@"; do
        local who=${st%%:*} fl=${st#*:}
        if [ "$who" = c ]; then
            ip netns exec cl python3 -S /oracle/pkt.py 198.18.0.77 $PORT "$v" 80 "$fl" c
        else
            ip netns exec sv python3 -S /oracle/pkt.py 198.18.1.9 80 198.18.0.77 $PORT "$fl" s
        fi
        sleep 0.1
        seq="$seq $st"
        echo "STEP $m $name |$seq | $(state $PORT)"
    done
}
echo "### transitions"
run nat handshake c:S s:SA c:A c:PA s:PA
run nat synack-twice c:S s:SA s:SA
run nat client-rst-after-synack c:S s:SA c:R
run nat client-rstack-after-synack c:S s:SA c:RA
run nat server-rst-to-syn c:S s:RA
run nat client-ack-without-synack c:S c:A
run nat client-syn-again c:S s:SA c:S
run nat client-fin-in-synrecv c:S c:F
run nat client-rst-in-synrecv c:S c:R
run nat server-fin-in-synrecv c:S s:FA
run nat client-closes c:S s:SA c:A c:FA s:A s:FA c:A
run nat server-closes c:S s:SA c:A s:FA c:A c:FA s:A
run nat client-rst-established c:S s:SA c:A c:RA
run nat server-rst-established c:S s:SA c:A s:RA
run nat server-rst-closewait c:S s:SA c:A c:FA s:R
run nat client-rst-finwait c:S s:SA c:A s:FA c:R
run nat server-syn-established c:S s:SA c:A s:SA
run nat client-syn-timewait c:S s:SA c:A c:FA s:FA c:A c:SA
run nat server-rst-timewait c:S s:SA c:A c:FA s:FA s:R
for m in dr tun; do
run $m handshake c:S c:A c:PA
run $m client-rst-in-synrecv c:S c:R
run $m client-rstack-in-synrecv c:S c:RA
run $m client-fin-in-synrecv c:S c:F
run $m client-closes c:S c:A c:FA c:A
run $m client-rst-established c:S c:A c:RA
run $m client-syn-established c:S c:A c:S
run $m client-rst-finwait c:S c:A c:FA c:R
run $m client-ack-finwait c:S c:A c:FA c:A c:PA
done
echo "### sloppy_tcp: a connection begun by a packet other than SYN (state NONE)"
sysctl -qw net.ipv4.vs.sloppy_tcp=1
run nat sloppy-ack c:A
run nat sloppy-fin c:FA
run dr sloppy-ack c:A
run dr sloppy-fin c:FA
sysctl -qw net.ipv4.vs.sloppy_tcp=0
echo "### six SYNs from 198.18.0.77 to a NAT service whose server answers (SYN-ACKs pass IPVS)"
for p in 41001 41002 41003 41004 41005 41006; do
    ip netns exec cl python3 -S /oracle/pkt.py 198.18.0.77 $p 198.18.0.100 8080 S c
done
sleep 2
echo "--- 2 s later"
ipvsadm -L -c -n | grep ':8080 ' | sort
ipvsadm -L -n -t 198.18.0.100:8080
sleep 4
echo "--- 6 s later"
ipvsadm -L -c -n | grep ':8080 ' | sort
ipvsadm -L -n --stats -t 198.18.0.100:8080
