package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/blockrep/blockrep/replica"
)

// NodeKind says what a cluster member is. The zero value is invalid, so a
// command that forgot to say is refused rather than turning a witness into a
// data node (which would get replicas and could be promoted).
type NodeKind uint8

const (
	// DataNode holds a replica of every volume and can be primary.
	DataNode NodeKind = iota + 1
	// Witness votes in Raft, holds no data and is never primary.
	Witness
)

// String returns "data" or "witness", the names used in status output and
// scenario files.
func (k NodeKind) String() string {
	switch k {
	case DataNode:
		return "data"
	case Witness:
		return "witness"
	}
	return "NodeKind(" + strconv.Itoa(int(k)) + ")"
}

// ParseNodeKind returns the kind named by String.
func ParseNodeKind(s string) (NodeKind, error) {
	switch s {
	case "data":
		return DataNode, nil
	case "witness":
		return Witness, nil
	}
	return 0, fmt.Errorf("unknown node kind %q (allowed: data, witness)", s)
}

func (k NodeKind) valid() bool { return k == DataNode || k == Witness }

// MarshalText encodes the kind by name; an invalid one as "NodeKind(N)",
// so that a command carrying it can still be logged and refused.
func (k NodeKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText decodes what MarshalText wrote.
func (k *NodeKind) UnmarshalText(b []byte) error {
	s := string(b)
	if n, ok := strings.CutPrefix(s, "NodeKind("); ok && strings.HasSuffix(n, ")") {
		v, err := strconv.ParseUint(strings.TrimSuffix(n, ")"), 10, 8)
		if err != nil {
			return fmt.Errorf("unknown node kind %q", s)
		}
		*k = NodeKind(v)
		return nil
	}
	x, err := ParseNodeKind(s)
	if err != nil {
		return err
	}
	*k = x
	return nil
}

// Node is one cluster member.
type Node struct {
	Name string   `json:"name"`
	Kind NodeKind `json:"kind"`
}

// VolumeState is what the cluster knows about one volume.
type VolumeState struct {
	Name string `json:"name"`
	// Primary is the data node serving the volume; "" when none (new
	// volume, after Demote or PrimaryLost).
	Primary string `json:"primary"`
	// Epoch is the number of the latest promotion (or the highest epoch a
	// replica reported before it, RaiseEpoch); 0 for a new volume.
	Epoch uint64 `json:"epoch"`
	// Promoted is set once the volume had a primary: before, no write was
	// ever acknowledged, and each node's word on its own data stands.
	Promoted bool `json:"promoted,omitempty"`
	// Disks is the disk state of each data node's replica.
	Disks map[string]replica.DiskState `json:"disks"`
	// Preferred is the data node that failover picks first; "" for none.
	Preferred string `json:"preferred"`
	// Failover is the failover policy: "" (FailoverAuto) or
	// FailoverManual.
	Failover string `json:"failover,omitempty"`
	// Next is the node a switchover demoted the primary for, until the
	// next promotion: any leader promotes it once the old primary has
	// stepped down.
	Next string `json:"next,omitempty"`
	// Lost is the primary that PrimaryLost removed, until the next
	// promotion: it stopped answering, so it may hold writes nobody
	// acknowledged, which it must discard when it comes back.
	Lost string `json:"lost,omitempty"`
}

// State is the whole replicated cluster state. The zero value is an empty
// cluster; NewState returns one with its maps allocated.
type State struct {
	Nodes   map[string]Node         `json:"nodes"`
	Volumes map[string]*VolumeState `json:"volumes"`
}

// NewState returns an empty cluster.
func NewState() *State {
	return &State{Nodes: map[string]Node{}, Volumes: map[string]*VolumeState{}}
}

// Clone returns a deep copy: no map or VolumeState is shared with s. Nil
// maps come back empty.
func (s *State) Clone() *State {
	c := NewState()
	maps.Copy(c.Nodes, s.Nodes)
	for name, v := range s.Volumes {
		if v == nil {
			c.Volumes[name] = nil // Check reports it
			continue
		}
		cv := *v
		cv.Disks = maps.Clone(v.Disks)
		if cv.Disks == nil {
			cv.Disks = map[string]replica.DiskState{}
		}
		c.Volumes[name] = &cv
	}
	return c
}

// snapshotVersion is the format version written by MarshalBinary.
const snapshotVersion = 1

type snapshot struct {
	Version int `json:"version"`
	*State
}

// MarshalBinary encodes the state as JSON. The encoding is deterministic
// (map keys are sorted, nil maps are written as empty ones), so two nodes
// with equal states produce identical bytes.
func (s *State) MarshalBinary() ([]byte, error) {
	return json.Marshal(snapshot{Version: snapshotVersion, State: s.Clone()})
}

// UnmarshalBinary replaces s with the state encoded in data. It refuses an
// unknown version, unknown fields and a state that fails Check, and leaves
// s unchanged on error.
func (s *State) UnmarshalBinary(data []byte) error {
	snap := snapshot{State: NewState()}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&snap); err != nil {
		return fmt.Errorf("cluster: decoding state: %w", err)
	}
	if dec.More() {
		return fmt.Errorf("cluster: decoding state: trailing data")
	}
	if snap.Version != snapshotVersion {
		return fmt.Errorf("cluster: state version %d, want %d", snap.Version, snapshotVersion)
	}
	n := snap.State.Clone() // normalizes nil maps
	if err := n.Check(); err != nil {
		return fmt.Errorf("cluster: decoded state is invalid: %w", err)
	}
	*s = *n
	return nil
}

// Check verifies the invariants every reachable state satisfies:
//   - map keys equal the names they map to; node kinds are valid;
//   - every replica (disk entry) names a data node and holds a valid state;
//   - a primary is a data node with an UpToDate replica, at epoch ≥ 1
//     (invariant 3: only an UpToDate replica is primary; a forced
//     promotion makes its disk UpToDate);
//   - a preferred primary is a data node with a replica.
//
// "At most one primary per volume" holds by construction (one field); "at
// most one primary per epoch" is a property of the sequence of states, which
// the tests check.
func (s *State) Check() error {
	for _, name := range slices.Sorted(maps.Keys(s.Nodes)) {
		n := s.Nodes[name]
		if n.Name != name || name == "" {
			return fmt.Errorf("node key %q holds node %q", name, n.Name)
		}
		if !n.Kind.valid() {
			return fmt.Errorf("node %s has invalid kind %v", name, n.Kind)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s.Volumes)) {
		v := s.Volumes[name]
		if v == nil || v.Name != name || name == "" {
			return fmt.Errorf("volume key %q holds a different or no volume", name)
		}
		for _, dn := range slices.Sorted(maps.Keys(v.Disks)) {
			if s.Nodes[dn].Kind != DataNode {
				return fmt.Errorf("volume %s: replica on %q, which is not a data node", name, dn)
			}
			if d := v.Disks[dn]; d > replica.UpToDate {
				return fmt.Errorf("volume %s: replica on %s has invalid state %v", name, dn, d)
			}
		}
		if v.Primary != "" {
			d, ok := v.Disks[v.Primary]
			switch {
			case s.Nodes[v.Primary].Kind != DataNode:
				return fmt.Errorf("volume %s: primary %q is not a data node", name, v.Primary)
			case !ok:
				return fmt.Errorf("volume %s: primary %s has no replica", name, v.Primary)
			case d != replica.UpToDate:
				return fmt.Errorf("volume %s: primary %s is %v, not UpToDate", name, v.Primary, d)
			case v.Epoch == 0:
				return fmt.Errorf("volume %s: primary %s at epoch 0", name, v.Primary)
			}
		}
		if v.Preferred != "" {
			if _, ok := v.Disks[v.Preferred]; !ok {
				return fmt.Errorf("volume %s: preferred %q has no replica", name, v.Preferred)
			}
		}
	}
	return nil
}
