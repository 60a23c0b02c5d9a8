package testbed

import "testing"

// BenchmarkDo measures one switch into a namespace and back.
func BenchmarkDo(b *testing.B) {
	if err := Available(); err != nil {
		b.Skip(err)
	}
	bed, err := New(testPrefix)
	if err != nil {
		b.Fatal(err)
	}
	defer bed.Close()
	h, err := bed.Host("bench")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := h.Do(func() error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHostAndLink measures building and tearing down a two-host bed
// joined by one veth pair, the cost every end-to-end test pays.
func BenchmarkHostAndLink(b *testing.B) {
	if err := Available(); err != nil {
		b.Skip(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		bed, err := New(testPrefix)
		if err != nil {
			b.Fatal(err)
		}
		x, err := bed.Host("x")
		if err == nil {
			var y *Host
			if y, err = bed.Host("y"); err == nil {
				err = bed.Link(x, "eth0", y, "eth0")
			}
		}
		if cerr := bed.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}
