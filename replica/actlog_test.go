package replica

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

const mib = 1 << 20

func mustAL(t testing.TB, deviceSize, extentSize int64, capacity int) *ActivityLog {
	t.Helper()
	al, err := NewActivityLog(deviceSize, extentSize, capacity)
	if err != nil {
		t.Fatalf("NewActivityLog(%d, %d, %d): %v", deviceSize, extentSize, capacity, err)
	}
	return al
}

// lruOrder lists the hot extents least recently used first.
func lruOrder(al *ActivityLog) []uint64 {
	var out []uint64
	for s := al.lru; s != alNoSlot; s = al.slots[s].prev {
		out = append(out, al.slots[s].ext)
	}
	return out
}

func TestNewActivityLogGeometry(t *testing.T) {
	tests := []struct {
		deviceSize, extentSize int64
		capacity               int
		extents                uint64
		wantErr                string
	}{
		{deviceSize: 1 << 40, extentSize: DefaultExtentSize, capacity: DefaultALCapacity, extents: 1 << 18},
		{deviceSize: 1, extentSize: mib, capacity: 1, extents: 1},
		{deviceSize: 4*mib + 1, extentSize: 4 * mib, capacity: 7, extents: 2},
		{deviceSize: 1 << 30, extentSize: mib / 2, capacity: 7, wantErr: "extent size 524288"},
		{deviceSize: 1 << 30, extentSize: 3 * mib, capacity: 7, wantErr: "not a power of two"},
		{deviceSize: 0, extentSize: mib, capacity: 7, wantErr: "device size 0"},
		{deviceSize: 1 << 30, extentSize: mib, capacity: 0, wantErr: "capacity 0"},
		{deviceSize: 1 << 30, extentSize: mib, capacity: -3, wantErr: "capacity -3"},
	}
	for _, tt := range tests {
		al, err := NewActivityLog(tt.deviceSize, tt.extentSize, tt.capacity)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("NewActivityLog(%d, %d, %d) error = %v, want one containing %q", tt.deviceSize, tt.extentSize, tt.capacity, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("NewActivityLog(%d, %d, %d): %v", tt.deviceSize, tt.extentSize, tt.capacity, err)
			continue
		}
		if al.Extents() != tt.extents || al.DeviceSize() != tt.deviceSize || al.ExtentSize() != tt.extentSize || al.Capacity() != tt.capacity {
			t.Errorf("NewActivityLog(%d, %d, %d): Extents %d, want %d", tt.deviceSize, tt.extentSize, tt.capacity, al.Extents(), tt.extents)
		}
	}
}

func TestActivityLogExtentRange(t *testing.T) {
	al := mustAL(t, 10*mib+5, 4*mib, 7)
	for _, tt := range []struct {
		ext         uint64
		off, length int64
	}{{0, 0, 4 * mib}, {1, 4 * mib, 4 * mib}, {2, 8 * mib, 2*mib + 5}, {3, 0, 0}} {
		off, length := al.ExtentRange(tt.ext)
		if off != tt.off || length != tt.length {
			t.Errorf("ExtentRange(%d) = %d, %d; want %d, %d", tt.ext, off, length, tt.off, tt.length)
		}
	}
}

// alStep is one call in a scripted scenario, with its expected outcome.
type alStep struct {
	op          string // "begin", "end", "commit" (Committed(Seq()))
	off, length int64
	added       []uint64 // begin: the change's Added; nil with evicted nil means no change
	evicted     []uint64 // begin: the change's Evicted
	err         error    // begin: the expected error
	hot         []uint64 // after the step, when non-nil: Hot()
	lru         []uint64 // after the step, when non-nil: recency order, least recent first
}

func runALSteps(t *testing.T, al *ActivityLog, steps []alStep) {
	t.Helper()
	for i, st := range steps {
		switch st.op {
		case "begin":
			c, err := al.Begin(st.off, st.length)
			if !errors.Is(err, st.err) || (err != nil) != (st.err != nil) {
				t.Fatalf("step %d: Begin(%d, %d) error = %v, want %v", i, st.off, st.length, err, st.err)
			}
			switch {
			case st.added == nil && st.evicted == nil:
				if c != nil {
					t.Fatalf("step %d: Begin(%d, %d) = %+v, want no change", i, st.off, st.length, *c)
				}
			case c == nil:
				t.Fatalf("step %d: Begin(%d, %d) = no change, want added %v evicted %v", i, st.off, st.length, st.added, st.evicted)
			case !slices.Equal(c.Added, st.added) || !slices.Equal(c.Evicted, st.evicted) || c.Seq != al.Seq():
				t.Fatalf("step %d: Begin(%d, %d) = %+v, want added %v evicted %v seq %d", i, st.off, st.length, *c, st.added, st.evicted, al.Seq())
			}
		case "end":
			al.End(st.off, st.length)
		case "commit":
			al.Committed(al.Seq())
		default:
			t.Fatalf("step %d: unknown op %q", i, st.op)
		}
		if st.hot != nil && !slices.Equal(al.Hot(), st.hot) {
			t.Fatalf("step %d: Hot() = %v, want %v", i, al.Hot(), st.hot)
		}
		if st.lru != nil && !slices.Equal(lruOrder(al), st.lru) {
			t.Fatalf("step %d: recency order = %v, want %v", i, lruOrder(al), st.lru)
		}
	}
}

// ext returns the byte offset of extent e of a log with 1 MiB extents.
func ext(e int64) int64 { return e * mib }

func TestActivityLogScenarios(t *testing.T) {
	none := []uint64{}
	tests := []struct {
		name     string
		capacity int
		steps    []alStep
	}{
		{"first write into a cold extent makes it hot", 3, []alStep{
			{op: "begin", off: ext(5) + 100, length: 4096, added: []uint64{5}, hot: []uint64{5}},
			{op: "commit"},
			{op: "end", off: ext(5) + 100, length: 4096, hot: []uint64{5}},
			// Hot already: no change, no metadata write.
			{op: "begin", off: ext(5), length: 4096},
			{op: "end", off: ext(5), length: 4096},
		}},
		{"a write spanning two extents makes both hot", 3, []alStep{
			{op: "begin", off: ext(2) - 512, length: 4096, added: []uint64{1, 2}, hot: []uint64{1, 2}},
			{op: "commit"},
			{op: "end", off: ext(2) - 512, length: 4096},
			{op: "begin", off: ext(2) - 512, length: 4096},
		}},
		{"a write spanning a hot and a cold extent adds only the cold one", 3, []alStep{
			{op: "begin", off: ext(1), length: 4096, added: []uint64{1}},
			{op: "commit"},
			{op: "begin", off: ext(2) - 512, length: 4096, added: []uint64{2}, hot: []uint64{1, 2}},
		}},
		{"zero-length write touches nothing", 3, []alStep{
			{op: "begin", off: ext(3), length: 0, hot: none},
			{op: "end", off: ext(3), length: 0, hot: none},
		}},
		{"eviction takes the least recently used", 3, []alStep{
			{op: "begin", off: ext(0), length: 1, added: []uint64{0}},
			{op: "begin", off: ext(1), length: 1, added: []uint64{1}},
			{op: "begin", off: ext(2), length: 1, added: []uint64{2}, lru: []uint64{0, 1, 2}},
			{op: "commit"},
			{op: "end", off: ext(0), length: 1},
			{op: "end", off: ext(1), length: 1},
			{op: "end", off: ext(2), length: 1},
			// Using 0 again makes 1 the least recently used.
			{op: "begin", off: ext(0), length: 1, lru: []uint64{1, 2, 0}},
			{op: "end", off: ext(0), length: 1},
			{op: "begin", off: ext(3), length: 1, added: []uint64{3}, evicted: []uint64{1}, hot: []uint64{0, 2, 3}, lru: []uint64{2, 0, 3}},
			{op: "commit"},
			{op: "begin", off: ext(4), length: 1, added: []uint64{4}, evicted: []uint64{2}, hot: []uint64{0, 3, 4}},
			{op: "commit"},
			// Two cold extents need two idle extents; 3 and 4 are busy.
			{op: "begin", off: ext(6) - 1, length: 2, err: ErrALFull, hot: []uint64{0, 3, 4}},
			{op: "end", off: ext(3), length: 1},
			{op: "end", off: ext(4), length: 1},
			{op: "begin", off: ext(6) - 1, length: 2, added: []uint64{5, 6}, evicted: []uint64{0, 3}, hot: []uint64{4, 5, 6}, lru: []uint64{4, 5, 6}},
		}},
		{"an extent with writes in flight is never evicted", 3, []alStep{
			{op: "begin", off: ext(0), length: 1, added: []uint64{0}}, // stays in flight
			{op: "begin", off: ext(1), length: 1, added: []uint64{1}},
			{op: "begin", off: ext(2), length: 1, added: []uint64{2}},
			{op: "commit"},
			{op: "end", off: ext(1), length: 1},
			{op: "end", off: ext(2), length: 1},
			// 0 is least recently used but busy: 1 goes.
			{op: "begin", off: ext(3), length: 1, added: []uint64{3}, evicted: []uint64{1}, hot: []uint64{0, 2, 3}},
		}},
		{"ErrALFull when every hot extent is busy, and nothing changes", 2, []alStep{
			{op: "begin", off: ext(0), length: 1, added: []uint64{0}},
			{op: "begin", off: ext(1), length: 1, added: []uint64{1}},
			{op: "commit"},
			{op: "begin", off: ext(2), length: 1, err: ErrALFull, hot: []uint64{0, 1}, lru: []uint64{0, 1}},
			// A second write into a hot extent still proceeds.
			{op: "begin", off: ext(0), length: 1, lru: []uint64{1, 0}},
			{op: "end", off: ext(0), length: 1},
			{op: "begin", off: ext(2), length: 1, err: ErrALFull},
			// After the last write into extent 0 ends, it can go.
			{op: "end", off: ext(0), length: 1},
			{op: "begin", off: ext(2), length: 1, added: []uint64{2}, evicted: []uint64{0}, hot: []uint64{1, 2}},
		}},
		{"ErrALFull when the only idle extent belongs to the write itself", 2, []alStep{
			{op: "begin", off: ext(1), length: 1, added: []uint64{1}}, // stays in flight
			{op: "begin", off: ext(2), length: 1, added: []uint64{2}},
			{op: "commit"},
			{op: "end", off: ext(2), length: 1},
			// Needs 2 (hot, idle) and 3 (cold): 2 must not be evicted to
			// make room for 3, and 1 is busy.
			{op: "begin", off: ext(3) - 1, length: 2, err: ErrALFull, hot: []uint64{1, 2}, lru: []uint64{1, 2}},
		}},
		{"a write after End of the LRU extent evicts it", 3, []alStep{
			{op: "begin", off: ext(7), length: 4096, added: []uint64{7}},
			{op: "begin", off: ext(8), length: 4096, added: []uint64{8}},
			{op: "begin", off: ext(9), length: 4096, added: []uint64{9}},
			{op: "commit"},
			{op: "begin", off: ext(10), length: 4096, err: ErrALFull},
			{op: "end", off: ext(7), length: 4096},
			{op: "begin", off: ext(10), length: 4096, added: []uint64{10}, evicted: []uint64{7}, hot: []uint64{8, 9, 10}},
		}},
		{"writes wait until the change that made their extent hot is committed", 3, []alStep{
			{op: "begin", off: ext(0), length: 4096, added: []uint64{0}},
			// Extent 0 is hot in memory, but not yet on disk.
			{op: "begin", off: ext(0) + 4096, length: 4096, err: ErrALPending},
			// Other extents are not held up.
			{op: "begin", off: ext(1), length: 4096, added: []uint64{1}},
			{op: "commit"},
			{op: "begin", off: ext(0) + 4096, length: 4096, hot: []uint64{0, 1}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runALSteps(t, mustAL(t, 64*mib, mib, tt.capacity), tt.steps)
		})
	}
}

func TestActivityLogBadWrites(t *testing.T) {
	al := mustAL(t, 10*mib, mib, 3)
	for _, tt := range []struct {
		off, length int64
		want        string
	}{
		{-1, 10, "outside the 10485760-byte device"},
		{10 * mib, 1, "outside"},
		{10*mib - 1, 2, "outside"},
		{0, -1, "outside"},
		{1 << 62, 1 << 62, "outside"},
		{0, 4 * mib, "spans 4 extents, more than the 3 that may be hot"},
	} {
		c, err := al.Begin(tt.off, tt.length)
		if err == nil || !strings.Contains(err.Error(), tt.want) || c != nil {
			t.Errorf("Begin(%d, %d) = %v, %v; want an error containing %q", tt.off, tt.length, c, err, tt.want)
		}
		if errors.Is(err, ErrALFull) || errors.Is(err, ErrALPending) {
			t.Errorf("Begin(%d, %d) = %v: retrying cannot help, so it must not look retryable", tt.off, tt.length, err)
		}
	}
	if len(al.Hot()) != 0 || al.Seq() != 0 {
		t.Errorf("bad writes changed the log: Hot %v Seq %d", al.Hot(), al.Seq())
	}
}

func TestActivityLogEndWithoutBeginPanics(t *testing.T) {
	al := mustAL(t, 10*mib, mib, 3)
	if _, err := al.Begin(0, 4096); err != nil {
		t.Fatal(err)
	}
	al.End(0, 4096)
	for _, r := range [][2]int64{{0, 4096}, {mib - 1, 2}, {20 * mib, 1}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("End(%d, %d) without a write in flight did not panic", r[0], r[1])
				}
			}()
			al.End(r[0], r[1])
		}()
	}
	if al.InFlight(0) != 0 {
		t.Errorf("InFlight(0) = %d after a refused End", al.InFlight(0))
	}
}

// TestActivityLogRestore checks that a snapshot, alone or followed by the
// changes persisted after it, rebuilds the same hot set and recency order.
func TestActivityLogRestore(t *testing.T) {
	al := mustAL(t, 64*mib, mib, 4)
	var records [][]byte // every change, marshalled, as a caller would persist them
	var snapshot []byte
	write := func(e int64) {
		t.Helper()
		c, err := al.Begin(ext(e), 4096)
		if err != nil {
			t.Fatal(err)
		}
		if c != nil {
			rec, err := c.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			records = append(records, rec)
			al.Committed(c.Seq)
		}
		al.End(ext(e), 4096)
	}
	for _, e := range []int64{1, 2, 3, 1, 4, 5} {
		write(e)
	}
	snapshot, _ = al.MarshalBinary()
	snapSeq := al.Seq()
	for _, e := range []int64{6, 2, 7, 9, 9, 1} {
		write(e)
	}
	// In flight at the "crash": its change is persisted before the write is
	// issued, so it is among the records.
	c, err := al.Begin(ext(3), 4096)
	if err != nil || c == nil {
		t.Fatalf("Begin into cold extent 3 = %v, %v", c, err)
	}
	rec, _ := c.MarshalBinary()
	records = append(records, rec)
	al.Committed(c.Seq)

	check := func(name string, r *ActivityLog) {
		t.Helper()
		if !slices.Equal(r.Hot(), al.Hot()) || !slices.Equal(lruOrder(r), lruOrder(al)) || r.Seq() != al.Seq() {
			t.Errorf("%s: Hot %v order %v seq %d, want %v %v %d", name, r.Hot(), lruOrder(r), r.Seq(), al.Hot(), lruOrder(al), al.Seq())
		}
		if r.InFlight(3) != 0 {
			t.Errorf("%s: restored log has writes in flight", name)
		}
		// Everything restored is durable: no write waits on ErrALPending.
		for _, e := range r.Hot() {
			if _, err := r.Begin(ext(int64(e)), 1); err != nil {
				t.Errorf("%s: Begin in restored hot extent %d: %v", name, e, err)
			}
		}
	}

	// From a snapshot of the final state.
	final, _ := al.MarshalBinary()
	var fromSnap ActivityLog
	if err := fromSnap.UnmarshalBinary(final); err != nil {
		t.Fatal(err)
	}
	check("snapshot", &fromSnap)

	// From the earlier snapshot plus every record (the older ones are
	// skipped), into a log configured like the original.
	replay := mustAL(t, 64*mib, mib, 4)
	if err := replay.UnmarshalBinary(snapshot); err != nil {
		t.Fatal(err)
	}
	if replay.Seq() != snapSeq {
		t.Fatalf("snapshot Seq = %d, want %d", replay.Seq(), snapSeq)
	}
	for _, rec := range records {
		var c ALChange
		if err := c.UnmarshalBinary(rec); err != nil {
			t.Fatal(err)
		}
		if err := replay.Apply(&c); err != nil {
			t.Fatalf("Apply(%+v): %v", c, err)
		}
	}
	check("snapshot + changes", replay)

	// From an empty log and every record.
	var fromScratch ActivityLog
	empty := mustAL(t, 64*mib, mib, 4)
	emptySnap, _ := empty.MarshalBinary()
	if err := fromScratch.UnmarshalBinary(emptySnap); err != nil {
		t.Fatal(err)
	}
	for _, rec := range records {
		var c ALChange
		if err := c.UnmarshalBinary(rec); err != nil {
			t.Fatal(err)
		}
		if err := fromScratch.Apply(&c); err != nil {
			t.Fatalf("Apply(%+v): %v", c, err)
		}
	}
	check("changes only", &fromScratch)
}

func TestActivityLogApplyErrors(t *testing.T) {
	base := func() *ActivityLog {
		al := mustAL(t, 16*mib, mib, 2)
		if err := al.Apply(&ALChange{Seq: 1, Added: []uint64{3, 4}}); err != nil {
			t.Fatal(err)
		}
		return al
	}
	tests := []struct {
		name string
		c    ALChange
		want string
	}{
		{"gap", ALChange{Seq: 3, Added: []uint64{5}}, "change 3 cannot follow change 1: 1 change(s) missing"},
		{"evicts a cold extent", ALChange{Seq: 2, Added: []uint64{5}, Evicted: []uint64{6}}, "evicts extent 6, which is not hot"},
		{"evicts twice", ALChange{Seq: 2, Evicted: []uint64{3, 3}}, "evicts extent 3 twice"},
		{"adds a hot extent", ALChange{Seq: 2, Added: []uint64{4}, Evicted: []uint64{3}}, "adds extent 4, which is already hot"},
		{"adds twice", ALChange{Seq: 2, Added: []uint64{5, 5}, Evicted: []uint64{3, 4}}, "adds extent 5 twice"},
		{"adds past the end", ALChange{Seq: 2, Added: []uint64{16}, Evicted: []uint64{3}}, "adds extent 16, past the last of 16"},
		{"over capacity", ALChange{Seq: 2, Added: []uint64{5}}, "leaves 3 extents hot, capacity is 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			al := base()
			err := al.Apply(&tt.c)
			if !errors.Is(err, ErrALCorrupt) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Apply(%+v) = %v, want ErrALCorrupt containing %q", tt.c, err, tt.want)
			}
			if !slices.Equal(al.Hot(), []uint64{3, 4}) || al.Seq() != 1 {
				t.Errorf("failed Apply changed the log: Hot %v Seq %d", al.Hot(), al.Seq())
			}
		})
	}
	al := base()
	if err := al.Apply(&ALChange{Seq: 1, Added: []uint64{9}}); err != nil || !slices.Equal(al.Hot(), []uint64{3, 4}) {
		t.Errorf("replaying an already included change: %v, Hot %v", err, al.Hot())
	}
	if err := al.Apply(nil); err != nil {
		t.Errorf("Apply(nil) = %v", err)
	}
	// A live log refuses to evict an extent with a write in flight.
	if _, err := al.Begin(ext(3), 1); err != nil {
		t.Fatal(err)
	}
	if err := al.Apply(&ALChange{Seq: 2, Added: []uint64{5}, Evicted: []uint64{3}}); !errors.Is(err, ErrALCorrupt) {
		t.Errorf("Apply evicting a busy extent = %v, want ErrALCorrupt", err)
	}
}

func TestActivityLogUnmarshalErrors(t *testing.T) {
	al := mustAL(t, 64*mib, mib, 4)
	for _, e := range []int64{1, 2, 3} {
		if _, err := al.Begin(ext(e), 1); err != nil {
			t.Fatal(err)
		}
	}
	good, _ := al.MarshalBinary()
	edit := func(f func(d []byte) []byte) []byte { return f(slices.Clone(good)) }

	tests := []struct {
		name   string
		data   []byte
		target *ActivityLog // nil: a zero ActivityLog
		is     error
		want   string
	}{
		{"empty", nil, nil, ErrALCorrupt, "shorter than the 48-byte header"},
		{"bad magic", edit(func(d []byte) []byte { copy(d, "BRBM"); return d }), nil, ErrALCorrupt, "not an activity log"},
		{"future version", edit(func(d []byte) []byte { d[4] = 9; return reseal(d) }), nil, ErrALCorrupt, "version 9"},
		{"flipped extent bit", edit(func(d []byte) []byte { d[alHeaderLen] ^= 1; return d }), nil, ErrALCorrupt, "checksum mismatch"},
		{"truncated", good[:len(good)-8], nil, ErrALCorrupt, "checksum mismatch"},
		{"truncated, checksum fixed", edit(func(d []byte) []byte { return reseal(d[:len(d)-8]) }), nil, ErrALCorrupt, "for 3 hot extents"},
		{"more hot than capacity", edit(func(d []byte) []byte { binary.LittleEndian.PutUint32(d[12:], 2); return reseal(d) }), nil, ErrALCorrupt, "capacity 2"},
		{"extent past the end", edit(func(d []byte) []byte { binary.LittleEndian.PutUint64(d[alHeaderLen:], 64); return reseal(d) }), nil, ErrALCorrupt, "hot extent 64 past the last of 64"},
		{"duplicate extent", edit(func(d []byte) []byte { copy(d[alHeaderLen:], d[alHeaderLen+8:alHeaderLen+16]); return reseal(d) }), nil, ErrALCorrupt, "listed twice"},
		{"bad extent size", edit(func(d []byte) []byte { binary.LittleEndian.PutUint64(d[24:], 4096); return reseal(d) }), nil, ErrALCorrupt, "extent size 4096"},
		{"other device size", good, mustAL(t, 128*mib, mib, 4), ErrALGeometry,
			"persisted log is for 67108864 bytes in 1048576-byte extents, the volume has 134217728 bytes in 1048576-byte extents"},
		{"other extent size", good, mustAL(t, 64*mib, 4*mib, 4), ErrALGeometry, "in 4194304-byte extents"},
		{"smaller capacity", good, mustAL(t, 64*mib, mib, 2), ErrALGeometry, "holds 3 hot extents, more than the configured capacity of 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := tt.target
			if target == nil {
				target = new(ActivityLog)
			}
			before, _ := target.MarshalBinary()
			err := target.UnmarshalBinary(tt.data)
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("UnmarshalBinary error = %v, want %v containing %q", err, tt.is, tt.want)
			}
			if after, _ := target.MarshalBinary(); !slices.Equal(before, after) {
				t.Error("failed UnmarshalBinary changed the log")
			}
		})
	}

	// A larger configured capacity keeps its own capacity.
	big := mustAL(t, 64*mib, mib, 100)
	if err := big.UnmarshalBinary(good); err != nil || big.Capacity() != 100 || !slices.Equal(big.Hot(), []uint64{1, 2, 3}) {
		t.Errorf("restore into a larger log: %v, capacity %d, Hot %v", err, big.Capacity(), big.Hot())
	}
}

func TestALChangeMarshal(t *testing.T) {
	for _, c := range []ALChange{
		{Seq: 1, Added: []uint64{7}},
		{Seq: 1 << 40, Added: []uint64{1, 2, 3}, Evicted: []uint64{9, 1 << 50}},
		{Seq: 5, Evicted: []uint64{4}},
	} {
		data, err := c.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var r ALChange
		if err := r.UnmarshalBinary(data); err != nil {
			t.Fatalf("UnmarshalBinary(%+v): %v", c, err)
		}
		if r.Seq != c.Seq || !slices.Equal(r.Added, c.Added) || !slices.Equal(r.Evicted, c.Evicted) {
			t.Errorf("round trip of %+v gave %+v", c, r)
		}
		// Every torn prefix and every single flipped bit is detected.
		for n := range len(data) {
			if err := r.UnmarshalBinary(data[:n]); !errors.Is(err, ErrALCorrupt) {
				t.Fatalf("%d-byte prefix of %+v: %v", n, c, err)
			}
		}
		for i := range len(data) * 8 {
			d := slices.Clone(data)
			d[i/8] ^= 1 << (i % 8)
			if err := r.UnmarshalBinary(d); !errors.Is(err, ErrALCorrupt) {
				t.Fatalf("bit %d flipped in %+v: %v", i, c, err)
			}
		}
	}
}

func TestActivityLogHotPathAllocs(t *testing.T) {
	al := mustAL(t, 1<<40, DefaultExtentSize, DefaultALCapacity)
	for e := range int64(DefaultALCapacity) {
		if _, err := al.Begin(e*DefaultExtentSize, 4096); err != nil {
			t.Fatal(err)
		}
		al.End(e*DefaultExtentSize, 4096)
	}
	al.Committed(al.Seq())
	var i int64
	allocs := testing.AllocsPerRun(1000, func() {
		off := (i*7919%DefaultALCapacity)*DefaultExtentSize + 8192
		i++
		if c, err := al.Begin(off, 4096); c != nil || err != nil {
			t.Fatalf("Begin in a hot extent: %v, %v", c, err)
		}
		al.End(off, 4096)
	})
	if allocs != 0 {
		t.Errorf("Begin+End into hot extents allocates %.1f times", allocs)
	}
}

// TestActivityLogProperty drives a log with random writes that begin, wait
// for their change to be persisted, and end in random order, while a second
// log rebuilt only from the persisted records plays the successor that must
// resync after a crash. Invariants checked after every step:
//   - at most capacity extents are hot;
//   - an extent with writes in flight is hot, in memory and in the records;
//   - an extent only leaves the hot set through a change's Evicted, and only
//     enters it through a change's Added;
//   - every issued write that has not ended is covered by the hot set rebuilt
//     from the records, so a crash at any moment resyncs it;
//   - with every change persisted, the rebuilt hot set equals the live one.
func TestActivityLogProperty(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 42))
		const extents = 24
		capacity := 1 + rng.IntN(8)
		al := mustAL(t, extents*mib-12345, mib, capacity)
		emptySnap, _ := al.MarshalBinary()
		durable := new(ActivityLog)
		if err := durable.UnmarshalBinary(emptySnap); err != nil {
			t.Fatal(err)
		}

		type write struct {
			off, length int64
			needSeq     uint64 // write may be issued once this Seq is durable
		}
		var (
			queue   []*ALChange // changes made but not yet persisted, in Seq order
			waiting []write     // begun, waiting for their change to be durable
			issued  []write     // sent to the disks, not ended
		)
		for step := range 2000 {
			prevHot := al.Hot()
			var change *ALChange
			switch op := rng.IntN(10); {
			case op < 4: // a new write, usually small, sometimes across extents
				length := int64(1 + rng.IntN(8192))
				if rng.IntN(5) == 0 {
					length = int64(1 + rng.IntN(3*mib))
				}
				off := rng.Int64N(al.DeviceSize() - length + 1)
				c, err := al.Begin(off, length)
				switch {
				case errors.Is(err, ErrALFull), errors.Is(err, ErrALPending):
					// nothing changed; the write would wait and retry
				case err != nil:
					first, last, _ := al.span(off, length)
					if last-first+1 <= uint64(capacity) {
						t.Fatalf("seed %d step %d: Begin(%d, %d): %v", seed, step, off, length, err)
					}
				case c != nil:
					change = c
					queue = append(queue, c)
					waiting = append(waiting, write{off, length, c.Seq})
				default:
					issued = append(issued, write{off, length, 0})
				}
			case op < 7: // persist the oldest pending change
				if len(queue) == 0 {
					continue
				}
				rec, _ := queue[0].MarshalBinary()
				var c ALChange
				if err := c.UnmarshalBinary(rec); err != nil {
					t.Fatal(err)
				}
				if err := durable.Apply(&c); err != nil {
					t.Fatalf("seed %d step %d: replaying change %d: %v", seed, step, c.Seq, err)
				}
				al.Committed(c.Seq)
				queue = queue[1:]
				waiting = slices.DeleteFunc(waiting, func(w write) bool {
					if w.needSeq <= c.Seq {
						issued = append(issued, w)
						return true
					}
					return false
				})
			default: // a write completes
				if len(issued) == 0 {
					continue
				}
				i := rng.IntN(len(issued))
				al.End(issued[i].off, issued[i].length)
				issued = slices.Delete(issued, i, i+1)
			}

			hot := al.Hot()
			if len(hot) > capacity {
				t.Fatalf("seed %d step %d: %d hot extents, capacity %d", seed, step, len(hot), capacity)
			}
			var added, evicted []uint64
			if change != nil {
				added, evicted = change.Added, change.Evicted
			}
			for _, e := range hot {
				if !slices.Contains(prevHot, e) && !slices.Contains(added, e) {
					t.Fatalf("seed %d step %d: extent %d became hot without a change", seed, step, e)
				}
			}
			for _, e := range prevHot {
				if !slices.Contains(hot, e) && !slices.Contains(evicted, e) {
					t.Fatalf("seed %d step %d: extent %d left the hot set without a change", seed, step, e)
				}
			}
			durableHot := durable.Hot()
			for _, w := range slices.Concat(waiting, issued) {
				first, last, _ := al.span(w.off, w.length)
				for e := first; e <= last; e++ {
					if al.InFlight(e) == 0 || !slices.Contains(hot, e) {
						t.Fatalf("seed %d step %d: write [%d, +%d) in flight but extent %d is not hot with writes in flight", seed, step, w.off, w.length, e)
					}
				}
			}
			for _, w := range issued {
				first, last, _ := al.span(w.off, w.length)
				for e := first; e <= last; e++ {
					if !slices.Contains(durableHot, e) {
						t.Fatalf("seed %d step %d: issued write [%d, +%d) touches extent %d, which the persisted log does not list: a crash now would not resync it",
							seed, step, w.off, w.length, e)
					}
				}
			}
			if len(queue) == 0 && !slices.Equal(durableHot, hot) {
				t.Fatalf("seed %d step %d: persisted hot set %v, live %v", seed, step, durableHot, hot)
			}
		}
	}
}

// BenchmarkActivityLogBeginEnd is the cost per write into a hot extent: the
// common case, which needs no metadata I/O.
func BenchmarkActivityLogBeginEnd(b *testing.B) {
	al := mustAL(b, 1<<40, DefaultExtentSize, DefaultALCapacity)
	for e := range int64(DefaultALCapacity) {
		al.Begin(e*DefaultExtentSize, 4096)
		al.End(e*DefaultExtentSize, 4096)
	}
	al.Committed(al.Seq())
	b.ReportAllocs()
	var i int64
	for b.Loop() {
		off := (i * 7919 % DefaultALCapacity) * DefaultExtentSize
		i++
		al.Begin(off, 4096)
		al.End(off, 4096)
	}
}

// BenchmarkActivityLogEvict is the cost of a write into a cold extent that
// evicts one: a random-write workload wider than the log.
func BenchmarkActivityLogEvict(b *testing.B) {
	al := mustAL(b, 1<<40, DefaultExtentSize, DefaultALCapacity)
	b.ReportAllocs()
	var e int64
	for b.Loop() {
		off := (e % (1 << 18)) * DefaultExtentSize
		e++
		c, err := al.Begin(off, 4096)
		if err != nil {
			b.Fatal(err)
		}
		if c != nil {
			al.Committed(c.Seq)
		}
		al.End(off, 4096)
	}
}
