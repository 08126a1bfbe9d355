package e2e

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// logCount counts the lines of d's log, since its latest start, that
// contain every one of words.
func logCount(t *testing.T, d *daemon, words ...string) int {
	t.Helper()
	log, err := os.ReadFile(d.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range bytes.Split(lastStart(log), []byte("\n")) {
		ok := true
		for _, w := range words {
			ok = ok && bytes.Contains(l, []byte(w))
		}
		if ok {
			n++
		}
	}
	return n
}

// TestPeerWrongSecret starts a pair in which node2 has a different shared
// secret, or names a different cluster: the link never comes up, node1's
// status and both logs say why, and node2 receives no data. With the
// right secret and cluster name the same pair connects.
func TestPeerWrongSecret(t *testing.T) {
	for _, tc := range []struct {
		name      string
		configure func(c string) func(i int, s *daemonSpec)
		fix       func(c *cluster, s *daemonSpec)
		// what node1's last_error and node2's log must say
		dialerErr, acceptorLog string
	}{
		{
			name: "secret",
			configure: func(dir string) func(i int, s *daemonSpec) {
				return func(i int, s *daemonSpec) {
					if i == 1 {
						s.Replication.SecretFile = newSecretFile(t, dir, "other.secret")
					}
				}
			},
			fix:         func(c *cluster, s *daemonSpec) { s.Replication.SecretFile = c.SecretFile },
			dialerErr:   "authentication failed",
			acceptorLog: "authentication failed",
		},
		{
			name: "cluster",
			configure: func(string) func(i int, s *daemonSpec) {
				return func(i int, s *daemonSpec) {
					if i == 1 {
						s.Replication.Cluster = "other"
					}
				}
			},
			fix:         func(c *cluster, s *daemonSpec) { s.Replication.Cluster = "e2e" },
			dialerErr:   "cluster name mismatch",
			acceptorLog: "cluster name mismatch",
		},
		{
			// Frame MACs on one end, none on the other: refused at the
			// handshake, before any frame could go unprotected.
			name: "security",
			configure: func(string) func(i int, s *daemonSpec) {
				return func(i int, s *daemonSpec) {
					if i == 1 {
						s.Replication.Security = "none"
					}
				}
			},
			fix:         func(c *cluster, s *daemonSpec) { s.Replication.Security = "" },
			dialerErr:   "link protection differs",
			acceptorLog: "link protection differs",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startCluster(t, clusterSpec{Nodes: 2, Size: 16 * MiB, Primary: 0, Configure: tc.configure(t.TempDir())})
			a, b := c.Nodes[0], c.Nodes[1]
			// node1 keeps trying and keeps failing, and node2 says why —
			// once a minute per source, not once per attempt.
			waitRepl(t, a, "three failed handshakes in node1's log", func(*replStatusJSON) bool {
				return logCount(t, a, "handshake failed", tc.dialerErr) >= 3
			})
			waitRepl(t, b, "a refused handshake in node2's log", func(*replStatusJSON) bool {
				return logCount(t, b, "handshake failed", tc.acceptorLog) >= 1
			})
			if na, nb := logCount(t, a, "handshake failed"), logCount(t, b, "handshake failed"); 3*nb > na {
				t.Errorf("node2 logged %d refused handshakes for node1's %d attempts: its log is not rate-limited", nb, na)
			}
			q := repl(t, a).peer("node2")
			t.Logf("node1: %s, last_error %q", q.Connection, q.LastError)
			if q.Connection != "Connecting" || !strings.Contains(q.LastError, tc.dialerErr) {
				t.Errorf("node1's link to node2: %s, last_error %q; want Connecting with %q in last_error", q.Connection, q.LastError, tc.dialerErr)
			}
			if q.Decision != "" || q.BytesSent != 0 || q.ResyncBytesSent != 0 {
				t.Errorf("node1 got past the handshake: decision %q, %d bytes sent", q.Decision, q.BytesSent)
			}
			rb := repl(t, b)
			if p := rb.peer("node1"); rb.Disk != "Inconsistent" || p.Connection == "Connected" || p.Decision != "" {
				t.Errorf("node2: disk %s, link %s, decision %q; want Inconsistent and never connected", rb.Disk, p.Connection, p.Decision)
			}

			// The control: the same pair with matching settings connects.
			b.Stop()
			tc.fix(c, &b.spec)
			b.Start()
			waitInSync(t, a, "node2")
		})
	}
}

// TestEpochFencing deposes a primary behind its back: while the pair is
// disconnected, node2 is promoted (a newer epoch) and demoted again. When
// the pair reconnects, node1, still primary at the older epoch, is refused
// as fenced on both sides, and nothing it wrote meanwhile reaches node2.
// The deposed primary stays deposed across a restart of its daemon.
func TestEpochFencing(t *testing.T) {
	// depose builds the situation: node1 primary, node2 promoted and
	// demoted behind its back, node1 writing on meanwhile. It returns
	// node1's epoch before and node2's hash.
	depose := func(t *testing.T, policy string) (*cluster, uint64, string) {
		t.Helper()
		c := startCluster(t, clusterSpec{Nodes: 2, Size: 16 * MiB, Primary: 0, SplitBrain: policy})
		a, b := c.Nodes[0], c.Nodes[1]
		waitInSync(t, a, "node2")
		writeRegion(t, a, 0, 1*MiB, 70)
		ra := waitInSync(t, a, "node2")

		a.Blockctl(t, "disconnect")
		b.Blockctl(t, "disconnect")
		waitConnection(t, a, "node2", "StandAlone")
		waitConnection(t, b, "node1", "StandAlone")
		b.Blockctl(t, "primary")
		writeRegion(t, b, 8*MiB, 512*1024, 72) // acknowledged at the new epoch
		b.Blockctl(t, "secondary")
		rb := repl(t, b)
		if rb.Role != "secondary" || rb.Epoch <= ra.Epoch {
			t.Fatalf("node2 after promote and demote: %s at epoch %d; want secondary at an epoch above node1's %d", rb.Role, rb.Epoch, ra.Epoch)
		}
		// The deposed primary goes on writing: a resync would carry this.
		writeRegion(t, a, 2*MiB, 2*MiB, 71)
		if r := repl(t, a); r.Role != "primary" || r.Epoch != ra.Epoch {
			t.Fatalf("node1: %s at epoch %d, want still primary at %d", r.Role, r.Epoch, ra.Epoch)
		}
		t.Logf("node1 primary at epoch %d, node2 secondary knows epoch %d", ra.Epoch, rb.Epoch)
		return c, ra.Epoch, volumeHash(t, b)
	}
	// expectFenced connects both and checks that node1 is refused as a
	// deposed primary and that node2 keeps its data.
	expectFenced := func(t *testing.T, c *cluster, hashB string) {
		t.Helper()
		a, b := c.Nodes[0], c.Nodes[1]
		sentBefore := repl(t, a).peer("node2").BytesSent
		b.Blockctl(t, "connect")
		a.Blockctl(t, "connect")
		q := waitPeer(t, b, "node1", "the connect decided", func(q *peerStatusJSON) bool { return q.Connection != "Connecting" })
		if !strings.Contains(q.LastError, "fenced") {
			t.Errorf("node2 did not refuse the deposed primary node1 as fenced: link %s, decision %q, last_error %q", q.Connection, q.Decision, q.LastError)
			if q.Connection != "StandAlone" {
				waitInSync(t, a, "node2")
				if volumeHash(t, b) != hashB {
					t.Errorf("node2's data was overwritten by the deposed primary: the writes node2 acknowledged as primary are lost")
				}
			}
			return
		}
		for _, x := range [][2]*daemon{{a, b}, {b, a}} {
			// Each side refuses on its own and goes StandAlone. node1
			// may have refused before the operator's connect reached
			// it (a restarted node dials at once): then that connect
			// makes it try again, and node2, StandAlone, refuses it
			// with the same reason — node1 stays Connecting.
			q := waitPeer(t, x[0], x[1].spec.Name, "refused as fenced", func(q *peerStatusJSON) bool {
				linkDown := q.Connection == "StandAlone" || x[0] == a && q.Connection == "Connecting"
				return linkDown && strings.Contains(q.LastError, "epoch") && strings.Contains(q.LastError, "fenced")
			})
			t.Logf("%s: %s, last_error %q", x[0].spec.Name, q.Connection, q.LastError)
		}
		if h := volumeHash(t, b); h != hashB {
			t.Errorf("node2's data changed: the fenced primary's writes reached it")
		}
		if q := repl(t, a).peer("node2"); q.BytesSent != sentBefore || q.Connection == "Connected" {
			t.Errorf("node1 sent %d bytes to node2 after the fencing (link %s)", q.BytesSent-sentBefore, q.Connection)
		}
		if r := repl(t, b); r.Disk != "UpToDate" || r.Role != "secondary" {
			t.Errorf("node2 after refusing the fenced primary: %s %s, want secondary UpToDate", r.Role, r.Disk)
		}
	}

	t.Run("promoted-and-demoted", func(t *testing.T) {
		c, _, hashB := depose(t, "discard-least-changes")
		expectFenced(t, c, hashB)
	})
	t.Run("deposed-primary-restarted", func(t *testing.T) {
		// node1's daemon restarts (clean SIGTERM, configured primary)
		// before the pair reconnects. It is still the primary that
		// node2's promotion deposed, and node2 has writes of its own
		// from that newer epoch.
		c, epoch, hashB := depose(t, "discard-least-changes")
		a := c.Nodes[0]
		a.Stop()
		a.Start()
		r := repl(t, a)
		t.Logf("node1 restarted: %s at epoch %d (was %d)", r.Role, r.Epoch, epoch)
		expectFenced(t, c, hashB)
	})
}
