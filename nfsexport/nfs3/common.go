package nfs3

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// status appends the status of a failed call (logging the server's own
// faults, which a client cannot explain) and reports whether the call
// failed. A nil nerr appends OK.
func (h *Handler) status(c *call, e *xdr.Encoder, nerr *Error) bool {
	if nerr == nil {
		e.Uint32(uint32(OK))
		return false
	}
	if nerr.Status == ErrServerFault || nerr.Status == ErrIO {
		path := ""
		if c.exp != nil {
			path = c.exp.Opts.Path
		}
		h.log.Warn("nfs: call failed", "proc", c.rpc.Proc, "client", c.remote, "export", path, "err", nerr)
	}
	e.Uint32(uint32(nerr.Status))
	return true
}

// fstat returns the attributes of fd, or nil if they cannot be read (a
// post_op_attr may then be absent).
func fstat(fd int) *unix.Stat_t {
	if fd < 0 {
		return nil
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return nil
	}
	return &st
}

// procPath is the /proc/self/fd path of fd, through which chmod, utimes and
// linkat reach a file that is open only as an O_PATH fd.
func procPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// mayAccess checks that the call's identity may access the file fd with
// mode (unix.R_OK, W_OK, X_OK). It runs on a thread already running as the
// client (inside asClient), so that a procedure checks and acts under one
// switch of the thread's credentials. With ownerOverride the owner of the
// file is allowed whatever its mode bits (knfsd's NFSD_MAY_OWNER_OVERRIDE
// for READ, WRITE and truncation: the client checked the mode when it
// opened the file, which may have been chmodded since). Root (not
// squashed) is allowed by the kernel's own rules.
func (c *call) mayAccess(fd int, st *unix.Stat_t, mode uint32, ownerOverride bool) error {
	if ownerOverride && st != nil && st.Uid == c.id.UID {
		return nil
	}
	return unix.Faccessat2(fd, "", mode, unix.AT_EMPTY_PATH|unix.AT_EACCESS)
}

// runAs runs fn as the call's identity and converts its error.
func (c *call) runAs(op string, fn func() error) *Error {
	if err := c.asClient(fn); err != nil {
		return fail(op, err)
	}
	return nil
}

// resetVerifier gives the handler a new write verifier. It is called when
// a write or a sync fails: Linux reports a writeback error to one fsync
// and then forgets it, so a client whose COMMIT failed could otherwise
// retry, get OK with the same verifier and believe lost data stable.
// A new verifier makes every client resend its uncommitted writes, as
// knfsd does (nfsd_reset_write_verifier).
func (h *Handler) resetVerifier(reason error) {
	var v [8]byte
	if _, err := rand.Read(v[:]); err != nil {
		// crypto/rand does not fail on Linux; a changed verifier is what
		// matters, so count up from the old one.
		old := *h.verf.Load()
		v = old
		v[7]++
	}
	h.verf.Store(&v)
	h.log.Warn("nfs: write verifier changed after an I/O error; clients will resend uncommitted writes", "err", reason)
}

// The reasons of statuses chosen by the protocol rather than by an errno.
var (
	errNotSymlink = errors.New("not a symbolic link")
	errNotRegular = errors.New("not a regular file")
	errNotDir     = errors.New("not a directory")
)

// typeError reports a file of the wrong type for a procedure.
func typeError(op string, st *unix.Stat_t, want uint32) *Error {
	switch {
	case want == unix.S_IFLNK:
		return failStatus(ErrInval, op, errNotSymlink)
	case want == unix.S_IFDIR:
		return failStatus(ErrNotDir, op, errNotDir)
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return failStatus(ErrIsDir, op, fmt.Errorf("%w: a directory", errNotRegular))
	}
	return failStatus(ErrInval, op, errNotRegular)
}
