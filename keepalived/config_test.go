package keepalived

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"uvs/service"
)

// table prints a rule table the way ipvsadm -S -n would (with what -S
// leaves out: thresholds, tunnel options, ops), services in the order they
// were added and real servers sorted, so tests can compare it whole.
func table(cfg *service.Config) string {
	var b strings.Builder
	for _, s := range cfg.Services {
		fmt.Fprintf(&b, "-A %s -s %s", s.Key, s.Scheduler)
		if s.IsFWMark() && s.V6 {
			b.WriteString(" -6")
		}
		if s.Flags != 0 {
			fmt.Fprintf(&b, " -b %d", s.Flags)
		}
		if s.Persistent {
			fmt.Fprintf(&b, " -p %d", s.Timeout/time.Second)
		}
		if s.Netmask != s.DefaultNetmask() {
			fmt.Fprintf(&b, " -M %d", s.Netmask)
		}
		if s.OnePacket {
			b.WriteString(" -o")
		}
		if s.PE != "" {
			fmt.Fprintf(&b, " --pe %s", s.PE)
		}
		b.WriteString("\n")
		for _, d := range s.SortedDests() {
			fwd := map[service.Fwd]string{service.FwdMasq: "-m", service.FwdRoute: "-g", service.FwdTunnel: "-i"}[d.Fwd]
			fmt.Fprintf(&b, "-a %s -r %s %s -w %d", s.Key, d.AddrPort(), fwd, d.Weight)
			if d.UThresh != 0 || d.LThresh != 0 {
				fmt.Fprintf(&b, " -x %d -y %d", d.UThresh, d.LThresh)
			}
			if d.Fwd == service.FwdTunnel {
				fmt.Fprintf(&b, " --tun-type %s", d.TunType)
				if d.TunPort != 0 {
					fmt.Fprintf(&b, " --tun-port %d", d.TunPort)
				}
				if d.TunCsum != "" {
					fmt.Fprintf(&b, " --tun-%s", d.TunCsum)
				}
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

func configOf(t *testing.T, f *File) string {
	t.Helper()
	cfg, err := f.Config()
	if err != nil {
		t.Fatal(err)
	}
	return table(cfg)
}

func TestConfigFixtures(t *testing.T) {
	tests := []struct {
		path string
		want string
	}{
		{"testdata/site/keepalived.conf", `
-A -t 198.18.0.100:80 -s wrr
-a -t 198.18.0.100:80 -r 198.18.1.11:80 -m -w 3 -x 1000 -y 800
-a -t 198.18.0.100:80 -r 198.18.1.12:80 -m -w 2
-A -t 198.18.0.110:80 -s wrr
-a -t 198.18.0.110:80 -r 198.18.1.11:80 -m -w 3 -x 1000 -y 800
-a -t 198.18.0.110:80 -r 198.18.1.12:80 -m -w 2
-A -t 198.18.0.111:80 -s wrr
-a -t 198.18.0.111:80 -r 198.18.1.11:80 -m -w 3 -x 1000 -y 800
-a -t 198.18.0.111:80 -r 198.18.1.12:80 -m -w 2
-A -t 198.18.0.112:80 -s wrr
-a -t 198.18.0.112:80 -r 198.18.1.11:80 -m -w 3 -x 1000 -y 800
-a -t 198.18.0.112:80 -r 198.18.1.12:80 -m -w 2
-A -t 198.18.2.0:8080 -s wrr
-a -t 198.18.2.0:8080 -r 198.18.1.11:80 -m -w 3 -x 1000 -y 800
-a -t 198.18.2.0:8080 -r 198.18.1.12:80 -m -w 2
-A -t 198.18.2.1:8080 -s wrr
-a -t 198.18.2.1:8080 -r 198.18.1.11:80 -m -w 3 -x 1000 -y 800
-a -t 198.18.2.1:8080 -r 198.18.1.12:80 -m -w 2
-A -t 198.18.2.2:8080 -s wrr
-a -t 198.18.2.2:8080 -r 198.18.1.11:80 -m -w 3 -x 1000 -y 800
-a -t 198.18.2.2:8080 -r 198.18.1.12:80 -m -w 2
-A -t 198.18.2.3:8080 -s wrr
-a -t 198.18.2.3:8080 -r 198.18.1.11:80 -m -w 3 -x 1000 -y 800
-a -t 198.18.2.3:8080 -r 198.18.1.12:80 -m -w 2
-A -t 198.18.0.101:443 -s wlc -p 600 -M 24
-a -t 198.18.0.101:443 -r 198.18.1.21:443 -g -w 1
-a -t 198.18.0.101:443 -r 198.18.1.22:443 -g -w 1
-A -t [2001:2::100]:443 -s sh -b 2 -p 360 -M 64
-a -t [2001:2::100]:443 -r 198.18.1.23:443 -i -w 5 --tun-type gue --tun-port 6080 --tun-csum
-a -t [2001:2::100]:443 -r [2001:2::21]:443 -i -w 1 --tun-type ipip
-A -u 198.18.0.53:53 -s rr -o
-a -u 198.18.0.53:53 -r 198.18.1.31:5353 -m -w 1
-a -u 198.18.0.53:53 -r 198.18.1.32:5353 -m -w 1
-A -f 10 -s lc -p 1800
-a -f 10 -r 198.18.1.51:0 -g -w 4
-a -f 10 -r 198.18.1.52:0 -g -w 4
-A -f 20 -s rr -6
-a -f 20 -r [2001:2::41]:0 -g -w 10
-a -f 20 -r [2001:2::42]:0 -g -w 10
`},
		{"testdata/compact/keepalived.conf", `
-A -u [2001:2::53]:53 -s wlc
-a -u [2001:2::53]:53 -r [2001:2::1:53]:53 -m -w 7
-a -u [2001:2::53]:53 -r [2001:2::1:54]:53 -m -w 1
-A -u [2001:2::54]:53 -s wlc
-a -u [2001:2::54]:53 -r [2001:2::1:53]:53 -m -w 7
-a -u [2001:2::54]:53 -r [2001:2::1:54]:53 -m -w 1
-A -u [2001:2::55]:53 -s wlc
-a -u [2001:2::55]:53 -r [2001:2::1:53]:53 -m -w 7
-a -u [2001:2::55]:53 -r [2001:2::1:54]:53 -m -w 1
-A -u [2001:2::1:0]:53 -s wlc
-a -u [2001:2::1:0]:53 -r [2001:2::1:53]:53 -m -w 7
-a -u [2001:2::1:0]:53 -r [2001:2::1:54]:53 -m -w 1
-A -u [2001:2::1:1]:53 -s wlc
-a -u [2001:2::1:1]:53 -r [2001:2::1:53]:53 -m -w 7
-a -u [2001:2::1:1]:53 -r [2001:2::1:54]:53 -m -w 1
-A -f 53 -s wlc -6
-a -f 53 -r [2001:2::1:53]:53 -m -w 7
-a -f 53 -r [2001:2::1:54]:0 -m -w 1
-A -t 198.18.0.80:80 -s rr
-a -t 198.18.0.80:80 -r 198.18.1.80:8080 -m -w 1
-a -t 198.18.0.80:80 -r 198.18.1.81:8080 -m -w 1
-A -t 198.18.0.25:25 -s mh -b 12
-a -t 198.18.0.25:25 -r 198.18.1.25:25 -i -w 1 --tun-type gre --tun-nocsum
-a -t 198.18.0.25:25 -r 198.18.1.26:25 -i -w 2 --tun-type gre --tun-nocsum
`},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			f, _, err := Parse(tt.path)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := configOf(t, f), strings.TrimPrefix(tt.want, "\n"); got != want {
				t.Errorf("table\n got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// TestConfig checks how the table is made from each kind of virtual
// server: ports, methods, families, and what stays out of it.
func TestConfig(t *testing.T) {
	tests := []struct {
		name, conf, want string
	}{
		{"NAT keeps ports, a missing one is the service's", vs("real_server 198.18.1.2 8080 {\n}\nreal_server 198.18.1.3 {\n}"), `
-A -t 198.18.0.1:80 -s rr
-a -t 198.18.0.1:80 -r 198.18.1.2:8080 -m -w 1
-a -t 198.18.0.1:80 -r 198.18.1.3:80 -m -w 1
`},
		{"DR and TUN have the service's port", vs("lvs_method DR\nreal_server 198.18.1.2 8080 {\n}\nreal_server 198.18.1.3 8080 {\nlvs_method TUN\n}\nreal_server 198.18.1.4 8080 {\nlvs_method NAT\n}"), `
-A -t 198.18.0.1:80 -s rr
-a -t 198.18.0.1:80 -r 198.18.1.2:80 -g -w 1
-a -t 198.18.0.1:80 -r 198.18.1.3:80 -i -w 1 --tun-type ipip
-a -t 198.18.0.1:80 -r 198.18.1.4:8080 -m -w 1
`},
		{"group members each have their port", "virtual_server_group G {\n198.18.0.1 80\n198.18.0.2 8080\n}\nvirtual_server group G {\nprotocol TCP\nlvs_sched rr\nreal_server 198.18.1.2 {\n}\nreal_server 198.18.1.3 {\nlvs_method DR\n}\nreal_server 198.18.1.4 9000 {\n}\n}\n", `
-A -t 198.18.0.1:80 -s rr
-a -t 198.18.0.1:80 -r 198.18.1.2:80 -m -w 1
-a -t 198.18.0.1:80 -r 198.18.1.3:80 -g -w 1
-a -t 198.18.0.1:80 -r 198.18.1.4:9000 -m -w 1
-A -t 198.18.0.2:8080 -s rr
-a -t 198.18.0.2:8080 -r 198.18.1.2:8080 -m -w 1
-a -t 198.18.0.2:8080 -r 198.18.1.3:8080 -g -w 1
-a -t 198.18.0.2:8080 -r 198.18.1.4:9000 -m -w 1
`},
		{"one group for TCP and UDP", "virtual_server_group DNS {\n198.18.0.53 53\n}\nvirtual_server group DNS {\nprotocol TCP\nlvs_sched rr\nreal_server 198.18.1.2 53 {\n}\n}\nvirtual_server group DNS {\nprotocol UDP\nlvs_sched rr\nreal_server 198.18.1.2 53 {\n}\n}\n", `
-A -t 198.18.0.53:53 -s rr
-a -t 198.18.0.53:53 -r 198.18.1.2:53 -m -w 1
-A -u 198.18.0.53:53 -s rr
-a -u 198.18.0.53:53 -r 198.18.1.2:53 -m -w 1
`},
		{"fwmark servers keep their port, 0 when missing", "virtual_server fwmark 3 {\nlvs_sched rr\nlvs_method DR\nreal_server 198.18.1.2 {\n}\nreal_server 198.18.1.3 8080 {\n}\n}\n", `
-A -f 3 -s rr
-a -f 3 -r 198.18.1.2:0 -g -w 1
-a -f 3 -r 198.18.1.3:8080 -g -w 1
`},
		{"group fwmarks take the family", "virtual_server_group G {\nfwmark 1\nfwmark 2 inet\n}\nvirtual_server group G {\nlvs_sched rr\nlvs_method TUN\nip_family inet6\nreal_server 2001:2::5 {\n}\n}\n", `
-A -f 1 -s rr -6
-a -f 1 -r [2001:2::5]:0 -i -w 1 --tun-type ipip
-A -f 2 -s rr
-a -f 2 -r [2001:2::5]:0 -i -w 1 --tun-type ipip
`},
		{"tunnels may cross families", "virtual_server 2001:2::1 80 {\nprotocol TCP\nlvs_sched rr\nlvs_method TUN\nreal_server 198.18.1.2 80 {\n}\nreal_server 2001:2::2 80 {\nlvs_method NAT\n}\n}\n", `
-A -t [2001:2::1]:80 -s rr
-a -t [2001:2::1]:80 -r 198.18.1.2:80 -i -w 1 --tun-type ipip
-a -t [2001:2::1]:80 -r [2001:2::2]:80 -m -w 1
`},
		{"sorry server stays out; weights and thresholds", vs("sorry_server 198.18.1.9 80\nreal_server 198.18.1.2 80 {\nweight 0\n}\nreal_server 198.18.1.3 80 {\nweight 65536\nuthreshold 10\nlthreshold 5\n}"), `
-A -t 198.18.0.1:80 -s rr
-a -t 198.18.0.1:80 -r 198.18.1.2:80 -m -w 0
-a -t 198.18.0.1:80 -r 198.18.1.3:80 -m -w 65536 -x 10 -y 5
`},
		{"persistence, granularity, port 0", "virtual_server 198.18.0.1 {\nprotocol TCP\nlvs_sched rr\npersistence_timeout 1200\npersistence_granularity 0xffff0000\nreal_server 198.18.1.2 {\n}\n}\n", `
-A -t 198.18.0.1:0 -s rr -p 1200 -M 16
-a -t 198.18.0.1:0 -r 198.18.1.2:0 -m -w 1
`},
		{"ops and the persistence engine", "virtual_server 198.18.0.1 5060 {\nprotocol UDP\nlvs_sched rr\nops\npersistence_timeout 60\npersistence_engine sip\n}\n", `
-A -u 198.18.0.1:5060 -s rr -p 60 -o --pe sip
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := mustParse(t, tt.conf)
			if got, want := configOf(t, f), strings.TrimPrefix(tt.want, "\n"); got != want {
				t.Errorf("table\n got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// TestConfigChecks checks that Config itself refuses a model (built by
// hand, not by Parse) that ipvsadm or the kernel would refuse.
func TestConfigChecks(t *testing.T) {
	at := Pos{"hand", 1}
	addr := netip.MustParseAddrPort
	ok := func() *VirtualServer {
		return &VirtualServer{Pos: at, Addr: addr("198.18.0.1:80"), Protocol: service.TCP, Sched: "rr", Granularity: -1,
			Reals: []*RealServer{{Pos: Pos{"hand", 2}, Addr: addr("198.18.1.2:80"), Weight: 1}}}
	}
	tests := []struct {
		name string
		edit func(*File)
		want string
	}{
		{"valid", func(*File) {}, ""},
		{"unknown scheduler", func(f *File) { f.VirtualServers[0].Sched = "fair" }, `hand:1: virtual_server TCP 198.18.0.1:80: unknown scheduler "fair"`},
		{"no key", func(f *File) { f.VirtualServers[0].Addr = netip.AddrPort{} }, "hand:1: virtual_server: no address, fwmark or group"},
		{"SCTP", func(f *File) { f.VirtualServers[0].Protocol = 132 }, "hand:1: virtual_server 132 198.18.0.1:80: protocol 132 is not TCP or UDP"},
		{"port 0", func(f *File) { f.VirtualServers[0].Addr = addr("198.18.0.1:0") }, "hand:1: virtual_server TCP 198.18.0.1:0: port 0 is only for persistent services"},
		{"ops on TCP", func(f *File) { f.VirtualServers[0].OnePacket = true }, "hand:1: virtual_server TCP 198.18.0.1:80: ops is only for UDP and fwmark services"},
		{"no timeout", func(f *File) { f.VirtualServers[0].Persistent = true }, "hand:1: virtual_server TCP 198.18.0.1:80: persistence_timeout 0s is not from 1 s to 31 days"},
		{"IPv6 granularity for IPv4", func(f *File) { f.VirtualServers[0].Granularity = 64; f.VirtualServers[0].IPv6 = true }, "hand:1: virtual_server TCP 198.18.0.1:80: persistence_granularity is for IPv6 services"},
		{"unknown group", func(f *File) { f.VirtualServers[0].Group = "G" }, "hand:1: virtual_server group G: no virtual_server_group G"},
		{"backwards range", func(f *File) {
			f.VirtualServers[0].Group = "G"
			f.Groups["G"] = &Group{Name: "G", Members: []Member{{Pos: at, First: netip.MustParseAddr("198.18.0.2"), Last: netip.MustParseAddr("198.18.0.1")}}}
		}, "hand:1: virtual_server_group G: 198.18.0.2-198.18.0.1 is not an address range"},
		{"family", func(f *File) { f.VirtualServers[0].Reals[0].Addr = addr("[2001:2::2]:80") }, "hand:2: real_server 2001:2::2: IPv6 server of the IPv4 service TCP 198.18.0.1:80; only TUN servers may differ in address family"},
		{"weight", func(f *File) { f.VirtualServers[0].Reals[0].Weight = -1 }, "hand:2: real_server 198.18.1.2: weight -1 is not from 0 to 2147483647"},
		{"method", func(f *File) { f.VirtualServers[0].Reals[0].Method = service.FwdLocal }, "hand:2: real_server 198.18.1.2: forwarding method Local is not NAT, DR or TUN"},
		{"gue without port", func(f *File) {
			r := f.VirtualServers[0].Reals[0]
			r.Method, r.Tunnel = service.FwdTunnel, Tunnel{Type: "gue"}
		}, "hand:2: real_server 198.18.1.2: a gue tunnel needs a port"},
		{"ipip csum", func(f *File) {
			r := f.VirtualServers[0].Reals[0]
			r.Method, r.Tunnel = service.FwdTunnel, Tunnel{Csum: "csum"}
		}, `hand:2: real_server 198.18.1.2: checksum option "csum" is not for a ipip tunnel`},
		{"duplicate service", func(f *File) { f.VirtualServers = append(f.VirtualServers, ok()) }, "hand:1: virtual_server: TCP 198.18.0.1:80 is already a service (hand:1)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &File{VirtualServers: []*VirtualServer{ok()}, Groups: map[string]*Group{}}
			tt.edit(f)
			_, err := f.Config()
			if got := fmt.Sprint(err); tt.want == "" && err != nil || tt.want != "" && got != tt.want {
				t.Errorf("error\n got %v\nwant %q", err, tt.want)
			}
		})
	}
}
