package wire

import (
	"bytes"
	"context"
	"errors"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var testSecret = []byte("correct horse battery staple!!")

func testConfigs() (ini, res HandshakeConfig) {
	ini = HandshakeConfig{Cluster: "prod", NodeID: "node-a", Secret: testSecret, Initiator: true}
	res = HandshakeConfig{Cluster: "prod", NodeID: "node-b", Secret: testSecret}
	return ini, res
}

type result struct {
	peer Peer
	err  error
}

// runPair runs both ends of a handshake over net.Pipe and returns their
// results; after it returns, both conns are still open (closed by cleanup),
// so a test can keep talking over them.
func runPair(t *testing.T, ini, res HandshakeConfig) (ci, cr net.Conn, ri, rr result) {
	t.Helper()
	ci, cr = net.Pipe()
	t.Cleanup(func() { ci.Close(); cr.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		p, err := Handshake(ctx, cr, res)
		rr = result{p, err}
		if err != nil {
			cr.Close() // as a real caller would; unblocks a peer still writing
		}
	})
	p, err := Handshake(ctx, ci, ini)
	ri = result{p, err}
	if err != nil {
		ci.Close()
	}
	wg.Wait()
	return ci, cr, ri, rr
}

func TestHandshakeSuccess(t *testing.T) {
	ini, res := testConfigs()
	// Both directions of dialing: a dials b, then b dials a.
	for _, swap := range []bool{false, true} {
		if swap {
			ini.NodeID, res.NodeID = res.NodeID, ini.NodeID
		}
		ci, cr, ri, rr := runPair(t, ini, res)
		if ri.err != nil || rr.err != nil {
			t.Fatalf("handshake failed: initiator %v, responder %v", ri.err, rr.err)
		}
		if p := ri.peer; p.NodeID != res.NodeID || p.Version != MaxVersion || p.Protection != ProtectMAC || p.Send == nil || p.Recv == nil {
			t.Errorf("initiator sees %+v", ri.peer)
		}
		if p := rr.peer; p.NodeID != ini.NodeID || p.Version != MaxVersion || p.Protection != ProtectMAC || p.Send == nil || p.Recv == nil {
			t.Errorf("responder sees %+v", rr.peer)
		}
		// The handshake read nothing beyond its own messages and cleared
		// the deadline: frames flow on the same conn afterwards.
		go func() {
			w := NewWriter(ci)
			w.SetVersion(ri.peer.Version)
			w.SetMAC(ri.peer.Send)
			_ = w.WriteFrame(Header{Type: TypePing, Seq: 1}, []byte("after"))
		}()
		r := NewReader(cr, nil)
		r.SetVersion(rr.peer.Version)
		r.SetMAC(rr.peer.Recv)
		h, p, err := r.ReadFrame()
		if err != nil || h.Type != TypePing || string(p) != "after" {
			t.Fatalf("frame after handshake: %+v %q %v", h, p, err)
		}
	}
}

func TestHandshakeExpectedPeer(t *testing.T) {
	ini, res := testConfigs()
	ini.PeerID = "node-b"
	if _, _, ri, rr := runPair(t, ini, res); ri.err != nil || rr.err != nil {
		t.Fatalf("expected peer refused: %v / %v", ri.err, rr.err)
	}
	ini.PeerID = "node-c"
	_, _, ri, rr := runPair(t, ini, res)
	if !errors.Is(ri.err, ErrUnexpectedPeer) || !errors.Is(rr.err, ErrPeerRefused) || !errors.Is(rr.err, ErrUnexpectedPeer) {
		t.Fatalf("unexpected peer: initiator %v, responder %v", ri.err, rr.err)
	}
}

// TestHandshakeRefusals: each misconfiguration makes both sides fail, with
// the reason visible on both (locally detected, or via the peer's Error).
func TestHandshakeRefusals(t *testing.T) {
	tests := []struct {
		name string
		edit func(ini, res *HandshakeConfig)
		want error
	}{
		{"wrong secret", func(ini, res *HandshakeConfig) { res.Secret = []byte("another secret, 16+ bytes") }, ErrAuthFailed},
		{"secret differs in last byte", func(ini, res *HandshakeConfig) {
			res.Secret = bytes.Clone(testSecret)
			res.Secret[len(res.Secret)-1] ^= 1
		}, ErrAuthFailed},
		{"wrong cluster", func(ini, res *HandshakeConfig) { res.Cluster = "staging" }, ErrClusterMismatch},
		{"same node ID", func(ini, res *HandshakeConfig) { res.NodeID = ini.NodeID }, ErrSameNodeID},
		{"protection differs", func(ini, res *HandshakeConfig) { res.Protection = ProtectNone }, ErrProtectionMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ini, res := testConfigs()
			tc.edit(&ini, &res)
			_, _, ri, rr := runPair(t, ini, res)
			for side, r := range map[string]result{"initiator": ri, "responder": rr} {
				if !errors.Is(r.err, tc.want) {
					t.Errorf("%s: err = %v, want %v", side, r.err, tc.want)
				}
				if r.peer.NodeID != "" || r.peer.Send != nil {
					t.Errorf("%s accepted peer %+v", side, r.peer)
				}
				if r.err != nil && (strings.Contains(r.err.Error(), string(testSecret)) || strings.Contains(r.err.Error(), string(res.Secret))) {
					t.Errorf("%s: error leaks the secret: %v", side, r.err)
				}
			}
			// Exactly one side detected it, the other was told.
			if errors.Is(ri.err, ErrPeerRefused) == errors.Is(rr.err, ErrPeerRefused) {
				t.Errorf("want exactly one side refused by its peer: %v / %v", ri.err, rr.err)
			}
		})
	}
}

func TestHandshakeConfigValidate(t *testing.T) {
	ok, _ := testConfigs()
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func(c *HandshakeConfig)
	}{
		{"no secret", func(c *HandshakeConfig) { c.Secret = nil }},
		{"15-byte secret", func(c *HandshakeConfig) { c.Secret = make([]byte, MinSecretLen-1) }},
		{"no cluster", func(c *HandshakeConfig) { c.Cluster = "" }},
		{"long cluster", func(c *HandshakeConfig) { c.Cluster = strings.Repeat("c", MaxNameLen+1) }},
		{"no node", func(c *HandshakeConfig) { c.NodeID = "" }},
		{"long node", func(c *HandshakeConfig) { c.NodeID = strings.Repeat("n", MaxNameLen+1) }},
		{"long peer", func(c *HandshakeConfig) { c.PeerID = strings.Repeat("p", MaxNameLen+1) }},
		{"peer is self", func(c *HandshakeConfig) { c.PeerID = c.NodeID }},
		{"version too new", func(c *HandshakeConfig) { c.MaxVersion = MaxVersion + 1 }},
		{"version range inverted", func(c *HandshakeConfig) { c.MinVersion, c.MaxVersion = 2, 1 }},
	}
	for _, tc := range tests {
		c := ok
		tc.edit(&c)
		err := c.Validate()
		if !errors.Is(err, ErrBadConfig) {
			t.Errorf("%s: err = %v", tc.name, err)
		}
		// Handshake refuses it too, before touching the connection.
		if _, herr := Handshake(context.Background(), nil, c); !errors.Is(herr, ErrBadConfig) {
			t.Errorf("%s: Handshake err = %v", tc.name, herr)
		}
	}
	c := ok
	c.Secret = make([]byte, MinSecretLen)
	if err := c.Validate(); err != nil {
		t.Errorf("16-byte secret refused: %v", err)
	}
}

// fakePeer drives the other end of a pipe by hand, to play attackers and
// broken implementations.
type fakePeer struct {
	t    *testing.T
	conn net.Conn
	r    *Reader
	w    *Writer
}

func newFake(t *testing.T, conn net.Conn) *fakePeer {
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	w := NewWriter(conn)
	w.SetVersion(handshakeVersion)
	return &fakePeer{t: t, conn: conn, r: NewReader(conn, nil), w: w}
}

// sendHello sends h with its protection (ProtectMAC if unset) in the
// header, as a real Hello.
func (f *fakePeer) sendHello(h hello) error {
	if h.prot == 0 {
		h.prot = ProtectMAC
	}
	return f.w.WriteFrame(Header{Type: TypeHello, Flags: FlagChecksum, Offset: uint64(h.prot)}, h.marshal())
}

func (f *fakePeer) read() (Header, []byte, error) {
	h, p, err := f.r.ReadFrame()
	return h, bytes.Clone(p), err
}

func (f *fakePeer) send(t FrameType, p []byte) error {
	return f.w.WriteFrame(Header{Type: t, Flags: FlagChecksum}, p)
}

// expectError reads frames until an Error frame and returns its code.
func (f *fakePeer) expectError() uint16 {
	for {
		h, p, err := f.read()
		if err != nil {
			f.t.Errorf("fake peer: no Error frame: %v", err)
			return 0
		}
		if h.Type == TypeError && len(p) >= 2 {
			return uint16(p[0])<<8 | uint16(p[1])
		}
	}
}

// withFake runs a real Handshake with cfg against a fake peer script.
func withFake(t *testing.T, cfg HandshakeConfig, script func(f *fakePeer)) error {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer b.Close()
		script(newFake(t, b))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := Handshake(ctx, a, cfg)
	a.Close()
	<-done
	return err
}

func TestHandshakeVersionMismatch(t *testing.T) {
	ini, res := testConfigs()
	// A newer peer (versions 5..7) dials a real responder.
	err := withFake(t, res, func(f *fakePeer) {
		h := hello{minV: 5, maxV: 7, cluster: "prod", node: "node-z"}
		if err := f.sendHello(h); err != nil {
			t.Error(err)
		}
		if c := f.expectError(); c != codeVersion {
			t.Errorf("responder's error code %d, want %d", c, codeVersion)
		}
	})
	if !errors.Is(err, ErrNoCommonVersion) {
		t.Fatalf("responder: %v", err)
	}
	// A real initiator reaches a responder speaking only 3..4.
	err = withFake(t, ini, func(f *fakePeer) {
		if _, _, err := f.read(); err != nil {
			t.Error(err)
		}
		h := hello{minV: 3, maxV: 4, cluster: "prod", node: "node-b", nonce: [32]byte{9}}
		if err := f.sendHello(h); err != nil {
			t.Error(err)
		}
		if c := f.expectError(); c != codeVersion {
			t.Errorf("initiator's error code %d, want %d", c, codeVersion)
		}
	})
	if !errors.Is(err, ErrNoCommonVersion) {
		t.Fatalf("initiator: %v", err)
	}
}

// TestHandshakeReflection: a fake responder without the secret tries to pass
// the initiator's own messages off as its own.
func TestHandshakeReflection(t *testing.T) {
	ini, _ := testConfigs()

	// Pure echo: every frame comes straight back.
	err := withFake(t, ini, func(f *fakePeer) {
		_, p, err := f.read()
		if err != nil {
			t.Error(err)
			return
		}
		f.send(TypeHello, p)
		if c := f.expectError(); c != codeReflected {
			t.Errorf("error code %d, want %d", c, codeReflected)
		}
	})
	if !errors.Is(err, ErrReflected) {
		t.Fatalf("pure echo: %v", err)
	}

	// Smarter: a Hello of its own (fresh nonce, another ID), then the
	// initiator's proof echoed as the responder's. The direction label
	// makes the two proofs differ.
	err = withFake(t, ini, func(f *fakePeer) {
		if _, _, err := f.read(); err != nil {
			t.Error(err)
			return
		}
		h := hello{minV: MinLinkVersion, maxV: MaxVersion, cluster: "prod", node: "node-b", nonce: [32]byte{1, 2, 3}}
		f.sendHello(h)
		_, proof, err := f.read()
		if err != nil {
			t.Error(err)
			return
		}
		f.send(TypeAuth, proof)
		if c := f.expectError(); c != codeAuth {
			t.Errorf("error code %d, want %d", c, codeAuth)
		}
	})
	if !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("reflected proof: %v", err)
	}
}

// recordConn keeps a copy of every byte read through it.
type recordConn struct {
	net.Conn
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *recordConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.buf.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

// TestHandshakeReplay: an eavesdropper records an honest initiator's
// messages and replays them later. The responder's fresh nonce makes the old
// proof worthless.
func TestHandshakeReplay(t *testing.T) {
	ini, res := testConfigs()
	ci, cr := net.Pipe()
	rec := &recordConn{Conn: cr}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { _, err := Handshake(ctx, rec, res); errc <- err }()
	if _, err := Handshake(ctx, ci, ini); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	ci.Close()
	cr.Close()

	var recorded [][]byte
	r := NewReader(bytes.NewReader(rec.buf.Bytes()), nil)
	for {
		h, p, err := r.ReadFrame()
		if err != nil {
			break
		}
		var buf bytes.Buffer
		w := NewWriter(&buf)
		w.SetVersion(h.Version)
		if err := w.WriteFrame(h, p); err != nil {
			t.Fatal(err)
		}
		recorded = append(recorded, buf.Bytes())
	}
	if len(recorded) != 3 {
		t.Fatalf("recorded %d initiator frames, want 3 (Hello, Auth, AuthOK)", len(recorded))
	}
	err := withFake(t, res, func(f *fakePeer) {
		f.conn.Write(recorded[0]) // old Hello
		if _, _, err := f.read(); err != nil {
			t.Error(err)
			return
		}
		f.conn.Write(recorded[1]) // old proof
		if c := f.expectError(); c != codeAuth {
			t.Errorf("error code %d, want %d", c, codeAuth)
		}
	})
	if !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("replay: %v", err)
	}
}

func TestHandshakeMalformed(t *testing.T) {
	_, res := testConfigs()
	good := hello{minV: MinLinkVersion, maxV: MaxVersion, cluster: "prod", node: "node-x"}
	tests := []struct {
		name string
		typ  FrameType
		p    []byte
		want error
	}{
		{"trailing bytes", TypeHello, append(good.marshal(), 0), ErrHandshakeProtocol},
		{"short", TypeHello, good.marshal()[:10], ErrHandshakeProtocol},
		{"empty node", TypeHello, good.marshal()[:2+NonceSize+1+4+1], ErrHandshakeProtocol},
		{"version range inverted", TypeHello, append([]byte{3, 1}, good.marshal()[2:]...), ErrHandshakeProtocol},
		{"wrong frame", TypeWrite, []byte("data"), ErrHandshakeProtocol},
		{"oversize", TypeHello, make([]byte, maxHandshakePayload+1), ErrPayloadTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := withFake(t, res, func(f *fakePeer) {
				f.send(tc.typ, tc.p)
				if errors.Is(tc.want, ErrHandshakeProtocol) {
					if c := f.expectError(); c != codeProtocol {
						t.Errorf("error code %d, want %d", c, codeProtocol)
					}
				}
			})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// waitGoroutines waits for the goroutine count to fall back to n: a leaked
// goroutine keeps it above.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines leaked: %d > %d\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestHandshakeStall: a peer that connects and goes silent (at the start or
// midway) costs no more than the context's deadline, and leaves nothing
// running.
func TestHandshakeStall(t *testing.T) {
	ini, res := testConfigs()
	scripts := map[string]func(f *fakePeer){
		"silent":          func(f *fakePeer) {},
		"after own Hello": func(f *fakePeer) { f.read() },
	}
	for _, cfg := range []HandshakeConfig{ini, res} {
		for name, script := range scripts {
			before := runtime.NumGoroutine()
			a, b := net.Pipe()
			stalled := make(chan struct{})
			go func() {
				f := newFake(t, b)
				if cfg.Initiator {
					script(f)
				} else if name != "silent" {
					h := hello{minV: MinLinkVersion, maxV: MaxVersion, cluster: "prod", node: "node-a", nonce: [32]byte{5}}
					f.sendHello(h)
				}
				<-stalled
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			start := time.Now()
			_, err := Handshake(ctx, a, cfg)
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("initiator=%v %s: err = %v, want deadline exceeded", cfg.Initiator, name, err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("initiator=%v %s: took %v", cfg.Initiator, name, d)
			}
			close(stalled)
			a.Close()
			b.Close()
			waitGoroutines(t, before)
		}
	}
}

func TestHandshakeCancel(t *testing.T) {
	ini, _ := testConfigs()
	before := runtime.NumGoroutine()
	a, b := net.Pipe()
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := Handshake(ctx, a, ini) // nobody reads: blocks until cancel
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	a.Close()
	waitGoroutines(t, before)

	// An already-cancelled context fails at once.
	if _, err := Handshake(ctx, a, ini); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

// errorText reads frames until an Error frame and returns its text.
func (f *fakePeer) errorText() string {
	for {
		h, p, err := f.read()
		if err != nil {
			f.t.Errorf("fake peer: no Error frame: %v", err)
			return ""
		}
		if h.Type == TypeError && len(p) >= 2 {
			return string(p[2:])
		}
	}
}

// TestHandshakeErrorsRevealNothing: an Error frame sent before the peer
// proved it holds the secret names neither the cluster nor any node; the
// local error keeps the detail for the operator.
func TestHandshakeErrorsRevealNothing(t *testing.T) {
	ini, res := testConfigs()
	// A dialer guessing the cluster name learns nothing from the refusal.
	var text string
	err := withFake(t, res, func(f *fakePeer) {
		h := hello{minV: MinVersion, maxV: MaxVersion, cluster: "guess", node: "node-z", nonce: [32]byte{7}}
		if err := f.sendHello(h); err != nil {
			t.Error(err)
		}
		text = f.errorText()
	})
	if !errors.Is(err, ErrClusterMismatch) || !strings.Contains(err.Error(), `"prod"`) {
		t.Fatalf("responder: %v, want a cluster mismatch naming our cluster locally", err)
	}
	if text == "" || strings.Contains(text, "prod") || strings.Contains(text, "node-b") {
		t.Fatalf("the responder's Error frame to an unauthenticated dialer says %q", text)
	}
	// A stranger answering at a peer's address does not learn whom the
	// dialer meant to reach.
	ini.PeerID = "node-b"
	err = withFake(t, ini, func(f *fakePeer) {
		if _, _, err := f.read(); err != nil {
			t.Error(err)
		}
		h := hello{minV: MinVersion, maxV: MaxVersion, cluster: "prod", node: "node-z", nonce: [32]byte{9}}
		if err := f.sendHello(h); err != nil {
			t.Error(err)
		}
		text = f.errorText()
	})
	if !errors.Is(err, ErrUnexpectedPeer) || !strings.Contains(err.Error(), `"node-b"`) {
		t.Fatalf("initiator: %v, want an unexpected peer naming the expected one locally", err)
	}
	if text == "" || strings.Contains(text, "node-b") || strings.Contains(text, "node-a") || strings.Contains(text, "prod") {
		t.Fatalf("the initiator's Error frame to an unauthenticated responder says %q", text)
	}
}

// TestOldPeerGetsVersionError: a version-1 peer (no link protection), in
// either role, is refused with ErrNoCommonVersion on both ends, and our end
// says that the peer must be upgraded.
func TestOldPeerGetsVersionError(t *testing.T) {
	ini, res := testConfigs()
	old := hello{minV: 1, maxV: 1, cluster: "prod", node: "node-z", nonce: [32]byte{3}}
	sendOld := func(f *fakePeer) error {
		return f.w.WriteFrame(Header{Type: TypeHello, Flags: FlagChecksum}, old.marshal()) // version 1: nothing in Offset
	}
	err := withFake(t, res, func(f *fakePeer) {
		if err := sendOld(f); err != nil {
			t.Error(err)
		}
		if c := f.expectError(); c != codeVersion {
			t.Errorf("the old initiator got error code %d, want %d", c, codeVersion)
		}
	})
	if !errors.Is(err, ErrNoCommonVersion) || !strings.Contains(err.Error(), "older blockrep") {
		t.Fatalf("responder: %v", err)
	}
	err = withFake(t, ini, func(f *fakePeer) {
		// The old responder can parse our Hello: the protection is in the
		// header, not in the payload it checks byte by byte.
		h, p, err := f.read()
		if err != nil {
			t.Error(err)
			return
		}
		if h.Version != 1 {
			t.Errorf("our Hello is in header version %d, an old peer decodes only 1", h.Version)
		}
		if _, err := parseHello(p); err != nil {
			t.Errorf("an old peer cannot parse our Hello: %v", err)
		}
		if err := sendOld(f); err != nil {
			t.Error(err)
		}
		if c := f.expectError(); c != codeVersion {
			t.Errorf("the old responder got error code %d, want %d", c, codeVersion)
		}
	})
	if !errors.Is(err, ErrNoCommonVersion) {
		t.Fatalf("initiator: %v", err)
	}
}
