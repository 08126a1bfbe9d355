package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// A follower's read barrier returns once it has applied what the leader
// had committed; one cut off from the leader says "no quorum" instead, and
// its heartbeat-based freshness says it is stale, until it is healed.
func TestReadBarrier(t *testing.T) {
	n := newSimNet(t, []string{"a", "b"}, []string{"w"}, "a")
	n.waitServing(t, "")
	leader := n.leader(t, "")
	var follower string
	for _, name := range []string{"a", "b", "w"} {
		if name != leader {
			follower = name
			break
		}
	}
	f, l := n.members[follower].m, n.members[leader].m
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.ReadBarrier(ctx); err != nil {
		t.Fatalf("read barrier on follower %s: %v", follower, err)
	}
	if err := l.ReadBarrier(ctx); err != nil {
		t.Fatalf("read barrier on the leader %s: %v", leader, err)
	}

	n.isolate(follower)
	if _, err := l.Apply(ctx, Command{Op: OpSetPreferred, Volume: "v", Node: "b"}); err != nil {
		t.Fatalf("set-preferred on the leader: %v", err)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 3*testTiming.FailoverTimeout)
	err := f.ReadBarrier(short)
	cancelShort()
	var se *StaleError
	if !errors.As(err, &se) || !se.NoQuorum || !strings.HasPrefix(err.Error(), "no quorum: cluster state on "+follower+" may be stale (") {
		t.Fatalf("read barrier on isolated %s: %v (%T), want a no-quorum *StaleError", follower, err, err)
	}
	if got := f.State().Volumes["v"].Preferred; got == "b" {
		t.Fatalf("isolated %s applied the leader's new command: the test cut nothing", follower)
	}
	if st := f.Status(); !strings.HasPrefix(st.Stale, "no quorum: ") || !st.CaughtUp {
		t.Fatalf("isolated %s's status: stale %q caught up %v, want no quorum and caught up (it was current before)", follower, st.Stale, st.CaughtUp)
	}

	n.heal()
	if err := f.ReadBarrier(ctx); err != nil {
		t.Fatalf("read barrier on %s after healing: %v", follower, err)
	}
	if got := f.State().Volumes["v"].Preferred; got != "b" {
		t.Fatalf("after its read barrier %s's state has preferred %q, want the leader's b", follower, got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.Status().Stale != "" {
		if time.Now().After(deadline) {
			t.Fatalf("healed %s's status stays stale: %s", follower, f.Status().Stale)
		}
		time.Sleep(testTiming.HeartbeatInterval)
	}
}

// The last command at or below an index skips the entries the FSM never
// sees and stops at the compacted part of the log.
func TestLastCommandAtOrBelow(t *testing.T) {
	store := raft.NewInmemStore()
	types := []raft.LogType{raft.LogCommand, raft.LogNoop, raft.LogCommand, raft.LogBarrier, raft.LogConfiguration, raft.LogNoop}
	var logs []*raft.Log
	for i, ty := range types {
		logs = append(logs, &raft.Log{Index: uint64(i + 5), Term: 1, Type: ty})
	}
	if err := store.StoreLogs(logs); err != nil { // indexes 5..10
		t.Fatal(err)
	}
	m := &Member{cfg: MemberConfig{LogStore: store}}
	for _, c := range []struct{ idx, floor, want uint64 }{
		{10, 0, 7},  // noop, configuration, barrier skipped
		{7, 0, 7},   // a command itself
		{6, 0, 5},   // noop skipped
		{10, 7, 7},  // nothing above the floor: the floor
		{10, 8, 8},  //
		{4, 0, 4},   // compacted: the first index it lacks
		{12, 0, 12}, // beyond the log (not written yet): the FSM must get there
	} {
		got, err := m.lastCommandAtOrBelow(c.idx, c.floor)
		if err != nil || got != c.want {
			t.Errorf("lastCommandAtOrBelow(%d, %d) = %d, %v; want %d", c.idx, c.floor, got, err, c.want)
		}
	}
}
