package freeport

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Pick's ports are distinct, below the ephemeral range, and free.
func TestPick(t *testing.T) {
	ports, err := Pick(50)
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 50 {
		t.Fatalf("%d ports, want 50", len(ports))
	}
	seen := map[int]bool{}
	high := ephemeralLow()
	for _, p := range ports {
		if seen[p] {
			t.Errorf("port %d twice", p)
		}
		seen[p] = true
		if high-Low >= 1000 && (p < Low || p >= high) {
			t.Errorf("port %d outside [%d, %d)", p, Low, high)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Errorf("port %d is not free: %v", p, err)
			continue
		}
		l.Close()
	}
}

// A port in use is never picked.
func TestPickSkipsPortsInUse(t *testing.T) {
	// The range is too big to fill: hold the ports one Pick returned and
	// check that a second one avoids them.
	first, err := Pick(200)
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Listener
	inUse := map[int]bool{}
	for _, p := range first {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		held = append(held, l)
		inUse[p] = true
	}
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	second, err := Pick(200)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range second {
		if inUse[p] {
			t.Errorf("port %d is in use but was picked", p)
		}
	}
}

// TestReserve: a port reserved a moment ago is refused to the next pick,
// by this process or another; a reservation older than reserveFor is
// stale and taken over.
func TestReserve(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	if !reserve(dir, 25000, now) {
		t.Fatal("first reservation refused")
	}
	if reserve(dir, 25000, now.Add(time.Second)) {
		t.Fatal("a port reserved a second ago was reserved again")
	}
	if !reserve(dir, 25001, now) {
		t.Fatal("another port refused")
	}
	old := now.Add(-2 * reserveFor)
	if err := os.Chtimes(filepath.Join(dir, "25000"), old, old); err != nil {
		t.Fatal(err)
	}
	if !reserve(dir, 25000, now) {
		t.Fatal("a stale reservation was not taken over")
	}
}
