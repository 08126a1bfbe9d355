package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"

	"github.com/blockrep/blockrep/meta"
)

// Durable replica state
//
// Store keeps one volume's replica metadata — generation record and disk
// state, one out-of-sync bitmap per peer, the activity log — in the node's
// meta database. The meta package stores bytes in buckets; this file decides
// what the bytes are. Under the volume's bucket (see package meta):
//
//	state/generations       Generations.MarshalBinary
//	state/disk              crc32c (4, LE) | disk state (1)
//	state/bitmap/<peer>     bitmap geometry header, see below
//	pages/bitmap/<peer>/<i> crc32c (4, LE) | page i (Bitmap.Page)
//	state/al.snapshot       ActivityLog.MarshalBinary, the last compaction
//	logs/al/<seq>           ALChange.MarshalBinary, changes after the snapshot
//
// The page checksum covers the page index (uint32 LE) then the page bytes, so
// a page stored under the wrong index is rejected like a damaged one.
//
// Bitmap geometry header (integers little-endian):
//
//	0   4  magic "BRBG"
//	4   4  version (1)
//	8   4  crc32c of bytes [0, 8) and [12, 24)
//	12  4  block size in bytes
//	16  8  device size in bytes
//
// Every Store method is one meta transaction, durable when it returns nil.

// Generations persistence format (integers little-endian):
//
//	0   4  magic "BRGN"
//	4   4  version (1)
//	8   4  crc32c of the record without this field
//	12  4  number of history entries n
//	16  8  current
//	24  8  bitmap
//	32  8n history, newest first
//
// A record with more history entries than HistoryLen keeps the newest
// HistoryLen (older generations are forgotten, as in NewCurrent); fewer are
// zero-padded.
const (
	genMagic      = "BRGN"
	genVersion    = 1
	genHeaderLen  = 32
	genMaxHistory = 1 << 10

	bmGeomMagic   = "BRBG"
	bmGeomVersion = 1
	bmGeomLen     = 24
)

var (
	genRecord    = recordKind{magic: genMagic, version: genVersion, name: "a generation record", corrupt: ErrGenCorrupt}
	bmGeomRecord = recordKind{magic: bmGeomMagic, version: bmGeomVersion, name: "a bitmap geometry header", corrupt: ErrBitmapCorrupt}
)

// Keys, page sets and logs of a Store in its volume's meta state.
const (
	keyGenerations = "generations"
	keyDisk        = "disk"
	keyALSnapshot  = "al.snapshot"
	logAL          = "al"
	bitmapPrefix   = "bitmap/"
)

// Errors returned by Store, for errors.Is.
var (
	// ErrNotStored means the state asked for was never saved (for a bitmap:
	// no bitmap of that peer). For a peer that is new this is expected;
	// for a peer the volume knew, the bitmap is lost and only a full
	// resync is safe.
	ErrNotStored = errors.New("replica: state not stored")
	// ErrGenCorrupt means a persisted generation record or disk state
	// failed validation.
	ErrGenCorrupt = errors.New("replica: corrupt generation record")
)

// MarshalBinary encodes the record with a version and a CRC-32C.
func (g Generations) MarshalBinary() ([]byte, error) {
	data := make([]byte, genHeaderLen+8*HistoryLen)
	binary.LittleEndian.PutUint32(data[12:], HistoryLen)
	binary.LittleEndian.PutUint64(data[16:], uint64(g.Current))
	binary.LittleEndian.PutUint64(data[24:], uint64(g.Bitmap))
	for i, h := range g.History {
		binary.LittleEndian.PutUint64(data[genHeaderLen+8*i:], uint64(h))
	}
	genRecord.seal(data)
	return data, nil
}

// UnmarshalBinary replaces g with a record encoded by MarshalBinary. Damaged
// data fails with ErrGenCorrupt and leaves g unchanged.
func (g *Generations) UnmarshalBinary(data []byte) error {
	if err := genRecord.open(data, genHeaderLen); err != nil {
		return err
	}
	n := binary.LittleEndian.Uint32(data[12:])
	if n > genMaxHistory || len(data) != genHeaderLen+8*int(n) {
		return fmt.Errorf("%w: %d bytes for %d history entries", ErrGenCorrupt, len(data), n)
	}
	var r Generations
	r.Current = GenID(binary.LittleEndian.Uint64(data[16:]))
	r.Bitmap = GenID(binary.LittleEndian.Uint64(data[24:]))
	for i := range min(int(n), HistoryLen) {
		r.History[i] = GenID(binary.LittleEndian.Uint64(data[genHeaderLen+8*i:]))
	}
	*g = r
	return nil
}

// Store persists one volume's replica state in a meta database. It is safe
// for concurrent use, but a Bitmap or ActivityLog handed to it must not
// change during the call (the caller holds the volume's bookkeeping lock, as
// for every other use of them).
type Store struct {
	db     *meta.DB
	volume string

	mu sync.Mutex
	// synced maps a peer to the bitmap whose pages the database holds up
	// to that bitmap's dirty pages. A different bitmap for the peer (a new
	// one, or a reload) is saved in full, since its dirty-page set does
	// not describe its difference from what is stored.
	synced map[string]*Bitmap
	// pageWrites counts bitmap pages written, for tests.
	pageWrites int
}

// NewStore returns the store of volume in db. The volume must have a record
// (meta.DB.EnsureVolume); otherwise every call fails with meta.ErrNoVolume.
func NewStore(db *meta.DB, volume string) *Store {
	return &Store{db: db, volume: volume, synced: make(map[string]*Bitmap)}
}

// SaveGenerations durably records the generation record and disk state
// together.
func (s *Store) SaveGenerations(g Generations, disk DiskState) error {
	if disk > UpToDate {
		return fmt.Errorf("replica: volume %q: cannot save disk state %v", s.volume, disk)
	}
	gb, _ := g.MarshalBinary()
	db := make([]byte, 5)
	db[4] = byte(disk)
	binary.LittleEndian.PutUint32(db, crc32.Checksum(db[4:], castagnoli))
	return s.update(func(tx *meta.VolumeTx) error {
		if err := tx.Put(keyGenerations, gb); err != nil {
			return err
		}
		return tx.Put(keyDisk, db)
	})
}

// LoadGenerations returns the saved generation record and disk state; ok is
// false (and the values zero) when none was ever saved.
func (s *Store) LoadGenerations() (g Generations, disk DiskState, ok bool, err error) {
	var gb, db []byte
	if err := s.view(func(tx *meta.VolumeTx) error {
		gb, db = tx.Get(keyGenerations), tx.Get(keyDisk)
		return nil
	}); err != nil {
		return Generations{}, 0, false, err
	}
	if gb == nil && db == nil {
		return Generations{}, 0, false, nil
	}
	if gb == nil || db == nil {
		return Generations{}, 0, false, fmt.Errorf("replica: volume %q: %w: generation record and disk state are not both stored", s.volume, ErrGenCorrupt)
	}
	if err := g.UnmarshalBinary(gb); err != nil {
		return Generations{}, 0, false, fmt.Errorf("replica: volume %q: %w", s.volume, err)
	}
	if len(db) != 5 || binary.LittleEndian.Uint32(db) != crc32.Checksum(db[4:], castagnoli) || DiskState(db[4]) > UpToDate {
		return Generations{}, 0, false, fmt.Errorf("replica: volume %q: %w: disk state record %x", s.volume, ErrGenCorrupt, db)
	}
	return g, DiskState(db[4]), true, nil
}

// Invalidate durably records that the volume's local disk no longer holds
// the data its generation record describes (its store was replaced, blank
// or stale): the record becomes Invalidated and the disk Inconsistent, so
// that Open comes up as a full-sync target that is never promoted. A volume
// with no saved record is left alone: Open takes it for Inconsistent.
func (s *Store) Invalidate() error {
	g, _, ok, err := s.LoadGenerations()
	if err != nil || !ok {
		return err
	}
	return s.SaveGenerations(g.Invalidated(), Inconsistent)
}

// SaveBitmap durably records the bitmap of peer and then clears its dirty
// pages. It writes only the pages that changed since b was last saved or
// loaded through this Store; the first save of a bitmap (one the Store has
// not seen for this peer) replaces every stored page. A bitmap whose
// geometry differs from the stored one fails with ErrBitmapGeometry: delete
// the old one first (DeleteBitmap). On error nothing is written and b keeps
// its dirty pages.
func (s *Store) SaveBitmap(peer string, b *Bitmap) error {
	if peer == "" {
		return fmt.Errorf("replica: volume %q: SaveBitmap with empty peer name", s.volume)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	set := bitmapPrefix + peer
	full := s.synced[peer] != b
	written := 0
	err := s.update(func(tx *meta.VolumeTx) error {
		if hdr := tx.Get(set); hdr == nil {
			full = true
		} else {
			dev, bs, err := parseBitmapGeom(hdr)
			if err != nil {
				return fmt.Errorf("peer %q: %w", peer, err)
			}
			if dev != b.DeviceSize() || bs != b.BlockSize() {
				return fmt.Errorf("%w: peer %q: stored bitmap is for %d bytes in %d-byte blocks, this one for %d bytes in %d-byte blocks",
					ErrBitmapGeometry, peer, dev, bs, b.DeviceSize(), b.BlockSize())
			}
		}
		pages := b.DirtyPages()
		if full {
			if err := tx.DeletePages(set); err != nil {
				return err
			}
			if err := tx.Put(set, bitmapGeom(b)); err != nil {
				return err
			}
			pages = make([]int, b.Pages())
			for i := range pages {
				pages[i] = i
			}
		}
		for _, i := range pages {
			if err := tx.PutPage(set, i, sealPage(i, b.Page(i))); err != nil {
				return err
			}
		}
		written = len(pages)
		return nil
	})
	if err != nil {
		return fmt.Errorf("replica: volume %q: save bitmap: %w", s.volume, err)
	}
	b.ClearDirtyPages()
	s.synced[peer] = b
	s.pageWrites += written
	return nil
}

// LoadBitmap reads the bitmap of peer. It fails with ErrNotStored when none
// was saved, with ErrBitmapGeometry when the stored one has another device
// or block size, and with ErrBitmapCorrupt when a page is missing or fails
// its checksum; in each case only a full resync of that peer is safe.
func (s *Store) LoadBitmap(peer string, deviceSize int64, blockSize int) (*Bitmap, error) {
	b, err := NewBitmap(deviceSize, blockSize)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	set := bitmapPrefix + peer
	err = s.view(func(tx *meta.VolumeTx) error {
		hdr := tx.Get(set)
		if hdr == nil {
			return fmt.Errorf("no bitmap of peer %q: %w", peer, ErrNotStored)
		}
		dev, bs, err := parseBitmapGeom(hdr)
		if err != nil {
			return fmt.Errorf("peer %q: %w", peer, err)
		}
		if dev != deviceSize || bs != blockSize {
			return fmt.Errorf("%w: peer %q: stored bitmap is for %d bytes in %d-byte blocks, the volume has %d bytes in %d-byte blocks",
				ErrBitmapGeometry, peer, dev, bs, deviceSize, blockSize)
		}
		for i := range b.Pages() {
			p, err := openPage(i, tx.Page(set, i))
			if err != nil {
				return fmt.Errorf("peer %q: %w", peer, err)
			}
			if err := b.SetPage(i, p); err != nil {
				return fmt.Errorf("peer %q: %w", peer, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("replica: volume %q: load bitmap: %w", s.volume, err)
	}
	s.synced[peer] = b
	return b, nil
}

// DeleteBitmap removes the bitmap of peer (a peer that left the volume, or
// a bitmap to be replaced by one of another geometry).
func (s *Store) DeleteBitmap(peer string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	set := bitmapPrefix + peer
	err := s.update(func(tx *meta.VolumeTx) error {
		if err := tx.Delete(set); err != nil {
			return err
		}
		return tx.DeletePages(set)
	})
	if err != nil {
		return fmt.Errorf("replica: volume %q: delete bitmap: %w", s.volume, err)
	}
	delete(s.synced, peer)
	return nil
}

// LogALChange durably appends an activity-log change, keyed by its Seq.
// Changes must be logged in Seq order; once it returns, the caller may call
// ActivityLog.Committed(c.Seq).
func (s *Store) LogALChange(c *ALChange) error {
	rec, err := c.MarshalBinary()
	if err != nil {
		return err
	}
	err = s.update(func(tx *meta.VolumeTx) error { return tx.AppendRecord(logAL, c.Seq, rec) })
	if err != nil {
		return fmt.Errorf("replica: volume %q: log activity-log change %d: %w", s.volume, c.Seq, err)
	}
	return nil
}

// CompactAL durably replaces the logged changes up to al.Seq() with a
// snapshot of al, in one transaction, so the log does not grow without
// bound. Changes with a later Seq stay logged.
func (s *Store) CompactAL(al *ActivityLog) error {
	snap, err := al.MarshalBinary()
	if err != nil {
		return err
	}
	err = s.update(func(tx *meta.VolumeTx) error {
		if err := tx.Put(keyALSnapshot, snap); err != nil {
			return err
		}
		return tx.TruncateRecords(logAL, al.Seq())
	})
	if err != nil {
		return fmt.Errorf("replica: volume %q: compact activity log: %w", s.volume, err)
	}
	return nil
}

// LoadActivityLog rebuilds the activity log: the last snapshot, then every
// change logged after it, in Seq order. A volume that never logged anything
// gets an empty log. Damage fails with ErrALCorrupt, a snapshot of another
// geometry with ErrALGeometry; either way the hot set is unknown and the
// safe fallback is a resync of the whole device.
func (s *Store) LoadActivityLog(deviceSize, extentSize int64, capacity int) (*ActivityLog, error) {
	al, err := NewActivityLog(deviceSize, extentSize, capacity)
	if err != nil {
		return nil, err
	}
	err = s.view(func(tx *meta.VolumeTx) error {
		if snap := tx.Get(keyALSnapshot); snap != nil {
			if err := al.UnmarshalBinary(snap); err != nil {
				return fmt.Errorf("snapshot: %w", err)
			}
		}
		return tx.Records(logAL, al.Seq(), func(seq uint64, rec []byte) error {
			var c ALChange
			if err := c.UnmarshalBinary(rec); err != nil {
				return fmt.Errorf("record %d: %w", seq, err)
			}
			if c.Seq != seq {
				return fmt.Errorf("%w: record %d holds change %d", ErrALCorrupt, seq, c.Seq)
			}
			return al.Apply(&c)
		})
	})
	if err != nil {
		return nil, fmt.Errorf("replica: volume %q: load activity log: %w", s.volume, err)
	}
	return al, nil
}

func (s *Store) update(fn func(tx *meta.VolumeTx) error) error {
	return s.db.UpdateVolume(s.volume, fn)
}

func (s *Store) view(fn func(tx *meta.VolumeTx) error) error {
	return s.db.ViewVolume(s.volume, fn)
}

func bitmapGeom(b *Bitmap) []byte {
	h := make([]byte, bmGeomLen)
	binary.LittleEndian.PutUint32(h[12:], uint32(b.BlockSize()))
	binary.LittleEndian.PutUint64(h[16:], uint64(b.DeviceSize()))
	bmGeomRecord.seal(h)
	return h
}

func parseBitmapGeom(h []byte) (deviceSize int64, blockSize int, err error) {
	if len(h) != bmGeomLen {
		return 0, 0, fmt.Errorf("%w: geometry header of %d bytes, want %d", ErrBitmapCorrupt, len(h), bmGeomLen)
	}
	if err := bmGeomRecord.open(h, bmGeomLen); err != nil {
		return 0, 0, err
	}
	return int64(binary.LittleEndian.Uint64(h[16:])), int(binary.LittleEndian.Uint32(h[12:])), nil
}

// pageCRC is the checksum of page i: its index, then its bytes.
func pageCRC(i int, p []byte) uint32 {
	var idx [4]byte
	binary.LittleEndian.PutUint32(idx[:], uint32(i))
	return crc32.Update(crc32.Checksum(idx[:], castagnoli), castagnoli, p)
}

func sealPage(i int, p []byte) []byte {
	out := make([]byte, 4+len(p))
	binary.LittleEndian.PutUint32(out, pageCRC(i, p))
	copy(out[4:], p)
	return out
}

func openPage(i int, stored []byte) ([]byte, error) {
	if stored == nil {
		return nil, fmt.Errorf("%w: page %d is missing", ErrBitmapCorrupt, i)
	}
	if len(stored) < 4 {
		return nil, fmt.Errorf("%w: page %d is %d bytes, shorter than its checksum", ErrBitmapCorrupt, i, len(stored))
	}
	p := stored[4:]
	if want, got := binary.LittleEndian.Uint32(stored), pageCRC(i, p); want != got {
		return nil, fmt.Errorf("%w: page %d checksum mismatch (stored %08x, computed %08x)", ErrBitmapCorrupt, i, want, got)
	}
	return p, nil
}
