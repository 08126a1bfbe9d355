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
//  1. begin: with an Authority, check the lease (wait for a renewal, or
//     fail with ErrFenced, per the fence mode); wait until no overlapping
//     operation runs and no connect exchange is in progress; activity-log
//     Begin (persisting the change, in Seq order, when a cold extent
//     becomes hot).
//  2. dispatch: for a peer that cannot get the write and must have it (an
//     UpToDate peer): standalone, refuse the write (ErrPeerUnreachable)
//     unless continue_alone is on; with an Authority, wait, nothing
//     written yet, until the peer replicates again or the cluster
//     committed it below UpToDate (mayMissLocked), and the lease holds.
//     Then mark the range in the bitmap of every peer that will not get it
//     and queue the frame on every replicating link — all under v.mu, so
//     that a link going up or down sees each write either sent or in the
//     bitmap.
//  3. the local write runs while the links send.
//  4. wait for the peers per protocol (C: durable ack, B: received, A:
//     sent); a link that fails first leaves the range in its bitmap. If
//     that peer must have the write: standalone, it fails with
//     ErrPeerUnreachable (continue_alone off); with an Authority its
//     acknowledgement waits, in a goroutine of the volume, for the
//     cluster's commit (or ends with ErrNotPrimary on a demotion, with
//     ErrFenced once the lease ran out in FenceError mode).
//  5. end: activity-log End, release the range.
//
// A flush follows steps 1 (lease), 2 (with an Authority only) and 4.

// opKind is what an operation does.
type opKind uint8

const (
	opWrite opKind = iota
	opTrim
	opZeroes
)

// op is one application request on its way through the peers. It is pooled.
// It completes when its last participant (the local store or a peer)
// reports, in whichever goroutine that is: the caller, a link's receiver or
// the goroutine that wrote its frame out. Completion must never run under
// v.mu or a link's lock: it takes v.mu itself.
type op struct {
	remaining atomic.Int32
	failed    atomic.Uint32 // bit i: peers[i] did not get it
	sent      uint32        // bit i: queued on peers[i]'s link

	v      *Volume
	id     uint64 // the op's range in v.ranges (0: flush, no range)
	off, n int64
	lerr   error       // the local part's error
	cb     func(error) // the caller's completion
}

var opPool = sync.Pool{New: func() any { return new(op) }}

func newOp(v *Volume, cb func(error)) *op {
	o := opPool.Get().(*op)
	o.failed.Store(0)
	o.sent = 0
	o.remaining.Store(1) // the local part
	o.v, o.cb = v, cb
	return o
}

// complete reports one participant's outcome; the last one finishes the op.
func (o *op) complete(peerIdx int, ok bool) {
	if !ok {
		o.failed.Or(1 << peerIdx)
	}
	if o.remaining.Add(-1) == 0 {
		o.finish()
	}
}

// finish settles the bookkeeping and calls the caller back. It never
// blocks: it runs in link goroutines. An op that must wait for the
// cluster's commit that a peer it missed is no longer UpToDate hands its
// completion to a goroutine of the volume.
func (o *op) finish() {
	v, failed, lerr, cb := o.v, o.failed.Load(), o.lerr, o.cb
	var err error
	if o.id != 0 || lerr != nil || failed != 0 {
		v.mu.Lock()
		if lerr != nil {
			// The peers may now hold what this node does not: mark the
			// range for all of them so a resync settles it either way.
			for _, pe := range v.peers {
				pe.bitmap.SetRange(o.off, o.n)
			}
			// A failed disk is detached (and recorded so in meta)
			// before the caller hears of the failure.
			v.localErrorLocked(lerr)
		}
		if failed != 0 {
			var wait bool
			wait, err = v.peerFailuresLocked(failed, o.off, o.n)
			if wait && lerr == nil {
				if !v.closing {
					id, off, n := o.id, o.off, o.n
					*o = op{}
					opPool.Put(o)
					v.wg.Go(func() { v.awaitCommit(failed, id, off, n, cb) })
					v.mu.Unlock()
					return
				}
				err = v.errNotPrimary()
			}
		}
		if o.id != 0 {
			v.endLocked(o.id, o.off, o.n)
		}
		v.mu.Unlock()
	}
	if lerr != nil {
		err = lerr
	}
	*o = op{}
	opPool.Put(o)
	cb(err)
}

// awaitCommit finishes an op whose peers in failed must be committed below
// UpToDate before it is acknowledged: it releases the range once they are
// (or the wait ends otherwise) and calls cb.
func (v *Volume) awaitCommit(failed uint32, id uint64, off, n int64, cb func(error)) {
	v.mu.Lock()
	err := v.awaitPeersLocked(failed)
	if id != 0 {
		v.endLocked(id, off, n)
	}
	v.mu.Unlock()
	cb(err)
}

// wait runs fn with a completion and waits for it.
func wait(fn func(cb func(error))) error {
	ch := make(chan error, 1)
	fn(func(err error) { ch <- err })
	return <-ch
}

// errReadOnlySecondary is what writes to a secondary get.
func (v *Volume) errNotPrimary() error {
	return fmt.Errorf("%w: %w (volume %q)", block.ErrReadOnly, ErrNotPrimary, v.cfg.Name)
}

// WriteAt writes p at off locally and on every replicating peer.
func (v *Volume) WriteAt(p []byte, off int64, fua bool) error {
	return wait(func(cb func(error)) { v.submit(opWrite, p, off, int64(len(p)), fua, block.ZeroFlags{}, cb, false) })
}

// WriteAtAsync is WriteAt that returns once the local write is done and
// the peers' copies are on their way; done is called, exactly once, when
// the write completes per the protocol. p must stay unchanged until then.
// The NBD server calls it from a connection's reader, so that local writes
// are issued by one goroutine (as for a local store) and the reply is sent
// by whichever goroutine sees the last acknowledgement.
func (v *Volume) WriteAtAsync(p []byte, off int64, fua bool, done func(error)) {
	v.submit(opWrite, p, off, int64(len(p)), fua, block.ZeroFlags{}, done, true)
}

// Unplug sends the peers' copies that WriteAtAsync held back.
func (v *Volume) Unplug() {
	for _, p := range v.peers {
		v.mu.Lock()
		l := p.link
		v.mu.Unlock()
		if l != nil {
			l.kick()
		}
	}
}

// Trim trims locally and on the peers.
func (v *Volume) Trim(off, length int64) error {
	return wait(func(cb func(error)) { v.submit(opTrim, nil, off, length, false, block.ZeroFlags{}, cb, false) })
}

// WriteZeroes zeroes locally and on the peers. A Fast request that the local
// store cannot do quickly fails before anything is sent.
func (v *Volume) WriteZeroes(off, length int64, flags block.ZeroFlags) error {
	return wait(func(cb func(error)) { v.submit(opZeroes, nil, off, length, false, flags, cb, false) })
}

// Flush makes every completed write durable locally and on every
// replicating peer. With an Authority it is fenced by the lease like a
// write, and waits like one for an UpToDate peer it cannot reach.
func (v *Volume) Flush() error {
	v.mu.Lock()
	if v.failed != "" {
		err := v.errDiskFailed()
		v.mu.Unlock()
		return err
	}
	if v.auth != nil {
		err := v.fenceLocked()
		if err == nil && v.role == Primary {
			err = v.admitLocked()
		}
		if err != nil {
			v.mu.Unlock()
			return err
		}
	}
	if v.role != Primary {
		v.mu.Unlock()
		err := v.store.Flush()
		if err != nil {
			v.localError(err)
		}
		return err
	}
	ch := make(chan error, 1)
	o := newOp(v, func(err error) { ch <- err })
	var kick [MaxPeers]*link
	for i, p := range v.peers {
		if p.replicating && p.link != nil {
			o.remaining.Add(1)
			if queued, _ := p.link.queueOp(wire.TypeFlush, nil, 0, 0, 0, o, i); queued {
				o.sent |= 1 << i
				kick[i] = p.link
			} else {
				o.remaining.Add(-1)
				o.failed.Or(1 << i)
			}
		}
	}
	v.mu.Unlock()
	kickAll(&kick, len(v.peers))
	o.lerr = v.store.Flush()
	o.complete(0, true)
	return <-ch
}

// submit runs one write, trim or write-zeroes through the steps above and
// calls cb with the outcome. With plugged, a frame that joins others
// already queued waits for Unplug (the first of a burst goes at once, so
// a lone write pays no extra latency).
func (v *Volume) submit(kind opKind, p []byte, off, n int64, fua bool, zf block.ZeroFlags, cb func(error), plugged bool) {
	if off < 0 || n < 0 || off+n > v.size {
		cb(fmt.Errorf("%w: [%d, %d) on a %d-byte volume", block.ErrOutOfRange, off, off+n, v.size))
		return
	}
	v.lastAppIO.Store(time.Now().UnixNano())
	id, err := v.begin(off, n)
	if err != nil {
		cb(err)
		return
	}
	// A fast zero that the local store cannot do quickly must fail before
	// anything reaches the peers, so it runs locally first; the peers
	// zero as they can.
	localFirst := kind == opZeroes && zf.Fast
	var lerr error
	if localFirst {
		if lerr = v.store.WriteZeroes(off, n, zf); errors.Is(lerr, block.ErrNotFast) {
			v.end(id, off, n)
			cb(lerr)
			return
		}
	}
	o := newOp(v, cb)
	o.id, o.off, o.n = id, off, n
	var kick [MaxPeers]*link
	if err := v.dispatch(o, kind, p, off, n, fua, zf, plugged, &kick); err != nil {
		*o = op{}
		opPool.Put(o)
		v.mu.Lock()
		if localFirst {
			for _, pe := range v.peers {
				pe.bitmap.SetRange(off, n)
			}
		}
		v.endLocked(id, off, n)
		v.mu.Unlock()
		cb(err)
		return
	}
	// The peers' copies go out first: the network round trip is the long
	// pole, so it starts before the local write.
	kickAll(&kick, len(v.peers))
	switch {
	case localFirst:
	case kind == opWrite:
		lerr = v.store.WriteAt(p, off, fua)
	case kind == opTrim:
		lerr = v.store.Trim(off, n)
	case kind == opZeroes:
		lerr = v.store.WriteZeroes(off, n, zf)
	}
	o.lerr = lerr
	o.complete(0, true)
}

// begin waits for the range and the activity log. It returns the range's id.
func (v *Volume) begin(off, n int64) (uint64, error) {
	v.mu.Lock()
	for {
		if v.role != Primary || v.closing {
			v.mu.Unlock()
			return 0, v.errNotPrimary()
		}
		if v.failed != "" {
			err := v.errDiskFailed()
			v.mu.Unlock()
			return 0, err
		}
		if !v.leaseValid() {
			if err := v.leaseWaitLocked(); err != nil {
				v.mu.Unlock()
				return 0, err
			}
			continue
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
			v.localError(err)
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
// every other peer, refusing the write (or, with an Authority, waiting) if
// a peer that must have it cannot. With plugged, only links on which this
// frame is the first of a burst are put in kick; the others go out at
// Unplug.
func (v *Volume) dispatch(o *op, kind opKind, p []byte, off, n int64, fua bool, zf block.ZeroFlags, plugged bool, kick *[MaxPeers]*link) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.admitLocked(); err != nil {
		return err
	}
	needNew := false
	for _, pe := range v.peers {
		if !(pe.replicating && pe.link != nil) && pe.bitmapGen == 0 {
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
		if queued, first := pe.link.queueOp(ftype, payload, flags, off, n, o, i); queued {
			o.sent |= 1 << i
			if first || !plugged {
				kick[i] = pe.link
			}
		} else {
			o.remaining.Add(-1)
			pe.bitmap.SetRange(off, n)
			o.failed.Or(1 << i)
		}
	}
	return nil
}

// admitLocked returns once every peer that will not get an operation may
// miss it (mayMissLocked). Standalone, a peer that must have it makes the
// operation fail with ErrPeerUnreachable. With an Authority the operation
// waits for the peer to replicate again or for the reporter's commit, as
// long as the volume stays primary and the lease holds (FenceSuspend: the
// wait goes on through an expiry). Caller holds v.mu and, when called from
// dispatch, the operation's range.
func (v *Volume) admitLocked() error {
	for waited := false; ; waited = true {
		if waited {
			if v.role != Primary || v.closing {
				return v.errNotPrimary()
			}
			if v.exchanging > 0 {
				// A connect exchange snapshots the bitmaps and
				// generations: no write decides its peers meanwhile.
				v.cond.Wait()
				continue
			}
		}
		if !v.leaseValid() {
			if err := v.leaseWaitLocked(); err != nil {
				return err
			}
			continue
		}
		var blocked *peer
		for _, pe := range v.peers {
			if !(pe.replicating && pe.link != nil) && !v.mayMissLocked(pe) {
				blocked = pe
				break
			}
		}
		if blocked == nil {
			return nil
		}
		if v.auth == nil {
			return fmt.Errorf("%w: peer %s (UpToDate, %s); continue_alone is off: nothing was written", ErrPeerUnreachable, blocked.name, blocked.conn)
		}
		blocked.nudgeReport()
		v.peerWaits++
		v.cond.Wait()
		v.peerWaits--
	}
}

// peerFailuresLocked handles peers that did not get an operation: their
// bitmaps already hold the range (the link marked it when it failed). It
// returns the error the client gets: none if every such peer may miss
// writes. With an Authority it returns wait instead when one may not yet:
// the caller waits for the cluster (awaitPeersLocked).
func (v *Volume) peerFailuresLocked(failed uint32, off, n int64) (wait bool, err error) {
	for i, pe := range v.peers {
		if failed&(1<<i) == 0 {
			continue
		}
		pe.bitmap.SetRange(off, n)
		if v.mayMissLocked(pe) {
			continue
		}
		if v.auth != nil {
			wait = true
			pe.nudgeReport()
		} else if err == nil {
			err = fmt.Errorf("%w: peer %s lost during the request; continue_alone is off", ErrPeerUnreachable, pe.name)
		}
	}
	return wait, err
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

// kickAll writes out the frames just queued on each link (see link.kick).
func kickAll(links *[MaxPeers]*link, n int) {
	for _, l := range links[:n] {
		if l != nil {
			l.kick()
		}
	}
}
