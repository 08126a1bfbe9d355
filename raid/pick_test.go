package raid

import (
	"slices"
	"sync"
	"testing"

	"github.com/blockrep/blockrep/block/blocktest"
)

func newMirror(t *testing.T, members int) (*Array, []*blocktest.Mem) {
	t.Helper()
	g := Geometry{Level: Level1, Members: members, ChunkSize: 64 << 10, MemberSize: 8 << 20}
	return newArrayOver(t, g, ArrayOptions{}, blocktest.NewMem)
}

func readsPerMember(mems []*blocktest.Mem) []int64 {
	out := make([]int64, len(mems))
	for i, m := range mems {
		out[i] = m.Calls(blocktest.OpRead)
	}
	return out
}

// TestMirrorPickKeepsStreams checks the RAID 1 read choice: a sequential
// stream stays on one copy (its device's readahead serves it), unrelated
// reads spread over every copy, and a stream leaves a copy that is busier
// than the others.
func TestMirrorPickKeepsStreams(t *testing.T) {
	a, mems := newMirror(t, 3)
	buf := make([]byte, 64<<10)
	for i := range int64(32) {
		if err := a.ReadAt(buf, (1+i)*int64(len(buf))); err != nil {
			t.Fatal(err)
		}
	}
	reads := readsPerMember(mems)
	streams := 0
	for _, n := range reads {
		if n == 32 {
			streams++
		}
	}
	if streams != 1 {
		t.Fatalf("32 sequential reads went to members %v, want all on one", reads)
	}

	// Reads that continue nothing: round-robin among equally loaded copies.
	a, mems = newMirror(t, 3)
	for i := range int64(30) {
		if err := a.ReadAt(buf, (1+2*i)*int64(len(buf))); err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range readsPerMember(mems) {
		if n != 10 {
			t.Fatalf("30 non-sequential reads: member %d read %d times (%v), want 10 each", i, n, readsPerMember(mems))
		}
	}

	// The copy a stream is on is two reads busier than another: the
	// stream moves.
	a, mems = newMirror(t, 2)
	if err := a.ReadAt(buf, int64(len(buf))); err != nil {
		t.Fatal(err)
	}
	on := 0
	if mems[1].Calls(blocktest.OpRead) == 1 {
		on = 1
	}
	a.members[on].inflight.Store(2)
	if err := a.ReadAt(buf, 2*int64(len(buf))); err != nil {
		t.Fatal(err)
	}
	a.members[on].inflight.Store(0)
	if got := mems[1-on].Calls(blocktest.OpRead); got != 1 {
		t.Fatalf("stream on member %d with 2 reads in flight: the other member read %d times, want 1", on, got)
	}
}

// offsetLog is a member that records which streams read it.
type offsetLog struct {
	*blocktest.Mem
	mu    sync.Mutex
	reads []int64
}

func (o *offsetLog) ReadAt(p []byte, off int64) error {
	o.mu.Lock()
	o.reads = append(o.reads, off)
	o.mu.Unlock()
	return o.Mem.ReadAt(p, off)
}

// newLoggedArray is an array of g over members that record their reads.
func newLoggedArray(t *testing.T, g Geometry) (*Array, []*offsetLog) {
	t.Helper()
	return newArrayOver(t, g, ArrayOptions{}, func(size int64) *offsetLog {
		return &offsetLog{Mem: blocktest.NewMem(size)}
	})
}

// TestMirrorPickMoreStreamsThanCopies interleaves four sequential streams
// on three copies: after its first read each stream stays on one copy,
// which a single remembered stream per copy (md's) does not achieve.
func TestMirrorPickMoreStreamsThanCopies(t *testing.T) {
	g := Geometry{Level: Level1, Members: 3, ChunkSize: 64 << 10, MemberSize: 8 << 20}
	a, logs := newLoggedArray(t, g)
	const streams, reads, bs = 4, 16, 64 << 10
	base := func(s int) int64 { return int64(s)*2<<20 + bs }
	buf := make([]byte, bs)
	for i := range int64(reads) {
		for s := range streams {
			if err := a.ReadAt(buf, base(s)+i*bs); err != nil {
				t.Fatal(err)
			}
		}
	}
	for s := range streams {
		on := map[int]int{}
		for m, l := range logs {
			for _, off := range l.reads {
				if off > base(s) && off < base(s)+reads*bs {
					on[m]++
				}
			}
		}
		if len(on) != 1 {
			t.Errorf("stream %d: reads after its first by member %v, want one member", s, on)
		}
	}
}

// TestRAID10StreamStaysOnCopies: a sequential reader of RAID 10 stays on
// one copy of each copy group, as on RAID 1, request after request, while
// unrelated reads in between move the round-robin.
func TestRAID10StreamStaysOnCopies(t *testing.T) {
	g := Geometry{Level: Level10, Members: 4, Copies: 2, ChunkSize: 64 << 10, MemberSize: 8 << 20}
	a, logs := newLoggedArray(t, g)
	const streamEnd = 2 << 20 // member offsets below: the stream's
	buf := make([]byte, g.StripeSize())
	other := make([]byte, g.ChunkSize)
	for i := range int64(16) {
		if err := a.ReadAt(buf, (1+i)*g.StripeSize()); err != nil {
			t.Fatal(err)
		}
		for j := range i % 3 {
			if err := a.ReadAt(other, 3*streamEnd+(i*3+j)*g.ChunkSize); err != nil {
				t.Fatal(err)
			}
		}
	}
	for group := range 2 {
		var on []int
		for m := 2 * group; m < 2*group+2; m++ {
			for _, off := range logs[m].reads {
				if off < streamEnd && off > g.ChunkSize {
					on = append(on, m)
				}
			}
		}
		if len(on) != 15 || !slices.Equal(on, slices.Repeat(on[:1], len(on))) {
			t.Errorf("copy group %d: the stream's reads after its first went to members %v, want 15 on one", group, on)
		}
	}
}
