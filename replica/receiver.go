package replica

import (
	"errors"
	"fmt"
	"time"

	"github.com/blockrep/blockrep/block"
	"github.com/blockrep/blockrep/replica/wire"
)

// resyncDone frames: Offset says which way it goes.
const (
	resyncDoneFromSource = 0 // the source finished sending
	resyncDoneAck        = 1 // the target adopted the source's generation
)

// receiver reads and handles frames until the link fails.
func (l *link) receiver() error {
	for {
		h, err := l.next()
		if err != nil {
			return err
		}
		if err := l.handle(h); err != nil {
			return err
		}
		if l.br.Buffered() == 0 {
			// Nothing more has arrived: send the answers queued while
			// working through what had (one write for many acks).
			l.kick()
		}
	}
}

// handle dispatches one frame; its payload is still unread.
func (l *link) handle(h wire.Header) error {
	switch h.Type {
	case wire.TypePing:
		if _, err := l.smallPayload(h); err != nil {
			return err
		}
		l.sendNow(l.header(wire.TypePong, l.epoch(), 0, 0), nil)
	case wire.TypePong:
		_, err := l.smallPayload(h)
		return err
	case wire.TypeError:
		b, err := l.smallPayload(h)
		if err != nil {
			return err
		}
		return &errRemote{msg: string(b)}
	case wire.TypeWriteAckDurable, wire.TypeFlushAck:
		if _, err := l.smallPayload(h); err != nil {
			return err
		}
		if pf, ok := l.answered(h.Seq); ok {
			l.answer(pf, nil)
		}
	case wire.TypeWriteAckReceived:
		if _, err := l.smallPayload(h); err != nil {
			return err
		}
		l.received(h.Seq)
	case wire.TypeVerifyDigest:
		b, err := l.smallPayload(h)
		if err != nil {
			return err
		}
		if pf, ok := l.answered(h.Seq); ok {
			l.answer(pf, append([]byte(nil), b...))
		}
	case wire.TypeState:
		b, err := l.smallPayload(h)
		if err != nil {
			return err
		}
		var m stateMsg
		if err := m.unmarshal(b); err != nil {
			return err
		}
		return l.stateUpdate(&m)
	case wire.TypeBitmapChunk:
		b, err := l.smallPayload(h)
		if err != nil {
			return err
		}
		return l.bitmapChunk(b)
	case wire.TypeResyncDone:
		b, err := l.smallPayload(h)
		if err != nil {
			return err
		}
		if h.Offset == resyncDoneAck {
			select {
			case l.resyncDoneAck <- struct{}{}:
			default:
			}
			return nil
		}
		return l.applyResyncDone(h, b)
	case wire.TypeWrite, wire.TypeTrim, wire.TypeZeroes, wire.TypeResyncData:
		return l.applyData(h)
	case wire.TypeFlush:
		if _, err := l.smallPayload(h); err != nil {
			return err
		}
		return l.applyFlush(h)
	case wire.TypeVerifyRequest:
		return l.applyVerify(h)
	default:
		return fmt.Errorf("%w: unexpected %v frame on a replication link", errBadPayload, h.Type)
	}
	return nil
}

// answer completes a pending frame with its answer.
func (l *link) answer(pf pendingFrame, payload []byte) {
	switch pf.kind {
	case pendApp:
		if pf.op != nil {
			pf.op.complete(pf.idx, true)
		}
	case pendResync:
		l.resyncAcked(pf)
	case pendVerify:
		l.wmu.Lock()
		l.results = append(l.results, verifyResult{off: pf.off, n: pf.n, mismatch: payload})
		l.wcond.Broadcast()
		l.wmu.Unlock()
	case pendFlush:
		pf.ch <- payload
	}
}

// checkSender refuses data frames from a peer that may not send them: a
// stale epoch (fencing), application writes from a peer that is not this
// secondary's primary, resync data outside a resync into this node.
func (l *link) checkSender(h wire.Header, resync bool) error {
	v, p := l.v, l.p
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := wire.CheckEpoch(h.Epoch, v.epoch); err != nil {
		v.log.Error("frame from a stale epoch refused: dropping the link", "peer", p.name, "type", h.Type, "err", err)
		return fmt.Errorf("%w (volume %s)", err, v.cfg.Name)
	}
	if resync {
		if p.conn != SyncTarget {
			return fmt.Errorf("%w: resync data while not a sync target (%s)", errBadPayload, p.conn)
		}
		return nil
	}
	if v.role == Primary || p.peerRole != Primary {
		return fmt.Errorf("%w: %v from a peer that is not this node's primary", errBadPayload, h.Type)
	}
	return nil
}

// incoming is one data frame on its way to the local store.
type incoming struct {
	h      wire.Header
	off, n int64
	data   []byte
	buf    *[]byte // pooled buffer holding data, nil for trim and zeroes
	zflags byte
}

// applyData applies a write, trim, zeroes or resync data frame in arrival
// order for overlapping ranges and concurrently otherwise, then acks it.
func (l *link) applyData(h wire.Header) error {
	v, p := l.v, l.p
	in := incoming{h: h, off: int64(h.Offset)}
	resync := h.Type == wire.TypeResyncData
	switch h.Type {
	case wire.TypeWrite, wire.TypeResyncData:
		if h.Length > 32<<20 {
			return fmt.Errorf("%w: %v of %d bytes", errBadPayload, h.Type, h.Length)
		}
		in.buf = v.pool.Get(int(h.Length))
		b, err := l.r.Payload((*in.buf)[:0])
		if err != nil {
			v.pool.Put(in.buf)
			return err
		}
		in.data, in.n = b, int64(len(b))
	case wire.TypeTrim:
		b, err := l.smallPayload(h)
		if err != nil {
			return err
		}
		if in.n, err = unmarshalLength(b); err != nil {
			return err
		}
	case wire.TypeZeroes:
		b, err := l.smallPayload(h)
		if err != nil {
			return err
		}
		if in.n, in.zflags, err = unmarshalZeroes(b); err != nil {
			return err
		}
		resync = in.zflags&zeroResync != 0
	}
	if err := l.checkSender(h, resync); err != nil {
		l.release(&in)
		return err
	}
	if in.off < 0 || in.n < 0 || in.off+in.n > v.size {
		l.release(&in)
		return fmt.Errorf("%w: %v [%d, %d) beyond the %d-byte volume", errBadPayload, h.Type, in.off, in.off+in.n, v.size)
	}
	if resync {
		p.resyncRecv.Add(in.n)
	} else {
		p.bytesRecv.Add(int64(len(in.data)))
		if v.cfg.Protocol == 'B' {
			l.ack(wire.TypeWriteAckReceived, h)
		}
	}
	if h.Flags&wire.FlagFUA == 0 && in.n < asideMin {
		// Applied by the receiver itself: a write that completes into the
		// page cache takes microseconds, and one writer keeps the file
		// system's inode lock uncontended (concurrent pwrites to one
		// file queue on it). Arrival order is then the apply order.
		l.waitRange(in.off, in.n)
		err := l.apply(&in)
		l.release(&in)
		l.applied(&in, err, false)
		return nil
	}
	// A FUA write waits for the disk, and a large write copies megabytes:
	// either runs aside so that the receiver keeps reading what follows;
	// its range holds back overlapping later ones.
	id := l.acquire(in.off, in.n, h.Seq)
	go l.applyAside(in, id)
	return nil
}

// applyAside applies one frame beside the receiver.
func (l *link) applyAside(in incoming, id uint64) {
	err := l.apply(&in)
	l.release(&in)
	l.releaseApplied(id, in.h.Seq)
	l.applied(&in, err, true)
}

// apply writes one frame to the local store; a detached one gets nothing
// more.
func (l *link) apply(in *incoming) error {
	if f := l.v.DiskFailed(); f != "" {
		return fmt.Errorf("%w (%s)", ErrDiskFailed, f)
	}
	st := l.v.store
	switch in.h.Type {
	case wire.TypeWrite:
		return st.WriteAt(in.data, in.off, in.h.Flags&wire.FlagFUA != 0)
	case wire.TypeResyncData:
		return st.WriteAt(in.data, in.off, false)
	case wire.TypeTrim:
		return st.Trim(in.off, in.n)
	default:
		return st.WriteZeroes(in.off, in.n, block.ZeroFlags{MayTrim: in.zflags&zeroMayTrim != 0})
	}
}

// release returns a frame's buffer to the pool.
func (l *link) release(in *incoming) {
	if in.buf != nil {
		l.v.pool.Put(in.buf)
		in.buf, in.data = nil, nil
	}
}

// applied acks a frame once it is on the store, or drops the link if the
// store failed. now writes the ack at once; otherwise the receiver loop
// sends it with the others of its burst.
func (l *link) applied(in *incoming, err error, now bool) {
	h := in.h
	if err != nil {
		if l.v.localError(err) {
			// Detached: the volume tells the peer this replica is
			// Diskless, then takes the link down. Nothing is acked.
			return
		}
		l.v.log.Error("applying a replicated write failed: dropping the link", "peer", l.p.name, "type", h.Type, "off", in.off, "len", in.n, "err", err)
		l.fail(fmt.Errorf("local %v failed: %w", h.Type, err))
		return
	}
	a := l.header(wire.TypeWriteAckDurable, h.Epoch, in.off, 0)
	a.Seq = h.Seq
	if now {
		l.sendExact(a, nil)
	} else {
		l.queueExact(a, nil)
	}
}

// asideMin is the smallest write applied aside of the receiver.
const asideMin = 256 << 10

// waitRange waits until no operation running aside overlaps [off, off+n).
func (l *link) waitRange(off, n int64) {
	v := l.v
	v.mu.Lock()
	for v.ranges.overlaps(off, n) {
		v.cond.Wait()
	}
	v.mu.Unlock()
}

// ack answers frame h.
func (l *link) ack(t wire.FrameType, h wire.Header) {
	a := l.header(t, h.Epoch, int64(h.Offset), 0)
	a.Seq = h.Seq
	l.sendExact(a, nil)
}

// sendExact queues a frame with its Seq already set (an answer carries
// the Seq of the frame it answers) and writes it out like sendNow.
func (l *link) sendExact(h wire.Header, payload []byte) {
	l.queueExact(h, payload)
	l.kick()
}

// queueExact queues an answer without writing it: for the receiver, which
// kicks once it has worked through what arrived.
func (l *link) queueExact(h wire.Header, payload []byte) {
	l.smu.Lock()
	if !l.closed {
		l.queue = append(l.queue, outFrame{h: h, payload: payload})
	}
	l.smu.Unlock()
}

// acquire waits until [off, off+n) is free, marks it busy and records seq
// as applying. It returns the range id.
func (l *link) acquire(off, n int64, seq uint64) uint64 {
	v := l.v
	v.mu.Lock()
	for v.ranges.overlaps(off, n) {
		v.cond.Wait()
	}
	v.nextID++
	id := v.nextID
	v.ranges.add(off, n, id)
	v.mu.Unlock()
	l.amu.Lock()
	l.applying[seq] = struct{}{}
	l.amu.Unlock()
	return id
}

// releaseApplied undoes acquire.
func (l *link) releaseApplied(id, seq uint64) {
	v := l.v
	v.mu.Lock()
	v.ranges.remove(id)
	v.cond.Broadcast()
	v.mu.Unlock()
	l.amu.Lock()
	delete(l.applying, seq)
	l.acond.Broadcast()
	l.amu.Unlock()
}

// waitApplied waits until every operation that arrived before seq is done.
func (l *link) waitApplied(seq uint64) {
	l.amu.Lock()
	defer l.amu.Unlock()
	for {
		busy := false
		for s := range l.applying {
			if s < seq {
				busy = true
				break
			}
		}
		if !busy {
			return
		}
		l.acond.Wait()
	}
}

// applyFlush flushes once every write received before the flush is done.
func (l *link) applyFlush(h wire.Header) error {
	l.amu.Lock()
	l.applying[h.Seq] = struct{}{}
	l.amu.Unlock()
	go func() {
		l.waitApplied(h.Seq)
		err := l.v.store.Flush()
		if f := l.v.DiskFailed(); err == nil && f != "" {
			err = fmt.Errorf("%w (%s)", ErrDiskFailed, f)
		}
		l.amu.Lock()
		delete(l.applying, h.Seq)
		l.acond.Broadcast()
		l.amu.Unlock()
		if err != nil {
			if !l.v.localError(err) {
				l.fail(fmt.Errorf("local flush failed: %w", err))
			}
			return
		}
		l.ack(wire.TypeFlushAck, h)
	}()
	return nil
}

// applyResyncDone finishes this node's side of a resync: once everything
// sent before is on disk, adopt the source's generation.
func (l *link) applyResyncDone(h wire.Header, b []byte) error {
	v, p := l.v, l.p
	src, err := unmarshalGens(b)
	if err != nil {
		return err
	}
	v.mu.Lock()
	if p.conn != SyncTarget {
		v.mu.Unlock()
		return fmt.Errorf("%w: ResyncDone while %s", errBadPayload, p.conn)
	}
	v.mu.Unlock()
	l.amu.Lock()
	l.applying[h.Seq] = struct{}{}
	l.amu.Unlock()
	go func() {
		l.waitApplied(h.Seq)
		err := v.store.Flush()
		v.mu.Lock()
		if err != nil && v.localErrorLocked(err) || v.failed != "" {
			// Detached: the resync never finishes here.
			v.mu.Unlock()
			l.amu.Lock()
			delete(l.applying, h.Seq)
			l.acond.Broadcast()
			l.amu.Unlock()
			return
		}
		if err == nil {
			v.gens = v.gens.ResyncDone(src)
			v.disk = p.peerDisk
			if v.disk < Outdated {
				v.disk = UpToDate
			}
			p.bitmapGen = 0
			p.bitmap.ClearRange(0, v.size)
			p.knownDisk = p.peerDisk
			v.crashed = false
			if p.resync != nil {
				p.resync.Finished = time.Now()
			}
			p.setConn(Connected)
			err = v.persistAll()
			if err == nil {
				err = v.saveBitmapsLocked()
			}
			v.log.Info("resync finished: in sync with the source", "peer", p.name, "gen", v.gens.Current, "disk", v.disk)
		}
		v.mu.Unlock()
		l.amu.Lock()
		delete(l.applying, h.Seq)
		l.acond.Broadcast()
		l.amu.Unlock()
		if err != nil {
			l.fail(fmt.Errorf("finishing the resync: %w", err))
			return
		}
		a := l.header(wire.TypeResyncDone, h.Epoch, resyncDoneAck, 0)
		a.Seq = h.Seq
		l.sendExact(a, nil)
	}()
	return nil
}

// stateUpdate takes a State the peer sent after the connect exchange.
func (l *link) stateUpdate(m *stateMsg) error {
	v, p := l.v, l.p
	v.mu.Lock()
	defer v.mu.Unlock()
	if m.Role == Primary && v.role == Primary {
		return fmt.Errorf("%w: the peer became primary while this node is primary", errStandAlone)
	}
	if m.Role == Primary && m.Epoch < max(v.epoch, v.promoting) {
		return &wire.StaleEpochError{Frame: m.Epoch, Known: max(v.epoch, v.promoting)}
	}
	if m.Role == Primary && m.Epoch > v.epoch {
		v.epoch = m.Epoch
	}
	p.heard = true
	p.peerRole, p.peerDisk = m.Role, m.Disk
	if m.Leaving {
		p.knownDisk = m.Disk
		p.lastErr = "peer left cleanly (disk " + m.Disk.String() + ")"
		v.log.Info("peer leaving", "peer", p.name, "disk", m.Disk)
		p.nudgeReport()
		return v.persistAll()
	}
	if m.Role == Primary && v.role == Secondary && p.conn == Connected && m.Gen.Current != v.gens.Current {
		// The primary started a new generation; this node has every
		// write of it so far.
		v.gens.Current, v.gens.History = m.Gen.Current, m.Gen.History
	}
	if m.StartResync != NoResync && p.conn == Connected {
		p.setConn(SyncTarget)
		v.disk = Inconsistent
	}
	if v.role == Secondary && p.conn == Connected && m.Role == Primary && (v.disk == Outdated || v.disk == UpToDate) {
		v.disk = UpToDate
	}
	return v.persistAll()
}

// sendState queues this node's State for the peer. Caller holds v.mu.
func (l *link) sendState(leaving bool) {
	m := l.v.stateFor(l.p, leaving)
	l.send(l.header(wire.TypeState, l.v.epoch, 0, 0), m.marshal())
}

// broadcastStateLocked tells every connected peer about a change.
func (v *Volume) broadcastStateLocked() {
	for _, p := range v.peers {
		if p.link != nil {
			p.link.sendState(false)
		}
	}
}

// errLinkClosed is returned by operations queued on a closed link.
var errLinkClosed = errors.New("link closed")
