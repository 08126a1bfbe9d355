package nfs3

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// resolveBeneath are the openat2 resolve flags for every name a client
// gives: one component, never a symlink, never another mount, never out
// of the directory.
const resolveBeneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// openEntry opens the entry name of dirfd as an O_PATH fd without following
// it (a symlink gives an fd of the link itself). It runs as the caller's
// credentials: the kernel checks search permission on dirfd.
func openEntry(dirfd int, name string) (int, error) {
	if name == ".." {
		// RESOLVE_BENEATH refuses "..". The caller has made sure dirfd is
		// not the export root; the parent's handle is checked again
		// against the export when a client uses it.
		return unix.Openat(dirfd, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
	for {
		fd, err := unix.Openat2(dirfd, name, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: resolveBeneath,
		})
		if err == unix.EAGAIN || err == unix.EINTR {
			continue // a concurrent rename in the file system; retry
		}
		if err == unix.EXDEV {
			// A mount point inside the export: not served, as knfsd
			// without crossmnt/nohide.
			return -1, failStatus(ErrAcces, fmt.Sprintf("lookup %q", name), fmt.Errorf("a mount point: %w", err))
		}
		return fd, err
	}
}

// getDirop decodes a diropargs3.
func getDirop(d *xdr.Decoder, field string) ([]byte, string, *Error, error) {
	b, err := getHandle(d, field+".dir")
	if err != nil {
		return nil, "", nil, err
	}
	name, nerr, err := getName(d, field+".name")
	return b, name, nerr, err
}

// dotName refuses "." and ".." as the name a procedure creates or removes.
func dotName(name string, s Status) *Error {
	if name == "." || name == ".." {
		return failStatus(s, "name", fmt.Errorf("%q", name))
	}
	return nil
}

// openDir binds the call and opens the directory handle b as an O_PATH fd.
func (h *Handler) openDir(c *call, b []byte, mutating bool) (int, *unix.Stat_t, *Error, error) {
	return h.open(c, b, unix.O_PATH|unix.O_DIRECTORY, mutating)
}

// handleAt returns the wire handle of the entry name of dirfd, or "" if
// there is none: what to evict from the fd cache once the entry is gone.
func (c *call) handleAt(dirfd int, name string) string {
	hd, err := c.exp.FS.HandleAt(dirfd, name)
	if err != nil {
		return ""
	}
	b, err := hd.Encode()
	if err != nil {
		return ""
	}
	return string(b)
}

// object is a file a procedure found or created: its handle and attributes
// for the reply.
type object struct {
	fh []byte
	st *unix.Stat_t
}

func (o object) putPostOp(e *xdr.Encoder, fsid uint64) {
	putPostOpFH(e, o.fh)
	putPostOp(e, o.st, fsid)
}

// objectOf makes the reply object of the open fd.
func (c *call) objectOf(fd int) (object, *Error) {
	hd, err := c.exp.FS.HandleOf(fd)
	if err != nil {
		return object{}, fail("handle", err)
	}
	b, err := hd.Encode()
	if err != nil {
		return object{}, fail("encode handle", err)
	}
	return object{fh: b, st: fstat(fd)}, nil
}

func (h *Handler) lookup(c *call, d *xdr.Decoder, e *xdr.Encoder) error {
	b, name, nerr, err := getDirop(d, "what")
	if err != nil {
		return err
	}
	var obj object
	var dirAttr *unix.Stat_t
	if nerr == nil {
		var dirfd int
		dirfd, dirAttr, nerr, err = h.openDir(c, b, false)
		if err != nil {
			return err
		}
		if nerr == nil {
			obj, nerr = c.lookupEntry(dirfd, dirAttr, name)
		}
	}
	h.status(c, e, nerr)
	if nerr == nil {
		e.Opaque(obj.fh)
		putPostOp(e, obj.st, c.fsid)
	}
	putPostOp(e, dirAttr, c.fsid)
	return nil
}

// lookupEntry finds name in dirfd as the call's identity: "." is the
// directory and ".." its parent, or the directory itself at the export
// root (as knfsd answers, so that no client walks out of an export).
func (c *call) lookupEntry(dirfd int, dirAttr *unix.Stat_t, name string) (object, *Error) {
	if name == "." || (name == ".." && c.exp.FS.IsRoot(dirAttr)) {
		// Search permission is still needed, as for any lookup.
		if err := c.asClient(func() error {
			return unix.Faccessat2(dirfd, "", unix.X_OK, unix.AT_EMPTY_PATH|unix.AT_EACCESS)
		}); err != nil {
			return object{}, fail("lookup", err)
		}
		return c.objectOf(dirfd)
	}
	var fd int
	nerr := c.runAs(fmt.Sprintf("lookup %q", name), func() error {
		var err error
		fd, err = openEntry(dirfd, name)
		return err
	})
	if nerr != nil {
		return object{}, nerr
	}
	obj, nerr := c.objectOf(fd)
	if nerr != nil {
		unix.Close(fd)
		return object{}, nerr
	}
	// A client that looked a file up uses its handle next (GETATTR,
	// ACCESS, READ): keep the fd for it.
	c.h.fds.release(c.h.fds.add(fdKey{string(obj.fh), unix.O_PATH}, fd))
	return obj, nil
}

// openEntryAs opens the entry name of dirfd as the client (openEntry) and
// returns it with its attributes; the caller closes the fd.
func (c *call) openEntryAs(dirfd int, name string) (int, *unix.Stat_t, *Error) {
	var fd int
	if nerr := c.runAs(fmt.Sprintf("lookup %q", name), func() error {
		var err error
		fd, err = openEntry(dirfd, name)
		return err
	}); nerr != nil {
		return -1, nil, nerr
	}
	st := fstat(fd)
	if st == nil {
		unix.Close(fd)
		return -1, nil, fail("fstat", unix.EIO)
	}
	return fd, st, nil
}

// created finishes a CREATE, MKDIR, SYMLINK or MKNOD: it opens the new
// entry, gives it exactly the mode the client asked for (the kernel
// applied the server's umask; knfsd runs with none), applies the other
// attributes, and returns it for the reply. A failure after the entry
// exists is reported, as knfsd does, but the entry stays.
func (h *Handler) created(c *call, dirfd int, name string, mode uint32, setMode bool, sa sattr) (object, *Error) {
	fd, st, nerr := c.openEntryAs(dirfd, name)
	if nerr != nil {
		return object{}, nerr
	}
	defer unix.Close(fd)
	rest := sa
	rest.setMode = false
	if setMode && st.Mode&unix.S_IFMT != unix.S_IFLNK {
		want := mode & 0o7777
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			want |= st.Mode & unix.S_ISGID // inherited from a set-gid parent
		}
		if st.Mode&0o7777 != want {
			rest.setMode, rest.mode = true, want
		}
	}
	if nerr := h.applySattr(c, fd, st, rest); nerr != nil {
		return object{}, nerr
	}
	return c.objectOf(fd)
}

// replyCreated appends the result of CREATE, MKDIR, SYMLINK and MKNOD.
func (h *Handler) replyCreated(c *call, e *xdr.Encoder, nerr *Error, obj object, w wcc) {
	h.status(c, e, nerr)
	if nerr == nil {
		obj.putPostOp(e, c.fsid)
	}
	w.put(e, c.fsid)
}

// inDir runs a mutating directory procedure: it binds the call, opens the
// directory b, records its attributes around fn and closes it.
func (h *Handler) inDir(c *call, b []byte, nerr *Error, fn func(dirfd int) *Error) (wcc, *Error, error) {
	var w wcc
	if nerr != nil {
		return w, nerr, nil
	}
	dirfd, before, nerr, err := h.openDir(c, b, true)
	if err != nil || nerr != nil {
		return w, nerr, err
	}
	w.before = before
	nerr = fn(dirfd)
	w.after = fstat(dirfd)
	return w, nerr, nil
}

func (h *Handler) create(c *call, d *xdr.Decoder, e *xdr.Encoder) error {
	b, name, nerr, err := getDirop(d, "where")
	if err != nil {
		return err
	}
	how, err := d.Uint32("how.mode")
	if err != nil {
		return errGarbage(err)
	}
	var sa sattr
	var verf []byte
	switch how {
	case createUnchecked, createGuarded:
		if sa, err = getSattr(d); err != nil {
			return errGarbage(err)
		}
	case createExclusive:
		if verf, err = d.FixedOpaque("how.verf", 8); err != nil {
			return errGarbage(err)
		}
	default:
		return errGarbage(fmt.Errorf("how.mode %d: not UNCHECKED, GUARDED or EXCLUSIVE", how))
	}
	if nerr == nil {
		nerr = dotName(name, ErrExist)
	}
	var obj object
	w, nerr, err := h.inDir(c, b, nerr, func(dirfd int) *Error {
		var nerr *Error
		obj, nerr = h.createFile(c, dirfd, name, how, sa, verf)
		return nerr
	})
	if err != nil {
		return err
	}
	h.replyCreated(c, e, nerr, obj, w)
	return nil
}

// createFile creates the regular file name in dirfd.
//
// UNCHECKED on an existing regular file does not truncate it: it applies
// only the attributes the client set, so a size of 0 truncates only when
// the client asked for it (the Linux client sends it for O_TRUNC).
// GUARDED fails with EXIST. EXCLUSIVE stores the client's verifier in the
// new file's mtime and atime seconds (as knfsd does; RFC 1813 leaves where
// to the server), so that a retransmitted CREATE finds it and succeeds
// while another client's CREATE of the same name fails with EXIST; the
// client then sets the real attributes with SETATTR.
func (h *Handler) createFile(c *call, dirfd int, name string, how uint32, sa sattr, verf []byte) (object, *Error) {
	mode := uint32(0o644)
	if how == createExclusive {
		mode = 0 // the client's SETATTR that follows gives the real mode
	} else if sa.setMode {
		mode = sa.mode & 0o7777
	}
	err := c.asClient(func() error { return unix.Mknodat(dirfd, name, unix.S_IFREG|mode, 0) })
	switch {
	case err == nil:
	case errors.Is(err, unix.EEXIST) && how != createGuarded:
		return h.createExisting(c, dirfd, name, how, sa, verf)
	default:
		return object{}, fail(fmt.Sprintf("create %q", name), err)
	}
	if how == createExclusive {
		mt, at := exclusiveTimes(verf)
		sa = sattr{mtime: setToClientTime, mtimeV: mt, atime: setToClientTime, atimeV: at}
	}
	return h.created(c, dirfd, name, mode, true, sa)
}

// createExisting answers UNCHECKED and EXCLUSIVE CREATE of a name that
// exists.
func (h *Handler) createExisting(c *call, dirfd int, name string, how uint32, sa sattr, verf []byte) (object, *Error) {
	fd, st, nerr := c.openEntryAs(dirfd, name)
	if nerr != nil {
		return object{}, nerr
	}
	defer unix.Close(fd)
	exists := failStatus(ErrExist, fmt.Sprintf("create %q", name), unix.EEXIST)
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return object{}, exists
	}
	if how == createExclusive {
		mt, at := exclusiveTimes(verf)
		if st.Mtim.Sec != mt.Sec || st.Atim.Sec != at.Sec || st.Size != 0 {
			return object{}, exists
		}
		return c.objectOf(fd) // the client's retransmission
	}
	if nerr := h.applySattr(c, fd, st, sa); nerr != nil {
		return object{}, nerr
	}
	return c.objectOf(fd)
}

// exclusiveTimes are the mtime and atime an EXCLUSIVE CREATE stores its
// verifier in: each word with the top bit cleared, so that the seconds are
// a valid positive time on every file system.
func exclusiveTimes(verf []byte) (mtime, atime unix.Timespec) {
	return unix.Timespec{Sec: int64(binary.BigEndian.Uint32(verf[0:4]) & 0x7fffffff)},
		unix.Timespec{Sec: int64(binary.BigEndian.Uint32(verf[4:8]) & 0x7fffffff)}
}

func (h *Handler) mkdir(c *call, d *xdr.Decoder, e *xdr.Encoder) error {
	b, name, nerr, err := getDirop(d, "where")
	if err != nil {
		return err
	}
	sa, err := getSattr(d)
	if err != nil {
		return errGarbage(err)
	}
	if nerr == nil {
		nerr = dotName(name, ErrExist)
	}
	mode := uint32(0o755)
	if sa.setMode {
		mode = sa.mode & 0o7777
	}
	return h.makeEntry(c, e, b, name, nerr, "mkdir", func(dirfd int) error { return unix.Mkdirat(dirfd, name, mode) }, mode, true, sa)
}

// makeEntry serves MKDIR, SYMLINK and MKNOD: it runs mk (which makes the
// entry name in dirfd) as the client, finishes the entry (created) and
// appends the reply.
func (h *Handler) makeEntry(c *call, e *xdr.Encoder, b []byte, name string, nerr *Error, op string, mk func(dirfd int) error, mode uint32, setMode bool, sa sattr) error {
	var obj object
	w, nerr, err := h.inDir(c, b, nerr, func(dirfd int) *Error {
		if nerr := c.runAs(fmt.Sprintf("%s %q", op, name), func() error { return mk(dirfd) }); nerr != nil {
			return nerr
		}
		var nerr *Error
		obj, nerr = h.created(c, dirfd, name, mode, setMode, sa)
		return nerr
	})
	if err != nil {
		return err
	}
	h.replyCreated(c, e, nerr, obj, w)
	return nil
}

func (h *Handler) symlink(c *call, d *xdr.Decoder, e *xdr.Encoder) error {
	b, name, nerr, err := getDirop(d, "where")
	if err != nil {
		return err
	}
	sa, err := getSattr(d)
	if err != nil {
		return errGarbage(err)
	}
	target, err := d.Opaque("symlink.symlink_data", 1<<16)
	if err != nil {
		return errGarbage(err)
	}
	if nerr == nil {
		nerr = dotName(name, ErrExist)
	}
	if nerr == nil {
		switch {
		case len(target) > MaxPath:
			nerr = failStatus(ErrNameTooLong, "symlink", fmt.Errorf("target of %d bytes, at most %d", len(target), MaxPath))
		case len(target) == 0:
			nerr = failStatus(ErrInval, "symlink", errors.New("empty target"))
		}
		for _, ch := range target {
			if ch == 0 {
				nerr = failStatus(ErrInval, "symlink", errors.New("target contains NUL"))
				break
			}
		}
	}
	// The target is stored as given: it is never followed by this server,
	// whatever it points at.
	sa.setMode = false
	return h.makeEntry(c, e, b, name, nerr, "symlink", func(dirfd int) error { return unix.Symlinkat(string(target), dirfd, name) }, 0, false, sa)
}

func (h *Handler) mknod(c *call, d *xdr.Decoder, e *xdr.Encoder) error {
	b, name, nerr, err := getDirop(d, "where")
	if err != nil {
		return err
	}
	ftype, err := d.Uint32("what.type")
	if err != nil {
		return errGarbage(err)
	}
	var sa sattr
	var major, minor uint32
	var kind uint32
	switch ftype {
	case typeChr, typeBlk:
		if sa, err = getSattr(d); err != nil {
			return errGarbage(err)
		}
		if major, err = d.Uint32("what.spec.specdata1"); err != nil {
			return errGarbage(err)
		}
		if minor, err = d.Uint32("what.spec.specdata2"); err != nil {
			return errGarbage(err)
		}
		kind = unix.S_IFCHR
		if ftype == typeBlk {
			kind = unix.S_IFBLK
		}
	case typeSock, typeFifo:
		if sa, err = getSattr(d); err != nil {
			return errGarbage(err)
		}
		kind = unix.S_IFSOCK
		if ftype == typeFifo {
			kind = unix.S_IFIFO
		}
	default:
		if nerr == nil {
			nerr = failStatus(ErrBadType, "mknod", fmt.Errorf("type %d: not CHR, BLK, SOCK or FIFO", ftype))
		}
	}
	if nerr == nil {
		nerr = dotName(name, ErrExist)
	}
	mode := uint32(0o644)
	if sa.setMode {
		mode = sa.mode & 0o7777
	}
	dev := int(unix.Mkdev(major, minor))
	return h.makeEntry(c, e, b, name, nerr, "mknod", func(dirfd int) error { return unix.Mknodat(dirfd, name, kind|mode, dev) }, mode, true, sa)
}

func (h *Handler) remove(c *call, d *xdr.Decoder, e *xdr.Encoder) error {
	return h.unlink(c, d, e, 0)
}

func (h *Handler) rmdir(c *call, d *xdr.Decoder, e *xdr.Encoder) error {
	return h.unlink(c, d, e, unix.AT_REMOVEDIR)
}

// unlink serves REMOVE and RMDIR (flags 0 or AT_REMOVEDIR).
func (h *Handler) unlink(c *call, d *xdr.Decoder, e *xdr.Encoder, flags int) error {
	b, name, nerr, err := getDirop(d, "object")
	if err != nil {
		return err
	}
	if nerr == nil {
		nerr = dotName(name, ErrInval)
	}
	w, nerr, err := h.inDir(c, b, nerr, func(dirfd int) *Error {
		gone := c.handleAt(dirfd, name)
		nerr := c.runAs(fmt.Sprintf("remove %q", name), func() error { return unix.Unlinkat(dirfd, name, flags) })
		if nerr == nil {
			h.fds.evict(gone)
		}
		return nerr
	})
	if err != nil {
		return err
	}
	h.status(c, e, nerr)
	w.put(e, c.fsid)
	return nil
}

func (h *Handler) rename(c *call, d *xdr.Decoder, e *xdr.Encoder) error {
	fromB, fromName, nerr, err := getDirop(d, "from")
	if err != nil {
		return err
	}
	toB, toName, nerr2, err := getDirop(d, "to")
	if err != nil {
		return err
	}
	if nerr == nil {
		nerr = nerr2
	}
	if nerr == nil {
		nerr = dotName(fromName, ErrInval)
	}
	if nerr == nil {
		nerr = dotName(toName, ErrInval)
	}
	var toW wcc
	fromW, nerr, err := h.inDir(c, fromB, nerr, func(fromfd int) *Error {
		toW2, nerr, err := h.inDir(c, toB, nil, func(tofd int) *Error {
			replaced := c.handleAt(tofd, toName)
			nerr := c.runAs(fmt.Sprintf("rename %q to %q", fromName, toName), func() error {
				return unix.Renameat2(fromfd, fromName, tofd, toName, 0)
			})
			if nerr == nil {
				h.fds.evict(replaced)
			}
			return nerr
		})
		if err != nil {
			return failStatus(ErrServerFault, "rename", err)
		}
		toW = toW2
		return nerr
	})
	if err != nil {
		return err
	}
	if toW.after != nil && fromW.after != nil && toW.after.Ino == fromW.after.Ino && toW.after.Dev == fromW.after.Dev {
		// One directory: its attributes after are the same for both.
		fromW.after = toW.after
	}
	h.status(c, e, nerr)
	fromW.put(e, c.fsid)
	toW.put(e, c.fsid)
	return nil
}

func (h *Handler) link(c *call, d *xdr.Decoder, e *xdr.Encoder) error {
	b, err := getHandle(d, "file")
	if err != nil {
		return err
	}
	dirB, name, nerr, err := getDirop(d, "link")
	if err != nil {
		return err
	}
	if nerr == nil {
		nerr = dotName(name, ErrExist)
	}
	fd := -1
	var st *unix.Stat_t
	if nerr == nil {
		fd, st, nerr, err = h.open(c, b, unix.O_PATH, true)
		if err != nil {
			return err
		}
	}
	w, nerr, err := h.inDir(c, dirB, nerr, func(dirfd int) *Error {
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			// linkat through /proc with AT_SYMLINK_FOLLOW would follow the
			// link's target; AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH, which
			// the client's identity lacks. So check the client may write
			// the directory, then link as the server.
			if err := c.asClient(func() error {
				return unix.Faccessat2(dirfd, "", unix.W_OK|unix.X_OK, unix.AT_EMPTY_PATH|unix.AT_EACCESS)
			}); err != nil {
				return fail("link", err)
			}
			if err := unix.Linkat(fd, "", dirfd, name, unix.AT_EMPTY_PATH); err != nil {
				return fail(fmt.Sprintf("link %q", name), err)
			}
			return nil
		}
		return c.runAs(fmt.Sprintf("link %q", name), func() error {
			return unix.Linkat(unix.AT_FDCWD, procPath(fd), dirfd, name, unix.AT_SYMLINK_FOLLOW)
		})
	})
	if err != nil {
		return err
	}
	h.status(c, e, nerr)
	putPostOp(e, fstat(fd), c.fsid)
	w.put(e, c.fsid)
	return nil
}
