package nfs3

import (
	"encoding/binary"

	"golang.org/x/sys/unix"

	"github.com/blockrep/blockrep/nfsexport/fh"
	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// fsidOf is the fsid3 of a file system: folded from its UUID, so that it
// is the same on every node holding a block-identical copy (a client that
// sees fsid change thinks it crossed a mount point).
func fsidOf(u fh.UUID) uint64 {
	return binary.BigEndian.Uint64(u[:8]) ^ binary.BigEndian.Uint64(u[8:])
}

func ftypeOf(mode uint32) uint32 {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return typeReg
	case unix.S_IFDIR:
		return typeDir
	case unix.S_IFBLK:
		return typeBlk
	case unix.S_IFCHR:
		return typeChr
	case unix.S_IFLNK:
		return typeLnk
	case unix.S_IFSOCK:
		return typeSock
	case unix.S_IFIFO:
		return typeFifo
	}
	return typeReg
}

// putTime encodes an nfstime3. Times before 1970 or after 2106 are clamped
// to what the 32-bit seconds field can hold.
func putTime(e *xdr.Encoder, t unix.Timespec) {
	sec := t.Sec
	switch {
	case sec < 0:
		sec = 0
	case sec > 0xffffffff:
		sec = 0xffffffff
	}
	e.Uint32(uint32(sec))
	e.Uint32(uint32(t.Nsec))
}

// putFattr encodes the fattr3 of st on the file system fsid.
func putFattr(e *xdr.Encoder, st *unix.Stat_t, fsid uint64) {
	e.Uint32(ftypeOf(st.Mode))
	e.Uint32(st.Mode & 0o7777)
	e.Uint32(uint32(st.Nlink))
	e.Uint32(st.Uid)
	e.Uint32(st.Gid)
	e.Uint64(uint64(st.Size))
	e.Uint64(uint64(st.Blocks) * 512) // used: st_blocks is in 512-byte units
	e.Uint32(unix.Major(st.Rdev))
	e.Uint32(unix.Minor(st.Rdev))
	e.Uint64(fsid)
	e.Uint64(st.Ino)
	putTime(e, st.Atim)
	putTime(e, st.Mtim)
	putTime(e, st.Ctim)
}

// putPostOp encodes a post_op_attr: the attributes if st is not nil.
func putPostOp(e *xdr.Encoder, st *unix.Stat_t, fsid uint64) {
	e.Bool(st != nil)
	if st != nil {
		putFattr(e, st, fsid)
	}
}

// putPreOp encodes a pre_op_attr (wcc_attr: size, mtime, ctime).
func putPreOp(e *xdr.Encoder, st *unix.Stat_t) {
	e.Bool(st != nil)
	if st != nil {
		e.Uint64(uint64(st.Size))
		putTime(e, st.Mtim)
		putTime(e, st.Ctim)
	}
}

// wcc holds a wcc_data: the attributes before and after an operation.
type wcc struct {
	before, after *unix.Stat_t
}

func (w wcc) put(e *xdr.Encoder, fsid uint64) {
	putPreOp(e, w.before)
	putPostOp(e, w.after, fsid)
}

// putPostOpFH encodes a post_op_fh3.
func putPostOpFH(e *xdr.Encoder, h []byte) {
	e.Bool(h != nil)
	if h != nil {
		e.Opaque(h)
	}
}

// sattr is a decoded sattr3: each field applies only when its Set flag is.
type sattr struct {
	setMode, setUID, setGID, setSize bool
	mode, uid, gid                   uint32
	size                             uint64
	atime, mtime                     uint32 // time_how
	atimeV, mtimeV                   unix.Timespec
}

func getTime(d *xdr.Decoder, field string) (unix.Timespec, error) {
	sec, err := d.Uint32(field + ".seconds")
	if err != nil {
		return unix.Timespec{}, err
	}
	nsec, err := d.Uint32(field + ".nseconds")
	if err != nil {
		return unix.Timespec{}, err
	}
	return unix.Timespec{Sec: int64(sec), Nsec: int64(nsec)}, nil
}

func getSattr(d *xdr.Decoder) (sattr, error) {
	var s sattr
	var err error
	opt := func(field string, set *bool, v *uint32) {
		if err != nil {
			return
		}
		if *set, err = d.Bool(field + ".set"); err == nil && *set {
			*v, err = d.Uint32(field)
		}
	}
	opt("mode", &s.setMode, &s.mode)
	opt("uid", &s.setUID, &s.uid)
	opt("gid", &s.setGID, &s.gid)
	if err != nil {
		return s, err
	}
	if s.setSize, err = d.Bool("size.set"); err != nil {
		return s, err
	}
	if s.setSize {
		if s.size, err = d.Uint64("size"); err != nil {
			return s, err
		}
	}
	howTime := func(field string, how *uint32, v *unix.Timespec) {
		if err != nil {
			return
		}
		if *how, err = d.Uint32(field + ".set"); err != nil {
			return
		}
		switch *how {
		case dontChange, setToServerTime:
		case setToClientTime:
			*v, err = getTime(d, field)
		default:
			err = &xdr.Error{Field: field + ".set", Offset: d.Offset() - 4, Err: xdr.ErrInvalid, Detail: "time_how not 0, 1 or 2"}
		}
	}
	howTime("atime", &s.atime, &s.atimeV)
	howTime("mtime", &s.mtime, &s.mtimeV)
	return s, err
}

// empty reports whether s changes nothing.
func (s sattr) empty() bool {
	return !s.setMode && !s.setUID && !s.setGID && !s.setSize && s.atime == dontChange && s.mtime == dontChange
}
