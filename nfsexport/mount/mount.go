// Package mount is the MOUNT program version 3 (RFC 1813 appendix I) of
// blockrep's NFS server: an rpc.Handler that gives a client the root file
// handle of an export (MNT), keeps the list of mounts (DUMP, UMNT, UMNTALL)
// and lists the exports (EXPORT).
//
// MNT takes the export's MOUNT path exactly as export.Options.Path gives it;
// trailing slashes are ignored ("/web/" is "/web"). A subdirectory of an
// export cannot be mounted (MNT3ERR_NOENT), unlike with knfsd: an export is
// mounted at its root. A client the export's networks do not admit gets
// MNT3ERR_ACCES. The answer carries the root handle and the flavors the
// export accepts: AUTH_SYS, and AUTH_NONE when the export allows it.
//
// What a client is told is limited to the exports that admit it: EXPORT
// lists only those (each with its networks as groups), and DUMP only their
// mounts. A scanner learns nothing about the others; and libnfs, which with
// its default auto-traverse-mounts calls EXPORT after MNT and then mounts
// every export nested below the one asked for, fails the whole mount when
// one of those nested mounts is refused (libnfs 4.0), so it must not see an
// export that would refuse it.
//
// Refused MNT calls (no such export, client not admitted) are logged at Info
// naming the client and the path, and passed to Config.OnRefuse, at most once
// per client per RefuseInterval: the next one carries the count of those
// suppressed, so that a scanner costs a line a minute.
//
// The mount list lives in memory only. NFSv3 is stateless and the list is
// advisory (knfsd's rmtab is too: clients that go away without UMNT stay
// in it), so it is kept for status and events, and a restart or failover
// starts it empty. It holds at most Config.MaxMounts entries, one per
// client and export; when full, the least recently mounted is dropped.
//
// MOUNT calls are served whatever their credential flavor, as knfsd's
// mountd does; the export's credential policy applies to the NFS calls.
//
// MOUNT version 1 is not served (a call gets PROG_MISMATCH 3–3): its MNT
// answers a fixed 32-byte fhandle (FHSIZE), and a handle of package fh is
// 26 bytes of header plus the kernel handle (34 bytes on ext4, 38 on xfs),
// so it cannot be answered. Version 1 goes with NFSv2, which is not served
// either.
package mount

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/blockrep/blockrep/internal/lograte"
	"github.com/blockrep/blockrep/nfsexport/export"
	"github.com/blockrep/blockrep/nfsexport/fh"
	"github.com/blockrep/blockrep/nfsexport/rpc"
	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// Program and Version identify MOUNT version 3.
const (
	Program = 100005
	Version = 3
)

// The MOUNT version 3 procedures.
const (
	ProcNull    = 0
	ProcMnt     = 1
	ProcDump    = 2
	ProcUmnt    = 3
	ProcUmntAll = 4
	ProcExport  = 5
)

// Limits of the protocol.
const (
	// MaxPath is MNTPATHLEN, the longest dirpath.
	MaxPath = 1024
	// MaxName is MNTNAMLEN, the longest name (a DUMP hostname).
	MaxName = 255
)

// Status is mountstat3.
type Status uint32

// The mountstat3 values.
const (
	OK             Status = 0
	ErrPerm        Status = 1
	ErrNoEnt       Status = 2
	ErrIO          Status = 5
	ErrAcces       Status = 13
	ErrNotDir      Status = 20
	ErrInval       Status = 22
	ErrNameTooLong Status = 63
	ErrNotSupp     Status = 10004
	ErrServerFault Status = 10006
)

var statusNames = map[Status]string{
	OK: "MNT3_OK", ErrPerm: "MNT3ERR_PERM", ErrNoEnt: "MNT3ERR_NOENT", ErrIO: "MNT3ERR_IO",
	ErrAcces: "MNT3ERR_ACCES", ErrNotDir: "MNT3ERR_NOTDIR", ErrInval: "MNT3ERR_INVAL",
	ErrNameTooLong: "MNT3ERR_NAMETOOLONG", ErrNotSupp: "MNT3ERR_NOTSUPP", ErrServerFault: "MNT3ERR_SERVERFAULT",
}

// String returns the RFC 1813 name of s.
func (s Status) String() string {
	if n, ok := statusNames[s]; ok {
		return n
	}
	return fmt.Sprintf("mountstat3(%d)", uint32(s))
}

// Defaults and limits of Config.
const (
	// DefaultMaxMounts bounds the mount list unless Config says otherwise.
	DefaultMaxMounts = 4096
	// RefuseInterval is the least time between two refusals of one client
	// that are logged and reported.
	RefuseInterval = time.Minute
	// maxRefuseClients bounds the clients the refusal limiter remembers.
	maxRefuseClients = 4096
)

// Export is one exported directory: its policy and its handles.
type Export struct {
	Opts *export.Options
	FS   *fh.FS
}

// Refusal is a MNT call that was refused.
type Refusal struct {
	Time   time.Time
	Client netip.Addr
	// Path is the dirpath the client asked for.
	Path string
	// Status is what the client was answered (ErrNoEnt or ErrAcces).
	Status Status
	// Err says why.
	Err error
	// Suppressed counts the refusals of this client since the last one
	// reported, which were not.
	Suppressed int
}

// Config configures a Handler. The callbacks may be nil; they are called
// from the goroutines serving calls, possibly at the same time, and must not
// block (publishing to an events.Bus is fine).
type Config struct {
	// Exports are the exports clients may mount; their paths (trailing
	// slashes ignored) must be unique.
	Exports []Export
	// MaxMounts bounds the mount list; 0 means DefaultMaxMounts.
	MaxMounts int
	// Logger receives the refusals and dropped entries; nil means
	// slog.Default().
	Logger *slog.Logger
	// OnMount is called after every successful MNT.
	OnMount func(Entry)
	// OnUnmount is called for every entry UMNT or UMNTALL removed.
	OnUnmount func(Entry)
	// OnRefuse is called for a refused MNT, at most once per client per
	// RefuseInterval.
	OnRefuse func(Refusal)
}

// Handler serves MOUNT version 3. It is safe for concurrent use.
type Handler struct {
	exports []*Export // in configuration order (EXPORT lists them so)
	byPath  map[string]*Export
	log     *slog.Logger
	refused *lograte.Limiter

	onMount, onUnmount func(Entry)
	onRefuse           func(Refusal)

	mu     sync.Mutex
	mounts *table
}

// NewHandler returns a Handler for cfg.
func NewHandler(cfg Config) (*Handler, error) {
	h := &Handler{
		byPath:    make(map[string]*Export),
		log:       cfg.Logger,
		refused:   lograte.New(RefuseInterval, maxRefuseClients),
		onMount:   cfg.OnMount,
		onUnmount: cfg.OnUnmount,
		onRefuse:  cfg.OnRefuse,
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	limit := cfg.MaxMounts
	if limit <= 0 {
		limit = DefaultMaxMounts
	}
	h.mounts = newTable(limit)
	for i := range cfg.Exports {
		e := cfg.Exports[i]
		if e.Opts == nil || e.FS == nil {
			return nil, fmt.Errorf("mount: export %d: Opts and FS are required", i)
		}
		p := cleanPath(e.Opts.Path)
		if !strings.HasPrefix(p, "/") {
			return nil, fmt.Errorf("mount: export %d: path %q must start with /", i, e.Opts.Path)
		}
		if _, dup := h.byPath[p]; dup {
			return nil, fmt.Errorf("mount: export %s: path used twice", e.Opts.Path)
		}
		h.byPath[p] = &e
		h.exports = append(h.exports, &e)
	}
	return h, nil
}

// Register makes h serve MOUNT version 3 on s.
func (h *Handler) Register(s *rpc.Server) { s.Register(Program, Version, h) }

// Mounts returns the mount list, least recently mounted first.
func (h *Handler) Mounts() []Entry {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.mounts.list()
}

// cleanPath drops the trailing slashes of a dirpath ("/" stays "/").
func cleanPath(p string) string {
	for len(p) > 1 && strings.HasSuffix(p, "/") {
		p = p[:len(p)-1]
	}
	return p
}

type garbageErr struct{ err error }

func (g garbageErr) Error() string   { return g.err.Error() }
func (g garbageErr) Unwrap() []error { return []error{rpc.ErrGarbageArgs, g.err} }

// ServeRPC implements rpc.Handler.
func (h *Handler) ServeRPC(ctx context.Context, call *rpc.Call, reply *xdr.Encoder) error {
	client := call.Client()
	switch call.Proc {
	case ProcNull:
		return nil
	case ProcMnt:
		path, err := call.Args.String("dirpath", MaxPath)
		if err != nil {
			return garbageErr{err}
		}
		h.mnt(client, path, reply)
	case ProcDump:
		h.dump(client, reply)
	case ProcUmnt:
		path, err := call.Args.String("dirpath", MaxPath)
		if err != nil {
			return garbageErr{err}
		}
		h.umnt(client, path)
	case ProcUmntAll:
		h.umntAll(client)
	case ProcExport:
		h.export(client, reply)
	default:
		return rpc.ErrProcUnavail
	}
	return nil
}

// errNoExport is the reason of a MNT3ERR_NOENT answer.
var errNoExport = errors.New("no such export")

func (h *Handler) mnt(client netip.Addr, path string, reply *xdr.Encoder) {
	e, ok := h.byPath[cleanPath(path)]
	if !ok {
		h.refuse(client, path, ErrNoEnt, errNoExport)
		reply.Uint32(uint32(ErrNoEnt))
		return
	}
	if err := e.Opts.Admit(client); err != nil {
		h.refuse(client, path, ErrAcces, err)
		reply.Uint32(uint32(ErrAcces))
		return
	}
	reply.Uint32(uint32(OK))
	reply.Opaque(e.FS.RootBytes())
	if e.Opts.AllowAuthNone {
		reply.Uint32(2)
		reply.Uint32(rpc.AuthSys)
		reply.Uint32(rpc.AuthNone)
	} else {
		reply.Uint32(1)
		reply.Uint32(rpc.AuthSys)
	}
	entry := Entry{Client: client, Path: e.Opts.Path, Export: e.Opts.ID}
	h.mu.Lock()
	entry.Time = time.Now() // under the lock: the list is in time order
	dropped := h.mounts.add(entry)
	h.mu.Unlock()
	for _, d := range dropped {
		h.log.Debug("mount: mount list full, dropped its oldest entry", "client", d.Client, "path", d.Path, "mounted", d.Time)
	}
	if h.onMount != nil {
		h.onMount(entry)
	}
}

// refuse logs and reports a refused MNT, rate-limited per client.
func (h *Handler) refuse(client netip.Addr, path string, st Status, err error) {
	now := time.Now()
	ok, suppressed := h.refused.Allow(client.String(), now)
	if !ok {
		return
	}
	args := []any{"client", client, "path", path, "status", st, "reason", err}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	h.log.Info("mount: client refused", args...)
	if h.onRefuse != nil {
		h.onRefuse(Refusal{Time: now, Client: client, Path: path, Status: st, Err: err, Suppressed: suppressed})
	}
}

// admitted reports whether e admits client.
func admitted(e *Export, client netip.Addr) bool { return e.Opts.Admit(client) == nil }

func (h *Handler) dump(client netip.Addr, reply *xdr.Encoder) {
	h.mu.Lock()
	entries := h.mounts.list()
	h.mu.Unlock()
	for _, m := range entries {
		e, ok := h.byPath[cleanPath(m.Path)]
		if !ok || !admitted(e, client) {
			continue
		}
		reply.Optional(true)
		reply.String(m.Client.String())
		reply.String(m.Path)
	}
	reply.Optional(false)
}

func (h *Handler) umnt(client netip.Addr, path string) {
	e, ok := h.byPath[cleanPath(path)]
	if !ok {
		return
	}
	h.mu.Lock()
	entry, removed := h.mounts.remove(client, e.Opts.Path)
	h.mu.Unlock()
	if removed && h.onUnmount != nil {
		h.onUnmount(entry)
	}
}

func (h *Handler) umntAll(client netip.Addr) {
	h.mu.Lock()
	removed := h.mounts.removeClient(client)
	h.mu.Unlock()
	if h.onUnmount != nil {
		for _, e := range removed {
			h.onUnmount(e)
		}
	}
}

func (h *Handler) export(client netip.Addr, reply *xdr.Encoder) {
	for _, e := range h.exports {
		if !admitted(e, client) {
			continue
		}
		reply.Optional(true)
		reply.String(e.Opts.Path)
		for _, n := range e.Opts.Networks {
			reply.Optional(true)
			reply.String(n.String())
		}
		reply.Optional(false)
	}
	reply.Optional(false)
}
