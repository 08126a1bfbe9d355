package authnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/blockrep/blockrep/replica/wire"
)

// listFSM records the commands it applies.
type listFSM struct {
	mu      sync.Mutex
	entries []string
}

func (f *listFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries = append(f.entries, string(l.Data))
	return nil
}

func (f *listFSM) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.entries)
}

func (f *listFSM) Snapshot() (raft.FSMSnapshot, error) { return listSnapshot(f.list()), nil }

func (f *listFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var e []string
	if err := json.NewDecoder(rc).Decode(&e); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries = e
	return nil
}

type listSnapshot []string

func (s listSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode([]string(s)); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (listSnapshot) Release() {}

type raftNode struct {
	id    string
	mux   *Mux
	r     *raft.Raft
	fsm   *listFSM
	logs  *raft.InmemStore
	addr  raft.ServerAddress
	drops chan error // handshake failures at this node's mux
}

// startRaftNode runs a Raft node whose transport is a RaftStream on a Mux
// of its own. Cleanup shuts both down.
func startRaftNode(t *testing.T, id string, secret []byte) *raftNode {
	t.Helper()
	cfg := testConfig(t, id)
	cfg.Secret = secret
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMux(ln, cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := &raftNode{id: id, mux: m, fsm: &listFSM{}, logs: raft.NewInmemStore(), drops: make(chan error, 1024)}
	m.onDrop = func(_ net.Addr, stage string, err error) {
		if stage == "handshake" {
			select {
			case n.drops <- err:
			default:
			}
		}
	}
	stream := NewRaftStream(m, cfg)
	serveErr := make(chan error, 1)
	go func() { serveErr <- m.Serve(context.Background()) }()
	trans := raft.NewNetworkTransport(stream, 3, 2*time.Second, io.Discard)
	n.addr = trans.LocalAddr()

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(id)
	rc.HeartbeatTimeout = 200 * time.Millisecond
	rc.ElectionTimeout = 200 * time.Millisecond
	rc.LeaderLeaseTimeout = 100 * time.Millisecond
	rc.CommitTimeout = 10 * time.Millisecond
	rc.LogOutput = io.Discard
	n.r, err = raft.NewRaft(rc, n.fsm, n.logs, raft.NewInmemStore(), raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		trans.Close()
		m.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.r.Shutdown().Error(); err != nil { // also closes the transport
			t.Errorf("%s: raft shutdown: %v", id, err)
		}
		if err := m.Close(); err != nil {
			t.Errorf("%s: mux close: %v", id, err)
		}
		if err := <-serveErr; err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s: Serve: %v", id, err)
		}
	})
	return n
}

func leaderOf(t *testing.T, nodes []*raftNode) *raftNode {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			if n.r.State() == raft.Leader {
				return n
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no leader elected")
	return nil
}

// apply commits cmds through whichever node leads, retrying only when the
// entry was refused before it was appended (ErrNotLeader).
func apply(t *testing.T, nodes []*raftNode, cmds ...string) {
	t.Helper()
	for _, cmd := range cmds {
		for {
			err := leaderOf(t, nodes).r.Apply([]byte(cmd), 5*time.Second).Error()
			if err == nil {
				break
			}
			if !errors.Is(err, raft.ErrNotLeader) {
				t.Fatalf("Apply(%q): %v", cmd, err)
			}
		}
	}
}

func waitEntries(t *testing.T, nodes []*raftNode, want []string) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for _, n := range nodes {
		for !slices.Equal(n.fsm.list(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("%s applied %q, want %q", n.id, n.fsm.list(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func TestRaftOverRaftStream(t *testing.T) {
	var nodes []*raftNode
	var servers []raft.Server
	for i := 1; i <= 3; i++ {
		n := startRaftNode(t, fmt.Sprintf("n%d", i), testSecret)
		nodes = append(nodes, n)
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(n.id), Address: n.addr})
	}
	for _, n := range nodes {
		if err := n.r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
			t.Fatalf("%s: bootstrap: %v", n.id, err)
		}
	}
	want := []string{"a1", "a2", "a3", "a4", "a5"}
	apply(t, nodes, want...)
	waitEntries(t, nodes, want)

	// A node with the wrong secret: the leader may list it as a voter
	// (three of four still make a quorum), but it never gets an entry.
	intruder := startRaftNode(t, "n4", []byte("not-the-cluster-secret-at-all"))
	leader := leaderOf(t, nodes)
	err := leader.r.AddVoter(raft.ServerID(intruder.id), intruder.addr, 0, 5*time.Second).Error()
	t.Logf("AddVoter(n4) with the wrong secret: %v", err)
	more := []string{"b1", "b2", "b3"}
	apply(t, nodes, more...)
	want = append(want, more...)
	waitEntries(t, nodes, want)

	// Wait until the intruder's mux has refused the leader's authenticated
	// dials more than once, i.e. replication to it was really attempted.
	for refused := 0; refused < 2; {
		select {
		case err := <-intruder.drops:
			if !errors.Is(err, wire.ErrAuthFailed) {
				t.Fatalf("intruder dropped a conn with %v, want %v", err, wire.ErrAuthFailed)
			}
			refused++
		case <-time.After(waitFor):
			t.Fatalf("intruder refused %d dials, want 2: the leader never tried it", refused)
		}
	}
	if got := intruder.fsm.list(); len(got) != 0 {
		t.Fatalf("intruder applied %q", got)
	}
	if last, err := intruder.logs.LastIndex(); err != nil || last != 0 {
		t.Fatalf("intruder log last index %d (%v), want 0", last, err)
	}
	if addr, id := intruder.r.LeaderWithID(); addr != "" || id != "" {
		t.Fatalf("intruder knows leader %s at %s", id, addr)
	}
}
