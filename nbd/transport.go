package nbd

import (
	"io"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// transport is the byte stream of one connection in the transmission phase.
// Reads come from the connection's reader only; writes are serialised by the
// reply writer.
type transport interface {
	io.Reader
	io.Writer
	// writev writes the buffers in order as one stream.
	writev(bufs [][]byte) error
	// closeRead stops further reads: the reader sees EOF and drains.
	closeRead()
	// abort wakes any blocked reader or writer with an error.
	abort()
}

// fdTransport does blocking reads and writes on the socket's descriptor.
// Blocking in the kernel's read wakes the reader directly when a request
// arrives, where the runtime's netpoller would add a wake-up and a scheduling
// hop to every request: that hop is most of the latency at queue depth 1.
type fdTransport struct {
	fd   int
	conn net.Conn // keeps the descriptor open; closed by the connection owner
}

// newFDTransport switches conn's descriptor to blocking mode. It returns nil
// when conn has no descriptor to take over (net.Pipe, TLS).
func newFDTransport(conn net.Conn) *fdTransport {
	switch conn.(type) {
	case *net.TCPConn, *net.UnixConn:
	default:
		return nil
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	fd := -1
	if err := raw.Control(func(f uintptr) {
		if unix.SetNonblock(int(f), false) == nil {
			fd = int(f)
		}
	}); err != nil || fd < 0 {
		return nil
	}
	return &fdTransport{fd: fd, conn: conn}
}

func (t *fdTransport) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(t.fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func (t *fdTransport) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		n, err := unix.Write(t.fd, p[done:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

func (t *fdTransport) writev(bufs [][]byte) error {
	for len(bufs) > 0 {
		n, err := unix.Writev(t.fd, bufs)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		for n > 0 && len(bufs) > 0 {
			if n >= len(bufs[0]) {
				n -= len(bufs[0])
				bufs = bufs[1:]
				continue
			}
			bufs[0] = bufs[0][n:]
			n = 0
		}
		for len(bufs) > 0 && len(bufs[0]) == 0 {
			bufs = bufs[1:]
		}
	}
	return nil
}

func (t *fdTransport) closeRead() { _ = unix.Shutdown(t.fd, unix.SHUT_RD) }
func (t *fdTransport) abort()     { _ = unix.Shutdown(t.fd, unix.SHUT_RDWR) }

// connTransport carries the stream over a net.Conn: TLS sessions and
// connections without a descriptor of their own.
type connTransport struct {
	conn net.Conn // what is read and written (a *tls.Conn for TLS)
	raw  net.Conn // the socket underneath, for half-close
}

func (t *connTransport) Read(p []byte) (int, error)  { return t.conn.Read(p) }
func (t *connTransport) Write(p []byte) (int, error) { return t.conn.Write(p) }

func (t *connTransport) writev(bufs [][]byte) error {
	for _, b := range bufs {
		if _, err := t.conn.Write(b); err != nil {
			return err
		}
	}
	return nil
}

func (t *connTransport) closeRead() {
	if cr, ok := t.raw.(interface{ CloseRead() error }); ok && cr.CloseRead() == nil {
		return
	}
	_ = t.raw.Close()
}

func (t *connTransport) abort() { _ = t.raw.Close() }
