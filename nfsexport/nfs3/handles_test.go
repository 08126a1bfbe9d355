//go:build linux

package nfs3

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/blockrep/blockrep/internal/rpcclient"
	"github.com/blockrep/blockrep/internal/testfs"
	"github.com/blockrep/blockrep/nfsexport/export"
)

// TestHandlesSurvive: a handle a client holds keeps naming its file across
// a rename of the file and of its parent, an unmount and remount with cold
// caches, and on a block-identical copy of the file system mounted from
// another device (what a failover to the other node is).
func TestHandlesSurvive(t *testing.T) {
	forEachFS(t, func(t *testing.T, fstype string) {
		testfs.NeedRoot(t)
		img := testfs.MakeImage(t, fstype, "")
		dev := testfs.Attach(t, img)
		m := testfs.MountDev(t, dev, fstype)
		s := serveDir(t, m.Dir, export.Options{Squash: export.NoRootSquash})
		c := s.client(rpcclient.Root)
		_, parent := c.mkdir(s.root, "parent", 0o755)
		_, child := c.mkdir(parent, "child", 0o755)
		_, file := c.create(child, "file", createUnchecked, 0o644, nil)
		if w := c.write(file, 0, []byte("contents"), FileSync); w.status != OK {
			t.Fatalf("WRITE: %v", w.status)
		}
		wantStatus(t, "RENAME file", c.rename(child, "file", child, "renamed"), OK)
		wantStatus(t, "RENAME parent", c.rename(s.root, "parent", s.root, "moved"), OK)

		check := func(where string, c *client, root []byte) {
			t.Helper()
			if st, data, _ := c.read(file, 0, 100); st != OK || string(data) != "contents" {
				t.Fatalf("%s: READ by the old handle: %v %q", where, st, data)
			}
			st, got := c.lookup(child, "renamed")
			if st != OK || !bytes.Equal(got, file) {
				t.Fatalf("%s: LOOKUP in the old directory handle: %v, handle %x want %x", where, st, got, file)
			}
			if st, _ := c.getattr(parent); st != OK {
				t.Fatalf("%s: GETATTR of the moved parent: %v", where, st)
			}
			if !bytes.Equal(root, s.root) {
				t.Fatalf("%s: root handle %x, want %x", where, root, s.root)
			}
		}
		check("after the renames", c, s.root)
		testfs.Run(t, "sync")

		// Copy the image while mounted and synced: block-identical.
		cp := filepath.Join(t.TempDir(), "copy.img")
		testfs.Run(t, "cp", "--sparse=always", img, cp)

		s.stop()
		m.Unmount(t)
		testfs.DropCaches(t)
		m2 := testfs.MountDev(t, dev, fstype)
		s2 := serveDir(t, m2.Dir, export.Options{Squash: export.NoRootSquash})
		check("after unmount, drop_caches and remount", s2.client(rpcclient.Root), s2.root)

		m3 := testfs.MountDevData(t, testfs.Attach(t, cp), fstype, testfs.CopyOptions[fstype])
		s3 := serveDir(t, m3.Dir, export.Options{Squash: export.NoRootSquash})
		check("on a copy of the image from another device", s3.client(rpcclient.Root), s3.root)

		// Gone is gone: STALE, on the copy too once removed there.
		c3 := s3.client(rpcclient.Root)
		wantStatus(t, "REMOVE on the copy", c3.dirop(ProcRemove, child, "renamed"), OK)
		if st, _ := c3.getattr(file); st != ErrStale {
			t.Fatalf("GETATTR of a removed file: %v, want STALE", st)
		}
		if _, err := os.Stat(filepath.Join(m2.Dir, "moved/child/renamed")); err != nil {
			t.Fatalf("the original lost the file removed on the copy: %v", err)
		}
	})
}
