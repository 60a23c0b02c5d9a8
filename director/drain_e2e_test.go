package director_test

import (
	"context"
	"io"
	"net/netip"
	"regexp"
	"sync"
	"testing"
	"time"

	"uvs/lab"
)

// TestDeleteServerNoLeak deletes and re-adds a NAT real server five times
// while keep-alive clients load it: none of the deleted server's replies
// may reach the client untranslated (from its own address), and the
// packets of its connections are counted as server_gone.
func TestDeleteServerNoLeak(t *testing.T) {
	for _, mode := range []string{"afpacket", "tun"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, mode)
			e.start("--metrics", lab.DirOuterIP+":9100")
			vip := lab.DirOuterIP + ":80"
			e.ipvsadm(t, "-A", "-t", vip, "-s", "rr")
			e.ipvsadm(t, "-a", "-t", vip, "-r", lab.RS1IP, "-m")
			e.ipvsadm(t, "-a", "-t", vip, "-r", lab.RS2IP, "-m")
			leaks := sniffFrom(t, e.n.Client, netip.MustParsePrefix("198.18.1.0/24"))

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var wg sync.WaitGroup
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					hc := e.n.Client.HTTPClient()
					hc.Timeout = time.Second
					for i := 0; i < 5000 && ctx.Err() == nil; i++ {
						resp, err := hc.Get("http://" + vip + "/")
						if err != nil {
							continue
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}()
			}
			for range 5 {
				time.Sleep(300 * time.Millisecond)
				e.ipvsadm(t, "-d", "-t", vip, "-r", lab.RS2IP)
				time.Sleep(300 * time.Millisecond)
				e.ipvsadm(t, "-a", "-t", vip, "-r", lab.RS2IP, "-m")
			}
			cancel()
			wg.Wait()
			time.Sleep(200 * time.Millisecond)
			if n := leaks(); n != 0 {
				t.Errorf("%d packets from a real server's address reached the client untranslated", n)
			}
			m := e.scrape(t)
			if !regexp.MustCompile(`uvs_dropped_packets_total\{reason="server_gone"\} [1-9]`).MatchString(m) {
				t.Errorf("no server_gone counted:\n%s", grepLines(m, "uvs_dropped"))
			}
		})
	}
}
