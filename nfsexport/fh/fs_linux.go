//go:build linux

package fh

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/blockrep/blockrep/internal/mountinfo"
)

// ErrOutsideExport is wrapped (inside an [*Error] of kind [Stale]) by
// [FS.Open] when a handle names a directory that is not inside the export's
// subtree.
var ErrOutsideExport = errors.New("the directory is outside the export")

// maxWalkDepth bounds the ".." walk of the export check.
const maxWalkDepth = 4096

// fsIocGetFSUUID is FS_IOC_GETFSUUID, _IOR(0x15, 0, struct fsuuid2) with
// struct fsuuid2 { __u8 len; __u8 uuid[16]; } (Linux 6.5+; x/sys has no
// constant for it).
const fsIocGetFSUUID = 0x80111500

// FS is an export root directory on a mounted file system, able to turn
// files into NFS handles and handles back into file descriptors. Its
// methods are safe for concurrent use; Close must not race with them.
type FS struct {
	export    uint32
	root      int // O_PATH|O_DIRECTORY fd of the export root, for the *at calls
	mountFD   int // O_RDONLY|O_DIRECTORY fd of the export root: open_by_handle_at refuses an O_PATH mount fd (EBADF)
	dev       uint64
	ino       uint64
	mountID   int
	uuid      UUID
	uuidFrom  string
	wholeFS   bool // the export root is the file system's root: every directory is inside
	rootH     Handle
	rootBytes []byte
}

// Open opens the export root directory path (on ext4, xfs or another file
// system with file handles and a UUID) as the export with id export.
// It reads the file system's UUID (see [FS.UUIDSource]).
func Open(path string, export uint32) (*FS, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("export root %q: %w", path, err)
	}
	f := &FS{export: export, root: fd, mountFD: -1}
	if err := f.init(path); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (f *FS) init(path string) error {
	var st unix.Stat_t
	err := unix.Fstat(f.root, &st)
	if err != nil {
		return fmt.Errorf("export root %q: fstat: %w", path, err)
	}
	f.dev, f.ino = st.Dev, st.Ino
	f.mountFD, err = unix.Openat(f.root, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("export root %q: open as the mount fd: %w", path, err)
	}
	kh, mountID, err := unix.NameToHandleAt(f.root, "", unix.AT_EMPTY_PATH)
	if err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("export root %q: the file system has no file handles (name_to_handle_at): %w", path, err)
		}
		return fmt.Errorf("export root %q: name_to_handle_at: %w", path, err)
	}
	f.mountID = mountID
	text, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("export root %q: %w", path, err)
	}
	mnt, err := mountinfo.ByID(string(text), mountID)
	if err != nil {
		return fmt.Errorf("export root %q: %w", path, err)
	}
	f.uuid, f.uuidFrom, err = fsUUID(f.root, mnt, st.Dev)
	if err != nil {
		return fmt.Errorf("export root %q: file-system UUID: %w", path, err)
	}
	f.wholeFS, err = isFSRoot(f.root, mnt, &st)
	if err != nil {
		return fmt.Errorf("export root %q: %w", path, err)
	}
	f.rootH, err = f.handle(kh)
	if err != nil {
		return fmt.Errorf("export root %q: %w", path, err)
	}
	f.rootBytes, err = f.rootH.Encode()
	if err != nil {
		return fmt.Errorf("export root %q: %w", path, err)
	}
	return nil
}

// isFSRoot reports whether the directory fd (with stat st) is the root of
// its file system: the root of a mount whose root is the file system's "/".
func isFSRoot(fd int, mnt mountinfo.Mount, st *unix.Stat_t) (bool, error) {
	if mnt.Root != "/" {
		return false, nil
	}
	p, err := unix.Openat(fd, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("open ..: %w", err)
	}
	defer unix.Close(p)
	var pst unix.Stat_t
	if err := unix.Fstat(p, &pst); err != nil {
		return false, fmt.Errorf("fstat ..: %w", err)
	}
	// At a mount root ".." is the parent mount's directory (another st_dev),
	// or the directory itself at the top of the process's root.
	return pst.Dev != st.Dev || pst.Ino == st.Ino, nil
}

// fsUUID finds the UUID of the file system of the directory fd (O_PATH)
// whose mount is mnt and st_dev dev: the FS_IOC_GETFSUUID ioctl (Linux
// 6.5+, the superblock's UUID as the file system reports it), or, on older
// kernels, the superblock read from the mount's block device. It returns
// the UUID and a description of where it came from.
func fsUUID(fd int, mnt mountinfo.Mount, dev uint64) (UUID, string, error) {
	u, err := ioctlFSUUID(fd)
	if err == nil {
		return u, "FS_IOC_GETFSUUID", nil
	}
	if !errors.Is(err, unix.ENOTTY) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EOPNOTSUPP) {
		return UUID{}, "", err
	}
	u, sbErr := superblockUUIDOf(mnt, dev)
	if sbErr != nil {
		return UUID{}, "", fmt.Errorf("%w; and from the superblock: %w", err, sbErr)
	}
	return u, "superblock of " + mnt.Source, nil
}

// ioctlFSUUID asks the kernel for the UUID of the file system of fd.
func ioctlFSUUID(fd int) (UUID, error) {
	// The ioctl needs an fd that is not O_PATH.
	rfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return UUID{}, fmt.Errorf("open for FS_IOC_GETFSUUID: %w", err)
	}
	defer unix.Close(rfd)
	var buf struct {
		Len  uint8
		UUID [16]byte
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(rfd), fsIocGetFSUUID, uintptr(unsafe.Pointer(&buf))); errno != 0 {
		return UUID{}, fmt.Errorf("FS_IOC_GETFSUUID: %w", errno)
	}
	if buf.Len != 16 {
		return UUID{}, fmt.Errorf("FS_IOC_GETFSUUID: UUID length %d, want 16: %w", buf.Len, unix.EOPNOTSUPP)
	}
	u := UUID(buf.UUID)
	if u.IsZero() {
		return UUID{}, fmt.Errorf("FS_IOC_GETFSUUID: the UUID is all zeros: %w", unix.EOPNOTSUPP)
	}
	return u, nil
}

// superblockUUIDOf reads the UUID from the superblock on the block device
// of mount mnt, checking that the device is the one with number dev.
func superblockUUIDOf(mnt mountinfo.Mount, dev uint64) (UUID, error) {
	if !strings.HasPrefix(mnt.Source, "/") {
		return UUID{}, fmt.Errorf("mount %d: source %q is not a device path", mnt.ID, mnt.Source)
	}
	d, err := os.Open(mnt.Source)
	if err != nil {
		return UUID{}, fmt.Errorf("mount %d: %w", mnt.ID, err)
	}
	defer d.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(d.Fd()), &st); err != nil {
		return UUID{}, fmt.Errorf("mount %d: fstat %s: %w", mnt.ID, mnt.Source, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != dev {
		return UUID{}, fmt.Errorf("mount %d: source %s is not the block device %d:%d", mnt.ID, mnt.Source, unix.Major(dev), unix.Minor(dev))
	}
	sb := make([]byte, SuperblockReadSize)
	if _, err := d.ReadAt(sb, 0); err != nil {
		return UUID{}, fmt.Errorf("mount %d: read superblock of %s: %w", mnt.ID, mnt.Source, err)
	}
	return SuperblockUUID(mnt.FSType, sb)
}

// Close closes the export root's fds; closing again does nothing.
func (f *FS) Close() error {
	if f.root < 0 {
		return nil // closed already: closing the numbers again could close another file's
	}
	err := unix.Close(f.root)
	f.root = -1
	if f.mountFD >= 0 {
		if err2 := unix.Close(f.mountFD); err == nil {
			err = err2
		}
		f.mountFD = -1
	}
	return err
}

// Export returns the export id.
func (f *FS) Export() uint32 { return f.export }

// UUID returns the file system's UUID (the superblock's: ext4 s_uuid, xfs
// sb_uuid), the same on a block-identical copy.
func (f *FS) UUID() UUID { return f.uuid }

// UUIDSource says where the UUID came from: "FS_IOC_GETFSUUID" or
// "superblock of /dev/...".
func (f *FS) UUIDSource() string { return f.uuidFrom }

// IsRoot reports whether st (a file's attributes) is the export root's.
func (f *FS) IsRoot(st *unix.Stat_t) bool { return st.Dev == f.dev && st.Ino == f.ino }

// RootFD returns the export root's O_PATH directory fd, owned by f (valid
// until Close), for the *at calls.
func (f *FS) RootFD() int { return f.root }

// Root returns the export root's handle (what MOUNT MNT answers).
func (f *FS) Root() Handle { return f.rootH }

// RootBytes returns the export root's encoded handle. The caller must not
// modify it.
func (f *FS) RootBytes() []byte { return f.rootBytes }

func (f *FS) handle(kh unix.FileHandle) (Handle, error) {
	h := Handle{Export: f.export, FS: f.uuid, Kernel: KernelHandle{Type: kh.Type(), Bytes: append([]byte(nil), kh.Bytes()...)}}
	if len(h.Kernel.Bytes) > MaxKernelBytes {
		return Handle{}, fmt.Errorf("kernel handle of type %d is %d bytes, more than the %d that fit in an NFSv3 handle", h.Kernel.Type, len(h.Kernel.Bytes), MaxKernelBytes)
	}
	return h, nil
}

// HandleOf returns the handle of the open file fd (any file type, O_PATH
// fds included). The file must be on the export's mount; that it is inside
// the export's subtree is the caller's business (fds reached from the
// export root with the *at calls are).
func (f *FS) HandleOf(fd int) (Handle, error) {
	kh, mountID, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH)
	if err != nil {
		return Handle{}, fmt.Errorf("name_to_handle_at(fd %d): %w", fd, err)
	}
	if mountID != f.mountID {
		return Handle{}, fmt.Errorf("fd %d is on mount %d, not the export's mount %d", fd, mountID, f.mountID)
	}
	return f.handle(kh)
}

// HandleAt returns the handle of the entry name in the directory dirfd,
// without following a symlink. name must be one path component (not "",
// ".", ".." and without "/"); an entry that is a mount point (the root of
// another mount) is refused.
func (f *FS) HandleAt(dirfd int, name string) (Handle, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return Handle{}, fmt.Errorf("name %q: not a single path component", name)
	}
	kh, mountID, err := unix.NameToHandleAt(dirfd, name, 0)
	if err != nil {
		return Handle{}, fmt.Errorf("name_to_handle_at(%q): %w", name, err)
	}
	if mountID != f.mountID {
		return Handle{}, fmt.Errorf("name %q is on mount %d, not the export's mount %d (a mount point inside the export)", name, mountID, f.mountID)
	}
	return f.handle(kh)
}

// OpenBytes decodes the wire handle b and opens it as [FS.Open] does.
func (f *FS) OpenBytes(b []byte, flags int) (int, error) {
	h, err := Decode(b)
	if err != nil {
		return -1, err
	}
	return f.Open(h, flags)
}

// Open opens the file that h names with open_by_handle_at and flags
// (O_CLOEXEC and O_NOFOLLOW are added; O_PATH for GETATTR and lookups,
// O_RDONLY or O_RDWR for data). The caller owns the returned fd.
//
// Errors: a handle of another export or file system, or of a directory
// outside the export's subtree (ErrOutsideExport), or of a file that is
// gone (ESTALE from the kernel) is an [*Error] of kind Stale; a kernel
// handle the kernel rejects as malformed (EINVAL) is of kind BadHandle.
// Other errors (EPERM without CAP_DAC_READ_SEARCH, ELOOP for a symlink
// opened without O_PATH, EMFILE, ...) are returned wrapped, unclassified:
// they are the server's trouble, not the handle's.
//
// The export check: a directory is inside the export if walking ".." from
// it reaches the export root (st_dev and st_ino compared). A non-directory
// has no parent the kernel can name reliably (hard links, disconnected
// dentries), so for it only the file system is checked: a client that
// forges the handle of a file outside the export's subtree on the same
// file system can open it, as with knfsd's default no_subtree_check. Export
// whole file systems (the check is then exact), or have the NFS layer make
// handles unforgeable.
func (f *FS) Open(h Handle, flags int) (int, error) {
	if err := h.Check(f.export, f.uuid); err != nil {
		return -1, err
	}
	fd, err := unix.OpenByHandleAt(f.mountFD, unix.NewFileHandle(h.Kernel.Type, h.Kernel.Bytes), flags|unix.O_CLOEXEC|unix.O_NOFOLLOW)
	if err != nil {
		return -1, openError(h, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("fstat of the file opened by handle: %w", err)
	}
	if st.Dev != f.dev {
		unix.Close(fd)
		return -1, &Error{Kind: Stale, Reason: fmt.Sprintf("opened a file on device %d:%d, the export is on %d:%d",
			unix.Major(st.Dev), unix.Minor(st.Dev), unix.Major(f.dev), unix.Minor(f.dev)), Err: ErrOutsideExport}
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR && !f.wholeFS {
		in, err := f.withinExport(fd)
		if err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("checking that directory inode %d is inside the export: %w", st.Ino, err)
		}
		if !in {
			unix.Close(fd)
			return -1, &Error{Kind: Stale, Reason: fmt.Sprintf("directory inode %d", st.Ino), Err: ErrOutsideExport}
		}
	}
	return fd, nil
}

// openError classifies an error of open_by_handle_at.
func openError(h Handle, err error) error {
	switch {
	case errors.Is(err, unix.ESTALE):
		return &Error{Kind: Stale, Reason: fmt.Sprintf("open_by_handle_at(type %d): the file is gone", h.Kernel.Type), Err: err}
	case errors.Is(err, unix.EINVAL):
		return &Error{Kind: BadHandle, Reason: fmt.Sprintf("open_by_handle_at(type %d, %d bytes): the kernel rejects the handle", h.Kernel.Type, len(h.Kernel.Bytes)), Err: err}
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("open_by_handle_at: %w (it needs CAP_DAC_READ_SEARCH: run the server as root or give it that capability)", err)
	default:
		return fmt.Errorf("open_by_handle_at(type %d): %w", h.Kernel.Type, err)
	}
}

// withinExport reports whether the directory fd is the export root or below
// it, walking ".." up to the export root or the top of the file system.
func (f *FS) withinExport(fd int) (bool, error) {
	cur, owned := fd, false
	defer func() {
		if owned {
			unix.Close(cur)
		}
	}()
	var st unix.Stat_t
	if err := unix.Fstat(cur, &st); err != nil {
		return false, fmt.Errorf("fstat: %w", err)
	}
	for range maxWalkDepth {
		if st.Dev != f.dev {
			return false, nil
		}
		if st.Ino == f.ino {
			return true, nil
		}
		p, err := unix.Openat(cur, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return false, fmt.Errorf("open ..: %w", err)
		}
		var pst unix.Stat_t
		if err := unix.Fstat(p, &pst); err != nil {
			unix.Close(p)
			return false, fmt.Errorf("fstat ..: %w", err)
		}
		if pst.Dev == st.Dev && pst.Ino == st.Ino {
			unix.Close(p) // the top: ".." is the directory itself
			return false, nil
		}
		if owned {
			unix.Close(cur)
		}
		cur, owned, st = p, true, pst
	}
	return false, fmt.Errorf("more than %d levels of directories", maxWalkDepth)
}
