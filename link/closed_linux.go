package link

import (
	"os"
	"sync/atomic"
)

// closeFlag is set by Close before the file is closed, so that the error a
// blocked Read gets from the runtime poller ("use of closed file", which
// nothing exported matches) is reported as os.ErrClosed.
type closeFlag struct{ closed atomic.Bool }

func (c *closeFlag) closedErr(err error) error {
	if c.closed.Load() {
		return os.ErrClosed
	}
	return err
}
