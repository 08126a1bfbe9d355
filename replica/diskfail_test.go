package replica

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"

	"github.com/blockrep/blockrep/block"
	"github.com/blockrep/blockrep/block/blocktest"
)

func TestIOErrorPolicyNames(t *testing.T) {
	for _, p := range []IOErrorPolicy{IOErrorDetach, IOErrorPassOn} {
		got, err := ParseIOErrorPolicy(p.String())
		if err != nil || got != p {
			t.Errorf("ParseIOErrorPolicy(%q) = %v, %v", p.String(), got, err)
		}
	}
	if _, err := ParseIOErrorPolicy("Detach"); err == nil {
		t.Error(`ParseIOErrorPolicy("Detach") accepted a name that is not exact`)
	}
}

// TestDecideIOError is the table of what an error of the local store
// means: only the disk's own failures detach it, and only under "detach".
func TestDecideIOError(t *testing.T) {
	raidErr := func(err error) error { return fmt.Errorf("raid: write /srv/vol0.img at 4096: %w", err) }
	for _, tc := range []struct {
		name   string
		policy IOErrorPolicy
		err    error
		want   IOErrorAction
	}{
		{"no error", IOErrorDetach, nil, IOErrorNone},
		{"EIO detaches", IOErrorDetach, raidErr(syscall.EIO), IOErrorDetachDisk},
		{"EROFS (a file system shut down or remounted read-only) detaches", IOErrorDetach, raidErr(syscall.EROFS), IOErrorDetachDisk},
		{"an unknown error detaches", IOErrorDetach, errors.New("something broke"), IOErrorDetachDisk},
		{"EIO under pass_on is passed on", IOErrorPassOn, raidErr(syscall.EIO), IOErrorReport},
		{"ENOSPC: the file system is full, the disk works", IOErrorDetach, raidErr(syscall.ENOSPC), IOErrorNoSpace},
		{"EDQUOT likewise", IOErrorDetach, raidErr(syscall.EDQUOT), IOErrorNoSpace},
		{"ENOSPC under pass_on", IOErrorPassOn, raidErr(syscall.ENOSPC), IOErrorNoSpace},
		{"out of range is the request's fault", IOErrorDetach, raidErr(block.ErrOutOfRange), IOErrorRequest},
		{"a fast zero that is not fast", IOErrorDetach, block.ErrNotFast, IOErrorRequest},
		{"a read-only store", IOErrorDetach, raidErr(block.ErrReadOnly), IOErrorRequest},
		{"a store closed at shutdown", IOErrorDetach, raidErr(os.ErrClosed), IOErrorRequest},
		{"EINVAL (unaligned)", IOErrorDetach, raidErr(syscall.EINVAL), IOErrorRequest},
		{"EOPNOTSUPP", IOErrorDetach, raidErr(syscall.EOPNOTSUPP), IOErrorRequest},
	} {
		if got := DecideIOError(tc.policy, tc.err); got != tc.want {
			t.Errorf("%s: DecideIOError(%v, %v) = %v, want %v", tc.name, tc.policy, tc.err, got, tc.want)
		}
	}
}

// peerDisk returns what n records of peer's disk.
func peerDisk(n *testNode, peer string) string {
	for _, p := range n.vol.Status().Peers {
		if p.Name == peer {
			return p.Disk
		}
	}
	return ""
}

// TestPrimaryDiskFailureStandalone: without a cluster, a primary whose
// store fails a write does not acknowledge it, detaches the disk (Diskless,
// every later I/O refused even though the store works again), tells the
// secondary, which the operator can then make primary: it goes on without
// the failed node. Restarted, the failed node comes back Inconsistent with
// no current generation and gets a full resync, not a claim to be UpToDate.
func TestPrimaryDiskFailureStandalone(t *testing.T) {
	c := newTestCluster(t, []Role{Primary, Secondary}, nil)
	p, s := c.nodes[0], c.nodes[1]
	c.waitConnected(p, s)
	before := randBytes(64 << 10)
	if err := p.vol.WriteAt(before, 0, true); err != nil {
		t.Fatal(err)
	}

	p.store.FailNext(blocktest.OpWrite, syscall.EIO, 1)
	if err := p.vol.WriteAt(randBytes(4096), 1<<20, true); err == nil {
		t.Fatal("a write the local store failed was acknowledged")
	}
	st := p.vol.Status()
	if st.Disk != "Diskless" || st.DiskFailed == "" {
		t.Fatalf("after the failed write: disk %s, disk_failed %q; want Diskless and the error", st.Disk, st.DiskFailed)
	}
	if err := p.vol.WriteAt(randBytes(4096), 2<<20, false); !errors.Is(err, ErrDiskFailed) {
		t.Errorf("a write after the failure (the store works again): %v, want ErrDiskFailed", err)
	}
	if err := p.vol.Flush(); !errors.Is(err, ErrDiskFailed) {
		t.Errorf("a flush after the failure: %v, want ErrDiskFailed", err)
	}
	if err := p.vol.ReadAt(make([]byte, 4096), 0); !errors.Is(err, ErrDiskFailed) {
		t.Errorf("a read after the failure: %v, want ErrDiskFailed", err)
	}
	if err := p.vol.Connect("", false); !errors.Is(err, ErrState) {
		t.Errorf("connect after the failure: %v, want ErrState", err)
	}
	if err := p.vol.SetRole(Primary, true); err != nil {
		t.Errorf("SetRole(Primary) on the failed primary: %v (it is primary already)", err)
	}

	waitFor(t, "the secondary to record the primary Diskless and lose the link", func() bool {
		return peerDisk(s, "n1") == "Diskless" && peerConn(s, "n1") != Connected
	})
	// The operator promotes the secondary; it writes without the failed
	// node (continue_alone is off: a Diskless peer may miss writes).
	if err := s.vol.SetRole(Primary, false); err != nil {
		t.Fatalf("promoting the secondary: %v", err)
	}
	after := randBytes(64 << 10)
	if err := s.vol.WriteAt(after, 4<<20, true); err != nil {
		t.Fatalf("the new primary's write without the failed node: %v", err)
	}
	got := make([]byte, len(before))
	if err := s.vol.ReadAt(got, 0); err != nil || !bytes.Equal(got, before) {
		t.Fatalf("the new primary lost the write acknowledged before the failure (err %v)", err)
	}

	// Restart the failed node with its store repaired.
	c.stop(p)
	c.start(p, Secondary)
	if st := p.vol.Status(); st.Disk != "Inconsistent" || st.DiskFailed != "" {
		t.Fatalf("the restarted node: disk %s (disk_failed %q), want Inconsistent", st.Disk, st.DiskFailed)
	}
	if l := p.vol.Local(); l.Fresh || l.Disk != Inconsistent {
		t.Fatalf("the restarted node reports %+v", l)
	}
	c.waitConnected(p, s)
	if d := p.vol.Status().Peers[0].Decision; !bytes.Contains([]byte(d), []byte("full")) {
		t.Errorf("the restarted node's connect decision %q, want a full resync", d)
	}
	waitFor(t, "the restarted node UpToDate", func() bool { return p.vol.Status().Disk == "UpToDate" })
	sameData(t, p, s)
}

// TestSecondaryDiskFailureStandalone: a secondary whose store fails a
// replicated write detaches, says it is Diskless before the link goes, and
// the primary goes on without it: the write is acknowledged (it is on the
// primary's disk), and so are the next ones.
func TestSecondaryDiskFailureStandalone(t *testing.T) {
	c := newTestCluster(t, []Role{Primary, Secondary}, nil)
	p, s := c.nodes[0], c.nodes[1]
	c.waitConnected(p, s)
	s.store.FailNext(blocktest.OpWrite, syscall.EIO, 1)
	if err := p.vol.WriteAt(randBytes(4096), 0, true); err != nil {
		t.Fatalf("the primary's write while the secondary's disk fails: %v", err)
	}
	if st := s.vol.Status(); st.Disk != "Diskless" || st.DiskFailed == "" {
		t.Fatalf("the secondary: disk %s, disk_failed %q; want Diskless", st.Disk, st.DiskFailed)
	}
	if l := s.vol.Local(); l.Failed == "" || l.Disk != Diskless {
		t.Fatalf("the secondary reports %+v, want its failure", l)
	}
	if peerDisk(p, "n2") != "Diskless" {
		t.Errorf("the primary records n2 as %s, want Diskless", peerDisk(p, "n2"))
	}
	if err := p.vol.WriteAt(randBytes(4096), 8192, false); err != nil {
		t.Fatalf("a later write on the primary: %v", err)
	}
	if err := s.vol.Promote(9, false); err == nil {
		t.Error("a Diskless secondary was promoted")
	}
}

// TestClusterPrimaryDiskFailure: with an Authority, a primary whose flush
// fails reports the failure (Local), refuses I/O, and can be demoted by
// the cluster although its store cannot flush; the peer is promoted at the
// next epoch and serves the data acknowledged before.
func TestClusterPrimaryDiskFailure(t *testing.T) {
	c, auths := newAuthCluster(t, FenceSuspend, nil)
	p, s := startInSync(t, c, auths)
	data := randBytes(32 << 10)
	if err := p.vol.WriteAt(data, 0, false); err != nil {
		t.Fatal(err)
	}
	committed := len(auths["n1"].commitsFor("n2"))
	p.store.FailNext(blocktest.OpFlush, syscall.EIO, 1<<20)
	if err := p.vol.Flush(); err == nil {
		t.Fatal("a flush the local store failed was acknowledged")
	}
	if l := p.vol.Local(); l.Failed == "" || l.Disk != Diskless || l.Role != Primary {
		t.Fatalf("the failed primary reports %+v; want primary, Diskless, failed", l)
	}
	if err := p.vol.WriteAt(data, 0, true); !errors.Is(err, ErrDiskFailed) {
		t.Fatalf("a write after the failure: %v, want ErrDiskFailed", err)
	}
	// The failed primary acknowledges nothing, so it must not take the
	// peer that is to replace it out of the UpToDate set: its reporter
	// has nothing to commit once the link is down.
	waitFor(t, "the failed primary's link down", func() bool { return peerConn(p, "n2") != Connected })
	p.vol.mu.Lock()
	want, _, due := p.vol.reportDueLocked(p.vol.peers[0])
	p.vol.mu.Unlock()
	if due {
		t.Fatalf("the failed primary's reporter would commit n2 %v: the peer would no longer be promotable", want)
	}
	if cs := auths["n1"].commitsFor("n2")[committed:]; len(cs) > 0 {
		t.Fatalf("the failed primary committed n2 %v", cs)
	}
	// What the cluster does on that report: demote it, promote the peer.
	if err := p.vol.Demote(false); err != nil {
		t.Fatalf("demoting the failed primary: %v", err)
	}
	waitFor(t, "the link down", func() bool { return peerConn(s, "n1") != Connected })
	promote(t, s, 2)
	got := make([]byte, len(data))
	if err := s.vol.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the new primary does not hold the write acknowledged before the failure (err %v)", err)
	}
	if err := s.vol.WriteAt(randBytes(4096), 1<<20, true); err != nil {
		t.Fatalf("the new primary's write: %v", err)
	}
	if c := auths["n2"].lastCommit("n1"); c.Epoch != 2 || c.Disk == UpToDate {
		t.Errorf("the new primary committed n1 as %v, want below UpToDate at epoch 2", c)
	}
	p.store.FailNext(blocktest.OpFlush, nil, 0)
}
