package wire

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
)

// TestReadWriteAllTypes sends every frame type, with and without payload and
// checksum, through Writer and Reader and checks what comes out.
func TestReadWriteAllTypes(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	type sent struct {
		h Header
		p []byte
	}
	var frames []sent
	for i, ft := range allTypes() {
		for _, fl := range []Flags{0, FlagChecksum, FlagFUA | FlagChecksum} {
			h := sampleHeader(ft)
			h.Flags = fl
			h.Seq = uint64(i)
			p := bytes.Repeat([]byte{byte(i), byte(fl)}, i*37)
			if err := w.WriteFrame(h, p); err != nil {
				t.Fatal(err)
			}
			h.Version, h.Length = MaxVersion, uint32(len(p))
			if fl&FlagChecksum != 0 {
				h.PayloadCRC = PayloadChecksum(p)
			}
			frames = append(frames, sent{h, p})
		}
	}
	r := NewReader(&buf, nil)
	for i, f := range frames {
		h, p, err := r.ReadFrame()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if h != f.h || !bytes.Equal(p, f.p) {
			t.Fatalf("frame %d: got %+v %x, want %+v %x", i, h, p, f.h, f.p)
		}
	}
	if _, _, err := r.ReadFrame(); err != io.EOF {
		t.Fatalf("after last frame: %v, want io.EOF", err)
	}
}

func encodeFrame(t testing.TB, h Header, p []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := NewWriter(&buf).WriteFrame(h, p); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestReaderErrors(t *testing.T) {
	payload := []byte("0123456789abcdef")
	h := sampleHeader(TypeWrite) // with FlagChecksum
	frame := encodeFrame(t, h, payload)

	t.Run("payload checksum", func(t *testing.T) {
		b := bytes.Clone(frame)
		b[HeaderSize+3] ^= 0x10
		_, _, err := NewReader(bytes.NewReader(b), nil).ReadFrame()
		if !errors.Is(err, ErrPayloadChecksum) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("no checksum, no check", func(t *testing.T) {
		h := h
		h.Flags = 0
		b := encodeFrame(t, h, payload)
		b[HeaderSize+3] ^= 0x10
		if _, _, err := NewReader(bytes.NewReader(b), nil).ReadFrame(); err != nil {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("truncated header", func(t *testing.T) {
		_, _, err := NewReader(bytes.NewReader(frame[:HeaderSize-5]), nil).ReadFrame()
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("truncated payload", func(t *testing.T) {
		for _, n := range []int{HeaderSize, len(frame) - 1} {
			_, _, err := NewReader(bytes.NewReader(frame[:n]), nil).ReadFrame()
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("cut at %d: err = %v", n, err)
			}
		}
	})
	t.Run("corrupt header", func(t *testing.T) {
		b := bytes.Clone(frame)
		b[offSeq] ^= 4
		_, _, err := NewReader(bytes.NewReader(b), nil).ReadFrame()
		if !errors.Is(err, ErrHeaderChecksum) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("limit", func(t *testing.T) {
		r := NewReader(bytes.NewReader(frame), nil)
		r.SetLimit(uint32(len(payload) - 1))
		if _, err := r.Next(); !errors.Is(err, ErrPayloadTooLarge) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("version pinned", func(t *testing.T) {
		r := NewReader(bytes.NewReader(frame), nil)
		r.SetVersion(MaxVersion + 1)
		if _, err := r.Next(); !errors.Is(err, ErrVersion) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("sticky", func(t *testing.T) {
		b := append(bytes.Clone(frame), frame...)
		b[offMagic] = 0
		r := NewReader(bytes.NewReader(b), nil)
		_, err1 := r.Next()
		_, err2 := r.Next()
		_, err3 := r.Payload(nil)
		if !errors.Is(err1, ErrBadMagic) || err2 != err1 || err3 != err1 {
			t.Fatalf("errors not sticky: %v / %v / %v", err1, err2, err3)
		}
	})
	t.Run("payload not read", func(t *testing.T) {
		r := NewReader(bytes.NewReader(append(bytes.Clone(frame), frame...)), nil)
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Next(); !errors.Is(err, errPayloadPending) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestReaderCallerBuffer(t *testing.T) {
	p := bytes.Repeat([]byte{7}, 100)
	frame := encodeFrame(t, sampleHeader(TypeResyncData), p)
	r := NewReader(bytes.NewReader(append(bytes.Clone(frame), frame...)), nil)
	dst := make([]byte, 0, 128)
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	got, err := r.Payload(dst)
	if err != nil || !bytes.Equal(got, p) || &got[0] != &dst[:1][0] {
		t.Fatalf("payload not read into caller's buffer: %v", err)
	}
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	small := make([]byte, 10)
	got, err = r.Payload(small)
	if err != nil || !bytes.Equal(got, p) || cap(got) != len(p) {
		t.Fatalf("too-small buffer: err %v, cap %d", err, cap(got))
	}
}

func TestWriterRefusesBadFrames(t *testing.T) {
	w := NewWriter(io.Discard)
	if err := w.WriteFrame(Header{Type: 0}, nil); !errors.Is(err, ErrFrameType) {
		t.Errorf("type 0: %v", err)
	}
	if err := w.WriteFrame(Header{Type: TypePing, Flags: 1 << 15}, nil); !errors.Is(err, ErrFlags) {
		t.Errorf("unknown flag: %v", err)
	}
	if err := w.WriteFrame(Header{Type: TypeWrite}, make([]byte, MaxPayload+1)); !errors.Is(err, ErrPayloadTooLarge) {
		t.Errorf("oversize: %v", err)
	}
	w.SetVersion(0)
	if err := w.WriteFrame(Header{Type: TypePing}, nil); !errors.Is(err, ErrVersion) {
		t.Errorf("version 0: %v", err)
	}
}

// TestReadWriteTCP sends frames over a real TCP connection, where the
// Writer's net.Buffers becomes one writev per frame.
func TestReadWriteTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skip("no loopback TCP:", err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		w := NewWriter(c)
		for i := range 100 {
			h := sampleHeader(TypeWrite)
			h.Seq = uint64(i)
			if err := w.WriteFrame(h, bytes.Repeat([]byte{byte(i)}, 4096*(i%9))); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := NewReader(c, nil)
	for i := range 100 {
		h, p, err := r.ReadFrame()
		if err != nil || h.Seq != uint64(i) || len(p) != 4096*(i%9) {
			t.Fatalf("frame %d: %+v len %d err %v", i, h, len(p), err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// loopReader replays the same bytes forever without allocating, to measure
// the Reader's steady state.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.data[l.off:])
	l.off = (l.off + n) % len(l.data)
	return n, nil
}

func TestNoAllocsSteadyState(t *testing.T) {
	payload := bytes.Repeat([]byte{0xab}, 64<<10)
	stream := append(encodeFrame(t, sampleHeader(TypeWrite), payload), encodeFrame(t, sampleHeader(TypePing), nil)...)

	r := NewReader(&loopReader{data: stream}, make([]byte, 0, 1024))
	if a := testing.AllocsPerRun(200, func() {
		if _, _, err := r.ReadFrame(); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("ReadFrame: %v allocs per frame", a)
	}

	r = NewReader(&loopReader{data: stream}, nil)
	dst := make([]byte, 0, len(payload))
	if a := testing.AllocsPerRun(200, func() {
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Payload(dst); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("Next+Payload: %v allocs per frame", a)
	}

	w := NewWriter(io.Discard)
	h := sampleHeader(TypeWrite)
	if a := testing.AllocsPerRun(200, func() {
		if err := w.WriteFrame(h, payload); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("WriteFrame: %v allocs per frame", a)
	}
}

func BenchmarkReadFrame64K(b *testing.B) {
	payload := bytes.Repeat([]byte{0xab}, 64<<10)
	r := NewReader(&loopReader{data: encodeFrame(b, sampleHeader(TypeWrite), payload)}, nil)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := r.ReadFrame(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestReaderGrowsWithData: a large announced payload is read correctly, and
// a stream that announces MaxPayload but ends early does not cost MaxPayload.
func TestReaderGrowsWithData(t *testing.T) {
	p := bytes.Repeat([]byte("0123456789"), 100_000) // 1 MB, several doublings
	h := sampleHeader(TypeResyncData)
	frame := encodeFrame(t, h, p)
	_, got, err := NewReader(bytes.NewReader(frame), nil).ReadFrame()
	if err != nil || !bytes.Equal(got, p) || cap(got) != len(p) {
		t.Fatalf("err %v, equal %v, cap %d", err, bytes.Equal(got, p), cap(got))
	}

	big := sampleHeader(TypeWrite)
	big.Flags, big.Length = 0, MaxPayload
	enc := big.Encode()
	stream := append(enc[:], make([]byte, 1000)...)
	var ms1, ms2 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	_, _, err = NewReader(bytes.NewReader(stream), nil).ReadFrame()
	runtime.ReadMemStats(&ms2)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v", err)
	}
	if alloc := ms2.TotalAlloc - ms1.TotalAlloc; alloc > 1<<20 {
		t.Errorf("a truncated MaxPayload frame allocated %d bytes", alloc)
	}
}

// TestQueueFlush checks that queued frames reach the stream in order, in one
// write, with their headers intact while the header arena grows.
func TestQueueFlush(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out)
	var want []Header
	for i := range 100 {
		var payload []byte
		if i%3 != 0 {
			payload = bytes.Repeat([]byte{byte(i)}, i*7)
		}
		h := Header{Type: TypeWrite, Seq: uint64(i), Offset: uint64(i) * 4096, Flags: FlagChecksum}
		if err := w.Queue(h, payload); err != nil {
			t.Fatal(err)
		}
		want = append(want, h)
	}
	if err := w.Queue(Header{Type: FrameType(0)}, nil); err == nil {
		t.Fatal("Queue accepted an invalid frame type")
	}
	if w.Queued() != 100 {
		t.Fatalf("Queued = %d, want 100", w.Queued())
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if w.Queued() != 0 {
		t.Errorf("Queued = %d after Flush", w.Queued())
	}
	r := NewReader(&out, nil)
	for i, wh := range want {
		h, p, err := r.ReadFrame()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if h.Seq != wh.Seq || h.Offset != wh.Offset || len(p) != func() int {
			if i%3 != 0 {
				return i * 7
			}
			return 0
		}() {
			t.Fatalf("frame %d: got seq %d off %d len %d", i, h.Seq, h.Offset, len(p))
		}
		for _, b := range p {
			if b != byte(i) {
				t.Fatalf("frame %d: payload byte %d", i, b)
			}
		}
	}
	if _, _, err := r.ReadFrame(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want EOF", err)
	}
	// A second batch reuses the buffers.
	if err := w.Queue(Header{Type: TypePing, Seq: 7}, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	// EOF is sticky on a Reader, so read the second batch with a new one.
	if h, _, err := NewReader(&out, nil).ReadFrame(); err != nil || h.Seq != 7 {
		t.Fatalf("second batch: %v %v", h, err)
	}
}
