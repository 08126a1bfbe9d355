package serving

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/blockrep/blockrep/internal/testfs"
)

func TestSplitOptions(t *testing.T) {
	flags, data := SplitOptions([]string{"noatime", "rw", "discard", "nodev", "commit=5", "defaults"})
	if flags != unix.MS_NOATIME|unix.MS_NODEV || data != "discard,commit=5" {
		t.Fatalf("flags %#x data %q", flags, data)
	}
	if flags, data := SplitOptions(nil); flags != 0 || data != "" {
		t.Fatalf("no options: %#x %q", flags, data)
	}
}

// TestMountFS mounts, finds and unmounts ext4 and xfs file systems, and
// names the device and type when a mount fails.
func TestMountFS(t *testing.T) {
	for _, fstype := range testfs.Types {
		t.Run(fstype, func(t *testing.T) {
			testfs.NeedRoot(t)
			dev := testfs.Attach(t, testfs.MakeImage(t, fstype, ""))
			dir := t.TempDir()
			if _, ok, err := MountedAt(dir); err != nil || ok {
				t.Fatalf("MountedAt before: %v %v", ok, err)
			}
			if err := MountFS(dev, dir, fstype, []string{"noatime"}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
			m, ok, err := MountedAt(dir)
			if err != nil || !ok || m.Source != dev || m.FSType != fstype {
				t.Fatalf("MountedAt after mount: %+v %v %v", m, ok, err)
			}
			if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := UnmountFS(dev, dir); err != nil {
				t.Fatal(err)
			}
			if _, ok, _ := MountedAt(dir); ok {
				t.Fatal("still mounted after UnmountFS")
			}
			if err := UnmountFS(dev, dir); err != nil {
				t.Fatalf("UnmountFS of nothing mounted: %v", err)
			}
			other := map[string]string{"ext4": "xfs", "xfs": "ext4"}[fstype]
			err = MountFS(dev, dir, other, nil)
			if err == nil || !strings.Contains(err.Error(), dev) || !strings.Contains(err.Error(), other) {
				t.Fatalf("mounting %s as %s: %v, want an error naming both", fstype, other, err)
			}
		})
	}
}
