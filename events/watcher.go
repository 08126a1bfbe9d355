package events

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

// Fact is one piece of observed state: the Value of Kind for the thing
// named by Node, Volume and Peer (any of them empty when it does not apply).
type Fact struct {
	// Kind is what the fact is about: one of the Kind constants.
	Kind string
	// Volume, Peer and Node name the thing the fact is about, as in Event.
	Volume, Peer, Node string
	// Value is the observed state; a change of it is an event.
	Value string
	// Detail explains the value; it becomes the event's Detail, but a
	// change of the Detail alone is not an event.
	Detail string
}

// factKey identifies a fact across observations.
type factKey struct{ kind, node, volume, peer string }

func (f Fact) key() factKey { return factKey{f.Kind, f.Node, f.Volume, f.Peer} }

func compareKeys(a, b factKey) int {
	return cmp.Or(cmp.Compare(a.kind, b.kind), cmp.Compare(a.node, b.node),
		cmp.Compare(a.volume, b.volume), cmp.Compare(a.peer, b.peer))
}

// observed is what a Watcher remembers of one fact.
type observed struct {
	fact  Fact
	since time.Time // when the fact took its Value
}

// Watcher turns successive observations of the state into events: the code
// that knows the state describes all of it each time, and the Watcher
// publishes what changed. It is safe for concurrent use.
type Watcher struct {
	bus *Bus

	mu    sync.Mutex
	facts map[factKey]observed // nil before the first Observe
}

// NewWatcher returns a watcher that publishes on bus.
func NewWatcher(bus *Bus) *Watcher { return &Watcher{bus: bus} }

// Observe compares facts, the whole current state, with the previous
// observation and publishes one event per change, all with the same Time:
//
//   - a fact whose Value changed: Old is the previous value, New the current
//     one, Detail the fact's;
//   - a fact that is new: Old is empty;
//   - a fact that vanished: New is empty and Detail is "gone".
//
// Facts are identified by (Kind, Node, Volume, Peer); of two facts with the
// same key, the later one counts. Events of changed and new facts come in
// the order of facts, then those of vanished ones in the order of their
// keys. The first call publishes nothing: it records the state that Current
// reports.
func (w *Watcher) Observe(facts []Fact) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.bus.now()
	prev := w.facts
	cur := make(map[factKey]observed, len(facts))
	var order []factKey // keys in the order of facts, without repeats
	for _, f := range facts {
		k := f.key()
		if _, dup := cur[k]; !dup {
			order = append(order, k)
		}
		since := now
		if p, ok := prev[k]; ok && p.fact.Value == f.Value {
			since = p.since
		}
		cur[k] = observed{fact: f, since: since}
	}
	w.facts = cur
	if prev == nil {
		return
	}
	for _, k := range order {
		f := cur[k].fact
		p, existed := prev[k]
		if existed && p.fact.Value == f.Value {
			continue
		}
		e := Event{Time: now, Kind: f.Kind, Node: f.Node, Volume: f.Volume, Peer: f.Peer, New: f.Value, Detail: f.Detail}
		if existed {
			e.Old = p.fact.Value
		}
		w.bus.Publish(e)
	}
	var gone []factKey
	for k := range prev {
		if _, ok := cur[k]; !ok {
			gone = append(gone, k)
		}
	}
	slices.SortFunc(gone, compareKeys)
	for _, k := range gone {
		f := prev[k].fact
		w.bus.Publish(Event{Time: now, Kind: f.Kind, Node: f.Node, Volume: f.Volume, Peer: f.Peer, Old: f.Value, Detail: "gone"})
	}
}

// Current returns the state of the last observation as Initial events, in
// the order of (Kind, Node, Volume, Peer). Their Time is since when the
// value holds, as far as this watcher has seen; their Seq is 0.
func (w *Watcher) Current() []Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	keys := make([]factKey, 0, len(w.facts))
	for k := range w.facts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareKeys)
	out := make([]Event, 0, len(keys))
	for _, k := range keys {
		o := w.facts[k]
		out = append(out, Event{Time: o.since, Kind: o.fact.Kind, Node: o.fact.Node, Volume: o.fact.Volume,
			Peer: o.fact.Peer, New: o.fact.Value, Detail: o.fact.Detail, Initial: true})
	}
	return out
}
