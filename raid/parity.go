package raid

import (
	"errors"
	"fmt"

	"github.com/klauspost/reedsolomon"
)

// Parity is the parity arithmetic of one RAID 5 or RAID 6 stripe: k data
// chunks protected by one parity chunk (RAID 5, P) or two (RAID 6, P and Q).
// It is pure computation, with no I/O; the array layer reads and writes the
// chunks.
//
// The Galois-field work is done by github.com/klauspost/reedsolomon (SIMD
// where the CPU has it). With one parity chunk the coding matrix is plain
// XOR, so the parity chunk is the XOR of the data chunks, as in md's RAID 5.
// With two parity chunks the code is the library's Vandermonde-derived
// Reed-Solomon code: any two lost chunks of a stripe can be rebuilt. Its Q is
// not byte-compatible with md's RAID 6 Q; blockrep needs only that its own
// arrays agree with themselves.
//
// All chunks of one call must have the same, non-zero length. A Parity is
// safe for concurrent use.
type Parity struct {
	k, m int
	enc  reedsolomon.Encoder
}

// NewParity returns the parity arithmetic for stripes of dataChunks data
// chunks and parityChunks parity chunks: 1 for RAID 5, 2 for RAID 6.
func NewParity(dataChunks, parityChunks int) (*Parity, error) {
	if parityChunks != 1 && parityChunks != 2 {
		return nil, fmt.Errorf("raid: parity chunks = %d, want 1 (RAID 5) or 2 (RAID 6)", parityChunks)
	}
	if dataChunks < 1 {
		return nil, fmt.Errorf("raid: data chunks = %d, want at least 1", dataChunks)
	}
	if dataChunks+parityChunks > 256 {
		return nil, fmt.Errorf("raid: %d data + %d parity chunks = %d, want at most 256",
			dataChunks, parityChunks, dataChunks+parityChunks)
	}
	enc, err := reedsolomon.New(dataChunks, parityChunks, reedsolomon.WithFastOneParityMatrix())
	if err != nil {
		return nil, fmt.Errorf("raid: parity %d+%d: %w", dataChunks, parityChunks, err)
	}
	return &Parity{k: dataChunks, m: parityChunks, enc: enc}, nil
}

// DataChunks returns the number of data chunks in a stripe.
func (p *Parity) DataChunks() int { return p.k }

// ParityChunks returns the number of parity chunks in a stripe (1 or 2), which
// is also the number of lost chunks a stripe survives.
func (p *Parity) ParityChunks() int { return p.m }

// Encode computes the parity of a full stripe: it overwrites parity[0..m-1]
// from data[0..k-1]. data is not modified.
func (p *Parity) Encode(data, parity [][]byte) error {
	shards, err := p.stripe(data, parity)
	if err != nil {
		return fmt.Errorf("raid: encode: %w", err)
	}
	if err := p.enc.Encode(shards); err != nil {
		return fmt.Errorf("raid: encode: %w", err)
	}
	return nil
}

// Verify reports whether parity is the parity of data. Nothing is modified. A
// false result with a nil error means the stripe is inconsistent (a torn
// write or silent corruption); which chunk is wrong is not known.
func (p *Parity) Verify(data, parity [][]byte) (bool, error) {
	shards, err := p.stripe(data, parity)
	if err != nil {
		return false, fmt.Errorf("raid: verify: %w", err)
	}
	ok, err := p.enc.Verify(shards)
	if err != nil {
		return false, fmt.Errorf("raid: verify: %w", err)
	}
	return ok, nil
}

// Reconstruct rebuilds the lost chunks of a stripe in place.
//
// chunks holds the whole stripe, data chunks first then parity chunks (k+m
// entries: chunks[0..k-1] data, chunks[k] P, chunks[k+1] Q). missing lists the
// indices into chunks of the lost ones; nothing else marks a chunk lost, and
// every chunk not listed must be present with the stripe's chunk length. A
// missing entry may be nil or a buffer: a buffer with capacity for a chunk is
// reused (its contents are ignored), otherwise a new one is allocated. On
// return chunks[i] holds the rebuilt chunk for every i in missing, data and
// parity alike. At most m chunks may be missing.
//
// The rebuilt stripe is consistent by construction; Reconstruct cannot tell
// whether the surviving chunks were themselves correct.
func (p *Parity) Reconstruct(chunks [][]byte, missing []int) error {
	if err := p.markMissing(chunks, missing); err != nil {
		return fmt.Errorf("raid: reconstruct: %w", err)
	}
	if err := p.enc.Reconstruct(chunks); err != nil {
		return fmt.Errorf("raid: reconstruct: %w", err)
	}
	return nil
}

// ReconstructData is Reconstruct for a degraded read: it rebuilds only the
// missing data chunks. Missing parity chunks are left as zero-length slices
// of whatever was passed (nil stays nil). Same conventions and limits as
// Reconstruct.
func (p *Parity) ReconstructData(chunks [][]byte, missing []int) error {
	if err := p.markMissing(chunks, missing); err != nil {
		return fmt.Errorf("raid: reconstruct data: %w", err)
	}
	if err := p.enc.ReconstructData(chunks); err != nil {
		return fmt.Errorf("raid: reconstruct data: %w", err)
	}
	return nil
}

// Update computes the parity of a partial-stripe write by read-modify-write:
// new parity from the old parity and, for each changed data chunk, its old
// and new contents. The unchanged data chunks are not needed.
//
// oldData and newData have k entries each. newData[i] is nil for a data
// chunk that does not change, and then oldData[i] is ignored (it may be nil);
// for a chunk that changes both must be present. parity holds the old parity
// on entry and the new parity on return.
//
// oldData[i] of every changed chunk is used as scratch: its contents are
// unspecified on return. newData is not modified.
//
// Cost, for w changed chunks: read-modify-write reads w old data chunks and m
// parity chunks; reconstruct-write (read the k-w unchanged data chunks and
// Encode the whole stripe) reads k-w chunks. Both write w+m. The caller should
// prefer reconstruct-write when it reads no more (PreferReconstructWrite),
// always Encode a full-stripe write (w = k, nothing to read), and must use
// reconstruct-write when a changed chunk's old data or any parity chunk is
// on a failed member, since Update needs all of them.
func (p *Parity) Update(oldData, newData, parity [][]byte) error {
	if len(oldData) != p.k || len(newData) != p.k {
		return fmt.Errorf("raid: update: %d old and %d new data chunks, want %d each",
			len(oldData), len(newData), p.k)
	}
	if len(parity) != p.m {
		return fmt.Errorf("raid: update: %d parity chunks, want %d", len(parity), p.m)
	}
	size := -1
	for i, c := range parity {
		if len(c) == 0 {
			return fmt.Errorf("raid: update: parity chunk %d is empty", i)
		}
		if size < 0 {
			size = len(c)
		} else if len(c) != size {
			return fmt.Errorf("raid: update: parity chunk %d is %d bytes, want %d", i, len(c), size)
		}
	}
	shards := make([][]byte, p.k+p.m)
	changed := 0
	for i := range p.k {
		if newData[i] == nil {
			continue
		}
		if len(newData[i]) != size {
			return fmt.Errorf("raid: update: new data chunk %d is %d bytes, want %d", i, len(newData[i]), size)
		}
		if len(oldData[i]) != size {
			return fmt.Errorf("raid: update: old data chunk %d is %d bytes, want %d", i, len(oldData[i]), size)
		}
		shards[i] = oldData[i]
		changed++
	}
	if changed == 0 {
		return nil
	}
	copy(shards[p.k:], parity)
	if err := p.enc.Update(shards, newData); err != nil {
		return fmt.Errorf("raid: update: %w", err)
	}
	return nil
}

// PreferReconstructWrite reports whether a write that changes w of the k data
// chunks of a stripe should use reconstruct-write (read the k-w unchanged
// chunks, Encode) rather than read-modify-write (read the w old chunks and
// the m parity chunks, Update): true when it reads no more chunks, and always
// for a full-stripe write.
func (p *Parity) PreferReconstructWrite(w int) bool {
	return p.k-w <= w+p.m
}

// stripe checks a full stripe and returns it as one slice, data then parity.
func (p *Parity) stripe(data, parity [][]byte) ([][]byte, error) {
	if len(data) != p.k {
		return nil, fmt.Errorf("%d data chunks, want %d", len(data), p.k)
	}
	if len(parity) != p.m {
		return nil, fmt.Errorf("%d parity chunks, want %d", len(parity), p.m)
	}
	shards := make([][]byte, 0, p.k+p.m)
	shards = append(append(shards, data...), parity...)
	size := len(shards[0])
	if size == 0 {
		return nil, errors.New("data chunk 0 is empty")
	}
	for i, c := range shards {
		if len(c) != size {
			return nil, fmt.Errorf("%s is %d bytes, want %d", p.chunkName(i), len(c), size)
		}
	}
	return shards, nil
}

// markMissing checks chunks and missing for Reconstruct and truncates the
// missing entries to zero length, which is how the library marks them.
func (p *Parity) markMissing(chunks [][]byte, missing []int) error {
	if len(chunks) != p.k+p.m {
		return fmt.Errorf("%d chunks, want %d data + %d parity = %d", len(chunks), p.k, p.m, p.k+p.m)
	}
	if len(missing) > p.m {
		return fmt.Errorf("%d chunks missing, RAID %d with %d parity chunk(s) tolerates at most %d",
			len(missing), p.level(), p.m, p.m)
	}
	lost := make([]bool, len(chunks))
	for _, i := range missing {
		if i < 0 || i >= len(chunks) {
			return fmt.Errorf("missing chunk index %d out of range [0, %d)", i, len(chunks))
		}
		if lost[i] {
			return fmt.Errorf("missing chunk index %d listed twice", i)
		}
		lost[i] = true
	}
	size := -1
	for i, c := range chunks {
		if lost[i] {
			continue
		}
		if len(c) == 0 {
			return fmt.Errorf("%s is empty but not listed as missing", p.chunkName(i))
		}
		if size < 0 {
			size = len(c)
		} else if len(c) != size {
			return fmt.Errorf("%s is %d bytes, want %d", p.chunkName(i), len(c), size)
		}
	}
	for _, i := range missing {
		chunks[i] = chunks[i][:0]
	}
	return nil
}

func (p *Parity) level() int {
	if p.m == 1 {
		return 5
	}
	return 6
}

func (p *Parity) chunkName(i int) string {
	switch {
	case i < p.k:
		return fmt.Sprintf("data chunk %d", i)
	case i == p.k:
		return "parity chunk P"
	default:
		return "parity chunk Q"
	}
}
