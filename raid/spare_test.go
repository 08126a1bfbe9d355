//go:build linux

package raid

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// stallClock stalls a rate-limited run after its first burst: Sleep returns
// only when ctx is done.
type stallClock struct{}

func (stallClock) Now() time.Time { return time.Now() }

func (stallClock) Sleep(ctx context.Context, _ time.Duration) error {
	<-ctx.Done()
	return ctx.Err()
}

var spareTestGeometry = Geometry{Level: Level5, Members: 3, ChunkSize: 4096}

// createWithSpares creates the fixture's array with spares in dir.
func (f *diskFixture) createWithSpares(spares []string, rate int64, clock Clock) *DiskArray {
	f.t.Helper()
	d, err := Create(context.Background(), CreateOptions{
		Name: "test", Geometry: f.g, Paths: f.paths, Spares: spares, FileSize: DefaultDataOffset + diskTestMemberSize,
		RegionSize: 4 * f.g.StripeSize(), RebuildRate: rate, Logger: quietLog, spareClock: clock,
	})
	if err != nil {
		f.t.Fatalf("Create: %v", err)
	}
	return d
}

// slotState is slot i's state in the superblock at path, 0 if it cannot be
// read (a superblock write in progress).
func slotState(path string, i int) SlotState {
	b, err := os.ReadFile(path)
	if err != nil || len(b) < SuperblockSize {
		return 0
	}
	sb, err := UnmarshalSuperblock(b[:SuperblockSize])
	if err != nil || i >= len(sb.Members) {
		return 0
	}
	return sb.Members[i].State
}

// waitFor polls cond until it holds, failing the test after a deadline
// generous enough for any machine.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDiskArraySpareTakesFailedSlot(t *testing.T) {
	f := newDiskFixture(t, spareTestGeometry, "m")
	spare := filepath.Join(t.TempDir(), "spare")
	d := f.createWithSpares([]string{spare}, 0, nil)
	if sb := readSB(t, spare); sb.Role != RoleSpare || sb.ArrayUUID != d.UUID() || sb.Events != readSB(t, f.paths[0]).Events {
		t.Fatalf("spare superblock: role %d array %v events %d", sb.Role, sb.ArrayUUID, sb.Events)
	}
	if got := d.Spares(); !slices.Equal(got, []string{spare}) {
		t.Fatalf("Spares = %q", got)
	}
	f.write(d, 40)
	if err := d.Fail(1); err != nil {
		t.Fatal(err)
	}
	// Done when the superblocks record it: after the Array's state.
	waitFor(t, "the spare rebuilt into slot 1", func() bool {
		return d.Array().Status().Health == HealthOptimal && d.MemberPaths()[1] == spare &&
			slotState(spare, 1) == SlotInSync
	})
	if got := d.Spares(); len(got) != 0 {
		t.Fatalf("Spares after the failure = %q", got)
	}
	if slices.Contains(d.MemberPaths(), f.paths[1]) {
		t.Fatalf("the failed device is still a member: %q", d.MemberPaths())
	}
	if sb := readSB(t, spare); sb.Role != 1 || sb.Members[1].State != SlotInSync {
		t.Fatalf("spare superblock after its rebuild: role %d slot %+v", sb.Role, sb.Members[1])
	}
	f.check(d)
	f.scrubClean(d)
	f.close(d)

	// Every device as a candidate: the spare holds role 1, the failed
	// device is left over.
	d = f.open(append(slices.Clone(f.paths), spare)...)
	a := d.Assembly()
	if a.Status != AssemblyOptimal || a.Roles[1].Path != spare || len(a.Spares) != 0 || len(d.Spares()) != 0 {
		t.Fatalf("reopen: %v roles %+v spares %q %q", a.Status, a.Roles, a.Spares, d.Spares())
	}
	if !slices.ContainsFunc(a.Unused, func(c Candidate) bool { return c.Path == f.paths[1] }) {
		t.Fatalf("the failed device is not among the unused: %+v", a.Unused)
	}
	f.check(d)
	f.close(d)
}

func TestDiskArraySpareRebuildResumesAfterRestart(t *testing.T) {
	f := newDiskFixture(t, spareTestGeometry, "m")
	spare := filepath.Join(t.TempDir(), "spare")
	// Rate-limited on a clock that never lets the second chunk through:
	// the rebuild onto the spare stops after one chunk.
	d := f.createWithSpares([]string{spare}, 1, stallClock{})
	f.write(d, 40)
	if err := d.Fail(2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the rebuild onto the spare to start", func() bool {
		p := d.Array().Progress()
		return p.Op == "rebuild" && p.Member == 2 && p.State == OpRunning && p.Done > 0
	})
	f.write(d, 10) // partly above the checkpoint: the resumed rebuild copies it
	f.close(d)
	sb := readSB(t, spare)
	if sb.Role != 2 || sb.Members[2].State != SlotRebuilding || sb.Members[2].RebuildOffset <= 0 || sb.Members[2].RebuildOffset >= diskTestMemberSize {
		t.Fatalf("interrupted spare rebuild recorded: role %d slot %+v", sb.Role, sb.Members[2])
	}

	// A marker below the checkpoint: the resumed rebuild trusts what lies
	// there and leaves it, where a rebuild from the start overwrites it.
	const marker = "below-the-checkpoint"
	mark := sb.DataOffset + sb.Members[2].RebuildOffset - int64(len(marker))
	orig := swapBytes(t, spare, mark, []byte(marker))

	d = f.open(f.paths[0], f.paths[1], spare)
	if a := d.Assembly(); a.Roles[2].State != RoleRebuilding || a.Roles[2].RebuildOffset != sb.Members[2].RebuildOffset {
		t.Fatalf("reopen: role 2 %+v", a.Roles[2])
	}
	if err := d.WaitRebuild(context.Background()); err != nil {
		t.Fatal(err)
	}
	if h := d.Array().Status().Health; h != HealthOptimal {
		t.Fatalf("after the resumed rebuild: %v", h)
	}
	f.close(d)
	if got := swapBytes(t, spare, mark, orig); string(got) != marker {
		t.Fatalf("the resumed rebuild rewrote the spare below its checkpoint %d: %q", sb.Members[2].RebuildOffset, got)
	}

	d = f.open(f.paths[0], f.paths[1], spare)
	if a := d.Assembly(); a.Status != AssemblyOptimal || len(d.Spares()) != 0 {
		t.Fatalf("reopen: %v %v spares %q", a.Status, a.Reasons, d.Spares())
	}
	f.check(d)
	f.scrubClean(d)
	f.close(d)
}

// swapBytes writes p at off in the file at path and returns the bytes it
// replaced.
func swapBytes(t *testing.T, path string, off int64, p []byte) []byte {
	t.Helper()
	fl, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	old := make([]byte, len(p))
	if _, err := fl.ReadAt(old, off); err != nil {
		t.Fatal(err)
	}
	if _, err := fl.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
	return old
}

func TestDiskArraySpareForMissingMember(t *testing.T) {
	f := newDiskFixture(t, spareTestGeometry, "m")
	spare := filepath.Join(t.TempDir(), "spare")
	d := f.createWithSpares([]string{spare}, 0, nil)
	f.write(d, 40)
	f.close(d)
	d = f.open(f.paths[0], f.paths[2], spare)
	if r := d.Recovery(); !slices.Equal(r.SparesTaken, []int{1}) || !slices.Equal(r.Rebuilding, []int{1}) {
		t.Fatalf("recovery %+v", r)
	}
	if err := d.WaitRebuild(context.Background()); err != nil {
		t.Fatal(err)
	}
	if h := d.Array().Status().Health; h != HealthOptimal || d.MemberPaths()[1] != spare {
		t.Fatalf("health %v members %q", h, d.MemberPaths())
	}
	f.check(d)
	f.scrubClean(d)
	f.close(d)
}

func TestDiskArrayForeignSpare(t *testing.T) {
	f := newDiskFixture(t, spareTestGeometry, "m")
	d := f.create()
	f.write(d, 10)
	other := newDiskFixture(t, spareTestGeometry, "o")
	foreign := filepath.Join(t.TempDir(), "foreign-spare")
	other.close(other.createWithSpares([]string{foreign}, 0, nil))

	if err := d.AddSpare(foreign); err == nil || !strings.Contains(err.Error(), "another array") {
		t.Fatalf("AddSpare of another array's spare: %v", err)
	}
	if _, err := d.Add(foreign); err == nil || !strings.Contains(err.Error(), "another array") {
		t.Fatalf("Add of another array's spare: %v", err)
	}
	f.close(d)

	d = f.open(append(slices.Clone(f.paths), foreign)...)
	a := d.Assembly()
	if len(a.Spares) != 0 || len(d.Spares()) != 0 || !slices.ContainsFunc(a.Foreign, func(c Candidate) bool { return c.Path == foreign }) {
		t.Fatalf("foreign spare assembled: spares %q %q foreign %+v", a.Spares, d.Spares(), a.Foreign)
	}
	// Failing a member takes no spare: the array stays degraded.
	if err := d.Fail(0); err != nil {
		t.Fatal(err)
	}
	if m := d.Array().Status().Members[0]; m.State != Faulty {
		t.Fatalf("member 0 %v", m.State)
	}
	f.check(d)
	f.close(d)
	if sb := readSB(t, foreign); sb.ArrayUUID == d.UUID() || sb.Role != RoleSpare {
		t.Fatalf("foreign spare's superblock changed: %v role %d", sb.ArrayUUID, sb.Role)
	}
}

func TestDiskArrayAddRemoveSpare(t *testing.T) {
	f := newDiskFixture(t, spareTestGeometry, "m")
	d := f.create()
	f.write(d, 10)
	dir := t.TempDir()
	s1, s2 := filepath.Join(dir, "s1"), filepath.Join(dir, "s2")
	for _, p := range []string{s1, s2} {
		fl, err := OpenFile(p, FileOptions{CreateSize: DefaultDataOffset + diskTestMemberSize})
		if err != nil {
			t.Fatal(err)
		}
		fl.Close()
	}

	if err := d.AddSpare(f.paths[1]); err == nil || !strings.Contains(err.Error(), "already member 1") {
		t.Fatalf("AddSpare of a member: %v", err)
	}
	if err := d.RemoveSpare(s1); err == nil || !strings.Contains(err.Error(), "not a spare") {
		t.Fatalf("RemoveSpare of no spare: %v", err)
	}
	// No empty slot: Add makes a spare.
	if i, err := d.Add(s1); err != nil || i != -1 {
		t.Fatalf("Add to a full array = %d, %v; want -1 (a spare)", i, err)
	}
	if err := d.AddSpare(s1); err == nil || !strings.Contains(err.Error(), "already a spare") {
		t.Fatalf("AddSpare twice: %v", err)
	}
	if err := d.AddSpare(s2); err != nil {
		t.Fatal(err)
	}
	if got := d.Spares(); !slices.Equal(got, []string{s1, s2}) {
		t.Fatalf("Spares = %q", got)
	}
	if sb := readSB(t, s2); sb.Role != RoleSpare || sb.ArrayUUID != d.UUID() {
		t.Fatalf("added spare's superblock: role %d array %v", sb.Role, sb.ArrayUUID)
	}
	if err := d.RemoveSpare(s1); err != nil {
		t.Fatal(err)
	}
	if got := d.Spares(); !slices.Equal(got, []string{s2}) {
		t.Fatalf("Spares after RemoveSpare = %q", got)
	}
	fl, err := OpenFile(s1, FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sb, err := readSuperblock(fl); sb != nil || err != nil {
		t.Fatalf("a removed spare keeps its superblock: %+v %v", sb, err)
	}
	fl.Close()
	f.close(d)

	// The remaining spare is found again, the removed one is not.
	d = f.open(append(slices.Clone(f.paths), s1, s2)...)
	if got := d.Spares(); !slices.Equal(got, []string{s2}) {
		t.Fatalf("Spares after reopen = %q", got)
	}
	f.check(d)
	f.close(d)
}
