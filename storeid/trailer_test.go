package storeid

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/blockrep/blockrep/block"
	"github.com/blockrep/blockrep/block/blocktest"
)

func testTrailer() Trailer {
	return Trailer{
		Volume: uuid.New(), Store: uuid.New(), Gen: uuid.New(), Prev: uuid.New(), Node: uuid.New(),
		Size: 1 << 20, Written: time.Date(2026, 12, 7, 12, 0, 0, 123, time.UTC), Name: "vol0",
	}
}

func TestTrailerRoundTrip(t *testing.T) {
	tr := testTrailer()
	got, found, err := Parse(tr.Marshal())
	if err != nil || found != Valid || got != tr {
		t.Fatalf("Parse(Marshal(t)) = %+v, %v, %v; want %+v", got, found, err, tr)
	}
	if _, found, err := Parse(make([]byte, BlockSize)); found != Blank || err != nil {
		t.Errorf("zeroes: %v, %v; want blank", found, err)
	}
	// Every single flipped bit is caught: a corrupt identity is never
	// taken for a valid one (or for a blank one).
	b := tr.Marshal()
	for i := 0; i < BlockSize*8; i += 7 {
		b[i/8] ^= 1 << (i % 8)
		if _, found, err := Parse(b); found != Corrupt && found != Newer || err == nil {
			t.Fatalf("bit %d flipped: %v, %v; want corrupt", i, found, err)
		}
		b[i/8] ^= 1 << (i % 8)
	}
	other := make([]byte, BlockSize)
	copy(other, "some file system's last block")
	if _, found, err := Parse(other); found != Corrupt || !errors.Is(err, ErrCorrupt) {
		t.Errorf("other data: %v, %v; want corrupt", found, err)
	}
}

// TestDeviceKeepsTrailer: the data part is all a client can reach; the
// trailer is written with FUA and a flush, and read back.
func TestDeviceKeepsTrailer(t *testing.T) {
	const size = 64 << 10
	mem := blocktest.NewMem(size + BlockSize)
	d, err := NewDevice(mem, size, true)
	if err != nil {
		t.Fatal(err)
	}
	if d.Size() != size {
		t.Fatalf("size %d", d.Size())
	}
	tr := testTrailer()
	tr.Size = size
	flushes, fua := mem.Flushes(), mem.FUAWrites()
	if err := d.WriteTrailer(tr); err != nil {
		t.Fatal(err)
	}
	if mem.Flushes() != flushes+1 || mem.FUAWrites() != fua+1 {
		t.Errorf("WriteTrailer: %d flushes and %d FUA writes, want 1 and 1", mem.Flushes()-flushes, mem.FUAWrites()-fua)
	}
	if got, found, err := ReadTrailer(mem, size); got != tr || found != Valid || err != nil {
		t.Fatalf("ReadTrailer: %+v %v %v", got, found, err)
	}
	for name, err := range map[string]error{
		"write past":        d.WriteAt(make([]byte, 512), size, false),
		"write across":      d.WriteAt(make([]byte, 1024), size-512, false),
		"read past":         d.ReadAt(make([]byte, 512), size),
		"trim across":       d.Trim(size-4096, 8192),
		"zeroes across":     d.WriteZeroes(0, size+1, block.ZeroFlags{MayTrim: true}),
		"extents past":      d.Extents(size, 1, func(block.Extent) bool { return true }),
		"cache across":      d.Cache(size-1, 2),
		"negative offset":   d.ReadAt(make([]byte, 1), -1),
		"wrong size record": d.WriteTrailer(Trailer{Size: size + 1}),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		} else if name != "wrong size record" && !errors.Is(err, block.ErrOutOfRange) {
			t.Errorf("%s: %v, want ErrOutOfRange", name, err)
		}
	}
	if err := d.WriteZeroes(0, size, block.ZeroFlags{MayTrim: true}); err != nil {
		t.Fatal(err)
	}
	var end int64
	if err := d.Extents(0, size, func(e block.Extent) bool { end = e.Offset + e.Length; return true }); err != nil {
		t.Fatal(err)
	}
	if end != size {
		t.Errorf("extents end at %d, want %d (never past the data)", end, size)
	}
	if got, found, _ := ReadTrailer(mem, size); got != tr || found != Valid {
		t.Errorf("the trailer changed under requests to the data part: %v", found)
	}

	// An unreadable identity block.
	mem.FailNext(blocktest.OpRead, syscall.EIO, 1)
	if _, found, err := ReadTrailer(mem, size); found != Unreadable || !errors.Is(err, syscall.EIO) {
		t.Errorf("ReadTrailer on a failing store: %v, %v", found, err)
	}
	// Without room, NewDevice refuses to promise a trailer.
	if _, err := NewDevice(blocktest.NewMem(size), size, true); err == nil {
		t.Error("NewDevice with no room for the trailer succeeded")
	}
	u, err := NewDevice(blocktest.NewMem(size), size, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.WriteTrailer(tr); err == nil {
		t.Error("WriteTrailer on an unprotected store succeeded")
	}
}
