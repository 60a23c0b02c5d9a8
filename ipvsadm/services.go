package ipvsadm

import (
	_ "embed"
	"strconv"
	"strings"
	"sync"
)

// services.txt holds IANA service names for TCP and UDP ports, so that
// listings without -n name ports the same way on every host, with or
// without /etc/services.
//
//go:embed services.txt
var servicesTxt string

type portKey struct {
	proto uint8
	port  uint16
}

type nameKey struct {
	proto uint8
	name  string
}

var (
	servicesOnce sync.Once
	portNames    map[portKey]string
	namePorts    map[nameKey]uint16
)

func loadServices() {
	portNames = make(map[portKey]string)
	namePorts = make(map[nameKey]uint16)
	for line := range strings.Lines(servicesTxt) {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		ps, pr, ok := strings.Cut(f[1], "/")
		n, err := strconv.ParseUint(ps, 10, 16)
		if !ok || err != nil {
			continue
		}
		var proto uint8
		switch pr {
		case "tcp":
			proto = 6
		case "udp":
			proto = 17
		default:
			continue
		}
		k := portKey{proto, uint16(n)}
		if _, dup := portNames[k]; !dup { // the first name is the official one
			portNames[k] = f[0]
		}
		for _, name := range append([]string{f[0]}, f[2:]...) {
			if _, dup := namePorts[nameKey{proto, name}]; !dup {
				namePorts[nameKey{proto, name}] = uint16(n)
			}
		}
	}
}

// portName is the service name of a port, or its number.
func portName(port uint16, proto uint8) string {
	servicesOnce.Do(loadServices)
	if n, ok := portNames[portKey{proto, port}]; ok {
		return n
	}
	return strconv.Itoa(int(port))
}

// serviceToPort looks a service name up for proto.
func serviceToPort(name string, proto uint8) (uint16, bool) {
	servicesOnce.Do(loadServices)
	p, ok := namePorts[nameKey{proto, name}]
	return p, ok
}
