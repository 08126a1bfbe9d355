package events

import (
	"reflect"
	"testing"
	"time"
)

// strip clears the fields the bus assigns, which the tables do not give.
func strip(es []Event) []Event {
	out := make([]Event, len(es))
	for i, e := range es {
		e.Seq, e.Time = 0, time.Time{}
		out[i] = e
	}
	return out
}

func TestWatcherObserve(t *testing.T) {
	role := func(vol, v string) Fact { return Fact{Kind: "role", Volume: vol, Value: v} }
	tests := []struct {
		name  string
		steps [][]Fact // observations in order; the events of the last are checked
		want  []Event
	}{
		{"first observation publishes nothing",
			[][]Fact{{role("vol0", "primary"), {Kind: "leader", Value: "node1"}}}, nil},
		{"unchanged publishes nothing",
			[][]Fact{{role("vol0", "primary")}, {role("vol0", "primary")}}, nil},
		{"a changed detail alone publishes nothing",
			[][]Fact{{{Kind: "resync", Volume: "v", Peer: "p", Value: "running", Detail: "10%"}},
				{{Kind: "resync", Volume: "v", Peer: "p", Value: "running", Detail: "20%"}}}, nil},
		{"changed value",
			[][]Fact{{role("vol0", "secondary")}, {{Kind: "role", Volume: "vol0", Value: "primary", Detail: "epoch 3"}}},
			[]Event{{Kind: "role", Volume: "vol0", Old: "secondary", New: "primary", Detail: "epoch 3"}}},
		{"new key",
			[][]Fact{{}, {{Kind: "connection", Volume: "vol0", Peer: "node2", Value: "Connecting"}}},
			[]Event{{Kind: "connection", Volume: "vol0", Peer: "node2", New: "Connecting"}}},
		{"vanished key",
			[][]Fact{{{Kind: "member", Node: "node3", Value: "voter"}, role("vol0", "primary")}, {role("vol0", "primary")}},
			[]Event{{Kind: "member", Node: "node3", Old: "voter", Detail: "gone"}}},
		{"keys differ by node, volume and peer",
			[][]Fact{
				{role("a", "primary"), role("b", "primary"), {Kind: "connection", Volume: "a", Peer: "p1", Value: "Connected"}, {Kind: "member", Node: "n1", Value: "voter"}},
				{role("a", "primary"), role("b", "secondary"), {Kind: "connection", Volume: "a", Peer: "p2", Value: "Connected"}, {Kind: "member", Node: "n2", Value: "voter"}},
			},
			[]Event{
				{Kind: "role", Volume: "b", Old: "primary", New: "secondary"},
				{Kind: "connection", Volume: "a", Peer: "p2", New: "Connected"},
				{Kind: "member", Node: "n2", New: "voter"},
				// vanished ones last, by kind, node, volume, peer
				{Kind: "connection", Volume: "a", Peer: "p1", Old: "Connected", Detail: "gone"},
				{Kind: "member", Node: "n1", Old: "voter", Detail: "gone"},
			}},
		{"changes in the order of the facts",
			[][]Fact{{role("z", "secondary"), role("a", "secondary")}, {role("z", "primary"), role("a", "primary")}},
			[]Event{{Kind: "role", Volume: "z", Old: "secondary", New: "primary"}, {Kind: "role", Volume: "a", Old: "secondary", New: "primary"}}},
		{"the later of two facts with one key counts",
			[][]Fact{{role("v", "secondary")}, {role("v", "primary"), role("v", "secondary")}}, nil},
		{"compared with the previous observation, not the first",
			[][]Fact{{role("v", "secondary")}, {role("v", "primary")}, {role("v", "secondary")}},
			[]Event{{Kind: "role", Volume: "v", Old: "primary", New: "secondary"}}},
		{"empty first observation counts as one",
			[][]Fact{nil, {role("v", "primary")}},
			[]Event{{Kind: "role", Volume: "v", New: "primary"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBus(64)
			w := NewWatcher(b)
			for _, facts := range tt.steps[:len(tt.steps)-1] {
				w.Observe(facts)
			}
			before := b.Seq()
			w.Observe(tt.steps[len(tt.steps)-1])
			got := strip(b.Since(before))
			if len(got) == 0 {
				got = nil
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("events:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestWatcherEventsShareTime(t *testing.T) {
	b := NewBus(8)
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	b.now = func() time.Time { return at }
	w := NewWatcher(b)
	w.Observe(nil)
	w.Observe([]Fact{{Kind: "a", Value: "1"}, {Kind: "b", Value: "2"}})
	for _, e := range b.Since(0) {
		if !e.Time.Equal(at) {
			t.Errorf("%+v: time %v, want %v", e, e.Time, at)
		}
	}
}

func TestWatcherCurrent(t *testing.T) {
	b := NewBus(8)
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b.now = func() time.Time { return clock }
	w := NewWatcher(b)
	if got := w.Current(); len(got) != 0 {
		t.Errorf("before any observation: %+v", got)
	}
	t0 := clock
	w.Observe([]Fact{
		{Kind: "role", Volume: "vol1", Value: "secondary"},
		{Kind: "role", Volume: "vol0", Value: "secondary"},
		{Kind: "member", Node: "node2", Value: "voter"},
		{Kind: "connection", Volume: "vol0", Peer: "node2", Value: "Connected"},
		{Kind: "member", Node: "node1", Value: "voter"},
	})
	clock = clock.Add(time.Minute)
	w.Observe([]Fact{
		{Kind: "role", Volume: "vol1", Value: "secondary"},
		{Kind: "role", Volume: "vol0", Value: "primary", Detail: "epoch 3"},
		{Kind: "member", Node: "node1", Value: "voter"},
		{Kind: "member", Node: "node2", Value: "voter", Detail: "new detail"},
	})
	want := []Event{
		{Time: t0, Kind: "member", Node: "node1", New: "voter", Initial: true},
		{Time: t0, Kind: "member", Node: "node2", New: "voter", Detail: "new detail", Initial: true},
		{Time: clock, Kind: "role", Volume: "vol0", New: "primary", Detail: "epoch 3", Initial: true},
		{Time: t0, Kind: "role", Volume: "vol1", New: "secondary", Initial: true},
	}
	if got := w.Current(); !reflect.DeepEqual(got, want) {
		t.Errorf("Current:\n got %+v\nwant %+v", got, want)
	}
}
