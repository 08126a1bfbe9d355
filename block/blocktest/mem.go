// Package blocktest provides block.Device implementations for tests of the
// packages above the local store: an in-memory device with allocation
// tracking, operation counters and fault injection.
package blocktest

import (
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/blockrep/blockrep/block"
)

// PageSize is the allocation unit of Mem.
const PageSize = 4096

// Op names a block.Device operation, for FailNext and Calls.
type Op string

// The operations of block.Device that Mem counts and can fail.
const (
	OpRead        Op = "read"
	OpWrite       Op = "write"
	OpFlush       Op = "flush"
	OpTrim        Op = "trim"
	OpWriteZeroes Op = "writezeroes"
	OpCache       Op = "cache"
	OpExtents     Op = "extents"
)

// page is one PageSize unit of a Mem. A nil *page in Mem.pages is allocated
// but known to be zero (like an unwritten extent); a missing entry is a hole.
type page [PageSize]byte

type fault struct {
	err error
	n   int
}

// Mem is an in-memory block.Device for tests. It is safe for concurrent use.
//
// Storage is allocated in PageSize pages, so that Extents answers like a
// sparse file: pages never written, or trimmed whole, are holes (Hole and
// Zero set); pages zeroed by WriteZeroes without MayTrim are allocated zero
// extents (Zero set); written pages are data. Trim and WriteZeroes with
// MayTrim deallocate the pages they cover whole and zero the bytes of the
// pages they cover in part.
//
// Every call is counted (Calls); successful flushes and FUA writes also
// have their own counters (Flushes, FUAWrites). FailNext makes the next
// calls of an operation fail without touching the contents.
type Mem struct {
	size int64

	mu     sync.RWMutex
	pages  map[int64]*page // by page index
	closed bool

	fmu    sync.Mutex
	faults map[Op]*fault

	noFastZero atomic.Bool
	flushes    atomic.Int64
	fuaWrites  atomic.Int64
	calls      sync.Map // Op -> *atomic.Int64
}

var _ block.Device = (*Mem)(nil)

// NewMem returns a zeroed, fully unallocated device of size bytes. Memory
// is used only for pages that are written, so size may be large.
func NewMem(size int64) *Mem {
	if size <= 0 {
		panic(fmt.Sprintf("blocktest: NewMem(%d): size must be positive", size))
	}
	return &Mem{size: size, pages: make(map[int64]*page)}
}

// Size is the device size in bytes.
func (m *Mem) Size() int64 { return m.size }

// Flushes is the number of successful Flush calls.
func (m *Mem) Flushes() int64 { return m.flushes.Load() }

// FUAWrites is the number of successful WriteAt calls with fua set.
func (m *Mem) FUAWrites() int64 { return m.fuaWrites.Load() }

// Calls is the number of calls of op so far, failed ones included.
func (m *Mem) Calls(op Op) int64 {
	if c, ok := m.calls.Load(op); ok {
		return c.(*atomic.Int64).Load()
	}
	return 0
}

// FailNext makes the next n calls of op fail with err (for example
// syscall.EIO) without effect on the contents. It replaces any fault still
// pending for op; n <= 0 clears it.
func (m *Mem) FailNext(op Op, err error, n int) {
	m.fmu.Lock()
	defer m.fmu.Unlock()
	if m.faults == nil {
		m.faults = make(map[Op]*fault)
	}
	if n <= 0 || err == nil {
		delete(m.faults, op)
		return
	}
	m.faults[op] = &fault{err: err, n: n}
}

// SetFastZero says whether WriteZeroes with Fast succeeds (the default) or
// fails with block.ErrNotFast, as on a device that can only write zeroes.
func (m *Mem) SetFastZero(ok bool) { m.noFastZero.Store(!ok) }

// Closed reports whether Close has been called.
func (m *Mem) Closed() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.closed
}

// Bytes returns a copy of the whole device contents.
func (m *Mem) Bytes() []byte {
	out := make([]byte, m.size)
	m.mu.RLock()
	defer m.mu.RUnlock()
	for i, p := range m.pages {
		if p != nil {
			copy(out[i*PageSize:], p[:])
		}
	}
	return out
}

// Allocated reports whether the page holding byte off is allocated (data
// or allocated zeroes).
func (m *Mem) Allocated(off int64) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, ok := m.pages[off/PageSize]
	return ok
}

// begin counts a call, checks bounds and closed state, and consumes a
// pending fault.
func (m *Mem) begin(op Op, off, length int64) error {
	c, ok := m.calls.Load(op)
	if !ok {
		c, _ = m.calls.LoadOrStore(op, new(atomic.Int64))
	}
	c.(*atomic.Int64).Add(1)

	if off < 0 || length < 0 || off > m.size || length > m.size-off {
		return fmt.Errorf("blocktest: %s at %d length %d (size %d): %w", op, off, length, m.size, block.ErrOutOfRange)
	}
	m.fmu.Lock()
	defer m.fmu.Unlock()
	if f := m.faults[op]; f != nil {
		f.n--
		if f.n <= 0 {
			delete(m.faults, op)
		}
		return fmt.Errorf("blocktest: %s at %d: injected: %w", op, off, f.err)
	}
	return nil
}

func closedErr(op Op) error {
	return fmt.Errorf("blocktest: %s: %w", op, os.ErrClosed)
}

// ReadAt fills p from offset off.
func (m *Mem) ReadAt(p []byte, off int64) error {
	if err := m.begin(OpRead, off, int64(len(p))); err != nil {
		return err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return closedErr(OpRead)
	}
	for len(p) > 0 {
		i, o := off/PageSize, off%PageSize
		n := min(int64(len(p)), PageSize-o)
		if pg := m.pages[i]; pg != nil {
			copy(p[:n], pg[o:])
		} else {
			clear(p[:n])
		}
		p, off = p[n:], off+n
	}
	return nil
}

// WriteAt writes p at offset off. With fua set it counts in FUAWrites.
func (m *Mem) WriteAt(p []byte, off int64, fua bool) error {
	if err := m.begin(OpWrite, off, int64(len(p))); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return closedErr(OpWrite)
	}
	for len(p) > 0 {
		i, o := off/PageSize, off%PageSize
		n := min(int64(len(p)), PageSize-o)
		pg := m.pages[i]
		if pg == nil {
			pg = new(page)
			m.pages[i] = pg
		}
		copy(pg[o:], p[:n])
		p, off = p[n:], off+n
	}
	if fua {
		m.fuaWrites.Add(1)
	}
	return nil
}

// Flush counts in Flushes.
func (m *Mem) Flush() error {
	if err := m.begin(OpFlush, 0, 0); err != nil {
		return err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return closedErr(OpFlush)
	}
	m.flushes.Add(1)
	return nil
}

// Trim deallocates the pages inside the range and zeroes the rest of it.
func (m *Mem) Trim(off, length int64) error {
	if err := m.begin(OpTrim, off, length); err != nil {
		return err
	}
	return m.zero(OpTrim, off, length, true)
}

// WriteZeroes zeroes the range: with MayTrim like Trim, without it leaving
// the pages inside the range allocated (as zero extents).
func (m *Mem) WriteZeroes(off, length int64, flags block.ZeroFlags) error {
	if err := m.begin(OpWriteZeroes, off, length); err != nil {
		return err
	}
	if flags.Fast && m.noFastZero.Load() {
		return block.ErrNotFast
	}
	return m.zero(OpWriteZeroes, off, length, flags.MayTrim)
}

func (m *Mem) zero(op Op, off, length int64, trim bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return closedErr(op)
	}
	for end := off + length; off < end; {
		i, o := off/PageSize, off%PageSize
		n := min(end-off, PageSize-o)
		pg, allocated := m.pages[i]
		switch {
		case n == PageSize && trim:
			delete(m.pages, i)
		case n == PageSize:
			m.pages[i] = nil // allocated, zero
		case allocated && pg != nil:
			clear(pg[o : o+n])
		}
		off += n
	}
	return nil
}

// Cache does nothing but count and check.
func (m *Mem) Cache(off, length int64) error {
	if err := m.begin(OpCache, off, length); err != nil {
		return err
	}
	if m.Closed() {
		return closedErr(OpCache)
	}
	return nil
}

// Extents reports pages as holes, allocated zeroes or data, merging
// neighbours of one kind. The range is clipped to the device size; the
// first extent starts at off and the last ends at the end of the range.
// It costs O(allocated pages) on a large, mostly empty device.
func (m *Mem) Extents(off, length int64, fn func(block.Extent) bool) error {
	if off >= 0 && off < m.size && length > m.size-off {
		length = m.size - off
	}
	if err := m.begin(OpExtents, off, length); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	end := off + length
	// Collect under the lock, call fn outside it: fn may call back into
	// the device.
	var list []block.Extent
	add := func(start, stop int64, hole, zero bool) {
		start, stop = max(start, off), min(stop, end)
		if stop <= start {
			return
		}
		if k := len(list) - 1; k >= 0 && list[k].Hole == hole && list[k].Zero == zero {
			list[k].Length += stop - start
			return
		}
		list = append(list, block.Extent{Offset: start, Length: stop - start, Hole: hole, Zero: zero})
	}
	m.mu.RLock()
	if m.closed {
		m.mu.RUnlock()
		return closedErr(OpExtents)
	}
	pos := off
	visit := func(i int64) {
		add(pos, i*PageSize, true, true)
		add(i*PageSize, (i+1)*PageSize, false, m.pages[i] == nil)
		pos = max(pos, (i+1)*PageSize)
	}
	first, last := off/PageSize, (end-1)/PageSize
	if last-first+1 <= int64(len(m.pages)) {
		for i := first; i <= last; i++ {
			if _, ok := m.pages[i]; ok {
				visit(i)
			}
		}
	} else {
		var idx []int64
		for i := range m.pages {
			if i >= first && i <= last {
				idx = append(idx, i)
			}
		}
		slices.Sort(idx)
		for _, i := range idx {
			visit(i)
		}
	}
	add(pos, end, true, true)
	m.mu.RUnlock()

	for _, e := range list {
		if !fn(e) {
			break
		}
	}
	return nil
}

// Close marks the device closed: later calls fail with an error wrapping
// os.ErrClosed, and so does a second Close. The contents stay readable
// through Bytes.
func (m *Mem) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return closedErr("close")
	}
	m.closed = true
	return nil
}
