package replica

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/blockrep/blockrep/internal/acceptloop"
	"github.com/blockrep/blockrep/internal/linktls"
	"github.com/blockrep/blockrep/internal/lograte"
	"github.com/blockrep/blockrep/replica/wire"
)

// TransportConfig is the peer-link side of a node.
type TransportConfig struct {
	// Cluster, Local and Secret authenticate links (wire.Handshake).
	Cluster string
	Local   string
	Secret  []byte
	// Protection guards every frame after the handshake; both ends must
	// agree (replication.security). Zero means wire.ProtectMAC.
	Protection wire.Protection
	// TLS is this node's certificate and the peers' CA, required with
	// wire.ProtectTLS (and only then): the link runs over TLS 1.3, the
	// shared-secret handshake inside it, and each peer's certificate must
	// name the node it proves to be.
	TLS *linktls.Config
	// Listen is the address peers connect to.
	Listen string
	// Peers are the other data nodes.
	Peers []PeerConfig
	// RetryMin and RetryMax bound the wait between connection attempts,
	// which doubles after each failure.
	RetryMin, RetryMax time.Duration
	Logger             *slog.Logger
}

// Transport accepts and dials the peer links of a node's volumes. Of each
// pair of nodes, the one whose name sorts first dials and the other
// accepts, so two nodes never race two connections for one volume; the
// accepting one knocks when it starts, so the dialer does not wait out its
// backoff. One TCP connection carries one volume.
//
// The listener survives temporary accept errors (out of descriptors,
// buffers or memory: see acceptloop.Retry), admits at most
// acceptloop.DefaultMaxPending unauthenticated connections at a time
// (DefaultMaxPendingPerSource from one IP; others are closed at once),
// each with a deadline, and logs failed handshakes at most once a minute
// per source IP.
type Transport struct {
	cfg     TransportConfig
	log     *slog.Logger
	ln      net.Listener
	volumes map[[16]byte]*Volume
	list    []*Volume

	gate    *acceptloop.Gate
	failLog *lograte.Limiter // failed handshakes, per remote IP
	failed  chan error       // the listener's fatal error, once
}

// NewTransport validates the configuration and listens.
func NewTransport(cfg TransportConfig, volumes []*Volume) (*Transport, error) {
	hc := wire.HandshakeConfig{Cluster: cfg.Cluster, NodeID: cfg.Local, Secret: cfg.Secret, Protection: cfg.Protection}
	if err := hc.Validate(); err != nil {
		return nil, fmt.Errorf("replication: %w", err)
	}
	if (cfg.Protection == wire.ProtectTLS) != (cfg.TLS != nil) {
		return nil, fmt.Errorf("replication: TLS certificates are needed with security %q and only then (security is %v)", wire.ProtectTLS, cmp.Or(cfg.Protection, wire.ProtectMAC))
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 100 * time.Millisecond
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = cfg.RetryMin
	}
	log := cfg.Logger.With("component", "replication")
	t := &Transport{
		cfg: cfg, log: log, volumes: map[[16]byte]*Volume{}, list: volumes,
		gate:    acceptloop.NewGate(acceptloop.DefaultMaxPending, acceptloop.DefaultMaxPendingPerSource, log),
		failLog: lograte.New(acceptloop.LogEvery, acceptloop.MaxLogSources),
		failed:  make(chan error, 1),
	}
	for _, v := range volumes {
		t.volumes[v.ID()] = v
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("replication listen %s: %w", cfg.Listen, err)
	}
	t.ln = ln
	return t, nil
}

// Addr is the address the transport listens on.
func (t *Transport) Addr() net.Addr { return t.ln.Addr() }

// Close stops listening; Run does it too.
func (t *Transport) Close() error { return t.ln.Close() }

// Failed receives, once, the error that ended the listener while Run was
// running (not one caused by ctx or Close). Run keeps the links it has and
// its dialing going until ctx ends, so that the owner can shut down in
// order; the owner should do so, since no peer can connect any more.
func (t *Transport) Failed() <-chan error { return t.failed }

// Run accepts and dials until ctx ends, then waits for the connections it
// handles; the volumes' Close ends their links. It returns the error that
// ended the listener, if one did (see Failed).
func (t *Transport) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	t.log.Info("replication listening", "addr", t.ln.Addr().String())
	for _, v := range t.list {
		for _, pc := range t.cfg.Peers {
			if t.cfg.Local < pc.Name {
				wg.Go(func() { t.dialLoop(ctx, v, pc) })
			}
		}
	}
	for _, pc := range t.cfg.Peers {
		if t.cfg.Local > pc.Name {
			wg.Go(func() { t.knock(ctx, pc) })
		}
	}
	ln := acceptloop.Retry(t.ln, t.log, ctx.Done())
	wg.Go(func() {
		<-ctx.Done()
		_ = ln.Close()
	})
	var err error
	for {
		conn, aerr := ln.Accept()
		if aerr != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("replication listen %s: %w", t.ln.Addr(), aerr)
				t.log.Error("replication listener failed: peers cannot connect to this node", "addr", t.ln.Addr().String(), "err", aerr)
				t.failed <- err
			}
			break
		}
		release, gerr := t.gate.Admit(conn.RemoteAddr())
		if gerr != nil {
			_ = conn.Close()
			continue
		}
		wg.Go(func() {
			defer release()
			t.accept(ctx, conn, release)
		})
	}
	wg.Wait()
	return err
}

// handshake is the handshake configuration towards peerID ("" accepts any
// node of the cluster).
func (t *Transport) handshake(initiator bool, peerID string) wire.HandshakeConfig {
	return wire.HandshakeConfig{Cluster: t.cfg.Cluster, NodeID: t.cfg.Local, PeerID: peerID, Secret: t.cfg.Secret, Initiator: initiator, Protection: t.cfg.Protection}
}

// startTLS runs the TLS handshake that precedes the shared-secret one with
// security = "tls"; it returns conn itself otherwise. A dialer names the
// peer whose certificate it expects.
func (t *Transport) startTLS(ctx context.Context, conn net.Conn, dial bool, peer string) (net.Conn, error) {
	if t.cfg.TLS == nil {
		return conn, nil
	}
	if dial {
		return t.cfg.TLS.Client(ctx, conn, peer)
	}
	return t.cfg.TLS.Server(ctx, conn)
}

// handshakeConn runs the handshakes on a new connection (TLS first with
// security = "tls") and returns the connection to use from then on.
func (t *Transport) handshakeConn(ctx context.Context, conn net.Conn, dial bool, peerID string) (net.Conn, wire.Peer, error) {
	hctx, cancel := context.WithTimeout(ctx, wire.DefaultHandshakeTimeout)
	defer cancel()
	c, err := t.startTLS(hctx, conn, dial, peerID)
	if err != nil {
		return conn, wire.Peer{}, err
	}
	peer, err := wire.Handshake(hctx, c, t.handshake(dial, peerID))
	if err != nil {
		return c, peer, err
	}
	if tc, ok := c.(*tls.Conn); ok && !dial {
		// The dialer checked our certificate against the name it
		// dialed; here the name comes from the handshake.
		if err := linktls.CheckPeerName(tc, peer.NodeID); err != nil {
			return c, wire.Peer{}, err
		}
	}
	return c, peer, nil
}

// peerNamed returns the configured peer called name.
func (t *Transport) peerNamed(name string) (PeerConfig, bool) {
	for _, p := range t.cfg.Peers {
		if p.Name == name {
			return p, true
		}
	}
	return PeerConfig{}, false
}

// accept authenticates an incoming connection, reads which volume it is
// for, and runs the link. It calls admitted, which gives back the
// connection's pending-handshake slot, before the link runs.
func (t *Transport) accept(ctx context.Context, conn net.Conn, admitted func()) {
	remote := conn.RemoteAddr().String()
	conn, peer, err := t.handshakeConn(ctx, conn, false, "")
	if err != nil {
		_ = conn.Close()
		if ok, n := t.failLog.Allow(acceptloop.Source(conn.RemoteAddr()), time.Now()); ok && ctx.Err() == nil {
			t.log.Warn("peer link refused: handshake failed", "remote", remote, "err", err, "suppressed", n)
		}
		return
	}
	if _, ok := t.peerNamed(peer.NodeID); !ok {
		t.log.Warn("peer link refused: not a configured peer", "remote", remote, "node", peer.NodeID)
		sendError(peerWriter(conn, peer), conn, [16]byte{}, "node "+peer.NodeID+" is not a peer of "+t.cfg.Local)
		_ = conn.Close()
		return
	}
	if t.cfg.Local < peer.NodeID {
		// This node dials that peer. The peer knocked: it has just
		// started, so dial it now instead of when the backoff ends.
		t.log.Debug("peer knocked: dialing it now", "node", peer.NodeID)
		_ = conn.Close()
		for _, v := range t.list {
			if p, err := v.findPeer(peer.NodeID); err == nil {
				p.nudge()
			}
		}
		return
	}
	// Read the dialer's State exactly (no read-ahead), to find the volume.
	r := wire.NewReader(conn, nil)
	r.SetVersion(peer.Version)
	r.SetMAC(peer.Recv) // the link's reader goes on counting from here
	r.SetLimit(64 << 10)
	_ = conn.SetReadDeadline(time.Now().Add(exchangeTimeout))
	h, first, err := r.ReadFrame()
	_ = conn.SetReadDeadline(time.Time{})
	if err != nil || h.Type != wire.TypeState {
		lvl := slog.LevelWarn
		if errors.Is(err, wire.ErrTampered) {
			lvl = slog.LevelError
		}
		t.log.Log(ctx, lvl, "peer link refused: no state after the handshake", "remote", remote, "node", peer.NodeID, "type", h.Type, "err", err)
		_ = conn.Close()
		return
	}
	v, ok := t.volumes[h.Volume]
	if !ok {
		t.log.Warn("peer link refused: unknown volume", "node", peer.NodeID)
		sendError(peerWriter(conn, peer), conn, h.Volume, "no such volume on "+t.cfg.Local)
		_ = conn.Close()
		return
	}
	first = append([]byte(nil), first...)
	admitted()
	err = v.Attach(peer.NodeID, conn, peer, first)
	t.log.Debug("peer link ended", "volume", v.Name(), "node", peer.NodeID, "err", err)
}

// knock tells a peer that dials this node that this node has started: an
// authenticated connection that the peer answers by dialing at once, so a
// restarted node is not left waiting for the peer's reconnect backoff. It
// is best effort: a peer that is down dials when it comes back anyway.
func (t *Transport) knock(ctx context.Context, pc PeerConfig) {
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", pc.Address)
	if err != nil {
		return
	}
	defer conn.Close()
	c, _, _ := t.handshakeConn(ctx, conn, true, pc.Name)
	_ = c.Close()
}

// dialLoop keeps one volume's link to one peer up: dial, authenticate,
// run, and after a failure wait (backoff) and dial again. A link that ends
// StandAlone waits for the operator's connect.
func (t *Transport) dialLoop(ctx context.Context, v *Volume, pc PeerConfig) {
	p, err := v.findPeer(pc.Name)
	if err != nil {
		return
	}
	wait := t.cfg.RetryMin
	for ctx.Err() == nil {
		v.mu.Lock()
		standalone := p.standalone
		v.mu.Unlock()
		if standalone {
			select {
			case <-p.wake:
				wait = t.cfg.RetryMin
				continue
			case <-ctx.Done():
				return
			}
		}
		start := time.Now()
		err := t.dialOnce(ctx, v, pc)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 10*time.Second {
			wait = t.cfg.RetryMin // the link was up for a while
		}
		v.mu.Lock()
		if err != nil && p.link == nil && !p.standalone {
			p.lastErr = err.Error()
		}
		v.mu.Unlock()
		select {
		case <-time.After(wait):
		case <-p.wake:
			wait = t.cfg.RetryMin
			continue
		case <-ctx.Done():
			return
		}
		wait = min(2*wait, t.cfg.RetryMax)
	}
}

// dialOnce makes one connection attempt and runs the link until it ends.
func (t *Transport) dialOnce(ctx context.Context, v *Volume, pc PeerConfig) error {
	d := net.Dialer{Timeout: 5 * time.Second, KeepAlive: -1}
	conn, err := d.DialContext(ctx, "tcp", pc.Address)
	if err != nil {
		return fmt.Errorf("dial %s: %w", pc.Address, err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	conn, peer, err := t.handshakeConn(ctx, conn, true, pc.Name)
	if err != nil {
		_ = conn.Close()
		t.log.Warn("peer link: handshake failed", "volume", v.Name(), "peer", pc.Name, "addr", pc.Address, "err", err)
		return fmt.Errorf("handshake with %s: %w", pc.Name, err)
	}
	err = v.Attach(pc.Name, conn, peer, nil)
	if errors.Is(err, errStandAlone) {
		return nil
	}
	return err
}
