package raid

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/blockrep/blockrep/block"
)

// This file holds the operator side of an Array: Fail, Remove, Replace and
// Add change members; Rebuild fills a replacement from redundancy; Scrub
// checks (and repairs) mirrors and parity; Progress reports on the last two.
//
// A replacement member is Rebuilding with a checkpoint, the member offset
// below which it holds current data. Rebuild copies it stripe by stripe,
// each under its stripe lock, and moves the checkpoint past the stripe
// before letting go of the lock. Array writes reach a Rebuilding member
// only below its checkpoint (above it, the rebuild will copy them), and
// reads never come from it; so the member is current below the checkpoint
// at every moment, and wholly current, InSync, when the rebuild ends.

// ErrBusy is wrapped by the error of a Rebuild or Scrub started while
// another one runs on the array, and of Replace, Add or Remove on the member
// a rebuild still works on.
var ErrBusy = errors.New("raid: a rebuild or scrub is running")

// Clock is the time source of the rate limiter of Rebuild and Scrub; tests
// inject a fake one. Sleep returns early with ctx's error when ctx is done.
type Clock interface {
	Now() time.Time
	Sleep(ctx context.Context, d time.Duration) error
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// limiter is a token bucket: rate bytes per second, at most burst bytes
// saved up. wait takes n tokens, sleeping off any debt; nil means no limit.
type limiter struct {
	clock       Clock
	rate, burst float64
	tokens      float64
	last        time.Time
}

func newLimiter(rate, burst int64, clock Clock) *limiter {
	if rate <= 0 {
		return nil
	}
	l := &limiter{clock: clock, rate: float64(rate), burst: float64(burst)}
	l.tokens, l.last = l.burst, clock.Now()
	return l
}

func (l *limiter) wait(ctx context.Context, n int64) error {
	if l == nil {
		return nil
	}
	now := l.clock.Now()
	if el := now.Sub(l.last).Seconds(); el > 0 {
		l.tokens = min(l.burst, l.tokens+el*l.rate)
	}
	l.last = now
	l.tokens -= float64(n)
	if l.tokens >= 0 {
		return nil
	}
	d := time.Duration(math.Ceil(-l.tokens / l.rate * float64(time.Second)))
	return l.clock.Sleep(ctx, d)
}

// OpState is the state of a rebuild or scrub.
type OpState string

// The OpStates.
const (
	OpIdle     OpState = "idle" // none has run
	OpRunning  OpState = "running"
	OpDone     OpState = "done"
	OpCanceled OpState = "canceled" // ctx canceled; a rebuild keeps its checkpoint
	OpFailed   OpState = "failed"
)

// Progress is a snapshot of the array's rebuild or scrub, the running one
// or else the last one.
type Progress struct {
	// Op is "rebuild", "scrub" or "" (none has run).
	Op    string
	State OpState
	// Member is the member being rebuilt, -1 for a scrub.
	Member int
	// MemberState is the state of Member now (InSync after a rebuild).
	MemberState MemberState
	// Done and Total are member bytes: the checkpoint and the member size
	// for a rebuild (Done starts at the checkpoint it resumed from), the
	// member offset reached for a scrub.
	Done, Total int64
	// Rate is the average speed in member bytes per second since this run
	// started, by the run's Clock.
	Rate float64
	// Err is why the operation stopped, if it failed or was canceled.
	Err error
}

// background is the operator state of an Array: the Array field bg.
type background struct {
	mu      sync.Mutex // serializes Fail, Remove, Replace, Add and the start and end of runs
	running bool
	prog    Progress
	start   time.Time
	from    int64 // Done when the run started
	clock   Clock
}

// Progress returns the progress of the running rebuild or scrub, or of the
// last one.
func (a *Array) Progress() Progress {
	a.bg.mu.Lock()
	defer a.bg.mu.Unlock()
	p := a.bg.prog
	if p.Op == "" {
		p.State, p.Member = OpIdle, -1
		return p
	}
	if p.Member >= 0 {
		p.MemberState = a.members[p.Member].State()
	}
	return p
}

// begin starts a run, refusing a second one; check runs under the lock.
func (a *Array) begin(op string, member int, done, total int64, clock Clock, check func() error) error {
	a.bg.mu.Lock()
	defer a.bg.mu.Unlock()
	if a.closed.Load() {
		return fmt.Errorf("raid: %s %s: array is closed", op, a.name)
	}
	if a.bg.running {
		return fmt.Errorf("raid: %s %s: %w (%s of member %d)", op, a.name, ErrBusy, a.bg.prog.Op, a.bg.prog.Member)
	}
	if check != nil {
		if err := check(); err != nil {
			return err
		}
	}
	a.bg.running = true
	a.bg.prog = Progress{Op: op, State: OpRunning, Member: member, Done: done, Total: total}
	a.bg.start, a.bg.from, a.bg.clock = clock.Now(), done, clock
	return nil
}

// advance records progress.
func (a *Array) advance(done int64) {
	a.bg.mu.Lock()
	defer a.bg.mu.Unlock()
	a.bg.prog.Done = done
	if el := a.bg.clock.Now().Sub(a.bg.start).Seconds(); el > 0 {
		a.bg.prog.Rate = float64(done-a.bg.from) / el
	}
}

// end ends a run with err.
func (a *Array) end(err error) {
	a.bg.mu.Lock()
	defer a.bg.mu.Unlock()
	a.bg.running = false
	a.bg.prog.Err = err
	switch {
	case err == nil:
		a.bg.prog.State = OpDone
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		a.bg.prog.State = OpCanceled
	default:
		a.bg.prog.State = OpFailed
	}
}

// busyWith reports whether a rebuild of member i is running; under bg.mu.
func (a *Array) busyWith(i int) bool {
	return a.bg.running && a.bg.prog.Op == "rebuild" && a.bg.prog.Member == i
}

// device returns the member's device: nil for a slot empty since assembly,
// removedDevice after Remove.
func (m *member) device() block.Device {
	m.devMu.RLock()
	defer m.devMu.RUnlock()
	return m.dev
}

func (m *member) setDevice(dev block.Device) {
	m.devMu.Lock()
	m.dev = dev
	m.devMu.Unlock()
	// Another device: the old one's read errors say nothing of it.
	m.mu.Lock()
	m.corrected, m.correctedAt = 0, time.Time{}
	m.mu.Unlock()
	m.short.Store(false)
}

// empty reports whether the slot has no device.
func (m *member) empty() bool {
	d := m.device()
	_, removed := d.(removedDevice)
	return d == nil || removed
}

// writable reports whether array writes at member offset off go to the
// member: it is InSync, or Rebuilding and off is below its checkpoint.
func (m *member) writable(off int64) bool {
	switch m.State() {
	case InSync:
		return true
	case Rebuilding:
		return off < m.rebuilt.Load()
	}
	return false
}

// errRemoved is the error of I/O still in flight on a member removed.
var errRemoved = errors.New("raid: member removed")

// removedDevice stands in for the device of a removed member, failing any
// I/O still in flight when it was removed.
type removedDevice struct{}

func (removedDevice) Size() int64                                     { return 0 }
func (removedDevice) ReadAt([]byte, int64) error                      { return errRemoved }
func (removedDevice) WriteAt([]byte, int64, bool) error               { return errRemoved }
func (removedDevice) Flush() error                                    { return errRemoved }
func (removedDevice) Trim(int64, int64) error                         { return errRemoved }
func (removedDevice) WriteZeroes(int64, int64, block.ZeroFlags) error { return errRemoved }
func (removedDevice) Cache(int64, int64) error                        { return errRemoved }
func (removedDevice) Close() error                                    { return nil }
func (removedDevice) Extents(int64, int64, func(block.Extent) bool) error {
	return errRemoved
}

// ErrFailedByOperator is the member error recorded by Fail.
var ErrFailedByOperator = errors.New("failed by operator")

func (a *Array) memberArg(op string, index int) (*member, error) {
	if index < 0 || index >= len(a.members) {
		return nil, fmt.Errorf("raid: %s %s member %d: no such member (the array has members 0..%d)", op, a.name, index, len(a.members)-1)
	}
	if a.closed.Load() {
		return nil, fmt.Errorf("raid: %s %s member %d: array is closed", op, a.name, index)
	}
	return a.members[index], nil
}

// survivesLosing reports whether the array stays usable (not HealthFailed)
// if the InSync member i fails too.
func (a *Array) survivesLosing(i int) bool {
	if !a.mirror {
		return len(a.faultyMembers())+1 <= a.m
	}
	c := a.g.CopyCount()
	first := i - i%c
	for j := first; j < first+c; j++ {
		if j != i && a.members[j].inSync() {
			return true
		}
	}
	return false
}

// Fail marks member index Faulty, as mdadm --fail: it is neither read nor
// written again, and its data is served from redundancy. Failing an InSync
// member the array cannot do without (the last in-sync copy of some data,
// or one more member than the level tolerates) is refused. Failing a
// Rebuilding member stops its rebuild.
func (a *Array) Fail(index int) error {
	a.bg.mu.Lock()
	defer a.bg.mu.Unlock()
	m, err := a.memberArg("fail", index)
	if err != nil {
		return err
	}
	switch st := m.State(); st {
	case InSync:
		if !a.survivesLosing(index) {
			return fmt.Errorf("raid: fail %s member %d: refused: the %v array (faulty members %v) would fail without it", a.name, index, a.g.Level, a.faultyMembers())
		}
	case Rebuilding:
	default:
		return fmt.Errorf("raid: fail %s member %d: the member is already %v", a.name, index, st)
	}
	a.fail(index, "fail (operator)", 0, ErrFailedByOperator)
	return nil
}

// Remove takes the Faulty member index out of the array, as mdadm --remove:
// its device is closed and the slot is empty, ready for Add or Replace. A
// member that is not Faulty is refused (Fail it first).
func (a *Array) Remove(index int) error {
	a.bg.mu.Lock()
	defer a.bg.mu.Unlock()
	m, err := a.memberArg("remove", index)
	if err != nil {
		return err
	}
	if st := m.State(); st != Faulty {
		return fmt.Errorf("raid: remove %s member %d: the member is %v; only a faulty member can be removed (fail it first)", a.name, index, st)
	}
	if m.empty() {
		return fmt.Errorf("raid: remove %s member %d: the slot is already empty", a.name, index)
	}
	if a.busyWith(index) {
		return fmt.Errorf("raid: remove %s member %d: %w: its rebuild is still stopping, retry", a.name, index, ErrBusy)
	}
	old := m.device()
	m.setDevice(removedDevice{})
	m.mu.Lock()
	m.err = errors.New("removed")
	m.mu.Unlock()
	a.log.Warn("raid: member removed", "array", a.name, "member", index)
	if err := old.Close(); err != nil {
		return fmt.Errorf("raid: remove %s member %d: closing the device: %w", a.name, index, err)
	}
	return nil
}

// Replace puts dev in the Faulty (or removed) slot index as a Rebuilding
// member with checkpoint 0; Rebuild then fills it. dev must be at least
// MemberSize bytes. A Faulty device still in the slot is closed. The array
// owns dev from then on (Close closes it).
func (a *Array) Replace(index int, dev block.Device) error {
	return a.ResumeReplace(index, dev, 0)
}

// ResumeReplace is Replace for a device whose rebuild was interrupted: it
// already holds current data below member offset checkpoint (the
// superblock's SlotStatus.RebuildOffset, rounded down to a chunk), so Rebuild
// resumes there.
func (a *Array) ResumeReplace(index int, dev block.Device, checkpoint int64) error {
	a.bg.mu.Lock()
	defer a.bg.mu.Unlock()
	return a.replaceLocked("replace", index, dev, checkpoint)
}

// Add puts dev in the lowest empty (removed, or absent at assembly) slot as
// a Rebuilding member, as mdadm --add, and returns the slot.
func (a *Array) Add(dev block.Device) (int, error) {
	a.bg.mu.Lock()
	defer a.bg.mu.Unlock()
	for i, m := range a.members {
		if m.State() == Faulty && m.empty() {
			return i, a.replaceLocked("add", i, dev, 0)
		}
	}
	return -1, fmt.Errorf("raid: add to %s: no empty slot (faulty members %v; remove a faulty one first)", a.name, a.faultyMembers())
}

func (a *Array) replaceLocked(op string, index int, dev block.Device, checkpoint int64) error {
	m, err := a.memberArg(op, index)
	if err != nil {
		return err
	}
	if dev == nil {
		return fmt.Errorf("raid: %s %s member %d: nil device", op, a.name, index)
	}
	if st := m.State(); st != Faulty {
		return fmt.Errorf("raid: %s %s member %d: the member is %v; only a faulty or removed member can be replaced", op, a.name, index, st)
	}
	if a.busyWith(index) {
		return fmt.Errorf("raid: %s %s member %d: %w: its rebuild is still stopping, retry", op, a.name, index, ErrBusy)
	}
	if dev.Size() < a.g.MemberSize {
		return fmt.Errorf("raid: %s %s member %d: the device is %d bytes, want at least MemberSize=%d", op, a.name, index, dev.Size(), a.g.MemberSize)
	}
	if checkpoint < 0 || checkpoint > a.g.MemberSize {
		return fmt.Errorf("raid: %s %s member %d: checkpoint %d outside [0, MemberSize=%d]", op, a.name, index, checkpoint, a.g.MemberSize)
	}
	if old := m.device(); old != nil {
		if err := old.Close(); err != nil {
			a.log.Warn("raid: closing replaced member", "array", a.name, "member", index, "err", err)
		}
	}
	m.setDevice(dev)
	m.rebuilt.Store(checkpoint - checkpoint%a.g.ChunkSize)
	m.mu.Lock()
	m.err = nil
	m.mu.Unlock()
	m.state.Store(int32(Rebuilding)) // publishes dev and the checkpoint
	a.log.Info("raid: member replaced, to rebuild", "array", a.name, "member", index, "checkpoint", m.rebuilt.Load())
	return nil
}

// RebuildOptions qualify Rebuild.
type RebuildOptions struct {
	// Rate limits the rebuild to this many member bytes per second (a
	// token bucket, like md's sync_speed_max); 0 is unlimited.
	Rate int64
	// Burst is the bucket size in bytes; 0 means one chunk.
	Burst int64
	// Clock times the rate limit; nil is real time.
	Clock Clock
	// Checkpoint, if set, persists the rebuild checkpoint (for the
	// superblock's SlotStatus.RebuildOffset): it is called, after the
	// replacement device is flushed, every CheckpointEvery bytes, when the
	// rebuild stops early (ctx canceled or an error) and with MemberSize
	// when it completes. Its error stops the rebuild.
	Checkpoint func(offset int64) error
	// CheckpointEvery is the bytes between Checkpoint calls, rounded up to
	// a chunk; 0 means 64 MiB.
	CheckpointEvery int64
}

// Rebuild fills the Rebuilding member index from the other members, from
// its checkpoint to the end, stripe by stripe under the stripe lock: the
// mirrors copy the chunk from an in-sync copy; RAID 5/6 reconstruct it from
// the rest of the stripe. The array serves I/O meanwhile. On success the
// member is InSync.
//
// It returns early, the member staying Rebuilding with its checkpoint, when
// ctx is done (ctx's error) or when the data cannot be rebuilt (an error
// wrapping ErrTooManyFailed); it fails the member if a write to it fails.
// Only one Rebuild or Scrub runs at a time (ErrBusy). Run it in a goroutine
// for a background rebuild and watch Progress. Other Rebuilding members
// whose checkpoint the rebuild reaches are filled along (rebuildAlong), so
// that their own Rebuild, run next, has nothing left to read.
func (a *Array) Rebuild(ctx context.Context, index int, opts RebuildOptions) (err error) {
	m, err := a.memberArg("rebuild", index)
	if err != nil {
		return err
	}
	clock := opts.Clock
	if clock == nil {
		clock = realClock{}
	}
	C, size := a.g.ChunkSize, a.g.MemberSize
	err = a.begin("rebuild", index, m.rebuilt.Load(), size, clock, func() error {
		if st := m.State(); st != Rebuilding {
			return fmt.Errorf("raid: rebuild %s member %d: the member is %v, not rebuilding (Replace it first)", a.name, index, st)
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer func() { a.end(err) }()
	burst := opts.Burst
	if burst <= 0 {
		burst = C
	}
	lim := newLimiter(opts.Rate, burst, clock)
	every := opts.CheckpointEvery
	if every <= 0 {
		every = 64 << 20
	}
	every = (every + C - 1) / C * C
	saved := m.rebuilt.Load()
	persist := func(off int64) error {
		if opts.Checkpoint == nil {
			return nil
		}
		if err := m.device().Flush(); err != nil {
			a.fail(index, "flush (rebuild)", off, err)
			return fmt.Errorf("raid: rebuild %s member %d: flush: %w", a.name, index, err)
		}
		if err := opts.Checkpoint(off); err != nil {
			return fmt.Errorf("raid: rebuild %s member %d: checkpoint at %d: %w", a.name, index, off, err)
		}
		saved = off
		return nil
	}
	stop := func(cause error) error {
		if off := m.rebuilt.Load(); off > saved && m.State() == Rebuilding {
			if perr := persist(off); perr != nil {
				return errors.Join(cause, perr)
			}
		}
		return cause
	}
	a.log.Info("raid: rebuild started", "array", a.name, "member", index, "from", m.rebuilt.Load(), "size", size, "rate", opts.Rate)
	for off := m.rebuilt.Load(); off < size; off = m.rebuilt.Load() {
		if err := ctx.Err(); err != nil {
			return stop(fmt.Errorf("raid: rebuild %s member %d stopped at %d: %w", a.name, index, off, err))
		}
		if err := lim.wait(ctx, C); err != nil {
			return stop(fmt.Errorf("raid: rebuild %s member %d stopped at %d: %w", a.name, index, off, err))
		}
		if err := a.rebuildStripe(m, off/C); err != nil {
			return stop(err)
		}
		done := m.rebuilt.Load()
		a.advance(done)
		if done-saved >= every && done < size {
			if err := persist(done); err != nil {
				return stop(err)
			}
		}
	}
	if err := m.device().Flush(); err != nil {
		a.fail(index, "flush (rebuild)", size, err)
		return fmt.Errorf("raid: rebuild %s member %d: flush: %w", a.name, index, err)
	}
	if opts.Checkpoint != nil {
		if err := opts.Checkpoint(size); err != nil {
			return fmt.Errorf("raid: rebuild %s member %d: checkpoint at %d: %w", a.name, index, size, err)
		}
	}
	if !m.state.CompareAndSwap(int32(Rebuilding), int32(InSync)) {
		return fmt.Errorf("raid: rebuild %s member %d: the member became %v: %v", a.name, index, m.State(), m.failErr())
	}
	a.log.Info("raid: rebuild done", "array", a.name, "member", index, "health", a.health().String())
	return nil
}

// rebuildStripe rebuilds the chunk of stripe s on the Rebuilding member m
// and moves its checkpoint past it, under the stripe lock.
func (a *Array) rebuildStripe(m *member, s int64) error {
	C := a.g.ChunkSize
	off, logical := s*C, s*a.g.StripeSize()
	mu := a.lock(s)
	mu.Lock()
	defer mu.Unlock()
	if st := m.State(); st != Rebuilding {
		return fmt.Errorf("raid: rebuild %s member %d stopped at %d: the member is %v: %v", a.name, m.index, off, st, m.failErr())
	}
	var data []byte
	// chunksOf returns the reconstructed chunk of stripe s on a member
	// (RAID 5/6), for rebuildAlong.
	chunksOf := func(int) []byte { return nil }
	if a.mirror {
		bufs, release := getBufs(1, C)
		defer release()
		src, errored, lastErr := a.readCopy(bufs[0], m.index, off, m.index, nil)
		if src < 0 {
			return a.tooMany("rebuild", logical, a.g.StripeSize(), lastErr)
		}
		a.repair(errored, bufs[0], off, logical, lastErr)
		data = bufs[0]
	} else {
		idx := a.stripeMembers(s)
		bufs, release := getBufs(len(idx), C)
		defer release()
		target := slices.Index(idx, m.index)
		missing, errored, lastErr := a.readStripe(idx, bufs, off, target, a.k)
		if len(idx)-len(missing) < a.k {
			return a.tooMany("rebuild", logical, a.g.StripeSize(), lastErr)
		}
		chunks := slices.Clone(bufs)
		if err := a.par.Reconstruct(chunks, missing); err != nil {
			return fmt.Errorf("raid: rebuild %s member %d at %d: %w", a.name, m.index, off, err)
		}
		a.repairChunks(idx, chunks, errored, off, logical, lastErr)
		data = chunks[target]
		chunksOf = func(member int) []byte {
			if ci := slices.Index(idx, member); ci >= 0 && slices.Contains(missing, ci) {
				return chunks[ci]
			}
			return nil
		}
	}
	if err := m.writeAt(data, off, false); err != nil {
		a.fail(m.index, "write (rebuild)", off, err)
		return fmt.Errorf("raid: rebuild %s member %d: write at %d: %w", a.name, m.index, off, err)
	}
	m.rebuilt.Store(off + C)
	a.rebuildAlong(m, off, data, chunksOf)
	return nil
}

// rebuildAlong writes the stripe's chunk (at member offset off) of every
// other Rebuilding member whose checkpoint is at this stripe too, from
// what rebuilding m's chunk computed (the same copy for a mirror, the
// reconstructed stripe for RAID 5/6), and moves its checkpoint past it:
// members replaced together
// are rebuilt in one pass over the sources, as md recovers them, instead
// of one pass each. The other member's own Rebuild then finds little or
// nothing left, and persists its checkpoint and turns it InSync. A member
// whose write fails is failed; m's rebuild goes on. Called under the
// stripe lock.
func (a *Array) rebuildAlong(m *member, off int64, data []byte, chunkOf func(member int) []byte) {
	C := a.g.ChunkSize
	for _, o := range a.members {
		if o == m || o.State() != Rebuilding || o.rebuilt.Load() != off {
			continue
		}
		var chunk []byte
		if a.mirror {
			c := a.g.CopyCount()
			if o.index-o.index%c != m.index-m.index%c {
				continue // another copy group: not this chunk
			}
			chunk = data
		} else if chunk = chunkOf(o.index); chunk == nil {
			continue
		}
		if err := o.writeAt(chunk, off, false); err != nil {
			a.fail(o.index, "write (rebuild)", off, err)
			continue
		}
		o.rebuilt.Store(off + C)
	}
}

// ScrubOptions qualify Scrub.
type ScrubOptions struct {
	// Repair rewrites what the check finds wrong (md's "repair"; without it
	// md's "check"). Read errors are repaired either way, as md does.
	Repair bool
	// Rate, Burst and Clock limit the scrub as RebuildOptions do: Rate
	// counts member bytes (a chunk per stripe).
	Rate, Burst int64
	Clock       Clock
	// MaxReport is how many mismatching stripes ScrubResult lists; 0
	// means 16.
	MaxReport int
}

// ScrubMismatch is one inconsistent stripe found by Scrub.
type ScrubMismatch struct {
	Stripe int64
	// Offset is the member offset of the stripe's chunks; Logical its
	// first logical byte.
	Offset, Logical int64
	// Members are the mirror copies that differed from the first in-sync
	// copy; for RAID 5/6, the member holding the wrong chunk when RAID 6
	// can tell (one chunk wrong, every member in sync), else the parity
	// members (P, then Q) of an optimal stripe, or every in-sync member of
	// a degraded RAID 6 stripe.
	Members []int
}

// ScrubResult is what a Scrub found and did.
type ScrubResult struct {
	// Stripes is the number of stripes checked; Skipped those that could
	// not be (a RAID 5 stripe with a member not in sync, a RAID 6 stripe
	// with two, a chunk with a single in-sync copy, a stripe whose read
	// errors were repaired from redundancy).
	Stripes, Skipped int64
	// Mismatches is the number of inconsistent stripes; Repaired those
	// rewritten (with Repair).
	Mismatches, Repaired int64
	// ReadErrors is the number of member reads that failed; each was
	// repaired from redundancy (or failed the member).
	ReadErrors int64
	// First lists the first MaxReport mismatching stripes.
	First []ScrubMismatch
}

// Scrub reads every stripe of every in-sync member and checks it, under
// the stripe lock, while the array serves I/O: the mirrors compare each
// copy of a chunk with the first in-sync copy that reads (md's choice, and
// the copy that wins a repair: the others are rewritten from it); RAID 5/6
// verify the parity of the data (a repair recomputes P and Q from the data,
// as md does, except where RAID 6 can tell which single chunk is wrong:
// see scrubParity). It returns
// the counts so far with ctx's error when ctx is done, and an error
// wrapping ErrTooManyFailed when some data cannot be read at all.
func (a *Array) Scrub(ctx context.Context, opts ScrubOptions) (res ScrubResult, err error) {
	clock := opts.Clock
	if clock == nil {
		clock = realClock{}
	}
	if err := a.begin("scrub", -1, 0, a.g.MemberSize, clock, nil); err != nil {
		return res, err
	}
	defer func() { a.end(err) }()
	C := a.g.ChunkSize
	burst := opts.Burst
	if burst <= 0 {
		burst = C
	}
	lim := newLimiter(opts.Rate, burst, clock)
	maxReport := opts.MaxReport
	if maxReport <= 0 {
		maxReport = 16
	}
	for s := range a.g.Stripes() {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("raid: scrub %s stopped at stripe %d: %w", a.name, s, err)
		}
		if err := lim.wait(ctx, C); err != nil {
			return res, fmt.Errorf("raid: scrub %s stopped at stripe %d: %w", a.name, s, err)
		}
		var bad []int
		var fixed bool
		var err error
		if a.mirror {
			bad, err = a.scrubMirror(s, opts.Repair, &res)
			fixed = opts.Repair
		} else {
			bad, fixed, err = a.scrubParity(s, opts.Repair, &res)
		}
		if err != nil {
			return res, err
		}
		if bad != nil {
			res.Mismatches++
			if fixed {
				res.Repaired++
			}
			if len(res.First) < maxReport {
				res.First = append(res.First, ScrubMismatch{Stripe: s, Offset: s * C, Logical: s * a.g.StripeSize(), Members: bad})
			}
		}
		a.advance((s + 1) * C)
	}
	return res, nil
}

// scrubMirror checks stripe s of a mirror level, returning the copies that
// differ (nil if none).
func (a *Array) scrubMirror(s int64, repair bool, res *ScrubResult) ([]int, error) {
	C := a.g.ChunkSize
	off, logical := s*C, s*a.g.StripeSize()
	mu := a.lock(s)
	mu.Lock()
	defer mu.Unlock()
	info := a.g.Stripe(s)
	bufs, release := getBufs(2, C)
	defer release()
	good, other := bufs[0], bufs[1]
	var bad []int
	checked := false
	for _, copies := range info.Copies {
		winner := -1
		var errored []int
		var lastErr error
		var diff []int
		for _, i := range copies {
			m := a.members[i]
			if !m.inSync() {
				continue
			}
			dst := other
			if winner < 0 {
				dst = good
			}
			if err := m.readAt(dst, off); err != nil {
				res.ReadErrors++
				errored, lastErr = append(errored, i), err
				continue
			}
			if winner < 0 {
				winner = i
				continue
			}
			checked = true
			if !bytes.Equal(good, other) {
				diff = append(diff, i)
			}
		}
		if winner < 0 {
			if len(errored) > 0 {
				return nil, a.tooMany("scrub", logical, a.g.StripeSize(), lastErr)
			}
			continue // no in-sync copy: the array has failed; nothing to check
		}
		a.repair(errored, good, off, logical, lastErr)
		if repair {
			for _, i := range diff {
				if err := a.members[i].writeAt(good, off, false); err != nil {
					a.fail(i, "write (scrub repair)", off, err)
				}
			}
		}
		bad = append(bad, diff...)
	}
	if checked {
		res.Stripes++
	} else {
		res.Skipped++
	}
	return bad, nil
}

// scrubParity checks stripe s of RAID 5/6, returning the members found
// wrong (nil if the stripe verifies) and whether it rewrote them.
//
// A stripe is checked while it has a redundancy beyond what its members
// not in sync take: every RAID 5 or RAID 6 stripe of an optimal array, and
// a RAID 6 stripe with one member out (its chunk is rebuilt from the
// others and the last one checks the result). RAID 6 with every member
// also tells which chunk is wrong when exactly one is: the one whose
// reconstruction from the others makes the stripe consistent. That chunk
// is repaired; otherwise a repair recomputes the parity from the data, as
// md does, and a degraded stripe is reported but not rewritten (the wrong
// chunk is not known).
func (a *Array) scrubParity(s int64, repair bool, res *ScrubResult) (bad []int, fixed bool, err error) {
	C := a.g.ChunkSize
	off, logical := s*C, s*a.g.StripeSize()
	mu := a.lock(s)
	mu.Lock()
	defer mu.Unlock()
	idx := a.stripeMembers(s)
	absent := 0 // chunks on members not in sync
	for _, mi := range idx {
		if !a.members[mi].inSync() {
			absent++
		}
	}
	if absent >= a.m {
		res.Skipped++ // nothing left to check with
		return nil, false, nil
	}
	bufs, release := getBufs(len(idx), C)
	defer release()
	missing, errored, lastErr := a.readStripe(idx, bufs, off, -1, len(idx))
	res.ReadErrors += int64(len(errored))
	if len(errored) > 0 {
		// Read errors: rebuild the unreadable chunks and write them back;
		// the stripe is then consistent by construction, not checked.
		if len(missing) > a.m {
			return nil, false, a.tooMany("scrub", logical, a.g.StripeSize(), lastErr)
		}
		chunks := slices.Clone(bufs)
		if err := a.par.Reconstruct(chunks, missing); err != nil {
			return nil, false, fmt.Errorf("raid: scrub %s stripe %d: %w", a.name, s, err)
		}
		a.repairChunks(idx, chunks, errored, off, logical, lastErr)
		res.Skipped++
		return nil, false, nil
	}
	if len(missing) >= a.m {
		res.Skipped++ // a member left since the count above
		return nil, false, nil
	}
	res.Stripes++
	if len(missing) > 0 {
		if err := a.par.Reconstruct(bufs, missing); err != nil {
			return nil, false, fmt.Errorf("raid: scrub %s stripe %d: %w", a.name, s, err)
		}
	}
	ok, err := a.par.Verify(bufs[:a.k], bufs[a.k:])
	if err != nil {
		return nil, false, fmt.Errorf("raid: scrub %s stripe %d: %w", a.name, s, err)
	}
	if ok {
		return nil, false, nil
	}
	if len(missing) > 0 {
		a.log.Warn("raid: scrub found a parity mismatch in a degraded stripe; not repairable until the array is optimal",
			"array", a.name, "stripe", s, "offset", off)
		for ci, mi := range idx {
			if !slices.Contains(missing, ci) {
				bad = append(bad, mi)
			}
		}
		return bad, false, nil
	}
	if ci, chunk := a.locateBadChunk(bufs); ci >= 0 {
		a.log.Warn("raid: scrub found a wrong chunk", "array", a.name, "stripe", s, "offset", off, "member", idx[ci], "repair", repair)
		if repair {
			if err := a.members[idx[ci]].writeAt(chunk, off, false); err != nil {
				a.fail(idx[ci], "write (scrub repair)", off, err)
			}
		}
		return []int{idx[ci]}, repair, nil
	}
	a.log.Warn("raid: scrub found a parity mismatch", "array", a.name, "stripe", s, "offset", off, "repair", repair)
	if repair {
		if err := a.par.Encode(bufs[:a.k], bufs[a.k:]); err != nil {
			return nil, false, fmt.Errorf("raid: scrub %s stripe %d: %w", a.name, s, err)
		}
		for ci := a.k; ci < len(idx); ci++ {
			if err := a.members[idx[ci]].writeAt(bufs[ci], off, false); err != nil {
				a.fail(idx[ci], "write (scrub repair)", off, err)
			}
		}
	}
	return slices.Clone(idx[a.k:]), repair, nil
}

// locateBadChunk finds, in a RAID 6 stripe that does not verify, the one
// chunk whose reconstruction from the others makes the stripe consistent,
// and returns its index in the stripe with the correct contents. It
// returns -1 when the array has a single parity or when no chunk, or more
// than one, can be blamed (several chunks are wrong).
func (a *Array) locateBadChunk(stripe [][]byte) (int, []byte) {
	if a.m < 2 {
		return -1, nil
	}
	found, fixed := -1, []byte(nil)
	chunks := make([][]byte, len(stripe))
	for ci := range stripe {
		copy(chunks, stripe)
		chunks[ci] = make([]byte, len(stripe[ci]))
		if err := a.par.Reconstruct(chunks, []int{ci}); err != nil {
			return -1, nil
		}
		if ok, err := a.par.Verify(chunks[:a.k], chunks[a.k:]); err != nil || !ok {
			continue
		}
		if found >= 0 {
			return -1, nil
		}
		found, fixed = ci, chunks[ci]
	}
	return found, fixed
}
