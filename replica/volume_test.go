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
	"testing"
	"time"

	"github.com/blockrep/blockrep/block/blocktest"
	"github.com/blockrep/blockrep/meta"
)

// testNode is one in-process node: meta database, memory store, volume and
// transport. Restarting keeps the database file and the store.
type testNode struct {
	t      *testing.T
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
	t     *testing.T
	nodes []*testNode
	cfg   func(*VolumeConfig)
	tcfg  func(*TransportConfig)
}

const testVolSize = 64 << 20

var testSecret = []byte("0123456789abcdef-test-secret")

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// newTestCluster makes nodes n1..nN; roles[i] is node i's configured role.
func newTestCluster(t *testing.T, roles []Role, cfg func(*VolumeConfig)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, cfg: cfg}
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
func waitFor(t *testing.T, what string, cond func() bool) {
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
