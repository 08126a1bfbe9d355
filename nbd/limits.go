package nbd

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/semaphore"
)

// What one client, or a few, may take from the others.
//
// Request buffers come from one budget (Config.MaxInFlightBytes), and a
// buffer is held until the request's reply is written: a client that stops
// reading keeps what it holds until the reply timeout evicts it. Three
// bounds keep the others going meanwhile:
//
//   - each connection holds at most Config.MaxInFlightPerClient;
//   - large requests (more than smallRequest) share only the budget less a
//     reserve, so that small ones (4 KiB writes, FLUSH, metadata) always
//     find room, however many clients hold large buffers;
//   - small requests never hold their buffer while they wait for the
//     client: their replies are copied into the connection's reply queue,
//     and writes release theirs once the device is done. The reserve is
//     therefore only ever held by requests at a device, which end by
//     themselves.
//
// A handful of clients may still take the large part; they are evicted
// after the reply timeout.

// smallRequest is the largest request weight that may use the reserve.
const smallRequest = maxInlineRead

// reserveShare is the part of the budget that large requests cannot take.
const reserveShare = 8

// budget is the server's in-flight allowance.
type budget struct {
	all     *semaphore.Weighted // MaxInFlightBytes
	large   *semaphore.Weighted // what requests above smallRequest may hold
	perConn int64
}

// newBudget splits total: a reserve of total/reserveShare for small
// requests (less when a request of maxReq bytes would not fit in the rest),
// and perConn (zero: total/4) clamped to [maxReq, large part].
func newBudget(total, perConn, maxReq int64) *budget {
	reserve := min(total/reserveShare, total-maxReq)
	large := total - reserve
	if perConn <= 0 {
		perConn = total / 4
	}
	perConn = min(max(perConn, maxReq), large)
	return &budget{
		all:     semaphore.NewWeighted(total),
		large:   semaphore.NewWeighted(large),
		perConn: perConn,
	}
}

// newQuota returns a connection's share.
func (b *budget) newQuota() *semaphore.Weighted { return semaphore.NewWeighted(b.perConn) }

// tryTake takes w from the connection's quota q and the budget without
// waiting, or nothing.
func (b *budget) tryTake(q *semaphore.Weighted, w int64) bool {
	if !q.TryAcquire(w) {
		return false
	}
	if w > smallRequest && !b.large.TryAcquire(w) {
		q.Release(w)
		return false
	}
	if !b.all.TryAcquire(w) {
		if w > smallRequest {
			b.large.Release(w)
		}
		q.Release(w)
		return false
	}
	return true
}

// take waits for w, always in the order quota, large part, budget, so that
// waiters cannot deadlock each other.
func (b *budget) take(ctx context.Context, q *semaphore.Weighted, w int64) error {
	if err := q.Acquire(ctx, w); err != nil {
		return err
	}
	if w > smallRequest {
		if err := b.large.Acquire(ctx, w); err != nil {
			q.Release(w)
			return err
		}
	}
	if err := b.all.Acquire(ctx, w); err != nil {
		if w > smallRequest {
			b.large.Release(w)
		}
		q.Release(w)
		return err
	}
	return nil
}

// give returns what take or tryTake took.
func (b *budget) give(q *semaphore.Weighted, w int64) {
	b.all.Release(w)
	if w > smallRequest {
		b.large.Release(w)
	}
	q.Release(w)
}

// rateLog limits one kind of log line: the first burst events of each
// interval are logged, the rest only counted, and one summary line reports
// how many were not (when the interval ends, or at stop). Many connections
// failing the same way make a few lines, not one each.
type rateLog struct {
	log      *slog.Logger
	summary  string // message of the summary line
	interval time.Duration
	burst    int
	now      func() time.Time

	mu      sync.Mutex
	start   time.Time // of the current interval
	n       int       // events in the current interval
	dropped int       // of them not logged
	total   uint64
	timer   *time.Timer
	stopped bool
}

func newRateLog(log *slog.Logger, summary string, interval time.Duration, burst int, attrs ...any) *rateLog {
	return &rateLog{log: log.With(attrs...), summary: summary, interval: interval, burst: burst, now: time.Now}
}

// allow counts one event and reports whether to log it, with the number of
// events so far.
func (r *rateLog) allow() (bool, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	r.total++
	if r.n == 0 || now.Sub(r.start) >= r.interval {
		r.flushLocked()
		r.start, r.n = now, 0
	}
	r.n++
	if r.n <= r.burst {
		return true, r.total
	}
	r.dropped++
	if r.timer == nil && !r.stopped {
		r.timer = time.AfterFunc(r.start.Add(r.interval).Sub(now), r.flush)
	}
	return false, r.total
}

func (r *rateLog) flush() {
	r.mu.Lock()
	r.flushLocked()
	r.mu.Unlock()
}

func (r *rateLog) flushLocked() {
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	if r.dropped > 0 {
		r.log.Warn(r.summary, "count", r.dropped, "interval", r.interval, "total", r.total)
		r.dropped = 0
	}
}

// stop writes the pending summary and arms no more timers.
func (r *rateLog) stop() {
	r.mu.Lock()
	r.stopped = true
	r.flushLocked()
	r.mu.Unlock()
}

// temporaryAccept reports whether an accept error is worth retrying, as
// net/http's Server does: the listener is fine, the system is short of
// descriptors or memory, or the connection died before it was accepted
// (Linux's accept passes the new socket's pending network errors on, see
// accept(2)).
func temporaryAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN, syscall.EPERM,
		syscall.EPROTO, syscall.ENOPROTOOPT, syscall.ENETDOWN, syscall.ENETUNREACH,
		syscall.EHOSTDOWN, syscall.EHOSTUNREACH, syscall.ENONET, syscall.EOPNOTSUPP, syscall.ETIMEDOUT:
		return true
	}
	return false
}
