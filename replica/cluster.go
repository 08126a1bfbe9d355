package replica

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// A replica under a cluster
//
// Without an Authority a Volume decides alone (the standalone mode):
// SetRole(Primary) counts its own epochs, and a primary that loses an
// UpToDate peer refuses writes (ErrPeerUnreachable) or, with the unsafe
// continue_alone, marks the peer Outdated itself and goes on.
//
// With an Authority (VolumeConfig.Authority) the Raft cluster decides:
//
//   - Epochs come from the cluster: Promote(epoch) makes the volume primary
//     at exactly that epoch (a link to a peer that is still primary is cut
//     first: the cluster deposed it), Demote(deposed) steps down.
//     SetRole(Primary) is refused, and a configured role of primary is
//     ignored at Open. A primary of an older epoch is refused at connect
//     ("fenced"), without going StandAlone: the link is retried until the
//     cluster demoted it.
//   - A peer leaves the UpToDate set only through a commit (invariant 2).
//     Each peer has a reporter goroutine that, while the volume is primary,
//     commits the peer's disk state through Authority.ReportPeerDisk
//     whenever it differs from what it last committed at the current
//     epoch: UpToDate while the peer receives every write in sync,
//     Inconsistent while it is a resync target (or never held data as far
//     as this node knows), Outdated otherwise. Only after a commit below
//     UpToDate does the node record the peer so (PeerStatus.Disk).
//   - A write, trim, zeroes or flush that a peer does not get is
//     acknowledged only once the cluster committed, at the current epoch, a
//     state below UpToDate for that peer, with no report of UpToDate in
//     flight and the peer not recorded UpToDate here (mayMissLocked).
//     Until then it waits: before anything is written if the peer was
//     already unreachable (and goes to the peer if it replicates again
//     meanwhile), after the local write if the link dropped under it (the
//     range is in the peer's bitmap either way). Reports are serial per
//     peer, so an UpToDate report that raced a link loss is followed by
//     the Outdated one before a write waiting on it is released. A primary
//     without quorum cannot commit, so it cannot continue alone.
//   - The primary serves I/O only while its lease lasts (SetLease,
//     invariant 4). Once it ran out, I/O waits for a renewal
//     (FenceSuspend) or fails with ErrFenced (FenceError), and so do
//     writes waiting for a commit in FenceError mode. A secondary is not
//     fenced.

// Authority is the cluster's word on the replicas of a volume: the Raft
// group that records each replica's disk state.
type Authority interface {
	// ReportPeerDisk commits, through quorum, that peer's replica of volume
	// is disk, on behalf of this node as the primary at epoch. It returns
	// nil only once the commit landed; an error (no quorum, a stale epoch,
	// ctx done) means it may or may not have landed.
	ReportPeerDisk(ctx context.Context, volume, peer string, epoch uint64, disk DiskState) error
}

// FenceMode is what a primary does with I/O once its lease ran out.
type FenceMode uint8

const (
	// FenceSuspend holds I/O until the lease is renewed (SetLease), the
	// volume is demoted (then ErrNotPrimary) or closed. Clients see a slow
	// device rather than errors: the default.
	FenceSuspend FenceMode = iota
	// FenceError fails I/O at once with an error wrapping ErrFenced.
	FenceError
)

var fenceModeNames = [...]string{FenceSuspend: "suspend", FenceError: "error"}

// String returns the mode's configuration name.
func (m FenceMode) String() string {
	if int(m) < len(fenceModeNames) {
		return fenceModeNames[m]
	}
	return "FenceMode(" + strconv.Itoa(int(m)) + ")"
}

// ParseFenceMode returns the mode named s: exactly "suspend" or "error".
func ParseFenceMode(s string) (FenceMode, error) {
	for m, name := range fenceModeNames {
		if s == name {
			return FenceMode(m), nil
		}
	}
	return FenceSuspend, fmt.Errorf("unknown fence mode %q (allowed: suspend, error)", s)
}

// ErrFenced: the primary's lease ran out (it lost quorum for longer than
// the lease) and the volume is configured to fail I/O rather than suspend
// it (FenceError). The operation was not acknowledged. Nothing was written,
// except by a write that had already gone out and was waiting for the
// cluster's commit about a peer that missed it: it may be on the local disk
// (its blocks are marked out of sync for that peer).
var ErrFenced = errors.New("replica: lease ran out (no quorum): I/O fenced")

func (v *Volume) errFenced() error {
	return fmt.Errorf("%w (volume %q)", ErrFenced, v.cfg.Name)
}

// promoteGrace is how long Promote waits for a linked peer that is still
// primary to say it stepped down, before it cuts the link as a deposed
// primary's.
const promoteGrace = 500 * time.Millisecond

// primaryPeerLinkedLocked reports whether a linked peer still says it is
// primary. Caller holds v.mu.
func (v *Volume) primaryPeerLinkedLocked() bool {
	for _, p := range v.peers {
		if p.link != nil && p.peerRole == Primary {
			return true
		}
	}
	return false
}

// Reporter timing.
const (
	reportTimeout = 2 * time.Second        // one ReportPeerDisk call
	reportRetry   = 150 * time.Millisecond // after a failed call
	reportPoll    = 500 * time.Millisecond // without a nudge
	reportLogGap  = 10 * time.Second       // between logged failures
)

// clusterRecord is a peer's disk state as this node last committed it.
type clusterRecord struct {
	ok    bool
	epoch uint64
	disk  DiskState
}

// SetLease lets the primary serve I/O until until (by the monotonic clock
// when until carries a reading, as time.Now().Add does). The cluster calls
// it whenever quorum confirms this node's leadership. Only a volume with an
// Authority is fenced by it: one without ignores the lease. A volume with
// an Authority has no lease until the first call, and a demotion clears it.
func (v *Volume) SetLease(until time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	wasFenced := v.auth != nil && v.role == Primary && !v.leaseValid()
	v.leaseUntil = until
	if v.leaseTimer != nil {
		v.leaseTimer.Stop()
		v.leaseTimer = nil
	}
	if rem := time.Until(until); rem > 0 && !v.closing && v.auth != nil {
		// Waiters that end on an expired lease (FenceError) need a wake-up
		// when it runs out.
		v.leaseTimer = time.AfterFunc(rem, v.leaseExpired)
		if wasFenced {
			v.log.Info("lease renewed: serving I/O again", "remaining", rem.Round(time.Millisecond))
		}
	}
	v.cond.Broadcast()
}

// leaseExpired wakes everything that waits with the lease in mind.
func (v *Volume) leaseExpired() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.role == Primary && !v.closing && !v.leaseValid() {
		v.log.Warn("lease ran out (no quorum): I/O fenced", "fence", v.cfg.Fence)
	}
	v.cond.Broadcast()
}

// leaseValid reports whether the lease allows I/O now; always with no
// Authority. Caller holds v.mu.
func (v *Volume) leaseValid() bool {
	return v.auth == nil || time.Now().Before(v.leaseUntil)
}

// leaseRemaining is how long the lease still lasts (<= 0: ran out). Caller
// holds v.mu.
func (v *Volume) leaseRemaining() time.Duration { return time.Until(v.leaseUntil) }

// fenceLocked waits out, or refuses, I/O on a primary whose lease ran out.
// A secondary is not fenced; an I/O that waited as primary and finds the
// volume demoted gets ErrNotPrimary. Caller holds v.mu.
func (v *Volume) fenceLocked() error {
	for waited := false; ; waited = true {
		switch {
		case v.role != Primary && waited:
			return v.errNotPrimary()
		case v.role != Primary, v.leaseValid():
			return nil
		case v.closing:
			return v.errNotPrimary()
		}
		if err := v.leaseWaitLocked(); err != nil {
			return err
		}
	}
}

// leaseWaitLocked is what I/O does on a primary whose lease ran out: with
// FenceError it fails with ErrFenced; with FenceSuspend it waits for the
// next change (a renewal, a demotion, Close), after which the caller checks
// again. Caller holds v.mu.
func (v *Volume) leaseWaitLocked() error {
	if v.cfg.Fence == FenceError {
		return v.errFenced()
	}
	v.fenceWaits++
	v.cond.Wait()
	v.fenceWaits--
	return nil
}

// Promote makes the volume primary at the cluster's epoch, which must be
// newer than any this node knows. A link to a peer that is primary is cut
// first (the cluster deposed that peer; while the promotion runs, a primary
// of an older epoch cannot connect); then the checks and steps of a
// promotion run as for SetRole(Primary), force promoting an Outdated disk.
// Promoting a primary adopts the newer epoch.
func (v *Volume) Promote(epoch uint64, force bool) error {
	v.mu.Lock()
	switch {
	case v.closing:
		v.mu.Unlock()
		return fmt.Errorf("%w: volume %q is closing", ErrState, v.cfg.Name)
	case epoch <= v.epoch:
		v.mu.Unlock()
		return fmt.Errorf("%w: promote at epoch %d: this node knows epoch %d already (a promotion needs a newer one)", ErrState, epoch, v.epoch)
	case v.promoting != 0:
		v.mu.Unlock()
		return fmt.Errorf("%w: a promotion at epoch %d is running", ErrState, v.promoting)
	case v.role == Primary:
		defer v.mu.Unlock()
		prev, prevSince := v.epoch, v.primarySince
		v.epoch, v.primarySince = epoch, epoch
		if err := v.persistRole(); err != nil {
			v.epoch, v.primarySince = prev, prevSince
			return err
		}
		v.log.Info("role primary at a new epoch", "epoch", epoch, "previous", prev)
		v.broadcastStateLocked()
		v.nudgeReportersLocked()
		return nil
	}
	v.promoting = epoch
	// A primary that stepped down for a switchover tells its peers over
	// the link; the cluster may promote this node before that word has
	// arrived. Give it a moment rather than cut a link in sync (which
	// would cost a reconnect and a resync).
	deadline := time.Now().Add(promoteGrace)
	for v.primaryPeerLinkedLocked() && time.Now().Before(deadline) {
		v.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		v.mu.Lock()
	}
	var links []*link
	for _, p := range v.peers {
		if p.link != nil && p.peerRole == Primary {
			links = append(links, p.link)
		}
	}
	v.mu.Unlock()
	for _, l := range links {
		v.log.Warn("cutting the link to a deposed primary", "peer", l.p.name, "epoch", epoch)
		l.fail(fmt.Errorf("the cluster promoted %s at epoch %d: this peer is a deposed primary", v.cfg.Local, epoch))
		<-l.done
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.promoting = 0
	for _, l := range links {
		if p := l.p; p.conn == Connecting || p.conn == StandAlone {
			// No link decided since: what the deposed peer is now is
			// unknown. (A new link still in its exchange carries the
			// old role until it is decided; it is refused anyway.)
			p.heard, p.peerRole = false, Secondary
		}
	}
	if epoch <= v.epoch {
		return fmt.Errorf("%w: promote at epoch %d: this node learned epoch %d meanwhile", ErrState, epoch, v.epoch)
	}
	return v.becomePrimary(force, epoch)
}

// Demote makes the volume secondary: writes in flight finish (or, waiting
// for the cluster, fail with ErrNotPrimary) and the store is flushed; the
// lease is cleared. With deposed (the cluster gave the volume to another
// node while this one was cut off), writes of this node that never reached
// the peers may diverge from the new primary: the next connect to a primary
// makes this node the target of a bitmap resync that covers both sides'
// changes (its own bitmap merged into the primary's) instead of ending in
// a split brain (it asks to discard its data, as Connect's discardMyData
// does, on every connect until one to a primary succeeded). It also
// applies to a volume that is secondary already (restarted after a crash
// as primary), unless it already follows a primary. The mark is not
// persisted: after a restart, Demote(true) again. The disk state stays:
// whether this replica may be promoted is the cluster's record (a peer it
// missed acknowledged writes of is Outdated there).
func (v *Volume) Demote(deposed bool) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.demoteLocked(deposed)
}

// markDeposedLocked prepares the next connect to a primary peer. Caller
// holds v.mu and persists.
func (v *Volume) markDeposedLocked() {
	for _, p := range v.peers {
		if p.link != nil && p.peerRole == Primary && (p.conn == Connected || p.conn == SyncTarget) {
			// A secondary that already follows a primary: its data is
			// that primary's, or becoming it. Nothing to discard.
			v.log.Info("deposed: already following the primary", "peer", p.name)
			return
		}
	}
	for _, p := range v.peers {
		p.deposed = true
	}
	v.log.Warn("deposed by the cluster: this node's unreplicated writes are discarded at the next connect to the primary")
}

// nudgeReport wakes the peer's reporter.
func (p *peer) nudgeReport() {
	select {
	case p.report <- struct{}{}:
	default:
	}
}

// nudgeReportersLocked wakes every reporter.
func (v *Volume) nudgeReportersLocked() {
	for _, p := range v.peers {
		p.nudgeReport()
	}
}

// clusterDiskLocked is the disk state the cluster should record for p while
// this node is primary. Caller holds v.mu.
func (v *Volume) clusterDiskLocked(p *peer) DiskState {
	switch {
	case p.link != nil && p.replicating && (p.conn == Connected || p.conn == VerifySource) && p.knownDisk == UpToDate:
		return UpToDate
	case p.knownDisk.hasData():
		return Outdated
	default:
		// A resync target, or a peer that never held this volume's data
		// as far as this node knows: claiming Outdated would make it a
		// (forced) promotion candidate.
		return Inconsistent
	}
}

// mayMissLocked reports whether the primary may acknowledge an operation
// that p did not get. Without an Authority: unless p is UpToDate
// (continue_alone: always). With one: only once the cluster committed, at
// this epoch, a state below UpToDate for p, and no report that may raise it
// is in flight. Caller holds v.mu.
func (v *Volume) mayMissLocked(p *peer) bool {
	if v.auth == nil {
		return p.knownDisk != UpToDate || v.cfg.ContinueAlone
	}
	if p.knownDisk == UpToDate || p.reporting && p.reportingDisk == UpToDate {
		return false
	}
	c := p.cluster
	return c.ok && c.epoch == v.epoch && c.disk < UpToDate
}

// awaitPeersLocked waits until every peer in mask may miss an operation
// that already ran locally (see op.finish). Caller holds v.mu.
func (v *Volume) awaitPeersLocked(mask uint32) error {
	for {
		if v.role != Primary || v.closing {
			return v.errNotPrimary()
		}
		var blocked *peer
		for i, p := range v.peers {
			if mask&(1<<i) != 0 && !v.mayMissLocked(p) {
				blocked = p
				break
			}
		}
		if blocked == nil {
			return nil
		}
		if v.cfg.Fence == FenceError && !v.leaseValid() {
			return v.errFenced()
		}
		blocked.nudgeReport()
		v.peerWaits++
		v.cond.Wait()
		v.peerWaits--
	}
}

// reportDueLocked returns the state to commit for p, if one is due: the
// volume is primary and the state differs from what was last committed at
// this epoch. A primary whose disk failed reports nothing: it
// acknowledges nothing any more, so it never needs a peer out of the
// UpToDate set, and outdating the peers that lost their link to it would
// leave the cluster no replica to hand the volume to. Caller holds v.mu.
func (v *Volume) reportDueLocked(p *peer) (DiskState, uint64, bool) {
	if v.role != Primary || v.closing || v.failed != "" {
		return 0, 0, false
	}
	want := v.clusterDiskLocked(p)
	if c := p.cluster; c.ok && c.epoch == v.epoch && c.disk == want {
		return 0, 0, false
	}
	return want, v.epoch, true
}

// reporter commits p's disk state through the Authority, one report at a
// time, until the volume closes.
func (v *Volume) reporter(p *peer) {
	var failures int
	var lastLog time.Time
	for {
		v.mu.Lock()
		want, epoch, due := v.reportDueLocked(p)
		if due {
			p.reporting, p.reportingDisk = true, want
		}
		v.mu.Unlock()
		if !due {
			select {
			case <-p.report:
			case <-time.After(reportPoll):
			case <-v.ctx.Done():
				return
			}
			continue
		}
		ctx, cancel := context.WithTimeout(v.ctx, reportTimeout)
		err := v.auth.ReportPeerDisk(ctx, v.cfg.Name, p.name, epoch, want)
		cancel()
		v.mu.Lock()
		p.reporting = false
		if err == nil {
			p.cluster = clusterRecord{ok: true, epoch: epoch, disk: want}
			// The peer may have come back in sync while the report ran:
			// then it stays UpToDate here, and the next report says so.
			if want < UpToDate && p.knownDisk == UpToDate && v.clusterDiskLocked(p) < UpToDate {
				p.knownDisk = want
				if perr := v.persistAll(); perr != nil {
					v.log.Error("saving a peer's committed disk state", "peer", p.name, "err", perr)
				}
			}
		}
		v.cond.Broadcast()
		v.mu.Unlock()
		if err == nil {
			v.log.Info("cluster committed peer disk state", "peer", p.name, "disk", want, "epoch", epoch)
			failures = 0
			continue
		}
		if v.ctx.Err() != nil {
			return
		}
		failures++
		if time.Since(lastLog) >= reportLogGap {
			v.log.Warn("cannot commit a peer's disk state through the cluster; writes it misses wait",
				"peer", p.name, "disk", want, "epoch", epoch, "failures", failures, "err", err)
			lastLog = time.Now()
		}
		select {
		case <-time.After(reportRetry):
		case <-v.ctx.Done():
			return
		}
	}
}
