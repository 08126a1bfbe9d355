package nbd

import (
	"io"
	"slices"
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
//
// One goroutine at a time writes to the socket (the writer). It does not
// hold mu while it writes, and it writes whatever was queued meanwhile
// before it stops: a goroutine that queues a reply while another writes
// does not wait for the socket. Completion callbacks of a block.AsyncWriter
// run on the device's goroutines (a replicated volume's peer link, which
// completes every client's writes) and must not block on one client's
// socket at all: they write only what the socket takes at once and hand
// the rest to a goroutine of the connection (see writeLocked).
type replyWriter struct {
	mu      sync.Mutex
	t       transport
	buf     []byte    // queued replies
	spare   []byte    // the other buffer; nil while the writer has it
	busy    bool      // the reader is running and will flush before it blocks
	writing bool      // a goroutine is the writer
	idle    sync.Cond // broadcast when writing ends
	err     error     // first write error; later replies are dropped
	// failed is called once, with mu held, on the first write error.
	failed func(error)
	// handoffs counts the goroutines that took a write over from a
	// callback.
	handoffs sync.WaitGroup
}

// flushAt is the queue length at which the queue is written even while the
// reader is busy.
const flushAt = 128 << 10

func (w *replyWriter) init(t transport, size int) {
	w.t = t
	w.buf = make([]byte, 0, size)
	w.spare = make([]byte, 0, size)
	w.idle.L = &w.mu
}

func (w *replyWriter) readerIdle() {
	w.mu.Lock()
	w.busy = false
	w.flushLocked(true)
	w.mu.Unlock()
}

func (w *replyWriter) readerBusy() {
	w.mu.Lock()
	w.busy = true
	w.mu.Unlock()
}

// reserveLocked appends n bytes to the queue and returns them for filling
// (mu stays held until then). A caller that may block makes room first:
// it writes the queue, or waits for the writer; a callback grows the queue
// instead (its replies are small and bounded by the connection's slots).
func (w *replyWriter) reserveLocked(n int, mayBlock bool) []byte {
	for mayBlock && len(w.buf)+n > cap(w.buf) && len(w.buf) > 0 && w.err == nil {
		if w.writing {
			w.idle.Wait()
			continue
		}
		w.writeLocked(nil, true)
	}
	start := len(w.buf)
	w.buf = slices.Grow(w.buf, n)[:start+n]
	return w.buf[start:]
}

// unreserveLocked drops the last n reserved bytes.
func (w *replyWriter) unreserveLocked(n int) { w.buf = w.buf[:len(w.buf)-n] }

// doneLocked is called after each queued reply.
func (w *replyWriter) doneLocked(mayBlock bool) {
	if !w.busy || len(w.buf) >= flushAt {
		w.flushLocked(mayBlock)
	}
}

// flushLocked writes the queue unless a writer is at it already (then the
// writer does).
func (w *replyWriter) flushLocked(mayBlock bool) {
	if w.writing || len(w.buf) == 0 {
		return
	}
	w.writeLocked(nil, mayBlock)
}

// sendLocked queues hdr and writes it with data straight from the caller's
// buffer, for payloads too big to copy into the queue. It returns once data
// is written (or the connection failed): the caller may reuse the buffer.
func (w *replyWriter) sendLocked(hdr, data []byte) {
	for w.writing {
		w.idle.Wait()
	}
	if w.err != nil {
		return
	}
	// No writer, and mu held from here until this goroutine is the
	// writer: hdr and data go out together, after everything queued.
	w.buf = append(w.buf, hdr...)
	w.writeLocked(data, true)
}

// writeLocked makes the caller the writer: it writes the queue (then data,
// if any) and whatever is queued meanwhile, releasing mu during each write,
// until the queue is empty. With mayBlock false it writes only what the
// socket takes without waiting; when the socket is full, a goroutine of its
// own takes over as the writer and this one returns. No writer may be
// active.
func (w *replyWriter) writeLocked(data []byte, mayBlock bool) {
	w.writing = true
	for w.err == nil && (len(w.buf) > 0 || data != nil) {
		out := w.buf
		w.buf, w.spare = w.spare[:0], nil
		w.mu.Unlock()
		var err error
		var rest []byte
		switch {
		case !mayBlock:
			var k int
			k, err = w.t.tryWrite(out)
			if err == nil && k < len(out) {
				rest = out[k:]
			}
		case data != nil:
			err = w.t.write2(out, data)
		default:
			_, err = w.t.Write(out)
		}
		data = nil
		w.mu.Lock()
		if err != nil {
			w.failLocked(err)
		}
		if rest != nil && w.err == nil {
			// The client is slow: a goroutine that may wait writes
			// the rest and stays the writer.
			w.handoffs.Add(1)
			go w.finishWrite(out, rest)
			return
		}
		w.spare = out[:0]
	}
	if w.err != nil {
		w.buf = w.buf[:0]
	}
	w.writing = false
	w.idle.Broadcast()
}

// finishWrite writes what a callback could not, then goes on as the writer.
func (w *replyWriter) finishWrite(out, rest []byte) {
	defer w.handoffs.Done()
	_, err := w.t.Write(rest)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.failLocked(err)
	}
	w.spare = out[:0]
	w.writeLocked(nil, true)
}

func (w *replyWriter) failLocked(err error) {
	if w.err != nil {
		return
	}
	w.err = err
	if w.failed != nil {
		w.failed(err)
	}
}

// drain writes everything queued and waits for the writer to finish, at
// the end of the connection.
func (w *replyWriter) drain() {
	w.mu.Lock()
	w.busy = false
	for {
		if w.writing {
			w.idle.Wait()
			continue
		}
		if len(w.buf) == 0 || w.err != nil {
			break
		}
		w.writeLocked(nil, true)
	}
	w.mu.Unlock()
	w.handoffs.Wait()
}
