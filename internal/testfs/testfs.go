//go:build linux

// Package testfs gives tests real file systems: sparse images formatted
// ext4 or xfs, loop-attached and mounted, all undone when the test ends
// (lazily unmounted if a plain unmount fails). It needs root.
package testfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/blockrep/blockrep/internal/testtool"
)

// Types are the file-system types the NFS server is tested on.
var Types = []string{"ext4", "xfs"}

// imageSize is the smallest image each mkfs accepts here (mkfs.xfs 6.1
// refuses less than 300 MB).
var imageSize = map[string]string{"ext4": "64M", "xfs": "300M"}

var mkfsArgs = map[string][]string{"ext4": {"mkfs.ext4", "-q", "-F"}, "xfs": {"mkfs.xfs", "-q", "-f"}}

// toolPackage names the Debian package of each tool this package runs.
var toolPackage = map[string]string{
	"truncate": "coreutils", "cp": "coreutils", "sync": "coreutils", "mkfs.ext4": "e2fsprogs", "mkfs.xfs": "xfsprogs", "losetup": "mount",
}

// NeedRoot skips t unless it runs as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices, mount, and open_by_handle_at (CAP_DAC_READ_SEARCH)")
	}
}

// Run runs a tool (found with testtool.Need) and returns its trimmed
// output, failing t if it fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(testtool.Need(t, name, toolPackage[name]), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// MakeImage creates a sparse image file of size (as truncate takes it;
// "" for the smallest mkfs accepts) with a file system of type fstype.
func MakeImage(t testing.TB, fstype, size string) string {
	t.Helper()
	if size == "" {
		size = imageSize[fstype]
	}
	img := filepath.Join(t.TempDir(), fstype+".img")
	Run(t, "truncate", "-s", size, img)
	args := mkfsArgs[fstype]
	Run(t, args[0], append(args[1:], img)...)
	return img
}

// Attach loop-attaches img and detaches it when the test ends.
func Attach(t testing.TB, img string) string {
	t.Helper()
	losetup := testtool.Need(t, "losetup", toolPackage["losetup"])
	dev := Run(t, "losetup", "--find", "--show", img)
	t.Cleanup(func() {
		if out, err := exec.Command(losetup, "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// Mount is a mount made by a test; the test's cleanup unmounts it if the
// test did not.
type Mount struct {
	Dir  string
	done bool
}

// MountDev mounts dev (of type fstype) on a new temporary directory.
func MountDev(t testing.TB, dev, fstype string) *Mount {
	t.Helper()
	return MountDevData(t, dev, fstype, "")
}

// CopyOptions are the mount options for a block-identical copy of a file
// system that is mounted too: xfs refuses a second mount of a UUID
// without nouuid (on another node there is no such conflict).
var CopyOptions = map[string]string{"xfs": "nouuid"}

// MountDevData mounts dev with the file system's mount options data.
func MountDevData(t testing.TB, dev, fstype, data string) *Mount {
	t.Helper()
	m := &Mount{Dir: t.TempDir()}
	if err := unix.Mount(dev, m.Dir, fstype, 0, data); err != nil {
		t.Fatalf("mount %s on %s (%s): %v", dev, m.Dir, fstype, err)
	}
	t.Cleanup(func() {
		if m.done {
			return
		}
		if err := unix.Unmount(m.Dir, 0); err != nil {
			t.Errorf("umount %s: %v; trying umount -l", m.Dir, err)
			if err := unix.Unmount(m.Dir, unix.MNT_DETACH); err != nil {
				t.Errorf("umount -l %s: %v", m.Dir, err)
			}
		}
	})
	return m
}

// New makes an image of fstype, attaches and mounts it: the quick way to
// a fresh file system.
func New(t testing.TB, fstype string) *Mount {
	t.Helper()
	NeedRoot(t)
	return MountDev(t, Attach(t, MakeImage(t, fstype, "")), fstype)
}

// Unmount unmounts m now.
func (m *Mount) Unmount(t testing.TB) {
	t.Helper()
	if err := unix.Unmount(m.Dir, 0); err != nil {
		t.Fatalf("umount %s: %v", m.Dir, err)
	}
	m.done = true
}

// DropCaches syncs and drops the page, dentry and inode caches, so that
// what follows reads from disk.
func DropCaches(t testing.TB) {
	t.Helper()
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		t.Fatalf("drop caches: %v", err)
	}
}
