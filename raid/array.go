package raid

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockrep/blockrep/block"
	"github.com/blockrep/blockrep/internal/bufpool"
)

// ErrTooManyFailed is wrapped by the errors of I/O that needs data no longer
// reachable: more members of the array (or of one mirror group) are faulty
// or unreadable than its level tolerates.
var ErrTooManyFailed = errors.New("raid: too many failed members")

// ArrayOptions qualify NewArray.
type ArrayOptions struct {
	// Name names the array in logs and errors; "array" if empty.
	Name string
	// Logger receives member failures and read-error repairs; slog.Default()
	// if nil.
	Logger *slog.Logger
	// Faulty lists members already known to be failed at assembly. Their
	// entries in members may be nil.
	Faulty []int
	// Intent is the array's write-intent bitmap (intent.go), built for the
	// same geometry and used by one array only; nil for none.
	Intent *WriteIntent
	// OnFail, if set, is called once each time a member turns Faulty (an
	// I/O error or Fail), synchronously, before the failing I/O returns,
	// possibly with a stripe lock held: it may persist the new state (the
	// superblocks, disk.go) but must not do array I/O or change members.
	OnFail func(index int, err error)
	// MaxCorrectedReadErrors is how many read errors a member may have
	// repaired (by rewriting the data from redundancy) before it is failed
	// instead, as md's max_corrected_read_errors: the count halves every
	// hour, so a disk that errs now and then stays while one that is
	// dying (or a member file that shrank under the array, whose every
	// read past the end fails) is failed and replaced by a spare. 0 means
	// DefaultMaxCorrectedReadErrors; negative, no limit.
	MaxCorrectedReadErrors int
}

// DefaultMaxCorrectedReadErrors is md's default max_corrected_read_errors.
const DefaultMaxCorrectedReadErrors = 20

// Health is the health of an Array (ArrayState is the superblock's
// clean/dirty flag).
type Health int

// The array health states.
const (
	// HealthOptimal: every member is in sync.
	HealthOptimal Health = iota
	// HealthDegraded: some members are faulty but all data is reachable.
	HealthDegraded
	// HealthFailed: more members are faulty than the level tolerates
	// (raid1: all of them; raid10: every copy of some chunk; raid5: two;
	// raid6: three). Data on surviving members is still served.
	HealthFailed
)

// String returns "optimal", "degraded" or "failed".
func (s Health) String() string {
	switch s {
	case HealthOptimal:
		return "optimal"
	case HealthDegraded:
		return "degraded"
	case HealthFailed:
		return "failed"
	}
	return fmt.Sprintf("Health(%d)", int(s))
}

// MemberStatus is the state of one member.
type MemberStatus struct {
	Index int
	State MemberState
	// Err is the error that failed the member, if any.
	Err error
	// CorrectedReadErrors is the member's count of repaired read errors,
	// halved every hour (see ArrayOptions.MaxCorrectedReadErrors).
	CorrectedReadErrors int
}

// ArrayStatus is a snapshot of an array's health.
type ArrayStatus struct {
	Level   Level
	Health  Health
	Members []MemberStatus
}

// stripeLocks is the number of stripe locks; stripe s uses lock
// s%stripeLocks. A goroutine holds at most one at a time.
const stripeLocks = 256

// Array is a block.Device striped or mirrored over member devices by a
// Geometry: RAID 1, 10, 5 or 6. The member devices hold only the data area
// (member offset 0 is the first chunk); superblocks are not its business.
//
// Reads: mirrors read one in-sync copy per chunk piece (the least loaded,
// ties broken round-robin); RAID 5/6 read the data chunk, and rebuild it from
// the rest of the stripe when its member is faulty.
//
// Writes: mirrors write every in-sync copy; RAID 5/6 write each stripe by
// full-stripe encode, read-modify-write or reconstruct-write (always the
// latter on a degraded array). Every write of one stripe, and every read
// that rebuilds or repairs, holds that stripe's lock, so parity stays
// consistent under concurrent writers; writes to distinct stripes run in
// parallel (within one request the stripes are written in turn).
//
// Errors: a read error is served from redundancy and the rebuilt data is
// written back to the member that failed the read (read-error repair); the
// member fails only if that write fails. A write (or flush, trim, zeroing)
// error fails the member: it becomes Faulty, is logged, and is neither read
// nor written again. I/O that needs data no longer reachable fails with an
// error wrapping ErrTooManyFailed; the rest keeps being served.
type Array struct {
	g       Geometry
	name    string
	log     *slog.Logger
	members []*member
	mirror  bool
	par     *Parity // nil for the mirrors
	k, m    int     // data and parity chunks per stripe (parity levels)

	locks  [stripeLocks]sync.Mutex
	rr     atomic.Uint64
	closed atomic.Bool
	intent *WriteIntent // nil: no write-intent bitmap (intent.go)
	onFail func(index int, err error)
	// maxCorrected is ArrayOptions.MaxCorrectedReadErrors resolved; now
	// is the clock of its hourly decay.
	maxCorrected int
	now          func() time.Time

	bg background // rebuild, scrub and member management (rebuild.go)
}

var _ block.Device = (*Array)(nil)

// arrayBufs holds the stripe buffers of every Array.
var arrayBufs bufpool.Pool

// arrayZeroes is the source of zeroes for WriteZeroes on RAID 5/6.
var arrayZeroes [64 << 10]byte

// NewArray assembles an array of geometry g over members (g.Members of them,
// in member order). Every member present must be at least g.MemberSize
// bytes; only the first g.MemberSize bytes are used. Members listed in
// opts.Faulty start Faulty and may be nil.
func NewArray(g Geometry, members []block.Device, opts ArrayOptions) (*Array, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	if len(members) != g.Members {
		return nil, fmt.Errorf("raid: array: %d member devices for a %v geometry of %d members", len(members), g.Level, g.Members)
	}
	a := &Array{
		g:      g,
		name:   opts.Name,
		log:    opts.Logger,
		mirror: g.Level == Level1 || g.Level == Level10,
		onFail: opts.OnFail,
		now:    time.Now,
	}
	if a.name == "" {
		a.name = "array"
	}
	switch a.maxCorrected = opts.MaxCorrectedReadErrors; {
	case a.maxCorrected == 0:
		a.maxCorrected = DefaultMaxCorrectedReadErrors
	case a.maxCorrected < 0:
		a.maxCorrected = -1
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	faulty := make([]bool, g.Members)
	for _, i := range opts.Faulty {
		if i < 0 || i >= g.Members {
			return nil, fmt.Errorf("raid: array %s: faulty member %d out of range [0, %d)", a.name, i, g.Members)
		}
		faulty[i] = true
	}
	for i, dev := range members {
		m := &member{index: i, dev: dev}
		if faulty[i] {
			m.state.Store(int32(Faulty))
			m.err = errors.New("faulty at assembly")
		} else {
			if dev == nil {
				return nil, fmt.Errorf("raid: array %s: member %d is nil and not listed as faulty", a.name, i)
			}
			if dev.Size() < g.MemberSize {
				return nil, fmt.Errorf("raid: array %s: member %d is %d bytes, want at least MemberSize=%d", a.name, i, dev.Size(), g.MemberSize)
			}
		}
		a.members = append(a.members, m)
	}
	if !a.mirror {
		a.k = g.DataMembers()
		a.m = g.Members - a.k
		p, err := NewParity(a.k, a.m)
		if err != nil {
			return nil, err
		}
		a.par = p
	}
	if err := a.attachIntent(opts.Intent); err != nil {
		return nil, err
	}
	return a, nil
}

// Geometry returns the array's geometry.
func (a *Array) Geometry() Geometry { return a.g }

// Size is the array's logical capacity, Geometry.Size.
func (a *Array) Size() int64 { return a.g.Size() }

// Status returns the state of every member and of the array.
func (a *Array) Status() ArrayStatus {
	st := ArrayStatus{Level: a.g.Level, Health: a.health()}
	for _, m := range a.members {
		st.Members = append(st.Members, MemberStatus{Index: m.index, State: m.State(), Err: m.failErr(),
			CorrectedReadErrors: m.correctedReadErrors(a.now())})
	}
	return st
}

func (a *Array) faultyMembers() []int {
	var out []int
	for _, m := range a.members {
		if !m.inSync() {
			out = append(out, m.index)
		}
	}
	return out
}

func (a *Array) health() Health {
	n := len(a.faultyMembers())
	switch {
	case n == 0:
		return HealthOptimal
	case a.failed():
		return HealthFailed
	}
	return HealthDegraded
}

// failed reports whether more members are faulty than the level tolerates.
func (a *Array) failed() bool {
	if !a.mirror {
		return len(a.faultyMembers()) > a.m
	}
	c := a.g.CopyCount()
	for first := 0; first < a.g.Members; first += c {
		all := true
		for i := first; i < first+c; i++ {
			if a.members[i].inSync() {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// tooMany returns the error for I/O on [off, off+n) that needs data no
// longer reachable; cause, if not nil, is the last member error seen.
func (a *Array) tooMany(op string, off, n int64, cause error) error {
	msg := fmt.Sprintf("raid: %s %s at %d length %d: %v array, faulty members %v", op, a.name, off, n, a.g.Level, a.faultyMembers())
	if cause != nil {
		return fmt.Errorf("%s: %w (last member error: %w)", msg, ErrTooManyFailed, cause)
	}
	return fmt.Errorf("%s: %w", msg, ErrTooManyFailed)
}

// fail marks member i Faulty after err in op, logging it once.
func (a *Array) fail(i int, op string, off int64, err error) {
	if a.members[i].fail(err) {
		a.log.Error("raid: member failed", "array", a.name, "level", a.g.Level.String(), "member", i,
			"op", op, "offset", off, "err", err, "faulty", a.faultyMembers(), "health", a.health().String())
		if a.onFail != nil {
			a.onFail(i, err)
		}
	}
}

func (a *Array) lock(stripe int64) *sync.Mutex { return &a.locks[stripe%stripeLocks] }

func (a *Array) check(op string, off, n int64) error {
	if a.closed.Load() {
		return fmt.Errorf("raid: %s %s: %w", op, a.name, os.ErrClosed)
	}
	size := a.g.Size()
	if off < 0 || n < 0 || off > size || n > size-off {
		return fmt.Errorf("raid: %s %s at %d length %d (size %d): %w", op, a.name, off, n, size, block.ErrOutOfRange)
	}
	return nil
}

// getBufs returns count pooled buffers of size bytes and the function that
// returns them to the pool.
func getBufs(count int, size int64) ([][]byte, func()) {
	ptrs := make([]*[]byte, count)
	bufs := make([][]byte, count)
	fillBufs(ptrs, bufs, size)
	return bufs, func() { putBufs(ptrs) }
}

// fillBufs fills bufs with pooled buffers of size bytes, and ptrs (as long
// as bufs) with the pool handles that putBufs returns.
func fillBufs(ptrs []*[]byte, bufs [][]byte, size int64) {
	for i := range ptrs {
		ptrs[i] = arrayBufs.Get(int(size))
		bufs[i] = *ptrs[i]
	}
}

// putBufs returns the buffers of getBufs to the pool.
func putBufs(ptrs []*[]byte) {
	for _, p := range ptrs {
		arrayBufs.Put(p)
	}
}

// writePiece is the part of a parityWrite that falls in one data chunk.
type writePiece struct {
	ok     bool
	within int64 // offset within the chunk
	src    []byte
}

// parityScratch holds the working slices of one parityWrite, pooled so a
// small write does not allocate them.
type parityScratch struct {
	idx              []int
	ptrs             []*[]byte // of bufs, then of the new data (newBufs)
	bufs             [][]byte  // k+m stripe buffers, then the new data
	oldData, newData [][]byte
	pieces           []writePiece
	unavail, readErr []bool
	read             []bool
}

var parityScratches = sync.Pool{New: func() any { return new(parityScratch) }}

// getParityScratch returns a cleared scratch for k data and m parity chunks.
func getParityScratch(k, m int) *parityScratch {
	s := parityScratches.Get().(*parityScratch)
	n := k + m
	s.idx = resize(s.idx, n)
	s.ptrs = resize(s.ptrs, n+k)[:0]
	s.bufs = resize(s.bufs, n+k)[:0]
	s.oldData = resize(s.oldData, k)
	s.newData = resize(s.newData, k)
	s.pieces = resize(s.pieces, k)
	s.unavail = resize(s.unavail, n)
	s.readErr = resize(s.readErr, n)
	s.read = resize(s.read, n)
	return s
}

// put returns the scratch's buffers and then the scratch to their pools,
// dropping its references to them and to the caller's data.
func (s *parityScratch) put() {
	putBufs(s.ptrs)
	clear(s.ptrs[:cap(s.ptrs)])
	clear(s.bufs[:cap(s.bufs)])
	clear(s.oldData)
	clear(s.newData)
	clear(s.pieces)
	parityScratches.Put(s)
}

// addBufs appends count pooled buffers of size bytes to s.bufs and returns
// them.
func (s *parityScratch) addBufs(count int, size int64) [][]byte {
	l := len(s.bufs)
	s.ptrs = s.ptrs[:l+count]
	s.bufs = s.bufs[:l+count]
	fillBufs(s.ptrs[l:], s.bufs[l:], size)
	return s.bufs[l:]
}

// resize returns a zeroed slice of length n, reusing b's array if it is
// large enough.
func resize[T any](b []T, n int) []T {
	if cap(b) < n {
		return make([]T, n)
	}
	b = b[:n]
	clear(b)
	return b
}

// stripeMembers returns the member of each chunk of stripe s of a parity
// level: data chunks 0..k-1, then P, then Q (RAID 6).
func (a *Array) stripeMembers(s int64) []int {
	return a.fillStripeMembers(make([]int, a.k+a.m), s)
}

// fillStripeMembers is stripeMembers into idx, of length k+m.
func (a *Array) fillStripeMembers(idx []int, s int64) []int {
	for j := range a.k {
		idx[j] = a.g.dataMember(s, j)
	}
	p, q := a.g.parity(s)
	idx[a.k] = p
	if a.m == 2 {
		idx[a.k+1] = q
	}
	return idx
}

// pick chooses the copy to read among copies: the in-sync one with the
// fewest reads in flight, ties broken round-robin. The copies of a chunk are
// consecutive members (appendCopies).
func (a *Array) pick(copies []int) int { return a.pickIn(copies[0], len(copies), -1) }

// pickIn is pick over the members first..first+n-1 for a read at member
// offset off (-1: unknown). A read that continues one of a copy's recent
// streams stays on it, as md keeps a sequential reader on one disk,
// unless that copy has more than one read in flight beyond the least
// loaded one: a stream that hops between copies wastes the readahead each
// copy's device did for it. md remembers one stream per disk; four
// streams on a RAID 1 ×3 of throttled disks then kept hopping and read at
// 2.5× one disk, against 3× with a few streams remembered per copy.
func (a *Array) pickIn(first, n int, off int64) int {
	start := int(a.rr.Add(1) % uint64(n))
	best, next := -1, -1
	var load, nextLoad int64
	for t := range n {
		i := first + (start+t)%n
		m := a.members[i]
		if !m.inSync() {
			continue
		}
		l := m.inflight.Load()
		if best < 0 || l < load {
			best, load = i, l
		}
		if off >= 0 && m.continues(off) {
			next, nextLoad = i, l
		}
	}
	switch {
	case next >= 0 && nextLoad <= load+1:
		return next
	case best < 0:
		return first
	}
	return best
}

// ReadAt fills p from offset off.
//
// RAID 1 reads the whole range from one copy, chosen per request: the range
// is contiguous on every member, so it is one member read. The other levels
// map the range to chunk pieces (RAID 10 choosing one copy per copy group
// for the whole request, as RAID 1 does) and read each member's pieces that
// continue one another on it with one vectored read (readRuns): a 1 MiB
// read of RAID 10 near 4×2 is two system calls, not sixteen.
func (a *Array) ReadAt(p []byte, off int64) error {
	if err := a.check("read", off, int64(len(p))); err != nil {
		return err
	}
	if len(p) == 0 {
		return nil
	}
	if a.g.Level == Level1 {
		// Member offsets equal logical offsets on RAID 1.
		e := Extent{Member: a.pickIn(0, a.g.Members, off), Offset: off, Length: int64(len(p)), Logical: off}
		return a.readExtent(p, e)
	}
	sc := readScratches.Get().(*readScratch)
	defer sc.put()
	sc.extents = a.g.appendRead(sc.extents[:0], off, int64(len(p)), nil)
	extents := sc.extents
	if a.mirror {
		// The copies of a chunk are the consecutive members of its copy
		// group, at the same member offset: one copy per group serves the
		// whole request, chosen with the member offset of the request's
		// first piece in the group, so that a sequential stream stays on
		// its copy (pickIn).
		c := a.g.CopyCount()
		chosen := resize(sc.chosen, a.g.Members/c)
		sc.chosen = chosen
		for i := range extents {
			e := &extents[i]
			g := e.Member / c
			if chosen[g] == 0 {
				chosen[g] = a.pickIn(g*c, c, e.Offset) + 1
			}
			e.Member = chosen[g] - 1
		}
	}
	return a.readRuns(p, off, extents, sc)
}

// readScratch holds the working slices of one ReadAt of RAID 10, 5 or 6,
// pooled so that a read does not allocate them.
type readScratch struct {
	extents []Extent
	chosen  []int // ReadAt's copy of each RAID 10 copy group, plus one
	order   []int // readRuns
	bufs    [][]byte
}

var readScratches = sync.Pool{New: func() any { return new(readScratch) }}

// put returns the scratch to its pool, dropping its references to the
// caller's buffer.
func (s *readScratch) put() {
	clear(s.bufs[:cap(s.bufs)])
	readScratches.Put(s)
}

// readRuns reads extents (the pieces of a read of p at off) with one
// vectored member read per run of pieces that continue one another on the
// same member. A run that fails, or a piece whose member is not in sync, is
// read piece by piece by readExtent, which serves it from redundancy and
// repairs what failed.
func (a *Array) readRuns(p []byte, off int64, extents []Extent, sc *readScratch) error {
	dst := func(e Extent) []byte { return p[e.Logical-off : e.Logical-off+e.Length] }
	if len(extents) == 1 {
		return a.readExtent(dst(extents[0]), extents[0])
	}
	order := resize(sc.order, len(extents))
	sc.order = order
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(i, j int) int {
		if c := cmp.Compare(extents[i].Member, extents[j].Member); c != 0 {
			return c
		}
		return cmp.Compare(extents[i].Offset, extents[j].Offset)
	})
	for start := 0; start < len(order); {
		e0 := extents[order[start]]
		end, next := start+1, e0.Offset+e0.Length
		for end < len(order) && extents[order[end]].Member == e0.Member && extents[order[end]].Offset == next {
			next += extents[order[end]].Length
			end++
		}
		run := order[start:end]
		start = end
		m := a.members[e0.Member]
		if m.inSync() {
			bufs := sc.bufs[:0]
			for _, i := range run {
				bufs = append(bufs, dst(extents[i]))
			}
			sc.bufs = bufs
			if err := m.readvAt(bufs, e0.Offset); err == nil {
				continue
			}
		}
		for _, i := range run {
			if err := a.readExtent(dst(extents[i]), extents[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// readExtent reads extent e into dst, serving it from redundancy where the
// member fails the read or is not in sync. An extent of a mirror may span
// several chunks (ReadAt); on failure it is handled chunk by chunk.
func (a *Array) readExtent(dst []byte, e Extent) error {
	C := a.g.ChunkSize
	if !a.mirror || e.Offset/C == (e.Offset+e.Length-1)/C {
		return a.readChunk(dst, e)
	}
	if m := a.members[e.Member]; m.inSync() && m.readAt(dst, e.Offset) == nil {
		return nil
	}
	for done := int64(0); done < e.Length; {
		n := min(e.Length-done, C-(e.Offset+done)%C)
		ce := Extent{Member: e.Member, Offset: e.Offset + done, Length: n, Logical: e.Logical + done}
		if err := a.readChunk(dst[done:done+n], ce); err != nil {
			return err
		}
		done += n
	}
	return nil
}

// readChunk reads extent e, within one chunk, into dst from its member, or
// else from redundancy.
func (a *Array) readChunk(dst []byte, e Extent) error {
	bad, badErr := -1, error(nil)
	if m := a.members[e.Member]; m.inSync() {
		err := m.readAt(dst, e.Offset)
		if err == nil {
			return nil
		}
		bad, badErr = e.Member, err
	}
	if a.mirror {
		return a.mirrorRecover(dst, e, bad, badErr)
	}
	return a.parityRecover(dst, e, bad, badErr)
}

// mirrorRecover reads extent e from another copy after member bad (-1 for
// none) failed to read it or was faulty, and writes the data back to every
// copy that failed the read.
func (a *Array) mirrorRecover(dst []byte, e Extent, bad int, badErr error) error {
	mu := a.lock(e.Offset / a.g.ChunkSize)
	mu.Lock()
	defer mu.Unlock()
	var errored []int
	if bad >= 0 {
		errored = append(errored, bad)
	}
	src, errored, lastErr := a.readCopy(dst, e.Member, e.Offset, bad, errored)
	lastErr = cmp.Or(lastErr, badErr)
	if src < 0 {
		return a.tooMany("read", e.Logical, e.Length, lastErr)
	}
	a.repair(errored, dst, e.Offset, e.Logical, lastErr)
	return nil
}

// readCopy reads dst at member offset off from the first in-sync copy that
// reads in the copy group of member, skipping member skip (-1: none). It
// returns the copy read (-1: none), errored with the copies whose read
// failed appended, and the last read error. Under the stripe lock.
func (a *Array) readCopy(dst []byte, member int, off int64, skip int, errored []int) (src int, _ []int, lastErr error) {
	c := a.g.CopyCount()
	first := member - member%c
	for i := first; i < first+c; i++ {
		m := a.members[i]
		if i == skip || !m.inSync() {
			continue
		}
		if err := m.readAt(dst, off); err != nil {
			errored, lastErr = append(errored, i), err
			continue
		}
		return i, errored, lastErr
	}
	return -1, errored, lastErr
}

// readStripe reads the chunks of a RAID 5/6 stripe, on members idx (data
// chunks then parity, fillStripeMembers) at member offset off, into bufs:
// every in-sync chunk but chunk target (-1: none), until need have been
// read. It returns the chunks not read (missing, for Parity.Reconstruct),
// those of them whose read failed (errored, to repair) and the last read
// error; len(idx)-len(missing) chunks were read. Under the stripe lock.
func (a *Array) readStripe(idx []int, bufs [][]byte, off int64, target, need int) (missing, errored []int, lastErr error) {
	have := 0
	for ci, mi := range idx {
		m := a.members[mi]
		if ci == target || have == need || !m.inSync() {
			missing = append(missing, ci)
			continue
		}
		if err := m.readAt(bufs[ci], off); err != nil {
			missing, errored, lastErr = append(missing, ci), append(errored, ci), err
			continue
		}
		have++
	}
	return missing, errored, lastErr
}

// repair writes the good data back to the members that failed a read; a
// member whose write fails is failed.
func (a *Array) repair(members []int, data []byte, off, logical int64, readErr error) {
	for _, i := range members {
		a.repairMember(i, data, off, logical, readErr)
	}
}

// repairChunks is repair for the chunks errored (indexes into idx and
// chunks) of a RAID 5/6 stripe, rebuilt in chunks.
func (a *Array) repairChunks(idx []int, chunks [][]byte, errored []int, off, logical int64, readErr error) {
	for _, ci := range errored {
		a.repairMember(idx[ci], chunks[ci], off, logical, readErr)
	}
}

// repairMember writes data back to member i after it failed a read at
// member offset off, failing it if the write fails or it has had too many
// read errors repaired.
func (a *Array) repairMember(i int, data []byte, off, logical int64, readErr error) {
	m := a.members[i]
	if !m.inSync() {
		return
	}
	if m.short.Load() {
		a.fail(i, "read", off, fmt.Errorf("a read ended before the member's data did (truncated under the array?): %w", io.ErrUnexpectedEOF))
		return
	}
	if err := m.writeAt(data, off, false); err != nil {
		a.fail(i, "write (read-error repair)", off, err)
		return
	}
	n := m.correctReadError(a.now())
	a.log.Warn("raid: repaired read error from redundancy", "array", a.name, "member", i,
		"offset", off, "length", len(data), "logical", logical, "read_err", readErr, "corrected_read_errors", n)
	if a.maxCorrected >= 0 && n > a.maxCorrected {
		a.fail(i, "read (read-error repair)", off, fmt.Errorf("%d read errors corrected within the last hours, more than %d: the device is failing (last: %w)", n, a.maxCorrected, readErr))
	}
}

// parityRecover rebuilds extent e of a RAID 5/6 array from the rest of its
// stripe after member bad (-1 for none) failed to read it or was faulty, and
// writes the rebuilt chunks back to every member that failed a read.
func (a *Array) parityRecover(dst []byte, e Extent, bad int, badErr error) error {
	s := e.Offset / a.g.ChunkSize
	off := e.Offset // member offset of the range, the same in every chunk
	mu := a.lock(s)
	mu.Lock()
	defer mu.Unlock()
	idx := a.stripeMembers(s)
	bufs, release := getBufs(len(idx), e.Length)
	defer release()
	target := slices.Index(idx, e.Member)
	missing, errored, lastErr := a.readStripe(idx, bufs, off, target, a.k)
	if len(idx)-len(missing) < a.k {
		return a.tooMany("read", e.Logical, e.Length, cmp.Or(lastErr, badErr))
	}
	// errored is in chunk order: its last is a parity chunk if any is.
	repairParity := len(errored) > 0 && errored[len(errored)-1] >= a.k
	if bad >= 0 {
		errored = append(errored, target)
		slices.Sort(errored)
	}
	lastErr = cmp.Or(lastErr, badErr)
	chunks := slices.Clone(bufs)
	var err error
	if repairParity {
		err = a.par.Reconstruct(chunks, missing)
	} else {
		err = a.par.ReconstructData(chunks, missing)
	}
	if err != nil {
		return fmt.Errorf("raid: read %s at %d: %w", a.name, e.Logical, err)
	}
	copy(dst, chunks[target])
	a.repairChunks(idx, chunks, errored, off, e.Logical, lastErr)
	return nil
}

// WriteAt writes p at offset off. With fua set every member write is FUA.
// Stripes are written in turn; on error the stripes before it are written
// and the rest are not.
func (a *Array) WriteAt(p []byte, off int64, fua bool) error {
	if err := a.check("write", off, int64(len(p))); err != nil {
		return err
	}
	if len(p) == 0 {
		if fua {
			return a.Flush()
		}
		return nil
	}
	endIntent, err := a.beginIntent("write", off, int64(len(p)))
	if err != nil {
		return err
	}
	defer endIntent()
	for _, sw := range a.g.MapWrite(off, int64(len(p))) {
		var err error
		if a.mirror {
			err = a.mirrorWrite(sw, func(e Extent) error {
				return a.members[e.Member].writeAt(p[e.Logical-off:e.Logical-off+e.Length], e.Offset, fua)
			}, "write")
		} else {
			err = a.parityWrite(p, off, sw, fua)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// mirrorWrite applies do to every in-sync copy of every piece of sw under
// the stripe lock. A copy whose do fails is failed; a piece with no copy
// done fails the call with ErrTooManyFailed.
func (a *Array) mirrorWrite(sw StripeWrite, do func(Extent) error, op string) error {
	mu := a.lock(sw.Stripe)
	mu.Lock()
	defer mu.Unlock()
	var firstErr error
	for i := 0; i < len(sw.Data); {
		j := i
		ok := false
		var lastErr error
		for ; j < len(sw.Data) && sw.Data[j].Logical == sw.Data[i].Logical; j++ {
			e := sw.Data[j]
			if !a.members[e.Member].writable(e.Offset) {
				continue
			}
			if err := do(e); err != nil {
				if errors.Is(err, block.ErrNotFast) {
					return err
				}
				a.fail(e.Member, op, e.Offset, err)
				lastErr = err
				continue
			}
			ok = ok || a.members[e.Member].inSync() // a Rebuilding copy is not read
		}
		if !ok && firstErr == nil {
			firstErr = a.tooMany(op, sw.Data[i].Logical, sw.Data[i].Length, lastErr)
		}
		i = j
	}
	return firstErr
}

// parityWrite writes the part sw of the write of p at off to a RAID 5/6
// stripe, under the stripe lock.
func (a *Array) parityWrite(p []byte, off int64, sw StripeWrite, fua bool) error {
	k, m := a.k, a.m
	lo, n := sw.ParityOffset-sw.Offset, sw.ParityLength // parity range within the chunk
	logical := sw.Data[0].Logical
	var length int64
	sc := getParityScratch(k, m)
	defer sc.put()
	pieces := sc.pieces
	w := 0
	for i, e := range sw.Data {
		pieces[sw.Chunk[i]] = writePiece{true, e.Offset - sw.Offset, p[e.Logical-off : e.Logical-off+e.Length]}
		length += e.Length
		w++
	}
	covered := func(j int) bool {
		return pieces[j].ok && pieces[j].within == lo && int64(len(pieces[j].src)) == n
	}

	mu := a.lock(sw.Stripe)
	mu.Lock()
	defer mu.Unlock()
	idx := a.fillStripeMembers(sc.idx, sw.Stripe)
	unavail := sc.unavail // faulty, or failed a read in this call
	readErr := sc.readErr // failed a read in this call (to repair)
	nUnavail := 0
	var lastErr error
	markRead := func(ci int, err error) {
		unavail[ci], readErr[ci] = true, true
		nUnavail++
		lastErr = err
	}
	for ci, mi := range idx {
		if !a.members[mi].inSync() {
			unavail[ci] = true
			nUnavail++
		}
	}
	if nUnavail > m {
		return a.tooMany("write", logical, length, nil)
	}
	bufs := sc.addBufs(k+m, n)
	at := sw.Offset + lo // member offset of the parity range

	// Read-modify-write: read the old data of the changed chunks and the
	// parity, Update. Only on an optimal stripe; a read error falls back to
	// reconstruct-write.
	if !sw.Full && nUnavail == 0 && !a.par.PreferReconstructWrite(w) {
		ok := true
		for ci := range k + m {
			if ci < k && !pieces[ci].ok {
				continue
			}
			if err := a.members[idx[ci]].readAt(bufs[ci], at); err != nil {
				markRead(ci, err)
				ok = false
			}
		}
		if ok {
			newBufs := sc.addBufs(w, n)
			oldData, newData := sc.oldData, sc.newData
			x := 0
			for j := range k {
				if !pieces[j].ok {
					continue
				}
				nd := newBufs[x]
				x++
				copy(nd, bufs[j])
				copy(nd[pieces[j].within-lo:], pieces[j].src)
				oldData[j], newData[j] = bufs[j], nd // Update clobbers oldData
			}
			if err := a.par.Update(oldData, newData, bufs[k:]); err != nil {
				return fmt.Errorf("raid: write %s at %d: %w", a.name, logical, err)
			}
			for j := range k {
				if pieces[j].ok {
					a.memberWrite(idx[j], pieces[j].src, sw.Offset+pieces[j].within, fua)
				}
			}
			for ci := k; ci < k+m; ci++ {
				a.memberWrite(idx[ci], bufs[ci], at, fua)
			}
			return a.afterWrite(logical, length)
		}
		if nUnavail > m {
			return a.tooMany("write", logical, length, lastErr)
		}
	}

	// Reconstruct-write: the new contents of every data chunk over the
	// parity range, from the new data and the old data of the rest (read,
	// or rebuilt from the old stripe where unreadable), then Encode.
	if !sw.Full {
		read := sc.read
		rebuild := false
		for j := range k {
			if covered(j) {
				continue
			}
			if unavail[j] {
				rebuild = true
				continue
			}
			if err := a.members[idx[j]].readAt(bufs[j], at); err != nil {
				markRead(j, err)
				rebuild = true
				continue
			}
			read[j] = true
		}
		if rebuild {
			for ci := range k + m {
				if read[ci] || unavail[ci] {
					continue
				}
				if err := a.members[idx[ci]].readAt(bufs[ci], at); err != nil {
					markRead(ci, err)
				}
			}
			if nUnavail > m {
				return a.tooMany("write", logical, length, lastErr)
			}
			var missing []int
			for ci := range k + m {
				if unavail[ci] {
					missing = append(missing, ci)
				}
			}
			chunks := slices.Clone(bufs)
			if err := a.par.ReconstructData(chunks, missing); err != nil {
				return fmt.Errorf("raid: write %s at %d: %w", a.name, logical, err)
			}
			for j := range k {
				copy(bufs[j], chunks[j])
			}
		}
	}
	for j := range k {
		if pieces[j].ok {
			copy(bufs[j][pieces[j].within-lo:], pieces[j].src)
		}
	}
	if err := a.par.Encode(bufs[:k], bufs[k:]); err != nil {
		return fmt.Errorf("raid: write %s at %d: %w", a.name, logical, err)
	}
	for j := range k {
		switch {
		case unavail[j]:
			// the whole range: repairs a read error, keeps a Rebuilding
			// member current below its checkpoint (memberWrite skips the
			// faulty ones and a Rebuilding one above its checkpoint)
			a.memberWrite(idx[j], bufs[j], at, fua)
		case pieces[j].ok:
			a.memberWrite(idx[j], pieces[j].src, sw.Offset+pieces[j].within, fua)
		}
	}
	for ci := k; ci < k+m; ci++ {
		a.memberWrite(idx[ci], bufs[ci], at, fua) // skips the faulty
	}
	return a.afterWrite(logical, length)
}

// memberWrite writes to member i unless it is faulty (or Rebuilding and off
// is above its checkpoint), failing it on error.
func (a *Array) memberWrite(i int, b []byte, off int64, fua bool) {
	m := a.members[i]
	if !m.writable(off) {
		return
	}
	if err := m.writeAt(b, off, fua); err != nil {
		a.fail(i, "write", off, err)
	}
}

// afterWrite is the result of a RAID 5/6 stripe write whose member writes
// are done: an error if the array has failed meanwhile, since the stripe can
// no longer be trusted.
func (a *Array) afterWrite(logical, length int64) error {
	if a.failed() {
		return a.tooMany("write", logical, length, nil)
	}
	return nil
}

// Flush flushes every in-sync member. A member whose flush fails is failed;
// the call fails only if the array has failed.
func (a *Array) Flush() error {
	if a.closed.Load() {
		return fmt.Errorf("raid: flush %s: %w", a.name, os.ErrClosed)
	}
	var lastErr error
	for _, m := range a.members {
		if st := m.State(); st != InSync && st != Rebuilding {
			continue
		}
		if err := m.device().Flush(); err != nil {
			a.fail(m.index, "flush", 0, err)
			lastErr = err
		}
	}
	if a.failed() {
		return a.tooMany("flush", 0, 0, lastErr)
	}
	return nil
}

// Trim discards the range. On the mirrors every in-sync copy is zeroed with
// WriteZeroes(MayTrim), so that the copies keep reading alike (a member's
// Trim leaves its contents unspecified, and copies might differ). On RAID
// 5/6 Trim does nothing: deallocating a data chunk would break its stripe's
// parity, and a trim is advisory.
func (a *Array) Trim(off, length int64) error {
	if err := a.check("trim", off, length); err != nil {
		return err
	}
	if length == 0 || !a.mirror {
		return nil
	}
	return a.mirrorZero(off, length, block.ZeroFlags{MayTrim: true}, "trim")
}

// WriteZeroes makes the range read back as zeroes. The mirrors pass it to
// every in-sync copy of each piece (with Fast, a copy answering ErrNotFast
// after another copy was zeroed is zeroed without Fast, so the copies never
// differ). RAID 5/6 write zeroes through the normal write path (MayTrim is
// ignored), so with Fast they fail with block.ErrNotFast.
func (a *Array) WriteZeroes(off, length int64, flags block.ZeroFlags) error {
	if err := a.check("write zeroes", off, length); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	if a.mirror {
		return a.mirrorZero(off, length, flags, "write zeroes")
	}
	if flags.Fast {
		return block.ErrNotFast
	}
	for length > 0 {
		n := min(length, int64(len(arrayZeroes)))
		if err := a.WriteAt(arrayZeroes[:n], off, false); err != nil {
			return err
		}
		off, length = off+n, length-n
	}
	return nil
}

func (a *Array) mirrorZero(off, length int64, flags block.ZeroFlags, op string) error {
	endIntent, err := a.beginIntent(op, off, length)
	if err != nil {
		return err
	}
	defer endIntent()
	for _, sw := range a.g.MapWrite(off, length) {
		done := map[int64]bool{} // pieces (by Logical) zeroed on some copy
		err := a.mirrorWrite(sw, func(e Extent) error {
			dev := a.members[e.Member].device()
			f := flags
			if done[e.Logical] {
				f.Fast = false
			}
			err := dev.WriteZeroes(e.Offset, e.Length, f)
			if errors.Is(err, block.ErrNotFast) && done[e.Logical] {
				f.Fast = false
				err = dev.WriteZeroes(e.Offset, e.Length, f)
			}
			if err == nil {
				done[e.Logical] = true
			}
			return err
		}, op)
		if err != nil {
			return err
		}
	}
	return nil
}

// Cache passes the hint to the members holding the range (one copy on the
// mirrors). Member errors are ignored: it is only a hint.
func (a *Array) Cache(off, length int64) error {
	if err := a.check("cache", off, length); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	var pick func([]int) int
	if a.mirror {
		pick = a.pick
	}
	for _, e := range a.g.MapRead(off, length, pick) {
		if m := a.members[e.Member]; m.inSync() {
			_ = m.device().Cache(e.Offset, e.Length)
		}
	}
	return nil
}

// Extents reports the whole range as one data extent: the array does not
// track allocation.
func (a *Array) Extents(off, length int64, fn func(block.Extent) bool) error {
	if a.closed.Load() {
		return fmt.Errorf("raid: extents %s: %w", a.name, os.ErrClosed)
	}
	size := a.g.Size()
	if off < 0 || length < 0 || off > size || (off == size && length > 0) {
		return fmt.Errorf("raid: extents %s at %d length %d (size %d): %w", a.name, off, length, size, block.ErrOutOfRange)
	}
	length = min(length, size-off)
	if length > 0 {
		fn(block.Extent{Offset: off, Length: length})
	}
	return nil
}

// Close closes every member device. Callers stop I/O and flush first.
func (a *Array) Close() error {
	if a.closed.Swap(true) {
		return nil
	}
	var errs []error
	for _, m := range a.members {
		if dev := m.device(); dev != nil {
			if err := dev.Close(); err != nil {
				errs = append(errs, fmt.Errorf("raid: close %s member %d: %w", a.name, m.index, err))
			}
		}
	}
	return errors.Join(errs...)
}
