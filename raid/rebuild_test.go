package raid

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockrep/blockrep/block"
	"github.com/blockrep/blockrep/block/blocktest"
)

// countDev is a replacement member that counts the bytes written to it.
type countDev struct {
	*blocktest.Mem
	written atomic.Int64
}

func newCountDev(size int64) *countDev { return &countDev{Mem: blocktest.NewMem(size)} }

func (c *countDev) WriteAt(p []byte, off int64, fua bool) error {
	c.written.Add(int64(len(p)))
	return c.Mem.WriteAt(p, off, fua)
}

// fakeClock advances only when slept on; it records the sleeps.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_000_000, 0)} }

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.sleeps = append(c.sleeps, d)
	return nil
}

// memberRaw returns the first MemberSize bytes of member i's device.
func memberRaw(t *testing.T, a *Array, i int) []byte {
	t.Helper()
	b := make([]byte, a.g.MemberSize)
	if err := a.members[i].device().ReadAt(b, 0); err != nil {
		t.Fatalf("member %d: %v", i, err)
	}
	return b
}

// verifyMembers checks that every copy agrees (mirrors) or every stripe's
// parity verifies (RAID 5/6), on the devices the members are now (a
// replacement's too).
func verifyMembers(t *testing.T, a *Array) {
	t.Helper()
	raw := make([][]byte, len(a.members))
	for i := range raw {
		raw[i] = memberRaw(t, a, i)
	}
	if bad := stripeMismatches(t, a.g, raw); len(bad) != 0 {
		t.Fatalf("stripes %v: parity does not verify or copies differ", bad)
	}
}

func checkModel(t *testing.T, a *Array, model []byte) {
	t.Helper()
	got := make([]byte, len(model))
	if err := a.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		for i := range got {
			if got[i] != model[i] {
				t.Fatalf("array differs from the model at %d", i)
			}
		}
	}
}

func checkOptimal(t *testing.T, a *Array) {
	t.Helper()
	st := a.Status()
	if st.Health != HealthOptimal {
		t.Fatalf("health %v, want optimal: %+v", st.Health, st.Members)
	}
	for _, m := range st.Members {
		if m.State != InSync {
			t.Fatalf("member %d is %v", m.Index, m.State)
		}
	}
}

// writer writes random ranges (and reads back random ranges against the
// model) until stopped; it owns the model meanwhile.
type writer struct {
	ops  atomic.Int64
	stop chan struct{}
	done chan error
}

func startWriter(a *Array, model []byte, seed uint64) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		r := rand.New(rand.NewPCG(seed, 7))
		for {
			select {
			case <-w.stop:
				w.done <- nil
				return
			default:
			}
			off, n := randRange(r, a.g)
			p := make([]byte, n)
			fillRandom(r, p)
			if err := a.WriteAt(p, off, false); err != nil {
				w.done <- err
				return
			}
			copy(model[off:], p)
			off, n = randRange(r, a.g)
			got := make([]byte, n)
			if err := a.ReadAt(got, off); err != nil {
				w.done <- err
				return
			}
			if !bytes.Equal(got, model[off:off+n]) {
				w.done <- errors.New("read during rebuild differs from the model")
				return
			}
			w.ops.Add(1)
		}
	}()
	return w
}

// await waits until the writer has done one more operation (or ended).
func (w *writer) await() {
	n := w.ops.Load()
	for w.ops.Load() <= n && len(w.done) == 0 {
		runtime.Gosched()
	}
}

func (w *writer) finish(t *testing.T) {
	t.Helper()
	close(w.stop)
	if err := <-w.done; err != nil {
		t.Fatal(err)
	}
}

// TestRebuildAllLevels: for every level and every member, fail it, replace
// it with a blank device and rebuild while a writer writes; the array is
// then optimal, reads the model and its copies/parity agree.
func TestRebuildAllLevels(t *testing.T) {
	for _, cfg := range arrayConfigs(16) {
		t.Run(cfg.name, func(t *testing.T) {
			for victim := range cfg.g.Members {
				r := rand.New(rand.NewPCG(uint64(victim), 1))
				a, _ := newTestArray(t, cfg.g)
				model := fillArrayRandom(t, a, r)
				if err := a.Fail(victim); err != nil {
					t.Fatal(err)
				}
				if h := a.Status().Health; h != HealthDegraded {
					t.Fatalf("after Fail(%d): health %v", victim, h)
				}
				nd := newCountDev(cfg.g.MemberSize)
				if err := a.Replace(victim, nd); err != nil {
					t.Fatal(err)
				}
				w := startWriter(a, model, uint64(victim)+100)
				var cps []int64
				err := a.Rebuild(context.Background(), victim, RebuildOptions{
					CheckpointEvery: cfg.g.ChunkSize,
					Checkpoint: func(off int64) error {
						cps = append(cps, off)
						w.await() // at least one write between stripes
						return nil
					},
				})
				w.finish(t)
				if err != nil {
					t.Fatalf("rebuild of member %d: %v", victim, err)
				}
				if int64(len(cps)) != cfg.g.Stripes() || cps[len(cps)-1] != cfg.g.MemberSize {
					t.Fatalf("checkpoints %v", cps)
				}
				checkOptimal(t, a)
				checkModel(t, a, model)
				verifyMembers(t, a)
				p := a.Progress()
				if p.Op != "rebuild" || p.State != OpDone || p.Done != p.Total || p.Member != victim || p.MemberState != InSync {
					t.Fatalf("progress %+v", p)
				}
			}
		})
	}
}

// TestRebuildRateLimit: with a fake clock the token bucket sleeps one chunk's
// worth of time per chunk after the first (the burst), and no real time.
func TestRebuildRateLimit(t *testing.T) {
	g := Geometry{Level: Level5, Members: 3, ChunkSize: 4096, MemberSize: 16 * 4096}
	a, _ := newTestArray(t, g)
	model := fillArrayRandom(t, a, rand.New(rand.NewPCG(1, 2)))
	if err := a.Fail(2); err != nil {
		t.Fatal(err)
	}
	if err := a.Replace(2, newCountDev(g.MemberSize)); err != nil {
		t.Fatal(err)
	}
	clk := newFakeClock()
	start := clk.Now()
	if err := a.Rebuild(context.Background(), 2, RebuildOptions{Rate: 4 * g.ChunkSize, Clock: clk}); err != nil {
		t.Fatal(err)
	}
	if len(clk.sleeps) != int(g.Stripes())-1 {
		t.Fatalf("%d sleeps, want %d", len(clk.sleeps), g.Stripes()-1)
	}
	for i, d := range clk.sleeps {
		if d != 250*time.Millisecond {
			t.Fatalf("sleep %d is %v, want 250ms (one chunk at 4 chunks/s)", i, d)
		}
	}
	if el := clk.Now().Sub(start); el != 15*250*time.Millisecond {
		t.Fatalf("fake time %v", el)
	}
	p := a.Progress()
	if want := float64(g.MemberSize) / 3.75; p.Rate != want {
		t.Fatalf("rate %v, want %v", p.Rate, want)
	}
	checkOptimal(t, a)
	checkModel(t, a, model)

	// A larger burst lets that many bytes through at once; scrub is
	// limited the same way.
	clk = newFakeClock()
	res, err := a.Scrub(context.Background(), ScrubOptions{Rate: 2 * g.ChunkSize, Burst: 4 * g.ChunkSize, Clock: clk})
	if err != nil || res.Mismatches != 0 || res.Stripes != g.Stripes() {
		t.Fatalf("scrub: %+v, %v", res, err)
	}
	if len(clk.sleeps) != int(g.Stripes())-4 {
		t.Fatalf("scrub: %d sleeps, want %d", len(clk.sleeps), g.Stripes()-4)
	}
	for _, d := range clk.sleeps {
		if d != 500*time.Millisecond {
			t.Fatalf("scrub sleep %v, want 500ms", d)
		}
	}
}

// TestRebuildCancelResume: a rebuild canceled mid-way keeps its checkpoint;
// Rebuild again copies only the rest; so does a new array (restart) given
// the persisted checkpoint by ResumeReplace.
func TestRebuildCancelResume(t *testing.T) {
	for _, cfg := range []arrayConfig{arrayConfigs(16)[0], arrayConfigs(16)[2], arrayConfigs(16)[7]} {
		t.Run(cfg.name, func(t *testing.T) {
			g := cfg.g
			C := g.ChunkSize
			a, devs := newTestArray(t, g)
			model := fillArrayRandom(t, a, rand.New(rand.NewPCG(3, 4)))
			const victim = 1
			if err := a.Fail(victim); err != nil {
				t.Fatal(err)
			}
			nd := newCountDev(g.MemberSize)
			if err := a.Replace(victim, nd); err != nil {
				t.Fatal(err)
			}
			var saved int64
			run := func(a *Array, cancelAt int64) error {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				return a.Rebuild(ctx, victim, RebuildOptions{
					CheckpointEvery: 2 * C,
					Checkpoint: func(off int64) error {
						if off < saved {
							t.Errorf("checkpoint went back from %d to %d", saved, off)
						}
						saved = off
						if off >= cancelAt {
							cancel()
						}
						return nil
					},
				})
			}
			if err := run(a, 6*C); !errors.Is(err, context.Canceled) {
				t.Fatalf("rebuild: %v, want canceled", err)
			}
			if saved != 6*C || nd.written.Load() != 6*C {
				t.Fatalf("after cancel: checkpoint %d, written %d; want %d", saved, nd.written.Load(), 6*C)
			}
			if p := a.Progress(); p.State != OpCanceled || p.Done != 6*C || p.MemberState != Rebuilding {
				t.Fatalf("progress %+v", p)
			}
			if h := a.Status().Health; h != HealthDegraded {
				t.Fatalf("health %v", h)
			}
			// Writes meanwhile: below the checkpoint they reach the member.
			checkModel(t, a, model)
			p := bytes.Repeat([]byte{0x5A}, int(g.Size()))
			if err := a.WriteAt(p, 0, false); err != nil {
				t.Fatal(err)
			}
			copy(model, p)

			// In-process resume, canceled again further on.
			nd.written.Store(0)
			if err := run(a, 10*C); !errors.Is(err, context.Canceled) {
				t.Fatalf("rebuild: %v, want canceled", err)
			}
			if saved != 10*C || nd.written.Load() != 4*C {
				t.Fatalf("after resume: checkpoint %d, written %d; want %d, %d", saved, nd.written.Load(), 10*C, 4*C)
			}

			// Restart: a new array over the same devices, the member given
			// back with the persisted checkpoint.
			members := make([]block.Device, g.Members)
			for i := range members {
				members[i] = devs[i]
			}
			members[victim] = nil
			b, err := NewArray(g, members, ArrayOptions{Name: "restarted", Logger: quietLog, Faulty: []int{victim}})
			if err != nil {
				t.Fatal(err)
			}
			if err := b.ResumeReplace(victim, nd, saved); err != nil {
				t.Fatal(err)
			}
			nd.written.Store(0)
			if err := run(b, g.MemberSize+1); err != nil {
				t.Fatal(err)
			}
			if want := g.MemberSize - 10*C; nd.written.Load() != want {
				t.Fatalf("after restart: written %d, want %d", nd.written.Load(), want)
			}
			checkOptimal(t, b)
			checkModel(t, b, model)
			verifyMembers(t, b)
		})
	}
}

// TestRebuildSecondFailure: a member dying during a RAID 5 rebuild stops it
// with ErrTooManyFailed; the rebuilding member keeps its checkpoint.
func TestRebuildSecondFailure(t *testing.T) {
	g := Geometry{Level: Level5, Members: 4, ChunkSize: 4096, MemberSize: 16 * 4096}
	a, devs := newTestArray(t, g)
	fillArrayRandom(t, a, rand.New(rand.NewPCG(5, 6)))
	if err := a.Fail(0); err != nil {
		t.Fatal(err)
	}
	if err := a.Replace(0, newCountDev(g.MemberSize)); err != nil {
		t.Fatal(err)
	}
	var saved int64
	err := a.Rebuild(context.Background(), 0, RebuildOptions{
		CheckpointEvery: 4 * g.ChunkSize,
		Checkpoint: func(off int64) error {
			saved = off
			if off == 4*g.ChunkSize {
				devs[2].kill()
			}
			return nil
		},
	})
	if !errors.Is(err, ErrTooManyFailed) {
		t.Fatalf("rebuild: %v, want ErrTooManyFailed", err)
	}
	if !strings.Contains(err.Error(), "rebuild") {
		t.Fatalf("error %q does not name the rebuild", err)
	}
	if saved != 4*g.ChunkSize || a.members[0].State() != Rebuilding {
		t.Fatalf("checkpoint %d, member 0 %v", saved, a.members[0].State())
	}
	if p := a.Progress(); p.State != OpFailed || !errors.Is(p.Err, ErrTooManyFailed) {
		t.Fatalf("progress %+v", p)
	}

	// A rebuilding member failed by the operator stops its rebuild too.
	g = Geometry{Level: Level1, Members: 2, ChunkSize: 4096, MemberSize: 8 * 4096}
	a, _ = newTestArray(t, g)
	if err := a.Fail(1); err != nil {
		t.Fatal(err)
	}
	if err := a.Replace(1, newCountDev(g.MemberSize)); err != nil {
		t.Fatal(err)
	}
	err = a.Rebuild(context.Background(), 1, RebuildOptions{
		CheckpointEvery: g.ChunkSize,
		Checkpoint: func(off int64) error {
			if off == 2*g.ChunkSize {
				if err := a.Fail(1); err != nil {
					t.Error(err)
				}
			}
			return nil
		},
	})
	if err == nil || !strings.Contains(err.Error(), "faulty") || a.members[1].State() != Faulty {
		t.Fatalf("rebuild after Fail: %v, member %v", err, a.members[1].State())
	}
}

// TestScrub: Scrub finds a corrupted mirror copy or parity chunk, reports
// it, leaves it alone without Repair and fixes it with Repair.
func TestScrub(t *testing.T) {
	for _, cfg := range arrayConfigs(8) {
		if cfg.g.Members > 4 && cfg.g.Level != Level6 {
			continue
		}
		t.Run(cfg.name, func(t *testing.T) {
			g := cfg.g
			C := g.ChunkSize
			a, devs := newTestArray(t, g)
			model := fillArrayRandom(t, a, rand.New(rand.NewPCG(7, 8)))
			res, err := a.Scrub(context.Background(), ScrubOptions{})
			if err != nil || res.Mismatches != 0 || res.Stripes != g.Stripes() {
				t.Fatalf("clean scrub: %+v, %v", res, err)
			}
			const s = 3
			info := g.Stripe(s)
			victim := info.P // parity levels: corrupt P
			if a.mirror {
				victim = info.Copies[0][1] // not the first copy, which wins
			}
			junk := bytes.Repeat([]byte{0xEE}, 100)
			if err := devs[victim].Mem.WriteAt(junk, info.Offset+500, false); err != nil {
				t.Fatal(err)
			}
			res, err = a.Scrub(context.Background(), ScrubOptions{})
			if err != nil || res.Mismatches != 1 || res.Repaired != 0 || len(res.First) != 1 {
				t.Fatalf("check: %+v, %v", res, err)
			}
			mm := res.First[0]
			if mm.Stripe != s || mm.Offset != s*C || mm.Logical != s*g.StripeSize() || !containsInt(mm.Members, victim) {
				t.Fatalf("mismatch %+v, want stripe %d member %d", mm, s, victim)
			}
			if !bytes.Equal(devs[victim].raw(info.Offset+500, 100), junk) {
				t.Fatal("check without Repair changed the member")
			}
			res, err = a.Scrub(context.Background(), ScrubOptions{Repair: true})
			if err != nil || res.Mismatches != 1 || res.Repaired != 1 {
				t.Fatalf("repair: %+v, %v", res, err)
			}
			res, err = a.Scrub(context.Background(), ScrubOptions{})
			if err != nil || res.Mismatches != 0 {
				t.Fatalf("after repair: %+v, %v", res, err)
			}
			verifyMembers(t, a)
			checkModel(t, a, model)
			checkOptimal(t, a)

			// A read error is repaired from redundancy even in check mode.
			devs[victim].failReadOnce(info.Offset, 1)
			res, err = a.Scrub(context.Background(), ScrubOptions{})
			if err != nil || res.ReadErrors != 1 || res.Mismatches != 0 {
				t.Fatalf("read error: %+v, %v", res, err)
			}
			verifyMembers(t, a)
			checkOptimal(t, a)
			if p := a.Progress(); p.Op != "scrub" || p.State != OpDone || p.Done != g.MemberSize {
				t.Fatalf("progress %+v", p)
			}
		})
	}
}

func containsInt(s []int, x int) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

// TestMemberManagementErrors: Fail, Remove, Replace, Add and Rebuild refuse
// what they cannot do, naming the member and the reason.
func TestMemberManagementErrors(t *testing.T) {
	g := Geometry{Level: Level1, Members: 2, ChunkSize: 4096, MemberSize: 8 * 4096}
	a, devs := newTestArray(t, g)
	model := fillArrayRandom(t, a, rand.New(rand.NewPCG(9, 10)))
	wantErr := func(err error, parts ...string) {
		t.Helper()
		if err == nil {
			t.Fatalf("no error, want %q", parts)
		}
		for _, p := range parts {
			if !strings.Contains(err.Error(), p) {
				t.Fatalf("error %q does not contain %q", err, p)
			}
		}
	}
	wantErr(a.Fail(2), "member 2", "no such member")
	wantErr(a.Remove(0), "member 0", "in_sync", "fail it first")
	wantErr(a.Replace(0, newCountDev(g.MemberSize)), "member 0", "in_sync")
	wantErr(a.Rebuild(context.Background(), 0, RebuildOptions{}), "member 0", "not rebuilding")
	if err := a.Fail(0); err != nil {
		t.Fatal(err)
	}
	wantErr(a.Fail(0), "member 0", "already faulty")
	wantErr(a.Fail(1), "member 1", "refused", "would fail")
	wantErr(a.Replace(0, blocktest.NewMem(g.MemberSize-1)), "member 0", "at least MemberSize")
	wantErr(a.Replace(0, nil), "member 0", "nil device")
	_, err := a.Add(newCountDev(g.MemberSize))
	wantErr(err, "no empty slot")
	if err := a.Remove(0); err != nil {
		t.Fatal(err)
	}
	if !devs[0].Closed() {
		t.Fatal("Remove did not close the device")
	}
	wantErr(a.Remove(0), "member 0", "already empty")
	if st := a.Status().Members[0]; st.State != Faulty || st.Err == nil || !strings.Contains(st.Err.Error(), "removed") {
		t.Fatalf("removed member status %+v", st)
	}
	checkModel(t, a, model)
	i, err := a.Add(newCountDev(g.MemberSize))
	if err != nil || i != 0 {
		t.Fatalf("Add: %d, %v", i, err)
	}
	if st := a.Status().Members[0].State; st != Rebuilding {
		t.Fatalf("added member is %v", st)
	}
	wantErr(a.Remove(0), "member 0", "rebuilding")
	// A second run while one runs is refused.
	err = a.Rebuild(context.Background(), 0, RebuildOptions{
		CheckpointEvery: g.ChunkSize,
		Checkpoint: func(off int64) error {
			if off == g.ChunkSize {
				_, err := a.Scrub(context.Background(), ScrubOptions{})
				if !errors.Is(err, ErrBusy) {
					t.Errorf("scrub during rebuild: %v", err)
				}
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	checkOptimal(t, a)
	checkModel(t, a, model)
	verifyMembers(t, a)
}
