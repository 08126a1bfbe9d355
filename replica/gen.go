package replica

import (
	"fmt"
	"strconv"
	"strings"
)

// Generation identifiers
//
// Every replica of a volume carries a small record of which "generation" of
// the data it holds. When two data nodes connect they exchange these records,
// and Decide turns the pair into the answer to three questions: is there
// anything to copy, in which direction, and may it be a bitmap resync or must
// it be a full one. The same records detect a split brain (both sides wrote
// while apart) and unrelated data (a disk of some other volume). The idea is
// DRBD's generation identifiers; the rules below are this package's own.
//
// A generation is named by a random 64-bit GenID. The record holds:
//
//   - Current: the generation of the data on this disk now.
//   - Bitmap: non-zero while this side tracks, in its out-of-sync bitmap,
//     the blocks it changed since generation Bitmap, the one the absent peer
//     last saw. It is the anchor that makes a bitmap resync possible: if the
//     peer's Current equals our Bitmap, our bitmap names every block that
//     can differ.
//   - History: older generations this side went through, newest first. They
//     prove ancestry beyond what a bitmap covers: a peer still at one of them
//     is behind us, but by more than our bitmap records, so it needs a full
//     sync.
//
// How generations evolve (each a pure method returning the new record):
//
//   - NewCurrent: a primary is about to write without its peer (it lost the
//     peer while primary, or was promoted while the peer was away). The data
//     leaves the generation the peer knows, so a fresh Current is drawn and,
//     if this side was not tracking yet, the old Current becomes Bitmap.
//   - InSync: the two sides are known identical (a resync finished, or they
//     connected in sync). Bitmap tracking ends: Bitmap moves to History.
//   - ResyncDone: a resync target finished; it adopts the source's record.
//
// The persistence order at the end of a resync matters: the target persists
// ResyncDone first, the source persists InSync only after the target has
// reported its record durable. A crash between the two steps then leaves
// either "target still at source.Bitmap" (a bitmap resync again, with an
// almost empty bitmap) or "equal Current, source still has a Bitmap" (in
// sync, Decide says Proceed and both call InSync). The other order would leave
// the target's generation only in the source's History and force a full
// sync: the unexplained full resyncs DRBD users complain about.
//
// Limits, on purpose:
//   - History holds HistoryLen entries. Generations older than that are
//     forgotten, so two replicas that diverged very long ago can look
//     Unrelated; that errs towards refusing, never towards overwriting.
//   - A Generations record describes the relation to one peer. A primary
//     with several secondaries keeps one Bitmap per peer (the Current is
//     shared); Decide is called once per peer with that peer's view.
//   - Both nodes must run Decide with the same SplitBrainPolicy; the peer
//     protocol should exchange the policy (or the decision) at connect and
//     disconnect on disagreement, or both could pick themselves as source.

// HistoryLen is the number of past generations a replica remembers.
const HistoryLen = 4

// GenID names one generation of a volume's data. Values are random (drawn
// by the caller, e.g. from crypto/rand) so that two nodes that diverge never
// pick the same one; 0 means "none".
type GenID uint64

// String formats the identifier as lowercase hexadecimal ("0" for none), the
// form used in Decision reasons and in the test scenario files.
func (g GenID) String() string { return strconv.FormatUint(uint64(g), 16) }

// Generations is the generation record one replica persists in its metadata.
// The zero value is a replica that never held data (a new volume).
type Generations struct {
	// Current is the generation of the data on this disk; 0 for a disk
	// that never held data of this volume.
	Current GenID
	// Bitmap is the generation since which this side's out-of-sync bitmap
	// records every block it changed; 0 when not tracking.
	Bitmap GenID
	// History lists earlier generations, newest first, zero-padded.
	History [HistoryLen]GenID
}

// String formats the record as "cur=X bm=Y hist=A,B" ("hist=-" when empty),
// the form used in scenario files and logs.
func (g Generations) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cur=%v bm=%v hist=", g.Current, g.Bitmap)
	n := 0
	for _, h := range g.History {
		if h == 0 {
			continue
		}
		if n > 0 {
			b.WriteByte(',')
		}
		b.WriteString(h.String())
		n++
	}
	if n == 0 {
		b.WriteByte('-')
	}
	return b.String()
}

// NewCurrent returns the record of a primary that starts writing while its
// peer cannot receive the writes (it lost the peer while primary, or was
// promoted without it). fresh must be a new random identifier: it names the
// data that will now differ from what the peer has.
//
// If the side was not tracking (Bitmap == 0), the old Current becomes the
// Bitmap: it is what the peer still holds, and from now on every write sets
// bits in the bitmap. If it was already tracking (a second promotion, or a
// second disconnect, before the peer came back), Bitmap stays: the bitmap
// still counts from the generation the peer has, which is what a bitmap
// resync needs, and the intermediate Current goes to History so that the
// lineage stays provable.
//
// NewCurrent panics if fresh is 0 or already appears in the record: either
// would make unrelated data look related (or a new volume look empty), so it
// is a caller bug that must not reach the disk.
func (g Generations) NewCurrent(fresh GenID) Generations {
	if fresh == 0 {
		panic("replica: NewCurrent with GenID 0")
	}
	if fresh == g.Current || g.knows(fresh) {
		panic(fmt.Sprintf("replica: NewCurrent with GenID %v already in %v", fresh, g))
	}
	switch {
	case g.Bitmap == 0:
		g.Bitmap = g.Current
	case g.Current != 0:
		g.History = pushHistory(g.History, g.Current)
	}
	g.Current = fresh
	return g
}

// InSync returns the record of a side that is now identical to its peer: a
// resync source whose resync finished, or either side of a connection that
// Decide found in sync. Bitmap tracking ends, and the generation it counted
// from becomes history (the peer may still be reached later by a third
// replica at that generation, which then needs a full sync, not nothing).
// InSync is idempotent.
func (g Generations) InSync() Generations {
	if g.Bitmap != 0 {
		g.History = pushHistory(g.History, g.Bitmap)
		g.Bitmap = 0
	}
	return g
}

// ResyncDone returns the record of a resync target whose resync from source
// (the source's record as sent at connect) finished: the source's record
// after InSync. The target's own record is dropped on purpose. Its Current
// is either already in that lineage (the target was behind) or names data
// the resync just discarded (a split-brain victim, an Inconsistent disk);
// keeping it would let that discarded generation pose as an ancestor later.
func (g Generations) ResyncDone(source Generations) Generations {
	_ = g // the target's previous record: intentionally not carried over
	return source.InSync()
}

// Invalidated returns the record of a disk whose data is no longer trusted
// (blockctl invalidate, or a store that does not carry the identity meta.db
// records): Current goes to History, so the lineage stays provable but no
// rule can take the disk for one holding that generation's data, and
// Current 0 makes it the target of a full sync (Decide's rule 2). A record
// with history is not a new volume's, so the disk is never promoted as
// one's initial data.
func (g Generations) Invalidated() Generations {
	if g.Current != 0 {
		g.History = pushHistory(g.History, g.Current)
	}
	g.Current = 0
	return g
}

// knows reports whether id is one of the record's ancestors (Bitmap or
// History). Zero is never known: "none" is not a generation.
func (g Generations) knows(id GenID) bool {
	if id == 0 {
		return false
	}
	if g.Bitmap == id {
		return true
	}
	for _, h := range g.History {
		if h == id {
			return true
		}
	}
	return false
}

// ancestors returns the non-zero Bitmap and History entries, newest first.
func (g Generations) ancestors() []GenID {
	out := make([]GenID, 0, 1+HistoryLen)
	if g.Bitmap != 0 {
		out = append(out, g.Bitmap)
	}
	for _, h := range g.History {
		if h != 0 {
			out = append(out, h)
		}
	}
	return out
}

// pushHistory puts id in front of h, dropping the oldest entry.
func pushHistory(h [HistoryLen]GenID, id GenID) [HistoryLen]GenID {
	copy(h[1:], h[:HistoryLen-1])
	h[0] = id
	return h
}

// DiskState is what a replica's disk holds, as far as the cluster knows.
// The zero value is Diskless, so a Side whose disk state was never filled in
// can only ever be "no data, no resync" — never a sync source.
type DiskState uint8

const (
	// Diskless: no local disk attached; the node reads and writes through
	// a peer. It has nothing to resync and is never a sync source.
	Diskless DiskState = iota
	// Inconsistent: the disk holds partial data (a resync target that has
	// not finished, or a new disk). It is never a sync source and never
	// promoted automatically.
	Inconsistent
	// Outdated: consistent data, but the cluster committed that it misses
	// writes (the primary went on without it). It may feed another Outdated
	// or an Inconsistent disk, never overwrite an UpToDate one.
	Outdated
	// UpToDate: consistent data that the cluster lists as current.
	UpToDate
)

// String returns the state's name as used in status output and scenarios.
func (d DiskState) String() string {
	switch d {
	case Diskless:
		return "Diskless"
	case Inconsistent:
		return "Inconsistent"
	case Outdated:
		return "Outdated"
	case UpToDate:
		return "UpToDate"
	}
	return "DiskState(" + strconv.Itoa(int(d)) + ")"
}

// hasData reports whether the disk holds consistent data that may be copied
// to a peer.
func (d DiskState) hasData() bool { return d == UpToDate || d == Outdated }

// Side is everything Decide needs to know about one end of a connection.
// Each node fills one from its own metadata and one from what the peer sent
// in the connect handshake.
type Side struct {
	// Gen is the side's generation record.
	Gen Generations
	// Disk is the side's disk state.
	Disk DiskState
	// WasPrimary is set while the side is primary and stays set if it
	// crashed as primary (it is cleared by a clean demotion or once a resync
	// covered its activity log). Writes may have been in flight, so the
	// extents in its activity log are suspect on both sides.
	WasPrimary bool
	// ChangedBlocks is the number of bits set in the side's out-of-sync
	// bitmap: blocks changed since Gen.Bitmap, plus activity-log extents
	// applied to the bitmap after a crash as primary.
	ChangedBlocks uint64
	// PrimarySince is the cluster epoch at which the side last became
	// primary, 0 if never; a higher value is a younger primary. Used by the
	// discard-younger-primary and discard-older-primary policies.
	PrimarySince uint64
	// DiscardMyData is set when the operator asked this side to be the
	// victim of a split brain (blockctl connect --discard-my-data). It is
	// consulted only for a split brain: outside one, the generations already
	// know which side is newer, and throwing away newer data is what
	// invalidate is for.
	DiscardMyData bool
}

// ownBits reports whether the side's bitmap may hold bits of its own that a
// resync into it must include: it tracked changes (Bitmap set, or bits
// counted) or crashed as primary (its activity log was applied to its
// bitmap). Merging is a superset of what is needed, so erring towards it
// costs bytes, never data.
func (s Side) ownBits() bool {
	return s.WasPrimary || s.Gen.Bitmap != 0 || s.ChangedBlocks > 0
}

// SplitBrainPolicy says how Decide resolves a split brain that the operator
// did not resolve with DiscardMyData. The zero value is PolicyDisconnect.
// Both nodes must use the same policy.
type SplitBrainPolicy uint8

const (
	// PolicyDisconnect resolves nothing automatically: the nodes stay
	// disconnected until the operator picks a victim. The default, because
	// every other policy throws away acknowledged writes of one side.
	PolicyDisconnect SplitBrainPolicy = iota
	// PolicyDiscardZeroChanges makes a side that changed no block since the
	// split the target; nothing is lost. If both changed blocks it does not
	// resolve. If neither did, the data is identical and either direction is
	// harmless; the side with the numerically larger Current becomes source,
	// because both nodes compute that alike without another round trip.
	PolicyDiscardZeroChanges
	// PolicyDiscardYoungerPrimary discards the side that became primary
	// last (larger PrimarySince): the older primary's writes were probably
	// what the clients saw longer. Equal epochs do not resolve.
	PolicyDiscardYoungerPrimary
	// PolicyDiscardOlderPrimary discards the side that became primary first
	// (smaller PrimarySince): the younger primary is probably the one the
	// failover tooling chose. Equal epochs do not resolve.
	PolicyDiscardOlderPrimary
	// PolicyDiscardLeastChanges discards the side with fewer changed blocks
	// (ChangedBlocks), losing the least. A tie does not resolve.
	PolicyDiscardLeastChanges
)

// splitBrainPolicyNames are the configuration names, indexed by policy.
var splitBrainPolicyNames = [...]string{
	PolicyDisconnect:            "disconnect",
	PolicyDiscardZeroChanges:    "discard-zero-changes",
	PolicyDiscardYoungerPrimary: "discard-younger-primary",
	PolicyDiscardOlderPrimary:   "discard-older-primary",
	PolicyDiscardLeastChanges:   "discard-least-changes",
}

// String returns the policy's configuration name.
func (p SplitBrainPolicy) String() string {
	if int(p) < len(splitBrainPolicyNames) {
		return splitBrainPolicyNames[p]
	}
	return "SplitBrainPolicy(" + strconv.Itoa(int(p)) + ")"
}

// ParseSplitBrainPolicy returns the policy named s. It accepts exactly the
// configuration names ("disconnect", "discard-zero-changes",
// "discard-younger-primary", "discard-older-primary",
// "discard-least-changes"): no case folding and no empty default, so that a
// typo in a config file is an error rather than a silent disconnect.
func ParseSplitBrainPolicy(s string) (SplitBrainPolicy, error) {
	for p, name := range splitBrainPolicyNames {
		if s == name {
			return SplitBrainPolicy(p), nil
		}
	}
	return PolicyDisconnect, fmt.Errorf("unknown split-brain policy %q (allowed: %s)",
		s, strings.Join(splitBrainPolicyNames[:], ", "))
}

// Action is what the local node does after Decide.
type Action uint8

const (
	// Proceed: nothing to copy; the connection proceeds (in sync, or one side
	// is diskless and uses the other's data).
	Proceed Action = iota
	// BecomeSyncSource: the local node sends data to the peer.
	BecomeSyncSource
	// BecomeSyncTarget: the local node receives data from the peer; its own
	// blocks in the resync set are overwritten. A node that is currently
	// Primary must demote (or disconnect) before it is a target.
	BecomeSyncTarget
	// SplitBrain: both sides wrote while apart and the policy did not pick
	// a victim. Disconnect and wait for the operator.
	SplitBrain
	// Unrelated: the two disks share no generation: different volumes, or
	// lineage lost beyond History. Disconnect and never sync automatically.
	Unrelated
	// Refuse: the pair cannot be made consistent safely (no good data on
	// either side, an Outdated side would overwrite an UpToDate one, or the
	// generations contradict each other). Disconnect; the reason says why.
	Refuse
)

// String returns the action's name.
func (a Action) String() string {
	switch a {
	case Proceed:
		return "Proceed"
	case BecomeSyncSource:
		return "BecomeSyncSource"
	case BecomeSyncTarget:
		return "BecomeSyncTarget"
	case SplitBrain:
		return "SplitBrain"
	case Unrelated:
		return "Unrelated"
	case Refuse:
		return "Refuse"
	}
	return "Action(" + strconv.Itoa(int(a)) + ")"
}

// ResyncKind says what a resync copies. Every kind leaves the two disks
// identical; they differ in how much they must send.
type ResyncKind uint8

const (
	// NoResync: nothing is copied (the Action is not a sync).
	NoResync ResyncKind = iota
	// BitmapResync: copy the blocks set in the source's out-of-sync bitmap
	// (and the target's too when Decision.MergeBitmaps).
	BitmapResync
	// FullResync: copy every block; no bitmap is known to cover the
	// difference.
	FullResync
	// ALResync: both sides are at the same generation but a primary crashed
	// (or is still primary) with writes possibly in flight: copy the
	// activity-log extents of the side(s) that were primary. Those extents
	// are in the bitmaps (a crashed primary applies its activity log to its
	// bitmap when it attaches), so the copy works like BitmapResync.
	ALResync
)

// String returns the kind's name.
func (k ResyncKind) String() string {
	switch k {
	case NoResync:
		return "NoResync"
	case BitmapResync:
		return "BitmapResync"
	case FullResync:
		return "FullResync"
	case ALResync:
		return "ALResync"
	}
	return "ResyncKind(" + strconv.Itoa(int(k)) + ")"
}

// Decision is the outcome of Decide, from the local node's point of view.
type Decision struct {
	// Action is what the local node does.
	Action Action
	// Resync is what a sync copies; NoResync unless Action is
	// BecomeSyncSource or BecomeSyncTarget.
	Resync ResyncKind
	// MergeBitmaps means the resync set is the union of both sides'
	// bitmaps, not just the source's: the target has blocks of its own that
	// must be overwritten (a resolved split brain, or a target that crashed
	// as primary with its activity log applied to its bitmap). Only set for
	// BitmapResync and ALResync.
	MergeBitmaps bool
	// Reason explains the decision in one line, naming the generations
	// involved, for logs and blockctl status.
	Reason string
}

// String formats the decision for logs: "Action Resync [merge]: reason".
func (d Decision) String() string {
	s := d.Action.String()
	if d.Resync != NoResync {
		s += " " + d.Resync.String()
	}
	if d.MergeBitmaps {
		s += " merge-bitmaps"
	}
	return s + ": " + d.Reason
}

// Decide is the connect-time decision between the local replica and a peer:
// who is sync source, what kind of resync is needed, or why the two must not
// sync (split brain, unrelated data, nothing safe to do). It is a pure,
// deterministic function of its arguments, and symmetric: the peer, calling
// Decide(peer, local, policy), gets the mirrored action (source and target
// swapped) and the same Resync and MergeBitmaps.
//
// The rules, in order (the first that applies decides):
//
//  1. Diskless. A diskless side has no data to compare or receive: Proceed if
//     the other side has consistent data, Refuse otherwise.
//  2. New volume (Current == 0, a disk that never held data). Both new:
//     full sync from the one UpToDate side, else Refuse. One new: full sync
//     from the other if it has consistent data (unless that is Outdated and
//     the new one claims UpToDate: Refuse), else from the new side if it is
//     UpToDate, else Refuse.
//  3. Unrelated: neither Current is the other's Current or ancestor, and no
//     ancestor is shared. Never synced, whatever the disk states.
//  4. No consistent data on either side (both Inconsistent): Refuse. Each
//     side's Current reachable from the other's ancestors: Refuse (the
//     records contradict each other; no real history produces that).
//  5. One side Inconsistent: it becomes target of the other. Bitmap resync
//     if the source's Bitmap equals the target's Current (the target was
//     away, or an interrupted bitmap resync resumes), full otherwise: the
//     target's own changes, if any, are not trusted.
//  6. Equal Current: in sync (Proceed) unless a side WasPrimary: then an
//     ALResync from the side that was primary. If both were, the UpToDate
//     one, else the younger primary, is source, merging both bitmaps; a
//     full tie is Refused, since an identical pair gives no symmetric way to
//     choose. A leftover Bitmap with equal Current is a resync whose end was
//     not fully persisted: still in sync.
//  7. One side's Bitmap equals the other's Current: the other was away and
//     the bitmap covers everything; bitmap resync, that side is source.
//  8. One side's Current is in the other's History: the other moved on by
//     more than its bitmap records; full sync from it.
//  9. Otherwise the sides share an ancestor but each has data the other
//     lacks: split brain. DiscardMyData on exactly one side makes it the
//     target (on both: SplitBrain); else the policy decides. A resolved
//     split brain copies the union of both bitmaps if both count from the
//     same ancestor (equal, non-zero Bitmap), else everything.
//
// Whatever rule picked the direction, an Outdated side never overwrites an
// UpToDate one: that is Refuse (SplitBrain for rule 9), because the cluster
// committed that the Outdated side misses acknowledged writes.
//
// After a Proceed between two disks, both sides call InSync (a leftover Bitmap
// is then retired). The caller, not Decide, updates disk states (a target
// takes its source's disk state when the resync finishes; an in-sync
// Outdated side may be marked UpToDate by the cluster).
func Decide(local, peer Side, policy SplitBrainPolicy) Decision {
	// Rule 1: diskless sides.
	switch {
	case local.Disk == Diskless && peer.Disk == Diskless:
		return refuseDecision("neither side has a disk")
	case local.Disk == Diskless:
		if peer.Disk.hasData() {
			return noneDecision(fmt.Sprintf("local is diskless and uses the peer's data (peer %v at current %v); nothing to resync", peer.Disk, peer.Gen.Current))
		}
		return refuseDecision(fmt.Sprintf("local is diskless and the peer is %v: no good data anywhere", peer.Disk))
	case peer.Disk == Diskless:
		if local.Disk.hasData() {
			return noneDecision(fmt.Sprintf("peer is diskless and uses local data (local %v at current %v); nothing to resync", local.Disk, local.Gen.Current))
		}
		return refuseDecision(fmt.Sprintf("peer is diskless and local is %v: no good data anywhere", local.Disk))
	}

	// Rule 2: new volumes.
	if local.Gen.Current == 0 || peer.Gen.Current == 0 {
		return decideNew(local, peer)
	}

	rel := relate(local.Gen, peer.Gen)

	// Rule 3: unrelated data.
	if rel.kind == relUnrelated {
		return Decision{Action: Unrelated, Reason: fmt.Sprintf(
			"unrelated data: local (%v) and peer (%v) share no generation; never syncing them", local.Gen, peer.Gen)}
	}

	// Rule 4: nothing good anywhere, or impossible records.
	if !local.Disk.hasData() && !peer.Disk.hasData() {
		return refuseDecision(fmt.Sprintf("no good data anywhere: local is %v (current %v), peer is %v (current %v)",
			local.Disk, local.Gen.Current, peer.Disk, peer.Gen.Current))
	}
	if rel.kind == relContradiction {
		return refuseDecision(fmt.Sprintf("generations contradict: each side descends from the other (local %v, peer %v)", local.Gen, peer.Gen))
	}

	// Rule 5: exactly one side Inconsistent.
	if !local.Disk.hasData() {
		return decideInconsistent(true, peer, local)
	}
	if !peer.Disk.hasData() {
		return decideInconsistent(false, local, peer)
	}

	// Rules 6–9: both sides have consistent data.
	switch rel.kind {
	case relSame:
		return decideSameCurrent(local, peer)
	case relLocalBitmap:
		return syncDecision(true, local, peer, BitmapResync, peer.ownBits(), fmt.Sprintf(
			"peer was away: local bitmap generation %v equals peer current %v, local moved on to %v; bitmap resync from local",
			local.Gen.Bitmap, peer.Gen.Current, local.Gen.Current))
	case relPeerBitmap:
		return syncDecision(false, peer, local, BitmapResync, local.ownBits(), fmt.Sprintf(
			"local was away: peer bitmap generation %v equals local current %v, peer moved on to %v; bitmap resync from peer",
			peer.Gen.Bitmap, local.Gen.Current, peer.Gen.Current))
	case relLocalHistory:
		return syncDecision(true, local, peer, FullResync, false, fmt.Sprintf(
			"peer current %v is in local history (local current %v, bitmap %v): no bitmap covers the gap; full sync from local",
			peer.Gen.Current, local.Gen.Current, local.Gen.Bitmap))
	case relPeerHistory:
		return syncDecision(false, peer, local, FullResync, false, fmt.Sprintf(
			"local current %v is in peer history (peer current %v, bitmap %v): no bitmap covers the gap; full sync from peer",
			local.Gen.Current, peer.Gen.Current, peer.Gen.Bitmap))
	}
	return decideSplitBrain(local, peer, policy, rel.ancestor)
}

// relKind is how two generation records relate.
type relKind uint8

const (
	relUnrelated     relKind = iota // no shared generation at all
	relSame                         // equal Current
	relLocalBitmap                  // local.Bitmap == peer.Current
	relPeerBitmap                   // peer.Bitmap == local.Current
	relLocalHistory                 // peer.Current in local.History
	relPeerHistory                  // local.Current in peer.History
	relContradiction                // each descends from the other
	relDiverged                     // a shared ancestor, neither descends
)

// relation is relate's result: the kind, and for relDiverged the newest
// shared ancestor (newest in local's order; only used in reasons).
type relation struct {
	kind     relKind
	ancestor GenID
}

// relate compares two records whose Currents are both non-zero.
func relate(l, p Generations) relation {
	if l.Current == p.Current {
		return relation{kind: relSame}
	}
	// Descent: the peer's Current is one of our ancestors (we are ahead),
	// or the reverse. A Bitmap match is preferred over a History match in
	// the same direction because it allows the cheaper resync.
	localAhead := l.knows(p.Current)
	peerAhead := p.knows(l.Current)
	switch {
	case localAhead && peerAhead:
		return relation{kind: relContradiction}
	case localAhead && l.Bitmap == p.Current:
		return relation{kind: relLocalBitmap}
	case localAhead:
		return relation{kind: relLocalHistory}
	case peerAhead && p.Bitmap == l.Current:
		return relation{kind: relPeerBitmap}
	case peerAhead:
		return relation{kind: relPeerHistory}
	}
	for _, a := range l.ancestors() {
		if p.knows(a) {
			return relation{kind: relDiverged, ancestor: a}
		}
	}
	return relation{kind: relUnrelated}
}

// decideNew handles rule 2: at least one side has Current == 0.
func decideNew(local, peer Side) Decision {
	lNew, pNew := local.Gen.Current == 0, peer.Gen.Current == 0
	if lNew && pNew {
		switch {
		case local.Disk == UpToDate && peer.Disk == UpToDate:
			return refuseDecision("new volume: neither side has a generation yet and both claim UpToDate; initialize one side first")
		case local.Disk == UpToDate:
			return syncDecision(true, local, peer, FullResync, false,
				"new volume: neither side has a generation yet and local is UpToDate; full sync from local")
		case peer.Disk == UpToDate:
			return syncDecision(false, peer, local, FullResync, false,
				"new volume: neither side has a generation yet and the peer is UpToDate; full sync from peer")
		}
		return refuseDecision(fmt.Sprintf("new volume: neither side has a generation yet and neither is UpToDate (local %v, peer %v); initialize one side first",
			local.Disk, peer.Disk))
	}
	// Exactly one side is new. The other side's lineage wins if it has
	// consistent data: a disk without a generation never held data of this
	// volume, whatever its disk state claims.
	if lNew {
		if peer.Disk.hasData() {
			return syncDecision(false, peer, local, FullResync, false, fmt.Sprintf(
				"local has no generation yet (new disk); full sync from peer (current %v)", peer.Gen.Current))
		}
		if local.Disk == UpToDate {
			return syncDecision(true, local, peer, FullResync, false, fmt.Sprintf(
				"local has no generation but is UpToDate, peer (current %v) is %v; full sync from local", peer.Gen.Current, peer.Disk))
		}
		return refuseDecision(fmt.Sprintf("local has no generation and is %v, peer (current %v) is %v: no good data anywhere",
			local.Disk, peer.Gen.Current, peer.Disk))
	}
	if local.Disk.hasData() {
		return syncDecision(true, local, peer, FullResync, false, fmt.Sprintf(
			"peer has no generation yet (new disk); full sync from local (current %v)", local.Gen.Current))
	}
	if peer.Disk == UpToDate {
		return syncDecision(false, peer, local, FullResync, false, fmt.Sprintf(
			"peer has no generation but is UpToDate, local (current %v) is %v; full sync from peer", local.Gen.Current, local.Disk))
	}
	return refuseDecision(fmt.Sprintf("peer has no generation and is %v, local (current %v) is %v: no good data anywhere",
		peer.Disk, local.Gen.Current, local.Disk))
}

// decideInconsistent handles rule 5: tgt is Inconsistent, src has data.
// localIsTarget says which of them is the local side.
func decideInconsistent(localIsTarget bool, src, tgt Side) Decision {
	who, other := "peer", "local"
	if localIsTarget {
		who, other = "local", "peer"
	}
	if src.Gen.Bitmap != 0 && src.Gen.Bitmap == tgt.Gen.Current {
		return syncDecision(!localIsTarget, src, tgt, BitmapResync, tgt.ownBits(), fmt.Sprintf(
			"%s is Inconsistent; %s bitmap generation %v equals %s current %v, so the bitmap covers what it misses (resuming); bitmap resync from %s",
			who, other, src.Gen.Bitmap, who, tgt.Gen.Current, other))
	}
	return syncDecision(!localIsTarget, src, tgt, FullResync, false, fmt.Sprintf(
		"%s is Inconsistent and no bitmap covers it (%s current %v; %s current %v, bitmap %v); full sync from %s",
		who, who, tgt.Gen.Current, other, src.Gen.Current, src.Gen.Bitmap, other))
}

// decideSameCurrent handles rule 6: equal Current, both with data.
func decideSameCurrent(local, peer Side) Decision {
	cur := local.Gen.Current
	switch {
	case !local.WasPrimary && !peer.WasPrimary:
		reason := fmt.Sprintf("in sync at current %v", cur)
		if local.Gen.Bitmap != 0 || peer.Gen.Bitmap != 0 {
			reason += fmt.Sprintf(" (leftover bitmap generation local %v, peer %v from a resync whose end was not fully persisted)",
				local.Gen.Bitmap, peer.Gen.Bitmap)
		}
		if local.Disk != peer.Disk {
			reason += fmt.Sprintf("; disks local %v, peer %v", local.Disk, peer.Disk)
		}
		return noneDecision(reason)
	case local.WasPrimary && !peer.WasPrimary:
		return syncDecision(true, local, peer, ALResync, peer.ownBits(), fmt.Sprintf(
			"both at current %v but local was primary (crashed or still primary): its activity-log extents are suspect; AL resync from local", cur))
	case peer.WasPrimary && !local.WasPrimary:
		return syncDecision(false, peer, local, ALResync, local.ownBits(), fmt.Sprintf(
			"both at current %v but the peer was primary (crashed or still primary): its activity-log extents are suspect; AL resync from peer", cur))
	}
	// Both were primary at the same generation: the activity logs of both
	// are suspect, so the resync covers both bitmaps whichever way it goes.
	// Direction only has to be agreed on.
	base := fmt.Sprintf("both at current %v and both were primary: both activity logs are suspect", cur)
	switch {
	case local.Disk == UpToDate && peer.Disk != UpToDate:
		return syncDecision(true, local, peer, ALResync, true, base+"; local is UpToDate, peer "+peer.Disk.String()+"; AL resync of both from local")
	case peer.Disk == UpToDate && local.Disk != UpToDate:
		return syncDecision(false, peer, local, ALResync, true, base+"; peer is UpToDate, local "+local.Disk.String()+"; AL resync of both from peer")
	case local.PrimarySince > peer.PrimarySince:
		return syncDecision(true, local, peer, ALResync, true, fmt.Sprintf(
			"%s; local is the younger primary (epoch %d > %d); AL resync of both from local", base, local.PrimarySince, peer.PrimarySince))
	case peer.PrimarySince > local.PrimarySince:
		return syncDecision(false, peer, local, ALResync, true, fmt.Sprintf(
			"%s; peer is the younger primary (epoch %d > %d); AL resync of both from peer", base, peer.PrimarySince, local.PrimarySince))
	}
	return refuseDecision(fmt.Sprintf("%s, with equal disk state %v and primary epoch %d: no way to agree on a source; resolve manually",
		base, local.Disk, local.PrimarySince))
}

// decideSplitBrain handles rule 9: both sides have data, share ancestor
// anc, and each has changes the other lacks.
func decideSplitBrain(local, peer Side, policy SplitBrainPolicy, anc GenID) Decision {
	base := fmt.Sprintf("split brain: local current %v and peer current %v diverged from %v", local.Gen.Current, peer.Gen.Current, anc)

	// victim: +1 the peer is discarded (local is source), -1 local is
	// discarded, 0 unresolved. how explains the choice.
	victim, how := 0, ""
	switch {
	case local.DiscardMyData && peer.DiscardMyData:
		return Decision{Action: SplitBrain, Reason: base + "; both sides asked to discard their data; resolve manually"}
	case local.DiscardMyData:
		victim, how = -1, "local asked to discard its data"
	case peer.DiscardMyData:
		victim, how = +1, "peer asked to discard its data"
	default:
		victim, how = applyPolicy(local, peer, policy)
	}
	if victim == 0 {
		return Decision{Action: SplitBrain, Reason: base + "; " + how}
	}

	src, tgt, localIsSource := local, peer, victim > 0
	if !localIsSource {
		src, tgt = peer, local
	}
	if src.Disk == Outdated && tgt.Disk == UpToDate {
		return Decision{Action: SplitBrain, Reason: fmt.Sprintf(
			"%s; %s, but the winner is Outdated and the victim UpToDate: an Outdated side never overwrites an UpToDate one; resolve manually", base, how)}
	}
	tname := "peer"
	if !localIsSource {
		tname = "local"
	}
	// The union of both bitmaps covers every block either side changed
	// since the split only if both bitmaps count from the same generation.
	if local.Gen.Bitmap != 0 && local.Gen.Bitmap == peer.Gen.Bitmap {
		return syncDecision(localIsSource, src, tgt, BitmapResync, true, fmt.Sprintf(
			"%s; %s: %s becomes target, discarding its %d changed blocks; bitmap resync of the union of both bitmaps (both count from %v)",
			base, how, tname, tgt.ChangedBlocks, local.Gen.Bitmap))
	}
	return syncDecision(localIsSource, src, tgt, FullResync, false, fmt.Sprintf(
		"%s; %s: %s becomes target, discarding its changes; full sync (bitmaps count from different generations: local %v, peer %v)",
		base, how, tname, local.Gen.Bitmap, peer.Gen.Bitmap))
}

// applyPolicy picks a split-brain victim by policy: +1 discards the peer,
// -1 discards local, 0 leaves it unresolved. The string explains why.
func applyPolicy(local, peer Side, policy SplitBrainPolicy) (int, string) {
	name := "policy " + policy.String()
	switch policy {
	case PolicyDisconnect:
		return 0, name + ": resolve manually (connect --discard-my-data on the victim)"
	case PolicyDiscardZeroChanges:
		lz, pz := local.ChangedBlocks == 0, peer.ChangedBlocks == 0
		switch {
		case lz && pz:
			// Neither side changed a block: the data is identical and
			// either direction is harmless. Compare Currents, which differ
			// (equal Currents are rule 6), so both nodes agree.
			if local.Gen.Current > peer.Gen.Current {
				return +1, name + ": neither side changed a block, the larger current (local) wins"
			}
			return -1, name + ": neither side changed a block, the larger current (peer) wins"
		case lz:
			return -1, name + ": local changed no block"
		case pz:
			return +1, name + ": peer changed no block"
		}
		return 0, fmt.Sprintf("%s: both sides changed blocks (local %d, peer %d); resolve manually",
			name, local.ChangedBlocks, peer.ChangedBlocks)
	case PolicyDiscardYoungerPrimary, PolicyDiscardOlderPrimary:
		l, p := local.PrimarySince, peer.PrimarySince
		if l == p {
			return 0, fmt.Sprintf("%s: both became primary at epoch %d; resolve manually", name, l)
		}
		localYounger := l > p
		discardLocal := localYounger == (policy == PolicyDiscardYoungerPrimary)
		if discardLocal {
			return -1, fmt.Sprintf("%s: local primary since epoch %d, peer since %d", name, l, p)
		}
		return +1, fmt.Sprintf("%s: local primary since epoch %d, peer since %d", name, l, p)
	case PolicyDiscardLeastChanges:
		l, p := local.ChangedBlocks, peer.ChangedBlocks
		switch {
		case l < p:
			return -1, fmt.Sprintf("%s: local changed %d blocks, peer %d", name, l, p)
		case p < l:
			return +1, fmt.Sprintf("%s: local changed %d blocks, peer %d", name, l, p)
		}
		return 0, fmt.Sprintf("%s: both changed %d blocks; resolve manually", name, l)
	}
	// An unknown policy value is a caller bug; treat it as the safe default.
	return 0, name + " is unknown, treated as disconnect; resolve manually"
}

// syncDecision builds a source/target decision from the local point of view and
// applies the disk-state veto common to every rule: an Outdated source never
// overwrites an UpToDate target. The Inconsistent and Diskless cases never
// reach here as source; the check is kept so that a future rule cannot
// break that invariant silently.
func syncDecision(localIsSource bool, src, tgt Side, kind ResyncKind, merge bool, reason string) Decision {
	if !src.Disk.hasData() || (src.Disk == Outdated && tgt.Disk == UpToDate) {
		srcName := "peer"
		if localIsSource {
			srcName = "local"
		}
		return refuseDecision(fmt.Sprintf("refusing: %s is %v and the other side %v, so it may not be the sync source (the generations said: %s)",
			srcName, src.Disk, tgt.Disk, reason))
	}
	if kind == FullResync {
		merge = false // a full sync copies everything; there is nothing to merge
	}
	a := BecomeSyncTarget
	if localIsSource {
		a = BecomeSyncSource
	}
	return Decision{Action: a, Resync: kind, MergeBitmaps: merge, Reason: reason}
}

func noneDecision(reason string) Decision   { return Decision{Action: Proceed, Reason: reason} }
func refuseDecision(reason string) Decision { return Decision{Action: Refuse, Reason: reason} }
