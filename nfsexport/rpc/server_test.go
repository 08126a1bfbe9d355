package rpc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	nfsrpc "github.com/willscott/go-nfs-client/nfs/rpc"
	nfsxdr "github.com/willscott/go-nfs-client/nfs/xdr"

	"github.com/blockrep/blockrep/internal/gonfsdial"
	"github.com/blockrep/blockrep/internal/syncbuf"
	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// testProg is the program number the tests register (in the transient range).
const testProg = 0x40000001

// failBound bounds every wait in these tests so that a broken server fails a
// test instead of hanging it. It is not a performance threshold.
const failBound = 20 * time.Second

// startServer runs a Server on a loopback port until the test ends, and
// checks that Serve returns nil once its context is cancelled.
func startServer(t testing.TB, cfg Config, register func(s *Server)) (string, *syncbuf.Buffer) {
	t.Helper()
	logs := &syncbuf.Buffer{}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s := NewServer(cfg)
	register(s)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve returned %v", err)
			}
		case <-time.After(failBound):
			t.Errorf("Serve did not return after cancel")
		}
	})
	return ln.Addr().String(), logs
}

// rawClient writes and reads records on one connection.
type rawClient struct {
	t testing.TB
	c net.Conn
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(failBound))
	return &rawClient{t: t, c: c}
}

func (r *rawClient) send(b []byte) {
	r.t.Helper()
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawClient) recv() []byte {
	r.t.Helper()
	rec, err := ReadRecord(r.c, nil, 1<<20)
	if err != nil {
		r.t.Fatalf("reading reply: %v", err)
	}
	return rec
}

// echoHandler answers proc 0 with nothing, proc 1 with its uint32 argument,
// proc 2 with the caller's uid and gid, proc 3 with an AUTH_NONE refusal,
// proc 4 by failing, proc 5 by panicking; others are unavailable.
var echoHandler = HandlerFunc(func(ctx context.Context, call *Call, reply *xdr.Encoder) error {
	switch call.Proc {
	case 0:
		return nil
	case 1:
		v, err := call.Args.Uint32("value")
		if err != nil {
			return errors.Join(ErrGarbageArgs, err)
		}
		reply.Uint32(v)
		return nil
	case 2:
		if call.Cred.Flavor != AuthSys {
			return ErrAuthTooWeak
		}
		reply.Uint32(call.Cred.Sys.UID)
		reply.Uint32(call.Cred.Sys.GID)
		reply.String(call.Cred.Sys.MachineName)
		return nil
	case 3:
		return ErrAuthTooWeak
	case 4:
		return errors.New("disk on fire")
	case 5:
		panic("handler bug")
	}
	return ErrProcUnavail
})

// TestServerWire pins each reply on the wire, number by number, through a
// real TCP connection.
func TestServerWire(t *testing.T) {
	addr, logs := startServer(t, Config{}, func(s *Server) {
		s.Register(testProg, 2, echoHandler)
		s.Register(testProg, 4, echoHandler)
	})
	c := dialRaw(t, addr)
	acc := func(xid, stat uint32, extra ...uint32) []byte {
		return words(append([]uint32{xid, 1, 0, 0, 0, stat}, extra...)...)
	}
	withArgs := func(s callSpec, a []byte) callSpec { s.args = a; return s }
	cases := []struct {
		name string
		call callSpec
		want []byte
	}{
		{"SUCCESS", defaultCall(1, testProg, 2, 0), acc(1, 0)},
		{"SUCCESS with result", withArgs(defaultCall(2, testProg, 4, 1), words(77)), acc(2, 0, 77)},
		{"PROG_UNAVAIL", defaultCall(3, testProg+1, 2, 0), acc(3, 1)},
		{"PROG_MISMATCH low/high", defaultCall(4, testProg, 3, 0), acc(4, 2, 2, 4)},
		{"PROC_UNAVAIL", defaultCall(5, testProg, 2, 99), acc(5, 3)},
		{"GARBAGE_ARGS", defaultCall(6, testProg, 2, 1), acc(6, 4)},
		{"SYSTEM_ERR", defaultCall(7, testProg, 2, 4), acc(7, 5)},
		{"SYSTEM_ERR on panic", defaultCall(8, testProg, 2, 5), acc(8, 5)},
		{"RPC_MISMATCH", func() callSpec { s := defaultCall(9, testProg, 2, 0); s.rpcvers = 3; return s }(), words(9, 1, 1, 0, 2, 2)},
		{"AUTH_BADCRED flavor", func() callSpec { s := defaultCall(10, testProg, 2, 0); s.credFlavor = 6; return s }(), words(10, 1, 1, 1, 1)},
		{"AUTH_BADCRED auth_sys", func() callSpec {
			s := defaultCall(11, testProg, 2, 0)
			s.credFlavor, s.credBody = AuthSys, sysCredBody(1, "h", 0, 0, make([]uint32, 17)...)
			return s
		}(), words(11, 1, 1, 1, 1)},
		{"AUTH_TOOWEAK", defaultCall(12, testProg, 2, 3), words(12, 1, 1, 1, 5)},
		{"AUTH_SYS creds", func() callSpec {
			s := defaultCall(13, testProg, 2, 2)
			s.credFlavor, s.credBody = AuthSys, sysCredBody(5, "web1", 1000, 33, 4)
			return s
		}(), append(acc(13, 0, 1000, 33, 4), "web1"...)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.send(tc.call.record())
			if got := c.recv(); !bytes.Equal(got, tc.want) {
				t.Fatalf("reply % x\nwant  % x", got, tc.want)
			}
		})
	}
	if !bytes.Contains([]byte(logs.String()), []byte("disk on fire")) {
		t.Errorf("handler failure not logged; logs:\n%s", logs)
	}
}

// TestServerMultiFragmentCall sends one call split over fragments, with
// zero-length ones among them.
func TestServerMultiFragmentCall(t *testing.T) {
	addr, _ := startServer(t, Config{}, func(s *Server) { s.Register(testProg, 1, echoHandler) })
	c := dialRaw(t, addr)
	body := withArgs(defaultCall(21, testProg, 1, 1), words(0xcafe)).encode()
	c.send(cat(frag(false, body[:3]), frag(false, nil), frag(false, body[3:30]), frag(true, body[30:])))
	want := words(21, 1, 0, 0, 0, 0, 0xcafe)
	if got := c.recv(); !bytes.Equal(got, want) {
		t.Fatalf("reply % x, want % x", got, want)
	}
}

func withArgs(s callSpec, a []byte) callSpec { s.args = a; return s }

// TestServerOversizedRecord checks that a record over the maximum closes that
// connection with a log line, and that other connections keep being served.
func TestServerOversizedRecord(t *testing.T) {
	addr, logs := startServer(t, Config{MaxRecordSize: 256}, func(s *Server) { s.Register(testProg, 1, echoHandler) })
	bad := dialRaw(t, addr)
	good := dialRaw(t, addr)
	bad.send(cat(frag(false, make([]byte, 200)), frag(true, make([]byte, 100))))
	if _, err := ReadRecord(bad.c, nil, 1<<20); !errors.Is(err, io.EOF) {
		t.Fatalf("oversized record: read %v, want the connection closed (EOF)", err)
	}
	if !bytes.Contains([]byte(logs.String()), []byte("record too large")) {
		t.Fatalf("no log line for the oversized record; logs:\n%s", logs)
	}
	good.send(defaultCall(1, testProg, 1, 0).record())
	if got, want := good.recv(), words(1, 1, 0, 0, 0, 0); !bytes.Equal(got, want) {
		t.Fatalf("other connection: reply % x, want % x", got, want)
	}
}

// blockingHandler lets the test see which calls are running and decide when
// each one finishes: proc 1 takes a uint32 key, reports it on started, waits
// for release[key] and answers the key.
type blockingHandler struct {
	started chan uint32
	release []chan struct{}
	running atomic.Int32
	peak    atomic.Int32
}

func newBlockingHandler(n int) *blockingHandler {
	h := &blockingHandler{started: make(chan uint32, n)}
	for range n {
		h.release = append(h.release, make(chan struct{}))
	}
	return h
}

func (h *blockingHandler) ServeRPC(ctx context.Context, call *Call, reply *xdr.Encoder) error {
	key, err := call.Args.Uint32("key")
	if err != nil || int(key) >= len(h.release) {
		return ErrGarbageArgs
	}
	n := h.running.Add(1)
	defer h.running.Add(-1)
	for {
		p := h.peak.Load()
		if n <= p || h.peak.CompareAndSwap(p, n) {
			break
		}
	}
	h.started <- key
	select {
	case <-h.release[key]:
	case <-ctx.Done():
		return ctx.Err()
	}
	reply.Uint32(key)
	return nil
}

func (h *blockingHandler) waitStarted(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		select {
		case <-h.started:
		case <-time.After(failBound):
			t.Fatalf("only %d of %d calls running at once (running now: %d)", i, n, h.running.Load())
		}
	}
}

// TestServerConcurrentOutOfOrder sends 5 calls on one connection whose
// handlers block: all 5 must be running at once, and when released in
// reverse order the replies must come back in reverse order.
func TestServerConcurrentOutOfOrder(t *testing.T) {
	const n = 5
	h := newBlockingHandler(n)
	addr, _ := startServer(t, Config{}, func(s *Server) { s.Register(testProg, 1, h) })
	c := dialRaw(t, addr)
	for i := range n {
		c.send(withArgs(defaultCall(uint32(100+i), testProg, 1, 1), words(uint32(i))).record())
	}
	h.waitStarted(t, n)
	var order []uint32
	for i := n - 1; i >= 0; i-- {
		close(h.release[i])
		rep := c.recv()
		order = append(order, binary.BigEndian.Uint32(rep))
	}
	if want := []uint32{104, 103, 102, 101, 100}; !slices.Equal(order, want) {
		t.Fatalf("reply xids %v, want %v (completion order)", order, want)
	}
}

// TestServerBounds checks that no more calls run at once than the
// per-connection bound, and that the overall bound holds across connections.
func TestServerBounds(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		conns int
	}{
		{"per connection", Config{MaxCallsPerConn: 2}, 1},
		{"overall", Config{MaxCallsPerConn: 8, MaxCalls: 2}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 6
			h := newBlockingHandler(n)
			addr, _ := startServer(t, tc.cfg, func(s *Server) { s.Register(testProg, 1, h) })
			var clients []*rawClient
			for range tc.conns {
				clients = append(clients, dialRaw(t, addr))
			}
			for i := range n {
				clients[i%tc.conns].send(withArgs(defaultCall(uint32(i), testProg, 1, 1), words(uint32(i))).record())
			}
			// Release a call only when the bound is reached, so that a
			// server without the bound would run more at once.
			var pending []uint32
			for got := 0; got < n; {
				select {
				case k := <-h.started:
					got++
					pending = append(pending, k)
				case <-time.After(failBound):
					t.Fatalf("%d of %d calls started", got, n)
				}
				if len(pending) == 2 {
					// The bound is reached: give a server without it a
					// moment to start more (this can only hide a failure,
					// never cause one).
					time.Sleep(20 * time.Millisecond)
				}
				if len(pending) == 2 || got == n {
					close(h.release[pending[0]])
					pending = pending[1:]
				}
			}
			for _, k := range pending {
				close(h.release[k])
			}
			for i := range n {
				clients[i%tc.conns].recv()
			}
			if p := h.peak.Load(); p != 2 {
				t.Fatalf("peak of %d calls at once, want the bound 2", p)
			}
		})
	}
}

// TestServerGoNFSClient uses go-nfs-client's rpc package as an independent
// client: AUTH_SYS credentials arrive decoded, results decode, and 5
// concurrent calls on its one connection all run at once.
func TestServerGoNFSClient(t *testing.T) {
	const n = 5
	h := newBlockingHandler(n)
	addr, _ := startServer(t, Config{}, func(s *Server) {
		s.Register(testProg, 1, echoHandler)
		s.Register(testProg, 2, h)
	})
	cl := gonfsdial.Dial(t, addr)
	auth := nfsrpc.NewAuthUnix("client7", 1234, 56).Auth()
	type credCall struct {
		nfsrpc.Header
	}
	res, err := cl.Call(&credCall{nfsrpc.Header{Rpcvers: 2, Prog: testProg, Vers: 1, Proc: 2, Cred: auth, Verf: nfsrpc.AuthNull}})
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := nfsxdr.ReadUint32(res)
	gid, _ := nfsxdr.ReadUint32(res)
	name, err := nfsxdr.ReadOpaque(res)
	if err != nil || uid != 1234 || gid != 56 || string(name) != "client7" {
		t.Fatalf("creds seen by handler: uid %d gid %d name %q (%v)", uid, gid, name, err)
	}

	type keyCall struct {
		nfsrpc.Header
		Key uint32
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			res, err := cl.Call(&keyCall{nfsrpc.Header{Rpcvers: 2, Prog: testProg, Vers: 2, Proc: 1, Cred: auth, Verf: nfsrpc.AuthNull}, uint32(i)})
			if err != nil {
				errs <- err
				return
			}
			if k, err := nfsxdr.ReadUint32(res); err != nil || k != uint32(i) {
				errs <- errors.Join(err, errors.New("wrong key in reply"))
			}
		})
	}
	h.waitStarted(t, n)
	for i := range n {
		close(h.release[i])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestServerIdle checks that an idle connection is closed, and that one whose
// call runs longer than the idle timeout is not.
func TestServerIdle(t *testing.T) {
	h := newBlockingHandler(1)
	addr, _ := startServer(t, Config{IdleTimeout: 50 * time.Millisecond}, func(s *Server) { s.Register(testProg, 1, h) })
	idle := dialRaw(t, addr)
	if _, err := ReadRecord(idle.c, nil, 1<<20); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection: read %v, want EOF", err)
	}
	busy := dialRaw(t, addr)
	busy.send(withArgs(defaultCall(1, testProg, 1, 1), words(0)).record())
	h.waitStarted(t, 1)
	// Let several idle timeouts pass with the call in progress: observe a
	// second idle connection being closed meanwhile.
	other := dialRaw(t, addr)
	if _, err := ReadRecord(other.c, nil, 1<<20); !errors.Is(err, io.EOF) {
		t.Fatalf("second idle connection: read %v, want EOF", err)
	}
	// The busy connection still reads new calls.
	busy.send(withArgs(defaultCall(2, testProg, 2, 0), nil).record())
	if got, want := busy.recv(), words(2, 1, 0, 0, 0, 2, 1, 1); !bytes.Equal(got, want) {
		t.Fatalf("busy connection, second call: reply % x, want % x", got, want)
	}
	close(h.release[0])
	if got, want := busy.recv(), words(1, 1, 0, 0, 0, 0, 0); !bytes.Equal(got, want) {
		t.Fatalf("busy connection reply % x, want % x", got, want)
	}
}

// TestServeCancelStopsHandlers checks that cancelling Serve's context ends
// a running handler's context and that Serve waits for it.
func TestServeCancelStopsHandlers(t *testing.T) {
	var ended atomic.Bool
	started := make(chan struct{})
	s := NewServer(Config{Logger: slog.New(slog.DiscardHandler)})
	s.Register(testProg, 1, HandlerFunc(func(ctx context.Context, call *Call, reply *xdr.Encoder) error {
		close(started)
		<-ctx.Done()
		time.Sleep(10 * time.Millisecond) // Serve must wait for this
		ended.Store(true)
		return ctx.Err()
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	c := dialRaw(t, ln.Addr().String())
	c.send(defaultCall(1, testProg, 1, 0).record())
	select {
	case <-started:
	case <-time.After(failBound):
		t.Fatal("handler not started")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(failBound):
		t.Fatal("Serve did not return")
	}
	if !ended.Load() {
		t.Fatal("Serve returned before the handler finished")
	}
}
