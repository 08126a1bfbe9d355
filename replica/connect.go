package replica

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/blockrep/blockrep/replica/wire"
)

// exchangeTimeout bounds the state exchange after the handshake.
const exchangeTimeout = 10 * time.Second

// stateFor builds the State this node sends to p. Caller holds v.mu.
func (v *Volume) stateFor(p *peer, leaving bool) stateMsg {
	g := v.gens
	g.Bitmap = p.bitmapGen
	if g.Bitmap != 0 {
		// The single-peer model Decide knows has the bitmap generation
		// outside History; per-peer tracking keeps every old Current in
		// History, so take it out again for this peer's view.
		var h [HistoryLen]GenID
		i := 0
		for _, x := range g.History {
			if x != g.Bitmap && x != 0 {
				h[i] = x
				i++
			}
		}
		g.History = h
	}
	return stateMsg{
		Volume:        v.cfg.Name,
		Size:          v.size,
		BlockSize:     uint32(v.cfg.BitmapBlockSize),
		Protocol:      v.cfg.Protocol,
		Policy:        v.cfg.SplitBrain,
		Role:          v.role,
		Disk:          v.disk,
		Epoch:         v.epoch,
		Gen:           g,
		WasPrimary:    v.crashed,
		ChangedBlocks: p.bitmap.Count(),
		PrimarySince:  v.primarySince,
		DiscardMyData: p.discardMyData || p.deposed,
		Leaving:       leaving,
	}
}

// side converts a State to Decide's view of one end.
func (m *stateMsg) side() Side {
	return Side{Gen: m.Gen, Disk: m.Disk, WasPrimary: m.WasPrimary, ChangedBlocks: m.ChangedBlocks, PrimarySince: m.PrimarySince, DiscardMyData: m.DiscardMyData}
}

// Attach runs a link to the named peer over conn, which has passed the
// handshake (peer: version negotiated, the session's MACs), until the link
// fails. The dialer calls it
// with first == nil: it sends its State first. The acceptor has read the
// dialer's State already (to find the volume) and passes it as first. Attach
// returns why the link ended; errStandAlone-wrapped errors mean do not
// reconnect.
func (v *Volume) Attach(peerName string, conn net.Conn, peer wire.Peer, first []byte) error {
	p, err := v.findPeer(peerName)
	if err != nil {
		_ = conn.Close()
		return err
	}
	v.mu.Lock()
	if v.closing {
		v.mu.Unlock()
		_ = conn.Close()
		return errors.New("volume closing")
	}
	old := p.link
	v.mu.Unlock()
	if old != nil {
		// The peer reconnected before this node noticed the old link die
		// (it restarted): the new connection wins.
		old.fail(errors.New("replaced by a new connection from the peer"))
		<-old.done
	}
	l := newLink(v, p, conn, peer)
	v.mu.Lock()
	if v.failed != "" {
		reason := v.failed
		v.mu.Unlock()
		sendError(l.w, conn, v.cfg.ID, "volume "+v.cfg.Name+" on this node is Diskless: its local disk failed ("+reason+")")
		_ = conn.Close()
		return fmt.Errorf("%w: refused connection from %s: the local disk failed", errStandAlone, p.name)
	}
	if p.standalone {
		reason := p.lastErr
		v.mu.Unlock()
		sendError(l.w, conn, v.cfg.ID, "volume "+v.cfg.Name+" on this node is StandAlone: "+reason)
		_ = conn.Close()
		return fmt.Errorf("%w: refused connection from %s: StandAlone", errStandAlone, p.name)
	}
	if p.link != nil {
		v.mu.Unlock()
		_ = conn.Close()
		return errors.New("another connection from the peer won the race")
	}
	p.link = l
	v.exchanging++
	mine := v.stateFor(p, false)
	v.mu.Unlock()

	peerMsg, err := l.exchange(mine, first)
	v.mu.Lock()
	var d Decision
	if err == nil {
		d, err = v.decideLocked(p, &mine, &peerMsg)
	}
	var startResync ResyncKind
	var merge, target bool
	if err == nil {
		startResync, merge, err = v.applyDecisionLocked(l, p, d, &peerMsg)
		target = p.conn == SyncTarget
	}
	v.exchanging--
	v.cond.Broadcast()
	if err != nil {
		p.lastErr = err.Error()
		if errors.Is(err, errStandAlone) {
			p.standalone = true
			p.setConn(StandAlone)
		}
		p.link = nil
		v.mu.Unlock()
		if errors.Is(err, errStandAlone) {
			v.log.Error("peer link refused", "peer", p.name, "err", err)
			sendError(l.w, conn, v.cfg.ID, err.Error())
		}
		_ = conn.Close()
		close(l.done)
		return err
	}
	p.lastErr = ""
	v.mu.Unlock()
	p.nudgeReport()

	l.takeSocket()
	l.start()
	var wg sync.WaitGroup
	wg.Go(l.sender)
	wg.Go(l.pinger)
	if startResync != NoResync {
		if merge {
			l.bitmapIn = make(chan struct{})
		}
		mode := modeCopy
		if startResync == ALResync {
			// After a crash the activity log names extents that are
			// mostly identical on both sides: compare before copying.
			mode = modeChecksum
		}
		l.startJob(func() { l.runResync(startResync, mode) })
	}
	if merge && target {
		wg.Go(l.sendBitmap)
	}
	rerr := l.receiver()
	l.fail(rerr)
	wg.Wait()
	l.jobs.Wait()
	l.teardown(context.Cause(l.ctx))
	if l.fc != nil {
		// Any goroutine may be writing the queue out (kick): close the
		// descriptor only once none is, so that it cannot be reused for
		// another connection under a writer's feet.
		l.smu.Lock()
		for l.flushing {
			l.scond.Wait()
		}
		l.smu.Unlock()
		_ = l.fc.Close()
	}
	return context.Cause(l.ctx)
}

// errStandAlone marks a link end after which the node must not reconnect
// on its own (split brain, unrelated data, a refusal).
var errStandAlone = errors.New("standalone")

// exchange sends this node's State and reads the peer's (or uses first).
func (l *link) exchange(mine stateMsg, first []byte) (stateMsg, error) {
	var peerMsg stateMsg
	_ = l.conn.SetDeadline(time.Now().Add(exchangeTimeout))
	defer l.conn.SetDeadline(time.Time{})
	if first == nil {
		if err := l.w.WriteFrame(l.header(wire.TypeState, mine.Epoch, 0, 0), mine.marshal()); err != nil {
			return peerMsg, fmt.Errorf("sending state: %w", err)
		}
		h, err := l.r.Next()
		if err != nil {
			return peerMsg, fmt.Errorf("reading the peer's state: %w", err)
		}
		b, err := l.smallPayload(h)
		if err != nil {
			return peerMsg, err
		}
		if h.Type == wire.TypeError {
			// The peer refused before comparing states (it is StandAlone
			// or busy): try again later, it may change its mind.
			return peerMsg, &errRemote{msg: string(b)}
		}
		if h.Type != wire.TypeState || h.Volume != l.v.cfg.ID {
			return peerMsg, fmt.Errorf("%w: expected the peer's State, got %v", errBadPayload, h.Type)
		}
		first = b
	} else if err := l.w.WriteFrame(l.header(wire.TypeState, mine.Epoch, 0, 0), mine.marshal()); err != nil {
		return peerMsg, fmt.Errorf("sending state: %w", err)
	}
	if err := peerMsg.unmarshal(first); err != nil {
		return peerMsg, err
	}
	return peerMsg, nil
}

// decideLocked checks that the two ends can talk at all, fences stale
// primaries by epoch, and runs Decide. Every refusal here is symmetric: the
// peer, checking the same facts, refuses too.
func (v *Volume) decideLocked(p *peer, mine, theirs *stateMsg) (Decision, error) {
	refuse := func(format string, args ...any) (Decision, error) {
		return Decision{}, fmt.Errorf("%w: %s", errStandAlone, fmt.Sprintf(format, args...))
	}
	// fence refuses a deposed primary. Standalone, the nodes then wait for
	// the operator. With a cluster they keep trying: the cluster demotes
	// the deposed one, and the next connect resyncs it.
	fence := refuse
	if v.auth != nil {
		fence = func(format string, args ...any) (Decision, error) {
			return Decision{}, fmt.Errorf(format+"; retrying until the cluster demotes it", args...)
		}
	}
	if v.auth != nil || v.promoting != 0 {
		// The cluster's epochs (and a Promote under way, whose epoch is
		// the cluster's too) fence before the roles are compared: of two
		// primaries, the older epoch's is the deposed one.
		known := max(mine.Epoch, v.promoting)
		switch {
		case theirs.Role == Primary && theirs.Epoch < known:
			return fence("peer is primary at epoch %d, older than epoch %d known here: a deposed primary (fenced)", theirs.Epoch, known)
		case mine.Role == Primary && mine.Epoch < theirs.Epoch:
			return fence("this node is primary at epoch %d but the peer knows epoch %d: this primary was deposed (fenced)", mine.Epoch, theirs.Epoch)
		}
	}
	switch {
	case theirs.Size != mine.Size:
		return refuse("volume size differs: peer %d bytes, here %d", theirs.Size, mine.Size)
	case theirs.BlockSize != mine.BlockSize:
		return refuse("bitmap_block_size differs: peer %d, here %d", theirs.BlockSize, mine.BlockSize)
	case theirs.Protocol != mine.Protocol:
		return refuse("protocol differs: peer %c, here %c", theirs.Protocol, mine.Protocol)
	case theirs.Policy != mine.Policy:
		return refuse("split_brain policy differs: peer %v, here %v", theirs.Policy, mine.Policy)
	case theirs.Role == Primary && mine.Role == Primary:
		// Not final: it resolves as soon as one of them is demoted.
		return Decision{}, errors.New("both nodes are primary: demote one (blockctl secondary)")
	case theirs.Role == Primary && theirs.Epoch < mine.Epoch:
		return fence("peer is primary at epoch %d, older than epoch %d known here: a deposed primary (fenced)", theirs.Epoch, mine.Epoch)
	case mine.Role == Primary && mine.Epoch < theirs.Epoch:
		return fence("this node is primary at epoch %d but the peer knows epoch %d: this primary was deposed (fenced)", mine.Epoch, theirs.Epoch)
	case theirs.Role == Primary && theirs.Epoch == mine.Epoch && mine.PrimarySince == mine.Epoch:
		// Epochs are counted per node in the standalone mode: two
		// promotions can land on one number. Two primaries of one epoch
		// cannot both be the legitimate one.
		return fence("peer is primary at epoch %d, at which this node was primary too: a deposed primary (fenced)", theirs.Epoch)
	case mine.Role == Primary && mine.Epoch == theirs.Epoch && theirs.PrimarySince == theirs.Epoch:
		return fence("the peer was primary at epoch %d too, this node's epoch: this primary may be deposed (fenced)", mine.Epoch)
	}
	// A secondary learns its primary's epoch. Two secondaries agree on
	// the higher one, so that the frames of a resync between them pass
	// each other's fence.
	if theirs.Epoch > v.epoch && mine.Role != Primary {
		v.epoch = theirs.Epoch
		if err := v.persistRole(); err != nil {
			return Decision{}, err
		}
	}
	d := Decide(mine.side(), theirs.side(), v.cfg.SplitBrain)
	p.decision = d.String()
	v.log.Info("connect decision", "peer", p.name, "decision", d.String(), "local", mine.Gen.String(), "peer_gen", theirs.Gen.String(),
		"local_disk", mine.Disk, "peer_disk", theirs.Disk, "peer_role", theirs.Role)
	if d.Action == BecomeSyncTarget && mine.Role == Primary {
		return refuse("the decision makes this primary a sync target (%s): demote it first", d.Reason)
	}
	if d.Action == BecomeSyncSource && theirs.Role == Primary {
		return refuse("the decision makes the primary peer a sync target (%s): demote it first", d.Reason)
	}
	switch d.Action {
	case SplitBrain:
		return refuse("%s (resolve with blockctl connect --discard-my-data on the victim)", d.Reason)
	case Unrelated:
		return refuse("unrelated data: %s", d.Reason)
	case Refuse:
		// No safe sync now (e.g. neither side has consistent data yet):
		// another peer may change that, so keep trying.
		return Decision{}, fmt.Errorf("no sync possible yet: %s", d.Reason)
	}
	return d, nil
}

// applyDecisionLocked puts the link into the state the decision says. It
// returns the resync this node runs as source (NoResync otherwise) and
// whether the bitmaps merge.
func (v *Volume) applyDecisionLocked(l *link, p *peer, d Decision, theirs *stateMsg) (ResyncKind, bool, error) {
	p.heard = true
	p.peerRole = theirs.Role
	p.peerDisk = theirs.Disk
	p.discardMyData = false
	if theirs.Role == Primary {
		// A deposed node discards its writes at the first connect to a
		// primary only.
		p.deposed = false
	}
	switch d.Action {
	case Proceed:
		if theirs.Disk != Diskless && v.disk != Diskless {
			p.bitmapGen = 0
		}
		switch {
		case v.role == Primary:
			p.knownDisk = UpToDate
		case theirs.Role == Primary && v.disk == Outdated:
			// In sync with the primary: nothing is missing here.
			v.disk = UpToDate
			p.knownDisk = UpToDate
		default:
			p.knownDisk = theirs.Disk
		}
		p.setConn(Connected)
		p.replicating = v.role == Primary
		if err := v.persistAll(); err != nil {
			return NoResync, false, err
		}
		if v.role == Primary && p.bitmap.Count() > 0 {
			// Blocks marked out of sync while in the same generation
			// (a verify, or a crash's activity log): copy them now. The
			// peer decided Proceed too: tell it, ahead of the data, that
			// it is a sync target after all.
			m := v.stateFor(p, false)
			m.StartResync = BitmapResync
			l.enqueue(l.header(wire.TypeState, v.epoch, 0, 0), m.marshal(), pendingFrame{}, false, false)
			p.setConn(SyncSource)
			p.knownDisk = Inconsistent
			if err := v.persistAll(); err != nil {
				return NoResync, false, err
			}
			return BitmapResync, false, nil
		}
		return NoResync, false, nil
	case BecomeSyncSource:
		p.setConn(SyncSource)
		p.knownDisk = Inconsistent
		p.replicating = v.role == Primary
		if d.Resync == FullResync {
			p.bitmap.SetRange(0, v.size)
		}
		if err := v.persistAll(); err != nil {
			return NoResync, false, err
		}
		return d.Resync, d.MergeBitmaps, nil
	case BecomeSyncTarget:
		p.setConn(SyncTarget)
		p.knownDisk = theirs.Disk
		v.disk = Inconsistent
		if err := v.persistAll(); err != nil {
			return NoResync, false, err
		}
		return NoResync, d.MergeBitmaps, nil
	}
	return NoResync, false, fmt.Errorf("%w: unexpected decision %v", errStandAlone, d)
}

// teardown runs once the link's goroutines stopped: every frame the peer
// did not answer leaves its range in the peer's bitmap, and ops waiting for
// the peer complete as failed.
func (l *link) teardown(cause error) {
	v, p := l.v, l.p
	// Operations this node was applying for the peer finish first: they
	// release their ranges under v.mu.
	l.amu.Lock()
	for len(l.applying) > 0 {
		l.acond.Wait()
	}
	l.amu.Unlock()
	v.mu.Lock()
	l.smu.Lock()
	pending := l.pending
	l.pending = map[uint64]pendingFrame{}
	l.closed = true
	l.smu.Unlock()
	unacked := false
	var failedOps []pendingFrame
	for _, pf := range pending {
		switch pf.kind {
		case pendApp:
			if pf.n > 0 {
				p.bitmap.SetRange(pf.off, pf.n)
				unacked = true
			}
			if pf.op != nil {
				failedOps = append(failedOps, pf)
			}
		case pendResync:
			if pf.buf != nil {
				v.pool.Put(pf.buf)
			}
		}
	}
	wasReplicating := p.replicating
	p.replicating = false
	p.link = nil
	if p.resync != nil && p.resync.Finished.IsZero() {
		p.resync.Finished = time.Now()
		p.resync.Error = cause.Error()
	}
	if p.verify != nil && p.verify.Finished.IsZero() {
		p.verify.Finished = time.Now()
		p.verify.Error = cause.Error()
	}
	if v.role == Primary && wasReplicating && unacked && p.bitmapGen == 0 {
		// Writes in flight may or may not have reached the peer: from
		// here this node's data is a new generation.
		v.newCurrentLocked()
	}
	if v.role == Primary && v.cfg.ContinueAlone && p.knownDisk == UpToDate {
		v.log.Warn("continue_alone: going on without an UpToDate peer; it is Outdated from here (unsafe without quorum)", "peer", p.name)
		p.knownDisk = Outdated
	}
	if err := v.persistAll(); err != nil {
		v.log.Error("saving state after a link loss", "err", err)
	}
	if !p.standalone {
		p.setConn(Connecting)
	} else {
		p.setConn(StandAlone)
	}
	if cause != nil && !errors.Is(cause, context.Canceled) {
		p.lastErr = cause.Error()
	}
	if errors.Is(cause, wire.ErrTampered) {
		// Not a network fault: someone on the path changed the stream.
		v.log.Error("peer link down: a frame failed its MAC (changed, replayed or dropped in transit)", "peer", p.name, "reason", cause)
	} else {
		v.log.Warn("peer link down", "peer", p.name, "reason", cause)
	}
	v.cond.Broadcast()
	v.mu.Unlock()
	p.nudgeReport()
	// Ops finish under v.mu themselves: complete them only now.
	for _, pf := range failedOps {
		pf.op.complete(pf.idx, false)
	}
	close(l.done)
}
