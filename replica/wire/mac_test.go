package wire

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// sessionPair runs a real handshake and returns both ends' Peers.
func sessionPair(t *testing.T) (ini, res Peer) {
	t.Helper()
	a, b := testConfigs()
	_, _, ri, rr := runPair(t, a, b)
	if ri.err != nil || rr.err != nil {
		t.Fatalf("handshake: %v / %v", ri.err, rr.err)
	}
	return ri.peer, rr.peer
}

// sealFrames encodes frames with w's MAC, one byte slice per frame.
func sealFrames(t *testing.T, mac *MAC, n int) [][]byte {
	t.Helper()
	var out [][]byte
	for i := range n {
		var buf bytes.Buffer
		w := NewWriter(&buf)
		w.SetMAC(mac)
		if err := w.WriteFrame(Header{Type: TypeWrite, Flags: FlagChecksum, Seq: uint64(i + 1), Offset: uint64(i) << 12}, bytes.Repeat([]byte{byte(i)}, 4096)); err != nil {
			t.Fatal(err)
		}
		out = append(out, buf.Bytes())
	}
	return out
}

// readAll reads frames from the stream with mac until an error.
func readAll(mac *MAC, stream []byte) (int, error) {
	r := NewReader(bytes.NewReader(stream), nil)
	r.SetMAC(mac)
	for n := 0; ; n++ {
		if _, _, err := r.ReadFrame(); err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
	}
}

// TestFrameMAC: a frame that was changed (payload or header, with the
// CRC-32Cs recomputed), replayed, reordered, dropped or reflected back to
// its sender fails its tag; the unchanged stream passes.
func TestFrameMAC(t *testing.T) {
	reseal := func(f []byte) {
		h, _ := DecodeHeader(f)
		h.PayloadCRC = PayloadChecksum(f[HeaderSize : HeaderSize+int(h.Length)])
		h.MarshalTo(f)
	}
	tests := []struct {
		name    string
		stream  func(f [][]byte) []byte
		reflect bool // read with the sender's own receive MAC
		ok      int  // frames that must pass before the failure
	}{
		{"unchanged", func(f [][]byte) []byte { return bytes.Join(f, nil) }, false, 3},
		{"payload bit", func(f [][]byte) []byte {
			f[1][HeaderSize+100] ^= 1
			reseal(f[1])
			return bytes.Join(f, nil)
		}, false, 1},
		{"header offset", func(f [][]byte) []byte {
			h, _ := DecodeHeader(f[0])
			h.Offset += 4096
			h.MarshalTo(f[0])
			return bytes.Join(f, nil)
		}, false, 0},
		{"tag bit", func(f [][]byte) []byte {
			f[2][len(f[2])-1] ^= 0x80
			return bytes.Join(f, nil)
		}, false, 2},
		{"replayed", func(f [][]byte) []byte { return bytes.Join([][]byte{f[0], f[1], f[1], f[2]}, nil) }, false, 2},
		{"reordered", func(f [][]byte) []byte { return bytes.Join([][]byte{f[0], f[2], f[1]}, nil) }, false, 1},
		{"dropped", func(f [][]byte) []byte { return bytes.Join([][]byte{f[0], f[2]}, nil) }, false, 1},
		{"reflected", func(f [][]byte) []byte { return bytes.Join(f, nil) }, true, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ini, res := sessionPair(t)
			frames := sealFrames(t, ini.Send, 3)
			recv := res.Recv
			if tc.reflect {
				recv = ini.Recv
			}
			n, err := readAll(recv, tc.stream(frames))
			if n != tc.ok {
				t.Errorf("%d frames passed, want %d", n, tc.ok)
			}
			if tc.ok == 3 {
				if err != nil {
					t.Fatalf("unchanged stream: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrTampered) {
				t.Fatalf("err = %v, want ErrTampered", err)
			}
		})
	}
}

// TestFrameMACQueued: frames batched with Queue and Flush carry the same
// tags, in queue order, as frames written one by one; frames without
// payload are tagged too.
func TestFrameMACQueued(t *testing.T) {
	ini, res := sessionPair(t)
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.SetMAC(ini.Send)
	for i := range 5 {
		var p []byte
		if i%2 == 0 {
			p = []byte(strings.Repeat("x", 100*i))
		}
		if err := w.Queue(Header{Type: TypeWriteAckDurable, Seq: uint64(i)}, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFrame(Header{Type: TypePing}, nil); err != nil {
		t.Fatal(err)
	}
	if n, err := readAll(res.Recv, buf.Bytes()); n != 6 || err != nil {
		t.Fatalf("read %d frames, %v; want 6", n, err)
	}
	// Without reading the tags, the stream is out of step at once.
	r := NewReader(bytes.NewReader(buf.Bytes()), nil)
	if _, _, err := r.ReadFrame(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.ReadFrame(); err == nil {
		t.Fatal("a reader without the MAC read the second frame: the tags are not on the wire")
	}
}

// TestSessionKeysDiffer: every handshake derives keys of its own, and the
// two directions differ.
func TestSessionKeysDiffer(t *testing.T) {
	a, _ := sessionPair(t)
	b, _ := sessionPair(t)
	tag := func(m *MAC) []byte {
		out, err := m.Seal(nil, []byte("head"), []byte("body"))
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	ta, tb, tr := tag(a.Send), tag(b.Send), tag(a.Recv)
	if bytes.Equal(ta, tb) || bytes.Equal(ta, tr) {
		t.Fatalf("tags repeat across sessions or directions: %x %x %x", ta, tb, tr)
	}
}

// BenchmarkTag compares the MAC this package uses (AES-256-GCM's tag over
// the payload as additional data) with HMAC-SHA256 over the same bytes:
// the measurement behind the choice (see MAC).
func BenchmarkTag(b *testing.B) {
	hdr := make([]byte, HeaderSize)
	for _, n := range []int{0, 4 << 10, 64 << 10, 1 << 20} {
		p := make([]byte, n)
		b.Run(fmt.Sprintf("gcm/%d", n), func(b *testing.B) {
			m := newMAC(make([]byte, 32))
			b.SetBytes(int64(n + HeaderSize))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.tag(hdr, p); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("hmac-sha256/%d", n), func(b *testing.B) {
			h := hmac.New(sha256.New, make([]byte, 32))
			var ctr, sum [32]byte
			b.SetBytes(int64(n + HeaderSize))
			b.ReportAllocs()
			for b.Loop() {
				h.Reset()
				h.Write(ctr[:8])
				h.Write(hdr)
				h.Write(p)
				h.Sum(sum[:0])
			}
		})
	}
}

// BenchmarkWriteFrameMAC is the cost of a frame on the send path with and
// without its tag.
func BenchmarkWriteFrameMAC(b *testing.B) {
	for _, mac := range []bool{false, true} {
		for _, n := range []int{4 << 10, 1 << 20} {
			b.Run(fmt.Sprintf("mac=%v/%d", mac, n), func(b *testing.B) {
				w := NewWriter(io.Discard)
				if mac {
					w.SetMAC(newMAC(make([]byte, 32)))
				}
				p := make([]byte, n)
				b.SetBytes(int64(n))
				b.ReportAllocs()
				for b.Loop() {
					if err := w.Queue(Header{Type: TypeWrite}, p); err != nil {
						b.Fatal(err)
					}
					if err := w.Flush(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
