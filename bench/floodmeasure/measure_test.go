package floodmeasure

import (
	"testing"
	"time"
)

func TestRecovery(t *testing.T) {
	end := time.Unix(1000, 0)
	at := func(ms int, ok bool) Attempt {
		a := Attempt{Start: end.Add(time.Duration(ms) * time.Millisecond)}
		if !ok {
			a.Err = "timeout"
		}
		return a
	}
	var as []Attempt
	as = append(as, at(-100, false)) // during the flood: not counted
	for i := range 10 {
		as = append(as, at(i*50, i%2 == 0)) // flaky: no run of 20
	}
	for i := range RecoveryRun {
		as = append(as, at(1000+i*50, true))
	}
	d, ok := Recovery(as, end, end.Add(time.Hour))
	if !ok || d != time.Second {
		t.Fatalf("recovery %v %v, want 1s", d, ok)
	}
	// The last of the run still in flight: not recovered yet.
	if _, ok := Recovery(as, end, end.Add(1000*time.Millisecond+(RecoveryRun-1)*50*time.Millisecond)); ok {
		t.Fatal("recovered before the run's last attempt was known")
	}
	// No failure after the flood: recovered at once.
	if d, ok := Recovery(as[len(as)-RecoveryRun:], end.Add(time.Second), end.Add(time.Hour)); !ok || d != 0 {
		t.Fatalf("recovery %v %v, want 0", d, ok)
	}
}

func TestErrKind(t *testing.T) {
	for e, want := range map[string]string{
		`Get "http://198.18.0.1/small.html": context deadline exceeded (Client.Timeout exceeded while awaiting headers)`: "timeout",
		"read tcp 198.18.0.2:1->198.18.0.1:80: read: connection reset by peer":                                           "reset",
		"dial tcp 198.18.0.1:80: connect: connection refused":                                                            "refused",
	} {
		if got := ErrKind(e); got != want {
			t.Errorf("errKind(%q) = %q, want %q", e, got, want)
		}
	}
}
