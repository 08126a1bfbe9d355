package rpc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// Errors a Handler returns to choose the reply. Any other non-nil error is
// answered SYSTEM_ERR and logged.
var (
	// ErrProcUnavail answers PROC_UNAVAIL: the program has no such procedure.
	ErrProcUnavail = errors.New("rpc: procedure unavailable")
	// ErrGarbageArgs answers GARBAGE_ARGS: the arguments do not decode.
	ErrGarbageArgs = errors.New("rpc: garbage arguments")
	// ErrSystemErr answers SYSTEM_ERR without a log line.
	ErrSystemErr = errors.New("rpc: system error")
	// ErrAuthTooWeak answers MSG_DENIED AUTH_ERROR AUTH_TOOWEAK: the program
	// refuses the call's credential flavor (e.g. AUTH_NONE where AUTH_SYS is
	// required).
	ErrAuthTooWeak = errors.New("rpc: credential too weak")
)

// Handler serves the calls of one program version.
//
// ServeRPC decodes the procedure's arguments from call.Args and appends the
// results to reply, which already holds the accepted reply header; it returns
// nil for SUCCESS, or one of ErrProcUnavail, ErrGarbageArgs, ErrSystemErr,
// ErrAuthTooWeak (possibly wrapped) to answer that instead — whatever it
// appended is then discarded. call and its Args are valid only until ServeRPC
// returns. ctx ends when the connection or the server stops. ServeRPC is
// called concurrently.
type Handler interface {
	ServeRPC(ctx context.Context, call *Call, reply *xdr.Encoder) error
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, call *Call, reply *xdr.Encoder) error

// ServeRPC calls f.
func (f HandlerFunc) ServeRPC(ctx context.Context, call *Call, reply *xdr.Encoder) error {
	return f(ctx, call, reply)
}

// Defaults of Config.
const (
	DefaultMaxRecordSize      = 1<<20 + 64<<10 // a 1 MiB WRITE and its header
	DefaultMaxCallsPerConn    = 64
	DefaultMaxCalls           = 1024
	DefaultIdleTimeout        = 5 * time.Minute
	defaultWriteTimeout       = 30 * time.Second
	pooledBufferMaxCap        = DefaultMaxRecordSize + 4096
	initialReplyBufferCap     = 512
	initialRecordBufferCapMax = 64 << 10
)

// Config tunes a Server; zero fields take the defaults.
type Config struct {
	// MaxRecordSize is the largest call record accepted; a connection sending
	// a larger one is closed (with a log line).
	MaxRecordSize int
	// MaxCallsPerConn bounds the calls served at once on one connection; when
	// reached, the connection is not read until one finishes.
	MaxCallsPerConn int
	// MaxCalls bounds the calls served at once over all connections.
	MaxCalls int
	// IdleTimeout closes a connection that sends nothing and has no call in
	// progress for this long; it also bounds the time to receive one record.
	IdleTimeout time.Duration
	// ReplyCacheEntries bounds the duplicate request cache (see
	// ReplyCacher); 0 means DefaultReplyCacheEntries.
	ReplyCacheEntries int
	// Logger receives connection-level events; nil means slog.Default().
	Logger *slog.Logger
}

type progVers struct{ prog, vers uint32 }

// Server serves ONC RPC v2 (RFC 5531) calls over TCP with record marking.
// Register programs, then call Serve.
type Server struct {
	cfg   Config
	log   *slog.Logger
	calls chan struct{} // semaphore over all connections

	mu       sync.RWMutex
	handlers map[progVers]Handler
	versions map[uint32][2]uint32 // prog -> lowest, highest registered version

	bufs  sync.Pool // *[]byte
	state sync.Pool // *callState

	replies *replyCache
}

// callState is what one call in progress needs, pooled so that serving a
// call allocates nothing in the common case.
type callState struct {
	call Call
	enc  xdr.Encoder
}

// NewServer returns a Server configured by cfg.
func NewServer(cfg Config) *Server {
	if cfg.MaxRecordSize <= 0 {
		cfg.MaxRecordSize = DefaultMaxRecordSize
	}
	if cfg.MaxCallsPerConn <= 0 {
		cfg.MaxCallsPerConn = DefaultMaxCallsPerConn
	}
	if cfg.MaxCalls <= 0 {
		cfg.MaxCalls = DefaultMaxCalls
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.ReplyCacheEntries <= 0 {
		cfg.ReplyCacheEntries = DefaultReplyCacheEntries
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Server{
		cfg:      cfg,
		log:      log,
		calls:    make(chan struct{}, cfg.MaxCalls),
		handlers: make(map[progVers]Handler),
		versions: make(map[uint32][2]uint32),
		replies:  newReplyCache(cfg.ReplyCacheEntries),
	}
}

// Register makes h serve version vers of program prog, replacing any handler
// registered for them. It may be called while serving.
func (s *Server) Register(prog, vers uint32, h Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handlers[progVers{prog, vers}] = h
	r, ok := s.versions[prog]
	if !ok {
		r = [2]uint32{vers, vers}
	}
	r[0], r[1] = min(r[0], vers), max(r[1], vers)
	s.versions[prog] = r
}

// lookup finds the handler of prog/vers; without one it says which
// accept_stat to answer and, for PROG_MISMATCH, the registered range.
func (s *Server) lookup(prog, vers uint32) (Handler, AcceptStat, uint32, uint32) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if h, ok := s.handlers[progVers{prog, vers}]; ok {
		return h, Success, 0, 0
	}
	if r, ok := s.versions[prog]; ok {
		return nil, ProgMismatch, r[0], r[1]
	}
	return nil, ProgUnavail, 0, 0
}

func (s *Server) getBuf(hint int) *[]byte {
	if p, ok := s.bufs.Get().(*[]byte); ok {
		return p
	}
	b := make([]byte, 0, hint)
	return &b
}

func (s *Server) putBuf(p *[]byte) {
	if cap(*p) > pooledBufferMaxCap {
		return
	}
	*p = (*p)[:0]
	s.bufs.Put(p)
}

// Serve accepts connections on ln and serves them until ctx ends; it then
// closes ln and every connection, waits for all its goroutines (handlers
// included) to stop, and returns nil. An accept error other than the one
// caused by closing ln is returned after the same cleanup.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := &workers{tasks: make(chan func()), maxIdle: maxIdleWorkers, done: ctx.Done()}
	defer work.wg.Wait()
	var wg sync.WaitGroup
	wg.Go(func() {
		<-ctx.Done()
		ln.Close()
	})
	var err error
	for {
		conn, aerr := ln.Accept()
		if aerr != nil {
			if ctx.Err() == nil {
				var ne net.Error
				if errors.As(aerr, &ne) && ne.Timeout() {
					continue
				}
				err = fmt.Errorf("rpc: accept on %s: %w", ln.Addr(), aerr)
			}
			break
		}
		wg.Go(func() { s.serveConn(ctx, conn, work) })
	}
	cancel()
	wg.Wait()
	return err
}

// conn is the state of one connection.
type conn struct {
	s      *Server
	c      net.Conn
	local  net.Addr
	remote net.Addr
	ctx    context.Context // ends when the connection closes

	handlers sync.WaitGroup // calls in progress
	log      *slog.Logger
	slots    chan struct{} // per-connection semaphore
	replies  chan *[]byte  // whole records (marker included) for the writer
	work     *workers      // the goroutines that run the calls
}

func (s *Server) serveConn(ctx context.Context, nc net.Conn, work *workers) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	c := &conn{
		s:       s,
		c:       nc,
		ctx:     ctx,
		local:   nc.LocalAddr(),
		remote:  nc.RemoteAddr(),
		log:     s.log.With("remote", nc.RemoteAddr().String()),
		work:    work,
		slots:   make(chan struct{}, s.cfg.MaxCallsPerConn),
		replies: make(chan *[]byte, s.cfg.MaxCallsPerConn),
	}
	var writer sync.WaitGroup
	writer.Go(func() { c.write(cancel) })
	c.read(ctx)
	c.handlers.Wait()
	close(c.replies)
	writer.Wait()
	nc.Close()
}

// read is the connection's only reader: it reads records, decodes their
// headers and starts a goroutine per call, blocking while the bounds are
// reached. It returns when the connection fails or ctx ends.
func (c *conn) read(ctx context.Context) {
	s := c.s
	br := bufio.NewReaderSize(c.c, 64<<10)
	for {
		// Wait for the next record; only an idle connection times out.
		for {
			c.c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
			if _, err := br.Peek(1); err == nil {
				break
			} else if errors.Is(err, os.ErrDeadlineExceeded) && len(c.slots) > 0 && ctx.Err() == nil {
				continue // calls in progress: not idle
			} else {
				c.readFailed(ctx, err)
				return
			}
		}
		select {
		case c.slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		select {
		case s.calls <- struct{}{}:
		case <-ctx.Done():
			<-c.slots
			return
		}
		c.c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		rb := s.getBuf(initialRecordBufferCapMax)
		rec, err := ReadRecord(br, *rb, s.cfg.MaxRecordSize)
		*rb = rec
		if err != nil {
			c.release(rb)
			if errors.Is(err, ErrRecordTooLarge) {
				c.log.Warn("rpc: closing connection: record too large", "err", err, "max", s.cfg.MaxRecordSize)
			} else {
				c.readFailed(ctx, err)
			}
			return
		}
		c.handlers.Add(1)
		c.work.run(func() { c.serveCall(rb) })
	}
}

func (c *conn) readFailed(ctx context.Context, err error) {
	switch {
	case ctx.Err() != nil, errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.log.Debug("rpc: closing idle connection", "idle", c.s.cfg.IdleTimeout)
	default:
		c.log.Info("rpc: closing connection", "err", err)
	}
}

// release frees a call's record buffer and its slots.
func (c *conn) release(rb *[]byte) {
	c.s.putBuf(rb)
	<-c.s.calls
	<-c.slots
}

// serveCall answers one record and hands the reply to the writer.
func (c *conn) serveCall(rb *[]byte) {
	defer c.handlers.Done()
	ctx := c.ctx
	defer c.release(rb)
	st, ok := c.s.state.Get().(*callState)
	if !ok {
		st = new(callState)
	}
	defer c.s.state.Put(st)
	out := c.s.getBuf(initialReplyBufferCap)
	st.enc.Reset(AppendRecordMark((*out)[:0]))
	st.call = Call{Local: c.local, Remote: c.remote}
	sent := c.answer(ctx, *rb, &st.call, &st.enc)
	*out = st.enc.Bytes()
	st.enc.Reset(nil)
	st.call = Call{}
	if !sent {
		c.s.putBuf(out)
		return
	}
	SetRecordMark(*out)
	c.replies <- out
}

// answer decodes the call in rec into call and appends the reply body to e;
// false means there is nothing to send.
func (c *conn) answer(ctx context.Context, rec []byte, call *Call, e *xdr.Encoder) bool {
	verdict, authStat, err := parseCall(rec, call)
	switch verdict {
	case verdictDrop:
		c.log.Debug("rpc: dropping record", "err", err, "len", len(rec))
		return false
	case verdictMismatch:
		appendRPCMismatch(e, call.XID)
		return true
	case verdictAuth:
		c.log.Debug("rpc: refusing credential", "xid", call.XID, "err", err)
		appendAuthError(e, call.XID, authStat)
		return true
	}
	h, stat, low, high := c.s.lookup(call.Prog, call.Vers)
	switch stat {
	case ProgUnavail:
		appendAccepted(e, call.XID, ProgUnavail)
		return true
	case ProgMismatch:
		appendProgMismatch(e, call.XID, low, high)
		return true
	}
	start := e.Len()
	if rc, ok := h.(ReplyCacher); ok && rc.CacheReply(call.Proc) {
		if k, ok := keyOf(call.Remote, call, call.Args.Rest()); ok {
			reply, found, busy := c.s.replies.begin(k)
			switch {
			case busy:
				c.log.Debug("rpc: dropping a retransmission of a call in progress", "xid", call.XID, "proc", call.Proc)
				return false
			case found:
				c.log.Debug("rpc: answering a retransmission from the reply cache", "xid", call.XID, "proc", call.Proc)
				e.FixedOpaque(reply)
				return true
			}
			c.serve(ctx, h, call, e, start)
			c.s.replies.finish(k, e.Bytes()[start:])
			return true
		}
	}
	c.serve(ctx, h, call, e, start)
	return true
}

// serve runs the handler and appends its reply, from offset start of e.
func (c *conn) serve(ctx context.Context, h Handler, call *Call, e *xdr.Encoder, start int) {
	appendAccepted(e, call.XID, Success)
	err := c.callHandler(ctx, h, call, e)
	if err == nil {
		return
	}
	e.Truncate(start)
	switch {
	case errors.Is(err, ErrProcUnavail):
		appendAccepted(e, call.XID, ProcUnavail)
	case errors.Is(err, ErrGarbageArgs):
		appendAccepted(e, call.XID, GarbageArgs)
	case errors.Is(err, ErrAuthTooWeak):
		appendAuthError(e, call.XID, AuthTooWeak)
	default:
		if !errors.Is(err, ErrSystemErr) {
			c.log.Warn("rpc: handler failed", "prog", call.Prog, "vers", call.Vers, "proc", call.Proc, "xid", call.XID, "err", err)
		}
		appendAccepted(e, call.XID, SystemErr)
	}
}

// callHandler runs h, turning a panic into SYSTEM_ERR so that one bad call
// does not bring down the server.
func (c *conn) callHandler(ctx context.Context, h Handler, call *Call, e *xdr.Encoder) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("rpc: handler panicked: %v", r)
		}
	}()
	return h.ServeRPC(ctx, call, e)
}

// write is the connection's only writer: it writes whole reply records in the
// order calls complete, several at once when they queue up. After a write
// error it closes the connection (cancel) and discards the rest.
func (c *conn) write(cancel context.CancelFunc) {
	var batch net.Buffers
	var held []*[]byte
	failed := false
	for out := range c.replies {
		held = append(held[:0], out)
		if len(c.replies) == 0 && len(c.slots) > 1 {
			// Other calls are running: let them finish first, so that
			// their replies go out in the same write (a write per reply
			// was a third of the NFS server's CPU with 8 calls in flight).
			runtime.Gosched()
		}
	more:
		for len(held) < 64 {
			select {
			case o, ok := <-c.replies:
				if !ok {
					break more
				}
				held = append(held, o)
			default:
				break more
			}
		}
		if !failed {
			batch = batch[:0]
			for _, o := range held {
				batch = append(batch, *o)
			}
			c.c.SetWriteDeadline(time.Now().Add(defaultWriteTimeout))
			b := batch // WriteTo consumes its receiver; keep batch's capacity
			if _, err := b.WriteTo(c.c); err != nil {
				failed = true
				c.log.Info("rpc: closing connection: write failed", "err", err)
				cancel()
			}
		}
		for _, o := range held {
			c.s.putBuf(o)
		}
	}
}
