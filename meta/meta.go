// Package meta keeps a node's durable metadata in a bbolt database,
// <data_dir>/meta.db: the node's identity and one record per volume.
//
// # Layout
//
//	node/                  bucket
//	    format   "1"       schema version of this file
//	    id       UUID      the node's identity, created on first open
//	    created  RFC 3339  when the file was created
//	volumes/               bucket
//	    <name>/            one bucket per volume, keyed by the volume name
//	        uuid     UUID      the volume's identity, created when first seen
//	        created  RFC 3339  when the volume was first seen
//	        path     string    the backing file or device last opened
//	        size     uint64    size in bytes, big-endian; never changes
//	        state/             opaque key/value records (VolumeTx.Get/Put)
//	        pages/<set>/       page sets, page i under uint64 big-endian i
//	        logs/<log>/        append-only record logs, record under its
//	                           sequence number, uint64 big-endian
//
// State that belongs to a volume (generation identifiers, bitmaps, the
// activity log) goes under its bucket, in the sub-buckets above, so that
// dropping a volume is one DeleteBucket. This package stores their bytes
// (see UpdateVolume in volstate.go); the replica package decides what they
// mean.
//
// The database is locked while open: a second process opening the same file
// fails after one second with ErrLocked instead of hanging.
package meta

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// FileName is the name of the database file inside the data directory.
const FileName = "meta.db"

// Format is the schema version this package reads and writes.
const Format = 1

// LockTimeout is how long Open waits for another process to release the file.
const LockTimeout = time.Second

// Errors callers may test for with errors.Is.
var (
	// ErrLocked means another process (another blockrepd) has the file open.
	ErrLocked = errors.New("meta: database is locked by another process")
	// ErrSizeMismatch means a volume's store no longer has its recorded size.
	ErrSizeMismatch = errors.New("meta: volume size changed")
	// ErrNoVolume means there is no record of the volume.
	ErrNoVolume = errors.New("meta: no such volume")
)

// Bucket and key names.
var (
	bucketNode    = []byte("node")
	bucketVolumes = []byte("volumes")
	keyFormat     = []byte("format")
	keyID         = []byte("id")
	keyCreated    = []byte("created")
	keyUUID       = []byte("uuid")
	keyPath       = []byte("path")
	keySize       = []byte("size")
)

// DB is an open metadata database. It is safe for concurrent use.
type DB struct {
	db     *bolt.DB
	path   string
	nodeID string
}

// VolumeRecord is what the node remembers about a volume.
type VolumeRecord struct {
	Name    string    `json:"name"`
	UUID    string    `json:"uuid"`
	Created time.Time `json:"created"`
	Path    string    `json:"path"`
	Size    int64     `json:"size"`
}

// Open opens or creates the database at path (mode 0600) and creates the
// node identity on first use. If another process holds the file, Open fails
// after LockTimeout with an error wrapping ErrLocked.
func Open(path string) (*DB, error) {
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: LockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("another blockrepd holds %s (still locked after %v): %w", path, LockTimeout, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("meta: open %s: %w", path, err)
	}
	d := &DB{db: bdb, path: path}
	if err := bdb.Update(d.init); err != nil {
		_ = bdb.Close()
		return nil, fmt.Errorf("meta: %s: %w", path, err)
	}
	return d, nil
}

// init creates the buckets and the node identity, or checks and loads them.
func (d *DB) init(tx *bolt.Tx) error {
	nb, err := tx.CreateBucketIfNotExists(bucketNode)
	if err != nil {
		return err
	}
	if _, err := tx.CreateBucketIfNotExists(bucketVolumes); err != nil {
		return err
	}
	if f := nb.Get(keyFormat); f != nil {
		n, err := strconv.Atoi(string(f))
		if err != nil {
			return fmt.Errorf("unreadable format %q", f)
		}
		if n > Format {
			return fmt.Errorf("format %d is newer than this blockrepd understands (%d): use a newer blockrepd", n, Format)
		}
	} else if err := nb.Put(keyFormat, []byte(strconv.Itoa(Format))); err != nil {
		return err
	}
	if id := nb.Get(keyID); id != nil {
		if _, err := uuid.ParseBytes(id); err != nil {
			return fmt.Errorf("node id %q is not a UUID: %w", id, err)
		}
		d.nodeID = string(id)
		return nil
	}
	d.nodeID = uuid.NewString()
	if err := nb.Put(keyID, []byte(d.nodeID)); err != nil {
		return err
	}
	return nb.Put(keyCreated, timeBytes(time.Now()))
}

// Path returns the file the database was opened from.
func (d *DB) Path() string { return d.path }

// NodeID returns the node's identity, a UUID stable across restarts.
func (d *DB) NodeID() string { return d.nodeID }

// EnsureVolume returns the record of volume name, creating it with a new
// UUID when the volume is new. A volume keeps its size for life: when size
// differs from the recorded one EnsureVolume returns an error wrapping
// ErrSizeMismatch that names both. A changed path is recorded (the backing
// file was moved); compare with Volume first to notice it.
func (d *DB) EnsureVolume(name, path string, size int64) (VolumeRecord, error) {
	if name == "" {
		return VolumeRecord{}, errors.New("meta: empty volume name")
	}
	if size < 0 {
		return VolumeRecord{}, fmt.Errorf("meta: volume %q: negative size %d", name, size)
	}
	var rec VolumeRecord
	err := d.db.Update(func(tx *bolt.Tx) error {
		vb := tx.Bucket(bucketVolumes)
		b := vb.Bucket([]byte(name))
		if b == nil {
			var err error
			if b, err = vb.CreateBucket([]byte(name)); err != nil {
				return err
			}
			rec = VolumeRecord{Name: name, UUID: uuid.NewString(), Created: time.Now().UTC().Round(0), Path: path, Size: size}
			return putVolume(b, rec)
		}
		var err error
		if rec, err = readVolume(name, b); err != nil {
			return err
		}
		if rec.Size != size {
			return fmt.Errorf("meta: volume %q was created with %d bytes but its store now has %d bytes (%s): a volume does not change size: %w",
				name, rec.Size, size, path, ErrSizeMismatch)
		}
		if rec.Path != path {
			rec.Path = path
			return b.Put(keyPath, []byte(path))
		}
		return nil
	})
	if err != nil {
		return VolumeRecord{}, err
	}
	return rec, nil
}

// DeleteVolume removes the record of volume name and everything under it
// (generation identifiers, bitmaps, activity log, store identity): the next
// EnsureVolume is the volume's first. An unknown volume fails with an error
// wrapping ErrNoVolume.
func (d *DB) DeleteVolume(name string) error {
	return d.db.Update(func(tx *bolt.Tx) error {
		vb := tx.Bucket(bucketVolumes)
		if vb.Bucket([]byte(name)) == nil {
			return fmt.Errorf("meta: volume %q: %w", name, ErrNoVolume)
		}
		return vb.DeleteBucket([]byte(name))
	})
}

// Volume returns the record of volume name, or an error wrapping ErrNoVolume.
func (d *DB) Volume(name string) (VolumeRecord, error) {
	var rec VolumeRecord
	err := d.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketVolumes).Bucket([]byte(name))
		if b == nil {
			return fmt.Errorf("meta: volume %q: %w", name, ErrNoVolume)
		}
		var err error
		rec, err = readVolume(name, b)
		return err
	})
	return rec, err
}

// Volumes returns every volume record, ordered by name.
func (d *DB) Volumes() ([]VolumeRecord, error) {
	var out []VolumeRecord
	err := d.db.View(func(tx *bolt.Tx) error {
		vb := tx.Bucket(bucketVolumes)
		return vb.ForEachBucket(func(k []byte) error {
			rec, err := readVolume(string(k), vb.Bucket(k))
			if err != nil {
				return err
			}
			out = append(out, rec)
			return nil
		})
	})
	return out, err
}

// Close closes the database and releases its lock.
func (d *DB) Close() error {
	if err := d.db.Close(); err != nil {
		return fmt.Errorf("meta: close %s: %w", d.path, err)
	}
	return nil
}

func putVolume(b *bolt.Bucket, rec VolumeRecord) error {
	var size [8]byte
	binary.BigEndian.PutUint64(size[:], uint64(rec.Size))
	for _, kv := range []struct{ k, v []byte }{
		{keyUUID, []byte(rec.UUID)},
		{keyCreated, timeBytes(rec.Created)},
		{keyPath, []byte(rec.Path)},
		{keySize, size[:]},
	} {
		if err := b.Put(kv.k, kv.v); err != nil {
			return err
		}
	}
	return nil
}

func readVolume(name string, b *bolt.Bucket) (VolumeRecord, error) {
	rec := VolumeRecord{Name: name, UUID: string(b.Get(keyUUID)), Path: string(b.Get(keyPath))}
	if _, err := uuid.Parse(rec.UUID); err != nil {
		return rec, fmt.Errorf("meta: volume %q: uuid %q: %w", name, rec.UUID, err)
	}
	size := b.Get(keySize)
	if len(size) != 8 {
		return rec, fmt.Errorf("meta: volume %q: size record has %d bytes, want 8", name, len(size))
	}
	rec.Size = int64(binary.BigEndian.Uint64(size))
	t, err := time.Parse(time.RFC3339Nano, string(b.Get(keyCreated)))
	if err != nil {
		return rec, fmt.Errorf("meta: volume %q: created: %w", name, err)
	}
	rec.Created = t
	return rec, nil
}

func timeBytes(t time.Time) []byte { return []byte(t.UTC().Format(time.RFC3339Nano)) }
