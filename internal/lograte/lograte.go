// Package lograte limits how often a log record about one recurring event
// is written: one record per key (a remote address, a listener) per
// interval, which carries the count of the records suppressed since the
// previous one. A flood of failing connections then costs a few log
// lines, not one each.
package lograte

import (
	"sync"
	"time"
)

// Limiter lets one event per key through per interval and counts the ones
// it suppressed. It remembers at most maxKeys keys; when full it forgets
// keys whose interval has passed, and suppresses new keys if that frees no
// room (so that many sources cannot grow it without bound). It is safe for
// concurrent use.
type Limiter struct {
	every   time.Duration
	maxKeys int

	mu   sync.Mutex
	keys map[string]*entry
}

type entry struct {
	last       time.Time
	suppressed int
}

// New returns a Limiter that lets one event per key through every
// interval, remembering at most maxKeys keys.
func New(every time.Duration, maxKeys int) *Limiter {
	return &Limiter{every: every, maxKeys: maxKeys, keys: make(map[string]*entry)}
}

// Allow reports whether an event for key at now may be logged and, if so,
// how many events for key were suppressed since the last one logged.
func (l *Limiter) Allow(key string, now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.keys[key]
	if e == nil {
		if len(l.keys) >= l.maxKeys {
			for k, v := range l.keys {
				if now.Sub(v.last) >= l.every {
					delete(l.keys, k)
				}
			}
			if len(l.keys) >= l.maxKeys {
				return false, 0
			}
		}
		l.keys[key] = &entry{last: now}
		return true, 0
	}
	if now.Sub(e.last) < l.every {
		e.suppressed++
		return false, 0
	}
	n := e.suppressed
	e.last, e.suppressed = now, 0
	return true, n
}

// Suppressed returns how many events for key were suppressed since the
// last one let through, without recording an event.
func (l *Limiter) Suppressed(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.keys[key]; e != nil {
		return e.suppressed
	}
	return 0
}

// Forget drops key, so that its next event is let through at once and
// counts nothing suppressed.
func (l *Limiter) Forget(key string) {
	l.mu.Lock()
	delete(l.keys, key)
	l.mu.Unlock()
}
