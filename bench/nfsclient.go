package bench

// This file is the NFSv3 client of blockbench -nfs: ONC RPC (RFC 5531) over
// TCP with record marking, many calls in flight on one connection (each
// call gets its own xid; replies are matched to callers by xid, in whatever
// order the server sends them), and the few procedures of RFC 1813 the rows
// use. It is written here rather than taken from go-nfs-client because that
// client's rpc.Client hands replies over unbuffered channels with a 5 s
// timeout (a COMMIT of a 1 GiB file can take longer: the reply is then
// never read and the connection's reader blocks for good), can close a
// reply channel twice when a connection fails with calls in flight (a
// panic in its own goroutine, which no caller can recover), resends a call
// on timeout, and encodes every message by reflection; its Target starts a
// goroutine per mount that never stops. The client's own procedure numbers
// and status names are kept here, independent of the server under test.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/blockrep/blockrep/nfsexport/rpc"
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

// maxReplySize is the largest reply record accepted: a 1 MiB READ and its
// header, with room to spare.
const maxReplySize = 1<<20 + 64<<10

// Errors of the RPC layer, wrapped with the call's name.
var (
	errProgUnavail  = errors.New("PROG_UNAVAIL")
	errProgMismatch = errors.New("PROG_MISMATCH")
	errProcUnavail  = errors.New("PROC_UNAVAIL (the server does not implement the procedure)")
	errGarbageArgs  = errors.New("GARBAGE_ARGS")
	errSystemErr    = errors.New("SYSTEM_ERR")
	errDenied       = errors.New("MSG_DENIED")
	errBadReply     = errors.New("malformed reply")
)

// acceptErrors maps accept_stat 1–5 to the errors above.
var acceptErrors = [...]error{nil, errProgUnavail, errProgMismatch, errProcUnavail, errGarbageArgs, errSystemErr}

// parseReply checks an RPC reply record (RFC 5531 section 9) and returns
// its xid and the procedure's results. A reply that is not MSG_ACCEPTED
// SUCCESS gives the error that says why; a record too short to hold an xid
// gives errBadReply and xid 0.
func parseReply(rec []byte) (xid uint32, results []byte, err error) {
	d := xdr.NewDecoder(rec)
	if xid, err = d.Uint32("xid"); err != nil {
		return 0, nil, fmt.Errorf("%w: %v", errBadReply, err)
	}
	bad := func(err error) (uint32, []byte, error) { return xid, nil, fmt.Errorf("%w: %v", errBadReply, err) }
	mtype, err := d.Uint32("msg_type")
	if err != nil {
		return bad(err)
	}
	if mtype != 1 {
		return bad(fmt.Errorf("msg_type %d, want REPLY (1)", mtype))
	}
	stat, err := d.Uint32("reply_stat")
	if err != nil {
		return bad(err)
	}
	switch stat {
	case 0: // MSG_ACCEPTED
		if _, err := d.Uint32("verf.flavor"); err != nil {
			return bad(err)
		}
		if _, err := d.Opaque("verf.body", 400); err != nil {
			return bad(err)
		}
		as, err := d.Uint32("accept_stat")
		if err != nil {
			return bad(err)
		}
		switch {
		case as == 0:
			return xid, d.Rest(), nil
		case as == 2:
			lo, _ := d.Uint32("mismatch.low")
			hi, _ := d.Uint32("mismatch.high")
			return xid, nil, fmt.Errorf("%w (versions %d–%d)", errProgMismatch, lo, hi)
		case int(as) < len(acceptErrors):
			return xid, nil, acceptErrors[as]
		}
		return bad(fmt.Errorf("accept_stat %d", as))
	case 1: // MSG_DENIED
		rs, err := d.Uint32("reject_stat")
		if err != nil {
			return bad(err)
		}
		if rs == 0 {
			lo, _ := d.Uint32("mismatch.low")
			hi, _ := d.Uint32("mismatch.high")
			return xid, nil, fmt.Errorf("%w: RPC_MISMATCH (versions %d–%d)", errDenied, lo, hi)
		}
		as, _ := d.Uint32("auth_stat")
		return xid, nil, fmt.Errorf("%w: AUTH_ERROR (auth_stat %d)", errDenied, as)
	}
	return bad(fmt.Errorf("reply_stat %d", stat))
}

// rpcReply is a reply record handed from a connection's reader to the
// caller waiting for it.
type rpcReply struct {
	buf *[]byte // the record, from the connection's pool
	err error   // the connection failed before the reply came
}

// rpcConn is one TCP connection to an RPC server, safe for concurrent
// calls. Its reader goroutine is stopped by close.
type rpcConn struct {
	nc   net.Conn
	cred []byte // the encoded AUTH_SYS credential (flavor and body)

	wmu sync.Mutex // one record written at a time

	mu      sync.Mutex
	xid     uint32
	pending map[uint32]chan rpcReply
	err     error // why the connection failed; every later call fails with it

	bufs sync.Pool // *[]byte, reply records
	done chan struct{}
}

// dialRPC connects to addr. Calls carry an AUTH_SYS credential for uid and
// gid 0 with no supplementary groups (the exports do not squash root).
func dialRPC(ctx context.Context, addr string) (*rpcConn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("bench: nfs: connect %s: %w", addr, err)
	}
	var cred xdr.Encoder
	var body xdr.Encoder
	body.Uint32(uint32(time.Now().Unix())) // stamp
	body.String("blockbench")              // machine name
	body.Uint32(0)                         // uid
	body.Uint32(0)                         // gid
	body.Uint32(0)                         // no supplementary groups
	cred.Uint32(rpc.AuthSys)
	cred.Opaque(body.Bytes())
	c := &rpcConn{
		nc: nc, cred: cred.Bytes(),
		xid:     uint32(time.Now().UnixNano()),
		pending: make(map[uint32]chan rpcReply),
		done:    make(chan struct{}),
	}
	go c.receive()
	return c, nil
}

// receive reads replies until the connection fails or is closed, then
// fails every call still waiting.
func (c *rpcConn) receive() {
	defer close(c.done)
	br := bufio.NewReaderSize(c.nc, 256<<10)
	for {
		p, _ := c.bufs.Get().(*[]byte)
		if p == nil {
			p = new([]byte)
		}
		rec, err := rpc.ReadRecord(br, *p, maxReplySize)
		*p = rec
		if err != nil {
			c.fail(fmt.Errorf("reading a reply from %s: %w", c.nc.RemoteAddr(), err))
			return
		}
		if len(rec) < 4 {
			c.fail(fmt.Errorf("%w: a %d-byte record from %s", errBadReply, len(rec), c.nc.RemoteAddr()))
			return
		}
		xid := binary.BigEndian.Uint32(rec)
		c.mu.Lock()
		ch, ok := c.pending[xid]
		delete(c.pending, xid)
		c.mu.Unlock()
		if ok {
			ch <- rpcReply{buf: p} // buffered: never blocks
		} else {
			// A call given up (its context ended): nobody waits.
			c.release(p)
		}
	}
}

// fail records the connection's first error, closes it and fails every
// waiting call.
func (c *rpcConn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	pending := c.pending
	c.pending = map[uint32]chan rpcReply{}
	err = c.err
	c.mu.Unlock()
	c.nc.Close()
	for _, ch := range pending {
		ch <- rpcReply{err: err}
	}
}

// close closes the connection and waits for its reader to stop.
func (c *rpcConn) close() {
	c.fail(net.ErrClosed)
	<-c.done
}

func (c *rpcConn) release(p *[]byte) {
	if p != nil && cap(*p) <= 2*maxReplySize {
		c.bufs.Put(p)
	}
}

// call sends one call and waits for its reply. args appends the
// procedure's arguments; payload, if not empty, follows them as the body
// of an opaque whose length args has written (a WRITE's data, sent from
// the caller's buffer without a copy), padded here. On success, results
// calls decode with the procedure's results, valid only during the call.
func (c *rpcConn) call(ctx context.Context, prog, vers, proc uint32, args func(*xdr.Encoder), payload []byte, decode func(*xdr.Decoder) error) error {
	name := procName(prog, proc)
	ch := make(chan rpcReply, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return fmt.Errorf("%s: connection failed before the call: %w", name, err)
	}
	c.xid++
	xid := c.xid
	c.pending[xid] = ch
	c.mu.Unlock()

	e := xdr.NewEncoder(make([]byte, 0, 256))
	e.Uint32(0) // record mark, set below
	e.Uint32(xid)
	e.Uint32(0) // CALL
	e.Uint32(2) // rpcvers
	e.Uint32(prog)
	e.Uint32(vers)
	e.Uint32(proc)
	e.FixedOpaque(c.cred)
	e.Uint32(rpc.AuthNone) // verifier
	e.Uint32(0)
	if args != nil {
		args(e)
	}
	hdr := e.Bytes()
	pad := xdr.Pad(len(payload))
	binary.BigEndian.PutUint32(hdr, uint32(len(hdr)-4+len(payload)+pad)|1<<31)
	bufs := net.Buffers{hdr}
	if len(payload) > 0 {
		bufs = append(bufs, payload, make([]byte, pad))
	}
	c.wmu.Lock()
	c.nc.SetWriteDeadline(time.Now().Add(nfsCallTimeout))
	_, err := bufs.WriteTo(c.nc)
	c.wmu.Unlock()
	if err != nil {
		// A record written in part leaves the stream unusable.
		c.fail(fmt.Errorf("sending %s: %w", name, err))
	}

	timer := time.NewTimer(nfsCallTimeout)
	defer timer.Stop()
	var r rpcReply
	select {
	case r = <-ch:
	case <-ctx.Done():
		c.forget(xid)
		return fmt.Errorf("%s: %w", name, ctx.Err())
	case <-timer.C:
		c.fail(fmt.Errorf("no reply to %s (xid %#x) in %s", name, xid, nfsCallTimeout))
		r = <-ch
	}
	if r.err != nil {
		return fmt.Errorf("%s: %w", name, r.err)
	}
	defer c.release(r.buf)
	_, results, err := parseReply(*r.buf)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if decode == nil {
		return nil
	}
	if err := decode(xdr.NewDecoder(results)); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// forget removes a call nobody waits for any more; its reply, if it comes,
// is dropped.
func (c *rpcConn) forget(xid uint32) {
	c.mu.Lock()
	delete(c.pending, xid)
	c.mu.Unlock()
}

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
			return fmt.Errorf("%w: count %d, %d bytes of data", errBadReply, cnt, len(data))
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
