package authnet

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockrep/blockrep/internal/acceptloop"
	"github.com/blockrep/blockrep/internal/flakynet"
	"github.com/blockrep/blockrep/internal/syncbuf"
	"github.com/blockrep/blockrep/replica/wire"
)

// waitFor bounds every wait in these tests. It is a bound on a hang, not a
// timing assertion: nothing here expects an event before it.
const waitFor = 30 * time.Second

var testSecret = []byte("0123456789abcdef-test-secret")

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func testConfig(t *testing.T, node string) Config {
	return Config{Cluster: "c1", NodeID: node, Secret: testSecret, Logger: testLogger(t)}
}

// dropEvent is one connection the Mux closed instead of handing it over.
type dropEvent struct {
	remote net.Addr
	stage  string
	err    error
}

// testMux is a running Mux with its service listeners and a record of the
// connections it dropped.
type testMux struct {
	*Mux
	lns      map[Service]net.Listener
	drops    chan dropEvent
	serveErr chan error
}

// startMux serves cfg on 127.0.0.1:0 with listeners for svcs. setup, if
// not nil, runs before Serve. Cleanup closes the Mux and checks how Serve
// returned.
func startMux(t *testing.T, cfg Config, svcs []Service, setup func(*Mux)) *testMux {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startMuxOn(t, ln, cfg, svcs, setup)
}

// startMuxOn is startMux on the listener ln.
func startMuxOn(t *testing.T, ln net.Listener, cfg Config, svcs []Service, setup func(*Mux)) *testMux {
	t.Helper()
	m, err := NewMux(ln, cfg)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	tm := &testMux{Mux: m, lns: map[Service]net.Listener{}, drops: make(chan dropEvent, 1024), serveErr: make(chan error, 1)}
	for _, s := range svcs {
		tm.lns[s] = m.Listener(s)
	}
	m.onDrop = func(remote net.Addr, stage string, err error) {
		select {
		case tm.drops <- dropEvent{remote, stage, err}:
		default:
		}
	}
	if setup != nil {
		setup(m)
	}
	go func() { tm.serveErr <- m.Serve(context.Background()) }()
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		// Serve returns nil if it ran, or net.ErrClosed if Close came first.
		if err := <-tm.serveErr; err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return tm
}

func (tm *testMux) addr() string { return tm.Addr().String() }

// nextDrop waits for the next dropped connection.
func (tm *testMux) nextDrop(t *testing.T) dropEvent {
	t.Helper()
	select {
	case ev := <-tm.drops:
		return ev
	case <-time.After(waitFor):
		t.Fatal("no connection was dropped")
		return dropEvent{}
	}
}

// collect accepts on l until it fails, sending each conn on the returned
// channel, which it closes then.
func collect(l net.Listener) <-chan net.Conn {
	out := make(chan net.Conn, 16)
	go func() {
		defer close(out)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			out <- c
		}
	}()
	return out
}

func acceptOne(t *testing.T, l net.Listener) *Conn {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := l.Accept()
		ch <- res{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Accept: %v", r.err)
		}
		c, ok := r.c.(*Conn)
		if !ok {
			t.Fatalf("Accept returned %T, want *Conn", r.c)
		}
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(waitFor):
		t.Fatal("Accept did not return")
		return nil
	}
}

func dial(t *testing.T, addr string, svc Service, cfg Config, peerID string) *Conn {
	t.Helper()
	c, err := Dial(context.Background(), addr, svc, cfg, peerID)
	if err != nil {
		t.Fatalf("Dial(%s, %s): %v", addr, svc, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expectClosed asserts that the remote end closes c: a read ends in EOF or
// a reset, never in data or the bounding deadline.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(waitFor)); err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, c) // skips any handshake bytes the mux sent
	if err == nil || errors.Is(err, syscall.ECONNRESET) {
		return // EOF (io.Copy reports it as nil) or reset
	}
	t.Fatalf("after %d bytes: %v, want EOF or connection reset", n, err)
}

func exchange(t *testing.T, a, b net.Conn) {
	t.Helper()
	for _, p := range []struct {
		from, to net.Conn
		msg      string
	}{{a, b, "ping"}, {b, a, "pong"}} {
		if _, err := p.from.Write([]byte(p.msg)); err != nil {
			t.Fatalf("write %q: %v", p.msg, err)
		}
		buf := make([]byte, len(p.msg))
		if err := p.to.SetReadDeadline(time.Now().Add(waitFor)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(p.to, buf); err != nil || string(buf) != p.msg {
			t.Fatalf("read %q, %v; want %q", buf, err, p.msg)
		}
	}
}

func TestDialAcceptBothServices(t *testing.T) {
	srv := startMux(t, testConfig(t, "n1"), []Service{ServiceRaft, ServiceControl}, nil)
	for _, tc := range []struct {
		svc    Service
		peerID string // what the dialer insists on
	}{{ServiceRaft, "n1"}, {ServiceControl, ""}} {
		t.Run(tc.svc.String(), func(t *testing.T) {
			cli := dial(t, srv.addr(), tc.svc, testConfig(t, "n2"), tc.peerID)
			got := acceptOne(t, srv.lns[tc.svc])
			if cli.PeerID() != "n1" {
				t.Errorf("dialer: PeerID %q, want n1", cli.PeerID())
			}
			if got.PeerID() != "n2" {
				t.Errorf("acceptor: PeerID %q, want n2", got.PeerID())
			}
			if got.Service() != tc.svc || cli.Service() != tc.svc {
				t.Errorf("Service: acceptor %s, dialer %s, want %s", got.Service(), cli.Service(), tc.svc)
			}
			exchange(t, cli, got)
		})
	}
}

func TestDialRejected(t *testing.T) {
	wrongSecret := testConfig(t, "intruder")
	wrongSecret.Secret = []byte("another-secret-of-enough-length")
	wrongCluster := testConfig(t, "intruder")
	wrongCluster.Cluster = "c2"
	for _, tc := range []struct {
		name   string
		cfg    Config
		peerID string
		want   error // on both ends
	}{
		{"wrong secret", wrongSecret, "", wire.ErrAuthFailed},
		{"wrong cluster", wrongCluster, "", wire.ErrClusterMismatch},
		{"unexpected peer", testConfig(t, "n2"), "n9", wire.ErrUnexpectedPeer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startMux(t, testConfig(t, "n1"), []Service{ServiceRaft}, nil)
			yielded := collect(srv.lns[ServiceRaft])

			c, err := Dial(context.Background(), srv.addr(), ServiceRaft, tc.cfg, tc.peerID)
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded")
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("Dial error %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), srv.addr()) {
				t.Errorf("Dial error %q does not name the address %s", err, srv.addr())
			}
			ev := srv.nextDrop(t)
			if ev.stage != "handshake" || !errors.Is(ev.err, tc.want) {
				t.Errorf("mux dropped at %s with %v, want handshake with %v", ev.stage, ev.err, tc.want)
			}

			// A good client still gets through, and is all the listener ever
			// yields: the rejected one never came before it, nor after.
			good := dial(t, srv.addr(), ServiceRaft, testConfig(t, "n2"), "n1")
			first := <-yielded
			defer first.Close()
			if id := first.(*Conn).PeerID(); id != "n2" {
				t.Fatalf("listener yielded a conn from %q, want n2", id)
			}
			exchange(t, good, first)
			srv.Close()
			for c := range yielded {
				c.Close()
				t.Fatalf("listener yielded another conn, from %q", c.(*Conn).PeerID())
			}
		})
	}
}

func TestDialBadConfig(t *testing.T) {
	srv := startMux(t, testConfig(t, "n1"), []Service{ServiceRaft}, nil)
	short := testConfig(t, "n2")
	short.Secret = []byte("short")
	for _, tc := range []struct {
		name   string
		cfg    Config
		svc    Service
		peerID string
	}{
		{"short secret", short, ServiceRaft, ""},
		{"peer is self", testConfig(t, "n2"), ServiceRaft, "n2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Dial(context.Background(), srv.addr(), tc.svc, tc.cfg, tc.peerID)
			if !errors.Is(err, wire.ErrBadConfig) {
				t.Fatalf("Dial error %v, want %v", err, wire.ErrBadConfig)
			}
		})
	}
	if _, err := Dial(context.Background(), srv.addr(), 0, testConfig(t, "n2"), ""); err == nil {
		t.Fatal("Dial with service 0 succeeded")
	}
}

func TestNewMuxValidates(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	short := testConfig(t, "n1")
	short.Secret = short.Secret[:wire.MinSecretLen-1]
	noCluster := testConfig(t, "n1")
	noCluster.Cluster = ""
	negative := testConfig(t, "n1")
	negative.HandshakeTimeout = -time.Second
	for name, cfg := range map[string]Config{"short secret": short, "no cluster": noCluster} {
		if _, err := NewMux(ln, cfg); !errors.Is(err, wire.ErrBadConfig) {
			t.Errorf("%s: NewMux error %v, want %v", name, err, wire.ErrBadConfig)
		}
	}
	if _, err := NewMux(ln, negative); err == nil {
		t.Error("negative timeout: NewMux succeeded")
	}
	m, err := NewMux(ln, testConfig(t, "n1"))
	if err != nil {
		t.Fatal(err)
	}
	if m.cfg.HandshakeTimeout != DefaultHandshakeTimeout {
		t.Errorf("HandshakeTimeout %s, want default %s", m.cfg.HandshakeTimeout, DefaultHandshakeTimeout)
	}
	m.Listener(ServiceRaft)
	func() {
		defer func() {
			if recover() == nil {
				t.Error("second Listener(ServiceRaft) did not panic")
			}
		}()
		m.Listener(ServiceRaft)
	}()
}

func TestUnknownServiceClosed(t *testing.T) {
	srv := startMux(t, testConfig(t, "n1"), []Service{ServiceRaft}, nil)
	yielded := collect(srv.lns[ServiceRaft])
	// 99 is no service at all; control is one this mux does not serve.
	for _, svc := range []Service{99, ServiceControl} {
		c := dial(t, srv.addr(), svc, testConfig(t, "n2"), "n1")
		expectClosed(t, c)
		if ev := srv.nextDrop(t); ev.stage != "service" {
			t.Errorf("%s: mux dropped at %s (%v), want service", svc, ev.stage, ev.err)
		}
	}
	srv.Close()
	for c := range yielded {
		c.Close()
		t.Fatalf("raft listener yielded a conn for %s", c.(*Conn).Service())
	}
}

func TestNotAcceptedInTimeClosed(t *testing.T) {
	cfg := testConfig(t, "n1")
	cfg.HandshakeTimeout = 200 * time.Millisecond
	srv := startMux(t, cfg, []Service{ServiceRaft}, nil) // nobody calls Accept
	c := dial(t, srv.addr(), ServiceRaft, testConfig(t, "n2"), "n1")
	expectClosed(t, c)
	if ev := srv.nextDrop(t); ev.stage != "handoff" {
		t.Errorf("mux dropped at %s (%v), want handoff", ev.stage, ev.err)
	}
}

func TestIdleClientDropped(t *testing.T) {
	cfg := testConfig(t, "n1")
	cfg.HandshakeTimeout = 200 * time.Millisecond
	srv := startMux(t, cfg, []Service{ServiceRaft}, nil)

	// One client sends nothing at all ...
	idle, err := net.Dial("tcp", srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	expectClosed(t, idle)
	ev := srv.nextDrop(t)
	if ev.stage != "handshake" || !errors.Is(ev.err, context.DeadlineExceeded) {
		t.Errorf("idle client: dropped at %s with %v, want handshake with deadline exceeded", ev.stage, ev.err)
	}

	// ... another completes the handshake but never names a service.
	half, err := net.Dial("tcp", srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	if _, err := wire.Handshake(context.Background(), half, testConfig(t, "n2").handshake(true, "n1")); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, half)
	ev = srv.nextDrop(t)
	if ev.stage != "service" || !errors.Is(ev.err, context.DeadlineExceeded) {
		t.Errorf("silent client: dropped at %s with %v, want service with deadline exceeded", ev.stage, ev.err)
	}
}

// waitPending waits until n connections are between accept and hand-off.
func waitPending(t *testing.T, m *Mux, n int) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for m.gate.Pending() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d pending handshakes, want %d", m.gate.Pending(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestIdleClientDoesNotBlockOthers(t *testing.T) {
	cfg := testConfig(t, "n1")
	cfg.HandshakeTimeout = time.Hour // the idle client stays for the whole test
	srv := startMux(t, cfg, []Service{ServiceRaft}, nil)
	idle, err := net.Dial("tcp", srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	waitPending(t, srv.Mux, 1)

	cli := dial(t, srv.addr(), ServiceRaft, testConfig(t, "n2"), "n1")
	exchange(t, cli, acceptOne(t, srv.lns[ServiceRaft]))
	select {
	case ev := <-srv.drops:
		t.Fatalf("the idle client was dropped (%s: %v) before the other got through", ev.stage, ev.err)
	default:
	}
}

func TestOverloadClosesNewConns(t *testing.T) {
	cfg := testConfig(t, "n1")
	cfg.HandshakeTimeout = time.Hour // only the limit can close a conn here
	srv := startMux(t, cfg, []Service{ServiceRaft}, func(m *Mux) { m.gate = acceptloop.NewGate(2, 0, m.log) })
	var idle []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", srv.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	waitPending(t, srv.Mux, 2)

	extra, err := net.Dial("tcp", srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	expectClosed(t, extra)
	if ev := srv.nextDrop(t); ev.stage != "overload" {
		t.Fatalf("dropped at %s (%v), want overload", ev.stage, ev.err)
	}

	// A freed slot admits a client again.
	idle[0].Close()
	if ev := srv.nextDrop(t); ev.stage != "handshake" {
		t.Fatalf("dropped at %s (%v), want handshake", ev.stage, ev.err)
	}
	waitPending(t, srv.Mux, 1)
	cli := dial(t, srv.addr(), ServiceRaft, testConfig(t, "n2"), "n1")
	exchange(t, cli, acceptOne(t, srv.lns[ServiceRaft]))
}

func TestStop(t *testing.T) {
	for _, how := range []string{"Close", "cancel"} {
		t.Run(how, func(t *testing.T) {
			before := runtime.NumGoroutine()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			m, err := NewMux(ln, testConfig(t, "n1"))
			if err != nil {
				t.Fatal(err)
			}
			raftL, ctlL := m.Listener(ServiceRaft), m.Listener(ServiceControl)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			serveErr := make(chan error, 1)
			go func() { serveErr <- m.Serve(ctx) }()

			// An accepted conn, an idle one mid-handshake and a blocked Accept.
			cli := dial(t, m.Addr().String(), ServiceRaft, testConfig(t, "n2"), "n1")
			srvConn := acceptOne(t, raftL)
			idle, err := net.Dial("tcp", m.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer idle.Close()
			waitPending(t, m, 1)
			blocked := make(chan error, 1)
			go func() {
				_, err := ctlL.Accept()
				blocked <- err
			}()

			if how == "Close" {
				if err := m.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
			} else {
				cancel()
			}
			if err := <-serveErr; err != nil {
				t.Fatalf("Serve returned %v", err)
			}
			if err := <-blocked; !errors.Is(err, net.ErrClosed) {
				t.Fatalf("blocked Accept returned %v, want net.ErrClosed", err)
			}
			for _, l := range []net.Listener{raftL, ctlL} {
				if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
					t.Fatalf("Accept after stop returned %v, want net.ErrClosed", err)
				}
			}
			if err := m.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if err := m.Serve(context.Background()); err == nil {
				t.Fatal("Serve after stop succeeded")
			}
			expectClosed(t, idle)
			// A conn already handed over belongs to its acceptor and still works.
			exchange(t, cli, srvConn)
			cli.Close()
			srvConn.Close()

			deadline := time.Now().Add(waitFor)
			for runtime.NumGoroutine() > before {
				if time.Now().After(deadline) {
					buf := make([]byte, 1<<20)
					t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}

func TestServiceListenerCloseStopsOnlyThatService(t *testing.T) {
	srv := startMux(t, testConfig(t, "n1"), []Service{ServiceRaft, ServiceControl}, nil)
	srv.lns[ServiceRaft].Close()
	if _, err := srv.lns[ServiceRaft].Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept on closed listener: %v, want net.ErrClosed", err)
	}
	c := dial(t, srv.addr(), ServiceRaft, testConfig(t, "n2"), "n1")
	expectClosed(t, c)
	if ev := srv.nextDrop(t); ev.stage != "handoff" {
		t.Errorf("dropped at %s (%v), want handoff", ev.stage, ev.err)
	}
	cli := dial(t, srv.addr(), ServiceControl, testConfig(t, "n2"), "n1")
	exchange(t, cli, acceptOne(t, srv.lns[ServiceControl]))
}

func TestDialRespectsContext(t *testing.T) {
	// A listener that never answers: the kernel completes the TCP
	// handshake, then the authentication waits for ever.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testConfig(t, "n2")
	cfg.HandshakeTimeout = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Dial(ctx, ln.Addr().String(), ServiceRaft, cfg, "")
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Dial error %v, want context.Canceled", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Dial ignored the cancelled context")
	}
}

func TestHandshakeFailureLogRateLimited(t *testing.T) {
	var logs syncbuf.Buffer
	cfg := testConfig(t, "n1")
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := startMux(t, cfg, []Service{ServiceRaft}, nil)
	bad := testConfig(t, "intruder")
	bad.Secret = []byte("another-secret-of-enough-length")
	for range 3 {
		if _, err := Dial(context.Background(), srv.addr(), ServiceRaft, bad, ""); !errors.Is(err, wire.ErrAuthFailed) {
			t.Fatalf("Dial error %v, want %v", err, wire.ErrAuthFailed)
		}
		srv.nextDrop(t)
	}
	out := logs.String()
	if n := strings.Count(out, "handshake failed"); n != 1 {
		t.Fatalf("%d handshake failure records from one IP, want 1:\n%s", n, out)
	}
	for _, want := range []string{"level=INFO", "remote=127.0.0.1:", "authentication failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

// TestMuxAcceptRetriesTemporaryErrors gives the Mux's TCP listener the
// errors of a node out of descriptors, buffers or memory, an aborted
// connection and a timeout: it backs off, retries, logs the failures in
// fewer lines than there were failures, and then serves a client.
func TestMuxAcceptRetriesTemporaryErrors(t *testing.T) {
	errs := []error{
		flakynet.AcceptError(syscall.EMFILE), flakynet.AcceptError(syscall.ECONNABORTED),
		flakynet.AcceptError(syscall.ENFILE), flakynet.AcceptError(syscall.ENOBUFS),
		flakynet.AcceptError(syscall.ENOMEM), flakynet.AcceptError(syscall.EMFILE),
		&net.OpError{Op: "accept", Net: "tcp", Err: os.ErrDeadlineExceeded},
	}
	var logs syncbuf.Buffer
	cfg := testConfig(t, "n1")
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := flakynet.New(ln, errs...)
	srv := startMuxOn(t, fl, cfg, []Service{ServiceControl}, nil)
	cli := dial(t, srv.addr(), ServiceControl, testConfig(t, "n2"), "n1")
	exchange(t, cli, acceptOne(t, srv.lns[ServiceControl]))
	if got := fl.Failed(); got != int64(len(errs)) {
		t.Errorf("the listener returned %d of its %d errors", got, len(errs))
	}
	out := logs.String()
	if n := strings.Count(out, "accept failed"); n == 0 || n >= len(errs) {
		t.Errorf("%d log lines about %d accept failures, want at least one and fewer than the failures:\n%s", n, len(errs), out)
	}
	if !strings.Contains(out, "too many open files") {
		t.Errorf("the log does not name the first error (EMFILE):\n%s", out)
	}
}

// TestMuxPermanentAcceptError: an Accept error that is not temporary ends
// Serve with an error naming the address and the cause.
func TestMuxPermanentAcceptError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMux(flakynet.New(ln, flakynet.AcceptError(syscall.EINVAL)), testConfig(t, "n1"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Serve(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), ln.Addr().String()) {
			t.Fatalf("Serve returned %v, want EINVAL naming %s", err, ln.Addr())
		}
	case <-time.After(waitFor):
		t.Fatal("Serve kept going after a permanent accept error")
	}
}
