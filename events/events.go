// Package events is blockrepd's event stream, in the spirit of DRBD's
// `drbdsetup events2` and HAST's `exec` hooks.
//
// A Bus numbers and keeps the last events published on it and hands them to
// any number of subscribers without ever blocking the publisher: a
// subscriber that falls too far behind is told how many events it lost and
// resumes at the oldest kept one. A Watcher turns periodic observations of
// the node's state (Facts) into change events, so that the code that knows
// the state only has to describe it. A Runner runs the configured hook
// commands for the events they ask for.
package events

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
)

// The kinds of events. A Kind names what changed; Old and New carry the
// values before and after the change.
const (
	// KindRole is a volume's role on this node: "primary" or "secondary".
	KindRole = "role"
	// KindDisk is the state of a volume's local disk: "UpToDate",
	// "Outdated", "Inconsistent", ...
	KindDisk = "disk"
	// KindConnection is the state of a volume's link to a peer:
	// "Connected", "Connecting", "SyncSource", "StandAlone", ...
	KindConnection = "connection"
	// KindPeerDisk is the disk state of a volume on a peer, as the peer
	// reports it.
	KindPeerDisk = "peer-disk"
	// KindLeader is the Raft leader of the cluster (a node name).
	KindLeader = "leader"
	// KindPrimary is the node the cluster names primary of a volume.
	KindPrimary = "primary"
	// KindEpoch is a volume's epoch, which grows with every promotion.
	KindEpoch = "epoch"
	// KindLease is the primary's lease: "held", "expired", ...
	KindLease = "lease"
	// KindSplitBrain is a split brain detected on a volume's link to a
	// peer, and how it was resolved.
	KindSplitBrain = "split-brain"
	// KindResync is a resync or verify with a peer: "running", "done",
	// "failed", ...
	KindResync = "resync"
	// KindMember is a node's membership of the cluster: "voter",
	// "nonvoter", "witness", ... (New is empty when it left).
	KindMember = "member"
	// KindRAIDHealth is the health of a volume's local RAID array:
	// "optimal", "degraded" (running without some redundancy) or "failed"
	// (too many members lost to serve the data); Detail counts the
	// members in sync. It is what mdadm --monitor's DegradedArray and Fail
	// alerts are about.
	KindRAIDHealth = "raid-health"
	// KindRAIDMember is the state of one member slot of a volume's RAID
	// array, named by Peer as "member0", "member1", ... (Peer, because the
	// slot is what distinguishes the facts and a volume has no peer in
	// this sense): "in_sync", "faulty" or "rebuilding". Detail is
	// the member's path ("empty slot" when it has none) and, for a failed
	// member, why it failed.
	KindRAIDMember = "raid-member"
	// KindRAIDOp is the background operation of a volume's RAID array:
	// "idle" when none has run since the array was opened, else the
	// operation and its state joined by a dash: "rebuild-running", then
	// "rebuild-done", "rebuild-failed" or "rebuild-canceled", and the same
	// with "scrub-". The value holds no progress, so that a run is two
	// events (start and end) rather than one per observation; Detail has
	// the member rebuilt, the bytes done when the state changed and the
	// error of a run that stopped. A run that starts and ends between two
	// observations (100 ms apart) shows only its end, and the end of a run
	// like the previous one (same operation, same outcome) shows not at
	// all: watch KindRAIDHealth and KindRAIDMember for what it changed.
	KindRAIDOp = "raid-op"
	// KindClusterState is whether the cluster state this node applied is
	// known current: "current" (it held everything the leader had
	// committed at its last heartbeat) or "stale" (no quorum, or not
	// caught up; Detail says which). Until a node has been current once
	// since it started, it publishes no KindPrimary facts.
	KindClusterState = "cluster-state"
	// KindIOError is the state of a replicated volume's local disk as
	// on_io_error sees it: "ok", or "failed" once a write or flush error
	// made the volume detach it (Diskless; with a cluster a primary hands
	// the volume over). Detail is the store's error, which names the path.
	KindIOError = "io-error"
	// KindLost is a synthetic event a subscriber receives when it fell so
	// far behind that the bus dropped events it had not read; Detail says
	// how many.
	KindLost = "lost"
	// KindExistsEnd marks the end of the current state in a stream that
	// starts with it (Initial events), like DRBD's "exists -".
	KindExistsEnd = "exists-end"
)

// Kinds returns the kinds of events a hook may ask for: every kind above
// except KindExistsEnd, which only marks a place in a stream.
func Kinds() []string {
	return []string{
		KindRole, KindDisk, KindConnection, KindPeerDisk, KindLeader,
		KindPrimary, KindEpoch, KindLease, KindSplitBrain, KindResync,
		KindMember, KindRAIDHealth, KindRAIDMember, KindRAIDOp, KindIOError, KindClusterState, KindLost,
	}
}

// Event is one change of the node's or the cluster's state.
type Event struct {
	// Seq numbers the events of one Bus from 1 up, without gaps; it is 0
	// for Initial events and for the synthetic KindLost and KindExistsEnd
	// events, which the bus did not publish.
	Seq uint64 `json:"seq,omitempty"`
	// Time is when the event was published. For an Initial event it is
	// since when the value holds, as far as this daemon has seen.
	Time time.Time `json:"time,omitzero"`
	// Kind names what changed: one of the Kind constants.
	Kind string `json:"kind"`
	// Volume is the volume concerned; empty for a node or cluster event.
	Volume string `json:"volume,omitempty"`
	// Peer is the peer node concerned (of a connection, a resync, a peer's
	// disk); empty when none is.
	Peer string `json:"peer,omitempty"`
	// Node is the node that saw the change (the daemon's own name), so
	// that events gathered from several nodes say where they come from.
	Node string `json:"node,omitempty"`
	// Old is the value before the change; empty when the thing is new.
	Old string `json:"old,omitempty"`
	// New is the value after the change; empty when the thing is gone.
	New string `json:"new,omitempty"`
	// Detail is free text that explains the change ("epoch 3", "gone",
	// "12 events dropped").
	Detail string `json:"detail,omitempty"`
	// Initial marks an event that describes the state as it was when a
	// stream started rather than a change.
	Initial bool `json:"initial,omitempty"`
}

// String renders e on one line:
//
//	2026-11-26T01:02:03.123456Z role volume=vol0 secondary->primary detail="epoch 3"
//
// that is the time (RFC 3339 in UTC with microseconds, or "-" when zero),
// the kind, node=, volume= and peer= when set, "old->new" (just "new" when
// Old is empty, `old->""` when New is), detail="..." when set and "initial"
// for an Initial event. A value is quoted (strconv.Quote) only when it is
// empty where a value is expected or holds a space, a quote, a backslash,
// "->" or an unprintable character; the detail is always quoted.
func (e Event) String() string {
	var b strings.Builder
	if e.Time.IsZero() {
		b.WriteByte('-')
	} else {
		b.WriteString(e.Time.UTC().Format("2006-01-02T15:04:05.000000Z07:00"))
	}
	b.WriteByte(' ')
	b.WriteString(quoteIfNeeded(e.Kind))
	for _, kv := range [...]struct{ k, v string }{{"node", e.Node}, {"volume", e.Volume}, {"peer", e.Peer}} {
		if kv.v != "" {
			b.WriteString(" " + kv.k + "=" + quoteIfNeeded(kv.v))
		}
	}
	switch {
	case e.Old != "":
		b.WriteString(" " + quoteIfNeeded(e.Old) + "->" + quoteIfNeeded(e.New))
	case e.New != "":
		b.WriteString(" " + quoteIfNeeded(e.New))
	}
	if e.Detail != "" {
		b.WriteString(" detail=" + strconv.Quote(e.Detail))
	}
	if e.Initial {
		b.WriteString(" initial")
	}
	return b.String()
}

// quoteIfNeeded quotes s when it would not read back as one word.
func quoteIfNeeded(s string) string {
	if s == "" || strings.Contains(s, "->") || strings.ContainsFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || r == '"' || r == '\'' || r == '\\' || !unicode.IsPrint(r)
	}) {
		return strconv.Quote(s)
	}
	return s
}

// Bus numbers events, keeps the last of them in a ring and wakes the
// subscribers. Publishing never blocks on a subscriber and the memory the
// bus uses does not grow with them: a subscription is only a position in
// the numbering. It is safe for concurrent use.
type Bus struct {
	mu   sync.Mutex
	ring []Event // len = history; event s is at ring[(s-1) % len]
	seq  uint64  // the last Seq assigned; 0 before the first event
	// wake is closed, and replaced, when an event is published.
	wake chan struct{}
	now  func() time.Time
}

// NewBus returns a bus that keeps the last history events (at least 1) for
// subscribers that are behind and for Since.
func NewBus(history int) *Bus {
	return &Bus{ring: make([]Event, max(history, 1)), wake: make(chan struct{}), now: time.Now}
}

// Publish assigns e the next Seq and, when e.Time is zero, the current time;
// keeps it; wakes the subscribers and returns it. It never blocks on a
// subscriber.
func (b *Bus) Publish(e Event) Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.publishLocked(e)
}

func (b *Bus) publishLocked(e Event) Event {
	b.seq++
	e.Seq = b.seq
	if e.Time.IsZero() {
		e.Time = b.now()
	}
	b.ring[(e.Seq-1)%uint64(len(b.ring))] = e
	close(b.wake)
	b.wake = make(chan struct{})
	return e
}

// oldestLocked returns the Seq of the oldest kept event (b.seq+1 when none
// is kept).
func (b *Bus) oldestLocked() uint64 {
	if b.seq < uint64(len(b.ring)) {
		return 1
	}
	return b.seq - uint64(len(b.ring)) + 1
}

// Seq returns the Seq of the last event published, 0 before the first.
func (b *Bus) Seq() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.seq
}

// Since returns the kept events with a Seq greater than seq, oldest first.
// Events older than the history are not returned; compare the first Seq
// with seq+1 to learn whether some were dropped.
func (b *Bus) Since(seq uint64) []Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	from := max(seq+1, b.oldestLocked())
	var out []Event
	for s := from; s <= b.seq; s++ {
		out = append(out, b.ring[(s-1)%uint64(len(b.ring))])
	}
	return out
}

// Subscription reads the events of a Bus in order. It is a position in the
// bus's numbering, not a buffer: reading it does not affect other
// subscribers, and dropping it needs no cleanup. One goroutine at a time
// may call Next.
type Subscription struct {
	bus  *Bus
	ctx  context.Context
	next uint64 // the Seq of the next event to return
}

// Subscribe returns a subscription to the events published from now on.
// Next fails once ctx ends.
func (b *Bus) Subscribe(ctx context.Context) *Subscription {
	b.mu.Lock()
	defer b.mu.Unlock()
	return &Subscription{bus: b, ctx: ctx, next: b.seq + 1}
}

// SubscribeSince returns a subscription whose first events are the kept
// events after seq, followed by those published later, with no gap and no
// duplicate. When events after seq were already dropped, the first Next
// returns a KindLost event. A seq beyond the last published event (a
// client that saw an earlier run of the daemon) is the same as Subscribe.
func (b *Bus) SubscribeSince(ctx context.Context, seq uint64) *Subscription {
	b.mu.Lock()
	defer b.mu.Unlock()
	return &Subscription{bus: b, ctx: ctx, next: min(seq, b.seq) + 1}
}

// Next returns the next event, waiting for it to be published. When the
// subscriber fell more than the history behind, Next returns a KindLost
// event saying how many events were dropped and continues with the oldest
// kept one. It fails with the context's error once ctx or the context of
// Subscribe ends.
func (s *Subscription) Next(ctx context.Context) (Event, error) {
	b := s.bus
	for {
		if err := ctx.Err(); err != nil {
			return Event{}, err
		}
		if err := s.ctx.Err(); err != nil {
			return Event{}, err
		}
		b.mu.Lock()
		if s.next <= b.seq {
			if oldest := b.oldestLocked(); s.next < oldest {
				lost := oldest - s.next
				s.next = oldest
				b.mu.Unlock()
				return Event{Time: b.now(), Kind: KindLost, Detail: fmt.Sprintf("%d events dropped", lost)}, nil
			}
			e := b.ring[(s.next-1)%uint64(len(b.ring))]
			s.next++
			b.mu.Unlock()
			return e, nil
		}
		wake := b.wake
		b.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
		case <-s.ctx.Done():
		}
	}
}
