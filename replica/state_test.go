package replica

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/blockrep/blockrep/meta"
)

const stateVol = "vol0"

// openStore opens a meta database in dir with volume stateVol.
func openStore(t *testing.T, dir string) (*meta.DB, *Store) {
	t.Helper()
	db, err := meta.Open(filepath.Join(dir, meta.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.EnsureVolume(stateVol, "/dev/null", 1<<40); err != nil {
		t.Fatal(err)
	}
	return db, NewStore(db, stateVol)
}

func TestGenerationsMarshalRoundTrip(t *testing.T) {
	g := Generations{Current: 0xdead, Bitmap: 0xbeef, History: [HistoryLen]GenID{3, 2, 1}}
	data, err := g.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got Generations
	if err := got.UnmarshalBinary(data); err != nil {
		t.Fatal(err)
	}
	if got != g {
		t.Fatalf("round trip: %v, want %v", got, g)
	}
	for i := range data {
		bad := slices.Clone(data)
		bad[i] ^= 0x01
		if err := got.UnmarshalBinary(bad); !errors.Is(err, ErrGenCorrupt) {
			t.Errorf("flipped bit in byte %d: err = %v, want ErrGenCorrupt", i, err)
		}
	}
	if err := got.UnmarshalBinary(data[:len(data)-8]); !errors.Is(err, ErrGenCorrupt) {
		t.Errorf("truncated: err = %v", err)
	}
	if got != g {
		t.Errorf("failed unmarshal changed the record: %v", got)
	}
}

func TestStoreGenerations(t *testing.T) {
	dir := t.TempDir()
	db, s := openStore(t, dir)
	if _, _, ok, err := s.LoadGenerations(); ok || err != nil {
		t.Fatalf("empty store: ok=%v err=%v", ok, err)
	}
	g := Generations{Current: 7, Bitmap: 5, History: [HistoryLen]GenID{4}}
	if err := s.SaveGenerations(g, Outdated); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, s = openStore(t, dir)
	defer db.Close()
	got, disk, ok, err := s.LoadGenerations()
	if err != nil || !ok || got != g || disk != Outdated {
		t.Fatalf("LoadGenerations = %v, %v, %v, %v; want %v, Outdated, true, nil", got, disk, ok, err, g)
	}
	if err := s.SaveGenerations(g, DiskState(9)); err == nil {
		t.Error("saved an impossible disk state")
	}
}

func TestStoreUnknownVolume(t *testing.T) {
	db, _ := openStore(t, t.TempDir())
	defer db.Close()
	s := NewStore(db, "nope")
	if err := s.SaveGenerations(Generations{}, UpToDate); !errors.Is(err, meta.ErrNoVolume) {
		t.Errorf("err = %v, want meta.ErrNoVolume", err)
	}
}

// bigBitmap spans several pages: 3 pages of 32768 bits at 4 KiB per bit,
// the last one short.
func bigBitmap(t *testing.T) *Bitmap {
	t.Helper()
	b, err := NewBitmap(2*BitmapPageSize*8*4096+12345*4096, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if b.Pages() != 3 {
		t.Fatalf("test bitmap has %d pages, want 3", b.Pages())
	}
	return b
}

func TestStoreBitmapRoundTripAndDirtyPages(t *testing.T) {
	dir := t.TempDir()
	db, s := openStore(t, dir)
	b := bigBitmap(t)
	pageBytes := int64(BitmapPageSize * 8 * 4096) // device bytes one page covers
	b.SetRange(100*4096, 3*4096)
	b.SetRange(2*pageBytes+5*4096, 1)

	// First save: every page, even the untouched page 1.
	if err := s.SaveBitmap("peerA", b); err != nil {
		t.Fatal(err)
	}
	if s.pageWrites != 3 {
		t.Errorf("first save wrote %d pages, want 3", s.pageWrites)
	}
	if d := b.DirtyPages(); d != nil {
		t.Errorf("dirty pages after save: %v", d)
	}

	// Only page 0 changes: only page 0 is written.
	b.SetRange(0, 4096)
	if err := s.SaveBitmap("peerA", b); err != nil {
		t.Fatal(err)
	}
	if s.pageWrites != 4 {
		t.Errorf("second save wrote %d pages, want 1", s.pageWrites-3)
	}
	// Setting an already set bit dirties nothing and writes nothing.
	b.SetRange(0, 4096)
	if err := s.SaveBitmap("peerA", b); err != nil {
		t.Fatal(err)
	}
	if s.pageWrites != 4 {
		t.Errorf("clean save wrote %d pages, want 0", s.pageWrites-4)
	}

	db.Close()
	db, s = openStore(t, dir)
	defer db.Close()
	got, err := s.LoadBitmap("peerA", b.DeviceSize(), b.BlockSize())
	if err != nil {
		t.Fatal(err)
	}
	want, _ := b.MarshalBinary()
	if have, _ := got.MarshalBinary(); string(have) != string(want) || got.Count() != b.Count() {
		t.Fatalf("loaded bitmap differs: count %d, want %d", got.Count(), b.Count())
	}
	// A loaded bitmap is synced: a change after it writes one page.
	got.ClearRange(0, 4096)
	if err := s.SaveBitmap("peerA", got); err != nil {
		t.Fatal(err)
	}
	if s.pageWrites != 1 {
		t.Errorf("save after load wrote %d pages, want 1", s.pageWrites)
	}
	// A bitmap the store has not seen for the peer replaces all pages,
	// so stale bits of the stored one cannot survive.
	fresh := bigBitmap(t)
	if err := s.SaveBitmap("peerA", fresh); err != nil {
		t.Fatal(err)
	}
	if s.pageWrites != 4 {
		t.Errorf("save of a fresh bitmap wrote %d pages, want 3", s.pageWrites-1)
	}
	again, err := s.LoadBitmap("peerA", b.DeviceSize(), b.BlockSize())
	if err != nil {
		t.Fatal(err)
	}
	if again.Count() != 0 {
		t.Errorf("stale bits survived a full save: count %d", again.Count())
	}
}

func TestStoreBitmapErrors(t *testing.T) {
	db, s := openStore(t, t.TempDir())
	defer db.Close()
	if _, err := s.LoadBitmap("nobody", 1<<20, 4096); !errors.Is(err, ErrNotStored) {
		t.Errorf("missing bitmap: err = %v, want ErrNotStored", err)
	}
	b := bigBitmap(t)
	b.SetRange(0, 1)
	if err := s.SaveBitmap("peerA", b); err != nil {
		t.Fatal(err)
	}
	_, err := s.LoadBitmap("peerA", b.DeviceSize(), 8192)
	if !errors.Is(err, ErrBitmapGeometry) || !strings.Contains(err.Error(), "4096-byte blocks") || !strings.Contains(err.Error(), "8192-byte blocks") {
		t.Errorf("geometry mismatch: err = %v, want ErrBitmapGeometry naming both block sizes", err)
	}
	other, _ := NewBitmap(b.DeviceSize(), 8192)
	if err := s.SaveBitmap("peerA", other); !errors.Is(err, ErrBitmapGeometry) {
		t.Errorf("save over another geometry: err = %v, want ErrBitmapGeometry", err)
	}
	if err := s.DeleteBitmap("peerA"); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveBitmap("peerA", other); err != nil {
		t.Errorf("save after DeleteBitmap: %v", err)
	}
}

func TestStoreBitmapCorruptPage(t *testing.T) {
	db, s := openStore(t, t.TempDir())
	defer db.Close()
	b := bigBitmap(t)
	b.SetRange(BitmapPageSize*8*4096, 4096) // a bit in page 1
	if err := s.SaveBitmap("peerA", b); err != nil {
		t.Fatal(err)
	}
	set := bitmapPrefix + "peerA"
	err := db.UpdateVolume(stateVol, func(tx *meta.VolumeTx) error {
		p := tx.Page(set, 1)
		p[100] ^= 0x40 // a bit flip on disk
		return tx.PutPage(set, 1, p)
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.LoadBitmap("peerA", b.DeviceSize(), b.BlockSize())
	if !errors.Is(err, ErrBitmapCorrupt) || !strings.Contains(err.Error(), "page 1 checksum mismatch") {
		t.Errorf("corrupt page: err = %v, want ErrBitmapCorrupt for page 1", err)
	}

	// A valid page stored under another index is rejected too.
	err = db.UpdateVolume(stateVol, func(tx *meta.VolumeTx) error {
		return tx.PutPage(set, 1, tx.Page(set, 0))
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadBitmap("peerA", b.DeviceSize(), b.BlockSize()); !errors.Is(err, ErrBitmapCorrupt) {
		t.Errorf("misplaced page: err = %v, want ErrBitmapCorrupt", err)
	}
	// A missing page is corruption, not an empty page.
	err = db.UpdateVolume(stateVol, func(tx *meta.VolumeTx) error { return tx.DeletePages(set) })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadBitmap("peerA", b.DeviceSize(), b.BlockSize()); !errors.Is(err, ErrBitmapCorrupt) {
		t.Errorf("missing page: err = %v, want ErrBitmapCorrupt", err)
	}
}

const (
	alDev = 64 * MinExtentSize
	alExt = MinExtentSize
	alCap = 4
)

// writeAL runs writes through al the way the replica does: Begin, persist
// the change, Committed, End.
func writeAL(t *testing.T, s *Store, al *ActivityLog, exts ...int64) {
	t.Helper()
	for _, e := range exts {
		c, err := al.Begin(e*alExt, 4096)
		if err != nil {
			t.Fatal(err)
		}
		if c != nil {
			if err := s.LogALChange(c); err != nil {
				t.Fatal(err)
			}
			al.Committed(c.Seq)
		}
		al.End(e*alExt, 4096)
	}
}

func TestStoreActivityLogCrash(t *testing.T) {
	dir := t.TempDir()
	db, s := openStore(t, dir)
	al, err := s.LoadActivityLog(alDev, alExt, alCap)
	if err != nil {
		t.Fatal(err)
	}
	if len(al.Hot()) != 0 {
		t.Fatalf("fresh volume has hot extents %v", al.Hot())
	}
	writeAL(t, s, al, 1, 2, 3, 1, 9, 10, 11) // evicts 2 and 3 along the way
	if err := s.CompactAL(al); err != nil {
		t.Fatal(err)
	}
	writeAL(t, s, al, 20, 21, 9, 30)
	want := al.Hot()
	wantSeq := al.Seq()
	// Crash: close without compacting the changes logged since.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, s = openStore(t, dir)
	defer db.Close()
	got, err := s.LoadActivityLog(alDev, alExt, alCap)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Hot(), want) || got.Seq() != wantSeq {
		t.Fatalf("after crash: hot %v seq %d, want %v seq %d", got.Hot(), got.Seq(), want, wantSeq)
	}
	// The restored log goes on: new changes continue the sequence.
	writeAL(t, s, got, 40)
	again, err := s.LoadActivityLog(alDev, alExt, alCap)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(again.Hot(), got.Hot()) {
		t.Errorf("after restart and more writes: hot %v, want %v", again.Hot(), got.Hot())
	}
	// Compaction leaves nothing to replay.
	if err := s.CompactAL(again); err != nil {
		t.Fatal(err)
	}
	n := 0
	_ = db.ViewVolume(stateVol, func(tx *meta.VolumeTx) error {
		return tx.Records(logAL, 0, func(uint64, []byte) error { n++; return nil })
	})
	if n != 0 {
		t.Errorf("%d records left after CompactAL", n)
	}
	final, err := s.LoadActivityLog(alDev, alExt, alCap)
	if err != nil || !slices.Equal(final.Hot(), again.Hot()) {
		t.Errorf("after compaction: hot %v err %v, want %v", final.Hot(), err, again.Hot())
	}
}

func TestStoreActivityLogCorruptRecord(t *testing.T) {
	db, s := openStore(t, t.TempDir())
	defer db.Close()
	al, _ := NewActivityLog(alDev, alExt, alCap)
	writeAL(t, s, al, 1, 2)
	err := db.UpdateVolume(stateVol, func(tx *meta.VolumeTx) error {
		var rec []byte
		if err := tx.Records(logAL, 1, func(_ uint64, r []byte) error { rec = r; return nil }); err != nil {
			return err
		}
		rec[len(rec)-1] ^= 1
		if err := tx.TruncateRecords(logAL, 2); err != nil {
			return err
		}
		return tx.AppendRecord(logAL, 2, rec)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadActivityLog(alDev, alExt, alCap); !errors.Is(err, ErrALCorrupt) || !strings.Contains(err.Error(), "record 2: ") {
		t.Errorf("corrupt record: err = %v, want ErrALCorrupt for record 2", err)
	}
}

// TestStoreInvalidate: a store that does not hold the recorded data is
// recorded Inconsistent without a generation, its old one kept in history
// (so it is neither a sync source nor a new volume's first primary); a
// volume with no record is left alone.
func TestStoreInvalidate(t *testing.T) {
	_, s := openStore(t, t.TempDir())
	if err := s.Invalidate(); err != nil {
		t.Fatalf("Invalidate without a record: %v", err)
	}
	if _, _, ok, err := s.LoadGenerations(); ok || err != nil {
		t.Fatalf("Invalidate without a record wrote one: %v %v", ok, err)
	}
	g := Generations{Current: 0xc3, Bitmap: 0xb2, History: [HistoryLen]GenID{0xa1}}
	if err := s.SaveGenerations(g, UpToDate); err != nil {
		t.Fatal(err)
	}
	if err := s.Invalidate(); err != nil {
		t.Fatal(err)
	}
	got, disk, ok, err := s.LoadGenerations()
	if err != nil || !ok || disk != Inconsistent || got.Current != 0 || got.History[0] != 0xc3 || got.History[1] != 0xa1 {
		t.Fatalf("after Invalidate: %v %v %v %v; want Inconsistent, cur=0 hist=c3,a1", got, disk, ok, err)
	}
	peer := Side{Gen: Generations{Current: 0xd4, Bitmap: 0xc3, History: [HistoryLen]GenID{0xa1}}, Disk: UpToDate}
	if d := Decide(Side{Gen: got, Disk: disk}, peer, PolicyDisconnect); d.Action != BecomeSyncTarget || d.Resync != FullResync {
		t.Errorf("an invalidated replica against an UpToDate peer whose bitmap counts from its old generation: %v; want a full sync into it", d)
	}
}
