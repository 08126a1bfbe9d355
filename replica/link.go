package replica

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/blockrep/blockrep/internal/fdconn"
	"github.com/blockrep/blockrep/internal/linktls"
	"github.com/blockrep/blockrep/replica/wire"
)

// link is one authenticated connection to a peer for one volume. Frames go
// out through one sender goroutine that batches whatever is queued into one
// writev; one receiver goroutine reads frames in order and dispatches them.
// A link lives until the first error; then the volume marks in the peer's
// bitmap everything the peer did not acknowledge.
type link struct {
	v    *Volume
	p    *peer
	conn net.Conn
	// fc is the socket after takeSocket: blocking system calls outside the
	// netpoller; nil while the link still uses conn.
	fc  *fdconn.Conn
	src switchReader
	br  *bufio.Reader
	r   *wire.Reader
	w   *wire.Writer

	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{} // closed when the link is torn down

	// smu guards the send queue and the table of frames awaiting an
	// answer. Lock order: v.mu before smu.
	smu    sync.Mutex
	scond  *sync.Cond
	queue  []outFrame
	spare  []outFrame
	closed bool
	// queuedBytes is the payload waiting in queue.
	queuedBytes int
	// ready is set once the exchange is over and the socket is in its
	// final hands: frames queued before (state broadcasts, the first
	// writes) wait until then, so nothing writes to the stream while the
	// exchange does.
	ready bool
	// flushing is set while one goroutine writes the queue out; frames
	// queued meanwhile go out with its next batch.
	flushing bool
	seq      uint64
	pending  map[uint64]pendingFrame

	// amu guards what the receiver applies on this node: the sequence
	// numbers of operations still running, so that a flush waits for
	// exactly the writes that arrived before it.
	amu      sync.Mutex
	acond    *sync.Cond
	applying map[uint64]struct{}

	// Resync and verify state, for a link on which this node is the
	// source. wmu guards the window and the answers to digest requests.
	wmu            sync.Mutex
	wcond          *sync.Cond
	resyncInflight int64          // bytes sent and not yet answered
	digestsOut     int            // digest requests not yet fully handled
	results        []verifyResult // answers waiting for the consumer
	rateStart      time.Time
	rateSent       int64
	bitmapIn       chan struct{} // closed when the peer's bitmap arrived
	bitmapDone     bool
	peerBitmap     *Bitmap
	resyncDoneAck  chan struct{}
	jobs           sync.WaitGroup // resync and verify goroutines
}

// outFrame is a frame waiting in the send queue.
type outFrame struct {
	h       wire.Header
	payload []byte
	// completeOnSend: protocol A; the op waits only for the send.
	completeOnSend bool
}

// pendingKind says what an answer to a frame completes.
type pendingKind uint8

const (
	pendApp    pendingKind = iota // an application op (write, trim, zeroes, flush)
	pendResync                    // a resync chunk
	pendVerify                    // a verify or checksum request
	pendFlush                     // a flush the resync waits for
)

// pendingFrame is a frame that awaits its answer.
type pendingFrame struct {
	kind   pendingKind
	off, n int64
	op     *op // nil once the op completed (protocols A and B)
	idx    int
	buf    *[]byte     // resync payload buffer, released at the answer
	ch     chan []byte // verify and flush answers
}

// verifyResult is the answer to one verify or checksum request.
type verifyResult struct {
	off, n   int64
	mismatch []byte // one bit per bitmap block, set where the peer differs
}

func newLink(v *Volume, p *peer, conn net.Conn, wp wire.Peer) *link {
	l := &link{
		v:        v,
		p:        p,
		conn:     conn,
		src:      switchReader{r: conn},
		w:        wire.NewWriter(conn),
		done:     make(chan struct{}),
		pending:  make(map[uint64]pendingFrame),
		applying: make(map[uint64]struct{}),

		resyncDoneAck: make(chan struct{}, 1),
	}
	if tc, ok := conn.(*tls.Conn); ok {
		l.w = wire.NewWriter(&linktls.Coalescer{W: tc}) // a TLS record per frame otherwise
	}
	l.br = bufio.NewReaderSize(&l.src, 256<<10)
	l.r = wire.NewReader(l.br, nil)
	l.r.SetVersion(wp.Version)
	l.w.SetVersion(wp.Version)
	l.r.SetMAC(wp.Recv)
	l.w.SetMAC(wp.Send)
	l.scond = sync.NewCond(&l.smu)
	l.acond = sync.NewCond(&l.amu)
	l.wcond = sync.NewCond(&l.wmu)
	l.ctx, l.cancel = context.WithCancelCause(v.ctx)
	return l
}

// fail ends the link with err (the first error wins).
func (l *link) fail(err error) {
	l.cancel(err)
	l.smu.Lock()
	l.closed = true
	l.scond.Broadcast()
	l.smu.Unlock()
	l.wmu.Lock()
	l.wcond.Broadcast()
	l.wmu.Unlock()
	if l.fc != nil {
		l.fc.Abort() // closed in teardown, once nothing reads or writes it
	} else {
		_ = l.conn.Close()
	}
}

// switchReader is the source of the link's buffered reader: the net.Conn
// during the handshake and exchange, the taken socket afterwards. bufio
// reads from it only when its buffer is empty, and bytes not yet read stay
// in the kernel's socket buffer, shared by both descriptors, so switching
// loses nothing.
type switchReader struct{ r io.Reader }

func (s *switchReader) Read(p []byte) (int, error) { return s.r.Read(p) }

// takeSocket moves the link off the netpoller once the exchange is done:
// blocking reads wake the receiver directly, which on a small machine
// halves a write's round trip. The read timeout becomes the socket's
// SO_RCVTIMEO. Links without a socket of their own (tests over pipes) stay
// as they are.
func (l *link) takeSocket() {
	fc := fdconn.Take(l.conn)
	if fc == nil {
		return
	}
	if err := fc.SetReadTimeout(l.v.cfg.Timeout); err != nil {
		l.v.log.Warn("peer link: no read timeout on the socket; a silent peer is noticed by the pings only", "err", err)
	}
	l.fc = fc
	l.src.r = fc
	l.w.SetStream(fc)
}

// start lets queued frames go out: the exchange is over and the socket is
// in its final hands.
func (l *link) start() {
	l.smu.Lock()
	l.ready = true
	l.scond.Broadcast()
	l.smu.Unlock()
}

// header returns a header for a frame of this volume at the current epoch.
// Caller may hold v.mu; the epoch is read under it by the caller's choice,
// so header takes it as an argument.
func (l *link) header(t wire.FrameType, epoch uint64, off int64, flags wire.Flags) wire.Header {
	return wire.Header{Type: t, Volume: l.v.cfg.ID, Epoch: epoch, Offset: uint64(off), Flags: flags}
}

// queueOp queues an application op's frame and registers the wait for its
// answer. queued is false if the link is closed; first is set when the
// frame is alone in the queue (the first of a burst). Caller holds v.mu.
func (l *link) queueOp(t wire.FrameType, payload []byte, flags wire.Flags, off, n int64, o *op, idx int) (queued, first bool) {
	if l.v.cfg.DataIntegrity && len(payload) > 0 && t == wire.TypeWrite {
		flags |= wire.FlagChecksum
	}
	h := l.header(t, l.v.epoch, off, flags)
	onSend := l.v.cfg.Protocol == 'A' && t != wire.TypeFlush
	l.smu.Lock()
	defer l.smu.Unlock()
	seq := l.enqueueLocked(h, payload, pendingFrame{kind: pendApp, off: off, n: n, op: o, idx: idx}, true, onSend)
	return seq != 0, len(l.queue) == 1
}

// enqueue assigns the next sequence number, queues the frame and, if
// track, registers pf for the answer. It returns the sequence number, or 0
// if the link is closed. The frame goes out at the next kick: the caller
// kicks once it holds no lock (or kicks the sender with kickAsync).
func (l *link) enqueue(h wire.Header, payload []byte, pf pendingFrame, track, completeOnSend bool) uint64 {
	l.smu.Lock()
	defer l.smu.Unlock()
	return l.enqueueLocked(h, payload, pf, track, completeOnSend)
}

// enqueueLocked is enqueue for a caller that holds smu.
func (l *link) enqueueLocked(h wire.Header, payload []byte, pf pendingFrame, track, completeOnSend bool) uint64 {
	if l.closed {
		return 0
	}
	l.seq++
	h.Seq = l.seq
	if track {
		l.pending[h.Seq] = pf
	}
	l.queue = append(l.queue, outFrame{h: h, payload: payload, completeOnSend: completeOnSend})
	l.queuedBytes += len(payload)
	return h.Seq
}

// send queues a frame that needs no answer and has the sender goroutine
// write it: safe under v.mu.
func (l *link) send(h wire.Header, payload []byte) {
	if l.enqueue(h, payload, pendingFrame{}, false, false) != 0 {
		l.kickAsync()
	}
}

// sendNow queues a frame that needs no answer and writes the queue out
// in the calling goroutine unless another one is at it. It must not be
// called under v.mu: a write blocked on a full socket would then stop this
// node's receiver, which needs v.mu, from draining the peer's answers.
func (l *link) sendNow(h wire.Header, payload []byte) {
	if l.enqueue(h, payload, pendingFrame{}, false, false) != 0 {
		l.kick()
	}
}

// kick writes the queue out in the calling goroutine, unless another
// goroutine is already doing so (it will take the new frames too). Writing
// in the goroutine that produced the frame saves a wake-up of the sender:
// on a small machine each hand-off costs more than the write itself.
// Never call it under v.mu (see sendNow).
//
// Bulk data is the exception: a caller that queued much more than a few
// small frames hands the write to the sender goroutine, so that copying
// megabytes into the socket runs alongside the caller's own work (the NBD
// reader's next read and local write) instead of after it.
func (l *link) kick() {
	l.smu.Lock()
	if !l.ready || l.flushing || len(l.queue) == 0 || l.closed {
		l.smu.Unlock()
		return
	}
	if l.queuedBytes > inlineFlushMax {
		l.scond.Broadcast()
		l.smu.Unlock()
		return
	}
	l.flushing = true
	l.smu.Unlock()
	l.flushQueue()
}

// inlineFlushMax is the most queued payload a kick writes in the calling
// goroutine.
const inlineFlushMax = 128 << 10

// kickAsync has the sender goroutine write the queue out.
func (l *link) kickAsync() {
	l.smu.Lock()
	l.scond.Broadcast()
	l.smu.Unlock()
}

// sender writes out frames that were queued under a lock (kickAsync).
func (l *link) sender() {
	for {
		l.smu.Lock()
		for (!l.ready || len(l.queue) == 0 || l.flushing) && !l.closed {
			l.scond.Wait()
		}
		if l.closed {
			l.smu.Unlock()
			return
		}
		l.flushing = true
		l.smu.Unlock()
		l.flushQueue()
	}
}

// flushQueue writes batches until the queue is empty, then clears
// flushing. The caller set flushing.
func (l *link) flushQueue() {
	for {
		l.smu.Lock()
		if len(l.queue) == 0 || l.closed {
			l.flushing = false
			l.scond.Broadcast()
			l.smu.Unlock()
			return
		}
		batch := l.queue
		l.queue = l.spare[:0]
		l.spare = nil
		l.queuedBytes = 0
		l.smu.Unlock()

		var sentBytes int64
		for i := range batch {
			f := &batch[i]
			if err := l.w.Queue(f.h, f.payload); err != nil {
				l.fail(fmt.Errorf("send %v: %w", f.h.Type, err))
				l.endFlush()
				return
			}
			sentBytes += int64(len(f.payload))
		}
		if err := l.w.Flush(); err != nil {
			l.fail(fmt.Errorf("send: %w", err))
			l.endFlush()
			return
		}
		l.p.bytesSent.Add(sentBytes)
		// Protocol A: the op is complete once its frame is on the wire;
		// the pending entry stays until the durable ack, so that a link
		// lost before it still marks the range out of sync.
		var sentOps []pendingFrame
		l.smu.Lock()
		for i := range batch {
			if !batch[i].completeOnSend {
				continue
			}
			if pf, ok := l.pending[batch[i].h.Seq]; ok && pf.op != nil {
				sentOps = append(sentOps, pf)
				pf.op = nil
				l.pending[batch[i].h.Seq] = pf
			}
		}
		clear(batch)
		l.spare = batch[:0]
		l.smu.Unlock()
		for _, pf := range sentOps {
			pf.op.complete(pf.idx, true)
		}
	}
}

// endFlush clears flushing after a failed write.
func (l *link) endFlush() {
	l.smu.Lock()
	l.flushing = false
	l.scond.Broadcast()
	l.smu.Unlock()
}

// drain waits until every queued frame is written, the link fails, or
// timeout passes: a node that leaves gets its last words out first.
func (l *link) drain(timeout time.Duration) {
	t := time.AfterFunc(timeout, func() {
		l.smu.Lock()
		l.closed = true
		l.scond.Broadcast()
		l.smu.Unlock()
	})
	defer t.Stop()
	l.smu.Lock()
	for (len(l.queue) > 0 || l.flushing) && !l.closed {
		l.scond.Wait()
	}
	l.smu.Unlock()
}

// answered removes and returns the pending entry of seq.
func (l *link) answered(seq uint64) (pendingFrame, bool) {
	l.smu.Lock()
	pf, ok := l.pending[seq]
	if ok {
		delete(l.pending, seq)
	}
	l.smu.Unlock()
	return pf, ok
}

// received handles protocol B's early ack: the op completes, the entry
// stays for the durable ack.
func (l *link) received(seq uint64) {
	l.smu.Lock()
	pf, ok := l.pending[seq]
	if ok && pf.op != nil {
		l.pending[seq] = pendingFrame{kind: pf.kind, off: pf.off, n: pf.n}
	}
	l.smu.Unlock()
	if ok && pf.op != nil {
		pf.op.complete(pf.idx, true)
	}
}

// pinger keeps the link alive and detects a silent peer: every quarter of
// the timeout it sends a ping; the receiver's read deadline does the rest.
func (l *link) pinger() {
	t := time.NewTicker(l.v.cfg.Timeout / 4)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-t.C:
			l.sendNow(l.header(wire.TypePing, l.epoch(), 0, 0), nil)
		}
	}
}

// epoch reads the volume's epoch.
func (l *link) epoch() uint64 {
	l.v.mu.Lock()
	defer l.v.mu.Unlock()
	return l.v.epoch
}

// readFrame reads the next frame header with the liveness deadline.
func (l *link) next() (wire.Header, error) {
	if l.fc == nil {
		_ = l.conn.SetReadDeadline(time.Now().Add(l.v.cfg.Timeout))
	}
	h, err := l.r.Next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return h, errors.New("peer closed the connection")
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return h, fmt.Errorf("peer silent for %v (timeout)", l.v.cfg.Timeout)
		}
		return h, err
	}
	if h.Volume != l.v.cfg.ID {
		return h, fmt.Errorf("%w: frame for another volume", errBadPayload)
	}
	return h, nil
}

// smallPayload reads a frame's payload that is small by protocol.
func (l *link) smallPayload(h wire.Header) ([]byte, error) {
	if h.Length > 1<<20+4096 {
		return nil, fmt.Errorf("%w: %v frame with a %d-byte payload", errBadPayload, h.Type, h.Length)
	}
	return l.r.Payload(nil)
}

// peerWriter is a Writer for frames to an authenticated peer outside a
// link (refusals), with the session's version and MAC.
func peerWriter(conn net.Conn, peer wire.Peer) *wire.Writer {
	w := wire.NewWriter(conn)
	w.SetVersion(peer.Version)
	w.SetMAC(peer.Send)
	return w
}

// sendError tells the peer why the link ends, best effort.
func sendError(w *wire.Writer, conn net.Conn, volID [16]byte, msg string) {
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	_ = w.WriteFrame(wire.Header{Type: wire.TypeError, Volume: volID}, []byte(msg))
}

// errRemote is an Error frame from the peer.
type errRemote struct{ msg string }

func (e *errRemote) Error() string { return fmt.Sprintf("peer refused: %q", e.msg) }

// startJob runs a resync or verify goroutine owned by the link.
func (l *link) startJob(f func()) { l.jobs.Go(f) }
