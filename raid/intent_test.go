package raid

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/blockrep/blockrep/block"
	"github.com/blockrep/blockrep/block/blocktest"
)

// intentLog records, in order, the bitmap saves and member data writes of
// one test.
type intentLog struct {
	mu     sync.Mutex
	events []string
}

func (l *intentLog) add(e string) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

func (l *intentLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.events
	l.events = nil
	return out
}

// intentLogStore is a MemIntentStore that logs its saves.
type intentLogStore struct {
	*MemIntentStore
	log *intentLog
}

func (s intentLogStore) Save(page int, data []byte) error {
	s.log.add(fmt.Sprintf("save %d", page))
	return s.MemIntentStore.Save(page, data)
}

// intentDev wraps a member, counting the bytes read and written and
// recording the member ranges touched; with log set it logs every write.
type intentDev struct {
	*faultDev
	idx int
	log *intentLog

	mu            sync.Mutex
	read, written int64
	ranges        [][2]int64
}

func (c *intentDev) ReadAt(p []byte, off int64) error {
	c.mu.Lock()
	c.read += int64(len(p))
	c.ranges = append(c.ranges, [2]int64{off, int64(len(p))})
	c.mu.Unlock()
	return c.faultDev.ReadAt(p, off)
}

func (c *intentDev) WriteAt(p []byte, off int64, fua bool) error {
	if c.log != nil {
		c.log.add(fmt.Sprintf("write %d", c.idx))
	}
	c.mu.Lock()
	c.written += int64(len(p))
	c.ranges = append(c.ranges, [2]int64{off, int64(len(p))})
	c.mu.Unlock()
	return c.faultDev.WriteAt(p, off, fua)
}

func (c *intentDev) reset() {
	c.mu.Lock()
	c.read, c.written, c.ranges = 0, 0, nil
	c.mu.Unlock()
}

func (c *intentDev) counts() (r, w int64, ranges [][2]int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.read, c.written, append([][2]int64(nil), c.ranges...)
}

// intentClock is an injected clock.
type intentClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *intentClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *intentClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newIntentArray builds an array of g over counting members with a write
// intent of regionSize over store.
func newIntentArray(t *testing.T, g Geometry, regionSize int64, store IntentStore, clock *intentClock, devs []*faultDev, log *intentLog, faulty ...int) (*Array, []*intentDev, *WriteIntent) {
	t.Helper()
	if devs == nil {
		devs = make([]*faultDev, g.Members)
		for i := range devs {
			devs[i] = newFaultDev(g.MemberSize)
		}
	}
	w, err := NewWriteIntent(g, IntentOptions{RegionSize: regionSize, Idle: time.Second, Store: store, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	cds := make([]*intentDev, g.Members)
	members := make([]block.Device, g.Members)
	for i, d := range devs {
		cds[i] = &intentDev{faultDev: d, idx: i, log: log}
		members[i] = cds[i]
	}
	a, err := NewArray(g, members, ArrayOptions{Name: "intent", Logger: quietLog, Faulty: faulty, Intent: w})
	if err != nil {
		t.Fatal(err)
	}
	return a, cds, w
}

func intentConfigs() []arrayConfig {
	var out []arrayConfig
	add := func(l Level, members, copies int) {
		g := Geometry{Level: l, Members: members, ChunkSize: 4096, Copies: copies, MemberSize: 48 * 4096}
		out = append(out, arrayConfig{fmt.Sprintf("%v-%d", l, members), g})
	}
	add(Level1, 2, 0)
	add(Level10, 4, 2)
	add(Level5, 3, 0)
	add(Level5, 4, 0)
	add(Level6, 5, 0)
	return out
}

// intentRegion is 4 stripes.
func intentRegion(g Geometry) int64 { return 4 * g.StripeSize() }

func faultDevs(cds []*intentDev) []*faultDev {
	out := make([]*faultDev, len(cds))
	for i, c := range cds {
		out[i] = c.faultDev
	}
	return out
}

// TestIntentSaveBeforeWrite: the first write into a clean region saves the
// bitmap page before any member write; a write into a dirty region saves
// nothing.
func TestIntentSaveBeforeWrite(t *testing.T) {
	for _, cfg := range intentConfigs() {
		t.Run(cfg.name, func(t *testing.T) {
			log := &intentLog{}
			store := intentLogStore{NewMemIntentStore(), log}
			clock := &intentClock{t: time.Unix(1000, 0)}
			a, _, w := newIntentArray(t, cfg.g, intentRegion(cfg.g), store, clock, nil, log)
			R := w.RegionSize()
			buf := bytes.Repeat([]byte{7}, 3000)

			check := func(off int64, wantSave bool) {
				t.Helper()
				if err := a.WriteAt(buf, off, false); err != nil {
					t.Fatal(err)
				}
				ev := log.take()
				if len(ev) == 0 {
					t.Fatal("no events")
				}
				if wantSave {
					if ev[0] != "save 0" {
						t.Fatalf("write at %d: first event %q, want the bitmap save (events %v)", off, ev[0], ev)
					}
					for _, e := range ev[1:] {
						if e[:4] == "save" {
							t.Fatalf("write at %d: second save (events %v)", off, ev)
						}
					}
				} else {
					for _, e := range ev {
						if e[:4] == "save" {
							t.Fatalf("write at %d into a dirty region saved the bitmap (events %v)", off, ev)
						}
					}
				}
			}
			check(100, true)
			check(R/2, false)
			check(3*R+5, true)
			check(3*R+R-4000, false)
			// A write spanning a dirty and a clean region saves once.
			if err := a.WriteAt(make([]byte, 2000), R-1000, false); err != nil {
				t.Fatal(err)
			}
			ev := log.take()
			if ev[0] != "save 0" {
				t.Fatalf("spanning write: events %v", ev)
			}
			got := w.Dirty()
			want := []int64{0, 1, 3}
			if len(got) != len(want) {
				t.Fatalf("dirty %v, want regions %v", got, want)
			}
			for i, r := range got {
				if r.Index != want[i] || r.Offset != want[i]*R || r.Length != R {
					t.Fatalf("dirty %v, want regions %v", got, want)
				}
			}
			// Mirror zeroing goes through the bitmap as well.
			if a.mirror {
				if err := a.WriteZeroes(5*R, 4096, block.ZeroFlags{}); err != nil {
					t.Fatal(err)
				}
				if ev := log.take(); len(ev) == 0 || ev[0] != "save 0" {
					t.Fatalf("write zeroes: events %v", ev)
				}
			}
		})
	}
}

// TestIntentSaveErrorFailsWrite: a write whose bitmap cannot be saved does
// not reach the members.
func TestIntentSaveErrorFailsWrite(t *testing.T) {
	g := intentConfigs()[2].g
	log := &intentLog{}
	clock := &intentClock{t: time.Unix(1000, 0)}
	a, _, _ := newIntentArray(t, g, intentRegion(g), intentFailStore{}, clock, nil, log)
	err := a.WriteAt(make([]byte, 512), 0, false)
	if err == nil || !errors.Is(err, errInjected) {
		t.Fatalf("write with a failing bitmap store: %v", err)
	}
	if ev := log.take(); len(ev) != 0 {
		t.Fatalf("member writes after a failed bitmap save: %v", ev)
	}
}

type intentFailStore struct{}

func (intentFailStore) Save(int, []byte) error { return errInjected }
func (intentFailStore) Load() ([]byte, error)  { return nil, nil }

// TestIntentSweep: bits clear only once idle, with no write in flight, and
// only on an optimal array.
func TestIntentSweep(t *testing.T) {
	g := intentConfigs()[3].g // raid5-4
	store := NewMemIntentStore()
	clock := &intentClock{t: time.Unix(1000, 0)}
	a, cds, w := newIntentArray(t, g, intentRegion(g), store, clock, nil, nil)
	R := w.RegionSize()
	if err := a.WriteAt(make([]byte, 100), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteAt(make([]byte, 100), 2*R, false); err != nil {
		t.Fatal(err)
	}
	clock.advance(500 * time.Millisecond)
	if err := a.WriteAt(make([]byte, 100), 2*R+10, false); err != nil {
		t.Fatal(err)
	}
	// Region 0 idle 0.5s, region 2 just written: nothing clears yet.
	if n, err := w.Sweep(clock.Now()); n != 0 || err != nil {
		t.Fatalf("early sweep cleared %d (%v)", n, err)
	}
	clock.advance(600 * time.Millisecond)
	saves := store.Saves()
	if n, err := w.Sweep(clock.Now()); n != 1 || err != nil {
		t.Fatalf("sweep cleared %d (%v), want region 0", n, err)
	}
	if store.Saves() != saves+1 {
		t.Fatalf("clearing saved %d pages, want 1", store.Saves()-saves)
	}
	if w.IsDirty(0) || !w.IsDirty(2) {
		t.Fatalf("dirty after sweep: %v", w.Dirty())
	}
	// A write in flight keeps its region dirty however long.
	if err := w.Begin(4*R, 10); err != nil {
		t.Fatal(err)
	}
	clock.advance(time.Hour)
	if n, _ := w.Sweep(clock.Now()); n != 1 || !w.IsDirty(4) || w.IsDirty(2) {
		t.Fatalf("sweep with a write in flight: cleared %d, dirty %v", n, w.Dirty())
	}
	w.End(4*R, 10)
	clock.advance(time.Hour)
	if n, _ := w.Sweep(clock.Now()); n != 1 || len(w.Dirty()) != 0 {
		t.Fatalf("sweep after End: cleared %d, dirty %v", n, w.Dirty())
	}
	// Degraded: a member fails during a write; its bits stay.
	cds[1].setFailWrites(true)
	for r := range int64(3) {
		if err := a.WriteAt(bytes.Repeat([]byte{1}, int(g.StripeSize())), r*R, false); err != nil {
			t.Fatal(err)
		}
	}
	if a.health() != HealthDegraded {
		t.Fatalf("health %v, want degraded", a.health())
	}
	clock.advance(time.Hour)
	if n, _ := w.Sweep(clock.Now()); n != 0 || len(w.Dirty()) != 3 {
		t.Fatalf("degraded sweep cleared %d, dirty %v", n, w.Dirty())
	}
	// Back in sync: the bits clear.
	cds[1].setFailWrites(false)
	if err := a.ResyncMember(context.Background(), 1, 0); err != nil {
		t.Fatal(err)
	}
	clock.advance(time.Hour)
	if n, _ := w.Sweep(clock.Now()); n != 3 || len(w.Dirty()) != 0 {
		t.Fatalf("optimal sweep cleared %d, dirty %v", n, w.Dirty())
	}
}

// corruptStripe simulates a crash in the middle of a write of stripe s: the
// new data reached one data member, the parity did not.
func corruptStripe(g Geometry, devs []*faultDev, s int64, r *rand.Rand) {
	info := g.Stripe(s)
	junk := make([]byte, 1024)
	fillRandom(r, junk)
	m := info.Data[r.IntN(len(info.Data))]
	if err := devs[m].Mem.WriteAt(junk, info.Offset+512, false); err != nil {
		panic(err)
	}
}

// flipByte xors byte off of m with x.
func flipByte(m *blocktest.Mem, off int64, x byte) {
	b := make([]byte, 1)
	if err := m.ReadAt(b, off); err != nil {
		panic(err)
	}
	b[0] ^= x
	if err := m.WriteAt(b, off, false); err != nil {
		panic(err)
	}
}

// tornStripes counts the stripes whose parity does not verify or whose
// copies differ.
func tornStripes(t *testing.T, g Geometry, devs []*faultDev) int {
	t.Helper()
	return len(stripeMismatches(t, g, devImages(devs)))
}

// TestIntentCrashResync: after a crash that tore stripes in dirty regions,
// a new array loads the bitmap and ResyncRegions repairs exactly those
// regions.
func TestIntentCrashResync(t *testing.T) {
	for _, cfg := range intentConfigs() {
		t.Run(cfg.name, func(t *testing.T) {
			g := cfg.g
			r := rand.New(rand.NewPCG(1, 2))
			store := NewMemIntentStore()
			clock := &intentClock{t: time.Unix(1000, 0)}
			a, cds, w := newIntentArray(t, g, intentRegion(g), store, clock, nil, nil)
			R := w.RegionSize()
			fillArrayRandom(t, a, r)
			clock.advance(time.Hour)
			if _, err := w.Sweep(clock.Now()); err != nil || len(w.Dirty()) != 0 {
				t.Fatalf("sweep: %v, dirty %v", err, w.Dirty())
			}
			// Writes in flight at the crash: regions 1 and 4.
			for _, reg := range []int64{1, 4} {
				if err := w.Begin(reg*R+100, 5000); err != nil {
					t.Fatal(err)
				}
			}
			devs := faultDevs(cds)
			spr := R / g.StripeSize()
			for _, reg := range []int64{1, 4} {
				for s := reg * spr; s < (reg+1)*spr; s += 2 {
					corruptStripe(g, devs, s, r)
				}
			}
			if n := int64(tornStripes(t, g, devs)); n != spr {
				t.Fatalf("%d torn stripes before the resync, want %d", n, spr)
			}
			// Restart: a new bitmap from the store, a new array.
			a2, cds2, w2 := newIntentArray(t, g, R, store, clock, devs, nil)
			dirty := w2.Dirty()
			if len(dirty) != 2 || dirty[0].Index != 1 || dirty[1].Index != 4 {
				t.Fatalf("dirty after restart %v, want regions 1 and 4", dirty)
			}
			if err := a2.ResyncRegions(context.Background(), dirty, 0); err != nil {
				t.Fatal(err)
			}
			verifyStripes(t, a2, devs)
			// Only the dirty regions were touched: each member read once
			// per stripe, written only where a stripe was torn.
			var totalRead int64
			for i, c := range cds2 {
				rd, wr, ranges := c.counts()
				totalRead += rd
				for _, rg := range ranges {
					s := rg[0] / g.ChunkSize
					if reg := s / spr; reg != 1 && reg != 4 {
						t.Fatalf("member %d: I/O at %d (stripe %d, region %d) outside the dirty regions", i, rg[0], s, reg)
					}
				}
				if !a2.mirror && wr > spr*g.ChunkSize*2 {
					t.Fatalf("member %d: %d bytes written, more than the torn stripes", i, wr)
				}
			}
			stripes := 2 * spr
			want := stripes * int64(g.Members) * g.ChunkSize // parity: every chunk
			if a2.mirror {
				want = stripes * int64(g.DataMembers()) * g.ChunkSize // one copy per chunk
			}
			if totalRead != want {
				t.Fatalf("resync read %d bytes, want %d", totalRead, want)
			}
			if d := w2.Dirty(); len(d) != 0 {
				t.Fatalf("dirty after resync %v", d)
			}
			// The array reads what the members hold, consistently.
			buf := make([]byte, g.Size())
			if err := a2.ReadAt(buf, 0); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestIntentResyncDegradedLeavesBits: a dirty region on a degraded array
// keeps its bit after ResyncRegions.
func TestIntentResyncDegradedLeavesBits(t *testing.T) {
	g := intentConfigs()[2].g
	store := NewMemIntentStore()
	clock := &intentClock{t: time.Unix(1000, 0)}
	_, cds, w := newIntentArray(t, g, intentRegion(g), store, clock, nil, nil)
	if err := w.Begin(0, 10); err != nil {
		t.Fatal(err)
	}
	a2, _, w2 := newIntentArray(t, g, intentRegion(g), store, clock, faultDevs(cds), nil, 1)
	if err := a2.ResyncRegions(context.Background(), w2.Dirty(), 0); err != nil {
		t.Fatal(err)
	}
	if len(w2.Dirty()) != 1 {
		t.Fatalf("degraded resync cleared the bits: %v", w2.Dirty())
	}
}

// TestIntentResyncMember: a member away during writes gets back only the
// dirty regions, and afterwards every copy and parity verifies and the
// array reads the model.
func TestIntentResyncMember(t *testing.T) {
	for _, cfg := range intentConfigs() {
		for _, concurrent := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/concurrent=%v", cfg.name, concurrent), func(t *testing.T) {
				testIntentResyncMember(t, cfg.g, concurrent)
			})
		}
	}
}

func testIntentResyncMember(t *testing.T, g Geometry, concurrent bool) {
	r := rand.New(rand.NewPCG(3, 4))
	store := NewMemIntentStore()
	clock := &intentClock{t: time.Unix(1000, 0)}
	a, cds, w := newIntentArray(t, g, intentRegion(g), store, clock, nil, nil)
	R := w.RegionSize()
	model := fillArrayRandom(t, a, r)
	clock.advance(time.Hour)
	if _, err := w.Sweep(clock.Now()); err != nil || len(w.Dirty()) != 0 {
		t.Fatalf("sweep: %v, dirty %v", err, w.Dirty())
	}
	const away = 1
	cds[away].setFailWrites(true)
	write := func(off, n int64) {
		t.Helper()
		p := make([]byte, n)
		fillRandom(r, p)
		if err := a.WriteAt(p, off, false); err != nil {
			t.Error(err)
			return
		}
		copy(model[off:], p)
	}
	write(R+300, 5000) // fails the member
	if a.members[away].State() != Faulty {
		t.Fatalf("member %d is %v, want faulty", away, a.members[away].State())
	}
	write(4*R-100, 200) // regions 3 and 4
	write(7*R, 4096)
	clock.advance(time.Hour)
	if n, _ := w.Sweep(clock.Now()); n != 0 {
		t.Fatalf("degraded sweep cleared %d", n)
	}
	dirty := w.Dirty()
	if len(dirty) != 4 {
		t.Fatalf("dirty %v, want regions 1, 3, 4, 7", dirty)
	}
	cds[away].setFailWrites(false)
	cds[away].reset()

	var wg sync.WaitGroup
	var mu sync.Mutex // serializes model updates with their writes
	stop := make(chan struct{})
	if concurrent {
		// Writers confined to regions 1 and 3, so the count below holds
		// up to re-copies of those.
		wr := rand.New(rand.NewPCG(5, 6))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				reg := []int64{1, 3}[wr.IntN(2)]
				n := 1 + wr.Int64N(3*g.ChunkSize)
				off := reg*R + wr.Int64N(R-n)
				p := make([]byte, n)
				for i := range p {
					p[i] = byte(wr.Uint32())
				}
				if err := a.WriteAt(p, off, false); err != nil {
					t.Error(err)
				}
				copy(model[off:], p)
				mu.Unlock()
			}
		}()
	}
	var rate int64
	if concurrent {
		rate = 1 << 20 // so that the writer overlaps the copy
	}
	err := a.ResyncMember(context.Background(), away, rate)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if st := a.members[away].State(); st != InSync {
		t.Fatalf("member %d is %v after resync", away, st)
	}
	spr := R / g.StripeSize()
	_, wr, ranges := cds[away].counts()
	want := int64(len(dirty)) * spr * g.ChunkSize
	if !concurrent && wr != want {
		t.Fatalf("resync wrote %d bytes to the member, want %d (%d regions)", wr, want, len(dirty))
	}
	if wr < want {
		t.Fatalf("resync wrote %d bytes to the member, want at least %d", wr, want)
	}
	for _, rg := range ranges {
		reg := rg[0] / g.ChunkSize / spr
		if reg != 1 && reg != 3 && reg != 4 && reg != 7 {
			t.Fatalf("member I/O at %d in clean region %d", rg[0], reg)
		}
	}
	verifyStripes(t, a, faultDevs(cds))
	got := make([]byte, g.Size())
	if err := a.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Fatal("array does not read the model after the member resync")
	}
	// The returned member alone serves its data: fail another one the
	// level can lose and read again.
	if g.Level != Level1 {
		other := (away + 2) % g.Members
		if g.Level == Level10 {
			other = away - 1 // the other copy
		}
		a.fail(other, "test", 0, errInjected)
		if err := a.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, model) {
			t.Fatal("array does not read the model with the resynced member serving")
		}
	}
	clock.advance(time.Hour)
	if g.Level == Level1 {
		if n, _ := w.Sweep(clock.Now()); n == 0 || len(w.Dirty()) != 0 {
			t.Fatalf("optimal sweep cleared %d, dirty %v", n, w.Dirty())
		}
	}
}

// TestIntentResyncMemberRefusals: a member not faulty or an array without
// bitmap is refused.
func TestIntentResyncMemberRefusals(t *testing.T) {
	g := intentConfigs()[2].g
	clock := &intentClock{t: time.Unix(1000, 0)}
	a, _, _ := newIntentArray(t, g, 0, nil, clock, nil, nil)
	if err := a.ResyncMember(context.Background(), 0, 0); err == nil {
		t.Fatal("resync of an in-sync member succeeded")
	}
	b, _ := newTestArray(t, g, 1)
	if err := b.ResyncMember(context.Background(), 1, 0); err == nil {
		t.Fatal("resync without a bitmap succeeded")
	}
	w, err := NewWriteIntent(g, IntentOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if w.RegionSize()%g.StripeSize() != 0 || w.RegionSize() > DefaultRegionSize {
		t.Fatalf("default region size %d", w.RegionSize())
	}
	if _, err := NewWriteIntent(g, IntentOptions{RegionSize: g.StripeSize() + 4096}); err == nil {
		t.Fatal("region size not a multiple of the stripe size accepted")
	}
	other := g
	other.MemberSize *= 2
	w2, _ := NewWriteIntent(other, IntentOptions{})
	if _, err := NewArray(g, make([]block.Device, g.Members), ArrayOptions{Faulty: []int{0, 1, 2}, Intent: w2}); err == nil {
		t.Fatal("write intent of another geometry accepted")
	}
}

// TestIntentMemberStore: the bitmap round-trips through the members'
// reserved area; a damaged copy is outvoted by a good one, and with no good
// copy the load is refused.
func TestIntentMemberStore(t *testing.T) {
	g := Geometry{Level: Level5, Members: 3, ChunkSize: 4096, MemberSize: 1 << 20}
	R := g.StripeSize()
	whole := make([]*blocktest.Mem, g.Members)
	devs := make([]block.Device, g.Members)
	for i := range whole {
		whole[i] = blocktest.NewMem(DefaultDataOffset + g.MemberSize)
		devs[i] = whole[i]
	}
	open := func() (*WriteIntent, error) {
		s, err := NewMemberIntentStore(devs, DefaultBitmapOffset, DefaultBitmapSize, g, R)
		if err != nil {
			t.Fatal(err)
		}
		return NewWriteIntent(g, IntentOptions{RegionSize: R, Store: s})
	}
	w, err := open()
	if err != nil {
		t.Fatal(err)
	}
	if w.Regions() != 256 || len(w.Dirty()) != 0 {
		t.Fatalf("new bitmap: %d regions, dirty %v", w.Regions(), w.Dirty())
	}
	set := []int64{0, 9, 77, 255}
	for _, r := range set {
		if err := w.Begin(r*R+1, 10); err != nil {
			t.Fatal(err)
		}
	}
	check := func(w *WriteIntent) {
		t.Helper()
		d := w.Dirty()
		if len(d) != len(set) {
			t.Fatalf("reloaded dirty %v, want %v", d, set)
		}
		for i, r := range d {
			if r.Index != set[i] {
				t.Fatalf("reloaded dirty %v, want %v", d, set)
			}
		}
	}
	w2, err := open()
	if err != nil {
		t.Fatal(err)
	}
	check(w2)
	// One member's copy damaged: the others still hold it.
	flipByte(whole[0], DefaultBitmapOffset+40, 0xff)
	w3, err := open()
	if err != nil {
		t.Fatal(err)
	}
	check(w3)
	// Every copy damaged: refused.
	for _, m := range whole[1:] {
		flipByte(m, DefaultBitmapOffset+100, 1)
	}
	if _, err := open(); !errors.Is(err, ErrIntentCorrupt) {
		t.Fatalf("load of a damaged bitmap: %v, want ErrIntentCorrupt", err)
	}
	// A bitmap of another layout is refused too.
	for _, m := range whole {
		if err := m.WriteAt(make([]byte, 4096), DefaultBitmapOffset, false); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := NewMemberIntentStore(devs, DefaultBitmapOffset, DefaultBitmapSize, g, 2*R)
	if err := s.Save(0, []byte{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := open(); !errors.Is(err, ErrIntentCorrupt) {
		t.Fatalf("load of a bitmap of another region size: %v, want ErrIntentCorrupt", err)
	}
	// The area must hold the bitmap.
	if _, err := NewMemberIntentStore(devs, DefaultBitmapOffset, 0, g, R); err == nil {
		t.Fatal("store without room accepted")
	}
}

// TestIntentMemberStoreArray: attached to an array, the member store writes
// only the in-sync members, and a member whose bitmap write fails is
// failed.
func TestIntentMemberStoreArray(t *testing.T) {
	g := Geometry{Level: Level6, Members: 4, ChunkSize: 4096, MemberSize: 64 << 10}
	R := g.StripeSize()
	whole := make([]*faultDev, g.Members)
	area := make([]block.Device, g.Members)
	data := make([]block.Device, g.Members)
	for i := range whole {
		whole[i] = newFaultDev(2 * 4096)
		area[i] = whole[i]
		data[i] = newFaultDev(g.MemberSize)
	}
	s, err := NewMemberIntentStore(area, 0, 2*4096, g, R)
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWriteIntent(g, IntentOptions{RegionSize: R, Store: s})
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewArray(g, data, ArrayOptions{Logger: quietLog, Intent: w, Faulty: []int{2}})
	if err != nil {
		t.Fatal(err)
	}
	whole[1].setFailWrites(true)
	if err := a.WriteAt(make([]byte, 100), 0, false); err != nil {
		t.Fatal(err)
	}
	if st := a.Status().Members[1].State; st != Faulty {
		t.Fatalf("member 1 (bitmap write failed) is %v", st)
	}
	if bytes.Count(whole[2].raw(0, 4096), []byte{0}) != 4096 {
		t.Fatal("bitmap written to a faulty member")
	}
	if bytes.Count(whole[0].raw(0, 4096), []byte{0}) == 4096 {
		t.Fatal("bitmap not written to the in-sync member")
	}
}

// TestIntentConcurrent: writers and a sweeper race; at the end every region
// clears and parity verifies.
func TestIntentConcurrent(t *testing.T) {
	g := intentConfigs()[4].g // raid6-5
	store := NewMemIntentStore()
	clock := &intentClock{t: time.Unix(1000, 0)}
	a, cds, w := newIntentArray(t, g, intentRegion(g), store, clock, nil, nil)
	var wg sync.WaitGroup
	for gi := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(gi), 9))
			for range 200 {
				off, n := randRange(r, g)
				if err := a.WriteAt(make([]byte, n), off, false); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 200 {
			clock.advance(400 * time.Millisecond)
			if _, err := w.Sweep(clock.Now()); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	wg.Wait()
	<-done
	clock.advance(time.Hour)
	if _, err := w.Sweep(clock.Now()); err != nil || len(w.Dirty()) != 0 {
		t.Fatalf("final sweep: %v, dirty %v", err, w.Dirty())
	}
	// What is saved matches memory.
	w2, err := NewWriteIntent(g, IntentOptions{RegionSize: w.RegionSize(), Store: store})
	if err != nil || len(w2.Dirty()) != 0 {
		t.Fatalf("reloaded: %v, dirty %v", err, w2.Dirty())
	}
	verifyStripes(t, a, faultDevs(cds))
}
