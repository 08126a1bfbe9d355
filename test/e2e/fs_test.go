package e2e

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fuseAttach is a volume attached as a block device the only way this
// sandbox allows: nbdfuse exposes it as a file, losetup turns the file into
// /dev/loopN. Detach undoes both and is safe to call more than once.
type fuseAttach struct {
	t       *testing.T
	dir     string // nbdfuse mount point
	file    string // dir/disk
	nbdfuse *exec.Cmd
	exited  chan struct{}
	Loop    string
}

// attachFuse runs nbdfuse on uri and sets up a loop device over its file.
// Cleanup (registered here, so it runs before the daemon stops) detaches
// both even when the test fails half-way.
func attachFuse(t *testing.T, uri string) *fuseAttach {
	t.Helper()
	a := &fuseAttach{t: t, dir: filepath.Join(t.TempDir(), "fuse")}
	a.file = filepath.Join(a.dir, "disk")
	if err := os.Mkdir(a.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	pidfile := filepath.Join(filepath.Dir(a.dir), "nbdfuse.pid")
	a.nbdfuse = exec.Command(tool(t, "nbdfuse"), "-P", pidfile, a.file, uri)
	var stderr bytes.Buffer
	a.nbdfuse.Stdout, a.nbdfuse.Stderr = &stderr, &stderr
	t.Logf("$ %s &", strings.Join(a.nbdfuse.Args, " "))
	if err := a.nbdfuse.Start(); err != nil {
		t.Fatal(err)
	}
	a.exited = make(chan struct{})
	go func() {
		_ = a.nbdfuse.Wait()
		close(a.exited)
	}()
	t.Cleanup(a.Detach)

	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(pidfile); err == nil {
			break
		}
		select {
		case <-a.exited:
			t.Fatalf("nbdfuse exited before it was ready: %v\n%s", a.nbdfuse.ProcessState, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nbdfuse did not write its pidfile within 20s\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	a.Loop = strings.TrimSpace(must(t, "losetup", "-f", "--show", a.file))
	if !strings.HasPrefix(a.Loop, "/dev/loop") {
		t.Fatalf("losetup printed %q, want a /dev/loopN", a.Loop)
	}
	return a
}

// Detach removes the loop device and unmounts nbdfuse, then makes sure the
// nbdfuse process is gone.
func (a *fuseAttach) Detach() {
	t := a.t
	if a.Loop != "" {
		if _, stderr, err := run(t, "losetup", "-d", a.Loop); err != nil {
			t.Errorf("losetup -d %s: %v: %s", a.Loop, err, stderr)
		}
		a.Loop = ""
	}
	if a.nbdfuse == nil {
		return
	}
	for i := 0; ; i++ {
		_, stderr, err := run(t, "fusermount3", "-u", a.dir)
		if err == nil {
			break
		}
		if i == 20 {
			t.Errorf("fusermount3 -u %s: %v: %s; killing nbdfuse", a.dir, err, stderr)
			_ = a.nbdfuse.Process.Kill()
			_, _, _ = run(t, "fusermount3", "-u", "-z", a.dir)
			break
		}
		time.Sleep(250 * time.Millisecond) // the loop device may still hold the file
	}
	select {
	case <-a.exited:
	case <-time.After(15 * time.Second):
		t.Errorf("nbdfuse did not exit within 15s of its unmount; killing it")
		_ = a.nbdfuse.Process.Kill()
		<-a.exited
	}
	a.nbdfuse = nil
}

// mountExt4 mounts dev on a new directory; cleanup unmounts it (lazily if
// need be). It returns the mount point and an unmount function that fails
// the test if the unmount fails.
func mountExt4(t *testing.T, dev string) (string, func()) {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	must(t, "mount", "-t", "ext4", dev, mnt)
	mounted := true
	t.Cleanup(func() {
		if mounted {
			if _, stderr, err := run(t, "umount", mnt); err != nil {
				t.Errorf("umount %s: %v: %s; unmounting lazily", mnt, err, stderr)
				_, _, _ = run(t, "umount", "-l", mnt)
			}
		}
	})
	return mnt, func() {
		t.Helper()
		if mounted {
			must(t, "umount", mnt)
			mounted = false
		}
	}
}

// TestExt4OverNbdfuse puts an ext4 filesystem on a volume through nbdfuse
// and a loop device, writes files, checks the filesystem with e2fsck (via
// the loop device and then straight from the volume's backing file), and
// mounts it again through a fresh nbdfuse to verify the files.
func TestExt4OverNbdfuse(t *testing.T) {
	needRoot(t)
	for _, name := range []string{"nbdfuse", "losetup", "mkfs.ext4", "e2fsck", "mount", "umount", "fusermount3"} {
		tool(t, name)
	}
	const size = 256 * MiB
	d := startDaemon(t, daemonSpec{Volumes: []volumeSpec{{Name: "vol0", Size: size}}})

	// Files with known content: many small ones and a few large ones.
	files := map[string][]byte{}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 40; i++ {
		n := 1 + rng.IntN(64*1024)
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		files[fmt.Sprintf("small/f%02d", i)] = b
	}
	for i, n := range []int{4 * MiB, 16 * MiB, 3*MiB + 12345} {
		b := make([]byte, n)
		for j := 0; j < n; j += 8 {
			v := rng.Uint64()
			for k := 0; k < 8 && j+k < n; k++ {
				b[j+k] = byte(v >> (8 * k))
			}
		}
		files[fmt.Sprintf("big/b%d", i)] = b
	}

	a := attachFuse(t, d.URI("vol0"))
	must(t, "mkfs.ext4", "-q", "-F", "-L", "e2e", a.Loop)
	mnt, umount := mountExt4(t, a.Loop)
	for name, b := range files {
		p := filepath.Join(mnt, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Delete a file, so that the filesystem discards (trims) its blocks.
	if err := os.WriteFile(filepath.Join(mnt, "doomed"), bytes.Repeat([]byte{0xdd}, 8*MiB), 0o644); err != nil {
		t.Fatal(err)
	}
	must(t, "sync", "-f", mnt)
	if err := os.Remove(filepath.Join(mnt, "doomed")); err != nil {
		t.Fatal(err)
	}
	must(t, "sync")
	umount()
	must(t, "e2fsck", "-fn", a.Loop)
	a.Detach()

	// The filesystem is in the daemon's store, not just in some cache
	// between here and there.
	must(t, "e2fsck", "-fn", d.VolumePath("vol0"))

	// Attach afresh and verify every file.
	b := attachFuse(t, d.URI("vol0"))
	mnt2, umount2 := mountExt4(t, b.Loop)
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(mnt2, name))
		if err != nil {
			t.Errorf("after remount: %v", err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("after remount: %s differs (%d bytes, want %d)", name, len(got), len(want))
		}
	}
	if _, err := os.Stat(filepath.Join(mnt2, "doomed")); !os.IsNotExist(err) {
		t.Errorf("deleted file: stat says %v, want not exist", err)
	}
	umount2()
	must(t, "e2fsck", "-fn", b.Loop)
	b.Detach()

}
