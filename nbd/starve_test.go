package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/blockrep/blockrep/block"
	"github.com/blockrep/blockrep/block/blocktest"
)

// Tests of what slow, dead and hostile clients can do to the others: a
// client that stops reading replies, one that pipelines large requests,
// many unfinished handshakes, failures that would flood the log.

// logRecorder is a slog handler that keeps every record's message and
// attributes, so that tests can count log lines.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) logger() *slog.Logger { return slog.New(r) }

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Message)
	rec.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	r.mu.Lock()
	r.lines = append(r.lines, b.String())
	r.mu.Unlock()
	return nil
}

// count returns how many lines start with msg.
func (r *logRecorder) count(msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, l := range r.lines {
		if strings.HasPrefix(l, msg) {
			n++
		}
	}
	return n
}

// find returns the lines that start with msg.
func (r *logRecorder) find(msg string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, l := range r.lines {
		if strings.HasPrefix(l, msg) {
			out = append(out, l)
		}
	}
	return out
}

func (r *logRecorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.lines, "\n")
}

// waitFor polls cond until it holds; the deadline only bounds a failing
// test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// clientByRemote returns the server's view of the connection whose client
// end is c.
func clientByRemote(srv *Server, c *testClient) (ClientInfo, bool) {
	for _, ci := range srv.Clients() {
		if ci.Remote == c.c.LocalAddr().String() {
			return ci, true
		}
	}
	return ClientInfo{}, false
}

// smallRcvBuf shrinks the client's receive buffer, so that a server
// writing replies it does not read blocks early.
func smallRcvBuf(t *testing.T, c *testClient) {
	t.Helper()
	if err := c.c.(*net.TCPConn).SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
}

// serialLink is a block.AsyncWriter that completes writes the way a
// replicated volume does: from one goroutine (the peer link's receiver) in
// order. Until open is called it holds every completion back.
type serialLink struct {
	*blocktest.Mem
	mu     sync.Mutex
	opened bool
	held   []func()
	ch     chan func()
}

func newSerialLink(t *testing.T, m *blocktest.Mem) *serialLink {
	l := &serialLink{Mem: m, ch: make(chan func(), 4096)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for f := range l.ch {
			f()
		}
	}()
	t.Cleanup(func() {
		close(l.ch)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("the link goroutine is stuck in a completion callback")
		}
	})
	return l
}

func (l *serialLink) WriteAtAsync(p []byte, off int64, fua bool, done func(error)) {
	err := l.Mem.WriteAt(p, off, fua)
	f := func() { done(err) }
	l.mu.Lock()
	if !l.opened {
		l.held = append(l.held, f)
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	l.ch <- f
}

func (l *serialLink) Unplug() {}

// open lets the held completions and every later one go.
func (l *serialLink) open() {
	l.mu.Lock()
	l.opened = true
	held := l.held
	l.held = nil
	l.mu.Unlock()
	for _, f := range held {
		l.ch <- f
	}
}

// TestNonReadingClientsDoNotStarveOthers: eight clients each send a 32 MiB
// READ (with the default budget, 256 MiB: all of it) and never read the
// reply. Another client's 4 KiB writes and FLUSHes keep completing while
// the eight are connected, and the eight are evicted after the reply
// timeout. With an AsyncWriter whose completions come from one goroutine
// (a replicated volume's link), each of the eight also has a write whose
// completion arrives while its READ reply is stuck: the completion must not
// wait for that client's socket, or no other client's write completes.
func TestNonReadingClientsDoNotStarveOthers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		async bool
	}{{"local", false}, {"async", true}} {
		t.Run(tc.name, func(t *testing.T) {
			mem := blocktest.NewMem(64 << 20)
			var dev block.Device = mem
			var link *serialLink
			if tc.async {
				link = newSerialLink(t, mem)
				dev = link
			}
			rec := &logRecorder{}
			srv := NewServer(Config{ReplyTimeout: 2 * time.Second, Logger: rec.logger()})
			addr := serveTest(t, srv, &Export{Name: "d", Device: dev, InlineMax: 32 << 20})

			const holders = 8
			hold := make([]*testClient, holders)
			for i := range hold {
				c := dialTest(t, addr)
				smallRcvBuf(t, c)
				c.negotiateGo("d", false)
				if tc.async {
					c.send(cmdWrite, 0, 1, uint64(i)*4096, 4096, bytes.Repeat([]byte{0xee}, 4096))
				}
				c.send(cmdRead, 0, 2, 0, 32<<20, nil)
				if i == 0 {
					// The reply has started: the server is writing
					// it, and will block there.
					var b [1]byte
					c.readFull(b[:])
				}
				hold[i] = c
			}
			waitFor(t, "every holder's READ at the server", func() bool {
				for _, c := range hold {
					if ci, ok := clientByRemote(srv, c); !ok || ci.Reads != 1 {
						return false
					}
				}
				return true
			})
			if link != nil {
				link.open()
			}

			other := dialTest(t, addr)
			other.negotiateGo("d", false)
			const rounds = 16
			for i := range rounds {
				if r := other.do(cmdWrite, 0, uint64(40<<20+i*4096), 4096, bytes.Repeat([]byte{byte(i)}, 4096)); r.errno != 0 {
					t.Fatalf("write %d: errno %d", i, r.errno)
				}
				if r := other.do(cmdFlush, 0, 0, 0, nil); r.errno != 0 {
					t.Fatalf("flush %d: errno %d", i, r.errno)
				}
			}
			for i, c := range hold {
				if _, ok := clientByRemote(srv, c); !ok {
					t.Fatalf("holder %d was gone before the other client's %d writes and flushes completed: they did not complete while it held its READ", i, rounds)
				}
			}
			t0 := time.Now()
			waitFor(t, "the eight holders evicted", func() bool { return len(srv.Clients()) == 1 })
			t.Logf("the holders were evicted %v after the other client's writes", time.Since(t0))
			if n := rec.count("evicting client"); n != holders {
				t.Fatalf("%d eviction lines, want %d:\n%s", n, holders, rec)
			}
			_ = other.c.SetDeadline(time.Now().Add(20 * time.Second))
			if r := other.do(cmdRead, 0, uint64(40<<20), 4096, nil); r.errno != 0 || r.data[0] != 0 {
				t.Fatalf("read after the evictions: %v", r)
			}
		})
	}
}

// TestOneClientCannotTakeTheBudget: one client pipelines eight 32 MiB
// READs, served at workers (the whole budget's worth), and reads no reply.
// Another client's 1 MiB writes and reads keep completing while it is
// connected: one connection holds at most MaxInFlightPerClient.
func TestOneClientCannotTakeTheBudget(t *testing.T) {
	rec := &logRecorder{}
	srv := NewServer(Config{ReplyTimeout: 2 * time.Second, Logger: rec.logger()})
	addr := serveTest(t, srv, &Export{Name: "d", Device: blocktest.NewMem(64 << 20)}) // InlineMax 0: workers

	greedy := dialTest(t, addr)
	smallRcvBuf(t, greedy)
	greedy.negotiateGo("d", false)
	for i := range 8 {
		greedy.send(cmdRead, 0, uint64(i), 0, 32<<20, nil)
	}
	var b [1]byte
	greedy.readFull(b[:])
	waitFor(t, "the greedy client's READs at the server", func() bool {
		ci, ok := clientByRemote(srv, greedy)
		return ok && ci.Reads >= 2
	})

	other := dialTest(t, addr)
	other.negotiateGo("d", false)
	payload := bytes.Repeat([]byte{7}, 1<<20)
	const rounds = 8
	for i := range rounds {
		off := uint64(32<<20 + i<<20)
		if r := other.do(cmdWrite, 0, off, 1<<20, payload); r.errno != 0 {
			t.Fatalf("write %d: errno %d", i, r.errno)
		}
		if r := other.do(cmdRead, 0, off, 1<<20, nil); r.errno != 0 || !bytes.Equal(r.data, payload) {
			t.Fatalf("read %d: %v", i, r)
		}
	}
	if _, ok := clientByRemote(srv, greedy); !ok {
		t.Fatalf("the greedy client was gone before the other client's %d writes and reads completed", rounds)
	}
	waitFor(t, "the greedy client evicted", func() bool { return len(srv.Clients()) == 1 })
	if n := rec.count("evicting client"); n != 1 {
		t.Fatalf("%d eviction lines, want 1:\n%s", n, rec)
	}
}

// dialFrom connects to addr from the local address ip and does the start
// of the handshake like dialTest.
func dialFrom(t *testing.T, addr, ip string) *testClient {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return greet(t, c)
}

// TestHandshakesPerAddress: connections from one address that never finish
// their handshake take at most HandshakesPerAddress of the MaxConnections
// slots; the rest are closed at once, and a client from another address
// gets in.
func TestHandshakesPerAddress(t *testing.T) {
	rec := &logRecorder{}
	srv := NewServer(Config{DefaultExport: "d", MaxConnections: 8, HandshakesPerAddress: 2, LogInterval: time.Hour, Logger: rec.logger()})
	addr := serveTest(t, srv, &Export{Name: "d", Device: blocktest.NewMem(1 << 20)})

	const idle = 12
	greeted := 0
	for range idle {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		var g [18]byte
		if _, err := ioReadFull(c, g[:]); err == nil {
			greeted++
		}
	}
	if greeted != 2 {
		t.Fatalf("%d of %d idle connections from one address got the greeting, want 2", greeted, idle)
	}
	c := dialFrom(t, addr, "127.0.0.2")
	c.negotiateGo("d", false)
	if r := c.do(cmdRead, 0, 0, 512, nil); r.errno != 0 {
		t.Fatalf("read: %v", r)
	}
	// The refusals were logged, but not one line each.
	if n := rec.count("connection refused"); n == 0 || n >= idle-2 {
		t.Fatalf("%d lines for %d refused connections, want a few:\n%s", n, idle-2, rec)
	}
}

// flakyListener fails Accept with each of errs in turn, then accepts for
// real.
type flakyListener struct {
	net.Listener
	mu   sync.Mutex
	errs []error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		l.mu.Unlock()
		return nil, err
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

// TestAcceptErrorsRetried: temporary accept errors (descriptors or memory
// exhausted, a connection aborted before it was accepted) are logged and
// retried; the next client is served.
func TestAcceptErrorsRetried(t *testing.T) {
	rec := &logRecorder{}
	srv := NewServer(Config{DefaultExport: "d", Logger: rec.logger()})
	if err := srv.AddExport(&Export{Name: "d", Device: blocktest.NewMem(1 << 20)}); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var errs []error
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED, syscall.ENOBUFS, syscall.ENOMEM, syscall.EMFILE} {
		errs = append(errs, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", e)})
	}
	fl := &flakyListener{Listener: l, errs: errs}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(fl) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})

	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	var g [18]byte
	if _, err := ioReadFull(c, g[:]); err != nil {
		select {
		case err := <-done:
			t.Fatalf("Serve returned %v after the accept errors; want them retried", err)
		default:
		}
		t.Fatalf("no greeting: %v", err)
	}
	if binary.BigEndian.Uint64(g[:]) != nbdMagic {
		t.Fatalf("greeting %x", g)
	}
	if n := rec.count("accept failed"); n != len(errs) {
		t.Fatalf("%d accept-failure lines for %d errors:\n%s", n, len(errs), rec)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != ErrServerClosed {
		t.Fatalf("Serve returned %v, want ErrServerClosed", err)
	}
}

// TestHandshakeFailuresRateLimited: many connections that fail their
// handshake produce a few log lines and one summary, not a line each.
func TestHandshakeFailuresRateLimited(t *testing.T) {
	rec := &logRecorder{}
	srv := NewServer(Config{DefaultExport: "d", LogInterval: time.Hour, Logger: rec.logger()})
	addr := serveTest(t, srv, &Export{Name: "d", Device: blocktest.NewMem(1 << 20)})
	const n = 40
	for range n {
		c := dialTest(t, addr)
		c.write(cat(be64(0xbadbadbad), be32(optGo), be32(0))) // bad option magic
		var b [1]byte
		if _, err := c.c.Read(b[:]); err == nil {
			t.Fatal("connection with a bad option magic not closed")
		}
		c.c.Close()
	}
	waitFor(t, "the handshakes to end", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.conns) == 0
	})
	shutdown(t, srv)
	lines := rec.count("handshake failed")
	if lines == 0 || lines > 5 {
		t.Fatalf("%d lines for %d failed handshakes, want 1 to 5:\n%s", lines, n, rec)
	}
	sum := rec.find("handshake failures not logged")
	if len(sum) != 1 || !strings.Contains(sum[0], "count="+strconv.Itoa(n-lines)) {
		t.Fatalf("summary lines %q, want one counting %d", sum, n-lines)
	}
}

// TestIOErrorLogPerExport: a failing device makes every request fail on
// every connection; the log gets a few lines and a summary, however many
// connections there are.
func TestIOErrorLogPerExport(t *testing.T) {
	rec := &logRecorder{}
	mem := blocktest.NewMem(1 << 20)
	srv := NewServer(Config{DefaultExport: "d", LogInterval: time.Hour, Logger: rec.logger()})
	addr := serveTest(t, srv, &Export{Name: "d", Device: mem, InlineMax: 64 << 10})
	const conns, reqs = 10, 20
	mem.FailNext(blocktest.OpRead, syscall.EIO, conns*reqs)
	for range conns {
		c := dialTest(t, addr)
		c.negotiateGo("d", false)
		for range reqs {
			if r := c.do(cmdRead, 0, 0, 4096, nil); r.errno != errIO {
				t.Fatalf("read on a failing device: errno %d, want EIO", r.errno)
			}
		}
		c.send(cmdDisc, 0, 0, 0, 0, nil)
	}
	shutdown(t, srv)
	lines := rec.count("I/O error ")
	if lines == 0 || lines > 10 {
		t.Fatalf("%d lines for %d I/O errors on %d connections, want 1 to 10:\n%s", lines, conns*reqs, conns, rec)
	}
	sum := rec.find("I/O errors not logged")
	if len(sum) != 1 || !strings.Contains(sum[0], "count="+strconv.Itoa(conns*reqs-lines)) {
		t.Fatalf("summary lines %q, want one counting %d", sum, conns*reqs-lines)
	}
}

func shutdown(t *testing.T, srv *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// stuckTransport is a connection whose client reads nothing: its socket
// takes nothing without waiting, and a write waits until release is
// closed. Reads return the bytes of in.
type stuckTransport struct {
	in      *bytes.Reader
	release chan struct{}
	mu      sync.Mutex
	out     bytes.Buffer
}

func (t *stuckTransport) Read(p []byte) (int, error) { return t.in.Read(p) }

func (t *stuckTransport) Write(p []byte) (int, error) {
	<-t.release
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.out.Write(p)
}

func (t *stuckTransport) write2(a, b []byte) error {
	if _, err := t.Write(a); err != nil {
		return err
	}
	_, err := t.Write(b)
	return err
}

func (t *stuckTransport) tryWrite([]byte) (int, error)        { return 0, nil }
func (t *stuckTransport) setWriteTimeout(time.Duration) error { return nil }
func (t *stuckTransport) closeRead()                          {}
func (t *stuckTransport) abort()                              {}
func (t *stuckTransport) close()                              {}

// heldAsync is a block.AsyncWriter that keeps the completion of each write
// until complete runs it.
type heldAsync struct {
	*blocktest.Mem
	mu   sync.Mutex
	done []func()
}

func (d *heldAsync) WriteAtAsync(p []byte, off int64, fua bool, done func(error)) {
	err := d.Mem.WriteAt(p, off, fua)
	d.mu.Lock()
	d.done = append(d.done, func() { done(err) })
	d.mu.Unlock()
}

func (d *heldAsync) Unplug() {}

func (d *heldAsync) complete() {
	d.mu.Lock()
	fs := d.done
	d.done = nil
	d.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// TestCompletionNeverWaitsForTheClient: an AsyncWriter's completion
// callback runs on the device's goroutine (a replicated volume's peer link,
// which completes every client's writes). When it finds the connection's
// socket full with no one writing, it must hand the reply over and return,
// not wait for the client.
func TestCompletionNeverWaitsForTheClient(t *testing.T) {
	srv := NewServer(Config{})
	dev := &heldAsync{Mem: blocktest.NewMem(1 << 20)}
	e := &Export{Name: "d", Device: dev, InlineMax: 32 << 20}
	if err := srv.AddExport(e); err != nil {
		t.Fatal(err)
	}
	tr := &stuckTransport{in: bytes.NewReader(bytes.Repeat([]byte{5}, 4096)), release: make(chan struct{})}
	s := newSession(srv, &clientConn{id: 1, remote: "test"}, tr, &negotiation{export: e})
	if err := s.write(&request{cmd: cmdWrite, cookie: 77, length: 4096}); err != nil {
		t.Fatal(err)
	}
	if s.async == nil || len(dev.done) != 1 {
		t.Fatal("the write did not go through WriteAtAsync")
	}
	s.idle() // the reader waits for the next request: nothing is written now

	returned := make(chan struct{})
	go func() {
		dev.complete() // as the link's goroutine would
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(20 * time.Second):
		close(tr.release)
		t.Fatal("the completion callback waited for the client's socket")
	}
	close(tr.release)
	s.workers.Wait()
	s.out.drain()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if got := tr.out.Bytes(); len(got) != simpleHdrLen || binary.BigEndian.Uint32(got) != simpleMagic || binary.BigEndian.Uint64(got[8:]) != 77 {
		t.Fatalf("reply %x, want the write's simple reply", got)
	}
}

// TestRateLog: the first burst events of an interval are logged, the rest
// counted into one summary when the interval ends; a new interval starts
// afresh.
func TestRateLog(t *testing.T) {
	rec := &logRecorder{}
	now := time.Unix(1000, 0)
	r := newRateLog(rec.logger(), "not logged", time.Minute, 2)
	r.now = func() time.Time { return now }
	defer r.stop()
	var got []bool
	for _, step := range []time.Duration{0, time.Second, time.Second, time.Second, time.Second, time.Minute, time.Second} {
		now = now.Add(step)
		ok, _ := r.allow()
		got = append(got, ok)
	}
	want := []bool{true, true, false, false, false, true, true}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("allow = %v, want %v", got, want)
		}
	}
	// The new interval's first event wrote the summary of the three
	// dropped ones.
	if sum := rec.find("not logged"); len(sum) != 1 || !strings.Contains(sum[0], "count=3") || !strings.Contains(sum[0], "total=6") {
		t.Fatalf("summaries %q", sum)
	}
	now = now.Add(time.Second)
	if ok, k := r.allow(); ok || k != 8 {
		t.Fatalf("third event of the interval: allow %v, total %d", ok, k)
	}
	r.stop()
	if sum := rec.find("not logged"); len(sum) != 2 || !strings.Contains(sum[1], "count=1") {
		t.Fatalf("summary at stop: %q", sum)
	}
}
