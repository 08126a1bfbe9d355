package replica

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// castagnoli is the CRC-32C table shared by every persisted record of the
// package: the polynomial has hardware support on amd64 and arm64.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// recordKind describes one kind of persisted record. Every record starts
// with the same envelope: magic (4 bytes), format version (4, little
// endian), CRC-32C (4) of the whole record except that field, so that a
// corrupted header field (a block size, a device size) is detected rather
// than misread as a different geometry.
type recordKind struct {
	magic   string
	version uint32
	name    string // for messages: "a bitmap", "an activity log change"
	corrupt error  // the sentinel that damage wraps
}

// seal writes the envelope of a fully encoded record: call it last.
func (k recordKind) seal(data []byte) {
	copy(data, k.magic)
	binary.LittleEndian.PutUint32(data[4:], k.version)
	binary.LittleEndian.PutUint32(data[8:], recordCRC(data))
}

// open checks the envelope of a record whose fixed header is headerLen
// bytes long (at least the 12-byte envelope).
func (k recordKind) open(data []byte, headerLen int) error {
	if len(data) < headerLen {
		return fmt.Errorf("%w: %d bytes, shorter than the %d-byte header of %s", k.corrupt, len(data), headerLen, k.name)
	}
	if string(data[:4]) != k.magic {
		return fmt.Errorf("%w: not %s (magic %q, want %q)", k.corrupt, k.name, data[:4], k.magic)
	}
	if v := binary.LittleEndian.Uint32(data[4:]); v != k.version {
		return fmt.Errorf("%w: %s in format version %d, this build reads version %d", k.corrupt, k.name, v, k.version)
	}
	if stored, sum := binary.LittleEndian.Uint32(data[8:]), recordCRC(data); stored != sum {
		return fmt.Errorf("%w: %s: checksum mismatch (stored %08x, computed %08x)", k.corrupt, k.name, stored, sum)
	}
	return nil
}

// recordCRC is the CRC-32C of data without its checksum field at [8, 12).
func recordCRC(data []byte) uint32 {
	c := crc32.Checksum(data[:8], castagnoli)
	return crc32.Update(c, castagnoli, data[12:])
}
