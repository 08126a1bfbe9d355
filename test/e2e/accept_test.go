package e2e

import (
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// procFDs counts the open file descriptors of process pid.
func procFDs(t *testing.T, pid int) int {
	t.Helper()
	es, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// TestReplicationListenerSurvivesFDExhaustion runs the secondary (which
// accepts the peer link) out of file descriptors: its RLIMIT_NOFILE is
// lowered to what it holds plus four, connections to its replication port
// take those four and queue behind them, so its accept fails with EMFILE;
// then the peer link is cut, so the primary has to reconnect into the
// exhausted listener. When the pressure ends (the connections close, the
// limit is restored) the primary reconnects by itself and a write is
// replicated: both copies end up equal.
func TestReplicationListenerSurvivesFDExhaustion(t *testing.T) {
	const spare = 4
	c := startCluster(t, clusterSpec{Nodes: 2, Size: 16 * MiB, Primary: 0, Proxied: [][2]int{{0, 1}}})
	n1, n2 := c.Nodes[0], c.Nodes[1]
	px := c.proxy(0, 1)
	waitInSync(t, n1, "node2")

	pid := n2.cmd.Process.Pid
	var orig unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &orig); err != nil {
		t.Fatalf("prlimit of node2 (pid %d): %v", pid, err)
	}
	restored := false
	restore := func() {
		if restored {
			return
		}
		restored = true
		if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &orig, nil); err != nil && n2.running() {
			t.Errorf("restoring node2's RLIMIT_NOFILE: %v", err)
		}
	}
	t.Cleanup(restore)
	limit := unix.Rlimit{Cur: uint64(procFDs(t, pid) + spare), Max: orig.Max}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &limit, nil); err != nil {
		t.Fatalf("lowering node2's RLIMIT_NOFILE to %d: %v", limit.Cur, err)
	}
	t.Logf("node2 (pid %d): RLIMIT_NOFILE %d (was %d)", pid, limit.Cur, orig.Cur)

	// Twice as many connections as there are descriptors left: node2
	// takes the first ones, the rest queue in the backlog.
	var conns []net.Conn
	closeConns := func() {
		for _, c := range conns {
			c.Close()
		}
		conns = nil
	}
	t.Cleanup(closeConns)
	for range 3 * spare {
		c, err := net.Dial("tcp", n2.spec.Replication.Listen)
		if err != nil {
			t.Fatalf("connection to node2's replication port: %v", err)
		}
		conns = append(conns, c)
	}
	deadline := time.Now().Add(waitTimeout)
	for procFDs(t, pid) < int(limit.Cur) {
		if time.Now().After(deadline) {
			t.Fatalf("node2 holds %d descriptors, never its limit %d", procFDs(t, pid), limit.Cur)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// The link breaks while node2 cannot accept: node1 must come back
	// through node2's listener.
	px.Cut()
	waitPeer(t, n1, "node2", "link cut", func(p *peerStatusJSON) bool { return p.Connection != "Connected" })
	// Keep the pressure until node2 says that accept failed; a daemon
	// that does not say so is a failure, checked below.
	for deadline := time.Now().Add(15 * time.Second); logCount(t, n2, "accept failed") == 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}

	closeConns()
	restore()
	t.Logf("pressure ended, node2 holds %d descriptors", procFDs(t, pid))
	waitInSync(t, n1, "node2")
	waitPeer(t, n2, "node1", "Connected", func(p *peerStatusJSON) bool { return p.Connection == "Connected" })
	if n := logCount(t, n2, "accept failed"); n == 0 {
		t.Errorf("node2's log has no line about the failed accepts")
	} else {
		t.Logf("node2 logged %d lines about failed accepts", n)
	}

	writeScattered(t, n1, 32, 64<<10, 2, 51)
	waitInSync(t, n1, "node2")
	n1.Stop()
	n2.Stop()
	sameVolumes(t, n1, n2)
}
