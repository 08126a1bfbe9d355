package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/blockrep/blockrep/block"
	"github.com/blockrep/blockrep/internal/nbdclient"
	"github.com/blockrep/blockrep/nbd"
)

// multipath is an NBD front in the test process that follows the primary,
// the way dm-multipath with queue_if_no_path does in front of two paths to
// one LUN, or an NFS client that retransmits to a VIP that moved: an NBD
// client does not reconnect by itself, so a switchover would otherwise end
// fio's connection. The front serves one export (the repo's own nbd
// server) whose block.Device forwards every request to the node that
// currently accepts writes, through internal/nbdclient. When a request
// fails because the path went away — connection lost, or EPERM/EROFS (the
// node is now a read-only secondary), EIO or ESHUTDOWN (it is fenced or
// stopping) — the front drops that path, looks for the node whose export
// now accepts writes (round robin over the data nodes' NBD addresses,
// starting with the node after the one that failed) and sends the same
// request again. Reads and writes are idempotent, so a write whose first
// attempt had an unknown outcome may be written twice, with the same
// data; a FLUSH sent again to the new primary covers every write it
// acknowledged. Requests queue while no path accepts writes, for at most
// haWait, which only catches a hang.
//
// The front also keeps a shadow copy of the volume: every write it
// acknowledged to its client, in order of acknowledgement. With no two
// overlapping writes in flight at once (fio's serialize_overlap, disjoint
// job regions), the shadow is what the volume must hold at the end.
type multipath struct {
	t     *testing.T
	names []string
	addrs []string
	size  int64

	mu   sync.Mutex // serialises path changes
	cur  *nbdclient.Client
	idx  int // index of cur
	next int // first node tried by the next path search

	// acks counts the writes each node acknowledged; switches the paths
	// opened; retries the requests sent again.
	acks     []atomic.Int64
	switches atomic.Int64
	retries  atomic.Int64

	smu    sync.Mutex
	shadow []byte

	srv *nbd.Server
	ln  net.Listener
}

// startMultipath serves clusterVolume at a free port on 127.0.0.1, in
// front of the data nodes; cleanup stops it.
func startMultipath(t *testing.T, size int64, nodes ...*daemon) *multipath {
	t.Helper()
	m := &multipath{t: t, size: size, acks: make([]atomic.Int64, len(nodes)), shadow: make([]byte, size)}
	for _, d := range nodes {
		m.names = append(m.names, d.spec.Name)
		m.addrs = append(m.addrs, d.Addr())
	}
	m.srv = nbd.NewServer(nbd.Config{})
	if err := m.srv.AddExport(&nbd.Export{Name: clusterVolume, Device: m, Description: "e2e multipath front"}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.ln = ln
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = m.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = m.srv.Shutdown(ctx)
		<-served
		m.mu.Lock()
		if m.cur != nil {
			m.cur.Close()
			m.cur = nil
		}
		m.mu.Unlock()
	})
	return m
}

// URI is the front's export.
func (m *multipath) URI() string { return "nbd://" + m.ln.Addr().String() + "/" + clusterVolume }

// path returns the current path, searching for a node that accepts writes
// when there is none.
func (m *multipath) path(deadline time.Time) (*nbdclient.Client, int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for m.cur == nil {
		for k := range m.addrs {
			i := (m.next + k) % len(m.addrs)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			c, err := nbdclient.Dial(ctx, m.addrs[i], clusterVolume)
			cancel()
			if err != nil {
				continue
			}
			if c.ReadOnly() {
				c.Close()
				continue
			}
			m.cur, m.idx = c, i
			m.switches.Add(1)
			m.t.Logf("multipath: %s now serves the front (path %d)", m.names[i], m.switches.Load())
			break
		}
		if m.cur == nil {
			if time.Now().After(deadline) {
				return nil, -1, fmt.Errorf("multipath: no node accepted writes within %v", haWait)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return m.cur, m.idx, nil
}

// drop closes c if it is still the current path (its other requests fail
// and are sent again); the next search starts after it.
func (m *multipath) drop(c *nbdclient.Client, why error) {
	m.mu.Lock()
	if m.cur == c {
		m.cur = nil
		m.next = m.idx + 1
		m.t.Logf("multipath: dropping the path to %s: %v", m.names[m.idx], why)
	}
	m.mu.Unlock()
	c.Close()
}

// pathFailed says whether err means the node no longer serves as primary
// (or is gone), rather than a bad request.
func pathFailed(err error) bool {
	var e nbdclient.Errno
	if errors.As(err, &e) {
		switch e {
		case 1, 5, 30, 108: // EPERM, EIO, EROFS, ESHUTDOWN
			return true
		}
		return false
	}
	return true // connection lost: ErrClosed and friends
}

// do runs one request on the current path until it succeeds, fails for a
// reason other than the path, or haWait passes.
func (m *multipath) do(req func(c *nbdclient.Client) error) (int, error) {
	deadline := time.Now().Add(haWait)
	for {
		c, i, err := m.path(deadline)
		if err != nil {
			return -1, err
		}
		err = req(c)
		if err == nil {
			return i, nil
		}
		if !pathFailed(err) {
			return i, err
		}
		m.drop(c, err)
		m.retries.Add(1)
		if time.Now().After(deadline) {
			return i, err
		}
	}
}

func (m *multipath) Size() int64 { return m.size }

func (m *multipath) ReadAt(p []byte, off int64) error {
	_, err := m.do(func(c *nbdclient.Client) error { return c.ReadAt(p, off) })
	return err
}

func (m *multipath) WriteAt(p []byte, off int64, fua bool) error {
	i, err := m.do(func(c *nbdclient.Client) error { return c.WriteAt(p, off, fua) })
	if err != nil {
		return err
	}
	m.acks[i].Add(1)
	m.smu.Lock()
	copy(m.shadow[off:], p)
	m.smu.Unlock()
	return nil
}

func (m *multipath) Flush() error {
	_, err := m.do(func(c *nbdclient.Client) error { return c.Flush() })
	return err
}

func (m *multipath) Trim(off, length int64) error { return syscall.EOPNOTSUPP }

func (m *multipath) WriteZeroes(off, length int64, flags block.ZeroFlags) error {
	return syscall.EOPNOTSUPP
}

func (m *multipath) Cache(off, length int64) error { return nil }

func (m *multipath) Extents(off, length int64, fn func(block.Extent) bool) error {
	fn(block.Extent{Offset: off, Length: length})
	return nil
}

func (m *multipath) Close() error { return nil }

// shadowCopy returns a copy of the shadow.
func (m *multipath) shadowCopy() []byte {
	m.smu.Lock()
	defer m.smu.Unlock()
	return append([]byte(nil), m.shadow...)
}

// ackCounts returns the writes each node acknowledged so far, by name.
func (m *multipath) ackCounts() map[string]int64 {
	r := map[string]int64{}
	for i, n := range m.names {
		r[n] = m.acks[i].Load()
	}
	return r
}

var _ block.Device = (*multipath)(nil)
