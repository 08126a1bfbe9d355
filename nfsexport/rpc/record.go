package rpc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// lastFragment is the bit of a record-marking header that ends a record
// (RFC 5531 section 11).
const lastFragment = 1 << 31

// readStep is the first allocation step for a record's body.
const readStep = 64 << 10

// ErrRecordTooLarge is wrapped by the error ReadRecord returns when the
// fragments of one record add up to more than the maximum.
var ErrRecordTooLarge = errors.New("rpc: record over the maximum size")

// ReadRecord reads one record-marked record from r: fragments are read until
// the one with the last-fragment bit, and their bodies are concatenated into
// buf[:0] (grown if needed), which is returned. Zero-length fragments are
// allowed. A record whose fragments add up to more than maxSize bytes fails with
// ErrRecordTooLarge before the oversized fragment is read or allocated, and
// the buffer grows only as bytes arrive, whatever length a fragment claims. An
// input that ends inside a record fails with io.ErrUnexpectedEOF; one that ends
// before a record starts returns io.EOF.
func ReadRecord(r io.Reader, buf []byte, maxSize int) ([]byte, error) {
	rec := buf[:0]
	for first := true; ; first = false {
		// The header is read into the buffer's spare capacity: a local
		// array would escape to the heap through the io.Reader.
		if cap(rec)-len(rec) < 4 {
			grown := make([]byte, len(rec), max(2*cap(rec), len(rec)+4, 64))
			copy(grown, rec)
			rec = grown
		}
		hdr := rec[len(rec) : len(rec)+4]
		if _, err := io.ReadFull(r, hdr); err != nil {
			if err == io.EOF && !first {
				err = io.ErrUnexpectedEOF
			}
			return rec, err
		}
		h := binary.BigEndian.Uint32(hdr)
		n := int(h &^ lastFragment)
		if n > maxSize-len(rec) {
			return rec, fmt.Errorf("%w: fragment of %d bytes after %d, maximum %d", ErrRecordTooLarge, n, len(rec), maxSize)
		}
		// Read the fragment in steps that at most double what has arrived,
		// so a claimed length never allocates more than the peer sent.
		for n > 0 {
			step := min(n, max(readStep, len(rec)))
			start := len(rec)
			if cap(rec)-start < step {
				c := min(max(start+step, 2*cap(rec)), maxSize)
				grown := make([]byte, start, c)
				copy(grown, rec)
				rec = grown
			}
			rec = rec[:start+step]
			if _, err := io.ReadFull(r, rec[start:]); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return rec[:start], err
			}
			n -= step
		}
		if h&lastFragment != 0 {
			return rec, nil
		}
	}
}

// AppendRecordMark reserves room for a single-fragment record marker at the
// end of b; after the record body is appended, SetRecordMark fills it in.
func AppendRecordMark(b []byte) []byte { return append(b, 0, 0, 0, 0) }

// SetRecordMark writes the marker of a single, last fragment into rec[:4],
// covering the len(rec)-4 bytes that follow.
func SetRecordMark(rec []byte) {
	binary.BigEndian.PutUint32(rec[:4], uint32(len(rec)-4)|lastFragment)
}
