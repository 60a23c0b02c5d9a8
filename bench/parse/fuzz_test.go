package parse

import (
	"os"
	"path/filepath"
	"testing"
)

func addSamples(f *testing.F, glob string) {
	names, _ := filepath.Glob(filepath.Join("testdata", glob))
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// The parsers read tools' output; whatever the bytes, they must not panic,
// and what they accept must be a usable measurement.

func FuzzIperf3(f *testing.F) {
	addSamples(f, "iperf3-*.json")
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseIperf3(b)
		if err == nil && (r.Seconds <= 0 || r.BitsPerSecond < 0 || r.BytesReceived < 0 || r.BytesSent < 0) {
			t.Errorf("accepted a report with %+v", r)
		}
	})
}

func FuzzWrk(f *testing.F) {
	addSamples(f, "wrk-*.txt")
	f.Fuzz(func(t *testing.T, b []byte) {
		w, err := ParseWrk(b)
		if err == nil && (w.Requests < 0 || w.RequestsPerSec < 0 || w.Duration < 0 || w.Errors() < 0) {
			t.Errorf("accepted a report with %+v", w)
		}
	})
}

func FuzzProcStat(f *testing.F) {
	addSamples(f, "proc-stat-*.txt")
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseProcStat(b)
		if err == nil && p.PID <= 0 {
			t.Errorf("accepted pid %d", p.PID)
		}
	})
}
