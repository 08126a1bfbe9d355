package storeid

import (
	"errors"
	"fmt"

	"github.com/blockrep/blockrep/block"
)

// Device is the data part of a store: its first Size bytes, what the volume
// exports. The store's trailer, right after them, is out of reach of every
// request; WriteTrailer writes it. It is used alike for a file, a block
// device and an array.
type Device struct {
	store block.Device
	size  int64
	// protected: the store has room for a trailer after size.
	protected bool
}

var _ block.Device = (*Device)(nil)

// NewDevice exports the first size bytes of store. With a trailer the store
// needs size+BlockSize bytes; without one (an Unprotected verdict) size must
// be the store's size.
func NewDevice(store block.Device, size int64, trailer bool) (*Device, error) {
	switch {
	case size <= 0:
		return nil, fmt.Errorf("storeid: data size %d", size)
	case trailer && store.Size() < size+BlockSize:
		return nil, fmt.Errorf("storeid: store of %d bytes has no room for %d bytes of data and the %d-byte identity", store.Size(), size, BlockSize)
	case !trailer && store.Size() != size:
		return nil, fmt.Errorf("storeid: store of %d bytes exported as %d bytes without an identity", store.Size(), size)
	}
	return &Device{store: store, size: size, protected: trailer}, nil
}

// ReadTrailer reads the block at off of store and parses it. Found is
// Unreadable, with the error, when the read fails.
func ReadTrailer(store block.Device, off int64) (Trailer, Found, error) {
	if off < 0 || off+BlockSize > store.Size() {
		return Trailer{}, NotRead, nil
	}
	b := make([]byte, BlockSize)
	if err := store.ReadAt(b, off); err != nil {
		return Trailer{}, Unreadable, err
	}
	return Parse(b)
}

// WriteTrailer durably writes t as the store's identity, at Size: with FUA,
// then a flush, so that it is on stable storage before meta.db records it.
func (d *Device) WriteTrailer(t Trailer) error {
	if !d.protected {
		return errors.New("storeid: this store has no room for an identity")
	}
	if t.Size != d.size {
		return fmt.Errorf("storeid: identity for %d bytes of data on a store exporting %d", t.Size, d.size)
	}
	if err := d.store.WriteAt(t.Marshal(), d.size, true); err != nil {
		return fmt.Errorf("writing the store identity: %w", err)
	}
	if err := d.store.Flush(); err != nil {
		return fmt.Errorf("flushing the store identity: %w", err)
	}
	return nil
}

// Protected reports whether the store carries an identity.
func (d *Device) Protected() bool { return d.protected }

// Store is the whole store under the device.
func (d *Device) Store() block.Device { return d.store }

// Size is the data size.
func (d *Device) Size() int64 { return d.size }

func (d *Device) check(op string, off, length int64) error {
	if off < 0 || length < 0 || off > d.size || length > d.size-off {
		return fmt.Errorf("%s at %d length %d (size %d): %w", op, off, length, d.size, block.ErrOutOfRange)
	}
	return nil
}

// ReadAt reads from the data part.
func (d *Device) ReadAt(p []byte, off int64) error {
	if err := d.check("read", off, int64(len(p))); err != nil {
		return err
	}
	return d.store.ReadAt(p, off)
}

// WriteAt writes to the data part.
func (d *Device) WriteAt(p []byte, off int64, fua bool) error {
	if err := d.check("write", off, int64(len(p))); err != nil {
		return err
	}
	return d.store.WriteAt(p, off, fua)
}

// Flush flushes the store.
func (d *Device) Flush() error { return d.store.Flush() }

// Trim trims part of the data.
func (d *Device) Trim(off, length int64) error {
	if err := d.check("trim", off, length); err != nil {
		return err
	}
	return d.store.Trim(off, length)
}

// WriteZeroes zeroes part of the data.
func (d *Device) WriteZeroes(off, length int64, flags block.ZeroFlags) error {
	if err := d.check("write zeroes", off, length); err != nil {
		return err
	}
	return d.store.WriteZeroes(off, length, flags)
}

// Cache passes the hint on.
func (d *Device) Cache(off, length int64) error {
	if err := d.check("cache", off, length); err != nil {
		return err
	}
	return d.store.Cache(off, length)
}

// Extents reports the data part's extents: none reaches past Size.
func (d *Device) Extents(off, length int64, fn func(block.Extent) bool) error {
	if err := d.check("extents", off, length); err != nil {
		return err
	}
	return d.store.Extents(off, length, func(e block.Extent) bool {
		if e.Offset >= d.size {
			return false
		}
		if e.Offset+e.Length > d.size {
			e.Length = d.size - e.Offset
			fn(e)
			return false
		}
		return fn(e)
	})
}

// Close closes the store.
func (d *Device) Close() error { return d.store.Close() }
