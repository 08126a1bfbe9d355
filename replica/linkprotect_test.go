package replica

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/blockrep/blockrep/internal/linktls"
	"github.com/blockrep/blockrep/internal/syncbuf"
	"github.com/blockrep/blockrep/internal/testpki"
	"github.com/blockrep/blockrep/internal/testrelay"
	"github.com/blockrep/blockrep/replica/wire"
)

// frameRelay is a man in the middle without the secret: it forwards a peer
// link's frames and can rewrite the payload of a replicated write, fixing
// up the payload CRC-32C and the header checksum as an attacker would, so
// that only a keyed MAC can tell.
type frameRelay struct {
	relay *testrelay.Relay
	tags  bool // frames after the handshake end in a MAC tag

	flipWrite atomic.Bool  // flip one bit of the next WRITE frame's payload
	flipped   atomic.Int32 // how many frames were rewritten
}

func startFrameRelay(t testing.TB, target string, tags bool) *frameRelay {
	r := &frameRelay{tags: tags}
	r.relay = testrelay.Start(t, target, func(in, out net.Conn) {
		go r.rewrite(in, out)
		go func() { _, _ = io.Copy(in, out); in.Close() }()
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
	var logs syncbuf.Buffer
	var relay *frameRelay
	c := newRelayedPair(t, Primary, func(vc *VolumeConfig) {
		vc.DataIntegrity, vc.ContinueAlone = true, true
		vc.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	}, func(tc *TransportConfig) { tc.Protection = prot }, func(target string) string {
		relay = startFrameRelay(t, target, prot == wire.ProtectMAC)
		return relay.relay.Addr()
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
	if !strings.Contains(logs.String(), "level=ERROR msg=\"peer link down: a frame failed its MAC") {
		t.Fatalf("no error in the log says why the link went down:\n%s", logs.String())
	}
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

// captureRelay forwards TCP connections to target and keeps every byte the
// dialer sent; it can flip one bit of what it forwards next.
type captureRelay struct {
	relay *testrelay.Relay
	flip  atomic.Bool

	mu   sync.Mutex
	seen bytes.Buffer
}

func startCaptureRelay(t testing.TB, target string) *captureRelay {
	r := &captureRelay{}
	r.relay = testrelay.Start(t, target, func(in, out net.Conn) {
		go func() { _, _ = io.Copy(in, out); in.Close() }()
		defer out.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := in.Read(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.seen.Write(buf[:n])
			r.mu.Unlock()
			if n > 100 && r.flip.CompareAndSwap(true, false) {
				buf[n/2] ^= 0x01
			}
			if _, err := out.Write(buf[:n]); err != nil {
				return
			}
		}
	})
	return r
}

func (r *captureRelay) captured() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.seen.Bytes())
}

// relayedCluster starts n1 (primary) and n2 (secondary), n1 dialing n2
// through the capture relay, with transport settings from tcfg.
func relayedCluster(t *testing.T, cfg func(*VolumeConfig), tcfg func(*TransportConfig)) (*testCluster, *captureRelay) {
	var relay *captureRelay
	c := newRelayedPair(t, Primary, cfg, tcfg, func(target string) string {
		relay = startCaptureRelay(t, target)
		return relay.relay.Addr()
	})
	return c, relay
}

// TestTLSLinkHidesData: with security = "tls" the data replicates and a
// relay between the peers never sees it; with "mac" the same relay does
// (the search works). A flipped bit in transit drops the TLS link and
// stores nothing wrong.
func TestTLSLinkHidesData(t *testing.T) {
	pattern := bytes.Repeat([]byte("PLAINTEXT-PATTERN-"), 4096)[:64<<10]
	ca := testpki.NewCA(t, "blockrep test CA")
	for _, prot := range []wire.Protection{wire.ProtectTLS, wire.ProtectMAC} {
		t.Run(prot.String(), func(t *testing.T) {
			tcfg := func(tc *TransportConfig) { tc.Protection = prot }
			if prot == wire.ProtectTLS {
				tcfg = func(tc *TransportConfig) {
					cert, _, _ := ca.NodeCertificate(t, tc.Local)
					tc.Protection, tc.TLS = wire.ProtectTLS, linktls.New(cert, ca.Pool())
				}
			}
			c, relay := relayedCluster(t, func(vc *VolumeConfig) { vc.ContinueAlone = true }, tcfg)
			p, s := c.nodes[0], c.nodes[1]
			c.waitConnected(p, s)
			if err := p.vol.WriteAt(pattern, 0, false); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(pattern))
			if err := s.store.ReadAt(got, 0); err != nil || !bytes.Equal(got, pattern) {
				t.Fatalf("the secondary does not hold the acknowledged write (%v)", err)
			}
			seen := bytes.Contains(relay.captured(), []byte("PLAINTEXT-PATTERN-"))
			if prot == wire.ProtectMAC {
				if !seen {
					t.Fatal("with security = mac the relay did not see the data: the search is broken")
				}
				return
			}
			if seen {
				t.Fatal("with security = tls the relay saw the data in clear")
			}
			// Tampering with the encrypted stream drops the link.
			relay.flip.Store(true)
			second := randBytes(64 << 10)
			if err := p.vol.WriteAt(second, 1<<20, false); err != nil {
				t.Fatal(err)
			}
			if err := s.store.ReadAt(got, 1<<20); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, second) && !bytes.Equal(got, make([]byte, len(got))) {
				t.Fatalf("after tampering the secondary holds neither the write nor the old zeroes (%d bytes differ)", diffBytes(got, second))
			}
			waitFor(t, "the link to drop", func() bool { return s.vol.Status().Peers[0].LastError != "" })
			t.Logf("secondary's last error: %s", s.vol.Status().Peers[0].LastError)
			c.waitConnected(p, s)
			waitFor(t, "the resync", func() bool { return p.vol.Status().Peers[0].OutOfSyncBytes == 0 })
			if err := p.vol.Flush(); err != nil {
				t.Fatal(err)
			}
			sameData(t, p, s)
		})
	}
}

// TestTLSCertificateMustNameThePeer: a node presenting another node's
// certificate (signed by the right CA) is refused, and so is a certificate
// from another CA.
func TestTLSCertificateMustNameThePeer(t *testing.T) {
	ca, other := testpki.NewCA(t, "blockrep test CA"), testpki.NewCA(t, "blockrep test CA")
	for _, tc := range []struct {
		name string
		cert func(node string) *linktls.Config
	}{
		{"n2 shows n3's certificate", func(node string) *linktls.Config {
			if node == "n2" {
				node = "n3"
			}
			cert, _, _ := ca.NodeCertificate(t, node)
			return linktls.New(cert, ca.Pool())
		}},
		{"n2's certificate from another CA", func(node string) *linktls.Config {
			signer := ca
			if node == "n2" {
				signer = other
			}
			cert, _, _ := signer.NodeCertificate(t, node)
			return linktls.New(cert, ca.Pool())
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestClusterWith(t, []Role{Primary, Secondary}, nil, func(tcfg *TransportConfig) {
				tcfg.Protection, tcfg.TLS = wire.ProtectTLS, tc.cert(tcfg.Local)
			})
			p := c.nodes[0]
			waitFor(t, "the dialer to report the refused certificate", func() bool {
				return strings.Contains(p.vol.Status().Peers[0].LastError, "certificate")
			})
			if peerConn(p, "n2") == Connected {
				t.Fatal("connected with a wrong certificate")
			}
			t.Logf("n1's last error: %s", p.vol.Status().Peers[0].LastError)
		})
	}
}

// TestTLSDialerCertificateMustNameIt: the accepting node checks the
// dialer's certificate against the node the dialer proved to be.
func TestTLSDialerCertificateMustNameIt(t *testing.T) {
	ca := testpki.NewCA(t, "blockrep test CA")
	var logs syncbuf.Buffer
	c := newTestClusterWith(t, []Role{Primary, Secondary}, nil, func(tc *TransportConfig) {
		node := tc.Local
		if node == "n1" {
			node = "n3" // n1 dials n2
		} else {
			tc.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		}
		cert, _, _ := ca.NodeCertificate(t, node)
		tc.Protection, tc.TLS = wire.ProtectTLS, linktls.New(cert, ca.Pool())
	})
	waitFor(t, "n2 to refuse n1's certificate", func() bool {
		return strings.Contains(logs.String(), `the certificate of node \"n1\" does not name it`)
	})
	if peerConn(c.nodes[1], "n1") == Connected {
		t.Fatal("n2 accepted n1 with n3's certificate")
	}
}
