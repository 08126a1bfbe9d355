package raid

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// randomGeometry returns a valid geometry with at most maxMembers members.
func randomSBGeometry(r *rand.Rand, maxMembers int) Geometry {
	for {
		g := Geometry{
			Level:      []Level{Level1, Level10, Level5, Level6}[r.IntN(4)],
			Members:    2 + r.IntN(maxMembers-1),
			ChunkSize:  MinChunkSize << r.IntN(13),
			MemberSize: 0,
		}
		if g.Level == Level10 {
			g.Copies = r.IntN(4) // 0 means the default
		}
		g.MemberSize = g.ChunkSize * (1 + r.Int64N(1<<20))
		if g.Validate() == nil {
			return g
		}
	}
}

func randomUUID(r *rand.Rand) UUID {
	var u UUID
	for u.IsZero() {
		for i := range u {
			u[i] = byte(r.UintN(256))
		}
	}
	return u
}

func randomSuperblock(r *rand.Rand) Superblock {
	maxMembers := 8
	if r.IntN(10) == 0 {
		maxMembers = MaxSuperblockMembers
	}
	g := randomSBGeometry(r, maxMembers)
	sb := Superblock{
		Version:      SuperblockVersion,
		ArrayUUID:    randomUUID(r),
		Name:         strings.Repeat("x", r.IntN(MaxArrayNameLen+1)),
		Geometry:     g,
		Role:         r.IntN(g.Members+1) - 1,
		MemberUUID:   randomUUID(r),
		Events:       r.Uint64(),
		State:        ArrayState(1 + r.IntN(2)),
		DataOffset:   DefaultDataOffset,
		BitmapOffset: DefaultBitmapOffset,
		BitmapSize:   DefaultBitmapSize,
	}
	if r.IntN(4) == 0 {
		sb.BitmapOffset, sb.BitmapSize = 0, 0
		sb.DataOffset = SuperblockSize * (1 + r.Int64N(512))
	}
	if r.IntN(4) != 0 {
		sb.UpdateTime = time.Unix(0, r.Int64()).UTC()
	}
	sb.Members = make([]SlotStatus, g.Members)
	for i := range sb.Members {
		s := SlotState(1 + r.IntN(5))
		sb.Members[i].State = s
		if s == SlotRebuilding {
			sb.Members[i].RebuildOffset = r.Int64N(g.MemberSize + 1)
		}
	}
	return sb
}

// testSuperblock is a valid 4-member raid5 superblock.
func testSuperblock() Superblock {
	return Superblock{
		ArrayUUID:    UUID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		Name:         "data",
		Geometry:     Geometry{Level: Level5, Members: 4, ChunkSize: 64 * kib, MemberSize: 1 << 30},
		Role:         2,
		MemberUUID:   UUID{0xaa, 0xbb},
		Events:       42,
		State:        ArrayClean,
		Members:      []SlotStatus{{SlotInSync, 0}, {SlotInSync, 0}, {SlotInSync, 0}, {SlotRebuilding, 1 << 20}},
		DataOffset:   DefaultDataOffset,
		BitmapOffset: DefaultBitmapOffset,
		BitmapSize:   DefaultBitmapSize,
		UpdateTime:   time.Date(2026, 11, 26, 2, 30, 0, 123, time.UTC),
	}
}

// reseal recomputes the checksum of a modified block, so that the test
// reaches the check behind it.
func reseal(b []byte) []byte {
	binary.LittleEndian.PutUint32(b[8:], superblockCRC(b))
	return b
}

func TestSuperblockLayoutConstants(t *testing.T) {
	if DefaultBitmapOffset+DefaultBitmapSize != DefaultDataOffset || DefaultBitmapOffset != SuperblockSize {
		t.Errorf("bitmap reservation [%d, +%d) does not fill the superblock area up to %d", DefaultBitmapOffset, DefaultBitmapSize, DefaultDataOffset)
	}
	if DefaultDataOffset != 1<<20 || SuperblockSize != 4096 {
		t.Errorf("DefaultDataOffset=%d SuperblockSize=%d, want 1 MiB and 4 KiB", DefaultDataOffset, SuperblockSize)
	}
	if sbTableOff+MaxSuperblockMembers*sbEntrySize > SuperblockSize || sbNameOff+MaxArrayNameLen > sbTableOff {
		t.Errorf("superblock fields overflow: table of %d members", MaxSuperblockMembers)
	}
}

func TestSuperblockEncoding(t *testing.T) {
	sb := testSuperblock()
	b := sb.Marshal()
	if len(b) != SuperblockSize {
		t.Fatalf("Marshal: %d bytes, want %d", len(b), SuperblockSize)
	}
	le := binary.LittleEndian
	if string(b[:4]) != "BRSB" || le.Uint32(b[4:]) != SuperblockVersion {
		t.Errorf("envelope %q v%d", b[:4], le.Uint32(b[4:]))
	}
	if le.Uint64(b[80:]) != 42 || int32(le.Uint32(b[60:])) != 2 || le.Uint32(b[48:]) != 5 || le.Uint64(b[88:]) != 1<<20 {
		t.Errorf("field offsets moved: events %d role %d level %d data offset %d",
			le.Uint64(b[80:]), int32(le.Uint32(b[60:])), le.Uint32(b[48:]), le.Uint64(b[88:]))
	}
	if string(b[sbNameOff:sbNameOff+4]) != "data" || b[sbTableOff+3*sbEntrySize] != byte(SlotRebuilding) {
		t.Errorf("name or member table moved")
	}
	sb.Role = RoleSpare
	if got, err := UnmarshalSuperblock(sb.Marshal()); err != nil || got.Role != RoleSpare {
		t.Errorf("spare: role %d, %v", got.Role, err)
	}
	// A longer buffer (the whole superblock area) decodes from its start.
	long := make([]byte, 2*SuperblockSize)
	copy(long, b)
	long[SuperblockSize] = 0xff
	if _, err := UnmarshalSuperblock(long); err != nil {
		t.Errorf("UnmarshalSuperblock(8 KiB): %v", err)
	}
	if s := (UUID{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0, 1, 2, 3, 4, 5, 6, 7}).String(); s != "01234567-89ab-cdef-0001-020304050607" {
		t.Errorf("UUID.String = %s", s)
	}
}

func TestSuperblockRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		sb := randomSuperblock(r)
		if err := sb.Validate(); err != nil {
			t.Fatalf("random superblock %d invalid: %v", i, err)
		}
		b := sb.Marshal()
		if len(b) != SuperblockSize {
			t.Fatalf("Marshal: %d bytes", len(b))
		}
		got, err := UnmarshalSuperblock(b)
		if err != nil {
			t.Fatalf("UnmarshalSuperblock(%+v): %v", sb, err)
		}
		if !reflect.DeepEqual(got, sb) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, sb)
		}
	}
	// Marshal always writes the current version.
	sb := testSuperblock()
	sb.Version = 99
	if got, err := UnmarshalSuperblock(sb.Marshal()); err != nil || got.Version != SuperblockVersion {
		t.Errorf("Version %d, %v", got.Version, err)
	}
}

func TestSuperblockBitFlips(t *testing.T) {
	b := testSuperblock().Marshal()
	for i := 0; i < len(b)*8; i++ {
		c := append([]byte(nil), b...)
		c[i/8] ^= 1 << (i % 8)
		_, err := UnmarshalSuperblock(c)
		if err == nil {
			t.Fatalf("bit %d flipped: accepted", i)
		}
		var want error = ErrBadSuperblock
		msg := "checksum mismatch"
		switch {
		case i < 32:
			want, msg = ErrNoSuperblock, "magic"
		case i < 64:
			msg = "version"
		}
		if !errors.Is(err, want) || !strings.Contains(err.Error(), msg) {
			t.Fatalf("bit %d flipped: %v, want %v mentioning %q", i, err, want, msg)
		}
	}
}

func TestSuperblockRefused(t *testing.T) {
	good := testSuperblock().Marshal()
	le := binary.LittleEndian
	edit := func(f func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		f(b)
		return reseal(b)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want error
		msg  string
	}{
		{"short", good[:100], ErrBadSuperblock, "shorter than the 4096-byte superblock"},
		{"zeros", make([]byte, SuperblockSize), ErrNoSuperblock, `magic "\x00\x00\x00\x00", want "BRSB"`},
		{"wrong magic", edit(func(b []byte) { copy(b, "XFSB") }), ErrNoSuperblock, `magic "XFSB"`},
		{"future version", edit(func(b []byte) { le.PutUint32(b[4:], 2) }), ErrBadSuperblock, "format version 2 is newer than this build reads (1)"},
		{"version 0", edit(func(b []byte) { le.PutUint32(b[4:], 0) }), ErrBadSuperblock, "unknown format version 0"},
		{"bad crc", func() []byte { b := append([]byte(nil), good...); b[8]++; return b }(), ErrBadSuperblock, "checksum mismatch"},
		{"bad level", edit(func(b []byte) { le.PutUint32(b[48:], 4) }), ErrBadSuperblock, "geometry: Level 4 is not"},
		{"too few members", edit(func(b []byte) { le.PutUint32(b[52:], 2) }), ErrBadSuperblock, "raid5 needs at least 3 members"},
		{"chunk size", edit(func(b []byte) { le.PutUint64(b[64:], 3000) }), ErrBadSuperblock, "ChunkSize=3000"},
		{"member size", edit(func(b []byte) { le.PutUint64(b[72:], 1000) }), ErrBadSuperblock, "MemberSize=1000"},
		{"copies on raid5", edit(func(b []byte) { le.PutUint32(b[56:], 2) }), ErrBadSuperblock, "Copies applies only to raid10"},
		{"too many members", edit(func(b []byte) { le.PutUint32(b[52:], MaxSuperblockMembers+1) }), ErrBadSuperblock, "exceeds the 244"},
		{"role out of range", edit(func(b []byte) { le.PutUint32(b[60:], 4) }), ErrBadSuperblock, "Role=4 is outside [0, 4)"},
		{"negative role", edit(func(b []byte) { le.PutUint32(b[60:], uint32(0xfffffffe)) }), ErrBadSuperblock, "Role=-2"},
		{"array state", edit(func(b []byte) { b[12] = 0 }), ErrBadSuperblock, "State=0 is neither clean"},
		{"name length", edit(func(b []byte) { b[13] = MaxArrayNameLen + 1 }), ErrBadSuperblock, "name length 65 exceeds 64"},
		{"zero array uuid", edit(func(b []byte) { clear(b[16:32]) }), ErrBadSuperblock, "ArrayUUID is zero"},
		{"member state", edit(func(b []byte) { b[sbTableOff+sbEntrySize] = 9 }), ErrBadSuperblock, "member 1 has invalid state 9"},
		{"checkpoint", edit(func(b []byte) { le.PutUint64(b[sbTableOff+3*sbEntrySize+8:], 2<<30) }), ErrBadSuperblock, "member 3 rebuild checkpoint"},
		{"data offset", edit(func(b []byte) { le.PutUint64(b[88:], 4097) }), ErrBadSuperblock, "DataOffset=4097"},
		{"bitmap overlaps data", edit(func(b []byte) { le.PutUint64(b[104:], uint64(DefaultDataOffset)) }), ErrBadSuperblock, "bitmap area"},
	} {
		_, err := UnmarshalSuperblock(tc.b)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want %v with %q", tc.name, err, tc.want, tc.msg)
		}
		if err != nil && strings.Count(err.Error(), "raid:") != 1 {
			t.Errorf("%s: %q repeats the package prefix", tc.name, err)
		}
	}
}

func TestSuperblockMarshalPanicsOnInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func(sb *Superblock)
		msg  string
	}{
		{"table length", func(sb *Superblock) { sb.Members = sb.Members[:3] }, "member table has 3 entries, want Members=4"},
		{"name", func(sb *Superblock) { sb.Name = strings.Repeat("n", 65) }, "Name is 65 bytes"},
		{"nul in name", func(sb *Superblock) { sb.Name = "a\x00b" }, "NUL"},
		{"member uuid", func(sb *Superblock) { sb.MemberUUID = UUID{} }, "MemberUUID is zero"},
		{"checkpoint when in sync", func(sb *Superblock) { sb.Members[0].RebuildOffset = 4096 }, "member 0 is in-sync but has rebuild checkpoint 4096"},
		{"geometry", func(sb *Superblock) { sb.Geometry.Members = 2 }, "raid: superblock: geometry: raid5 needs at least 3 members"},
	} {
		sb := testSuperblock()
		tc.f(&sb)
		err := sb.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: Validate = %v, want %q", tc.name, err, tc.msg)
		}
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: Marshal did not panic", tc.name)
				}
			}()
			sb.Marshal()
		}()
	}
}
