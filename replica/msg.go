package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Payloads of the replication frames that carry more than data. Integers
// are big-endian like the frame header.

// errBadPayload reports a frame whose payload does not decode.
var errBadPayload = errors.New("replica: malformed frame payload")

// stateMsg is the payload of a State frame: what the sender knows about
// itself for one volume. The first State frame on a link is the connect
// exchange; later ones announce changes.
type stateMsg struct {
	Volume        string // volume name, for messages
	Size          int64  // device size: both must agree
	BlockSize     uint32 // bitmap block size: both must agree
	Protocol      byte   // 'A', 'B' or 'C': both must agree
	Policy        SplitBrainPolicy
	Role          Role
	Disk          DiskState
	Epoch         uint64
	Gen           Generations // Bitmap: the sender's bitmap generation for the receiver
	WasPrimary    bool
	ChangedBlocks uint64
	PrimarySince  uint64
	DiscardMyData bool
	// Leaving: the sender goes away cleanly; a secondary that leaves has
	// made itself Outdated first, so its primary may go on without it.
	Leaving bool
	// StartResync, on an update from a sync source: a resync of this kind
	// begins (an operator's resync or verify-driven resync on a connected
	// link); the receiver becomes its target.
	StartResync ResyncKind
}

const (
	stateFixedLen = 8 + 4 + 1 + 1 + 1 + 1 + 8 + 8*(2+HistoryLen) + 8 + 8 + 1 + 1 + 1 + 1
	maxVolumeName = 255
)

func (m *stateMsg) marshal() []byte {
	b := make([]byte, 0, stateFixedLen+1+len(m.Volume))
	b = binary.BigEndian.AppendUint64(b, uint64(m.Size))
	b = binary.BigEndian.AppendUint32(b, m.BlockSize)
	b = append(b, m.Protocol, byte(m.Policy), byte(m.Role), byte(m.Disk))
	b = binary.BigEndian.AppendUint64(b, m.Epoch)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Gen.Current))
	b = binary.BigEndian.AppendUint64(b, uint64(m.Gen.Bitmap))
	for _, h := range m.Gen.History {
		b = binary.BigEndian.AppendUint64(b, uint64(h))
	}
	b = binary.BigEndian.AppendUint64(b, m.ChangedBlocks)
	b = binary.BigEndian.AppendUint64(b, m.PrimarySince)
	b = append(b, boolByte(m.WasPrimary), boolByte(m.DiscardMyData), boolByte(m.Leaving), byte(m.StartResync))
	name := m.Volume
	if len(name) > maxVolumeName {
		name = name[:maxVolumeName]
	}
	b = append(b, byte(len(name)))
	return append(b, name...)
}

func (m *stateMsg) unmarshal(b []byte) error {
	if len(b) < stateFixedLen+1 {
		return fmt.Errorf("%w: state of %d bytes", errBadPayload, len(b))
	}
	var r stateMsg
	r.Size = int64(binary.BigEndian.Uint64(b))
	r.BlockSize = binary.BigEndian.Uint32(b[8:])
	r.Protocol, r.Policy, r.Role, r.Disk = b[12], SplitBrainPolicy(b[13]), Role(b[14]), DiskState(b[15])
	r.Epoch = binary.BigEndian.Uint64(b[16:])
	r.Gen.Current = GenID(binary.BigEndian.Uint64(b[24:]))
	r.Gen.Bitmap = GenID(binary.BigEndian.Uint64(b[32:]))
	p := 40
	for i := range r.Gen.History {
		r.Gen.History[i] = GenID(binary.BigEndian.Uint64(b[p:]))
		p += 8
	}
	r.ChangedBlocks = binary.BigEndian.Uint64(b[p:])
	r.PrimarySince = binary.BigEndian.Uint64(b[p+8:])
	p += 16
	flags := b[p : p+4]
	for _, f := range flags[:3] {
		if f > 1 {
			return fmt.Errorf("%w: state flag %d", errBadPayload, f)
		}
	}
	r.WasPrimary, r.DiscardMyData, r.Leaving, r.StartResync = flags[0] == 1, flags[1] == 1, flags[2] == 1, ResyncKind(flags[3])
	p += 4
	n := int(b[p])
	if len(b) != p+1+n {
		return fmt.Errorf("%w: state of %d bytes with a %d-byte name", errBadPayload, len(b), n)
	}
	r.Volume = string(b[p+1:])
	if r.Role > Primary || r.Disk > UpToDate || r.StartResync > ALResync || r.Size <= 0 {
		return fmt.Errorf("%w: state with role %d, disk %d, resync %d, size %d", errBadPayload, r.Role, r.Disk, r.StartResync, r.Size)
	}
	*m = r
	return nil
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// Zeroes payload: length (8), flags (1).
const (
	zeroMayTrim = 1 << iota // the receiver may deallocate the range
	zeroResync              // resync data, not an application write
)

func marshalZeroes(length int64, flags byte) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 9), uint64(length))
	return append(b, flags)
}

func unmarshalZeroes(b []byte) (length int64, flags byte, err error) {
	if len(b) != 9 || b[8]&^(zeroMayTrim|zeroResync) != 0 {
		return 0, 0, fmt.Errorf("%w: zeroes payload of %d bytes", errBadPayload, len(b))
	}
	return int64(binary.BigEndian.Uint64(b)), b[8], nil
}

// Trim payload: length (8).
func marshalLength(length int64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(length))
}

func unmarshalLength(b []byte) (int64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: length payload of %d bytes", errBadPayload, len(b))
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

// Verify request payload: length (8), mode (1), then one digest of
// digestSize bytes per bitmap block of the range. The answer (VerifyDigest,
// same Seq) is one bit per block, set where the receiver's digest differs.
const (
	verifyOnline   = 1 // online verify: report only
	verifyChecksum = 2 // checksum resync: the source sends the differing blocks
)

func marshalVerifyReq(length int64, mode byte, digests []byte) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 9+len(digests)), uint64(length))
	b = append(b, mode)
	return append(b, digests...)
}

func unmarshalVerifyReq(b []byte) (length int64, mode byte, digests []byte, err error) {
	if len(b) < 9 || (b[8] != verifyOnline && b[8] != verifyChecksum) || (len(b)-9)%digestSize != 0 {
		return 0, 0, nil, fmt.Errorf("%w: verify request of %d bytes", errBadPayload, len(b))
	}
	return int64(binary.BigEndian.Uint64(b)), b[8], b[9:], nil
}

// Resync done payload: the source's generation record, as a stateMsg-free
// 8*(2+HistoryLen) byte list.
func marshalGens(g Generations) []byte {
	b := make([]byte, 0, 8*(2+HistoryLen))
	b = binary.BigEndian.AppendUint64(b, uint64(g.Current))
	b = binary.BigEndian.AppendUint64(b, uint64(g.Bitmap))
	for _, h := range g.History {
		b = binary.BigEndian.AppendUint64(b, uint64(h))
	}
	return b
}

func unmarshalGens(b []byte) (Generations, error) {
	var g Generations
	if len(b) != 8*(2+HistoryLen) {
		return g, fmt.Errorf("%w: generations of %d bytes", errBadPayload, len(b))
	}
	g.Current = GenID(binary.BigEndian.Uint64(b))
	g.Bitmap = GenID(binary.BigEndian.Uint64(b[8:]))
	for i := range g.History {
		g.History[i] = GenID(binary.BigEndian.Uint64(b[16+8*i:]))
	}
	return g, nil
}

// Bitmap chunk payload: page index (4) and the page; an empty payload ends
// the bitmap.
func marshalBitmapPage(i int, page []byte) []byte {
	b := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(page)), uint32(i))
	return append(b, page...)
}
