set -u
modprobe ip_vs; for m in rr wrr sh mh; do modprobe ip_vs_$m; done
sysctl -qw net.ipv4.ip_forward=1
ip netns add client
ip link add cl0 type veth peer name eth0 netns client
ip addr add 198.18.0.1/24 dev cl0; ip link set cl0 up
ip -n client link set lo up; ip -n client link set eth0 up
ip -n client addr add 198.18.0.2/24 dev eth0
for i in $(seq 1 150); do echo "address add 198.18.2.$i/32 dev eth0"; done | ip -n client -batch -
ip -n client route add default via 198.18.0.1
ip route add 198.18.2.0/24 via 198.18.0.2
for v in $(seq 100 115); do ip addr add 198.18.0.$v/32 dev cl0; done
ip link add br1 type bridge; ip link set br1 up; ip addr add 198.18.1.1/24 dev br1
sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
for n in 2 3 4 5; do
    ip netns add rs$n
    ip link add vrs$n type veth peer name eth0 netns rs$n
    ip link set vrs$n master br1 up
    ip -n rs$n link set lo up; ip -n rs$n link set eth0 up
    ip -n rs$n addr add 198.18.1.$n/24 dev eth0
    ip -n rs$n route add default via 198.18.1.1
    ip netns exec rs$n srv.py $n 80 >/dev/null 2>&1 &
done
sleep 1
C() { ip netns exec client "$@"; }
Q() { C python3 /oracle/q.py "$@"; }
seqn() { C cli.py $1 80 $2 | tr '\n' ' '; echo; }
add() { svc=$1; shift; for a in "$@"; do ipvsadm -a -t $svc:80 -r 198.18.1.${a%%w*}:80 -m -w ${a##*w}; done; }
echo "## mh equal"; ipvsadm -A -t 198.18.0.101:80 -s mh; add 198.18.0.101 2w1 3w1 4w1 5w1
Q 198.18.0.101 0 150
echo "## mh weights 4321"; ipvsadm -A -t 198.18.0.102:80 -s mh; add 198.18.0.102 2w4 3w3 4w2 5w1
Q 198.18.0.102 0 150
echo "## mh big weight 100 1 1"; ipvsadm -A -t 198.18.0.107:80 -s mh; add 198.18.0.107 2w100 3w1 4w1
Q 198.18.0.107 0 150
echo "## mh-port"; ipvsadm -A -t 198.18.0.103:80 -s mh -b mh-port; add 198.18.0.103 2w1 3w1 4w1 5w1
Q 198.18.0.103 0 60 20000
echo "## mh-fallback rs3 w0"; ipvsadm -A -t 198.18.0.104:80 -s mh -b mh-fallback; add 198.18.0.104 2w1 3w1 4w1 5w1
ipvsadm -e -t 198.18.0.104:80 -r 198.18.1.3:80 -m -w 0
Q 198.18.0.104 0 150
echo "## mh nofallback rs3 w0"; ipvsadm -A -t 198.18.0.105:80 -s mh; add 198.18.0.105 2w1 3w1 4w1 5w1
ipvsadm -e -t 198.18.0.105:80 -r 198.18.1.3:80 -m -w 0
Q 198.18.0.105 0 60
echo "## mh added w0 then 1 (rs3)"; ipvsadm -A -t 198.18.0.108:80 -s mh; add 198.18.0.108 2w1 3w0 4w1 5w1
Q 198.18.0.108 0 60
echo "## sh-fallback rs3 w0"; ipvsadm -A -t 198.18.0.106:80 -s sh -b sh-fallback; add 198.18.0.106 2w1 3w1 4w1 5w1
ipvsadm -e -t 198.18.0.106:80 -r 198.18.1.3:80 -m -w 0
Q 198.18.0.106 0 150
echo "## wrr midcycle"; ipvsadm -A -t 198.18.0.110:80 -s wrr; add 198.18.0.110 2w4 3w3 4w2
seqn 198.18.0.110 4
add 198.18.0.110 5w3; seqn 198.18.0.110 12
ipvsadm -e -t 198.18.0.110:80 -r 198.18.1.3:80 -m -w 0; seqn 198.18.0.110 10
ipvsadm -d -t 198.18.0.110:80 -r 198.18.1.2:80; seqn 198.18.0.110 8
echo "## rr midcycle"; ipvsadm -A -t 198.18.0.111:80 -s rr; add 198.18.0.111 2w1 3w1 4w1 5w1
seqn 198.18.0.111 2
ipvsadm -d -t 198.18.0.111:80 -r 198.18.1.4:80; seqn 198.18.0.111 3
add 198.18.0.111 4w1; seqn 198.18.0.111 4
ipvsadm -e -t 198.18.0.111:80 -r 198.18.1.2:80 -m -w 0; seqn 198.18.0.111 4
echo "## wrr gcd 4 2 then edit"; ipvsadm -A -t 198.18.0.112:80 -s wrr; add 198.18.0.112 2w4 3w2
seqn 198.18.0.112 7
ipvsadm -e -t 198.18.0.112:80 -r 198.18.1.3:80 -m -w 6; seqn 198.18.0.112 10
echo "## wrr first w0"; ipvsadm -A -t 198.18.0.113:80 -s wrr; add 198.18.0.113 2w0 3w2 4w1
seqn 198.18.0.113 6
echo "## wrr 6 4 2 then midcycle w 3"; ipvsadm -A -t 198.18.0.114:80 -s wrr; add 198.18.0.114 2w6 3w4 4w2
seqn 198.18.0.114 5
ipvsadm -e -t 198.18.0.114:80 -r 198.18.1.4:80 -m -w 3; seqn 198.18.0.114 14
echo "## end"
