package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/blockrep/blockrep/replica"
)

// raftNode is one in-memory raft member running an FSM.
type raftNode struct {
	id    raft.ServerID
	fsm   *FSM
	raft  *raft.Raft
	trans *raft.InmemTransport
}

// newRaftGroup starts n members connected over raft's in-memory transport
// and bootstraps them.
func newRaftGroup(t *testing.T, n int) []*raftNode {
	t.Helper()
	var nodes []*raftNode
	var servers []raft.Server
	for i := range n {
		id := raft.ServerID(fmt.Sprintf("m%d", i+1))
		addr, trans := raft.NewInmemTransport(raft.ServerAddress(id))
		nodes = append(nodes, &raftNode{id: id, fsm: NewFSM(), trans: trans})
		servers = append(servers, raft.Server{ID: id, Address: addr})
	}
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b {
				a.trans.Connect(b.trans.LocalAddr(), b.trans)
			}
		}
	}
	for _, nd := range nodes {
		cfg := raft.DefaultConfig()
		cfg.LocalID = nd.id
		cfg.HeartbeatTimeout = 50 * time.Millisecond
		cfg.ElectionTimeout = 50 * time.Millisecond
		cfg.LeaderLeaseTimeout = 50 * time.Millisecond
		cfg.CommitTimeout = 5 * time.Millisecond
		cfg.LogOutput = io.Discard
		store := raft.NewInmemStore()
		r, err := raft.NewRaft(cfg, nd.fsm, store, store, raft.NewInmemSnapshotStore(), nd.trans)
		if err != nil {
			t.Fatal(err)
		}
		nd.raft = r
	}
	if err := nodes[0].raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, nd := range nodes {
			_ = nd.raft.Shutdown().Error()
		}
	})
	return nodes
}

func leaderOf(t *testing.T, nodes []*raftNode) *raftNode {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, nd := range nodes {
			if nd.raft.State() == raft.Leader {
				return nd
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no leader elected")
	return nil
}

func propose(t *testing.T, leader *raftNode, c Command) Applied {
	t.Helper()
	f := leader.raft.Apply(c.Encode(), 5*time.Second)
	if err := f.Error(); err != nil {
		t.Fatalf("%v: %v", c.Op, err)
	}
	return f.Response().(Applied)
}

// TestFSMReplicates runs commands through a three-member raft group: every
// member ends with byte-identical state, refusals come back to the proposer
// and change nothing anywhere, and a snapshot restores the same state.
func TestFSMReplicates(t *testing.T) {
	nodes := newRaftGroup(t, 3)
	leader := leaderOf(t, nodes)
	for _, c := range []Command{
		{Op: OpAddNode, Node: "node1", Kind: DataNode},
		{Op: OpAddNode, Node: "node2", Kind: DataNode},
		{Op: OpAddNode, Node: "w", Kind: Witness},
		{Op: OpAddVolume, Volume: "v", Disk: replica.UpToDate},
		{Op: OpPromote, Volume: "v", Node: "node1", Epoch: 1},
	} {
		if a := propose(t, leader, c); a.Err != nil {
			t.Fatalf("%v: refused: %v", c.Op, a.Err)
		}
	}
	// A second arbiter racing for the same epoch is refused, and the
	// witness is never primary.
	for _, c := range []Command{
		{Op: OpPromote, Volume: "v", Node: "node2", Epoch: 1},
		{Op: OpPromote, Volume: "v", Node: "w", Epoch: 2, Force: true, Reason: "test"},
	} {
		a := propose(t, leader, c)
		var re *RefusedError
		if !errors.As(a.Err, &re) {
			t.Fatalf("%v %s epoch %d: %v, want a refusal", c.Op, c.Node, c.Epoch, a.Err)
		}
	}
	if err := leader.raft.Barrier(5 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	want, _ := leader.fsm.State().MarshalBinary()
	deadline := time.Now().Add(10 * time.Second)
	for _, nd := range nodes {
		for {
			got, _ := nd.fsm.State().MarshalBinary()
			if bytes.Equal(got, want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not converge:\n%s\nwant\n%s", nd.id, got, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if v := leader.fsm.State().Volumes["v"]; v.Primary != "node1" || v.Epoch != 1 {
		t.Fatalf("volume state %+v, want node1 primary at epoch 1", v)
	}

	// Snapshot and restore into a fresh FSM.
	snap, err := leader.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	fresh := NewFSM()
	if err := fresh.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if got, _ := fresh.State().MarshalBinary(); !bytes.Equal(got, want) {
		t.Fatalf("restored state differs:\n%s\nwant\n%s", got, want)
	}
	if err := fresh.Restore(io.NopCloser(bytes.NewReader([]byte("junk")))); err == nil {
		t.Fatal("a damaged snapshot was restored")
	}
	if got, _ := fresh.State().MarshalBinary(); !bytes.Equal(got, want) {
		t.Fatal("a refused restore changed the state")
	}
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { return nil }
