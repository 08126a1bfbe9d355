// Package flakynet provides a listener that fails on purpose, for tests of
// accept loops: it returns queued errors, shaped like the ones the kernel
// gives (EMFILE, ECONNABORTED, ...), before it accepts real connections.
package flakynet

import (
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// AcceptError returns errno as net.Listener.Accept reports it: a
// *net.OpError around an *os.SyscallError, as from a TCP listener.
func AcceptError(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
}

// Listener wraps a net.Listener. Each Accept first takes the next queued
// error, if any, and returns it without touching the wrapped listener;
// otherwise it accepts from the wrapped listener. It counts what it
// returned.
type Listener struct {
	net.Listener

	mu   sync.Mutex
	errs []error

	failed   atomic.Int64
	accepted atomic.Int64
}

// New wraps ln; errs are returned first, in order.
func New(ln net.Listener, errs ...error) *Listener {
	return &Listener{Listener: ln, errs: errs}
}

// Fail queues errs to be returned by the next calls to Accept.
func (l *Listener) Fail(errs ...error) {
	l.mu.Lock()
	l.errs = append(l.errs, errs...)
	l.mu.Unlock()
}

// Accept returns the next queued error or the next real connection.
func (l *Listener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		l.mu.Unlock()
		l.failed.Add(1)
		return nil, err
	}
	l.mu.Unlock()
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// Failed returns how many queued errors Accept has returned.
func (l *Listener) Failed() int64 { return l.failed.Load() }

// Accepted returns how many real connections Accept has returned.
func (l *Listener) Accepted() int64 { return l.accepted.Load() }
