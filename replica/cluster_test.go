package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockrep/blockrep/block"
	"github.com/blockrep/blockrep/block/blocktest"
	"github.com/blockrep/blockrep/meta"
)

// authCall is one ReportPeerDisk call.
type authCall struct {
	Peer  string
	Epoch uint64
	Disk  DiskState
}

func (c authCall) String() string { return fmt.Sprintf("%s=%v@%d", c.Peer, c.Disk, c.Epoch) }

// Hold modes of the fake authority's gate.
const (
	holdNone     = iota
	holdUpToDate // hold reports of UpToDate
	holdAll      // hold every report
)

// fakeAuthority records ReportPeerDisk calls. With fail set it answers
// like a cluster without quorum; its gate holds matching calls until
// release (held calls ignore ctx: a slow commit that the caller cannot
// abandon).
type fakeAuthority struct {
	mu      sync.Mutex
	cond    *sync.Cond
	fail    bool
	hold    int
	tokens  int
	open    bool // the gate is open for good (cleanup)
	held    int
	started []authCall
	failed  []authCall
	commits []authCall
}

func newFakeAuthority() *fakeAuthority {
	a := &fakeAuthority{}
	a.cond = sync.NewCond(&a.mu)
	return a
}

func (a *fakeAuthority) ReportPeerDisk(ctx context.Context, volume, peer string, epoch uint64, disk DiskState) error {
	c := authCall{Peer: peer, Epoch: epoch, Disk: disk}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.started = append(a.started, c)
	if !a.open && (a.hold == holdAll || a.hold == holdUpToDate && disk == UpToDate) {
		a.held++
		for a.tokens == 0 && !a.open {
			a.cond.Wait()
		}
		if a.tokens > 0 {
			a.tokens--
		}
		a.held--
	}
	if a.fail {
		a.failed = append(a.failed, c)
		return errors.New("fake authority: no quorum")
	}
	a.commits = append(a.commits, c)
	return nil
}

func (a *fakeAuthority) setFail(fail bool) {
	a.mu.Lock()
	a.fail = fail
	a.mu.Unlock()
}

func (a *fakeAuthority) setHold(mode int) {
	a.mu.Lock()
	a.hold = mode
	a.mu.Unlock()
}

// release lets one held call through.
func (a *fakeAuthority) release() {
	a.mu.Lock()
	a.tokens++
	a.cond.Broadcast()
	a.mu.Unlock()
}

func (a *fakeAuthority) openGate() {
	a.mu.Lock()
	a.open = true
	a.cond.Broadcast()
	a.mu.Unlock()
}

func (a *fakeAuthority) heldCalls() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.held
}

func (a *fakeAuthority) lastStarted() authCall {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.started) == 0 {
		return authCall{}
	}
	return a.started[len(a.started)-1]
}

func (a *fakeAuthority) failures() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.failed)
}

// commitsFor lists the commits for peer, oldest first.
func (a *fakeAuthority) commitsFor(peer string) []authCall {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []authCall
	for _, c := range a.commits {
		if c.Peer == peer {
			out = append(out, c)
		}
	}
	return out
}

// lastCommit is the newest commit for peer.
func (a *fakeAuthority) lastCommit(peer string) authCall {
	cs := a.commitsFor(peer)
	if len(cs) == 0 {
		return authCall{}
	}
	return cs[len(cs)-1]
}

// authConfig gives every node of a cluster its own fake authority.
func authConfig(mode FenceMode, extra func(*VolumeConfig)) (map[string]*fakeAuthority, func(*VolumeConfig)) {
	auths := map[string]*fakeAuthority{}
	for i := range 3 {
		auths[fmt.Sprintf("n%d", i+1)] = newFakeAuthority()
	}
	return auths, func(vc *VolumeConfig) {
		vc.Authority, vc.Fence = auths[vc.Local], mode
		if extra != nil {
			extra(vc)
		}
	}
}

// newAuthCluster makes two nodes run by (fake) clusters; both open as
// secondaries.
func newAuthCluster(t *testing.T, mode FenceMode, extra func(*VolumeConfig)) (*testCluster, map[string]*fakeAuthority) {
	auths, cfg := authConfig(mode, extra)
	c := newTestCluster(t, []Role{Secondary, Secondary}, cfg)
	// Runs before the nodes stop: a held report must not hold up Close.
	t.Cleanup(func() {
		for _, a := range auths {
			a.openGate()
		}
	})
	return c, auths
}

// newTappedAuthCluster is newAuthCluster with n1's link to n2 through a
// black hole.
func newTappedAuthCluster(t *testing.T, mode FenceMode, extra func(*VolumeConfig)) (*testCluster, *blackhole, map[string]*fakeAuthority) {
	auths, cfg := authConfig(mode, extra)
	c, bh := newTappedCluster(t, Secondary, cfg)
	// Runs before the nodes stop: a held report must not hold up Close.
	t.Cleanup(func() {
		for _, a := range auths {
			a.openGate()
		}
	})
	return c, bh, auths
}

// reset lets traffic through again and drops the connections that were
// silenced, so that the dialer reconnects at once.
func (b *blackhole) reset() {
	b.mu.Lock()
	b.silent = false
	b.mu.Unlock()
	b.relay.CloseConns()
}

// promote makes n primary at epoch with a lease of an hour.
func promote(t *testing.T, n *testNode, epoch uint64) {
	t.Helper()
	if err := n.vol.Promote(epoch, false); err != nil {
		t.Fatalf("%s: promote at epoch %d: %v", n.name, epoch, err)
	}
	n.vol.SetLease(time.Now().Add(time.Hour))
}

// startInSync promotes n1 at epoch 1 and waits until n2 is in sync and the
// cluster lists it UpToDate.
func startInSync(t *testing.T, c *testCluster, auths map[string]*fakeAuthority) (p, s *testNode) {
	t.Helper()
	p, s = c.nodes[0], c.nodes[1]
	promote(t, p, 1)
	c.waitConnected(p, s)
	waitFor(t, "the cluster lists n2 UpToDate", func() bool {
		return auths["n1"].lastCommit("n2") == authCall{"n2", 1, UpToDate} && p.vol.Status().Peers[0].ClusterDisk == "UpToDate"
	})
	return p, s
}

// cutSecondary drops the link from the secondary's side, without the
// secondary leaving cleanly, and keeps it down: the secondary refuses the
// primary's reconnects (StandAlone) until it restarts.
func cutSecondary(t *testing.T, p, s *testNode) {
	t.Helper()
	if err := s.vol.Disconnect(p.name); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the primary notices", func() bool { return peerConn(p, s.name) != Connected })
}

func peerWaits(n *testNode) int {
	n.vol.mu.Lock()
	defer n.vol.mu.Unlock()
	return n.vol.peerWaits
}

func fenceWaits(n *testNode) int {
	n.vol.mu.Lock()
	defer n.vol.mu.Unlock()
	return n.vol.fenceWaits
}

func goDo(f func() error) chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

func notDone(t *testing.T, ch chan error, what string) {
	t.Helper()
	select {
	case err := <-ch:
		t.Fatalf("%s completed (err %v)", what, err)
	default:
	}
}

func waitDone(t *testing.T, ch chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		return nil
	}
}

func outOfSync(n *testNode, peer int, off, length int64) bool {
	n.vol.mu.Lock()
	defer n.vol.mu.Unlock()
	bm := n.vol.peers[peer].bitmap
	for b := off / DefaultBlockSize; b < (off+length+DefaultBlockSize-1)/DefaultBlockSize; b++ {
		if !bm.Test(uint64(b)) {
			return false
		}
	}
	return true
}

// waitFailingReports waits until the reporter of a node whose authority
// fails tried (and failed) twice more from now.
func waitFailingReports(t *testing.T, a *fakeAuthority) {
	t.Helper()
	n0 := a.failures()
	waitFor(t, "the reporter to try and fail", func() bool { return a.failures() >= n0+2 })
}

func TestFenceModeNames(t *testing.T) {
	for _, m := range []FenceMode{FenceSuspend, FenceError} {
		got, err := ParseFenceMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseFenceMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	for _, s := range []string{"", "Suspend", "fail"} {
		if _, err := ParseFenceMode(s); err == nil {
			t.Errorf("ParseFenceMode(%q) accepted", s)
		}
	}
}

func TestAuthorityExcludesContinueAlone(t *testing.T) {
	db, err := meta.Open(filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.EnsureVolume("vol", "/mem", testVolSize); err != nil {
		t.Fatal(err)
	}
	_, err = Open(VolumeConfig{Name: "vol", Store: blocktest.NewMem(testVolSize), State: NewStore(db, "vol"), Local: "n1",
		Authority: newFakeAuthority(), ContinueAlone: true})
	if err == nil || !strings.Contains(err.Error(), "continue_alone") || !strings.Contains(err.Error(), "Authority") {
		t.Fatalf("Open with an Authority and continue_alone: %v, want an error naming both", err)
	}
}

// A write issued after the link to an UpToDate peer dropped is not
// acknowledged until the cluster committed the peer Outdated.
func TestClusterWriteWaitsForOutdateCommit(t *testing.T) {
	c, auths := newAuthCluster(t, FenceSuspend, nil)
	p, s := startInSync(t, c, auths)
	a := auths["n1"]
	a.setFail(true)
	cutSecondary(t, p, s)
	const off, n = 3 << 20, 8192
	done := goDo(func() error { return p.vol.WriteAt(randBytes(n), off, false) })
	waitFor(t, "the write to wait for the cluster", func() bool { return peerWaits(p) > 0 })
	waitFailingReports(t, a)
	notDone(t, done, "a write the UpToDate peer missed, while the cluster cannot commit")
	if d := p.vol.Status().Peers[0].Disk; d != "UpToDate" {
		t.Fatalf("peer recorded %s without a commit", d)
	}
	a.setFail(false)
	if err := waitDone(t, done, "the write"); err != nil {
		t.Fatalf("write after the commit: %v", err)
	}
	epoch := p.vol.Status().Epoch
	if got := a.lastCommit("n2"); got != (authCall{"n2", epoch, Outdated}) {
		t.Fatalf("last commit %v, want n2 Outdated at epoch %d", got, epoch)
	}
	st := p.vol.Status().Peers[0]
	if st.Disk != "Outdated" || st.ClusterDisk != "Outdated" {
		t.Fatalf("peer disk %s, cluster disk %s; want Outdated", st.Disk, st.ClusterDisk)
	}
	if !outOfSync(p, 0, off, n) {
		t.Fatal("the write the peer missed is not in its bitmap")
	}
}

// A write whose frame was sent and whose link dropped before the ack waits
// (through op.finish) for the commit as well.
func TestClusterPeerLostDuringWrite(t *testing.T) {
	c, bh, auths := newTappedAuthCluster(t, FenceSuspend, nil)
	p, _ := startInSync(t, c, auths)
	a := auths["n1"]
	a.setFail(true)
	sent := p.vol.Status().Peers[0].BytesSent
	bh.silence()
	const off, n = 7 << 20, 4096
	done := goDo(func() error { return p.vol.WriteAt(randBytes(n), off, false) })
	waitFor(t, "the write to wait for the cluster", func() bool { return peerWaits(p) > 0 })
	if d := p.vol.Status().Peers[0].BytesSent - sent; d < n {
		t.Fatalf("only %d bytes went out before the link dropped: the write did not take the op.finish path", d)
	}
	if peerConn(p, "n2") == Connected {
		t.Fatal("the write waits while the link is still up")
	}
	waitFailingReports(t, a)
	notDone(t, done, "a write lost in transit to the UpToDate peer, while the cluster cannot commit")
	a.setFail(false)
	if err := waitDone(t, done, "the write"); err != nil {
		t.Fatalf("write after the commit: %v", err)
	}
	if got := a.lastCommit("n2"); got != (authCall{"n2", 1, Outdated}) {
		t.Fatalf("last commit %v, want n2 Outdated at epoch 1", got)
	}
	if !outOfSync(p, 0, off, n) {
		t.Fatal("the write the peer missed is not in its bitmap")
	}
}

// A commit of UpToDate in flight when the link drops: the write waits for
// the Outdated commit that follows it, not just for the UpToDate one.
func TestClusterUpToDateReportRacesLinkLoss(t *testing.T) {
	c, auths := newAuthCluster(t, FenceSuspend, nil)
	a := auths["n1"]
	a.setHold(holdUpToDate)
	p, s := c.nodes[0], c.nodes[1]
	promote(t, p, 1)
	c.waitConnected(p, s)
	waitFor(t, "the UpToDate report in flight", func() bool { return a.heldCalls() == 1 })
	if got := a.lastStarted(); got != (authCall{"n2", 1, UpToDate}) {
		t.Fatalf("report in flight %v, want n2 UpToDate", got)
	}
	a.setHold(holdAll)
	cutSecondary(t, p, s)
	done := goDo(func() error { return p.vol.WriteAt(randBytes(4096), 0, false) })
	waitFor(t, "the write to wait for the cluster", func() bool { return peerWaits(p) > 0 })
	a.release() // the UpToDate commit lands
	waitFor(t, "the Outdated report in flight", func() bool {
		return a.heldCalls() == 1 && a.lastStarted() == authCall{"n2", 1, Outdated}
	})
	if got := a.lastCommit("n2"); got != (authCall{"n2", 1, UpToDate}) {
		t.Fatalf("last commit %v, want the UpToDate one", got)
	}
	notDone(t, done, "a write after the UpToDate commit landed and before the Outdated one")
	a.release()
	if err := waitDone(t, done, "the write"); err != nil {
		t.Fatalf("write after the Outdated commit: %v", err)
	}
	if got := a.lastCommit("n2"); got != (authCall{"n2", 1, Outdated}) {
		t.Fatalf("last commit %v, want n2 Outdated", got)
	}
}

// A peer that comes back and is resynced is committed UpToDate again.
func TestClusterPeerBackCommittedUpToDate(t *testing.T) {
	c, auths := newAuthCluster(t, FenceSuspend, nil)
	p, s := startInSync(t, c, auths)
	a := auths["n1"]
	cutSecondary(t, p, s)
	if err := p.vol.WriteAt(randBytes(8192), 9<<20, false); err != nil {
		t.Fatal(err)
	}
	if got := a.lastCommit("n2"); got != (authCall{"n2", 1, Outdated}) {
		t.Fatalf("last commit %v, want n2 Outdated", got)
	}
	c.stop(s)
	c.start(s, Secondary)
	c.waitConnected(p, s)
	waitFor(t, "the cluster lists n2 UpToDate again", func() bool {
		return a.lastCommit("n2") == authCall{"n2", 1, UpToDate} && p.vol.Status().Peers[0].ClusterDisk == "UpToDate"
	})
	st := p.vol.Status().Peers[0]
	if st.Resync == nil || st.ResyncBytesSent < 8192 {
		t.Fatalf("no resync before the UpToDate commit: %+v", st)
	}
	if st.Disk != "UpToDate" || st.ClusterDisk != "UpToDate" {
		t.Fatalf("peer disk %s, cluster disk %s; want UpToDate", st.Disk, st.ClusterDisk)
	}
	if err := p.vol.Flush(); err != nil {
		t.Fatal(err)
	}
	sameData(t, p, s)
}

// FenceError: once the lease ran out, every I/O of the primary fails with
// ErrFenced; a renewed lease restores them. A secondary is not fenced.
func TestLeaseFenceError(t *testing.T) {
	c, bh, auths := newTappedAuthCluster(t, FenceError, nil)
	p, s := startInSync(t, c, auths)
	buf := make([]byte, 4096)
	ops := map[string]func() error{
		"write": func() error { return p.vol.WriteAt(randBytes(4096), 0, false) },
		"read":  func() error { return p.vol.ReadAt(buf, 0) },
		"trim":  func() error { return p.vol.Trim(1<<20, 4096) },
		"zero":  func() error { return p.vol.WriteZeroes(2<<20, 4096, block.ZeroFlags{}) },
		"flush": p.vol.Flush,
	}
	check := func(want error) {
		t.Helper()
		for name, op := range ops {
			if err := op(); !errors.Is(err, want) && (want != nil || err != nil) {
				t.Fatalf("%s: %v, want %v", name, err, want)
			}
		}
	}
	check(nil)
	p.vol.SetLease(time.Now().Add(-time.Second))
	check(ErrFenced)
	if err := p.vol.WriteAt(buf, 0, false); !strings.Contains(err.Error(), `"vol"`) {
		t.Fatalf("fenced write: %v, want the volume named", err)
	}
	if st := p.vol.Status(); !st.Fenced || st.LeaseRemaining != 0 {
		t.Fatalf("status after the lease ran out: fenced %v, remaining %d ms", st.Fenced, st.LeaseRemaining)
	}
	if err := s.vol.ReadAt(buf, 0); err != nil {
		t.Fatalf("a secondary's read: %v", err)
	}
	if st := s.vol.Status(); st.Fenced {
		t.Fatal("a secondary reports itself fenced")
	}
	p.vol.SetLease(time.Now().Add(time.Hour))
	check(nil)
	if st := p.vol.Status(); st.Fenced || st.LeaseRemaining <= 0 {
		t.Fatalf("status after a renewal: fenced %v, remaining %d ms", st.Fenced, st.LeaseRemaining)
	}

	// The lease runs out by the clock.
	p.vol.SetLease(time.Now().Add(100 * time.Millisecond))
	waitFor(t, "the lease to run out", func() bool { return p.vol.Status().Fenced })
	check(ErrFenced)

	// Writes waiting for the cluster's commit end when the lease runs out:
	// one whose frame went out before the link dropped (op.finish), and one
	// issued after (dispatch: nothing was written).
	p.vol.SetLease(time.Now().Add(time.Hour))
	auths["n1"].setFail(true)
	bh.silence()
	inFlight := goDo(func() error { return p.vol.WriteAt(randBytes(4096), 10<<20, false) })
	waitFor(t, "the write in flight to wait for the cluster", func() bool { return peerWaits(p) == 1 })
	const off = 11 << 20
	before := append([]byte(nil), p.store.Bytes()[off:off+4096]...)
	done := goDo(func() error { return p.vol.WriteAt(randBytes(4096), off, false) })
	waitFor(t, "the new write to wait for the cluster", func() bool { return peerWaits(p) == 2 })
	p.vol.SetLease(time.Now().Add(100 * time.Millisecond))
	if err := waitDone(t, inFlight, "the write in flight"); !errors.Is(err, ErrFenced) {
		t.Fatalf("write in flight waiting for the cluster when the lease ran out: %v, want ErrFenced", err)
	}
	if err := waitDone(t, done, "the new write"); !errors.Is(err, ErrFenced) {
		t.Fatalf("new write waiting for the cluster when the lease ran out: %v, want ErrFenced", err)
	}
	if !bytes.Equal(p.store.Bytes()[off:off+4096], before) {
		t.Fatal("a fenced write reached the disk")
	}
}

// FenceSuspend: I/O waits for a lease (a fresh primary's first one, or a
// renewal); a demotion ends the wait with ErrNotPrimary.
func TestLeaseFenceSuspend(t *testing.T) {
	c, _ := newAuthCluster(t, FenceSuspend, nil)
	p, s := c.nodes[0], c.nodes[1]
	if err := p.vol.Promote(1, false); err != nil {
		t.Fatal(err)
	}
	// A fresh primary has no lease yet.
	done := goDo(func() error { return p.vol.WriteAt(randBytes(4096), 0, false) })
	waitFor(t, "the write to wait for a lease", func() bool { return fenceWaits(p) > 0 })
	notDone(t, done, "a write before the first lease")
	if !p.vol.Status().Fenced {
		t.Fatal("a primary without a lease is not reported fenced")
	}
	p.vol.SetLease(time.Now().Add(time.Hour))
	if err := waitDone(t, done, "the write"); err != nil {
		t.Fatalf("write after the lease: %v", err)
	}

	p.vol.SetLease(time.Now().Add(-time.Second))
	done = goDo(func() error { return p.vol.ReadAt(make([]byte, 4096), 0) })
	waitFor(t, "the read to wait for a lease", func() bool { return fenceWaits(p) > 0 })
	notDone(t, done, "a read after the lease ran out")
	p.vol.SetLease(time.Now().Add(time.Hour))
	if err := waitDone(t, done, "the read"); err != nil {
		t.Fatalf("read after the renewal: %v", err)
	}

	// Nothing else wakes the waiters below: the demotion must.
	c.waitConnected(p, s)
	p.vol.SetLease(time.Now().Add(-time.Second))
	done = goDo(func() error { return p.vol.WriteAt(randBytes(4096), 0, false) })
	flushed := goDo(p.vol.Flush)
	waitFor(t, "the write and the flush to wait for a lease", func() bool { return fenceWaits(p) == 2 })
	if err := p.vol.Demote(false); err != nil {
		t.Fatal(err)
	}
	if err := waitDone(t, done, "the write"); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("suspended write after the demotion: %v, want ErrNotPrimary", err)
	}
	if err := waitDone(t, flushed, "the flush"); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("suspended flush after the demotion: %v, want ErrNotPrimary", err)
	}
}

// Promote takes exactly the cluster's epoch, refuses an epoch that is not
// newer, and cuts the link of a primary peer that the cluster deposed
// (cut off from the cluster, but still linked to this node); that primary
// is then refused as stale.
func TestPromoteAtClusterEpoch(t *testing.T) {
	c, auths := newAuthCluster(t, FenceSuspend, nil)
	p, s := c.nodes[0], c.nodes[1]
	if err := p.vol.SetRole(Primary, false); !errors.Is(err, ErrState) {
		t.Fatalf("SetRole(Primary) with an Authority: %v, want ErrState", err)
	}
	promote(t, p, 5)
	if e := p.vol.Status().Epoch; e != 5 {
		t.Fatalf("epoch %d after Promote(5)", e)
	}
	c.waitConnected(p, s)
	waitFor(t, "the secondary learns the epoch", func() bool { return s.vol.Status().Epoch == 5 })
	for _, e := range []uint64{3, 5} {
		if err := s.vol.Promote(e, false); !errors.Is(err, ErrState) {
			t.Fatalf("Promote(%d) at known epoch 5: %v, want ErrState", e, err)
		}
	}
	if err := p.vol.Promote(5, false); !errors.Is(err, ErrState) {
		t.Fatalf("Promote(5) of the primary at epoch 5: %v, want ErrState", err)
	}

	// n1 is cut off from the cluster; its link to n2 is up.
	auths["n1"].setFail(true)
	if peerConn(s, "n1") != Connected {
		t.Fatal("the link is not up")
	}
	promote(t, s, 9)
	if st := s.vol.Status(); st.Epoch != 9 || st.Role != "primary" {
		t.Fatalf("after Promote(9): role %s, epoch %d", st.Role, st.Epoch)
	}
	const off = 8 << 20
	before := append([]byte(nil), s.store.Bytes()[off:off+4096]...)
	done := goDo(func() error { return p.vol.WriteAt(randBytes(4096), off, false) })
	waitFor(t, "the deposed primary refused as stale", func() bool {
		e := s.vol.Status().Peers[0].LastError
		return strings.Contains(e, "epoch 5, older than epoch 9") && strings.Contains(e, "fenced")
	})
	notDone(t, done, "a write of the deposed primary")
	if !bytes.Equal(s.store.Bytes()[off:off+4096], before) {
		t.Fatal("a write of the deposed primary reached the new primary")
	}
	// The new primary writes once the cluster lists n1 Outdated.
	if err := s.vol.WriteAt(randBytes(4096), 12<<20, false); err != nil {
		t.Fatal(err)
	}
	if got := auths["n2"].lastCommit("n1"); got != (authCall{"n1", 9, Outdated}) {
		t.Fatalf("new primary's last commit %v, want n1 Outdated at epoch 9", got)
	}
	// The cluster demotes the deposed primary: its write is not
	// acknowledged, and it comes back as a sync target.
	if err := p.vol.Demote(true); err != nil {
		t.Fatal(err)
	}
	if err := waitDone(t, done, "the deposed primary's write"); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("deposed primary's write: %v, want ErrNotPrimary", err)
	}
	c.waitConnected(p, s)
	if err := s.vol.Flush(); err != nil {
		t.Fatal(err)
	}
	sameData(t, p, s)
}

// A primary deposed while cut off wrote a block the new primary never got;
// the new primary wrote others. After Demote(deposed) the reconnect is a
// bitmap resync into the old primary of exactly the union of both bitmaps
// (not a split brain, not a full resync), and the copies end identical.
func TestDemoteDeposedMergesBitmaps(t *testing.T) {
	c, bh, auths := newTappedAuthCluster(t, FenceSuspend, nil)
	p, s := startInSync(t, c, auths)
	const offA, nA = 1 << 20, 8192  // written by the old primary while cut off
	const offB, nB = 5 << 20, 12288 // written by the new primary
	for _, w := range []struct{ off, n int64 }{{offA, nA}, {offB, nB}} {
		if err := p.vol.WriteAt(randBytes(int(w.n)), w.off, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.vol.Flush(); err != nil {
		t.Fatal(err)
	}
	// n1 loses quorum and the link: its write reaches only its own disk.
	auths["n1"].setFail(true)
	bh.silence()
	done := goDo(func() error { return p.vol.WriteAt(randBytes(nA), offA, false) })
	waitFor(t, "the old primary's write to wait for the cluster", func() bool { return peerWaits(p) > 0 })
	if !outOfSync(p, 0, offA, nA) {
		t.Fatal("the unacknowledged write is not in the old primary's bitmap")
	}
	// The cluster promotes n2, which writes.
	promote(t, s, 2)
	if err := s.vol.WriteAt(randBytes(nB), offB, false); err != nil {
		t.Fatal(err)
	}
	if err := p.vol.Demote(true); err != nil {
		t.Fatal(err)
	}
	if err := waitDone(t, done, "the old primary's write"); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("old primary's write: %v, want ErrNotPrimary (never acknowledged)", err)
	}
	sentBefore := s.vol.Status().Peers[0].ResyncBytesSent
	bh.reset()
	c.waitConnected(p, s)
	ps := p.vol.Status().Peers[0]
	if !strings.Contains(ps.Decision, "BecomeSyncTarget BitmapResync merge-bitmaps") {
		t.Fatalf("deposed node's decision %q, want a merging bitmap resync into it", ps.Decision)
	}
	if sent := s.vol.Status().Peers[0].ResyncBytesSent - sentBefore; sent != nA+nB {
		t.Fatalf("resync sent %d bytes, want %d: the union of both bitmaps", sent, nA+nB)
	}
	if err := s.vol.Flush(); err != nil {
		t.Fatal(err)
	}
	sameData(t, p, s)
	if d := p.vol.Status().Disk; d != "UpToDate" {
		t.Fatalf("resynced node's disk %s, want UpToDate", d)
	}
}

// With an Authority the operator's disconnect does not outdate the peer on
// its own: writes wait for the cluster's commit.
func TestClusterDisconnectLeavesOutdateToCluster(t *testing.T) {
	c, auths := newAuthCluster(t, FenceSuspend, nil)
	p, _ := startInSync(t, c, auths)
	a := auths["n1"]
	a.setFail(true)
	if err := p.vol.Disconnect("n2"); err != nil {
		t.Fatal(err)
	}
	if d := p.vol.Status().Peers[0].Disk; d != "UpToDate" {
		t.Fatalf("peer recorded %s by the disconnect, before any commit", d)
	}
	done := goDo(func() error { return p.vol.WriteAt(randBytes(4096), 0, false) })
	waitFor(t, "the write to wait for the cluster", func() bool { return peerWaits(p) > 0 })
	waitFailingReports(t, a)
	notDone(t, done, "a write the disconnected peer missed, while the cluster cannot commit")
	a.setFail(false)
	if err := waitDone(t, done, "the write"); err != nil {
		t.Fatal(err)
	}
	if got := a.lastCommit("n2"); got != (authCall{"n2", 1, Outdated}) {
		t.Fatalf("last commit %v, want n2 Outdated", got)
	}
}

// With an Authority a promotion with a disconnected UpToDate peer does not
// outdate it on its own either: that is the cluster's commit.
func TestClusterPromoteLeavesOutdateToCluster(t *testing.T) {
	c, auths := newAuthCluster(t, FenceSuspend, nil)
	p, _ := startInSync(t, c, auths)
	auths["n1"].setFail(true)
	if err := p.vol.Demote(false); err != nil {
		t.Fatal(err)
	}
	if err := p.vol.Disconnect("n2"); err != nil {
		t.Fatal(err)
	}
	promote(t, p, 2)
	if d := p.vol.Status().Peers[0].Disk; d != "UpToDate" {
		t.Fatalf("peer recorded %s by the promotion, before any commit", d)
	}
}
