package replica

import (
	"errors"
	"time"
)

// Role is what a volume does with writes: a Primary serves them and feeds
// its peers, a Secondary applies what its primary sends.
type Role uint8

// Roles.
const (
	// Secondary applies its primary's writes and serves reads at most.
	Secondary Role = iota
	// Primary serves writes and replicates them to its peers.
	Primary
)

// String returns the role's name as in status output and configuration.
func (r Role) String() string {
	if r == Primary {
		return "primary"
	}
	return "secondary"
}

// ConnState is the state of one peer link, from the local node's side.
type ConnState string

// Connection states. The names are DRBD's where DRBD has one, so operators
// recognise them.
const (
	// StandAlone: not trying to connect (the operator disconnected, or the
	// last connect ended in split brain, unrelated data or a refusal: see
	// PeerStatus.LastError).
	StandAlone ConnState = "StandAlone"
	// Connecting: dialing or waiting for the peer, with backoff.
	Connecting ConnState = "Connecting"
	// Connected: authenticated, states exchanged, no resync running.
	Connected ConnState = "Connected"
	// SyncSource: this node sends the peer the blocks it lacks.
	SyncSource ConnState = "SyncSource"
	// SyncTarget: this node receives the blocks it lacks from the peer.
	SyncTarget ConnState = "SyncTarget"
	// VerifySource: this node runs an online verify against the peer.
	VerifySource ConnState = "VerifySource"
	// VerifyTarget: the peer runs an online verify against this node.
	VerifyTarget ConnState = "VerifyTarget"
)

// Status is the replication state of one volume, for blockctl and the
// control API.
type Status struct {
	// Role is "primary" or "secondary".
	Role string `json:"role"`
	// Disk is the local disk state: UpToDate, Outdated, Inconsistent, or
	// Diskless once the disk failed.
	Disk string `json:"disk"`
	// DiskFailed is the error that made the volume detach its local disk
	// (on_io_error = "detach"); empty while the disk is attached.
	DiskFailed string `json:"disk_failed,omitempty"`
	// Epoch is the highest epoch this node knows for the volume.
	Epoch uint64 `json:"epoch"`
	// Generation is the current generation identifier (hex).
	Generation string `json:"generation"`
	// Protocol is the replication protocol: "A", "B" or "C".
	Protocol string `json:"protocol"`
	// ContinueAlone is set when the unsafe continue_alone switch is on.
	ContinueAlone bool `json:"continue_alone"`
	// Fenced is set on a primary run by a cluster (an Authority) whose
	// lease ran out: it serves no I/O (suspended or failed, per the fence
	// mode) until the lease is renewed.
	Fenced bool `json:"fenced"`
	// LeaseRemaining is, with a cluster, how long the lease still lasts in
	// milliseconds; 0 (omitted) when it ran out, was never granted, or
	// there is no cluster.
	LeaseRemaining int64 `json:"lease_remaining_ms,omitempty"`
	// Peers lists the configured peers in configuration order.
	Peers []PeerStatus `json:"peers"`
}

// PeerStatus is the state of one peer of a volume.
type PeerStatus struct {
	// Name is the peer's node name; Address where this node reaches it.
	Name    string `json:"name"`
	Address string `json:"address"`
	// Connection is the link's ConnState.
	Connection ConnState `json:"connection"`
	// Role and Disk are the peer's role and disk state as last reported by
	// the peer (or, for Disk, as this node recorded it: a peer lost while
	// this node continued writing is Outdated); "Unknown" when never heard.
	Role string `json:"role"`
	Disk string `json:"disk"`
	// ClusterDisk is, with a cluster, the peer's disk state as this node
	// (as primary) last committed it; empty when it committed none.
	ClusterDisk string `json:"cluster_disk,omitempty"`
	// Replicating is set while application writes are sent to the peer.
	Replicating bool `json:"replicating"`
	// OutOfSyncBytes is the size of the blocks set in this node's bitmap for
	// the peer: what a resync would send.
	OutOfSyncBytes int64 `json:"out_of_sync_bytes"`
	// Resync is the running resync, nil when none runs.
	Resync *Progress `json:"resync,omitempty"`
	// Verify is the running or last online verify, nil when none ran.
	Verify *Progress `json:"verify,omitempty"`
	// Decision is the outcome of the last connect (Decide), in one line.
	Decision string `json:"decision,omitempty"`
	// LastError says why the link last went down or was refused.
	LastError string `json:"last_error,omitempty"`
	// Since is when Connection last changed.
	Since time.Time `json:"since"`
	// BytesSent and BytesReceived count replication and resync payload
	// bytes on the link since the daemon started.
	BytesSent     int64 `json:"bytes_sent"`
	BytesReceived int64 `json:"bytes_received"`
	// ResyncBytesSent and ResyncBytesReceived count only resync data
	// payload bytes: what a resync really moved.
	ResyncBytesSent     int64 `json:"resync_bytes_sent"`
	ResyncBytesReceived int64 `json:"resync_bytes_received"`
}

// Progress is the state of a resync or an online verify.
type Progress struct {
	// Kind is "bitmap", "full", "checksum", "al" or "verify".
	Kind string `json:"kind"`
	// Started is when it began; Finished when it ended (zero while running).
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	// TotalBytes is the bytes to go through; DoneBytes how many are done.
	TotalBytes int64 `json:"total_bytes"`
	DoneBytes  int64 `json:"done_bytes"`
	// BytesPerSecond is the recent rate; ETASeconds the estimated time left
	// at that rate (0 when finished or unknown).
	BytesPerSecond float64 `json:"bytes_per_second"`
	ETASeconds     float64 `json:"eta_seconds"`
	// OutOfSyncBytes is, for a verify, the bytes found to differ so far;
	// for a checksum resync, the bytes that differed and were sent.
	OutOfSyncBytes int64 `json:"out_of_sync_bytes"`
	// Error is set when it ended early.
	Error string `json:"error,omitempty"`
}

// Errors returned by the control operations of a Volume, for errors.Is.
var (
	// ErrUnknownPeer: no configured peer has that name.
	ErrUnknownPeer = errors.New("replica: no such peer")
	// ErrState: the operation is not possible in the volume's or link's
	// current state; the error says which state and what would allow it.
	ErrState = errors.New("replica: not possible in the current state")
	// ErrNotPrimary: a write reached a volume that is not primary.
	ErrNotPrimary = errors.New("replica: volume is not primary")
	// ErrPeerUnreachable: a write could not reach a peer that must have it
	// (an UpToDate peer, with continue_alone off), so it was not
	// acknowledged. The blocks are marked out of sync. Standalone mode
	// only: with an Authority such a write waits for the cluster's commit
	// that the peer is no longer UpToDate.
	ErrPeerUnreachable = errors.New("replica: write could not reach an UpToDate peer")
)
