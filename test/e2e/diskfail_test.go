package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/blockrep/blockrep/internal/nbdclient"
	"github.com/blockrep/blockrep/internal/syncbuf"
)

// The EXT4_IOC_SHUTDOWN ioctl (linux/fs/ext4/ext4.h): _IOR('X', 125,
// __u32), and its flag that shuts the file system down without flushing
// the journal, as a disk that stops answering does.
const (
	ext4IOCShutdown          = 0x8004587d
	ext4GoingFlagsNoLogFlush = 0x2
)

// shutdownExt4 shuts the ext4 file system mounted at mnt down: from now on
// every read, write and fsync on it fails with EIO.
func shutdownExt4(t *testing.T, mnt string) {
	t.Helper()
	fd, err := unix.Open(mnt, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	flags := uint32(ext4GoingFlagsNoLogFlush)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ext4IOCShutdown, uintptr(unsafe.Pointer(&flags))); errno != 0 {
		t.Fatalf("EXT4_IOC_SHUTDOWN on %s: %v", mnt, errno)
	}
}

// loopExt4 is a small ext4 file system on a loop device over a sparse
// file; cleanup unmounts it and detaches the loop device, whatever the
// test did to it.
type loopExt4 struct {
	t       *testing.T
	Loop    string
	Mnt     string
	mounted bool
}

func newLoopExt4(t *testing.T, size int64) *loopExt4 {
	t.Helper()
	needRoot(t)
	for _, name := range []string{"losetup", "mkfs.ext4", "mount", "umount"} {
		tool(t, name)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	fs := &loopExt4{t: t, Mnt: filepath.Join(dir, "mnt")}
	fs.Loop = strings.TrimSpace(must(t, "losetup", "-f", "--show", img))
	if !strings.HasPrefix(fs.Loop, "/dev/loop") {
		t.Fatalf("losetup printed %q, want a /dev/loopN", fs.Loop)
	}
	t.Cleanup(func() {
		if fs.mounted {
			if _, stderr, err := run(t, "umount", fs.Mnt); err != nil {
				t.Errorf("umount %s: %v: %s; unmounting lazily", fs.Mnt, err, stderr)
				_, _, _ = run(t, "umount", "-l", fs.Mnt)
			}
		}
		if _, stderr, err := run(t, "losetup", "-d", fs.Loop); err != nil {
			t.Errorf("losetup -d %s: %v: %s", fs.Loop, err, stderr)
		}
	})
	must(t, "mkfs.ext4", "-q", "-F", fs.Loop)
	if err := os.Mkdir(fs.Mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	fs.mount()
	return fs
}

func (fs *loopExt4) mount() {
	fs.t.Helper()
	must(fs.t, "mount", "-t", "ext4", fs.Loop, fs.Mnt)
	fs.mounted = true
}

func (fs *loopExt4) umount() {
	fs.t.Helper()
	must(fs.t, "umount", fs.Mnt)
	fs.mounted = false
}

// eventsJSON runs blockctl events -o json against d until stop.
type eventsJSON struct {
	out  syncbuf.Buffer
	cmd  chan error
	stop context.CancelFunc
}

func watchEventsJSON(t *testing.T, d *daemon) *eventsJSON {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e := &eventsJSON{cmd: make(chan error, 1), stop: cancel}
	cmd := d.blockctlCmd(ctx, "events", "-o", "json")
	cmd.Stdout = &e.out
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { e.cmd <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel()
		<-e.cmd
	})
	return e
}

type eventJSON struct {
	Kind    string `json:"kind"`
	Volume  string `json:"volume"`
	Old     string `json:"old"`
	New     string `json:"new"`
	Detail  string `json:"detail"`
	Initial bool   `json:"initial"`
}

// find returns the first event (not of the initial state) of kind whose
// new value is value.
func (e *eventsJSON) find(t *testing.T, kind, value string) *eventJSON {
	t.Helper()
	for _, line := range strings.Split(e.out.String(), "\n") {
		if line == "" {
			continue
		}
		var ev eventJSON
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("blockctl events -o json printed %q: %v", line, err)
		}
		if ev.Kind == kind && ev.New == value && !ev.Initial {
			return &ev
		}
	}
	return nil
}

// TestHAPrimaryDiskFails shuts down the file system under the primary's
// store (EXT4_IOC_SHUTDOWN, no journal flush: from then on every read,
// write and fsync fails with EIO) while eight writers send FUA writes
// through a front that follows the primary, like a multipath client. The
// primary detaches its disk (Diskless), the cluster records it and
// promotes node2 at the next epoch, the writers go on through node2, and
// node2 holds every write the front acknowledged: no acknowledged write is
// lost. Status, the cluster state, events and the log show the failure.
// With its file system repaired (unmount, mount) node1 restarts
// Inconsistent, not UpToDate, and is fully resynced from node2.
func TestHAPrimaryDiskFails(t *testing.T) {
	const (
		size    = 64 * MiB
		extent  = 4 * MiB
		workers = 8
	)
	fs := newLoopExt4(t, 128*MiB) // its cleanup runs after the daemons'
	c := startHA(t, haOptions{Size: size, Paths: map[string]string{"node1": filepath.Join(fs.Mnt, "vol0.img")}})
	n1, n2 := c.N1, c.N2
	e0 := c.waitPair(t, n1, n2).repl().Epoch
	ev := watchEventsJSON(t, n1)
	m := startMultipath(t, size, n1, n2)

	var offsets []int64
	for _, e := range []int64{1, 6, 13} {
		for o := int64(0); o < extent; o += 16 * 1024 {
			offsets = append(offsets, e*extent+o)
		}
	}
	var (
		stop   atomic.Bool
		wg     sync.WaitGroup
		seq    atomic.Uint64
		errsMu sync.Mutex
		errs   []error
	)
	for k := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(k), 11))
			buf := make([]byte, stampSize)
			for !stop.Load() {
				off := offsets[k+workers*rng.IntN(len(offsets)/workers)]
				stamp(buf, seq.Add(1), off)
				if err := m.WriteAt(buf, off, true); err != nil {
					errsMu.Lock()
					errs = append(errs, err)
					errsMu.Unlock()
					return
				}
			}
		})
	}
	waitAcks := func(node string, n int64) {
		t.Helper()
		deadline := time.Now().Add(haWait)
		for m.ackCounts()[node] < n {
			errsMu.Lock()
			failed := len(errs)
			errsMu.Unlock()
			if failed > 0 || time.Now().After(deadline) {
				stop.Store(true)
				wg.Wait()
				t.Fatalf("waiting for %d writes acknowledged by %s: acknowledged %v, errors %v", n, node, m.ackCounts(), errs)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitAcks("node1", 300)
	shutdownExt4(t, fs.Mnt)
	shut := time.Now()
	t.Logf("file system under node1's store shut down after %v acknowledged writes", m.ackCounts())
	waitAcks("node2", 300)
	moved := time.Since(shut)
	stop.Store(true)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("writers failed: %v", errs)
	}
	t.Logf("writes acknowledged %v; %d sent again to another path; node2 served writes within %v of the shutdown",
		m.ackCounts(), m.retries.Load(), moved.Round(time.Millisecond))

	// The cluster moved the volume: node2 primary at the next epoch,
	// node1's replica Diskless, node1 demoted, its status naming the
	// failure.
	s2 := waitHA(t, n2, "node2 promoted after node1's disk failed", func(s *haStatusJSON) bool {
		v := s.clusterVolume()
		return s.repl().Role == "primary" && v != nil && v.Primary == "node2" && v.Disks["node1"] == "Diskless"
	})
	if r, v := s2.repl(), s2.clusterVolume(); r.Epoch != e0+1 || v.Epoch != e0+1 {
		t.Errorf("node2 is primary at epoch %d (cluster %d), want %d", r.Epoch, v.Epoch, e0+1)
	}
	var failed string
	waitHA(t, n1, "node1 Diskless and secondary", func(s *haStatusJSON) bool {
		r := s.repl()
		failed = r.DiskFailed
		return r.Role == "secondary" && r.Disk == "Diskless" && r.DiskFailed != ""
	})
	if !strings.Contains(failed, fs.Mnt) {
		t.Errorf("node1's disk_failed %q does not name the store's path under %s", failed, fs.Mnt)
	}
	text, _, err := n1.blockctlResult(t, "status")
	if err != nil || !strings.Contains(text, "local disk failed") {
		t.Errorf("blockctl status on node1 (err %v) does not say the disk failed:\n%s", err, text)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(haWait)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not happen within %v; events:\n%s", what, haWait, ev.out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("an io-error failed event and a disk Diskless event on node1", func() bool {
		return ev.find(t, "io-error", "failed") != nil && ev.find(t, "disk", "Diskless") != nil
	})
	if e := ev.find(t, "io-error", "failed"); !strings.Contains(e.Detail, fs.Mnt) {
		t.Errorf("the io-error event's detail %q does not name the path", e.Detail)
	}
	if log, err := os.ReadFile(n1.LogPath); err != nil || !bytes.Contains(log, []byte("local disk failed: detached")) {
		t.Errorf("node1's log does not say the disk was detached (err %v)", err)
	}

	// Every write the front acknowledged is on node2.
	shadow := m.shadowCopy()
	nc := dialNBD(t, n2)
	buf := make([]byte, 1*MiB)
	lost := 0
	for off := int64(0); off < size; off += int64(len(buf)) {
		if err := nc.ReadAt(buf, off); err != nil {
			t.Fatalf("reading node2 at %d: %v", off, err)
		}
		for b := 0; b < len(buf); b += stampSize {
			if !bytes.Equal(buf[b:b+stampSize], shadow[off+int64(b):off+int64(b)+stampSize]) {
				lost++
				if lost <= 5 {
					t.Errorf("block at %d on node2 differs from the last write acknowledged there", off+int64(b))
				}
			}
		}
	}
	t.Logf("node2 holds every acknowledged write: %d blocks differ (of %d)", lost, size/stampSize)
	if lost > 0 {
		t.Errorf("%d acknowledged blocks lost", lost)
	}

	// node1, with its file system back, restarts Inconsistent and is fully
	// resynced: it never trusts the store that failed.
	n1.Stop()
	fs.umount()
	fs.mount()
	n1.Start()
	c.waitPair(t, n2, n1)
	// The resync may be over before a status is read: the log of this
	// start says what the replica opened as.
	log := readFile(t, n1.LogPath)
	_, second, _ := bytes.Cut(log, []byte("start 2 of blockrepd"))
	opened := ""
	for _, l := range strings.Split(string(second), "\n") {
		if strings.Contains(l, `msg="replica opened"`) {
			opened = l
			break
		}
	}
	if !strings.Contains(opened, "disk=Inconsistent") {
		t.Errorf("node1 restarted after its disk failed did not open Inconsistent: %q", opened)
	}
	s1 := waitHA(t, n1, "status", func(*haStatusJSON) bool { return true })
	if d := s1.repl().peer("node2").Decision; !strings.Contains(d, "full") {
		t.Errorf("node1's connect decision %q, want a full resync", d)
	}
	n1.Stop()
	n2.Stop()
	c.W.Stop()
	sameVolumes(t, n2, n1)
	p2 := n2.VolumePath(clusterVolume)
	if !bytes.Equal(readRange(t, p2, 0, volumeDataSize(t, p2)), shadow) {
		t.Error("node2's backing file differs from what the front acknowledged")
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(fmt.Errorf("reading %s: %w", path, err))
	}
	return b
}

// TestENOSPCLogged fills the small file system under a sparse volume's
// backing file through NBD: the writes that do not fit get ENOSPC (the
// connection keeps working), and the daemon's log says so, naming the
// backing file, a bounded number of times.
func TestENOSPCLogged(t *testing.T) {
	fs := newLoopExt4(t, 16*MiB)
	path := filepath.Join(fs.Mnt, "vol0.img")
	d := startDaemon(t, daemonSpec{Volumes: []volumeSpec{{Name: "vol0", Size: 64 * MiB, Path: path}}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := nbdclient.Dial(ctx, d.Addr(), "vol0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := bytes.Repeat([]byte{0xa5}, 1*MiB)
	full := 0
	for off := int64(0); off < 48*MiB; off += int64(len(buf)) {
		err := c.WriteAt(buf, off, false)
		var e nbdclient.Errno
		switch {
		case err == nil:
		case errors.As(err, &e) && e == 28:
			full++
		default:
			t.Fatalf("write at %d: %v, want success or ENOSPC", off, err)
		}
	}
	if full == 0 {
		t.Fatal("48 MiB fit on a 16 MiB file system: the test did not fill it")
	}
	if err := c.ReadAt(buf, 0); err != nil {
		t.Fatalf("a read after ENOSPC: %v", err)
	}
	log, err := os.ReadFile(d.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(log), "\n") {
		if strings.Contains(l, "no space left on the file system under the store") {
			lines = append(lines, l)
		}
	}
	t.Logf("%d writes of 1 MiB got ENOSPC; %d log lines about it", full, len(lines))
	if len(lines) == 0 || !strings.Contains(lines[0], path) {
		t.Fatalf("no log line about ENOSPC naming %s:\n%s", path, log)
	}
	if len(lines) > full || len(lines) > 10 {
		t.Errorf("%d log lines for %d failed writes: not rate-limited", len(lines), full)
	}
}

// TestHASecondaryDiskFails shuts down the file system under the
// secondary's store while eight writers send FUA writes to the primary.
// The secondary detaches its disk, the cluster records it Diskless (it is
// never promoted), and the primary goes on: every write keeps being
// acknowledged (after the primary committed the peer below UpToDate), and
// the primary holds all of them.
func TestHASecondaryDiskFails(t *testing.T) {
	const extent = 4 * MiB
	fs := newLoopExt4(t, 128*MiB)
	c := startHA(t, haOptions{Size: 64 * MiB, Paths: map[string]string{"node2": filepath.Join(fs.Mnt, "vol0.img")}})
	n1, n2 := c.N1, c.N2
	e0 := c.waitPair(t, n1, n2).repl().Epoch
	var offsets []int64
	for _, e := range []int64{2, 9} {
		for o := int64(0); o < extent; o += 16 * 1024 {
			offsets = append(offsets, e*extent+o)
		}
	}
	client := dialNBD(t, n1)
	stop := make(chan struct{})
	w := startStampWriter(client, offsets, 8, true, stop)
	waitWrites := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(haWait)
		for w.acks.Load() < n {
			w.mu.Lock()
			errs := w.errs
			w.mu.Unlock()
			if len(errs) > 0 || time.Now().After(deadline) {
				close(stop)
				w.wg.Wait()
				t.Fatalf("waiting for %d acknowledged writes: %d, errors %v", n, w.acks.Load(), errs)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitWrites(300)
	shutdownExt4(t, fs.Mnt)
	at := w.acks.Load()
	waitWrites(at + 300)
	close(stop)
	w.wg.Wait()
	if len(w.errs) > 0 {
		t.Fatalf("the primary failed writes after the secondary's disk failed: %v", w.errs)
	}
	s := waitHA(t, n1, "node2 Diskless in the cluster, node1 still primary", func(s *haStatusJSON) bool {
		v := s.clusterVolume()
		return v != nil && v.Disks["node2"] == "Diskless" && v.Primary == "node1" && v.Epoch == e0 && s.repl().Role == "primary"
	})
	t.Logf("%d writes acknowledged, %d after the shutdown; cluster disks %v", w.acks.Load(), w.acks.Load()-at, s.clusterVolume().Disks)
	waitHA(t, n2, "node2 Diskless", func(s *haStatusJSON) bool {
		return s.repl().Disk == "Diskless" && strings.Contains(s.repl().DiskFailed, fs.Mnt)
	})
	if n := checkStamps(t, dialNBD(t, n1), w, "the primary node1"); n != 0 {
		t.Errorf("%d offsets hold a write that was in flight: every write was acknowledged", n)
	}
}
