package nfs3

import (
	"golang.org/x/sys/unix"

	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// FSINFO properties (RFC 1813 section 3.3.19).
const (
	fsfLink        = 0x0001
	fsfSymlink     = 0x0002
	fsfHomogeneous = 0x0008
	fsfCanSetTime  = 0x0010
)

// maxFileSize is the largest file offset served (ext4 and xfs allow more
// than an off_t holds only in theory).
const maxFileSize = 1<<63 - 1

// fsReply serves what FSSTAT, FSINFO and PATHCONF share: it opens the
// handle, appends the status and the object's attributes, and reports
// whether the call succeeded, with the file system's statfs if withStatfs.
func (h *Handler) fsReply(c *call, d *xdr.Decoder, e *xdr.Encoder, withStatfs bool) (*unix.Statfs_t, bool, error) {
	b, err := getHandle(d, "fsroot")
	if err != nil {
		return nil, false, err
	}
	fd, st, nerr, err := h.open(c, b, unix.O_PATH, false)
	if err != nil {
		return nil, false, err
	}
	var sfs unix.Statfs_t
	if nerr == nil && withStatfs {
		if err := unix.Fstatfs(fd, &sfs); err != nil {
			nerr = fail("statfs", err)
		}
	}
	h.status(c, e, nerr)
	putPostOp(e, st, c.fsid)
	return &sfs, nerr == nil, nil
}

func (h *Handler) fsstat(c *call, d *xdr.Decoder, e *xdr.Encoder) error {
	sfs, ok, err := h.fsReply(c, d, e, true)
	if err != nil || !ok {
		return err
	}
	bs := uint64(sfs.Bsize)
	e.Uint64(sfs.Blocks * bs)
	e.Uint64(sfs.Bfree * bs)
	e.Uint64(sfs.Bavail * bs)
	e.Uint64(sfs.Files)
	e.Uint64(sfs.Ffree)
	e.Uint64(sfs.Ffree) // afiles: Linux has no per-user inode reserve
	e.Uint32(0)         // invarsec: the figures change at any time
	return nil
}

func (h *Handler) fsinfo(c *call, d *xdr.Decoder, e *xdr.Encoder) error {
	if _, ok, err := h.fsReply(c, d, e, false); err != nil || !ok {
		return err
	}
	e.Uint32(MaxData)  // rtmax
	e.Uint32(PrefData) // rtpref
	e.Uint32(4096)     // rtmult
	e.Uint32(MaxData)  // wtmax
	e.Uint32(PrefData) // wtpref
	e.Uint32(4096)     // wtmult
	e.Uint32(DirPref)  // dtpref
	e.Uint64(maxFileSize)
	e.Uint32(0) // time_delta: nanoseconds
	e.Uint32(1)
	e.Uint32(fsfLink | fsfSymlink | fsfHomogeneous | fsfCanSetTime)
	return nil
}

func (h *Handler) pathconf(c *call, d *xdr.Decoder, e *xdr.Encoder) error {
	sfs, ok, err := h.fsReply(c, d, e, true)
	if err != nil || !ok {
		return err
	}
	linkMax := uint32(65000) // ext4's EXT4_LINK_MAX
	if sfs.Type == unix.XFS_SUPER_MAGIC {
		linkMax = 1<<31 - 1
	}
	e.Uint32(linkMax)
	e.Uint32(uint32(sfs.Namelen))
	e.Bool(true)  // no_trunc: long names are refused, not cut
	e.Bool(true)  // chown_restricted
	e.Bool(false) // case_insensitive
	e.Bool(true)  // case_preserving
	return nil
}
