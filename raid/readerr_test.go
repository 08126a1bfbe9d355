package raid

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/blockrep/blockrep/block"
	"github.com/blockrep/blockrep/block/blocktest"
)

// TestCorrectedReadErrorLimit: a member whose read errors keep being
// repaired is failed once it passes the limit (md's
// max_corrected_read_errors); the count halves every hour, and a
// replacement device starts from zero.
func TestCorrectedReadErrorLimit(t *testing.T) {
	g := Geometry{Level: Level1, Members: 2, ChunkSize: 4096, MemberSize: 64 * 4096}
	a, devs := newTestArray(t, g)
	a.maxCorrected = 3
	clock := time.Unix(1_000_000, 0)
	a.now = func() time.Time { return clock }
	fillArrayRandom(t, a, rand.New(rand.NewPCG(1, 2)))
	// readErrorOn makes member 0 fail one read and reads until the
	// array has read from it (the mirror pick alternates).
	readErrorOn := func(k int) {
		t.Helper()
		before := devs[0].readFaultCount()
		devs[0].failReadOnce(int64(k)*4096, 1)
		buf := make([]byte, 4096)
		for try := 0; devs[0].readFaultCount() == before; try++ {
			if try > 100 {
				t.Fatal("member 0 never read")
			}
			if err := a.ReadAt(buf, int64(k)*4096); err != nil {
				t.Fatal(err)
			}
		}
		devs[0].clearOnce()
	}
	for k := range 3 {
		readErrorOn(k)
	}
	if st := a.Status().Members[0]; st.State != InSync || st.CorrectedReadErrors != 3 {
		t.Fatalf("after 3 corrected read errors: %+v, want in sync with 3", st)
	}
	// Two hours later the count is 3>>2 = 0; three more errors stay at
	// the limit.
	clock = clock.Add(2 * time.Hour)
	if n := a.Status().Members[0].CorrectedReadErrors; n != 0 {
		t.Fatalf("after two hours: %d corrected read errors, want 0", n)
	}
	for k := range 3 {
		readErrorOn(10 + k)
	}
	if st := a.Status().Members[0]; st.State != InSync {
		t.Fatalf("3 errors after the decay: %+v, want in sync", st)
	}
	readErrorOn(20)
	st := a.Status().Members[0]
	if st.State != Faulty || st.Err == nil || !strings.Contains(st.Err.Error(), "4 read errors corrected") {
		t.Fatalf("past the limit: %+v, want faulty naming the count", st)
	}
	if !errors.Is(st.Err, errInjected) {
		t.Errorf("the member's error %v does not wrap the last read error", st.Err)
	}

	// A replacement starts from zero.
	if err := a.Replace(0, newFaultDev(g.MemberSize)); err != nil {
		t.Fatal(err)
	}
	if n := a.Status().Members[0].CorrectedReadErrors; n != 0 {
		t.Fatalf("replacement: %d corrected read errors, want 0", n)
	}
}

// shrunkDev is a member whose file was truncated at limit under the array:
// reads past it end early.
type shrunkDev struct {
	*blocktest.Mem
	limit int64
}

func (s *shrunkDev) ReadAt(p []byte, off int64) error {
	if off+int64(len(p)) > s.limit {
		return fmt.Errorf("read at %d: %w", off, io.ErrUnexpectedEOF)
	}
	return s.Mem.ReadAt(p, off)
}

// TestShortMemberFailed: a member whose reads end before its data (a file
// truncated under the array) is failed, not repaired: writing the chunk
// back would leave holes before it that read as zeros.
func TestShortMemberFailed(t *testing.T) {
	g := Geometry{Level: Level1, Members: 2, ChunkSize: 4096, MemberSize: 64 * 4096}
	short := &shrunkDev{Mem: blocktest.NewMem(g.MemberSize), limit: g.MemberSize}
	other := blocktest.NewMem(g.MemberSize)
	a, err := NewArray(g, []block.Device{short, other}, ArrayOptions{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	model := fillArrayRandom(t, a, rand.New(rand.NewPCG(5, 6)))
	short.limit = 8 * 4096
	readUntil(t, a, model, "member 0 failed", func() bool { return a.Status().Members[0].State != InSync })
	st := a.Status().Members[0]
	if st.State != Faulty || !errors.Is(st.Err, io.ErrUnexpectedEOF) || st.CorrectedReadErrors != 0 {
		t.Fatalf("truncated member: %+v, want faulty with the short read and nothing repaired", st)
	}
}
