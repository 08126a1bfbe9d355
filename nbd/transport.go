package nbd

import (
	"io"
	"net"
	"time"

	"github.com/blockrep/blockrep/internal/fdconn"
)

// transport is the byte stream of one connection in the transmission phase.
// Reads come from the connection's reader only; writes are serialised by the
// reply writer.
type transport interface {
	io.Reader
	io.Writer
	// write2 writes a and then b, with one system call where it can.
	write2(a, b []byte) error
	// tryWrite writes what the connection takes without waiting and
	// returns how much that was (possibly nothing).
	tryWrite(p []byte) (int, error)
	// setWriteTimeout makes writes fail when the client takes less than
	// fdconn.MinProgress in d (zero: no limit); the error is a net.Error
	// with Timeout() true.
	setWriteTimeout(d time.Duration) error
	// closeRead stops further reads: the reader sees EOF and drains.
	closeRead()
	// abort wakes any blocked reader or writer with an error.
	abort()
	// close releases the connection once nothing uses it any more.
	close()
}

// fdTransport does blocking reads and writes on its own duplicate of the
// socket's descriptor (see package fdconn): blocking in the kernel's read
// wakes the reader directly when a request arrives, and the duplicate is not
// in the runtime's netpoller, whose spurious wake-ups cost a third of the CPU
// at high request rates.
type fdTransport struct {
	c *fdconn.Conn
}

// newFDTransport takes conn's socket over, or returns nil, with conn
// untouched, for connections without a socket of their own (net.Pipe, TLS).
func newFDTransport(conn net.Conn) *fdTransport {
	c := fdconn.Take(conn)
	if c == nil {
		return nil
	}
	return &fdTransport{c: c}
}

func (t *fdTransport) Read(p []byte) (int, error)  { return t.c.Read(p) }
func (t *fdTransport) Write(p []byte) (int, error) { return t.c.Write(p) }

func (t *fdTransport) write2(a, b []byte) error {
	_, err := t.c.Writev([][]byte{a, b})
	return err
}

func (t *fdTransport) tryWrite(p []byte) (int, error)        { return t.c.TryWrite(p) }
func (t *fdTransport) setWriteTimeout(d time.Duration) error { return t.c.SetWriteTimeout(d) }

func (t *fdTransport) closeRead() { t.c.CloseRead() }
func (t *fdTransport) abort()     { t.c.Abort() }
func (t *fdTransport) close()     { _ = t.c.Close() }

// connTransport carries the stream over a net.Conn: TLS sessions and
// connections without a descriptor of their own.
type connTransport struct {
	conn    net.Conn // what is read and written (a *tls.Conn for TLS)
	raw     net.Conn // the socket underneath, for half-close
	timeout time.Duration
}

// timeoutChunk is how much connTransport writes under one deadline: a
// client that reads slowly but steadily is not cut off in a large reply,
// as with fdconn's timeout.
const timeoutChunk = fdconn.MinProgress

func (t *connTransport) Read(p []byte) (int, error) { return t.conn.Read(p) }

func (t *connTransport) Write(p []byte) (int, error) {
	if t.timeout <= 0 {
		return t.conn.Write(p)
	}
	done := 0
	for done < len(p) {
		_ = t.conn.SetWriteDeadline(time.Now().Add(t.timeout))
		n, err := t.conn.Write(p[done:min(len(p), done+timeoutChunk)])
		done += n
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

func (t *connTransport) write2(a, b []byte) error {
	if _, err := t.Write(a); err != nil {
		return err
	}
	_, err := t.Write(b)
	return err
}

// tryWrite cannot write without waiting on a net.Conn: the caller hands
// everything to a goroutine that may wait.
func (t *connTransport) tryWrite([]byte) (int, error) { return 0, nil }

func (t *connTransport) setWriteTimeout(d time.Duration) error {
	t.timeout = d
	return nil
}

func (t *connTransport) closeRead() {
	if cr, ok := t.raw.(interface{ CloseRead() error }); ok && cr.CloseRead() == nil {
		return
	}
	_ = t.raw.Close()
}

func (t *connTransport) abort() { _ = t.raw.Close() }
func (t *connTransport) close() { _ = t.raw.Close() }
