# ipvsadm -M as ipvsadm 1.31 parses it, and persistence with a mask that is no prefix.
set -u
sysctl -qw net.ipv4.ip_forward=1
ip link add br0 type bridge; ip link set br0 up; ip addr add 198.18.0.1/24 dev br0
ip addr add 198.18.0.100/32 dev br0
ip netns add cl
ip link add vcl type veth peer name eth0 netns cl; ip link set vcl master br0 up
ip -n cl link set lo up; ip -n cl link set eth0 up; ip -n cl addr add 198.18.0.2/24 dev eth0
for r in 11 12 13; do ip neigh replace 198.18.0.$r lladdr 02:00:00:00:00:$r dev br0 nud permanent; done
try() { echo "\$ ipvsadm $*"; ipvsadm "$@"; echo "rc=$?"; }
echo "### parse"
try -A -t 198.18.0.100:80 -s rr -p 300 -M 24
try -A -t 198.18.0.101:80 -s rr -p 300 -M 255.255.255.0
try -A -t 198.18.0.102:80 -s rr -p 300 -M 255.0.255.0
try -A -t 198.18.0.103:80 -s rr -p 300 -M 0x18
try -A -t 198.18.0.104:80 -s rr -p 300 -M 0
try -A -t 198.18.0.105:80 -s rr -p 300 -M 4294967295
try -A -t 198.18.0.106:80 -s rr -p 300 -M 1.2
try -A -t 198.18.0.107:80 -s rr -M 24
try -A -t 198.18.0.108:80 -s rr -p 300 -M abc
try -A -t 198.18.0.109:80 -s rr -p 300 -M 4294967296
try -A -t [2001:2::1]:80 -s rr -p 300 -M 64
try -A -t [2001:2::2]:80 -s rr -p 300 -M 255.255.255.0
try -A -t [2001:2::3]:80 -s rr -p 300 -M 64.9
try -A -f 5 -s rr -p 300 -M 24
try -E -t 198.18.0.101:80 -s rr -p 300 -M 7
try -A -u 198.18.0.110:53 -s rr -M 24 -p 60
echo "### listings"
ipvsadm -L -n
ipvsadm -S -n
ipvsadm -L -n -t 198.18.0.100:80
ipvsadm -L -n --stats -t 198.18.0.100:80
echo "### persistence with mask 0.0.0.24"
ipvsadm -a -t 198.18.0.100:80 -r 198.18.0.11:80 -g
ipvsadm -a -t 198.18.0.100:80 -r 198.18.0.12:80 -g
ipvsadm -a -t 198.18.0.100:80 -r 198.18.0.13:80 -g
p=42000
for c in 2 3 7 8 9 15 16 17 23 24 25 31 32 40 56 72 200 255; do
    p=$((p + 1))
    ip netns exec cl python3 -S /oracle/pkt.py 198.18.0.$c $p 198.18.0.100 80 S c
done
ip netns exec cl python3 -S /oracle/pkt.py 198.18.1.8 42100 198.18.0.100 80 S c
ip netns exec cl python3 -S /oracle/pkt.py 198.18.3.24 42101 198.18.0.100 80 S c
sleep 0.5
ipvsadm -L -c -n | sort -k4,4 -t' '
ipvsadm -L -n --persistent-conn -t 198.18.0.100:80
