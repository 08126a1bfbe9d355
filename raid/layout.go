package raid

import (
	"fmt"
	"math"
	"strings"
)

// This file holds the pure geometry of the RAID levels: where each logical
// byte lives on which member. It does no I/O.
//
// Every level cuts each member into chunks of Geometry.ChunkSize bytes. Row s
// of the array (a "stripe") is chunk s of every member, at member offset
// s*ChunkSize; a stripe holds DataMembers data chunks, which are consecutive
// in the logical address space, so logical chunk c lies in stripe
// c/DataMembers as data chunk c%DataMembers.

// Level is a RAID level. The values are md's level numbers; the zero Level is
// not a level.
type Level int

// The supported levels.
const (
	// Level1 is an n-way mirror: every member holds every byte.
	Level1 Level = 1
	// Level10 is a striped mirror in the near layout: each chunk is stored
	// on Copies adjacent members.
	Level10 Level = 10
	// Level5 is striping with one rotating parity chunk per stripe
	// (left-symmetric layout).
	Level5 Level = 5
	// Level6 is striping with two rotating syndrome chunks per stripe, P
	// and Q (left-symmetric layout).
	Level6 Level = 6
)

// String returns the level's name: "raid1", "raid10", "raid5" or "raid6"
// ("Level(n)" for anything else).
func (l Level) String() string {
	switch l {
	case Level1, Level10, Level5, Level6:
		return fmt.Sprintf("raid%d", int(l))
	}
	return fmt.Sprintf("Level(%d)", int(l))
}

// Valid reports whether l is one of the supported levels.
func (l Level) Valid() bool {
	switch l {
	case Level1, Level10, Level5, Level6:
		return true
	}
	return false
}

// ParseLevel parses a level name as String writes it: "raid1", "raid10",
// "raid5" or "raid6", ignoring case.
func ParseLevel(s string) (Level, error) {
	for _, l := range []Level{Level1, Level10, Level5, Level6} {
		if strings.EqualFold(s, l.String()) {
			return l, nil
		}
	}
	return 0, fmt.Errorf("raid: unknown level %q (want raid1, raid10, raid5 or raid6)", s)
}

// MarshalText implements encoding.TextMarshaler with the level's name.
func (l Level) MarshalText() ([]byte, error) {
	if !l.Valid() {
		return nil, fmt.Errorf("raid: cannot marshal invalid level %d", int(l))
	}
	return []byte(l.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler with ParseLevel.
func (l *Level) UnmarshalText(b []byte) error {
	v, err := ParseLevel(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// Chunk size limits checked by Geometry.Validate.
const (
	MinChunkSize int64 = 4 << 10  // 4 KiB
	MaxChunkSize int64 = 16 << 20 // 16 MiB
)

// DefaultCopies is the number of near copies of a RAID 10 array whose
// Geometry.Copies is zero.
const DefaultCopies = 2

// Geometry is the shape of an array: its level, member count, chunk size and
// the usable size of each member. Methods other than Validate assume a valid
// geometry (one that Validate accepts).
type Geometry struct {
	// Level is the RAID level.
	Level Level
	// Members is the number of members (the "raid disks"), failed ones
	// included.
	Members int
	// ChunkSize is the unit of striping in bytes: a power of two from
	// MinChunkSize to MaxChunkSize. RAID 1 stripes nothing, but its reads
	// are still split at chunk boundaries so that a large read can be
	// spread over the mirrors.
	ChunkSize int64
	// Copies is the number of near copies of each chunk in RAID 10; zero
	// means DefaultCopies. It must be zero for the other levels.
	Copies int
	// MemberSize is the usable bytes per member (the data area, after any
	// superblock or bitmap): a positive multiple of ChunkSize.
	MemberSize int64
}

// Validate reports whether g describes a supported array, naming the
// offending field and value:
//
//   - raid1 needs at least 2 members;
//   - raid10 needs Members >= Copies >= 2 and Members a multiple of Copies.
//     This is the simple near layout, where every stripe row holds
//     Members/Copies whole chunks; md also allows a member count that is not
//     a multiple (the copies of a chunk then wrap into the next row), which
//     this package does not;
//   - raid5 needs at least 3 members, raid6 at least 4;
//   - ChunkSize is a power of two from 4 KiB to 16 MiB;
//   - MemberSize is a positive multiple of ChunkSize, and the array's
//     capacity fits in an int64.
func (g Geometry) Validate() error {
	if !g.Level.Valid() {
		return fmt.Errorf("raid: geometry: Level %d is not raid1, raid10, raid5 or raid6", int(g.Level))
	}
	need := map[Level]int{Level1: 2, Level10: 2, Level5: 3, Level6: 4}[g.Level]
	if g.Members < need {
		return fmt.Errorf("raid: geometry: %v needs at least %d members, got Members=%d", g.Level, need, g.Members)
	}
	if g.Level == Level10 {
		c := g.copies()
		if c < 2 {
			return fmt.Errorf("raid: geometry: raid10 needs at least 2 copies, got Copies=%d", g.Copies)
		}
		if c > g.Members {
			return fmt.Errorf("raid: geometry: raid10 with Copies=%d needs at least %d members, got Members=%d", c, c, g.Members)
		}
		if g.Members%c != 0 {
			return fmt.Errorf("raid: geometry: raid10 near layout needs Members a multiple of Copies=%d, got Members=%d", c, g.Members)
		}
	} else if g.Copies != 0 {
		return fmt.Errorf("raid: geometry: Copies applies only to raid10, got Copies=%d for %v", g.Copies, g.Level)
	}
	if g.ChunkSize < MinChunkSize || g.ChunkSize > MaxChunkSize || g.ChunkSize&(g.ChunkSize-1) != 0 {
		return fmt.Errorf("raid: geometry: ChunkSize=%d is not a power of two from %d (4 KiB) to %d (16 MiB)", g.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	if g.MemberSize <= 0 || g.MemberSize%g.ChunkSize != 0 {
		return fmt.Errorf("raid: geometry: MemberSize=%d is not a positive multiple of ChunkSize=%d", g.MemberSize, g.ChunkSize)
	}
	if g.MemberSize > math.MaxInt64/int64(g.Members) {
		return fmt.Errorf("raid: geometry: MemberSize=%d with Members=%d overflows the array size", g.MemberSize, g.Members)
	}
	return nil
}

// copies is Copies with the RAID 10 default applied.
func (g Geometry) copies() int {
	if g.Copies == 0 {
		return DefaultCopies
	}
	return g.Copies
}

// CopyCount returns how many members hold each data byte: Members for raid1,
// the near copies for raid10 and 1 for raid5 and raid6.
func (g Geometry) CopyCount() int {
	switch g.Level {
	case Level1:
		return g.Members
	case Level10:
		return g.copies()
	}
	return 1
}

// DataMembers returns the number of data chunks per stripe: 1 for raid1,
// Members/Copies for raid10, Members-1 for raid5 and Members-2 for raid6.
func (g Geometry) DataMembers() int {
	switch g.Level {
	case Level1:
		return 1
	case Level10:
		return g.Members / g.copies()
	case Level5:
		return g.Members - 1
	case Level6:
		return g.Members - 2
	}
	return 0
}

// StripeSize returns the data bytes per stripe: DataMembers*ChunkSize.
func (g Geometry) StripeSize() int64 {
	return int64(g.DataMembers()) * g.ChunkSize
}

// Stripes returns the number of stripes: MemberSize/ChunkSize.
func (g Geometry) Stripes() int64 {
	return g.MemberSize / g.ChunkSize
}

// Size returns the logical capacity of the array in bytes:
// Stripes*StripeSize.
func (g Geometry) Size() int64 {
	return int64(g.DataMembers()) * g.MemberSize
}

// StripeOf returns the stripe that holds logical byte off, which must be in
// [0, Size).
func (g Geometry) StripeOf(off int64) int64 {
	if off < 0 || off >= g.Size() {
		panic(fmt.Sprintf("raid: StripeOf(%d) outside the array [0, %d)", off, g.Size()))
	}
	return off / g.StripeSize()
}

// parity returns the parity members of stripe s, -1 where absent.
//
// RAID 5 uses md's left-symmetric layout: P = (Members-1) - s%Members. RAID 6
// uses md's left-symmetric layout too: P as for RAID 5 and Q = (P+1)%Members.
func (g Geometry) parity(s int64) (p, q int) {
	switch g.Level {
	case Level5:
		return g.Members - 1 - int(s%int64(g.Members)), -1
	case Level6:
		p = g.Members - 1 - int(s%int64(g.Members))
		return p, (p + 1) % g.Members
	}
	return -1, -1
}

// dataMember returns the (first) member holding data chunk j of stripe s.
//
// RAID 5: (P+1+j)%Members, so the data chunks follow the parity and wrap.
// RAID 6: (P+2+j)%Members, so the data chunks follow Q and wrap.
// RAID 10: j*Copies, the first member of group j. RAID 1: member 0.
func (g Geometry) dataMember(s int64, j int) int {
	switch g.Level {
	case Level10:
		return j * g.copies()
	case Level5:
		p, _ := g.parity(s)
		return (p + 1 + j) % g.Members
	case Level6:
		p, _ := g.parity(s)
		return (p + 2 + j) % g.Members
	}
	return 0
}

// appendCopies appends the members holding data chunk j of stripe s.
func (g Geometry) appendCopies(dst []int, s int64, j int) []int {
	first, n := g.dataMember(s, j), g.CopyCount()
	for i := 0; i < n; i++ {
		dst = append(dst, first+i)
	}
	return dst
}

// StripeInfo describes one stripe: which member holds each of its chunks.
type StripeInfo struct {
	// Stripe is the stripe number.
	Stripe int64
	// Offset is the member offset of the stripe's chunks (the same on
	// every member): Stripe*ChunkSize.
	Offset int64
	// Logical is the logical offset of the stripe's first data byte:
	// Stripe*StripeSize.
	Logical int64
	// Data[j] is the member holding data chunk j (0 <= j < DataMembers);
	// for raid1 and raid10 the first of its copies.
	Data []int
	// Copies[j] lists every member holding data chunk j, for raid1 and
	// raid10; nil for raid5 and raid6.
	Copies [][]int
	// P is the parity member (raid5 and raid6), -1 for the mirrors.
	P int
	// Q is the second syndrome member (raid6), -1 otherwise.
	Q int
}

// Stripe describes stripe s, which must be in [0, Stripes).
//
// Layouts, with M = Members and data chunk j of stripe s:
//
//   - raid1: every member holds the single data chunk.
//   - raid10 (near, M a multiple of Copies = C): data chunk j is on members
//     j*C .. j*C+C-1, so logical chunk c is on group c%(M/C) of row c/(M/C).
//   - raid5 (left-symmetric): P = (M-1) - s%M; data j on (P+1+j)%M.
//   - raid6 (left-symmetric): P = (M-1) - s%M; Q = (P+1)%M; data j on
//     (P+2+j)%M.
func (g Geometry) Stripe(s int64) StripeInfo {
	if s < 0 || s >= g.Stripes() {
		panic(fmt.Sprintf("raid: Stripe(%d) outside the array [0, %d)", s, g.Stripes()))
	}
	k := g.DataMembers()
	info := StripeInfo{
		Stripe:  s,
		Offset:  s * g.ChunkSize,
		Logical: s * g.StripeSize(),
		Data:    make([]int, k),
	}
	info.P, info.Q = g.parity(s)
	mirror := g.Level == Level1 || g.Level == Level10
	if mirror {
		info.Copies = make([][]int, k)
	}
	for j := range k {
		info.Data[j] = g.dataMember(s, j)
		if mirror {
			info.Copies[j] = g.appendCopies(nil, s, j)
		}
	}
	return info
}

// Extent is one contiguous piece of a logical range on one member. It never
// crosses a chunk boundary on the member.
type Extent struct {
	// Member is the member index.
	Member int
	// Offset is the byte offset on the member.
	Offset int64
	// Length is the byte count, positive.
	Length int64
	// Logical is the logical offset of the piece's first byte.
	Logical int64
}

// checkRange panics unless [off, off+n) lies within the array.
func (g Geometry) checkRange(op string, off, n int64) {
	if off < 0 || n < 0 || off > g.Size() || n > g.Size()-off {
		panic(fmt.Sprintf("raid: %s(%d, %d) outside the array [0, %d)", op, off, n, g.Size()))
	}
}

// piece is the part of a logical range within one chunk.
type piece struct {
	stripe int64
	j      int   // data chunk index within the stripe
	within int64 // offset within the chunk
	length int64
}

// nextPiece returns the piece of [off, off+n) that starts at off; n > 0.
func (g Geometry) nextPiece(off, n int64) piece {
	c := off / g.ChunkSize
	k := int64(g.DataMembers())
	within := off % g.ChunkSize
	return piece{
		stripe: c / k,
		j:      int(c % k),
		within: within,
		length: min(n, g.ChunkSize-within),
	}
}

// MapRead maps the logical range [off, off+n) to member extents for a read:
// one extent per piece within one chunk, in logical order. The range must lie
// within [0, Size); n == 0 yields nil.
//
// For raid1 and raid10 each piece has several copies: pick is called with the
// members holding it (in member order; the slice is reused, so pick must not
// keep it) and returns the one to read, which must be one of them. A nil pick
// reads the first copy. For raid5 and raid6 each data byte is on exactly one
// member and pick is not called.
func (g Geometry) MapRead(off, n int64, pick func(copies []int) int) []Extent {
	g.checkRange("MapRead", off, n)
	if n == 0 {
		return nil
	}
	return g.appendRead(make([]Extent, 0, (n+off%g.ChunkSize+g.ChunkSize-1)/g.ChunkSize), off, n, pick)
}

// appendRead is MapRead appending to out, for a caller that reuses it.
func (g Geometry) appendRead(out []Extent, off, n int64, pick func(copies []int) int) []Extent {
	mirror := g.Level == Level1 || g.Level == Level10
	var buf []int
	for n > 0 {
		p := g.nextPiece(off, n)
		m := g.dataMember(p.stripe, p.j)
		if mirror && pick != nil {
			buf = g.appendCopies(buf[:0], p.stripe, p.j)
			chosen := pick(buf)
			if chosen < buf[0] || chosen > buf[len(buf)-1] {
				panic(fmt.Sprintf("raid: MapRead: pick returned member %d, not one of %v", chosen, buf))
			}
			m = chosen
		}
		out = append(out, Extent{
			Member:  m,
			Offset:  p.stripe*g.ChunkSize + p.within,
			Length:  p.length,
			Logical: off,
		})
		off += p.length
		n -= p.length
	}
	return out
}

// StripeWrite is the part of a write that falls in one stripe.
type StripeWrite struct {
	// Stripe is the stripe number.
	Stripe int64
	// Offset is the member offset of the stripe's chunks, which is where
	// the parity chunks P and Q start.
	Offset int64
	// Data lists the pieces to write in logical order. For raid1 and
	// raid10 every copy of a piece is listed, the copies of one piece
	// adjacent and in member order; all share the piece's Logical.
	Data []Extent
	// Chunk[i] is the data chunk index within the stripe (0 <= Chunk[i] <
	// DataMembers) of Data[i]: the index that selects the RAID 6 Q
	// coefficient.
	Chunk []int
	// P is the parity member (raid5 and raid6), -1 for the mirrors.
	P int
	// Q is the second syndrome member (raid6), -1 otherwise.
	Q int
	// ParityOffset and ParityLength are the member range of P and Q that
	// the write changes: the smallest range within the parity chunk that
	// covers every byte offset-within-chunk of the data pieces. Zero for
	// the mirrors.
	ParityOffset, ParityLength int64
	// Full reports that the write covers every data byte of the stripe, so
	// parity can be computed from the new data alone. Otherwise the caller
	// chooses read-modify-write (read old data and parity) or
	// reconstruct-write (read the untouched data chunks). For the mirrors
	// Full is set likewise but means nothing.
	Full bool
}

// MapWrite maps the logical range [off, off+n) to the member writes it
// needs, one StripeWrite per stripe touched, in logical order. The range must
// lie within [0, Size); n == 0 yields nil.
//
// For raid5 and raid6 each StripeWrite lists the data pieces and the parity
// members with the parity range that changes. For raid1 and raid10 it lists
// every copy of every piece and no parity.
func (g Geometry) MapWrite(off, n int64) []StripeWrite {
	g.checkRange("MapWrite", off, n)
	if n == 0 {
		return nil
	}
	ss := g.StripeSize()
	mirror := g.Level == Level1 || g.Level == Level10
	var out []StripeWrite
	var cur *StripeWrite
	var lo, hi int64 // parity hull within the chunk for cur
	end := off + n
	for off < end {
		p := g.nextPiece(off, end-off)
		if cur == nil || cur.Stripe != p.stripe {
			if cur != nil && !mirror {
				cur.ParityOffset, cur.ParityLength = cur.Offset+lo, hi-lo
			}
			start := p.stripe * ss
			pp, qq := g.parity(p.stripe)
			out = append(out, StripeWrite{
				Stripe: p.stripe,
				Offset: p.stripe * g.ChunkSize,
				P:      pp,
				Q:      qq,
				Full:   off <= start && end >= start+ss,
			})
			cur = &out[len(out)-1]
			lo, hi = g.ChunkSize, 0
		}
		lo = min(lo, p.within)
		hi = max(hi, p.within+p.length)
		first, copies := g.dataMember(p.stripe, p.j), 1
		if mirror {
			copies = g.CopyCount()
		}
		for i := range copies {
			cur.Data = append(cur.Data, Extent{
				Member:  first + i,
				Offset:  cur.Offset + p.within,
				Length:  p.length,
				Logical: off,
			})
			cur.Chunk = append(cur.Chunk, p.j)
		}
		off += p.length
	}
	if !mirror {
		cur.ParityOffset, cur.ParityLength = cur.Offset+lo, hi-lo
	}
	return out
}
