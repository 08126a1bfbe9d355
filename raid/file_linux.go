package raid

import (
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Raw system calls used by File. They are variables only where a test needs
// to simulate a kernel or filesystem without the feature; none of them is
// swapped outside tests.
var (
	// fallocate is unix.Fallocate; tests replace it to simulate a
	// filesystem without PUNCH_HOLE / ZERO_RANGE.
	fallocate = unix.Fallocate
	// pwritev2 is pwritev2DSync; tests replace it to simulate a kernel
	// without RWF_DSYNC.
	pwritev2 = pwritev2DSync
)

// pwritev2DSync is pwritev2(fd, {p}, 1, off, RWF_DSYNC): a write that is
// durable when it returns, like a write on an O_DSYNC descriptor. It builds
// its single iovec on the stack, where unix.Pwritev2 wants a [][]byte and
// builds an iovec slice, so a FUA write allocates nothing.
func pwritev2DSync(fd int, p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	iov := unix.Iovec{Base: &p[0]}
	iov.SetLen(len(p))
	lo, hi := offsetLoHi(off)
	n, _, errno := unix.Syscall6(unix.SYS_PWRITEV2, uintptr(fd), uintptr(unsafe.Pointer(&iov)), 1, lo, hi, unix.RWF_DSYNC)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// offsetLoHi splits a file offset into the (pos_l, pos_h) pair that the
// preadv2/pwritev2 system calls take. On 64-bit kernels pos_h is zero.
func offsetLoHi(off int64) (lo, hi uintptr) {
	const longBits = unsafe.Sizeof(uintptr(0)) * 8
	return uintptr(off), uintptr(uint64(off) >> (longBits - 1) >> 1)
}

// ioctlRange issues a block-device ioctl that takes a {start, length} pair
// of uint64 in bytes: BLKDISCARD, BLKZEROOUT, BLKSECDISCARD.
func ioctlRange(fd int, req uint, start, length int64) error {
	r := [2]uint64{uint64(start), uint64(length)}
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(&r)))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return errno
		}
		return nil
	}
}

// FIEMAP, from linux/fiemap.h and linux/fs.h; golang.org/x/sys/unix does not
// define them.
const (
	fsIocFiemap        = 0xC020660B // _IOWR('f', 11, struct fiemap)
	fiemapExtentLast   = 0x00000001 // FIEMAP_EXTENT_LAST
	fiemapBatchExtents = 32
)

// fiemapExtent is struct fiemap_extent (56 bytes).
type fiemapExtent struct {
	Logical  uint64
	Physical uint64
	Length   uint64
	_        [2]uint64
	Flags    uint32
	_        [3]uint32
}

// fiemapRequest is struct fiemap followed by room for fiemapBatchExtents
// extents.
type fiemapRequest struct {
	Start         uint64
	Length        uint64
	Flags         uint32
	MappedExtents uint32
	ExtentCount   uint32
	_             uint32
	Extents       [fiemapBatchExtents]fiemapExtent
}

// Compile-time checks of the kernel ABI sizes.
var (
	_ [56 - unsafe.Sizeof(fiemapExtent{})]struct{}
	_ [unsafe.Sizeof(fiemapExtent{}) - 56]struct{}
	_ [32 + 56*fiemapBatchExtents - unsafe.Sizeof(fiemapRequest{})]struct{}
	_ [unsafe.Sizeof(fiemapRequest{}) - 32 - 56*fiemapBatchExtents]struct{}
)

// fiemap fills req with the extents mapped in [req.Start, req.Start+req.Length).
func fiemap(fd int, req *fiemapRequest) error {
	req.ExtentCount = fiemapBatchExtents
	req.MappedExtents = 0
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocFiemap, uintptr(unsafe.Pointer(req)))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return errno
		}
		return nil
	}
}

// isUnsupported reports whether err says the kernel or filesystem lacks a
// feature (as opposed to a real failure).
func isUnsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.ENOTTY)
}

// retryEINTR calls fn until it returns something other than EINTR.
func retryEINTR(fn func() error) error {
	for {
		err := fn()
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
