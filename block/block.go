// Package block defines the interface that every layer of blockrep's I/O
// stack implements: the local store (raid), the replicated volume (replica)
// and anything stacked between them. The NBD server serves a Device; it does
// not know what is underneath.
package block

import "errors"

// Device is a fixed-size array of bytes with the operations a block device
// offers. Offsets and lengths are in bytes; callers keep every request within
// [0, Size()). Implementations must be safe for concurrent use: requests from
// several connections and several in-flight requests of one connection arrive
// at once.
type Device interface {
	// Size is the device size in bytes. It does not change while the device
	// is open.
	Size() int64
	// ReadAt fills p from offset off. A short read is an error.
	ReadAt(p []byte, off int64) error
	// WriteAt writes p at offset off. With fua set the data is durable
	// (survives a power cut) when WriteAt returns.
	WriteAt(p []byte, off int64, fua bool) error
	// Flush makes every write that completed before the call durable.
	Flush() error
	// Trim tells the device that the range is no longer needed. Its contents
	// afterwards are unspecified (zeroes on a sparse file).
	Trim(off, length int64) error
	// WriteZeroes makes the range read back as zeroes. With MayTrim unset the
	// blocks stay allocated. With Fast set the call fails with ErrNotFast
	// instead of falling back to writing zeroes block by block.
	WriteZeroes(off, length int64, flags ZeroFlags) error
	// Cache is a hint to pull the range into cache ahead of reads.
	Cache(off, length int64) error
	// Extents reports the allocation status of [off, off+length) in order,
	// calling fn for each extent until fn returns false. Extents may extend
	// past the requested range; the first starts at off.
	Extents(off, length int64, fn func(Extent) bool) error
	// Close releases the device. Callers flush first if they need durability.
	Close() error
}

// ZeroFlags qualify a WriteZeroes request.
type ZeroFlags struct {
	// MayTrim lets the device deallocate the range (punch a hole).
	MayTrim bool
	// Fast asks the device to fail with ErrNotFast rather than zero slowly.
	Fast bool
}

// Extent is a run of bytes with one allocation status.
type Extent struct {
	Offset int64
	Length int64
	// Hole is set when the range is not allocated in the backing storage.
	Hole bool
	// Zero is set when the range is known to read back as zeroes.
	Zero bool
}

// ErrNotFast is returned by WriteZeroes with Fast set when the device cannot
// zero the range faster than by writing zeroes.
var ErrNotFast = errors.New("block: device cannot zero this range quickly")

// ErrReadOnly is returned by writes to a device opened read-only.
var ErrReadOnly = errors.New("block: device is read-only")

// ErrOutOfRange is returned for a request that does not fit in the device.
var ErrOutOfRange = errors.New("block: request out of range")

// AsyncWriter is implemented by devices whose writes wait on something slow
// after the local work, such as a replicated volume waiting for its peers.
// WriteAtAsync does the local part in the calling goroutine and calls done
// exactly once, from whichever goroutine completes the write; p must stay
// unchanged until then. A server that calls it from the goroutine reading a
// connection issues local writes the way it would for a plain store, and
// needs no goroutine per request to wait for the peers.
//
// WriteAtAsync may hold what it must send back until Unplug, so that a
// burst of writes travels together: a caller that issues writes in a loop
// calls Unplug before it waits for anything (such as the next request).
type AsyncWriter interface {
	WriteAtAsync(p []byte, off int64, fua bool, done func(error))
	Unplug()
}
