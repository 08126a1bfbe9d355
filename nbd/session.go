package nbd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sync/semaphore"

	"github.com/blockrep/blockrep/block"
)

const (
	// inbufSize holds a full queue of small requests: 32 4 KiB writes
	// arrive in one read.
	inbufSize = 512 << 10
	// replyBufSize holds a batch of small read replies.
	replyBufSize = 512 << 10
	// maxInlineRead bounds reads served into the reply queue directly;
	// larger ones are read into a pooled buffer and sent from there.
	maxInlineRead = replyBufSize / 2
	// slotsPerConn bounds the requests one connection has at workers.
	slotsPerConn = 128
	// maxExtents bounds the descriptors in one BLOCK_STATUS reply.
	maxExtents = 2048
)

// request is a decoded request header.
type request struct {
	flags  uint16
	cmd    uint16
	cookie uint64
	off    uint64
	length uint32
}

// session is the transmission phase of one connection.
type session struct {
	srv        *Server
	cc         *clientConn
	dev        block.Device
	async      block.AsyncWriter // dev, if it completes writes asynchronously
	size       uint64
	readOnly   bool
	structured bool
	metaAlloc  bool
	align      uint32 // enforced alignment; 1 when the client did not ask for block sizes
	maxPayload uint32
	inlineMax  uint32
	log        *slog.Logger

	in      inbuf
	out     replyWriter
	slots   chan struct{}
	workers sync.WaitGroup
	// quota is the connection's share of the server's budget.
	quota *semaphore.Weighted
	// ctx ends when the connection is evicted or the server gives up:
	// the reader stops waiting for budget.
	ctx     context.Context
	cancel  context.CancelFunc
	ioLog   *rateLog
	extents []uint32 // BLOCK_STATUS descriptor scratch, reader only
	// bulk is set after a write too large for the read buffer: the next
	// one is likely as large, so its header is read alone and its payload
	// straight into the request buffer.
	bulk bool
}

func newSession(srv *Server, cc *clientConn, t transport, n *negotiation) *session {
	e := n.export
	minBlk, _, maxBlk := blockSizes(e)
	s := &session{
		srv:        srv,
		cc:         cc,
		dev:        e.Device,
		size:       uint64(e.Device.Size()),
		readOnly:   e.ReadOnly,
		structured: n.structured,
		metaAlloc:  n.metaAlloc,
		align:      1,
		maxPayload: maxBlk,
		log:        srv.log.With("client", cc.id, "remote", cc.remote, "export", e.Name),
		slots:      make(chan struct{}, slotsPerConn),
		quota:      srv.budget.newQuota(),
		ioLog:      srv.ioLog(e.Name),
	}
	s.ctx, s.cancel = context.WithCancel(srv.ctx)
	if n.blockSizes {
		s.align = minBlk
	}
	if a, ok := e.Device.(block.AsyncWriter); ok && !s.readOnly {
		s.async = a
	}
	if e.InlineMax > 0 {
		s.inlineMax = uint32(min(e.InlineMax, defaultMaxBlk))
	}
	s.out.init(t, replyBufSize)
	s.out.busy = true
	if d := srv.cfg.ReplyTimeout; d > 0 {
		if err := t.setWriteTimeout(d); err != nil {
			s.log.Warn("cannot set the reply timeout; a client that stops reading is not evicted", "reply_timeout", d, "err", err)
		}
	}
	s.out.failed = func(err error) {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			if ok, k := srv.evictLog.allow(); ok {
				s.log.Warn("evicting client: it read no reply for nbd.reply_timeout", "reply_timeout", srv.cfg.ReplyTimeout, "evictions", k)
			}
		}
		// Wake the reader: a client whose replies cannot be sent is gone.
		s.cancel()
		t.abort()
	}
	s.in = inbuf{src: t, buf: make([]byte, inbufSize), idle: s.idle, busy: s.out.readerBusy}
	return s
}

// run serves requests until the client disconnects or the stream breaks,
// then waits for the requests still at workers and sends their replies.
func (s *session) run() error {
	defer s.cancel()
	err := s.loop()
	s.idle()
	s.workers.Wait()
	if s.async != nil {
		s.async.Unplug()
	}
	s.out.drain()
	if err == io.EOF {
		err = nil
	}
	if err == nil {
		s.out.mu.Lock()
		err = s.out.err
		s.out.mu.Unlock()
	}
	return err
}

func (s *session) loop() error {
	for {
		h, err := s.in.next(requestHdrLen, s.bulk)
		if err != nil {
			return err
		}
		if m := binary.BigEndian.Uint32(h[0:]); m != requestMagic {
			return fmt.Errorf("nbd: bad request magic %#x", m)
		}
		r := request{
			flags:  binary.BigEndian.Uint16(h[4:]),
			cmd:    binary.BigEndian.Uint16(h[6:]),
			cookie: binary.BigEndian.Uint64(h[8:]),
			off:    binary.BigEndian.Uint64(h[16:]),
			length: binary.BigEndian.Uint32(h[24:]),
		}
		if r.cmd == cmdDisc {
			return nil
		}
		if err := s.dispatch(&r); err != nil {
			return err
		}
	}
}

// dispatch serves or hands off one request. It returns an error only when
// the stream itself is broken.
func (s *session) dispatch(r *request) error {
	if errno, msg := s.check(r); errno != 0 {
		if r.cmd == cmdWrite {
			if err := s.in.discard(int64(r.length)); err != nil {
				return err
			}
		}
		s.cc.errors.Add(1)
		s.replyErr(r, errno, msg)
		return nil
	}
	switch r.cmd {
	case cmdWrite:
		return s.write(r)
	case cmdRead:
		return s.read(r)
	case cmdFlush:
		return s.spawn(r, 0)
	case cmdTrim, cmdWriteZeroes, cmdCache:
		if s.inlineMax == 0 || r.flags&cmdFlagFUA != 0 {
			return s.spawn(r, 0)
		}
		s.finish(r, s.other(r))
		return nil
	case cmdBlockStatus:
		s.blockStatus(r)
		return nil
	}
	return nil
}

// flagsAllowed lists the command flags each command accepts. FUA is valid
// on every command (the spec says so, even where it has no effect).
var flagsAllowed = [...]uint16{
	cmdRead:        cmdFlagFUA | cmdFlagDF,
	cmdWrite:       cmdFlagFUA,
	cmdFlush:       cmdFlagFUA,
	cmdTrim:        cmdFlagFUA,
	cmdCache:       cmdFlagFUA,
	cmdWriteZeroes: cmdFlagFUA | cmdFlagNoHole | cmdFlagFastZero,
	cmdBlockStatus: cmdFlagFUA | cmdFlagReqOne,
}

// check validates a request against the export and the negotiated
// constraints, returning an NBD errno and a message for the client.
func (s *session) check(r *request) (uint32, string) {
	if int(r.cmd) >= len(flagsAllowed) || r.cmd == cmdDisc {
		return errInval, fmt.Sprintf("unknown command %d", r.cmd)
	}
	allowed := flagsAllowed[r.cmd]
	if !s.structured {
		allowed &^= cmdFlagDF
	}
	if extra := r.flags &^ allowed; extra != 0 {
		return errInval, fmt.Sprintf("%s does not take flags %#x", cmdName(r.cmd), extra)
	}
	switch r.cmd {
	case cmdFlush:
		return 0, ""
	case cmdBlockStatus:
		if !s.metaAlloc {
			return errInval, "BLOCK_STATUS needs the base:allocation context"
		}
	}
	writes := r.cmd == cmdWrite || r.cmd == cmdTrim || r.cmd == cmdWriteZeroes
	if writes && s.readOnly {
		return errPerm, "export is read-only"
	}
	if r.length == 0 {
		return errInval, cmdName(r.cmd) + " of zero length"
	}
	if end := r.off + uint64(r.length); end < r.off || end > s.size {
		errno := uint32(errInval)
		if r.cmd == cmdWrite || r.cmd == cmdWriteZeroes {
			errno = errNoSpc
		}
		return errno, fmt.Sprintf("%s [%d, +%d) past the end of the export (%d bytes)", cmdName(r.cmd), r.off, r.length, s.size)
	}
	if s.align > 1 && (r.off%uint64(s.align) != 0 || r.length%s.align != 0) {
		return errInval, fmt.Sprintf("%s [%d, +%d) not aligned to the minimum block size %d", cmdName(r.cmd), r.off, r.length, s.align)
	}
	if (r.cmd == cmdRead || r.cmd == cmdWrite) && r.length > s.maxPayload {
		return errInval, fmt.Sprintf("%s of %d bytes exceeds the maximum block size %d", cmdName(r.cmd), r.length, s.maxPayload)
	}
	return 0, ""
}

func (s *session) write(r *request) error {
	n := int(r.length)
	fua := r.flags&cmdFlagFUA != 0
	s.cc.writes.Add(1)
	s.cc.bytesWritten.Add(uint64(n))
	s.bulk = n > inbufSize/2
	if fua || r.length > s.inlineMax {
		return s.spawn(r, n)
	}
	if s.async != nil {
		return s.writeAsync(r, n)
	}
	if !s.bulk {
		// The payload is used where it lies in the read buffer.
		p, err := s.in.next(n, false)
		if err != nil {
			return err
		}
		s.finish(r, s.dev.WriteAt(p, int64(r.off), false))
		return nil
	}
	buf, weight, err := s.acquire(n)
	if err != nil {
		return err
	}
	if err := s.in.readFull(*buf); err != nil {
		s.release(buf, weight)
		return err
	}
	s.finish(r, s.dev.WriteAt(*buf, int64(r.off), false))
	s.release(buf, weight)
	return nil
}

// idle runs before the reader waits for anything: writes held back by an
// AsyncWriter go out, and queued replies are written.
func (s *session) idle() {
	if s.async != nil {
		s.async.Unplug()
	}
	s.out.readerIdle()
}

// writeAsync starts a write on an AsyncWriter from the reader: the payload
// goes into a pooled buffer that lives until the device calls back, and the
// callback sends the reply. A worker slot bounds how many are in flight.
func (s *session) writeAsync(r *request, n int) error {
	buf, weight, err := s.acquire(n)
	if err != nil {
		return err
	}
	s.takeSlot()
	if err := s.in.readFull(*buf); err != nil {
		<-s.slots
		s.release(buf, weight)
		return err
	}
	s.workers.Add(1)
	req := *r
	s.async.WriteAtAsync(*buf, int64(r.off), false, func(err error) {
		// On the device's goroutine: the reply must not wait for
		// this client's socket.
		s.reply(&req, err, false)
		<-s.slots
		s.release(buf, weight)
		s.workers.Done()
	})
	return nil
}

func (s *session) read(r *request) error {
	n := int(r.length)
	s.cc.reads.Add(1)
	s.cc.bytesRead.Add(uint64(n))
	if r.length > s.inlineMax {
		return s.spawn(r, n)
	}
	if n > maxInlineRead {
		buf, weight, err := s.acquire(n)
		if err != nil {
			return err
		}
		s.readDone(r, buf)
		s.release(buf, weight)
		return nil
	}
	// Small reads land straight in the reply queue.
	hl := s.readHdrLen()
	w := &s.out
	w.mu.Lock()
	p := w.reserveLocked(hl+n, true)
	if err := s.dev.ReadAt(p[hl:], int64(r.off)); err != nil {
		w.unreserveLocked(hl + n)
		w.mu.Unlock()
		s.finish(r, err)
		return nil
	}
	s.putReadHdr(p[:hl], r, n)
	w.doneLocked(true)
	w.mu.Unlock()
	return nil
}

// acquire takes n bytes of the connection's quota and the server's
// in-flight budget (see budget) and, for n > 0, a pooled buffer of that
// size. Requests without a payload still weigh a page, which bounds how
// many can be in flight.
func (s *session) acquire(n int) (*[]byte, int64, error) {
	weight := int64(max(n, 4096))
	if !s.srv.budget.tryTake(s.quota, weight) {
		s.idle()
		err := s.srv.budget.take(s.ctx, s.quota, weight)
		s.out.readerBusy()
		if err != nil {
			return nil, 0, err
		}
	}
	if n == 0 {
		return nil, weight, nil
	}
	return s.srv.pool.Get(n), weight, nil
}

func (s *session) release(buf *[]byte, weight int64) {
	if buf != nil {
		s.srv.pool.Put(buf)
	}
	s.srv.budget.give(s.quota, weight)
}

// takeSlot waits for one of the connection's worker slots; while it waits
// the reader counts as idle, so replies and held-back writes go out.
func (s *session) takeSlot() {
	select {
	case s.slots <- struct{}{}:
	default:
		s.idle()
		s.slots <- struct{}{}
		s.out.readerBusy()
	}
}

// spawn hands a request to a worker goroutine. A request with a payload
// (n > 0) gets a pooled buffer, filled from the stream for writes.
func (s *session) spawn(r *request, n int) error {
	buf, weight, err := s.acquire(n)
	if err != nil {
		return err
	}
	s.takeSlot()
	if r.cmd == cmdWrite {
		if err := s.in.readFull(*buf); err != nil {
			<-s.slots
			s.release(buf, weight)
			return err
		}
	}
	s.workers.Add(1)
	go s.work(*r, buf, weight)
	return nil
}

// work serves one request at a worker goroutine. The request is passed by
// value so that the reader's copy, on the hot path, stays off the heap.
func (s *session) work(r request, buf *[]byte, weight int64) {
	defer s.workers.Done()
	switch r.cmd {
	case cmdRead:
		s.readDone(&r, buf)
	case cmdWrite:
		s.finish(&r, s.dev.WriteAt(*buf, int64(r.off), r.flags&cmdFlagFUA != 0))
	case cmdFlush:
		s.cc.flushes.Add(1)
		s.finish(&r, s.dev.Flush())
	default:
		s.finish(&r, s.other(&r))
	}
	<-s.slots
	s.release(buf, weight)
}

// readDone serves a READ at a worker and sends the data, without copying it
// into the reply queue when it is large.
func (s *session) readDone(r *request, buf *[]byte) {
	if err := s.dev.ReadAt(*buf, int64(r.off)); err != nil {
		s.finish(r, err)
		return
	}
	hl := s.readHdrLen()
	w := &s.out
	if n := len(*buf); n <= smallRequest {
		// Copied into the queue, so that the buffer (from the budget's
		// reserve) is not held while the client is slow to read.
		w.mu.Lock()
		p := w.reserveLocked(hl+n, true)
		s.putReadHdr(p[:hl], r, n)
		copy(p[hl:], *buf)
		w.doneLocked(true)
		w.mu.Unlock()
		return
	}
	var hdr [structHdrLen + 8]byte
	s.putReadHdr(hdr[:hl], r, len(*buf))
	w.mu.Lock()
	w.sendLocked(hdr[:hl], *buf)
	w.mu.Unlock()
}

// other serves TRIM, WRITE_ZEROES and CACHE.
func (s *session) other(r *request) error {
	off, n := int64(r.off), int64(r.length)
	var err error
	switch r.cmd {
	case cmdTrim:
		err = s.dev.Trim(off, n)
	case cmdWriteZeroes:
		err = s.dev.WriteZeroes(off, n, block.ZeroFlags{
			MayTrim: r.flags&cmdFlagNoHole == 0,
			Fast:    r.flags&cmdFlagFastZero != 0,
		})
	case cmdCache:
		return s.dev.Cache(off, n)
	}
	if err == nil && r.flags&cmdFlagFUA != 0 {
		err = s.dev.Flush()
	}
	return err
}

func (s *session) blockStatus(r *request) {
	end := int64(r.off) + int64(r.length)
	desc := s.extents[:0]
	limit := maxExtents
	if r.flags&cmdFlagReqOne != 0 {
		limit = 1
	}
	pos := int64(r.off)
	var gap bool
	err := s.dev.Extents(int64(r.off), int64(r.length), func(e block.Extent) bool {
		if e.Offset > pos {
			gap = true
			return false
		}
		stop := e.Offset + e.Length
		if stop > end {
			stop = end
		}
		if stop <= pos {
			return true
		}
		var flags uint32
		if e.Hole {
			flags |= stateHole
		}
		if e.Zero {
			flags |= stateZero
		}
		// The descriptors sum to at most r.length, so merging cannot
		// overflow a descriptor's 32-bit length.
		length := uint32(stop - pos)
		if k := len(desc); k > 0 && desc[k-1] == flags {
			desc[k-2] += length
		} else {
			if len(desc)/2 == limit {
				return false
			}
			desc = append(desc, length, flags)
		}
		pos = stop
		return pos < end
	})
	s.extents = desc
	if err == nil && (gap || len(desc) == 0) {
		err = fmt.Errorf("nbd: device reported no extent at offset %d", pos)
	}
	if err != nil {
		s.finish(r, err)
		return
	}
	w := &s.out
	w.mu.Lock()
	p := w.reserveLocked(structHdrLen+4+4*len(desc), true)
	binary.BigEndian.PutUint32(p[0:], structMagic)
	binary.BigEndian.PutUint16(p[4:], replyFlagDone)
	binary.BigEndian.PutUint16(p[6:], replyTypeBlockStatus)
	binary.BigEndian.PutUint64(p[8:], r.cookie)
	binary.BigEndian.PutUint32(p[16:], uint32(4+4*len(desc)))
	binary.BigEndian.PutUint32(p[20:], metaContextAllocID)
	for i, v := range desc {
		binary.BigEndian.PutUint32(p[24+4*i:], v)
	}
	w.doneLocked(true)
	w.mu.Unlock()
}

func (s *session) readHdrLen() int {
	if s.structured {
		return structHdrLen + 8
	}
	return simpleHdrLen
}

func (s *session) putReadHdr(p []byte, r *request, n int) {
	if s.structured {
		binary.BigEndian.PutUint32(p[0:], structMagic)
		binary.BigEndian.PutUint16(p[4:], replyFlagDone)
		binary.BigEndian.PutUint16(p[6:], replyTypeOffsetData)
		binary.BigEndian.PutUint64(p[8:], r.cookie)
		binary.BigEndian.PutUint32(p[16:], uint32(8+n))
		binary.BigEndian.PutUint64(p[20:], r.off)
		return
	}
	binary.BigEndian.PutUint32(p[0:], simpleMagic)
	binary.BigEndian.PutUint32(p[4:], 0)
	binary.BigEndian.PutUint64(p[8:], r.cookie)
}

// finish sends the reply of a request without payload, or the error reply
// of any request, from the reader or a worker.
func (s *session) finish(r *request, err error) { s.reply(r, err, true) }

// reply is finish for any goroutine: with mayBlock false (a device's
// completion callback) it never waits for the client's socket.
func (s *session) reply(r *request, err error, mayBlock bool) {
	if err == nil {
		w := &s.out
		w.mu.Lock()
		p := w.reserveLocked(simpleHdrLen, mayBlock)
		binary.BigEndian.PutUint32(p[0:], simpleMagic)
		binary.BigEndian.PutUint32(p[4:], 0)
		binary.BigEndian.PutUint64(p[8:], r.cookie)
		w.doneLocked(mayBlock)
		w.mu.Unlock()
		return
	}
	errno := errnoOf(err)
	s.cc.errors.Add(1)
	if errno == errIO || errno == errNoSpc {
		// A failing disk fails every request on every connection, a full
		// file system every write: the export's log limiter keeps a few
		// lines and counts the rest. The store's error names its path.
		if ok, k := s.ioLog.allow(); ok {
			msg := "I/O error"
			if errno == errNoSpc {
				msg = "no space left on the file system under the store"
			}
			s.log.Warn(msg, "cmd", cmdName(r.cmd), "offset", r.off, "length", r.length, "err", err, "count", k)
		}
	}
	s.replyErrMay(r, errno, err.Error(), mayBlock)
}

// replyErr sends an error reply. READs and BLOCK_STATUS with structured
// replies must get a structured error chunk.
func (s *session) replyErr(r *request, errno uint32, msg string) {
	s.replyErrMay(r, errno, msg, true)
}

func (s *session) replyErrMay(r *request, errno uint32, msg string, mayBlock bool) {
	if len(msg) > 4096 {
		msg = msg[:4096]
	}
	w := &s.out
	w.mu.Lock()
	if s.structured && (r.cmd == cmdRead || r.cmd == cmdBlockStatus) {
		p := w.reserveLocked(structHdrLen+6+len(msg), mayBlock)
		binary.BigEndian.PutUint32(p[0:], structMagic)
		binary.BigEndian.PutUint16(p[4:], replyFlagDone)
		binary.BigEndian.PutUint16(p[6:], replyTypeError)
		binary.BigEndian.PutUint64(p[8:], r.cookie)
		binary.BigEndian.PutUint32(p[16:], uint32(6+len(msg)))
		binary.BigEndian.PutUint32(p[20:], errno)
		binary.BigEndian.PutUint16(p[24:], uint16(len(msg)))
		copy(p[26:], msg)
	} else {
		p := w.reserveLocked(simpleHdrLen, mayBlock)
		binary.BigEndian.PutUint32(p[0:], simpleMagic)
		binary.BigEndian.PutUint32(p[4:], errno)
		binary.BigEndian.PutUint64(p[8:], r.cookie)
	}
	w.doneLocked(mayBlock)
	w.mu.Unlock()
}

// errnoOf maps a device error to the NBD errno the client sees.
func errnoOf(err error) uint32 {
	switch {
	case errors.Is(err, block.ErrReadOnly), errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EROFS):
		return errPerm
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return errNoSpc
	case errors.Is(err, block.ErrNotFast), errors.Is(err, syscall.EOPNOTSUPP):
		return errNotSup
	case errors.Is(err, block.ErrOutOfRange), errors.Is(err, syscall.EINVAL):
		return errInval
	case errors.Is(err, syscall.ENOMEM):
		return errNoMem
	}
	return errIO
}
