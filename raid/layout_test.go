package raid

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

const kib = 1 << 10

func TestLayoutLevelNames(t *testing.T) {
	for _, tc := range []struct {
		l    Level
		name string
	}{{Level1, "raid1"}, {Level10, "raid10"}, {Level5, "raid5"}, {Level6, "raid6"}} {
		if got := tc.l.String(); got != tc.name {
			t.Errorf("Level(%d).String() = %q, want %q", int(tc.l), got, tc.name)
		}
		for _, s := range []string{tc.name, strings.ToUpper(tc.name)} {
			l, err := ParseLevel(s)
			if err != nil || l != tc.l {
				t.Errorf("ParseLevel(%q) = %v, %v; want %v", s, l, err, tc.l)
			}
		}
		b, err := json.Marshal(tc.l)
		if err != nil || string(b) != `"`+tc.name+`"` {
			t.Errorf("json.Marshal(%v) = %s, %v", tc.l, b, err)
		}
		var back Level
		if err := json.Unmarshal(b, &back); err != nil || back != tc.l {
			t.Errorf("json.Unmarshal(%s) = %v, %v", b, back, err)
		}
	}
	for _, s := range []string{"", "raid0", "raid4", "1", "raid 5", "raid55"} {
		if l, err := ParseLevel(s); err == nil {
			t.Errorf("ParseLevel(%q) = %v, want an error", s, l)
		} else if !strings.Contains(err.Error(), fmt.Sprintf("%q", s)) {
			t.Errorf("ParseLevel(%q) error %q does not name the input", s, err)
		}
	}
	if got := Level(0).String(); got != "Level(0)" {
		t.Errorf("Level(0).String() = %q", got)
	}
	if _, err := json.Marshal(Level(3)); err == nil {
		t.Error("json.Marshal(Level(3)) succeeded")
	}
}

func TestGeometryValidate(t *testing.T) {
	good := []Geometry{
		{Level: Level1, Members: 2, ChunkSize: 4 * kib, MemberSize: 4 * kib},
		{Level: Level1, Members: 5, ChunkSize: 16 << 20, MemberSize: 32 << 20},
		{Level: Level10, Members: 2, ChunkSize: 64 * kib, MemberSize: 1 << 30},
		{Level: Level10, Members: 4, ChunkSize: 64 * kib, MemberSize: 1 << 30},
		{Level: Level10, Members: 6, Copies: 3, ChunkSize: 512 * kib, MemberSize: 1 << 30},
		{Level: Level10, Members: 3, Copies: 3, ChunkSize: 512 * kib, MemberSize: 1 << 30},
		{Level: Level5, Members: 3, ChunkSize: 512 * kib, MemberSize: 1 << 40},
		{Level: Level6, Members: 4, ChunkSize: 8 * kib, MemberSize: 8 * kib},
	}
	for _, g := range good {
		if err := g.Validate(); err != nil {
			t.Errorf("%+v: Validate() = %v", g, err)
		}
	}
	ok := Geometry{Level: Level5, Members: 4, ChunkSize: 64 * kib, MemberSize: 1 << 20}
	bad := []struct {
		mod  func(*Geometry)
		want string
	}{
		{func(g *Geometry) { g.Level = 0 }, "Level 0"},
		{func(g *Geometry) { g.Level = 4 }, "Level 4"},
		{func(g *Geometry) { g.Level, g.Members = Level1, 1 }, "raid1 needs at least 2 members, got Members=1"},
		{func(g *Geometry) { g.Level, g.Members = Level10, 1 }, "raid10 needs at least 2 members, got Members=1"},
		{func(g *Geometry) { g.Level, g.Members = Level5, 2 }, "raid5 needs at least 3 members, got Members=2"},
		{func(g *Geometry) { g.Level, g.Members = Level6, 3 }, "raid6 needs at least 4 members, got Members=3"},
		{func(g *Geometry) { g.Members = -1 }, "Members=-1"},
		{func(g *Geometry) { g.Level, g.Copies = Level10, 1 }, "Copies=1"},
		{func(g *Geometry) { g.Level, g.Copies = Level10, -2 }, "Copies=-2"},
		{func(g *Geometry) { g.Level, g.Copies = Level10, 5 }, "Copies=5 needs at least 5 members, got Members=4"},
		{func(g *Geometry) { g.Level, g.Copies = Level10, 3 }, "multiple of Copies=3, got Members=4"},
		{func(g *Geometry) { g.Level, g.Members = Level10, 5 }, "multiple of Copies=2, got Members=5"},
		{func(g *Geometry) { g.Copies = 2 }, "Copies applies only to raid10, got Copies=2 for raid5"},
		{func(g *Geometry) { g.Level, g.Copies = Level1, 2 }, "Copies applies only to raid10"},
		{func(g *Geometry) { g.ChunkSize = 0 }, "ChunkSize=0"},
		{func(g *Geometry) { g.ChunkSize = -4096 }, "ChunkSize=-4096"},
		{func(g *Geometry) { g.ChunkSize = 2 * kib }, "ChunkSize=2048"},
		{func(g *Geometry) { g.ChunkSize = 32 << 20 }, "ChunkSize=33554432"},
		{func(g *Geometry) { g.ChunkSize = 12 * kib }, "ChunkSize=12288 is not a power of two"},
		{func(g *Geometry) { g.MemberSize = 0 }, "MemberSize=0"},
		{func(g *Geometry) { g.MemberSize = -64 * kib }, "MemberSize=-65536"},
		{func(g *Geometry) { g.MemberSize = 100 * kib }, "MemberSize=102400 is not a positive multiple of ChunkSize=65536"},
		{func(g *Geometry) { g.MemberSize = 1 << 62 }, "overflows"},
	}
	for _, tc := range bad {
		g := ok
		tc.mod(&g)
		err := g.Validate()
		if err == nil {
			t.Errorf("%+v: Validate() = nil, want error containing %q", g, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "raid: geometry: ") {
			t.Errorf("%+v: Validate() = %q, want it to contain %q", g, err, tc.want)
		}
	}
}

func TestGeometrySize(t *testing.T) {
	const cs, ms = 64 * kib, 1 << 20
	for _, tc := range []struct {
		g                Geometry
		data, copies     int
		stripeSize, size int64
	}{
		{Geometry{Level: Level1, Members: 3}, 1, 3, cs, ms},
		{Geometry{Level: Level10, Members: 4}, 2, 2, 2 * cs, 2 * ms},
		{Geometry{Level: Level10, Members: 6, Copies: 3}, 2, 3, 2 * cs, 2 * ms},
		{Geometry{Level: Level10, Members: 6}, 3, 2, 3 * cs, 3 * ms},
		{Geometry{Level: Level5, Members: 4}, 3, 1, 3 * cs, 3 * ms},
		{Geometry{Level: Level6, Members: 5}, 3, 1, 3 * cs, 3 * ms},
		{Geometry{Level: Level6, Members: 4}, 2, 1, 2 * cs, 2 * ms},
	} {
		g := tc.g
		g.ChunkSize, g.MemberSize = cs, ms
		if err := g.Validate(); err != nil {
			t.Fatal(err)
		}
		if g.DataMembers() != tc.data || g.CopyCount() != tc.copies || g.StripeSize() != tc.stripeSize || g.Size() != tc.size || g.Stripes() != ms/cs {
			t.Errorf("%+v: DataMembers %d CopyCount %d StripeSize %d Size %d Stripes %d; want %d %d %d %d %d",
				g, g.DataMembers(), g.CopyCount(), g.StripeSize(), g.Size(), g.Stripes(),
				tc.data, tc.copies, tc.stripeSize, tc.size, ms/cs)
		}
		if g.StripeOf(0) != 0 || g.StripeOf(g.StripeSize()-1) != 0 || g.StripeOf(g.StripeSize()) != 1 || g.StripeOf(g.Size()-1) != g.Stripes()-1 {
			t.Errorf("%+v: StripeOf wrong", g)
		}
	}
}

// wantStripe is one row of a pinned layout.
type wantStripe struct {
	data []int
	p, q int
}

func checkPinned(t *testing.T, g Geometry, want []wantStripe) {
	t.Helper()
	if err := g.Validate(); err != nil {
		t.Fatal(err)
	}
	for s, w := range want {
		info := g.Stripe(int64(s))
		if !slices.Equal(info.Data, w.data) || info.P != w.p || info.Q != w.q {
			t.Errorf("%v %d members stripe %d: data %v P %d Q %d; want data %v P %d Q %d",
				g.Level, g.Members, s, info.Data, info.P, info.Q, w.data, w.p, w.q)
		}
		if info.Stripe != int64(s) || info.Offset != int64(s)*g.ChunkSize || info.Logical != int64(s)*g.StripeSize() {
			t.Errorf("stripe %d: Stripe %d Offset %d Logical %d", s, info.Stripe, info.Offset, info.Logical)
		}
		// Each data chunk of the stripe reads from the pinned member.
		for j, m := range w.data {
			ext := g.MapRead(info.Logical+int64(j)*g.ChunkSize, g.ChunkSize, nil)
			if len(ext) != 1 || ext[0].Member != m || ext[0].Offset != info.Offset {
				t.Errorf("stripe %d chunk %d: MapRead = %+v, want member %d offset %d", s, j, ext, m, info.Offset)
			}
		}
	}
}

func TestLayoutRAID5LeftSymmetric(t *testing.T) {
	g := Geometry{Level: Level5, Members: 4, ChunkSize: 64 * kib, MemberSize: 8 * 64 * kib}
	checkPinned(t, g, []wantStripe{
		{[]int{0, 1, 2}, 3, -1},
		{[]int{3, 0, 1}, 2, -1},
		{[]int{2, 3, 0}, 1, -1},
		{[]int{1, 2, 3}, 0, -1},
		{[]int{0, 1, 2}, 3, -1},
		{[]int{3, 0, 1}, 2, -1},
	})
	g3 := Geometry{Level: Level5, Members: 3, ChunkSize: 4 * kib, MemberSize: 4 * 4 * kib}
	checkPinned(t, g3, []wantStripe{
		{[]int{0, 1}, 2, -1},
		{[]int{2, 0}, 1, -1},
		{[]int{1, 2}, 0, -1},
		{[]int{0, 1}, 2, -1},
	})
}

func TestLayoutRAID6LeftSymmetric(t *testing.T) {
	g := Geometry{Level: Level6, Members: 5, ChunkSize: 4 * kib, MemberSize: 10 * 4 * kib}
	checkPinned(t, g, []wantStripe{
		{[]int{1, 2, 3}, 4, 0},
		{[]int{0, 1, 2}, 3, 4},
		{[]int{4, 0, 1}, 2, 3},
		{[]int{3, 4, 0}, 1, 2},
		{[]int{2, 3, 4}, 0, 1},
		{[]int{1, 2, 3}, 4, 0},
	})
	g4 := Geometry{Level: Level6, Members: 4, ChunkSize: 4 * kib, MemberSize: 4 * 4 * kib}
	checkPinned(t, g4, []wantStripe{
		{[]int{1, 2}, 3, 0},
		{[]int{0, 1}, 2, 3},
		{[]int{3, 0}, 1, 2},
		{[]int{2, 3}, 0, 1},
	})
}

func TestLayoutRAID10Near(t *testing.T) {
	const cs = 4 * kib
	g := Geometry{Level: Level10, Members: 4, ChunkSize: cs, MemberSize: 4 * cs}
	checkPinned(t, g, []wantStripe{
		{[]int{0, 2}, -1, -1},
		{[]int{0, 2}, -1, -1},
	})
	// Logical chunk c: members of group c%2, offset (c/2)*cs.
	for c, w := range []struct {
		members []int
		offset  int64
	}{{[]int{0, 1}, 0}, {[]int{2, 3}, 0}, {[]int{0, 1}, cs}, {[]int{2, 3}, cs}, {[]int{0, 1}, 2 * cs}} {
		var seen []int
		ext := g.MapRead(int64(c)*cs, cs, func(copies []int) int {
			seen = slices.Clone(copies)
			return copies[len(copies)-1]
		})
		if !slices.Equal(seen, w.members) || len(ext) != 1 || ext[0].Member != w.members[1] || ext[0].Offset != w.offset {
			t.Errorf("chunk %d: copies %v extents %+v; want copies %v at offset %d", c, seen, ext, w.members, w.offset)
		}
	}
	info := g.Stripe(1)
	if want := [][]int{{0, 1}, {2, 3}}; !slices.EqualFunc(info.Copies, want, slices.Equal) {
		t.Errorf("raid10 stripe 1 copies %v, want %v", info.Copies, want)
	}

	g6 := Geometry{Level: Level10, Members: 6, Copies: 3, ChunkSize: cs, MemberSize: 4 * cs}
	if want := [][]int{{0, 1, 2}, {3, 4, 5}}; !slices.EqualFunc(g6.Stripe(2).Copies, want, slices.Equal) {
		t.Errorf("raid10 6x3 copies %v, want %v", g6.Stripe(2).Copies, want)
	}
	g62 := Geometry{Level: Level10, Members: 6, ChunkSize: cs, MemberSize: 4 * cs}
	checkPinned(t, g62, []wantStripe{{[]int{0, 2, 4}, -1, -1}, {[]int{0, 2, 4}, -1, -1}})
}

func TestLayoutRAID1(t *testing.T) {
	const cs = 4 * kib
	g := Geometry{Level: Level1, Members: 3, ChunkSize: cs, MemberSize: 8 * cs}
	checkPinned(t, g, []wantStripe{{[]int{0}, -1, -1}, {[]int{0}, -1, -1}})
	if want := [][]int{{0, 1, 2}}; !slices.EqualFunc(g.Stripe(5).Copies, want, slices.Equal) {
		t.Errorf("raid1 copies %v", g.Stripe(5).Copies)
	}
	// A round-robin pick spreads a large read over every mirror.
	next := 0
	ext := g.MapRead(cs/2, 5*cs, func(copies []int) int {
		m := copies[next%len(copies)]
		next++
		return m
	})
	want := []Extent{
		{0, cs / 2, cs / 2, cs / 2},
		{1, cs, cs, cs},
		{2, 2 * cs, cs, 2 * cs},
		{0, 3 * cs, cs, 3 * cs},
		{1, 4 * cs, cs, 4 * cs},
		{2, 5 * cs, cs / 2, 5 * cs},
	}
	if !slices.Equal(ext, want) {
		t.Errorf("raid1 round-robin MapRead = %+v\nwant %+v", ext, want)
	}
	ws := g.MapWrite(cs-10, 20)
	if len(ws) != 2 || len(ws[0].Data) != 3 || len(ws[1].Data) != 3 || ws[0].P != -1 || ws[0].Q != -1 {
		t.Fatalf("raid1 MapWrite = %+v", ws)
	}
	for i, e := range ws[0].Data {
		if e != (Extent{i, cs - 10, 10, cs - 10}) {
			t.Errorf("raid1 MapWrite copy %d = %+v", i, e)
		}
	}
}

func TestMapWriteRAID5(t *testing.T) {
	const cs = 4 * kib
	g := Geometry{Level: Level5, Members: 4, ChunkSize: cs, MemberSize: 8 * cs}
	ss := g.StripeSize()

	// Full stripe 1 plus a partial piece of stripe 2 crossing two chunks.
	ws := g.MapWrite(ss, ss+cs+100)
	if len(ws) != 2 {
		t.Fatalf("MapWrite = %+v", ws)
	}
	w := ws[0]
	if !w.Full || w.Stripe != 1 || w.P != 2 || w.Q != -1 || w.Offset != cs || w.ParityOffset != cs || w.ParityLength != cs {
		t.Errorf("stripe 1 write = %+v", w)
	}
	if want := []Extent{{3, cs, cs, ss}, {0, cs, cs, ss + cs}, {1, cs, cs, ss + 2*cs}}; !slices.Equal(w.Data, want) {
		t.Errorf("stripe 1 data %+v, want %+v", w.Data, want)
	}
	if !slices.Equal(w.Chunk, []int{0, 1, 2}) {
		t.Errorf("stripe 1 chunks %v", w.Chunk)
	}
	w = ws[1]
	if w.Full || w.Stripe != 2 || w.P != 1 || w.Offset != 2*cs || w.ParityOffset != 2*cs || w.ParityLength != cs {
		t.Errorf("stripe 2 write = %+v", w)
	}
	if want := []Extent{{2, 2 * cs, cs, 2 * ss}, {3, 2 * cs, 100, 2*ss + cs}}; !slices.Equal(w.Data, want) {
		t.Errorf("stripe 2 data %+v, want %+v", w.Data, want)
	}

	// A small write inside one chunk changes only the matching parity bytes.
	ws = g.MapWrite(2*cs+512, 1024)
	if len(ws) != 1 || ws[0].Full || ws[0].ParityOffset != 512 || ws[0].ParityLength != 1024 ||
		!slices.Equal(ws[0].Data, []Extent{{2, 512, 1024, 2*cs + 512}}) || !slices.Equal(ws[0].Chunk, []int{2}) {
		t.Errorf("small write = %+v", ws)
	}
	// The tail of chunk 0 [100, cs) and the head of chunk 1 [0, 100)
	// together touch all of the parity chunk.
	ws = g.MapWrite(100, cs)
	if len(ws) != 1 || ws[0].Full || ws[0].ParityOffset != 0 || ws[0].ParityLength != cs {
		t.Errorf("straddling write = %+v", ws)
	}
	if g.MapWrite(5, 0) != nil || g.MapRead(5, 0, nil) != nil {
		t.Error("empty range mapped to something")
	}
}

func TestMapRangePanics(t *testing.T) {
	g := Geometry{Level: Level6, Members: 4, ChunkSize: 4 * kib, MemberSize: 16 * kib}
	size := g.Size()
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"MapRead negative off", func() { g.MapRead(-1, 1, nil) }},
		{"MapRead negative n", func() { g.MapRead(0, -1, nil) }},
		{"MapRead past end", func() { g.MapRead(size-1, 2, nil) }},
		{"MapRead overflow", func() { g.MapRead(size-1, math.MaxInt64, nil) }},
		{"MapWrite past end", func() { g.MapWrite(size, 1) }},
		{"Stripe negative", func() { g.Stripe(-1) }},
		{"Stripe past end", func() { g.Stripe(g.Stripes()) }},
		{"StripeOf past end", func() { g.StripeOf(size) }},
		{"bad pick", func() {
			Geometry{Level: Level10, Members: 4, ChunkSize: 4 * kib, MemberSize: 16 * kib}.
				MapRead(4*kib, 1, func([]int) int { return 0 })
		}},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", tc.name)
				}
			}()
			tc.f()
		}()
	}
	// The last byte and the whole array map fine.
	if ext := g.MapRead(size-1, 1, nil); len(ext) != 1 {
		t.Errorf("last byte: %+v", ext)
	}
	if ext := g.MapRead(0, size, nil); int64(len(ext)) != size/g.ChunkSize {
		t.Errorf("whole array: %d extents", len(ext))
	}
}

// randomGeometry returns a valid geometry with few stripes.
func randomGeometry(r *rand.Rand) Geometry {
	g := Geometry{ChunkSize: MinChunkSize << r.IntN(5)}
	switch r.IntN(4) {
	case 0:
		g.Level, g.Members = Level1, 2+r.IntN(4)
	case 1:
		g.Level = Level10
		c := 2 + r.IntN(2)
		if c != 2 || r.IntN(2) == 0 {
			g.Copies = c
		}
		g.Members = c * (1 + r.IntN(4))
	case 2:
		g.Level, g.Members = Level5, 3+r.IntN(8)
	case 3:
		g.Level, g.Members = Level6, 4+r.IntN(8)
	}
	g.MemberSize = g.ChunkSize * int64(1+r.IntN(24))
	return g
}

// randomRange returns a range within [0, size), mostly short.
func randomRange(r *rand.Rand, g Geometry) (off, n int64) {
	size := g.Size()
	switch r.IntN(4) {
	case 0: // chunk-aligned
		off = r.Int64N(size/g.ChunkSize) * g.ChunkSize
		n = r.Int64N((size-off)/g.ChunkSize+1) * g.ChunkSize
	case 1: // anything
		off = r.Int64N(size)
		n = r.Int64N(size - off + 1)
	default: // short, sometimes straddling a boundary
		off = r.Int64N(size)
		n = min(size-off, r.Int64N(2*g.ChunkSize)+1)
	}
	return off, n
}

func TestLayoutProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 0x7a1d))
	for iter := range 400 {
		g := randomGeometry(r)
		if err := g.Validate(); err != nil {
			t.Fatalf("random geometry %+v invalid: %v", g, err)
		}
		name := fmt.Sprintf("#%d %v members=%d copies=%d chunk=%d memberSize=%d",
			iter, g.Level, g.Members, g.Copies, g.ChunkSize, g.MemberSize)
		checkStripes(t, name, g)
		checkChunks(t, name, g)
		for range 30 {
			off, n := randomRange(r, g)
			checkRead(t, name, g, off, n, r)
			checkWrite(t, name, g, off, n)
		}
		if t.Failed() {
			return
		}
	}
}

type slot struct {
	member int
	offset int64
}

// checkStripes checks that every (member, chunk) slot of the array holds
// exactly one thing: a copy of a data chunk, P or Q; and that the members of
// one stripe are distinct.
func checkStripes(t *testing.T, name string, g Geometry) {
	t.Helper()
	used := map[slot]string{}
	mirror := g.Level == Level1 || g.Level == Level10
	for s := range g.Stripes() {
		info := g.Stripe(s)
		var members []int
		if mirror {
			if info.P != -1 || info.Q != -1 || len(info.Copies) != g.DataMembers() {
				t.Errorf("%s stripe %d: %+v", name, s, info)
			}
			for j, cp := range info.Copies {
				if len(cp) != g.CopyCount() || cp[0] != info.Data[j] {
					t.Errorf("%s stripe %d chunk %d: copies %v data %d", name, s, j, cp, info.Data[j])
				}
				members = append(members, cp...)
			}
		} else {
			if info.Copies != nil || len(info.Data) != g.DataMembers() {
				t.Errorf("%s stripe %d: %+v", name, s, info)
			}
			members = append(members, info.Data...)
			members = append(members, info.P)
			if g.Level == Level6 {
				members = append(members, info.Q)
			} else if info.Q != -1 {
				t.Errorf("%s stripe %d: Q %d", name, s, info.Q)
			}
		}
		if len(members) != g.Members {
			t.Errorf("%s stripe %d: %d slots used, want %d: %v", name, s, len(members), g.Members, members)
		}
		for _, m := range members {
			if m < 0 || m >= g.Members {
				t.Fatalf("%s stripe %d: member %d out of range: %v", name, s, m, members)
			}
			k := slot{m, info.Offset}
			if prev, ok := used[k]; ok {
				t.Errorf("%s stripe %d: member %d used twice (%s): %+v", name, s, m, prev, info)
			}
			used[k] = fmt.Sprint("stripe ", s)
		}
	}
	if int64(len(used)) != int64(g.Members)*g.Stripes() {
		t.Errorf("%s: %d slots used, want %d", name, len(used), int64(g.Members)*g.Stripes())
	}
}

// checkChunks checks that every logical chunk maps to its own data slots.
func checkChunks(t *testing.T, name string, g Geometry) {
	t.Helper()
	seen := map[slot]int64{}
	nChunks := g.Size() / g.ChunkSize
	for c := range nChunks {
		var all []int
		ext := g.MapRead(c*g.ChunkSize, g.ChunkSize, func(copies []int) int {
			all = slices.Clone(copies)
			return copies[0]
		})
		if len(ext) != 1 || ext[0].Length != g.ChunkSize || ext[0].Offset%g.ChunkSize != 0 {
			t.Fatalf("%s chunk %d: %+v", name, c, ext)
		}
		if all == nil {
			all = []int{ext[0].Member}
		}
		for _, m := range all {
			k := slot{m, ext[0].Offset}
			if prev, ok := seen[k]; ok {
				t.Errorf("%s: chunks %d and %d both on member %d offset %d", name, prev, c, m, ext[0].Offset)
			}
			seen[k] = c
		}
	}
	if want := nChunks * int64(g.CopyCount()); int64(len(seen)) != want {
		t.Errorf("%s: %d data slots, want %d", name, len(seen), want)
	}
}

// logicalOf inverts the layout: the logical offset of byte off on member m,
// or -1 when that byte holds parity.
func logicalOf(g Geometry, m int, off int64) int64 {
	s := off / g.ChunkSize
	info := g.Stripe(s)
	for j := range info.Data {
		hit := info.Data[j] == m
		if info.Copies != nil {
			hit = slices.Contains(info.Copies[j], m)
		}
		if hit {
			return info.Logical + int64(j)*g.ChunkSize + off%g.ChunkSize
		}
	}
	return -1
}

func checkRead(t *testing.T, name string, g Geometry, off, n int64, r *rand.Rand) {
	t.Helper()
	mirror := g.Level == Level1 || g.Level == Level10
	picks := 0
	ext := g.MapRead(off, n, func(copies []int) int {
		picks++
		if !mirror {
			t.Errorf("%s: pick called for %v", name, g.Level)
		}
		if len(copies) != g.CopyCount() || !slices.IsSorted(copies) || len(slices.Compact(slices.Clone(copies))) != len(copies) {
			t.Errorf("%s: copies %v not %d distinct members", name, copies, g.CopyCount())
		}
		return copies[r.IntN(len(copies))]
	})
	if mirror && picks != len(ext) {
		t.Errorf("%s: %d picks for %d extents", name, picks, len(ext))
	}
	pos := off
	for i, e := range ext {
		if e.Logical != pos || e.Length <= 0 {
			t.Fatalf("%s MapRead(%d, %d) extent %d = %+v, want Logical %d", name, off, n, i, e, pos)
		}
		if e.Member < 0 || e.Member >= g.Members || e.Offset < 0 || e.Offset+e.Length > g.MemberSize {
			t.Errorf("%s MapRead(%d, %d) extent %d = %+v outside the members", name, off, n, i, e)
		}
		if e.Offset/g.ChunkSize != (e.Offset+e.Length-1)/g.ChunkSize {
			t.Errorf("%s MapRead(%d, %d) extent %d = %+v crosses a chunk boundary", name, off, n, i, e)
		}
		if l := logicalOf(g, e.Member, e.Offset); l != e.Logical {
			t.Errorf("%s MapRead(%d, %d) extent %d = %+v: member byte maps back to logical %d", name, off, n, i, e, l)
		}
		pos += e.Length
	}
	if pos != off+n {
		t.Errorf("%s MapRead(%d, %d) covers up to %d", name, off, n, pos)
	}
}

func checkWrite(t *testing.T, name string, g Geometry, off, n int64) {
	t.Helper()
	mirror := g.Level == Level1 || g.Level == Level10
	reads := g.MapRead(off, n, nil)
	ws := g.MapWrite(off, n)
	var flat []Extent
	prev := int64(-1)
	for _, w := range ws {
		if w.Stripe <= prev {
			t.Errorf("%s MapWrite(%d, %d): stripe %d after %d", name, off, n, w.Stripe, prev)
		}
		prev = w.Stripe
		info := g.Stripe(w.Stripe)
		if w.Offset != info.Offset || w.P != info.P || w.Q != info.Q || len(w.Chunk) != len(w.Data) {
			t.Errorf("%s MapWrite(%d, %d) stripe %d: %+v vs %+v", name, off, n, w.Stripe, w, info)
		}
		start, end := info.Logical, info.Logical+g.StripeSize()
		if full := off <= start && off+n >= end; w.Full != full {
			t.Errorf("%s MapWrite(%d, %d) stripe %d: Full %v, want %v", name, off, n, w.Stripe, w.Full, full)
		}
		lo, hi := g.ChunkSize, int64(0)
		step := 1
		if mirror {
			step = g.CopyCount()
		}
		if len(w.Data)%step != 0 || len(w.Data) == 0 {
			t.Fatalf("%s MapWrite(%d, %d) stripe %d: %d data extents", name, off, n, w.Stripe, len(w.Data))
		}
		for i := 0; i < len(w.Data); i += step {
			group := w.Data[i : i+step]
			e := group[0]
			if mirror {
				var ms []int
				for _, c := range group {
					if c.Offset != e.Offset || c.Length != e.Length || c.Logical != e.Logical {
						t.Errorf("%s MapWrite: copies differ: %+v", name, group)
					}
					ms = append(ms, c.Member)
				}
				if !slices.Equal(ms, info.Copies[w.Chunk[i]]) {
					t.Errorf("%s MapWrite: copies on %v, want %v", name, ms, info.Copies[w.Chunk[i]])
				}
			} else if info.Data[w.Chunk[i]] != e.Member {
				t.Errorf("%s MapWrite: chunk %d on member %d, stripe says %d", name, w.Chunk[i], e.Member, info.Data[w.Chunk[i]])
			}
			if e.Offset/g.ChunkSize != w.Stripe {
				t.Errorf("%s MapWrite: extent %+v outside stripe %d", name, e, w.Stripe)
			}
			lo, hi = min(lo, e.Offset%g.ChunkSize), max(hi, e.Offset%g.ChunkSize+e.Length)
			flat = append(flat, e)
		}
		if mirror {
			if w.ParityOffset != 0 || w.ParityLength != 0 {
				t.Errorf("%s MapWrite: mirror parity range %d+%d", name, w.ParityOffset, w.ParityLength)
			}
		} else if w.ParityOffset != w.Offset+lo || w.ParityLength != hi-lo || (w.Full && w.ParityLength != g.ChunkSize) {
			t.Errorf("%s MapWrite(%d, %d) stripe %d: parity %d+%d, want %d+%d", name, off, n, w.Stripe,
				w.ParityOffset, w.ParityLength, w.Offset+lo, hi-lo)
		}
	}
	if !slices.Equal(flat, reads) {
		t.Errorf("%s MapWrite(%d, %d) pieces %+v\nMapRead %+v", name, off, n, flat, reads)
	}
}
