package raid

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockrep/blockrep/block"
)

// MemberState is the state of one member of an Array.
type MemberState int32

// The member states. A member moves from InSync to Faulty (an error, or
// Fail); a Faulty slot takes a new device as Rebuilding (Replace, Add),
// which becomes InSync when Rebuild completes (rebuild.go). Hot spares are
// not members: a DiskArray keeps them outside the Array (spare.go) and puts
// one in a slot with Replace.
const (
	// InSync members hold current data and take part in reads and writes.
	InSync MemberState = iota
	// Faulty members failed a write (or were absent at assembly). They are
	// neither read nor written; their data is served from redundancy.
	Faulty
	// Rebuilding members are being filled from redundancy by Rebuild. They
	// are never read; writes reach them below the rebuild checkpoint.
	Rebuilding
)

// String returns "in_sync", "faulty" or "rebuilding".
func (s MemberState) String() string {
	switch s {
	case InSync:
		return "in_sync"
	case Faulty:
		return "faulty"
	case Rebuilding:
		return "rebuilding"
	}
	return fmt.Sprintf("MemberState(%d)", int32(s))
}

// member is one member device of an Array with its state and load.
type member struct {
	index int
	dev   block.Device // nil for a member absent at assembly or removed; see device
	devMu sync.RWMutex // guards dev, which Replace, Add and Remove change

	// rebuilt is the rebuild checkpoint of a Rebuilding member: the member
	// offset below which it holds current data (a multiple of ChunkSize).
	rebuilt atomic.Int64

	state    atomic.Int32 // MemberState
	inflight atomic.Int64 // reads in progress, for the mirror pick
	short    atomic.Bool  // a read ended before the member (noteEOF)
	// streams are the member offsets just past the last reads of up to
	// len(streams) sequential streams, for the mirror pick; streamNext
	// picks the slot a new stream takes.
	streams    [4]atomic.Int64
	streamNext atomic.Uint32

	mu  sync.Mutex
	err error // the error that failed the member
	// corrected counts repaired read errors, halved for every hour since
	// correctedAt (md's read_errors decay).
	corrected   int
	correctedAt time.Time
}

// correctReadError counts a repaired read error at now and returns the
// count.
func (m *member) correctReadError(now time.Time) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.decayLocked(now)
	m.corrected++
	return m.corrected
}

// correctedReadErrors returns the count of repaired read errors at now.
func (m *member) correctedReadErrors(now time.Time) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.decayLocked(now)
	return m.corrected
}

func (m *member) decayLocked(now time.Time) {
	if m.correctedAt.IsZero() {
		m.correctedAt = now
		return
	}
	hours := int(now.Sub(m.correctedAt) / time.Hour)
	if hours <= 0 {
		return
	}
	m.corrected >>= min(hours, 62)
	m.correctedAt = m.correctedAt.Add(time.Duration(hours) * time.Hour)
}

func (m *member) State() MemberState { return MemberState(m.state.Load()) }

func (m *member) inSync() bool { return m.State() == InSync }

// fail moves the member from InSync or Rebuilding to Faulty, recording
// err. It reports whether this call did it.
func (m *member) fail(err error) bool {
	if !m.state.CompareAndSwap(int32(InSync), int32(Faulty)) &&
		!m.state.CompareAndSwap(int32(Rebuilding), int32(Faulty)) {
		return false
	}
	m.mu.Lock()
	m.err = err
	m.mu.Unlock()
	return true
}

func (m *member) failErr() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

func (m *member) readAt(p []byte, off int64) error {
	m.inflight.Add(1)
	defer m.inflight.Add(-1)
	m.noteRead(off, int64(len(p)))
	return m.noteEOF(m.device().ReadAt(p, off))
}

// noteEOF records a read that ended before the member did (its file was
// truncated under the array): repairing it would write the chunk back
// past the new end and leave holes that read as zeros, so the member must
// be failed instead (repair).
func (m *member) noteEOF(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		m.short.Store(true)
	}
	return err
}

// vectorReader is a device that reads into several buffers from
// consecutive offsets in one call (preadv), as File does.
type vectorReader interface {
	ReadvAt(bufs [][]byte, off int64) error
}

// readvAt fills bufs, in order, from consecutive member offsets starting
// at off: one call where the device can, else one read per buffer.
func (m *member) readvAt(bufs [][]byte, off int64) error {
	if len(bufs) == 1 {
		return m.readAt(bufs[0], off)
	}
	var n int64
	for _, b := range bufs {
		n += int64(len(b))
	}
	m.inflight.Add(1)
	defer m.inflight.Add(-1)
	m.noteRead(off, n)
	dev := m.device()
	if v, ok := dev.(vectorReader); ok {
		return m.noteEOF(v.ReadvAt(bufs, off))
	}
	for _, b := range bufs {
		if err := dev.ReadAt(b, off); err != nil {
			return m.noteEOF(err)
		}
		off += int64(len(b))
	}
	return nil
}

// noteRead records a read of n bytes at off: it continues the stream that
// ended at off, or starts one in place of the oldest.
func (m *member) noteRead(off, n int64) {
	for i := range m.streams {
		if off > 0 && m.streams[i].CompareAndSwap(off, off+n) {
			return
		}
	}
	m.streams[m.streamNext.Add(1)%uint32(len(m.streams))].Store(off + n)
}

// continues reports whether a read at off continues one of the member's
// recent streams.
func (m *member) continues(off int64) bool {
	for i := range m.streams {
		if off > 0 && m.streams[i].Load() == off {
			return true
		}
	}
	return false
}

func (m *member) writeAt(p []byte, off int64, fua bool) error {
	return m.device().WriteAt(p, off, fua)
}
