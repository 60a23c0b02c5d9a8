package director_test

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"uvs/lab"
)

// TestRuleChurn makes 100 rule edits (weights with -e, a third server
// added and deleted with -a/-d, the scheduler changed with -E) while
// keep-alive and new-connection clients load the service: no request to a
// server that stays may fail. The third server is added at weight 0, so
// that no request goes to a server that does not stay.
func TestRuleChurn(t *testing.T) {
	for _, mode := range []string{"afpacket", "tun"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, mode)
			// The third server is a second address of rs2, so that it
			// answers ARP and an edit does not wait for it.
			if err := e.n.RS[1].Addr("eth0", lab.RSIP(2)+"/24"); err != nil {
				t.Fatal(err)
			}
			e.start()
			vip := lab.DirOuterIP + ":80"
			e.ipvsadm(t, "-A", "-t", vip, "-s", "rr")
			e.ipvsadm(t, "-a", "-t", vip, "-r", lab.RS1IP, "-m")
			e.ipvsadm(t, "-a", "-t", vip, "-r", lab.RS2IP, "-m")

			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var ok, failed atomic.Int64
			var firstErr atomic.Value
			var wg sync.WaitGroup
			for i := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					hc := e.n.Client.HTTPClient()
					hc.Timeout = 5 * time.Second
					for n := 0; n < 100000 && ctx.Err() == nil; n++ {
						if i%2 == 1 {
							hc.CloseIdleConnections() // a new connection per request
						}
						resp, err := hc.Get("http://" + vip + "/")
						if err == nil {
							_, err = io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
						}
						if err != nil {
							failed.Add(1)
							firstErr.CompareAndSwap(nil, err.Error())
							continue
						}
						ok.Add(1)
					}
				}()
			}
			for i := range 100 {
				switch i % 5 {
				case 0:
					e.ipvsadm(t, "-e", "-t", vip, "-r", lab.RS1IP, "-m", "-w", fmt.Sprint(1+i%7))
				case 1:
					e.ipvsadm(t, "-a", "-t", vip, "-r", lab.RSIP(2), "-m", "-w", "0")
				case 2:
					e.ipvsadm(t, "-E", "-t", vip, "-s", []string{"wrr", "wlc", "rr"}[i%3])
				case 3:
					e.ipvsadm(t, "-d", "-t", vip, "-r", lab.RSIP(2))
				case 4:
					e.ipvsadm(t, "-e", "-t", vip, "-r", lab.RS2IP, "-m", "-w", fmt.Sprint(1+i%5))
				}
				time.Sleep(20 * time.Millisecond)
			}
			cancel()
			wg.Wait()
			t.Logf("%d requests served during 100 edits, %d failed", ok.Load(), failed.Load())
			if failed.Load() != 0 {
				t.Errorf("%d requests failed during the edits (first: %v)", failed.Load(), firstErr.Load())
			}
			if ok.Load() < 100 {
				t.Errorf("only %d requests served", ok.Load())
			}
		})
	}
}
