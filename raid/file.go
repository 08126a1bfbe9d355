//go:build linux

package raid

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/blockrep/blockrep/block"
)

// FileOptions qualify OpenFile.
type FileOptions struct {
	// ReadOnly opens the store read-only: WriteAt, Trim and WriteZeroes
	// fail with block.ErrReadOnly.
	ReadOnly bool
	// CreateSize, when non-zero and the path does not exist, creates a
	// sparse regular file of this size. When the path exists with a
	// different size (file or block device), OpenFile fails with an error
	// naming both sizes: it never truncates or grows existing data.
	CreateSize int64
}

// File is a block.Device backed by one regular file or one block device.
//
// I/O goes straight to the descriptor with pread/pwrite: ReadAt and WriteAt
// take no lock and allocate nothing. A writable block device is opened with
// O_EXCL, so the kernel refuses to mount it (or hand it to md, dm or another
// exclusive opener) while the store is open.
//
// Close must not race with other calls: the caller stops I/O first.
type File struct {
	path     string
	file     *os.File // owns fd; closed only by Close
	fd       int
	size     int64
	readOnly bool
	blockDev bool
	// sector is the logical block size of a block device (the alignment
	// that BLKDISCARD, BLKZEROOUT and fallocate demand); 1 for a file.
	sector int64

	closed atomic.Bool
	// dsync records whether pwritev2(RWF_DSYNC) works here: dsyncUnknown
	// until the first FUA write probes it.
	dsync atomic.Int32
	// noFiemap is set once FIEMAP failed as unsupported.
	noFiemap atomic.Bool
	// gone is set, once, by CheckLink when the path no longer names the
	// open file: every request fails with it from then on.
	gone atomic.Pointer[goneError]
	// dev and ino identify the open file, for CheckLink.
	dev, ino uint64
}

const (
	dsyncUnknown int32 = iota
	dsyncPwritev2
	dsyncFallback
)

var _ block.Device = (*File)(nil)

// zeroBuf is the source of zeroes written when a range cannot be zeroed by
// fallocate or ioctl. It is never written to.
var zeroBuf [1 << 20]byte

// OpenFile opens the regular file or block device at path as a store.
func OpenFile(path string, opts FileOptions) (*File, error) {
	if opts.CreateSize < 0 {
		return nil, fmt.Errorf("open %s: negative CreateSize %d", path, opts.CreateSize)
	}
	if opts.CreateSize > 0 {
		if err := createSparse(path, opts.CreateSize); err != nil {
			return nil, err
		}
	}

	flags := os.O_RDWR
	if opts.ReadOnly {
		flags = os.O_RDONLY
	}
	// Claim a writable block device exclusively (O_EXCL without O_CREAT on
	// a block device): a mounted device, or one held by md, dm or another
	// store, fails with EBUSY instead of being written under its user.
	if st, err := os.Stat(path); err == nil && st.Mode()&fs.ModeDevice != 0 && st.Mode()&fs.ModeCharDevice == 0 && !opts.ReadOnly {
		flags |= unix.O_EXCL
	}
	osf, err := os.OpenFile(path, flags, 0)
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("open %s: device in use (mounted or claimed by another exclusive opener): %w", path, err)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	// Two daemons writing one image corrupt it. An advisory lock (exclusive
	// for writers, shared for readers) makes the second opener fail; it
	// goes away with the descriptor, so a crash leaves nothing stale.
	how := unix.LOCK_EX
	if opts.ReadOnly {
		how = unix.LOCK_SH
	}
	if err := unix.Flock(int(osf.Fd()), how|unix.LOCK_NB); err != nil {
		osf.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("open %s: in use by another process (it holds a lock on the file): %w", path, err)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	f, err := newFile(path, osf, opts)
	if err != nil {
		osf.Close()
		return nil, err
	}
	return f, nil
}

// CreateFile creates path, which must not exist, as a sparse regular file
// of size bytes and makes its directory entry durable.
func CreateFile(path string, size int64) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("create %s: %w", path, fs.ErrExist)
	}
	return createSparse(path, size)
}

// GrowFile extends the regular file at path to size bytes (the new bytes
// are a hole) and makes it durable; a file of that size or larger is left
// alone.
func GrowFile(path string, size int64) error {
	osf, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("grow %s: %w", path, err)
	}
	defer osf.Close()
	st, err := osf.Stat()
	if err != nil {
		return fmt.Errorf("grow %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("grow %s: not a regular file", path)
	}
	if st.Size() >= size {
		return nil
	}
	if err := osf.Truncate(size); err != nil {
		return fmt.Errorf("grow %s to %d bytes: %w", path, size, err)
	}
	if err := osf.Sync(); err != nil {
		return fmt.Errorf("grow %s: %w", path, err)
	}
	return nil
}

// createSparse creates path as a sparse file of size bytes if it does not
// exist, and makes its directory entry durable. An existing path is left
// alone; newFile checks its size.
func createSparse(path string, size int64) error {
	osf, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	err = osf.Truncate(size)
	if err == nil {
		err = osf.Sync()
	}
	if cerr := osf.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("create %s (size %d): %w", path, size, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func newFile(path string, osf *os.File, opts FileOptions) (*File, error) {
	fd := -1
	rc, err := osf.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := rc.Control(func(u uintptr) { fd = int(u) }); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	f := &File{path: path, file: osf, fd: fd, readOnly: opts.ReadOnly, sector: 1}

	var st unix.Stat_t
	if err := retryEINTR(func() error { return unix.Fstat(fd, &st) }); err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	f.dev, f.ino = st.Dev, st.Ino
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		f.size = st.Size
		if f.size <= 0 {
			return nil, fmt.Errorf("%s is empty (size %d); a store needs a size", path, f.size)
		}
	case unix.S_IFBLK:
		f.blockDev = true
		size, err := unix.IoctlGetUint64(fd, unix.BLKGETSIZE64)
		if err != nil {
			return nil, fmt.Errorf("%s: BLKGETSIZE64: %w", path, err)
		}
		if size == 0 || size > 1<<62 {
			return nil, fmt.Errorf("block device %s has unusable size %d", path, size)
		}
		f.size = int64(size)
		sector, err := unix.IoctlGetInt(fd, unix.BLKSSZGET)
		if err != nil {
			return nil, fmt.Errorf("%s: BLKSSZGET: %w", path, err)
		}
		if sector <= 0 || sector&(sector-1) != 0 {
			return nil, fmt.Errorf("block device %s reports logical block size %d", path, sector)
		}
		f.sector = int64(sector)
	default:
		return nil, fmt.Errorf("%s is neither a regular file nor a block device (mode %#o)", path, st.Mode)
	}
	if opts.CreateSize > 0 && f.size != opts.CreateSize {
		return nil, fmt.Errorf("%s has size %d, configured size is %d; refusing to resize existing data", path, f.size, opts.CreateSize)
	}
	return f, nil
}

// Path is the path the store was opened with.
func (f *File) Path() string { return f.path }

// IsBlockDevice reports whether the store is a block device (as opposed to
// a regular file).
func (f *File) IsBlockDevice() bool { return f.blockDev }

// Size is the size of the file or device in bytes, fixed at open.
func (f *File) Size() int64 { return f.size }

// check validates a request; it allocates only when it fails.
func (f *File) check(op string, off, length int64, write bool) error {
	if f.closed.Load() {
		return fmt.Errorf("%s %s: %w", op, f.path, os.ErrClosed)
	}
	if g := f.gone.Load(); g != nil {
		return fmt.Errorf("%s %s: %w", op, f.path, g)
	}
	if write && f.readOnly {
		return fmt.Errorf("%s %s: %w", op, f.path, block.ErrReadOnly)
	}
	if off < 0 || length < 0 || off > f.size || length > f.size-off {
		return fmt.Errorf("%s %s at %d length %d (size %d): %w", op, f.path, off, length, f.size, block.ErrOutOfRange)
	}
	return nil
}

func (f *File) ioError(op string, off int64, err error) error {
	return fmt.Errorf("%s %s at %d: %w", op, f.path, off, err)
}

// ReadAt fills p from offset off.
func (f *File) ReadAt(p []byte, off int64) error {
	if err := f.check("read", off, int64(len(p)), false); err != nil {
		return err
	}
	for done := 0; done < len(p); {
		n, err := unix.Pread(f.fd, p[done:], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return f.ioError("read", off, err)
		}
		if n == 0 {
			return f.ioError("read", off, io.ErrUnexpectedEOF)
		}
		done += n
	}
	runtime.KeepAlive(f.file)
	return nil
}

// ReadvAt fills bufs, in order, from consecutive offsets starting at off,
// with preadv: one system call for what would be one pread per buffer (an
// array reads a member's chunks of one request this way).
func (f *File) ReadvAt(bufs [][]byte, off int64) error {
	var n int64
	for _, b := range bufs {
		n += int64(len(b))
	}
	if err := f.check("read", off, n, false); err != nil {
		return err
	}
	for len(bufs) > 0 {
		got, err := unix.Preadv(f.fd, bufs, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return f.ioError("read", off, err)
		}
		if got == 0 {
			return f.ioError("read", off, io.ErrUnexpectedEOF)
		}
		// A short read: skip what arrived and read the rest.
		off += int64(got)
		for got > 0 && len(bufs) > 0 {
			if got < len(bufs[0]) {
				bufs = append([][]byte{bufs[0][got:]}, bufs[1:]...)
				break
			}
			got -= len(bufs[0])
			bufs = bufs[1:]
		}
	}
	runtime.KeepAlive(f.file)
	return nil
}

// WriteAt writes p at offset off; with fua set the data is durable when it
// returns (pwritev2 with RWF_DSYNC, or pwrite and fdatasync where the
// kernel lacks it).
func (f *File) WriteAt(p []byte, off int64, fua bool) error {
	if err := f.check("write", off, int64(len(p)), true); err != nil {
		return err
	}
	if len(p) == 0 {
		if fua {
			return f.Flush()
		}
		return nil
	}
	var err error
	if fua && f.dsync.Load() != dsyncFallback {
		err = f.writeDSync(p, off)
	} else {
		err = f.pwriteFull(p, off)
		if err == nil && fua {
			err = f.fdatasync()
		}
	}
	runtime.KeepAlive(f.file)
	if err != nil {
		return f.ioError("write", off, err)
	}
	return nil
}

// pwriteFull writes all of p at off with pwrite.
func (f *File) pwriteFull(p []byte, off int64) error {
	for done := 0; done < len(p); {
		n, err := unix.Pwrite(f.fd, p[done:], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		done += n
	}
	return nil
}

// writeDSync writes all of p at off with pwritev2(RWF_DSYNC). The first
// call on a File probes the flag; if the kernel refuses it, the File falls
// back to pwrite + fdatasync for good.
func (f *File) writeDSync(p []byte, off int64) error {
	for done := 0; done < len(p); {
		n, err := pwritev2(f.fd, p[done:], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if f.dsync.Load() == dsyncUnknown && (err == unix.ENOSYS || err == unix.EOPNOTSUPP || err == unix.EINVAL) {
				f.dsync.CompareAndSwap(dsyncUnknown, dsyncFallback)
				if err := f.pwriteFull(p[done:], off+int64(done)); err != nil {
					return err
				}
				return f.fdatasync()
			}
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		f.dsync.CompareAndSwap(dsyncUnknown, dsyncPwritev2)
		done += n
	}
	return nil
}

func (f *File) fdatasync() error {
	for {
		err := unix.Fdatasync(f.fd)
		if err != unix.EINTR {
			return err
		}
	}
}

// Flush makes every completed write durable (fdatasync).
func (f *File) Flush() error {
	if f.closed.Load() {
		return fmt.Errorf("flush %s: %w", f.path, os.ErrClosed)
	}
	if g := f.gone.Load(); g != nil {
		return fmt.Errorf("flush %s: %w", f.path, g)
	}
	err := f.fdatasync()
	runtime.KeepAlive(f.file)
	if err != nil {
		return fmt.Errorf("flush %s: %w", f.path, err)
	}
	return nil
}

// alignIn shrinks [off, off+length) to whole logical blocks of the device.
// It returns length 0 when no whole block is inside.
func (f *File) alignIn(off, length int64) (int64, int64) {
	start := (off + f.sector - 1) &^ (f.sector - 1)
	end := (off + length) &^ (f.sector - 1)
	if end <= start {
		return start, 0
	}
	return start, end - start
}

// Trim deallocates the range: a hole punched in a file, a discard on a
// block device. Where the filesystem or device cannot, Trim does nothing
// (a trim is advisory). On a block device only the whole logical blocks
// inside the range are discarded.
func (f *File) Trim(off, length int64) error {
	if err := f.check("trim", off, length, true); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	var err error
	if f.blockDev {
		start, n := f.alignIn(off, length)
		if n > 0 {
			err = ioctlRange(f.fd, unix.BLKDISCARD, start, n)
		}
	} else {
		err = f.fallocate(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	}
	runtime.KeepAlive(f.file)
	if err != nil && !isUnsupported(err) {
		return f.ioError("trim", off, err)
	}
	return nil
}

func (f *File) fallocate(mode uint32, off, length int64) error {
	return retryEINTR(func() error { return fallocate(f.fd, mode, off, length) })
}

// WriteZeroes makes the range read back as zeroes.
//
// On a file: with MayTrim, a punched hole; otherwise (or if punching is not
// supported) FALLOC_FL_ZERO_RANGE, which keeps the blocks allocated; where
// the filesystem has neither, zeroes are written unless Fast is set.
//
// On a block device: with Fast and MayTrim, fallocate(PUNCH_HOLE), which the
// kernel carries out only if the device can zero by unmapping (else
// ErrNotFast); Fast alone is always ErrNotFast, because BLKZEROOUT may fall
// back to writing zeroes. Without Fast: BLKZEROOUT (after trying the punch
// when MayTrim is set). Partial logical blocks at the edges are written.
func (f *File) WriteZeroes(off, length int64, flags block.ZeroFlags) error {
	if err := f.check("write zeroes", off, length, true); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	var err error
	if f.blockDev {
		err = f.zeroBlockDevice(off, length, flags)
	} else {
		err = f.zeroFile(off, length, flags)
	}
	runtime.KeepAlive(f.file)
	if err != nil {
		if errors.Is(err, block.ErrNotFast) {
			return err
		}
		return f.ioError("write zeroes", off, err)
	}
	return nil
}

func (f *File) zeroFile(off, length int64, flags block.ZeroFlags) error {
	if flags.MayTrim {
		err := f.fallocate(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
		if err == nil || !isUnsupported(err) {
			return err
		}
	}
	err := f.fallocate(unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	if err == nil || !isUnsupported(err) {
		return err
	}
	if flags.Fast {
		return block.ErrNotFast
	}
	return f.writeZeroBytes(off, length)
}

func (f *File) zeroBlockDevice(off, length int64, flags block.ZeroFlags) error {
	if flags.Fast && !flags.MayTrim {
		return block.ErrNotFast
	}
	start, n := f.alignIn(off, length)
	if n == 0 {
		// Less than one whole logical block: one small write.
		return f.writeZeroBytes(off, length)
	}
	zeroed := false
	if flags.MayTrim {
		// The kernel zeroes by unmapping here, never by writing
		// (BLKDEV_ZERO_NOFALLBACK), and says EOPNOTSUPP if it cannot.
		err := f.fallocate(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, start, n)
		switch {
		case err == nil:
			zeroed = true
		case !isUnsupported(err):
			return err
		case flags.Fast:
			return block.ErrNotFast
		}
	}
	if !zeroed {
		if err := ioctlRange(f.fd, unix.BLKZEROOUT, start, n); err != nil {
			return err
		}
	}
	// The partial logical blocks at either edge.
	if start > off {
		if err := f.writeZeroBytes(off, start-off); err != nil {
			return err
		}
	}
	if end := off + length; end > start+n {
		if err := f.writeZeroBytes(start+n, end-start-n); err != nil {
			return err
		}
	}
	return nil
}

// writeZeroBytes writes zeroes over the range from zeroBuf.
func (f *File) writeZeroBytes(off, length int64) error {
	for length > 0 {
		n := min(length, int64(len(zeroBuf)))
		if err := f.pwriteFull(zeroBuf[:n], off); err != nil {
			return err
		}
		off += n
		length -= n
	}
	return nil
}

// Cache asks the kernel to read the range ahead (FADV_WILLNEED).
func (f *File) Cache(off, length int64) error {
	if err := f.check("cache", off, length, false); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	err := unix.Fadvise(f.fd, off, length, unix.FADV_WILLNEED)
	runtime.KeepAlive(f.file)
	if err != nil && !isUnsupported(err) {
		return f.ioError("cache", off, err)
	}
	return nil
}

// Extents reports the allocation of [off, off+length), clipped to the
// device size, as contiguous extents starting at off.
//
// On a file, lseek(SEEK_DATA/SEEK_HOLE) separates data from ranges that
// read as zeroes; FIEMAP then tells, inside the latter, blocks that are
// allocated but unwritten (after FALLOC_FL_ZERO_RANGE: Hole false, Zero
// true) from real holes (Hole and Zero true). Zero is only ever set where
// lseek reports a hole, so it is as trustworthy as SEEK_HOLE itself; FIEMAP
// only refines Hole. Without SEEK_DATA support, or on a block device, the
// range is one data extent.
func (f *File) Extents(off, length int64, fn func(block.Extent) bool) error {
	if f.closed.Load() {
		return fmt.Errorf("extents %s: %w", f.path, os.ErrClosed)
	}
	if g := f.gone.Load(); g != nil {
		return fmt.Errorf("extents %s: %w", f.path, g)
	}
	if off < 0 || length < 0 || off > f.size || (off == f.size && length > 0) {
		return fmt.Errorf("extents %s at %d length %d (size %d): %w", f.path, off, length, f.size, block.ErrOutOfRange)
	}
	end := f.size
	if length < f.size-off {
		end = off + length
	}
	if off >= end {
		return nil
	}
	out := extentSink{fn: fn}
	defer runtime.KeepAlive(f.file)
	if f.blockDev {
		out.emit(block.Extent{Offset: off, Length: end - off})
		out.flush()
		return nil
	}
	for pos := off; pos < end && !out.stopped; {
		data, err := unix.Seek(f.fd, pos, unix.SEEK_DATA)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.ENXIO:
			data = end // no data at or after pos: a hole to the end of file
		case err == unix.EINVAL && pos == off:
			// No SEEK_DATA here: say everything is data.
			out.emit(block.Extent{Offset: pos, Length: end - pos})
			out.flush()
			return nil
		case err != nil:
			return f.ioError("extents", pos, err)
		}
		data = min(max(data, pos), end)
		if data > pos {
			f.holeExtents(pos, data, &out)
			pos = data
			continue
		}
		hole, err := unix.Seek(f.fd, pos, unix.SEEK_HOLE)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return f.ioError("extents", pos, err)
		}
		if hole <= pos || hole > end {
			// Past the request, or the file changed under us between the
			// two seeks: calling it data is never wrong.
			hole = end
		}
		out.emit(block.Extent{Offset: pos, Length: hole - pos})
		pos = hole
	}
	out.flush()
	return nil
}

// holeExtents emits [start, end), a range lseek calls a hole, splitting it
// by FIEMAP into allocated-unwritten (Hole false) and unallocated (Hole
// true) extents, all with Zero set.
func (f *File) holeExtents(start, end int64, out *extentSink) {
	if f.noFiemap.Load() {
		out.emit(block.Extent{Offset: start, Length: end - start, Hole: true, Zero: true})
		return
	}
	req := new(fiemapRequest)
	pos := start
	for pos < end && !out.stopped {
		req.Start, req.Length, req.Flags = uint64(pos), uint64(end-pos), 0
		if err := fiemap(f.fd, req); err != nil {
			if isUnsupported(err) || errors.Is(err, unix.EINVAL) {
				f.noFiemap.Store(true)
			}
			break
		}
		progressed, last := false, req.MappedExtents == 0
		for _, e := range req.Extents[:min(req.MappedExtents, fiemapBatchExtents)] {
			es := max(int64(e.Logical), pos)
			ee := min(int64(e.Logical+e.Length), end)
			if e.Flags&fiemapExtentLast != 0 {
				last = true
			}
			if ee <= es {
				continue
			}
			if es > pos {
				out.emit(block.Extent{Offset: pos, Length: es - pos, Hole: true, Zero: true})
			}
			out.emit(block.Extent{Offset: es, Length: ee - es, Zero: true})
			pos, progressed = ee, true
		}
		if last || !progressed || req.MappedExtents < fiemapBatchExtents {
			break
		}
	}
	if pos < end && !out.stopped {
		out.emit(block.Extent{Offset: pos, Length: end - pos, Hole: true, Zero: true})
	}
}

// extentSink merges adjacent extents of one kind before handing them to
// the caller's function, and remembers when that function says stop.
type extentSink struct {
	fn      func(block.Extent) bool
	pending block.Extent
	stopped bool
}

func (s *extentSink) emit(e block.Extent) {
	if s.stopped || e.Length <= 0 {
		return
	}
	p := &s.pending
	if p.Length > 0 && p.Hole == e.Hole && p.Zero == e.Zero && p.Offset+p.Length == e.Offset {
		p.Length += e.Length
		return
	}
	s.flush()
	if !s.stopped {
		s.pending = e
	}
}

func (s *extentSink) flush() {
	if s.stopped || s.pending.Length == 0 {
		return
	}
	e := s.pending
	s.pending = block.Extent{}
	if !s.fn(e) {
		s.stopped = true
	}
}

// Close closes the descriptor. A second Close returns an error wrapping
// os.ErrClosed and touches no descriptor.
func (f *File) Close() error {
	if !f.closed.CompareAndSwap(false, true) {
		return fmt.Errorf("close %s: %w", f.path, os.ErrClosed)
	}
	if err := f.file.Close(); err != nil {
		return fmt.Errorf("close %s: %w", f.path, err)
	}
	return nil
}
