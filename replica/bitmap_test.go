package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// setBlocks lists the set bits of b, for comparing with expectations.
func setBlocks(b *Bitmap) []uint64 {
	var out []uint64
	for i := range b.Blocks() {
		if b.Test(i) {
			out = append(out, i)
		}
	}
	return out
}

func mustBitmap(t testing.TB, deviceSize int64, blockSize int) *Bitmap {
	t.Helper()
	b, err := NewBitmap(deviceSize, blockSize)
	if err != nil {
		t.Fatalf("NewBitmap(%d, %d): %v", deviceSize, blockSize, err)
	}
	return b
}

func TestNewBitmapGeometry(t *testing.T) {
	tests := []struct {
		deviceSize int64
		blockSize  int
		blocks     uint64
		wantErr    string
	}{
		{deviceSize: 1 << 30, blockSize: DefaultBlockSize, blocks: 1 << 18},
		{deviceSize: 1, blockSize: 512, blocks: 1},
		{deviceSize: 4097, blockSize: 4096, blocks: 2},
		{deviceSize: 1 << 40, blockSize: 1 << 30, blocks: 1 << 10},
		{deviceSize: 4096, blockSize: 0, wantErr: "block size 0"},
		{deviceSize: 4096, blockSize: 256, wantErr: "block size 256"},
		{deviceSize: 4096, blockSize: 3000, wantErr: "not a power of two"},
		{deviceSize: 4096, blockSize: 1 << 31, wantErr: "block size"},
		{deviceSize: 0, blockSize: 4096, wantErr: "device size 0"},
		{deviceSize: -1, blockSize: 4096, wantErr: "device size -1"},
	}
	for _, tt := range tests {
		b, err := NewBitmap(tt.deviceSize, tt.blockSize)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("NewBitmap(%d, %d) error = %v, want one containing %q", tt.deviceSize, tt.blockSize, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("NewBitmap(%d, %d): %v", tt.deviceSize, tt.blockSize, err)
			continue
		}
		if b.Blocks() != tt.blocks || b.DeviceSize() != tt.deviceSize || b.BlockSize() != tt.blockSize {
			t.Errorf("NewBitmap(%d, %d): Blocks %d DeviceSize %d BlockSize %d, want %d blocks",
				tt.deviceSize, tt.blockSize, b.Blocks(), b.DeviceSize(), b.BlockSize(), tt.blocks)
		}
	}
}

func TestBitmapSetRange(t *testing.T) {
	const size = 10*4096 + 100 // 11 blocks, the last 100 bytes long
	tests := []struct {
		name        string
		off, length int64
		want        []uint64
		dirtyBytes  int64
	}{
		{"one block aligned", 4096, 4096, []uint64{1}, 4096},
		{"one byte", 5000, 1, []uint64{1}, 4096},
		{"straddles two blocks", 4095, 2, []uint64{0, 1}, 8192},
		{"unaligned 4 KiB touches two", 100, 4096, []uint64{0, 1}, 8192},
		{"last short block", 10 * 4096, 100, []uint64{10}, 100},
		{"clipped past the end", 9 * 4096, 1 << 20, []uint64{9, 10}, 4096 + 100},
		{"whole device", 0, size, []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, size},
		{"negative offset clipped", -4096, 4097, []uint64{0}, 4096},
		{"empty", 4096, 0, nil, 0},
		{"negative length", 4096, -1, nil, 0},
		{"entirely past the end", size, 4096, nil, 0},
		{"entirely before the start", -8192, 4096, nil, 0},
		{"huge length, no overflow", 4096, 1<<63 - 1, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, size - 4096},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustBitmap(t, size, 4096)
			b.SetRange(tt.off, tt.length)
			if got := setBlocks(b); !slices.Equal(got, tt.want) {
				t.Errorf("SetRange(%d, %d) set %v, want %v", tt.off, tt.length, got, tt.want)
			}
			if b.Count() != uint64(len(tt.want)) {
				t.Errorf("Count = %d, want %d", b.Count(), len(tt.want))
			}
			if b.DirtyBytes() != tt.dirtyBytes {
				t.Errorf("DirtyBytes = %d, want %d", b.DirtyBytes(), tt.dirtyBytes)
			}
			b.SetRange(tt.off, tt.length) // idempotent
			if b.Count() != uint64(len(tt.want)) {
				t.Errorf("Count after setting again = %d, want %d", b.Count(), len(tt.want))
			}
		})
	}
}

func TestBitmapClearRange(t *testing.T) {
	const size = 10*4096 + 100
	all := []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	without := func(drop ...uint64) []uint64 {
		return slices.DeleteFunc(slices.Clone(all), func(b uint64) bool { return slices.Contains(drop, b) })
	}
	tests := []struct {
		name        string
		off, length int64
		want        []uint64
	}{
		{"one block aligned", 4096, 4096, without(1)},
		// A resync that copied part of a block has not brought the rest of
		// it in sync: the block stays dirty.
		{"part of one block", 4096, 4095, all},
		{"unaligned start keeps the first block", 4097, 8191, without(2)},
		{"unaligned both ends", 100, 3 * 4096, without(1, 2)},
		{"covers one block between two partial ones", 4095, 4098, without(1)},
		{"short last block reached by the end of device", 10 * 4096, 100, without(10)},
		{"short last block, range past the end", 9 * 4096, 1 << 20, without(9, 10)},
		{"short last block only partly", 10 * 4096, 99, all},
		{"whole device", 0, size, nil},
		{"negative offset clipped", -100, 4096 + 100, without(0)},
		{"empty", 0, 0, all},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustBitmap(t, size, 4096)
			b.SetRange(0, size)
			b.ClearRange(tt.off, tt.length)
			if got := setBlocks(b); !slices.Equal(got, tt.want) {
				t.Errorf("ClearRange(%d, %d) left %v, want %v", tt.off, tt.length, got, tt.want)
			}
			if b.Count() != uint64(len(tt.want)) {
				t.Errorf("Count = %d, want %d", b.Count(), len(tt.want))
			}
		})
	}
}

func TestBitmapNextDirty(t *testing.T) {
	const blocks = 300
	tests := []struct {
		name string
		set  [][2]uint64 // runs [start, start+n)
		from uint64
		want [][2]uint64 // runs found walking from `from`
	}{
		{"empty", nil, 0, nil},
		{"one bit", [][2]uint64{{5, 1}}, 0, [][2]uint64{{5, 1}}},
		{"from inside a run", [][2]uint64{{10, 20}}, 15, [][2]uint64{{15, 15}}},
		{"from past every run", [][2]uint64{{10, 20}}, 30, nil},
		{"run across words", [][2]uint64{{60, 10}}, 0, [][2]uint64{{60, 10}}},
		{"run across many words", [][2]uint64{{1, 250}}, 0, [][2]uint64{{1, 250}}},
		{"run to the last block", [][2]uint64{{200, 100}}, 0, [][2]uint64{{200, 100}}},
		{"only the last block", [][2]uint64{{299, 1}}, 0, [][2]uint64{{299, 1}}},
		{"several runs", [][2]uint64{{0, 1}, {2, 3}, {63, 2}, {128, 64}, {257, 1}}, 0,
			[][2]uint64{{0, 1}, {2, 3}, {63, 2}, {128, 64}, {257, 1}}},
		{"from past the end", [][2]uint64{{0, 300}}, 300, nil},
		{"whole device", [][2]uint64{{0, 300}}, 0, [][2]uint64{{0, 300}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustBitmap(t, blocks*512, 512)
			for _, r := range tt.set {
				b.SetRange(int64(r[0])*512, int64(r[1])*512)
			}
			var got [][2]uint64
			for s, n, ok := b.NextDirty(tt.from); ok; s, n, ok = b.NextDirty(s + n) {
				got = append(got, [2]uint64{s, n})
				if len(got) > blocks {
					t.Fatal("NextDirty does not advance")
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("runs from %d = %v, want %v", tt.from, got, tt.want)
			}
		})
	}
}

// TestBitmapNextDirtyLarge walks a 1 TiB device's bitmap (268M bits) with a
// few dirty runs, including the very last block.
func TestBitmapNextDirtyLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 32 MiB")
	}
	b := mustBitmap(t, 1<<40, 4096)
	want := [][2]uint64{{0, 1}, {1 << 20, 3}, {100_000_000, 70}, {b.Blocks() - 1, 1}}
	for _, r := range want {
		b.SetRange(int64(r[0])<<12, int64(r[1])<<12)
	}
	var got [][2]uint64
	for s, n, ok := b.NextDirty(0); ok; s, n, ok = b.NextDirty(s + n) {
		got = append(got, [2]uint64{s, n})
	}
	if !slices.Equal(got, want) {
		t.Errorf("runs = %v, want %v", got, want)
	}
	if b.DirtyBytes() != 75*4096 {
		t.Errorf("DirtyBytes = %d, want %d", b.DirtyBytes(), 75*4096)
	}
}

// TestBitmapModel applies random operations to a bitmap and to a []bool and
// checks that every query agrees.
func TestBitmapModel(t *testing.T) {
	for _, geo := range []struct {
		size  int64
		block int
	}{{64 * 512, 512}, {1000*512 + 1, 512}, {3*BitmapPageSize*8*4096 + 12345, 4096}} {
		rng := rand.New(rand.NewPCG(uint64(geo.size), 1))
		b := mustBitmap(t, geo.size, geo.block)
		model := make([]bool, b.Blocks())
		bs := int64(geo.block)
		for step := range 3000 {
			off := rng.Int64N(geo.size+2*bs) - bs
			length := rng.Int64N(8*bs) - bs/2
			if rng.IntN(20) == 0 {
				length = rng.Int64N(geo.size)
			}
			end := off + length
			if step%2 == 0 {
				b.SetRange(off, length)
				for i := range model {
					lo, hi := int64(i)*bs, min(int64(i+1)*bs, geo.size)
					if length > 0 && off < hi && end > lo {
						model[i] = true
					}
				}
			} else {
				b.ClearRange(off, length)
				for i := range model {
					lo, hi := int64(i)*bs, min(int64(i+1)*bs, geo.size)
					if length > 0 && off <= lo && end >= hi {
						model[i] = false
					}
				}
			}
			var count uint64
			var dirty int64
			for i, set := range model {
				if set {
					count++
					dirty += min(int64(i+1)*bs, geo.size) - int64(i)*bs
				}
				if b.Test(uint64(i)) != set {
					t.Fatalf("step %d: Test(%d) = %v, want %v", step, i, !set, set)
				}
			}
			if b.Count() != count || b.DirtyBytes() != dirty {
				t.Fatalf("step %d: Count %d DirtyBytes %d, want %d %d", step, b.Count(), b.DirtyBytes(), count, dirty)
			}
			if step%100 == 0 {
				checkRuns(t, b, model)
				roundTrip(t, b)
			}
		}
	}
}

// checkRuns walks b with NextDirty and checks that the runs are maximal and
// cover exactly the set blocks of model.
func checkRuns(t *testing.T, b *Bitmap, model []bool) {
	t.Helper()
	seen := make([]bool, len(model))
	for s, n, ok := b.NextDirty(0); ok; s, n, ok = b.NextDirty(s + n) {
		if n == 0 {
			t.Fatalf("empty run at %d", s)
		}
		if s > 0 && model[s-1] || s+n < uint64(len(model)) && model[s+n] {
			t.Fatalf("run [%d, +%d) is not maximal", s, n)
		}
		for i := s; i < s+n; i++ {
			seen[i] = true
		}
	}
	if !slices.Equal(seen, model) {
		t.Fatalf("runs cover %v, want %v", seen, model)
	}
}

func roundTrip(t *testing.T, b *Bitmap) {
	t.Helper()
	data, err := b.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var r Bitmap
	if err := r.UnmarshalBinary(data); err != nil {
		t.Fatalf("UnmarshalBinary: %v", err)
	}
	if r.Count() != b.Count() || r.DirtyBytes() != b.DirtyBytes() || !slices.Equal(r.words, b.words) ||
		r.DeviceSize() != b.DeviceSize() || r.BlockSize() != b.BlockSize() {
		t.Fatal("bitmap differs after a marshal round trip")
	}
}

func TestBitmapUnion(t *testing.T) {
	a := mustBitmap(t, 1<<20, 4096)
	b := mustBitmap(t, 1<<20, 4096)
	a.SetRange(0, 3*4096)
	b.SetRange(2*4096, 2*4096)
	b.SetRange(200*4096, 4096)
	a.ClearDirtyPages()
	if err := a.Union(b); err != nil {
		t.Fatal(err)
	}
	if got, want := setBlocks(a), []uint64{0, 1, 2, 3, 200}; !slices.Equal(got, want) {
		t.Errorf("union = %v, want %v", got, want)
	}
	if a.Count() != 5 {
		t.Errorf("Count = %d, want 5", a.Count())
	}
	if got := a.DirtyPages(); !slices.Equal(got, []int{0}) {
		t.Errorf("DirtyPages after Union = %v, want [0]", got)
	}
	if err := a.Union(a); err != nil || a.Count() != 5 {
		t.Errorf("Union with itself: %v, Count %d", err, a.Count())
	}

	for _, other := range []*Bitmap{mustBitmap(t, 1<<20+1, 4096), mustBitmap(t, 1<<20, 512)} {
		before := slices.Clone(a.words)
		err := a.Union(other)
		if !errors.Is(err, ErrBitmapGeometry) {
			t.Fatalf("Union with other geometry: %v, want ErrBitmapGeometry", err)
		}
		for _, s := range []string{"1048576 bytes in 4096-byte", describe(other)} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not name %q", err, s)
			}
		}
		if !slices.Equal(before, a.words) {
			t.Error("failed Union changed the bitmap")
		}
	}
}

// describe renders a bitmap's geometry as the error messages do.
func describe(b *Bitmap) string {
	return fmt.Sprintf("%d bytes in %d-byte", b.deviceSize, b.blockSize)
}

func TestBitmapMarshal(t *testing.T) {
	b := mustBitmap(t, 5*4096+7, 4096)
	b.SetRange(4096, 1)
	b.SetRange(5*4096, 7)
	data, err := b.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != bitmapHeaderLen+8 || string(data[:4]) != "BRBM" {
		t.Fatalf("encoding: %d bytes starting %q", len(data), data[:4])
	}
	if data[bitmapHeaderLen] != 0b100010 {
		t.Errorf("payload byte 0 = %08b, want bits 1 and 5", data[bitmapHeaderLen])
	}

	// Into a bitmap of the same geometry: same bits, no changed pages.
	same := mustBitmap(t, 5*4096+7, 4096)
	same.SetRange(0, 4096)
	if err := same.UnmarshalBinary(data); err != nil {
		t.Fatal(err)
	}
	if got := setBlocks(same); !slices.Equal(got, []uint64{1, 5}) || same.Count() != 2 || same.DirtyBytes() != 4096+7 {
		t.Errorf("restored %v Count %d DirtyBytes %d", got, same.Count(), same.DirtyBytes())
	}
	if len(same.DirtyPages()) != 0 {
		t.Errorf("DirtyPages after UnmarshalBinary = %v, want none", same.DirtyPages())
	}
}

func TestBitmapUnmarshalErrors(t *testing.T) {
	b := mustBitmap(t, 100*4096, 4096)
	b.SetRange(0, 50*4096)
	good, _ := b.MarshalBinary()

	edit := func(f func(d []byte) []byte) []byte { return f(slices.Clone(good)) }

	tests := []struct {
		name   string
		data   []byte
		target *Bitmap // nil: a zero Bitmap
		is     error
		want   string
	}{
		{"empty", nil, nil, ErrBitmapCorrupt, "shorter than the 24-byte header"},
		{"truncated header", good[:20], nil, ErrBitmapCorrupt, "shorter"},
		{"bad magic", edit(func(d []byte) []byte { copy(d, "XXXX"); return d }), nil, ErrBitmapCorrupt, "not a bitmap"},
		{"future version", edit(func(d []byte) []byte { d[4] = 2; return reseal(d) }), nil, ErrBitmapCorrupt, "version 2"},
		{"flipped payload bit", edit(func(d []byte) []byte { d[bitmapHeaderLen+9] ^= 4; return d }), nil, ErrBitmapCorrupt, "checksum mismatch"},
		{"flipped device size", edit(func(d []byte) []byte { d[17] ^= 1; return d }), nil, ErrBitmapCorrupt, "checksum mismatch"},
		{"truncated payload", good[:len(good)-8], nil, ErrBitmapCorrupt, "checksum mismatch"},
		{"truncated payload, checksum fixed", edit(func(d []byte) []byte { return reseal(d[:len(d)-8]) }), nil, ErrBitmapCorrupt, "payload of 8 bytes, want 16"},
		{"bad block size", edit(func(d []byte) []byte { binary.LittleEndian.PutUint32(d[12:], 1000); return reseal(d) }), nil, ErrBitmapCorrupt, "block size 1000"},
		{"bits past the end", edit(func(d []byte) []byte { d[len(d)-1] = 0x80; return reseal(d) }), nil, ErrBitmapCorrupt, "past the last of 100 blocks"},
		{"other device size", good, mustBitmap(t, 200*4096, 4096), ErrBitmapGeometry,
			"persisted bitmap is for 409600 bytes in 4096-byte blocks, the volume has 819200 bytes in 4096-byte blocks"},
		{"other block size", good, mustBitmap(t, 100*4096, 512), ErrBitmapGeometry, "in 512-byte blocks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := tt.target
			if target == nil {
				target = new(Bitmap)
			}
			before := *target
			err := target.UnmarshalBinary(tt.data)
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("UnmarshalBinary error = %v, want %v containing %q", err, tt.is, tt.want)
			}
			if target.deviceSize != before.deviceSize || target.count != before.count || len(target.words) != len(before.words) {
				t.Error("failed UnmarshalBinary changed the bitmap")
			}
		})
	}
}

func TestBitmapPages(t *testing.T) {
	const bitsPerPage = BitmapPageSize * 8
	// 3 full pages and a short one; the last block is short too.
	size := int64(3*bitsPerPage+100)*4096 - 1
	b := mustBitmap(t, size, 4096)
	if b.Pages() != 4 {
		t.Fatalf("Pages = %d, want 4", b.Pages())
	}
	if got := b.DirtyPages(); len(got) != 0 {
		t.Fatalf("new bitmap DirtyPages = %v", got)
	}
	b.SetRange(0, 4096)                             // page 0
	b.SetRange(int64(2*bitsPerPage-1)*4096, 2*4096) // pages 1 and 2
	b.SetRange(int64(3*bitsPerPage+99)*4096, 4096)  // the short last block, page 3
	if got := b.DirtyPages(); !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Errorf("DirtyPages = %v, want [0 1 2 3]", got)
	}
	b.ClearDirtyPages()
	b.SetRange(0, 4096) // already set: no change, no dirty page
	if got := b.DirtyPages(); len(got) != 0 {
		t.Errorf("re-setting a set bit dirtied pages %v", got)
	}
	b.ClearRange(int64(2*bitsPerPage)*4096, 4096)
	b.ClearRange(int64(2*bitsPerPage)*4096, 4096) // already clear
	if got := b.DirtyPages(); !slices.Equal(got, []int{2}) {
		t.Errorf("DirtyPages after a clear = %v, want [2]", got)
	}

	// The pages are the marshalled payload, and rebuild the bitmap.
	data, _ := b.MarshalBinary()
	r := mustBitmap(t, size, 4096)
	for i := range b.Pages() {
		p := b.Page(i)
		want := data[bitmapHeaderLen+i*BitmapPageSize : min(bitmapHeaderLen+(i+1)*BitmapPageSize, len(data))]
		if !slices.Equal(p, want) {
			t.Fatalf("Page(%d) differs from the payload", i)
		}
		if err := r.SetPage(i, p); err != nil {
			t.Fatalf("SetPage(%d): %v", i, err)
		}
	}
	if got := len(b.Page(3)); got != 16 { // 100 bits round up to 2 words
		t.Errorf("last page is %d bytes, want 16", got)
	}
	if r.Count() != b.Count() || r.DirtyBytes() != b.DirtyBytes() || !slices.Equal(r.words, b.words) {
		t.Errorf("rebuilt from pages: Count %d, want %d", r.Count(), b.Count())
	}
	if len(r.DirtyPages()) != 0 {
		t.Errorf("SetPage dirtied pages %v", r.DirtyPages())
	}
	// Replacing a page with a clear one lowers the count.
	if err := r.SetPage(0, make([]byte, BitmapPageSize)); err != nil || r.Count() != b.Count()-1 {
		t.Errorf("SetPage(0, zeroes): %v, Count %d, want %d", err, r.Count(), b.Count()-1)
	}

	if err := r.SetPage(4, nil); err == nil {
		t.Error("SetPage past the last page succeeded")
	}
	if err := r.SetPage(1, make([]byte, 10)); !errors.Is(err, ErrBitmapCorrupt) {
		t.Errorf("SetPage with a short page: %v, want ErrBitmapCorrupt", err)
	}
	last := b.Page(3)
	last[len(last)-1] = 0x80
	if err := r.SetPage(3, last); !errors.Is(err, ErrBitmapCorrupt) || !strings.Contains(err.Error(), "past the last") {
		t.Errorf("SetPage with bits past the end: %v", err)
	}
}

func TestBitmapHotPathAllocs(t *testing.T) {
	b := mustBitmap(t, 1<<30, 4096)
	var off int64
	allocs := testing.AllocsPerRun(1000, func() {
		off = (off + 7*4096 + 512) % (1<<30 - 8192)
		b.SetRange(off, 4096)
		b.ClearRange(off, 4096)
		_ = b.Test(uint64(off) >> 12)
		_ = b.Count()
		_ = b.DirtyBytes()
		_, _, _ = b.NextDirty(uint64(off) >> 12)
	})
	if allocs != 0 {
		t.Errorf("hot path allocates %.1f times per write", allocs)
	}
}

// BenchmarkBitmapSetRange4K marks 4 KiB writes at scattered offsets of a
// 1 TiB device: the per-write cost a peer's absence adds.
func BenchmarkBitmapSetRange4K(b *testing.B) {
	for _, bc := range []struct {
		name  string
		shift int64
	}{{"aligned", 0}, {"unaligned", 512}} {
		b.Run(bc.name, func(b *testing.B) {
			bm := mustBitmap(b, 1<<40, 4096)
			offs := scatteredOffsets(1<<40, bc.shift)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				bm.SetRange(offs[i&(len(offs)-1)], 4096)
				i++
			}
		})
	}
}

// BenchmarkBitmapClearRange4K clears 4 KiB blocks, as a resync does after
// copying each one.
func BenchmarkBitmapClearRange4K(b *testing.B) {
	bm := mustBitmap(b, 1<<40, 4096)
	bm.SetRange(0, 1<<40)
	offs := scatteredOffsets(1<<40, 0)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		bm.ClearRange(offs[i&(len(offs)-1)], 4096)
		i++
	}
}

func scatteredOffsets(size, shift int64) []int64 {
	rng := rand.New(rand.NewPCG(1, 2))
	offs := make([]int64, 1<<16)
	for i := range offs {
		offs[i] = rng.Int64N(size/4096-1)*4096 + shift
	}
	return offs
}

// BenchmarkBitmapNextDirty walks the whole bitmap of a 1 TiB device
// (268M bits, 32 MiB): empty, and with 1000 scattered dirty blocks.
func BenchmarkBitmapNextDirty(b *testing.B) {
	for _, dirty := range []int{0, 1000} {
		b.Run(map[int]string{0: "1TiB-empty", 1000: "1TiB-1000-runs"}[dirty], func(b *testing.B) {
			bm := mustBitmap(b, 1<<40, 4096)
			for _, off := range scatteredOffsets(1<<40, 0)[:dirty] {
				bm.SetRange(off, 4096)
			}
			b.SetBytes(int64(len(bm.words) * 8))
			for b.Loop() {
				n := 0
				for s, c, ok := bm.NextDirty(0); ok; s, c, ok = bm.NextDirty(s + c) {
					n++
				}
				if n > dirty {
					b.Fatalf("%d runs for %d dirty blocks", n, dirty)
				}
			}
		})
	}
}
