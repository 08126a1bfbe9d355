package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Magic starts every frame. A fixed, recognisable value lets a receiver tell
// "not a blockrep peer at all" (ErrBadMagic) apart from a damaged frame.
const Magic uint32 = 0x4252504C // "BRPL"

// Protocol versions this implementation decodes. A frame's version byte
// must lie in [MinVersion, MaxVersion]; the handshake picks the highest
// version both peers offer.
//
// Version 1 had no protection after the handshake: it is no longer offered
// (HandshakeConfig offers MinLinkVersion and up), but its header layout is
// still decoded, because the handshake frames keep version 1 so that an old
// peer can read our Hello and both ends report ErrNoCommonVersion.
// Version 2 binds the link protection (Protection) into the handshake and,
// with ProtectMAC, puts a tag after every frame.
const (
	MinVersion uint8 = 1
	MaxVersion uint8 = 2
	// MinLinkVersion is the oldest version a handshake offers.
	MinLinkVersion uint8 = 2
)

// HeaderSize is the fixed size of a frame header. 64 bytes keeps every
// 8-byte field naturally aligned and leaves a reserved word for later use.
const HeaderSize = 64

// MaxPayload bounds a frame's payload: the largest write we replicate in one
// frame (32 MiB, the usual NBD maximum request) plus a margin for per-frame
// metadata. A receiver refuses larger lengths before allocating anything, so a
// corrupt or hostile header cannot make it reserve arbitrary memory.
const MaxPayload = 32<<20 + 4096

// Byte offsets inside the header; see the package documentation.
const (
	offMagic      = 0
	offVersion    = 4
	offType       = 5
	offFlags      = 6
	offVolume     = 8
	offEpoch      = 24
	offSeq        = 32
	offOffset     = 40
	offLength     = 48
	offPayloadCRC = 52
	offReserved   = 56
	offHeaderCRC  = 60
)

// castagnoli is the crc32c table: hardware-accelerated on amd64 and arm64 and
// the same polynomial DRBD, iSCSI and ext4 use, so it is fast enough to run
// on every header.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// FrameType says what a frame carries. Zero is deliberately invalid so that
// an all-zero (e.g. unwritten) header is never mistaken for a frame.
type FrameType uint8

// Frame types. The numeric values are part of the wire format: append new
// types, never renumber.
const (
	// TypeHello opens the handshake: version range, cluster, node ID, nonce.
	TypeHello FrameType = iota + 1
	// TypeAuth carries a handshake proof (HMAC over the transcript).
	TypeAuth
	// TypeAuthOK is the initiator's final confirmation that it accepted the
	// responder's proof; the responder accepts the link only after it.
	TypeAuthOK
	// TypeWrite replicates a write: Offset and payload are the data.
	TypeWrite
	// TypeWriteAckReceived acknowledges that a write reached the peer's
	// memory (what protocol B waits for).
	TypeWriteAckReceived
	// TypeWriteAckDurable acknowledges that a write is durable on the peer
	// (what protocol C waits for).
	TypeWriteAckDurable
	// TypeFlush asks the peer to make all received writes durable.
	TypeFlush
	// TypeFlushAck answers TypeFlush once the peer's flush completed.
	TypeFlushAck
	// TypeBarrier orders writes: those before it are applied before those
	// after it.
	TypeBarrier
	// TypeBitmapChunk carries part of an out-of-sync bitmap at connect.
	TypeBitmapChunk
	// TypeResyncRequest asks the sync source for a range.
	TypeResyncRequest
	// TypeResyncData carries resync data for a range.
	TypeResyncData
	// TypeVerifyRequest asks for digests of a range (online verify or
	// checksum-based resync).
	TypeVerifyRequest
	// TypeVerifyDigest answers TypeVerifyRequest with digests.
	TypeVerifyDigest
	// TypePing is the liveness probe used to detect peer loss.
	TypePing
	// TypePong answers TypePing.
	TypePong
	// TypeError reports a fatal error to the peer before the link is dropped.
	TypeError
	// TypeState carries a node's replica state for one volume: the first
	// frame each side sends after the handshake (what the connect decision
	// compares) and later updates (role change, new generation, leaving).
	TypeState
	// TypeTrim replicates a trim: Offset, and the length in the payload.
	TypeTrim
	// TypeZeroes replicates a write of zeroes (or a resync of a range that
	// reads as zeroes): Offset, and length and flags in the payload.
	TypeZeroes
	// TypeResyncDone ends a resync: the source's generation record, which
	// the target adopts once everything before it is on its disk.
	TypeResyncDone

	typeEnd // one past the last valid type
)

var typeNames = [...]string{
	TypeHello: "Hello", TypeAuth: "Auth", TypeAuthOK: "AuthOK", TypeWrite: "Write",
	TypeWriteAckReceived: "WriteAckReceived", TypeWriteAckDurable: "WriteAckDurable",
	TypeFlush: "Flush", TypeFlushAck: "FlushAck", TypeBarrier: "Barrier",
	TypeBitmapChunk: "BitmapChunk", TypeResyncRequest: "ResyncRequest",
	TypeResyncData: "ResyncData", TypeVerifyRequest: "VerifyRequest",
	TypeVerifyDigest: "VerifyDigest", TypePing: "Ping", TypePong: "Pong", TypeError: "Error",
	TypeState: "State", TypeTrim: "Trim", TypeZeroes: "Zeroes", TypeResyncDone: "ResyncDone",
}

// Valid reports whether t is a frame type this version defines.
func (t FrameType) Valid() bool { return t >= TypeHello && t < typeEnd }

// String names the type for logs and errors.
func (t FrameType) String() string {
	if t.Valid() {
		return typeNames[t]
	}
	return fmt.Sprintf("FrameType(%d)", uint8(t))
}

// Flags modify how a frame is checked or applied.
type Flags uint16

const (
	// FlagChecksum says PayloadCRC holds the crc32c of the payload, which the
	// receiver verifies (DRBD's data-integrity-alg): catches corruption that
	// TCP's weak checksum and offload bugs let through.
	FlagChecksum Flags = 1 << iota
	// FlagFUA marks a write as Force Unit Access: the peer must make it
	// durable before acknowledging, so FUA keeps its meaning end to end.
	FlagFUA

	knownFlags = FlagChecksum | FlagFUA
)

// Sentinel errors. Decoding wraps them with detail; test with errors.Is.
var (
	// ErrShortHeader: fewer than HeaderSize bytes were given to DecodeHeader.
	ErrShortHeader = errors.New("wire: short header")
	// ErrBadMagic: the bytes are not a blockrep frame (wrong port, wrong
	// protocol, or a desynchronised stream).
	ErrBadMagic = errors.New("wire: bad magic")
	// ErrVersion: the frame's protocol version is not one we accept.
	ErrVersion = errors.New("wire: unsupported protocol version")
	// ErrHeaderChecksum: the header's crc32c does not match; nothing in it,
	// least of all the length, can be trusted.
	ErrHeaderChecksum = errors.New("wire: header checksum mismatch")
	// ErrFrameType: the type is not one this version defines.
	ErrFrameType = errors.New("wire: unknown frame type")
	// ErrFlags: the frame sets flags this version does not know. Refused
	// rather than ignored because an ignored flag (like FUA) could silently
	// weaken a guarantee.
	ErrFlags = errors.New("wire: unknown flags")
	// ErrMalformed: reserved bits are set or a field is inconsistent (a
	// payload checksum without FlagChecksum).
	ErrMalformed = errors.New("wire: malformed header")
	// ErrPayloadTooLarge: the payload length exceeds MaxPayload (or the
	// reader's smaller limit).
	ErrPayloadTooLarge = errors.New("wire: payload too large")
	// ErrPayloadChecksum: the payload does not match its crc32c.
	ErrPayloadChecksum = errors.New("wire: payload checksum mismatch")
)

// Header is the fixed part of every frame. Every replication frame carries the
// volume, the epoch (DESIGN invariant 4: fencing) and a sequence number, so
// these are header fields rather than payload.
type Header struct {
	Version    uint8     // protocol version the frame is encoded in
	Type       FrameType // what the frame carries
	Flags      Flags     // FlagChecksum, FlagFUA
	Volume     [16]byte  // volume UUID (zero for link-level frames)
	Epoch      uint64    // sender's epoch; see CheckEpoch
	Seq        uint64    // sender's sequence number
	Offset     uint64    // byte offset into the volume, where meaningful
	Length     uint32    // payload length in bytes
	PayloadCRC uint32    // crc32c of the payload if Flags has FlagChecksum
}

// MarshalTo encodes h, including its header checksum, into b[:HeaderSize].
// It encodes whatever h holds; call Validate first for untrusted values (the
// Writer does). It panics if len(b) < HeaderSize, like a slice bound would.
func (h *Header) MarshalTo(b []byte) {
	b = b[:HeaderSize]
	binary.BigEndian.PutUint32(b[offMagic:], Magic)
	b[offVersion] = h.Version
	b[offType] = uint8(h.Type)
	binary.BigEndian.PutUint16(b[offFlags:], uint16(h.Flags))
	copy(b[offVolume:offEpoch], h.Volume[:])
	binary.BigEndian.PutUint64(b[offEpoch:], h.Epoch)
	binary.BigEndian.PutUint64(b[offSeq:], h.Seq)
	binary.BigEndian.PutUint64(b[offOffset:], h.Offset)
	binary.BigEndian.PutUint32(b[offLength:], h.Length)
	binary.BigEndian.PutUint32(b[offPayloadCRC:], h.PayloadCRC)
	binary.BigEndian.PutUint32(b[offReserved:], 0)
	binary.BigEndian.PutUint32(b[offHeaderCRC:], crc32.Checksum(b[:offHeaderCRC], castagnoli))
}

// Encode returns the encoded header as an array, so callers can encode
// without a heap allocation.
func (h *Header) Encode() [HeaderSize]byte {
	var b [HeaderSize]byte
	h.MarshalTo(b[:])
	return b
}

// Validate checks the fields a receiver checks after the header checksum:
// version, type, flags, the payload checksum field and the length bound.
func (h *Header) Validate() error {
	if h.Version < MinVersion || h.Version > MaxVersion {
		return fmt.Errorf("%w: %d (supported %d..%d)", ErrVersion, h.Version, MinVersion, MaxVersion)
	}
	if !h.Type.Valid() {
		return fmt.Errorf("%w: %d", ErrFrameType, uint8(h.Type))
	}
	if h.Flags&^knownFlags != 0 {
		return fmt.Errorf("%w: %#04x", ErrFlags, uint16(h.Flags&^knownFlags))
	}
	if h.Flags&FlagChecksum == 0 && h.PayloadCRC != 0 {
		return fmt.Errorf("%w: payload checksum %#08x without FlagChecksum", ErrMalformed, h.PayloadCRC)
	}
	if h.Length > MaxPayload {
		return fmt.Errorf("%w: %d bytes (max %d)", ErrPayloadTooLarge, h.Length, MaxPayload)
	}
	return nil
}

// DecodeHeader decodes and checks the header in b[:HeaderSize].
//
// The checks run in an order chosen so the error says what went wrong: magic
// first (not our protocol at all), then the version byte (a peer speaking
// another version, whose header layout may differ, would otherwise be
// reported as a checksum error), then the header checksum, and only then the
// fields — above all Length, which must never be trusted from a damaged
// header.
func DecodeHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: %d bytes", ErrShortHeader, len(b))
	}
	b = b[:HeaderSize]
	if m := binary.BigEndian.Uint32(b[offMagic:]); m != Magic {
		if (b[0] == 0x16 || b[0] == 0x15) && b[1] == 0x03 {
			// A TLS record (handshake or alert), version 3.x.
			return Header{}, fmt.Errorf("%w: %#08x: the other end speaks TLS (security = \"tls\" there, not here?)", ErrBadMagic, m)
		}
		return Header{}, fmt.Errorf("%w: %#08x", ErrBadMagic, m)
	}
	if v := b[offVersion]; v < MinVersion || v > MaxVersion {
		return Header{}, fmt.Errorf("%w: %d (supported %d..%d)", ErrVersion, v, MinVersion, MaxVersion)
	}
	want := binary.BigEndian.Uint32(b[offHeaderCRC:])
	if got := crc32.Checksum(b[:offHeaderCRC], castagnoli); got != want {
		return Header{}, fmt.Errorf("%w: computed %#08x, header says %#08x", ErrHeaderChecksum, got, want)
	}
	if r := binary.BigEndian.Uint32(b[offReserved:]); r != 0 {
		return Header{}, fmt.Errorf("%w: reserved word %#08x", ErrMalformed, r)
	}
	h := Header{
		Version:    b[offVersion],
		Type:       FrameType(b[offType]),
		Flags:      Flags(binary.BigEndian.Uint16(b[offFlags:])),
		Epoch:      binary.BigEndian.Uint64(b[offEpoch:]),
		Seq:        binary.BigEndian.Uint64(b[offSeq:]),
		Offset:     binary.BigEndian.Uint64(b[offOffset:]),
		Length:     binary.BigEndian.Uint32(b[offLength:]),
		PayloadCRC: binary.BigEndian.Uint32(b[offPayloadCRC:]),
	}
	copy(h.Volume[:], b[offVolume:offEpoch])
	if err := h.Validate(); err != nil {
		return Header{}, err
	}
	return h, nil
}

// PayloadChecksum is the crc32c that FlagChecksum frames carry.
func PayloadChecksum(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }
