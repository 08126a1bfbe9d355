// Package rpcclient is a small ONC RPC v2 client over TCP for tests and
// benchmarks: it sends calls with AUTH_NONE or AUTH_SYS credentials, many
// in flight on one connection, and hands back each reply's result bytes.
// Unlike go-nfs-client it lets the caller choose every argument (UNSTABLE
// writes, COMMIT, credentials) and reports rejected and unsuccessful
// replies as errors instead of panicking.
package rpcclient

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/blockrep/blockrep/nfsexport/rpc"
	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// Cred is the credential a call carries.
type Cred struct {
	Flavor  uint32 // rpc.AuthNone or rpc.AuthSys
	Machine string
	UID     uint32
	GID     uint32
	GIDs    []uint32
}

// Root is AUTH_SYS uid 0, gid 0.
var Root = Cred{Flavor: rpc.AuthSys, Machine: "test"}

// User returns an AUTH_SYS credential.
func User(uid, gid uint32, groups ...uint32) Cred {
	return Cred{Flavor: rpc.AuthSys, Machine: "test", UID: uid, GID: gid, GIDs: groups}
}

// ReplyError is a reply other than an accepted SUCCESS.
type ReplyError struct {
	Denied     bool           // MSG_DENIED
	AuthStat   rpc.AuthStat   // when Denied with AUTH_ERROR
	AcceptStat rpc.AcceptStat // when accepted
}

func (e *ReplyError) Error() string {
	if e.Denied {
		return fmt.Sprintf("rpc: call denied (auth_stat %d)", e.AuthStat)
	}
	return fmt.Sprintf("rpc: accept_stat %d", e.AcceptStat)
}

// Client is one TCP connection. Its methods are safe for concurrent use;
// calls are pipelined and their replies matched by xid.
type Client struct {
	conn    net.Conn
	wmu     sync.Mutex
	mu      sync.Mutex
	xid     uint32
	waiting map[uint32]chan result
	err     error
	done    chan struct{}
}

type result struct {
	body []byte
	err  error
}

// Dial connects to addr.
func Dial(addr string) (*Client, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &Client{conn: conn, waiting: make(map[uint32]chan result), done: make(chan struct{})}
	go c.readLoop()
	return c, nil
}

// Close closes the connection; calls in flight fail.
func (c *Client) Close() error {
	err := c.conn.Close()
	<-c.done
	return err
}

func (c *Client) readLoop() {
	defer close(c.done)
	var buf []byte
	for {
		rec, err := rpc.ReadRecord(c.conn, buf, 64<<20)
		if err != nil {
			c.fail(fmt.Errorf("rpcclient: reading a reply: %w", err))
			return
		}
		buf = rec
		if len(rec) < 4 {
			continue
		}
		xid := binary.BigEndian.Uint32(rec)
		body, rerr := parseReply(rec)
		c.mu.Lock()
		ch, ok := c.waiting[xid]
		delete(c.waiting, xid)
		c.mu.Unlock()
		if ok {
			ch <- result{body: append([]byte(nil), body...), err: rerr}
		}
	}
}

func (c *Client) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
	}
	for xid, ch := range c.waiting {
		ch <- result{err: c.err}
		delete(c.waiting, xid)
	}
}

// parseReply checks a reply header and returns the results.
func parseReply(rec []byte) ([]byte, error) {
	d := xdr.NewDecoder(rec)
	d.Uint32("xid")
	mtype, _ := d.Uint32("mtype")
	if mtype != 1 {
		return nil, fmt.Errorf("rpcclient: message type %d, not REPLY", mtype)
	}
	stat, err := d.Uint32("reply_stat")
	if err != nil {
		return nil, err
	}
	if stat == 1 { // MSG_DENIED
		rs, _ := d.Uint32("reject_stat")
		e := &ReplyError{Denied: true}
		if rs == 1 {
			as, _ := d.Uint32("auth_stat")
			e.AuthStat = rpc.AuthStat(as)
		}
		return nil, e
	}
	d.Uint32("verf.flavor")
	if _, err := d.Opaque("verf.body", 400); err != nil {
		return nil, err
	}
	as, err := d.Uint32("accept_stat")
	if err != nil {
		return nil, err
	}
	if as != 0 {
		return nil, &ReplyError{AcceptStat: rpc.AcceptStat(as)}
	}
	return d.Rest(), nil
}

// Call sends one call and waits for its reply's results.
func (c *Client) Call(prog, vers, proc uint32, cred Cred, args []byte) ([]byte, error) {
	c.mu.Lock()
	c.xid++
	xid := c.xid
	c.mu.Unlock()
	return c.CallXID(xid, prog, vers, proc, cred, args)
}

// CallXID is Call with a chosen xid (to retransmit a call as a client
// does after reconnecting). The xid must not be in flight on c.
func (c *Client) CallXID(xid, prog, vers, proc uint32, cred Cred, args []byte) ([]byte, error) {
	ch := make(chan result, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	if _, busy := c.waiting[xid]; busy {
		c.mu.Unlock()
		return nil, fmt.Errorf("rpcclient: xid %d already in flight", xid)
	}
	c.waiting[xid] = ch
	c.mu.Unlock()

	e := xdr.NewEncoder(rpc.AppendRecordMark(make([]byte, 0, 128+len(args))))
	e.Uint32(xid)
	e.Uint32(0) // CALL
	e.Uint32(2) // rpcvers
	e.Uint32(prog)
	e.Uint32(vers)
	e.Uint32(proc)
	e.Uint32(cred.Flavor)
	if cred.Flavor == rpc.AuthSys {
		var ce xdr.Encoder
		ce.Uint32(0) // stamp
		ce.String(cred.Machine)
		ce.Uint32(cred.UID)
		ce.Uint32(cred.GID)
		ce.Uint32(uint32(len(cred.GIDs)))
		for _, g := range cred.GIDs {
			ce.Uint32(g)
		}
		e.Opaque(ce.Bytes())
	} else {
		e.Opaque(nil)
	}
	e.Uint32(0) // verifier AUTH_NONE
	e.Opaque(nil)
	rec := append(e.Bytes(), args...)
	rpc.SetRecordMark(rec)
	c.wmu.Lock()
	_, err := c.conn.Write(rec)
	c.wmu.Unlock()
	if err != nil {
		c.fail(fmt.Errorf("rpcclient: sending a call: %w", err))
	}
	r := <-ch
	if errors.Is(r.err, io.EOF) {
		return nil, io.ErrUnexpectedEOF
	}
	return r.body, r.err
}
