// Package unixsock creates listening unix sockets the way a daemon needs them:
// with exact permissions from the first moment, replacing a stale socket file
// left by a crashed process, and refusing to steal a socket that a live
// process still listens on.
package unixsock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrInUse means a live process accepts connections on the socket path.
var ErrInUse = errors.New("socket is in use")

// maxPath is the longest path Linux binds a unix socket to.
const maxPath = 107

// probeTimeout bounds the connection attempt that tells a live socket from a
// stale one.
const probeTimeout = time.Second

// Listen listens on a unix socket at path whose permission bits are perm.
// A socket file at path that nobody listens on is removed first; if a process
// listens on it, Listen fails with an error wrapping ErrInUse. Any other kind
// of file at path is left alone and is an error. Missing parent directories
// are created with mode 0755.
//
// Closing the returned listener removes the socket file (see
// Listener.SetRemoveOnClose).
func Listen(path string, perm os.FileMode) (*Listener, error) {
	if len(path) > maxPath {
		return nil, fmt.Errorf("unix socket %s: path is %d bytes, longer than the %d Linux allows", path, len(path), maxPath)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("unix socket %s: %w", path, err)
	}

	// Set the mode on the socket before bind: Linux creates the socket file
	// with the socket inode's mode (less the umask), so the file is never
	// reachable with looser permissions. Chmod after bind covers kernels
	// that ignore it.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) { err = syscall.Fchmod(int(fd), uint32(perm.Perm())) }); cerr != nil {
			return cerr
		}
		return err
	}}
	nl, err := lc.Listen(context.Background(), "unix", path)
	if err != nil {
		return nil, fmt.Errorf("unix socket %s: %w", path, err)
	}
	l := nl.(*net.UnixListener)
	l.SetUnlinkOnClose(false)
	fail := func(err error) (*Listener, error) {
		_ = l.Close()
		_ = os.Remove(path)
		return nil, fmt.Errorf("unix socket %s: %w", path, err)
	}
	if err := os.Chmod(path, perm); err != nil {
		return fail(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	return &Listener{UnixListener: l, path: path, fi: fi}, nil
}

// removeStale removes a socket file at path that no process listens on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("unix socket %s: %w", path, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("unix socket %s: a file that is not a socket is in the way (%v); remove it or choose another path", path, fi.Mode().Type())
	}
	conn, err := net.DialTimeout("unix", path, probeTimeout)
	if err == nil {
		_ = conn.Close()
		return fmt.Errorf("unix socket %s: another process is listening on it: %w", path, ErrInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("unix socket %s: cannot tell whether it is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("unix socket %s: removing stale socket: %w", path, err)
	}
	return nil
}

// Listener is a listening unix socket that owns its socket file.
type Listener struct {
	*net.UnixListener
	path string
	fi   os.FileInfo // identifies our socket file
	keep atomic.Bool
}

// Path returns the socket path.
func (l *Listener) Path() string { return l.path }

// SetRemoveOnClose sets whether Close removes the socket file (the default).
// A caller that wants the file to outlive the listener for a while sets it to
// false and calls Remove itself.
func (l *Listener) SetRemoveOnClose(remove bool) { l.keep.Store(!remove) }

// Close stops listening and, unless SetRemoveOnClose(false) was called,
// removes the socket file.
func (l *Listener) Close() error {
	err := l.UnixListener.Close()
	if !l.keep.Load() {
		if rerr := l.Remove(); err == nil {
			err = rerr
		}
	}
	return err
}

// Remove removes the socket file if it is still the one Listen created: a
// socket that another process has put at the path since is left alone.
func (l *Listener) Remove() error {
	fi, err := os.Lstat(l.path)
	if err != nil || !os.SameFile(fi, l.fi) {
		return nil
	}
	if err := os.Remove(l.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("unix socket %s: %w", l.path, err)
	}
	return nil
}
