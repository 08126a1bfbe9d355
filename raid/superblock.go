package raid

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"time"
)

// This file holds the array superblock: the record every member of an
// array carries so that the array can assemble itself after a restart and
// refuse foreign or stale members (see Plan). It only encodes and decodes;
// it does no I/O.
//
// On-member layout. A member's first DefaultDataOffset (1 MiB) bytes are the
// superblock area; array data starts after it:
//
//	[0, 4 KiB)          the superblock (SuperblockSize bytes, at offset 0)
//	[4 KiB, 1 MiB)      reserved for the write-intent bitmap
//	                    (DefaultBitmapOffset, DefaultBitmapSize): the pages
//	                    of intent.go's MemberIntentStore
//	[1 MiB, 1 MiB+MemberSize)  the member's chunks (Geometry.MemberSize)
//
// The superblock records the offsets it uses (DataOffset, BitmapOffset,
// BitmapSize), so a later format may move them without a version bump.
//
// Encoding (little endian, fixed SuperblockSize bytes, unused bytes zero):
//
//	0    magic "BRSB"
//	4    format version (uint32)
//	8    CRC-32C (Castagnoli) of the whole block except these 4 bytes
//	12   array state (uint8: 1 clean, 2 dirty)
//	13   length of the array name (uint8)
//	14   reserved (2 bytes)
//	16   array UUID (16 bytes)
//	32   member UUID (16 bytes)
//	48   level (uint32, md's number)
//	52   members (uint32)
//	56   copies (uint32, raid10 only)
//	60   role (int32: 0..members-1, or -1 for a spare)
//	64   chunk size (uint64)
//	72   member size (uint64)
//	80   event counter (uint64)
//	88   data offset (uint64)
//	96   bitmap offset (uint64)
//	104  bitmap size (uint64)
//	112  update time (int64, Unix nanoseconds; 0 for the zero time)
//	120  optimal events (uint64): Superblock.OptimalEvents
//	128  array name (MaxArrayNameLen bytes, zero padded)
//	192  member table: one 16-byte entry per role: state (uint8),
//	     7 reserved bytes, rebuild checkpoint (uint64)

// Superblock area constants.
const (
	// SuperblockSize is the size of an encoded superblock: one 4 KiB block
	// at offset 0 of every member.
	SuperblockSize = 4 << 10
	// SuperblockVersion is the format version this build writes and reads.
	SuperblockVersion uint32 = 1
	// DefaultDataOffset is where array data starts on a member: 1 MiB,
	// after the superblock and the bitmap reservation.
	DefaultDataOffset int64 = 1 << 20
	// DefaultBitmapOffset is the start of the area reserved for the
	// write-intent bitmap: right after the superblock.
	DefaultBitmapOffset int64 = SuperblockSize
	// DefaultBitmapSize is the size of the bitmap reservation: the rest of
	// the superblock area, 1 MiB - 4 KiB.
	DefaultBitmapSize = DefaultDataOffset - DefaultBitmapOffset
	// MaxArrayNameLen is the longest array name a superblock holds, in
	// bytes.
	MaxArrayNameLen = 64
	// MaxSuperblockMembers is the most members a superblock's member table
	// holds.
	MaxSuperblockMembers = (SuperblockSize - sbTableOff) / sbEntrySize
)

// RoleSpare is the Role of a member that holds no role yet: a spare waiting
// to replace a failed member.
const RoleSpare = -1

const (
	superblockMagic = "BRSB"
	sbNameOff       = 128
	sbTableOff      = 192
	sbEntrySize     = 16
	sbAlign         = 4 << 10 // DataOffset and BitmapOffset alignment
)

// ErrNoSuperblock is wrapped by UnmarshalSuperblock's error when the block
// does not start with the superblock magic: the device is not (or no longer)
// an array member, e.g. a blank disk.
var ErrNoSuperblock = errors.New("raid: no array superblock")

// ErrBadSuperblock is wrapped by UnmarshalSuperblock's error when the block
// has the magic but cannot be trusted: damaged, from a newer format, or
// inconsistent.
var ErrBadSuperblock = errors.New("raid: bad array superblock")

// sbCastagnoli is the CRC-32C table of the superblock checksum.
var sbCastagnoli = crc32.MakeTable(crc32.Castagnoli)

// UUID identifies an array or a member.
type UUID [16]byte

// String formats u in the usual 8-4-4-4-12 hex form.
func (u UUID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}

// IsZero reports whether u is all zeros (no UUID).
func (u UUID) IsZero() bool { return u == UUID{} }

// ArrayState says whether writes may be in flight on the array.
type ArrayState uint8

// The array states. The zero ArrayState is not a state.
const (
	// ArrayClean: no write was in flight when the superblock was written
	// (clean shutdown): mirrors agree and parity matches its data.
	ArrayClean ArrayState = 1
	// ArrayDirty: writes may have been in flight. An array found dirty at
	// assembly was not shut down cleanly: RAID 5/6 parity of the stripes
	// being written may not match their data (the write hole), and
	// mirrors may differ, so the written regions need a resync.
	ArrayDirty ArrayState = 2
)

// String returns "clean" or "dirty".
func (s ArrayState) String() string {
	switch s {
	case ArrayClean:
		return "clean"
	case ArrayDirty:
		return "dirty"
	}
	return fmt.Sprintf("ArrayState(%d)", int(s))
}

// SlotState is the state of one role ("slot") of the array as recorded in
// a superblock's member table: the persisted counterpart of MemberState.
// The zero SlotState is not a state.
type SlotState uint8

// The member states.
const (
	// SlotInSync: the member holds current data for its role.
	SlotInSync SlotState = 1
	// SlotFaulty: the member failed (an I/O error) and is no longer
	// written.
	SlotFaulty SlotState = 2
	// SlotRebuilding: a replacement member is being rebuilt; data below
	// its RebuildOffset is current.
	SlotRebuilding SlotState = 3
	// SlotSpare: the role is being taken over by a spare whose rebuild
	// has not started.
	SlotSpare SlotState = 4
	// SlotRemoved: the role has no member (the failed one was removed).
	SlotRemoved SlotState = 5
)

// String returns the state's name: "in-sync", "faulty", "rebuilding",
// "spare" or "removed".
func (s SlotState) String() string {
	switch s {
	case SlotInSync:
		return "in-sync"
	case SlotFaulty:
		return "faulty"
	case SlotRebuilding:
		return "rebuilding"
	case SlotSpare:
		return "spare"
	case SlotRemoved:
		return "removed"
	}
	return fmt.Sprintf("SlotState(%d)", int(s))
}

func (s SlotState) valid() bool { return s >= SlotInSync && s <= SlotRemoved }

// SlotStatus is one entry of a superblock's member table.
type SlotStatus struct {
	// State is the member's state.
	State SlotState
	// RebuildOffset is the rebuild checkpoint of a SlotRebuilding
	// member: the member offset (relative to the data offset, in
	// [0, MemberSize]) below which its data is current. Zero in every
	// other state.
	RebuildOffset int64
}

// Superblock is the record at the start of every array member.
type Superblock struct {
	// Version is the format version; Marshal writes SuperblockVersion
	// whatever this holds, and UnmarshalSuperblock sets it.
	Version uint32
	// ArrayUUID identifies the array; every member carries the same one.
	// It must not be zero.
	ArrayUUID UUID
	// Name is the array's human-readable name, at most MaxArrayNameLen
	// bytes and without NUL bytes; it may be empty.
	Name string
	// Geometry is the array's shape; it must be valid (Geometry.Validate)
	// with at most MaxSuperblockMembers members.
	Geometry Geometry
	// Role is this member's index in [0, Geometry.Members), or RoleSpare.
	Role int
	// MemberUUID identifies this member device; it must not be zero.
	MemberUUID UUID
	// Events is the event counter, bumped on every state change of the
	// array (a member failed, added or removed, a clean shutdown, a
	// clean/dirty transition) and written to every working member. A
	// member whose counter is behind the others missed updates.
	Events uint64
	// State is ArrayClean or ArrayDirty.
	State ArrayState
	// Members is the member table as this member last knew it, indexed
	// by role: exactly Geometry.Members entries.
	Members []SlotStatus
	// DataOffset is where the array data starts on the member: a multiple
	// of 4 KiB, at least SuperblockSize. DefaultDataOffset normally.
	DataOffset int64
	// BitmapOffset and BitmapSize are the area reserved for the
	// write-intent bitmap: 4 KiB aligned, after the superblock and
	// ending at or before DataOffset; both zero for no reservation.
	// DefaultBitmapOffset and DefaultBitmapSize normally.
	BitmapOffset, BitmapSize int64
	// UpdateTime is when the superblock was last written (informational;
	// Plan orders members by Events, never by time). Stored with
	// nanosecond precision; the zero time round-trips.
	UpdateTime time.Time
	// OptimalEvents is the event counter of the last superblock written
	// while every role was in sync: the write-intent bitmap may have
	// dropped bits (Sweep) only while the array was optimal, so a member
	// whose Events are at least this value missed nothing the bitmap does
	// not cover. Zero means unknown (no bitmap-based resync).
	OptimalEvents uint64
}

// Validate reports whether sb can be written, naming the offending field.
func (sb Superblock) Validate() error {
	if err := sb.check(); err != nil {
		return fmt.Errorf("raid: superblock: %w", err)
	}
	return nil
}

// check is Validate without the "raid: superblock: " prefix.
func (sb Superblock) check() error {
	g := sb.Geometry
	if err := g.Validate(); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "raid: "))
	}
	if g.Members > MaxSuperblockMembers {
		return fmt.Errorf("Members=%d exceeds the %d a superblock holds", g.Members, MaxSuperblockMembers)
	}
	if sb.ArrayUUID.IsZero() {
		return errors.New("ArrayUUID is zero")
	}
	if sb.MemberUUID.IsZero() {
		return errors.New("MemberUUID is zero")
	}
	if len(sb.Name) > MaxArrayNameLen {
		return fmt.Errorf("Name is %d bytes, longer than %d", len(sb.Name), MaxArrayNameLen)
	}
	if bytes.IndexByte([]byte(sb.Name), 0) >= 0 {
		return fmt.Errorf("Name %q contains a NUL byte", sb.Name)
	}
	if sb.Role != RoleSpare && (sb.Role < 0 || sb.Role >= g.Members) {
		return fmt.Errorf("Role=%d is outside [0, %d) and not a spare (%d)", sb.Role, g.Members, RoleSpare)
	}
	if sb.State != ArrayClean && sb.State != ArrayDirty {
		return fmt.Errorf("State=%d is neither clean (%d) nor dirty (%d)", int(sb.State), int(ArrayClean), int(ArrayDirty))
	}
	if len(sb.Members) != g.Members {
		return fmt.Errorf("member table has %d entries, want Members=%d", len(sb.Members), g.Members)
	}
	for i, m := range sb.Members {
		if !m.State.valid() {
			return fmt.Errorf("member %d has invalid state %d", i, int(m.State))
		}
		if m.State == SlotRebuilding {
			if m.RebuildOffset < 0 || m.RebuildOffset > g.MemberSize {
				return fmt.Errorf("member %d rebuild checkpoint %d is outside [0, MemberSize=%d]", i, m.RebuildOffset, g.MemberSize)
			}
		} else if m.RebuildOffset != 0 {
			return fmt.Errorf("member %d is %v but has rebuild checkpoint %d", i, m.State, m.RebuildOffset)
		}
	}
	if sb.DataOffset < SuperblockSize || sb.DataOffset%sbAlign != 0 {
		return fmt.Errorf("DataOffset=%d is not a multiple of 4 KiB at least %d", sb.DataOffset, SuperblockSize)
	}
	if sb.BitmapOffset != 0 || sb.BitmapSize != 0 {
		if sb.BitmapOffset < SuperblockSize || sb.BitmapOffset%sbAlign != 0 || sb.BitmapSize <= 0 || sb.BitmapSize%sbAlign != 0 ||
			sb.BitmapSize > sb.DataOffset-sb.BitmapOffset {
			return fmt.Errorf("bitmap area [%d, +%d) is not a 4 KiB aligned area between the superblock and DataOffset=%d",
				sb.BitmapOffset, sb.BitmapSize, sb.DataOffset)
		}
	}
	return nil
}

// Marshal encodes sb into a SuperblockSize-byte block with format version
// SuperblockVersion and a CRC-32C. sb must be valid: Marshal panics with
// Validate's error otherwise, so that an unreadable superblock is never
// written.
func (sb Superblock) Marshal() []byte {
	if err := sb.Validate(); err != nil {
		panic(err)
	}
	b := make([]byte, SuperblockSize)
	le := binary.LittleEndian
	b[12] = byte(sb.State)
	b[13] = byte(len(sb.Name))
	copy(b[16:32], sb.ArrayUUID[:])
	copy(b[32:48], sb.MemberUUID[:])
	g := sb.Geometry
	le.PutUint32(b[48:], uint32(g.Level))
	le.PutUint32(b[52:], uint32(g.Members))
	le.PutUint32(b[56:], uint32(g.Copies))
	le.PutUint32(b[60:], uint32(int32(sb.Role)))
	le.PutUint64(b[64:], uint64(g.ChunkSize))
	le.PutUint64(b[72:], uint64(g.MemberSize))
	le.PutUint64(b[80:], sb.Events)
	le.PutUint64(b[88:], uint64(sb.DataOffset))
	le.PutUint64(b[96:], uint64(sb.BitmapOffset))
	le.PutUint64(b[104:], uint64(sb.BitmapSize))
	var t int64
	if !sb.UpdateTime.IsZero() {
		t = sb.UpdateTime.UnixNano()
	}
	le.PutUint64(b[112:], uint64(t))
	le.PutUint64(b[120:], sb.OptimalEvents)
	copy(b[sbNameOff:sbNameOff+MaxArrayNameLen], sb.Name)
	for i, m := range sb.Members {
		e := b[sbTableOff+i*sbEntrySize:]
		e[0] = byte(m.State)
		le.PutUint64(e[8:], uint64(m.RebuildOffset))
	}
	copy(b, superblockMagic)
	le.PutUint32(b[4:], SuperblockVersion)
	le.PutUint32(b[8:], superblockCRC(b))
	return b
}

// superblockCRC is the CRC-32C of b[:SuperblockSize] without its checksum
// field at [8, 12).
func superblockCRC(b []byte) uint32 {
	c := crc32.Checksum(b[:8], sbCastagnoli)
	return crc32.Update(c, sbCastagnoli, b[12:SuperblockSize])
}

// UnmarshalSuperblock decodes a superblock from the first SuperblockSize
// bytes of b (b may be longer, e.g. the whole superblock area). It refuses,
// with an error wrapping ErrNoSuperblock, a block without the magic, and
// with an error wrapping ErrBadSuperblock a block that is too short, of
// another format version, fails its CRC-32C or holds an inconsistent
// superblock (see Superblock.Validate); each error says which.
func UnmarshalSuperblock(b []byte) (Superblock, error) {
	if len(b) < SuperblockSize {
		return Superblock{}, fmt.Errorf("%w: %d bytes, shorter than the %d-byte superblock", ErrBadSuperblock, len(b), SuperblockSize)
	}
	b = b[:SuperblockSize]
	if string(b[:4]) != superblockMagic {
		return Superblock{}, fmt.Errorf("%w: magic %q, want %q", ErrNoSuperblock, b[:4], superblockMagic)
	}
	le := binary.LittleEndian
	switch v := le.Uint32(b[4:]); {
	case v > SuperblockVersion:
		return Superblock{}, fmt.Errorf("%w: format version %d is newer than this build reads (%d): upgrade blockrep", ErrBadSuperblock, v, SuperblockVersion)
	case v != SuperblockVersion:
		return Superblock{}, fmt.Errorf("%w: unknown format version %d, this build reads version %d", ErrBadSuperblock, v, SuperblockVersion)
	}
	if stored, sum := le.Uint32(b[8:]), superblockCRC(b); stored != sum {
		return Superblock{}, fmt.Errorf("%w: checksum mismatch (stored %08x, computed %08x): the superblock is damaged", ErrBadSuperblock, stored, sum)
	}
	var sb Superblock
	sb.Version = SuperblockVersion
	sb.State = ArrayState(b[12])
	nameLen := int(b[13])
	copy(sb.ArrayUUID[:], b[16:32])
	copy(sb.MemberUUID[:], b[32:48])
	g := Geometry{
		Level:      Level(le.Uint32(b[48:])),
		Members:    int(le.Uint32(b[52:])),
		Copies:     int(le.Uint32(b[56:])),
		ChunkSize:  int64(le.Uint64(b[64:])),
		MemberSize: int64(le.Uint64(b[72:])),
	}
	sb.Geometry = g
	sb.Role = int(int32(le.Uint32(b[60:])))
	sb.Events = le.Uint64(b[80:])
	sb.DataOffset = int64(le.Uint64(b[88:]))
	sb.BitmapOffset = int64(le.Uint64(b[96:]))
	sb.BitmapSize = int64(le.Uint64(b[104:]))
	sb.OptimalEvents = le.Uint64(b[120:])
	if t := int64(le.Uint64(b[112:])); t != 0 {
		sb.UpdateTime = time.Unix(0, t).UTC()
	}
	if nameLen > MaxArrayNameLen {
		return Superblock{}, fmt.Errorf("%w: name length %d exceeds %d", ErrBadSuperblock, nameLen, MaxArrayNameLen)
	}
	sb.Name = string(b[sbNameOff : sbNameOff+nameLen])
	// Check the geometry before sizing the member table from it.
	if err := g.Validate(); err != nil {
		return Superblock{}, fmt.Errorf("%w: %s", ErrBadSuperblock, strings.TrimPrefix(err.Error(), "raid: "))
	}
	if g.Members > MaxSuperblockMembers {
		return Superblock{}, fmt.Errorf("%w: Members=%d exceeds the %d a superblock holds", ErrBadSuperblock, g.Members, MaxSuperblockMembers)
	}
	sb.Members = make([]SlotStatus, g.Members)
	for i := range sb.Members {
		e := b[sbTableOff+i*sbEntrySize:]
		sb.Members[i] = SlotStatus{State: SlotState(e[0]), RebuildOffset: int64(le.Uint64(e[8:]))}
	}
	if err := sb.check(); err != nil {
		return Superblock{}, fmt.Errorf("%w: %v", ErrBadSuperblock, err)
	}
	return sb, nil
}
