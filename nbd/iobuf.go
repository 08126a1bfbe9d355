package nbd

import (
	"io"
	"sync"
)

// inbuf is the connection's read buffer. One read system call pulls in as
// many requests as the client has sent, and small write payloads are used
// where they lie, without a copy.
type inbuf struct {
	src  io.Reader
	buf  []byte
	r, w int
	// idle and busy bracket every read system call, which may block: the
	// reply writer flushes what the reader has queued before the reader
	// sleeps.
	idle, busy func()
}

// buffered reports how many bytes are available without a read.
func (b *inbuf) buffered() int { return b.w - b.r }

// fill makes at least n bytes available; n must not exceed len(b.buf).
// With exact set it reads no more than n: used when a large payload is
// expected to follow, which is better read straight into its own buffer than
// copied out of this one.
func (b *inbuf) fill(n int, exact bool) error {
	if b.w-b.r >= n {
		return nil
	}
	if len(b.buf)-b.r < n {
		copy(b.buf, b.buf[b.r:b.w])
		b.w -= b.r
		b.r = 0
	}
	for b.w-b.r < n {
		dst := b.buf[b.w:]
		if exact {
			dst = dst[:n-(b.w-b.r)]
		}
		m, err := b.read(dst)
		b.w += m
		if err != nil {
			if b.w-b.r >= n {
				return nil
			}
			if err == io.EOF && b.w > b.r {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

func (b *inbuf) read(p []byte) (int, error) {
	b.idle()
	n, err := b.src.Read(p)
	b.busy()
	return n, err
}

// next returns the next n bytes (n <= len(b.buf)). The slice is valid until
// the next call on b. With exact set it reads no further than needed.
func (b *inbuf) next(n int, exact bool) ([]byte, error) {
	if err := b.fill(n, exact); err != nil {
		return nil, err
	}
	p := b.buf[b.r : b.r+n]
	b.r += n
	if b.r == b.w {
		b.r, b.w = 0, 0
	}
	return p, nil
}

// readFull fills p, first from the buffer, then straight from the source.
func (b *inbuf) readFull(p []byte) error {
	c := copy(p, b.buf[b.r:b.w])
	b.r += c
	if b.r == b.w {
		b.r, b.w = 0, 0
	}
	for c < len(p) {
		m, err := b.read(p[c:])
		c += m
		if err != nil && c < len(p) {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// discard skips n bytes of input.
func (b *inbuf) discard(n int64) error {
	for n > 0 {
		if b.r == b.w {
			if err := b.fill(1, false); err != nil {
				return err
			}
		}
		c := int64(b.w - b.r)
		if c > n {
			c = n
		}
		b.r += int(c)
		n -= c
		if b.r == b.w {
			b.r, b.w = 0, 0
		}
	}
	return nil
}

// replyWriter queues replies and writes them in batches. The connection's
// reader queues replies while it works through buffered requests and
// flushes before it blocks; workers finishing while the reader is blocked
// flush their own reply.
type replyWriter struct {
	mu   sync.Mutex
	t    transport
	buf  []byte
	busy bool  // the reader is running and will flush before it blocks
	err  error // first write error; later replies are dropped
}

// flushAt is the queue length at which the queue is written even while the
// reader is busy.
const flushAt = 128 << 10

func (w *replyWriter) readerIdle() {
	w.mu.Lock()
	w.busy = false
	w.flushLocked()
	w.mu.Unlock()
}

func (w *replyWriter) readerBusy() {
	w.mu.Lock()
	w.busy = true
	w.mu.Unlock()
}

// reserveLocked appends n bytes to the queue and returns them for filling.
// n must not exceed cap(w.buf).
func (w *replyWriter) reserveLocked(n int) []byte {
	if len(w.buf)+n > cap(w.buf) {
		w.flushLocked()
	}
	start := len(w.buf)
	w.buf = w.buf[:start+n]
	return w.buf[start:]
}

// unreserveLocked drops the last n reserved bytes.
func (w *replyWriter) unreserveLocked(n int) { w.buf = w.buf[:len(w.buf)-n] }

// doneLocked is called after each queued reply.
func (w *replyWriter) doneLocked() {
	if !w.busy || len(w.buf) >= flushAt {
		w.flushLocked()
	}
}

func (w *replyWriter) flushLocked() {
	if len(w.buf) == 0 {
		return
	}
	if w.err == nil {
		_, w.err = w.t.Write(w.buf)
	}
	w.buf = w.buf[:0]
}

// sendLocked queues hdr and writes it with data straight from the caller's
// buffer, for payloads too big to copy into the queue.
func (w *replyWriter) sendLocked(hdr, data []byte) {
	copy(w.reserveLocked(len(hdr)), hdr)
	if w.err == nil {
		w.err = w.t.write2(w.buf, data)
	}
	w.buf = w.buf[:0]
}
