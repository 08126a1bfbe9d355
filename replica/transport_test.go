package replica

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockrep/blockrep/block/blocktest"
	"github.com/blockrep/blockrep/internal/flakynet"
	"github.com/blockrep/blockrep/internal/syncbuf"
)

// newIdleCluster makes nodes n1..nN without starting them: the test sets
// tcfg and wrap, then starts them. Cleanup stops them.
func newIdleCluster(t *testing.T, nodes int) *testCluster {
	t.Helper()
	c := &testCluster{t: t}
	for i := range nodes {
		c.nodes = append(c.nodes, &testNode{t: t, name: fmt.Sprintf("n%d", i+1), dir: t.TempDir(), addr: freeAddr(t), store: blocktest.NewMem(testVolSize)})
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			c.stop(n)
		}
	})
	return c
}

// logTo makes node's transport log at Info and above into buf.
func (c *testCluster) logTo(node *testNode, buf *syncbuf.Buffer) {
	prev := c.tcfg
	c.tcfg = func(tc *TransportConfig) {
		if prev != nil {
			prev(tc)
		}
		if tc.Local == node.name {
			tc.Logger = slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
		}
	}
}

// flaky makes node's replication listener a flakynet.Listener returning
// errs first, and returns it once the node has started.
func (c *testCluster) flaky(node *testNode, errs ...error) func() *flakynet.Listener {
	var fl *flakynet.Listener
	c.wrap = func(n *testNode, ln net.Listener) net.Listener {
		if n != node {
			return ln
		}
		fl = flakynet.New(ln, errs...)
		return fl
	}
	return func() *flakynet.Listener { return fl }
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// writeAndCompare writes through the primary p and checks that s holds
// the same data (protocol C: acknowledged means on both).
func writeAndCompare(t *testing.T, p, s *testNode) {
	t.Helper()
	if err := p.vol.WriteAt(randBytes(64<<10), 1<<20, false); err != nil {
		t.Fatalf("write on %s: %v", p.name, err)
	}
	sameData(t, p, s)
}

// TestTransportAcceptRetriesTemporaryErrors gives the accepting node's
// replication listener the errors a node out of descriptors, buffers or
// memory sees, and an aborted connection and a timeout: the accept loop
// backs off and retries, logs the failures (fewer lines than failures),
// and the peer's link comes up.
func TestTransportAcceptRetriesTemporaryErrors(t *testing.T) {
	errs := []error{
		flakynet.AcceptError(syscall.EMFILE), flakynet.AcceptError(syscall.ECONNABORTED),
		flakynet.AcceptError(syscall.ENFILE), flakynet.AcceptError(syscall.ENOBUFS),
		flakynet.AcceptError(syscall.ENOMEM), flakynet.AcceptError(syscall.EMFILE),
		&net.OpError{Op: "accept", Net: "tcp", Err: os.ErrDeadlineExceeded},
	}
	c := newIdleCluster(t, 2)
	p, s := c.nodes[0], c.nodes[1] // n1 dials, n2 accepts
	var logs syncbuf.Buffer
	c.logTo(s, &logs)
	fl := c.flaky(s, errs...)
	c.start(s, Secondary)
	c.start(p, Primary)
	c.waitConnected(p, s)
	if got := fl().Failed(); got != int64(len(errs)) {
		t.Errorf("the listener returned %d of its %d errors", got, len(errs))
	}
	writeAndCompare(t, p, s)
	out := logs.String()
	n := strings.Count(out, "accept failed")
	if n == 0 || n >= len(errs) {
		t.Errorf("%d log lines about %d accept failures, want at least one and fewer than the failures:\n%s", n, len(errs), out)
	}
	if !strings.Contains(out, "too many open files") {
		t.Errorf("the log does not name the first error (EMFILE):\n%s", out)
	}
}

// floodConns opens n TCP connections to addr that never say anything,
// from 127.0.0.2, 127.0.0.3, ... (sources addresses in turn); cleanup
// closes those left open. close closes them all.
func floodConns(t *testing.T, addr string, n, sources int) (close func()) {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	close = func() {
		for _, c := range conns {
			_ = c.Close()
		}
		conns = nil
	}
	t.Cleanup(func() { close() })
	for i := range n {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%sources))}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("flood connection %d to %s: %v", len(conns)+1, addr, err)
		}
		conns = append(conns, c)
	}
	return close
}

// TestTransportHandshakeFlood opens 2 000 connections, from three
// addresses, to the replication port that never start the handshake. The
// accepting node's goroutines and descriptors stay bounded by the
// pending-handshake cap, not by the flood; when the flood gives up, the
// failed handshakes take a few log lines per source, not one each; and
// during a second flood, from one address, the real peer connects and
// replicates (that address holds only its share of the slots).
func TestTransportHandshakeFlood(t *testing.T) {
	const flood = 2000
	// The cap is 64 pending handshakes; the bound leaves room for the
	// runtime's and the test's own goroutines and descriptors.
	const bound = 200
	c := newIdleCluster(t, 2)
	p, s := c.nodes[0], c.nodes[1]
	var logs syncbuf.Buffer
	c.logTo(s, &logs)
	fl := c.flaky(s)
	c.start(s, Secondary)
	waitFor(t, "n2 listening", func() bool { return strings.Contains(logs.String(), "replication listening") })
	baseG, baseFD := runtime.NumGoroutine(), openFDs(t)
	logsBefore := strings.Count(logs.String(), "\n")

	end := floodConns(t, s.addr, flood, 3)
	waitFor(t, "the flood accepted", func() bool { return fl().Accepted() >= flood })
	g, fds := runtime.NumGoroutine()-baseG, openFDs(t)-baseFD-flood
	t.Logf("with %d connections pending: %d more goroutines, %d more descriptors on the accepting side", flood, g, fds)
	if g > bound {
		t.Errorf("%d connections that never handshake added %d goroutines, want at most %d", flood, g, bound)
	}
	if fds > bound {
		t.Errorf("%d connections that never handshake hold %d descriptors on the accepting side, want at most %d", flood, fds, bound)
	}
	end()
	waitFor(t, "the flood's handshakes ended", func() bool { return runtime.NumGoroutine() <= baseG+10 })
	all := logs.String()
	lines := strings.Split(all, "\n")
	if n := strings.Count(all, "\n") - logsBefore; n > 10 {
		t.Errorf("%d failed handshakes from three addresses took %d log lines, want at most 10; the first ones:\n%s", flood, n, strings.Join(lines[logsBefore:min(len(lines), logsBefore+20)], "\n"))
	} else {
		t.Logf("%d failed handshakes took %d log lines:\n%s", flood, n, strings.Join(lines[logsBefore:], "\n"))
	}

	floodConns(t, s.addr, flood, 1)
	c.start(p, Primary)
	c.waitConnected(p, s)
	writeAndCompare(t, p, s)
}

// TestTransportPermanentAcceptError: an accept error that is not
// temporary is logged at once and reported on Failed, naming the address.
func TestTransportPermanentAcceptError(t *testing.T) {
	c := newIdleCluster(t, 2)
	s := c.nodes[1]
	var logs syncbuf.Buffer
	c.logTo(s, &logs)
	c.flaky(s, flakynet.AcceptError(syscall.EINVAL))
	c.start(s, Secondary)
	select {
	case err := <-s.tr.Failed():
		if !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), s.addr) {
			t.Fatalf("Failed: %v, want EINVAL naming %s", err, s.addr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing on Failed after a permanent accept error")
	}
	if out := logs.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "invalid argument") {
		t.Errorf("the failure is not logged as an error:\n%s", out)
	}
}
