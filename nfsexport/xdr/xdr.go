// Package xdr encodes and decodes the External Data Representation of RFC 4506,
// made for the hot path of an RPC server.
//
// A Decoder reads from a []byte it does not copy: Opaque and FixedOpaque return
// sub-slices of the input, valid as long as the input is. Every length field is
// checked against what remains of the input before anything is allocated, so a
// hostile length never makes the decoder allocate more than the input holds;
// the decoder never panics on any input. Errors are *Error values naming the
// field being decoded and its offset.
//
// An Encoder appends to a []byte that the caller may reuse across messages
// (Reset keeps the capacity).
//
// Padding bytes are written as zeros; on decoding they are skipped without being
// checked, as RFC 4506 section 3 lets a reader do and as common servers do.
package xdr

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// ErrShort is wrapped by an *Error when the input ends before the item does.
var ErrShort = errors.New("input too short")

// ErrTooLong is wrapped by an *Error when a variable-length item is longer than
// the maximum the caller allows.
var ErrTooLong = errors.New("length over the maximum")

// ErrInvalid is wrapped by an *Error, made by the caller, when a value is
// outside its enumeration (e.g. a discriminant no arm matches).
var ErrInvalid = errors.New("value not in its enumeration")

// ErrBadBool is wrapped by an *Error when a boolean is neither 0 nor 1.
var ErrBadBool = errors.New("boolean neither 0 nor 1")

// Error describes a decoding failure: which field, at which offset of the
// input, and why (one of ErrShort, ErrTooLong, ErrBadBool, ErrInvalid).
type Error struct {
	Field  string // the name the caller gave the item
	Offset int    // offset of the item in the input
	Err    error  // ErrShort, ErrTooLong, ErrBadBool or ErrInvalid
	Detail string // numbers that explain Err, e.g. "need 8 bytes, 3 remain"
}

// Error implements error.
func (e *Error) Error() string {
	return fmt.Sprintf("xdr: %s at offset %d: %v (%s)", e.Field, e.Offset, e.Err, e.Detail)
}

// Unwrap returns the kind of failure.
func (e *Error) Unwrap() error { return e.Err }

// Pad returns the number of zero bytes that follow n bytes of opaque data to
// reach a multiple of four.
func Pad(n int) int { return (4 - n&3) & 3 }

// Decoder reads XDR items from a byte slice. The zero value decodes an empty
// input; use NewDecoder or Reset to give it one.
type Decoder struct {
	buf []byte
	off int
}

// NewDecoder returns a Decoder reading b from its start.
func NewDecoder(b []byte) *Decoder { return &Decoder{buf: b} }

// Reset makes d read b from its start.
func (d *Decoder) Reset(b []byte) { d.buf, d.off = b, 0 }

// Offset returns how many bytes have been consumed.
func (d *Decoder) Offset() int { return d.off }

// Remaining returns how many bytes are left.
func (d *Decoder) Remaining() int { return len(d.buf) - d.off }

// Rest returns the unread part of the input without consuming it.
func (d *Decoder) Rest() []byte { return d.buf[d.off:] }

func (d *Decoder) short(field string, need int) error {
	return &Error{Field: field, Offset: d.off, Err: ErrShort,
		Detail: fmt.Sprintf("need %d bytes, %d remain", need, d.Remaining())}
}

// take consumes n bytes (n >= 0) or fails without consuming anything.
func (d *Decoder) take(field string, n int) ([]byte, error) {
	if n < 0 || n > d.Remaining() {
		return nil, d.short(field, n)
	}
	b := d.buf[d.off : d.off+n : d.off+n]
	d.off += n
	return b, nil
}

// Uint32 decodes an unsigned integer.
func (d *Decoder) Uint32(field string) (uint32, error) {
	b, err := d.take(field, 4)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(b), nil
}

// Int32 decodes a signed integer.
func (d *Decoder) Int32(field string) (int32, error) {
	v, err := d.Uint32(field)
	return int32(v), err
}

// Uint64 decodes an unsigned hyper integer.
func (d *Decoder) Uint64(field string) (uint64, error) {
	b, err := d.take(field, 8)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(b), nil
}

// Int64 decodes a signed hyper integer.
func (d *Decoder) Int64(field string) (int64, error) {
	v, err := d.Uint64(field)
	return int64(v), err
}

// Bool decodes a boolean, which must be 0 or 1.
func (d *Decoder) Bool(field string) (bool, error) {
	start := d.off
	v, err := d.Uint32(field)
	if err != nil {
		return false, err
	}
	switch v {
	case 0:
		return false, nil
	case 1:
		return true, nil
	}
	d.off = start
	return false, &Error{Field: field, Offset: start, Err: ErrBadBool, Detail: fmt.Sprintf("value %d", v)}
}

// Optional decodes the discriminant of optional-data (RFC 4506 section 4.19):
// true when the item follows.
func (d *Decoder) Optional(field string) (bool, error) { return d.Bool(field) }

// FixedOpaque decodes n bytes of fixed-length opaque data and their padding.
// The result aliases the input.
func (d *Decoder) FixedOpaque(field string, n int) ([]byte, error) {
	if n < 0 || n+Pad(n) > d.Remaining() {
		return nil, d.short(field, n+Pad(n))
	}
	b, _ := d.take(field, n)
	d.off += Pad(n)
	return b, nil
}

// Opaque decodes variable-length opaque data of at most max bytes and its
// padding. The result aliases the input. On error nothing is consumed.
func (d *Decoder) Opaque(field string, max int) ([]byte, error) {
	start := d.off
	n, err := d.Uint32(field)
	if err != nil {
		return nil, err
	}
	if uint64(n) > uint64(max) {
		d.off = start
		return nil, &Error{Field: field, Offset: start, Err: ErrTooLong,
			Detail: fmt.Sprintf("length %d, maximum %d", n, max)}
	}
	if uint64(n)+uint64(Pad(int(n))) > uint64(d.Remaining()) {
		need := uint64(n) + uint64(Pad(int(n)))
		err := &Error{Field: field, Offset: start, Err: ErrShort,
			Detail: fmt.Sprintf("length %d needs %d bytes, %d remain", n, need, d.Remaining())}
		d.off = start
		return nil, err
	}
	b, _ := d.take(field, int(n))
	d.off += Pad(int(n))
	return b, nil
}

// String decodes a string of at most max bytes. It copies the bytes (a string
// is immutable); the copy is no longer than the input.
func (d *Decoder) String(field string, max int) (string, error) {
	b, err := d.Opaque(field, max)
	return string(b), err
}

// Encoder appends XDR items to a byte slice.
type Encoder struct {
	buf []byte
}

// NewEncoder returns an Encoder appending to buf (often buf[:0] of a reused
// buffer).
func NewEncoder(buf []byte) *Encoder { return &Encoder{buf: buf} }

// Reset makes e append to buf.
func (e *Encoder) Reset(buf []byte) { e.buf = buf }

// Bytes returns the encoded bytes.
func (e *Encoder) Bytes() []byte { return e.buf }

// Len returns the number of encoded bytes.
func (e *Encoder) Len() int { return len(e.buf) }

// Reserve appends n bytes for the caller to fill (a READ's data, read
// straight into the reply) and returns them. Their contents are whatever
// the buffer held: fill them all, or Truncate what was not filled.
func (e *Encoder) Reserve(n int) []byte {
	e.buf = slices.Grow(e.buf, n)
	start := len(e.buf)
	e.buf = e.buf[:start+n]
	return e.buf[start:]
}

// Truncate drops everything encoded after the first n bytes.
func (e *Encoder) Truncate(n int) { e.buf = e.buf[:n] }

// Uint32 appends an unsigned integer.
func (e *Encoder) Uint32(v uint32) { e.buf = binary.BigEndian.AppendUint32(e.buf, v) }

// Int32 appends a signed integer.
func (e *Encoder) Int32(v int32) { e.Uint32(uint32(v)) }

// Uint64 appends an unsigned hyper integer.
func (e *Encoder) Uint64(v uint64) { e.buf = binary.BigEndian.AppendUint64(e.buf, v) }

// Int64 appends a signed hyper integer.
func (e *Encoder) Int64(v int64) { e.Uint64(uint64(v)) }

// Bool appends a boolean.
func (e *Encoder) Bool(v bool) {
	if v {
		e.Uint32(1)
	} else {
		e.Uint32(0)
	}
}

// Optional appends the discriminant of optional-data: true when the item
// follows.
func (e *Encoder) Optional(present bool) { e.Bool(present) }

var zeros [4]byte

// FixedOpaque appends b as fixed-length opaque data, with padding.
func (e *Encoder) FixedOpaque(b []byte) {
	e.buf = append(e.buf, b...)
	e.buf = append(e.buf, zeros[:Pad(len(b))]...)
}

// Opaque appends b as variable-length opaque data: length, bytes, padding.
func (e *Encoder) Opaque(b []byte) {
	e.Uint32(uint32(len(b)))
	e.FixedOpaque(b)
}

// String appends s as an XDR string.
func (e *Encoder) String(s string) {
	e.Uint32(uint32(len(s)))
	e.buf = append(e.buf, s...)
	e.buf = append(e.buf, zeros[:Pad(len(s))]...)
}

// PutUint32At overwrites the four bytes at offset off (already encoded) with v;
// use it to fill in a length or count known only after what follows is encoded.
func (e *Encoder) PutUint32At(off int, v uint32) {
	binary.BigEndian.PutUint32(e.buf[off:off+4], v)
}
