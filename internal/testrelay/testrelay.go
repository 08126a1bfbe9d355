// Package testrelay is a TCP man in the middle for tests: it accepts on
// loopback, dials a target for every connection and hands both ends to
// the test's own forwarding code, which may read, rewrite, drop or hold
// what passes. Every connection is closed when the test ends.
package testrelay

import (
	"net"
	"sync"
	"testing"
)

// Relay is a running relay.
type Relay struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

// Start listens on a free loopback port. For every connection it accepts
// it dials target and runs serve(in, out) on its own goroutine: in is the
// dialer's end, out the target's. serve owns the forwarding in both
// directions; the relay closes both ends at the test's cleanup, which ends
// whatever serve started.
func Start(t testing.TB, target string, serve func(in, out net.Conn)) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{ln: ln}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			r.mu.Lock()
			r.conns = append(r.conns, in, out)
			r.mu.Unlock()
			go serve(in, out)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		r.CloseConns()
	})
	return r
}

// CloseConns closes both ends of every connection relayed so far; the
// relay goes on accepting new ones.
func (r *Relay) CloseConns() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.Close()
	}
	r.conns = nil
}

// Addr is the address to dial instead of the target.
func (r *Relay) Addr() string { return r.ln.Addr().String() }
