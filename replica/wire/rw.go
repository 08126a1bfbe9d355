package wire

import (
	"errors"
	"fmt"
	"io"
	"net"
)

// errPayloadPending reports misuse: Next was called before the previous
// frame's payload was read, which would desynchronise the stream.
var errPayloadPending = errors.New("wire: previous frame's payload not read")

// Reader reads frames from a stream.
//
// It reads exactly one header and then exactly the payload it announced, never
// further, so a Reader can be used for the handshake and the stream handed on
// to another reader without losing bytes. For small frames over a socket, wrap
// the connection in a bufio.Reader to save system calls (after the handshake).
//
// Errors are sticky: after a framing error or a short read the stream is no
// longer in step with frame boundaries, and every later call returns the same
// error. A Reader is not safe for concurrent use.
type Reader struct {
	r       io.Reader
	hdr     [HeaderSize]byte
	buf     []byte // ReadFrame's reusable payload buffer
	limit   uint32 // payload bound, <= MaxPayload
	version uint8  // if non-zero, the only version accepted
	pending Header // header whose payload is still unread
	unread  bool
	err     error
	mac     *MAC // checks every frame's tag, if set
	tag     [TagSize]byte
}

// NewReader returns a Reader on r. buf, which may be nil, is the initial
// payload buffer for ReadFrame (for example, taken from a pool); it grows to
// the largest payload seen and is then reused, so ReadFrame does not allocate
// in steady state.
func NewReader(r io.Reader, buf []byte) *Reader {
	return &Reader{r: r, buf: buf[:0], limit: MaxPayload}
}

// SetLimit lowers the largest payload the Reader accepts (bounded by
// MaxPayload). The handshake uses a small limit so that an unauthenticated
// peer cannot make us reserve megabytes.
func (r *Reader) SetLimit(n uint32) {
	r.limit = min(n, MaxPayload)
}

// SetVersion makes the Reader accept only frames of version v (the one the
// handshake negotiated); 0 accepts every supported version.
func (r *Reader) SetVersion(v uint8) { r.version = v }

// SetMAC makes the Reader read and check the tag after every frame's
// payload (the handshake's Peer.Recv); nil reads frames without tags.
// A frame whose tag does not verify fails Payload with ErrTampered.
func (r *Reader) SetMAC(m *MAC) { r.mac = m }

func (r *Reader) fail(err error) error {
	r.err = err
	return err
}

// Next reads and checks the next frame header. The frame's payload (Length
// bytes) must then be read with Payload before Next is called again.
// It returns io.EOF if the stream ends cleanly between frames and
// io.ErrUnexpectedEOF if it ends inside one.
//
// With a MAC the header is not authenticated until Payload returns: use
// it for nothing but reading the payload (or dropping the link) before.
func (r *Reader) Next() (Header, error) {
	if r.err != nil {
		return Header{}, r.err
	}
	if r.unread {
		return Header{}, r.fail(errPayloadPending)
	}
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		return Header{}, r.fail(err)
	}
	h, err := DecodeHeader(r.hdr[:])
	if err != nil {
		return Header{}, r.fail(err)
	}
	if r.version != 0 && h.Version != r.version {
		return Header{}, r.fail(fmt.Errorf("%w: frame version %d, link negotiated %d", ErrVersion, h.Version, r.version))
	}
	if h.Length > r.limit {
		return Header{}, r.fail(fmt.Errorf("%w: %d bytes (limit %d)", ErrPayloadTooLarge, h.Length, r.limit))
	}
	r.pending = h
	r.unread = h.Length > 0 || r.mac != nil // the tag is part of the frame
	return h, nil
}

// Payload reads the payload of the frame Next returned into dst and verifies
// its tag if the Reader has a MAC and its checksum if the frame has
// FlagChecksum. It must be called for every frame, even one without
// payload, before anything of the frame is acted upon. It reuses dst if cap(dst) is
// large enough and otherwise allocates a buffer of capacity exactly Length,
// growing it as the bytes arrive; so the caller controls buffer reuse (e.g. a
// pool of write buffers held until the write is on disk). A frame without
// payload returns dst[:0].
func (r *Reader) Payload(dst []byte) ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	h := r.pending
	n := int(h.Length)
	if !r.unread {
		n = 0
	}
	var err error
	if cap(dst) >= n {
		dst = dst[:n]
		_, err = io.ReadFull(r.r, dst)
	} else {
		dst, err = readGrowing(r.r, n)
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF // the header promised these bytes
		}
		return nil, r.fail(err)
	}
	if r.mac != nil && r.unread {
		if _, err := io.ReadFull(r.r, r.tag[:]); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, r.fail(err)
		}
		if err := r.mac.Open(r.hdr[:], dst, r.tag[:]); err != nil {
			return nil, r.fail(fmt.Errorf("%w: %s frame, seq %d, %d bytes", err, h.Type, h.Seq, h.Length))
		}
	}
	r.unread = false
	if h.Flags&FlagChecksum != 0 {
		if got := PayloadChecksum(dst); got != h.PayloadCRC {
			return nil, r.fail(fmt.Errorf("%w: %s seq %d: computed %#08x, header says %#08x",
				ErrPayloadChecksum, h.Type, h.Seq, got, h.PayloadCRC))
		}
	}
	return dst, nil
}

// growStep is the first allocation readGrowing makes for a payload.
const growStep = 64 << 10

// readGrowing reads n bytes into a new buffer that grows (doubling, ending at
// exactly n) as the bytes arrive, instead of allocating n up front. A peer
// that announces a 32 MiB payload and then sends nothing costs us 64 KiB, not
// 32 MiB: memory follows the data actually received.
func readGrowing(r io.Reader, n int) ([]byte, error) {
	buf := make([]byte, 0, min(n, growStep))
	for len(buf) < n {
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(n, 2*cap(buf)))
			copy(nb, buf)
			buf = nb
		}
		m, err := io.ReadFull(r, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// ReadFrame reads a whole frame into the Reader's own buffer. The payload is
// valid only until the next call; copy it, or use Next and Payload with your
// own buffer, to keep it longer.
func (r *Reader) ReadFrame() (Header, []byte, error) {
	h, err := r.Next()
	if err != nil {
		return Header{}, nil, err
	}
	p, err := r.Payload(r.buf)
	if err != nil {
		return Header{}, nil, err
	}
	if cap(p) > cap(r.buf) {
		r.buf = p[:0]
	}
	return h, p, nil
}

// Writer writes frames to a stream. Header, payload and tag go out in one
// net.Buffers write, which is a single writev on a TCP connection, so a frame
// costs one system call and the payload is never copied. A Writer is not safe
// for concurrent use: serialise frames in one sender goroutine.
type Writer struct {
	w       io.Writer
	version uint8
	mac     *MAC                       // tags every frame, if set
	hdr     [HeaderSize + TagSize]byte // WriteFrame's header, then its tag
	vec     [3][]byte
	bufs    net.Buffers // kept in the struct so WriteTo does not allocate

	// Frames queued by Queue: their headers (and tags), encoded back to
	// back in arena, and the segments (header, payload, tag, header, ...)
	// that Flush turns into the iovecs of one writev.
	arena  []byte
	segs   []segment
	queued net.Buffers // Flush's iovecs; the backing array is reused
	npend  int
}

// segment is one iovec of a queued batch: a payload, or a piece of the
// arena (referenced by position, since the arena may move as it grows).
type segment struct {
	payload []byte
	off, n  int
}

// NewWriter returns a Writer on w that encodes frames in MaxVersion until
// SetVersion says otherwise.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w, version: MaxVersion}
}

// SetVersion sets the version stamped on every frame (the negotiated one).
func (w *Writer) SetVersion(v uint8) { w.version = v }

// SetMAC makes the Writer put a tag after every frame (the handshake's
// Peer.Send); nil writes frames without tags.
func (w *Writer) SetMAC(m *MAC) { w.mac = m }

// tagSize is the size of the tag after each frame.
func (w *Writer) tagSize() int {
	if w.mac != nil {
		return TagSize
	}
	return 0
}

// prepare fills in the fields WriteFrame documents and checks the header.
func (w *Writer) prepare(h *Header, payload []byte) error {
	if len(payload) > MaxPayload {
		return fmt.Errorf("%w: %d bytes (max %d)", ErrPayloadTooLarge, len(payload), MaxPayload)
	}
	h.Version = w.version
	h.Length = uint32(len(payload))
	h.PayloadCRC = 0
	if h.Flags&FlagChecksum != 0 {
		h.PayloadCRC = PayloadChecksum(payload)
	}
	return h.Validate()
}

// Queue adds a frame to the batch that the next Flush writes, so that many
// small frames (acknowledgements, 4 KiB writes) cost one system call. The
// payload is not copied: it must stay unchanged until Flush returns. Queue
// checks the header like WriteFrame; a refused frame is not queued. With a
// MAC the tag is computed here, so frames go out in the order queued.
func (w *Writer) Queue(h Header, payload []byte) error {
	if err := w.prepare(&h, payload); err != nil {
		return err
	}
	start := len(w.arena)
	w.arena = append(w.arena, make([]byte, HeaderSize)...)
	hdr := w.arena[start:]
	h.MarshalTo(hdr)
	if w.mac != nil {
		t, err := w.mac.tag(hdr[:HeaderSize], payload)
		if err != nil {
			w.arena = w.arena[:start]
			return err
		}
		w.arena = append(w.arena, t...)
	}
	ts := w.tagSize()
	if len(payload) == 0 {
		w.segs = append(w.segs, segment{off: start, n: HeaderSize + ts})
	} else {
		w.segs = append(w.segs, segment{off: start, n: HeaderSize}, segment{payload: payload})
		if ts > 0 {
			w.segs = append(w.segs, segment{off: start + HeaderSize, n: ts})
		}
	}
	w.npend++
	return nil
}

// Queued reports how many frames wait for Flush.
func (w *Writer) Queued() int { return w.npend }

// Flush writes every queued frame in one writev (Go splits very long
// vectors) and forgets them, releasing their payloads.
func (w *Writer) Flush() error {
	if w.npend == 0 {
		return nil
	}
	bufs := w.queued[:0]
	for _, s := range w.segs {
		if s.payload != nil {
			bufs = append(bufs, s.payload)
		} else {
			bufs = append(bufs, w.arena[s.off:s.off+s.n])
		}
	}
	w.queued = bufs
	err := w.writev(&w.queued) // consumes w.queued
	clear(bufs)
	w.queued = bufs[:0]
	clear(w.segs)
	w.segs = w.segs[:0]
	w.arena = w.arena[:0]
	w.npend = 0
	return err
}

// Vectored is implemented by streams that write several buffers in one
// system call outside the net package (see internal/fdconn).
type Vectored interface {
	Writev(bufs [][]byte) (int64, error)
}

// writev writes bufs with one writev where the stream allows it.
func (w *Writer) writev(bufs *net.Buffers) error {
	if v, ok := w.w.(Vectored); ok {
		_, err := v.Writev(*bufs)
		return err
	}
	_, err := bufs.WriteTo(w.w)
	return err
}

// SetStream redirects the Writer to another stream, for a connection whose
// socket changed hands between the handshake and the transfer.
func (w *Writer) SetStream(s io.Writer) { w.w = s }

// WriteFrame writes one frame. It fills in h.Version, h.Length and, if
// h.Flags has FlagChecksum, h.PayloadCRC (the caller's copy is unchanged),
// and refuses a header the receiver would refuse, so a local bug surfaces
// here rather than as a dropped link.
func (w *Writer) WriteFrame(h Header, payload []byte) error {
	if err := w.prepare(&h, payload); err != nil {
		return err
	}
	h.MarshalTo(w.hdr[:HeaderSize])
	ts := w.tagSize()
	if w.mac != nil {
		t, err := w.mac.tag(w.hdr[:HeaderSize], payload)
		if err != nil {
			return err
		}
		copy(w.hdr[HeaderSize:], t)
	}
	if len(payload) == 0 {
		w.vec[0] = w.hdr[:HeaderSize+ts]
		w.bufs = w.vec[:1]
	} else {
		w.vec[0], w.vec[1], w.vec[2] = w.hdr[:HeaderSize], payload, w.hdr[HeaderSize:HeaderSize+ts]
		w.bufs = w.vec[:2]
		if ts > 0 {
			w.bufs = w.vec[:3]
		}
	}
	err := w.writev(&w.bufs)
	w.vec[1] = nil // do not pin the caller's payload
	return err
}
