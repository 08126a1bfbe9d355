// Package fdconn takes a stream socket out of the Go runtime's netpoller and
// does blocking reads and writes on a duplicate of its descriptor.
//
// A goroutine blocked in the kernel's read is woken directly when data
// arrives. Through the netpoller, the same arrival first wakes a runtime
// thread in epoll_wait, which then hands the goroutine to a thread that can
// run it: on a small machine, where a request crosses several processes, that
// hand-off is most of a round trip's latency and a third of the CPU.
// Connections that carry a steady stream of small messages (NBD requests,
// replication frames) use it; everything else stays on the netpoller.
package fdconn

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Before a read that would block, Read polls the socket a few times if the
// previous wait was short: a peer keeping requests in flight sends the next
// one within microseconds, and catching it without sleeping saves the
// wake-up. After a long wait (an idle peer) Read blocks at once and burns
// nothing.
const (
	spinPolls = 32
	shortWait = 100 * time.Microsecond
)

// ErrTimeout is returned by a read that waited longer than the timeout set
// with SetReadTimeout. It satisfies net.Error with Timeout() true.
var ErrTimeout error = timeoutError{}

// ErrWriteTimeout is returned by a write that could send nothing for longer
// than the timeout set with SetWriteTimeout: the peer does not read. It
// satisfies net.Error with Timeout() true.
var ErrWriteTimeout error = timeoutError{write: true}

type timeoutError struct{ write bool }

func (e timeoutError) Error() string {
	if e.write {
		return "fdconn: write timed out: the peer reads nothing"
	}
	return "fdconn: read timed out"
}
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// Conn is a socket read and written with blocking system calls. Reads must
// come from one goroutine at a time, writes from one goroutine at a time;
// Abort may be called from anywhere.
type Conn struct {
	fd   int
	spin bool // the last read waited only briefly
	wto  time.Duration

	closeOnce sync.Once
}

// Take duplicates conn's descriptor, closes conn (which removes it from the
// netpoller) and switches the socket to blocking mode. It returns nil, with
// conn untouched, for connections without a socket of their own (net.Pipe,
// TLS). Bytes the kernel holds for conn are read through the Conn.
func Take(conn net.Conn) *Conn {
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
	return &Conn{fd: fd}
}

// SetReadTimeout makes every read that waits longer than d fail with
// ErrTimeout (SO_RCVTIMEO); zero waits forever.
func (c *Conn) SetReadTimeout(d time.Duration) error {
	tv := unix.NsecToTimeval(d.Nanoseconds())
	return os.NewSyscallError("setsockopt", unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv))
}

// MinProgress is the least a peer must take of a write within the write
// timeout. A peer that reads nothing still takes a trickle (its kernel
// compacts the receive queue and reopens the window: a few hundred KiB on
// loopback), which must not count as reading.
const MinProgress = 1 << 20

// SetWriteTimeout makes a write fail with ErrWriteTimeout when the peer
// takes less than MinProgress of it (or of what is left) within d; zero
// waits forever. Each system call waits at most d (SO_SNDTIMEO), so a peer
// that stops reading is noticed between d and 2d after its buffers fill.
// Writes must come from one goroutine at a time.
func (c *Conn) SetWriteTimeout(d time.Duration) error {
	tv := unix.NsecToTimeval(d.Nanoseconds())
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	c.wto = d
	return nil
}

// writeStart is when a write system call starts, for stalled; it reads
// the clock only when a write timeout is set (replica links have none).
func (c *Conn) writeStart() time.Time {
	if c.wto > 0 {
		return time.Now()
	}
	return time.Time{}
}

// stalled reports whether a system call that sent n bytes, short of the
// want it was asked for, ended by the write timeout with too little
// progress. A short write after less than the timeout was interrupted and
// is simply continued.
func (c *Conn) stalled(n, want int, start time.Time) bool {
	return c.wto > 0 && n < want && n < MinProgress && time.Since(start) >= c.wto
}

// poll reads what has arrived without waiting; ok is false when nothing has.
func (c *Conn) poll(p []byte) (n int, ok bool, err error) {
	r, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(c.fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), unix.MSG_DONTWAIT, 0, 0)
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

// Read reads what has arrived, waiting for at least one byte.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.spin {
		for range spinPolls {
			if n, ok, err := c.poll(p); ok {
				return n, err
			}
		}
	}
	start := time.Now()
	for {
		n, err := unix.Read(c.fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, ErrTimeout
		case err != nil:
			return 0, err
		case n == 0:
			return 0, io.EOF
		}
		c.spin = time.Since(start) < shortWait
		return n, nil
	}
}

// Write writes all of p.
func (c *Conn) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		start := c.writeStart()
		n, err := unix.Write(c.fd, p[done:])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return done, ErrWriteTimeout
		}
		if err != nil {
			return done, err
		}
		if c.stalled(n, len(p)-done, start) {
			return done + n, ErrWriteTimeout
		}
		done += n
	}
	return done, nil
}

// TryWrite writes as much of p as the socket takes without waiting and
// returns how much that was; n < len(p) with a nil error means the socket's
// buffer is full. For callers that must not block (a completion callback
// running on another component's goroutine).
func (c *Conn) TryWrite(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		n, err := unix.SendmsgN(c.fd, p[done:], nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return done, nil
		case err != nil:
			return done, err
		}
		done += n
	}
	return done, nil
}

// maxIovecs bounds one writev (the kernel's IOV_MAX).
const maxIovecs = 1024

// Writev writes every buffer, in order, with as few writev calls as the
// kernel allows.
func (c *Conn) Writev(bufs [][]byte) (int64, error) {
	var total int64
	var iov [maxIovecs]unix.Iovec
	for len(bufs) > 0 {
		n := 0
		for _, b := range bufs {
			if n == maxIovecs {
				break
			}
			if len(b) == 0 {
				continue
			}
			iov[n].Base = &b[0]
			iov[n].SetLen(len(b))
			n++
		}
		if n == 0 {
			return total, nil
		}
		want := 0
		if c.wto > 0 {
			for _, v := range iov[:n] {
				want += int(v.Len)
			}
		}
		start := c.writeStart()
		r, _, e := unix.Syscall(unix.SYS_WRITEV, uintptr(c.fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(n))
		if e == unix.EINTR {
			continue
		}
		if e == unix.EAGAIN {
			return total, ErrWriteTimeout
		}
		if e != 0 {
			return total, e
		}
		done := int(r)
		total += int64(done)
		if c.stalled(done, want, start) {
			return total, ErrWriteTimeout
		}
		for len(bufs) > 0 && done >= len(bufs[0]) {
			done -= len(bufs[0])
			bufs = bufs[1:]
		}
		if done > 0 {
			bufs = append([][]byte{bufs[0][done:]}, bufs[1:]...)
		}
	}
	return total, nil
}

// CloseRead stops further reads: a blocked or later read sees EOF.
func (c *Conn) CloseRead() { _ = unix.Shutdown(c.fd, unix.SHUT_RD) }

// Abort wakes any blocked reader or writer with an error. The descriptor
// stays open until Close, so that it cannot be reused under their feet.
func (c *Conn) Abort() { _ = unix.Shutdown(c.fd, unix.SHUT_RDWR) }

// Close releases the descriptor once nothing uses it any more.
func (c *Conn) Close() error {
	err := errors.New("fdconn: closed twice")
	c.closeOnce.Do(func() { err = unix.Close(c.fd) })
	return err
}
