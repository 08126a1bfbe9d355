//go:build linux

package raid

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestCheckLink: a store whose path still names it passes; one deleted,
// renamed over or whose path now names another file is gone for good, and
// every request fails wrapping ErrStoreGone and EIO.
func TestCheckLink(t *testing.T) {
	for _, tc := range []struct {
		name    string
		breakIt func(t *testing.T, path string)
	}{
		{"deleted", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
		{"renamed-over", func(t *testing.T, path string) {
			other := path + ".new"
			if err := os.WriteFile(other, make([]byte, 8192), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(other, path); err != nil {
				t.Fatal(err)
			}
		}},
		// The store keeps a link elsewhere, and the path names a new
		// file: only the dev/ino comparison notices.
		{"moved-away", func(t *testing.T, path string) {
			if err := os.Link(path, path+".kept"); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, make([]byte, 8192), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store.img")
			f, err := OpenFile(path, FileOptions{CreateSize: 8192})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := f.CheckLink(); err != nil {
				t.Fatalf("CheckLink on a healthy store: %v", err)
			}
			if err := f.WriteAt(make([]byte, 512), 0, false); err != nil {
				t.Fatal(err)
			}
			tc.breakIt(t, path)
			err = f.CheckLink()
			if !errors.Is(err, ErrStoreGone) || !errors.Is(err, syscall.EIO) {
				t.Fatalf("CheckLink after the store was %s: %v, want ErrStoreGone and EIO", tc.name, err)
			}
			if g := f.Gone(); !errors.Is(g, ErrStoreGone) {
				t.Errorf("Gone: %v", g)
			}
			for op, err := range map[string]error{
				"read":  f.ReadAt(make([]byte, 512), 0),
				"write": f.WriteAt(make([]byte, 512), 0, true),
				"flush": f.Flush(),
				"trim":  f.Trim(0, 4096),
			} {
				if !errors.Is(err, ErrStoreGone) || !errors.Is(err, syscall.EIO) {
					t.Errorf("%s on a gone store: %v, want ErrStoreGone and EIO", op, err)
				}
			}
		})
	}
}
