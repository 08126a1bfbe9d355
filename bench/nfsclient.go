package bench

// This file is the NFSv3 client of blockbench -nfs: the few procedures of
// RFC 1813 the rows use, on internal/rpcclient's connections (many calls in
// flight, WRITE data sent from the caller's buffer). The client's own
// procedure numbers and status names are kept here, independent of the
// server under test.

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/blockrep/blockrep/internal/rpcclient"
	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// ONC RPC programs and procedures used by the client (RFC 1813).
const (
	nfsProgram   = 100003
	nfsVersion   = 3
	mountProgram = 100005
	mountVersion = 3

	mountProcMnt = 1

	nfsProcNull    = 0
	nfsProcGetattr = 1
	nfsProcLookup  = 3
	nfsProcRead    = 6
	nfsProcWrite   = 7
	nfsProcCreate  = 8
	nfsProcRemove  = 12
	nfsProcFsinfo  = 19
	nfsProcCommit  = 21
)

var nfsProcNames = map[uint32]string{
	nfsProcNull: "NULL", nfsProcGetattr: "GETATTR", nfsProcLookup: "LOOKUP", nfsProcRead: "READ",
	nfsProcWrite: "WRITE", nfsProcCreate: "CREATE", nfsProcRemove: "REMOVE", nfsProcFsinfo: "FSINFO",
	nfsProcCommit: "COMMIT",
}

// procName names a call for errors: "NFS READ", "MOUNT MNT".
func procName(prog, proc uint32) string {
	switch {
	case prog == mountProgram && proc == mountProcMnt:
		return "MOUNT MNT"
	case prog == nfsProgram && nfsProcNames[proc] != "":
		return "NFS " + nfsProcNames[proc]
	}
	return fmt.Sprintf("program %d procedure %d", prog, proc)
}

// stable_how (RFC 1813 section 3.3.7).
const (
	unstable = 0
	dataSync = 1
	fileSync = 2
)

// nfsCallTimeout bounds the wait for one reply. A reply that does not come
// means the server hangs or lost the call; over TCP the client does not
// resend, so the connection is closed and the run fails, naming the call.
// It is long because a COMMIT of a whole 1 GiB file waits for its
// writeback.
const nfsCallTimeout = 3 * time.Minute

// rpcConn is one connection of the client, with the procedures the rows
// use.
type rpcConn struct{ *rpcclient.Client }

// dialRPC connects to addr. Calls carry an AUTH_SYS credential for uid and
// gid 0 with no supplementary groups (the exports do not squash root).
func dialRPC(ctx context.Context, addr string) (*rpcConn, error) {
	cred := rpcclient.Root
	cred.Machine = "blockbench"
	c, err := rpcclient.Dial(ctx, addr, rpcclient.Options{Cred: cred, Timeout: nfsCallTimeout, Name: procName})
	if err != nil {
		return nil, fmt.Errorf("bench: nfs: %w", err)
	}
	return &rpcConn{c}, nil
}

func (c *rpcConn) call(ctx context.Context, prog, vers, proc uint32, args func(*xdr.Encoder), payload []byte, decode func(*xdr.Decoder) error) error {
	return c.Call(ctx, prog, vers, proc, args, payload, decode)
}

func (c *rpcConn) close() { c.Close() }

// nfsStatus is an nfsstat3 other than NFS3_OK.
type nfsStatus uint32

// The statuses the rows may meet, by name (RFC 1813 section 2.6).
const (
	nfs3ErrNoEnt nfsStatus = 2
	nfs3ErrExist nfsStatus = 17
)

var nfsStatusNames = map[nfsStatus]string{
	1: "NFS3ERR_PERM", 2: "NFS3ERR_NOENT", 5: "NFS3ERR_IO", 6: "NFS3ERR_NXIO", 13: "NFS3ERR_ACCES",
	17: "NFS3ERR_EXIST", 18: "NFS3ERR_XDEV", 19: "NFS3ERR_NODEV", 20: "NFS3ERR_NOTDIR", 21: "NFS3ERR_ISDIR",
	22: "NFS3ERR_INVAL", 27: "NFS3ERR_FBIG", 28: "NFS3ERR_NOSPC", 30: "NFS3ERR_ROFS", 31: "NFS3ERR_MLINK",
	63: "NFS3ERR_NAMETOOLONG", 66: "NFS3ERR_NOTEMPTY", 69: "NFS3ERR_DQUOT", 70: "NFS3ERR_STALE",
	71: "NFS3ERR_REMOTE", 10001: "NFS3ERR_BADHANDLE", 10002: "NFS3ERR_NOT_SYNC", 10003: "NFS3ERR_BAD_COOKIE",
	10004: "NFS3ERR_NOTSUPP", 10005: "NFS3ERR_TOOSMALL", 10006: "NFS3ERR_SERVERFAULT",
	10007: "NFS3ERR_BADTYPE", 10008: "NFS3ERR_JUKEBOX",
}

func (s nfsStatus) Error() string {
	if n, ok := nfsStatusNames[s]; ok {
		return fmt.Sprintf("%s (%d)", n, uint32(s))
	}
	return fmt.Sprintf("nfsstat3 %d", uint32(s))
}

// status decodes an nfsstat3; a status other than NFS3_OK is returned as
// an nfsStatus error.
func status(d *xdr.Decoder) error {
	s, err := d.Uint32("status")
	if err != nil {
		return err
	}
	if s != 0 {
		return nfsStatus(s)
	}
	return nil
}

// fattr is the part of an fattr3 the rows look at.
type fattr struct {
	Type   uint32 // ftype3: 1 regular file, 2 directory
	Mode   uint32
	Size   uint64
	FileID uint64
}

// decodeFattr decodes an fattr3 (RFC 1813 section 2.6, 84 bytes).
func decodeFattr(d *xdr.Decoder) (fattr, error) {
	var a fattr
	b, err := d.FixedOpaque("fattr3", 84)
	if err != nil {
		return a, err
	}
	a.Type = binary.BigEndian.Uint32(b[0:])
	a.Mode = binary.BigEndian.Uint32(b[4:])
	a.Size = binary.BigEndian.Uint64(b[20:])
	a.FileID = binary.BigEndian.Uint64(b[52:])
	return a, nil
}

// decodePostOpAttr decodes a post_op_attr; ok says whether attributes
// followed.
func decodePostOpAttr(d *xdr.Decoder) (a fattr, ok bool, err error) {
	if ok, err = d.Optional("post_op_attr"); err != nil || !ok {
		return a, false, err
	}
	a, err = decodeFattr(d)
	return a, err == nil, err
}

// skipWcc skips a wcc_data: pre_op_attr (size, mtime, ctime) and
// post_op_attr.
func skipWcc(d *xdr.Decoder) error {
	pre, err := d.Optional("pre_op_attr")
	if err != nil {
		return err
	}
	if pre {
		if _, err := d.FixedOpaque("wcc_attr", 24); err != nil {
			return err
		}
	}
	_, _, err = decodePostOpAttr(d)
	return err
}

// handle copies a file handle out of a reply buffer.
func handle(d *xdr.Decoder, field string) ([]byte, error) {
	b, err := d.Opaque(field, 64)
	if err != nil {
		return nil, err
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("%s: empty file handle", field)
	}
	return append([]byte(nil), b...), nil
}

// mount asks the MOUNT program for the root handle of the export at path.
func (c *rpcConn) mount(ctx context.Context, path string) ([]byte, error) {
	var fh []byte
	err := c.call(ctx, mountProgram, mountVersion, mountProcMnt, func(e *xdr.Encoder) { e.String(path) }, nil, func(d *xdr.Decoder) error {
		st, err := d.Uint32("mountstat3")
		if err != nil {
			return err
		}
		if st != 0 {
			return fmt.Errorf("export %s: mountstat3 %d", path, st)
		}
		fh, err = handle(d, "fhandle3")
		return err
	})
	return fh, err
}

// fsinfo returns the server's largest READ and WRITE sizes for the file
// system of fh.
func (c *rpcConn) fsinfo(ctx context.Context, fh []byte) (rtmax, wtmax uint32, err error) {
	err = c.call(ctx, nfsProgram, nfsVersion, nfsProcFsinfo, func(e *xdr.Encoder) { e.Opaque(fh) }, nil, func(d *xdr.Decoder) error {
		if err := status(d); err != nil {
			return err
		}
		if _, _, err := decodePostOpAttr(d); err != nil {
			return err
		}
		if rtmax, err = d.Uint32("rtmax"); err != nil {
			return err
		}
		if _, err = d.Uint32("rtpref"); err != nil {
			return err
		}
		if _, err = d.Uint32("rtmult"); err != nil {
			return err
		}
		wtmax, err = d.Uint32("wtmax")
		return err
	})
	return rtmax, wtmax, err
}

// lookup returns the handle of name in the directory dir, and its
// attributes when the server sent them.
func (c *rpcConn) lookup(ctx context.Context, dir []byte, name string) (fh []byte, attr fattr, err error) {
	err = c.call(ctx, nfsProgram, nfsVersion, nfsProcLookup, func(e *xdr.Encoder) {
		e.Opaque(dir)
		e.String(name)
	}, nil, func(d *xdr.Decoder) error {
		if err := status(d); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if fh, err = handle(d, "object"); err != nil {
			return err
		}
		attr, _, err = decodePostOpAttr(d)
		return err
	})
	return fh, attr, err
}

// getattr returns the attributes of fh.
func (c *rpcConn) getattr(ctx context.Context, fh []byte) (attr fattr, err error) {
	err = c.call(ctx, nfsProgram, nfsVersion, nfsProcGetattr, func(e *xdr.Encoder) { e.Opaque(fh) }, nil, func(d *xdr.Decoder) error {
		if err := status(d); err != nil {
			return err
		}
		attr, err = decodeFattr(d)
		return err
	})
	return attr, err
}

// read reads up to count bytes of fh at off; check sees the data while the
// reply buffer is valid (nil: not looked at). It returns the byte count
// and the server's eof flag.
func (c *rpcConn) read(ctx context.Context, fh []byte, off uint64, count uint32, check func([]byte) error) (n int, eof bool, err error) {
	err = c.call(ctx, nfsProgram, nfsVersion, nfsProcRead, func(e *xdr.Encoder) {
		e.Opaque(fh)
		e.Uint64(off)
		e.Uint32(count)
	}, nil, func(d *xdr.Decoder) error {
		if err := status(d); err != nil {
			return err
		}
		if _, _, err := decodePostOpAttr(d); err != nil {
			return err
		}
		cnt, err := d.Uint32("count")
		if err != nil {
			return err
		}
		if eof, err = d.Bool("eof"); err != nil {
			return err
		}
		data, err := d.Opaque("data", int(count))
		if err != nil {
			return err
		}
		if int(cnt) != len(data) {
			return fmt.Errorf("%w: count %d, %d bytes of data", rpcclient.ErrBadReply, cnt, len(data))
		}
		n = len(data)
		if check != nil {
			return check(data)
		}
		return nil
	})
	return n, eof, err
}

// write writes data to fh at off, asking for stability stable. It returns
// the count and stability the server answered and its write verifier.
func (c *rpcConn) write(ctx context.Context, fh []byte, off uint64, data []byte, stable uint32) (n uint32, committed uint32, verf [8]byte, err error) {
	err = c.call(ctx, nfsProgram, nfsVersion, nfsProcWrite, func(e *xdr.Encoder) {
		e.Opaque(fh)
		e.Uint64(off)
		e.Uint32(uint32(len(data)))
		e.Uint32(stable)
		e.Uint32(uint32(len(data))) // the opaque's length; the bytes follow as the payload
	}, data, func(d *xdr.Decoder) error {
		if err := status(d); err != nil {
			return err
		}
		if err := skipWcc(d); err != nil {
			return err
		}
		if n, err = d.Uint32("count"); err != nil {
			return err
		}
		if committed, err = d.Uint32("committed"); err != nil {
			return err
		}
		v, err := d.FixedOpaque("verf", 8)
		copy(verf[:], v)
		return err
	})
	return n, committed, verf, err
}

// commit asks the server to make count bytes of fh from off stable (0, 0:
// the whole file) and returns its write verifier.
func (c *rpcConn) commit(ctx context.Context, fh []byte, off uint64, count uint32) (verf [8]byte, err error) {
	err = c.call(ctx, nfsProgram, nfsVersion, nfsProcCommit, func(e *xdr.Encoder) {
		e.Opaque(fh)
		e.Uint64(off)
		e.Uint32(count)
	}, nil, func(d *xdr.Decoder) error {
		if err := status(d); err != nil {
			return err
		}
		if err := skipWcc(d); err != nil {
			return err
		}
		v, err := d.FixedOpaque("verf", 8)
		copy(verf[:], v)
		return err
	})
	return verf, err
}

// create creates the regular file name in dir with mode (UNCHECKED: an
// existing file is opened, not truncated) and returns its handle, looked
// up when the server's reply carries none (RFC 1813 lets it).
func (c *rpcConn) create(ctx context.Context, dir []byte, name string, mode uint32) ([]byte, error) {
	var fh []byte
	err := c.call(ctx, nfsProgram, nfsVersion, nfsProcCreate, func(e *xdr.Encoder) {
		e.Opaque(dir)
		e.String(name)
		e.Uint32(0) // createmode3 UNCHECKED
		e.Bool(true)
		e.Uint32(mode) // set_mode3
		e.Bool(false)  // set_uid3
		e.Bool(false)  // set_gid3
		e.Bool(false)  // set_size3
		e.Uint32(0)    // set_atime: DONT_CHANGE
		e.Uint32(0)    // set_mtime: DONT_CHANGE
	}, nil, func(d *xdr.Decoder) error {
		if err := status(d); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		ok, err := d.Optional("post_op_fh3")
		if err != nil || !ok {
			return err
		}
		fh, err = handle(d, "obj")
		return err
	})
	if err == nil && fh == nil {
		fh, _, err = c.lookup(ctx, dir, name)
	}
	return fh, err
}

// remove removes the file name from dir.
func (c *rpcConn) remove(ctx context.Context, dir []byte, name string) error {
	return c.call(ctx, nfsProgram, nfsVersion, nfsProcRemove, func(e *xdr.Encoder) {
		e.Opaque(dir)
		e.String(name)
	}, nil, func(d *xdr.Decoder) error {
		if err := status(d); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	})
}
