package replica

import (
	"bytes"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/blockrep/blockrep/block/blocktest"
	"github.com/blockrep/blockrep/replica/wire"
)

// frameRelay is a man in the middle without the secret: it forwards a peer
// link's frames and can rewrite the payload of a replicated write, fixing
// up the payload CRC-32C and the header checksum as an attacker would, so
// that only a keyed MAC can tell.
type frameRelay struct {
	ln     net.Listener
	target string
	tags   bool // frames after the handshake end in a MAC tag

	flipWrite atomic.Bool  // flip one bit of the next WRITE frame's payload
	flipped   atomic.Int32 // how many frames were rewritten

	mu    sync.Mutex
	conns []net.Conn
}

func startFrameRelay(t testing.TB, target string, tags bool) *frameRelay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &frameRelay{ln: ln, target: target, tags: tags}
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			r.mu.Lock()
			r.conns = append(r.conns, in, out)
			r.mu.Unlock()
			go r.rewrite(in, out)
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, c := range r.conns {
			c.Close()
		}
	})
	return r
}

// trailer is how many bytes follow a frame's payload on the wire: the
// frame MAC on a protected link, except in the handshake.
func (r *frameRelay) trailer(h wire.Header) int {
	switch h.Type {
	case wire.TypeHello, wire.TypeAuth, wire.TypeAuthOK:
		return 0
	}
	if r.tags {
		return wire.TagSize
	}
	return 0
}

// rewrite forwards the dialer's frames one by one, rewriting a WRITE frame
// when asked to.
func (r *frameRelay) rewrite(from, to net.Conn) {
	defer to.Close()
	var hdr [wire.HeaderSize]byte
	for {
		if _, err := io.ReadFull(from, hdr[:]); err != nil {
			return
		}
		h, err := wire.DecodeHeader(hdr[:])
		if err != nil {
			// Not a frame we understand: forward the rest blindly.
			_, _ = to.Write(hdr[:])
			_, _ = io.Copy(to, from)
			return
		}
		body := make([]byte, int(h.Length)+r.trailer(h))
		if _, err := io.ReadFull(from, body); err != nil {
			return
		}
		if h.Type == wire.TypeWrite && h.Length >= 4096 && r.flipWrite.CompareAndSwap(true, false) {
			body[1000] ^= 0x10
			if h.Flags&wire.FlagChecksum != 0 {
				h.PayloadCRC = wire.PayloadChecksum(body[:h.Length])
			}
			h.MarshalTo(hdr[:]) // a fresh header checksum
			r.flipped.Add(1)
		}
		if _, err := to.Write(append(hdr[:], body...)); err != nil {
			return
		}
	}
}

// TestRelayRewritingWriteRefused: a relay without the secret flips one bit
// of a replicated write and recomputes the CRC-32C (data_integrity on).
// The secondary must refuse the frame and drop the link, store nothing of
// the attacker's, say why, and end up with what the primary acknowledged.
// With security = "none" the same relay's write lands: the test sees the
// difference.
func TestRelayRewritingWriteRefused(t *testing.T) {
	for _, prot := range []wire.Protection{wire.ProtectMAC, wire.ProtectNone} {
		t.Run(prot.String(), func(t *testing.T) { testRelayRewrite(t, prot) })
	}
}

func testRelayRewrite(t *testing.T, prot wire.Protection) {
	c := &testCluster{t: t, cfg: func(vc *VolumeConfig) { vc.DataIntegrity, vc.ContinueAlone = true, true },
		tcfg: func(tc *TransportConfig) { tc.Protection = prot }}
	for i := range 2 {
		c.nodes = append(c.nodes, &testNode{t: t, name: []string{"n1", "n2"}[i], dir: t.TempDir(), addr: freeAddr(t), store: blocktest.NewMem(testVolSize)})
	}
	// n1 dials n2 through the relay.
	relay := startFrameRelay(t, c.nodes[1].addr, prot == wire.ProtectMAC)
	secondaryAddr := c.nodes[1].addr
	c.nodes[1].addr = relay.ln.Addr().String()
	c.start(c.nodes[0], Primary)
	c.nodes[1].addr = secondaryAddr
	c.start(c.nodes[1], Secondary)
	t.Cleanup(func() {
		for _, n := range c.nodes {
			c.stop(n)
		}
	})
	p, s := c.nodes[0], c.nodes[1]
	c.waitConnected(p, s)

	data := randBytes(64 << 10)
	flipped := bytes.Clone(data)
	flipped[1000] ^= 0x10 // the bit the relay flips
	relay.flipWrite.Store(true)
	if err := p.vol.WriteAt(data, 0, false); err != nil {
		t.Fatal(err)
	}
	if relay.flipped.Load() != 1 {
		t.Fatalf("the relay rewrote %d frames, want 1", relay.flipped.Load())
	}
	got := make([]byte, len(data))
	if err := s.store.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if prot == wire.ProtectNone {
		if !bytes.Equal(got, flipped) {
			t.Fatalf("without protection the secondary holds %d bytes other than the relay's", diffBytes(got, flipped))
		}
		return
	}
	if bytes.Equal(got, flipped) {
		t.Fatal("the secondary stored the relay's rewritten write")
	}
	waitFor(t, "the secondary to refuse the rewritten frame", func() bool {
		return strings.Contains(s.vol.Status().Peers[0].LastError, "MAC")
	})
	t.Logf("secondary's last error: %s", s.vol.Status().Peers[0].LastError)
	// The link comes back (the relay rewrites one frame only) and the
	// resync gives the secondary what the primary acknowledged.
	c.waitConnected(p, s)
	waitFor(t, "the resync", func() bool {
		st := p.vol.Status().Peers[0]
		return st.Connection == Connected && st.OutOfSyncBytes == 0
	})
	if err := p.vol.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.store.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("after the resync the secondary's copy differs from the acknowledged write in %d bytes", diffBytes(got, data))
	}
	sameData(t, p, s)
}
