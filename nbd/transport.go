package nbd

import (
	"io"
	"net"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// transport is the byte stream of one connection in the transmission phase.
// Reads come from the connection's reader only; writes are serialised by the
// reply writer.
type transport interface {
	io.Reader
	io.Writer
	// write2 writes a and then b, with one system call where it can.
	write2(a, b []byte) error
	// closeRead stops further reads: the reader sees EOF and drains.
	closeRead()
	// abort wakes any blocked reader or writer with an error.
	abort()
	// close releases the connection once nothing uses it any more.
	close()
}

// fdTransport does blocking reads and writes on its own duplicate of the
// socket's descriptor. Blocking in the kernel's read wakes the reader directly
// when a request arrives. The duplicate is deliberately not in the runtime's
// netpoller: if it were, every arriving packet would also wake an idle
// runtime thread in epoll_wait for nothing, and that costs a third of the
// CPU at high request rates.
type fdTransport struct {
	fd   int
	spin bool // the last read waited only briefly: poll before blocking
}

// newFDTransport takes conn's socket over: it duplicates the descriptor,
// closes conn (which removes it from the netpoller) and switches the socket
// to blocking mode. It returns nil, with conn untouched, for connections
// without a socket of their own (net.Pipe, TLS).
func newFDTransport(conn net.Conn) *fdTransport {
	switch conn.(type) {
	case *net.TCPConn, *net.UnixConn:
	default:
		return nil
	}
	raw, err := conn.(syscall.Conn).SyscallConn()
	if err != nil {
		return nil
	}
	fd := -1
	if err := raw.Control(func(f uintptr) {
		if d, err := unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0); err == nil {
			fd = d
		}
	}); err != nil || fd < 0 {
		return nil
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil
	}
	_ = conn.Close()
	return &fdTransport{fd: fd}
}

// Before a read that would block, the reader polls the socket a few times
// if its previous wait was short: a client keeping requests in flight sends
// the next one within microseconds, and catching it without sleeping saves
// the wake-up, which at queue depth 1 is a fifth of the round trip. After a
// long wait (an idle client) the reader blocks at once and burns nothing.
const (
	spinPolls = 32
	shortWait = 100 * time.Microsecond
)

// poll reads what has arrived without waiting; ok is false when nothing
// has.
func (t *fdTransport) poll(p []byte) (n int, ok bool, err error) {
	r, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(t.fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), unix.MSG_DONTWAIT, 0, 0)
	switch {
	case e == 0 && r == 0:
		return 0, true, io.EOF
	case e == 0:
		return int(r), true, nil
	case e == unix.EAGAIN || e == unix.EINTR:
		return 0, false, nil
	}
	return 0, true, e
}

func (t *fdTransport) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if t.spin {
		for i := 0; i < spinPolls; i++ {
			if n, ok, err := t.poll(p); ok {
				return n, err
			}
		}
	}
	start := time.Now()
	for {
		n, err := unix.Read(t.fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0:
			return 0, io.EOF
		}
		t.spin = time.Since(start) < shortWait
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

func (t *fdTransport) write2(a, b []byte) error {
	var iov [2]unix.Iovec
	for len(a)+len(b) > 0 {
		n := 0
		for _, p := range [2][]byte{a, b} {
			if len(p) > 0 {
				iov[n].Base = &p[0]
				iov[n].SetLen(len(p))
				n++
			}
		}
		r, _, e := unix.Syscall(unix.SYS_WRITEV, uintptr(t.fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(n))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		done := int(r)
		if done >= len(a) {
			b = b[done-len(a):]
			a = nil
		} else {
			a = a[done:]
		}
	}
	return nil
}

func (t *fdTransport) closeRead() { _ = unix.Shutdown(t.fd, unix.SHUT_RD) }
func (t *fdTransport) abort()     { _ = unix.Shutdown(t.fd, unix.SHUT_RDWR) }
func (t *fdTransport) close()     { _ = unix.Close(t.fd) }

// connTransport carries the stream over a net.Conn: TLS sessions and
// connections without a descriptor of their own.
type connTransport struct {
	conn net.Conn // what is read and written (a *tls.Conn for TLS)
	raw  net.Conn // the socket underneath, for half-close
}

func (t *connTransport) Read(p []byte) (int, error)  { return t.conn.Read(p) }
func (t *connTransport) Write(p []byte) (int, error) { return t.conn.Write(p) }

func (t *connTransport) write2(a, b []byte) error {
	if _, err := t.conn.Write(a); err != nil {
		return err
	}
	_, err := t.conn.Write(b)
	return err
}

func (t *connTransport) closeRead() {
	if cr, ok := t.raw.(interface{ CloseRead() error }); ok && cr.CloseRead() == nil {
		return
	}
	_ = t.raw.Close()
}

func (t *connTransport) abort() { _ = t.raw.Close() }
func (t *connTransport) close() { _ = t.raw.Close() }
