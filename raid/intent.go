package raid

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"sync"
	"time"

	"github.com/blockrep/blockrep/block"
)

// This file holds the write-intent bitmap (md's "internal bitmap"): one bit
// per region of RegionSize bytes of the array's logical space, set and made
// durable before any member write to the region starts, and cleared lazily
// once the region has been idle for a while on an optimal array.
//
// It serves two purposes:
//
//   - The RAID 5/6 write hole (and diverging mirrors) after a crash. A stripe
//     write touches several members; a crash between them leaves parity that
//     does not match its data (or copies that differ). Every stripe that may
//     be in that state lies in a region whose bit is set on disk, so after
//     the crash Array.ResyncRegions recomputes the parity (or copies one
//     mirror over the others) of those regions only, not of the whole array.
//
//   - A member back after a short absence (faulty or missing, its data
//     intact). Bits are never cleared while the array is degraded, so the set
//     bits cover everything written while the member was away;
//     Array.ResyncMember copies or reconstructs only those regions onto it.
//
// Why a bitmap and not a journal. md offers both: the bitmap, and (for RAID
// 5/6) a write journal on a separate device that logs every stripe write
// (data and parity) before it goes to the members, so a crash replays the
// journal and never leaves a torn stripe. The bitmap is chosen here because
// it is simpler (no log device, no replay, no ordering of journal space) and
// costs no double write: a write pays one small synchronous bitmap update
// only when it is the first in a region that has gone clean, and nothing
// otherwise. The price is a precise window: if the array is degraded when it
// crashes (or a member is lost before the resync of a dirty region is done),
// a stripe whose write was interrupted may have parity that matches neither
// the old nor the new data, and the chunk on the missing member can then
// only be rebuilt from that parity: reads of that one chunk in an
// interrupted stripe of a dirty region may return stale or mixed data (the
// chunks actually written read correctly, and stripes outside the dirty
// regions are unaffected). ResyncRegions cannot repair such a stripe (the
// data needed to recompute its parity is missing) and leaves it, and its
// region's bit, as they are. A journal closes that window; the bitmap only
// confines it to the stripes in flight at the crash, which a filesystem or
// the replica layer above must tolerate as for any torn write.

// Write-intent bitmap constants.
const (
	// DefaultRegionSize is the bytes one bit stands for unless configured
	// otherwise: 64 MiB like md's default for large arrays, rounded down to
	// a whole number of stripes (at least one).
	DefaultRegionSize int64 = 64 << 20
	// DefaultIntentIdle is how long a region must have had no write in
	// flight before Sweep clears its bit.
	DefaultIntentIdle = 5 * time.Second
	// IntentPageBytes is the number of bitmap bytes in one page, the unit
	// of IntentStore.Save: a 4 KiB on-member slot less its header.
	IntentPageBytes = intentSlotSize - intentHeaderLen

	intentSlotSize  = 4096
	intentHeaderLen = 32
	intentMagic     = "BRWI"
	intentVersion   = 1
)

// ErrIntentCorrupt is wrapped by the errors of a write-intent bitmap that
// cannot be trusted: a damaged page with no good copy, or one written for
// another layout. The safe fallback is a resync of the whole array.
var ErrIntentCorrupt = errors.New("raid: write-intent bitmap corrupt")

// IntentStore persists the pages of a write-intent bitmap.
type IntentStore interface {
	// Save makes page durable with the bitmap bytes data
	// (at most IntentPageBytes; a short page is zero padded) before it
	// returns.
	Save(page int, data []byte) error
	// Load returns the bitmap as last saved: the pages in order, each
	// IntentPageBytes long but the last, which may be short; missing bytes
	// read as zero.
	Load() ([]byte, error)
}

// Region is one region of a write-intent bitmap: logical bytes
// [Offset, Offset+Length) of the array.
type Region struct {
	Index          int64
	Offset, Length int64
}

// IntentOptions qualify NewWriteIntent.
type IntentOptions struct {
	// RegionSize is the bytes of logical space per bit: a positive
	// multiple of the geometry's stripe size. Zero means DefaultRegionSize
	// rounded down to whole stripes (see IntentRegionSize).
	RegionSize int64
	// Idle is how long a region must have been without writes before
	// Sweep may clear it; zero means DefaultIntentIdle.
	Idle time.Duration
	// Store persists the bitmap; nil keeps it in memory only (a
	// MemIntentStore). Its saved bits are loaded by NewWriteIntent.
	Store IntentStore
	// Now is the clock End stamps regions with; time.Now if nil.
	Now func() time.Time
}

// IntentRegionSize resolves a region size for geometry g: want, or
// DefaultRegionSize rounded down to whole stripes if want is zero. It fails
// if want is not a positive multiple of g.StripeSize.
func IntentRegionSize(g Geometry, want int64) (int64, error) {
	if err := g.Validate(); err != nil {
		return 0, err
	}
	ss := g.StripeSize()
	if want == 0 {
		return max(1, DefaultRegionSize/ss) * ss, nil
	}
	if want < 0 || want%ss != 0 {
		return 0, fmt.Errorf("raid: write intent: RegionSize=%d is not a positive multiple of the stripe size %d", want, ss)
	}
	return want, nil
}

// WriteIntent is a write-intent bitmap over an array's logical space. An
// Array given one (ArrayOptions.Intent) calls Begin before and End after
// every write; the owner calls Sweep periodically to clear idle regions.
// Its methods are safe for concurrent use.
type WriteIntent struct {
	g          Geometry
	regionSize int64
	regions    int64
	idle       time.Duration
	store      IntentStore
	now        func() time.Time

	optimal func() bool // the array is optimal; set by NewArray, nil = true

	saveMu sync.Mutex // serializes store.Save; taken before mu

	mu       sync.Mutex
	bits     []byte
	inflight []int32
	epoch    []uint64 // bumped by every Begin and End of the region
	lastEnd  []int64  // Unix nanoseconds of the region's last End
	pageGen  []uint64 // bumped by every change of the page's bits
	setGen   []uint64 // pageGen of the page's last bit set
	saved    []uint64 // pageGen last saved
	attached bool
}

// NewWriteIntent returns the write-intent bitmap of an array of geometry g,
// with the bits saved in opts.Store (all clear for a new store). It fails,
// with an error wrapping ErrIntentCorrupt for damaged bits, if the store
// cannot be loaded.
func NewWriteIntent(g Geometry, opts IntentOptions) (*WriteIntent, error) {
	rs, err := IntentRegionSize(g, opts.RegionSize)
	if err != nil {
		return nil, err
	}
	w := &WriteIntent{
		g:          g,
		regionSize: rs,
		regions:    (g.Size() + rs - 1) / rs,
		idle:       opts.Idle,
		store:      opts.Store,
		now:        opts.Now,
	}
	if w.idle == 0 {
		w.idle = DefaultIntentIdle
	}
	if w.store == nil {
		w.store = NewMemIntentStore()
	}
	if w.now == nil {
		w.now = time.Now
	}
	if ms, ok := w.store.(*MemberIntentStore); ok && (ms.regionSize != rs || ms.arraySize != g.Size()) {
		return nil, fmt.Errorf("raid: write intent: store laid out for region size %d and array size %d, want %d and %d",
			ms.regionSize, ms.arraySize, rs, g.Size())
	}
	nbytes := (w.regions + 7) / 8
	pages := (nbytes + IntentPageBytes - 1) / IntentPageBytes
	w.bits = make([]byte, nbytes)
	w.inflight = make([]int32, w.regions)
	w.epoch = make([]uint64, w.regions)
	w.lastEnd = make([]int64, w.regions)
	w.pageGen = make([]uint64, pages)
	w.setGen = make([]uint64, pages)
	w.saved = make([]uint64, pages)
	data, err := w.store.Load()
	if err != nil {
		return nil, fmt.Errorf("raid: write intent: load: %w", err)
	}
	if int64(len(data)) > nbytes {
		if bytes.IndexFunc(data[nbytes:], func(r rune) bool { return r != 0 }) >= 0 {
			return nil, fmt.Errorf("raid: write intent: %w: bits set past the %d regions", ErrIntentCorrupt, w.regions)
		}
		data = data[:nbytes]
	}
	copy(w.bits, data)
	if tail := w.regions % 8; tail != 0 && w.bits[nbytes-1]>>tail != 0 {
		return nil, fmt.Errorf("raid: write intent: %w: bits set past the %d regions", ErrIntentCorrupt, w.regions)
	}
	return w, nil
}

// RegionSize returns the bytes of logical space per bit.
func (w *WriteIntent) RegionSize() int64 { return w.regionSize }

// Regions returns the number of regions (bits).
func (w *WriteIntent) Regions() int64 { return w.regions }

func (w *WriteIntent) test(r int64) bool { return w.bits[r/8]&(1<<(r%8)) != 0 }
func (w *WriteIntent) page(r int64) int  { return int(r / 8 / IntentPageBytes) }

// span returns the regions [first, last] of [off, off+n), n > 0.
func (w *WriteIntent) span(off, n int64) (first, last int64, err error) {
	if off < 0 || n <= 0 || off > w.g.Size() || n > w.g.Size()-off {
		return 0, 0, fmt.Errorf("raid: write intent: range at %d length %d outside the array [0, %d): %w", off, n, w.g.Size(), block.ErrOutOfRange)
	}
	return off / w.regionSize, (off + n - 1) / w.regionSize, nil
}

// Begin records a write of [off, off+n) about to start. Regions newly dirty
// get their bit set and their page saved before Begin returns; a write into
// regions already dirty (and saved) saves nothing. Every successful Begin
// must be followed by End of the same range once the write is done. On a
// save error Begin undoes its accounting and the write must not start.
func (w *WriteIntent) Begin(off, n int64) error {
	if n == 0 {
		return nil
	}
	first, last, err := w.span(off, n)
	if err != nil {
		return err
	}
	type need struct {
		page int
		gen  uint64
	}
	var needs []need
	w.mu.Lock()
	for r := first; r <= last; r++ {
		w.inflight[r]++
		w.epoch[r]++
		p := w.page(r)
		if !w.test(r) {
			w.bits[r/8] |= 1 << (r % 8)
			w.pageGen[p]++
			w.setGen[p] = w.pageGen[p]
		}
		if w.saved[p] < w.setGen[p] && (len(needs) == 0 || needs[len(needs)-1].page != p) {
			needs = append(needs, need{p, w.setGen[p]})
		}
	}
	w.mu.Unlock()
	for _, x := range needs {
		if err := w.persist(x.page, x.gen); err != nil {
			w.End(off, n)
			return err
		}
	}
	return nil
}

// End records that the write of [off, off+n) announced by Begin is done.
func (w *WriteIntent) End(off, n int64) {
	if n == 0 {
		return
	}
	first, last, err := w.span(off, n)
	if err != nil {
		return
	}
	now := w.now().UnixNano()
	w.mu.Lock()
	for r := first; r <= last; r++ {
		w.inflight[r]--
		w.epoch[r]++
		w.lastEnd[r] = now
	}
	w.mu.Unlock()
}

// persist saves page p unless a save of generation gen or later is done.
func (w *WriteIntent) persist(p int, gen uint64) error {
	w.saveMu.Lock()
	defer w.saveMu.Unlock()
	w.mu.Lock()
	if w.saved[p] >= gen {
		w.mu.Unlock()
		return nil
	}
	lo := int64(p) * IntentPageBytes
	data := slices.Clone(w.bits[lo:min(lo+IntentPageBytes, int64(len(w.bits)))])
	g := w.pageGen[p]
	w.mu.Unlock()
	if err := w.store.Save(p, data); err != nil {
		return fmt.Errorf("raid: write intent: save page %d: %w", p, err)
	}
	w.mu.Lock()
	w.saved[p] = max(w.saved[p], g)
	w.mu.Unlock()
	return nil
}

// persistAll saves every page.
func (w *WriteIntent) persistAll() error {
	var errs []error
	for p := range w.pageGen {
		w.mu.Lock()
		w.saved[p] = 0 // force
		gen := max(w.pageGen[p], 1)
		w.mu.Unlock()
		errs = append(errs, w.persist(p, gen))
	}
	return errors.Join(errs...)
}

// Dirty returns the regions whose bit is set, in order.
func (w *WriteIntent) Dirty() []Region {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []Region
	for r := range w.regions {
		if w.test(r) {
			out = append(out, w.region(r))
		}
	}
	return out
}

// IsDirty reports whether region r's bit is set.
func (w *WriteIntent) IsDirty(r int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return r >= 0 && r < w.regions && w.test(r)
}

func (w *WriteIntent) region(r int64) Region {
	off := r * w.regionSize
	return Region{Index: r, Offset: off, Length: min(w.regionSize, w.g.Size()-off)}
}

// Sweep clears the bits of the regions with no write in flight whose last
// write ended at least the idle time before now, and saves the changed
// pages. It does nothing while the array is not optimal (a member faulty,
// missing or rebuilding): the bits then record what that member missed.
// The owner calls it periodically; it returns the number of bits cleared.
func (w *WriteIntent) Sweep(now time.Time) (int, error) {
	return w.clear(func(r int64) bool { return now.UnixNano()-w.lastEnd[r] >= int64(w.idle) }, nil)
}

// clear clears the set bits of the regions (all if list is nil) with no
// write in flight for which ok (under w.mu) holds, if the array is
// optimal, and saves the changed pages.
func (w *WriteIntent) clear(ok func(r int64) bool, list []int64) (int, error) {
	if w.optimal != nil && !w.optimal() {
		return 0, nil
	}
	w.mu.Lock()
	var cleared []int64
	try := func(r int64) {
		if w.test(r) && w.inflight[r] == 0 && ok(r) {
			w.bits[r/8] &^= 1 << (r % 8)
			cleared = append(cleared, r)
		}
	}
	if list == nil {
		for r := range w.regions {
			try(r)
		}
	} else {
		for _, r := range list {
			if r >= 0 && r < w.regions {
				try(r)
			}
		}
	}
	// A member that failed during a write failed before the write's End,
	// so before these bits were found idle: checking again now sees it.
	if w.optimal != nil && !w.optimal() {
		for _, r := range cleared {
			w.bits[r/8] |= 1 << (r % 8)
		}
		w.mu.Unlock()
		return 0, nil
	}
	pages := map[int]uint64{}
	for _, r := range cleared {
		p := w.page(r)
		if _, done := pages[p]; !done {
			w.pageGen[p]++
		}
		pages[p] = w.pageGen[p]
	}
	w.mu.Unlock()
	var errs []error
	for _, p := range slices.Sorted(func(yield func(int) bool) {
		for p := range pages {
			if !yield(p) {
				return
			}
		}
	}) {
		errs = append(errs, w.persist(p, pages[p]))
	}
	return len(cleared), errors.Join(errs...)
}

func (w *WriteIntent) activity(r int64) (epoch uint64, inflight int32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.epoch[r], w.inflight[r]
}

// MemIntentStore is an IntentStore in memory, for tests and for arrays
// without a persistent bitmap.
type MemIntentStore struct {
	mu    sync.Mutex
	pages map[int][]byte
	saves int
}

// NewMemIntentStore returns an empty MemIntentStore.
func NewMemIntentStore() *MemIntentStore { return &MemIntentStore{pages: map[int][]byte{}} }

// Save stores a copy of data as page.
func (s *MemIntentStore) Save(page int, data []byte) error {
	if page < 0 || len(data) > IntentPageBytes {
		return fmt.Errorf("raid: intent store: page %d of %d bytes", page, len(data))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pages[page] = slices.Clone(data)
	s.saves++
	return nil
}

// Load returns the saved pages.
func (s *MemIntentStore) Load() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := -1
	for p := range s.pages {
		n = max(n, p)
	}
	var out []byte
	for p := 0; p <= n; p++ {
		b := make([]byte, IntentPageBytes)
		copy(b, s.pages[p])
		out = append(out, b...)
	}
	return out, nil
}

// Saves returns the number of Save calls so far.
func (s *MemIntentStore) Saves() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.saves
}

// MemberIntentStore keeps the bitmap in the reserved bitmap area of the
// array's member devices (Superblock.BitmapOffset, BitmapSize): page p is
// the 4 KiB slot at BitmapOffset+p*4096 of every member, so that any
// surviving member holds it. Slot encoding (little endian):
//
//	0   magic "BRWI"
//	4   version (uint32, 1)
//	8   CRC-32C of the slot without these 4 bytes
//	12  page index (uint32)
//	16  region size (uint64)
//	24  array size (uint64)
//	32  the page's bitmap bytes (IntentPageBytes, zero padded)
//
// A slot of zeroes was never written and reads as a clear page.
type MemberIntentStore struct {
	devs         []block.Device // whole member devices; nil entries skipped
	offset, size int64
	regionSize   int64
	arraySize    int64
	pages        int
	mu           sync.Mutex
	inSync       func(i int) bool
	onError      func(i int, off int64, err error)
}

// NewMemberIntentStore returns the store of the bitmap of an array of
// geometry g with regions of regionSize (0 for the default, as in
// IntentOptions) in the area [offset, offset+size) of devs, the whole
// member devices in member order (superblock area included; nil for a
// missing member). The area must hold every page.
//
// Once the store is given to an array (through its WriteIntent), Save
// writes only the members in sync and fails a member whose slot write
// fails; before that it writes every device.
func NewMemberIntentStore(devs []block.Device, offset, size int64, g Geometry, regionSize int64) (*MemberIntentStore, error) {
	rs, err := IntentRegionSize(g, regionSize)
	if err != nil {
		return nil, err
	}
	regions := (g.Size() + rs - 1) / rs
	pages := int(((regions+7)/8 + IntentPageBytes - 1) / IntentPageBytes)
	if offset < 0 || offset%intentSlotSize != 0 || size < int64(pages)*intentSlotSize {
		return nil, fmt.Errorf("raid: intent store: area [%d, +%d) does not hold %d aligned 4 KiB pages", offset, size, pages)
	}
	return &MemberIntentStore{devs: devs, offset: offset, size: size, regionSize: rs, arraySize: g.Size(), pages: pages}, nil
}

func (s *MemberIntentStore) slotCRC(b []byte) uint32 {
	c := crc32.Checksum(b[:8], sbCastagnoli)
	return crc32.Update(c, sbCastagnoli, b[12:intentSlotSize])
}

func (s *MemberIntentStore) bind(inSync func(int) bool, onError func(int, int64, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inSync, s.onError = inSync, onError
}

// Save writes page to every (in-sync) member. It fails if no member took
// it.
func (s *MemberIntentStore) Save(page int, data []byte) error {
	if page < 0 || page >= s.pages || len(data) > IntentPageBytes {
		return fmt.Errorf("raid: intent store: page %d of %d bytes (have %d pages)", page, len(data), s.pages)
	}
	b := make([]byte, intentSlotSize)
	le := binary.LittleEndian
	copy(b, intentMagic)
	le.PutUint32(b[4:], intentVersion)
	le.PutUint32(b[12:], uint32(page))
	le.PutUint64(b[16:], uint64(s.regionSize))
	le.PutUint64(b[24:], uint64(s.arraySize))
	copy(b[intentHeaderLen:], data)
	le.PutUint32(b[8:], s.slotCRC(b))
	s.mu.Lock()
	inSync, onError := s.inSync, s.onError
	s.mu.Unlock()
	off := s.offset + int64(page)*intentSlotSize
	wrote := 0
	var lastErr error
	for i, d := range s.devs {
		if d == nil || (inSync != nil && !inSync(i)) {
			continue
		}
		if err := d.WriteAt(b, off, true); err != nil {
			lastErr = err
			if onError != nil {
				onError(i, off, err)
			}
			continue
		}
		wrote++
	}
	if wrote == 0 {
		return fmt.Errorf("raid: intent store: page %d written to no member (last error: %v)", page, lastErr)
	}
	return nil
}

// Load reads every page from every member and returns their union: a bit
// set on any member's good copy is set. A slot that fails its checks is
// skipped if another member has a good copy of the page; Load fails with an
// error wrapping ErrIntentCorrupt if none has.
func (s *MemberIntentStore) Load() ([]byte, error) {
	out := make([]byte, s.pages*IntentPageBytes)
	b := make([]byte, intentSlotSize)
	le := binary.LittleEndian
	for p := range s.pages {
		off := s.offset + int64(p)*intentSlotSize
		good, read := 0, 0
		var bad []string
		for i, d := range s.devs {
			if d == nil {
				continue
			}
			if err := d.ReadAt(b, off); err != nil {
				bad = append(bad, fmt.Sprintf("member %d: read: %v", i, err))
				continue
			}
			read++
			if bytes.IndexFunc(b, func(r rune) bool { return r != 0 }) < 0 {
				continue // never written
			}
			switch {
			case string(b[:4]) != intentMagic:
				bad = append(bad, fmt.Sprintf("member %d: magic %q", i, b[:4]))
			case le.Uint32(b[4:]) != intentVersion:
				bad = append(bad, fmt.Sprintf("member %d: version %d", i, le.Uint32(b[4:])))
			case le.Uint32(b[8:]) != s.slotCRC(b):
				bad = append(bad, fmt.Sprintf("member %d: checksum mismatch", i))
			case int(le.Uint32(b[12:])) != p || int64(le.Uint64(b[16:])) != s.regionSize || int64(le.Uint64(b[24:])) != s.arraySize:
				bad = append(bad, fmt.Sprintf("member %d: slot of page %d, region size %d, array size %d, want %d, %d, %d",
					i, le.Uint32(b[12:]), le.Uint64(b[16:]), le.Uint64(b[24:]), p, s.regionSize, s.arraySize))
			default:
				good++
				dst := out[p*IntentPageBytes:]
				for j, c := range b[intentHeaderLen:] {
					dst[j] |= c
				}
			}
		}
		if good == 0 && len(bad) > 0 {
			if read == 0 {
				return nil, fmt.Errorf("raid: intent store: page %d unreadable on every member: %v", p, bad)
			}
			return nil, fmt.Errorf("raid: intent store: page %d: %w: no good copy (%v)", p, ErrIntentCorrupt, bad)
		}
	}
	return out, nil
}

// attachIntent binds w to the array (NewArray): the write paths Begin and
// End on it, and Sweep clears bits only while the array is optimal.
func (a *Array) attachIntent(w *WriteIntent) error {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.attached {
		return fmt.Errorf("raid: array %s: write intent already in use by another array", a.name)
	}
	if w.g != a.g {
		return fmt.Errorf("raid: array %s: write intent for geometry %+v, array is %+v", a.name, w.g, a.g)
	}
	w.attached = true
	w.optimal = func() bool { return a.health() == HealthOptimal }
	if ms, ok := w.store.(*MemberIntentStore); ok {
		ms.bind(func(i int) bool { return i < len(a.members) && a.members[i].inSync() },
			func(i int, off int64, err error) {
				if i < len(a.members) {
					a.fail(i, "write (write-intent bitmap)", off, err)
				}
			})
	}
	a.intent = w
	return nil
}

// beginIntent calls Begin on the array's write intent, if any, and returns
// the matching End.
func (a *Array) beginIntent(op string, off, n int64) (func(), error) {
	w := a.intent
	if w == nil || n == 0 {
		return func() {}, nil
	}
	if err := w.Begin(off, n); err != nil {
		return nil, fmt.Errorf("raid: %s %s at %d length %d: %w", op, a.name, off, n, err)
	}
	return func() { w.End(off, n) }, nil
}

// Intent returns the array's write-intent bitmap, nil if it has none.
func (a *Array) Intent() *WriteIntent { return a.intent }

// resyncPacer limits a resync to rate bytes per second (0: no limit).
type resyncPacer struct {
	rate  int64
	start time.Time
	n     int64
}

func (p *resyncPacer) add(ctx context.Context, n int64) error {
	if p.rate <= 0 {
		return ctx.Err()
	}
	if p.start.IsZero() {
		p.start = time.Now()
	}
	p.n += n
	want := time.Duration(float64(p.n) / float64(p.rate) * float64(time.Second))
	if d := want - time.Since(p.start); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	return ctx.Err()
}

// regionStripes returns the stripes [first, end) of region r.
func (a *Array) regionStripes(r Region) (first, end int64) {
	ss := a.g.StripeSize()
	return r.Offset / ss, (r.Offset + r.Length + ss - 1) / ss
}

// ResyncRegions makes the stripes of regions consistent again after a
// crash: on RAID 5/6 it recomputes the parity of every stripe whose parity
// does not verify; on RAID 1/10 it copies one readable in-sync copy of each
// chunk over the others. It then clears the regions' bits if the array is
// optimal. A stripe that cannot be resynced because a member holding its
// data is unavailable (a degraded array) is left as it is, and so is its
// bit. rate limits the bytes read per second (0 for no limit). Writes may
// run concurrently. It needs a write intent (ArrayOptions.Intent) only to
// clear the bits.
func (a *Array) ResyncRegions(ctx context.Context, regions []Region, rate int64) error {
	if a.closed.Load() {
		return fmt.Errorf("raid: resync %s: array closed", a.name)
	}
	pace := &resyncPacer{rate: rate}
	var done []int64
	for _, r := range regions {
		if r.Offset < 0 || r.Length <= 0 || r.Offset > a.g.Size() || r.Length > a.g.Size()-r.Offset {
			return fmt.Errorf("raid: resync %s: region [%d, +%d) outside the array: %w", a.name, r.Offset, r.Length, block.ErrOutOfRange)
		}
		end, err := a.beginIntent("resync", r.Offset, r.Length)
		if err != nil {
			return err
		}
		first, last := a.regionStripes(r)
		for s := first; s < last; s++ {
			n, err := a.resyncStripe(s)
			if err == nil {
				err = pace.add(ctx, n)
			}
			if err != nil {
				end()
				return err
			}
		}
		end()
		if a.intent != nil && r.Index >= 0 && a.intent.region(r.Index) == r {
			done = append(done, r.Index)
		}
	}
	if a.intent != nil && len(done) > 0 {
		if _, err := a.intent.clear(func(int64) bool { return true }, done); err != nil {
			return err
		}
	}
	return nil
}

// resyncStripe makes stripe s consistent under its lock and returns the
// bytes read.
func (a *Array) resyncStripe(s int64) (int64, error) {
	C := a.g.ChunkSize
	off := s * C
	mu := a.lock(s)
	mu.Lock()
	defer mu.Unlock()
	if a.mirror {
		var read int64
		buf, release := getBufs(1, C)
		defer release()
		c := a.g.CopyCount()
		for first := 0; first < a.g.Members; first += c {
			// a copy that fails the read is repaired by the copy below
			src, _, _ := a.readCopy(buf[0], first, off, -1, nil)
			if src < 0 {
				continue // nothing readable: left for a later resync
			}
			read += C
			for i := first; i < first+c; i++ {
				if i != src {
					a.memberWrite(i, buf[0], off, false)
				}
			}
		}
		return read, nil
	}
	idx := a.stripeMembers(s)
	bufs, release := getBufs(len(idx), C)
	defer release()
	var read int64
	for ci, mi := range idx {
		m := a.members[mi]
		if !m.inSync() {
			if ci < a.k {
				return read, nil // degraded: data missing, parity cannot be recomputed
			}
			continue
		}
		if err := m.readAt(bufs[ci], off); err != nil {
			if ci < a.k {
				return read, nil
			}
			continue // parity rewritten below
		}
		read += C
	}
	if ok, err := a.par.Verify(bufs[:a.k], bufs[a.k:]); err == nil && ok {
		return read, nil
	}
	if err := a.par.Encode(bufs[:a.k], bufs[a.k:]); err != nil {
		return read, fmt.Errorf("raid: resync %s stripe %d: %w", a.name, s, err)
	}
	for ci := a.k; ci < len(idx); ci++ {
		a.memberWrite(idx[ci], bufs[ci], off, false)
	}
	return read, nil
}

// ResyncMember brings member i, faulty but holding its data from before it
// left (a short absence), back in sync by copying to it (mirrors) or
// reconstructing onto it (RAID 5/6) only the regions whose bit is set: the
// bitmap keeps every region written while the array was degraded. The
// member is Rebuilding while it runs and InSync at the end; on error it is
// Faulty again. Writes may run concurrently: a region written during the
// copy is copied again, the last time with every stripe lock held, and the
// member turns InSync under those locks. rate limits the bytes written per
// second (0 for no limit). The member's device must be present (given to
// NewArray, listed in Faulty).
func (a *Array) ResyncMember(ctx context.Context, i int, rate int64) error {
	w := a.intent
	if w == nil {
		return fmt.Errorf("raid: resync %s member %d: the array has no write-intent bitmap", a.name, i)
	}
	if i < 0 || i >= len(a.members) {
		return fmt.Errorf("raid: resync %s: member %d out of range [0, %d)", a.name, i, len(a.members))
	}
	m := a.members[i]
	if m.empty() {
		return fmt.Errorf("raid: resync %s member %d: no device", a.name, i)
	}
	if m.device().Size() < a.g.MemberSize {
		return fmt.Errorf("raid: resync %s member %d: device is %d bytes, want at least %d", a.name, i, m.device().Size(), a.g.MemberSize)
	}
	if !m.state.CompareAndSwap(int32(Faulty), int32(Rebuilding)) {
		return fmt.Errorf("raid: resync %s member %d: member is %v, not faulty", a.name, i, m.State())
	}
	m.rebuilt.Store(0) // array writes skip it until it is InSync
	err := a.resyncMember(ctx, w, i, rate)
	if err != nil {
		if m.state.CompareAndSwap(int32(Rebuilding), int32(Faulty)) {
			m.mu.Lock()
			m.err = err
			m.mu.Unlock()
		}
		return err
	}
	a.log.Info("raid: member resynced from the write-intent bitmap", "array", a.name, "member", i, "health", a.health().String())
	if err := w.persistAll(); err != nil {
		a.log.Warn("raid: write-intent bitmap save after resync", "array", a.name, "member", i, "err", err)
	}
	return nil
}

func (a *Array) resyncMember(ctx context.Context, w *WriteIntent, i int, rate int64) error {
	pace := &resyncPacer{rate: rate}
	m := a.members[i]
	done := map[int64]uint64{} // region -> epoch when its last copy started
	pass := func(locked bool) (int, error) {
		copied := 0
		for _, r := range w.Dirty() {
			if ep, in := w.activity(r.Index); in == 0 {
				if e, ok := done[r.Index]; ok && e == ep {
					continue
				}
			}
			ep, _ := w.activity(r.Index)
			first, last := a.regionStripes(r)
			for s := first; s < last; s++ {
				if err := a.resyncChunk(s, i, locked); err != nil {
					return copied, err
				}
				if !locked {
					if err := pace.add(ctx, a.g.ChunkSize); err != nil {
						return copied, err
					}
				}
			}
			done[r.Index] = ep
			copied++
		}
		return copied, nil
	}
	for range 4 {
		n, err := pass(false)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
	}
	for s := range a.locks {
		a.locks[s].Lock()
	}
	defer func() {
		for s := range a.locks {
			a.locks[s].Unlock()
		}
	}()
	if _, err := pass(true); err != nil {
		return err
	}
	if !m.state.CompareAndSwap(int32(Rebuilding), int32(InSync)) {
		return fmt.Errorf("raid: resync %s member %d: member became %v during the resync", a.name, i, m.State())
	}
	m.mu.Lock()
	m.err = nil
	m.mu.Unlock()
	return nil
}

// resyncChunk writes member i's chunk of stripe s from the other members,
// under the stripe lock unless locked.
func (a *Array) resyncChunk(s int64, i int, locked bool) error {
	C := a.g.ChunkSize
	off := s * C
	if !locked {
		mu := a.lock(s)
		mu.Lock()
		defer mu.Unlock()
	}
	if a.mirror {
		buf, release := getBufs(1, C)
		defer release()
		src, _, lastErr := a.readCopy(buf[0], i, off, i, nil)
		if src < 0 {
			return a.tooMany("resync", a.g.Stripe(s).Logical, a.g.StripeSize(), lastErr)
		}
		return a.resyncWrite(i, buf[0], off)
	}
	idx := a.stripeMembers(s)
	bufs, release := getBufs(len(idx), C)
	defer release()
	target := slices.Index(idx, i)
	missing, _, lastErr := a.readStripe(idx, bufs, off, target, a.k)
	if len(idx)-len(missing) < a.k {
		return a.tooMany("resync", a.g.Stripe(s).Logical, a.g.StripeSize(), lastErr)
	}
	chunks := slices.Clone(bufs)
	if err := a.par.Reconstruct(chunks, missing); err != nil {
		return fmt.Errorf("raid: resync %s stripe %d: %w", a.name, s, err)
	}
	return a.resyncWrite(i, chunks[target], off)
}

func (a *Array) resyncWrite(i int, b []byte, off int64) error {
	if err := a.members[i].writeAt(b, off, false); err != nil {
		return fmt.Errorf("raid: resync %s member %d at %d: %w", a.name, i, off, err)
	}
	return nil
}
