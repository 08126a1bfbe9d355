package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// Bitmap geometry.
const (
	// DefaultBlockSize is the bytes each bitmap bit stands for unless
	// configured otherwise: 4 KiB, DRBD's quick-sync granularity, so a bitmap
	// costs 32 MiB per TiB and matches the page size of the filesystems
	// clients put on the volume.
	DefaultBlockSize = 4096
	// MinBlockSize is the smallest block a bit may stand for: one sector.
	MinBlockSize = 512
	// MaxBlockSize is the largest block a bit may stand for. Coarser bits make
	// every resync copy more than was written.
	MaxBlockSize = 1 << 30
	// BitmapPageSize is the granularity of DirtyPages and Page: the serialized
	// bit array is persisted in pages of this many bytes (32768 bits each).
	BitmapPageSize = 4096
)

// maxDeviceSize bounds device sizes (4 EiB) so that byte arithmetic on
// blocks, extents and their ends can never overflow an int64.
const maxDeviceSize = 1 << 62

// Bitmap persistence format (all integers little-endian):
//
//	0   4  magic "BRBM"
//	4   4  version (1)
//	8   4  crc32c (Castagnoli) of bytes [0, 8) followed by bytes [12, end)
//	12  4  block size in bytes
//	16  8  device size in bytes
//	24  …  payload: the bit array as little-endian 64-bit words, so bit i
//	       (block i) is bit i%8 of payload byte i/8; bits past the last
//	       block are zero
const (
	bitmapMagic     = "BRBM"
	bitmapVersion   = 1
	bitmapHeaderLen = 24
)

const wordsPerPage = BitmapPageSize / 8

var bitmapRecord = recordKind{magic: bitmapMagic, version: bitmapVersion, name: "a bitmap", corrupt: ErrBitmapCorrupt}

// Errors returned by Bitmap, for errors.Is.
var (
	// ErrBitmapCorrupt means persisted bitmap data failed validation: wrong
	// magic or version, bad checksum, truncated, or impossible contents.
	// The bitmap cannot be trusted; the safe fallback is a full resync.
	ErrBitmapCorrupt = errors.New("bitmap: corrupt data")
	// ErrBitmapGeometry means two bitmaps (or a bitmap and persisted data)
	// disagree on device size or block size, so their bits do not describe
	// the same bytes.
	ErrBitmapGeometry = errors.New("bitmap: geometry mismatch")
)

// Bitmap is an out-of-sync bitmap: one bit per block of a device, set when
// the block may differ between this replica and a peer. The last block may
// be shorter than the others when the device size is not a multiple of the
// block size.
//
// A Bitmap is not safe for concurrent use; callers serialise every call,
// reads included. The replica already holds a lock around each write's
// bookkeeping (bitmap, activity log, peer state must change together), so an
// internal mutex would be a second lock on the hot path that buys no
// atomicity the caller needs.
//
// The zero Bitmap describes no device; it is only a target for
// UnmarshalBinary.
type Bitmap struct {
	deviceSize int64
	blockSize  int
	shift      uint // log2(blockSize)
	nbits      uint64
	words      []uint64
	count      uint64   // set bits, maintained by every update so Count is O(1)
	pages      []uint64 // bit p set: page p changed since ClearDirtyPages
}

// NewBitmap returns an all-clear bitmap for a device of deviceSize bytes with
// one bit per blockSize bytes. blockSize must be a power of two between
// MinBlockSize and MaxBlockSize.
func NewBitmap(deviceSize int64, blockSize int) (*Bitmap, error) {
	if err := checkBitmapGeometry(deviceSize, int64(blockSize)); err != nil {
		return nil, err
	}
	b := new(Bitmap)
	b.init(deviceSize, blockSize)
	return b, nil
}

func checkBitmapGeometry(deviceSize, blockSize int64) error {
	if blockSize < MinBlockSize || blockSize > MaxBlockSize || blockSize&(blockSize-1) != 0 {
		return fmt.Errorf("bitmap: block size %d is not a power of two between %d and %d", blockSize, MinBlockSize, MaxBlockSize)
	}
	if deviceSize <= 0 || deviceSize > maxDeviceSize {
		return fmt.Errorf("bitmap: device size %d is not between 1 and %d bytes", deviceSize, int64(maxDeviceSize))
	}
	return nil
}

func (b *Bitmap) init(deviceSize int64, blockSize int) {
	b.deviceSize = deviceSize
	b.blockSize = blockSize
	b.shift = uint(bits.TrailingZeros(uint(blockSize)))
	b.nbits = uint64(deviceSize+int64(blockSize)-1) >> b.shift
	nwords := (b.nbits + 63) / 64
	b.words = make([]uint64, nwords)
	b.count = 0
	npages := (nwords + wordsPerPage - 1) / wordsPerPage
	b.pages = make([]uint64, (npages+63)/64)
}

// DeviceSize is the size in bytes of the device the bitmap describes.
func (b *Bitmap) DeviceSize() int64 { return b.deviceSize }

// BlockSize is the number of bytes one bit stands for.
func (b *Bitmap) BlockSize() int { return b.blockSize }

// Blocks is the number of bits: the device size divided by the block size,
// rounded up.
func (b *Bitmap) Blocks() uint64 { return b.nbits }

// BlockRange returns the byte range of block: the last block of a device
// whose size is not a multiple of the block size is short. A block past the
// end returns (0, 0).
func (b *Bitmap) BlockRange(block uint64) (off, length int64) {
	if block >= b.nbits {
		return 0, 0
	}
	off = int64(block << b.shift)
	return off, min(int64(b.blockSize), b.deviceSize-off)
}

// SetRange marks every block that the byte range [off, off+length) touches,
// even partly: a write of one byte leaves the whole block out of sync. The
// range is clipped to the device; an empty range is a no-op.
func (b *Bitmap) SetRange(off, length int64) {
	start, end, ok := b.clip(off, length)
	if !ok {
		return
	}
	b.update(uint64(start)>>b.shift, uint64(end-1)>>b.shift+1, true)
}

// ClearRange clears the blocks that the byte range [off, off+length) covers
// completely; a block only partly covered stays set. Clearing means "this
// block is now identical on both sides", and copying part of a block proves
// nothing about the rest of it: the uncopied bytes may still hold a write the
// peer never saw. The short last block counts as covered when the range
// reaches the end of the device. The range is clipped to the device.
func (b *Bitmap) ClearRange(off, length int64) {
	start, end, ok := b.clip(off, length)
	if !ok {
		return
	}
	lo := uint64(start) >> b.shift
	if start&int64(b.blockSize-1) != 0 {
		lo++ // the first block starts before the range
	}
	hi := uint64(end) >> b.shift
	if end == b.deviceSize {
		hi = b.nbits // includes a short last block
	}
	if lo < hi {
		b.update(lo, hi, false)
	}
}

// clip intersects [off, off+length) with the device, without overflow.
func (b *Bitmap) clip(off, length int64) (start, end int64, ok bool) {
	if length <= 0 || off >= b.deviceSize {
		return 0, 0, false
	}
	if off < 0 {
		length += off
		off = 0
		if length <= 0 {
			return 0, 0, false
		}
	}
	length = min(length, b.deviceSize-off)
	return off, off + length, true
}

// update sets or clears bits [lo, hi), hi > lo, a word at a time, keeping
// the count and the changed-page set current. A 4 KiB write touches one word,
// so the loop runs once on the hot path.
func (b *Bitmap) update(lo, hi uint64, set bool) {
	first, last := lo/64, (hi-1)/64
	for w := first; w <= last; w++ {
		mask := ^uint64(0)
		if w == first {
			mask &= ^uint64(0) << (lo % 64)
		}
		if w == last {
			mask &= ^uint64(0) >> (63 - (hi-1)%64)
		}
		old := b.words[w]
		nw := old &^ mask
		if set {
			nw = old | mask
		}
		if nw == old {
			continue
		}
		b.words[w] = nw
		if set {
			b.count += uint64(bits.OnesCount64(nw &^ old))
		} else {
			b.count -= uint64(bits.OnesCount64(old &^ nw))
		}
		b.markPage(w)
	}
}

func (b *Bitmap) markPage(word uint64) {
	p := word / wordsPerPage
	b.pages[p/64] |= 1 << (p % 64)
}

// Count is the number of set bits (out-of-sync blocks), kept up to date by
// every change, so reading it costs nothing.
func (b *Bitmap) Count() uint64 { return b.count }

// DirtyBytes is the number of out-of-sync bytes: Count blocks, with the short
// last block counted at its real length. Status and resync ETA report this.
func (b *Bitmap) DirtyBytes() int64 {
	n := int64(b.count) << b.shift
	if tail := b.deviceSize & int64(b.blockSize-1); tail != 0 && b.Test(b.nbits-1) {
		n -= int64(b.blockSize) - tail
	}
	return n
}

// Test reports whether block is out of sync. Blocks past the end are not.
func (b *Bitmap) Test(block uint64) bool {
	if block >= b.nbits {
		return false
	}
	return b.words[block/64]&(1<<(block%64)) != 0
}

// NextDirty returns the first run of consecutive out-of-sync blocks at or
// after block from: blocks [start, start+n). ok is false when no block at or
// after from is set. A resync walks the bitmap with
//
//	for s, n, ok := bm.NextDirty(0); ok; s, n, ok = bm.NextDirty(s + n) { … }
//
// The scan goes a word (64 blocks) at a time, and skips clean stretches four
// words at a time, so walking a 1 TiB device's bitmap costs milliseconds.
func (b *Bitmap) NextDirty(from uint64) (start, n uint64, ok bool) {
	if from >= b.nbits {
		return 0, 0, false
	}
	words := b.words
	w := from / 64
	word := words[w] & (^uint64(0) << (from % 64))
	for word == 0 {
		w++
		for w+4 <= uint64(len(words)) && words[w]|words[w+1]|words[w+2]|words[w+3] == 0 {
			w += 4
		}
		if w >= uint64(len(words)) {
			return 0, 0, false
		}
		word = words[w]
	}
	start = w*64 + uint64(bits.TrailingZeros64(word))

	// The run ends at the first clear bit after start. Bits past the last
	// block are always clear, so the run cannot extend past the device.
	word = ^words[w] & (^uint64(0) << (start % 64))
	for word == 0 {
		w++
		for w+4 <= uint64(len(words)) && words[w]&words[w+1]&words[w+2]&words[w+3] == ^uint64(0) {
			w += 4
		}
		if w >= uint64(len(words)) {
			return start, b.nbits - start, true
		}
		word = ^words[w]
	}
	end := min(w*64+uint64(bits.TrailingZeros64(word)), b.nbits)
	return start, end - start, true
}

// Union sets every bit that is set in other: a block out of sync with one
// peer is out of sync with the merged view. Both bitmaps must have the same
// device size and block size.
func (b *Bitmap) Union(other *Bitmap) error {
	if other.deviceSize != b.deviceSize || other.blockSize != b.blockSize {
		return fmt.Errorf("%w: cannot merge a bitmap of %d bytes in %d-byte blocks into one of %d bytes in %d-byte blocks",
			ErrBitmapGeometry, other.deviceSize, other.blockSize, b.deviceSize, b.blockSize)
	}
	for w, ow := range other.words {
		old := b.words[w]
		if nw := old | ow; nw != old {
			b.words[w] = nw
			b.count += uint64(bits.OnesCount64(nw &^ old))
			b.markPage(uint64(w))
		}
	}
	return nil
}

// MarshalBinary encodes the bitmap with a header carrying its geometry and a
// CRC-32C, so that UnmarshalBinary detects corruption and a bitmap persisted
// for another geometry.
func (b *Bitmap) MarshalBinary() ([]byte, error) {
	data := make([]byte, bitmapHeaderLen+8*len(b.words))
	binary.LittleEndian.PutUint32(data[12:], uint32(b.blockSize))
	binary.LittleEndian.PutUint64(data[16:], uint64(b.deviceSize))
	for i, w := range b.words {
		binary.LittleEndian.PutUint64(data[bitmapHeaderLen+8*i:], w)
	}
	bitmapRecord.seal(data)
	return data, nil
}

// UnmarshalBinary replaces the bitmap with one encoded by MarshalBinary. On a
// zero Bitmap it takes the geometry from the data; on a bitmap made by
// NewBitmap the data must have the same geometry, so a bitmap persisted for a
// resized volume or another block size is refused (ErrBitmapGeometry) rather
// than misread. Damaged data fails with ErrBitmapCorrupt. On error the bitmap
// is unchanged. Afterwards no page counts as changed: the bitmap equals what
// was persisted.
func (b *Bitmap) UnmarshalBinary(data []byte) error {
	if err := bitmapRecord.open(data, bitmapHeaderLen); err != nil {
		return err
	}
	blockSize := int64(binary.LittleEndian.Uint32(data[12:]))
	deviceSize := int64(binary.LittleEndian.Uint64(data[16:]))
	if err := checkBitmapGeometry(deviceSize, blockSize); err != nil {
		return fmt.Errorf("%w: %v", ErrBitmapCorrupt, err)
	}
	if b.blockSize != 0 && (deviceSize != b.deviceSize || int(blockSize) != b.blockSize) {
		return fmt.Errorf("%w: persisted bitmap is for %d bytes in %d-byte blocks, the volume has %d bytes in %d-byte blocks",
			ErrBitmapGeometry, deviceSize, blockSize, b.deviceSize, b.blockSize)
	}
	var n Bitmap
	n.init(deviceSize, int(blockSize))
	payload := data[bitmapHeaderLen:]
	if len(payload) != 8*len(n.words) {
		return fmt.Errorf("%w: payload of %d bytes, want %d for %d blocks", ErrBitmapCorrupt, len(payload), 8*len(n.words), n.nbits)
	}
	for i := range n.words {
		n.words[i] = binary.LittleEndian.Uint64(payload[8*i:])
		n.count += uint64(bits.OnesCount64(n.words[i]))
	}
	if err := n.checkTail(); err != nil {
		return err
	}
	*b = n
	return nil
}

// checkTail verifies that no bit past the last block is set: such a bit
// would be counted in Count yet name no block, so it can only come from
// damage or a bug.
func (b *Bitmap) checkTail() error {
	if r := b.nbits % 64; r != 0 {
		if extra := b.words[len(b.words)-1] &^ (1<<r - 1); extra != 0 {
			return fmt.Errorf("%w: bits set past the last of %d blocks", ErrBitmapCorrupt, b.nbits)
		}
	}
	return nil
}

// Pages is the number of BitmapPageSize pages of the serialized bit array;
// the last may be short.
func (b *Bitmap) Pages() int {
	return (len(b.words) + wordsPerPage - 1) / wordsPerPage
}

// DirtyPages returns, in ascending order, the pages whose bits changed since
// the bitmap was created, loaded, or ClearDirtyPages was last called: the
// only pages a page-wise store has to rewrite. Setting a bit that was already
// set changes nothing, so steady writes into out-of-sync blocks cost no
// metadata I/O.
func (b *Bitmap) DirtyPages() []int {
	var out []int
	for i, w := range b.pages {
		for w != 0 {
			out = append(out, i*64+bits.TrailingZeros64(w))
			w &= w - 1
		}
	}
	return out
}

// ClearDirtyPages forgets which pages changed, after the caller persisted
// them.
func (b *Bitmap) ClearDirtyPages() { clear(b.pages) }

// Page returns a copy of page i of the serialized bit array: the same bytes
// as MarshalBinary's payload at offset i*BitmapPageSize. The last page is
// short unless the bitmap fills it. It panics if i is out of range.
func (b *Bitmap) Page(i int) []byte {
	ws := b.pageWords(i)
	p := make([]byte, 8*len(ws))
	for j, w := range ws {
		binary.LittleEndian.PutUint64(p[8*j:], w)
	}
	return p
}

// SetPage replaces page i with p, as returned by Page, to rebuild a bitmap
// from pages persisted one by one. p must have the page's exact length and
// no bit past the last block. The page does not count as changed.
func (b *Bitmap) SetPage(i int, p []byte) error {
	if i < 0 || i >= b.Pages() {
		return fmt.Errorf("bitmap: page %d out of range [0, %d)", i, b.Pages())
	}
	ws := b.pageWords(i)
	if len(p) != 8*len(ws) {
		return fmt.Errorf("%w: page %d has %d bytes, want %d", ErrBitmapCorrupt, i, len(p), 8*len(ws))
	}
	if i == b.Pages()-1 {
		if r := b.nbits % 64; r != 0 {
			if last := binary.LittleEndian.Uint64(p[len(p)-8:]); last&^(1<<r-1) != 0 {
				return fmt.Errorf("%w: page %d sets bits past the last of %d blocks", ErrBitmapCorrupt, i, b.nbits)
			}
		}
	}
	for j := range ws {
		nw := binary.LittleEndian.Uint64(p[8*j:])
		b.count += uint64(bits.OnesCount64(nw)) - uint64(bits.OnesCount64(ws[j]))
		ws[j] = nw
	}
	return nil
}

func (b *Bitmap) pageWords(i int) []uint64 {
	lo := i * wordsPerPage
	return b.words[lo:min(lo+wordsPerPage, len(b.words))]
}
