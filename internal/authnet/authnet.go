// Package authnet carries several services over one TCP port, admitting
// only nodes of the cluster that hold the shared secret.
//
// Every connection starts with replica/wire's Handshake, the mutual
// HMAC-SHA256 challenge-response the peer link uses (bound to the cluster
// name and both node IDs). After it the dialer writes one service byte that
// says which service the connection is for; the listening side's Mux hands
// the connection to that service's net.Listener. Dial is the client side.
//
// After the handshake every byte is protected as Config.Protection says,
// the service byte included: by default (wire.ProtectMAC) the stream is cut
// into records that carry the session's MAC (record.go), so that a relay
// without the secret can neither change, replay, reorder nor drop any of
// it unnoticed (the receiving end closes the connection and logs why).
//
// RaftStream adapts a Mux to hashicorp/raft's StreamLayer so that the Raft
// transport is authenticated the same way.
package authnet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/blockrep/blockrep/internal/acceptloop"
	"github.com/blockrep/blockrep/internal/linktls"
	"github.com/blockrep/blockrep/internal/lograte"
	"github.com/blockrep/blockrep/replica/wire"
)

// Defaults and limits.
const (
	// DefaultHandshakeTimeout is Config.HandshakeTimeout when it is zero.
	DefaultHandshakeTimeout = 5 * time.Second
	// MaxPendingHandshakes bounds the connections a Mux holds between TCP
	// accept and the hand-off to a service listener, and
	// MaxPendingPerSource those from one remote IP. A connection beyond
	// them is closed at once, so a port scanner or a flood cannot pile up
	// goroutines, nor one source take every slot (see acceptloop.Gate).
	MaxPendingHandshakes = acceptloop.DefaultMaxPending
	MaxPendingPerSource  = acceptloop.DefaultMaxPendingPerSource
)

// Service says what an authenticated connection is for. The dialer sends it
// as one byte right after the handshake. Zero is not a valid service.
type Service byte

// The services of a blockrep node.
const (
	// ServiceRaft carries one stream of hashicorp/raft's NetworkTransport
	// (see RaftStream).
	ServiceRaft Service = 1
	// ServiceControl carries the HTTP control API used between nodes and
	// by blockctl.
	ServiceControl Service = 2
)

// String names the service for logs and errors.
func (s Service) String() string {
	switch s {
	case ServiceRaft:
		return "raft"
	case ServiceControl:
		return "control"
	default:
		return "service(" + strconv.Itoa(int(s)) + ")"
	}
}

// Config is a node's identity and secret, shared by Dial and Mux.
type Config struct {
	// Cluster is the cluster name; both ends must agree.
	Cluster string
	// NodeID is this node's ID, proved to the other end.
	NodeID string
	// Secret is the cluster's shared secret, at least wire.MinSecretLen
	// bytes.
	Secret []byte
	// Logger receives the Mux's logs; nil discards them.
	Logger *slog.Logger
	// HandshakeTimeout bounds the handshake plus the service byte, on both
	// ends, and how long an accepted connection waits for its service's
	// Accept. Zero means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// Protection guards the bytes after the handshake (cluster.security);
	// both ends must agree. Zero means wire.ProtectMAC.
	Protection wire.Protection
	// TLS is this end's certificate and the CA of the other ends',
	// required with wire.ProtectTLS and only then: the connection runs
	// over TLS 1.3 with certificates checked on both ends (against the CA;
	// the node name only when Dial is given one), the shared-secret
	// handshake inside it.
	TLS *linktls.Config
}

// normalize checks cfg and fills in its defaults. It copies the secret so
// that a caller reusing its buffer cannot change it underneath us.
func (c Config) normalize() (Config, error) {
	if err := c.handshake(false, "").Validate(); err != nil {
		return Config{}, fmt.Errorf("authnet: config: %w", err)
	}
	if (c.Protection == wire.ProtectTLS) != (c.TLS != nil) {
		return Config{}, fmt.Errorf("authnet: config: TLS certificates are needed with security %q and only then (security is %v)", wire.ProtectTLS, cmp.Or(c.Protection, wire.ProtectMAC))
	}
	if c.HandshakeTimeout < 0 {
		return Config{}, fmt.Errorf("authnet: config: negative handshake timeout %s", c.HandshakeTimeout)
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Secret = append([]byte(nil), c.Secret...)
	return c, nil
}

func (c Config) handshake(initiator bool, peerID string) wire.HandshakeConfig {
	return wire.HandshakeConfig{
		Cluster:    c.Cluster,
		NodeID:     c.NodeID,
		PeerID:     peerID,
		Secret:     c.Secret,
		Initiator:  initiator,
		Protection: c.Protection,
	}
}

// protect puts the record layer over c if the handshake says so.
func protect(c net.Conn, peer wire.Peer, log *slog.Logger) net.Conn {
	if peer.Protection != wire.ProtectMAC {
		return c
	}
	return newRecordConn(c, peer, log.With("peer", peer.NodeID))
}

// Conn is an authenticated connection for one service. Reads and writes go
// through the record layer (with wire.ProtectMAC) or straight to the TCP
// connection.
type Conn struct {
	net.Conn
	peerID  string
	service Service
}

// PeerID returns the node ID the remote end proved it holds the secret for.
func (c *Conn) PeerID() string { return c.peerID }

// Service returns the service the connection was opened for.
func (c *Conn) Service() Service { return c.service }

// Dial connects to addr, authenticates as the initiator and asks for
// service svc. If peerID is not empty the remote end must prove to be that
// node; if it is empty any node of the cluster that holds the secret is
// accepted (Conn.PeerID then says which one answered).
//
// ctx bounds the whole call; the handshake and the service byte are also
// bounded by cfg.HandshakeTimeout. A nil error means the remote end
// accepted the handshake; it may still close the connection if it does not
// serve svc or nobody accepts it in time, which the caller sees as EOF on
// its first read. On failure the TCP connection is closed and the error
// names addr and the cause; handshake refusals match replica/wire's
// sentinel errors with errors.Is (e.g. wire.ErrAuthFailed,
// wire.ErrClusterMismatch, wire.ErrUnexpectedPeer).
func Dial(ctx context.Context, addr string, svc Service, cfg Config, peerID string) (*Conn, error) {
	if svc == 0 {
		return nil, fmt.Errorf("authnet: dial %s: service 0 is not valid", addr)
	}
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, fmt.Errorf("authnet: dial %s: %w", addr, err)
	}
	hcfg := cfg.handshake(true, peerID)
	if err := hcfg.Validate(); err != nil { // e.g. peerID is our own ID
		return nil, fmt.Errorf("authnet: dial %s: %w", addr, err)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("authnet: dial %s: %w", addr, err)
	}
	hctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	if cfg.TLS != nil {
		tc, err := cfg.TLS.Client(hctx, c, peerID)
		if err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("authnet: dial %s: %w", addr, err)
		}
		c = tc
	}
	peer, err := wire.Handshake(hctx, c, hcfg)
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("authnet: dial %s: %w", addr, err)
	}
	pc := protect(c, peer, cfg.Logger.With("component", "authnet", "addr", addr))
	if err := withDeadline(hctx, c, func() error {
		_, err := pc.Write([]byte{byte(svc)})
		return err
	}); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("authnet: dial %s: sending service byte for %s: %w", addr, svc, err)
	}
	return &Conn{Conn: pc, peerID: peer.NodeID, service: svc}, nil
}

// withDeadline runs fn on c under ctx's deadline; cancelling ctx aborts it.
// ctx must have a deadline. The deadline is cleared again on success.
func withDeadline(ctx context.Context, c net.Conn, fn func() error) error {
	deadline, _ := ctx.Deadline()
	if err := c.SetDeadline(deadline); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	err := fn()
	if !stop() && err == nil {
		err = ctx.Err() // cancelled at the last moment: the deadline is spoiled
	}
	if err != nil {
		// Only our own deadlines, which come from ctx, time out I/O here;
		// the socket's deadline may fire just before ctx's timer does.
		if isTimeout(err) {
			cause := ctx.Err()
			if cause == nil {
				cause = context.DeadlineExceeded
			}
			err = fmt.Errorf("%w: %w", cause, err)
		}
		return err
	}
	return c.SetDeadline(time.Time{})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Mux accepts TCP connections, authenticates each one and hands it to the
// listener of the service it asks for. Create it with NewMux, take the
// service listeners with Listener, then run Serve.
type Mux struct {
	ln  net.Listener
	cfg Config
	log *slog.Logger

	// gate holds one slot per connection between accept and hand-off.
	gate *acceptloop.Gate
	// done is closed when the Mux shuts down.
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
	// serveDone is closed when Serve has returned.
	serveDone chan struct{}

	mu       sync.Mutex
	services map[Service]*serviceListener
	serving  bool
	closed   bool

	failLog *lograte.Limiter // failed handshakes, per remote IP

	// onDrop, if set before Serve (tests only), is called for every
	// connection the Mux closes instead of handing it to a service, after
	// closing and logging, with a short stage name and the cause.
	onDrop func(remote net.Addr, stage string, err error)
}

// NewMux returns a Mux that will serve ln with cfg's identity and secret.
// It validates cfg. The Mux owns ln: Close and Serve's return close it.
func NewMux(ln net.Listener, cfg Config) (*Mux, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger.With("component", "authnet", "addr", ln.Addr().String())
	return &Mux{
		ln:        ln,
		cfg:       cfg,
		log:       log,
		gate:      acceptloop.NewGate(MaxPendingHandshakes, MaxPendingPerSource, log),
		done:      make(chan struct{}),
		serveDone: make(chan struct{}),
		services:  make(map[Service]*serviceListener),
		failLog:   lograte.New(acceptloop.LogEvery, acceptloop.MaxLogSources),
	}, nil
}

// Addr returns the address of the TCP listener.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// Listener returns the listener for svc: its Accept yields the
// authenticated connections (each a *Conn) that asked for svc. Call it
// before Serve, so that no early connection finds the service missing, and
// at most once per service; it panics on a second call for the same
// service or on service 0, both programming errors.
//
// Closing the returned listener stops that service only: later connections
// for it are dropped. After the Mux is closed, Accept returns an error
// matching net.ErrClosed.
func (m *Mux) Listener(svc Service) net.Listener {
	if svc == 0 {
		panic("authnet: Listener for service 0")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.services[svc]; dup {
		panic(fmt.Sprintf("authnet: Listener(%s) called twice", svc))
	}
	l := &serviceListener{m: m, svc: svc, ch: make(chan *Conn), done: make(chan struct{})}
	m.services[svc] = l
	return l
}

func (m *Mux) service(svc Service) *serviceListener {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.services[svc]
}

// Serve accepts connections until ctx is cancelled or Close is called, or
// the TCP listener fails for good. Temporary accept errors (out of
// descriptors, ...) are logged and retried after a backoff (see
// acceptloop.Retry). Each connection is authenticated in a goroutine of
// its own; at most MaxPendingHandshakes are in progress at a time
// (MaxPendingPerSource from one IP), and a connection beyond that is
// closed at once. When Serve stops
// it closes the TCP listener and waits for those goroutines, and the
// service listeners' Accept returns net.ErrClosed. Serve returns nil when
// stopped by ctx or Close, and the listener's error otherwise. It may be
// called once.
func (m *Mux) Serve(ctx context.Context) error {
	m.mu.Lock()
	switch {
	case m.serving:
		m.mu.Unlock()
		return fmt.Errorf("authnet: serve %s: Serve called twice", m.Addr())
	case m.closed:
		m.mu.Unlock()
		return fmt.Errorf("authnet: serve %s: %w", m.Addr(), net.ErrClosed)
	}
	m.serving = true
	m.mu.Unlock()

	// base is the context of every handshake: cancelling it when Serve
	// stops aborts the handshakes in progress.
	base, cancel := context.WithCancel(ctx)
	stopWatch := context.AfterFunc(base, func() { m.shutdown() })
	var wg sync.WaitGroup
	err := m.acceptLoop(base, &wg)

	stopWatch()
	m.shutdown()
	cancel()
	wg.Wait()
	close(m.serveDone)
	return err
}

func (m *Mux) acceptLoop(ctx context.Context, wg *sync.WaitGroup) error {
	ln := acceptloop.Retry(m.ln, m.log, m.done)
	for {
		c, err := ln.Accept()
		if err != nil {
			if m.isClosed() {
				return nil
			}
			return fmt.Errorf("authnet: accept on %s: %w", m.Addr(), err)
		}
		release, err := m.gate.Admit(c.RemoteAddr())
		if err != nil {
			_ = c.Close()
			m.dropped(c.RemoteAddr(), "overload", err)
			continue
		}
		wg.Go(func() {
			defer release()
			m.handle(ctx, c)
		})
	}
}

// handle authenticates c, reads its service byte and hands it over; on any
// failure it closes c.
func (m *Mux) handle(ctx context.Context, c net.Conn) {
	remote := c.RemoteAddr()
	hctx, cancel := context.WithTimeout(ctx, m.cfg.HandshakeTimeout)
	defer cancel()

	var err error
	if m.cfg.TLS != nil {
		var tc net.Conn
		if tc, err = m.cfg.TLS.Server(hctx, c); err == nil {
			c = tc
		}
	}
	var peer wire.Peer
	if err == nil {
		peer, err = wire.Handshake(hctx, c, m.cfg.handshake(false, ""))
	}
	if err != nil {
		_ = c.Close()
		if ctx.Err() != nil {
			m.log.Debug("handshake aborted: mux closing", "remote", remote.String())
		} else if ok, n := m.failLog.Allow(acceptloop.Source(remote), time.Now()); ok {
			m.log.Info("handshake failed; closing connection",
				"remote", remote.String(), "err", err, "suppressed", n)
		}
		m.dropped(remote, "handshake", err)
		return
	}

	var b [1]byte
	pc := protect(c, peer, m.log)
	sctx, scancel := context.WithTimeout(ctx, m.cfg.HandshakeTimeout)
	defer scancel()
	if err := withDeadline(sctx, c, func() error {
		_, err := io.ReadFull(pc, b[:])
		return err
	}); err != nil {
		_ = c.Close()
		m.log.Info("no service byte after handshake; closing connection",
			"remote", remote.String(), "peer", peer.NodeID, "err", err)
		m.dropped(remote, "service", err)
		return
	}
	svc := Service(b[0])
	l := m.service(svc)
	if l == nil {
		_ = c.Close()
		m.log.Info("unknown service; closing connection",
			"remote", remote.String(), "peer", peer.NodeID, "service", svc.String())
		m.dropped(remote, "service", fmt.Errorf("unknown service %s", svc))
		return
	}

	conn := &Conn{Conn: pc, peerID: peer.NodeID, service: svc}
	t := time.NewTimer(m.cfg.HandshakeTimeout)
	defer t.Stop()
	select {
	case l.ch <- conn:
		m.log.Debug("connection accepted", "remote", remote.String(), "peer", peer.NodeID, "service", svc.String())
		return
	case <-t.C:
		err = fmt.Errorf("nobody accepted %s within %s", svc, m.cfg.HandshakeTimeout)
		m.log.Info("connection not accepted in time; closing it",
			"remote", remote.String(), "peer", peer.NodeID, "service", svc.String(), "timeout", m.cfg.HandshakeTimeout)
	case <-l.done:
		err = fmt.Errorf("listener for %s closed", svc)
		m.log.Debug("service listener closed; closing connection",
			"remote", remote.String(), "peer", peer.NodeID, "service", svc.String())
	case <-m.done:
		err = net.ErrClosed
		m.log.Debug("mux closing; closing connection",
			"remote", remote.String(), "peer", peer.NodeID, "service", svc.String())
	}
	_ = c.Close()
	m.dropped(remote, "handoff", err)
}

func (m *Mux) dropped(remote net.Addr, stage string, err error) {
	if m.onDrop != nil {
		m.onDrop(remote, stage, err)
	}
}

func (m *Mux) isClosed() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// shutdown marks the Mux closed and closes the TCP listener, once. It
// reports whether this call did it.
func (m *Mux) shutdown() (first bool) {
	m.closeOnce.Do(func() {
		first = true
		m.mu.Lock()
		m.closed = true
		m.mu.Unlock()
		close(m.done)
		if err := m.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			m.closeErr = fmt.Errorf("authnet: close %s: %w", m.Addr(), err)
		}
	})
	return first
}

// Close stops the Mux: it closes the TCP listener, makes the service
// listeners' Accept return net.ErrClosed and, if Serve is running, waits
// until Serve has stopped its goroutines. Connections already handed to a
// service stay open; their owners close them. Close may be called more
// than once; only the first call can return an error.
func (m *Mux) Close() error {
	first := m.shutdown()
	m.mu.Lock()
	serving := m.serving
	m.mu.Unlock()
	if serving {
		<-m.serveDone
	}
	if first {
		return m.closeErr
	}
	return nil
}

// serviceListener is the net.Listener of one service.
type serviceListener struct {
	m    *Mux
	svc  Service
	ch   chan *Conn // unbuffered: a connection is either accepted or closed by the Mux
	done chan struct{}
	once sync.Once
}

// Accept waits for the next authenticated connection for the service. Its
// dynamic type is *Conn.
func (l *serviceListener) Accept() (net.Conn, error) {
	// A closed listener must fail even if a connection is waiting.
	select {
	case <-l.done:
		return nil, l.closedErr()
	case <-l.m.done:
		return nil, l.closedErr()
	default:
	}
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, l.closedErr()
	case <-l.m.done:
		return nil, l.closedErr()
	}
}

func (l *serviceListener) closedErr() error {
	return &net.OpError{Op: "accept", Net: "authnet/" + l.svc.String(), Addr: l.m.Addr(), Err: net.ErrClosed}
}

// Close stops this service only; the Mux keeps serving the others.
func (l *serviceListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr returns the Mux's TCP address.
func (l *serviceListener) Addr() net.Addr { return l.m.Addr() }
