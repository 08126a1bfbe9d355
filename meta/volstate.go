package meta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Per-volume state. This file gives the volume bucket a small transactional
// API that knows bytes and buckets only; what the bytes mean (generation
// identifiers, bitmaps, the activity log) is the replica package's business.
// Under volumes/<name>/ (see the package comment) it adds three sub-buckets,
// each created on first write:
//
//	state/                 bucket: VolumeTx.Get, Put, Delete
//	    <key>    bytes     opaque values, keyed by the caller's string
//	pages/                 bucket: VolumeTx.PutPage, Page, DeletePages
//	    <set>/             one bucket per page set (e.g. one bitmap)
//	        <i>  bytes     page i; key is i as uint64 big-endian
//	logs/                  bucket: VolumeTx.AppendRecord, Records, TruncateRecords
//	    <log>/             one bucket per append-only record log
//	        <seq> bytes    record seq; key is seq as uint64 big-endian, so a
//	                       cursor walks records in seq order
//
// Each UpdateVolume is one bbolt transaction: all of its writes reach the
// disk together (bbolt fsyncs on commit; Open never sets NoSync) or none do.

var (
	bucketState = []byte("state")
	bucketPages = []byte("pages")
	bucketLogs  = []byte("logs")
)

// ErrRecordOrder means AppendRecord was given a sequence number not above the
// newest record already in the log.
var ErrRecordOrder = errors.New("meta: record out of order")

// VolumeTx is one transaction on the state of one volume, valid only inside
// the function given to UpdateVolume or ViewVolume. Byte slices returned by
// its methods are copies the caller may keep. In a ViewVolume transaction the
// writing methods fail.
type VolumeTx struct {
	name string
	tx   *bolt.Tx
	vb   *bolt.Bucket
}

// UpdateVolume runs fn in a read-write transaction on volume name. The
// changes fn makes are committed, durably, when fn returns nil, and
// discarded when it returns an error (which UpdateVolume returns). An unknown
// volume fails with an error wrapping ErrNoVolume.
func (d *DB) UpdateVolume(name string, fn func(tx *VolumeTx) error) error {
	return d.db.Update(func(tx *bolt.Tx) error { return d.runVolume(tx, name, fn) })
}

// ViewVolume runs fn in a read-only transaction on volume name: a consistent
// view while other goroutines update. An unknown volume fails with an error
// wrapping ErrNoVolume.
func (d *DB) ViewVolume(name string, fn func(tx *VolumeTx) error) error {
	return d.db.View(func(tx *bolt.Tx) error { return d.runVolume(tx, name, fn) })
}

func (d *DB) runVolume(tx *bolt.Tx, name string, fn func(tx *VolumeTx) error) error {
	vb := tx.Bucket(bucketVolumes).Bucket([]byte(name))
	if vb == nil {
		return fmt.Errorf("meta: volume %q: %w", name, ErrNoVolume)
	}
	return fn(&VolumeTx{name: name, tx: tx, vb: vb})
}

// Get returns a copy of the value stored under key, or nil if there is none.
func (t *VolumeTx) Get(key string) []byte {
	b := t.vb.Bucket(bucketState)
	if b == nil || key == "" {
		return nil
	}
	return clone(b.Get([]byte(key)))
}

// Put stores val under key, replacing any previous value. The key must not
// be empty.
func (t *VolumeTx) Put(key string, val []byte) error {
	if key == "" {
		return t.errf("empty state key")
	}
	b, err := t.sub(bucketState)
	if err != nil {
		return err
	}
	if err := b.Put([]byte(key), val); err != nil {
		return t.errf("put %q: %v", key, err)
	}
	return nil
}

// Delete removes key; deleting a missing key is not an error.
func (t *VolumeTx) Delete(key string) error {
	if !t.tx.Writable() {
		return t.errf("delete %q in a read-only transaction", key)
	}
	b := t.vb.Bucket(bucketState)
	if b == nil || key == "" {
		return nil
	}
	if err := b.Delete([]byte(key)); err != nil {
		return t.errf("delete %q: %v", key, err)
	}
	return nil
}

// PutPage stores p as page i (i ≥ 0) of page set set.
func (t *VolumeTx) PutPage(set string, i int, p []byte) error {
	if i < 0 {
		return t.errf("page set %q: negative page index %d", set, i)
	}
	b, err := t.subOf(bucketPages, set)
	if err != nil {
		return err
	}
	if err := b.Put(u64key(uint64(i)), p); err != nil {
		return t.errf("page set %q: put page %d: %v", set, i, err)
	}
	return nil
}

// Page returns a copy of page i of set, or nil if it was never stored.
func (t *VolumeTx) Page(set string, i int) []byte {
	b := t.existingOf(bucketPages, set)
	if b == nil || i < 0 {
		return nil
	}
	return clone(b.Get(u64key(uint64(i))))
}

// DeletePages removes every page of set; a missing set is not an error.
func (t *VolumeTx) DeletePages(set string) error {
	return t.deleteOf(bucketPages, set)
}

// AppendRecord adds rec to the record log named log under sequence number
// seq, which must be greater than that of every record the log holds (else
// an error wrapping ErrRecordOrder).
func (t *VolumeTx) AppendRecord(log string, seq uint64, rec []byte) error {
	b, err := t.subOf(bucketLogs, log)
	if err != nil {
		return err
	}
	if k, _ := b.Cursor().Last(); k != nil {
		if last := binary.BigEndian.Uint64(k); seq <= last {
			return t.errf("log %q: append record %d after record %d: %w", log, seq, last, ErrRecordOrder)
		}
	}
	if err := b.Put(u64key(seq), rec); err != nil {
		return t.errf("log %q: append record %d: %v", log, seq, err)
	}
	return nil
}

// Records calls fn, in ascending seq order, for every record of log with a
// sequence number greater than after, and stops at the first error fn
// returns, returning it. rec is a copy. A missing log has no records.
func (t *VolumeTx) Records(log string, after uint64, fn func(seq uint64, rec []byte) error) error {
	b := t.existingOf(bucketLogs, log)
	if b == nil || after == ^uint64(0) {
		return nil
	}
	c := b.Cursor()
	for k, v := c.Seek(u64key(after + 1)); k != nil; k, v = c.Next() {
		if len(k) != 8 {
			return t.errf("log %q: malformed record key %x", log, k)
		}
		if err := fn(binary.BigEndian.Uint64(k), clone(v)); err != nil {
			return err
		}
	}
	return nil
}

// TruncateRecords removes the records of log with sequence numbers up to and
// including upTo: the ones a snapshot the caller stored in the same
// transaction supersedes.
func (t *VolumeTx) TruncateRecords(log string, upTo uint64) error {
	if !t.tx.Writable() {
		return t.errf("log %q: truncate in a read-only transaction", log)
	}
	b := t.existingOf(bucketLogs, log)
	if b == nil {
		return nil
	}
	c := b.Cursor()
	// Deleting through the cursor moves it to the next key, so re-read
	// the position after each delete.
	for k, _ := c.First(); k != nil && bytes.Compare(k, u64key(upTo)) <= 0; k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return t.errf("log %q: truncate: %v", log, err)
		}
	}
	return nil
}

// sub returns the named sub-bucket of the volume, creating it.
func (t *VolumeTx) sub(name []byte) (*bolt.Bucket, error) {
	if !t.tx.Writable() {
		return nil, t.errf("write to %s in a read-only transaction", name)
	}
	b, err := t.vb.CreateBucketIfNotExists(name)
	if err != nil {
		return nil, t.errf("bucket %s: %v", name, err)
	}
	return b, nil
}

// subOf returns bucket <parent>/<name> of the volume, creating both.
func (t *VolumeTx) subOf(parent []byte, name string) (*bolt.Bucket, error) {
	if name == "" {
		return nil, t.errf("empty %s name", parent)
	}
	p, err := t.sub(parent)
	if err != nil {
		return nil, err
	}
	b, err := p.CreateBucketIfNotExists([]byte(name))
	if err != nil {
		return nil, t.errf("bucket %s/%s: %v", parent, name, err)
	}
	return b, nil
}

// existingOf returns bucket <parent>/<name> of the volume, or nil.
func (t *VolumeTx) existingOf(parent []byte, name string) *bolt.Bucket {
	p := t.vb.Bucket(parent)
	if p == nil || name == "" {
		return nil
	}
	return p.Bucket([]byte(name))
}

func (t *VolumeTx) deleteOf(parent []byte, name string) error {
	if !t.tx.Writable() {
		return t.errf("delete %s/%s in a read-only transaction", parent, name)
	}
	if t.existingOf(parent, name) == nil {
		return nil
	}
	if err := t.vb.Bucket(parent).DeleteBucket([]byte(name)); err != nil {
		return t.errf("delete %s/%s: %v", parent, name, err)
	}
	return nil
}

func (t *VolumeTx) errf(format string, args ...any) error {
	return fmt.Errorf("meta: volume %q: "+format, append([]any{t.name}, args...)...)
}

func u64key(v uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], v)
	return k[:]
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return bytes.Clone(b)
}
