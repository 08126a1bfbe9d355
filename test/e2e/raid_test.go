package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/internal/nbdclient"
	"github.com/blockrep/blockrep/storeid"
)

// RAID crash test geometry. The test leaves raid_bitmap_region unset, so
// the write-intent region is raid.DefaultRegionSize (64 MiB) rounded down to
// whole stripes (raid.IntentRegionSize): with 3 data members of 64 KiB
// chunks, a stripe is 192 KiB and a region 341 stripes (65472 KiB). Members
// of 256 MiB (sparse: they cost nothing) make an array of 3 x 255 MiB (the
// first MiB of a member is its superblock and bitmap area), 12 regions; the
// writers touch 3 of them, so "resynced only the dirty regions" is
// distinguishable from "resynced the whole array".
const (
	raidMemberFile   = 256 * MiB
	raidChunk        = 64 * 1024
	raidDefaultIdeal = 64 * MiB // raid.DefaultRegionSize
	raidSector       = 4096
	// raidSpan is each writer's range: not a multiple of the stripe, so
	// the two writers of a region share a stripe (read-modify-write of
	// the same parity from two connections).
	raidSpan = 2560 * 1024
	// raidWritersPerRegion writers, each on its own connection.
	raidWritersPerRegion = 2
	// raidAcksBeforeKill: the kill comes once this many FUA writes were
	// acknowledged (and every writer had some).
	raidAcksBeforeKill   = 400
	raidAcksPerWriterMin = 20
	// Deadlines, only to catch hangs.
	raidReadyTimeout = 60 * time.Second
	raidPhaseTimeout = 2 * time.Minute
	raidScrubTimeout = 5 * time.Minute
)

// raidRegions are the write-intent regions the writers write in.
var raidRegions = []int64{1, 5, 9}

// TestRAIDCrash kills the daemon with SIGKILL while several connections
// write with FUA into a few write-intent regions of a RAID 5 or 6 volume,
// restarts it, and checks that the array assembles optimal, that opening
// it found it dirty and resynced only the dirty regions (not the whole
// array), that a scrub finds no parity mismatch, and that every
// acknowledged write reads back. A clean stop and start afterwards must
// report the array not dirty.
func TestRAIDCrash(t *testing.T) {
	for _, tc := range []struct {
		level   string
		members int
		parity  int
	}{
		{"raid5", 4, 1},
		{"raid6", 5, 2},
	} {
		t.Run(tc.level, func(t *testing.T) {
			testRAIDCrash(t, tc.level, tc.members, tc.parity)
		})
	}
}

func testRAIDCrash(t *testing.T, level string, members, parity int) {
	d := newDaemon(t, daemonSpec{})
	var paths []string
	for i := 0; i < members; i++ {
		paths = append(paths, filepath.Join(d.Dir, fmt.Sprintf("member%d.img", i)))
	}
	cfg := func() string { return raidConfig(d, level, paths) }

	// Geometry, as the node computes it.
	data := int64(members - parity)
	stripe := int64(raidChunk) * data
	regionSize := max(1, int64(raidDefaultIdeal)/stripe) * stripe
	memberSize := int64((raidMemberFile - MiB) / raidChunk * raidChunk)
	arraySize := memberSize * data
	regions := (arraySize + regionSize - 1) / regionSize
	wholeArrayMemberBytes := memberSize * int64(members)
	regionMemberBytes := regionSize / data * int64(members)

	startRAIDDaemon(t, d, cfg)
	st := raidStatusOf(t, d)
	t.Logf("created: level %s health %s chunk %d member_size %d; region size %d, %d regions, whole array %d member bytes",
		st.Level, st.Health, st.ChunkSize, st.MemberSize, regionSize, regions, wholeArrayMemberBytes)
	if !st.Recovery.Created {
		t.Errorf("first start: recovery.created = false, want true (the members did not exist)")
	}
	if st.Level != level || st.Health != "optimal" || len(st.Members) != members {
		t.Fatalf("first start: level %q health %q %d members, want %s optimal %d members", st.Level, st.Health, len(st.Members), level, members)
	}
	if st.ChunkSize != raidChunk || st.MemberSize != memberSize {
		t.Fatalf("geometry: chunk %d member_size %d, want %d and %d (the region arithmetic of this test assumes them)", st.ChunkSize, st.MemberSize, raidChunk, memberSize)
	}
	if regions < int64(2*len(raidRegions)) {
		t.Fatalf("the array has %d regions: too few to tell a partial resync from a full one", regions)
	}

	// The writers: raidWritersPerRegion per region, adjacent spans.
	var spans []raidSpanWriter
	for _, r := range raidRegions {
		for k := 0; k < raidWritersPerRegion; k++ {
			start := r*regionSize + MiB + int64(k)*raidSpan
			if start+raidSpan > (r+1)*regionSize {
				t.Fatalf("span of region %d does not fit in it", r)
			}
			spans = append(spans, raidSpanWriter{start: start, shadow: make([]byte, raidSpan)})
		}
	}
	touched := map[int64]bool{}
	for i := range spans {
		s := &spans[i]
		touched[s.start/regionSize] = true
		touched[(s.start+raidSpan-1)/regionSize] = true
	}

	ctx, cancel := context.WithTimeout(context.Background(), raidPhaseTimeout)
	defer cancel()
	var acks atomic.Int64
	var wg sync.WaitGroup
	var clients []*nbdclient.Client
	for i := range spans {
		c, err := nbdclient.Dial(ctx, d.Addr(), "vol0")
		if err != nil {
			t.Fatalf("NBD dial: %v", err)
		}
		clients = append(clients, c)
		// The array's last block holds the store identity (storeid).
		if c.Size != arraySize-storeid.BlockSize {
			t.Fatalf("export size %d, want the array's %d minus the %d-byte identity block", c.Size, arraySize, storeid.BlockSize)
		}
		s := &spans[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.run(c, uint64(i), &acks)
		}()
	}
	t.Cleanup(func() {
		for _, c := range clients {
			c.Close()
		}
	})

	// Kill -9 in the middle of the writes.
	for {
		if ctx.Err() != nil {
			t.Fatalf("writers did not reach %d acknowledged writes before the deadline (%d so far)", raidAcksBeforeKill, acks.Load())
		}
		ready := acks.Load() >= raidAcksBeforeKill
		for i := range spans {
			if spans[i].acked.Load() < raidAcksPerWriterMin {
				ready = false
			}
			if e := spans[i].failure(); e != nil {
				t.Fatalf("writer %d failed before the kill: %v", i, e)
			}
		}
		if ready {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	d.Kill9()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("writers still blocked after the daemon was killed")
	}
	inflight := 0
	for i := range spans {
		if spans[i].pending != nil {
			inflight++
		}
	}
	t.Logf("killed after %d acknowledged FUA writes by %d writers in regions %v; %d writes were in flight",
		acks.Load(), len(spans), raidRegions, inflight)

	// Restart: the array assembles, found dirty, resyncs the dirty regions.
	startRAIDDaemon(t, d, cfg)
	st = raidStatusOf(t, d)
	rec := st.Recovery
	t.Logf("after kill -9: health %s events %d; recovery dirty=%v bitmap_corrupt=%v dirty_regions=%d resync_read_bytes=%d (written regions %d, region %d member bytes, whole array %d member bytes)",
		st.Health, st.Events, rec.Dirty, rec.BitmapCorrupt, rec.DirtyRegions, rec.ResyncReadBytes, len(touched), regionMemberBytes, wholeArrayMemberBytes)
	if st.Health != "optimal" {
		t.Errorf("after kill -9: health %q, want optimal", st.Health)
	}
	for _, m := range st.Members {
		if m.State != "in_sync" {
			t.Errorf("after kill -9: member %d (%s) is %s (%s), want in_sync", m.Index, m.Path, m.State, m.Error)
		}
	}
	if rec.Created {
		t.Errorf("after kill -9: recovery.created = true: the array was created anew")
	}
	if !rec.Dirty {
		t.Errorf("after kill -9: recovery.dirty = false, want true")
	}
	if rec.BitmapCorrupt {
		t.Errorf("after kill -9: recovery.bitmap_corrupt = true: the whole array was resynced")
	}
	// Each start also writes the volume's store identity in the array's
	// last block: its region may still be marked dirty too.
	if rec.DirtyRegions < 1 || rec.DirtyRegions > len(touched)+1 {
		t.Errorf("after kill -9: %d dirty regions resynced, want 1 to %d (the regions written, and the one of the identity block)", rec.DirtyRegions, len(touched)+1)
	}
	if rec.ResyncReadBytes <= 0 {
		t.Errorf("after kill -9: resync read %d bytes, want > 0", rec.ResyncReadBytes)
	}
	if rec.ResyncReadBytes >= wholeArrayMemberBytes {
		t.Errorf("after kill -9: resync read %d bytes, the whole array is %d: not a partial resync", rec.ResyncReadBytes, wholeArrayMemberBytes)
	}
	if limit := int64(rec.DirtyRegions) * regionMemberBytes; rec.ResyncReadBytes > limit {
		t.Errorf("after kill -9: resync read %d bytes, more than the %d member bytes of %d regions", rec.ResyncReadBytes, limit, rec.DirtyRegions)
	}
	if len(rec.Rebuilding) != 0 || len(rec.Resynced) != 0 {
		t.Errorf("after kill -9: members resynced %v, rebuilding %v: want none (no member failed)", rec.Resynced, rec.Rebuilding)
	}

	// Scrub (check only): parity must verify clean.
	sr := raidScrub(t, d)
	t.Logf("scrub after kill -9: stripes %d skipped %d mismatches %d repaired %d read_errors %d",
		sr.Stripes, sr.Skipped, sr.Mismatches, sr.Repaired, sr.ReadErrors)
	if sr.Mismatches != 0 || sr.ReadErrors != 0 || sr.Repaired != 0 || sr.Error != "" || sr.Repair {
		t.Errorf("scrub after kill -9: %+v, want no mismatch, no read error, nothing repaired", *sr)
	}
	if sr.Stripes <= 0 {
		t.Errorf("scrub after kill -9 checked %d stripes", sr.Stripes)
	}

	verifyRAIDData(t, d, spans, touched, regionSize, "after kill -9")

	// A clean stop and start: not dirty, nothing resynced.
	d.Stop()
	startRAIDDaemon(t, d, cfg)
	st = raidStatusOf(t, d)
	rec = st.Recovery
	t.Logf("after a clean restart: health %s; recovery dirty=%v dirty_regions=%d resync_read_bytes=%d", st.Health, rec.Dirty, rec.DirtyRegions, rec.ResyncReadBytes)
	if st.Health != "optimal" || rec.Dirty || rec.DirtyRegions != 0 || rec.ResyncReadBytes != 0 || rec.Created || rec.BitmapCorrupt {
		t.Errorf("after a clean restart: health %q recovery %+v, want optimal and not dirty", st.Health, rec)
	}
	verifyRAIDData(t, d, spans, touched, regionSize, "after a clean restart")
}

// raidSpanWriter writes random data with FUA at random offsets and lengths
// in its span, one write at a time, and keeps a shadow of what the
// acknowledged writes left there.
type raidSpanWriter struct {
	start  int64
	shadow []byte
	acked  atomic.Int64

	// Set when the run ends.
	pendingOff int64
	pending    []byte // the write in flight when the connection failed
	mu         sync.Mutex
	err        error
}

func (s *raidSpanWriter) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *raidSpanWriter) run(c *nbdclient.Client, seed uint64, acks *atomic.Int64) {
	rng := rand.New(rand.NewPCG(seed, uint64(time.Now().UnixNano())))
	blocks := int64(raidSpan / raidSector)
	for {
		b := rng.Int64N(blocks)
		n := 1 + rng.Int64N(min(64, blocks-b))
		buf := make([]byte, n*raidSector)
		for i := 0; i+8 <= len(buf); i += 8 {
			v := rng.Uint64()
			for j := 0; j < 8; j++ {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		off := b * raidSector
		if err := c.WriteAt(buf, s.start+off, true); err != nil {
			s.mu.Lock()
			s.err = err
			s.pendingOff, s.pending = off, buf
			s.mu.Unlock()
			return
		}
		copy(s.shadow[off:], buf)
		s.acked.Add(1)
		acks.Add(1)
	}
}

// verifyRAIDData reads back the written regions: each writer's span holds
// what its acknowledged writes left (a sector of the write in flight at the
// kill may hold its old or its new content), and the rest of the regions
// is still zero.
func verifyRAIDData(t *testing.T, d *daemon, spans []raidSpanWriter, touched map[int64]bool, regionSize int64, when string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), raidPhaseTimeout)
	defer cancel()
	c, err := nbdclient.Dial(ctx, d.Addr(), "vol0")
	if err != nil {
		t.Fatalf("%s: NBD dial: %v", when, err)
	}
	defer c.Close()
	bad := 0
	report := func(format string, args ...any) {
		bad++
		if bad <= 10 {
			t.Errorf(when+": "+format, args...)
		}
	}
	zero := make([]byte, raidSector)
	buf := make([]byte, MiB)
	for r := range touched {
		for off := r * regionSize; off < (r+1)*regionSize && off < c.Size; off += int64(len(buf)) {
			p := buf[:min(int64(len(buf)), (r+1)*regionSize-off, c.Size-off)]
			if err := c.ReadAt(p, off); err != nil {
				t.Fatalf("%s: read at %d: %v", when, off, err)
			}
			for s := int64(0); s < int64(len(p)); s += raidSector {
				at := off + s
				got := p[s : s+raidSector]
				var want, alt []byte
				for i := range spans {
					sp := &spans[i]
					if at >= sp.start && at < sp.start+raidSpan {
						o := at - sp.start
						want = sp.shadow[o : o+raidSector]
						if sp.pending != nil && o >= sp.pendingOff && o < sp.pendingOff+int64(len(sp.pending)) {
							alt = sp.pending[o-sp.pendingOff : o-sp.pendingOff+raidSector]
						}
					}
				}
				if want == nil {
					want = zero
				}
				if !bytes.Equal(got, want) && (alt == nil || !bytes.Equal(got, alt)) {
					report("sector at %d (region %d) does not hold the acknowledged data", at, r)
				}
			}
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d sectors of %d regions differ from the acknowledged writes", when, bad, len(touched))
	} else {
		t.Logf("%s: %d regions read back intact", when, len(touched))
	}
}

// raidConfig renders a configuration with one RAID volume, vol0.
func raidConfig(d *daemon, level string, members []string) string {
	q := strconv.Quote
	var b strings.Builder
	fmt.Fprintf(&b, "[node]\nname = \"e2e\"\ndata_dir = %s\ncontrol_socket = %s\n\n",
		q(filepath.Join(d.Dir, "data")), q(d.ControlSocket))
	fmt.Fprintf(&b, "[nbd]\nlisten = [%s]\n\n", q(d.Addr()))
	qm := make([]string, len(members))
	for i, m := range members {
		qm[i] = q(m)
	}
	fmt.Fprintf(&b, "[[volume]]\nname = \"vol0\"\nsize = %d\nraid_level = %s\nraid_members = [%s]\nraid_chunk_size = %d\n",
		raidMemberFile, q(level), strings.Join(qm, ", "), raidChunk)
	// Unthrottled scrub: the test checks what it finds, not its pace.
	b.WriteString("raid_rebuild_rate = 0\n")
	return b.String()
}

// startRAIDDaemon starts d on the configuration cfg renders (the daemon
// spec has no RAID keys).
func startRAIDDaemon(t *testing.T, d *daemon, cfg func() string) {
	t.Helper()
	d.ConfigText, d.ReadyTimeout = cfg, raidReadyTimeout
	d.Start()
}

// raidStatusOf returns vol0's RAID status from blockctl status -o json.
func raidStatusOf(t *testing.T, d *daemon) *api.RAIDStatus {
	t.Helper()
	out := d.Blockctl(t, "status", "-o", "json")
	var st api.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("blockctl status -o json does not parse: %v\n%s", err, out)
	}
	for _, v := range st.Volumes {
		if v.Name == "vol0" {
			if v.RAID == nil {
				t.Fatalf("blockctl status: vol0 has no raid status\n%s", out)
			}
			return v.RAID
		}
	}
	t.Fatalf("blockctl status shows no vol0\n%s", out)
	return nil
}

// raidScrub runs blockctl raid scrub vol0 (check only) and waits for its
// result in blockctl raid status -o json.
func raidScrub(t *testing.T, d *daemon) *api.RAIDScrubResult {
	t.Helper()
	d.Blockctl(t, "raid", "scrub", "vol0")
	deadline := time.Now().Add(raidScrubTimeout)
	for {
		out := d.Blockctl(t, "raid", "status", "-o", "json", "vol0")
		var vols []struct {
			Volume string `json:"volume"`
			api.RAIDStatus
		}
		if err := json.Unmarshal([]byte(out), &vols); err != nil {
			t.Fatalf("blockctl raid status -o json does not parse: %v\n%s", err, out)
		}
		if len(vols) != 1 || vols[0].Volume != "vol0" {
			t.Fatalf("blockctl raid status -o json vol0: %s", out)
		}
		rs := vols[0].RAIDStatus
		if p := rs.Progress; p != nil && p.Op == "scrub" && p.State != "running" {
			if p.State != "done" {
				t.Fatalf("scrub ended %s: %s", p.State, p.Error)
			}
			// The result is recorded just after the progress ends.
			if rs.Scrub != nil {
				return rs.Scrub
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("scrub not finished within %v:\n%s", raidScrubTimeout, out)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
