// Package nbd implements the server side of the Network Block Device
// protocol (fixed newstyle handshake, structured replies, TLS) over any
// block.Device.
package nbd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockrep/blockrep/block"
	"github.com/blockrep/blockrep/internal/bufpool"
)

// Export is one named device offered to clients.
type Export struct {
	// Name is what clients ask for. The server's DefaultExport answers the
	// empty name.
	Name string
	// Description is sent to clients that ask for NBD_INFO_DESCRIPTION.
	Description string
	// Device serves the requests.
	Device block.Device
	// ReadOnly refuses writes with EPERM and advertises NBD_FLAG_READ_ONLY.
	ReadOnly bool
	// RequireTLS refuses the export to clients that have not done STARTTLS.
	RequireTLS bool
	// MinBlockSize, PreferredBlockSize and MaxBlockSize are advertised with
	// NBD_INFO_BLOCK_SIZE. Clients that asked for them must respect them;
	// zero selects 1, 4096 and 32 MiB.
	MinBlockSize, PreferredBlockSize, MaxBlockSize uint32
	// MultiConn advertises NBD_FLAG_CAN_MULTI_CONN. Set it only when a FLUSH
	// on one connection persists writes completed on every connection, as
	// fdatasync on a shared file does.
	MultiConn bool
	// InlineMax is the largest request served directly by the connection's
	// reader; larger ones go to a worker so that the reader keeps pulling
	// requests. Zero sends every request to a worker: right for devices whose
	// operations wait on something slow (a network peer).
	InlineMax int
	// Access, when set, is asked each time a client selects the export:
	// an error refuses it (the message reaches the client), readOnly serves
	// it read-only to that client. A replicated volume uses it to follow
	// its role: a secondary's export is read-only or refused.
	Access func() (readOnly bool, err error)
}

// Config configures a Server.
type Config struct {
	// TLS enables NBD_OPT_STARTTLS. Nil refuses it.
	TLS *tls.Config
	// DefaultExport is served to clients that ask for the empty name.
	DefaultExport string
	// MaxInFlightBytes bounds the request buffers held by all connections at
	// once. Zero selects 256 MiB.
	MaxInFlightBytes int64
	// MaxConnections bounds the connections open at once (each holds about
	// 1 MiB of buffers); one more is closed at once. Zero selects 256.
	MaxConnections int
	// MaxInFlightPerClient bounds the request buffers one connection holds,
	// so that one client, or a few, cannot take the whole MaxInFlightBytes.
	// Zero selects a quarter of MaxInFlightBytes; it is raised to one
	// maximal request (32 MiB) and lowered to what large requests may use
	// (see Server).
	MaxInFlightPerClient int64
	// ReplyTimeout evicts a connection whose client takes less than 1 MiB
	// (fdconn.MinProgress) of its replies in this long, noticed within
	// twice this: a client that stops reading would otherwise keep its
	// request buffers forever. Zero selects 30 s; negative waits forever.
	ReplyTimeout time.Duration
	// HandshakeTimeout bounds the option phase of a connection. Zero
	// selects 10 s.
	HandshakeTimeout time.Duration
	// HandshakesPerAddress bounds the connections from one source address
	// that are still in the handshake; one more is closed at once, so that
	// one host cannot hold every MaxConnections slot with connections that
	// never finish. Zero selects 16; negative removes the bound.
	HandshakesPerAddress int
	// LogInterval is the period of the rate-limited log lines (failed
	// handshakes, refused connections, I/O errors): the first few of each
	// period are logged, the rest are counted in one summary line. Zero
	// selects 10 s.
	LogInterval time.Duration
	// Logger receives connection events. Nil discards them.
	Logger *slog.Logger
}

// ClientInfo describes one connected client, for status displays.
type ClientInfo struct {
	ID           uint64    `json:"id"`
	Remote       string    `json:"remote"`
	Export       string    `json:"export"`
	TLS          bool      `json:"tls"`
	Since        time.Time `json:"since"`
	Reads        uint64    `json:"reads"`
	Writes       uint64    `json:"writes"`
	BytesRead    uint64    `json:"bytes_read"`
	BytesWritten uint64    `json:"bytes_written"`
	Flushes      uint64    `json:"flushes"`
	Errors       uint64    `json:"errors"`
}

// Defaults of Config.
const (
	defaultReplyTimeout         = 30 * time.Second
	defaultHandshakeTimeout     = 10 * time.Second
	defaultHandshakesPerAddress = 16
	defaultLogInterval          = 10 * time.Second
)

// Lines logged per LogInterval before the rest are only counted.
const (
	handshakeLogBurst = 5
	refusedLogBurst   = 5
	evictLogBurst     = 10
	ioLogBurst        = 10
)

// Server serves exports over NBD. Create it with NewServer.
type Server struct {
	cfg    Config
	log    *slog.Logger
	budget *budget
	pool   bufpool.Pool
	// ctx is cancelled when Shutdown gives up waiting: blocked work stops.
	ctx    context.Context
	cancel context.CancelFunc
	// stop is closed when Shutdown starts: accept loops stop backing off.
	stop chan struct{}

	// Rate-limited log lines, shared by all connections.
	handshakeLog, refusedLog, evictLog *rateLog

	mu          sync.Mutex
	exports     map[string]*Export
	ioLogs      map[string]*rateLog // I/O error lines, per export name
	listeners   map[net.Listener]struct{}
	conns       map[uint64]*clientConn
	handshaking map[string]int // connections in the handshake, per source address
	nextID      uint64
	closing     bool
	connWG      sync.WaitGroup
	refused     atomic.Uint64 // connections closed for want of a slot
}

// NewServer returns a server with no exports.
func NewServer(cfg Config) *Server {
	if cfg.MaxInFlightBytes <= 0 {
		cfg.MaxInFlightBytes = 256 << 20
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = 256
	}
	if cfg.MaxInFlightBytes < defaultMaxBlk {
		// One maximal request must always fit.
		cfg.MaxInFlightBytes = defaultMaxBlk
	}
	if cfg.ReplyTimeout == 0 {
		cfg.ReplyTimeout = defaultReplyTimeout
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = defaultHandshakeTimeout
	}
	if cfg.HandshakesPerAddress == 0 {
		cfg.HandshakesPerAddress = defaultHandshakesPerAddress
	}
	if cfg.LogInterval <= 0 {
		cfg.LogInterval = defaultLogInterval
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg:          cfg,
		log:          log,
		budget:       newBudget(cfg.MaxInFlightBytes, cfg.MaxInFlightPerClient, defaultMaxBlk),
		ctx:          ctx,
		cancel:       cancel,
		stop:         make(chan struct{}),
		handshakeLog: newRateLog(log, "handshake failures not logged", cfg.LogInterval, handshakeLogBurst),
		refusedLog:   newRateLog(log, "refused connections not logged", cfg.LogInterval, refusedLogBurst),
		evictLog:     newRateLog(log, "evictions not logged", cfg.LogInterval, evictLogBurst),
		exports:      make(map[string]*Export),
		ioLogs:       make(map[string]*rateLog),
		listeners:    make(map[net.Listener]struct{}),
		conns:        make(map[uint64]*clientConn),
		handshaking:  make(map[string]int),
	}
}

// AddExport offers e to clients. Names are unique.
func (s *Server) AddExport(e *Export) error {
	if e == nil || e.Device == nil {
		return errors.New("nbd: export without a device")
	}
	if len(e.Name) > maxStringLen {
		return fmt.Errorf("nbd: export name longer than %d bytes", maxStringLen)
	}
	if e.RequireTLS && s.cfg.TLS == nil {
		return fmt.Errorf("nbd: export %q requires TLS but the server has no TLS configuration", e.Name)
	}
	minBlk, prefBlk, maxBlk := blockSizes(e)
	if minBlk&(minBlk-1) != 0 || prefBlk&(prefBlk-1) != 0 || prefBlk > maxBlk || uint64(e.Device.Size())%uint64(minBlk) != 0 {
		return fmt.Errorf("nbd: export %q: block sizes min %d, preferred %d, max %d do not fit a device of %d bytes", e.Name, minBlk, prefBlk, maxBlk, e.Device.Size())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.exports[e.Name]; dup {
		return fmt.Errorf("nbd: export %q already exists", e.Name)
	}
	s.exports[e.Name] = e
	s.ioLogs[e.Name] = newRateLog(s.log, "I/O errors not logged", s.cfg.LogInterval, ioLogBurst, "export", e.Name)
	return nil
}

// ioLog returns the I/O error log limiter of an export: one per export, so
// that many connections do not multiply its lines.
func (s *Server) ioLog(name string) *rateLog {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ioLogs[name]
}

func (s *Server) lookup(name string) (*Export, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if name == "" {
		name = s.cfg.DefaultExport
	}
	e, ok := s.exports[name]
	return e, ok
}

// resolve looks an export up for a client selecting it and applies its
// Access hook: the result is the export as this client gets it. refused is
// set when Access refused it.
func (s *Server) resolve(name string) (e *Export, ok bool, refused error) {
	e, ok = s.lookup(name)
	if !ok || e.Access == nil {
		return e, ok, nil
	}
	ro, err := e.Access()
	if err != nil {
		return e, true, err
	}
	if ro && !e.ReadOnly {
		c := *e
		c.ReadOnly = true
		e = &c
	}
	return e, true, nil
}

func (s *Server) exportList() []*Export {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := make([]*Export, 0, len(s.exports))
	for _, e := range s.exports {
		list = append(list, e)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	return list
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("nbd: server closed")

// Serve accepts connections on l until Shutdown. Temporary accept errors
// (descriptors or memory exhausted, a connection that died before it was
// accepted) are logged and retried after a growing pause. It returns
// ErrServerClosed after Shutdown and any other accept error.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.isClosing() {
				return ErrServerClosed
			}
			if !temporaryAccept(err) {
				s.log.Error("accept failed; no longer accepting on this listener", "addr", l.Addr().String(), "err", err)
				return err
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", "addr", l.Addr().String(), "err", err, "in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-s.stop:
				t.Stop()
				return ErrServerClosed
			}
			continue
		}
		backoff = 0
		switch res := s.track(c); res {
		case trackClosing:
			_ = c.Close()
			return ErrServerClosed
		case trackFull, trackAddrFull:
			_ = c.Close()
			k := s.refused.Add(1)
			if ok, _ := s.refusedLog.allow(); ok {
				if res == trackFull {
					s.log.Warn("connection refused: too many connections", "remote", c.RemoteAddr().String(), "max_connections", s.cfg.MaxConnections, "refused", k)
				} else {
					s.log.Warn("connection refused: too many unfinished handshakes from its address", "remote", c.RemoteAddr().String(), "handshakes_per_address", s.cfg.HandshakesPerAddress, "refused", k)
				}
			}
		}
	}
}

type trackResult int

const (
	trackOK trackResult = iota
	trackClosing
	trackFull
	trackAddrFull // too many handshakes from the connection's address
)

// track registers c and starts serving it.
func (s *Server) track(c net.Conn) trackResult {
	cc, res := s.register(c)
	if res == trackOK {
		go s.serveTracked(cc)
	}
	return res
}

// ServeConn serves one already accepted connection and returns when it
// ends. It is for callers that accept connections themselves.
func (s *Server) ServeConn(c net.Conn) {
	cc, res := s.register(c)
	if res != trackOK {
		_ = c.Close()
		return
	}
	s.serveTracked(cc)
}

func (s *Server) register(c net.Conn) (*clientConn, trackResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil, trackClosing
	}
	if len(s.conns) >= s.cfg.MaxConnections {
		return nil, trackFull
	}
	host := hostOf(c.RemoteAddr())
	if host != "" && s.cfg.HandshakesPerAddress > 0 && s.handshaking[host] >= s.cfg.HandshakesPerAddress {
		return nil, trackAddrFull
	}
	s.nextID++
	cc := &clientConn{id: s.nextID, raw: c, since: time.Now()}
	if a := c.RemoteAddr(); a != nil && a.String() != "" && a.String() != "@" {
		cc.remote = a.String()
	} else if a := c.LocalAddr(); a != nil {
		cc.remote = a.Network() + ":" + a.String()
	}
	if host != "" {
		cc.host = host
		s.handshaking[host]++
	}
	s.conns[cc.id] = cc
	s.connWG.Add(1)
	return cc, trackOK
}

// hostOf returns the IP address of a TCP peer, "" for other networks (a
// unix socket's clients are local and already trusted by its mode).
func hostOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	return ""
}

// handshakeOver frees cc's place among its address's handshakes.
func (s *Server) handshakeOver(cc *clientConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cc.host == "" {
		return
	}
	if s.handshaking[cc.host]--; s.handshaking[cc.host] <= 0 {
		delete(s.handshaking, cc.host)
	}
	cc.host = ""
}

func (s *Server) serveTracked(cc *clientConn) {
	defer s.connWG.Done()
	s.serveConn(cc)
	s.handshakeOver(cc)
	s.mu.Lock()
	delete(s.conns, cc.id)
	s.mu.Unlock()
}

func (s *Server) serveConn(cc *clientConn) {
	defer cc.close()
	log := s.log.With("client", cc.id, "remote", cc.remote)
	_ = cc.raw.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	n, err := s.negotiate(s.ctx, cc.raw)
	s.handshakeOver(cc)
	if err != nil {
		if err == errAbort {
			log.Debug("handshake ended by client")
		} else if ok, k := s.handshakeLog.allow(); ok {
			log.Info("handshake failed", "err", err, "failures", k)
		}
		return
	}
	_ = cc.raw.SetDeadline(time.Time{})
	var t transport
	if !n.tls {
		if ft := newFDTransport(cc.raw); ft != nil {
			t = ft
		}
	}
	if t == nil {
		t = &connTransport{conn: n.conn, raw: cc.raw}
	}
	if !cc.startTransmission(t, n) {
		t.close()
		return
	}
	log.Info("client connected", "export", n.export.Name, "tls", n.tls, "structured", n.structured)
	sess := newSession(s, cc, t, n)
	if err := sess.run(); err != nil {
		log.Info("client disconnected", "err", err)
		return
	}
	log.Info("client disconnected")
}

// Shutdown stops accepting, lets every connection finish the requests it
// has read and send their replies, and closes it. When ctx ends first, the
// remaining connections are cut.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closing {
		close(s.stop)
	}
	s.closing = true
	for l := range s.listeners {
		_ = l.Close()
	}
	for _, cc := range s.conns {
		cc.stopReading()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.cancel()
		s.stopLogs()
		return nil
	case <-ctx.Done():
	}
	s.cancel()
	s.mu.Lock()
	for _, cc := range s.conns {
		cc.abort()
	}
	s.mu.Unlock()
	<-done
	s.stopLogs()
	return ctx.Err()
}

// stopLogs writes the rate-limited logs' last summaries.
func (s *Server) stopLogs() {
	s.handshakeLog.stop()
	s.refusedLog.stop()
	s.evictLog.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.ioLogs {
		l.stop()
	}
}

// Clients lists the connections in the transmission phase.
func (s *Server) Clients() []ClientInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := make([]ClientInfo, 0, len(s.conns))
	for _, cc := range s.conns {
		if info, ok := cc.info(); ok {
			list = append(list, info)
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].ID < list[j].ID })
	return list
}

// clientConn is one accepted connection and its counters.
type clientConn struct {
	id     uint64
	raw    net.Conn
	remote string
	since  time.Time
	host   string // counted in Server.handshaking until the handshake ends (guarded by Server.mu)

	reads, writes, bytesRead, bytesWritten, flushes, errors atomic.Uint64

	mu       sync.Mutex
	t        transport // set in the transmission phase
	export   string
	tls      bool
	stopping bool
	closed   bool
}

func (cc *clientConn) startTransmission(t transport, n *negotiation) bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.stopping {
		return false
	}
	cc.t, cc.export, cc.tls = t, n.export.Name, n.tls
	return true
}

// stopReading makes the connection drain: in the handshake it is closed, in
// transmission its reader sees end of input.
func (cc *clientConn) stopReading() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.stopping = true
	if cc.closed {
		return
	}
	if cc.t == nil {
		_ = cc.raw.Close()
		return
	}
	cc.t.closeRead()
}

func (cc *clientConn) abort() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.closed {
		return
	}
	// Only wake blocked I/O: the descriptor stays open until the owner
	// closes it, so that no late read or write lands on a reused number.
	if cc.t != nil {
		cc.t.abort()
		return
	}
	_ = cc.raw.Close()
}

func (cc *clientConn) close() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.closed = true
	if cc.t != nil {
		cc.t.close()
		return
	}
	_ = cc.raw.Close()
}

func (cc *clientConn) info() (ClientInfo, bool) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.t == nil || cc.closed {
		return ClientInfo{}, false
	}
	return ClientInfo{
		ID: cc.id, Remote: cc.remote, Export: cc.export, TLS: cc.tls, Since: cc.since,
		Reads: cc.reads.Load(), Writes: cc.writes.Load(),
		BytesRead: cc.bytesRead.Load(), BytesWritten: cc.bytesWritten.Load(),
		Flushes: cc.flushes.Load(), Errors: cc.errors.Load(),
	}, true
}
