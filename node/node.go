// Package node wires one blockrepd node together: the metadata database, the
// local stores of the configured volumes, the NBD server that exports them
// and the control API. It owns every goroutine and file it starts and
// releases them in a fixed order on shutdown.
package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/block"
	"github.com/blockrep/blockrep/cluster"
	"github.com/blockrep/blockrep/config"
	"github.com/blockrep/blockrep/events"
	"github.com/blockrep/blockrep/internal/acceptloop"
	"github.com/blockrep/blockrep/internal/buildinfo"
	"github.com/blockrep/blockrep/internal/unixsock"
	"github.com/blockrep/blockrep/meta"
	"github.com/blockrep/blockrep/nbd"
	"github.com/blockrep/blockrep/raid"
	"github.com/blockrep/blockrep/replica"
	"github.com/blockrep/blockrep/storeid"
)

// Shutdown bounds.
const (
	// DrainTimeout bounds how long NBD clients get to finish the requests
	// they have sent before their connections are cut.
	DrainTimeout = 30 * time.Second
	// controlTimeout bounds the wait for control API requests in flight.
	controlTimeout = 5 * time.Second
	// handOverTimeout bounds the switchover of a stopping primary.
	handOverTimeout = 10 * time.Second
)

// InlineMaxLocal is nbd.Export.InlineMax for volumes served straight from a
// local store: every request is served by the connection's reader (FLUSH and
// FUA writes still go to workers). Measured on this project's benchmark:
// handing writes to goroutines made them contend on the file system's inode
// lock and cost 20-30 % of 1 MiB sequential throughput.
const InlineMaxLocal = 32 << 20

// nbdSocketMode is the permission of NBD unix sockets: whoever can connect
// can read and write the volume.
const nbdSocketMode = 0o600

// Node is one running blockrepd node. Create it with New, run it with Run.
type Node struct {
	cfg     *config.Config
	log     *slog.Logger
	version string
	started time.Time

	meta    *meta.DB
	volumes []*volume // in configuration order; fixed after New
	nbd     *nbd.Server
	ctl     *http.Server

	nbdListeners []net.Listener
	ctlListener  *unixsock.Listener
	// transport carries the peer links; nil on a node without peers.
	transport *replica.Transport
	// membership is the node's part in the cluster; nil without [cluster].
	membership *membership
	// bus carries the node's events; watcher publishes state changes.
	bus     *events.Bus
	watcher *events.Watcher

	ran       atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// volume is one opened volume.
type volume struct {
	cfg config.Volume
	// store is the data part of the volume's local store (the file, or
	// the array of raid, without its identity block: storeid.Device).
	store block.Device
	// file is the store of a volume on a single file or device; nil for a
	// RAID volume.
	file *raid.File
	// raid is the array of a RAID volume (node/raid.go); nil otherwise.
	raid *raidVolume
	rec  meta.VolumeRecord
	// ident is what the open found of the store's identity (identity.go).
	ident *storeIdentity
	// repl is the replicated volume on top of store; nil on a node
	// without peers.
	repl       *replica.Volume
	replClosed bool
}

// device is what the NBD export serves.
func (v *volume) device() block.Device {
	if v.repl != nil {
		return v.repl
	}
	return v.store
}

var _ api.Backend = (*Node)(nil)

// New opens everything the node serves: the metadata database in the data
// directory (failing fast if another blockrepd holds it), every volume's
// store, the NBD exports and TLS configuration, the NBD listeners and the
// control socket. Nothing is served until Run. On error everything opened so
// far is closed again.
func New(cfg *config.Config, logger *slog.Logger) (n *Node, err error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	n = &Node{
		cfg:     cfg,
		log:     logger,
		version: buildinfo.Version(),
		started: time.Now(),
		bus:     events.NewBus(eventHistory),
	}
	n.watcher = events.NewWatcher(n.bus)
	defer func() {
		if err != nil {
			err = errors.Join(err, n.Close())
			n = nil
		}
	}()

	// Nothing is written before the checks of preflight.go pass.
	if err := n.openExistingMeta(); err != nil {
		return n, err
	}
	pf, err := n.preflight()
	if err != nil {
		return n, err
	}
	if n.meta == nil {
		if err := os.MkdirAll(cfg.Node.DataDir, 0o700); err != nil {
			return n, fmt.Errorf("data directory: %w", err)
		}
		if n.meta, err = meta.Open(filepath.Join(cfg.Node.DataDir, meta.FileName)); err != nil {
			return n, err
		}
	}
	logger.Info("node identity", "node", cfg.Node.Name, "node_id", n.meta.NodeID(), "meta", n.meta.Path(), "version", n.version)
	if cfg.Clustered() {
		n.membership = &membership{authority: &memberAuthority{}}
	}
	for _, vc := range cfg.Volumes {
		v, err := n.openVolume(vc)
		if err != nil {
			return n, err
		}
		n.volumes = append(n.volumes, v)
		if cfg.Replicated() {
			if v.repl, err = n.openReplica(v); err != nil {
				return n, fmt.Errorf("volume %q: %w", vc.Name, err)
			}
		}
	}
	if cfg.Replicated() {
		var repls []*replica.Volume
		for _, v := range n.volumes {
			repls = append(repls, v.repl)
		}
		n.transport, err = replica.NewTransport(replica.TransportConfig{
			Cluster:  cfg.Replication.Cluster,
			Local:    cfg.Node.Name,
			Secret:   pf.secret,
			Listen:   cfg.Replication.Listen,
			Peers:    peerConfigs(cfg),
			RetryMin: config.ConnectRetryInitial,
			RetryMax: cfg.Replication.ConnectRetryMax,
			Logger:   logger,

			Protection: pf.replication.prot,
			TLS:        pf.replication.tls,
		}, repls)
		if err != nil {
			return n, err
		}
	}
	if cfg.Clustered() {
		if err := n.joinCluster(pf.clusterSecret, pf.cluster); err != nil {
			return n, err
		}
	}

	tlsCfg, err := tlsConfig(cfg.NBD)
	if err != nil {
		return n, err
	}
	n.nbd = nbd.NewServer(nbdConfig(cfg, tlsCfg, logger.With("component", "nbd")))
	for _, v := range n.volumes {
		if err := n.nbd.AddExport(n.exportFor(v)); err != nil {
			return n, fmt.Errorf("volume %q: %w", v.cfg.Name, err)
		}
	}
	n.ctl = api.NewServer(n, logger.With("component", "api"))

	for _, lc := range cfg.NBD.Listen {
		if cfg.Witness() {
			break // a witness has nothing to export
		}
		l, err := listen(lc)
		if err != nil {
			return n, err
		}
		n.nbdListeners = append(n.nbdListeners, l)
	}
	if n.ctlListener, err = api.Listen(cfg.Node.ControlSocket); err != nil {
		return n, err
	}
	// The socket file goes last on shutdown, after the volumes and meta.db
	// are closed: Close removes it.
	n.ctlListener.SetRemoveOnClose(false)
	return n, nil
}

// openVolume opens the store of one volume, checks its identity and
// records it in meta (identity.go).
func (n *Node) openVolume(vc config.Volume) (*volume, error) {
	if vc.RAID != nil {
		return n.openRAIDVolume(vc)
	}
	return n.openFileVolume(vc)
}

// openRAIDVolume opens (or creates) the array of a RAID volume, checks its
// identity (identity.go) and records it in meta under the synthetic path
// config.RAID.Spec.
func (n *Node) openRAIDVolume(vc config.Volume) (*volume, error) {
	rec, err := loadRecord(n.meta, vc.Name)
	if err != nil {
		return nil, err
	}
	// Member files are created only for a new volume: a recorded array
	// whose members are all gone is refused (storeid rule 1).
	var fileSize int64
	if rec == nil {
		fileSize = vc.Size
	}
	if !slices.ContainsFunc(n.raidCandidates(vc), holdsSuperblock) {
		f := n.storeFacts(vc, rec)
		f.Missing = true
		if v := storeid.Decide(f); v.Action != storeid.Create {
			return nil, n.refusal(vc, v)
		}
	}
	rv, err := n.openRAID(vc, fileSize)
	if err != nil {
		return nil, fmt.Errorf("volume %q: %w", vc.Name, err)
	}
	f := n.storeFacts(vc, rec)
	f.RawSize = rv.arr.Size()
	readTrailer(&f, rv.arr)
	v := storeid.Decide(f)
	var vol *volume
	if v.Action == storeid.Refuse || v.Action == storeid.Create {
		err = n.refusal(vc, v)
	} else {
		vol, err = n.settle(vc, rec, f, v, rv.arr)
	}
	if err != nil {
		rv.stop()
		_ = rv.arr.Close()
		return nil, err
	}
	vol.raid = rv
	rv.saveMembers()
	n.log.Info("volume opened", "volume", vc.Name, "uuid", vol.rec.UUID, "path", vol.rec.Path,
		"size", vol.rec.Size, "size_human", config.FormatSize(vol.rec.Size), "read_only", vc.ReadOnly,
		"raid", vc.RAID.Level, "tls", string(vc.TLS))
	return vol, nil
}

// isBlockDevice reports whether the volume is on a single block device.
func (v *volume) isBlockDevice() bool {
	return v.file != nil && v.file.IsBlockDevice()
}

// listen opens one NBD listener.
func listen(lc config.Listener) (net.Listener, error) {
	if lc.Network == "unix" {
		l, err := unixsock.Listen(lc.Address, nbdSocketMode)
		if err != nil {
			return nil, fmt.Errorf("nbd listen %s: %w", lc, err)
		}
		return l, nil
	}
	l, err := net.Listen(lc.Network, lc.Address)
	if err != nil {
		return nil, fmt.Errorf("nbd listen %s: %w", lc, err)
	}
	return l, nil
}

// nbdConfig derives the NBD server configuration.
func nbdConfig(cfg *config.Config, tlsCfg *tls.Config, logger *slog.Logger) nbd.Config {
	return nbd.Config{
		TLS:              tlsCfg,
		DefaultExport:    cfg.NBD.DefaultExport,
		MaxInFlightBytes: cfg.NBD.MaxInFlight,
		MaxConnections:   cfg.NBD.MaxConnections,
		Logger:           logger,

		MaxInFlightPerClient: cfg.NBD.MaxInFlightPerClient,
		ReplyTimeout:         cfg.NBD.ReplyTimeout,
		HandshakeTimeout:     cfg.NBD.HandshakeTimeout,
		HandshakesPerAddress: cfg.NBD.HandshakesPerAddress,
	}
}

// exportFor derives the NBD export of a volume.
func (n *Node) exportFor(vol *volume) *nbd.Export {
	v := vol.cfg
	e := &nbd.Export{
		Name:               v.Name,
		Description:        v.Description,
		Device:             vol.device(),
		ReadOnly:           v.ReadOnly,
		RequireTLS:         v.TLS == config.TLSRequired,
		MinBlockSize:       v.BlockSizeMin,
		PreferredBlockSize: v.BlockSizePreferred,
		MaxBlockSize:       v.BlockSizeMax,
		MultiConn:          v.MultiConn,
		InlineMax:          InlineMaxLocal,
	}
	if r := vol.repl; r != nil {
		// Writes start in the connection's reader (the volume is a
		// block.AsyncWriter: the reader does the local write and sends
		// the peers' copies, the last acknowledgement sends the reply),
		// reads are local: both are served inline like a local store's.
		// FLUSH and FUA writes wait on the peers and go to workers.
		refuse := n.cfg.Replication.SecondaryNBD == config.SecondaryRefuse
		e.Access = func() (bool, error) {
			if r.Role() == replica.Primary {
				return false, nil
			}
			if refuse {
				return false, fmt.Errorf("volume %q is secondary on node %s: use the primary", v.Name, n.cfg.Node.Name)
			}
			return true, nil
		}
	}
	return e
}

// tlsConfig builds the NBD server's TLS configuration, or nil without TLS.
func tlsConfig(c config.NBD) (*tls.Config, error) {
	if !c.TLSEnabled() {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("nbd tls: loading tls_cert %s and tls_key %s: %w", c.TLSCert, c.TLSKey, err)
	}
	tc := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
	}
	if c.TLSClientCA != "" {
		pem, err := os.ReadFile(c.TLSClientCA)
		if err != nil {
			return nil, fmt.Errorf("nbd tls: tls_client_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("nbd tls: tls_client_ca %s holds no PEM certificate", c.TLSClientCA)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// NBDAddrs returns the addresses the NBD server listens on, in configuration
// order (with the actual port where the configuration asked for port 0).
func (n *Node) NBDAddrs() []net.Addr {
	out := make([]net.Addr, len(n.nbdListeners))
	for i, l := range n.nbdListeners {
		out[i] = l.Addr()
	}
	return out
}

// ControlSocket returns the path of the control socket.
func (n *Node) ControlSocket() string { return n.cfg.Node.ControlSocket }

// Run serves NBD clients and the control API until ctx is cancelled or a
// listener fails, then shuts down in order: stop accepting, let NBD clients
// drain (at most DrainTimeout), flush and close every volume, close the
// metadata database, remove the control socket. It returns nil after a
// shutdown caused by ctx, the listener's error after a listener failure, and
// any error of the shutdown steps. Run may be called once.
func (n *Node) Run(ctx context.Context) error {
	if !n.ran.CompareAndSwap(false, true) {
		return errors.New("node: Run called twice")
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, l := range n.nbdListeners {
		n.log.Info("nbd listening", "addr", addrString(l.Addr()))
		g.Go(func() error {
			err := n.nbd.Serve(l)
			if err == nil || errors.Is(err, nbd.ErrServerClosed) {
				return nil
			}
			return fmt.Errorf("nbd listener %s: %w", addrString(l.Addr()), err)
		})
	}
	tctx, stopTransport := context.WithCancel(context.Background())
	defer stopTransport()
	transportDone := make(chan error, 1)
	var transportFailed <-chan error // nil: never
	if n.transport != nil {
		go func() { transportDone <- n.transport.Run(tctx) }()
		transportFailed = n.transport.Failed()
	} else {
		transportDone <- nil
	}
	cctx, stopCluster := context.WithCancel(context.Background())
	defer stopCluster()
	clusterDone := make(chan error, 1)
	clusterFailed := make(chan error, 1)
	if n.membership != nil {
		go func() { clusterDone <- n.runCluster(cctx, clusterFailed) }()
	} else {
		clusterDone <- nil
	}
	// A listener that fails for good stops the node: peers could no
	// longer reach it, and half a node is worse than none.
	g.Go(func() error {
		select {
		case err := <-transportFailed:
			return err
		case err := <-clusterFailed:
			return err
		case <-gctx.Done():
			return nil
		}
	})
	ectx, stopEvents := context.WithCancel(context.Background())
	defer stopEvents()
	eventsDone := make(chan struct{})
	go func() {
		defer close(eventsDone)
		n.watchEvents(ectx)
	}()
	sctx, stopStores := context.WithCancel(context.Background())
	defer stopStores()
	storesDone := make(chan struct{})
	go func() {
		defer close(storesDone)
		n.watchStores(sctx)
	}()
	n.log.Info("control API listening", "socket", n.ctlListener.Path())
	g.Go(func() error {
		// net/http retries only some temporary accept errors (not ENOBUFS
		// or ENOMEM); Retry handles them all, with a rate-limited log.
		err := n.ctl.Serve(acceptloop.Retry(n.ctlListener, n.log.With("listener", "control socket"), nil))
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("control socket %s: %w", n.ctlListener.Path(), err)
	})

	<-gctx.Done()
	if ctx.Err() != nil {
		n.log.Info("shutting down", "reason", context.Cause(ctx))
	} else {
		n.log.Error("shutting down after a listener failed", "err", context.Cause(gctx))
	}
	stopErr := n.stopServing()
	serveErr := g.Wait()
	// A primary hands its volumes to another node while the cluster can
	// still do it, rather than leave them to a failover timeout.
	n.handOver(handOverTimeout)
	// Replicated volumes leave their peers cleanly before the transport
	// stops: a secondary records itself Outdated and tells its primary.
	replErr := n.closeReplicas()
	stopTransport()
	transportErr := <-transportDone
	if transportErr != nil && errors.Is(serveErr, transportErr) {
		transportErr = nil // already in serveErr, through Failed
	}
	stopCluster()
	clusterErr := <-clusterDone
	stopEvents()
	<-eventsDone
	stopStores()
	<-storesDone
	closeErr := n.Close()
	err := errors.Join(serveErr, stopErr, replErr, transportErr, clusterErr, closeErr)
	if err == nil {
		n.log.Info("shutdown complete")
	}
	return err
}

// stopServing stops both servers: NBD drains within DrainTimeout.
func (n *Node) stopServing() error {
	var errs []error
	dctx, cancel := context.WithTimeout(context.Background(), DrainTimeout)
	defer cancel()
	start := time.Now()
	if err := n.nbd.Shutdown(dctx); err != nil {
		errs = append(errs, fmt.Errorf("nbd: clients did not finish within %v; their connections were cut: %w", DrainTimeout, err))
	} else {
		n.log.Info("nbd clients drained", "took", time.Since(start).Round(time.Millisecond))
	}
	cctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	if err := n.ctl.Shutdown(cctx); err != nil {
		_ = n.ctl.Close()
		errs = append(errs, fmt.Errorf("control API shutdown: %w", err))
	}
	return errors.Join(errs...)
}

// Close flushes (fdatasync) and closes every volume, closes the metadata
// database and removes the control socket. Run calls it; call it directly
// only for a Node that is never run. It is idempotent and must not be called
// while Run is serving.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		for _, l := range n.nbdListeners {
			_ = l.Close() // already closed by a shutdown; needed if Run never ran
		}
		if n.ctlListener != nil {
			_ = n.ctlListener.Close()
		}
		if err := n.closeReplicas(); err != nil {
			errs = append(errs, err)
		}
		if n.transport != nil {
			_ = n.transport.Close()
		}
		if err := n.closeCluster(); err != nil {
			errs = append(errs, err)
		}
		for _, v := range n.volumes {
			if v.raid != nil {
				v.raid.stop() // background rebuilds and scrubs
			}
		}
		for _, v := range n.volumes {
			if v.repl != nil && v.repl.DiskFailed() != "" {
				// Detached after it failed: nothing on it is to be
				// made durable, and it would only fail again.
				n.log.Warn("not flushing the failed store of a detached volume", "volume", v.cfg.Name, "path", v.rec.Path)
				continue
			}
			if !v.cfg.ReadOnly {
				if err := v.store.Flush(); err != nil {
					errs = append(errs, fmt.Errorf("volume %q: %w", v.cfg.Name, err))
				}
			}
		}
		for _, v := range n.volumes {
			if err := v.store.Close(); err != nil {
				errs = append(errs, fmt.Errorf("volume %q: %w", v.cfg.Name, err))
			}
		}
		if n.meta != nil {
			if err := n.meta.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if n.ctlListener != nil {
			if err := n.ctlListener.Remove(); err != nil {
				errs = append(errs, err)
			}
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// Status reports the node and its volumes; it implements api.StatusSource.
// On a cluster member it makes a read barrier first, so that the cluster
// section is current or says why it may not be (Stale).
func (n *Node) Status(ctx context.Context) (api.Status, error) {
	return n.status(ctx, true)
}

// status is Status; without current it asks nobody (the event watcher's
// ten times a second), and the cluster section's Stale is as of the last
// heartbeat.
func (n *Node) status(ctx context.Context, current bool) (api.Status, error) {
	var stale error
	m := n.member()
	if m != nil && current {
		stale = n.readBarrier(ctx, m)
	}
	now := time.Now()
	st := api.Status{
		Node:          n.cfg.Node.Name,
		NodeID:        n.meta.NodeID(),
		Version:       n.version,
		Started:       n.started,
		UptimeSeconds: now.Sub(n.started).Seconds(),
		Volumes:       make([]api.VolumeStatus, 0, len(n.volumes)),
	}
	byExport := clientsByExport(n.nbd.Clients())
	for _, v := range n.volumes {
		clients := byExport[v.cfg.Name]
		if clients == nil {
			clients = []nbd.ClientInfo{}
		}
		vs := api.VolumeStatus{
			Name:        v.cfg.Name,
			UUID:        v.rec.UUID,
			Path:        v.rec.Path,
			Size:        v.rec.Size,
			ReadOnly:    v.cfg.ReadOnly,
			BlockDevice: v.isBlockDevice(),
			TLS:         string(v.cfg.TLS),
			Clients:     clients,
		}
		if v.repl != nil {
			rs := v.repl.Status()
			vs.Replication = &rs
		}
		if v.raid != nil {
			vs.RAID = v.raid.status()
		}
		vs.Store = v.ident.status()
		st.Volumes = append(st.Volumes, vs)
	}
	if m != nil {
		var cs cluster.MemberStatus
		if current {
			cs = m.StatusAfter(stale)
		} else {
			cs = m.Status()
		}
		st.Cluster = &cs
	}
	return st, nil
}

// clientsByExport groups clients by the export they use, keeping order.
func clientsByExport(clients []nbd.ClientInfo) map[string][]nbd.ClientInfo {
	m := make(map[string][]nbd.ClientInfo)
	for _, c := range clients {
		m[c.Export] = append(m[c.Export], c)
	}
	return m
}

// addrString renders a listener address as in the configuration.
func addrString(a net.Addr) string {
	if a.Network() == "unix" {
		return "unix:" + a.String()
	}
	return a.String()
}
