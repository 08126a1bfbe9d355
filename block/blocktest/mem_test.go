package blocktest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"

	"github.com/blockrep/blockrep/block"
)

func extents(t *testing.T, d block.Device, off, length int64) []block.Extent {
	t.Helper()
	var got []block.Extent
	if err := d.Extents(off, length, func(e block.Extent) bool {
		got = append(got, e)
		return true
	}); err != nil {
		t.Fatalf("Extents(%d, %d): %v", off, length, err)
	}
	return got
}

func data(off, n int64) block.Extent { return block.Extent{Offset: off, Length: n} }
func zero(off, n int64) block.Extent { return block.Extent{Offset: off, Length: n, Zero: true} }
func hole(off, n int64) block.Extent {
	return block.Extent{Offset: off, Length: n, Hole: true, Zero: true}
}

func fill(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

func TestMemReadWrite(t *testing.T) {
	m := NewMem(64 * 1024)
	want := make([]byte, m.Size())
	write := func(off int64, p []byte) {
		t.Helper()
		if err := m.WriteAt(p, off, false); err != nil {
			t.Fatalf("WriteAt(%d): %v", off, err)
		}
		copy(want[off:], p)
	}
	write(100, fill(10000, 1)) // across three pages
	write(4096*5, fill(4096, 2))
	write(m.Size()-1, []byte{3})

	got := make([]byte, m.Size())
	if err := m.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("ReadAt of the whole device differs from what was written")
	}
	part := make([]byte, 50)
	if err := m.ReadAt(part, 4070); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(part, want[4070:4120]) {
		t.Fatal("ReadAt across a page boundary differs")
	}

	snap := m.Bytes()
	if !bytes.Equal(snap, want) {
		t.Fatal("Bytes differs from what was written")
	}
	snap[100] = 99
	if m.ReadAt(part[:1], 100); part[0] != 1 {
		t.Fatal("Bytes is not a copy")
	}
}

func TestMemExtents(t *testing.T) {
	const P = PageSize
	m := NewMem(16 * P)
	if got, want := extents(t, m, 0, m.Size()), []block.Extent{hole(0, 16*P)}; !slices.Equal(got, want) {
		t.Fatalf("fresh device: %v, want %v", got, want)
	}

	steps := []struct {
		name string
		do   func() error
		want []block.Extent
	}{
		{"partial write allocates its page", func() error { return m.WriteAt([]byte{1}, P+10, false) },
			[]block.Extent{hole(0, P), data(P, P), hole(2*P, 14*P)}},
		{"write across pages", func() error { return m.WriteAt(fill(P, 2), 3*P+1, false) },
			[]block.Extent{hole(0, P), data(P, P), hole(2*P, P), data(3*P, 2*P), hole(5*P, 11*P)}},
		{"zero without MayTrim keeps pages allocated", func() error { return m.WriteZeroes(8*P, 3*P, block.ZeroFlags{}) },
			[]block.Extent{hole(0, P), data(P, P), hole(2*P, P), data(3*P, 2*P), hole(5*P, 3*P), zero(8*P, 3*P), hole(11*P, 5*P)}},
		{"write into a zero page makes it data", func() error { return m.WriteAt([]byte{5}, 9*P, false) },
			[]block.Extent{hole(0, P), data(P, P), hole(2*P, P), data(3*P, 2*P), hole(5*P, 3*P), zero(8*P, P), data(9*P, P), zero(10*P, P), hole(11*P, 5*P)}},
		{"trim frees whole pages only", func() error { return m.Trim(3*P+100, 2*P) },
			[]block.Extent{hole(0, P), data(P, P), hole(2*P, P), data(3*P, P), hole(4*P, 4*P), zero(8*P, P), data(9*P, P), zero(10*P, P), hole(11*P, 5*P)}},
		{"zero with MayTrim frees pages", func() error { return m.WriteZeroes(8*P, 3*P, block.ZeroFlags{MayTrim: true}) },
			[]block.Extent{hole(0, P), data(P, P), hole(2*P, P), data(3*P, P), hole(4*P, 12*P)}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := extents(t, m, 0, m.Size()); !slices.Equal(got, s.want) {
			t.Fatalf("%s:\n got %v\nwant %v", s.name, got, s.want)
		}
	}

	// Contents after the steps: the partial trim zeroed its bytes.
	want := make([]byte, m.Size())
	want[P+10] = 1
	copy(want[3*P+1:3*P+100], fill(99, 2))
	if got := m.Bytes(); !bytes.Equal(got, want) {
		t.Fatal("contents after trims and zeroing differ from expected")
	}

	// Sub-ranges are clipped to the request and to the device; fn can stop.
	if got, want := extents(t, m, P+100, 2*P), []block.Extent{data(P+100, P-100), hole(2*P, P), data(3*P, 100)}; !slices.Equal(got, want) {
		t.Errorf("sub-range: got %v, want %v", got, want)
	}
	if got, want := extents(t, m, 15*P, 1<<40), []block.Extent{hole(15*P, P)}; !slices.Equal(got, want) {
		t.Errorf("clipped: got %v, want %v", got, want)
	}
	n := 0
	if err := m.Extents(0, m.Size(), func(block.Extent) bool { n++; return n < 2 }); err != nil || n != 2 {
		t.Errorf("stop after two: %d calls, err %v", n, err)
	}
}

func TestMemExtentsLargeSparse(t *testing.T) {
	const size = 1 << 40
	m := NewMem(size)
	if err := m.WriteAt([]byte{1}, size/2, false); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteAt([]byte{1}, size-1, false); err != nil {
		t.Fatal(err)
	}
	want := []block.Extent{hole(0, size/2), data(size/2, PageSize), hole(size/2+PageSize, size/2-2*PageSize), data(size-PageSize, PageSize)}
	if got := extents(t, m, 0, size); !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestMemErrors(t *testing.T) {
	m := NewMem(8192)
	buf := make([]byte, 512)
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"read past end", m.ReadAt(buf, 8000), block.ErrOutOfRange},
		{"read negative", m.ReadAt(buf, -1), block.ErrOutOfRange},
		{"write past end", m.WriteAt(buf, 8192, false), block.ErrOutOfRange},
		{"trim past end", m.Trim(4096, 8192), block.ErrOutOfRange},
		{"zeroes overflow", m.WriteZeroes(1, 1<<63-1, block.ZeroFlags{}), block.ErrOutOfRange},
		{"cache past end", m.Cache(8193, 0), block.ErrOutOfRange},
		{"extents at end", m.Extents(8192, 1, func(block.Extent) bool { return true }), block.ErrOutOfRange},
		{"read at end, empty", m.ReadAt(nil, 8192), nil},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, tt.want) || (tt.want == nil && tt.err != nil) {
			t.Errorf("%s: err = %v, want %v", tt.name, tt.err, tt.want)
		}
	}
	if got := m.Calls(OpRead); got != 3 {
		t.Errorf("Calls(OpRead) = %d, want 3", got)
	}
}

func TestMemFailNext(t *testing.T) {
	m := NewMem(8192)
	if err := m.WriteAt(fill(4096, 7), 0, false); err != nil {
		t.Fatal(err)
	}
	m.FailNext(OpWrite, syscall.EIO, 2)
	m.FailNext(OpRead, syscall.EIO, 1)
	m.FailNext(OpFlush, syscall.ENOSPC, 1)

	for i := range 2 {
		if err := m.WriteAt(fill(4096, 9), 0, true); !errors.Is(err, syscall.EIO) {
			t.Fatalf("write %d: err = %v, want EIO", i, err)
		}
	}
	buf := make([]byte, 4096)
	if err := m.ReadAt(buf, 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read: err = %v, want EIO", err)
	}
	if err := m.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, fill(4096, 7)) {
		t.Fatalf("read after the fault: err %v, failed writes changed the contents: %v", err, !bytes.Equal(buf, fill(4096, 7)))
	}
	if err := m.Flush(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("flush: err = %v, want ENOSPC", err)
	}
	if m.FUAWrites() != 0 || m.Flushes() != 0 {
		t.Fatalf("failed calls counted: FUAWrites %d, Flushes %d", m.FUAWrites(), m.Flushes())
	}

	// The faults are used up.
	if err := m.WriteAt(fill(4096, 9), 0, true); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteAt(fill(10, 9), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := m.Flush(); err != nil {
		t.Fatal(err)
	}
	if m.FUAWrites() != 1 || m.Flushes() != 1 {
		t.Errorf("FUAWrites %d, Flushes %d; want 1 and 1", m.FUAWrites(), m.Flushes())
	}
	if m.Calls(OpWrite) != 5 || m.Calls(OpFlush) != 2 {
		t.Errorf("Calls: write %d flush %d, want 5 and 2", m.Calls(OpWrite), m.Calls(OpFlush))
	}

	// Cleared with n <= 0.
	m.FailNext(OpTrim, syscall.EIO, 5)
	m.FailNext(OpTrim, nil, 0)
	if err := m.Trim(0, 4096); err != nil {
		t.Errorf("trim after clearing the fault: %v", err)
	}
}

func TestMemFastZero(t *testing.T) {
	m := NewMem(8192)
	if err := m.WriteAt(fill(8192, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	m.SetFastZero(false)
	if err := m.WriteZeroes(0, 4096, block.ZeroFlags{Fast: true}); !errors.Is(err, block.ErrNotFast) {
		t.Fatalf("err = %v, want ErrNotFast", err)
	}
	if !bytes.Equal(m.Bytes(), fill(8192, 1)) {
		t.Fatal("refused WriteZeroes changed the contents")
	}
	if err := m.WriteZeroes(0, 4096, block.ZeroFlags{}); err != nil {
		t.Fatal(err)
	}
	m.SetFastZero(true)
	if err := m.WriteZeroes(4096, 4096, block.ZeroFlags{Fast: true}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.Bytes(), make([]byte, 8192)) {
		t.Fatal("zeroed device is not zero")
	}
}

func TestMemClose(t *testing.T) {
	m := NewMem(8192)
	if err := m.WriteAt([]byte("abc"), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if !m.Closed() {
		t.Fatal("Closed() = false after Close")
	}
	if err := m.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	if err := m.ReadAt(make([]byte, 1), 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("ReadAt after Close: %v", err)
	}
	if err := m.Flush(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Flush after Close: %v", err)
	}
	if string(m.Bytes()[:3]) != "abc" {
		t.Error("Bytes after Close lost the contents")
	}
}

func TestMemConcurrent(t *testing.T) {
	m := NewMem(1 << 20)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			off := int64(g) * 128 * 1024
			for i := range 100 {
				p := fill(5000, byte(g*100+i))
				if err := m.WriteAt(p, off+int64(i%20)*10, i%3 == 0); err != nil {
					errs <- err
					return
				}
				got := make([]byte, len(p))
				if err := m.ReadAt(got, off+int64(i%20)*10); err != nil || !bytes.Equal(got, p) {
					errs <- fmt.Errorf("goroutine %d: read back: %v", g, err)
					return
				}
				_ = m.Extents(off, 128*1024, func(block.Extent) bool { return true })
				if i%10 == 0 {
					_ = m.Trim(off+64*1024, 8192)
					_ = m.Flush()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if m.Flushes() != 80 {
		t.Errorf("Flushes = %d, want 80", m.Flushes())
	}
}
