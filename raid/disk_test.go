//go:build linux

package raid

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const diskTestMemberSize = 256 << 10

var diskTestGeometries = []Geometry{
	{Level: Level1, Members: 2, ChunkSize: 4096},
	{Level: Level10, Members: 4, Copies: 2, ChunkSize: 4096},
	{Level: Level5, Members: 4, ChunkSize: 4096},
	{Level: Level6, Members: 5, ChunkSize: 4096},
}

// diskFixture is a DiskArray under test with a model of its contents.
type diskFixture struct {
	t     *testing.T
	paths []string
	g     Geometry
	model []byte
	rng   *rand.Rand
}

func newDiskFixture(t *testing.T, g Geometry, prefix string) *diskFixture {
	t.Helper()
	g.MemberSize = diskTestMemberSize
	dir := t.TempDir()
	f := &diskFixture{t: t, g: g, model: make([]byte, g.Size()), rng: rand.New(rand.NewPCG(uint64(g.Level), uint64(g.Members)))}
	for i := range g.Members {
		f.paths = append(f.paths, filepath.Join(dir, fmt.Sprintf("%s%d", prefix, i)))
	}
	return f
}

func (f *diskFixture) create() *DiskArray {
	f.t.Helper()
	d, err := Create(context.Background(), CreateOptions{
		Name: "test", Geometry: f.g, Paths: f.paths, FileSize: DefaultDataOffset + diskTestMemberSize,
		RegionSize: 4 * f.g.StripeSize(), Logger: quietLog,
	})
	if err != nil {
		f.t.Fatalf("Create: %v", err)
	}
	return d
}

func (f *diskFixture) open(paths ...string) *DiskArray {
	f.t.Helper()
	if paths == nil {
		paths = f.paths
	}
	d, err := Open(context.Background(), OpenOptions{Paths: paths, Logger: quietLog})
	if err != nil {
		f.t.Fatalf("Open: %v", err)
	}
	return d
}

// write writes n random writes of random data and records them.
func (f *diskFixture) write(d *DiskArray, n int) {
	f.t.Helper()
	size := int64(len(f.model))
	for range n {
		off := f.rng.Int64N(size)
		l := 1 + f.rng.Int64N(min(size-off, 64<<10))
		f.writeAt(d, off, l)
	}
}

func (f *diskFixture) writeAt(d *DiskArray, off, l int64) {
	f.t.Helper()
	p := make([]byte, l)
	for i := range p {
		p[i] = byte(f.rng.Uint32())
	}
	if err := d.WriteAt(p, off, false); err != nil {
		f.t.Fatalf("WriteAt(%d, %d): %v", off, l, err)
	}
	copy(f.model[off:], p)
}

func (f *diskFixture) check(d *DiskArray) {
	f.t.Helper()
	got := make([]byte, len(f.model))
	if err := d.ReadAt(got, 0); err != nil {
		f.t.Fatalf("ReadAt: %v", err)
	}
	if !bytes.Equal(got, f.model) {
		i := 0
		for got[i] == f.model[i] {
			i++
		}
		f.t.Fatalf("array contents differ from the model, first at %d", i)
	}
}

// scrubClean checks that every mirror agrees and every parity verifies.
func (f *diskFixture) scrubClean(d *DiskArray) {
	f.t.Helper()
	res, err := d.Array().Scrub(context.Background(), ScrubOptions{})
	if err != nil {
		f.t.Fatalf("Scrub: %v", err)
	}
	if res.Mismatches != 0 || res.Skipped != 0 {
		f.t.Fatalf("Scrub: %d mismatches, %d stripes skipped: %+v", res.Mismatches, res.Skipped, res.First)
	}
}

func (f *diskFixture) close(d *DiskArray) {
	f.t.Helper()
	if err := d.Close(); err != nil {
		f.t.Fatalf("Close: %v", err)
	}
}

func readSB(t *testing.T, path string) Superblock {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	b := make([]byte, SuperblockSize)
	if _, err := io.ReadFull(fh, b); err != nil {
		t.Fatal(err)
	}
	sb, err := UnmarshalSuperblock(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return sb
}

// crash drops d as a crash would: no flush, no clean superblock, the
// write-intent bits left as they are on disk.
func crash(d *DiskArray) {
	d.stopBackground()
	d.crashClose()
}

func TestDiskArrayCreateCloseOpen(t *testing.T) {
	for _, g := range diskTestGeometries {
		t.Run(g.Level.String(), func(t *testing.T) {
			f := newDiskFixture(t, g, "m")
			d := f.create()
			if r := d.Recovery(); r.Dirty || len(r.DirtyRegions) != 0 {
				t.Fatalf("fresh array recovered: %+v", r)
			}
			if sb := readSB(t, f.paths[0]); sb.State != ArrayDirty {
				t.Fatalf("open array is %v on disk, want dirty", sb.State)
			}
			f.check(d) // zeroes
			f.scrubClean(d)
			f.write(d, 40)
			f.close(d)
			var events uint64
			for i, p := range f.paths {
				sb := readSB(t, p)
				if sb.State != ArrayClean || sb.Role != i || sb.Geometry.MemberSize != diskTestMemberSize {
					t.Fatalf("%s after Close: state %v role %d geometry %+v", p, sb.State, sb.Role, sb.Geometry)
				}
				if i > 0 && sb.Events != events {
					t.Fatalf("events differ between members: %d and %d", events, sb.Events)
				}
				events = sb.Events
			}
			d = f.open()
			if a := d.Assembly(); a.Status != AssemblyOptimal || a.Dirty {
				t.Fatalf("reopen: %v dirty=%v: %v", a.Status, a.Dirty, a.Reasons)
			}
			if sb := readSB(t, f.paths[0]); sb.State != ArrayDirty || sb.Events != events+1 {
				t.Fatalf("after Open: %v events %d, want dirty %d", sb.State, sb.Events, events+1)
			}
			f.check(d)
			f.scrubClean(d)
			f.write(d, 10)
			f.close(d)
			if sb := readSB(t, f.paths[len(f.paths)-1]); sb.State != ArrayClean || sb.Events != events+2 {
				t.Fatalf("after second Close: %v events %d, want clean %d", sb.State, sb.Events, events+2)
			}
			d = f.open()
			f.check(d)
			f.close(d)
		})
	}
}

func TestDiskArrayMissingMemberThenBack(t *testing.T) {
	for _, g := range diskTestGeometries {
		t.Run(g.Level.String(), func(t *testing.T) {
			f := newDiskFixture(t, g, "m")
			d := f.create()
			f.write(d, 30)
			f.close(d)

			gone := 1
			d = f.open(slices.Delete(slices.Clone(f.paths), gone, gone+1)...)
			if a := d.Assembly(); a.Status != AssemblyDegraded || a.Roles[gone].State != RoleMissing {
				t.Fatalf("open without member %d: %v, role %v", gone, a.Status, a.Roles[gone].State)
			}
			if h := d.Array().Status().Health; h != HealthDegraded {
				t.Fatalf("health %v, want degraded", h)
			}
			f.check(d)
			f.write(d, 20) // missed by the absent member
			f.check(d)
			f.close(d)
			if sb := readSB(t, f.paths[0]); sb.Members[gone].State != SlotFaulty {
				t.Fatalf("absent member recorded %v", sb.Members[gone].State)
			}

			d = f.open()
			a := d.Assembly()
			if a.Roles[gone].State != RoleStale {
				t.Fatalf("returning member is %v, want stale: %v", a.Roles[gone].State, a.Reasons)
			}
			if r := d.Recovery(); !slices.Equal(r.Resynced, []int{gone}) || len(r.Rebuilding) != 0 {
				t.Fatalf("recovery %+v, want a bitmap resync of member %d", r, gone)
			}
			if h := d.Array().Status().Health; h != HealthOptimal {
				t.Fatalf("health %v after resync", h)
			}
			f.check(d)
			f.scrubClean(d)
			f.close(d)
			d = f.open()
			if a := d.Assembly(); a.Status != AssemblyOptimal {
				t.Fatalf("after resync and close: %v %v", a.Status, a.Reasons)
			}
			f.close(d)
		})
	}
}

func TestDiskArrayStaleCopyRebuilt(t *testing.T) {
	for _, g := range diskTestGeometries {
		t.Run(g.Level.String(), func(t *testing.T) {
			f := newDiskFixture(t, g, "m")
			d := f.create()
			f.write(d, 30)
			f.close(d)
			old, err := os.ReadFile(f.paths[0])
			if err != nil {
				t.Fatal(err)
			}
			oldEvents := readSB(t, f.paths[0]).Events

			d = f.open()
			f.write(d, 30)
			f.close(d)
			if err := os.WriteFile(f.paths[0], old, 0o600); err != nil {
				t.Fatal(err)
			}

			d = f.open()
			a := d.Assembly()
			if a.Roles[0].State != RoleStale || a.Roles[0].Events != oldEvents {
				t.Fatalf("old copy of member 0: %v events %d: %v", a.Roles[0].State, a.Roles[0].Events, a.Reasons)
			}
			// The array was optimal (the bitmap may have dropped bits) since
			// the copy was taken: a full rebuild, not a bitmap resync.
			if r := d.Recovery(); len(r.Resynced) != 0 || !slices.Equal(r.Rebuilding, []int{0}) {
				t.Fatalf("recovery %+v, want a full rebuild of member 0", r)
			}
			if err := d.WaitRebuild(context.Background()); err != nil {
				t.Fatalf("rebuild: %v", err)
			}
			if h := d.Array().Status().Health; h != HealthOptimal {
				t.Fatalf("health %v after rebuild", h)
			}
			f.check(d)
			f.scrubClean(d)
			f.close(d)
			d = f.open()
			if a := d.Assembly(); a.Status != AssemblyOptimal {
				t.Fatalf("after rebuild: %v %v", a.Status, a.Reasons)
			}
			f.check(d)
			f.close(d)
		})
	}
}

func TestDiskArrayForeignMember(t *testing.T) {
	x := newDiskFixture(t, Geometry{Level: Level5, Members: 3, ChunkSize: 4096}, "x")
	y := newDiskFixture(t, Geometry{Level: Level1, Members: 2, ChunkSize: 4096}, "y")
	dx, dy := x.create(), y.create()
	x.write(dx, 10)
	y.write(dy, 10)
	xu, yu := dx.UUID(), dy.UUID()
	x.close(dx)
	y.close(dy)

	d := x.open(append(slices.Clone(x.paths), y.paths[0])...)
	a := d.Assembly()
	if a.ArrayUUID != xu || len(a.Foreign) != 1 || a.Foreign[0].Path != y.paths[0] || !strings.Contains(a.Foreign[0].Reason, "another array") {
		t.Fatalf("foreign member: %+v", a.Foreign)
	}
	x.check(d)
	x.close(d)

	// Naming the other array picks it, and x's members are foreign.
	d, err := Open(context.Background(), OpenOptions{Paths: append(slices.Clone(x.paths), y.paths...), UUID: yu, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	if a := d.Assembly(); len(a.Foreign) != 3 || a.Status != AssemblyOptimal {
		t.Fatalf("open y: %v foreign %+v", a.Status, a.Foreign)
	}
	y.check(d)
	y.close(d)

	// A member of another array alone in place of x's member 1: refused
	// as foreign, x runs degraded.
	d = x.open(x.paths[0], y.paths[1], x.paths[2])
	if a := d.Assembly(); a.Status != AssemblyDegraded || a.Roles[1].State != RoleMissing || len(a.Foreign) != 1 {
		t.Fatalf("x with y's member: %v roles %+v foreign %+v", a.Status, a.Roles, a.Foreign)
	}
	x.check(d)
	// Nor can it be put in as a replacement.
	if err := d.Replace(1, y.paths[1]); err == nil || !strings.Contains(err.Error(), "another array") {
		t.Fatalf("Replace with y's member: %v", err)
	}
	x.close(d)

	// Create refuses to overwrite an array member without Force.
	_, err = Create(context.Background(), CreateOptions{Geometry: y.g, Paths: y.paths, Logger: quietLog})
	if err == nil || !strings.Contains(err.Error(), "already holds a superblock") {
		t.Fatalf("Create over y: %v", err)
	}
	d, err = Create(context.Background(), CreateOptions{Geometry: y.g, Paths: y.paths, Force: true, Logger: quietLog})
	if err != nil {
		t.Fatalf("Create with Force: %v", err)
	}
	if d.UUID() == yu {
		t.Fatal("forced Create kept the old UUID")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestDiskArrayCrashResyncsDirtyRegionsOnly(t *testing.T) {
	for _, g := range diskTestGeometries {
		t.Run(g.Level.String(), func(t *testing.T) {
			f := newDiskFixture(t, g, "m")
			g := f.g
			d := f.create()
			f.write(d, 40)
			f.close(d)

			d = f.open()
			rs := d.intent.RegionSize()
			regions := d.intent.Regions()
			if regions < 4 {
				t.Fatalf("only %d regions", regions)
			}
			const dirty = 2
			f.writeAt(d, dirty*rs+100, rs/2)
			crash(d)
			if sb := readSB(t, f.paths[0]); sb.State != ArrayDirty {
				t.Fatalf("crashed array is %v on disk", sb.State)
			}

			// A torn stripe in the dirty region: one chunk written to a
			// member behind the parity's (or the other copies') back.
			C := g.ChunkSize
			s := dirty*rs/g.StripeSize() + 1
			info := g.Stripe(s)
			chunk := make([]byte, C)
			for i := range chunk {
				chunk[i] = byte(f.rng.Uint32())
			}
			fh, err := os.OpenFile(f.paths[info.Data[0]], os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := fh.WriteAt(chunk, DefaultDataOffset+info.Offset); err != nil {
				t.Fatal(err)
			}
			fh.Close()
			copy(f.model[info.Logical:], chunk) // the resync keeps the data, fixes the rest

			d = f.open()
			r := d.Recovery()
			if !r.Dirty || r.BitmapCorrupt {
				t.Fatalf("recovery %+v, want dirty", r)
			}
			if len(r.DirtyRegions) != 1 || r.DirtyRegions[0].Offset != dirty*rs || r.DirtyRegions[0].Length != rs {
				t.Fatalf("dirty regions %+v, want region %d only", r.DirtyRegions, dirty)
			}
			// Only that region was read: its stripes, one chunk per data
			// chunk (mirrors: the first copy) or per member (parity).
			perStripe := int64(g.Members) * C
			if g.Level == Level1 || g.Level == Level10 {
				perStripe = int64(g.DataMembers()) * C
			}
			if want := rs / g.StripeSize() * perStripe; r.ResyncReadBytes != want {
				t.Fatalf("resync read %d bytes, want %d (one region of %d; the array is %d)", r.ResyncReadBytes, want, rs, g.Size())
			}
			f.check(d)
			f.scrubClean(d)
			f.close(d)
			d = f.open()
			if r := d.Recovery(); r.Dirty {
				t.Fatalf("dirty after a clean close: %+v", r)
			}
			f.check(d)
			f.close(d)
		})
	}
}

func TestDiskArrayCorruptBitmapResyncsAll(t *testing.T) {
	g := Geometry{Level: Level5, Members: 3, ChunkSize: 4096}
	f := newDiskFixture(t, g, "m")
	d := f.create()
	f.write(d, 20)
	crash(d)
	for _, p := range f.paths {
		fh, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fh.WriteAt([]byte("garbage"), DefaultBitmapOffset+40); err != nil {
			t.Fatal(err)
		}
		fh.Close()
	}
	d = f.open()
	r := d.Recovery()
	var total int64
	for _, x := range r.DirtyRegions {
		total += x.Length
	}
	if !r.BitmapCorrupt || total != d.Size() {
		t.Fatalf("recovery %+v: %d bytes resynced, want the whole %d", r, total, d.Size())
	}
	f.check(d)
	f.scrubClean(d)
	f.close(d)
	d = f.open()
	if r := d.Recovery(); r.BitmapCorrupt || r.Dirty {
		t.Fatalf("after reset: %+v", r)
	}
	f.close(d)
}

func TestDiskArrayFailurePersisted(t *testing.T) {
	for _, g := range diskTestGeometries {
		t.Run(g.Level.String(), func(t *testing.T) {
			f := newDiskFixture(t, g, "m")
			d := f.create()
			f.write(d, 20)
			before := d.Events()
			const bad = 1
			if err := d.Fail(bad); err != nil {
				t.Fatal(err)
			}
			// Persisted at once, on the remaining members only.
			sb := readSB(t, f.paths[0])
			if sb.Members[bad].State != SlotFaulty || sb.Events != before+1 {
				t.Fatalf("after Fail: slot %v events %d (before %d)", sb.Members[bad].State, sb.Events, before)
			}
			if sbBad := readSB(t, f.paths[bad]); sbBad.Events != before {
				t.Fatalf("failed member's superblock written: events %d", sbBad.Events)
			}
			f.write(d, 20)
			f.close(d)

			d = f.open()
			a := d.Assembly()
			if a.Roles[bad].State != RoleStale {
				t.Fatalf("failed member reassembled as %v", a.Roles[bad].State)
			}
			if r := d.Recovery(); !slices.Equal(r.Resynced, []int{bad}) {
				t.Fatalf("failed member not resynced: %+v", r)
			}
			f.check(d)
			f.scrubClean(d)
			f.close(d)

			// Without the resync (member missing), the failure still
			// holds: a second open without it stays degraded and keeps
			// recording it faulty.
			d = f.open()
			if err := d.Fail(bad); err != nil {
				t.Fatal(err)
			}
			f.close(d)
			d = f.open(slices.Delete(slices.Clone(f.paths), bad, bad+1)...)
			if a := d.Assembly(); a.Status != AssemblyDegraded {
				t.Fatalf("%v", a.Status)
			}
			f.check(d)
			f.close(d)
			if sb := readSB(t, f.paths[0]); sb.Members[bad].State != SlotFaulty {
				t.Fatalf("slot %v", sb.Members[bad].State)
			}
		})
	}
}

func TestDiskArrayReplaceRebuildResume(t *testing.T) {
	g := Geometry{Level: Level6, Members: 5, ChunkSize: 4096}
	f := newDiskFixture(t, g, "m")
	d := f.create()
	f.write(d, 30)
	if err := d.Fail(1); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(1); err != nil {
		t.Fatal(err)
	}
	if sb := readSB(t, f.paths[0]); sb.Members[1].State != SlotRemoved {
		t.Fatalf("removed slot recorded %v", sb.Members[1].State)
	}
	spare := filepath.Join(t.TempDir(), "spare")
	if err := os.WriteFile(spare, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(spare, DefaultDataOffset+diskTestMemberSize); err != nil {
		t.Fatal(err)
	}
	if err := d.Replace(1, spare); err != nil {
		t.Fatal(err)
	}
	if sb := readSB(t, spare); sb.Role != 1 || sb.Members[1].State != SlotRebuilding || sb.Members[1].RebuildOffset != 0 {
		t.Fatalf("replacement superblock: role %d slot %+v", sb.Role, sb.Members[1])
	}
	// Stop the rebuild after its first checkpoint.
	ctx, cancel := context.WithCancel(context.Background())
	err := d.Rebuild(ctx, 1, RebuildOptions{CheckpointEvery: 8 * g.ChunkSize, Checkpoint: func(off int64) error {
		cancel()
		return nil
	}})
	if err == nil {
		t.Fatal("rebuild ran to the end despite the cancel")
	}
	f.write(d, 10)
	f.close(d)
	sb := readSB(t, spare)
	if sb.Members[1].State != SlotRebuilding || sb.Members[1].RebuildOffset <= 0 || sb.Members[1].RebuildOffset >= diskTestMemberSize {
		t.Fatalf("interrupted rebuild recorded %+v", sb.Members[1])
	}
	paths := slices.Clone(f.paths)
	paths[1] = spare
	d = f.open(paths...)
	if a := d.Assembly(); a.Roles[1].State != RoleRebuilding || a.Roles[1].RebuildOffset != sb.Members[1].RebuildOffset {
		t.Fatalf("reopen: role 1 %+v", a.Roles[1])
	}
	if err := d.WaitRebuild(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := d.Array().Progress(); p.Op != "rebuild" || p.State != OpDone {
		t.Fatalf("progress %+v", p)
	}
	f.check(d)
	f.scrubClean(d)
	f.close(d)
	if sb := readSB(t, spare); sb.Members[1].State != SlotInSync || sb.State != ArrayClean {
		t.Fatalf("after rebuild: %+v %v", sb.Members[1], sb.State)
	}
	d = f.open(paths...)
	if a := d.Assembly(); a.Status != AssemblyOptimal {
		t.Fatalf("%v %v", a.Status, a.Reasons)
	}
	f.check(d)
	f.close(d)
}
