package replica

import (
	"encoding/binary"
	"fmt"

	"github.com/blockrep/blockrep/meta"
)

// Role and peer records, stored next to the generation record:
//
//	state/role          role record: was this node primary, and since when
//	state/peer/<name>   peer record: what this node knows of one peer
//
// Role record (integers little-endian):
//
//	0   12 envelope "BRRL", version 1, crc32c
//	12  1  1 if the node is primary (set before the first write as primary,
//	       cleared by a clean demotion or shutdown: found set at startup it
//	       means the node crashed as primary)
//	13  8  epoch: the highest this node knows
//	21  8  primary since: the epoch at which the node last became primary
//
// Peer record:
//
//	0   12 envelope "BRPR", version 1, crc32c
//	12  8  bitmap generation: the generation the peer's bitmap counts from
//	       (0 when the peer is in sync)
//	20  1  the peer's disk state as this node last knew it
const (
	roleRecordLen = 29
	peerRecordLen = 21
	keyRole       = "role"
	peerPrefix    = "peer/"
)

var (
	roleRecord = recordKind{magic: "BRRL", version: 1, name: "a role record", corrupt: ErrGenCorrupt}
	peerRecord = recordKind{magic: "BRPR", version: 1, name: "a peer record", corrupt: ErrGenCorrupt}
)

// RoleRecord is the durable part of a node's role for one volume.
type RoleRecord struct {
	// Primary is set while the node is primary; found set when the volume
	// opens, it means the node crashed (or was killed) as primary.
	Primary bool
	// Epoch is the highest epoch the node knows for the volume.
	Epoch uint64
	// PrimarySince is the epoch at which the node last became primary.
	PrimarySince uint64
}

// PeerRecord is what a node durably knows about one peer of a volume.
type PeerRecord struct {
	// BitmapGen is the generation the peer's bitmap counts from: the
	// generation the peer holds, 0 while the peer is in sync.
	BitmapGen GenID
	// Disk is the peer's disk state as last known (Diskless when unknown).
	Disk DiskState
}

// SaveRole durably records the role record.
func (s *Store) SaveRole(r RoleRecord) error {
	b := make([]byte, roleRecordLen)
	if r.Primary {
		b[12] = 1
	}
	binary.LittleEndian.PutUint64(b[13:], r.Epoch)
	binary.LittleEndian.PutUint64(b[21:], r.PrimarySince)
	roleRecord.seal(b)
	return s.update(func(tx *meta.VolumeTx) error { return tx.Put(keyRole, b) })
}

// LoadRole returns the role record; a volume that never saved one gets the
// zero record (secondary, epoch 0).
func (s *Store) LoadRole() (RoleRecord, error) {
	var b []byte
	if err := s.view(func(tx *meta.VolumeTx) error { b = tx.Get(keyRole); return nil }); err != nil {
		return RoleRecord{}, err
	}
	if b == nil {
		return RoleRecord{}, nil
	}
	if err := roleRecord.open(b, roleRecordLen); err != nil {
		return RoleRecord{}, fmt.Errorf("replica: volume %q: %w", s.volume, err)
	}
	if len(b) != roleRecordLen || b[12] > 1 {
		return RoleRecord{}, fmt.Errorf("replica: volume %q: %w: role record of %d bytes", s.volume, ErrGenCorrupt, len(b))
	}
	return RoleRecord{
		Primary:      b[12] == 1,
		Epoch:        binary.LittleEndian.Uint64(b[13:]),
		PrimarySince: binary.LittleEndian.Uint64(b[21:]),
	}, nil
}

// SavePeer durably records what the node knows about peer.
func (s *Store) SavePeer(peer string, r PeerRecord) error {
	if r.Disk > UpToDate {
		return fmt.Errorf("replica: volume %q: cannot save peer disk state %v", s.volume, r.Disk)
	}
	b := make([]byte, peerRecordLen)
	binary.LittleEndian.PutUint64(b[12:], uint64(r.BitmapGen))
	b[20] = byte(r.Disk)
	peerRecord.seal(b)
	return s.update(func(tx *meta.VolumeTx) error { return tx.Put(peerPrefix+peer, b) })
}

// LoadPeer returns the record of peer, or ErrNotStored.
func (s *Store) LoadPeer(peer string) (PeerRecord, error) {
	var b []byte
	if err := s.view(func(tx *meta.VolumeTx) error { b = tx.Get(peerPrefix + peer); return nil }); err != nil {
		return PeerRecord{}, err
	}
	if b == nil {
		return PeerRecord{}, ErrNotStored
	}
	if err := peerRecord.open(b, peerRecordLen); err != nil {
		return PeerRecord{}, fmt.Errorf("replica: volume %q: peer %q: %w", s.volume, peer, err)
	}
	if len(b) != peerRecordLen || DiskState(b[20]) > UpToDate {
		return PeerRecord{}, fmt.Errorf("replica: volume %q: peer %q: %w: peer record of %d bytes", s.volume, peer, ErrGenCorrupt, len(b))
	}
	return PeerRecord{BitmapGen: GenID(binary.LittleEndian.Uint64(b[12:])), Disk: DiskState(b[20])}, nil
}
