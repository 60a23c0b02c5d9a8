package link

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// inNetns runs fn on a thread that is in network namespace ns. Sockets and
// TUN queues belong to the namespace of the thread that opens them, so a
// queue added later must be opened where the first one was, whichever
// namespace the calling goroutine happens to be in now.
func inNetns(ns netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	cur, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current netns: %w", err)
	}
	defer cur.Close()
	if cur.Equal(ns) {
		runtime.UnlockOSThread()
		return fn()
	}
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns: %w", err)
	}
	fnErr := fn()
	if err := netns.Set(cur); err != nil {
		// The thread stays locked and so dies with this goroutine rather
		// than run other goroutines in the wrong namespace.
		return fmt.Errorf("restore netns: %w", err)
	}
	runtime.UnlockOSThread()
	return fnErr
}
