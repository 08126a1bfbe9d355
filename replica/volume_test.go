package replica

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockrep/blockrep/block/blocktest"
	"github.com/blockrep/blockrep/internal/testrelay"
	"github.com/blockrep/blockrep/meta"
	"github.com/blockrep/blockrep/replica/wire"

	"github.com/blockrep/blockrep/internal/freeport"
)

// testNode is one in-process node: meta database, memory store, volume and
// transport. Restarting keeps the database file and the store.
type testNode struct {
	t      testing.TB
	name   string
	dir    string
	addr   string
	store  *blocktest.Mem
	db     *meta.DB
	vol    *Volume
	tr     *Transport
	cancel context.CancelFunc
	done   chan struct{}
}

type testCluster struct {
	t     testing.TB
	nodes []*testNode
	cfg   func(*VolumeConfig)
	tcfg  func(*TransportConfig)
	// wrap, when set, replaces a node's replication listener before its
	// transport runs (to inject accept errors).
	wrap func(n *testNode, ln net.Listener) net.Listener
}

const testVolSize = 64 << 20

var testSecret = []byte("0123456789abcdef-test-secret")

func freeAddr(t testing.TB) string {
	t.Helper()
	addrs, err := freeport.Addrs(1)
	if err != nil {
		t.Fatal(err)
	}
	return addrs[0]
}

// newTestCluster makes nodes n1..nN; roles[i] is node i's configured role.
func newTestCluster(t testing.TB, roles []Role, cfg func(*VolumeConfig)) *testCluster {
	t.Helper()
	return newTestClusterWith(t, roles, cfg, nil)
}

// newTestClusterWith is newTestCluster with transport settings.
func newTestClusterWith(t testing.TB, roles []Role, cfg func(*VolumeConfig), tcfg func(*TransportConfig)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, cfg: cfg, tcfg: tcfg}
	for i := range roles {
		c.nodes = append(c.nodes, &testNode{t: t, name: fmt.Sprintf("n%d", i+1), dir: t.TempDir(), addr: freeAddr(t), store: blocktest.NewMem(testVolSize)})
	}
	for i, n := range c.nodes {
		c.start(n, roles[i])
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			c.stop(n)
		}
	})
	return c
}

func (c *testCluster) peersOf(n *testNode) []PeerConfig {
	var ps []PeerConfig
	for _, o := range c.nodes {
		if o != n {
			ps = append(ps, PeerConfig{Name: o.name, Address: o.addr})
		}
	}
	return ps
}

func (c *testCluster) start(n *testNode, role Role) {
	t := c.t
	t.Helper()
	db, err := meta.Open(filepath.Join(n.dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.EnsureVolume("vol", "/mem", testVolSize); err != nil {
		t.Fatal(err)
	}
	vc := VolumeConfig{
		Name: "vol", ID: VolumeID("test", "vol"), Store: n.store, State: NewStore(db, "vol"),
		Local: n.name, Peers: c.peersOf(n), Role: role, Timeout: time.Second,
	}
	if c.cfg != nil {
		c.cfg(&vc)
	}
	v, err := Open(vc)
	if err != nil {
		t.Fatal(err)
	}
	tc := TransportConfig{Cluster: "test", Local: n.name, Secret: testSecret, Listen: n.addr, Peers: vc.Peers, RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond}
	if c.tcfg != nil {
		c.tcfg(&tc)
	}
	tr, err := NewTransport(tc, []*Volume{v})
	if err != nil {
		t.Fatal(err)
	}
	if c.wrap != nil {
		tr.ln = c.wrap(n, tr.ln)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.db, n.vol, n.tr, n.cancel, n.done = db, v, tr, cancel, make(chan struct{})
	go func() {
		defer close(n.done)
		_ = tr.Run(ctx)
	}()
}

// stop shuts a node down cleanly.
func (c *testCluster) stop(n *testNode) {
	if n.vol == nil {
		return
	}
	if err := n.vol.Close(); err != nil {
		c.t.Errorf("%s: close: %v", n.name, err)
	}
	n.cancel()
	<-n.done
	_ = n.db.Close()
	n.vol = nil
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func peerConn(n *testNode, peer string) ConnState {
	for _, p := range n.vol.Status().Peers {
		if p.Name == peer {
			return p.Connection
		}
	}
	return ""
}

func (c *testCluster) waitConnected(a, b *testNode) {
	c.t.Helper()
	defer func() {
		if c.t.Failed() {
			c.t.Logf("%s: %+v", a.name, a.vol.Status())
			c.t.Logf("%s: %+v", b.name, b.vol.Status())
		}
	}()
	waitFor(c.t, a.name+" and "+b.name+" connected in sync", func() bool {
		return peerConn(a, b.name) == Connected && peerConn(b, a.name) == Connected
	})
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func sameData(t *testing.T, a, b *testNode) {
	t.Helper()
	if !bytes.Equal(a.store.Bytes(), b.store.Bytes()) {
		ab, bb := a.store.Bytes(), b.store.Bytes()
		for i := range ab {
			if ab[i] != bb[i] {
				t.Fatalf("%s and %s differ, first at byte %d", a.name, b.name, i)
			}
		}
	}
}

func TestReplicateWrites(t *testing.T) {
	for _, proto := range []byte{'A', 'B', 'C'} {
		t.Run(string(proto), func(t *testing.T) {
			c := newTestCluster(t, []Role{Primary, Secondary}, func(vc *VolumeConfig) { vc.Protocol = proto })
			p, s := c.nodes[0], c.nodes[1]
			// A new secondary gets a full sync first.
			c.waitConnected(p, s)
			var wg sync.WaitGroup
			for w := range 8 {
				wg.Go(func() {
					for i := range 50 {
						off := int64((w*50+i)%1000) * 4096 * 7
						if err := p.vol.WriteAt(randBytes(4096*(1+i%3)), off, i%7 == 0); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			if err := p.vol.Trim(0, 1<<20); err != nil {
				t.Fatal(err)
			}
			if err := p.vol.Flush(); err != nil {
				t.Fatal(err)
			}
			// Protocol A and B acknowledge before the peer's disk has it:
			// a flush makes it so on every protocol.
			sameData(t, p, s)
			if err := s.vol.WriteAt(make([]byte, 4096), 0, false); err == nil {
				t.Fatal("a secondary accepted a write")
			}
		})
	}
}

func TestOverlappingWritesKeepOrder(t *testing.T) {
	c := newTestCluster(t, []Role{Primary, Secondary}, func(vc *VolumeConfig) { vc.Protocol = 'A' })
	p, s := c.nodes[0], c.nodes[1]
	c.waitConnected(p, s)
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := range 100 {
				b := bytes.Repeat([]byte{byte(w*100 + i)}, 8192)
				if err := p.vol.WriteAt(b, int64(i%4)*4096, false); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := p.vol.Flush(); err != nil {
		t.Fatal(err)
	}
	sameData(t, p, s)
}

func TestBitmapResyncAfterSecondaryAway(t *testing.T) {
	c := newTestCluster(t, []Role{Primary, Secondary}, func(vc *VolumeConfig) { vc.ContinueAlone = true })
	p, s := c.nodes[0], c.nodes[1]
	c.waitConnected(p, s)
	c.stop(s)
	waitFor(t, "primary notices", func() bool { return peerConn(p, "n2") != Connected })
	dirty := int64(0)
	for i := range 64 {
		if err := p.vol.WriteAt(randBytes(8192), int64(i)*64<<10, false); err != nil {
			t.Fatal(err)
		}
		dirty += 8192
	}
	if got := p.vol.Status().Peers[0].OutOfSyncBytes; got != dirty {
		t.Fatalf("out of sync %d bytes, want %d", got, dirty)
	}
	before := p.vol.Status().Peers[0].ResyncBytesSent
	c.start(s, Secondary)
	c.waitConnected(p, s)
	sent := p.vol.Status().Peers[0].ResyncBytesSent - before
	if sent > dirty*105/100 {
		t.Fatalf("resync sent %d bytes for %d dirty", sent, dirty)
	}
	if sent < dirty {
		t.Fatalf("resync sent only %d bytes for %d dirty", sent, dirty)
	}
	if err := p.vol.Flush(); err != nil {
		t.Fatal(err)
	}
	sameData(t, p, s)
}

func TestWriteRefusedWithoutPeer(t *testing.T) {
	c := newTestCluster(t, []Role{Primary, Secondary}, nil)
	p, s := c.nodes[0], c.nodes[1]
	c.waitConnected(p, s)
	// Cut the link without the secondary leaving cleanly.
	s.vol.peers[0].stopLink(errors.New("test cut"))
	s.cancel()
	waitFor(t, "primary notices", func() bool { return peerConn(p, "n2") != Connected })
	err := p.vol.WriteAt(make([]byte, 4096), 0, false)
	if !errors.Is(err, ErrPeerUnreachable) {
		t.Fatalf("write without the UpToDate peer: %v, want ErrPeerUnreachable", err)
	}
}

// crash abandons a node the way kill -9 does: no clean leave, no final
// bitmap save, the role record still says primary. Links drop; the memory
// store keeps what was written (the page cache survives a process kill).
func (c *testCluster) crash(n *testNode) {
	v := n.vol
	v.mu.Lock()
	v.closing = true
	v.mu.Unlock()
	v.cancel()
	for _, p := range v.peers {
		p.stopLink(errors.New("crash"))
	}
	n.cancel()
	<-n.done
	_ = n.db.Close()
	n.vol = nil
}

func TestPrimaryCrashResyncsActivityLog(t *testing.T) {
	c := newTestCluster(t, []Role{Primary, Secondary}, func(vc *VolumeConfig) { vc.ALExtentSize = 1 << 20 })
	p, s := c.nodes[0], c.nodes[1]
	c.waitConnected(p, s)
	// Writes into three 1 MiB extents.
	for i := range 24 {
		if err := p.vol.WriteAt(randBytes(4096), int64(i%3)*(1<<20)+int64(i)*8192, false); err != nil {
			t.Fatal(err)
		}
	}
	c.crash(p)
	// The old primary comes back as secondary: its activity log makes the
	// three extents suspect, and it is the sync source for them (nobody
	// was promoted, so its data is the newest).
	c.start(p, Secondary)
	c.waitConnected(p, s)
	st := p.vol.Status().Peers[0]
	if st.Resync == nil || st.Resync.Kind != "checksum" || st.Resync.TotalBytes != 3<<20 {
		t.Fatalf("resync after the crash: %+v, want a checksum resync of the 3 MiB of hot extents", st.Resync)
	}
	// Everything was in sync already, so digests matched and no data moved.
	if st.ResyncBytesSent != 0 {
		t.Errorf("%d resync bytes sent for identical extents", st.ResyncBytesSent)
	}
	sameData(t, p, s)
}

func TestPromotedSecondaryFeedsCrashedPrimary(t *testing.T) {
	c := newTestCluster(t, []Role{Primary, Secondary}, nil)
	p, s := c.nodes[0], c.nodes[1]
	c.waitConnected(p, s)
	acked := randBytes(8192)
	if err := p.vol.WriteAt(acked, 1<<20, false); err != nil {
		t.Fatal(err)
	}
	c.crash(p)
	waitFor(t, "secondary notices", func() bool { return peerConn(s, "n1") != Connected })
	if err := s.vol.SetRole(Primary, false); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(acked))
	if err := s.vol.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, acked) {
		t.Fatalf("acknowledged write missing on the promoted secondary: %v", err)
	}
	// The new primary writes; the peer is away.
	if err := s.vol.WriteAt(randBytes(4096), 5<<20, false); err == nil {
		t.Fatal("write accepted while the UpToDate peer is unreachable and continue_alone is off")
	}
	if err := s.vol.Disconnect("n1"); err != nil {
		t.Fatal(err)
	}
	if err := s.vol.WriteAt(randBytes(4096), 5<<20, false); err != nil {
		t.Fatal(err)
	}
	if err := s.vol.Connect("n1", false); err != nil {
		t.Fatal(err)
	}
	c.start(p, Secondary)
	c.waitConnected(p, s)
	st := s.vol.Status().Peers[0]
	// The resync covers the new primary's write and the old primary's
	// activity log extent (merged), not the device.
	if st.ResyncBytesSent > 2*DefaultExtentSize || st.ResyncBytesSent == 0 {
		t.Fatalf("resync sent %d bytes", st.ResyncBytesSent)
	}
	if err := s.vol.Flush(); err != nil {
		t.Fatal(err)
	}
	sameData(t, p, s)
}

func TestThreeNodes(t *testing.T) {
	c := newTestCluster(t, []Role{Primary, Secondary, Secondary}, nil)
	a, b, d := c.nodes[0], c.nodes[1], c.nodes[2]
	c.waitConnected(a, b)
	c.waitConnected(a, d)
	for i := range 100 {
		if err := a.vol.WriteAt(randBytes(4096), int64(i)*12288, i%10 == 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.vol.Flush(); err != nil {
		t.Fatal(err)
	}
	sameData(t, a, b)
	sameData(t, a, d)
}

func TestWrongSecretRefused(t *testing.T) {
	c := &testCluster{t: t}
	for i := range 2 {
		c.nodes = append(c.nodes, &testNode{t: t, name: fmt.Sprintf("n%d", i+1), dir: t.TempDir(), addr: freeAddr(t), store: blocktest.NewMem(testVolSize)})
	}
	c.start(c.nodes[0], Primary)
	c.tcfg = func(tc *TransportConfig) { tc.Secret = []byte("another-secret-of-enough-length") }
	c.start(c.nodes[1], Secondary)
	t.Cleanup(func() {
		for _, n := range c.nodes {
			c.stop(n)
		}
	})
	time.Sleep(500 * time.Millisecond)
	st := c.nodes[0].vol.Status().Peers[0]
	if st.Connection == Connected || !bytes.Contains([]byte(st.LastError), []byte("authentication")) {
		t.Fatalf("peer with a wrong secret: %s, last error %q", st.Connection, st.LastError)
	}
}

func TestSplitBrainPolicies(t *testing.T) {
	tests := []struct {
		policy       SplitBrainPolicy
		writesA      int // on the old primary while apart
		writesB      int // on the promoted secondary while apart
		discardB     bool
		wantResolved bool
		wantSource   int // 0: A's data survives, 1: B's
	}{
		{PolicyDisconnect, 3, 2, false, false, 0},
		{PolicyDisconnect, 3, 2, true, true, 0},
		{PolicyDiscardZeroChanges, 3, 0, false, true, 0},
		{PolicyDiscardZeroChanges, 3, 2, false, false, 0},
		{PolicyDiscardLeastChanges, 3, 2, false, true, 0},
		{PolicyDiscardLeastChanges, 1, 5, false, true, 1},
		{PolicyDiscardYoungerPrimary, 3, 2, false, true, 0},
		{PolicyDiscardOlderPrimary, 3, 2, false, true, 1},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v/a%d-b%d-discard%v", tt.policy, tt.writesA, tt.writesB, tt.discardB), func(t *testing.T) {
			c := newTestCluster(t, []Role{Primary, Secondary}, func(vc *VolumeConfig) { vc.SplitBrain = tt.policy })
			a, b := c.nodes[0], c.nodes[1]
			c.waitConnected(a, b)
			for _, n := range []*testNode{a, b} {
				if err := n.vol.Disconnect(""); err != nil {
					t.Fatal(err)
				}
			}
			for i := range tt.writesA {
				if err := a.vol.WriteAt(randBytes(4096), int64(i)*(1<<20), false); err != nil {
					t.Fatal(err)
				}
			}
			if err := b.vol.SetRole(Primary, false); err != nil {
				t.Fatal(err)
			}
			for i := range tt.writesB {
				if err := b.vol.WriteAt(randBytes(4096), int64(i)*(1<<20)+8192, false); err != nil {
					t.Fatal(err)
				}
			}
			// The policies never overwrite a primary: both step down.
			for _, n := range []*testNode{a, b} {
				if err := n.vol.SetRole(Secondary, false); err != nil {
					t.Fatal(err)
				}
			}
			beforeA, beforeB := append([]byte(nil), a.store.Bytes()...), append([]byte(nil), b.store.Bytes()...)
			if err := a.vol.Connect("", false); err != nil {
				t.Fatal(err)
			}
			if err := b.vol.Connect("", tt.discardB); err != nil {
				t.Fatal(err)
			}
			if !tt.wantResolved {
				waitFor(t, "both StandAlone", func() bool {
					return peerConn(a, "n2") == StandAlone && peerConn(b, "n1") == StandAlone
				})
				if e := a.vol.Status().Peers[0].LastError; !bytes.Contains([]byte(e), []byte("split brain")) {
					t.Fatalf("last error %q, want split brain", e)
				}
				if !bytes.Equal(a.store.Bytes(), beforeA) || !bytes.Equal(b.store.Bytes(), beforeB) {
					t.Fatal("data changed on an unresolved split brain")
				}
				return
			}
			c.waitConnected(a, b)
			want := beforeA
			if tt.wantSource == 1 {
				want = beforeB
			}
			if !bytes.Equal(a.store.Bytes(), want) || !bytes.Equal(b.store.Bytes(), want) {
				t.Fatalf("after resolution the survivor's data is not on both (want node %d's)", tt.wantSource+1)
			}
		})
	}
}

func TestVerifyAndChecksumResync(t *testing.T) {
	c := newTestCluster(t, []Role{Primary, Secondary}, nil)
	p, s := c.nodes[0], c.nodes[1]
	c.waitConnected(p, s)
	if err := p.vol.WriteAt(randBytes(1<<20), 0, false); err != nil {
		t.Fatal(err)
	}
	// Corrupt one block behind the secondary's back.
	corrupt(t, s, 4096*7)
	if err := p.vol.Verify("n2"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "verify finished", func() bool {
		v := p.vol.Status().Peers[0].Verify
		return v != nil && !v.Finished.IsZero()
	})
	st := p.vol.Status().Peers[0]
	if st.Verify.OutOfSyncBytes != 4096 || st.OutOfSyncBytes != 4096 || st.Verify.Error != "" {
		t.Fatalf("verify found %d bytes (bitmap %d, err %q), want 4096", st.Verify.OutOfSyncBytes, st.OutOfSyncBytes, st.Verify.Error)
	}
	if err := p.vol.Resync("n2", ResyncBitmap); err != nil {
		t.Fatal(err)
	}
	c.waitConnected(p, s)
	waitFor(t, "in sync", func() bool { return p.vol.Status().Peers[0].OutOfSyncBytes == 0 })
	sameData(t, p, s)

	corrupt(t, s, 4096*9+1)
	before := p.vol.Status().Peers[0].ResyncBytesSent
	if err := p.vol.Resync("n2", ResyncChecksum); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "checksum resync done", func() bool {
		r := p.vol.Status().Peers[0].Resync
		return r != nil && r.Kind == "checksum" && !r.Finished.IsZero()
	})
	if sent := p.vol.Status().Peers[0].ResyncBytesSent - before; sent != 4096 {
		t.Fatalf("checksum resync sent %d data bytes, want 4096", sent)
	}
	sameData(t, p, s)
}

// corrupt flips a byte of a node's store behind the volume's back.
func corrupt(t *testing.T, n *testNode, off int64) {
	t.Helper()
	b := make([]byte, 1)
	if err := n.store.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if err := n.store.WriteAt(b, off, false); err != nil {
		t.Fatal(err)
	}
}

func TestStaleEpochFenced(t *testing.T) {
	c := newTestCluster(t, []Role{Primary, Secondary}, nil)
	p, s := c.nodes[0], c.nodes[1]
	c.waitConnected(p, s)
	// The secondary learns (as the cluster will tell it) that a newer
	// epoch exists: the primary is deposed.
	s.vol.mu.Lock()
	s.vol.epoch = p.vol.Status().Epoch + 3
	s.vol.mu.Unlock()
	before := s.store.Bytes()[:8192]
	err := p.vol.WriteAt(randBytes(8192), 0, false)
	if !errors.Is(err, ErrPeerUnreachable) {
		t.Fatalf("write by a deposed primary: %v, want it unacknowledged", err)
	}
	if !bytes.Equal(s.store.Bytes()[:8192], before) {
		t.Fatal("a frame from a stale epoch was applied")
	}
	// The link dropped on the stale frame (or, if the reconnect already
	// happened, on the deposed primary's connect): either way the reason
	// names the epoch.
	if e := s.vol.Status().Peers[0].LastError; !bytes.Contains([]byte(e), []byte("epoch")) {
		t.Fatalf("secondary's last error %q, want the epoch fence", e)
	}
	// The deposed primary reconnects and is refused at the exchange.
	waitFor(t, "fenced at connect", func() bool {
		st := p.vol.Status().Peers[0]
		return st.Connection == StandAlone && bytes.Contains([]byte(st.LastError), []byte("fenced"))
	})
}

func TestActivityLogEvictionKeepsBitmapDurable(t *testing.T) {
	c := newTestCluster(t, []Role{Primary, Secondary}, func(vc *VolumeConfig) {
		vc.ALExtents, vc.ALExtentSize, vc.ContinueAlone = 2, 1<<20, true
	})
	p, s := c.nodes[0], c.nodes[1]
	c.waitConnected(p, s)
	c.stop(s)
	waitFor(t, "primary notices", func() bool { return peerConn(p, "n2") != Connected })
	// Ten extents through a log of two: eight evictions. The bits of the
	// evicted extents must be durable before the evictions are, or a crash
	// would forget them.
	for i := range 10 {
		if err := p.vol.WriteAt(randBytes(4096), int64(i)<<20, false); err != nil {
			t.Fatal(err)
		}
	}
	c.crash(p)
	c.start(p, Primary)
	p.vol.mu.Lock()
	for i := range 10 {
		if !p.vol.peers[0].bitmap.Test(uint64(i) << 20 / DefaultBlockSize) {
			t.Errorf("after a crash the block written in extent %d is not out of sync", i)
		}
	}
	p.vol.mu.Unlock()
	c.start(s, Secondary)
	c.waitConnected(p, s)
	if err := p.vol.Flush(); err != nil {
		t.Fatal(err)
	}
	sameData(t, p, s)
}

func TestResyncConcurrentWithWrites(t *testing.T) {
	// The rate cap stretches the resync to about a second, so the writes
	// below land while it runs.
	c := newTestCluster(t, []Role{Primary, Secondary}, func(vc *VolumeConfig) { vc.ContinueAlone, vc.ResyncRate = true, 32<<20 })
	p, s := c.nodes[0], c.nodes[1]
	c.waitConnected(p, s)
	c.stop(s)
	waitFor(t, "primary notices", func() bool { return peerConn(p, "n2") != Connected })
	// 32 MiB out of sync, so the resync runs long enough to overlap the
	// writes below.
	for off := int64(0); off < 32<<20; off += 1 << 20 {
		if err := p.vol.WriteAt(randBytes(1<<20), off, false); err != nil {
			t.Fatal(err)
		}
	}
	c.start(s, Secondary)
	waitFor(t, "resync running", func() bool { return peerConn(p, "n2") == SyncSource })
	// Writes into the same blocks while the resync copies them: each
	// block must end up with whatever was written last, on both sides.
	// Each writer goes on until the resync is over; writes that started
	// while it ran are counted, so the test knows it tested something.
	var wg sync.WaitGroup
	var during atomic.Int64
	for w := range 4 {
		wg.Go(func() {
			for i := 0; i < 20 || peerConn(p, "n2") == SyncSource; i++ {
				running := peerConn(p, "n2") == SyncSource
				off := int64((w*7919+i*104729)%(32<<8)) * 4096
				if err := p.vol.WriteAt(randBytes(4096*(1+i%4)), off, false); err != nil {
					t.Error(err)
					return
				}
				if running {
					during.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if during.Load() == 0 {
		t.Fatal("no write ran during the resync: the test proves nothing")
	}
	c.waitConnected(p, s)
	waitFor(t, "in sync", func() bool { return p.vol.Status().Peers[0].OutOfSyncBytes == 0 })
	if err := p.vol.Flush(); err != nil {
		t.Fatal(err)
	}
	sameData(t, p, s)
}

// TestDataIntegrity flips one bit of a write's payload on its way to the
// secondary, on a link without frame MACs (security = "none"). With
// per-frame checksums the secondary refuses the frame and the link drops
// (the write is then marked out of sync); without them the damaged block
// lands on the secondary unnoticed — which shows the test sees the
// difference. (With MACs the frame is refused either way: see
// TestRelayRewritingWriteRefused.)
func TestDataIntegrity(t *testing.T) {
	for _, integrity := range []bool{true, false} {
		t.Run(fmt.Sprint(integrity), func(t *testing.T) {
			c, tap := newTappedClusterWith(t, Primary, func(vc *VolumeConfig) { vc.DataIntegrity, vc.ContinueAlone = integrity, true },
				func(tc *TransportConfig) { tc.Protection = wire.ProtectNone })
			p, s := c.nodes[0], c.nodes[1]
			c.waitConnected(p, s)
			data := randBytes(64 << 10)
			tap.corruptAfter(1000) // inside the payload: the header is 64 bytes
			if err := p.vol.WriteAt(data, 0, false); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(data))
			if err := s.store.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if integrity {
				waitFor(t, "the link to drop", func() bool { return peerConn(p, "n2") != Connected || peerConn(s, "n1") != Connected })
				if bytes.Equal(got, data) || diffBytes(got, data) == 1 {
					t.Fatalf("with checksums the damaged frame was applied (%d bytes differ)", diffBytes(got, data))
				}
				if e := s.vol.Status().Peers[0].LastError; !bytes.Contains([]byte(e), []byte("checksum")) {
					t.Fatalf("secondary's last error %q, want the payload checksum", e)
				}
				return
			}
			if d := diffBytes(got, data); d != 1 {
				t.Fatalf("without checksums %d bytes differ on the secondary, want the 1 damaged in transit", d)
			}
		})
	}
}

func diffBytes(a, b []byte) int {
	n := 0
	for i := range a {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}

// blackhole forwards TCP connections to target until silenced; then it
// keeps them open and forwards nothing, like a peer whose network died
// without a reset. It can also damage one byte in transit.
type blackhole struct {
	relay   *testrelay.Relay
	mu      sync.Mutex
	silent  bool
	corrupt int64 // when > 0: flip the corrupt-th byte still to come towards the target
}

func startBlackhole(t testing.TB, target string) *blackhole {
	b := &blackhole{}
	b.relay = testrelay.Start(t, target, func(in, out net.Conn) {
		go b.pipe(in, out, true)
		go b.pipe(out, in, false)
	})
	return b
}

func (b *blackhole) pipe(from, to net.Conn, dialerToTarget bool) {
	buf := make([]byte, 64<<10)
	for {
		n, err := from.Read(buf)
		if err != nil {
			return
		}
		b.mu.Lock()
		silent := b.silent
		if dialerToTarget && b.corrupt > 0 {
			if int64(n) >= b.corrupt {
				buf[b.corrupt-1] ^= 0x10
				b.corrupt = 0
			} else {
				b.corrupt -= int64(n)
			}
		}
		b.mu.Unlock()
		if silent {
			continue
		}
		if _, err := to.Write(buf[:n]); err != nil {
			return
		}
	}
}

// newTappedCluster makes nodes n1 (in role first) and n2 (secondary),
// with n1's link to n2 through a black hole.
func newTappedCluster(t *testing.T, first Role, cfg func(*VolumeConfig)) (*testCluster, *blackhole) {
	return newTappedClusterWith(t, first, cfg, nil)
}

// newTappedClusterWith is newTappedCluster with a transport setting.
func newTappedClusterWith(t *testing.T, first Role, cfg func(*VolumeConfig), tcfg func(*TransportConfig)) (*testCluster, *blackhole) {
	var bh *blackhole
	c := newRelayedPair(t, first, cfg, tcfg, func(target string) string {
		bh = startBlackhole(t, target)
		return bh.relay.Addr()
	})
	return c, bh
}

// newRelayedPair starts nodes n1 (in role first) and n2 (secondary); n1
// dials n2 at the address relay returns, given n2's own.
func newRelayedPair(t *testing.T, first Role, cfg func(*VolumeConfig), tcfg func(*TransportConfig), relay func(target string) string) *testCluster {
	c := &testCluster{t: t, cfg: cfg, tcfg: tcfg}
	for i := range 2 {
		c.nodes = append(c.nodes, &testNode{t: t, name: fmt.Sprintf("n%d", i+1), dir: t.TempDir(), addr: freeAddr(t), store: blocktest.NewMem(testVolSize)})
	}
	secondaryAddr := c.nodes[1].addr
	c.nodes[1].addr = relay(secondaryAddr)
	c.start(c.nodes[0], first)
	c.nodes[1].addr = secondaryAddr
	c.start(c.nodes[1], Secondary)
	t.Cleanup(func() {
		for _, n := range c.nodes {
			c.stop(n)
		}
	})
	return c
}

// corruptAfter flips one bit of the n-th byte the dialer sends from now on.
func (b *blackhole) corruptAfter(n int64) {
	b.mu.Lock()
	b.corrupt = n
	b.mu.Unlock()
}

func (b *blackhole) silence() {
	b.mu.Lock()
	b.silent = true
	b.mu.Unlock()
}

func TestSilentPeerDetected(t *testing.T) {
	c, bh := newTappedCluster(t, Primary, func(vc *VolumeConfig) { vc.ContinueAlone = true; vc.Timeout = 500 * time.Millisecond })
	p, s := c.nodes[0], c.nodes[1]
	c.waitConnected(p, s)
	bh.silence()
	// A write now waits for an ack that never comes, until the silence
	// outlasts the timeout: then the peer is lost, the write is marked
	// out of sync and (continue_alone) acknowledged.
	if err := p.vol.WriteAt(randBytes(4096), 0, false); err != nil {
		t.Fatal(err)
	}
	st := p.vol.Status().Peers[0]
	if st.Connection == Connected || !bytes.Contains([]byte(st.LastError), []byte("silent")) || st.OutOfSyncBytes != 4096 {
		t.Fatalf("after the peer fell silent: %s, last error %q, out of sync %d", st.Connection, st.LastError, st.OutOfSyncBytes)
	}
}

func TestInterruptedResyncResumes(t *testing.T) {
	c := newTestCluster(t, []Role{Primary, Secondary}, func(vc *VolumeConfig) {
		vc.ContinueAlone, vc.ResyncRate, vc.ResyncSaveInterval = true, 32<<20, 100*time.Millisecond
	})
	p, s := c.nodes[0], c.nodes[1]
	c.waitConnected(p, s)
	c.stop(s)
	waitFor(t, "primary notices", func() bool { return peerConn(p, "n2") != Connected })
	const dirty = 32 << 20
	for off := int64(0); off < dirty; off += 1 << 20 {
		if err := p.vol.WriteAt(randBytes(1<<20), off, false); err != nil {
			t.Fatal(err)
		}
	}
	c.start(s, Secondary)
	// Interrupt the resync (about a second long at the capped rate)
	// once it has copied a good part.
	waitFor(t, "resync under way", func() bool {
		r := p.vol.Status().Peers[0].Resync
		return r != nil && r.Finished.IsZero() && r.DoneBytes >= 12<<20
	})
	c.crash(s)
	waitFor(t, "primary notices", func() bool { return peerConn(p, "n2") != SyncSource })
	left := p.vol.Status().Peers[0].OutOfSyncBytes
	if left >= dirty || left == 0 {
		t.Fatalf("after the interruption %d bytes are out of sync, want less than the %d dirty and more than 0", left, dirty)
	}
	// The target restarts Inconsistent; the primary's bitmap still counts
	// from the generation the target holds, so the resync resumes where
	// it was instead of starting over.
	c.start(s, Secondary)
	c.waitConnected(p, s)
	st := p.vol.Status().Peers[0]
	if st.Resync == nil || st.Resync.Kind != "bitmap" || st.Resync.TotalBytes > left {
		t.Fatalf("resumed resync %+v, want a bitmap resync of at most the %d bytes left", st.Resync, left)
	}
	if err := p.vol.Flush(); err != nil {
		t.Fatal(err)
	}
	sameData(t, p, s)
}

// TestRestartedPeerKnocks restarts the node that accepts the link while the
// dialer's backoff is an hour long: the restarted node's knock makes the
// dialer connect at once.
func TestRestartedPeerKnocks(t *testing.T) {
	c := newTestCluster(t, []Role{Primary, Secondary}, nil)
	c.tcfg = func(tc *TransportConfig) { tc.RetryMin, tc.RetryMax = time.Hour, time.Hour }
	p, s := c.nodes[0], c.nodes[1]
	// Restart the dialer with the long backoff (it dials at once when it
	// starts), then the acceptor.
	c.stop(p)
	c.start(p, Primary)
	c.waitConnected(p, s)
	c.stop(s)
	waitFor(t, "dialer notices", func() bool { return peerConn(p, "n2") != Connected })
	c.start(s, Secondary)
	c.waitConnected(p, s)
}
