# kernel-6.1-mh.sh: more mh choices of a real 6.1 kernel (ipvs-oracle VM):
# run.sh kernel-6.1-mh.sh kernel-6.1-mh-q.py kernel-6.1-mh-srv6.py. Real servers 198.18.1.N and
# 2001:2:0:1::N answer with their N; "X" is a refused connection.
set -u
sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
ip netns add client
ip link add cl0 type veth peer name eth0 netns client
ip addr add 198.18.0.1/24 dev cl0; ip addr add 2001:2::1/64 dev cl0 nodad; ip link set cl0 up
ip -n client link set lo up; ip -n client link set eth0 up
ip -n client addr add 198.18.0.2/24 dev eth0; ip -n client addr add 2001:2::2/64 dev eth0 nodad
for i in $(seq 1 60); do echo "address add 198.18.2.$i/32 dev eth0"; done | ip -n client -batch -
for i in $(seq 10 25); do echo "address add 198.18.0.$i/24 dev eth0"; done | ip -n client -batch -
V6=""
for i in $(seq 1 30); do V6="$V6 2001:2:2::$(printf %x $i)"; done
for i in $(seq 1 10); do V6="$V6 2001:2:2:$(printf %x $((i*37)))::$(printf %x $((i*4099)))"; done
for a in $V6; do echo "address add $a/128 dev eth0 nodad"; done | ip -n client -batch -
ip -n client route add default via 198.18.0.1
ip -n client -6 route add default via 2001:2::1
ip route add 198.18.2.0/24 via 198.18.0.2
ip -6 route add 2001:2:2::/48 via 2001:2::2
for v in $(seq 120 135); do ip addr add 198.18.0.$v/32 dev cl0; done
ip addr add 2001:2::100/128 dev cl0 nodad; ip addr add 2001:2::101/128 dev cl0 nodad
ip link add br1 type bridge; ip link set br1 up
ip addr add 198.18.1.1/24 dev br1; ip addr add 2001:2:0:1::1/64 dev br1 nodad
for n in 2 3 4 5; do
    ip netns add rs$n
    ip link add vrs$n type veth peer name eth0 netns rs$n
    ip link set vrs$n master br1 up
    ip -n rs$n link set lo up; ip -n rs$n link set eth0 up
    ip -n rs$n addr add 198.18.1.$n/24 dev eth0; ip -n rs$n addr add 2001:2:0:1::$n/64 dev eth0 nodad
    ip -n rs$n route add default via 198.18.1.1; ip -n rs$n -6 route add default via 2001:2:0:1::1
    ip netns exec rs$n srv.py $n 80 >/dev/null 2>&1 &
    ip netns exec rs$n python3 /oracle/kernel-6.1-mh-srv6.py $n 80 2001:2:0:1::$n >/dev/null 2>&1 &
done
sleep 2
Q() { vip=$1; shift; ip netns exec client python3 /oracle/kernel-6.1-mh-q.py $vip 80 "$@"; }
C20=$(seq -f 198.18.2.%g 1 20); C60=$(seq -f 198.18.2.%g 1 60); E2E=$(seq -f 198.18.0.%g 10 25)
add() { svc=$1; shift; for a in "$@"; do ipvsadm -a -t $svc -r 198.18.1.${a%%w*}:80 -m -w ${a##*w}; done; }
add6() { svc=$1; shift; for a in "$@"; do ipvsadm -a -t $svc -r [2001:2:0:1::${a%%w*}]:80 -m -w ${a##*w}; done; }
edit() { ipvsadm -e -t $1 -r 198.18.1.$2:80 -m -w $3; }

echo "## e2e mh-fallback 2w4 3w3 4w2"; S=198.18.0.120:80
ipvsadm -A -t $S -s mh -b mh-fallback; add $S 2w4 3w3 4w2; Q 198.18.0.120 $E2E
echo "## e2e then rs3 w0"; edit $S 3 0; Q 198.18.0.120 $E2E
echo "## e2e mh-port 2w1 3w1 4w1"; S=198.18.0.121:80
ipvsadm -A -t $S -s mh -b mh-port; add $S 2w1 3w1 4w1
Q 198.18.0.121 $(for p in $(seq 30000 30015); do echo 198.18.0.10,$p; done)

echo "## v6 2w4 3w3 4w2 5w1"; S=[2001:2::100]:80
ipvsadm -A -t $S -s mh; add6 $S 2w4 3w3 4w2 5w1; Q 2001:2::100 $V6
echo "## v6 mh-fallback 2w1 3w1 4w1 5w1 then rs4 w0"; S=[2001:2::101]:80
ipvsadm -A -t $S -s mh -b mh-fallback; add6 $S 2w1 3w1 4w1 5w1
ipvsadm -e -t $S -r [2001:2:0:1::4]:80 -m -w 0; Q 2001:2::101 $V6

echo "## edits 2w1 3w1 4w1 5w1"; S=198.18.0.122:80
ipvsadm -A -t $S -s mh; add $S 2w1 3w1 4w1 5w1; Q 198.18.0.122 $C60
echo "## edits then rs3 w3"; edit $S 3 3; Q 198.18.0.122 $C60
echo "## edits then del rs4"; ipvsadm -d -t $S -r 198.18.1.4:80; Q 198.18.0.122 $C60
echo "## edits then add rs4 w2"; add $S 4w2; Q 198.18.0.122 $C60

echo "## added w0 2w1 3w0 4w1 5w1 then rs3 w1"; S=198.18.0.123:80
ipvsadm -A -t $S -s mh; add $S 2w1 3w0 4w1 5w1; edit $S 3 1; Q 198.18.0.123 $C60

echo "## fallback 2w4 3w3 4w2 5w1 rs2 rs4 w0"; S=198.18.0.124:80
ipvsadm -A -t $S -s mh -b mh-fallback; add $S 2w4 3w3 4w2 5w1; edit $S 2 0; edit $S 4 0
Q 198.18.0.124 $C60
echo "## fallback then rs2 w5"; edit $S 2 5; Q 198.18.0.124 $C60

echo "## mh-port,mh-fallback 2w4 3w3 4w2 5w1 rs3 w0"; S=198.18.0.125:80
ipvsadm -A -t $S -s mh -b mh-port,mh-fallback; add $S 2w4 3w3 4w2 5w1; edit $S 3 0
Q 198.18.0.125 $(for p in $(seq 31000 31039); do echo 198.18.2.1,$p; done)
echo "## end"
