//go:build linux

package nfs3

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/blockrep/blockrep/internal/rpcclient"
	"github.com/blockrep/blockrep/nfsexport/export"
)

func isOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

// TestFDCacheRefs: an evicted fd stays open while a call holds it and is
// closed when the last one releases it; the bound evicts the least
// recently used.
func TestFDCacheRefs(t *testing.T) {
	c := newFDCache(2)
	open := func() int {
		fd, err := unix.Open("/", unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	a := c.add(fdKey{"a", unix.O_PATH}, open())
	c.release(a)
	b := c.add(fdKey{"b", unix.O_PATH}, open()) // held
	if got, ok := c.get("a", unix.O_PATH); !ok || got != a {
		t.Fatal("a not cached")
	} else {
		c.release(got)
	}
	extra := open()
	if dup := c.add(fdKey{"a", unix.O_PATH}, extra); dup != a || isOpen(extra) {
		t.Fatal("a second add of a cached key did not return the entry and close the new fd")
	} else {
		c.release(dup)
	}
	cc := c.add(fdKey{"c", unix.O_PATH}, open()) // evicts b (least recent), which is held
	c.release(cc)
	if _, ok := c.get("b", unix.O_PATH); ok {
		t.Fatal("b still cached beyond the bound")
	}
	if !isOpen(b.fd) {
		t.Fatal("the evicted b was closed while a call held it")
	}
	c.release(b)
	if isOpen(b.fd) {
		t.Fatal("the evicted b stayed open after its release")
	}
	c.evict("a")
	if isOpen(a.fd) {
		t.Fatal("evict left an unheld fd open")
	}
	c.close()
	if isOpen(cc.fd) {
		t.Fatal("close left a cached fd open")
	}
	late := c.add(fdKey{"d", unix.O_PATH}, open())
	c.release(late)
	if isOpen(late.fd) {
		t.Fatal("after close, add cached an fd")
	}
}

// TestCachedFileRemoved: a file whose fd the server keeps is STALE once
// removed, whether through NFS or on the server itself.
func TestCachedFileRemoved(t *testing.T) {
	s := newServer(t, "ext4", export.Options{Squash: export.NoRootSquash})
	c := s.client(rpcclient.Root)
	for _, viaNFS := range []bool{true, false} {
		os.WriteFile(filepath.Join(s.dir, "f"), []byte("data"), 0o644)
		_, h := c.lookup(s.root, "f")
		if st, data, _ := c.read(h, 0, 10); st != OK || string(data) != "data" {
			t.Fatalf("READ: %v %q", st, data)
		}
		if st, _ := c.getattr(h); st != OK {
			t.Fatalf("GETATTR: %v", st)
		}
		if viaNFS {
			wantStatus(t, "REMOVE", c.dirop(ProcRemove, s.root, "f"), OK)
		} else {
			os.Remove(filepath.Join(s.dir, "f"))
		}
		if st, _ := c.getattr(h); st != ErrStale {
			t.Fatalf("removed (via NFS %v): GETATTR %v, want STALE", viaNFS, st)
		}
		if st, _, _ := c.read(h, 0, 10); st != ErrStale {
			t.Fatalf("removed (via NFS %v): READ %v, want STALE", viaNFS, st)
		}
	}
}

// TestFDCacheOneFDPerFile: a file read after its LOOKUP keeps one fd, the
// readable one, which then serves GETATTR too; a directory's O_PATH fd
// serves its directory operations.
func TestFDCacheOneFDPerFile(t *testing.T) {
	c := newFDCache(10)
	open := func(flags int) int {
		fd, err := unix.Open("/etc/hostname", flags|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	p := c.add(fdKey{"f", unix.O_PATH}, open(unix.O_PATH))
	c.release(p)
	r := c.add(fdKey{"f", unix.O_RDONLY}, open(unix.O_RDONLY))
	c.release(r)
	if isOpen(p.fd) || c.lru.Len() != 1 {
		t.Fatalf("the O_PATH fd survived the readable one: %d entries", c.lru.Len())
	}
	for _, flags := range []int{unix.O_PATH, unix.O_RDONLY} {
		if got, ok := c.get("f", flags); !ok || got != r {
			t.Fatalf("get flags %#x: %v %v, want the O_RDONLY entry", flags, got, ok)
		} else {
			c.release(got)
		}
	}
	if _, ok := c.get("f", unix.O_RDWR); ok {
		t.Fatal("a read-only fd served a write")
	}
	again := open(unix.O_PATH)
	if got := c.add(fdKey{"f", unix.O_PATH}, again); got != r || isOpen(again) || c.lru.Len() != 1 {
		t.Fatalf("a LOOKUP's O_PATH fd of a file open for reading was cached beside it (%d entries)", c.lru.Len())
	} else {
		c.release(got)
	}
	c.close()
}
