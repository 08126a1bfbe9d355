package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
)

// Activity log geometry.
const (
	// DefaultExtentSize is the bytes one activity-log extent covers: 4 MiB,
	// as in DRBD. Larger extents mean fewer log transactions for scattered
	// writes but more to resync after a primary crash.
	DefaultExtentSize = 4 << 20
	// MinExtentSize is the smallest extent size accepted.
	MinExtentSize = 1 << 20
	// DefaultALCapacity is how many extents may be hot at once unless
	// configured otherwise: DRBD's default of 1237, about 4.8 GiB of 4 MiB
	// extents to resync after a crash at most.
	DefaultALCapacity = 1237
)

// Activity log persistence formats (all integers little-endian). Both start
// like the bitmap's: magic, version, then a CRC-32C of the whole record
// except the checksum field itself.
//
// Snapshot (ActivityLog.MarshalBinary):
//
//	0   4  magic "BRAL"
//	4   4  version (1)
//	8   4  crc32c
//	12  4  capacity
//	16  8  device size in bytes
//	24  8  extent size in bytes
//	32  8  sequence number of the last change included
//	40  4  number of hot extents n
//	44  4  zero
//	48  8n hot extent numbers, least recently used first
//
// Change (ALChange.MarshalBinary):
//
//	0   4  magic "BRAC"
//	4   4  version (1)
//	8   4  crc32c
//	12  4  number of extents added a
//	16  4  number of extents evicted e
//	20  4  zero
//	24  8  sequence number
//	32  8a extents added, 8e extents evicted
const (
	alMagic          = "BRAL"
	alVersion        = 1
	alHeaderLen      = 48
	alChangeMagic    = "BRAC"
	alChangeVersion  = 1
	alChangeHeadLen  = 32
	alNoSlot         = int32(-1)
	alMaxRecordItems = 1 << 24 // sanity bound on counts read from disk
)

var (
	alRecord       = recordKind{magic: alMagic, version: alVersion, name: "an activity log", corrupt: ErrALCorrupt}
	alChangeRecord = recordKind{magic: alChangeMagic, version: alChangeVersion, name: "an activity log change", corrupt: ErrALCorrupt}
)

// Errors returned by ActivityLog, for errors.Is.
var (
	// ErrALFull means a write needs a cold extent made hot but every hot
	// extent has writes in flight, so none can be evicted. Nothing changed;
	// the caller waits for an End and calls Begin again.
	ErrALFull = errors.New("activity log: full, every hot extent has writes in flight")
	// ErrALPending means a write falls into an extent that an earlier Begin
	// made hot but whose change the caller has not yet reported durable with
	// Committed. Writing now could reach the disk before the record that
	// says the extent is hot. Nothing changed; the caller waits for
	// Committed and calls Begin again.
	ErrALPending = errors.New("activity log: extent activation not yet durable")
	// ErrALCorrupt means persisted activity-log data (a snapshot or a
	// change) failed validation, or a change does not follow from the state
	// it is applied to. The hot set is unknown; the safe fallback is to
	// resync every extent (or the whole device).
	ErrALCorrupt = errors.New("activity log: corrupt data")
	// ErrALGeometry means persisted activity-log data describes a different
	// device size or extent size, or holds more hot extents than the
	// configured capacity.
	ErrALGeometry = errors.New("activity log: geometry mismatch")
)

// ALChange is one activity-log transaction: the extents a Begin made hot and
// the extents it evicted to make room. The caller persists it (e.g. with
// MarshalBinary, as a record in the metadata store) before issuing the write
// that caused it, persists changes in Seq order, and then reports them with
// ActivityLog.Committed.
type ALChange struct {
	// Seq numbers changes 1, 2, 3, … in the order Begin made them. Replay
	// uses it to skip changes a snapshot already includes and to detect a
	// missing one.
	Seq uint64
	// Added are the extents made hot, in ascending order.
	Added []uint64
	// Evicted are the extents no longer hot, least recently used first.
	// Each had no write in flight, so nothing in it can differ between the
	// replicas because of an unfinished write — provided the completed
	// writes are durable: once the change is on disk a crash no longer
	// resyncs these extents, so the caller flushes the local store before
	// (or together with) persisting a change that evicts, as DRBD's
	// md-flushes do. Writes that completed without reaching the disk could
	// otherwise be lost on this node alone, unseen by any resync.
	Evicted []uint64
}

// ActivityLog tracks which extents of a device are hot: may have writes in
// flight. After a primary crash, only the hot extents can hold writes that
// reached one replica and not the other, so the resync covers them (plus the
// bitmap) instead of the whole device (DESIGN.md invariant 5).
//
// The protocol for every write:
//
//	change, err := al.Begin(off, len)   // ErrALFull/ErrALPending: wait, retry
//	if change != nil { persist(change); al.Committed(change.Seq) }
//	write(off, len)                     // to the local store and the peers
//	al.End(off, len)                    // once the write completed everywhere
//
// Most writes land in hot extents and cost Begin and End only: no metadata
// I/O. The caller wakes writers waiting on ErrALFull after each End and those
// waiting on ErrALPending after each Committed.
//
// An ActivityLog is not safe for concurrent use; callers serialise every
// call, like for Bitmap (one lock guards the volume's bookkeeping). The
// caller does not hold that lock while persisting a change: ErrALPending
// keeps other writes out of an extent until its change is durable.
//
// The zero ActivityLog is only a target for UnmarshalBinary.
type ActivityLog struct {
	deviceSize int64
	extentSize int64
	shift      uint // log2(extentSize)
	extents    uint64
	capacity   int

	// slots holds the hot extents; index finds an extent's slot. The slots
	// form a doubly linked list in recency order so that finding the least
	// recently used idle extent and refreshing an extent are O(1) without
	// allocating.
	slots    []alSlot
	index    map[uint64]int32
	free     []int32
	mru, lru int32

	seq       uint64  // Seq of the newest change made or restored
	committed uint64  // changes with Seq <= committed are durable
	victims   []int32 // scratch for Begin, kept to avoid garbage
}

type alSlot struct {
	ext      uint64
	inflight int32
	added    uint64 // Seq of the change that made ext hot
	prev     int32  // toward the most recently used end
	next     int32  // toward the least recently used end
}

// NewActivityLog returns an empty activity log for a device of deviceSize
// bytes, in extents of extentSize bytes (a power of two, at least
// MinExtentSize), with at most capacity extents hot at once.
func NewActivityLog(deviceSize, extentSize int64, capacity int) (*ActivityLog, error) {
	if err := checkALGeometry(deviceSize, extentSize, int64(capacity)); err != nil {
		return nil, err
	}
	al := new(ActivityLog)
	al.init(deviceSize, extentSize, capacity)
	return al, nil
}

func checkALGeometry(deviceSize, extentSize, capacity int64) error {
	if extentSize < MinExtentSize || extentSize > maxDeviceSize || extentSize&(extentSize-1) != 0 {
		return fmt.Errorf("activity log: extent size %d is not a power of two of at least %d", extentSize, MinExtentSize)
	}
	if deviceSize <= 0 || deviceSize > maxDeviceSize {
		return fmt.Errorf("activity log: device size %d is not between 1 and %d bytes", deviceSize, int64(maxDeviceSize))
	}
	if capacity < 1 || capacity > alMaxRecordItems {
		return fmt.Errorf("activity log: capacity %d is not between 1 and %d extents", capacity, alMaxRecordItems)
	}
	return nil
}

func (al *ActivityLog) init(deviceSize, extentSize int64, capacity int) {
	*al = ActivityLog{
		deviceSize: deviceSize,
		extentSize: extentSize,
		shift:      uint(bits.TrailingZeros64(uint64(extentSize))),
		capacity:   capacity,
		slots:      make([]alSlot, capacity),
		index:      make(map[uint64]int32, capacity),
		free:       make([]int32, capacity),
		mru:        alNoSlot,
		lru:        alNoSlot,
	}
	al.extents = uint64(deviceSize+extentSize-1) >> al.shift
	for i := range al.free {
		al.free[i] = int32(capacity - 1 - i) // pop hands out slot 0 first
	}
}

// DeviceSize is the size in bytes of the device the log covers.
func (al *ActivityLog) DeviceSize() int64 { return al.deviceSize }

// ExtentSize is the number of bytes per extent.
func (al *ActivityLog) ExtentSize() int64 { return al.extentSize }

// Extents is the number of extents of the device; the last may be short.
func (al *ActivityLog) Extents() uint64 { return al.extents }

// Capacity is the most extents that may be hot at once.
func (al *ActivityLog) Capacity() int { return al.capacity }

// Seq is the sequence number of the newest change Begin made (or a restore
// included). A snapshot taken now (MarshalBinary) includes every change up to
// Seq; after persisting it the caller may call Committed(Seq()).
func (al *ActivityLog) Seq() uint64 { return al.seq }

// ExtentRange returns the byte range of extent ext; the last extent is short
// when the device size is not a multiple of the extent size. An extent past
// the end returns (0, 0).
func (al *ActivityLog) ExtentRange(ext uint64) (off, length int64) {
	if ext >= al.extents {
		return 0, 0
	}
	off = int64(ext << al.shift)
	return off, min(al.extentSize, al.deviceSize-off)
}

// span returns the extents [first, last] of a non-empty range on the device.
func (al *ActivityLog) span(off, length int64) (first, last uint64, err error) {
	if off < 0 || length < 0 || off > al.deviceSize || length > al.deviceSize-off {
		return 0, 0, fmt.Errorf("activity log: write of %d bytes at %d is outside the %d-byte device", length, off, al.deviceSize)
	}
	return uint64(off) >> al.shift, uint64(off+length-1) >> al.shift, nil
}

// Begin records a write of [off, off+length) as in flight. Every extent the
// write touches becomes hot and most recently used. If they all were hot
// already, Begin returns a nil change and the write may proceed at once.
// Otherwise it returns the change that made them hot, evicting least
// recently used extents without writes in flight when the log is full; the
// caller must persist the change and call Committed before issuing the write.
//
// Begin fails, changing nothing, with ErrALFull when no room can be made, and
// with ErrALPending when the write touches an extent made hot by a change not
// yet committed. A zero-length write touches no extent.
func (al *ActivityLog) Begin(off, length int64) (*ALChange, error) {
	first, last, err := al.span(off, length)
	if err != nil || length == 0 {
		return nil, err
	}
	if n := last - first + 1; n > uint64(al.capacity) {
		return nil, fmt.Errorf("activity log: write of %d bytes at %d spans %d extents, more than the %d that may be hot", length, off, n, al.capacity)
	}

	cold := 0
	for e := first; e <= last; e++ {
		s, hot := al.index[e]
		switch {
		case !hot:
			cold++
		case al.slots[s].added > al.committed:
			return nil, ErrALPending
		}
	}

	var change *ALChange
	if cold > 0 {
		// Choose victims before changing anything, so that ErrALFull
		// leaves the log as it was. Extents of this write are never
		// victims: they must be hot when it is issued.
		need := cold - len(al.free)
		al.victims = al.victims[:0]
		for s := al.lru; need > 0 && s != alNoSlot; s = al.slots[s].prev {
			if sl := &al.slots[s]; sl.inflight == 0 && (sl.ext < first || sl.ext > last) {
				al.victims = append(al.victims, s)
				need--
			}
		}
		if need > 0 {
			return nil, ErrALFull
		}
		al.seq++
		change = &ALChange{Seq: al.seq, Added: make([]uint64, 0, cold)}
		if len(al.victims) > 0 {
			change.Evicted = make([]uint64, 0, len(al.victims))
		}
		for _, s := range al.victims {
			change.Evicted = append(change.Evicted, al.slots[s].ext)
			al.deactivate(s)
		}
	}
	for e := first; e <= last; e++ {
		s, hot := al.index[e]
		if !hot {
			s = al.activate(e, al.seq)
			change.Added = append(change.Added, e)
		} else {
			al.touch(s)
		}
		al.slots[s].inflight++
	}
	return change, nil
}

// End records that a write Begin accepted has completed: it is durable on
// the local store and acknowledged by, or recorded in the bitmap for, every
// peer. A write that failed ends too (the failure is the bitmap's business).
// Its extents stay hot until evicted. End panics when the range has no
// write in flight, as that is a bug in the caller that would otherwise let a
// busy extent be evicted.
func (al *ActivityLog) End(off, length int64) {
	first, last, err := al.span(off, length)
	if err != nil {
		panic(fmt.Sprintf("activity log: End: %v", err))
	}
	if length == 0 {
		return
	}
	for e := first; e <= last; e++ {
		if s, hot := al.index[e]; !hot || al.slots[s].inflight == 0 {
			panic(fmt.Sprintf("activity log: End(%d, %d) without a matching Begin: extent %d has no write in flight", off, length, e))
		}
	}
	for e := first; e <= last; e++ {
		al.slots[al.index[e]].inflight--
	}
}

// Committed reports that every change with Seq at most seq is durable (or a
// snapshot including them is), so writes into the extents they made hot may
// proceed.
func (al *ActivityLog) Committed(seq uint64) {
	al.committed = max(al.committed, min(seq, al.seq))
}

// Hot returns the hot extents in ascending order: after a crash of the
// primary that kept this log, the extents that must be resynced.
func (al *ActivityLog) Hot() []uint64 {
	out := make([]uint64, 0, len(al.index))
	for e := range al.index {
		out = append(out, e)
	}
	slices.Sort(out)
	return out
}

// InFlight reports how many writes Begin accepted and End has not yet seen
// for extent ext.
func (al *ActivityLog) InFlight(ext uint64) int {
	if s, hot := al.index[ext]; hot {
		return int(al.slots[s].inflight)
	}
	return 0
}

// activate puts ext into a free slot as the most recently used extent.
func (al *ActivityLog) activate(ext, seq uint64) int32 {
	s := al.free[len(al.free)-1]
	al.free = al.free[:len(al.free)-1]
	al.slots[s] = alSlot{ext: ext, added: seq, prev: alNoSlot, next: alNoSlot}
	al.index[ext] = s
	al.pushFront(s)
	return s
}

// deactivate frees slot s, which has no write in flight.
func (al *ActivityLog) deactivate(s int32) {
	al.unlink(s)
	delete(al.index, al.slots[s].ext)
	al.free = append(al.free, s)
}

// touch makes slot s the most recently used.
func (al *ActivityLog) touch(s int32) {
	if al.mru != s {
		al.unlink(s)
		al.pushFront(s)
	}
}

func (al *ActivityLog) pushFront(s int32) {
	al.slots[s].prev = alNoSlot
	al.slots[s].next = al.mru
	if al.mru != alNoSlot {
		al.slots[al.mru].prev = s
	}
	al.mru = s
	if al.lru == alNoSlot {
		al.lru = s
	}
}

func (al *ActivityLog) unlink(s int32) {
	p, n := al.slots[s].prev, al.slots[s].next
	if p != alNoSlot {
		al.slots[p].next = n
	} else {
		al.mru = n
	}
	if n != alNoSlot {
		al.slots[n].prev = p
	} else {
		al.lru = p
	}
}

// Apply replays a persisted change onto a log restored from a snapshot, to
// rebuild the hot set after a crash: restore the last snapshot with
// UnmarshalBinary, then Apply every later change in Seq order. Changes the
// log already includes (Seq at most Seq()) are skipped, so replaying records
// older than the snapshot is harmless. A change that skips a Seq or does not
// fit the current state fails with ErrALCorrupt and changes nothing.
// Applied changes count as committed.
func (al *ActivityLog) Apply(c *ALChange) error {
	if c == nil || c.Seq <= al.seq {
		return nil
	}
	if c.Seq != al.seq+1 {
		return fmt.Errorf("%w: change %d cannot follow change %d: %d change(s) missing", ErrALCorrupt, c.Seq, al.seq, c.Seq-al.seq-1)
	}
	for i, e := range c.Evicted {
		s, hot := al.index[e]
		switch {
		case !hot:
			return fmt.Errorf("%w: change %d evicts extent %d, which is not hot", ErrALCorrupt, c.Seq, e)
		case al.slots[s].inflight != 0:
			return fmt.Errorf("%w: change %d evicts extent %d, which has writes in flight", ErrALCorrupt, c.Seq, e)
		case slices.Contains(c.Evicted[:i], e):
			return fmt.Errorf("%w: change %d evicts extent %d twice", ErrALCorrupt, c.Seq, e)
		}
	}
	for i, e := range c.Added {
		_, hot := al.index[e]
		switch {
		case e >= al.extents:
			return fmt.Errorf("%w: change %d adds extent %d, past the last of %d", ErrALCorrupt, c.Seq, e, al.extents)
		case hot:
			return fmt.Errorf("%w: change %d adds extent %d, which is already hot", ErrALCorrupt, c.Seq, e)
		case slices.Contains(c.Added[:i], e):
			return fmt.Errorf("%w: change %d adds extent %d twice", ErrALCorrupt, c.Seq, e)
		}
	}
	if n := len(al.index) - len(c.Evicted) + len(c.Added); n > al.capacity {
		return fmt.Errorf("%w: change %d leaves %d extents hot, capacity is %d", ErrALCorrupt, c.Seq, n, al.capacity)
	}
	for _, e := range c.Evicted {
		al.deactivate(al.index[e])
	}
	for _, e := range c.Added {
		al.activate(e, c.Seq)
	}
	al.seq, al.committed = c.Seq, c.Seq
	return nil
}

// MarshalBinary encodes a snapshot of the log: its geometry, Seq and the hot
// extents in recency order. Writes in flight are not recorded: after a crash
// they are gone, and their extents are hot. A persisted snapshot supersedes
// every change up to Seq.
func (al *ActivityLog) MarshalBinary() ([]byte, error) {
	data := make([]byte, alHeaderLen+8*len(al.index))
	binary.LittleEndian.PutUint32(data[12:], uint32(al.capacity))
	binary.LittleEndian.PutUint64(data[16:], uint64(al.deviceSize))
	binary.LittleEndian.PutUint64(data[24:], uint64(al.extentSize))
	binary.LittleEndian.PutUint64(data[32:], al.seq)
	binary.LittleEndian.PutUint32(data[40:], uint32(len(al.index)))
	// Count rather than follow the list to its end: the zero ActivityLog
	// has no list.
	for i, s := 0, al.lru; i < len(al.index); i, s = i+1, al.slots[s].prev {
		binary.LittleEndian.PutUint64(data[alHeaderLen+8*i:], al.slots[s].ext)
	}
	alRecord.seal(data)
	return data, nil
}

// UnmarshalBinary replaces the log with a snapshot encoded by MarshalBinary;
// all its changes count as committed and no write is in flight. On a zero
// ActivityLog it takes geometry and capacity from the data; on one made by
// NewActivityLog the device and extent sizes must match and the hot extents
// must fit its capacity (ErrALGeometry) — to read a snapshot taken with a
// larger capacity, unmarshal it into a zero ActivityLog. Damaged data fails
// with ErrALCorrupt. On error the log is unchanged.
func (al *ActivityLog) UnmarshalBinary(data []byte) error {
	if err := alRecord.open(data, alHeaderLen); err != nil {
		return err
	}
	capacity := int64(binary.LittleEndian.Uint32(data[12:]))
	deviceSize := int64(binary.LittleEndian.Uint64(data[16:]))
	extentSize := int64(binary.LittleEndian.Uint64(data[24:]))
	seq := binary.LittleEndian.Uint64(data[32:])
	n := int(binary.LittleEndian.Uint32(data[40:]))
	if err := checkALGeometry(deviceSize, extentSize, capacity); err != nil {
		return fmt.Errorf("%w: %v", ErrALCorrupt, err)
	}
	if n > int(capacity) || len(data) != alHeaderLen+8*n {
		return fmt.Errorf("%w: %d bytes for %d hot extents (capacity %d), want %d", ErrALCorrupt, len(data), n, capacity, alHeaderLen+8*n)
	}
	if al.extentSize != 0 {
		if deviceSize != al.deviceSize || extentSize != al.extentSize {
			return fmt.Errorf("%w: persisted log is for %d bytes in %d-byte extents, the volume has %d bytes in %d-byte extents",
				ErrALGeometry, deviceSize, extentSize, al.deviceSize, al.extentSize)
		}
		if n > al.capacity {
			return fmt.Errorf("%w: persisted log holds %d hot extents, more than the configured capacity of %d", ErrALGeometry, n, al.capacity)
		}
		capacity = int64(al.capacity)
	}
	var r ActivityLog
	r.init(deviceSize, extentSize, int(capacity))
	for i := range n {
		e := binary.LittleEndian.Uint64(data[alHeaderLen+8*i:])
		if e >= r.extents {
			return fmt.Errorf("%w: hot extent %d past the last of %d", ErrALCorrupt, e, r.extents)
		}
		if _, dup := r.index[e]; dup {
			return fmt.Errorf("%w: extent %d listed twice", ErrALCorrupt, e)
		}
		r.activate(e, seq) // least recently used first, so each becomes the newest
	}
	r.seq, r.committed = seq, seq
	*al = r
	return nil
}

// MarshalBinary encodes the change as a self-checking record.
func (c *ALChange) MarshalBinary() ([]byte, error) {
	data := make([]byte, alChangeHeadLen+8*(len(c.Added)+len(c.Evicted)))
	binary.LittleEndian.PutUint32(data[12:], uint32(len(c.Added)))
	binary.LittleEndian.PutUint32(data[16:], uint32(len(c.Evicted)))
	binary.LittleEndian.PutUint64(data[24:], c.Seq)
	p := alChangeHeadLen
	for _, e := range slices.Concat(c.Added, c.Evicted) {
		binary.LittleEndian.PutUint64(data[p:], e)
		p += 8
	}
	alChangeRecord.seal(data)
	return data, nil
}

// UnmarshalBinary decodes a record written by MarshalBinary. A torn or
// damaged record fails with ErrALCorrupt and leaves c unchanged. Whether the
// change fits a log is checked by ActivityLog.Apply.
func (c *ALChange) UnmarshalBinary(data []byte) error {
	if err := alChangeRecord.open(data, alChangeHeadLen); err != nil {
		return err
	}
	na := int64(binary.LittleEndian.Uint32(data[12:]))
	ne := int64(binary.LittleEndian.Uint32(data[16:]))
	if na > alMaxRecordItems || ne > alMaxRecordItems || int64(len(data)) != alChangeHeadLen+8*(na+ne) {
		return fmt.Errorf("%w: change of %d bytes cannot hold %d added and %d evicted extents", ErrALCorrupt, len(data), na, ne)
	}
	r := ALChange{Seq: binary.LittleEndian.Uint64(data[24:])}
	read := func(n int64, p int) []uint64 {
		if n == 0 {
			return nil
		}
		out := make([]uint64, n)
		for i := range out {
			out[i] = binary.LittleEndian.Uint64(data[p+8*i:])
		}
		return out
	}
	r.Added = read(na, alChangeHeadLen)
	r.Evicted = read(ne, alChangeHeadLen+8*int(na))
	*c = r
	return nil
}
