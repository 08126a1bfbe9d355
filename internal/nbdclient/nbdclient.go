// Package nbdclient is a small NBD client for tests: fixed newstyle
// negotiation with NBD_OPT_GO, simple replies only, and pipelined requests
// (any number of goroutines may issue requests on one connection; replies
// are matched by cookie). It is written from the protocol specification
// (NetworkBlockDevice doc/proto.md), independently of this project's server,
// so that tests can drive a server from Go and see exactly which requests
// were acknowledged.
//
// It is for tests only; nothing outside _test.go files should import it.
package nbdclient

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Protocol constants (doc/proto.md).
const (
	nbdMagic      = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic      = 0x49484156454F5054 // "IHAVEOPT"
	optReplyMagic = 0x0003e889045565a9
	requestMagic  = 0x25609513
	simpleMagic   = 0x67446698

	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1

	optAbort = 2
	optGo    = 7

	repAck       = 1
	repInfo      = 3
	repFlagError = 1 << 31

	infoExport = 0

	cmdRead  = 0
	cmdWrite = 1
	cmdDisc  = 2
	cmdFlush = 3

	cmdFlagFUA = 1 << 0
)

// Transmission flags of the export.
const (
	FlagHasFlags  = 1 << 0
	FlagReadOnly  = 1 << 1
	FlagSendFlush = 1 << 2
	FlagSendFUA   = 1 << 3
)

// Errno is an error reply from the server: the NBD error value (EIO is 5,
// EPERM 1, EINVAL 22, ENOSPC 28).
type Errno uint32

func (e Errno) Error() string {
	switch e {
	case 1:
		return "nbd: server replied EPERM"
	case 5:
		return "nbd: server replied EIO"
	case 12:
		return "nbd: server replied ENOMEM"
	case 22:
		return "nbd: server replied EINVAL"
	case 28:
		return "nbd: server replied ENOSPC"
	case 95:
		return "nbd: server replied EOPNOTSUPP"
	case 108:
		return "nbd: server replied ESHUTDOWN"
	}
	return fmt.Sprintf("nbd: server replied errno %d", uint32(e))
}

// ErrClosed is returned for requests on a connection that has ended before
// their reply arrived: the outcome of such a request is unknown.
var ErrClosed = errors.New("nbd: connection closed before the reply")

// Client is one NBD connection to one export.
type Client struct {
	conn  net.Conn
	Size  int64
	Flags uint16

	wmu    sync.Mutex // serialises request writes
	mu     sync.Mutex // guards below
	next   uint64
	wait   map[uint64]*call
	err    error // set once the connection failed
	closed chan struct{}
}

type call struct {
	buf  []byte // READ destination; nil otherwise
	done chan error
}

// Dial connects to addr ("host:port") over TCP and opens export.
func Dial(ctx context.Context, addr, export string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c, err := negotiate(ctx, conn, export)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

func negotiate(ctx context.Context, conn net.Conn, export string) (*Client, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	}
	defer conn.SetDeadline(time.Time{})
	var greet [18]byte
	if _, err := io.ReadFull(conn, greet[:]); err != nil {
		return nil, fmt.Errorf("nbd greeting: %w", err)
	}
	if binary.BigEndian.Uint64(greet[0:]) != nbdMagic || binary.BigEndian.Uint64(greet[8:]) != optMagic {
		return nil, fmt.Errorf("nbd greeting: bad magic %x", greet[:16])
	}
	hflags := binary.BigEndian.Uint16(greet[16:])
	if hflags&flagFixedNewstyle == 0 {
		return nil, errors.New("nbd greeting: server does not speak fixed newstyle")
	}
	cflags := uint32(flagFixedNewstyle)
	if hflags&flagNoZeroes != 0 {
		cflags |= flagNoZeroes
	}
	if err := binary.Write(conn, binary.BigEndian, cflags); err != nil {
		return nil, err
	}
	// NBD_OPT_GO: name, no information requests.
	data := binary.BigEndian.AppendUint32(nil, uint32(len(export)))
	data = append(data, export...)
	data = binary.BigEndian.AppendUint16(data, 0)
	opt := binary.BigEndian.AppendUint64(nil, optMagic)
	opt = binary.BigEndian.AppendUint32(opt, optGo)
	opt = binary.BigEndian.AppendUint32(opt, uint32(len(data)))
	if _, err := conn.Write(append(opt, data...)); err != nil {
		return nil, err
	}
	c := &Client{conn: conn, wait: map[uint64]*call{}, closed: make(chan struct{})}
	gotExport := false
	for {
		var h [20]byte
		if _, err := io.ReadFull(conn, h[:]); err != nil {
			return nil, fmt.Errorf("nbd option reply: %w", err)
		}
		if binary.BigEndian.Uint64(h[0:]) != optReplyMagic {
			return nil, fmt.Errorf("nbd option reply: bad magic %x", h[:8])
		}
		typ := binary.BigEndian.Uint32(h[12:])
		payload := make([]byte, binary.BigEndian.Uint32(h[16:]))
		if _, err := io.ReadFull(conn, payload); err != nil {
			return nil, fmt.Errorf("nbd option reply: %w", err)
		}
		switch {
		case typ&repFlagError != 0:
			return nil, fmt.Errorf("nbd: export %q refused (reply %#x): %s", export, typ, payload)
		case typ == repInfo && len(payload) >= 12 && binary.BigEndian.Uint16(payload) == infoExport:
			c.Size = int64(binary.BigEndian.Uint64(payload[2:]))
			c.Flags = binary.BigEndian.Uint16(payload[10:])
			gotExport = true
		case typ == repAck:
			if !gotExport {
				return nil, errors.New("nbd: GO acknowledged without NBD_INFO_EXPORT")
			}
			go c.reader()
			return c, nil
		}
	}
}

// ReadOnly reports whether the server advertised the export read-only.
func (c *Client) ReadOnly() bool { return c.Flags&FlagReadOnly != 0 }

// reader matches replies to requests until the connection ends.
func (c *Client) reader() {
	var err error
	for {
		var h [16]byte
		if _, err = io.ReadFull(c.conn, h[:]); err != nil {
			break
		}
		if m := binary.BigEndian.Uint32(h[0:]); m != simpleMagic {
			err = fmt.Errorf("nbd: unexpected reply magic %#x (structured replies were not negotiated)", m)
			break
		}
		errno := binary.BigEndian.Uint32(h[4:])
		cookie := binary.BigEndian.Uint64(h[8:])
		c.mu.Lock()
		cl, ok := c.wait[cookie]
		delete(c.wait, cookie)
		c.mu.Unlock()
		if !ok {
			err = fmt.Errorf("nbd: reply for unknown cookie %d", cookie)
			break
		}
		if errno != 0 {
			cl.done <- Errno(errno)
			continue
		}
		if cl.buf != nil {
			if _, err = io.ReadFull(c.conn, cl.buf); err != nil {
				cl.done <- fmt.Errorf("%w: %v", ErrClosed, err)
				break
			}
		}
		cl.done <- nil
	}
	c.fail(err)
}

// fail ends the connection: every request still waiting gets ErrClosed.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = fmt.Errorf("%w: %v", ErrClosed, err)
		close(c.closed)
	}
	waiting := c.wait
	c.wait = map[uint64]*call{}
	c.mu.Unlock()
	_ = c.conn.Close()
	for _, cl := range waiting {
		cl.done <- c.err
	}
}

// do sends one request and waits for its reply.
func (c *Client) do(cmd, flags uint16, off int64, length uint32, payload, buf []byte) error {
	cl := &call{buf: buf, done: make(chan error, 1)}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	c.next++
	cookie := c.next
	c.wait[cookie] = cl
	c.mu.Unlock()

	req := make([]byte, 28, 28+len(payload))
	binary.BigEndian.PutUint32(req[0:], requestMagic)
	binary.BigEndian.PutUint16(req[4:], flags)
	binary.BigEndian.PutUint16(req[6:], cmd)
	binary.BigEndian.PutUint64(req[8:], cookie)
	binary.BigEndian.PutUint64(req[16:], uint64(off))
	binary.BigEndian.PutUint32(req[24:], length)
	req = append(req, payload...)
	c.wmu.Lock()
	_, err := c.conn.Write(req)
	c.wmu.Unlock()
	if err != nil {
		c.fail(err)
	}
	return <-cl.done
}

// ReadAt reads len(p) bytes at off.
func (c *Client) ReadAt(p []byte, off int64) error {
	return c.do(cmdRead, 0, off, uint32(len(p)), nil, p)
}

// WriteAt writes p at off; fua asks for it to be durable before the reply.
// A nil error means the server acknowledged the write.
func (c *Client) WriteAt(p []byte, off int64, fua bool) error {
	var flags uint16
	if fua {
		flags = cmdFlagFUA
	}
	return c.do(cmdWrite, flags, off, uint32(len(p)), p, nil)
}

// Flush asks the server to make every completed write durable.
func (c *Client) Flush() error {
	return c.do(cmdFlush, 0, 0, 0, nil, nil)
}

// Close sends NBD_CMD_DISC (best effort) and closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	failed := c.err != nil
	c.mu.Unlock()
	if !failed {
		req := make([]byte, 28)
		binary.BigEndian.PutUint32(req[0:], requestMagic)
		binary.BigEndian.PutUint16(req[6:], cmdDisc)
		c.wmu.Lock()
		_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.conn.Write(req)
		c.wmu.Unlock()
	}
	c.fail(errors.New("closed by the client"))
	return nil
}
