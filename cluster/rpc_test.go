package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// httpNet serves every member's Handler on its own test server and routes
// HTTPRemote's connections to it, unless the simulated network is cut.
type httpNet struct {
	mu      sync.Mutex
	servers map[string]*httptest.Server
}

func (h *httpNet) remote(n *simNet, from string) Remote {
	return NewHTTPRemote(func(ctx context.Context, addr string) (net.Conn, error) {
		// The members' Raft addresses are bare names: HTTP adds :80.
		addr, _, _ = net.SplitHostPort(addr)
		n.mu.Lock()
		ok := n.reachable(from, addr)
		n.mu.Unlock()
		if !ok {
			return nil, fmt.Errorf("%s unreachable from %s", addr, from)
		}
		h.mu.Lock()
		srv := h.servers[addr]
		h.mu.Unlock()
		if srv == nil {
			return nil, fmt.Errorf("no server for %s yet", addr)
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", srv.Listener.Addr().String())
	})
}

// TestMemberOverHTTP runs a failover with every member-to-leader call over
// HTTPRemote and Member.Handler: heartbeats keep the lease, a follower's
// Outdated report is forwarded, a refusal comes back typed.
func TestMemberOverHTTP(t *testing.T) {
	h := &httpNet{servers: map[string]*httptest.Server{}}
	n := newSimNetWith(t, []string{"a", "b"}, []string{"w"}, "a", h.remote)
	for name, sm := range n.members {
		srv := httptest.NewServer(sm.m.Handler())
		t.Cleanup(srv.Close)
		h.mu.Lock()
		h.servers[name] = srv
		h.mu.Unlock()
	}
	if p := n.waitServing(t, ""); p != "a" {
		t.Fatalf("first primary %s", p)
	}
	if n.run(100*time.Millisecond) == 0 {
		t.Fatal("no write acknowledged")
	}
	// A refused command proposed on a follower comes back as a
	// *RefusedError naming the rule.
	l := n.leader(t, "")
	var follower string
	for name := range n.members {
		if name != l {
			follower = name
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := n.members[follower].m.Apply(ctx, Command{Op: OpPromote, Volume: "v", Node: "w", Epoch: 2})
	var ref *RefusedError
	if !errors.As(err, &ref) || ref.Rule != RuleWitnessNotPrimary {
		t.Fatalf("forwarded refusal: %v (%T)", err, err)
	}
	// The follower's Handler does not act as leader.
	_, err = (h.remote(n, "x")).Apply(ctx, raft.ServerAddress(follower), Command{Op: OpSetPreferred, Volume: "v"})
	var nl *NotLeaderError
	if !errors.As(err, &nl) || nl.Leader != l {
		t.Fatalf("apply on follower %s: %v, want not-leader naming %s", follower, err, l)
	}
	n.isolate("a")
	if p := n.waitServing(t, "a"); p != "b" {
		t.Fatalf("new primary %s", p)
	}
	n.heal()
	n.run(200 * time.Millisecond)
	n.assertSafe(t)
}
