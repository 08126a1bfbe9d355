// Package storeid keeps a volume's identity on its store, next to the data,
// as DRBD's internal meta-data and raid's superblocks do: a store that is
// blank, foreign, truncated, replaced or stale is told apart from the one
// meta.db describes at every open, instead of being served as if it held the
// volume's data.
//
// The identity is one BlockSize block right after the volume's data (the
// trailer): data stays at offset 0, so what clients see is unchanged; a
// regular file is the volume size plus the trailer, a block device or array
// exports its size minus the trailer. It names the volume (meta.db's UUID),
// the store (a random UUID drawn when this store was initialised) and the
// generation of the open that last wrote it (a random UUID per writable
// open, and the generation before it). meta.db records the volume UUID, the
// store UUID and the generation too; Decide compares both and says what the
// node does. Device exports the data part of a store and writes trailers.
//
// Write order, so that a crash at any point leaves a state Decide accepts
// or that errs towards a resync, never towards serving a wrong store as
// good: the trailer first (written with FUA, then flushed), meta.db after.
// A trailer whose Prev is the generation meta.db records is the one an open
// wrote just before it stopped.
package storeid

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/google/uuid"
)

// BlockSize is the size of the identity block at the end of a store.
const BlockSize = 4 << 10

// Version is the trailer format this build writes and reads.
const Version uint32 = 1

// magic starts every trailer.
var magic = [8]byte{'B', 'R', 'S', 'T', 'O', 'R', 'E', 0}

// Encoding (little endian, BlockSize bytes, unused bytes zero):
//
//	0     magic "BRSTORE\0"
//	8     format version (uint32)
//	12    reserved (4 bytes)
//	16    volume UUID (meta.db's record of the volume)
//	32    store UUID (drawn when the store was initialised)
//	48    generation (drawn by the open that wrote the trailer)
//	64    previous generation (what meta.db recorded at that open)
//	80    node ID (meta.db's node identity)
//	96    data size in bytes (uint64): where this trailer starts
//	104   written (int64, Unix nanoseconds)
//	112   length of the volume name (uint8), then the name (64 bytes)
//	4092  CRC-32C (Castagnoli) of bytes [0, 4092)
const (
	offVersion = 8
	offVolume  = 16
	offStore   = 32
	offGen     = 48
	offPrev    = 64
	offNode    = 80
	offSize    = 96
	offWritten = 104
	offNameLen = 112
	offName    = 113
	maxName    = 64
	offCRC     = BlockSize - 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Trailer is the identity a store carries.
type Trailer struct {
	// Volume is the volume's UUID as meta.db records it.
	Volume uuid.UUID
	// Store names this store: drawn when it was initialised, so a store
	// that replaced it (even a copy of the same volume) has another.
	Store uuid.UUID
	// Gen is the generation of the open that wrote the trailer; Prev the
	// generation meta.db recorded at that open.
	Gen, Prev uuid.UUID
	// Node is the node identity (meta.db's) that wrote the trailer.
	Node uuid.UUID
	// Size is the volume's data size: the trailer starts at this offset.
	Size int64
	// Written is when the trailer was written.
	Written time.Time
	// Name is the volume name (at most 64 bytes are kept).
	Name string
}

// Marshal encodes t into a BlockSize block.
func (t Trailer) Marshal() []byte {
	b := make([]byte, BlockSize)
	copy(b, magic[:])
	le := binary.LittleEndian
	le.PutUint32(b[offVersion:], Version)
	copy(b[offVolume:], t.Volume[:])
	copy(b[offStore:], t.Store[:])
	copy(b[offGen:], t.Gen[:])
	copy(b[offPrev:], t.Prev[:])
	copy(b[offNode:], t.Node[:])
	le.PutUint64(b[offSize:], uint64(t.Size))
	if !t.Written.IsZero() {
		le.PutUint64(b[offWritten:], uint64(t.Written.UnixNano()))
	}
	name := t.Name
	if len(name) > maxName {
		name = name[:maxName]
	}
	b[offNameLen] = byte(len(name))
	copy(b[offName:], name)
	le.PutUint32(b[offCRC:], crc32.Checksum(b[:offCRC], castagnoli))
	return b
}

// Found says what was read where a store's trailer belongs.
type Found uint8

const (
	// NotRead: nothing was read (the store is missing or too short).
	NotRead Found = iota
	// Blank: the block is all zeroes (a new, sparse or wiped store).
	Blank
	// Valid: a trailer of this format with a good checksum.
	Valid
	// Corrupt: neither blank nor a valid trailer: other data, or a
	// damaged trailer.
	Corrupt
	// Newer: a trailer of a newer format than this build reads.
	Newer
	// Unreadable: reading the block failed (an I/O error).
	Unreadable
)

var foundNames = [...]string{NotRead: "not-read", Blank: "blank", Valid: "valid", Corrupt: "corrupt", Newer: "newer", Unreadable: "unreadable"}

// String names the outcome as in scenario files.
func (f Found) String() string {
	if int(f) < len(foundNames) {
		return foundNames[f]
	}
	return fmt.Sprintf("Found(%d)", f)
}

// ErrCorrupt is wrapped by Parse's error for a block that is neither blank
// nor a valid trailer.
var ErrCorrupt = errors.New("storeid: not a valid store identity")

// Parse decodes a BlockSize block: Blank for zeroes, Valid with the
// trailer, Corrupt or Newer with an error saying why.
func Parse(b []byte) (Trailer, Found, error) {
	if len(b) != BlockSize {
		return Trailer{}, Corrupt, fmt.Errorf("%w: %d bytes, want %d", ErrCorrupt, len(b), BlockSize)
	}
	if isZero(b) {
		return Trailer{}, Blank, nil
	}
	if !bytes.Equal(b[:len(magic)], magic[:]) {
		return Trailer{}, Corrupt, fmt.Errorf("%w: no identity magic (the block holds other data)", ErrCorrupt)
	}
	le := binary.LittleEndian
	if v := le.Uint32(b[offVersion:]); v > Version {
		return Trailer{}, Newer, fmt.Errorf("storeid: identity format %d is newer than this blockrepd reads (%d): use a newer blockrepd", v, Version)
	} else if v == 0 {
		return Trailer{}, Corrupt, fmt.Errorf("%w: format version 0", ErrCorrupt)
	}
	if got, want := le.Uint32(b[offCRC:]), crc32.Checksum(b[:offCRC], castagnoli); got != want {
		return Trailer{}, Corrupt, fmt.Errorf("%w: checksum %08x, computed %08x (a damaged identity block)", ErrCorrupt, got, want)
	}
	var t Trailer
	copy(t.Volume[:], b[offVolume:])
	copy(t.Store[:], b[offStore:])
	copy(t.Gen[:], b[offGen:])
	copy(t.Prev[:], b[offPrev:])
	copy(t.Node[:], b[offNode:])
	size := le.Uint64(b[offSize:])
	if size > 1<<62 {
		return Trailer{}, Corrupt, fmt.Errorf("%w: data size %d", ErrCorrupt, size)
	}
	t.Size = int64(size)
	if w := int64(le.Uint64(b[offWritten:])); w != 0 {
		t.Written = time.Unix(0, w).UTC()
	}
	n := int(b[offNameLen])
	if n > maxName {
		return Trailer{}, Corrupt, fmt.Errorf("%w: name length %d", ErrCorrupt, n)
	}
	t.Name = string(b[offName : offName+n])
	return t, Valid, nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
