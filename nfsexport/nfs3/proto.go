package nfs3

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/blockrep/blockrep/nfsexport/fh"
)

// Program and Version identify NFSv3 (RFC 1813).
const (
	Program = 100003
	Version = 3
)

// The NFSv3 procedures (RFC 1813 section 3.3).
const (
	ProcNull        = 0
	ProcGetattr     = 1
	ProcSetattr     = 2
	ProcLookup      = 3
	ProcAccess      = 4
	ProcReadlink    = 5
	ProcRead        = 6
	ProcWrite       = 7
	ProcCreate      = 8
	ProcMkdir       = 9
	ProcSymlink     = 10
	ProcMknod       = 11
	ProcRemove      = 12
	ProcRmdir       = 13
	ProcRename      = 14
	ProcLink        = 15
	ProcReaddir     = 16
	ProcReaddirplus = 17
	ProcFsstat      = 18
	ProcFsinfo      = 19
	ProcPathconf    = 20
	ProcCommit      = 21
)

// Status is nfsstat3.
type Status uint32

// The nfsstat3 values (RFC 1813 section 2.6).
const (
	OK             Status = 0
	ErrPerm        Status = 1
	ErrNoEnt       Status = 2
	ErrIO          Status = 5
	ErrNXIO        Status = 6
	ErrAcces       Status = 13
	ErrExist       Status = 17
	ErrXDev        Status = 18
	ErrNoDev       Status = 19
	ErrNotDir      Status = 20
	ErrIsDir       Status = 21
	ErrInval       Status = 22
	ErrFBig        Status = 27
	ErrNoSpc       Status = 28
	ErrROFS        Status = 30
	ErrMLink       Status = 31
	ErrNameTooLong Status = 63
	ErrNotEmpty    Status = 66
	ErrDQuot       Status = 69
	ErrStale       Status = 70
	ErrRemote      Status = 71
	ErrBadHandle   Status = 10001
	ErrNotSync     Status = 10002
	ErrBadCookie   Status = 10003
	ErrNotSupp     Status = 10004
	ErrTooSmall    Status = 10005
	ErrServerFault Status = 10006
	ErrBadType     Status = 10007
	ErrJukebox     Status = 10008
)

// Error is an NFS failure with its reason for the log.
type Error struct {
	Status Status
	Op     string // what failed, e.g. "openat(\"a\")"
	Err    error
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %v (nfsstat3 %d)", e.Op, e.Err, e.Status) }
func (e *Error) Unwrap() error { return e.Err }

// fail builds an *Error from a system error, choosing the status.
func fail(op string, err error) *Error {
	return &Error{Status: statusOf(err), Op: op, Err: err}
}

// failStatus builds an *Error with a chosen status.
func failStatus(s Status, op string, err error) *Error {
	return &Error{Status: s, Op: op, Err: err}
}

// statusOf maps an error from the kernel or from package fh to nfsstat3, as
// knfsd's nfserrno does.
func statusOf(err error) Status {
	var ne *Error
	if errors.As(err, &ne) {
		return ne.Status
	}
	if errors.Is(err, fh.ErrBadHandle) {
		return ErrBadHandle
	}
	if errors.Is(err, fh.ErrStale) {
		return ErrStale
	}
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return ErrServerFault
	}
	switch errno {
	case unix.EPERM:
		return ErrPerm
	case unix.ENOENT:
		return ErrNoEnt
	case unix.EIO:
		return ErrIO
	case unix.ENXIO:
		return ErrNXIO
	case unix.EACCES:
		return ErrAcces
	case unix.EEXIST:
		return ErrExist
	case unix.EXDEV:
		return ErrXDev
	case unix.ENODEV:
		return ErrNoDev
	case unix.ENOTDIR:
		return ErrNotDir
	case unix.EISDIR:
		return ErrIsDir
	case unix.EINVAL, unix.ELOOP: // ELOOP: a symlink where O_NOFOLLOW met one
		return ErrInval
	case unix.EFBIG:
		return ErrFBig
	case unix.ENOSPC:
		return ErrNoSpc
	case unix.EROFS:
		return ErrROFS
	case unix.EMLINK:
		return ErrMLink
	case unix.ENAMETOOLONG:
		return ErrNameTooLong
	case unix.ENOTEMPTY:
		return ErrNotEmpty
	case unix.EDQUOT:
		return ErrDQuot
	case unix.ESTALE:
		return ErrStale
	case unix.EOPNOTSUPP:
		return ErrNotSupp
	case unix.EAGAIN, unix.ENOMEM, unix.EMFILE, unix.ENFILE:
		return ErrJukebox
	}
	return ErrIO
}

// ftype3 values.
const (
	typeReg  = 1
	typeDir  = 2
	typeBlk  = 3
	typeChr  = 4
	typeLnk  = 5
	typeSock = 6
	typeFifo = 7
)

// stable_how values (WRITE).
const (
	Unstable = 0
	DataSync = 1
	FileSync = 2
)

// createmode3 values.
const (
	createUnchecked = 0
	createGuarded   = 1
	createExclusive = 2
)

// ACCESS bits.
const (
	accessRead    = 0x01
	accessLookup  = 0x02
	accessModify  = 0x04
	accessExtend  = 0x08
	accessDelete  = 0x10
	accessExecute = 0x20
)

// time_how values (sattr3).
const (
	dontChange      = 0
	setToServerTime = 1
	setToClientTime = 2
)

// Limits.
const (
	// MaxName is the longest name component (NAME_MAX on ext4 and xfs).
	MaxName = 255
	// MaxPath is the longest symlink target accepted.
	MaxPath = 4095
	// MaxData is the largest READ or WRITE (rtmax, wtmax) advertised and
	// accepted; it fits the rpc layer's default record size.
	MaxData = 1 << 20
	// PrefData is the preferred READ/WRITE size (rtpref, wtpref).
	PrefData = 1 << 20
	// DirPref is the preferred READDIR count (dtpref).
	DirPref = 64 << 10
	// maxDirReply bounds a READDIR(PLUS) reply whatever count a client asks.
	maxDirReply = 1 << 20
)
