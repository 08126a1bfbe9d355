// Package rpcclient is the ONC RPC v2 client (RFC 5531) of blockrep's
// benchmarks and tests: TCP with record marking, many calls in flight on
// one connection (each with its own xid; replies are matched to callers by
// xid, in whatever order the server sends them), AUTH_NONE or AUTH_SYS
// credentials, and every argument the caller's own (UNSTABLE writes,
// COMMIT, a chosen xid to retransmit a call).
//
// It is written here rather than taken from go-nfs-client because that
// client's rpc.Client hands replies over unbuffered channels with a 5 s
// timeout (a COMMIT of a 1 GiB file can take longer: the reply is then
// never read and the connection's reader blocks for good), can close a
// reply channel twice when a connection fails with calls in flight (a
// panic in its own goroutine, which no caller can recover), resends a call
// on timeout, encodes every message by reflection and forgets the padding
// of opaque results.
package rpcclient

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

// Cred is the credential a client's calls carry.
type Cred struct {
	Flavor  uint32 // rpc.AuthNone or rpc.AuthSys
	Machine string
	UID     uint32
	GID     uint32
	GIDs    []uint32
}

// Root is AUTH_SYS uid 0, gid 0, no supplementary groups.
var Root = Cred{Flavor: rpc.AuthSys, Machine: "blockrep-client"}

// User returns an AUTH_SYS credential.
func User(uid, gid uint32, groups ...uint32) Cred {
	return Cred{Flavor: rpc.AuthSys, Machine: "blockrep-client", UID: uid, GID: gid, GIDs: groups}
}

// encode returns the opaque_auth of c (flavor and body).
func (c Cred) encode() []byte {
	var e xdr.Encoder
	e.Uint32(c.Flavor)
	if c.Flavor != rpc.AuthSys {
		e.Opaque(nil)
		return e.Bytes()
	}
	var body xdr.Encoder
	body.Uint32(uint32(time.Now().Unix())) // stamp
	body.String(c.Machine)
	body.Uint32(c.UID)
	body.Uint32(c.GID)
	body.Uint32(uint32(len(c.GIDs)))
	for _, g := range c.GIDs {
		body.Uint32(g)
	}
	e.Opaque(body.Bytes())
	return e.Bytes()
}

// Errors of the RPC layer, wrapped with the call's name.
var (
	ErrProgUnavail  = errors.New("PROG_UNAVAIL")
	ErrProgMismatch = errors.New("PROG_MISMATCH")
	ErrProcUnavail  = errors.New("PROC_UNAVAIL (the server does not implement the procedure)")
	ErrGarbageArgs  = errors.New("GARBAGE_ARGS")
	ErrSystemErr    = errors.New("SYSTEM_ERR")
	// ErrDenied is a MSG_DENIED reply; the error says RPC_MISMATCH or
	// AUTH_ERROR with its auth_stat (see AuthError).
	ErrDenied   = errors.New("MSG_DENIED")
	ErrBadReply = errors.New("malformed reply")
)

// AuthError is a MSG_DENIED AUTH_ERROR reply; it matches ErrDenied.
type AuthError struct{ Stat rpc.AuthStat }

func (e *AuthError) Error() string {
	return fmt.Sprintf("%v: AUTH_ERROR (auth_stat %d)", ErrDenied, e.Stat)
}
func (e *AuthError) Is(target error) bool { return target == ErrDenied }

// acceptErrors maps accept_stat 1–5 to the errors above.
var acceptErrors = [...]error{nil, ErrProgUnavail, ErrProgMismatch, ErrProcUnavail, ErrGarbageArgs, ErrSystemErr}

// ParseReply checks an RPC reply record (RFC 5531 section 9) and returns
// its xid and the procedure's results. A reply that is not MSG_ACCEPTED
// SUCCESS gives the error that says why; a record too short to hold an xid
// gives ErrBadReply and xid 0.
func ParseReply(rec []byte) (xid uint32, results []byte, err error) {
	d := xdr.NewDecoder(rec)
	if xid, err = d.Uint32("xid"); err != nil {
		return 0, nil, fmt.Errorf("%w: %v", ErrBadReply, err)
	}
	bad := func(err error) (uint32, []byte, error) { return xid, nil, fmt.Errorf("%w: %v", ErrBadReply, err) }
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
			return xid, nil, fmt.Errorf("%w (versions %d–%d)", ErrProgMismatch, lo, hi)
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
			return xid, nil, fmt.Errorf("%w: RPC_MISMATCH (versions %d–%d)", ErrDenied, lo, hi)
		}
		as, _ := d.Uint32("auth_stat")
		return xid, nil, &AuthError{Stat: rpc.AuthStat(as)}
	}
	return bad(fmt.Errorf("reply_stat %d", stat))
}

// Options configure a Client.
type Options struct {
	// Cred is what every call carries; the zero value is AUTH_NONE.
	Cred Cred
	// Timeout bounds the wait for one reply; when it passes the connection
	// is closed and every call on it fails (over TCP nothing is resent).
	// 0 means DefaultTimeout.
	Timeout time.Duration
	// Name names a call in errors ("NFS READ"); nil means "program P
	// procedure N".
	Name func(prog, proc uint32) string
}

// DefaultTimeout is Options.Timeout's default: long, because a COMMIT of a
// whole large file waits for its writeback.
const DefaultTimeout = 3 * time.Minute

// MaxReplySize is the largest reply record accepted: a 1 MiB READ and its
// header, with room to spare.
const MaxReplySize = 1<<20 + 64<<10

// reply is a reply record handed from a connection's reader to the caller
// waiting for it.
type reply struct {
	buf *[]byte // the record, from the connection's pool
	err error   // the connection failed before the reply came
}

// Client is one TCP connection to an RPC server, safe for concurrent
// calls. Its reader goroutine is stopped by Close.
type Client struct {
	nc   net.Conn
	cred []byte
	opts Options

	wmu sync.Mutex // one record written at a time

	mu      sync.Mutex
	xid     uint32
	pending map[uint32]chan reply
	err     error // why the connection failed; every later call fails with it

	bufs sync.Pool // *[]byte, reply records
	done chan struct{}
}

// Dial connects to addr.
func Dial(ctx context.Context, addr string, opts Options) (*Client, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("rpc client: connect %s: %w", addr, err)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	c := &Client{
		nc: nc, cred: opts.Cred.encode(), opts: opts,
		xid:     uint32(time.Now().UnixNano()),
		pending: make(map[uint32]chan reply),
		done:    make(chan struct{}),
	}
	go c.receive()
	return c, nil
}

func (c *Client) name(prog, proc uint32) string {
	if c.opts.Name != nil {
		return c.opts.Name(prog, proc)
	}
	return fmt.Sprintf("program %d procedure %d", prog, proc)
}

// receive reads replies until the connection fails or is closed, then
// fails every call still waiting.
func (c *Client) receive() {
	defer close(c.done)
	br := bufio.NewReaderSize(c.nc, 256<<10)
	for {
		p, _ := c.bufs.Get().(*[]byte)
		if p == nil {
			p = new([]byte)
		}
		rec, err := rpc.ReadRecord(br, *p, MaxReplySize)
		*p = rec
		if err != nil {
			c.fail(fmt.Errorf("reading a reply from %s: %w", c.nc.RemoteAddr(), err))
			return
		}
		if len(rec) < 4 {
			c.fail(fmt.Errorf("%w: a %d-byte record from %s", ErrBadReply, len(rec), c.nc.RemoteAddr()))
			return
		}
		xid := binary.BigEndian.Uint32(rec)
		c.mu.Lock()
		ch, ok := c.pending[xid]
		delete(c.pending, xid)
		c.mu.Unlock()
		if ok {
			ch <- reply{buf: p} // buffered: never blocks
		} else {
			// A call given up (its context ended): nobody waits.
			c.release(p)
		}
	}
}

// fail records the connection's first error, closes it and fails every
// waiting call.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	pending := c.pending
	c.pending = map[uint32]chan reply{}
	err = c.err
	c.mu.Unlock()
	c.nc.Close()
	for _, ch := range pending {
		ch <- reply{err: err}
	}
}

// Close closes the connection and waits for its reader to stop. Calls in
// flight fail.
func (c *Client) Close() {
	c.fail(net.ErrClosed)
	<-c.done
}

func (c *Client) release(p *[]byte) {
	if p != nil && cap(*p) <= 2*MaxReplySize {
		c.bufs.Put(p)
	}
}

// Call sends one call and waits for its reply. args appends the
// procedure's arguments; payload, if not empty, follows them as the body
// of an opaque whose length args has written (a WRITE's data, sent from
// the caller's buffer without a copy), padded here. On success decode, if
// not nil, reads the procedure's results, valid only during the call.
func (c *Client) Call(ctx context.Context, prog, vers, proc uint32, args func(*xdr.Encoder), payload []byte, decode func(*xdr.Decoder) error) error {
	c.mu.Lock()
	c.xid++
	xid := c.xid
	c.mu.Unlock()
	return c.CallXID(ctx, xid, prog, vers, proc, args, payload, decode)
}

// CallXID is Call with a chosen xid, to retransmit a call as a client does
// after it reconnected. The xid must not be in flight on c.
func (c *Client) CallXID(ctx context.Context, xid, prog, vers, proc uint32, args func(*xdr.Encoder), payload []byte, decode func(*xdr.Decoder) error) error {
	name := c.name(prog, proc)
	ch := make(chan reply, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return fmt.Errorf("%s: connection failed before the call: %w", name, err)
	}
	if _, busy := c.pending[xid]; busy {
		c.mu.Unlock()
		return fmt.Errorf("%s: xid %#x already in flight", name, xid)
	}
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
	c.nc.SetWriteDeadline(time.Now().Add(c.opts.Timeout))
	_, err := bufs.WriteTo(c.nc)
	c.wmu.Unlock()
	if err != nil {
		// A record written in part leaves the stream unusable.
		c.fail(fmt.Errorf("sending %s: %w", name, err))
	}

	timer := time.NewTimer(c.opts.Timeout)
	defer timer.Stop()
	var r reply
	select {
	case r = <-ch:
	case <-ctx.Done():
		c.forget(xid)
		return fmt.Errorf("%s: %w", name, ctx.Err())
	case <-timer.C:
		c.fail(fmt.Errorf("no reply to %s (xid %#x) in %s", name, xid, c.opts.Timeout))
		r = <-ch
	}
	if r.err != nil {
		return fmt.Errorf("%s: %w", name, r.err)
	}
	defer c.release(r.buf)
	_, results, err := ParseReply(*r.buf)
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
func (c *Client) forget(xid uint32) {
	c.mu.Lock()
	delete(c.pending, xid)
	c.mu.Unlock()
}
