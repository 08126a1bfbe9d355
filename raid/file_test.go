//go:build linux

package raid

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/blockrep/blockrep/block"
)

const (
	KiB = 1 << 10
	MiB = 1 << 20
)

// newTestFile creates a sparse file of size bytes under t.TempDir and opens
// it as a store.
func newTestFile(t *testing.T, size int64) *File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "store")
	f, err := OpenFile(path, FileOptions{CreateSize: size})
	if err != nil {
		t.Fatalf("OpenFile: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// pattern returns n bytes that differ from offset to offset and from seed
// to seed, and are never all zero.
func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7+i/4093) ^ seed | 1
	}
	return p
}

func readAll(t *testing.T, d block.Device, off, n int64) []byte {
	t.Helper()
	p := make([]byte, n)
	if err := d.ReadAt(p, off); err != nil {
		t.Fatalf("ReadAt(%d, %d): %v", off, n, err)
	}
	return p
}

func isZero(p []byte) bool {
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

func collectExtents(t *testing.T, d block.Device, off, length int64) []block.Extent {
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

// allocatedBlocks is st_blocks (512-byte units) of the backing file.
func allocatedBlocks(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks
}

func fmtExtents(es []block.Extent) string {
	var b strings.Builder
	for _, e := range es {
		kind := "data"
		switch {
		case e.Hole && e.Zero:
			kind = "hole"
		case e.Zero:
			kind = "zero"
		case e.Hole:
			kind = "hole(nonzero?)"
		}
		fmt.Fprintf(&b, "[%d+%d %s] ", e.Offset, e.Length, kind)
	}
	return b.String()
}

func TestOpenFileCreate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vol")

	f, err := OpenFile(path, FileOptions{CreateSize: 8 * MiB})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if f.Size() != 8*MiB || f.Path() != path || f.IsBlockDevice() {
		t.Fatalf("Size=%d Path=%q IsBlockDevice=%v", f.Size(), f.Path(), f.IsBlockDevice())
	}
	if b := allocatedBlocks(t, path); b != 0 {
		t.Errorf("new store allocated %d blocks, want a sparse file", b)
	}
	if err := f.WriteAt([]byte("keep"), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("created with mode %v, want 0600", st.Mode().Perm())
	}

	// Same size again: opens the existing data.
	f, err = OpenFile(path, FileOptions{CreateSize: 8 * MiB})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if got := readAll(t, f, 0, 4); string(got) != "keep" {
		t.Errorf("reopened store reads %q, want %q", got, "keep")
	}
	f.Close()

	// Without CreateSize: opens whatever size is there.
	f, err = OpenFile(path, FileOptions{})
	if err != nil {
		t.Fatalf("open without CreateSize: %v", err)
	}
	if f.Size() != 8*MiB {
		t.Errorf("Size = %d, want %d", f.Size(), 8*MiB)
	}
	f.Close()

	for _, size := range []int64{4 * MiB, 16 * MiB} {
		_, err := OpenFile(path, FileOptions{CreateSize: size})
		if err == nil {
			t.Fatalf("CreateSize %d over an 8 MiB file: no error", size)
		}
		for _, want := range []string{path, fmt.Sprint(8 * MiB), fmt.Sprint(size)} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name %q", err, want)
			}
		}
		if st, _ := os.Stat(path); st.Size() != 8*MiB {
			t.Fatalf("failed open resized the file to %d", st.Size())
		}
	}
}

func TestOpenFileErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		path    string
		opts    FileOptions
		is      error  // errors.Is target, if any
		mention string // substring of the message
	}{
		{"missing", filepath.Join(dir, "nope"), FileOptions{}, fs.ErrNotExist, "nope"},
		{"empty file", empty, FileOptions{}, nil, empty},
		{"directory", dir, FileOptions{ReadOnly: true}, nil, "neither a regular file nor a block device"},
		{"fifo", fifo, FileOptions{ReadOnly: true}, nil, "neither a regular file nor a block device"},
		{"negative CreateSize", filepath.Join(dir, "neg"), FileOptions{CreateSize: -1}, nil, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "fifo" {
				// Opening a FIFO read-only blocks until a writer shows up.
				w, err := os.OpenFile(fifo, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer w.Close()
			}
			f, err := OpenFile(tt.path, tt.opts)
			if err == nil {
				f.Close()
				t.Fatal("no error")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("error %q does not mention %q", err, tt.mention)
			}
		})
	}
}

func TestReadWriteRoundTrip(t *testing.T) {
	const size = 4 * MiB
	f := newTestFile(t, size)
	tests := []struct {
		name string
		off  int64
		n    int
		fua  bool
	}{
		{"first sector", 0, 512, false},
		{"unaligned small", 4097, 3, false},
		{"across pages", 4000, 10000, true},
		{"1 MiB aligned", MiB, MiB, false},
		{"last byte", size - 1, 1, true},
		{"tail", size - 64*KiB, 64 * KiB, false},
		{"empty", 123, 0, true},
		{"empty at end", size, 0, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := pattern(tt.n, byte(i))
			if err := f.WriteAt(want, tt.off, tt.fua); err != nil {
				t.Fatalf("WriteAt: %v", err)
			}
			if got := readAll(t, f, tt.off, int64(tt.n)); !bytes.Equal(got, want) {
				t.Fatalf("read back differs")
			}
		})
	}
	// The bytes around a small write are untouched.
	g := newTestFile(t, MiB)
	if err := g.WriteAt([]byte{1, 2, 3}, 4097, false); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, g, 4096, 5); !bytes.Equal(got, []byte{0, 1, 2, 3, 0}) {
		t.Errorf("bytes around a 3-byte write at 4097: %v", got)
	}
	if err := f.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	// The data is in the file, as os reads it.
	raw, err := os.ReadFile(f.Path())
	if err != nil {
		t.Fatal(err)
	}
	if want := pattern(MiB, 3); !bytes.Equal(raw[MiB:2*MiB], want) {
		t.Errorf("file content at 1 MiB differs from what was written")
	}
}

func TestFUAWrite(t *testing.T) {
	f := newTestFile(t, MiB)
	want := pattern(8*KiB, 9)
	if err := f.WriteAt(want, 4*KiB, true); err != nil {
		t.Fatalf("FUA WriteAt: %v", err)
	}
	if got := f.dsync.Load(); got != dsyncPwritev2 {
		t.Errorf("after a FUA write on this kernel dsync = %d, want pwritev2 (%d)", got, dsyncPwritev2)
	}
	if got := readAll(t, f, 4*KiB, 8*KiB); !bytes.Equal(got, want) {
		t.Errorf("FUA write read back differs")
	}
}

func TestFUAFallback(t *testing.T) {
	for _, errno := range []unix.Errno{unix.ENOSYS, unix.EOPNOTSUPP, unix.EINVAL} {
		t.Run(errno.Error(), func(t *testing.T) {
			calls := 0
			orig := pwritev2
			pwritev2 = func(int, []byte, int64) (int, error) { calls++; return 0, errno }
			t.Cleanup(func() { pwritev2 = orig })

			f := newTestFile(t, MiB)
			for i := range 3 {
				want := pattern(4*KiB, byte(i))
				if err := f.WriteAt(want, int64(i)*4*KiB, true); err != nil {
					t.Fatalf("FUA WriteAt %d: %v", i, err)
				}
				if got := readAll(t, f, int64(i)*4*KiB, 4*KiB); !bytes.Equal(got, want) {
					t.Fatalf("write %d read back differs", i)
				}
			}
			if calls != 1 {
				t.Errorf("pwritev2 called %d times, want 1 (probe once, then fall back)", calls)
			}
			if got := f.dsync.Load(); got != dsyncFallback {
				t.Errorf("dsync = %d, want fallback (%d)", got, dsyncFallback)
			}
		})
	}
	// Once pwritev2 has worked, an EINVAL is a real error, not a fallback.
	t.Run("after success", func(t *testing.T) {
		f := newTestFile(t, MiB)
		if err := f.WriteAt(make([]byte, 512), 0, true); err != nil {
			t.Fatal(err)
		}
		orig := pwritev2
		pwritev2 = func(int, []byte, int64) (int, error) { return 0, unix.EINVAL }
		t.Cleanup(func() { pwritev2 = orig })
		err := f.WriteAt(make([]byte, 512), 0, true)
		if !errors.Is(err, syscall.EINVAL) {
			t.Fatalf("err = %v, want EINVAL", err)
		}
		if f.dsync.Load() != dsyncPwritev2 {
			t.Errorf("dsync changed after success")
		}
	})
}

func TestRequestErrors(t *testing.T) {
	const size = MiB
	f := newTestFile(t, size)
	roPath := filepath.Join(t.TempDir(), "ro")
	if err := os.WriteFile(roPath, make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	ro, err := OpenFile(roPath, FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("open read-only: %v", err)
	}
	t.Cleanup(func() { ro.Close() })
	buf := make([]byte, 4*KiB)
	nop := func(block.Extent) bool { return true }

	type call struct {
		name string
		do   func() error
		want error
	}
	var tests []call
	for _, r := range []struct {
		name   string
		off, n int64
	}{
		{"negative offset", -512, 512},
		{"past end", size, 512},
		{"straddles end", size - 512, 1024},
		{"far past end", 1 << 62, 512},
		{"huge length", 512, 1<<63 - 1},
	} {
		off, n := r.off, r.n
		tests = append(tests,
			call{"WriteZeroes " + r.name, func() error { return f.WriteZeroes(off, n, block.ZeroFlags{}) }, block.ErrOutOfRange},
			call{"Trim " + r.name, func() error { return f.Trim(off, n) }, block.ErrOutOfRange},
			call{"Cache " + r.name, func() error { return f.Cache(off, n) }, block.ErrOutOfRange},
		)
		if n <= int64(len(buf)) {
			tests = append(tests,
				call{"ReadAt " + r.name, func() error { return f.ReadAt(buf[:n], off) }, block.ErrOutOfRange},
				call{"WriteAt " + r.name, func() error { return f.WriteAt(buf[:n], off, false) }, block.ErrOutOfRange},
			)
		}
	}
	tests = append(tests,
		call{"Extents negative offset", func() error { return f.Extents(-1, 10, nop) }, block.ErrOutOfRange},
		call{"Extents at end", func() error { return f.Extents(size, 10, nop) }, block.ErrOutOfRange},
		call{"read-only WriteAt", func() error { return ro.WriteAt(buf, 0, false) }, block.ErrReadOnly},
		call{"read-only FUA WriteAt", func() error { return ro.WriteAt(buf, 0, true) }, block.ErrReadOnly},
		call{"read-only Trim", func() error { return ro.Trim(0, 4096) }, block.ErrReadOnly},
		call{"read-only WriteZeroes", func() error { return ro.WriteZeroes(0, 4096, block.ZeroFlags{MayTrim: true}) }, block.ErrReadOnly},
		call{"read-only ReadAt", func() error { return ro.ReadAt(buf, 0) }, nil},
		call{"read-only Flush", ro.Flush, nil},
		call{"read-only Extents", func() error { return ro.Extents(0, size, nop) }, nil},
		call{"Extents clipped at end", func() error { return f.Extents(size-512, 1<<40, nop) }, nil},
	)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want one wrapping %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), f.Path()) && !strings.Contains(err.Error(), ro.Path()) {
				t.Errorf("error %q does not name the path", err)
			}
		})
	}
}

func TestIOErrorsAreWrapped(t *testing.T) {
	f := newTestFile(t, MiB)

	// The file shrinks under the store: a read past its new end is short.
	if err := os.Truncate(f.Path(), 64*KiB); err != nil {
		t.Fatal(err)
	}
	err := f.ReadAt(make([]byte, 8*KiB), 60*KiB)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short read: err = %v, want io.ErrUnexpectedEOF", err)
	}
	if want := fmt.Sprintf("read %s at %d: ", f.Path(), 60*KiB); !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q does not start with %q", err, want)
	}

	// A system call error keeps its errno: close the descriptor behind the
	// store's back so pread fails with EBADF.
	if err := f.file.Close(); err != nil {
		t.Fatal(err)
	}
	err = f.ReadAt(make([]byte, 512), 4096)
	if !errors.Is(err, syscall.EBADF) {
		t.Fatalf("err = %v, want EBADF", err)
	}
	if want := fmt.Sprintf("read %s at 4096: ", f.Path()); !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q does not start with %q", err, want)
	}
	if err := f.WriteAt(make([]byte, 512), 0, true); !errors.Is(err, syscall.EBADF) {
		t.Errorf("FUA write: err = %v, want EBADF", err)
	}
	if err := f.Flush(); !errors.Is(err, syscall.EBADF) {
		t.Errorf("Flush: err = %v, want EBADF", err)
	}
}

func TestClose(t *testing.T) {
	f := newTestFile(t, MiB)
	if err := f.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Something else gets the next descriptor number; the store must not
	// touch it.
	other, err := os.CreateTemp(t.TempDir(), "other")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := f.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Close: err = %v, want os.ErrClosed", err)
	}
	if _, err := other.Write([]byte("x")); err != nil {
		t.Errorf("descriptor reused after the store's Close was closed again: %v", err)
	}
	for name, do := range map[string]func() error{
		"ReadAt":  func() error { return f.ReadAt(make([]byte, 1), 0) },
		"WriteAt": func() error { return f.WriteAt(make([]byte, 1), 0, false) },
		"Flush":   f.Flush,
		"Trim":    func() error { return f.Trim(0, 1) },
		"Extents": func() error { return f.Extents(0, 1, func(block.Extent) bool { return true }) },
	} {
		if err := do(); !errors.Is(err, os.ErrClosed) {
			t.Errorf("%s after Close: err = %v, want os.ErrClosed", name, err)
		}
	}
}

// requirePunchHole skips the rest of the test unless the filesystem under
// the store punches holes. It probes a scratch file beside the store.
func requirePunchHole(t *testing.T, f *File) {
	t.Helper()
	probe, err := os.CreateTemp(filepath.Dir(f.Path()), "punch-probe")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(probe.Name())
	defer probe.Close()
	if _, err := probe.Write(make([]byte, 8192)); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(int(probe.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 4096); err != nil {
		t.Skipf("filesystem under %s cannot punch holes (%v); hole assertions skipped", filepath.Dir(f.Path()), err)
	}
}

func TestTrim(t *testing.T) {
	f := newTestFile(t, 4*MiB)
	if err := f.WriteAt(pattern(MiB, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := f.Trim(64*KiB, 128*KiB); err != nil {
		t.Fatalf("Trim: %v", err)
	}
	if got := readAll(t, f, 64*KiB, 128*KiB); !isZero(got) {
		t.Errorf("trimmed range does not read zero")
	}
	if got, want := readAll(t, f, 0, 64*KiB), pattern(MiB, 1)[:64*KiB]; !bytes.Equal(got, want) {
		t.Errorf("data before the trimmed range changed")
	}
	if got, want := readAll(t, f, 192*KiB, MiB-192*KiB), pattern(MiB, 1)[192*KiB:]; !bytes.Equal(got, want) {
		t.Errorf("data after the trimmed range changed")
	}
	// An unaligned trim zeroes exactly its bytes.
	if err := f.Trim(300*KiB+1, 10); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, f, 300*KiB, 12)
	want := pattern(MiB, 1)[300*KiB : 300*KiB+12]
	clear(want[1:11])
	if !bytes.Equal(got, want) {
		t.Errorf("unaligned trim: got %v, want %v", got, want)
	}

	requirePunchHole(t, f)
	wantExt := []block.Extent{
		{Offset: 0, Length: 64 * KiB},
		{Offset: 64 * KiB, Length: 128 * KiB, Hole: true, Zero: true},
		{Offset: 192 * KiB, Length: MiB - 192*KiB},
		{Offset: MiB, Length: 3 * MiB, Hole: true, Zero: true},
	}
	if got := collectExtents(t, f, 0, 4*MiB); !slices.Equal(got, wantExt) {
		t.Errorf("extents after trim:\n got %s\nwant %s", fmtExtents(got), fmtExtents(wantExt))
	}
}

func TestTrimUnsupportedIsNoop(t *testing.T) {
	orig := fallocate
	fallocate = func(int, uint32, int64, int64) error { return unix.EOPNOTSUPP }
	t.Cleanup(func() { fallocate = orig })

	f := newTestFile(t, MiB)
	want := pattern(64*KiB, 2)
	if err := f.WriteAt(want, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := f.Trim(0, 64*KiB); err != nil {
		t.Fatalf("Trim without filesystem support: %v, want nil (advisory)", err)
	}
	if got := readAll(t, f, 0, 64*KiB); !bytes.Equal(got, want) {
		t.Errorf("unsupported trim changed data")
	}
}

func TestWriteZeroes(t *testing.T) {
	const size = 4 * MiB
	tests := []struct {
		name  string
		flags block.ZeroFlags
		// The extent expected over the zeroed range [256K, 768K).
		want block.Extent
	}{
		{"keep allocated", block.ZeroFlags{}, block.Extent{Offset: 256 * KiB, Length: 512 * KiB, Zero: true}},
		{"keep allocated fast", block.ZeroFlags{Fast: true}, block.Extent{Offset: 256 * KiB, Length: 512 * KiB, Zero: true}},
		{"may trim", block.ZeroFlags{MayTrim: true}, block.Extent{Offset: 256 * KiB, Length: 512 * KiB, Hole: true, Zero: true}},
		{"may trim fast", block.ZeroFlags{MayTrim: true, Fast: true}, block.Extent{Offset: 256 * KiB, Length: 512 * KiB, Hole: true, Zero: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newTestFile(t, size)
			data := pattern(MiB, 4)
			if err := f.WriteAt(data, 0, false); err != nil {
				t.Fatal(err)
			}
			if err := f.Flush(); err != nil {
				t.Fatal(err)
			}
			before := allocatedBlocks(t, f.Path())
			if err := f.WriteZeroes(256*KiB, 512*KiB, tt.flags); err != nil {
				t.Fatalf("WriteZeroes: %v", err)
			}
			after := allocatedBlocks(t, f.Path())
			if !tt.flags.MayTrim && after < before {
				t.Errorf("WriteZeroes without MayTrim freed blocks: st_blocks %d -> %d", before, after)
			}

			// Extents before any read: reading the range brings zero pages
			// into the page cache, and lseek(SEEK_DATA) then calls the
			// unwritten extent data (see below).
			got := collectExtents(t, f, 0, size)
			wantExt := []block.Extent{
				{Offset: 0, Length: 256 * KiB},
				tt.want,
				{Offset: 768 * KiB, Length: 256 * KiB},
				{Offset: MiB, Length: 3 * MiB, Hole: true, Zero: true},
			}
			if !slices.Equal(got, wantExt) {
				if tt.flags.MayTrim {
					requirePunchHole(t, f)
				}
				t.Errorf("extents after WriteZeroes:\n got %s\nwant %s", fmtExtents(got), fmtExtents(wantExt))
			}

			if got := readAll(t, f, 256*KiB, 512*KiB); !isZero(got) {
				t.Fatalf("zeroed range does not read zero")
			}
			if got := readAll(t, f, 0, MiB); !bytes.Equal(got[:256*KiB], data[:256*KiB]) || !bytes.Equal(got[768*KiB:], data[768*KiB:]) {
				t.Fatalf("data outside the zeroed range changed")
			}
			// Whatever the page cache holds now, a range zeroed without
			// MayTrim is never reported as a hole.
			for _, e := range collectExtents(t, f, 256*KiB, 512*KiB) {
				if e.Hole != tt.want.Hole {
					t.Errorf("after reading the range back: extent %s", fmtExtents([]block.Extent{e}))
				}
			}
		})
	}
}

func TestWriteZeroesUnaligned(t *testing.T) {
	for _, flags := range []block.ZeroFlags{{}, {MayTrim: true}} {
		f := newTestFile(t, MiB)
		data := pattern(MiB, 5)
		if err := f.WriteAt(data, 0, false); err != nil {
			t.Fatal(err)
		}
		const off, n = 4096 - 100, 3*4096 + 333
		if err := f.WriteZeroes(off, n, flags); err != nil {
			t.Fatalf("WriteZeroes %+v: %v", flags, err)
		}
		want := slices.Clone(data)
		clear(want[off : off+n])
		if got := readAll(t, f, 0, MiB); !bytes.Equal(got, want) {
			t.Errorf("WriteZeroes %+v: content differs from expected", flags)
		}
	}
}

// Without fallocate support the store writes zeroes, or says ErrNotFast.
func TestWriteZeroesWithoutFallocate(t *testing.T) {
	orig := fallocate
	fallocate = func(int, uint32, int64, int64) error { return unix.EOPNOTSUPP }
	t.Cleanup(func() { fallocate = orig })

	tests := []struct {
		flags   block.ZeroFlags
		wantErr error
	}{
		{block.ZeroFlags{}, nil},
		{block.ZeroFlags{MayTrim: true}, nil},
		{block.ZeroFlags{Fast: true}, block.ErrNotFast},
		{block.ZeroFlags{Fast: true, MayTrim: true}, block.ErrNotFast},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%+v", tt.flags), func(t *testing.T) {
			f := newTestFile(t, 4*MiB)
			data := pattern(3*MiB, 6)
			if err := f.WriteAt(data, 0, false); err != nil {
				t.Fatal(err)
			}
			// 2.5 MiB: more than one chunk of the zero buffer.
			err := f.WriteZeroes(100, 5*MiB/2, tt.flags)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			want := slices.Clone(data)
			if tt.wantErr == nil {
				clear(want[100 : 100+5*MiB/2])
			}
			if got := readAll(t, f, 0, 3*MiB); !bytes.Equal(got, want) {
				t.Errorf("content differs from expected")
			}
			if tt.wantErr == nil {
				// Written zeroes are data to lseek.
				got := collectExtents(t, f, 0, 3*MiB)
				if want := []block.Extent{{Offset: 0, Length: 3 * MiB}}; !slices.Equal(got, want) {
					t.Errorf("extents: got %s, want %s", fmtExtents(got), fmtExtents(want))
				}
			}
		})
	}
}

func TestExtents(t *testing.T) {
	const size = 4 * MiB
	f := newTestFile(t, size)
	if err := f.WriteAt(pattern(64*KiB, 7), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteAt(pattern(4*KiB, 8), MiB, false); err != nil {
		t.Fatal(err)
	}
	data := func(off, n int64) block.Extent { return block.Extent{Offset: off, Length: n} }
	hole := func(off, n int64) block.Extent { return block.Extent{Offset: off, Length: n, Hole: true, Zero: true} }
	tests := []struct {
		name        string
		off, length int64
		limit       int // fn returns false after this many extents (0: never)
		want        []block.Extent
	}{
		{"whole device", 0, size, 0, []block.Extent{data(0, 64*KiB), hole(64*KiB, MiB-64*KiB), data(MiB, 4*KiB), hole(MiB+4*KiB, 3*MiB-4*KiB)}},
		{"length past the end is clipped", 0, 1 << 40, 0, []block.Extent{data(0, 64*KiB), hole(64*KiB, MiB-64*KiB), data(MiB, 4*KiB), hole(MiB+4*KiB, 3*MiB-4*KiB)}},
		{"inside data", 4*KiB + 1, 8 * KiB, 0, []block.Extent{data(4*KiB+1, 8*KiB)}},
		{"from inside a hole", 100 * KiB, MiB, 0, []block.Extent{hole(100*KiB, MiB-100*KiB), data(MiB, 4*KiB), hole(MiB+4*KiB, 100*KiB-4*KiB)}},
		{"data then hole", 60 * KiB, 8 * KiB, 0, []block.Extent{data(60*KiB, 4*KiB), hole(64*KiB, 4*KiB)}},
		{"tail hole", 2 * MiB, 2 * MiB, 0, []block.Extent{hole(2*MiB, 2*MiB)}},
		{"last byte", size - 1, 1, 0, []block.Extent{hole(size-1, 1)}},
		{"stop after one", 0, size, 1, []block.Extent{data(0, 64*KiB)}},
		{"stop after three", 0, size, 3, []block.Extent{data(0, 64*KiB), hole(64*KiB, MiB-64*KiB), data(MiB, 4*KiB)}},
		{"zero length", 0, 0, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []block.Extent
			err := f.Extents(tt.off, tt.length, func(e block.Extent) bool {
				got = append(got, e)
				return tt.limit == 0 || len(got) < tt.limit
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("\n got %s\nwant %s", fmtExtents(got), fmtExtents(tt.want))
			}
		})
	}

	// After a Flush (data on disk rather than delayed allocation) the
	// answer is the same.
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, want := collectExtents(t, f, 0, size), tests[0].want; !slices.Equal(got, want) {
		t.Errorf("after Flush:\n got %s\nwant %s", fmtExtents(got), fmtExtents(want))
	}
}

func TestNoAllocations(t *testing.T) {
	f := newTestFile(t, 4*MiB)
	buf := make([]byte, 64*KiB)
	if err := f.WriteAt(buf, 0, true); err != nil { // settle the FUA probe
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		fn   func()
	}{
		{"ReadAt", func() { _ = f.ReadAt(buf, MiB) }},
		{"WriteAt", func() { _ = f.WriteAt(buf, MiB, false) }},
		{"WriteAt FUA", func() { _ = f.WriteAt(buf[:4*KiB], 2*MiB, true) }},
	} {
		if n := testing.AllocsPerRun(100, tt.fn); n != 0 {
			t.Errorf("%s: %v allocations per call, want 0", tt.name, n)
		}
	}
}

// Concurrent requests on disjoint ranges each see their own data. Run
// with -race to check the lock-free path.
func TestConcurrentIO(t *testing.T) {
	f := newTestFile(t, 4*MiB)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			base := int64(g) * 256 * KiB
			for i := range 50 {
				want := pattern(4*KiB, byte(g*50+i))
				off := base + rng.Int64N(60)*4*KiB
				if err := f.WriteAt(want, off, i%10 == 0); err != nil {
					errs <- err
					return
				}
				got := make([]byte, len(want))
				if err := f.ReadAt(got, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, want) {
					errs <- fmt.Errorf("goroutine %d: read back differs at %d", g, off)
					return
				}
				if i%7 == 0 {
					if err := f.Extents(base, 256*KiB, func(block.Extent) bool { return true }); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestCache(t *testing.T) {
	f := newTestFile(t, MiB)
	if err := f.Cache(0, MiB); err != nil {
		t.Fatalf("Cache: %v", err)
	}
	if err := f.Cache(MiB, 0); err != nil {
		t.Fatalf("Cache of nothing at the end: %v", err)
	}
}

// losetup attaches path to a free loop device and detaches it when the
// test ends.
func losetup(t *testing.T, path string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	bin, err := exec.LookPath("losetup")
	if err != nil {
		t.Skip("losetup not installed")
	}
	out, err := exec.Command(bin, "--find", "--show", path).CombinedOutput()
	if err != nil {
		t.Skipf("losetup --find --show %s: %v: %s", path, err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command(bin, "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

func TestBlockDevice(t *testing.T) {
	const size = 16 * MiB
	backing := filepath.Join(t.TempDir(), "backing")
	if err := os.WriteFile(backing, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(backing, size); err != nil {
		t.Fatal(err)
	}
	dev := losetup(t, backing)

	f, err := OpenFile(dev, FileOptions{})
	if err != nil {
		t.Fatalf("OpenFile(%s): %v", dev, err)
	}
	t.Cleanup(func() { f.Close() })
	if !f.IsBlockDevice() || f.Size() != size {
		t.Fatalf("IsBlockDevice=%v Size=%d, want true, %d", f.IsBlockDevice(), f.Size(), size)
	}
	t.Logf("%s: logical block size %d", dev, f.sector)

	// A writable store claims the device: a second writable open, like a
	// mount, is refused.
	if g, err := OpenFile(dev, FileOptions{}); err == nil {
		g.Close()
		t.Errorf("second writable OpenFile(%s) succeeded; want EBUSY", dev)
	} else if !errors.Is(err, syscall.EBUSY) {
		t.Errorf("second writable OpenFile: err = %v, want EBUSY", err)
	}
	// Nor can a reader open it beside the writer: the writer holds the lock.
	if ro, err := OpenFile(dev, FileOptions{ReadOnly: true}); err == nil {
		ro.Close()
		t.Errorf("read-only OpenFile beside the writer succeeded")
	}

	data := pattern(2*MiB, 10)
	if err := f.WriteAt(data, 0, false); err != nil {
		t.Fatalf("WriteAt: %v", err)
	}
	if err := f.WriteAt(data[:4*KiB], size-4*KiB, true); err != nil {
		t.Fatalf("FUA WriteAt: %v", err)
	}
	if err := f.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if got := readAll(t, f, 0, 2*MiB); !bytes.Equal(got, data) {
		t.Fatal("read back differs")
	}
	if got := readAll(t, f, size-4*KiB, 4*KiB); !bytes.Equal(got, data[:4*KiB]) {
		t.Fatal("read back of the last block differs")
	}
	if err := f.ReadAt(make([]byte, 512), size); !errors.Is(err, block.ErrOutOfRange) {
		t.Errorf("read at the end: err = %v, want ErrOutOfRange", err)
	}

	// BLKZEROOUT, with unaligned edges written by hand.
	want := slices.Clone(data)
	zero := func(off, n int64, flags block.ZeroFlags) {
		t.Helper()
		if err := f.WriteZeroes(off, n, flags); err != nil {
			t.Fatalf("WriteZeroes(%d, %d, %+v): %v", off, n, flags, err)
		}
		clear(want[off : off+n])
		if got := readAll(t, f, 0, 2*MiB); !bytes.Equal(got, want) {
			t.Fatalf("after WriteZeroes(%d, %d, %+v) content differs", off, n, flags)
		}
	}
	zero(64*KiB, 128*KiB, block.ZeroFlags{})
	zero(300*KiB+7, 10*KiB+3, block.ZeroFlags{})
	zero(400*KiB+1, 100, block.ZeroFlags{})
	zero(512*KiB, 64*KiB, block.ZeroFlags{MayTrim: true})

	if err := f.WriteZeroes(0, 64*KiB, block.ZeroFlags{Fast: true}); !errors.Is(err, block.ErrNotFast) {
		t.Errorf("WriteZeroes Fast on a block device: err = %v, want ErrNotFast", err)
	}
	// Fast with MayTrim zeroes by unmapping if the device can (a loop
	// device over a file can), or says ErrNotFast.
	err = f.WriteZeroes(MiB, 256*KiB, block.ZeroFlags{Fast: true, MayTrim: true})
	switch {
	case err == nil:
		t.Logf("%s zeroes by unmapping (WriteZeroes Fast|MayTrim succeeded)", dev)
		clear(want[MiB : MiB+256*KiB])
	case errors.Is(err, block.ErrNotFast):
		t.Logf("%s cannot zero by unmapping: %v", dev, err)
	default:
		t.Fatalf("WriteZeroes Fast|MayTrim: %v", err)
	}
	if got := readAll(t, f, 0, 2*MiB); !bytes.Equal(got, want) {
		t.Fatal("content differs after WriteZeroes Fast|MayTrim")
	}

	// Discard: advisory; on a loop device over a file it punches a hole.
	if err := f.Trim(1536*KiB, 256*KiB); err != nil {
		t.Fatalf("Trim: %v", err)
	}
	if err := f.Trim(3, 100); err != nil { // no whole sector inside: nothing to do
		t.Fatalf("Trim of a partial sector: %v", err)
	}
	if err := f.Cache(0, MiB); err != nil {
		t.Fatalf("Cache: %v", err)
	}
	if got := collectExtents(t, f, 4*KiB, size); !slices.Equal(got, []block.Extent{{Offset: 4 * KiB, Length: size - 4*KiB}}) {
		t.Errorf("block device extents: %s", fmtExtents(got))
	}
	if n := testing.AllocsPerRun(50, func() { _ = f.ReadAt(want[:4*KiB], 0) }); n != 0 {
		t.Errorf("ReadAt on a block device: %v allocations per call", n)
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}

	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFile(dev, FileOptions{ReadOnly: true, CreateSize: 8 * MiB}); err == nil || !strings.Contains(err.Error(), fmt.Sprint(size)) {
		t.Errorf("CreateSize mismatch on a block device: err = %v", err)
	}
	// Writes went to the device: the backing file has them.
	raw, err := os.ReadFile(backing)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw[:1280*KiB], want[:1280*KiB]) {
		t.Errorf("backing file differs from what was written through %s", dev)
	}
}

// A run of lseek holes holding more unwritten extents than one FIEMAP call
// returns, and the same file when FIEMAP is unavailable.
func TestExtentsManyUnwritten(t *testing.T) {
	const size = 4 * MiB
	f := newTestFile(t, size)
	requirePunchHole(t, f)
	// 50 allocated-but-zero extents of 8K, 8K apart, from 64K on; data at
	// the end of the file.
	var want []block.Extent
	want = append(want, block.Extent{Offset: 0, Length: 64 * KiB, Hole: true, Zero: true})
	off := int64(64 * KiB)
	for range 50 {
		if err := f.WriteZeroes(off, 8*KiB, block.ZeroFlags{}); err != nil {
			t.Fatal(err)
		}
		want = append(want,
			block.Extent{Offset: off, Length: 8 * KiB, Zero: true},
			block.Extent{Offset: off + 8*KiB, Length: 8 * KiB, Hole: true, Zero: true})
		off += 16 * KiB
	}
	if err := f.WriteAt(pattern(64*KiB, 11), size-64*KiB, false); err != nil {
		t.Fatal(err)
	}
	want[len(want)-1].Length = size - 64*KiB - want[len(want)-1].Offset
	want = append(want, block.Extent{Offset: size - 64*KiB, Length: 64 * KiB})

	if got := collectExtents(t, f, 0, size); !slices.Equal(got, want) {
		t.Errorf("\n got %s\nwant %s", fmtExtents(got), fmtExtents(want))
	}

	// Without FIEMAP the allocated zero extents merge into one hole.
	f.noFiemap.Store(true)
	wantNoFiemap := []block.Extent{
		{Offset: 0, Length: size - 64*KiB, Hole: true, Zero: true},
		{Offset: size - 64*KiB, Length: 64 * KiB},
	}
	if got := collectExtents(t, f, 0, size); !slices.Equal(got, wantNoFiemap) {
		t.Errorf("without FIEMAP:\n got %s\nwant %s", fmtExtents(got), fmtExtents(wantNoFiemap))
	}
}

func TestOpenFileLocksAgainstSecondWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vol.img")
	f, err := OpenFile(path, FileOptions{CreateSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFile(path, FileOptions{}); err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("second writable open: %v, want an in-use error", err)
	}
	if _, err := OpenFile(path, FileOptions{ReadOnly: true}); err == nil {
		t.Fatal("read-only open beside a writer succeeded")
	}
	f.Close()
	g, err := OpenFile(path, FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("open after the writer closed: %v", err)
	}
	defer g.Close()
	h, err := OpenFile(path, FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("second reader: %v", err)
	}
	h.Close()
}
