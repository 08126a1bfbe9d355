package nfs3

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// fattrSize is the encoded size of a fattr3.
const fattrSize = 84

func (h *Handler) getattr(c *call, d *xdr.Decoder, e *xdr.Encoder) error {
	b, err := getHandle(d, "object")
	if err != nil {
		return err
	}
	_, st, nerr, err := h.open(c, b, unix.O_PATH, false)
	if err != nil {
		return err
	}
	if !h.status(c, e, nerr) {
		putFattr(e, st, c.fsid)
	}
	return nil
}

func (h *Handler) setattr(c *call, d *xdr.Decoder, e *xdr.Encoder) error {
	b, err := getHandle(d, "object")
	if err != nil {
		return err
	}
	sa, err := getSattr(d)
	if err != nil {
		return errGarbage(err)
	}
	check, err := d.Bool("guard.check")
	if err != nil {
		return errGarbage(err)
	}
	var guard unix.Timespec
	if check {
		if guard, err = getTime(d, "guard.obj_ctime"); err != nil {
			return errGarbage(err)
		}
	}
	fd, before, nerr, err := h.open(c, b, unix.O_PATH, true)
	if err != nil {
		return err
	}
	w := wcc{before: before}
	if nerr == nil {
		switch {
		case check && (uint32(w.before.Ctim.Sec) != uint32(guard.Sec) || uint32(w.before.Ctim.Nsec) != uint32(guard.Nsec)):
			nerr = failStatus(ErrNotSync, "setattr guard", fmt.Errorf("ctime %d.%09d, guard %d.%09d", w.before.Ctim.Sec, w.before.Ctim.Nsec, guard.Sec, guard.Nsec))
		default:
			nerr = h.applySattr(c, fd, w.before, sa)
		}
		w.after = fstat(fd)
	}
	h.status(c, e, nerr)
	w.put(e, c.fsid)
	return nil
}

// applySattr sets the attributes sa asks for on the file fd (an O_PATH
// fd; st its attributes before), as the call's identity, in knfsd's order:
// owner and group (which may clear set-id bits), mode, size, times (which
// the truncation would otherwise overwrite).
func (h *Handler) applySattr(c *call, fd int, st *unix.Stat_t, sa sattr) *Error {
	if sa.empty() {
		return nil
	}
	isLink := st.Mode&unix.S_IFMT == unix.S_IFLNK
	if isLink && (sa.setMode || sa.atime != dontChange || sa.mtime != dontChange) {
		// Linux has no lchmod, and utimes through /proc would follow the
		// link; knfsd cannot do either on a symlink's inode either.
		return failStatus(ErrNotSupp, "setattr", fmt.Errorf("mode or times of a symbolic link"))
	}
	if sa.setSize && st.Mode&unix.S_IFMT != unix.S_IFREG {
		return typeError("setattr size", st, unix.S_IFREG)
	}
	// The writable fd for truncation is opened as root; the identity's
	// right to truncate is checked as the client, with the owner override.
	rw := -1
	if sa.setSize {
		var err error
		if rw, err = unix.Open(procPath(fd), unix.O_RDWR|unix.O_CLOEXEC, 0); err != nil {
			return fail("open for truncate", err)
		}
		defer unix.Close(rw)
	}
	return c.runAs("setattr", func() error {
		if sa.setSize {
			// Checked first, so that a refused truncation changes nothing.
			if err := c.mayAccess(fd, st, unix.W_OK, true); err != nil {
				return fmt.Errorf("truncate: %w", err)
			}
		}
		if sa.setUID || sa.setGID {
			uid, gid := -1, -1
			if sa.setUID {
				uid = int(sa.uid)
			}
			if sa.setGID {
				gid = int(sa.gid)
			}
			if err := unix.Fchownat(fd, "", uid, gid, unix.AT_EMPTY_PATH); err != nil {
				return fmt.Errorf("chown: %w", err)
			}
		}
		if sa.setMode {
			if err := unix.Fchmodat(unix.AT_FDCWD, procPath(fd), sa.mode&0o7777, 0); err != nil {
				return fmt.Errorf("chmod: %w", err)
			}
		}
		if sa.setSize {
			if err := unix.Ftruncate(rw, int64(sa.size)); err != nil {
				return fmt.Errorf("truncate: %w", err)
			}
		}
		if sa.atime != dontChange || sa.mtime != dontChange {
			ts := []unix.Timespec{timeArg(sa.atime, sa.atimeV), timeArg(sa.mtime, sa.mtimeV)}
			if err := unix.UtimesNanoAt(unix.AT_FDCWD, procPath(fd), ts, 0); err != nil {
				return fmt.Errorf("utimes: %w", err)
			}
		}
		return nil
	})
}

// timeArg is the utimensat argument for a time_how.
func timeArg(how uint32, v unix.Timespec) unix.Timespec {
	switch how {
	case setToServerTime:
		return unix.Timespec{Nsec: unix.UTIME_NOW}
	case setToClientTime:
		return v
	}
	return unix.Timespec{Nsec: unix.UTIME_OMIT}
}

func (h *Handler) access(c *call, d *xdr.Decoder, e *xdr.Encoder) error {
	b, err := getHandle(d, "object")
	if err != nil {
		return err
	}
	want, err := d.Uint32("access")
	if err != nil {
		return errGarbage(err)
	}
	fd, st, nerr, err := h.open(c, b, unix.O_PATH, false)
	if err != nil {
		return err
	}
	if nerr != nil {
		h.status(c, e, nerr)
		putPostOp(e, nil, 0)
		return nil
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	var granted uint32
	nerr = c.runAs("access", func() error {
		try := func(bits, mode uint32) {
			if want&bits != 0 && unix.Faccessat2(fd, "", mode, unix.AT_EMPTY_PATH|unix.AT_EACCESS) == nil {
				granted |= want & bits
			}
		}
		try(accessRead, unix.R_OK)
		try(accessModify|accessExtend, unix.W_OK)
		if isDir {
			try(accessLookup, unix.X_OK)
			try(accessDelete, unix.W_OK)
		} else {
			try(accessExecute, unix.X_OK)
		}
		return nil
	})
	if nerr == nil && c.exp.Opts.ReadOnly {
		granted &^= accessModify | accessExtend | accessDelete
	}
	h.status(c, e, nerr)
	putPostOp(e, st, c.fsid)
	if nerr == nil {
		e.Uint32(granted)
	}
	return nil
}

func (h *Handler) readlink(c *call, d *xdr.Decoder, e *xdr.Encoder) error {
	b, err := getHandle(d, "symlink")
	if err != nil {
		return err
	}
	fd, st, nerr, err := h.open(c, b, unix.O_PATH, false)
	if err != nil {
		return err
	}
	var target []byte
	if nerr == nil {
		switch {
		case st.Mode&unix.S_IFMT != unix.S_IFLNK:
			nerr = typeError("readlink", st, unix.S_IFLNK)
		default:
			buf := make([]byte, MaxPath+1)
			n, err := unix.Readlinkat(fd, "", buf)
			if err != nil {
				nerr = fail("readlink", err)
			} else {
				target = buf[:n]
			}
		}
	}
	h.status(c, e, nerr)
	putPostOp(e, st, c.fsid)
	if nerr == nil {
		e.Opaque(target)
	}
	return nil
}

func (h *Handler) read(c *call, d *xdr.Decoder, e *xdr.Encoder) error {
	b, err := getHandle(d, "file")
	if err != nil {
		return err
	}
	off, err := d.Uint64("offset")
	if err != nil {
		return errGarbage(err)
	}
	count, err := d.Uint32("count")
	if err != nil {
		return errGarbage(err)
	}
	count = min(count, MaxData)
	fd, st, nerr, err := h.open(c, b, unix.O_RDONLY, false)
	if err != nil {
		return err
	}
	switch {
	case nerr != nil:
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		nerr = typeError("read", st, unix.S_IFREG)
	default:
		// knfsd lets a client read a file it may only execute: the client
		// needs its contents to run it. Both tests under one switch.
		if st.Uid != c.id.UID {
			nerr = c.runAs("access check", func() error {
				if err := c.mayAccess(fd, st, unix.R_OK, false); err == nil {
					return nil
				}
				return c.mayAccess(fd, st, unix.X_OK, false)
			})
		}
	}
	if nerr != nil {
		h.status(c, e, nerr)
		putPostOp(e, st, c.fsid)
		return nil
	}
	h.status(c, e, nil)
	// The attributes follow the read (a concurrent write may grow the
	// file), so their place is reserved and filled in afterwards.
	attrAt := e.Len()
	e.Reserve(4 + fattrSize)
	e.Uint32(0) // count
	e.Uint32(0) // eof
	e.Uint32(0) // data length
	dataAt := e.Len()
	buf := e.Reserve(int(count))
	n := 0
	var rerr error
	if off <= 1<<63-1 {
		for n < len(buf) {
			m, err := unix.Pread(fd, buf[n:], int64(off)+int64(n))
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				rerr = err
				break
			}
			if m == 0 {
				break
			}
			n += m
		}
	}
	if rerr != nil {
		e.Truncate(attrAt - 4)
		h.status(c, e, fail("read", rerr))
		putPostOp(e, st, c.fsid)
		return nil
	}
	e.Truncate(dataAt + n)
	e.Reserve(xdr.Pad(n))
	// The attributes from before the read: a READ changes none a client
	// caches (the atime it may change is not one), so a second fstat
	// would only cost.
	after := st
	eof := off+uint64(n) >= uint64(after.Size)
	e.PutUint32At(dataAt-12, uint32(n))
	if eof {
		e.PutUint32At(dataAt-8, 1)
	}
	e.PutUint32At(dataAt-4, uint32(n))
	putFattrAt(e, attrAt, after, c.fsid)
	return nil
}

// putFattrAt writes a present post_op_attr at offset off of e, where
// 4+fattrSize bytes were reserved.
func putFattrAt(e *xdr.Encoder, off int, st *unix.Stat_t, fsid uint64) {
	var tmp [4 + fattrSize]byte
	t := xdr.NewEncoder(tmp[:0])
	putPostOp(t, st, fsid)
	copy(e.Bytes()[off:off+len(tmp)], t.Bytes())
}

func (h *Handler) write(c *call, d *xdr.Decoder, e *xdr.Encoder) error {
	b, err := getHandle(d, "file")
	if err != nil {
		return err
	}
	off, err := d.Uint64("offset")
	if err != nil {
		return errGarbage(err)
	}
	count, err := d.Uint32("count")
	if err != nil {
		return errGarbage(err)
	}
	stable, err := d.Uint32("stable")
	if err != nil {
		return errGarbage(err)
	}
	if stable > FileSync {
		return errGarbage(fmt.Errorf("stable %d: not UNSTABLE, DATA_SYNC or FILE_SYNC", stable))
	}
	data, err := d.Opaque("data", MaxData)
	if err != nil {
		return errGarbage(err)
	}
	if uint32(len(data)) < count {
		// RFC 1813: count must equal the data's length; knfsd uses the
		// smaller. A longer count than the data is garbage.
		return errGarbage(fmt.Errorf("count %d but %d bytes of data", count, len(data)))
	}
	data = data[:count]
	fd, before, nerr, err := h.open(c, b, unix.O_RDWR, true)
	if err != nil {
		return err
	}
	w := wcc{before: before}
	if nerr == nil {
		switch {
		case w.before.Mode&unix.S_IFMT != unix.S_IFREG:
			nerr = typeError("write", w.before, unix.S_IFREG)
		case off+uint64(len(data)) > 1<<63-1:
			nerr = failStatus(ErrFBig, "write", fmt.Errorf("offset %d + %d bytes", off, len(data)))
		}
		if nerr == nil {
			// The write itself runs as the client, after its access check
			// under the same switch, so that the kernel clears set-uid and
			// set-gid bits as it does for a local writer.
			var denied error
			nerr = c.runAs("write", func() error {
				if denied = c.mayAccess(fd, w.before, unix.W_OK, true); denied != nil {
					return nil
				}
				for n := 0; n < len(data); {
					m, err := unix.Pwrite(fd, data[n:], int64(off)+int64(n))
					if err == unix.EINTR {
						continue
					}
					if err != nil {
						return err
					}
					n += m
				}
				switch stable {
				case DataSync:
					return unix.Fdatasync(fd)
				case FileSync:
					return unix.Fsync(fd)
				}
				return nil
			})
			switch {
			case denied != nil:
				nerr = fail("access check", denied)
			case nerr != nil:
				h.resetVerifier(nerr) // the data may be lost: clients must resend
			}
		}
		w.after = fstat(fd)
	}
	h.status(c, e, nerr)
	w.put(e, c.fsid)
	if nerr == nil {
		e.Uint32(count)
		e.Uint32(stable)
		v := h.Verifier()
		e.FixedOpaque(v[:])
	}
	return nil
}

func (h *Handler) commit(c *call, d *xdr.Decoder, e *xdr.Encoder) error {
	b, err := getHandle(d, "file")
	if err != nil {
		return err
	}
	if _, err := d.Uint64("offset"); err != nil {
		return errGarbage(err)
	}
	if _, err := d.Uint32("count"); err != nil {
		return errGarbage(err)
	}
	fd, before, nerr, err := h.open(c, b, unix.O_RDONLY, false)
	if err != nil {
		return err
	}
	w := wcc{before: before}
	if nerr == nil {
		if err := unix.Fsync(fd); err != nil {
			nerr = fail("fsync", err)
			h.resetVerifier(nerr)
		}
		// The verifier is read after the sync. This fd was opened for the
		// COMMIT, so its fsync reports a writeback error that happened
		// before the open only if no other fd saw it yet; one that did
		// belongs to a WRITE or COMMIT of this handler, which resets the
		// verifier as soon as its own sync returns. What remains is the
		// moment between that sync returning and the reset.
		v := h.Verifier()
		w.after = fstat(fd)
		h.status(c, e, nerr)
		w.put(e, c.fsid)
		if nerr == nil {
			e.FixedOpaque(v[:])
		}
		return nil
	}
	h.status(c, e, nerr)
	w.put(e, c.fsid)
	return nil
}
