#!/bin/bash
# ipvs-oracle-sync.sh -- connection sync between Linux IPVS and UVS, in the
# ipvs-oracle VM (Linux 6.1 with IPVS, ipvsadm 1.31; ../shared/ipvs-oracle):
#
#   ./run.sh ipvs-oracle-sync.sh director echo.py flows.py dump.py
#
# with `director` a static build (CGO_ENABLED=0 go build ./cmd/director).
# syncd's TestOracle runs it when $UVS_IPVS_ORACLE names a built oracle.
#
# Parts (each in its own namespaces; the VM has no network of its own):
#   0. ipvsadm's daemon commands, the kernel's answers and UVS's, diffed.
#   A. kernel IPVS master -> UVS backup: the UVS backup learns the kernel's
#      connections (IPv4 and IPv6, a persistence template), then takes over
#      the floating addresses and the connections go on through it.
#   B. UVS master -> kernel IPVS backup: the same the other way round, and
#      the UVS master's datagrams captured.
#   C. an IPv6 group (ff02::8:81): kernel master -> UVS backup.
#   D. UVS's additions before a kernel backup: a resync request (ignored)
#      and the UVS master's full dump (taken).
#
# Topology of A, B, C (prefix P):
#   Pcl eth0 --[bridge Pf]-- eth0 Pd1 eth1 --[bridge Pb]-- eth0 Prs1, Prs2
#                        \-- eth0 Pd2 eth1 --/
#                            Pd1 eth2 ---- eth2 Pd2          (the sync link)
# The client reaches the virtual addresses 198.18.2.100 and 2001:2:2::100
# through the floating 198.18.0.1 / 2001:2::1; the real servers' gateway is
# the floating 198.18.1.1 / 2001:2:1::1. Both start on d1 (the master) and
# move to d2 at the failover, as VRRP moves them.
set -u
D=/oracle
export PATH=$PATH:$D
chmod +x $D/director $D/*.py 2>/dev/null
VIP=198.18.2.100
VIP6=2001:2:2::100
fail=0
ok() { echo "PASS: $*"; }
bad() { echo "FAIL: $*"; fail=1; }

# uvs NS: start a UVS director in NS; uvsadm NS ARGS: its ipvsadm.
uvs() {
    mkdir -p /tmp/$1
    ip netns exec $1 $D/director run --socket /tmp/$1/director.sock --log-level info >/tmp/$1/log 2>&1 &
    echo $! > /tmp/$1/pid
    for i in $(seq 1 150); do
        UVS_SOCKET=/tmp/$1/director.sock ip netns exec $1 $D/director ipvsadm -L -n >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "UVS director in $1 did not start:"; cat /tmp/$1/log; return 1
}
uvsadm() { local ns=$1; shift; UVS_SOCKET=/tmp/$ns/director.sock ip netns exec $ns $D/director ipvsadm "$@"; }
kadm() { local ns=$1; shift; ip netns exec $ns ipvsadm "$@"; }

echo "### 0. ipvsadm --start-daemon/--stop-daemon/--daemon: kernel and UVS"
ip netns add zk; ip netns add zu
for n in zk zu; do
    ip -n $n link set lo up
    ip -n $n link add sy0 type veth peer name sy1
    ip -n $n addr add 198.18.9.1/24 dev sy0; ip -n $n link set sy0 up; ip -n $n link set sy1 up
done
uvs zu || exit 1
daemon_cmds() { # daemon_cmds RUNNER NS
    local r=$1 n=$2
    run() { echo "\$ ipvsadm $*"; $r $n "$@" 2>&1; echo "[rc=$?]"; }
    run -L -n --daemon
    run --start-daemon master
    run --start-daemon master --mcast-interface sy0
    run -L -n --daemon
    run -L --daemon
    run --start-daemon master --mcast-interface sy0
    run --start-daemon backup --mcast-interface sy0 --syncid 3
    run -L -n --daemon
    run --stop-daemon master
    run --stop-daemon master
    run -L -n --daemon
    run --stop-daemon backup
    run --start-daemon master --mcast-interface sy0 --syncid 9 --sync-maxlen 900 --mcast-group 239.1.2.3 --mcast-port 9000 --mcast-ttl 3
    run --start-daemon backup --mcast-interface sy0 --sync-maxlen 100
    run --start-daemon backup --mcast-interface sy0 --sync-maxlen 60000
    run -L -n --daemon
    run --stop-daemon backup
    run --start-daemon backup --mcast-interface sy0 --mcast-group ff02::8:81
    run -L -n --daemon
    run --stop-daemon backup
    run --stop-daemon master
    ip -n $n link set sy0 mtu 9000; ip -n $n link set sy1 mtu 9000
    run --start-daemon backup --mcast-interface sy0
    run --start-daemon master --mcast-interface sy0
    run -L -n --daemon
    run --stop-daemon master
    run --stop-daemon backup
    run --start-daemon master --mcast-interface nosuch0
    run --start-daemon backup --mcast-interface nosuch0
    run --stop-daemon backup
}
daemon_cmds kadm zk > /tmp/daemon-kernel.out
daemon_cmds uvsadm zu > /tmp/daemon-uvs.out
cat /tmp/daemon-kernel.out
if diff -u /tmp/daemon-kernel.out /tmp/daemon-uvs.out; then
    ok "UVS's ipvsadm daemon commands print what the kernel's print ($(grep -c '^\$' /tmp/daemon-kernel.out) commands)"
else
    bad "UVS's ipvsadm daemon commands differ from the kernel's (diff above)"
fi
kill $(cat /tmp/zu/pid); wait $(cat /tmp/zu/pid) 2>/dev/null
ip netns del zk; ip netns del zu

build() { # build P
    local P=$1 n
    for n in cl d1 d2 rs1 rs2; do ip netns add $P$n; ip -n $P$n link set lo up; done
    for n in d1 d2; do ip netns exec $P$n sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1; done
    ip link add ${P}f type bridge; ip link set ${P}f up
    ip link add ${P}b type bridge; ip link set ${P}b up
    port() { # port NS IF BRIDGE
        ip link add $P$1$2 type veth peer name $2 netns $P$1
        ip link set $P$1$2 master $3 up; ip -n $P$1 link set $2 up
    }
    port cl eth0 ${P}f; port d1 eth0 ${P}f; port d2 eth0 ${P}f
    port d1 eth1 ${P}b; port d2 eth1 ${P}b; port rs1 eth0 ${P}b; port rs2 eth0 ${P}b
    ip link add eth2 netns ${P}d1 type veth peer name eth2 netns ${P}d2
    ip -n ${P}d1 link set eth2 up; ip -n ${P}d2 link set eth2 up
    ip -n ${P}cl addr add 198.18.0.2/24 dev eth0; ip -n ${P}cl addr add 2001:2::2/64 dev eth0 nodad
    ip -n ${P}cl route add 198.18.2.0/24 via 198.18.0.1; ip -n ${P}cl route add 2001:2:2::/64 via 2001:2::1
    for i in 1 2; do
        ip -n $P"d$i" addr add 198.18.0.1$i/24 dev eth0; ip -n $P"d$i" addr add 2001:2::1$i/64 dev eth0 nodad
        ip -n $P"d$i" addr add 198.18.1.1$i/24 dev eth1; ip -n $P"d$i" addr add 2001:2:1::1$i/64 dev eth1 nodad
        ip -n $P"d$i" addr add 198.18.9.$i/24 dev eth2; ip -n $P"d$i" addr add 2001:2:9::$i/64 dev eth2 nodad
        ip -n $P"d$i" route add default via 198.18.0.2; ip -n $P"d$i" -6 route add default via 2001:2::2
        ip -n $P"rs$i" addr add 198.18.1.$((i + 1))/24 dev eth0; ip -n $P"rs$i" addr add 2001:2:1::$((i + 1))/64 dev eth0 nodad
        ip -n $P"rs$i" route add default via 198.18.1.1; ip -n $P"rs$i" -6 route add default via 2001:2:1::1
        ip netns exec $P"rs$i" python3 $D/echo.py rs$i 7000 >/dev/null 2>&1 &
        ip netns exec $P"rs$i" python3 $D/echo.py rs$i 7001 >/dev/null 2>&1 &
    done
    float ${P}d1 add
}
float() { # float NS add|del: the floating addresses
    ip -n $1 addr $2 198.18.0.1/24 dev eth0; ip -n $1 addr $2 2001:2::1/64 dev eth0 nodad 2>/dev/null || ip -n $1 addr $2 2001:2::1/64 dev eth0
    ip -n $1 addr $2 198.18.1.1/24 dev eth1; ip -n $1 addr $2 2001:2:1::1/64 dev eth1 nodad 2>/dev/null || ip -n $1 addr $2 2001:2:1::1/64 dev eth1
}
failover() { # failover P: d1 dies (its links go down), d2 takes the floating addresses
    local P=$1 m0 m1 i
    float ${P}d1 del
    ip -n ${P}d1 link set eth0 down; ip -n ${P}d1 link set eth1 down
    float ${P}d2 add
    m0=$(ip -n ${P}d2 -br link show eth0 | awk '{print $3}')
    m1=$(ip -n ${P}d2 -br link show eth1 | awk '{print $3}')
    ip -n ${P}cl neigh replace 198.18.0.1 lladdr $m0 dev eth0 nud reachable
    ip -n ${P}cl -6 neigh replace 2001:2::1 lladdr $m0 dev eth0 nud reachable
    for i in 1 2; do
        ip -n ${P}rs$i neigh replace 198.18.1.1 lladdr $m1 dev eth0 nud reachable
        ip -n ${P}rs$i -6 neigh replace 2001:2:1::1 lladdr $m1 dev eth0 nud reachable
    done
}
rules() { # rules ADM NS: the same rules on every director
    local a=$1 n=$2
    $a $n -A -t $VIP:7000 -s rr
    $a $n -a -t $VIP:7000 -r 198.18.1.2:7000 -m
    $a $n -a -t $VIP:7000 -r 198.18.1.3:7000 -m
    $a $n -A -t $VIP:7001 -s rr -p 300
    $a $n -a -t $VIP:7001 -r 198.18.1.2:7001 -m
    $a $n -a -t $VIP:7001 -r 198.18.1.3:7001 -m
    $a $n -A -t [$VIP6]:7000 -s rr
    $a $n -a -t [$VIP6]:7000 -r [2001:2:1::2]:7000 -m
    $a $n -a -t [$VIP6]:7000 -r [2001:2:1::3]:7000 -m
}
kernel_director() { # a kernel director holds its VIPs
    ip -n $1 addr add $VIP/32 dev lo; ip -n $1 addr add $VIP6/128 dev lo
}
# flows P: the client's long-lived connections, 4 + 2 (persistent) IPv4 and
# 2 IPv6; they wait for /tmp/P.go before their second half. Prints the
# process id (not a child of the caller's shell: finish_flows polls it).
flows() {
    ip netns exec $1cl python3 $D/flows.py /tmp/$1.go $VIP:7000 $VIP:7000 $VIP:7000 $VIP:7000 \
        $VIP:7001 $VIP:7001 [$VIP6]:7000 [$VIP6]:7000 > /tmp/$1.flows 2>&1 &
    echo $!
}
wait_before() { # wait_before P: the flows' first halves are done
    for i in $(seq 1 300); do
        [ "$(grep -c '^before ' /tmp/$1.flows)" -ge 8 ] && return 0
        grep -q '^ERROR' /tmp/$1.flows && break
        sleep 0.1
    done
    echo "flows did not start:"; cat /tmp/$1.flows; return 1
}
wait_learned() { # wait_learned LISTCMD NS: 8 ESTABLISHED entries and the template
    local i out
    for i in $(seq 1 100); do
        out=$($1 $2 -L -n -c)
        [ "$(echo "$out" | grep -c ' ESTABLISHED ')" -ge 8 ] && echo "$out" | grep -q ' ASSURED ' && return 0
        sleep 0.2
    done
    return 1
}
finish_flows() { # finish_flows P PID: let the flows finish; compare servers
    touch /tmp/$1.go
    local i
    for i in $(seq 1 1200); do kill -0 $2 2>/dev/null || break; sleep 0.1; done
    cat /tmp/$1.flows
    local n
    n=$(grep -c '^after .* ok$' /tmp/$1.flows)
    if [ "$n" -eq 8 ] && ! grep -q -e FAIL -e ERROR /tmp/$1.flows; then
        ok "$3: all 8 connections went on after the failover, each to its server"
    else
        bad "$3: $n of 8 connections went on after the failover"
    fi
}

echo
echo "### A. kernel IPVS master -> UVS backup, then failover to UVS"
build A
kernel_director Ad1
rules kadm Ad1
uvs Ad2 || exit 1
rules uvsadm Ad2
kadm Ad1 --start-daemon master --mcast-interface eth2 --syncid 7
uvsadm Ad2 --start-daemon backup --mcast-interface eth2 --syncid 7
echo "\$ ipvsadm -L -n --daemon   (UVS, d2)"; uvsadm Ad2 -L -n --daemon
FL=$(flows A)
wait_before A || exit 1
if wait_learned uvsadm Ad2; then ok "the UVS backup learned the kernel master's connections"; else bad "the UVS backup did not learn them"; fi
echo "\$ ipvsadm -L -n -c   (kernel master, d1)"; kadm Ad1 -L -n -c
echo "\$ ipvsadm -L -n -c   (UVS backup, d2)"; uvsadm Ad2 -L -n -c
echo "\$ ipvsadm -L -n   (UVS backup, d2)"; uvsadm Ad2 -L -n
failover A
finish_flows A $FL "kernel master -> UVS backup"
echo "\$ ipvsadm -L -n --stats   (UVS, after the failover)"; uvsadm Ad2 -L -n --stats
kill $(cat /tmp/Ad2/pid); wait $(cat /tmp/Ad2/pid) 2>/dev/null
grep -E 'connection sync|sync daemon' /tmp/Ad2/log | sed 's/^time=[^ ]* //'

echo
echo "### B. UVS master -> kernel IPVS backup, then failover to the kernel"
build B
uvs Bd1 || exit 1
rules uvsadm Bd1
kernel_director Bd2
rules kadm Bd2
kadm Bd2 --start-daemon backup --mcast-interface eth2 --syncid 7
# A listener beside the kernel backup records the UVS master's datagrams.
ip netns exec Bd2 python3 $D/dump.py 224.0.0.81 8848 198.18.9.2 60 /tmp/B.dump &
DUMP=$!
sleep 1
uvsadm Bd1 --start-daemon master --mcast-interface eth2 --syncid 7
FL=$(flows B)
wait_before B || exit 1
if wait_learned kadm Bd2; then ok "the kernel backup learned the UVS master's connections"; else bad "the kernel backup did not learn them"; fi
echo "\$ ipvsadm -L -n -c   (UVS master, d1)"; uvsadm Bd1 -L -n -c
echo "\$ ipvsadm -L -n -c   (kernel backup, d2)"; kadm Bd2 -L -n -c
echo "\$ ipvsadm -L -n   (kernel backup, d2)"; kadm Bd2 -L -n
failover B
finish_flows B $FL "UVS master -> kernel backup"
echo "\$ ipvsadm -L -n --stats   (kernel, after the failover)"; kadm Bd2 -L -n --stats
kill $DUMP 2>/dev/null; wait $DUMP 2>/dev/null
echo "### B. the UVS master's datagrams (source, hex)"
cat /tmp/B.dump
kill $(cat /tmp/Bd1/pid); wait $(cat /tmp/Bd1/pid) 2>/dev/null
grep -E 'connection sync|sync daemon|whole table' /tmp/Bd1/log | sed 's/^time=[^ ]* //'

echo
echo "### C. an IPv6 group (ff02::8:81): kernel master -> UVS backup"
build C
kernel_director Cd1
rules kadm Cd1
uvs Cd2 || exit 1
rules uvsadm Cd2
kadm Cd1 --start-daemon master --mcast-interface eth2 --mcast-group ff02::8:81 --syncid 7
uvsadm Cd2 --start-daemon backup --mcast-interface eth2 --mcast-group ff02::8:81 --syncid 7
echo "\$ ipvsadm -L -n --daemon   (kernel, d1)"; kadm Cd1 -L -n --daemon
echo "\$ ipvsadm -L -n --daemon   (UVS, d2)"; uvsadm Cd2 -L -n --daemon
FL=$(flows C)
wait_before C || exit 1
if wait_learned uvsadm Cd2; then ok "the UVS backup learned over an IPv6 group"; else bad "nothing learned over the IPv6 group"; fi
echo "\$ ipvsadm -L -n -c   (UVS backup, d2)"; uvsadm Cd2 -L -n -c
failover C
finish_flows C $FL "kernel master -> UVS backup, IPv6 group"
kill $(cat /tmp/Cd2/pid); wait $(cat /tmp/Cd2/pid) 2>/dev/null

echo
echo "### D. the UVS additions before a kernel backup: a resync request, a full dump"
# A kernel backup that starts after the connections were sent knows none
# of them. A resync request (what a UVS backup sends when it starts) goes
# to the group: the kernel backup hears it too and must ignore it; the UVS
# master answers with its whole table, whose entries carry the UVS option,
# and the kernel backup must take them as ordinary entries.
build D
uvs Dd1 || exit 1
rules uvsadm Dd1
kernel_director Dd2
rules kadm Dd2
uvsadm Dd1 --start-daemon master --mcast-interface eth2 --syncid 7
FL=$(flows D)
wait_before D || exit 1
sleep 3 # the master's messages went (to nobody)
kadm Dd2 --start-daemon backup --mcast-interface eth2 --syncid 7
ip netns exec Dd2 python3 $D/dump.py 224.0.0.81 8848 198.18.9.2 8 /tmp/D.dump &
DUMP=$!
sleep 1
echo "\$ ipvsadm -L -n -c   (kernel backup, before the request)"; kadm Dd2 -L -n -c
ip netns exec Dd2 python3 -c "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton('198.18.9.2'))
s.sendto(bytes([0, 7, 0, 16, 0, 1, 0, 0]) + b'UVS' + bytes([1, 1, 0, 0, 0]), ('224.0.0.81', 8848))
print('resync request sent')"
if wait_learned kadm Dd2; then ok "the kernel backup took the UVS master's full dump (entries with the UVS option)"; else bad "the kernel backup did not take the dump"; fi
echo "\$ ipvsadm -L -n -c   (kernel backup, after the dump)"; kadm Dd2 -L -n -c
if ip netns exec Dd2 dmesg 2>/dev/null | grep -i -E 'ipvs.*(bogus|dropping|error)'; then
    bad "the kernel complained about the UVS messages"
else
    ok "no IPVS complaint in the kernel log"
fi
wait $DUMP 2>/dev/null
echo "### D. the UVS master's dump (source, hex)"
cat /tmp/D.dump
touch /tmp/D.go
kill $(cat /tmp/Dd1/pid); wait $(cat /tmp/Dd1/pid) 2>/dev/null
grep -E 'whole table' /tmp/Dd1/log | sed 's/^time=[^ ]* //'

echo
[ $fail = 0 ] && echo "ALL PASSED" || echo "SOME FAILED"
exit $fail
