//go:build linux

package raid

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockrep/blockrep/block"
)

// This file holds the persistent array ("md on disk"): DiskArray is an
// Array over member files or block devices that carry a superblock and a
// write-intent bitmap (superblock.go, intent.go) in their first
// DataOffset bytes, so that the array assembles itself after a restart.
//
// Create writes the superblocks and brings the array to a consistent
// initial state by zeroing the data area of every member (a hole punched in
// a file, a discard or BLKZEROOUT on a block device: File.WriteZeroes with
// MayTrim), not by an initial resync: the members then agree (mirrors) and
// every stripe's parity matches its all-zero data (the P and Q of zeroes
// are zeroes), and the array reads zeroes. On sparse files and thin or
// discard-zeroing devices this costs nothing; on a device that can only
// write zeroes it costs one write of every member, as an initial resync
// would, but no reads.
//
// Open reads the superblocks, runs Plan, and starts the array:
//
//   - The array is marked dirty on disk (event counter +1) before Open
//     returns, so before any write; Close flushes, clears the write-intent
//     bits (when optimal) and writes it clean (events +1).
//   - An array found dirty (a crash) has the regions set in its write-intent
//     bitmap resynced (ResyncRegions) before Open returns; a bitmap that
//     cannot be read (ErrIntentCorrupt) is reset and the whole array is
//     resynced, with every bit set on disk until it is done.
//   - A stale member (events behind) whose own superblock recorded itself in
//     sync and whose events are at least the array's OptimalEvents (the array
//     has not been optimal since it left, so the bitmap still holds every
//     region written meanwhile) is resynced from the bitmap (ResyncMember)
//     before Open returns. Any other stale member is rebuilt in full, and a
//     member recorded Rebuilding resumes at its checkpoint: these rebuilds
//     run in the background (WaitRebuild), the array serving I/O degraded.
//   - State changes persist: a member that fails (I/O error or Fail) is
//     recorded Faulty on every remaining member (events +1) before the
//     failing I/O returns; Remove, Replace and Add write the new member
//     table, Rebuild writes its checkpoints (SlotStatus.RebuildOffset) and
//     the InSync state at the end.

// CreateOptions qualify Create.
type CreateOptions struct {
	// Name is the array's name (at most MaxArrayNameLen bytes).
	Name string
	// Geometry is the array's shape. MemberSize 0 means the largest that
	// fits on every member after the DataOffset, in whole chunks.
	Geometry Geometry
	// Paths are the member files or block devices, in role order.
	Paths []string
	// Spares are hot spares: devices that hold no data but the array's
	// superblock (role RoleSpare) until a member fails (see spare.go).
	Spares []string
	// FileSize, if not zero, creates a missing path (member or spare) as
	// a sparse file of this size (see FileOptions.CreateSize).
	FileSize int64
	// RegionSize is the bytes of array space per write-intent bit (see
	// IntentOptions.RegionSize); 0 for the default.
	RegionSize int64
	// Force lets Create overwrite a device that holds an array superblock
	// (of another array, or a damaged one).
	Force bool
	// RebuildRate and OnChange are as in OpenOptions.
	RebuildRate int64
	OnChange    func(members, spares []string)
	// Logger receives the array's events; slog.Default() if nil.
	Logger *slog.Logger

	spareClock Clock // as in OpenOptions
}

// OpenOptions qualify Open.
type OpenOptions struct {
	// Paths are the candidate devices, in any order; devices that do not
	// belong to the array are left alone (see DiskArray.Assembly).
	Paths []string
	// UUID, if not zero, names the array to assemble; Name, if not empty,
	// picks the array of that name among the candidates. Without either,
	// the array most candidates belong to.
	UUID UUID
	Name string
	// RebuildRate limits the background rebuilds Open starts, and those
	// onto spares taken in for failed members, in member bytes per second;
	// 0 is unlimited.
	RebuildRate int64
	// OnChange, if set, is called with MemberPaths and Spares after a
	// spare was taken into a failed member's slot in the background, so
	// that the caller can record where the members are now. It is called
	// without any of the array's locks held.
	OnChange func(members, spares []string)
	// Logger receives the array's events; slog.Default() if nil.
	Logger *slog.Logger

	// spareClock times the rebuilds onto spares taken in the background
	// (real time if nil): tests stall them with it.
	spareClock Clock
}

// Recovery is what Open did to bring the array back to a consistent state.
type Recovery struct {
	// Dirty: the array was not shut down cleanly.
	Dirty bool
	// BitmapCorrupt: the write-intent bitmap could not be read; it was
	// reset and the whole array resynced.
	BitmapCorrupt bool
	// DirtyRegions are the regions resynced after a crash (the whole
	// array when BitmapCorrupt).
	DirtyRegions []Region
	// ResyncReadBytes is the member bytes read by that resync.
	ResyncReadBytes int64
	// Resynced are the stale members brought back from the bitmap.
	Resynced []int
	// Rebuilding are the members being rebuilt in full in the background
	// (stale beyond the bitmap, resuming an interrupted rebuild, or a
	// spare taken into the slot of a member missing at assembly).
	Rebuilding []int
	// SparesTaken are the slots of Rebuilding that a spare took.
	SparesTaken []int
}

// DiskArray is an Array whose members carry its superblock: a block.Device
// that survives restarts. Member changes go through its Fail, Remove,
// Replace, Add and Rebuild, which persist them; Array gives the underlying
// Array for Status, Progress and Scrub.
type DiskArray struct {
	arr    *Array
	intent *WriteIntent
	log    *slog.Logger
	name   string
	uuid   UUID
	g      Geometry

	dataOff, bmOff, bmSize int64
	regionSize             int64

	mu            sync.Mutex // superblock writes and the fields below
	events        uint64
	optimalEvents uint64
	state         ArrayState
	files         []*File // per role: the whole device; nil when missing or removed
	memberUUID    []UUID
	removed       []bool
	ckpt          []int64 // persisted rebuild checkpoint of a Rebuilding role
	lastSlots     []SlotStatus
	closed        bool
	spares        []spareDev // hot spares, in the order they are taken

	// memberMu serializes the member changes (Remove, Replace, Add, the
	// spares'): each records the new device before Array.Replace and
	// must not interleave with another. Taken before the Array's locks.
	memberMu   sync.Mutex
	rate       int64
	onChange   func(members, spares []string)
	spareClock Clock
	spareBg    spareWorker

	refs  []*memberRef // the intent store's view of the members
	reads atomic.Int64 // member data bytes read (Recovery.ResyncReadBytes)

	asm      Assembly
	recovery Recovery

	bgCancel    context.CancelFunc
	bgDone      chan struct{}
	rebuildDone chan struct{}
	bgErr       error // set before rebuildDone is closed
	stopOnce    sync.Once
}

var _ block.Device = (*DiskArray)(nil)

func newUUID() UUID {
	var u UUID
	for u.IsZero() {
		rand.Read(u[:])
	}
	return u
}

// readSuperblock reads the superblock of f: nil without error when it has
// none.
func readSuperblock(f *File) (*Superblock, error) {
	b := make([]byte, SuperblockSize)
	if f.Size() < SuperblockSize {
		return nil, nil
	}
	if err := f.ReadAt(b, 0); err != nil {
		return nil, err
	}
	sb, err := UnmarshalSuperblock(b)
	if errors.Is(err, ErrNoSuperblock) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &sb, nil
}

// Create makes a new array over opts.Paths and returns it open (dirty, as
// after Open). See the file comment for how the initial state is made
// consistent.
func Create(ctx context.Context, opts CreateOptions) (*DiskArray, error) {
	g := opts.Geometry
	if len(opts.Paths) != g.Members {
		return nil, fmt.Errorf("raid: create: %d paths for a geometry of %d members", len(opts.Paths), g.Members)
	}
	if len(opts.Name) > MaxArrayNameLen {
		return nil, fmt.Errorf("raid: create: name is %d bytes, longer than %d", len(opts.Name), MaxArrayNameLen)
	}
	seen := map[string]bool{}
	for _, p := range append(slices.Clone(opts.Paths), opts.Spares...) {
		if seen[filepath.Clean(p)] {
			return nil, fmt.Errorf("raid: create: %s is given twice among the members and spares", p)
		}
		seen[filepath.Clean(p)] = true
	}
	// files are the members, in role order, then the spares.
	files := make([]*File, 0, len(opts.Paths)+len(opts.Spares))
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	for _, p := range append(slices.Clone(opts.Paths), opts.Spares...) {
		f, err := OpenFile(p, FileOptions{CreateSize: opts.FileSize})
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("raid: create: %w", err)
		}
		files = append(files, f)
	}
	fail := func(err error) (*DiskArray, error) {
		closeAll()
		return nil, err
	}
	minSize := files[0].Size()
	for j, f := range files {
		if j < g.Members {
			minSize = min(minSize, f.Size())
		}
		sb, err := readSuperblock(f)
		if !opts.Force {
			if err != nil {
				return fail(fmt.Errorf("raid: create: %s holds a damaged array superblock (%v); use Force to overwrite it", f.Path(), err))
			}
			if sb != nil {
				return fail(fmt.Errorf("raid: create: %s already holds a superblock of array %v (%q, role %d, events %d); use Force to overwrite it",
					f.Path(), sb.ArrayUUID, sb.Name, sb.Role, sb.Events))
			}
		}
	}
	if g.MemberSize == 0 && g.ChunkSize > 0 {
		g.MemberSize = (minSize - DefaultDataOffset) / g.ChunkSize * g.ChunkSize
		if g.MemberSize <= 0 {
			return fail(fmt.Errorf("raid: create: the smallest member is %d bytes, no room for a chunk after the %d-byte superblock area", minSize, DefaultDataOffset))
		}
	}
	if err := g.Validate(); err != nil {
		return fail(err)
	}
	if g.Members > MaxSuperblockMembers {
		return fail(fmt.Errorf("raid: create: %d members, a superblock holds %d", g.Members, MaxSuperblockMembers))
	}
	for _, f := range files {
		if f.Size() < DefaultDataOffset+g.MemberSize {
			return fail(fmt.Errorf("raid: create: %s is %d bytes, want at least %d (data offset %d + MemberSize %d)",
				f.Path(), f.Size(), DefaultDataOffset+g.MemberSize, DefaultDataOffset, g.MemberSize))
		}
	}
	rs, err := IntentRegionSize(g, opts.RegionSize)
	if err != nil {
		return fail(err)
	}
	// Zero the superblock area first (an old superblock no longer
	// identifies the device while the rest is being prepared), then the
	// data area (the consistent initial state), then write the bitmap
	// pages (clear, recording the region size) and last the superblocks.
	// A spare's data area is left alone: the rebuild that takes it in
	// writes all of it.
	for i, f := range files {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		if err := f.WriteZeroes(0, DefaultDataOffset, block.ZeroFlags{}); err != nil {
			return fail(fmt.Errorf("raid: create: %w", err))
		}
		if i >= g.Members {
			continue
		}
		if err := f.WriteZeroes(DefaultDataOffset, g.MemberSize, block.ZeroFlags{MayTrim: true}); err != nil {
			return fail(fmt.Errorf("raid: create: %w", err))
		}
	}
	devs := make([]block.Device, g.Members)
	for i, f := range files[:g.Members] {
		devs[i] = f
	}
	store, err := NewMemberIntentStore(devs, DefaultBitmapOffset, DefaultBitmapSize, g, rs)
	if err != nil {
		return fail(fmt.Errorf("raid: create: %w", err))
	}
	w, err := NewWriteIntent(g, IntentOptions{RegionSize: rs, Store: store})
	if err != nil {
		return fail(fmt.Errorf("raid: create: %w", err))
	}
	if err := w.persistAll(); err != nil {
		return fail(fmt.Errorf("raid: create: write-intent bitmap: %w", err))
	}
	uuid := newUUID()
	slots := make([]SlotStatus, g.Members)
	for i := range slots {
		slots[i] = SlotStatus{State: SlotInSync}
	}
	var paths []string
	for i, f := range files {
		role := i
		if i >= g.Members {
			role = RoleSpare
		}
		sb := Superblock{
			ArrayUUID: uuid, Name: opts.Name, Geometry: g, Role: role, MemberUUID: newUUID(),
			Events: 1, State: ArrayClean, Members: slots,
			DataOffset: DefaultDataOffset, BitmapOffset: DefaultBitmapOffset, BitmapSize: DefaultBitmapSize,
			UpdateTime: time.Now(), OptimalEvents: 1,
		}
		if err := sb.Validate(); err != nil {
			return fail(fmt.Errorf("raid: create: %w", err))
		}
		if err := f.WriteAt(sb.Marshal(), 0, true); err != nil {
			return fail(fmt.Errorf("raid: create: superblock: %w", err))
		}
		paths = append(paths, f.Path())
	}
	closeAll()
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log.Info("raid: array created", "array", opts.Name, "uuid", uuid.String(), "level", g.Level.String(),
		"members", g.Members, "spares", len(opts.Spares), "member_size", g.MemberSize, "size", g.Size())
	return Open(ctx, OpenOptions{Paths: paths, UUID: uuid, RebuildRate: opts.RebuildRate, OnChange: opts.OnChange, Logger: opts.Logger, spareClock: opts.spareClock})
}

// Open assembles the array from the candidate devices opts.Paths (see the
// file comment). It refuses, with Plan's reasons, an array that cannot be
// assembled.
func Open(ctx context.Context, opts OpenOptions) (*DiskArray, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	byPath := map[string]*File{}
	var found []Found
	closeExcept := func(keep map[*File]bool) {
		for _, f := range byPath {
			if !keep[f] {
				f.Close()
			}
		}
	}
	for _, p := range opts.Paths {
		if _, dup := byPath[p]; dup {
			continue
		}
		f, err := OpenFile(p, FileOptions{})
		if err != nil {
			found = append(found, Found{Path: p, Err: err})
			continue
		}
		byPath[p] = f
		sb, err := readSuperblock(f)
		found = append(found, Found{Path: p, SB: sb, Err: err})
	}
	var want []UUID
	switch {
	case !opts.UUID.IsZero():
		want = append(want, opts.UUID)
	case opts.Name != "":
		var ids []UUID
		for _, f := range found {
			if f.SB != nil && f.SB.Name == opts.Name && !slices.Contains(ids, f.SB.ArrayUUID) {
				ids = append(ids, f.SB.ArrayUUID)
			}
		}
		if len(ids) != 1 {
			closeExcept(nil)
			return nil, fmt.Errorf("raid: open: %d arrays named %q among %d candidate devices", len(ids), opts.Name, len(opts.Paths))
		}
		want = ids
	}
	asm, err := Plan(found, want...)
	if err != nil {
		closeExcept(nil)
		return nil, fmt.Errorf("%w: %s", err, strings.Join(asm.Reasons, "; "))
	}
	g := asm.Geometry
	sbOf := map[string]*Superblock{}
	for _, f := range found {
		if f.SB != nil {
			sbOf[f.Path] = f.SB
		}
	}
	var fresh *Superblock
	for _, r := range asm.Roles {
		if sb := sbOf[r.Path]; fresh == nil && r.Path != "" && sb != nil && sb.Events == asm.Events {
			fresh = sb
		}
	}
	if fresh == nil {
		closeExcept(nil)
		return nil, fmt.Errorf("raid: open: no member holds the array's freshest superblock (events %d)", asm.Events)
	}
	d := &DiskArray{
		log: log, name: asm.Name, uuid: asm.ArrayUUID, g: g,
		dataOff: fresh.DataOffset, bmOff: fresh.BitmapOffset, bmSize: fresh.BitmapSize,
		events: asm.Events, optimalEvents: fresh.OptimalEvents, state: fresh.State,
		files:      make([]*File, g.Members),
		memberUUID: make([]UUID, g.Members),
		removed:    make([]bool, g.Members),
		ckpt:       make([]int64, g.Members),
		refs:       make([]*memberRef, g.Members),
		asm:        asm,
		rate:       opts.RebuildRate,
		onChange:   opts.OnChange,
		spareClock: opts.spareClock,
		spareBg:    spareWorker{kick: make(chan struct{}, 1)},
	}
	if d.name == "" {
		d.name = asm.ArrayUUID.String()
	}
	keep := map[*File]bool{}
	for _, r := range asm.Roles {
		d.refs[r.Role] = &memberRef{}
		if r.Path == "" {
			continue
		}
		f := byPath[r.Path]
		if f.Size() < d.dataOff+g.MemberSize {
			closeExcept(nil)
			return nil, fmt.Errorf("raid: open: %s is %d bytes, the array needs %d", r.Path, f.Size(), d.dataOff+g.MemberSize)
		}
		keep[f] = true
		d.files[r.Role] = f
		d.memberUUID[r.Role] = r.MemberUUID
		d.refs[r.Role].p.Store(f)
	}
	for _, p := range asm.Spares {
		f := byPath[p]
		if f.Size() < d.dataOff+g.MemberSize {
			log.Error("raid: spare too small for the array: left alone", "array", d.name, "spare", p, "size", f.Size(), "need", d.dataOff+g.MemberSize)
			continue
		}
		keep[f] = true
		d.spares = append(d.spares, spareDev{f: f, uuid: sbOf[p].MemberUUID})
	}
	closeExcept(keep)
	d.recovery.Dirty = asm.Dirty
	cleanup := func(err error) (*DiskArray, error) {
		for _, f := range d.files {
			if f != nil {
				f.Close()
			}
		}
		d.closeSpares()
		return nil, err
	}

	// The write-intent bitmap.
	refDevs := make([]block.Device, g.Members)
	for i, r := range d.refs {
		refDevs[i] = r
	}
	d.regionSize = d.scanRegionSize()
	var w *WriteIntent
	if d.bmSize > 0 {
		store, err := NewMemberIntentStore(refDevs, d.bmOff, d.bmSize, g, d.regionSize)
		if err == nil {
			w, err = NewWriteIntent(g, IntentOptions{RegionSize: d.regionSize, Store: store})
		}
		if err != nil {
			log.Error("raid: write-intent bitmap unusable: resetting it and resyncing the whole array", "array", d.name, "err", err)
			d.recovery.BitmapCorrupt = true
			if d.regionSize, err = IntentRegionSize(g, d.regionSize); err != nil {
				d.regionSize, _ = IntentRegionSize(g, 0)
			}
			for _, f := range d.files {
				if f != nil {
					if err := f.WriteZeroes(d.bmOff, d.bmSize, block.ZeroFlags{}); err != nil {
						return cleanup(fmt.Errorf("raid: open %s: resetting the bitmap: %w", d.name, err))
					}
				}
			}
			if store, err = NewMemberIntentStore(refDevs, d.bmOff, d.bmSize, g, d.regionSize); err == nil {
				w, err = NewWriteIntent(g, IntentOptions{RegionSize: d.regionSize, Store: store})
			}
			if err != nil {
				return cleanup(fmt.Errorf("raid: open %s: write-intent bitmap: %w", d.name, err))
			}
		}
	}
	d.intent = w

	// Members: which start in the array, which are resynced or rebuilt.
	members := make([]block.Device, g.Members)
	var faulty, bitmapResync, rebuild []int
	for _, r := range asm.Roles {
		f := d.files[r.Role]
		switch r.State {
		case RoleInSync:
			members[r.Role] = d.window(f)
			continue
		case RoleMissing:
			d.removed[r.Role] = fresh.Members[r.Role].State == SlotRemoved
		case RoleRebuilding:
			d.ckpt[r.Role] = r.RebuildOffset - r.RebuildOffset%g.ChunkSize
			rebuild = append(rebuild, r.Role)
		case RoleStale:
			own := sbOf[r.Path]
			if w != nil && !d.recovery.BitmapCorrupt && fresh.OptimalEvents != 0 && own.Events >= fresh.OptimalEvents &&
				own.Members[r.Role].State == SlotInSync {
				members[r.Role] = d.window(f)
				bitmapResync = append(bitmapResync, r.Role)
			} else {
				rebuild = append(rebuild, r.Role)
			}
		}
		faulty = append(faulty, r.Role)
	}
	arr, err := NewArray(g, members, ArrayOptions{Name: d.name, Logger: log, Faulty: faulty, Intent: w, OnFail: d.onFail})
	if err != nil {
		return cleanup(err)
	}
	d.arr = arr
	for _, i := range rebuild {
		if err := arr.ResumeReplace(i, d.window(d.files[i]), d.ckpt[i]); err != nil {
			arr.Close()
			d.closeSpares()
			return nil, err
		}
	}
	// A spare takes the slot of a member missing at assembly, with the
	// rebuilds above, before the superblocks are written: a crash from
	// here on finds it in the slot, or still a spare.
	for _, r := range asm.Roles {
		if r.State != RoleMissing || len(d.spares) == 0 || arr.health() == HealthFailed {
			continue
		}
		sp := d.spares[0]
		if err := arr.Replace(r.Role, d.window(sp.f)); err != nil {
			log.Error("raid: taking a spare into a missing member's slot", "array", d.name, "member", r.Role, "spare", sp.f.Path(), "err", err)
			continue
		}
		d.spares = d.spares[1:]
		d.files[r.Role], d.memberUUID[r.Role], d.removed[r.Role], d.ckpt[r.Role] = sp.f, sp.uuid, false, 0
		d.refs[r.Role].p.Store(sp.f)
		rebuild = append(rebuild, r.Role)
		d.recovery.SparesTaken = append(d.recovery.SparesTaken, r.Role)
		log.Warn("raid: spare taken into the slot of a missing member, to rebuild", "array", d.name, "member", r.Role, "spare", sp.f.Path())
	}
	// Dirty on disk before any write.
	if err := d.persist(ArrayDirty, true); err != nil {
		arr.Close()
		d.closeSpares()
		return nil, fmt.Errorf("raid: open %s: marking the array dirty: %w", d.name, err)
	}
	fail := func(err error) (*DiskArray, error) {
		d.stopBackground()
		d.crashClose()
		return nil, err
	}
	if w != nil && d.recovery.BitmapCorrupt {
		// Every bit set on disk until the whole array is resynced.
		if err := w.Begin(0, g.Size()); err != nil {
			return fail(fmt.Errorf("raid: open %s: %w", d.name, err))
		}
		w.End(0, g.Size())
	}
	if asm.Dirty || d.recovery.BitmapCorrupt {
		if w != nil {
			d.recovery.DirtyRegions = w.Dirty()
		} else {
			// No bitmap reserved: the whole array, one stripe row of
			// 64 MiB (rounded to stripes) at a time.
			step := max(g.StripeSize(), DefaultRegionSize/g.StripeSize()*g.StripeSize())
			for off := int64(0); off < g.Size(); off += step {
				d.recovery.DirtyRegions = append(d.recovery.DirtyRegions, Region{Index: -1, Offset: off, Length: min(step, g.Size()-off)})
			}
		}
		before := d.reads.Load()
		if err := arr.ResyncRegions(ctx, d.recovery.DirtyRegions, 0); err != nil {
			return fail(fmt.Errorf("raid: open %s: resync of the dirty regions: %w", d.name, err))
		}
		d.recovery.ResyncReadBytes = d.reads.Load() - before
		log.Info("raid: dirty regions resynced", "array", d.name, "regions", len(d.recovery.DirtyRegions), "bytes_read", d.recovery.ResyncReadBytes)
	}
	for _, i := range bitmapResync {
		if err := arr.ResyncMember(ctx, i, 0); err != nil {
			log.Error("raid: bitmap resync of a stale member failed", "array", d.name, "member", i, "err", err)
			continue
		}
		d.recovery.Resynced = append(d.recovery.Resynced, i)
		if err := d.persist(ArrayDirty, false); err != nil {
			return fail(err)
		}
	}
	d.recovery.Rebuilding = rebuild
	d.startBackground(rebuild, opts.RebuildRate)
	d.startSpares()
	return d, nil
}

// scanRegionSize returns the region size recorded in the bitmap pages
// (every page records it), 0 if none is found (the default then).
func (d *DiskArray) scanRegionSize() int64 {
	if d.bmSize < intentSlotSize {
		return 0
	}
	b := make([]byte, intentSlotSize)
	for _, f := range d.files {
		if f == nil || f.ReadAt(b, d.bmOff) != nil || string(b[:4]) != intentMagic {
			continue
		}
		if rs := int64(binary.LittleEndian.Uint64(b[16:])); rs > 0 && rs%d.g.StripeSize() == 0 {
			return rs
		}
	}
	return 0
}

func (d *DiskArray) window(f *File) *memberWindow {
	return &memberWindow{f: f, off: d.dataOff, size: d.g.MemberSize, reads: &d.reads}
}

// slots computes the member table from the array's state. Called with d.mu.
func (d *DiskArray) slots() (slots []SlotStatus, optimal bool) {
	st := d.arr.Status()
	optimal = true
	for i, m := range st.Members {
		s := SlotStatus{State: SlotInSync}
		switch m.State {
		case InSync:
		case Rebuilding:
			s = SlotStatus{State: SlotRebuilding, RebuildOffset: d.ckpt[i]}
			optimal = false
		default:
			s.State = SlotFaulty
			if d.removed[i] {
				s.State = SlotRemoved
			}
			optimal = false
		}
		slots = append(slots, s)
	}
	return slots, optimal
}

// persist writes the superblock (events +1, state) to every working
// member; unless force, only when the member table changed. A member whose
// superblock write fails is failed and the write redone without it.
func (d *DiskArray) persist(state ArrayState, force bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.persistLocked(state, force)
}

func (d *DiskArray) persistLocked(state ArrayState, force bool) error {
	if d.closed {
		return nil
	}
	for {
		slots, optimal := d.slots()
		if !force && state == d.state && slices.Equal(slots, d.lastSlots) {
			return nil
		}
		events := d.events + 1
		optEvents := d.optimalEvents
		if optimal {
			optEvents = events
		}
		wrote, failed := 0, false
		for i, f := range d.files {
			if f == nil || (slots[i].State != SlotInSync && slots[i].State != SlotRebuilding) {
				continue
			}
			sb := Superblock{
				ArrayUUID: d.uuid, Name: d.asm.Name, Geometry: d.g, Role: i, MemberUUID: d.memberUUID[i],
				Events: events, State: state, Members: slots,
				DataOffset: d.dataOff, BitmapOffset: d.bmOff, BitmapSize: d.bmSize,
				UpdateTime: time.Now(), OptimalEvents: optEvents,
			}
			if err := f.WriteAt(sb.Marshal(), 0, true); err != nil {
				// Fail the member without the OnFail hook (we hold d.mu).
				if m := d.arr.members[i]; m.fail(fmt.Errorf("superblock write: %w", err)) {
					d.log.Error("raid: member failed writing its superblock", "array", d.name, "member", i, "err", err)
				}
				failed = true
				continue
			}
			wrote++
		}
		d.events = events
		if failed {
			d.kickSpares()
			force = true
			continue // redo with the member recorded faulty
		}
		if wrote == 0 {
			return fmt.Errorf("raid: %s: superblock written to no member", d.name)
		}
		// The spares last: a spare never holds events no member holds.
		d.spares = slices.DeleteFunc(d.spares, func(sp spareDev) bool {
			sb := Superblock{
				ArrayUUID: d.uuid, Name: d.asm.Name, Geometry: d.g, Role: RoleSpare, MemberUUID: sp.uuid,
				Events: events, State: state, Members: slots,
				DataOffset: d.dataOff, BitmapOffset: d.bmOff, BitmapSize: d.bmSize,
				UpdateTime: time.Now(), OptimalEvents: optEvents,
			}
			if err := sp.f.WriteAt(sb.Marshal(), 0, true); err != nil {
				d.log.Error("raid: spare failed writing its superblock: dropped", "array", d.name, "spare", sp.f.Path(), "err", err)
				sp.f.Close()
				return true
			}
			return false
		})
		d.optimalEvents, d.state, d.lastSlots = optEvents, state, slots
		return nil
	}
}

// onFail is the Array's OnFail hook: the failure is recorded on the
// remaining members before the failing I/O returns.
func (d *DiskArray) onFail(i int, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if perr := d.persistLocked(d.state, false); perr != nil {
		d.log.Error("raid: recording a member failure in the superblocks", "array", d.name, "member", i, "err", perr)
	}
	// Under the Array's locks here: the spare is taken in by spareLoop.
	d.kickSpares()
}

func (d *DiskArray) startBackground(rebuild []int, rate int64) {
	ctx, cancel := context.WithCancel(context.Background())
	d.bgCancel = cancel
	d.bgDone = make(chan struct{})
	d.rebuildDone = make(chan struct{})
	go func() {
		defer close(d.bgDone)
		var errs []error
		for _, i := range rebuild {
			if err := d.Rebuild(ctx, i, RebuildOptions{Rate: rate}); err != nil {
				d.log.Error("raid: background rebuild", "array", d.name, "member", i, "err", err)
				errs = append(errs, err)
			}
		}
		d.bgErr = errors.Join(errs...)
		close(d.rebuildDone)
		if d.intent == nil {
			return
		}
		t := time.NewTicker(DefaultIntentIdle)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				if _, err := d.intent.Sweep(now); err != nil {
					d.log.Warn("raid: write-intent sweep", "array", d.name, "err", err)
				}
			}
		}
	}()
}

func (d *DiskArray) stopBackground() {
	d.StopSpares()
	d.stopOnce.Do(func() {
		if d.bgCancel != nil {
			d.bgCancel()
			<-d.bgDone
		}
	})
}

// WaitRebuild waits for the rebuilds Open started in the background
// (Recovery.Rebuilding) and returns their error.
func (d *DiskArray) WaitRebuild(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-d.rebuildDone:
		return d.bgErr
	}
}

// Array returns the underlying Array, for Status, Progress and Scrub.
// Change members through the DiskArray, which persists the change.
func (d *DiskArray) Array() *Array { return d.arr }

// UUID returns the array's UUID.
func (d *DiskArray) UUID() UUID { return d.uuid }

// Assembly returns the plan Open assembled the array by.
func (d *DiskArray) Assembly() Assembly { return d.asm }

// Recovery returns what Open did to make the array consistent.
func (d *DiskArray) Recovery() Recovery { return d.recovery }

// RegionSize returns the bytes of the array one bit of its write-intent
// bitmap stands for.
func (d *DiskArray) RegionSize() int64 { return d.regionSize }

// Events returns the event counter last written.
func (d *DiskArray) Events() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.events
}

// Fail fails member i (Array.Fail); the failure is persisted.
func (d *DiskArray) Fail(i int) error { return d.arr.Fail(i) }

// Remove removes the faulty member i (Array.Remove) and records its slot
// removed.
func (d *DiskArray) Remove(i int) error {
	// d.mu is never held across Array calls that take the array's member
	// lock: Fail holds that lock while its OnFail hook takes d.mu.
	d.memberMu.Lock()
	defer d.memberMu.Unlock()
	if err := d.arr.Remove(i); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.files[i] = nil
	d.refs[i].p.Store(nil)
	d.removed[i] = true
	return d.persistLocked(d.state, true)
}

// Replace puts the device at path in the faulty or removed slot i as a
// rebuilding member and writes its superblock; Rebuild then fills it. A
// device holding a superblock of another array is refused.
func (d *DiskArray) Replace(i int, path string) error {
	if i < 0 || i >= d.g.Members {
		return fmt.Errorf("raid: replace %s member %d: no such member", d.name, i)
	}
	d.memberMu.Lock()
	defer d.memberMu.Unlock()
	if err := d.checkNew("replace", path); err != nil {
		return err
	}
	return d.addMember(i, path)
}

// Add puts the device at path in the lowest empty (removed, or absent at
// assembly) slot and writes its superblock; it returns the slot. Rebuild
// then fills it. With no empty slot it adds the device as a hot spare
// (AddSpare), as mdadm --add does, and returns -1; a spare is taken at
// once into the slot of a faulty member still in the array.
func (d *DiskArray) Add(path string) (int, error) {
	d.memberMu.Lock()
	defer d.memberMu.Unlock()
	if err := d.checkNew("add", path); err != nil {
		return -1, err
	}
	for i, m := range d.arr.members {
		if m.State() == Faulty && m.empty() {
			return i, d.addMember(i, path)
		}
	}
	return -1, d.addSpareLocked(path)
}

// prepareDevice opens the device at path for the array: it is refused if
// it holds another array's superblock or is too small; its superblock area
// is zeroed, so that no stale bitmap page of an earlier life remains.
func (d *DiskArray) prepareDevice(path string) (*File, error) {
	f, err := OpenFile(path, FileOptions{})
	if err != nil {
		return nil, err
	}
	sb, err := readSuperblock(f)
	if err == nil && sb != nil && sb.ArrayUUID != d.uuid {
		f.Close()
		return nil, fmt.Errorf("raid: %s: %s holds a superblock of another array %v (%q)", d.name, path, sb.ArrayUUID, sb.Name)
	}
	if f.Size() < d.dataOff+d.g.MemberSize {
		f.Close()
		return nil, fmt.Errorf("raid: %s: %s is %d bytes, the array needs %d", d.name, path, f.Size(), d.dataOff+d.g.MemberSize)
	}
	if err := f.WriteZeroes(0, d.dataOff, block.ZeroFlags{}); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// addMember puts the device at path in slot i. Called with d.memberMu.
func (d *DiskArray) addMember(i int, path string) error {
	f, err := d.prepareDevice(path)
	if err != nil {
		return err
	}
	if err := d.installMember(i, f, newUUID()); err != nil {
		f.Close()
		return err
	}
	return d.persist(d.currentState(), true)
}

// installMember makes f the Rebuilding member of slot i; the caller then
// persists it. On error the caller still owns f. Called with d.memberMu.
func (d *DiskArray) installMember(i int, f *File, id UUID) error {
	// The slot's member is Faulty until Replace returns, so persist does
	// not write to it meanwhile: the new file can be recorded first.
	d.mu.Lock()
	oldFile, oldUUID, oldRemoved := d.files[i], d.memberUUID[i], d.removed[i]
	d.files[i], d.memberUUID[i], d.removed[i], d.ckpt[i] = f, id, false, 0
	d.mu.Unlock()
	if err := d.arr.Replace(i, d.window(f)); err != nil {
		d.mu.Lock()
		d.files[i], d.memberUUID[i], d.removed[i] = oldFile, oldUUID, oldRemoved
		d.mu.Unlock()
		return err
	}
	d.refs[i].p.Store(f)
	return nil
}

func (d *DiskArray) currentState() ArrayState {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state
}

// Rebuild runs Array.Rebuild on member i, persisting its checkpoints
// (after opts.Checkpoint, if set) and the InSync state at the end.
func (d *DiskArray) Rebuild(ctx context.Context, i int, opts RebuildOptions) error {
	user := opts.Checkpoint
	opts.Checkpoint = func(off int64) error {
		if user != nil {
			if err := user(off); err != nil {
				return err
			}
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		d.ckpt[i] = off
		return d.persistLocked(d.state, true)
	}
	if err := d.arr.Rebuild(ctx, i, opts); err != nil {
		return err
	}
	if d.intent != nil {
		if err := d.intent.persistAll(); err != nil {
			d.log.Warn("raid: write-intent bitmap save after rebuild", "array", d.name, "err", err)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ckpt[i] = 0
	return d.persistLocked(d.state, true)
}

// Size is the array's capacity.
func (d *DiskArray) Size() int64 { return d.arr.Size() }

// ReadAt reads from the array.
func (d *DiskArray) ReadAt(p []byte, off int64) error { return d.arr.ReadAt(p, off) }

// WriteAt writes to the array.
func (d *DiskArray) WriteAt(p []byte, off int64, fua bool) error { return d.arr.WriteAt(p, off, fua) }

// Flush flushes the array.
func (d *DiskArray) Flush() error { return d.arr.Flush() }

// Trim passes to Array.Trim.
func (d *DiskArray) Trim(off, length int64) error { return d.arr.Trim(off, length) }

// WriteZeroes passes to Array.WriteZeroes.
func (d *DiskArray) WriteZeroes(off, length int64, flags block.ZeroFlags) error {
	return d.arr.WriteZeroes(off, length, flags)
}

// Cache passes to Array.Cache.
func (d *DiskArray) Cache(off, length int64) error { return d.arr.Cache(off, length) }

// Extents passes to Array.Extents.
func (d *DiskArray) Extents(off, length int64, fn func(block.Extent) bool) error {
	return d.arr.Extents(off, length, fn)
}

// Close stops the background rebuild (its checkpoint is kept), flushes the
// array, clears the write-intent bits if the array is optimal, writes the
// superblocks clean (events +1) and closes the members. If the flush fails
// the array stays dirty on disk. Callers stop I/O first.
func (d *DiskArray) Close() error {
	d.stopBackground()
	var errs []error
	ferr := d.arr.Flush()
	if ferr != nil {
		errs = append(errs, ferr)
	}
	if ferr == nil && d.arr.health() != HealthFailed {
		if d.intent != nil {
			if _, err := d.intent.clear(func(int64) bool { return true }, nil); err != nil {
				errs = append(errs, err)
			}
		}
		if err := d.persist(ArrayClean, true); err != nil {
			errs = append(errs, err)
		}
	}
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	errs = append(errs, d.arr.Close())
	d.closeSpares()
	return errors.Join(errs...)
}

// crashClose closes the members without flushing or writing superblocks,
// as a crash would leave them.
func (d *DiskArray) crashClose() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.arr.Close()
	d.closeSpares()
}

// memberWindow is the data area [off, off+size) of a member device as the
// block.Device the Array sees. It owns f: Close closes it.
type memberWindow struct {
	f         *File
	off, size int64
	reads     *atomic.Int64
}

func (w *memberWindow) check(op string, off, n int64) error {
	if off < 0 || n < 0 || off > w.size || n > w.size-off {
		return fmt.Errorf("raid: %s %s data area at %d length %d (size %d): %w", op, w.f.Path(), off, n, w.size, block.ErrOutOfRange)
	}
	return nil
}

func (w *memberWindow) Size() int64 { return w.size }

func (w *memberWindow) ReadAt(p []byte, off int64) error {
	if err := w.check("read", off, int64(len(p))); err != nil {
		return err
	}
	if w.reads != nil {
		w.reads.Add(int64(len(p)))
	}
	return w.f.ReadAt(p, w.off+off)
}

func (w *memberWindow) WriteAt(p []byte, off int64, fua bool) error {
	if err := w.check("write", off, int64(len(p))); err != nil {
		return err
	}
	return w.f.WriteAt(p, w.off+off, fua)
}

func (w *memberWindow) Flush() error { return w.f.Flush() }

func (w *memberWindow) Trim(off, n int64) error {
	if err := w.check("trim", off, n); err != nil {
		return err
	}
	return w.f.Trim(w.off+off, n)
}

func (w *memberWindow) WriteZeroes(off, n int64, flags block.ZeroFlags) error {
	if err := w.check("write zeroes", off, n); err != nil {
		return err
	}
	return w.f.WriteZeroes(w.off+off, n, flags)
}

func (w *memberWindow) Cache(off, n int64) error {
	if err := w.check("cache", off, n); err != nil {
		return err
	}
	return w.f.Cache(w.off+off, n)
}

func (w *memberWindow) Extents(off, n int64, fn func(block.Extent) bool) error {
	if err := w.check("extents", off, n); err != nil {
		return err
	}
	n = min(n, w.size-off)
	return w.f.Extents(w.off+off, n, func(e block.Extent) bool {
		e.Offset -= w.off
		if e.Offset+e.Length > w.size {
			e.Length = w.size - e.Offset
		}
		if e.Length <= 0 {
			return false
		}
		return fn(e)
	})
}

func (w *memberWindow) Close() error { return w.f.Close() }

// memberRef is the write-intent store's view of one whole member device,
// which Replace, Add and Remove change. Without a device it reads as a
// never-written (zero) area and refuses writes.
type memberRef struct{ p atomic.Pointer[File] }

var errNoMember = errors.New("raid: no member device in this slot")

func (r *memberRef) Size() int64 {
	if f := r.p.Load(); f != nil {
		return f.Size()
	}
	return 0
}

func (r *memberRef) ReadAt(p []byte, off int64) error {
	if f := r.p.Load(); f != nil {
		return f.ReadAt(p, off)
	}
	clear(p)
	return nil
}

func (r *memberRef) WriteAt(p []byte, off int64, fua bool) error {
	if f := r.p.Load(); f != nil {
		return f.WriteAt(p, off, fua)
	}
	return errNoMember
}

func (r *memberRef) Flush() error {
	if f := r.p.Load(); f != nil {
		return f.Flush()
	}
	return errNoMember
}

func (r *memberRef) Trim(int64, int64) error                         { return errNoMember }
func (r *memberRef) WriteZeroes(int64, int64, block.ZeroFlags) error { return errNoMember }
func (r *memberRef) Cache(int64, int64) error                        { return nil }
func (r *memberRef) Extents(int64, int64, func(block.Extent) bool) error {
	return errNoMember
}
func (r *memberRef) Close() error { return nil }
