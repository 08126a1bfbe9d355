package replica

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockrep/blockrep/block"
	"github.com/blockrep/blockrep/replica/wire"
)

// The write path of a primary
//
//  1. begin: wait until no overlapping operation runs and no connect
//     exchange is in progress; activity-log Begin (persisting the change,
//     in Seq order, when a cold extent becomes hot); refuse when an
//     UpToDate peer cannot get the write and continue_alone is off; mark
//     the range in the bitmap of every peer that will not get it; queue the
//     frame on every replicating link — all under v.mu, so that a link
//     going up or down sees each write either sent or in the bitmap.
//  2. the local write runs while the links send.
//  3. wait for the peers per protocol (C: durable ack, B: received, A:
//     sent); a link that fails first leaves the range in its bitmap.
//  4. end: activity-log End, release the range.

// opKind is what an operation does.
type opKind uint8

const (
	opWrite opKind = iota
	opTrim
	opZeroes
	opFlush
)

// op is one application request on its way through the peers. It is pooled.
type op struct {
	remaining atomic.Int32
	failed    atomic.Uint32 // bit i: peers[i] did not get it
	done      chan struct{} // one token when remaining reaches zero
	sent      uint32        // bit i: queued on peers[i]'s link
}

var opPool = sync.Pool{New: func() any { return &op{done: make(chan struct{}, 1)} }}

// complete reports one participant's outcome.
func (o *op) complete(peerIdx int, ok bool) {
	if !ok {
		o.failed.Or(1 << peerIdx)
	}
	if o.remaining.Add(-1) == 0 {
		o.done <- struct{}{}
	}
}

// errReadOnlySecondary is what writes to a secondary get.
func (v *Volume) errNotPrimary() error {
	return fmt.Errorf("%w: %w (volume %q)", block.ErrReadOnly, ErrNotPrimary, v.cfg.Name)
}

// WriteAt writes p at off locally and on every replicating peer.
func (v *Volume) WriteAt(p []byte, off int64, fua bool) error {
	return v.submit(opWrite, p, off, int64(len(p)), fua, block.ZeroFlags{})
}

// Trim trims locally and on the peers.
func (v *Volume) Trim(off, length int64) error {
	return v.submit(opTrim, nil, off, length, false, block.ZeroFlags{})
}

// WriteZeroes zeroes locally and on the peers. A Fast request that the local
// store cannot do quickly fails before anything is sent.
func (v *Volume) WriteZeroes(off, length int64, flags block.ZeroFlags) error {
	return v.submit(opZeroes, nil, off, length, false, flags)
}

// Flush makes every completed write durable locally and on every
// replicating peer.
func (v *Volume) Flush() error {
	v.mu.Lock()
	if v.role != Primary {
		v.mu.Unlock()
		return v.store.Flush()
	}
	o := opPool.Get().(*op)
	o.failed.Store(0)
	o.sent = 0
	o.remaining.Store(1)
	for i, p := range v.peers {
		if p.replicating && p.link != nil {
			o.remaining.Add(1)
			if p.link.queueOp(wire.TypeFlush, nil, 0, 0, 0, o, i) {
				o.sent |= 1 << i
			} else {
				o.remaining.Add(-1)
				o.failed.Or(1 << i)
			}
		}
	}
	v.mu.Unlock()
	err := v.store.Flush()
	o.complete(0, true) // the local part; index unused when ok
	<-o.done
	failed := o.failed.Load()
	opPool.Put(o)
	if err != nil {
		return err
	}
	if failed != 0 {
		v.mu.Lock()
		defer v.mu.Unlock()
		return v.peerFailuresLocked(failed, 0, 0)
	}
	return nil
}

// submit runs one write, trim or write-zeroes through the steps above.
func (v *Volume) submit(kind opKind, p []byte, off, n int64, fua bool, zf block.ZeroFlags) error {
	if off < 0 || n < 0 || off+n > v.size {
		return fmt.Errorf("%w: [%d, %d) on a %d-byte volume", block.ErrOutOfRange, off, off+n, v.size)
	}
	v.lastAppIO.Store(time.Now().UnixNano())
	id, err := v.begin(off, n)
	if err != nil {
		return err
	}
	// A fast zero that the local store cannot do quickly must fail before
	// anything reaches the peers, so it runs locally first; the peers
	// zero as they can.
	localFirst := kind == opZeroes && zf.Fast
	var lerr error
	if localFirst {
		if lerr = v.store.WriteZeroes(off, n, zf); errors.Is(lerr, block.ErrNotFast) {
			v.end(id, off, n)
			return lerr
		}
	}
	o := opPool.Get().(*op)
	o.failed.Store(0)
	o.sent = 0
	o.remaining.Store(1)
	if err := v.dispatch(o, kind, p, off, n, fua, zf); err != nil {
		opPool.Put(o)
		v.mu.Lock()
		if localFirst {
			for _, pe := range v.peers {
				pe.bitmap.SetRange(off, n)
			}
		}
		v.endLocked(id, off, n)
		v.mu.Unlock()
		return err
	}

	switch {
	case localFirst:
	case kind == opWrite:
		lerr = v.store.WriteAt(p, off, fua)
	case kind == opTrim:
		lerr = v.store.Trim(off, n)
	case kind == opZeroes:
		lerr = v.store.WriteZeroes(off, n, zf)
	}
	o.complete(0, true)
	<-o.done
	failed := o.failed.Load()
	opPool.Put(o)

	v.mu.Lock()
	if lerr != nil {
		// The peers may now hold what this node does not: mark the range
		// for all of them so a resync settles it either way.
		for _, pe := range v.peers {
			pe.bitmap.SetRange(off, n)
		}
	}
	var perr error
	if failed != 0 {
		perr = v.peerFailuresLocked(failed, off, n)
	}
	v.endLocked(id, off, n)
	v.mu.Unlock()
	if lerr != nil {
		return lerr
	}
	return perr
}

// begin waits for the range and the activity log. It returns the range's id.
func (v *Volume) begin(off, n int64) (uint64, error) {
	v.mu.Lock()
	for {
		if v.role != Primary || v.closing {
			v.mu.Unlock()
			return 0, v.errNotPrimary()
		}
		if v.exchanging > 0 || v.ranges.overlaps(off, n) {
			v.cond.Wait()
			continue
		}
		change, err := v.al.Begin(off, n)
		if errors.Is(err, ErrALFull) || errors.Is(err, ErrALPending) {
			v.cond.Wait()
			continue
		}
		if err != nil {
			v.mu.Unlock()
			return 0, err
		}
		v.nextID++
		id := v.nextID
		v.ranges.add(off, n, id)
		if change != nil {
			v.alQueue = append(v.alQueue, change)
			seq := change.Seq
			v.mu.Unlock()
			if err := v.commitAL(seq); err != nil {
				v.mu.Lock()
				v.al.End(off, n)
				v.ranges.remove(id)
				v.cond.Broadcast()
				v.mu.Unlock()
				return 0, fmt.Errorf("activity log: %w", err)
			}
			return id, nil
		}
		v.mu.Unlock()
		return id, nil
	}
}

// commitAL makes the activity-log changes up to seq durable, in order,
// together with whatever other writers queued meanwhile (group commit).
func (v *Volume) commitAL(seq uint64) error {
	v.alMu.Lock()
	defer v.alMu.Unlock()
	v.mu.Lock()
	if seq <= v.alCommitted() {
		v.mu.Unlock()
		return nil
	}
	batch := v.alQueue
	v.alQueue = nil
	evicts := false
	for _, c := range batch {
		evicts = evicts || len(c.Evicted) > 0
	}
	if evicts {
		// Extents leave the log: what was written into them must be on
		// disk, and their bitmap bits durable, before the record that
		// stops a crash from resyncing them.
		if err := v.saveBitmapsLocked(); err != nil {
			v.alQueue = append(batch, v.alQueue...)
			v.mu.Unlock()
			return err
		}
	}
	v.mu.Unlock()
	if evicts {
		if err := v.store.Flush(); err != nil {
			v.requeueAL(batch)
			return err
		}
	}
	for i, c := range batch {
		if err := v.state.LogALChange(c); err != nil {
			v.requeueAL(batch[i:])
			return err
		}
	}
	v.mu.Lock()
	v.al.Committed(batch[len(batch)-1].Seq)
	v.alSeqDone = batch[len(batch)-1].Seq
	if v.alSeqDone-v.alCompacted > alCompactEvery {
		if err := v.state.CompactAL(v.al); err == nil {
			v.alCompacted = v.al.Seq()
		} else {
			v.log.Warn("activity log compaction failed", "err", err)
		}
	}
	v.cond.Broadcast()
	v.mu.Unlock()
	return nil
}

// alCompactEvery bounds the logged activity-log changes between snapshots.
const alCompactEvery = 1024

func (v *Volume) requeueAL(batch []*ALChange) {
	v.mu.Lock()
	v.alQueue = append(batch, v.alQueue...)
	v.mu.Unlock()
}

// alCommitted is the Seq of the newest durable change. Caller holds v.mu.
func (v *Volume) alCommitted() uint64 { return v.alSeqDone }

// dispatch decides, under v.mu, which peers get the operation: it queues
// the frame on every replicating link and marks the range in the bitmap of
// every other peer, refusing the write if a peer that must have it cannot.
func (v *Volume) dispatch(o *op, kind opKind, p []byte, off, n int64, fua bool, zf block.ZeroFlags) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	needNew := false
	for _, pe := range v.peers {
		if pe.replicating && pe.link != nil {
			continue
		}
		if pe.knownDisk == UpToDate && !v.cfg.ContinueAlone {
			return fmt.Errorf("%w: peer %s (UpToDate, %s); continue_alone is off: nothing was written", ErrPeerUnreachable, pe.name, pe.conn)
		}
		if pe.bitmapGen == 0 {
			needNew = true
		}
	}
	if needNew {
		v.newCurrentLocked()
		if err := v.persistAll(); err != nil {
			return err
		}
		v.broadcastStateLocked()
	}
	for i, pe := range v.peers {
		if !pe.replicating || pe.link == nil {
			pe.bitmap.SetRange(off, n)
			continue
		}
		var ftype wire.FrameType
		var payload []byte
		var flags wire.Flags
		switch kind {
		case opWrite:
			ftype, payload = wire.TypeWrite, p
			if fua {
				flags |= wire.FlagFUA
			}
		case opTrim:
			ftype, payload = wire.TypeTrim, marshalLength(n)
		case opZeroes:
			var zfl byte
			if zf.MayTrim {
				zfl |= zeroMayTrim
			}
			ftype, payload = wire.TypeZeroes, marshalZeroes(n, zfl)
		}
		o.remaining.Add(1)
		if pe.link.queueOp(ftype, payload, flags, off, n, o, i) {
			o.sent |= 1 << i
		} else {
			o.remaining.Add(-1)
			pe.bitmap.SetRange(off, n)
			o.failed.Or(1 << i)
		}
	}
	return nil
}

// peerFailuresLocked handles peers that did not get an operation: their
// bitmaps already hold the range (the link marked it when it failed). It
// returns the error the client gets: none if every such peer may miss
// writes.
func (v *Volume) peerFailuresLocked(failed uint32, off, n int64) error {
	var err error
	for i, pe := range v.peers {
		if failed&(1<<i) == 0 {
			continue
		}
		pe.bitmap.SetRange(off, n)
		if pe.knownDisk == UpToDate && !v.cfg.ContinueAlone && err == nil {
			err = fmt.Errorf("%w: peer %s lost during the request; continue_alone is off", ErrPeerUnreachable, pe.name)
		}
	}
	return err
}

// end releases a range taken by begin.
func (v *Volume) end(id uint64, off, n int64) {
	v.mu.Lock()
	v.endLocked(id, off, n)
	v.mu.Unlock()
}

func (v *Volume) endLocked(id uint64, off, n int64) {
	v.al.End(off, n)
	v.ranges.remove(id)
	v.cond.Broadcast()
}
