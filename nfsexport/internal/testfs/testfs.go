// Package testfs gives the tests of nfsexport's packages a directory on a
// real file system with file handles and a UUID: a sparse image made with
// mkfs, attached to a loop device and mounted, all undone when the test
// ends. (The tests' temporary directories are on whatever holds /tmp, often
// a file system whose UUID a process cannot read, and tmpfs has none.)
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

// imageSize is the smallest image each mkfs accepts here (mkfs.xfs 6.1
// refuses less than 300 MB).
var imageSize = map[string]string{"ext4": "64M", "xfs": "300M"}

var mkfs = map[string][]string{"ext4": {"mkfs.ext4", "-q", "-F"}, "xfs": {"mkfs.xfs", "-q", "-f"}}

// toolPackage names the Debian package of each tool.
var toolPackage = map[string]string{
	"truncate": "coreutils", "mkfs.ext4": "e2fsprogs", "mkfs.xfs": "xfsprogs", "losetup": "mount",
}

// NeedRoot skips t unless it runs as root (loop devices, mount, and
// open_by_handle_at, which needs CAP_DAC_READ_SEARCH).
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices, mount, and open_by_handle_at (CAP_DAC_READ_SEARCH)")
	}
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(testtool.Need(t, name, toolPackage[name]), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// Mount makes a fresh file system of type fstype ("ext4" or "xfs") on a loop
// device, mounts it on a temporary directory and returns that directory. The
// test's cleanup unmounts it (lazily if it is busy) and detaches the loop
// device, even when the test failed.
func Mount(t testing.TB, fstype string) string {
	t.Helper()
	NeedRoot(t)
	args, ok := mkfs[fstype]
	if !ok {
		t.Fatalf("testfs: no mkfs for %q", fstype)
	}
	losetup := testtool.Need(t, "losetup", toolPackage["losetup"])
	img := filepath.Join(t.TempDir(), fstype+".img")
	run(t, "truncate", "-s", imageSize[fstype], img)
	run(t, args[0], append(args[1:], img)...)
	dev := run(t, "losetup", "--find", "--show", img)
	t.Cleanup(func() {
		if out, err := exec.Command(losetup, "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	dir := t.TempDir()
	if err := unix.Mount(dev, dir, fstype, 0, ""); err != nil {
		t.Fatalf("mount %s on %s (%s): %v", dev, dir, fstype, err)
	}
	// Registered after the loop device's cleanup, so it runs before it.
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("umount %s: %v; unmounting lazily", dir, err)
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				t.Errorf("umount -l %s: %v", dir, err)
			}
		}
	})
	return dir
}
