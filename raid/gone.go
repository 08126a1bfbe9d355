//go:build linux

package raid

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrStoreGone means a store's file or device was deleted or replaced while
// it was open: the path no longer names what the store writes to, so
// nothing written there can be found again. Every request of such a store
// fails with an error wrapping both ErrStoreGone and syscall.EIO: to the
// layers above it is a failed disk.
var ErrStoreGone = errors.New("store gone: its path no longer names the open file (deleted or replaced while open)")

// goneError is the error a gone store fails with.
type goneError struct {
	why string
}

func (e *goneError) Error() string { return ErrStoreGone.Error() + ": " + e.why }

// Unwrap makes errors.Is find ErrStoreGone and EIO.
func (e *goneError) Unwrap() []error { return []error{ErrStoreGone, syscall.EIO} }

// CheckLink checks that the store's path still names the open file or
// device: a regular file with no links left (deleted), a path that names
// nothing any more, or one that names another file or device (replaced),
// means the store is gone. Then, and from then on, CheckLink returns an
// error wrapping ErrStoreGone and syscall.EIO, and so does every request:
// writes would only reach a file nobody can open again. An error that says
// nothing about the link (such as EACCES on the directory) is returned as
// it is and does not mark the store gone. A caller checks periodically
// (the node does every second).
func (f *File) CheckLink() error {
	if g := f.gone.Load(); g != nil {
		return fmt.Errorf("%s: %w", f.path, g)
	}
	if f.closed.Load() {
		return nil
	}
	var st unix.Stat_t
	err := retryEINTR(func() error { return unix.Fstat(f.fd, &st) })
	runtime.KeepAlive(f.file)
	if err != nil {
		return fmt.Errorf("stat %s: %w", f.path, err)
	}
	var why string
	if st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink == 0 {
		why = "the file has no links left (deleted, or replaced by a rename)"
	} else {
		var ps unix.Stat_t
		err := retryEINTR(func() error { return unix.Stat(f.path, &ps) })
		switch {
		case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR):
			why = "the path names nothing any more"
		case err != nil:
			return fmt.Errorf("stat %s: %w", f.path, err)
		case ps.Dev != f.dev || ps.Ino != f.ino:
			why = fmt.Sprintf("the path names another file now (device %d inode %d; the store is device %d inode %d)", ps.Dev, ps.Ino, f.dev, f.ino)
		}
	}
	if why == "" {
		return nil
	}
	f.gone.CompareAndSwap(nil, &goneError{why: why})
	return fmt.Errorf("%s: %w", f.path, f.gone.Load())
}

// Gone reports the error of a store CheckLink found gone, nil otherwise.
func (f *File) Gone() error {
	if g := f.gone.Load(); g != nil {
		return fmt.Errorf("%s: %w", f.path, g)
	}
	return nil
}

// CheckLinks runs CheckLink on every member of the array. A member whose
// file is found gone is failed at once (Fail, persisted), as a member
// with a write error would be: its writes could never be read back, so the
// array goes on degraded and takes a spare if it has one. It returns what
// it found this time: one error per member newly found gone (and Fail's
// error when the array refused to fail it).
func (d *DiskArray) CheckLinks() []error {
	d.mu.Lock()
	files := slices.Clone(d.files)
	d.mu.Unlock()
	var errs []error
	for i, f := range files {
		if f == nil || f.Gone() != nil {
			continue
		}
		err := f.CheckLink()
		if !errors.Is(err, ErrStoreGone) {
			continue
		}
		errs = append(errs, fmt.Errorf("raid: %s member %d: %w", d.name, i, err))
		if ferr := d.Fail(i); ferr != nil {
			errs = append(errs, fmt.Errorf("raid: %s member %d is gone but could not be failed: %w", d.name, i, ferr))
		}
	}
	return errs
}
