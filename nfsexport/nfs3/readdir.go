package nfs3

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// READDIR cookies are the kernel's directory offsets (getdents64 d_off,
// which lseek takes back: ext4's hash cookies, xfs's offsets), so they stay
// valid across calls, restarts and a failover to a block-identical copy.
// The cookie verifier is always zero: the offsets do not go stale when
// entries are added or removed.

// direntBufSize is how much getdents64 reads at a time.
const direntBufSize = 64 << 10

func (h *Handler) readdir(c *call, d *xdr.Decoder, e *xdr.Encoder) error {
	return h.listDir(c, d, e, false)
}

func (h *Handler) readdirplus(c *call, d *xdr.Decoder, e *xdr.Encoder) error {
	return h.listDir(c, d, e, true)
}

// listDir serves READDIR (plus false) and READDIRPLUS.
func (h *Handler) listDir(c *call, d *xdr.Decoder, e *xdr.Encoder, plus bool) error {
	b, err := getHandle(d, "dir")
	if err != nil {
		return err
	}
	cookie, err := d.Uint64("cookie")
	if err != nil {
		return errGarbage(err)
	}
	if _, err := d.FixedOpaque("cookieverf", 8); err != nil {
		return errGarbage(err)
	}
	dircount, err := d.Uint32("count")
	if err != nil {
		return errGarbage(err)
	}
	maxcount := dircount
	if plus {
		if maxcount, err = d.Uint32("maxcount"); err != nil {
			return errGarbage(err)
		}
	}
	maxcount = min(maxcount, maxDirReply)
	fd, st, nerr, err := h.open(c, b, unix.O_RDONLY|unix.O_DIRECTORY, false)
	if err != nil {
		return err
	}
	if nerr != nil {
		h.status(c, e, nerr)
		putPostOp(e, nil, 0)
		return nil
	}
	start := e.Len()
	h.status(c, e, nil)
	putPostOp(e, st, c.fsid)
	e.FixedOpaque(make([]byte, 8)) // cookieverf
	l := lister{c: c, e: e, dirfd: fd, dir: st, plus: plus, atRoot: c.exp.FS.IsRoot(st),
		limit: start + int(maxcount) - 8, dirLimit: int(dircount)}
	nerr = c.runAs("readdir", func() error {
		if err := unix.Faccessat2(fd, "", unix.R_OK, unix.AT_EMPTY_PATH|unix.AT_EACCESS); err != nil {
			return err
		}
		return l.list(cookie)
	})
	if nerr != nil {
		e.Truncate(start)
		h.status(c, e, nerr)
		putPostOp(e, st, c.fsid)
		return nil
	}
	e.Bool(false) // no more entries
	e.Bool(l.eof)
	return nil
}

// lister encodes directory entries until the reply is full.
type lister struct {
	c        *call
	e        *xdr.Encoder
	dirfd    int
	dir      *unix.Stat_t
	plus     bool
	atRoot   bool
	limit    int // the reply may not grow past this offset (room kept for the end)
	dirLimit int // READDIRPLUS dircount: bytes of entry names and cookies
	dirBytes int
	n        int // entries encoded
	eof      bool
}

func (l *lister) list(cookie uint64) error {
	if cookie != 0 {
		if _, err := unix.Seek(l.dirfd, int64(cookie), 0); err != nil {
			return failStatus(ErrBadCookie, "readdir", fmt.Errorf("seek to cookie %d: %w", cookie, err))
		}
	}
	bp := l.c.h.dirents.Get().(*[]byte)
	defer l.c.h.dirents.Put(bp)
	buf := *bp
	for {
		n, err := unix.Getdents(l.dirfd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("getdents: %w", err)
		}
		if n == 0 {
			l.eof = true
			return nil
		}
		for rec := buf[:n]; len(rec) >= 19; {
			ino := binary.NativeEndian.Uint64(rec[0:])
			off := binary.NativeEndian.Uint64(rec[8:])
			reclen := int(binary.NativeEndian.Uint16(rec[16:]))
			if reclen < 19 || reclen > len(rec) {
				return fmt.Errorf("getdents: bad record length %d", reclen)
			}
			name := rec[19:reclen]
			for i, ch := range name {
				if ch == 0 {
					name = name[:i]
					break
				}
			}
			rec = rec[reclen:]
			if !l.put(ino, off, string(name)) {
				if l.n == 0 {
					return failStatus(ErrTooSmall, "readdir", fmt.Errorf("count too small for one entry"))
				}
				return nil
			}
		}
	}
}

// put encodes one entry, or reports false if it does not fit.
func (l *lister) put(ino, cookie uint64, name string) bool {
	if name == ".." && l.atRoot {
		ino = l.dir.Ino
	}
	mark := l.e.Len()
	l.e.Bool(true)
	l.e.Uint64(ino)
	l.e.String(name)
	l.e.Uint64(cookie)
	entryBytes := l.e.Len() - mark
	if l.plus {
		obj := l.entryObject(name)
		putPostOp(l.e, obj.st, l.c.fsid)
		putPostOpFH(l.e, obj.fh)
	}
	if l.e.Len() > l.limit || (l.plus && l.dirLimit > 0 && l.n > 0 && l.dirBytes+entryBytes > l.dirLimit) {
		l.e.Truncate(mark)
		return false
	}
	l.dirBytes += entryBytes
	l.n++
	return true
}

// entryObject looks up an entry for READDIRPLUS (as the client, like
// LOOKUP); an entry that cannot be opened (a mount point, a race with a
// removal, no search permission) is listed without attributes or handle,
// and the client falls back to LOOKUP.
func (l *lister) entryObject(name string) object {
	var fd int
	var err error
	switch {
	case name == "." || (name == ".." && l.atRoot):
		return l.objectOrNone(l.dirfd)
	default:
		fd, err = openEntry(l.dirfd, name)
	}
	if err != nil {
		return object{}
	}
	defer unix.Close(fd)
	return l.objectOrNone(fd)
}

func (l *lister) objectOrNone(fd int) object {
	obj, nerr := l.c.objectOf(fd)
	if nerr != nil {
		return object{}
	}
	return obj
}
