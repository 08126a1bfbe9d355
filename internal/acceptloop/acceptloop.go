// Package acceptloop keeps a daemon's accept loops alive and bounded.
//
// Retry wraps a net.Listener so that Accept survives the errors a busy or
// starved process gets (EMFILE, ENFILE, ENOBUFS, ENOMEM, ECONNABORTED,
// timeouts, ...): it backs off, 5 ms doubling to 1 s like net/http's
// Server, logs the failure (rate-limited) and tries again. Only an error
// that leaves the listener unusable reaches the caller, which must then
// stop and say so rather than leave a node that nobody can reach.
//
// Gate bounds the connections an accept loop holds before they have
// authenticated, in total and per source address, so that a flood of
// connections that never finish their handshake costs a bounded number of
// goroutines and descriptors, and one source cannot take every slot.
package acceptloop

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/blockrep/blockrep/internal/lograte"
)

// Backoff and limits.
const (
	// MinDelay and MaxDelay bound the wait after a failed Accept: the first
	// wait is MinDelay, each further one doubles, up to MaxDelay.
	MinDelay = 5 * time.Millisecond
	MaxDelay = time.Second
	// DefaultMaxPending is the usual Gate size: the connections between
	// accept and the end of their handshake.
	DefaultMaxPending = 64
	// DefaultMaxPendingPerSource is the usual share of one source address
	// in a Gate of DefaultMaxPending: half, so that one address leaves
	// room for the others.
	DefaultMaxPendingPerSource = DefaultMaxPending / 2
	// LogEvery is the least interval between two log records about
	// refused or failed handshakes from one source address.
	LogEvery = time.Minute
	// MaxLogSources bounds the source addresses a handshake log limiter
	// remembers.
	MaxLogSources = 4096
	// retryLogEvery is the least interval between two records about failed
	// accepts on one listener: often enough to show that it goes on.
	retryLogEvery = 10 * time.Second
)

// temporaryErrnos are the Accept errors after which the listener still
// works: the process or system ran out of descriptors, buffers or memory,
// or one pending connection failed before it was taken. Linux's accept(2)
// also passes on network errors of the new connection (ENETDOWN, EPROTO,
// ...) and EPERM when a firewall rule forbids it; all of them concern that
// connection, not the listener.
var temporaryErrnos = []syscall.Errno{
	syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
	syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN,
	syscall.EPROTO, syscall.ENETDOWN, syscall.ENOPROTOOPT, syscall.EHOSTDOWN,
	syscall.ENONET, syscall.EHOSTUNREACH, syscall.EOPNOTSUPP, syscall.ENETUNREACH,
	syscall.EPERM,
}

// Temporary reports whether err, returned by a listener's Accept, is worth
// retrying: a temporaryErrnos errno or a timeout. A closed listener's error
// is not.
func Temporary(err error) bool {
	if err == nil || errors.Is(err, net.ErrClosed) {
		return false
	}
	for _, e := range temporaryErrnos {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Backoff is the wait between failed accepts. The zero value starts at
// MinDelay.
type Backoff struct{ last time.Duration }

// Next returns the wait before the next attempt: MinDelay the first time,
// then twice the previous wait, at most MaxDelay.
func (b *Backoff) Next() time.Duration {
	b.last = min(max(2*b.last, MinDelay), MaxDelay)
	return b.last
}

// Reset starts again from MinDelay, after an Accept that worked.
func (b *Backoff) Reset() { b.last = 0 }

// Listener is a net.Listener whose Accept retries temporary errors (see
// Retry). Addr and the other methods are the wrapped listener's.
type Listener struct {
	net.Listener
	log  *slog.Logger
	stop <-chan struct{}
	done chan struct{}
	once sync.Once
	lim  *lograte.Limiter

	mu       sync.Mutex
	backoff  Backoff
	failures int       // failed accepts since the last one that worked
	since    time.Time // the first of them
}

// Retry wraps ln: its Accept retries temporary errors (see Temporary)
// after a Backoff wait, and logs them on log (at most one record per 10 s,
// with the count of those left out; and one when accepting works again
// after more than one failure). Any other error is returned. Closing the
// Listener, or closing stop (which may be nil), ends a wait at once with
// an error matching net.ErrClosed; closing the Listener closes ln.
func Retry(ln net.Listener, log *slog.Logger, stop <-chan struct{}) *Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Listener{Listener: ln, log: log, stop: stop, done: make(chan struct{}), lim: lograte.New(retryLogEvery, 1)}
}

// Accept waits for and returns the next connection, retrying temporary
// errors.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			l.worked()
			return c, nil
		}
		if l.closed() || !Temporary(err) {
			return nil, err
		}
		t := time.NewTimer(l.failed(err))
		select {
		case <-t.C:
		case <-l.done:
			t.Stop()
			return nil, l.closedErr()
		case <-l.stop:
			t.Stop()
			return nil, l.closedErr()
		}
	}
}

// failed records a temporary failure, logs it if the limiter lets it
// through, and returns the wait before the next attempt.
func (l *Listener) failed(err error) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if l.failures == 0 {
		l.since = now
	}
	l.failures++
	d := l.backoff.Next()
	if ok, n := l.lim.Allow("", now); ok {
		l.log.Warn("accept failed; retrying", "addr", l.Addr().String(), "err", err, "retry_in", d,
			"failures", l.failures, "suppressed", n)
	}
	return d
}

// worked ends a run of failures.
func (l *Listener) worked() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failures == 0 {
		return
	}
	if l.failures > 1 {
		l.log.Info("accepting connections again", "addr", l.Addr().String(), "failures", l.failures,
			"failed_for", time.Since(l.since).Round(time.Millisecond))
	}
	l.failures = 0
	l.backoff.Reset()
	l.lim.Forget("")
}

func (l *Listener) closed() bool {
	select {
	case <-l.done:
		return true
	case <-l.stop:
		return true
	default:
		return false
	}
}

func (l *Listener) closedErr() error {
	a := l.Addr()
	return &net.OpError{Op: "accept", Net: a.Network(), Addr: a, Err: net.ErrClosed}
}

// Close closes the wrapped listener and ends a wait in Accept.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// Errors of Gate.Admit.
var (
	// ErrBusy means the Gate holds its maximum of pending connections.
	ErrBusy = errors.New("too many pending handshakes")
	// ErrSourceBusy means the source address holds its share.
	ErrSourceBusy = errors.New("too many pending handshakes from one address")
)

// Gate admits accepted connections into their handshake: at most max at a
// time, and at most perSource from one source address (the IP of a TCP
// address). The accept loop closes a connection the Gate refuses at once,
// so that the loop never waits for a slot and never holds more than max
// connections that have not authenticated. Refusals are logged, at most
// once per LogEvery per source and once per LogEvery for the total. It is
// safe for concurrent use.
type Gate struct {
	max, perSource int
	log            *slog.Logger
	lim            *lograte.Limiter

	mu       sync.Mutex
	total    int
	bySource map[string]int
}

// NewGate returns a Gate of max slots, perSource of them at most for one
// source; perSource <= 0 means no per-source limit. log receives the
// refusals; nil discards them.
func NewGate(max, perSource int, log *slog.Logger) *Gate {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Gate{max: max, perSource: perSource, log: log, lim: lograte.New(LogEvery, MaxLogSources+1), bySource: map[string]int{}}
}

// totalKey is the log limiter's key of the total limit; no IP spells it.
const totalKey = "*"

// Admit takes a slot for a connection from remote. It returns the function
// that gives the slot back (call it when the handshake is over; calling it
// again does nothing), or ErrBusy or ErrSourceBusy, after logging the
// refusal.
func (g *Gate) Admit(remote net.Addr) (release func(), err error) {
	src := Source(remote)
	g.mu.Lock()
	switch {
	case g.total >= g.max:
		err = ErrBusy
	case g.perSource > 0 && g.bySource[src] >= g.perSource:
		err = ErrSourceBusy
	default:
		g.total++
		g.bySource[src]++
	}
	g.mu.Unlock()
	if err != nil {
		g.refused(remote, src, err)
		return nil, err
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			g.total--
			if g.bySource[src]--; g.bySource[src] <= 0 {
				delete(g.bySource, src)
			}
			g.mu.Unlock()
		})
	}, nil
}

func (g *Gate) refused(remote net.Addr, src string, err error) {
	if err == ErrBusy {
		if ok, n := g.lim.Allow(totalKey, time.Now()); ok {
			g.log.Warn("too many pending handshakes; closing new connections",
				"limit", g.max, "remote", remote.String(), "suppressed", n)
		}
		return
	}
	if ok, n := g.lim.Allow(src, time.Now()); ok {
		g.log.Warn("too many pending handshakes from one address; closing its new connections",
			"limit_per_source", g.perSource, "remote", remote.String(), "suppressed", n)
	}
}

// Pending returns the slots taken.
func (g *Gate) Pending() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.total
}

// Source returns the part of a remote address that identifies its source
// for limits and log rates: the IP of a TCP address, else the address.
func Source(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	s := a.String()
	if h, _, err := net.SplitHostPort(s); err == nil {
		return h
	}
	return s
}
