// Package fh builds the NFSv3 file handles of blockrep's NFS server: the
// wire format (pure code, [Handle.Encode] and [Decode]) and, on Linux, the
// kernel side ([FS]) that turns a file into a kernel file handle with
// name_to_handle_at and a handle back into a file descriptor with
// open_by_handle_at.
//
// A handle is built only from what is the same on every node holding a
// block-identical copy of the file system: the export id from the
// configuration, the file system's UUID from its superblock, and the kernel
// handle (for ext4 and xfs: inode number and generation). The mount ID that
// name_to_handle_at also returns differs between mounts and is never part of
// a handle, so a handle a client holds keeps working after a failover to a
// node that mounted the replicated volume afresh.
//
// Wire format (all integers big-endian), at most [MaxSize] (64, NFSv3's
// FHSIZE3) bytes:
//
//	offset size field
//	0      1    version (= Version)
//	1      4    export id
//	5      16   file-system UUID
//	21     4    kernel handle type (struct file_handle.handle_type)
//	25     1    kernel handle length n (1..MaxKernelBytes)
//	26     n    kernel handle bytes (struct file_handle.f_handle)
//	26+n   0..3 zeros, so that the length is a multiple of 4 (ext4: 36 bytes, xfs: 40)
//
// Errors: a handle that fails the format's own checks (wrong length, unknown
// version, length byte not matching, padding not zero) is an [*Error] of kind [BadHandle],
// which the server answers with NFS3ERR_BADHANDLE; a well-formed handle that
// names another export or another file system, or a file that no longer
// exists, is of kind [Stale], answered with NFS3ERR_STALE. See [Kind] for why.
//
// # The file system's UUID
//
// [Open] asks the kernel with the FS_IOC_GETFSUUID ioctl (Linux 6.5+; it
// returns the superblock's UUID that ext4 and xfs hand to the VFS: ext4
// s_uuid, xfs sb_uuid, the UUID blkid shows). On an older kernel, or a file
// system that does not fill it in, it reads the superblock from the mount's
// block device, found by the mount ID in /proc/self/mountinfo and checked
// against st_dev ([SuperblockUUID] parses ext2/3/4 and xfs). blkid is not
// used: it is a process per export and, without -p, answers from a cache
// that can name the previous file system of a reused loop device. The UUID
// is on disk, so a block-identical copy has the same one. statfs's f_fsid is
// not usable: ext4 derives it from the UUID (same on a copy), but xfs from
// the device number (7:0 on /dev/loop0, 7:1 on the copy on /dev/loop1; the
// tests check both).
//
// # The export boundary
//
// [FS.Open] refuses (Stale, wrapping [ErrOutsideExport]) a directory whose
// ".." chain does not reach the export root. A non-directory is checked only
// for its file system: the kernel cannot name its parent reliably (hard
// links, disconnected dentries on a cold cache). Exporting the root of a
// file system makes the check exact (and skips the walk).
package fh

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Version is the format version written in the first byte of every handle.
// A server refuses handles of any other version (BADHANDLE): a change of the
// layout must bump it.
const Version = 1

// MaxSize is the largest encoded handle: NFSv3's FHSIZE3.
const MaxSize = 64

// HeaderSize is the size of the fixed part of an encoded handle, before the
// kernel handle bytes.
const HeaderSize = 1 + 4 + 16 + 4 + 1

// MaxKernelBytes is the largest kernel handle that fits in an NFSv3 handle
// (38 bytes; ext4 uses 8, xfs 12, with a parent 16 and 24).
const MaxKernelBytes = MaxSize - HeaderSize

// UUID is a file system's UUID as stored in its superblock (ext4 s_uuid,
// xfs sb_uuid).
type UUID [16]byte

// String formats u in the canonical 8-4-4-4-12 hex form, as blkid prints it.
func (u UUID) String() string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// IsZero reports whether u is all zeros (a file system without a UUID).
func (u UUID) IsZero() bool { return u == UUID{} }

// KernelHandle is a kernel file handle as name_to_handle_at returns it
// (struct file_handle without the mount ID).
type KernelHandle struct {
	// Type is the file system's handle type (ext4: 1 = FILEID_INO32_GEN,
	// xfs: 129 = FILEID_INO32_GEN | XFS 64-bit inode).
	Type int32
	// Bytes is the opaque handle (f_handle), 1..MaxKernelBytes long.
	Bytes []byte
}

// Handle is a decoded NFS file handle.
type Handle struct {
	// Export is the export's id from the configuration.
	Export uint32
	// FS is the UUID of the file system the export lives on.
	FS UUID
	// Kernel is the kernel handle of the file within that file system.
	Kernel KernelHandle
}

// Kind classifies a handle error by the NFSv3 status the server answers.
type Kind int

const (
	// BadHandle: the handle fails the format's internal consistency checks
	// (RFC 1813: NFS3ERR_BADHANDLE, "the file handle failed internal
	// consistency checks"): too short or too long, an unknown version, a
	// length byte that does not match, an empty kernel handle, or a kernel
	// handle that the file system rejects as malformed (EINVAL). No server
	// of this format ever issued it, so a client retrying it is pointless.
	// This follows knfsd, which answers NFSv3 requests with a malformed or
	// unknown-version handle with NFS3ERR_BADHANDLE.
	BadHandle Kind = iota + 1
	// Stale: the handle is well formed but names nothing here (RFC 1813:
	// NFS3ERR_STALE, "the file referred to by that file handle no longer
	// exists or access to it has been revoked"): its export id or
	// file-system UUID is not this export's (the export was removed or
	// reconfigured, or the client was moved to a server with another
	// volume), or the kernel says the file is gone (ESTALE from
	// open_by_handle_at: deleted, inode reused with a new generation).
	// Clients treat STALE as "look the name up again", which is the right
	// recovery in every one of these cases. knfsd answers an unknown export
	// the same way.
	Stale
)

// String names the NFSv3 status the kind maps to.
func (k Kind) String() string {
	switch k {
	case BadHandle:
		return "NFS3ERR_BADHANDLE"
	case Stale:
		return "NFS3ERR_STALE"
	default:
		return fmt.Sprintf("fh.Kind(%d)", int(k))
	}
}

// Error is a handle that cannot be used, with the NFSv3 status to answer.
// Match kinds with errors.Is(err, ErrBadHandle) or errors.Is(err, ErrStale).
type Error struct {
	// Kind says which NFSv3 status the server answers.
	Kind Kind
	// Reason says what was wrong, naming the field and value.
	Reason string
	// Err is the underlying error (a unix.Errno from the kernel), if any.
	Err error
}

// ErrBadHandle matches (with errors.Is) every [*Error] of kind [BadHandle].
var ErrBadHandle = &Error{Kind: BadHandle}

// ErrStale matches (with errors.Is) every [*Error] of kind [Stale].
var ErrStale = &Error{Kind: Stale}

// Error formats the reason with the status it maps to.
func (e *Error) Error() string {
	msg := "nfs file handle: " + e.Reason
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg + " (" + e.Kind.String() + ")"
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is an *Error of the same kind with no reason
// (the sentinels ErrBadHandle and ErrStale).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Reason == "" && t.Err == nil && t.Kind == e.Kind
}

func badHandle(format string, args ...any) error {
	return &Error{Kind: BadHandle, Reason: fmt.Sprintf(format, args...)}
}

func stale(format string, args ...any) error {
	return &Error{Kind: Stale, Reason: fmt.Sprintf(format, args...)}
}

// Encode returns the wire form of h. It fails if the kernel handle is empty
// or longer than MaxKernelBytes (a file system whose handles do not fit in
// NFSv3 cannot be exported).
func (h Handle) Encode() ([]byte, error) {
	n := len(h.Kernel.Bytes)
	if n == 0 {
		return nil, errors.New("nfs file handle: encode: kernel handle is empty")
	}
	if n > MaxKernelBytes {
		return nil, fmt.Errorf("nfs file handle: encode: kernel handle of type %d is %d bytes, more than the %d that fit in %d-byte NFSv3 handle",
			h.Kernel.Type, n, MaxKernelBytes, MaxSize)
	}
	b := make([]byte, paddedSize(n))
	b[0] = Version
	binary.BigEndian.PutUint32(b[1:5], h.Export)
	copy(b[5:21], h.FS[:])
	binary.BigEndian.PutUint32(b[21:25], uint32(h.Kernel.Type))
	b[25] = byte(n)
	copy(b[HeaderSize:], h.Kernel.Bytes)
	return b, nil
}

// Decode parses a handle from the wire. It checks only the format; errors
// are of kind BadHandle. Use [Handle.Check] (or [FS.Open], which calls it)
// to check that the handle belongs to an export. The returned handle does
// not alias b.
func Decode(b []byte) (Handle, error) {
	if len(b) < HeaderSize+1 {
		return Handle{}, badHandle("length %d, less than the minimum %d", len(b), HeaderSize+1)
	}
	if len(b) > MaxSize {
		return Handle{}, badHandle("length %d, more than NFSv3's maximum %d", len(b), MaxSize)
	}
	if b[0] != Version {
		return Handle{}, badHandle("version %d, want %d", b[0], Version)
	}
	n := int(b[25])
	if n == 0 {
		return Handle{}, badHandle("kernel handle length 0")
	}
	if paddedSize(n) != len(b) {
		return Handle{}, badHandle("kernel handle length byte %d does not match the handle's length %d (want %d)", n, len(b), paddedSize(n))
	}
	for _, p := range b[HeaderSize+n:] {
		if p != 0 {
			return Handle{}, badHandle("padding byte %#x, want 0", p)
		}
	}
	var h Handle
	h.Export = binary.BigEndian.Uint32(b[1:5])
	copy(h.FS[:], b[5:21])
	h.Kernel.Type = int32(binary.BigEndian.Uint32(b[21:25]))
	h.Kernel.Bytes = append([]byte(nil), b[HeaderSize:HeaderSize+n]...)
	return h, nil
}

// paddedSize is the size of an encoded handle with n kernel bytes: the
// fields, then zeros up to a multiple of 4. Clients pad an opaque on the
// wire anyway; a handle that needs no padding survives clients that forget
// it (go-nfs-client does), and knfsd's handles are multiples of 4 too.
func paddedSize(n int) int { return (HeaderSize + n + 3) &^ 3 }

// Check reports whether h belongs to the export with id export on the file
// system fs. A mismatch is of kind Stale: the handle is well formed, but
// this export does not (or no longer does) serve what it names.
func (h Handle) Check(export uint32, fs UUID) error {
	if h.Export != export {
		return stale("export id %d, this export is %d", h.Export, export)
	}
	if h.FS != fs {
		return stale("file system %s, this export is on %s", h.FS, fs)
	}
	return nil
}
