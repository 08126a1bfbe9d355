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
)

// gateClock is a rebuild Clock whose Sleep parks until the test releases
// it. With Rate = ChunkSize and Burst = 1 the rebuild sleeps before every
// stripe, so the test decides which stripes are rebuilt between (or during)
// its own reads, writes and fault injections, and a seed replays the same
// interleaving.
type gateClock struct {
	mu      sync.Mutex
	now     time.Time
	parked  chan struct{} // the rebuild is in Sleep, between stripes
	release chan struct{} // the test lets it rebuild one more stripe
}

func newGateClock() *gateClock {
	return &gateClock{now: time.Unix(1_000_000, 0), parked: make(chan struct{}), release: make(chan struct{})}
}

func (c *gateClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *gateClock) Sleep(ctx context.Context, d time.Duration) error {
	select {
	case c.parked <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-c.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
	return nil
}

// rebuildRun is one Rebuild goroutine, driven stripe by stripe by the test.
type rebuildRun struct {
	member int
	clk    *gateClock
	cancel context.CancelFunc
	done   chan error
	parked bool // known to be between stripes, touching nothing
	ended  bool
	err    error
	// stripes is how many stripes were released; failAt is the stripe
	// count at which a fault is injected into the running rebuild (-1:
	// none pending).
	stripes, failAt int
	// hit: the member (or its device) was failed while the run was parked
	// with stripes left, so the run must not succeed. touched: a fault of
	// any kind reached the member during the run.
	hit, touched bool
	canceled     bool
	cps          []int64 // persisted checkpoints; the goroutine's until done
}

// settle waits until the run is parked between stripes or has ended.
func (rr *rebuildRun) settle() {
	if rr.parked || rr.ended {
		return
	}
	select {
	case <-rr.clk.parked:
		rr.parked = true
	case rr.err = <-rr.done:
		rr.ended = true
	}
}

// step lets the run rebuild one stripe, running op (if not nil) at the same
// time, and waits for the stripe to be done.
func (rr *rebuildRun) step(op func()) {
	rr.settle()
	if rr.ended {
		if op != nil {
			op()
		}
		return
	}
	rr.parked = false
	rr.stripes++
	rr.clk.release <- struct{}{}
	if op != nil {
		op()
	}
	rr.settle()
}

// stop cancels the run and waits for it: the end of every case, so that no
// rebuild goroutine outlives it.
func (rr *rebuildRun) stop() {
	rr.cancel()
	if !rr.ended {
		rr.err = <-rr.done
		rr.ended = true
	}
}

// rprop is the state of one TestRebuildProperty case: the array, its model
// and the test's own account of which members hold all current data.
type rprop struct {
	t     *testing.T
	g     Geometry
	r     *rand.Rand
	a     *Array
	devs  []*faultDev // the current device of each slot
	model []byte
	known []bool // false: a failed write left the bytes unknown

	// Per slot, why its member may not hold all current data: its device
	// has an injected fault, the operator failed it, or it was replaced
	// and its rebuild has not completed (a Rebuilding member is never
	// read, so it adds no redundancy before it is InSync).
	broken, opFailed, rebuilding []bool

	once        *faultDev // device with a pending one-shot read fault
	run         *rebuildRun
	allowBeyond bool // faults may now exceed what the level tolerates
	op          int

	ioDuring, failDuring, rebuildsDone int
	served, refused                    int // chunks of checkReachable
}

func (c *rprop) lost() map[int]bool {
	m := map[int]bool{}
	for i := range c.g.Members {
		if c.broken[i] || c.opFailed[i] || c.rebuilding[i] {
			m[i] = true
		}
	}
	return m
}

func (c *rprop) survivable() bool { return wouldSurvive(c.g, c.lost()) }

// survivesWith reports whether the data survives losing member i too.
func (c *rprop) survivesWith(i int) bool {
	l := c.lost()
	l[i] = true
	return wouldSurvive(c.g, l)
}

func (c *rprop) fatalf(format string, args ...any) {
	c.t.Helper()
	c.t.Fatalf("op %d: %s (status %+v, progress %+v)", c.op, fmt.Sprintf(format, args...), c.a.Status(), c.a.Progress())
}

func (c *rprop) running() bool { return c.run != nil && !c.run.ended }

// write writes random bytes, or zeroes (WriteZeroes, or Trim on the
// mirrors, whose copies then read as zeroes), or flushes.
func (c *rprop) write() {
	c.t.Helper()
	off, n := randRange(c.r, c.g)
	p := make([]byte, n)
	surv := c.survivable()
	if c.running() {
		c.ioDuring++
	}
	var err error
	switch x := c.r.IntN(20); {
	case x == 0:
		if err := c.a.Flush(); err != nil && (surv || !errors.Is(err, ErrTooManyFailed)) {
			c.fatalf("flush (survivable %v): %v", surv, err)
		}
		return
	case x == 1 && c.a.mirror:
		err = c.a.Trim(off, n)
	case x <= 2:
		err = c.a.WriteZeroes(off, n, block.ZeroFlags{MayTrim: c.r.IntN(2) == 0})
	default:
		for i := range p {
			p[i] = byte(c.r.Uint32())
		}
		err = c.a.WriteAt(p, off, c.r.IntN(8) == 0)
	}
	if err != nil {
		if surv || !errors.Is(err, ErrTooManyFailed) {
			c.fatalf("write %d+%d (survivable %v): %v", off, n, surv, err)
		}
		for i := off; i < off+n; i++ {
			c.known[i] = false
		}
		return
	}
	copy(c.model[off:], p)
	for i := off; i < off+n; i++ {
		c.known[i] = true
	}
}

// read reads [off, off+n): it must succeed while the data survives, may
// fail only with ErrTooManyFailed otherwise, and never returns bytes that
// differ from known model bytes.
func (c *rprop) read(off, n int64) {
	c.t.Helper()
	surv := c.survivable()
	if c.running() {
		c.ioDuring++
	}
	got := make([]byte, n)
	if err := c.a.ReadAt(got, off); err != nil {
		if surv || !errors.Is(err, ErrTooManyFailed) {
			c.fatalf("read %d+%d (survivable %v): %v", off, n, surv, err)
		}
		return
	}
	c.compare(got, off)
}

func (c *rprop) compare(got []byte, off int64) {
	c.t.Helper()
	for i := range int64(len(got)) {
		if c.known[off+i] && got[i] != c.model[off+i] {
			c.fatalf("read %d+%d: byte %d is %#x, want %#x", off, len(got), off+i, got[i], c.model[off+i])
		}
	}
}

func (c *rprop) randomRead() {
	c.t.Helper()
	off, n := randRange(c.r, c.g)
	c.read(off, n)
}

// invariants holds between operations: a member the test counts as good is
// InSync, and an array that still holds all data is not Failed.
func (c *rprop) invariants() {
	c.t.Helper()
	lost := c.lost()
	for i := range c.g.Members {
		if st := c.a.members[i].State(); !lost[i] && st != InSync {
			c.fatalf("member %d holds all data but is %v", i, st)
		}
	}
	if c.survivable() {
		if h := c.a.Status().Health; h == HealthFailed {
			c.fatalf("health %v though no data is lost (lost %v)", h, lost)
		}
	}
}

// faultTargets lists the members a fault may hit: good members (within the
// tolerance unless the case allows going beyond it) and a Rebuilding member
// whose device still works.
func (c *rprop) faultTargets() []int {
	var out []int
	lost := c.lost()
	for i := range c.g.Members {
		switch {
		case !lost[i]:
			if c.allowBeyond || c.survivesWith(i) {
				out = append(out, i)
			}
		case c.rebuilding[i] && !c.broken[i] && !c.opFailed[i]:
			out = append(out, i)
		}
	}
	return out
}

// fault fails member i: by the operator (Fail) or by a device fault. While
// a rebuild runs, concurrent says whether it is rebuilding a stripe right
// now (rather than parked between stripes).
func (c *rprop) fault(i int, concurrent bool) {
	c.t.Helper()
	if c.once != nil {
		// a pending one-shot read fault plus a new loss could exceed
		// the redundancy the test counted on
		c.once.clearOnce()
		c.once = nil
	}
	rr := c.run
	onRun := rr != nil && rr.member == i // the run may have ended, not yet checked
	during := false
	if c.running() {
		p := c.a.Progress()
		during = p.Op == "rebuild" && p.State == OpRunning && p.Member == rr.member
	}
	mustFail := onRun && !rr.ended && rr.parked && !concurrent
	switch c.r.IntN(4) {
	case 0:
		st := c.a.members[i].State()
		surv := c.survivesWith(i)
		// The array's own view, exact while no stripe is being rebuilt:
		// Fail refuses an InSync member only if the array would fail
		// for it (on the mirrors: if its copy group would), even when
		// the array has failed already.
		down := map[int]bool{i: true}
		for j := range c.g.Members {
			if c.a.members[j].State() != InSync && (!c.a.mirror || j/c.g.CopyCount() == i/c.g.CopyCount()) {
				down[j] = true
			}
		}
		err := c.a.Fail(i)
		if want := st == Rebuilding || wouldSurvive(c.g, down); !concurrent && want != (err == nil) {
			c.fatalf("Fail(%d) of a %v member: %v, want success %v", i, st, err, want)
		}
		if err != nil {
			if surv {
				c.fatalf("Fail(%d) refused though the array survives it: %v", i, err)
			}
			return // refused: the member keeps its data
		}
		if !errors.Is(c.a.Status().Members[i].Err, ErrFailedByOperator) {
			c.fatalf("member %d failed by the operator: error %v", i, c.a.Status().Members[i].Err)
		}
		c.opFailed[i] = true
	case 1:
		c.devs[i].kill()
		c.broken[i] = true
	case 2:
		c.devs[i].setFailWrites(true)
		c.broken[i] = true
	default:
		// may never fire: the member might still complete its rebuild
		c.devs[i].killAfter(1 + c.r.IntN(20))
		c.broken[i] = true
		mustFail = false
	}
	if during {
		c.failDuring++
	}
	if onRun {
		rr.touched = true
		rr.hit = rr.hit || mustFail
	}
}

func (c *rprop) randomFault(concurrent bool) {
	c.t.Helper()
	if ts := c.faultTargets(); len(ts) > 0 {
		c.fault(ts[c.r.IntN(len(ts))], concurrent)
	}
}

// readFault arms a one-shot read fault on a good member, only where the
// array can serve the data without it.
func (c *rprop) readFault() {
	if c.once != nil {
		return
	}
	i := c.r.IntN(c.g.Members)
	if c.lost()[i] || !c.survivesWith(i) {
		return
	}
	off := c.r.Int64N(c.g.MemberSize)
	c.once = c.devs[i]
	c.once.failReadOnce(off, 1+c.r.Int64N(min(c.g.MemberSize-off, 8192)))
}

// replace puts a fresh device in a Faulty slot, by Replace or by Remove and
// Add.
func (c *rprop) replace() {
	c.t.Helper()
	var slots []int
	for i := range c.g.Members {
		if c.a.members[i].State() == Faulty && !(c.run != nil && c.run.member == i) {
			slots = append(slots, i)
		}
	}
	if len(slots) == 0 {
		return
	}
	i := slots[c.r.IntN(len(slots))]
	if !c.lost()[i] {
		c.fatalf("member %d is faulty though the test broke nothing on it", i)
	}
	if c.once == c.devs[i] {
		c.once = nil
	}
	nd := newFaultDev(c.g.MemberSize)
	if c.r.IntN(3) == 0 {
		if err := c.a.Remove(i); err != nil {
			c.fatalf("Remove(%d): %v", i, err)
		}
		j, err := c.a.Add(nd)
		if err != nil || j != i {
			c.fatalf("Add: slot %d, %v; want slot %d", j, err, i)
		}
	} else if err := c.a.Replace(i, nd); err != nil {
		c.fatalf("Replace(%d): %v", i, err)
	}
	c.devs[i] = nd
	c.broken[i], c.opFailed[i], c.rebuilding[i] = false, false, true
}

// startRebuild starts Rebuild of a Rebuilding slot (fresh, or resuming a
// canceled run) in a goroutine, parked before its first stripe; forceFault
// schedules a fault in the middle of it.
func (c *rprop) startRebuild(forceFault bool) {
	c.t.Helper()
	if c.run != nil {
		return
	}
	var slots []int
	for i := range c.g.Members {
		if c.a.members[i].State() == Rebuilding {
			slots = append(slots, i)
		}
	}
	if len(slots) == 0 {
		return
	}
	i := slots[c.r.IntN(len(slots))]
	C := c.g.ChunkSize
	ctx, cancel := context.WithCancel(context.Background())
	rr := &rebuildRun{member: i, clk: newGateClock(), cancel: cancel, done: make(chan error, 1), failAt: -1}
	rr.touched = c.broken[i] // a device broken before the run may fail it
	left := int((c.g.MemberSize - c.a.members[i].rebuilt.Load()) / C)
	if left > 1 && (forceFault || c.r.IntN(2) == 0) {
		rr.failAt = 1 + c.r.IntN(left-1) // stripes left on both sides
	}
	opts := RebuildOptions{Rate: C, Burst: 1, Clock: rr.clk}
	if c.r.IntN(2) == 0 {
		opts.CheckpointEvery = (1 + c.r.Int64N(4)) * C
		opts.Checkpoint = func(off int64) error { rr.cps = append(rr.cps, off); return nil }
	}
	go func() { rr.done <- c.a.Rebuild(ctx, i, opts) }()
	c.run = rr
	rr.settle()
}

// stepRebuild lets the running rebuild do a few stripes, sometimes with a
// read, write or fault at the same time, and fires its scheduled fault.
func (c *rprop) stepRebuild() {
	c.t.Helper()
	for range 1 + c.r.IntN(4) {
		if !c.running() {
			return
		}
		var op func()
		switch c.r.IntN(20) {
		case 0, 1, 2, 3:
			op = c.write
		case 4, 5, 6:
			op = c.randomRead
		case 7:
			op = func() { c.randomFault(true) }
		}
		c.run.step(op)
		c.invariants()
		if rr := c.run; !rr.ended && rr.failAt >= 0 && rr.stripes >= rr.failAt {
			rr.failAt = -1
			c.randomFault(false)
			c.write()
			c.randomRead()
			c.invariants()
		}
	}
}

// finishRun waits for the rebuild to end (driving it to completion, or
// canceling it when cancel is set) and checks its outcome.
func (c *rprop) finishRun(cancel bool) {
	c.t.Helper()
	rr := c.run
	if rr == nil {
		return
	}
	if cancel && rr.failAt < 0 {
		rr.settle()
		if !rr.ended {
			rr.canceled = true
			rr.stop()
		}
	}
	for c.running() {
		c.stepRebuild()
	}
	c.run = nil
	i, err := rr.member, rr.err
	for j := 1; j < len(rr.cps); j++ {
		if rr.cps[j] < rr.cps[j-1] {
			c.fatalf("rebuild of %d: checkpoints went back: %v", i, rr.cps)
		}
	}
	p := c.a.Progress()
	if p.Op != "rebuild" || p.Member != i {
		c.fatalf("progress after the rebuild of %d", i)
	}
	st := c.a.members[i].State()
	switch {
	case err == nil:
		if rr.hit {
			c.fatalf("rebuild of %d succeeded though the member was failed with stripes left", i)
		}
		if p.State != OpDone || p.Done != p.Total {
			c.fatalf("rebuild of %d succeeded: bad progress", i)
		}
		if len(rr.cps) > 0 && rr.cps[len(rr.cps)-1] != c.g.MemberSize {
			c.fatalf("rebuild of %d succeeded: last checkpoint %v", i, rr.cps)
		}
		c.rebuilding[i] = false
		c.rebuildsDone++
		if !rr.touched {
			if st != InSync {
				c.fatalf("rebuild of %d succeeded but the member is %v", i, st)
			}
			c.checkImage(i)
		}
		if len(c.lost()) == 0 {
			c.checkClean()
		}
	case rr.canceled:
		if !errors.Is(err, context.Canceled) || p.State != OpCanceled {
			c.fatalf("canceled rebuild of %d: %v", i, err)
		}
		if !rr.touched && st != Rebuilding {
			c.fatalf("canceled rebuild of %d: member is %v, want rebuilding", i, st)
		}
	default:
		if !rr.touched && c.survivable() {
			c.fatalf("rebuild of %d failed though nothing hit it and no data is lost: %v", i, err)
		}
		if p.State != OpFailed || p.Err == nil {
			c.fatalf("failed rebuild of %d: bad progress", i)
		}
		// A broken replacement shows only when written: a rebuild that
		// stops first, for want of sources, leaves it Rebuilding.
		if (c.opFailed[i] || rr.hit && !errors.Is(err, ErrTooManyFailed)) && st != Faulty {
			c.fatalf("rebuild of %d stopped by its member failing, but the member is %v: %v", i, st, err)
		}
	}
	c.invariants()
}

// expectedChunk returns what the model says member i holds at stripe s, or
// nil if that depends on unknown bytes.
func (c *rprop) expectedChunk(i int, s int64) []byte {
	g, C := c.g, c.g.ChunkSize
	info := g.Stripe(s)
	data := func(j int) []byte {
		lo := info.Logical + int64(j)*C
		for _, k := range c.known[lo : lo+C] {
			if !k {
				return nil
			}
		}
		return c.model[lo : lo+C]
	}
	if c.a.mirror {
		for j, copies := range info.Copies {
			if containsInt(copies, i) {
				return data(j)
			}
		}
		return nil
	}
	ds := make([][]byte, len(info.Data))
	for j, m := range info.Data {
		if ds[j] = data(j); m == i {
			return ds[j]
		}
	}
	for _, d := range ds {
		if d == nil {
			return nil
		}
	}
	par := [][]byte{make([]byte, C)}
	if info.Q >= 0 {
		par = append(par, make([]byte, C))
	}
	if err := c.a.par.Encode(ds, par); err != nil {
		c.t.Fatal(err)
	}
	if i == info.P {
		return par[0]
	}
	return par[1]
}

// checkImage checks that member i's device holds exactly what the model
// says, wherever the model knows: a rebuild that reports success must have
// left nothing stale.
func (c *rprop) checkImage(i int) {
	c.t.Helper()
	raw := c.devs[i].Mem.Bytes()
	C := c.g.ChunkSize
	for s := range c.g.Stripes() {
		want := c.expectedChunk(i, s)
		if want != nil && !bytes.Equal(raw[s*C:(s+1)*C], want) {
			c.fatalf("member %d, stripe %d: device differs from the model", i, s)
		}
	}
}

// checkClean checks an optimal array: the whole of it reads as the model,
// a Scrub without repair finds nothing, every copy and parity agrees.
func (c *rprop) checkClean() {
	c.t.Helper()
	if c.once != nil {
		c.once.clearOnce()
		c.once = nil
	}
	got := make([]byte, c.g.Size())
	if err := c.a.ReadAt(got, 0); err != nil {
		c.fatalf("full read: %v", err)
	}
	c.compare(got, 0)
	res, err := c.a.Scrub(context.Background(), ScrubOptions{})
	if err != nil || res.Mismatches != 0 || res.Skipped != 0 || res.ReadErrors != 0 {
		c.fatalf("scrub: %+v, %v", res, err)
	}
	verifyStripes(c.t, c.a, c.devs)
	for i := range c.g.Members {
		c.checkImage(i)
	}
}

// heal fails every member the test broke, replaces every faulty one and
// rebuilds them all, with no more faults: the array must end optimal and
// clean.
func (c *rprop) heal() {
	c.t.Helper()
	for i := range c.g.Members {
		if st := c.a.members[i].State(); c.broken[i] && (st == InSync || st == Rebuilding) {
			if err := c.a.Fail(i); err != nil {
				c.fatalf("heal: Fail(%d): %v", i, err)
			}
			c.opFailed[i] = true
		}
	}
	for c.a.countState(Faulty) > 0 {
		c.replace()
	}
	for i := range c.g.Members {
		if c.a.members[i].State() != Rebuilding {
			continue
		}
		if err := c.a.Rebuild(context.Background(), i, RebuildOptions{}); err != nil {
			c.fatalf("heal: Rebuild(%d): %v", i, err)
		}
		c.rebuilding[i] = false
		c.checkImage(i)
	}
	checkOptimal(c.t, c.a)
	c.checkClean()
}

// checkReachable is the check once data may be lost, with nothing running:
// each chunk that some readable in-sync member can still serve reads as the
// model, and every other chunk fails with ErrTooManyFailed.
func (c *rprop) checkReachable() {
	c.t.Helper()
	if c.once != nil {
		c.once.clearOnce()
		c.once = nil
	}
	for _, d := range c.devs {
		d.mu.Lock()
		if d.failAfter > 0 { // a countdown would make the outcome depend on the read order
			d.failAfter, d.dead = 0, true
		}
		d.mu.Unlock()
	}
	usable := func(i int) bool {
		d := c.devs[i]
		d.mu.Lock()
		defer d.mu.Unlock()
		return c.a.members[i].State() == InSync && !d.dead
	}
	g, C := c.g, c.g.ChunkSize
	for s := range g.Stripes() {
		info := g.Stripe(s)
		for j := range info.Data {
			var ok bool
			if c.a.mirror {
				for _, m := range info.Copies[j] {
					ok = ok || usable(m)
				}
			} else if usable(info.Data[j]) {
				ok = true
			} else {
				n := 0
				for _, m := range c.a.stripeMembers(s) {
					if m != info.Data[j] && usable(m) {
						n++
					}
				}
				ok = n >= c.a.k
			}
			off := info.Logical + int64(j)*C
			got := make([]byte, C)
			err := c.a.ReadAt(got, off)
			switch {
			case ok && err != nil:
				c.fatalf("chunk at %d is reachable but its read failed: %v", off, err)
			case !ok && !errors.Is(err, ErrTooManyFailed):
				c.fatalf("chunk at %d is lost but its read returned %v, want ErrTooManyFailed", off, err)
			case ok:
				c.compare(got, off)
				c.served++
			default:
				c.refused++
			}
		}
	}
}

// countState returns how many members are in state st.
func (a *Array) countState(st MemberState) int {
	n := 0
	for _, m := range a.members {
		if m.State() == st {
			n++
		}
	}
	return n
}

// TestRebuildProperty drives every level with random writes and reads
// against a model while members fail at random points, by device faults and
// by the operator, including while a rebuild runs: the rebuild is released
// stripe by stripe (a gated rate-limit clock) so that I/O, fault injection,
// replacement and cancellation interleave with it, sometimes while it is
// rebuilding a stripe. It proves that, as long as the members the test
// still counts as holding all data would survive the level, every read
// returns the model's bytes, every write succeeds and the array is not
// Failed; that a rebuild that succeeds leaves its member InSync with exactly
// the model's contents (and, on an optimal array, a clean full read, Scrub
// and parity/mirror check); that a rebuild whose member is failed does not
// report success; and that once data is lost, the chunks no readable member
// can serve are refused with ErrTooManyFailed while the rest still read
// right.
func TestRebuildProperty(t *testing.T) {
	var mu sync.Mutex
	var total rprop
	t.Run("cases", func(t *testing.T) {
		for _, cfg := range arrayConfigs(16) {
			for seed := uint64(1); seed <= 6; seed++ {
				t.Run(fmt.Sprintf("%s/seed%d", cfg.name, seed), func(t *testing.T) {
					t.Parallel()
					c := testRebuildProperty(t, cfg.g, seed)
					mu.Lock()
					defer mu.Unlock()
					total.rebuildsDone += c.rebuildsDone
					total.refused += c.refused
					total.served += c.served
				})
			}
		}
	})
	// The seeds must reach every outcome the test checks.
	if !t.Failed() && (total.rebuildsDone == 0 || total.refused == 0 || total.served == 0) {
		t.Fatalf("the seeds miss an outcome: %d rebuilds completed, %d lost chunks refused, %d served after data loss",
			total.rebuildsDone, total.refused, total.served)
	}
}

func testRebuildProperty(t *testing.T, g Geometry, seed uint64) *rprop {
	r := rand.New(rand.NewPCG(seed, 0xeb1d+uint64(g.Level)*100+uint64(g.Members)))
	a, devs := newTestArray(t, g)
	c := &rprop{
		t: t, g: g, r: r, a: a, devs: devs,
		model:      make([]byte, g.Size()),
		known:      make([]bool, g.Size()),
		broken:     make([]bool, g.Members),
		opFailed:   make([]bool, g.Members),
		rebuilding: make([]bool, g.Members),
	}
	beyond := r.IntN(2) == 0
	for i := range c.known {
		c.known[i] = true
	}
	t.Cleanup(func() {
		if c.run != nil {
			c.run.stop()
		}
	})
	for range 20 {
		c.write()
	}
	// A first rebuild right away, with a fault scheduled in its middle, so
	// that every case fails something while a rebuild runs.
	c.op = -1
	c.fault(r.IntN(g.Members), false)
	for c.a.countState(Faulty) == 0 {
		c.randomRead() // a device fault shows on the next I/O (or the next write)
		c.write()
	}
	c.replace()
	c.startRebuild(true)

	for op := range 400 {
		c.op = op
		// Beyond the tolerance only late, so that every case first
		// completes rebuilds with the data intact.
		c.allowBeyond = beyond && op >= 300
		switch x := r.IntN(100); {
		case x < 25:
			c.write()
		case x < 48:
			c.randomRead()
		case x < 75:
			if c.running() {
				c.stepRebuild()
			} else {
				c.finishRun(false)
				c.startRebuild(false)
			}
		case x < 78:
			c.randomFault(false)
		case x < 82:
			c.readFault()
		case x < 90:
			c.replace()
		case x < 93:
			if c.running() && c.run.failAt < 0 && r.IntN(2) == 0 {
				c.finishRun(true) // resumed by a later startRebuild
			}
		default:
			if !c.running() {
				c.finishRun(false)
				c.startRebuild(false)
			}
		}
		if c.run != nil && c.run.ended {
			c.finishRun(false)
		}
		c.invariants()
	}
	c.op = -2
	if c.run != nil {
		c.finishRun(r.IntN(2) == 0)
	}
	if c.failDuring == 0 || c.ioDuring == 0 {
		t.Fatalf("nothing interleaved with a rebuild: %d faults, %d reads/writes during one", c.failDuring, c.ioDuring)
	}
	if c.survivable() {
		got := make([]byte, g.Size())
		if err := a.ReadAt(got, 0); err != nil {
			c.fatalf("full read: %v", err)
		}
		c.compare(got, 0)
		c.heal()
	} else {
		c.checkReachable()
	}
	t.Logf("beyond %v: %d rebuilds completed, %d faults and %d reads/writes during rebuilds, survivable %v",
		beyond, c.rebuildsDone, c.failDuring, c.ioDuring, c.survivable())
	return c
}
