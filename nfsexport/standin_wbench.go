//go:build wbench_standin

// This file is a stand-in for the nfsexport package that another branch
// writes: the API blockbench -nfs calls (New, Serve, Close), serving MOUNT
// MNT and the stubbed NFSv3 procedures, so that branch w-bench builds and
// its blockrep side can be exercised before the merge. It is compiled only
// with -tags wbench_standin; delete it when the real package is merged.

package nfsexport

import (
	"context"
	"errors"
	"log/slog"
	"net"

	"github.com/blockrep/blockrep/nfsexport/export"
	"github.com/blockrep/blockrep/nfsexport/fh"
	"github.com/blockrep/blockrep/nfsexport/nfs3"
	"github.com/blockrep/blockrep/nfsexport/rpc"
	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// ExportConfig is one exported directory.
type ExportConfig struct {
	Dir     string
	Options export.Options
}

// Event is a server event.
type Event struct{}

// Config configures a Server.
type Config struct {
	Exports []ExportConfig
	Portmap bool
	RPC     rpc.Config
	Logger  *slog.Logger
	OnEvent func(Event)
}

// Server serves NFSv3 and MOUNT v3.
type Server struct {
	rpc *rpc.Server
	fss []*fh.FS
}

// New opens the exports.
func New(cfg Config) (*Server, error) {
	s := &Server{rpc: rpc.NewServer(cfg.RPC)}
	var exps []nfs3.Export
	paths := map[string][]byte{}
	for i := range cfg.Exports {
		e := &cfg.Exports[i]
		f, err := fh.Open(e.Dir, e.Options.ID)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.fss = append(s.fss, f)
		exps = append(exps, nfs3.Export{FS: f, Opts: &e.Options})
		paths[e.Options.Path] = f.RootBytes()
	}
	h, err := nfs3.NewHandler(nfs3.Config{Exports: exps, Logger: cfg.Logger})
	if err != nil {
		s.Close()
		return nil, err
	}
	s.rpc.Register(nfs3.Program, nfs3.Version, h)
	s.rpc.Register(100005, 3, rpc.HandlerFunc(func(ctx context.Context, c *rpc.Call, e *xdr.Encoder) error {
		switch c.Proc {
		case 0:
			return nil
		case 1:
			p, err := c.Args.String("dirpath", 1024)
			if err != nil {
				return rpc.ErrGarbageArgs
			}
			root, ok := paths[p]
			if !ok {
				e.Uint32(2) // MNT3ERR_NOENT
				return nil
			}
			e.Uint32(0)
			e.Opaque(root)
			e.Uint32(1)
			e.Uint32(rpc.AuthSys)
			return nil
		}
		return rpc.ErrProcUnavail
	}))
	return s, nil
}

// Serve serves ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error { return s.rpc.Serve(ctx, ln) }

// Close closes the exports.
func (s *Server) Close() error {
	var errs []error
	for _, f := range s.fss {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}
