package harness

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
)

// Peer is a program the benchmark runs next to UVS, and the Debian package
// that brings it.
type Peer struct{ Binary, Package string }

// Peers are every program the benchmark needs besides the director.
var Peers = []Peer{
	{"nginx", "nginx-light"}, // the real servers' web server
	{"haproxy", "haproxy"},   // the userspace balancer UVS is compared with
	{"iperf3", "iperf3"},     // bulk TCP
	{"wrk", "wrk"},           // HTTP load
	{"nft", "nftables"},      // the in-kernel DNAT path
}

// MissingPeers lists the peers whose binary is not on PATH (or in the
// sbin directories, which a non-login root shell may lack).
func MissingPeers() []Peer {
	var out []Peer
	for _, p := range Peers {
		if _, err := LookPath(p.Binary); err != nil {
			out = append(out, p)
		}
	}
	return out
}

// LookPath finds a peer's binary on PATH or in /usr/sbin, /sbin.
func LookPath(bin string) (string, error) {
	if p, err := exec.LookPath(bin); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := d + "/" + bin
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH or in /usr/sbin", bin)
}

// InstallPeers installs the missing peers' packages with apt-get,
// refreshing the package lists first. Installing does not start the
// packages' services on the host (policy-rc.d permitting); the benchmark
// runs its own copies inside namespaces.
func InstallPeers(ctx context.Context, missing []Peer, log *slog.Logger) error {
	if len(missing) == 0 {
		return nil
	}
	pkgs := make([]string, len(missing))
	for i, p := range missing {
		pkgs[i] = p.Package
	}
	log.Info("installing peers", "packages", strings.Join(pkgs, " "))
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	for _, args := range [][]string{
		{"update", "-qq"},
		append([]string{"install", "-y", "-qq", "--no-install-recommends"}, pkgs...),
	} {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get %s: %w\n%s", strings.Join(args, " "), err, tail(out, 2000))
		}
	}
	if still := MissingPeers(); len(still) > 0 {
		return fmt.Errorf("still missing after apt-get install: %v", still)
	}
	return nil
}

// tail is the last n bytes of b, for error messages.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
