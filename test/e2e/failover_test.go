package e2e

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockrep/blockrep/internal/nbdclient"
)

// stampSize is the size of one stamped write.
const stampSize = 4096

var stampMagic = [8]byte{'B', 'R', 'S', 'T', 'A', 'M', 'P', '1'}

// stamp fills a block with a write's identity, (seq, offset), and a body
// derived from both, so that a block read back names the write it holds
// and a torn or foreign block is recognised.
func stamp(b []byte, seq uint64, off int64) {
	copy(b, stampMagic[:])
	binary.LittleEndian.PutUint64(b[8:], seq)
	binary.LittleEndian.PutUint64(b[16:], uint64(off))
	x := seq*0x9E3779B97F4A7C15 ^ uint64(off)
	for i := 24; i+8 <= len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(b[i:], x)
	}
}

// readStamp returns the seq of the write a block holds: 0 for a block of
// zeroes (never written), an error for anything that is not exactly one
// write's stamp for this offset.
func readStamp(b []byte, off int64) (uint64, error) {
	if bytes.Count(b, []byte{0}) == len(b) {
		return 0, nil
	}
	if !bytes.Equal(b[:8], stampMagic[:]) {
		return 0, fmt.Errorf("no stamp (starts %x)", b[:24])
	}
	seq := binary.LittleEndian.Uint64(b[8:])
	if o := int64(binary.LittleEndian.Uint64(b[16:])); o != off {
		return 0, fmt.Errorf("stamp of seq %d is for offset %d", seq, o)
	}
	want := make([]byte, len(b))
	stamp(want, seq, off)
	if !bytes.Equal(b, want) {
		return 0, fmt.Errorf("seq %d: body differs from the stamp's (torn write?)", seq)
	}
	return seq, nil
}

// stampWriter writes stamped blocks to a set of offsets with many writes
// in flight, and records per offset the last acknowledged write and the
// write in flight (at most one per offset: each offset belongs to one
// worker, which writes it synchronously).
type stampWriter struct {
	offsets []int64
	seq     atomic.Uint64
	acks    atomic.Int64

	mu       sync.Mutex
	acked    map[int64]uint64 // offset -> newest acknowledged seq
	inflight map[int64]uint64 // offset -> seq issued, outcome unknown
	errs     []error
	wg       sync.WaitGroup
}

// startStampWriter starts workers writing until their connection fails
// or stop is closed; with fua every write is sent with FUA (acknowledged
// means durable on the primary and on every replica listed UpToDate).
// touched returns the extents (of extent bytes) of the offsets that were
// acknowledged or in flight: those a returning primary's activity log
// covers. Read it once the writers stopped.
func (w *stampWriter) touched(extent int64) map[int64]bool {
	t := map[int64]bool{}
	for o := range w.acked {
		t[o/extent] = true
	}
	for o := range w.inflight {
		t[o/extent] = true
	}
	return t
}

func startStampWriter(c *nbdclient.Client, offsets []int64, workers int, fua bool, stop <-chan struct{}) *stampWriter {
	w := &stampWriter{offsets: offsets, acked: map[int64]uint64{}, inflight: map[int64]uint64{}}
	for k := 0; k < workers; k++ {
		var mine []int64
		for i := k; i < len(offsets); i += workers {
			mine = append(mine, offsets[i])
		}
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			rng := rand.New(rand.NewPCG(uint64(k), 7))
			buf := make([]byte, stampSize)
			for {
				select {
				case <-stop:
					return
				default:
				}
				off := mine[rng.IntN(len(mine))]
				seq := w.seq.Add(1)
				stamp(buf, seq, off)
				w.mu.Lock()
				w.inflight[off] = seq
				w.mu.Unlock()
				err := c.WriteAt(buf, off, fua)
				w.mu.Lock()
				if err != nil {
					// Outcome unknown: the write stays in flight.
					w.errs = append(w.errs, err)
					w.mu.Unlock()
					return
				}
				delete(w.inflight, off)
				w.acked[off] = seq
				w.mu.Unlock()
				w.acks.Add(1)
			}
		}()
	}
	return w
}

// TestReplicationPrimaryKill9 kills a primary with SIGKILL while a writer
// has many stamped 4 KiB writes in flight, promotes the secondary, and
// checks every offset: the new primary holds the newest acknowledged write
// or the one that was in flight, never anything older. The old primary
// comes back as secondary and receives only its activity-log extents and
// what the new primary wrote, not the whole volume.
func TestReplicationPrimaryKill9(t *testing.T) {
	const (
		size    = 128 * MiB
		extent  = 4 * MiB // al_extent_size's default
		workers = 16
	)
	// node1 dials node2 through the proxy: what node2 sends node1 is the
	// proxy's "down" count. node2 may go on alone once promoted: its peer
	// is dead and no quorum exists to outdate it.
	c := startCluster(t, clusterSpec{Nodes: 2, Size: size, Primary: 0, Proxied: [][2]int{{0, 1}},
		Configure: func(i int, s *daemonSpec) {
			if i == 1 {
				s.Replication.ContinueAlone = true
			}
		}})
	n1, n2 := c.Nodes[0], c.Nodes[1]
	px := c.proxy(0, 1)
	waitInSync(t, n1, "node2")

	// Offsets: every 16 KiB of three extents far apart.
	extents := []int64{3, 11, 26}
	var offsets []int64
	for _, e := range extents {
		for o := int64(0); o < extent; o += 16 * 1024 {
			offsets = append(offsets, e*extent+o)
		}
	}
	client := dialNBD(t, n1)
	stop := make(chan struct{})
	w := startStampWriter(client, offsets, workers, false, stop)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		w.wg.Wait()
	}()
	deadline := time.Now().Add(waitTimeout)
	for w.acks.Load() < 3000 {
		if time.Now().After(deadline) {
			t.Fatalf("the writer got only %d acknowledgements in %v (errors: %v)", w.acks.Load(), waitTimeout, w.errs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	n1.Kill9()
	close(stop)
	w.wg.Wait()
	client.Close()
	t.Logf("writer: %d writes acknowledged, %d in flight at the kill, %d offsets acknowledged", w.acks.Load(), len(w.inflight), len(w.acked))
	if len(w.inflight) == 0 {
		t.Logf("no write was in flight at the kill (the check below is weaker)")
	}
	touched := w.touched(extent)

	// Fail over: node2 becomes primary.
	waitPeer(t, n2, "node1", "link to the killed primary down", func(p *peerStatusJSON) bool { return p.Connection != "Connected" })
	n2.Blockctl(t, "primary")
	r := waitRepl(t, n2, "node2 primary", func(r *replStatusJSON) bool { return r.Role == "primary" })
	t.Logf("node2 promoted: epoch %d, disk %s", r.Epoch, r.Disk)

	// Every acknowledged write is there (or the write in flight after it).
	newer := checkStamps(t, dialNBD(t, n2), w, "the new primary")
	t.Logf("new primary: every acknowledged write present; %d offsets hold the write that was in flight", newer)

	// The new primary writes a little more, away from the writer's extents.
	newBytes := writeScattered(t, n2, 16, 64*1024, 1, 51)
	if p := repl(t, n2).peer("node1"); p.OutOfSyncBytes != 1*MiB {
		t.Errorf("node2 has %d bytes out of sync for node1 after writing 1 MiB, want %d", p.OutOfSyncBytes, 1*MiB)
	}

	// The old primary returns as secondary and resyncs.
	_, down0 := px.Counts()
	n1.spec.Volumes[0].Role = "secondary"
	n1.Start()
	waitInSync(t, n2, "node1")
	r1 := waitRepl(t, n1, "node1 secondary UpToDate, connected", func(r *replStatusJSON) bool {
		p := r.peer("node2")
		return r.Role == "secondary" && r.Disk == "UpToDate" && p != nil && p.Connection == "Connected"
	})
	_, down1 := px.Counts()
	received := down1 - down0
	exts := slices.Sorted(maps.Keys(touched))
	bound := (int64(len(touched))*extent + newBytes) * 105 / 100
	t.Logf("old primary's resync: %d bytes on the wire from node2 to node1; bound (%d extents %v x 4 MiB + %d new bytes) x 1.05 = %d; volume %d; decision %q",
		received, len(touched), exts, newBytes, bound, size, r1.peer("node2").Decision)
	if received > bound {
		t.Errorf("the returning old primary received %d bytes, more than %d", received, bound)
	}
	if received < newBytes {
		t.Errorf("the returning old primary received %d bytes, fewer than the %d the new primary wrote: was the proxy bypassed?", received, newBytes)
	}
	if bound >= size/2 {
		t.Fatalf("test setup: the bound %d is not well below the volume size %d", bound, size)
	}
	sameVolumes(t, n2, n1)
}

// TestReplicationPrimaryRestartAL kills a primary with SIGKILL while a
// writer has many stamped writes in flight and restarts it, still primary:
// it finds its activity log, and the secondary receives those extents (not
// the whole volume) until both files are identical. Every acknowledged
// write is still there.
func TestReplicationPrimaryRestartAL(t *testing.T) {
	const (
		size   = 128 * MiB
		extent = 4 * MiB
	)
	c := startCluster(t, clusterSpec{Nodes: 2, Size: size, Primary: 0, Proxied: [][2]int{{0, 1}}})
	n1, n2 := c.Nodes[0], c.Nodes[1]
	px := c.proxy(0, 1)
	waitInSync(t, n1, "node2")

	var offsets []int64
	for _, e := range []int64{5, 20} {
		for o := int64(0); o < extent; o += 8 * 1024 {
			offsets = append(offsets, e*extent+o)
		}
	}
	client := dialNBD(t, n1)
	stop := make(chan struct{})
	w := startStampWriter(client, offsets, 16, false, stop)
	deadline := time.Now().Add(waitTimeout)
	for w.acks.Load() < 2000 {
		if time.Now().After(deadline) {
			close(stop)
			w.wg.Wait()
			t.Fatalf("the writer got only %d acknowledgements in %v (errors: %v)", w.acks.Load(), waitTimeout, w.errs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	n1.Kill9()
	close(stop)
	w.wg.Wait()
	client.Close()
	t.Logf("writer: %d writes acknowledged, %d in flight at the kill", w.acks.Load(), len(w.inflight))

	up0, _ := px.Counts()
	n1.Start()
	r := waitInSync(t, n1, "node2")
	up1, _ := px.Counts()
	p := r.peer("node2")
	bound := int64(2*extent) * 105 / 100
	t.Logf("restarted primary: decision %q; %d bytes on the wire to node2 (bound %d, volume %d)", p.Decision, up1-up0, bound, size)
	if r.Role != "primary" {
		t.Errorf("node1 restarted as %s, want primary", r.Role)
	}
	if sent := up1 - up0; sent > bound {
		t.Errorf("after the crash node1 sent node2 %d bytes, more than its two activity-log extents (%d with 5%%)", sent, bound)
	} else if sent < extent {
		t.Errorf("after the crash node1 sent node2 only %d bytes: the activity-log extents, which hold data, were not resynced", sent)
	}
	sameVolumes(t, n1, n2)

	// Every acknowledged write survived on the restarted primary.
	c1 := dialNBD(t, n1)
	buf := make([]byte, stampSize)
	lost := 0
	for _, off := range offsets {
		if err := c1.ReadAt(buf, off); err != nil {
			t.Fatalf("reading offset %d: %v", off, err)
		}
		got, err := readStamp(buf, off)
		acked, wasAcked := w.acked[off]
		inflight, wasInflight := w.inflight[off]
		ok := err == nil && ((wasInflight && got == inflight) || (wasAcked && got == acked) || (!wasAcked && got == 0))
		if !ok {
			lost++
			if lost <= 5 {
				t.Errorf("offset %d after the restart: write %d (%v); acknowledged %d (%v), in flight %d (%v)", off, got, err, acked, wasAcked, inflight, wasInflight)
			}
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d offsets lost their newest acknowledged write", lost, len(offsets))
	}
}
