package e2e

import (
	"strings"
	"testing"
)

// writeRegion writes n random bytes at off through the Go NBD client in
// 64 KiB requests and flushes; every write must be acknowledged.
func writeRegion(t *testing.T, d *daemon, off, n int64, seed uint64) {
	t.Helper()
	if n == 0 {
		return
	}
	c := dialNBD(t, d)
	data := randomBytes(int(n), seed)
	const chunk = 64 * 1024
	for o := int64(0); o < n; o += chunk {
		if err := c.WriteAt(data[o:min(o+chunk, n)], off+o, false); err != nil {
			t.Fatalf("write at %d on %s: %v", off+o, d.spec.Name, err)
		}
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("flush on %s: %v", d.spec.Name, err)
	}
	c.Close()
}

// divergedPair is two nodes that both wrote while apart: node1 was primary
// and wrote aBytes; node2 was promoted and wrote bBytes; then both were
// demoted to secondary.
type divergedPair struct {
	c      *cluster
	a, b   *daemon
	hashA  string // backing files before the reconnect
	hashB  string
	epochA uint64
	epochB uint64
}

// diverge builds a diverged pair under a split-brain policy.
func diverge(t *testing.T, policy string, aBytes, bBytes int64) *divergedPair {
	t.Helper()
	return divergeCluster(t, clusterSpec{Nodes: 2, Size: 16 * MiB, Primary: 0, SplitBrain: policy}, aBytes, bBytes, true)
}

// divergeCluster is diverge on a cluster of spec; demoteB false leaves
// node2 primary.
func divergeCluster(t *testing.T, spec clusterSpec, aBytes, bBytes int64, demoteB bool) *divergedPair {
	t.Helper()
	c := startCluster(t, spec)
	a, b := c.Nodes[0], c.Nodes[1]
	waitInSync(t, a, "node2")
	writeRegion(t, a, 0, 2*MiB, 60) // common data, replicated
	waitInSync(t, a, "node2")

	a.Blockctl(t, "disconnect")
	b.Blockctl(t, "disconnect")
	waitConnection(t, a, "node2", "StandAlone")
	waitConnection(t, b, "node1", "StandAlone")
	writeRegion(t, a, 4*MiB, aBytes, 61)
	b.Blockctl(t, "primary")
	writeRegion(t, b, 8*MiB, bBytes, 62)
	a.Blockctl(t, "secondary")
	wantB := "primary"
	if demoteB {
		b.Blockctl(t, "secondary")
		wantB = "secondary"
	}
	ra, rb := repl(t, a), repl(t, b)
	if ra.Role != "secondary" || rb.Role != wantB {
		t.Fatalf("after the demotions: node1 %s, node2 %s; want secondary, %s", ra.Role, rb.Role, wantB)
	}
	p := &divergedPair{c: c, a: a, b: b, hashA: volumeHash(t, a), hashB: volumeHash(t, b), epochA: ra.Epoch, epochB: rb.Epoch}
	t.Logf("diverged: node1 wrote %d bytes (epoch %d, %d out of sync), node2 wrote %d bytes (epoch %d, %d out of sync)",
		aBytes, ra.Epoch, ra.peer("node2").OutOfSyncBytes, bBytes, rb.Epoch, rb.peer("node1").OutOfSyncBytes)
	return p
}

// expectResolved waits until the pair is connected and in sync with
// survivor as sync source, and checks that the victim now holds the
// survivor's data and the survivor kept its own.
func (p *divergedPair) expectResolved(t *testing.T, survivor *daemon) {
	t.Helper()
	victim, survHash := p.b, p.hashA
	if survivor == p.b {
		victim, survHash = p.a, p.hashB
	}
	waitInSync(t, survivor, victim.spec.Name)
	rv := waitRepl(t, victim, "victim UpToDate and connected", func(r *replStatusJSON) bool {
		q := r.peer(survivor.spec.Name)
		return r.Disk == "UpToDate" && q != nil && q.Connection == "Connected"
	})
	rs := repl(t, survivor)
	dv, ds := rv.peer(survivor.spec.Name).Decision, rs.peer(victim.spec.Name).Decision
	t.Logf("%s (victim) decided: %s", victim.spec.Name, dv)
	t.Logf("%s (survivor) decided: %s", survivor.spec.Name, ds)
	if !strings.HasPrefix(dv, "BecomeSyncTarget") {
		t.Errorf("the victim %s's decision is %q, want BecomeSyncTarget", victim.spec.Name, dv)
	}
	if !strings.HasPrefix(ds, "BecomeSyncSource") {
		t.Errorf("the survivor %s's decision is %q, want BecomeSyncSource", survivor.spec.Name, ds)
	}
	if h := volumeHash(t, survivor); h != survHash {
		t.Errorf("the survivor %s's data changed in the resolution", survivor.spec.Name)
	}
	if h := volumeHash(t, victim); h != survHash {
		volumesEqual(t, survivor.VolumePath(clusterVolume), victim.VolumePath(clusterVolume))
		t.Errorf("the victim %s does not hold the survivor's data after the resync", victim.spec.Name)
	}
}

// connect runs blockctl connect on both nodes: node2 first, as it is the
// side that accepts (see TestReconnectOrder for the other order).
func (p *divergedPair) connect(t *testing.T) {
	t.Helper()
	p.b.Blockctl(t, "connect")
	p.a.Blockctl(t, "connect")
}

// TestSplitBrain builds a split brain (both nodes wrote while
// disconnected) and reconnects under each policy.
func TestSplitBrain(t *testing.T) {
	t.Run("disconnect", func(t *testing.T) {
		p := diverge(t, "disconnect", 1*MiB, 1*MiB)
		if p.hashA == p.hashB {
			t.Fatal("the two sides hold the same data after both wrote")
		}
		p.connect(t)
		for _, x := range [][2]*daemon{{p.a, p.b}, {p.b, p.a}} {
			q := waitPeer(t, x[0], x[1].spec.Name, "StandAlone after a split brain", func(q *peerStatusJSON) bool {
				return q.Connection == "StandAlone" && strings.Contains(q.LastError, "split brain")
			})
			t.Logf("%s: %s, last_error %q", x[0].spec.Name, q.Connection, q.LastError)
		}
		if volumeHash(t, p.a) != p.hashA || volumeHash(t, p.b) != p.hashB {
			t.Errorf("an unresolved split brain changed data on disk")
		}
		// The operator picks node2 as the victim.
		p.b.Blockctl(t, "connect", "--discard-my-data")
		p.a.Blockctl(t, "connect")
		p.expectResolved(t, p.a)
	})
	t.Run("discard-zero-changes", func(t *testing.T) {
		// node2 is promoted but writes nothing: it is the victim.
		p := diverge(t, "discard-zero-changes", 1*MiB, 0)
		p.connect(t)
		p.expectResolved(t, p.a)
	})
	t.Run("discard-least-changes", func(t *testing.T) {
		// node1 changes fewer blocks: it is the victim.
		p := diverge(t, "discard-least-changes", 512*1024, 2*MiB)
		p.connect(t)
		p.expectResolved(t, p.b)
	})
	t.Run("discard-younger-primary", func(t *testing.T) {
		// node2 became primary last: it is the victim, though it wrote
		// more.
		p := diverge(t, "discard-younger-primary", 512*1024, 2*MiB)
		p.connect(t)
		p.expectResolved(t, p.a)
	})
	t.Run("victim-still-primary", func(t *testing.T) {
		// discard-younger-primary picks node2, which is still primary: a
		// primary is never made a sync target, so both refuse until it
		// is demoted.
		p := divergeCluster(t, clusterSpec{Nodes: 2, Size: 16 * MiB, Primary: 0, SplitBrain: "discard-younger-primary"}, 512*1024, 512*1024, false)
		p.connect(t)
		for _, x := range [][2]*daemon{{p.a, p.b}, {p.b, p.a}} {
			q := waitPeer(t, x[0], x[1].spec.Name, "refused: the primary would be the sync target", func(q *peerStatusJSON) bool {
				return q.Connection == "StandAlone" && strings.Contains(q.LastError, "demote it first")
			})
			t.Logf("%s: %s, last_error %q", x[0].spec.Name, q.Connection, q.LastError)
		}
		if volumeHash(t, p.a) != p.hashA || volumeHash(t, p.b) != p.hashB {
			t.Errorf("a refused resolution changed data on disk")
		}
		p.b.Blockctl(t, "secondary")
		p.connect(t)
		p.expectResolved(t, p.a)
	})
	t.Run("discard-older-primary", func(t *testing.T) {
		// node1 became primary first: it is the victim, though it wrote
		// more.
		p := diverge(t, "discard-older-primary", 2*MiB, 512*1024)
		p.connect(t)
		p.expectResolved(t, p.b)
	})
}

// TestReplicationReconnectOrder runs blockctl connect on both nodes of a
// pair that is StandAlone on both sides, node1 (the node that dials)
// first. node1's first attempt reaches node2 while node2 is still
// StandAlone and is refused; that must not stop node1 from trying again
// once node2 is told to connect too: the order of two operator commands
// on two machines cannot matter. Two cases: after blockctl disconnect on
// both, and the documented recovery from a split brain whose victim is
// node1 ("connect --discard-my-data" on the victim, then "connect" on the
// other).
func TestReplicationReconnectOrder(t *testing.T) {
	// dialerFirst connects node1 with args, lets its attempt reach node2
	// and end, then connects node2.
	dialerFirst := func(t *testing.T, c *cluster, args ...string) {
		t.Helper()
		a, b := c.Nodes[0], c.Nodes[1]
		px := c.proxy(0, 1)
		ended := px.ended.Load()
		a.Blockctl(t, append([]string{"connect"}, args...)...)
		waitRepl(t, a, "node1's connection attempt to end (seen by the proxy)", func(*replStatusJSON) bool {
			return px.ended.Load() > ended
		})
		q := repl(t, a).peer("node2")
		t.Logf("node1 after its attempt: %s, last_error %q", q.Connection, q.LastError)
		b.Blockctl(t, "connect")
	}
	// gaveUp fails the test if node1's link is StandAlone: it never
	// retries on its own from there.
	gaveUp := func(t *testing.T, r *replStatusJSON) {
		t.Helper()
		if p := r.peer("node2"); p.Connection == "StandAlone" {
			t.Fatalf("node1 gave up: its link to node2 is StandAlone (%q) although both nodes were told to connect; "+
				"only another blockctl connect on node1 brings the link back", p.LastError)
		}
	}

	t.Run("after-disconnect", func(t *testing.T) {
		c := startCluster(t, clusterSpec{Nodes: 2, Size: 16 * MiB, Primary: 0, Proxied: [][2]int{{0, 1}}})
		a, b := c.Nodes[0], c.Nodes[1]
		waitInSync(t, a, "node2")
		a.Blockctl(t, "disconnect")
		b.Blockctl(t, "disconnect")
		waitConnection(t, a, "node2", "StandAlone")
		waitConnection(t, b, "node1", "StandAlone")
		dialerFirst(t, c)
		waitRepl(t, a, "node2 in sync again", func(r *replStatusJSON) bool {
			gaveUp(t, r)
			return inSync(r.peer("node2"))
		})
	})
	t.Run("split-brain-victim-node1", func(t *testing.T) {
		p := divergeCluster(t, clusterSpec{Nodes: 2, Size: 16 * MiB, Primary: 0, Proxied: [][2]int{{0, 1}}}, 1*MiB, 1*MiB, true)
		p.connect(t)
		waitPeer(t, p.a, "node2", "StandAlone after a split brain", func(q *peerStatusJSON) bool {
			return q.Connection == "StandAlone" && strings.Contains(q.LastError, "split brain")
		})
		waitPeer(t, p.b, "node1", "StandAlone after a split brain", func(q *peerStatusJSON) bool {
			return q.Connection == "StandAlone" && strings.Contains(q.LastError, "split brain")
		})
		dialerFirst(t, p.c, "--discard-my-data")
		waitRepl(t, p.a, "node1 resynced from node2", func(r *replStatusJSON) bool {
			gaveUp(t, r)
			return r.Disk == "UpToDate" && r.peer("node2").Connection == "Connected"
		})
		p.expectResolved(t, p.b)
	})
}
