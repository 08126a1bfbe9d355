package raid

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/blockrep/blockrep/block"
	"github.com/blockrep/blockrep/block/blocktest"
)

var errInjected = errors.New("injected I/O error")

// faultDev is a block.Device over a blocktest.Mem with fault injection:
// bad bytes (reads overlapping them fail until the bytes are rewritten),
// one-shot read failures of a range, failing writes, and death (every
// operation fails) now or after a number of operations.
type faultDev struct {
	*blocktest.Mem

	mu         sync.Mutex
	bad        map[int64]bool // bad bytes: reads fail until written
	onceFail   [][2]int64     // ranges whose next overlapping read fails
	failWrites bool
	dead       bool
	failAfter  int // > 0: operations left before death
	readFaults int // reads failed so far
}

func newFaultDev(size int64) *faultDev {
	return &faultDev{Mem: blocktest.NewMem(size), bad: map[int64]bool{}}
}

// tick counts an operation and reports whether the device is dead.
func (f *faultDev) tick() bool {
	if f.failAfter > 0 {
		f.failAfter--
		if f.failAfter == 0 {
			f.dead = true
		}
	}
	return f.dead
}

func (f *faultDev) kill()                { f.mu.Lock(); f.dead = true; f.mu.Unlock() }
func (f *faultDev) killAfter(n int)      { f.mu.Lock(); f.failAfter = n; f.mu.Unlock() }
func (f *faultDev) setFailWrites(b bool) { f.mu.Lock(); f.failWrites = b; f.mu.Unlock() }
func (f *faultDev) failReadOnce(off, n int64) {
	f.mu.Lock()
	f.onceFail = append(f.onceFail, [2]int64{off, n})
	f.mu.Unlock()
}
func (f *faultDev) clearOnce()              { f.mu.Lock(); f.onceFail = nil; f.mu.Unlock() }
func (f *faultDev) readFaultCount() int     { f.mu.Lock(); defer f.mu.Unlock(); return f.readFaults }
func (f *faultDev) badCount() int           { f.mu.Lock(); defer f.mu.Unlock(); return len(f.bad) }
func (f *faultDev) raw(off, n int64) []byte { return f.Mem.Bytes()[off : off+n] }

// corrupt makes [off, off+n) bad sectors: garbage that fails to read until
// rewritten.
func (f *faultDev) corrupt(off, n int64) {
	junk := bytes.Repeat([]byte{0xA5}, int(n))
	if err := f.Mem.WriteAt(junk, off, false); err != nil {
		panic(err)
	}
	f.mu.Lock()
	for i := off; i < off+n; i++ {
		f.bad[i] = true
	}
	f.mu.Unlock()
}

func (f *faultDev) ReadAt(p []byte, off int64) error {
	f.mu.Lock()
	fail := f.tick()
	end := off + int64(len(p))
	for i := 0; !fail && i < len(f.onceFail); i++ {
		r := f.onceFail[i]
		if r[0] < end && off < r[0]+r[1] {
			f.onceFail = append(f.onceFail[:i], f.onceFail[i+1:]...)
			fail = true
		}
	}
	for b := off; !fail && len(f.bad) > 0 && b < end; b++ {
		fail = f.bad[b]
	}
	if fail {
		f.readFaults++
	}
	f.mu.Unlock()
	if fail {
		return fmt.Errorf("faultDev read at %d: %w", off, errInjected)
	}
	return f.Mem.ReadAt(p, off)
}

func (f *faultDev) writeOp(off, n int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tick() || f.failWrites {
		return fmt.Errorf("faultDev write at %d: %w", off, errInjected)
	}
	for i := off; len(f.bad) > 0 && i < off+n; i++ {
		delete(f.bad, i)
	}
	return nil
}

func (f *faultDev) WriteAt(p []byte, off int64, fua bool) error {
	if err := f.writeOp(off, int64(len(p))); err != nil {
		return err
	}
	return f.Mem.WriteAt(p, off, fua)
}

func (f *faultDev) Flush() error {
	if err := f.writeOp(0, 0); err != nil {
		return err
	}
	return f.Mem.Flush()
}

func (f *faultDev) Trim(off, n int64) error {
	if err := f.writeOp(off, n); err != nil {
		return err
	}
	return f.Mem.Trim(off, n)
}

func (f *faultDev) WriteZeroes(off, n int64, flags block.ZeroFlags) error {
	if err := f.writeOp(off, n); err != nil {
		return err
	}
	return f.Mem.WriteZeroes(off, n, flags)
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

type arrayConfig struct {
	name string
	g    Geometry
}

func arrayConfigs(memberChunks int64) []arrayConfig {
	var out []arrayConfig
	add := func(l Level, members, copies int) {
		g := Geometry{Level: l, Members: members, ChunkSize: 4096, Copies: copies, MemberSize: memberChunks * 4096}
		out = append(out, arrayConfig{fmt.Sprintf("%v-%d", l, members), g})
	}
	add(Level1, 2, 0)
	add(Level1, 3, 0)
	add(Level10, 4, 2)
	for n := 3; n <= 5; n++ {
		add(Level5, n, 0)
	}
	for n := 4; n <= 6; n++ {
		add(Level6, n, 0)
	}
	return out
}

// newArrayOver builds an array of g over members made by newDev (each of
// g.MemberSize bytes), logging to quietLog unless opts has a logger, and
// returns the members too.
func newArrayOver[D block.Device](tb testing.TB, g Geometry, opts ArrayOptions, newDev func(size int64) D) (*Array, []D) {
	tb.Helper()
	devs := make([]D, g.Members)
	members := make([]block.Device, g.Members)
	for i := range devs {
		devs[i] = newDev(g.MemberSize)
		members[i] = devs[i]
	}
	if opts.Logger == nil {
		opts.Logger = quietLog
	}
	a, err := NewArray(g, members, opts)
	if err != nil {
		tb.Fatal(err)
	}
	return a, devs
}

// newTestArray builds an array of g over fault-injecting members, faulty
// ones failed from the start.
func newTestArray(t *testing.T, g Geometry, faulty ...int) (*Array, []*faultDev) {
	t.Helper()
	return newArrayOver(t, g, ArrayOptions{Name: "test", Faulty: faulty}, newFaultDev)
}

// canLose reports whether the array survives losing member i on top of the
// faulty ones.
func canLose(g Geometry, faulty map[int]bool, i int) bool {
	if faulty[i] {
		return false
	}
	switch g.Level {
	case Level5:
		return len(faulty) < 1
	case Level6:
		return len(faulty) < 2
	}
	c := g.CopyCount()
	first := i - i%c
	for j := first; j < first+c; j++ {
		if j != i && !faulty[j] {
			return true
		}
	}
	return false
}

func randRange(r *rand.Rand, g Geometry) (int64, int64) {
	size := g.Size()
	var off, n int64
	switch r.IntN(4) {
	case 0: // whole stripes
		ss := g.StripeSize()
		off = r.Int64N(g.Stripes()) * ss
		n = min(size-off, ss*(1+r.Int64N(2)))
	case 1: // small
		off = r.Int64N(size)
		n = 1 + r.Int64N(min(size-off, 600))
	default: // anything up to a few stripes
		off = r.Int64N(size)
		n = 1 + r.Int64N(min(size-off, 3*g.StripeSize()))
	}
	return off, n
}

// TestArrayProperty drives every level with random writes and reads against
// a model, failing members at random points up to the level's tolerance and
// then beyond it.
func TestArrayProperty(t *testing.T) {
	for _, cfg := range arrayConfigs(12) {
		for seed := uint64(1); seed <= 4; seed++ {
			t.Run(fmt.Sprintf("%s/seed%d", cfg.name, seed), func(t *testing.T) {
				testArrayProperty(t, cfg.g, seed)
			})
		}
	}
}

func testArrayProperty(t *testing.T, g Geometry, seed uint64) {
	r := rand.New(rand.NewPCG(seed, uint64(g.Level)*100+uint64(g.Members)))
	a, devs := newTestArray(t, g)
	size := g.Size()
	model := make([]byte, size)
	known := make([]bool, size) // false: a failed write left it unknown
	for i := range known {
		known[i] = true
	}
	dead := map[int]bool{} // members we broke
	var onceDev *faultDev  // member with a pending one-shot read fault
	checkRead := func(op int, off, n int64, beyond bool) bool {
		got := make([]byte, n)
		err := a.ReadAt(got, off)
		if err != nil {
			if beyond && errors.Is(err, ErrTooManyFailed) {
				return false
			}
			t.Fatalf("op %d: read %d+%d: %v (status %+v)", op, off, n, err, a.Status())
		}
		for i := range n {
			if known[off+i] && got[i] != model[off+i] {
				t.Fatalf("op %d: read %d+%d: byte %d is %#x, want %#x", op, off, n, off+i, got[i], model[off+i])
			}
		}
		return true
	}
	write := func(op int, off, n int64, beyond bool) {
		p := make([]byte, n)
		fillRandom(r, p)
		err := a.WriteAt(p, off, r.IntN(8) == 0)
		if err != nil {
			if !beyond || !errors.Is(err, ErrTooManyFailed) {
				t.Fatalf("op %d: write %d+%d: %v (status %+v)", op, off, n, err, a.Status())
			}
			for i := off; i < off+n; i++ {
				known[i] = false
			}
			return
		}
		copy(model[off:], p)
		for i := off; i < off+n; i++ {
			known[i] = true
		}
	}
	breakMember := func(i int) {
		dead[i] = true
		switch r.IntN(3) {
		case 0:
			devs[i].kill()
		case 1:
			devs[i].setFailWrites(true)
		default:
			devs[i].killAfter(1 + r.IntN(20))
		}
	}

	// Within the tolerance.
	tolerance := map[Level]int{Level1: g.Members - 1, Level10: g.Members / g.CopyCount(), Level5: 1, Level6: 2}[g.Level]
	for op := range 400 {
		switch x := r.IntN(100); {
		case x < 45:
			off, n := randRange(r, g)
			write(op, off, n, false)
		case x < 88:
			off, n := randRange(r, g)
			checkRead(op, off, n, false)
		case x < 94:
			// A one-shot read fault, only while the array has a spare
			// redundancy for it.
			if len(a.faultyMembers()) == 0 && len(dead) == 0 && onceDev == nil {
				i := r.IntN(g.Members)
				off := r.Int64N(g.MemberSize)
				onceDev = devs[i]
				onceDev.failReadOnce(off, 1+r.Int64N(min(g.MemberSize-off, 8192)))
			}
		default:
			if len(dead) < tolerance {
				i := r.IntN(g.Members)
				if canLose(g, dead, i) {
					if onceDev != nil {
						onceDev.clearOnce()
						onceDev = nil
					}
					breakMember(i)
				}
			}
		}
		if h := a.Status().Health; h == HealthFailed {
			t.Fatalf("op %d: array failed within tolerance: %+v", op, a.Status())
		}
	}
	checkRead(-1, 0, size, false)

	// Beyond the tolerance: break members until the array cannot hold
	// everything, then check that nothing wrong is returned.
	if onceDev != nil {
		onceDev.clearOnce()
	}
	for {
		progress := false
		for i := range g.Members {
			if !dead[i] && !canLose(g, dead, i) {
				breakMember(i)
				progress = true
				break
			}
		}
		if !progress {
			// every member can still be lost: lose one anyway
			for i := range g.Members {
				if !dead[i] {
					breakMember(i)
					break
				}
			}
		}
		if !wouldSurvive(g, dead) {
			break
		}
	}
	var fails, oks int
	for op := range 300 {
		off, n := randRange(r, g)
		if r.IntN(2) == 0 {
			write(op, off, n, true)
		} else if checkRead(op, off, n, true) {
			oks++
		} else {
			fails++
		}
	}
	// Reads of single small pieces, one per chunk, to see both outcomes.
	for off := int64(0); off < size; off += g.ChunkSize {
		if checkRead(-2, off, 16, true) {
			oks++
		} else {
			fails++
		}
	}
	if fails == 0 {
		t.Errorf("beyond tolerance: no read failed with ErrTooManyFailed (status %+v)", a.Status())
	}
	if g.Level != Level1 && oks == 0 {
		t.Errorf("beyond tolerance: no data served at all")
	}
	if h := a.Status().Health; h != HealthFailed {
		t.Errorf("beyond tolerance: health %v, want failed (%+v)", h, a.Status())
	}
}

// wouldSurvive reports whether an array with the dead members still holds
// all data.
func wouldSurvive(g Geometry, dead map[int]bool) bool {
	switch g.Level {
	case Level5:
		return len(dead) <= 1
	case Level6:
		return len(dead) <= 2
	}
	c := g.CopyCount()
	for first := 0; first < g.Members; first += c {
		all := true
		for i := first; i < first+c; i++ {
			all = all && dead[i]
		}
		if all {
			return false
		}
	}
	return true
}

func fillArrayRandom(t *testing.T, a *Array, r *rand.Rand) []byte {
	t.Helper()
	model := make([]byte, a.Size())
	fillRandom(r, model)
	if err := a.WriteAt(model, 0, false); err != nil {
		t.Fatal(err)
	}
	return model
}

// readUntil reads the whole array, checking it against model, until done
// holds, failing after 20 reads. Mirrors pick copies by load and
// round-robin: one-byte reads in between shift the round-robin, so that
// every copy is asked in turn.
func readUntil(t *testing.T, a *Array, model []byte, what string, done func() bool) {
	t.Helper()
	got := make([]byte, a.Size())
	for try := 0; !done(); try++ {
		if try == 20 {
			t.Fatalf("%d whole reads and not %s", try, what)
		}
		for range try%2 + 1 {
			if err := a.ReadAt(got[:1], 0); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, model) {
			t.Fatal("read returned wrong data")
		}
	}
}

// TestArrayReadErrorRepair: a bad range on a member is served from
// redundancy and rewritten with the good data; the member stays in sync.
func TestArrayReadErrorRepair(t *testing.T) {
	for _, cfg := range arrayConfigs(8) {
		t.Run(cfg.name, func(t *testing.T) {
			g := cfg.g
			a, devs := newTestArray(t, g)
			model := fillArrayRandom(t, a, rand.New(rand.NewPCG(1, 2)))
			const victim = 1
			// A stripe where the victim holds data, not parity.
			s := int64(1)
			for ; g.Stripe(s).P == victim || g.Stripe(s).Q == victim; s++ {
			}
			off, n := s*g.ChunkSize+100, int64(3000)
			good := bytes.Clone(devs[victim].raw(off, n))
			devs[victim].corrupt(off, n)
			readUntil(t, a, model, "the bad range read", func() bool { return devs[victim].readFaultCount() > 0 })
			if st := a.Status(); st.Members[victim].State != InSync || st.Health != HealthOptimal {
				t.Fatalf("after repair: %+v", st)
			}
			// Only the part that was read is repaired (all of it here: the
			// reads covered the whole array).
			if devs[victim].badCount() != 0 {
				t.Fatalf("%d bad bytes left", devs[victim].badCount())
			}
			if !bytes.Equal(devs[victim].raw(off, n), good) {
				t.Fatal("member did not receive the good data again")
			}
			got := make([]byte, a.Size())
			if err := a.ReadAt(got, 0); err != nil || !bytes.Equal(got, model) {
				t.Fatalf("reread: %v", err)
			}
		})
	}
}

// TestArrayReadErrorRepairFails: when the member refuses the repair write it
// is failed, and the read still succeeds.
func TestArrayReadErrorRepairFails(t *testing.T) {
	for _, cfg := range arrayConfigs(8) {
		t.Run(cfg.name, func(t *testing.T) {
			g := cfg.g
			a, devs := newTestArray(t, g)
			model := fillArrayRandom(t, a, rand.New(rand.NewPCG(3, 4)))
			const victim = 0
			devs[victim].corrupt(0, g.MemberSize)
			devs[victim].setFailWrites(true)
			readUntil(t, a, model, "the victim failed", func() bool { return a.Status().Members[victim].State != InSync })
			st := a.Status()
			if st.Members[victim].State != Faulty || st.Health != HealthDegraded || st.Members[victim].Err == nil {
				t.Fatalf("status %+v", st)
			}
		})
	}
}

// TestArrayTooManyFailed: the error wraps ErrTooManyFailed and names the
// level and the failed members; reachable data is still served.
func TestArrayTooManyFailed(t *testing.T) {
	g := Geometry{Level: Level5, Members: 4, ChunkSize: 4096, MemberSize: 8 * 4096}
	a, devs := newTestArray(t, g, 1)
	model := fillArrayRandom(t, a, rand.New(rand.NewPCG(5, 6)))
	devs[2].kill()
	buf := make([]byte, a.Size())
	err := a.ReadAt(buf, 0)
	if !errors.Is(err, ErrTooManyFailed) {
		t.Fatalf("read: %v", err)
	}
	t.Log(err)
	for _, want := range []string{"raid5", "[1]"} {
		if !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	// A write fails the dead member; then the error names both.
	if err := a.WriteAt(make([]byte, 10), 0, false); !errors.Is(err, ErrTooManyFailed) {
		t.Fatalf("write: %v", err)
	}
	// Chunks on members 0 and 3 are served.
	served := 0
	for off := int64(0); off < a.Size(); off += g.ChunkSize {
		p := make([]byte, g.ChunkSize)
		err := a.ReadAt(p, off)
		switch {
		case err == nil:
			served++
			if off >= 10 && !bytes.Equal(p, model[off:off+g.ChunkSize]) {
				t.Fatalf("chunk at %d: wrong data", off)
			}
		case !errors.Is(err, ErrTooManyFailed):
			t.Fatalf("chunk at %d: %v", off, err)
		}
	}
	if served == 0 {
		t.Fatal("nothing served")
	}
	if err := a.Flush(); !errors.Is(err, ErrTooManyFailed) {
		t.Errorf("flush on a failed array: %v", err)
	}
	if h := a.Status().Health; h != HealthFailed {
		t.Errorf("health %v", h)
	}
}

// stripeMismatches lists the stripes of g, laid over the member images
// raw, whose parity does not verify (RAID 5/6) or whose copies differ
// (mirrors).
func stripeMismatches(t *testing.T, g Geometry, raw [][]byte) []int64 {
	t.Helper()
	var par *Parity
	if g.Level == Level5 || g.Level == Level6 {
		var err error
		if par, err = NewParity(g.DataMembers(), g.Members-g.DataMembers()); err != nil {
			t.Fatal(err)
		}
	}
	C := g.ChunkSize
	var bad []int64
	for s := range g.Stripes() {
		info := g.Stripe(s)
		chunk := func(m int) []byte { return raw[m][info.Offset : info.Offset+C] }
		if par == nil {
			for _, copies := range info.Copies {
				if slices.ContainsFunc(copies[1:], func(m int) bool { return !bytes.Equal(chunk(m), chunk(copies[0])) }) {
					bad = append(bad, s)
					break
				}
			}
			continue
		}
		data := make([][]byte, len(info.Data))
		for j, m := range info.Data {
			data[j] = chunk(m)
		}
		ps := [][]byte{chunk(info.P)}
		if info.Q >= 0 {
			ps = append(ps, chunk(info.Q))
		}
		if ok, err := par.Verify(data, ps); err != nil || !ok {
			bad = append(bad, s)
		}
	}
	return bad
}

// devImages returns the fault devices' memory, not copied.
func devImages(devs []*faultDev) [][]byte {
	raw := make([][]byte, len(devs))
	for i, d := range devs {
		raw[i] = d.Mem.Bytes()
	}
	return raw
}

// verifyStripes checks every stripe's parity (RAID 5/6) or that every copy
// agrees (mirrors), reading the fault devices' memory directly.
func verifyStripes(t *testing.T, a *Array, devs []*faultDev) {
	t.Helper()
	if bad := stripeMismatches(t, a.g, devImages(devs)); len(bad) != 0 {
		t.Fatalf("stripes %v: parity does not verify or copies differ", bad)
	}
}

// TestArrayConcurrentWriters: goroutines write overlapping stripes at once.
// First each owns interleaved 512-byte slots (so the result is known), then
// they write random overlapping ranges; every stripe's parity must verify.
func TestArrayConcurrentWriters(t *testing.T) {
	for _, cfg := range arrayConfigs(8) {
		for _, degraded := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/degraded=%v", cfg.name, degraded), func(t *testing.T) {
				g := cfg.g
				var faulty []int
				if degraded {
					faulty = []int{1}
				}
				a, devs := newTestArray(t, g, faulty...)
				region := min(a.Size(), 3*g.StripeSize())
				const workers, slot = 6, 512
				model := make([]byte, a.Size())
				var wg sync.WaitGroup
				for w := range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						r := rand.New(rand.NewPCG(uint64(w), 7))
						for range 150 {
							s := int64(r.IntN(int(region/slot/workers)))*workers + int64(w)
							p := make([]byte, slot)
							fillRandom(r, p)
							if err := a.WriteAt(p, s*slot, false); err != nil {
								t.Error(err)
								return
							}
							copy(model[s*slot:], p) // slots are disjoint per worker
						}
					}()
				}
				// Readers at the same time, for the race detector.
				stop := make(chan struct{})
				var rwg sync.WaitGroup
				rwg.Add(1)
				go func() {
					defer rwg.Done()
					buf := make([]byte, region)
					for {
						select {
						case <-stop:
							return
						default:
						}
						if err := a.ReadAt(buf, 0); err != nil {
							t.Error(err)
							return
						}
					}
				}()
				wg.Wait()
				close(stop)
				rwg.Wait()
				got := make([]byte, a.Size())
				if err := a.ReadAt(got, 0); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, model) {
					t.Fatal("interleaved slot writes: data differs from the model")
				}
				if !degraded {
					verifyStripes(t, a, devs)
				}

				for w := range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						r := rand.New(rand.NewPCG(uint64(w), 8))
						for range 60 {
							off := r.Int64N(region)
							n := 1 + r.Int64N(min(region-off, g.StripeSize()+g.ChunkSize))
							p := make([]byte, n)
							fillRandom(r, p)
							if err := a.WriteAt(p, off, false); err != nil {
								t.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				if !degraded {
					verifyStripes(t, a, devs)
				} else if err := a.ReadAt(got, 0); err != nil {
					// Degraded: the surviving chunks cannot be checked
					// alone; the array must still read.
					t.Fatal(err)
				}
			})
		}
	}
}

// TestArrayFUAFlush: FUA reaches every member written; Flush every in-sync
// member; a failed flush fails the member.
func TestArrayFUAFlush(t *testing.T) {
	for _, cfg := range arrayConfigs(8) {
		t.Run(cfg.name, func(t *testing.T) {
			a, devs := newTestArray(t, cfg.g)
			if err := a.WriteAt(make([]byte, 100), 0, true); err != nil {
				t.Fatal(err)
			}
			fua := 0
			for _, d := range devs {
				fua += int(d.FUAWrites())
				if d.Calls(blocktest.OpWrite) > 0 && d.FUAWrites() == 0 {
					t.Errorf("a member was written without FUA")
				}
			}
			if fua == 0 {
				t.Fatal("no FUA write")
			}
			devs[0].setFailWrites(true)
			if err := a.Flush(); err != nil {
				t.Fatal(err)
			}
			for i, d := range devs[1:] {
				if d.Flushes() != 1 {
					t.Errorf("member %d: %d flushes", i+1, d.Flushes())
				}
			}
			if st := a.Status(); st.Members[0].State != Faulty {
				t.Errorf("flush error did not fail member 0: %+v", st)
			}
		})
	}
}

// TestArrayZeroes: WriteZeroes and Trim read back as zeroes where
// promised, with the right Fast behaviour.
func TestArrayZeroes(t *testing.T) {
	for _, cfg := range arrayConfigs(8) {
		t.Run(cfg.name, func(t *testing.T) {
			a, devs := newTestArray(t, cfg.g)
			model := fillArrayRandom(t, a, rand.New(rand.NewPCG(9, 9)))
			off, n := int64(1000), int64(3*cfg.g.ChunkSize+77)
			err := a.WriteZeroes(off, n, block.ZeroFlags{Fast: true})
			if a.mirror {
				if err != nil {
					t.Fatal(err)
				}
			} else {
				if !errors.Is(err, block.ErrNotFast) {
					t.Fatalf("fast zeroes on parity: %v", err)
				}
				if err := a.WriteZeroes(off, n, block.ZeroFlags{MayTrim: true}); err != nil {
					t.Fatal(err)
				}
			}
			clear(model[off : off+n])
			got := make([]byte, a.Size())
			if err := a.ReadAt(got, 0); err != nil || !bytes.Equal(got, model) {
				t.Fatalf("after zeroes: %v", err)
			}
			if err := a.Trim(0, a.Size()); err != nil {
				t.Fatal(err)
			}
			if a.mirror {
				clear(model)
			}
			if err := a.ReadAt(got, 0); err != nil || !bytes.Equal(got, model) {
				t.Fatalf("after trim: %v", err)
			}
			verifyStripes(t, a, devs)
			if a.mirror {
				// A copy that cannot zero fast after another did is zeroed
				// slowly: the copies never differ.
				devs[len(devs)-1].SetFastZero(false)
				fillArrayRandom(t, a, rand.New(rand.NewPCG(1, 1)))
				if err := a.WriteZeroes(0, a.Size(), block.ZeroFlags{Fast: true}); err != nil {
					t.Fatal(err)
				}
				verifyStripes(t, a, devs)
			}
		})
	}
}

func TestNewArrayChecks(t *testing.T) {
	g := Geometry{Level: Level5, Members: 3, ChunkSize: 4096, MemberSize: 4 * 4096}
	mk := func(sizes ...int64) []block.Device {
		var out []block.Device
		for _, s := range sizes {
			out = append(out, blocktest.NewMem(s))
		}
		return out
	}
	if _, err := NewArray(g, mk(g.MemberSize, g.MemberSize), ArrayOptions{}); err == nil {
		t.Error("two members for three accepted")
	}
	if _, err := NewArray(g, mk(g.MemberSize, g.MemberSize-1, g.MemberSize), ArrayOptions{}); err == nil {
		t.Error("short member accepted")
	}
	m := mk(g.MemberSize, g.MemberSize+4096, g.MemberSize)
	m[2] = nil
	if _, err := NewArray(g, m, ArrayOptions{}); err == nil {
		t.Error("nil member accepted")
	}
	a, err := NewArray(g, m, ArrayOptions{Faulty: []int{2}, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	if st := a.Status(); st.Health != HealthDegraded || st.Members[2].State != Faulty {
		t.Errorf("status %+v", st)
	}
	if a.Size() != 2*g.MemberSize {
		t.Errorf("size %d", a.Size())
	}
	if err := a.ReadAt(make([]byte, 1), a.Size()); !errors.Is(err, block.ErrOutOfRange) {
		t.Errorf("out of range read: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.ReadAt(make([]byte, 1), 0); err == nil {
		t.Error("read after close")
	}
}

// TestArrayParityReadErrors: read errors met by RAID 5/6 writes (on the
// parity, on the chunk written, on an untouched chunk) and by reads (RAID 6:
// the data chunk and P at once) are served from redundancy and repaired.
func TestArrayParityReadErrors(t *testing.T) {
	for _, cfg := range arrayConfigs(8) {
		g := cfg.g
		if g.Level != Level5 && g.Level != Level6 {
			continue
		}
		const s, within, n = 1, 100, 500
		info := g.Stripe(s)
		victims := map[string][]int{
			"parity":    {info.P},
			"written":   {info.Data[0]},
			"untouched": {info.Data[1]},
		}
		if g.Level == Level6 {
			victims["q+untouched"] = []int{info.Q, info.Data[1]}
		}
		for name, vs := range victims {
			t.Run(cfg.name+"/"+name, func(t *testing.T) {
				a, devs := newTestArray(t, g)
				model := fillArrayRandom(t, a, rand.New(rand.NewPCG(11, 12)))
				for _, v := range vs {
					devs[v].corrupt(info.Offset+within, n)
				}
				p := bytes.Repeat([]byte{0x3C}, n)
				off := info.Logical + within // data chunk 0 of stripe s
				if err := a.WriteAt(p, off, false); err != nil {
					t.Fatal(err)
				}
				copy(model[off:], p)
				got := make([]byte, a.Size())
				if err := a.ReadAt(got, 0); err != nil || !bytes.Equal(got, model) {
					t.Fatalf("read after write: %v", err)
				}
				if st := a.Status(); st.Health != HealthOptimal {
					t.Fatalf("status %+v", st)
				}
				for _, v := range vs {
					if c := devs[v].badCount(); c != 0 {
						t.Fatalf("member %d: %d bad bytes left", v, c)
					}
				}
				verifyStripes(t, a, devs)
			})
		}
		if g.Level == Level6 {
			t.Run(cfg.name+"/read-data+P", func(t *testing.T) {
				a, devs := newTestArray(t, g)
				model := fillArrayRandom(t, a, rand.New(rand.NewPCG(13, 14)))
				for _, v := range []int{info.Data[0], info.P} {
					devs[v].corrupt(info.Offset+within, n)
				}
				got := make([]byte, n)
				off := info.Logical + within
				if err := a.ReadAt(got, off); err != nil || !bytes.Equal(got, model[off:off+n]) {
					t.Fatalf("read: %v", err)
				}
				for _, v := range []int{info.Data[0], info.P} {
					if c := devs[v].badCount(); c != 0 {
						t.Fatalf("member %d: %d bad bytes left", v, c)
					}
				}
				if st := a.Status(); st.Health != HealthOptimal {
					t.Fatalf("status %+v", st)
				}
				verifyStripes(t, a, devs)
			})
		}
	}
}

// benchArray builds an array of level over blocktest.Mem members with 64 KiB
// chunks and 16 MiB members.
func benchArray(b *testing.B, level Level, members int) (*Array, []*blocktest.Mem) {
	b.Helper()
	g := Geometry{Level: level, Members: members, ChunkSize: 64 << 10, MemberSize: 16 << 20}
	return newArrayOver(b, g, ArrayOptions{}, blocktest.NewMem)
}

func BenchmarkArrayIO(b *testing.B) {
	for _, c := range []struct {
		name    string
		level   Level
		members int
	}{{"raid1", Level1, 2}, {"raid10", Level10, 4}, {"raid5", Level5, 4}} {
		b.Run(c.name+"/read1M", func(b *testing.B) {
			a, mems := benchArray(b, c.level, c.members)
			p := make([]byte, 1<<20)
			if err := a.WriteAt(p, 0, false); err != nil {
				b.Fatal(err)
			}
			var before int64
			for _, m := range mems {
				before += m.Calls(blocktest.OpRead)
			}
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := a.ReadAt(p, int64(i%4)<<20); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			var after int64
			for _, m := range mems {
				after += m.Calls(blocktest.OpRead)
			}
			b.ReportMetric(float64(after-before)/float64(b.N), "memberreads/op")
		})
		b.Run(c.name+"/write4K", func(b *testing.B) {
			a, _ := benchArray(b, c.level, c.members)
			p := make([]byte, 4<<10)
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := a.WriteAt(p, int64(i%1024)*(12<<10), false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
