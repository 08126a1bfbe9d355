//go:build linux

package fh

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/blockrep/blockrep/internal/mountinfo"
	"github.com/blockrep/blockrep/internal/testfs"
	"github.com/blockrep/blockrep/internal/testtool"
)

// toolPackage names the Debian package of each tool these tests run
// besides those of testfs.
var toolPackage = map[string]string{"blkid": "util-linux", "cp": "coreutils", "sync": "coreutils"}

func needRoot(t *testing.T) { t.Helper(); testfs.NeedRoot(t) }

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	if pkg, ok := toolPackage[name]; ok {
		out, err := exec.Command(testtool.Need(t, name, pkg), args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	return testfs.Run(t, name, args...)
}

func makeImage(t *testing.T, fstype string) string {
	t.Helper()
	return testfs.MakeImage(t, fstype, "")
}
func attach(t *testing.T, img string) string { t.Helper(); return testfs.Attach(t, img) }
func dropCaches(t *testing.T)                { t.Helper(); testfs.DropCaches(t) }

func mkdirs(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func openFS(t *testing.T, path string, export uint32) *FS {
	t.Helper()
	f, err := Open(path, export)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func openDir(t *testing.T, path string) int {
	t.Helper()
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return fd
}

// fdSet holds fds a test opened, to close before an unmount (and at the
// end of the test if it failed before).
type fdSet struct{ fds []int }

func newFDSet(t *testing.T) *fdSet {
	s := &fdSet{}
	t.Cleanup(s.closeAll)
	return s
}

func (s *fdSet) add(fd int) int { s.fds = append(s.fds, fd); return fd }

func (s *fdSet) closeAll() {
	for _, fd := range s.fds {
		unix.Close(fd)
	}
	s.fds = nil
}

func encode(t *testing.T, h Handle) []byte {
	t.Helper()
	b, err := h.Encode()
	if err != nil {
		t.Fatalf("Encode(%+v): %v", h, err)
	}
	return b
}

// readByHandle opens the wire handle b and returns the file's content.
func readByHandle(t *testing.T, f *FS, b []byte) string {
	t.Helper()
	fd, err := f.OpenBytes(b, unix.O_RDONLY)
	if err != nil {
		t.Fatalf("OpenBytes(%x): %v", b, err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 256)
	n, err := unix.Pread(fd, buf, 0)
	if err != nil {
		t.Fatalf("pread: %v", err)
	}
	return string(buf[:n])
}

// inodeByHandle opens the wire handle b with O_PATH and returns its inode.
func inodeByHandle(t *testing.T, f *FS, b []byte) uint64 {
	t.Helper()
	fd, err := f.OpenBytes(b, unix.O_PATH)
	if err != nil {
		t.Fatalf("OpenBytes(%x): %v", b, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func fsid(t *testing.T, path string) [2]int32 {
	t.Helper()
	var s unix.Statfs_t
	if err := unix.Statfs(path, &s); err != nil {
		t.Fatal(err)
	}
	return s.Fsid.Val
}

// TestKernelHandles runs the whole life of handles on real ext4 and xfs file
// systems on loop devices: round trip, renames, unmount + dropped caches +
// remount, a block-identical copy, deletion, and the export boundary.
func TestKernelHandles(t *testing.T) {
	needRoot(t)
	for _, fstype := range []string{"ext4", "xfs"} {
		t.Run(fstype, func(t *testing.T) { testKernelHandles(t, fstype) })
	}
}

func testKernelHandles(t *testing.T, fstype string) {
	img := makeImage(t, fstype)
	dev := attach(t, img)
	m := testfs.MountDev(t, dev, fstype)
	fds := newFDSet(t) // after the mount: cleanups run last-registered first
	od := func(path string) int { return fds.add(openDir(t, path)) }
	exp := filepath.Join(m.Dir, "exp")
	mkdirs(t, filepath.Join(exp, "d1", "d2"), filepath.Join(exp, "other"), filepath.Join(m.Dir, "outside", "sub"))
	writeFile(t, filepath.Join(exp, "d1", "d2", "file"), "hello "+fstype)
	writeFile(t, filepath.Join(exp, "gone"), "soon deleted")
	writeFile(t, filepath.Join(m.Dir, "outside", "secret"), "not exported")
	if err := os.Symlink("/etc", filepath.Join(exp, "escape")); err != nil {
		t.Fatal(err)
	}

	f := openFS(t, exp, 1)
	blkidUUID := run(t, "blkid", "-p", "-s", "UUID", "-o", "value", dev)
	if f.UUID().String() != blkidUUID {
		t.Fatalf("UUID %s (from %s), blkid says %s", f.UUID(), f.UUIDSource(), blkidUUID)
	}
	if f.UUIDSource() != "FS_IOC_GETFSUUID" {
		t.Errorf("UUIDSource = %q, want FS_IOC_GETFSUUID on this kernel", f.UUIDSource())
	}
	var st unix.Stat_t
	if err := unix.Stat(exp, &st); err != nil {
		t.Fatal(err)
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	mnt, err := mountinfo.ByID(string(mi), f.mountID)
	if err != nil {
		t.Fatal(err)
	}
	if sb, err := superblockUUIDOf(mnt, st.Dev); err != nil || sb != f.UUID() {
		t.Fatalf("superblock UUID = %s, %v; ioctl said %s", sb, err, f.UUID())
	}
	if f.wholeFS {
		t.Fatal("an export of a subdirectory counts as the whole file system")
	}
	firstFsid := fsid(t, exp)

	// Handles of a file, a directory and the root, taken as the NFS layer
	// would: the *at calls from directory fds.
	d2 := od(filepath.Join(exp, "d1", "d2"))
	fileH, err := f.HandleAt(d2, "file")
	if err != nil {
		t.Fatal(err)
	}
	dirH, err := f.HandleOf(d2)
	if err != nil {
		t.Fatal(err)
	}
	fileB, dirB, rootB := encode(t, fileH), encode(t, dirH), append([]byte(nil), f.RootBytes()...)
	for name, b := range map[string][]byte{"file": fileB, "dir": dirB, "root": rootB} {
		if len(b) > MaxSize {
			t.Fatalf("%s handle is %d bytes", name, len(b))
		}
	}
	t.Logf("%s: file handle %x (kernel type %d, %d bytes)", fstype, fileB, fileH.Kernel.Type, len(fileH.Kernel.Bytes))
	fileIno, dirIno := inode(t, filepath.Join(exp, "d1", "d2", "file")), inode(t, filepath.Join(exp, "d1", "d2"))
	if got := readByHandle(t, f, fileB); got != "hello "+fstype {
		t.Fatalf("file by handle reads %q", got)
	}
	if got := inodeByHandle(t, f, dirB); got != dirIno {
		t.Fatalf("dir by handle is inode %d, want %d", got, dirIno)
	}
	if got := inodeByHandle(t, f, rootB); got != inode(t, exp) {
		t.Fatalf("root by handle is inode %d, want %d", got, inode(t, exp))
	}
	if _, err := f.HandleAt(d2, ".."); err == nil {
		t.Fatal(`HandleAt("..") succeeded`)
	}

	// Renames of the file and of its parent directory keep the handles.
	if err := os.Rename(filepath.Join(exp, "d1", "d2", "file"), filepath.Join(exp, "d1", "d2", "renamed")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(exp, "d1", "d2"), filepath.Join(exp, "other", "d2moved")); err != nil {
		t.Fatal(err)
	}
	if got := readByHandle(t, f, fileB); got != "hello "+fstype {
		t.Fatalf("after renames, file by handle reads %q", got)
	}
	if got := inodeByHandle(t, f, dirB); got != dirIno {
		t.Fatalf("after rename, dir by handle is inode %d, want %d", got, dirIno)
	}

	// A symlink's handle opens the link itself, never its target.
	linkH, err := f.HandleAt(od(exp), "escape")
	if err != nil {
		t.Fatal(err)
	}
	lfd, err := f.Open(linkH, unix.O_PATH)
	if err != nil {
		t.Fatalf("open symlink by handle with O_PATH: %v", err)
	}
	if err := unix.Fstat(lfd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFLNK {
		t.Fatalf("symlink by handle: mode %o, %v; want a symlink", st.Mode, err)
	}
	unix.Close(lfd)
	if fd, err := f.Open(linkH, unix.O_RDONLY); err == nil {
		unix.Close(fd)
		t.Fatal("symlink by handle with O_RDONLY opened something (followed the link?)")
	} else if !errors.Is(err, unix.ELOOP) {
		t.Fatalf("symlink by handle with O_RDONLY: %v, want ELOOP", err)
	}

	// The export boundary: a directory outside the export's subtree is
	// refused, also one that a rename moved out.
	mountRoot := od(m.Dir)
	outsideH, err := f.HandleAt(mountRoot, "outside")
	if err != nil {
		t.Fatal(err)
	}
	for name, h := range map[string]Handle{"outside": outsideH} {
		fd, err := f.Open(h, unix.O_PATH)
		if err == nil {
			unix.Close(fd)
			t.Fatalf("%s: the directory outside the export opened", name)
		}
		if !errors.Is(err, ErrStale) || !errors.Is(err, ErrOutsideExport) {
			t.Fatalf("%s: %v, want Stale wrapping ErrOutsideExport", name, err)
		}
	}
	subH, err := f.HandleAt(od(filepath.Join(m.Dir, "outside")), "sub")
	if err != nil {
		t.Fatal(err)
	}
	if fd, err := f.Open(subH, unix.O_PATH); !errors.Is(err, ErrOutsideExport) {
		unix.Close(fd)
		t.Fatalf("outside/sub: %v, want ErrOutsideExport", err)
	}
	otherH, err := f.HandleAt(od(exp), "other")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(exp, "other"), filepath.Join(m.Dir, "outside", "other")); err != nil {
		t.Fatal(err)
	}
	if fd, err := f.Open(otherH, unix.O_PATH); !errors.Is(err, ErrOutsideExport) {
		unix.Close(fd)
		t.Fatalf("directory moved out of the export: %v, want ErrOutsideExport", err)
	}
	if fd, err := f.OpenBytes(dirB, unix.O_PATH); !errors.Is(err, ErrOutsideExport) {
		unix.Close(fd)
		t.Fatalf("directory below one moved out of the export: %v, want ErrOutsideExport", err)
	}
	if err := os.Rename(filepath.Join(m.Dir, "outside", "other"), filepath.Join(exp, "other")); err != nil {
		t.Fatal(err)
	}
	if got := inodeByHandle(t, f, dirB); got != dirIno {
		t.Fatalf("directory moved back: inode %d, want %d", got, dirIno)
	}
	// The documented limitation: a non-directory outside the subtree is
	// checked only for its file system.
	secretH, err := f.HandleAt(od(filepath.Join(m.Dir, "outside")), "secret")
	if err != nil {
		t.Fatal(err)
	}
	if fd, err := f.Open(secretH, unix.O_RDONLY); err != nil {
		t.Fatalf("file outside the subtree: %v; the doc says it opens (no parent to check): update the doc", err)
	} else {
		unix.Close(fd)
	}
	// The same export on the whole file system skips the walk.
	whole := openFS(t, m.Dir, 1)
	if !whole.wholeFS {
		t.Fatal("the mount root does not count as the whole file system")
	}
	if got := inodeByHandle(t, whole, encode(t, outsideH)); got != inode(t, filepath.Join(m.Dir, "outside")) {
		t.Fatalf("whole-fs export: outside is inode %d", got)
	}

	// Another export id, or another file system's UUID: refused as stale
	// before the kernel sees the handle.
	for name, h := range map[string]Handle{
		"other export": {Export: 2, FS: fileH.FS, Kernel: fileH.Kernel},
		"other fs":     {Export: 1, FS: UUID{1}, Kernel: fileH.Kernel},
	} {
		fd, err := f.Open(h, unix.O_RDONLY)
		if err == nil {
			unix.Close(fd)
			t.Fatalf("%s: opened", name)
		}
		if !errors.Is(err, ErrStale) || errors.Is(err, unix.ESTALE) {
			t.Fatalf("%s: %v, want Stale from the handle check", name, err)
		}
	}
	// A kernel handle the file system cannot parse.
	if fd, err := f.Open(Handle{Export: 1, FS: fileH.FS, Kernel: KernelHandle{Type: -1, Bytes: []byte{1}}}, unix.O_RDONLY); err == nil {
		unix.Close(fd)
		t.Fatal("a handle of type -1 opened")
	} else if !errors.Is(err, ErrBadHandle) {
		t.Fatalf("a handle of type -1: %v, want BadHandle (EINVAL)", err)
	}

	// A deleted file's handle is stale, with ESTALE from the kernel.
	goneH, err := f.HandleAt(od(exp), "gone")
	if err != nil {
		t.Fatal(err)
	}
	goneB := encode(t, goneH)
	if got := readByHandle(t, f, goneB); got != "soon deleted" {
		t.Fatalf("gone by handle reads %q", got)
	}
	if err := os.Remove(filepath.Join(exp, "gone")); err != nil {
		t.Fatal(err)
	}
	dropCaches(t)
	fd, err := f.OpenBytes(goneB, unix.O_RDONLY)
	if err == nil {
		unix.Close(fd)
		t.Fatal("a deleted file's handle opened")
	}
	if !errors.Is(err, ErrStale) || !errors.Is(err, unix.ESTALE) {
		t.Fatalf("deleted file: %v, want Stale wrapping ESTALE", err)
	}
	firstMountID := f.mountID
	f.Close()
	whole.Close()
	fds.closeAll()

	// Unmount, drop caches, mount again elsewhere: same handles.
	m.Unmount(t)
	dropCaches(t)
	m2 := testfs.MountDev(t, dev, fstype)
	f2 := openFS(t, filepath.Join(m2.Dir, "exp"), 1)
	t.Logf("mount IDs: first mount %d, remount %d", firstMountID, f2.mountID)
	if !bytes.Equal(f2.RootBytes(), rootB) {
		t.Fatalf("root handle after remount %x, before %x", f2.RootBytes(), rootB)
	}
	if got := readByHandle(t, f2, fileB); got != "hello "+fstype {
		t.Fatalf("after remount, file by handle reads %q", got)
	}
	if got := inodeByHandle(t, f2, dirB); got != dirIno {
		t.Fatalf("after remount, dir by handle is inode %d, want %d", got, dirIno)
	}
	if got := inodeByHandle(t, f2, fileB); got != fileIno {
		t.Fatalf("after remount, file by handle is inode %d, want %d", got, fileIno)
	}
	if _, err := f2.OpenBytes(goneB, unix.O_RDONLY); !errors.Is(err, unix.ESTALE) {
		t.Fatalf("after remount, deleted file: %v, want ESTALE", err)
	}
	f2.Close()
	m2.Unmount(t)

	// A block-identical copy on another loop device: same UUID, same
	// handles, same contents.
	cp := filepath.Join(t.TempDir(), "copy.img")
	run(t, "cp", "--sparse=always", img, cp)
	dev2 := attach(t, cp)
	// Mount IDs are reused, by other tests' mounts too; until the copy's
	// mount has another ID than the original's (as on another node), hold
	// IDs with tmpfs mounts and mount it again.
	var m3 *testfs.Mount
	var f3 *FS
	for try := 0; ; try++ {
		m3 = testfs.MountDev(t, dev2, fstype)
		f3 = openFS(t, filepath.Join(m3.Dir, "exp"), 1)
		if f3.mountID != firstMountID {
			break
		}
		if try == 10 {
			t.Fatalf("the copy keeps getting the original's mount ID %d: the test cannot tell that handles omit it", firstMountID)
		}
		f3.Close()
		m3.Unmount(t)
		testfs.MountDev(t, "tmpfs", "tmpfs")
	}
	if f3.UUID() != fileH.FS {
		t.Fatalf("the copy's UUID %s, the original's %s", f3.UUID(), fileH.FS)
	}
	if !bytes.Equal(f3.RootBytes(), rootB) {
		t.Fatalf("root handle on the copy %x, on the original %x", f3.RootBytes(), rootB)
	}
	if got := readByHandle(t, f3, fileB); got != "hello "+fstype {
		t.Fatalf("on the copy, file by handle reads %q", got)
	}
	if got := inodeByHandle(t, f3, dirB); got != dirIno {
		t.Fatalf("on the copy, dir by handle is inode %d, want %d", got, dirIno)
	}
	copyFsid := fsid(t, m3.Dir)
	t.Logf("%s: statfs f_fsid original %x on %s, copy %x on %s", fstype, firstFsid, dev, copyFsid, dev2)
	wantSameFsid := fstype == "ext4" // ext4 derives f_fsid from the UUID, xfs from the device number
	if (firstFsid == copyFsid) != wantSameFsid {
		t.Errorf("%s: f_fsid same on the copy = %v, want %v", fstype, firstFsid == copyFsid, wantSameFsid)
	}
}

// TestOtherFileSystem checks that the handle of one file system is refused
// by an export on another, even with the same export id.
func TestOtherFileSystem(t *testing.T) {
	needRoot(t)
	var fss []*FS
	var files [][]byte
	for i := range 2 {
		dev := attach(t, makeImage(t, "ext4"))
		m := testfs.MountDev(t, dev, "ext4")
		writeFile(t, filepath.Join(m.Dir, "f"), "fs")
		f := openFS(t, m.Dir, 1)
		h, err := f.HandleAt(f.RootFD(), "f")
		if err != nil {
			t.Fatal(err)
		}
		fss, files = append(fss, f), append(files, encode(t, h))
		_ = i
	}
	if fss[0].UUID() == fss[1].UUID() {
		t.Fatal("two mkfs runs gave the same UUID")
	}
	// ext4 gives both files the same inode number: only the UUID tells them apart.
	fd, err := fss[0].OpenBytes(files[1], unix.O_RDONLY)
	if err == nil {
		unix.Close(fd)
		t.Fatal("the other file system's handle opened")
	}
	if !errors.Is(err, ErrStale) || errors.Is(err, unix.ESTALE) {
		t.Fatalf("the other file system's handle: %v, want Stale from the UUID check, before the kernel", err)
	}
}

// TestNoCapability checks that open_by_handle_at without
// CAP_DAC_READ_SEARCH is an unclassified error (the server's trouble, not
// the handle's) that names the capability.
func TestNoCapability(t *testing.T) {
	needRoot(t)
	m := testfs.MountDev(t, attach(t, makeImage(t, "ext4")), "ext4")
	writeFile(t, filepath.Join(m.Dir, "f"), "x")
	f := openFS(t, m.Dir, 1)
	h, err := f.HandleAt(f.RootFD(), "f")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		// Credentials are per thread: drop the capability from this
		// goroutine's thread only, and never unlock it, so that the Go
		// runtime ends the thread when the goroutine returns.
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		data[0].Effective &^= 1 << unix.CAP_DAC_READ_SEARCH
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		fd, err := f.Open(h, unix.O_RDONLY)
		if err == nil {
			unix.Close(fd)
		}
		errc <- err
	}()
	err = <-errc
	if err == nil {
		t.Fatal("open_by_handle_at without CAP_DAC_READ_SEARCH succeeded")
	}
	if !errors.Is(err, unix.EPERM) || errors.Is(err, ErrStale) || errors.Is(err, ErrBadHandle) || !strings.Contains(err.Error(), "CAP_DAC_READ_SEARCH") {
		t.Fatalf("without CAP_DAC_READ_SEARCH: %v, want an unclassified EPERM naming the capability", err)
	}
	t.Log(err)
}
