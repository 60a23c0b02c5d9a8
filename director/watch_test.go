package director

import (
	"testing"
	"time"

	"uvs/service"
)

// TestWatch: a watcher is woken by every published change, with the new
// table, and not by a refused one.
func TestWatch(t *testing.T) {
	d, _ := testWorker(t, 16)
	c0, ch := d.Watch()
	if len(c0.Services) != 1 {
		t.Fatalf("Watch: %d services, want 1", len(c0.Services))
	}
	select {
	case <-ch:
		t.Fatal("woken without a change")
	default:
	}
	key := c0.Services[0].Key
	if err := d.Update(func(c *service.Config) error { return c.DeleteService(key) }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("not woken by a change")
	}
	c1, ch := d.Watch()
	if len(c1.Services) != 0 {
		t.Fatalf("after the change: %d services, want 0", len(c1.Services))
	}
	if err := d.Update(func(c *service.Config) error { return c.DeleteService(key) }); err == nil {
		t.Fatal("deleting a missing service succeeded")
	}
	select {
	case <-ch:
		t.Fatal("woken by a refused change")
	default:
	}
}
