package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime/pprof"

	"github.com/blockrep/blockrep/nfsexport"
	"github.com/blockrep/blockrep/nfsexport/export"
)

// NFSServeOptions configure ServeNFS.
type NFSServeOptions struct {
	// Dir is exported, with Dir itself as its MOUNT path.
	Dir string
	// Listen is the TCP address of NFS and MOUNT.
	Listen string
	// CPUProfile, if set, receives a CPU profile of the whole serving
	// time.
	CPUProfile string
	Logger     *slog.Logger
}

// NFSExportOptions is the export blockbench -nfs measures: Dir as its own
// MOUNT path, to loopback clients, read-write, no root squash (as
// ganesha's export is configured).
func NFSExportOptions(dir string) export.Options {
	return export.Options{
		ID:       1,
		Path:     dir,
		Networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Squash:   export.NoRootSquash,
		AnonUID:  export.DefaultAnonID,
		AnonGID:  export.DefaultAnonID,
	}
}

// ServeNFS runs blockrep's NFS server on o.Dir until ctx ends: the process
// blockbench -nfs starts (blockbench -nfs-serve-dir), so that the server
// does not share a Go runtime with the client, as ganesha does not.
func ServeNFS(ctx context.Context, o NFSServeOptions) (err error) {
	if o.CPUProfile != "" {
		f, err := os.Create(o.CPUProfile)
		if err != nil {
			return fmt.Errorf("bench: nfs server: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return fmt.Errorf("bench: nfs server: %w", err)
		}
		defer func() {
			pprof.StopCPUProfile()
			err = errors.Join(err, f.Close())
		}()
	}
	// As blockrepd will: room for the fd cache (ganesha raises its limit
	// too).
	if _, err := nfsexport.RaiseOpenFileLimit(); err != nil {
		return fmt.Errorf("bench: nfs server: %w", err)
	}
	srv, err := nfsexport.New(nfsexport.Config{
		Exports: []nfsexport.ExportConfig{{Dir: o.Dir, Options: NFSExportOptions(o.Dir)}},
		Logger:  o.Logger,
	})
	if err != nil {
		return fmt.Errorf("bench: nfs server on %s: %w", o.Dir, err)
	}
	defer func() { err = errors.Join(err, srv.Close()) }()
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("bench: nfs server: %w", err)
	}
	if err := srv.Serve(ctx, ln); err != nil && ctx.Err() == nil {
		return fmt.Errorf("bench: nfs server on %s: %w", o.Listen, err)
	}
	return nil
}
