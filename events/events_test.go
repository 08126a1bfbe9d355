package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestEventString(t *testing.T) {
	at := time.Date(2026, 11, 26, 1, 2, 3, 123456789, time.UTC)
	tests := []struct {
		name string
		e    Event
		want string
	}{
		{"change", Event{Time: at, Kind: "role", Volume: "vol0", Old: "secondary", New: "primary", Detail: "epoch 3"},
			`2026-11-26T01:02:03.123456Z role volume=vol0 secondary->primary detail="epoch 3"`},
		{"new value only", Event{Time: at, Kind: "disk", Volume: "vol0", New: "UpToDate"},
			`2026-11-26T01:02:03.123456Z disk volume=vol0 UpToDate`},
		{"node volume peer in order", Event{Time: at, Kind: "connection", Peer: "node2", Volume: "vol0", Node: "node1", Old: "Connecting", New: "Connected"},
			`2026-11-26T01:02:03.123456Z connection node=node1 volume=vol0 peer=node2 Connecting->Connected`},
		{"gone", Event{Time: at, Kind: "member", Node: "node3", Old: "voter", Detail: "gone"},
			`2026-11-26T01:02:03.123456Z member node=node3 voter->"" detail="gone"`},
		{"quoted values", Event{Time: at, Kind: "resync", Volume: "my vol", Old: `say "hi"`, New: "a->b"},
			`2026-11-26T01:02:03.123456Z resync volume="my vol" "say \"hi\""->"a->b"`},
		{"local time is shown in UTC", Event{Time: at.In(time.FixedZone("X", 3600)), Kind: "epoch", New: "4"},
			`2026-11-26T01:02:03.123456Z epoch 4`},
		{"no time", Event{Kind: "lost", Detail: "3 events dropped"}, `- lost detail="3 events dropped"`},
		{"initial", Event{Time: at, Kind: "leader", New: "node1", Initial: true},
			`2026-11-26T01:02:03.123456Z leader node1 initial`},
		{"marker", Event{Kind: KindExistsEnd, Initial: true}, `- exists-end initial`},
	}
	for _, tt := range tests {
		if got := tt.e.String(); got != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.name, got, tt.want)
		}
	}
}

func TestEventJSON(t *testing.T) {
	b, err := json.Marshal(Event{Kind: KindExistsEnd, Initial: true})
	if err != nil || string(b) != `{"kind":"exists-end","initial":true}` {
		t.Errorf("marker: %s %v", b, err)
	}
	e := Event{Seq: 7, Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Kind: "role", Volume: "v", Peer: "p", Node: "n", Old: "a", New: "b", Detail: "d"}
	b, err = json.Marshal(e)
	want := `{"seq":7,"time":"2026-01-02T03:04:05.000000006Z","kind":"role","volume":"v","peer":"p","node":"n","old":"a","new":"b","detail":"d"}`
	if err != nil || string(b) != want {
		t.Errorf("event:\n got %s\nwant %s", b, want)
	}
	var back Event
	if err := json.Unmarshal(b, &back); err != nil || back != e {
		t.Errorf("round trip: %+v %v", back, err)
	}
}

// kinds returns the Kind of each event.
func kinds(es []Event) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Kind)
	}
	return out
}

func TestPublishAssignsSeqAndTime(t *testing.T) {
	b := NewBus(4)
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b.now = func() time.Time { return at }
	e1 := b.Publish(Event{Kind: "a", Seq: 99})
	given := at.Add(-time.Hour)
	e2 := b.Publish(Event{Kind: "b", Time: given})
	if e1.Seq != 1 || e2.Seq != 2 || b.Seq() != 2 {
		t.Errorf("seqs %d %d, Seq() %d", e1.Seq, e2.Seq, b.Seq())
	}
	if !e1.Time.Equal(at) || !e2.Time.Equal(given) {
		t.Errorf("times %v %v", e1.Time, e2.Time)
	}
}

func TestSince(t *testing.T) {
	b := NewBus(3)
	if got := b.Since(0); len(got) != 0 {
		t.Errorf("empty bus: %v", got)
	}
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		b.Publish(Event{Kind: k})
	}
	for _, tt := range []struct {
		seq  uint64
		want []string
	}{
		{0, []string{"c", "d", "e"}}, // only the last 3 are kept
		{3, []string{"d", "e"}},
		{4, []string{"e"}},
		{5, nil},
		{9, nil},
	} {
		got := b.Since(tt.seq)
		if !slices.Equal(kinds(got), tt.want) {
			t.Errorf("Since(%d) = %v, want %v", tt.seq, kinds(got), tt.want)
		}
		for i, e := range got {
			if want := uint64(5 - len(got) + 1 + i); e.Seq != want {
				t.Errorf("Since(%d)[%d].Seq = %d", tt.seq, i, e.Seq)
			}
		}
	}
	if got := b.Since(0); got[0].Seq != 3 || got[2].Seq != 5 {
		t.Errorf("Since(0) seqs %d..%d, want 3..5", got[0].Seq, got[2].Seq)
	}
}

func next(t *testing.T, s *Subscription) Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return e
}

func TestSubscribeSeesOnlyLaterEvents(t *testing.T) {
	b := NewBus(8)
	b.Publish(Event{Kind: "before"})
	s := b.Subscribe(context.Background())
	b.Publish(Event{Kind: "x"})
	b.Publish(Event{Kind: "y"})
	if e := next(t, s); e.Kind != "x" || e.Seq != 2 {
		t.Errorf("first %+v", e)
	}
	if e := next(t, s); e.Kind != "y" || e.Seq != 3 {
		t.Errorf("second %+v", e)
	}
}

func TestNextWaitsForPublish(t *testing.T) {
	b := NewBus(8)
	s := b.Subscribe(context.Background())
	got := make(chan Event)
	go func() {
		e, err := s.Next(context.Background())
		if err != nil {
			t.Error(err)
		}
		got <- e
	}()
	select {
	case e := <-got:
		t.Fatalf("Next returned before any publish: %+v", e)
	case <-time.After(50 * time.Millisecond):
	}
	b.Publish(Event{Kind: "late"})
	select {
	case e := <-got:
		if e.Kind != "late" {
			t.Errorf("got %+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next was not woken by Publish")
	}
}

func TestNextContexts(t *testing.T) {
	b := NewBus(8)
	ctx, cancel := context.WithCancel(context.Background())
	s := b.Subscribe(ctx)
	done := make(chan error)
	go func() { _, err := s.Next(context.Background()); done <- err }()
	time.Sleep(20 * time.Millisecond)
	cancel() // the subscription's context
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next did not return when the Subscribe context ended")
	}

	s = b.Subscribe(context.Background())
	nctx, ncancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer ncancel()
	if _, err := s.Next(nctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Next with a deadline: %v", err)
	}
}

func TestSlowSubscriberGetsLost(t *testing.T) {
	b := NewBus(3)
	s := b.Subscribe(context.Background())
	for i := 1; i <= 7; i++ {
		b.Publish(Event{Kind: fmt.Sprint(i)}) // never blocks although s reads nothing
	}
	e := next(t, s)
	if e.Kind != KindLost || e.Detail != "4 events dropped" || e.Seq != 0 || e.Time.IsZero() {
		t.Errorf("first event %+v, want lost with 4 dropped", e)
	}
	var got []string
	for range 3 {
		got = append(got, next(t, s).Kind)
	}
	if !slices.Equal(got, []string{"5", "6", "7"}) {
		t.Errorf("after lost: %v", got)
	}
	// Caught up: the next one is live.
	b.Publish(Event{Kind: "8"})
	if e := next(t, s); e.Kind != "8" {
		t.Errorf("live after catching up: %+v", e)
	}
}

func TestSubscribeSince(t *testing.T) {
	b := NewBus(3)
	for i := 1; i <= 5; i++ {
		b.Publish(Event{Kind: fmt.Sprint(i)})
	}
	s := b.SubscribeSince(context.Background(), 3)
	b.Publish(Event{Kind: "6"})
	var got []string
	for range 3 {
		got = append(got, next(t, s).Kind)
	}
	if !slices.Equal(got, []string{"4", "5", "6"}) {
		t.Errorf("since 3: %v", got)
	}

	old := b.SubscribeSince(context.Background(), 1)
	if e := next(t, old); e.Kind != KindLost || e.Detail != "2 events dropped" {
		t.Errorf("since 1: %+v", e)
	}
	if e := next(t, old); e.Kind != "4" {
		t.Errorf("since 1 after lost: %+v", e)
	}

	// A seq from a former run of the daemon: only live events.
	future := b.SubscribeSince(context.Background(), 100)
	b.Publish(Event{Kind: "7"})
	if e := next(t, future); e.Kind != "7" {
		t.Errorf("since 100: %+v", e)
	}
}

// TestConcurrentSubscribers checks under -race that many subscribers see
// every event in order while a publisher runs.
func TestConcurrentSubscribers(t *testing.T) {
	const n = 200
	b := NewBus(n)
	var wg sync.WaitGroup
	subs := make([]*Subscription, 8)
	for i := range subs {
		subs[i] = b.Subscribe(context.Background())
	}
	for _, s := range subs {
		wg.Go(func() {
			for want := uint64(1); want <= n; want++ {
				e, err := s.Next(context.Background())
				if err != nil || e.Seq != want {
					t.Errorf("got %+v %v, want seq %d", e, err, want)
					return
				}
			}
		})
	}
	for range n {
		b.Publish(Event{Kind: "k"})
	}
	wg.Wait()
}

func TestKinds(t *testing.T) {
	k := Kinds()
	for _, want := range []string{"role", "disk", "connection", "peer-disk", "leader", "primary", "epoch", "lease", "split-brain", "resync", "member",
		"raid-health", "raid-member", "raid-op", "lost"} {
		if !slices.Contains(k, want) {
			t.Errorf("Kinds() lacks %q", want)
		}
	}
	if slices.Contains(k, KindExistsEnd) {
		t.Errorf("Kinds() has %q", KindExistsEnd)
	}
}
