package authnet

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockrep/blockrep/internal/linktls"
	"github.com/blockrep/blockrep/internal/syncbuf"
	"github.com/blockrep/blockrep/internal/testpki"
	"github.com/blockrep/blockrep/internal/testrelay"
	"github.com/blockrep/blockrep/replica/wire"
)

// tamperRelay forwards TCP connections to target and, when told, damages
// the next chunk of bytes it forwards in one direction: one flipped bit, or
// the chunk sent twice (a replay). It has no secret.
type tamperRelay struct {
	relay *testrelay.Relay

	// mode: 0 forward, 1 flip a bit of the next chunk, 2 send the next
	// chunk twice. toServer picks the direction.
	mode     atomic.Int32
	toServer atomic.Bool
	tampered atomic.Int32

	mu   sync.Mutex
	seen bytes.Buffer // every byte forwarded, both directions
}

const (
	relayForward = iota
	relayFlip
	relayReplay
)

func startTamperRelay(t *testing.T, target string) *tamperRelay {
	r := &tamperRelay{}
	r.relay = testrelay.Start(t, target, func(in, out net.Conn) {
		go r.pipe(in, out, true)
		go r.pipe(out, in, false)
	})
	return r
}

func (r *tamperRelay) addr() string { return r.relay.Addr() }

func (r *tamperRelay) pipe(from, to net.Conn, toServer bool) {
	defer to.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := from.Read(buf)
		if err != nil {
			return
		}
		chunk := buf[:n]
		r.mu.Lock()
		r.seen.Write(chunk)
		r.mu.Unlock()
		if r.toServer.Load() == toServer {
			switch r.mode.Load() {
			case relayFlip:
				if r.mode.CompareAndSwap(relayFlip, relayForward) {
					chunk[min(n-1, 6)] ^= 0x01
					r.tampered.Add(1)
				}
			case relayReplay:
				if r.mode.CompareAndSwap(relayReplay, relayForward) {
					chunk = append(bytes.Clone(chunk), chunk...)
					r.tampered.Add(1)
				}
			}
		}
		if _, err := to.Write(chunk); err != nil {
			return
		}
	}
}

// TestTamperedStreamDetected: on an established cluster-port connection
// (Raft and control alike), a relay without the secret flips one bit or
// replays a chunk after the handshake. The receiving end must not deliver
// the damaged bytes: its Read fails with ErrTampered, it logs why, and the
// connection is dropped (the other end sees it closed).
func TestTamperedStreamDetected(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mode     int32
		toServer bool
		svc      Service
	}{
		{"flip to server raft", relayFlip, true, ServiceRaft},
		{"flip to server control", relayFlip, true, ServiceControl},
		{"flip to client", relayFlip, false, ServiceControl},
		{"replay to server", relayReplay, true, ServiceRaft},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs syncbuf.Buffer
			scfg := testConfig(t, "n1")
			ccfg := testConfig(t, "n2")
			scfg.Logger = slogTo(&logs)
			ccfg.Logger = slogTo(&logs)
			srv := startMux(t, scfg, []Service{ServiceRaft, ServiceControl}, nil)
			relay := startTamperRelay(t, srv.addr())
			cli := dial(t, relay.addr(), tc.svc, ccfg, "")
			sc := acceptOne(t, srv.lns[tc.svc])
			exchange(t, cli, sc) // the link works before the tampering

			from, to := net.Conn(sc), net.Conn(cli)
			if tc.toServer {
				from, to = cli, sc
			}
			relay.toServer.Store(tc.toServer)
			relay.mode.Store(tc.mode)
			msg := []byte("append entries: term 7, index 42, data ...")
			if _, err := from.Write(msg); err != nil {
				t.Fatal(err)
			}
			if err := to.SetReadDeadline(time.Now().Add(waitFor)); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(io.LimitReader(to, int64(2*len(msg))))
			if relay.tampered.Load() != 1 {
				t.Fatalf("the relay tampered %d times, want 1", relay.tampered.Load())
			}
			if len(got) > len(msg) || (len(got) > 0 && !bytes.Equal(got, msg[:len(got)])) {
				t.Fatalf("the receiver delivered tampered bytes %q", got)
			}
			if !errors.Is(err, ErrTampered) {
				t.Fatalf("read after tampering: %q, %v; want ErrTampered", got, err)
			}
			// The receiver dropped the connection: the sender sees it closed.
			expectClosed(t, from)
			if !strings.Contains(logs.String(), "tampered") {
				t.Fatalf("no log line says why the connection was dropped:\n%s", logs.String())
			}
		})
	}
}

func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// tlsConfigs gives two nodes certificates of one CA.
func tlsConfigs(t *testing.T, nodes ...string) map[string]*linktls.Config {
	ca := testpki.NewCA(t, "blockrep test CA")
	out := map[string]*linktls.Config{}
	for _, n := range nodes {
		cert, _, _ := ca.NodeCertificate(t, n)
		out[n] = linktls.New(cert, ca.Pool())
	}
	return out
}

// TestTLSStreamHidesData: with security = "tls" a relay between the ends
// sees none of the bytes in clear, and a flipped bit breaks the connection
// instead of reaching the reader.
func TestTLSStreamHidesData(t *testing.T) {
	tl := tlsConfigs(t, "n1", "n2")
	scfg, ccfg := testConfig(t, "n1"), testConfig(t, "n2")
	scfg.Protection, scfg.TLS = wire.ProtectTLS, tl["n1"]
	ccfg.Protection, ccfg.TLS = wire.ProtectTLS, tl["n2"]
	srv := startMux(t, scfg, []Service{ServiceControl}, nil)
	relay := startTamperRelay(t, srv.addr())
	cli := dial(t, relay.addr(), ServiceControl, ccfg, "")
	sc := acceptOne(t, srv.lns[ServiceControl])
	exchange(t, cli, sc)
	msg := []byte("GET /v1/status PLAINTEXT-PATTERN")
	if _, err := cli.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(sc, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("read %q, %v", got, err)
	}
	relay.mu.Lock()
	seen := bytes.Contains(relay.seen.Bytes(), []byte("PLAINTEXT-PATTERN")) || bytes.Contains(relay.seen.Bytes(), []byte("ping"))
	relay.mu.Unlock()
	if seen {
		t.Fatal("the relay saw the stream in clear")
	}
	relay.toServer.Store(true)
	relay.mode.Store(relayFlip)
	if _, err := cli.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := sc.SetReadDeadline(time.Now().Add(waitFor)); err != nil {
		t.Fatal(err)
	}
	if n, err := io.ReadFull(sc, got); err == nil {
		t.Fatalf("read %q after a flipped bit", got[:n])
	}
}

// TestSecurityMismatchRefused: ends that protect the link differently do
// not connect, and the error says so.
func TestSecurityMismatchRefused(t *testing.T) {
	tl := tlsConfigs(t, "n1", "n2")
	for _, tc := range []struct {
		name      string
		srv, cli  wire.Protection
		want      string // in the client's error
		serverLog string // in the server's
	}{
		{"mac server, none client", wire.ProtectMAC, wire.ProtectNone, "link protection differs", "link protection differs"},
		{"tls server, mac client", wire.ProtectTLS, wire.ProtectMAC, "", `does not speak TLS: security = "tls" here`},
		{"mac server, tls client", wire.ProtectMAC, wire.ProtectTLS, "", `speaks TLS (security = "tls" there`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scfg, ccfg := testConfig(t, "n1"), testConfig(t, "n2")
			scfg.Protection, ccfg.Protection = tc.srv, tc.cli
			if tc.srv == wire.ProtectTLS {
				scfg.TLS = tl["n1"]
			}
			if tc.cli == wire.ProtectTLS {
				ccfg.TLS = tl["n2"]
			}
			srv := startMux(t, scfg, []Service{ServiceControl}, nil)
			_, err := Dial(context.Background(), srv.addr(), ServiceControl, ccfg, "")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Dial: %v, want an error with %q", err, tc.want)
			}
			t.Logf("client: %v", err)
			ev := srv.nextDrop(t)
			if !strings.Contains(ev.err.Error(), tc.serverLog) {
				t.Fatalf("server: %v, want %q", ev.err, tc.serverLog)
			}
		})
	}
}

// recordPeers runs a handshake over a pipe and returns both ends' Peers.
func recordPeers(t *testing.T) (ini, res wire.Peer) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		var err error
		res, err = wire.Handshake(ctx, b, testConfig(t, "n1").handshake(false, ""))
		errc <- err
	}()
	ini, err := wire.Handshake(ctx, a, testConfig(t, "n2").handshake(true, ""))
	if err != nil || <-errc != nil {
		t.Fatalf("handshake: %v", err)
	}
	return ini, res
}

// TestRecordReadResumesAfterTimeout: a read deadline that fires in the
// middle of a record (net/http interrupts its background read so) loses
// nothing: the next Read resumes the record and delivers it checked.
func TestRecordReadResumesAfterTimeout(t *testing.T) {
	ini, res := recordPeers(t)
	// The sealed bytes of two records, as the sender writes them.
	sa, sb := net.Pipe()
	defer sa.Close()
	defer sb.Close()
	sender := newRecordConn(sa, ini, slogTo(io.Discard))
	msg := bytes.Repeat([]byte("0123456789"), 1000)
	go func() {
		_, _ = sender.Write(msg)
		_, _ = sender.Write([]byte("second"))
		sa.Close()
	}()
	wireBytes, err := io.ReadAll(sb)
	if err != nil {
		t.Fatal(err)
	}
	ra, rb := net.Pipe()
	defer ra.Close()
	defer rb.Close()
	recv := newRecordConn(ra, res, slogTo(io.Discard))
	half := len(msg) / 2
	type result struct {
		n   int
		err error
	}
	first := make(chan result, 1)
	buf := make([]byte, len(msg))
	go func() {
		n, err := recv.Read(buf)
		first <- result{n, err}
	}()
	// The pipe's Write returns once the reader has taken every byte: then
	// the Read waits in the middle of the first record, and a deadline in
	// the past interrupts it, as net/http does.
	if _, err := rb.Write(wireBytes[:half]); err != nil {
		t.Fatal(err)
	}
	if err := recv.SetReadDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	if r := <-first; !isTimeout(r.err) || r.n != 0 {
		t.Fatalf("read during the record: %d bytes, %v; want a timeout and nothing", r.n, r.err)
	}
	if recv.rpart == partHead && recv.rgot == 0 {
		t.Fatal("the interrupted read had not begun the record: the test proves nothing")
	}
	if err := recv.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = rb.Write(wireBytes[half:]) }()
	got := make([]byte, len(msg)+len("second"))
	if _, err := io.ReadFull(recv, got); err != nil {
		t.Fatalf("read after the timeout: %v", err)
	}
	if !bytes.Equal(got, append(bytes.Clone(msg), "second"...)) {
		t.Fatal("the records came out changed")
	}
}

// TestConfigTLSSetting: TLS certificates go with security "tls" and only
// with it.
func TestConfigTLSSetting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tl := tlsConfigs(t, "n1")["n1"]
	noCerts := testConfig(t, "n1")
	noCerts.Protection = wire.ProtectTLS
	strayCerts := testConfig(t, "n1")
	strayCerts.TLS = tl
	for name, cfg := range map[string]Config{"tls without certificates": noCerts, "certificates without tls": strayCerts} {
		if _, err := NewMux(ln, cfg); err == nil || !strings.Contains(err.Error(), "TLS certificates are needed") {
			t.Errorf("%s: NewMux error %v", name, err)
		}
		if _, err := Dial(context.Background(), ln.Addr().String(), ServiceRaft, cfg, ""); err == nil || !strings.Contains(err.Error(), "TLS certificates are needed") {
			t.Errorf("%s: Dial error %v", name, err)
		}
	}
}
