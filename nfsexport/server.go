package nfsexport

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/blockrep/blockrep/nfsexport/export"
	"github.com/blockrep/blockrep/nfsexport/fh"
	"github.com/blockrep/blockrep/nfsexport/mount"
	"github.com/blockrep/blockrep/nfsexport/nfs3"
	"github.com/blockrep/blockrep/nfsexport/portmap"
	"github.com/blockrep/blockrep/nfsexport/rpc"
	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// ExportConfig is one exported directory.
type ExportConfig struct {
	// Dir is the exported directory (absolute), on a mounted file system
	// with file handles and a UUID (ext4, xfs).
	Dir string
	// Options is the export's policy; Options.ID is written in every
	// handle, so it must stay the same across restarts and on every node.
	Options export.Options
}

// Config configures a Server.
type Config struct {
	// Exports are the exported directories; at least one. Their IDs and
	// their MOUNT paths (trailing slashes ignored) must be unique.
	Exports []ExportConfig
	// Portmap also serves the portmapper (program 100000: PMAP v2, rpcbind
	// v3 and v4) on every listener, naming NFS and MOUNT.
	Portmap bool
	// NFSPort is the port the portmapper names for NFS and MOUNT; 0 means
	// the port of the listener the question arrived on. Set it when the
	// portmapper also listens on port 111 and NFS is on another.
	NFSPort int
	// RPC tunes the RPC server (limits, timeouts); its Logger defaults to
	// Logger.
	RPC rpc.Config
	// Logger receives the server's log; nil means slog.Default().
	Logger *slog.Logger
	// OnEvent, if not nil, is called for every Event. It is called from the
	// goroutines serving calls, possibly at the same time, and must not
	// block (publishing to an events.Bus is fine).
	OnEvent func(Event)
}

// ErrClosed is returned by Serve after Close.
var ErrClosed = errors.New("nfsexport: server closed")

// Server is an NFSv3 server over a fixed set of exports: one serving
// instance, with its own write verifier. It is safe for concurrent use.
type Server struct {
	log     *slog.Logger
	exports []exportState
	verf    [8]byte
	nfsPort int
	rpc     *rpc.Server
	mount   *mount.Handler
	nfs     *nfs3.Handler
	clients *clientTable
	onEvent func(Event)

	// stop ends every Serve call; serving counts them.
	stop    context.CancelFunc
	stopped context.Context
	mu      sync.Mutex
	closed  bool
	serving sync.WaitGroup
}

type exportState struct {
	dir  string
	opts export.Options
	fs   *fh.FS
	uuid string // fs.UUID(), kept for Status after Close
}

// New checks cfg, opens the exported directories and returns a Server with
// a new write verifier. The Server holds the directories open until Close.
func New(cfg Config) (*Server, error) {
	if len(cfg.Exports) == 0 {
		return nil, errors.New("nfsexport: no exports")
	}
	if err := checkExports(cfg.Exports); err != nil {
		return nil, err
	}
	if cfg.NFSPort < 0 || cfg.NFSPort > 65535 {
		return nil, fmt.Errorf("nfsexport: NFSPort %d is not a port number", cfg.NFSPort)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{log: log, nfsPort: cfg.NFSPort, clients: newClientTable(DefaultMaxClients), onEvent: cfg.OnEvent}
	rand.Read(s.verf[:]) // never fails (crypto/rand)
	s.exports = make([]exportState, len(cfg.Exports))
	for i, ec := range cfg.Exports {
		fs, err := fh.Open(ec.Dir, ec.Options.ID)
		if err != nil {
			s.closeFS()
			return nil, fmt.Errorf("nfsexport: export %s: dir %s: %w", ec.Options.Path, ec.Dir, err)
		}
		s.exports[i] = exportState{dir: ec.Dir, opts: ec.Options, fs: fs, uuid: fs.UUID().String()}
		s.exports[i].opts.Networks = append([]netip.Prefix(nil), ec.Options.Networks...)
	}
	nfsExports := make([]nfs3.Export, len(s.exports))
	mountExports := make([]mount.Export, len(s.exports))
	for i := range s.exports {
		e := &s.exports[i]
		nfsExports[i] = nfs3.Export{FS: e.fs, Opts: &e.opts}
		mountExports[i] = mount.Export{Opts: &e.opts, FS: e.fs}
	}
	var err error
	s.nfs, err = nfs3.NewHandler(nfs3.Config{
		Exports:  nfsExports,
		Verifier: s.verf,
		Seen:     func(id uint32, client netip.Addr) { s.clients.see(id, client, time.Now()) },
		Refused:  s.callRefused,
		Logger:   log,
	})
	if err != nil {
		s.closeFS()
		return nil, fmt.Errorf("nfsexport: %w", err)
	}
	s.mount, err = mount.NewHandler(mount.Config{
		Exports:   mountExports,
		Logger:    log,
		OnMount:   func(e mount.Entry) { s.event(Event{Time: e.Time, Kind: KindMount, Export: e.Path, Client: e.Client}) },
		OnUnmount: func(e mount.Entry) { s.event(Event{Kind: KindUnmount, Export: e.Path, Client: e.Client}) },
		OnRefuse:  s.refused,
	})
	if err != nil {
		s.closeFS()
		return nil, fmt.Errorf("nfsexport: %w", err)
	}
	rc := cfg.RPC
	if rc.Logger == nil {
		rc.Logger = log
	}
	s.rpc = rpc.NewServer(rc)
	s.rpc.Register(nfs3.Program, nfs3.Version, s.nfs)
	s.mount.Register(s.rpc)
	if cfg.Portmap {
		for v := uint32(2); v <= 4; v++ {
			s.rpc.Register(portmap.Program, v, rpc.HandlerFunc(s.portmap))
		}
	}
	s.stopped, s.stop = context.WithCancel(context.Background())
	return s, nil
}

// checkExports checks every export's options and that IDs and paths are
// unique, naming the export and the field.
func checkExports(exports []ExportConfig) error {
	ids := map[uint32]string{}
	paths := map[string]string{}
	for _, ec := range exports {
		o := &ec.Options
		if err := o.Validate(); err != nil {
			return fmt.Errorf("nfsexport: export %s: %w", o.Path, err)
		}
		switch {
		case ec.Dir == "":
			return fmt.Errorf("nfsexport: export %s: dir is required", o.Path)
		case !filepath.IsAbs(ec.Dir):
			return fmt.Errorf("nfsexport: export %s: dir %q is not an absolute path", o.Path, ec.Dir)
		}
		if other, dup := ids[o.ID]; dup {
			return fmt.Errorf("nfsexport: export %s: id %d is also the id of export %s", o.Path, o.ID, other)
		}
		ids[o.ID] = o.Path
		p := strings.TrimRight(o.Path, "/")
		if p == "" {
			p = "/"
		}
		if other, dup := paths[p]; dup {
			return fmt.Errorf("nfsexport: export %s: path is also the path of another export (%s)", o.Path, other)
		}
		paths[p] = o.Path
	}
	return nil
}

// closeFS closes the exports' directories; it runs once (from Close, or
// from New when it fails).
func (s *Server) closeFS() error {
	if s.nfs != nil {
		s.nfs.Close() // the files it keeps open, before their file systems
	}
	var errs []error
	for i := range s.exports {
		if fs := s.exports[i].fs; fs != nil {
			if err := fs.Close(); err != nil {
				errs = append(errs, fmt.Errorf("export %s: %w", s.exports[i].opts.Path, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Verifier returns the write verifier of this serving instance: chosen at
// random by New, and chosen anew when a write or sync fails (see package
// nfs3), so that clients resend what they had not committed.
func (s *Server) Verifier() [8]byte { return s.nfs.Verifier() }

// Serve serves NFS, MOUNT and (with Config.Portmap) the portmapper on ln
// until ctx ends or Close is called; it then closes ln, waits for the calls
// in progress and returns nil. Serve may be called for several listeners at
// the same time: they share the programs, the mount list and the RPC
// limits. After Close it returns ErrClosed at once.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.serving.Add(1)
	s.mu.Unlock()
	defer s.serving.Done()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.stopped, cancel)()

	verf := s.Verifier()
	s.log.Info("nfs: serving", "addr", ln.Addr().String(), "verifier", fmt.Sprintf("%x", verf), "exports", len(s.exports))
	s.event(Event{Kind: KindServing, Detail: fmt.Sprintf("listening on %s, write verifier %x", ln.Addr(), verf)})
	err := s.rpc.Serve(ctx, ln)
	s.log.Info("nfs: stopped serving", "addr", ln.Addr().String())
	return err
}

// Close stops every Serve call, waits for them to return and closes the
// exported directories. Later Serve calls fail with ErrClosed.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.stop()
	s.serving.Wait()
	return s.closeFS()
}

// portmap answers a portmapper call: NFS and MOUNT are on NFSPort, or on
// the port the call arrived on, where the portmapper itself is too.
func (s *Server) portmap(ctx context.Context, call *rpc.Call, reply *xdr.Encoder) error {
	var here uint32
	if ta, ok := call.Local.(*net.TCPAddr); ok {
		here = uint32(ta.Port)
	}
	port := here
	if s.nfsPort != 0 {
		port = uint32(s.nfsPort)
	}
	return portmap.New([]portmap.Mapping{
		{Prog: nfs3.Program, Vers: nfs3.Version, Prot: portmap.ProtoTCP, Port: port},
		{Prog: mount.Program, Vers: mount.Version, Prot: portmap.ProtoTCP, Port: port},
		{Prog: portmap.Program, Vers: 2, Prot: portmap.ProtoTCP, Port: here},
		{Prog: portmap.Program, Vers: 3, Prot: portmap.ProtoTCP, Port: here},
		{Prog: portmap.Program, Vers: 4, Prot: portmap.ProtoTCP, Port: here},
	}).ServeRPC(ctx, call, reply)
}
