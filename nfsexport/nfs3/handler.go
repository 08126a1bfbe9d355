// Package nfs3 is the NFSv3 program (RFC 1813) of blockrep's NFS server: an
// rpc.Handler that serves every procedure on file descriptors, never on
// paths, so that a file handle keeps working across renames, remounts and a
// failover to a node holding a block-identical copy of the file system.
//
// Each call runs in two phases:
//
//  1. As the server (root): the handles in the arguments are opened with
//     open_by_handle_at (package fh), which needs CAP_DAC_READ_SEARCH. The
//     export is found by the id in the handle; a client outside the export's
//     networks gets NFS3ERR_ACCES, a credential the export refuses
//     AUTH_TOOWEAK, a mutating procedure on a read-only export NFS3ERR_ROFS.
//  2. As the client (the identity export.Options.Identity maps its AUTH_SYS
//     credential to): the OS thread is locked and its fsuid, fsgid and
//     supplementary groups are set, as knfsd does, so that the kernel checks
//     every *at call, chmod, chown and utimes against the client's identity.
//     READ and WRITE use an fd opened by root, so their access is checked
//     explicitly with faccessat2(AT_EACCESS) under the identity, with knfsd's
//     owner override (the owner may read and write its own file whatever the
//     mode bits say, since a client checks modes at open and may chmod after).
//
// Names are followed only with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|
// RESOLVE_NO_MAGICLINKS|RESOLVE_NO_XDEV) and only one component at a time,
// so no procedure follows a symlink or leaves the export's file system.
//
// Durability: WRITE UNSTABLE is answered UNSTABLE (the data is in the page
// cache); DATA_SYNC is answered after fdatasync and FILE_SYNC after fsync of
// the file; COMMIT fsyncs. WRITE and COMMIT return the handler's write
// verifier, which the caller chooses anew for every serving instance (start
// and each takeover) so that clients resend what was not committed.
package nfs3

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blockrep/blockrep/internal/lograte"
	"github.com/blockrep/blockrep/nfsexport/export"
	"github.com/blockrep/blockrep/nfsexport/fh"
	"github.com/blockrep/blockrep/nfsexport/rpc"
	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// Export is one exported directory: its handles and its policy.
type Export struct {
	FS   *fh.FS
	Opts *export.Options
}

// Config configures a Handler.
type Config struct {
	// Exports are the exported directories; their ids (Opts.ID, equal to
	// FS.Export()) must be unique.
	Exports []Export
	// Verifier is the write verifier returned by WRITE and COMMIT. It must
	// be new for every serving instance (see package doc).
	Verifier [8]byte
	// Seen, if not nil, is called for every admitted call with the export's
	// id and the client's address (for status: which clients use an export).
	Seen func(exportID uint32, client netip.Addr)
	// Refused, if not nil, is told of a call refused because the client
	// is in none of the export's networks, at most once per client and
	// export a minute (RefuseInterval), with the count of the refusals
	// since the last one told. The log line has the same limit.
	Refused func(exportPath string, client netip.Addr, err error, suppressed int)
	// OpenFiles bounds the files kept open between calls (see fdCache);
	// 0 means DefaultOpenFiles. Either is cut to leave an eighth of
	// RLIMIT_NOFILE (at least 1024) to the rest of the process.
	OpenFiles int
	// Logger receives server-side failures; nil means slog.Default().
	Logger *slog.Logger
}

// RefuseInterval is how often a refused client is logged and reported per
// export, so that a scanner costs a few log lines, not one per call.
const RefuseInterval = time.Minute

// Handler serves NFSv3. It is safe for concurrent use.
type Handler struct {
	exports map[uint32]*Export
	verf    atomic.Pointer[[8]byte] // see resetVerifier
	seen    func(uint32, netip.Addr)
	refused func(string, netip.Addr, error, int)
	refuses *lograte.Limiter
	fds     *fdCache
	dirents sync.Pool // *[]byte of direntBufSize, getdents64 buffers
	log     *slog.Logger
	// euid, egid and groups are the process's, which a thread gets back
	// after serving a call as a client.
	euid, egid int
	groups     []int
}

// NewHandler returns a Handler for cfg.
func NewHandler(cfg Config) (*Handler, error) {
	h := &Handler{exports: make(map[uint32]*Export), seen: cfg.Seen, refused: cfg.Refused,
		refuses: lograte.New(RefuseInterval, 4096), log: cfg.Logger}
	if cfg.OpenFiles <= 0 {
		cfg.OpenFiles = DefaultOpenFiles
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil {
		// Room for sockets and the rest of the process: an eighth of the
		// limit, at least 1024.
		room := int64(lim.Cur) - max(1024, int64(lim.Cur/8))
		if room < int64(cfg.OpenFiles) {
			cfg.OpenFiles = int(max(room, 16))
		}
	}
	h.fds = newFDCache(cfg.OpenFiles)
	h.dirents.New = func() any { b := make([]byte, direntBufSize); return &b }
	verf := cfg.Verifier
	h.verf.Store(&verf)
	if h.log == nil {
		h.log = slog.Default()
	}
	groups, err := unix.Getgroups()
	if err != nil {
		return nil, fmt.Errorf("nfs3: getgroups: %w", err)
	}
	h.groups, h.euid, h.egid = groups, unix.Geteuid(), unix.Getegid()
	for i := range cfg.Exports {
		e := &cfg.Exports[i]
		if e.FS == nil || e.Opts == nil {
			return nil, fmt.Errorf("nfs3: export %d: FS and Opts are required", i)
		}
		if e.FS.Export() != e.Opts.ID {
			return nil, fmt.Errorf("nfs3: export %s: FS has id %d, options %d", e.Opts.Path, e.FS.Export(), e.Opts.ID)
		}
		if _, dup := h.exports[e.Opts.ID]; dup {
			return nil, fmt.Errorf("nfs3: export %s: id %d used twice", e.Opts.Path, e.Opts.ID)
		}
		h.exports[e.Opts.ID] = e
	}
	return h, nil
}

// Close closes the files the handler keeps open, so that the file system
// can be unmounted. Call it after the last call returned.
func (h *Handler) Close() { h.fds.close() }

// Verifier returns the write verifier WRITE and COMMIT answer now. It is
// Config.Verifier until a write or sync fails (see resetVerifier).
func (h *Handler) Verifier() [8]byte { return *h.verf.Load() }

// procedure is one NFSv3 procedure: it decodes its arguments from d and
// appends its result (status first) to e. It returns an rpc error to answer
// something other than SUCCESS (GARBAGE_ARGS, AUTH_TOOWEAK).
type procedure func(h *Handler, c *call, d *xdr.Decoder, e *xdr.Encoder) error

// procs is indexed by procedure number.
var procs = [...]procedure{
	ProcNull:        func(*Handler, *call, *xdr.Decoder, *xdr.Encoder) error { return nil },
	ProcGetattr:     (*Handler).getattr,
	ProcSetattr:     (*Handler).setattr,
	ProcLookup:      (*Handler).lookup,
	ProcAccess:      (*Handler).access,
	ProcReadlink:    (*Handler).readlink,
	ProcRead:        (*Handler).read,
	ProcWrite:       (*Handler).write,
	ProcCreate:      (*Handler).create,
	ProcMkdir:       (*Handler).mkdir,
	ProcSymlink:     (*Handler).symlink,
	ProcMknod:       (*Handler).mknod,
	ProcRemove:      (*Handler).remove,
	ProcRmdir:       (*Handler).rmdir,
	ProcRename:      (*Handler).rename,
	ProcLink:        (*Handler).link,
	ProcReaddir:     (*Handler).readdir,
	ProcReaddirplus: (*Handler).readdirplus,
	ProcFsstat:      (*Handler).fsstat,
	ProcFsinfo:      (*Handler).fsinfo,
	ProcPathconf:    (*Handler).pathconf,
	ProcCommit:      (*Handler).commit,
}

// ServeRPC implements rpc.Handler.
// The system calls of a call cannot be interrupted, so ctx is not used:
// a call ends when its last system call returns.
func (h *Handler) ServeRPC(_ context.Context, rc *rpc.Call, reply *xdr.Encoder) error {
	if int(rc.Proc) >= len(procs) {
		return rpc.ErrProcUnavail
	}
	c := &call{rpc: rc, h: h, remote: rc.Client()}
	defer c.releaseFDs()
	return procs[rc.Proc](h, c, &rc.Args, reply)
}

// call is the state of one call as it is served.
type call struct {
	rpc    *rpc.Call
	h      *Handler
	remote netip.Addr
	exp    *Export
	id     export.Identity
	fsid   uint64
	held   []*cachedFD // from the fd cache, released when the call ends
	opened []int       // opened for this call alone, closed when it ends
}

func (c *call) releaseFDs() {
	for _, e := range c.held {
		c.h.fds.release(e)
	}
	for _, fd := range c.opened {
		unix.Close(fd)
	}
}

// errGarbage wraps a decoding error as GARBAGE_ARGS.
func errGarbage(err error) error { return fmt.Errorf("%w: %v", rpc.ErrGarbageArgs, err) }

// getHandle decodes an nfs_fh3.
func getHandle(d *xdr.Decoder, field string) ([]byte, error) {
	b, err := d.Opaque(field, fh.MaxSize)
	if err != nil {
		return nil, errGarbage(err)
	}
	return b, nil
}

// getName decodes a filename3 and checks it names one entry: not empty, no
// "/" and no NUL (NFS3ERR_ACCES, as knfsd answers), at most MaxName bytes
// (NFS3ERR_NAMETOOLONG).
func getName(d *xdr.Decoder, field string) (string, *Error, error) {
	b, err := d.Opaque(field, 1<<16)
	if err != nil {
		return "", nil, errGarbage(err)
	}
	name := string(b)
	switch {
	case len(name) > MaxName:
		return "", failStatus(ErrNameTooLong, "name", fmt.Errorf("%s: %d bytes, at most %d", field, len(name), MaxName)), nil
	case name == "":
		return "", failStatus(ErrAcces, "name", fmt.Errorf("%s: empty", field)), nil
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '/' || name[i] == 0 {
			return "", failStatus(ErrAcces, "name", fmt.Errorf("%s %q: contains / or NUL", field, name)), nil
		}
	}
	return name, nil, nil
}

// bind finds the export of handle b and applies its policy to the call:
// the client's network, its credential, and (for mutating procedures)
// read-only. On the first call of a procedure it fixes c.exp; a second
// handle (RENAME, LINK) must name the same export (NFS3ERR_XDEV).
func (h *Handler) bind(c *call, b []byte, mutating bool) (fh.Handle, *Error, error) {
	hd, err := fh.Decode(b)
	if err != nil {
		return hd, fail("decode handle", err), nil
	}
	exp, ok := h.exports[hd.Export]
	if !ok {
		return hd, failStatus(ErrStale, "find export", fmt.Errorf("no export with id %d", hd.Export)), nil
	}
	if c.exp != nil {
		if exp != c.exp {
			return hd, failStatus(ErrXDev, "second handle", fmt.Errorf("export %d, first handle's %d", hd.Export, c.exp.Opts.ID)), nil
		}
		return hd, nil, nil
	}
	if err := exp.Opts.Admit(c.remote); err != nil {
		if ok, suppressed := h.refuses.Allow(c.remote.String()+" "+exp.Opts.Path, time.Now()); ok {
			h.log.Info("nfs: client refused", "client", c.remote, "export", exp.Opts.Path, "err", err, "suppressed", suppressed)
			if h.refused != nil {
				h.refused(exp.Opts.Path, c.remote, err, suppressed)
			}
		}
		return hd, failStatus(ErrAcces, "admit", err), nil
	}
	id, err := exp.Opts.Identity(c.rpc.Cred)
	if err != nil {
		return hd, nil, fmt.Errorf("%w: %v", rpc.ErrAuthTooWeak, err)
	}
	if mutating && exp.Opts.ReadOnly {
		return hd, failStatus(ErrROFS, "read-only export", fmt.Errorf("export %s is read-only", exp.Opts.Path)), nil
	}
	c.exp, c.id, c.fsid = exp, id, fsidOf(exp.FS.UUID())
	if h.seen != nil {
		h.seen(exp.Opts.ID, c.remote)
	}
	return hd, nil, nil
}

// open binds the call to b's export and opens b with flags (as root),
// from the fd cache when it can, and returns the file's attributes. The fd
// belongs to the call: the caller must not close it. A file whose last
// link is gone is STALE.
func (h *Handler) open(c *call, b []byte, flags int, mutating bool) (int, *unix.Stat_t, *Error, error) {
	hd, nerr, err := h.bind(c, b, mutating)
	if nerr != nil || err != nil {
		return -1, nil, nerr, err
	}
	k := fdKey{string(b), flags}
	if cacheable(flags) {
		if e, ok := h.fds.get(k.handle, flags); ok {
			c.held = append(c.held, e)
			st, nerr := c.checkLinked(e)
			if nerr == nil && flags&unix.O_DIRECTORY != 0 && st.Mode&unix.S_IFMT != unix.S_IFDIR {
				nerr = failStatus(ErrNotDir, "open", errNotDir) // an O_PATH fd of a non-directory served
			}
			if nerr != nil {
				return -1, nil, nerr, nil
			}
			return e.fd, st, nil, nil
		}
	}
	fd, err := c.exp.FS.Open(hd, flags)
	if err != nil {
		return -1, nil, h.openError(c, flags, err), nil
	}
	if !cacheable(flags) {
		c.opened = append(c.opened, fd)
		st := new(unix.Stat_t)
		if err := unix.Fstat(fd, st); err != nil {
			return -1, nil, fail("fstat", err), nil
		}
		return fd, st, nil, nil
	}
	if flags == unix.O_RDONLY {
		// A client's READs of a file arrive many at once and a little out
		// of order, which the kernel's readahead takes for a random
		// reader; a doubled window (as for a sequential one) measured
		// 870 -> 1200 MiB/s on a cold 1 GiB file here, and the 4 KiB
		// random reads kept their rate. Only a hint: an error is ignored.
		unix.Fadvise(fd, 0, 0, unix.FADV_SEQUENTIAL)
	}
	e := h.fds.add(k, fd)
	c.held = append(c.held, e)
	st, nerr := c.checkLinked(e)
	if nerr != nil {
		return -1, nil, nerr, nil
	}
	return e.fd, st, nil, nil
}

// openError chooses the status of a failed open by handle: the handle's
// (BADHANDLE, STALE), a symlink met with O_NOFOLLOW (INVAL, or NOTDIR
// where a directory was wanted), or the server's own trouble, logged.
func (h *Handler) openError(c *call, flags int, err error) *Error {
	var errno unix.Errno
	errors.As(err, &errno)
	switch {
	case errors.Is(err, fh.ErrStale), errors.Is(err, fh.ErrBadHandle):
	case errno == unix.ENOTDIR, errno == unix.ELOOP && flags&unix.O_DIRECTORY != 0:
		return failStatus(ErrNotDir, "open", err)
	case errno == unix.ELOOP:
		return failStatus(ErrInval, "open", err)
	default:
		h.log.Warn("nfs: open by handle", "export", c.exp.Opts.Path, "err", err)
	}
	return fail("open by handle", err)
}

// checkLinked returns the attributes of a cached file, or STALE for one
// whose last name was removed (an open file, or one still in the inode
// cache, outlives its names), which it drops from the cache.
func (c *call) checkLinked(e *cachedFD) (*unix.Stat_t, *Error) {
	st := new(unix.Stat_t)
	if err := unix.Fstat(e.fd, st); err != nil {
		return nil, fail("fstat", err)
	}
	if st.Nlink == 0 {
		c.h.fds.evictEntry(e)
		return nil, failStatus(ErrStale, "open", errors.New("the file was removed"))
	}
	return st, nil
}

// asClient runs fn with the calling thread's fsuid, fsgid and
// supplementary groups set to the call's identity, as knfsd does. Root
// squashed to nobody thereby loses CAP_DAC_OVERRIDE and the other file
// capabilities for fn's system calls. If the thread's credentials cannot be
// restored, the thread stays locked, and so dies with its goroutine instead
// of serving another one with the wrong identity.
func (c *call) asClient(fn func() error) error {
	id := c.id
	if id.UID == 0 && id.GID == 0 && len(id.Groups) == 0 {
		return fn()
	}
	runtime.LockOSThread()
	groups := make([]int, len(id.Groups))
	for i, g := range id.Groups {
		groups[i] = int(g)
	}
	if err := unix.Setgroups(groups); err != nil {
		if rerr := c.restoreCreds(); rerr != nil {
			return fmt.Errorf("setgroups: %v; restoring: %w", err, rerr)
		}
		runtime.UnlockOSThread()
		return fmt.Errorf("setgroups %v: %w", id.Groups, err)
	}
	// setfsuid/setfsgid report no error; they are checked by reading back.
	unix.Setfsgid(int(id.GID))
	unix.Setfsuid(int(id.UID))
	if got, _ := unix.SetfsuidRetUid(-1); got != int(id.UID) {
		if rerr := c.restoreCreds(); rerr != nil {
			return fmt.Errorf("setfsuid %d did not take; restoring: %w", id.UID, rerr)
		}
		runtime.UnlockOSThread()
		return fmt.Errorf("setfsuid %d did not take (fsuid %d)", id.UID, got)
	}
	err := fn()
	if rerr := c.restoreCreds(); rerr != nil {
		return fmt.Errorf("restoring the thread's credentials: %w", rerr)
	}
	runtime.UnlockOSThread()
	return err
}

// restoreCreds gives the thread back the process's credentials: fsuid and
// fsgid its effective ids, and its supplementary groups, as NewHandler
// found them.
func (c *call) restoreCreds() error {
	h := c.h
	unix.Setfsuid(h.euid)
	unix.Setfsgid(h.egid)
	if got, _ := unix.SetfsuidRetUid(-1); got != h.euid {
		return fmt.Errorf("fsuid is %d, not %d", got, h.euid)
	}
	if got, _ := unix.SetfsgidRetGid(-1); got != h.egid {
		return fmt.Errorf("fsgid is %d, not %d", got, h.egid)
	}
	return unix.Setgroups(h.groups)
}

// CacheReply implements rpc.ReplyCacher: the procedures that change the
// file system in a way a second run would answer differently (a REMOVE
// that succeeded would answer NOENT) are answered from the reply cache
// when a client retransmits them (SETATTR too: a guarded one would fail
// NOT_SYNC the second time). WRITE gives the same result run twice, and
// COMMIT and the reads are idempotent.
func (h *Handler) CacheReply(proc uint32) bool {
	switch proc {
	case ProcSetattr, ProcCreate, ProcMkdir, ProcSymlink, ProcMknod, ProcRemove, ProcRmdir, ProcRename, ProcLink:
		return true
	}
	return false
}
