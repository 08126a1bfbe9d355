package lograte

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	r := New(time.Minute, 2)
	t0 := time.Unix(1000, 0)
	step := func(key string, at time.Duration, wantOK bool, wantSuppressed int) {
		t.Helper()
		ok, n := r.Allow(key, t0.Add(at))
		if ok != wantOK || n != wantSuppressed {
			t.Fatalf("Allow(%q, +%s) = %v, %d; want %v, %d", key, at, ok, n, wantOK, wantSuppressed)
		}
	}
	step("a", 0, true, 0)
	step("a", time.Second, false, 0)
	step("a", 2*time.Second, false, 0)
	if n := r.Suppressed("a"); n != 2 {
		t.Fatalf("Suppressed(a) = %d, want 2", n)
	}
	step("b", 3*time.Second, true, 0)
	step("c", 4*time.Second, false, 0) // full: a and b are still fresh
	step("a", time.Minute, true, 2)
	step("c", time.Minute+3*time.Second, true, 0) // b expired and was forgotten
	if len(r.keys) != 2 {
		t.Fatalf("limiter holds %d keys, want at most 2", len(r.keys))
	}
	r.Forget("c")
	step("c", time.Minute+4*time.Second, true, 0)
}
