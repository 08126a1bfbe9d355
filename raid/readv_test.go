package raid

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/blockrep/blockrep/block"
	"github.com/blockrep/blockrep/block/blocktest"
)

// vecMem is a member that reads vectors in one call, counting the calls.
type vecMem struct {
	*blocktest.Mem
	vectored atomic.Int64
	inner    atomic.Int64 // Mem reads made by ReadvAt
}

func (v *vecMem) ReadvAt(bufs [][]byte, off int64) error {
	v.vectored.Add(1)
	v.inner.Add(int64(len(bufs)))
	for _, b := range bufs {
		if err := v.Mem.ReadAt(b, off); err != nil {
			return err
		}
		off += int64(len(b))
	}
	return nil
}

// TestReadRuns: a large read of a striped level is one vectored read per
// run of chunks that continue one another on a member (RAID 10 near 4×2:
// one per copy group), and returns the data written.
func TestReadRuns(t *testing.T) {
	for _, tc := range []struct {
		g     Geometry
		calls int64 // member reads, vectored or not, for 1 MiB (16 chunks)
	}{
		{Geometry{Level: Level10, Members: 4, Copies: 2, ChunkSize: 64 << 10, MemberSize: 8 << 20}, 2},
		// Parity chunks break each member's run: stripes 24 to 31, each
		// member holding the parity of one stripe in three (RAID 5 ×3) or
		// two in five (RAID 6 ×5).
		{Geometry{Level: Level5, Members: 3, ChunkSize: 64 << 10, MemberSize: 8 << 20}, 9},
		{Geometry{Level: Level6, Members: 5, ChunkSize: 64 << 10, MemberSize: 8 << 20}, 8},
	} {
		t.Run(tc.g.Level.String(), func(t *testing.T) {
			a, vms := newArrayOver(t, tc.g, ArrayOptions{}, func(size int64) *vecMem {
				return &vecMem{Mem: blocktest.NewMem(size)}
			})
			model := fillArrayRandom(t, a, rand.New(rand.NewPCG(1, 2)))
			calls := func() (n int64) {
				for _, v := range vms {
					n += v.vectored.Load() + v.Calls(blocktest.OpRead) - v.inner.Load()
				}
				return n
			}
			before := calls()
			got := make([]byte, 1<<20)
			off := int64(3 << 20)
			if err := a.ReadAt(got, off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, model[off:off+int64(len(got))]) {
				t.Fatal("1 MiB read returned other data")
			}
			if n := calls() - before; n != tc.calls {
				t.Errorf("1 MiB read took %d member reads, want %d", n, tc.calls)
			}
		})
	}
}

// TestReadRunsFailure: a run whose vectored read fails is read chunk by
// chunk, the failed chunk from redundancy, and the chunk that failed is
// repaired. The bad bytes stay bad until rewritten, so a chunk read that
// merely retried the member would fail again, and only a repair clears
// them.
func TestReadRunsFailure(t *testing.T) {
	g := Geometry{Level: Level10, Members: 4, Copies: 2, ChunkSize: 4096, MemberSize: 64 * 4096}
	a, devs := newTestArray(t, g)
	model := fillArrayRandom(t, a, rand.New(rand.NewPCG(3, 4)))
	// One copy in each copy group (members 0-1 and 2-3) is bad inside a
	// run of a whole-array read.
	bad := []int{0, 3}
	for _, v := range bad {
		devs[v].corrupt(10*4096+100, 1)
	}
	readUntil(t, a, model, "both bad copies read", func() bool {
		return devs[bad[0]].readFaultCount() > 0 && devs[bad[1]].readFaultCount() > 0
	})
	for _, v := range bad {
		if n := devs[v].badCount(); n != 0 {
			t.Errorf("member %d: %d bad bytes left: the failed chunk was not repaired", v, n)
		}
	}
	checkOptimal(t, a)
}

func TestFileReadvAt(t *testing.T) {
	f := newTestFile(t, 1<<20)
	want := pattern(300<<10, 9)
	if err := f.WriteAt(want, 4096, false); err != nil {
		t.Fatal(err)
	}
	bufs := [][]byte{make([]byte, 100<<10), make([]byte, 1), make([]byte, 200<<10-1)}
	if err := f.ReadvAt(bufs, 4096); err != nil {
		t.Fatal(err)
	}
	if got := bytes.Join(bufs, nil); !bytes.Equal(got, want) {
		t.Fatal("ReadvAt returned other data")
	}
	err := f.ReadvAt([][]byte{make([]byte, 4096), make([]byte, 4096)}, 1<<20-4096)
	if !errors.Is(err, block.ErrOutOfRange) {
		t.Fatalf("ReadvAt past the end: %v, want ErrOutOfRange", err)
	}
}
