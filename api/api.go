// Package api is blockrepd's control API: HTTP/1.1 with JSON bodies over a
// unix socket, spoken by blockctl.
//
// # Routes
//
//	GET  /v1/status                         200 Status
//	POST /v1/volumes/{volume}/connect       {"peer": "", "discard_my_data": false}
//	POST /v1/volumes/{volume}/disconnect    {"peer": ""}
//	POST /v1/volumes/{volume}/resync        {"peer": "", "mode": "bitmap"|"checksum"|"full"}
//	POST /v1/volumes/{volume}/verify        {"peer": ""}
//	POST /v1/volumes/{volume}/invalidate    {}
//	POST /v1/volumes/{volume}/role          {"role": "primary"|"secondary", "force": false}
//	GET  /v1/events                         NDJSON stream (see events.go)
//
// and, on a cluster member, the routes of ClusterController (cluster.go),
// and the RAID routes of RAIDController (raid.go).
//
// The POST routes carry out a Controller method and answer 200 with an
// empty object {} once the daemon has accepted the command; its effect (a
// connection, a resync) shows in the status. {volume} "_" means the only
// volume, and an omitted or empty peer means every peer of the volume. Their
// bodies are at most 64 KiB; an empty body is the same as {}, and an unknown
// field is an error.
//
// Every error is a JSON object {"error": "..."} with a matching status code:
// 400 for a bad request body or argument (ErrInvalid), 404 for an unknown
// route, volume or peer (ErrNotFound), 405 (with an Allow header) for a wrong
// method, 409 for a command the volume's current state does not allow
// (ErrConflict), 413 for a body over 64 KiB, 500 when the daemon cannot
// answer, 503 when a cluster member cannot confirm its cluster state is
// current (ErrUnavailable: no quorum, or not caught up with the leader).
package api

import (
	"context"
	"errors"
	"time"

	"github.com/blockrep/blockrep/cluster"
	"github.com/blockrep/blockrep/nbd"
	"github.com/blockrep/blockrep/replica"
)

// Status is the state of one node.
type Status struct {
	// Node is the configured node name.
	Node string `json:"node"`
	// NodeID is the node's stable identity (a UUID).
	NodeID string `json:"node_id"`
	// Version is the blockrepd version.
	Version string `json:"version"`
	// Started is when the daemon started.
	Started time.Time `json:"started"`
	// UptimeSeconds is how long the daemon has been running.
	UptimeSeconds float64 `json:"uptime_seconds"`
	// Volumes lists the volumes in configuration order.
	Volumes []VolumeStatus `json:"volumes"`
	// Cluster is the node's view of its cluster; nil without [cluster].
	Cluster *cluster.MemberStatus `json:"cluster,omitempty"`
}

// Uptime returns UptimeSeconds as a duration.
func (s Status) Uptime() time.Duration {
	return time.Duration(s.UptimeSeconds * float64(time.Second))
}

// VolumeStatus is the state of one volume.
type VolumeStatus struct {
	Name string `json:"name"`
	// UUID is the volume's stable identity.
	UUID string `json:"uuid"`
	// Path is the backing file or device.
	Path string `json:"path"`
	// Size is in bytes.
	Size     int64 `json:"size"`
	ReadOnly bool  `json:"read_only"`
	// BlockDevice is set when Path is a block device rather than a file.
	BlockDevice bool `json:"block_device"`
	// TLS is the volume's TLS mode: "optional" or "required".
	TLS string `json:"tls"`
	// Clients are the NBD clients connected to this volume; never nil.
	Clients []nbd.ClientInfo `json:"clients"`
	// Replication is the volume's replication state; nil for a standalone
	// volume.
	Replication *replica.Status `json:"replication,omitempty"`
	// RAID is the state of the volume's local RAID array; nil for a volume
	// on a single file or device.
	RAID *RAIDStatus `json:"raid,omitempty"`
	// Store is the identity check of the volume's store.
	Store *StoreStatus `json:"store,omitempty"`
}

// StoreStatus is what the node found when it opened the volume's store, and
// whether the store is still there.
type StoreStatus struct {
	// Identity is "protected" when the store carries the volume's identity
	// (storeid), "unprotected" when it has none (read-only, or recorded
	// before identities on a store with no room for one).
	Identity string `json:"identity"`
	// StoreUUID and Generation are the identity the store carries.
	StoreUUID  string `json:"store_uuid,omitempty"`
	Generation string `json:"generation,omitempty"`
	// Opened is what the open decided: Initialise, Accept, Unprotected or
	// Inconsistent; Reason says why.
	Opened string `json:"opened"`
	Reason string `json:"reason"`
	// Gone is set once the store's file was found deleted or replaced
	// while open: every request fails from then on.
	Gone string `json:"gone,omitempty"`
}

// StatusSource answers status requests; the node implements it.
type StatusSource interface {
	Status(ctx context.Context) (Status, error)
}

// Controller carries out the operator's replication commands. Volume ""
// means the only volume (an error if there are several). Peer "" means every
// peer of the volume. Each method returns once the command is accepted or
// refused; what it sets off (a connection, a resync, a verify) may take
// longer and shows in the status.
//
// Errors that wrap ErrNotFound, ErrConflict or ErrInvalid (or
// replica.ErrUnknownPeer or replica.ErrState) reach the client as such; any
// other error is the daemon's failure.
type Controller interface {
	// Connect starts connecting the volume to peer, and keeps retrying
	// until Disconnect. discardMyData lets this node become the sync
	// target of a split brain, losing its writes since the split.
	Connect(ctx context.Context, volume, peer string, discardMyData bool) error
	// Disconnect closes the link to peer and stops retrying.
	Disconnect(ctx context.Context, volume, peer string) error
	// Resync starts a resync with peer. mode is "bitmap" (the blocks marked
	// out of sync; the default when ""), "checksum" (every block, sending
	// only those whose checksums differ) or "full" (every block).
	Resync(ctx context.Context, volume, peer string, mode string) error
	// Verify starts an online verify against peer: it compares checksums of
	// every block and marks those that differ out of sync.
	Verify(ctx context.Context, volume, peer string) error
	// Invalidate marks the local disk Inconsistent so that the next
	// connect resyncs all of it from a peer.
	Invalidate(ctx context.Context, volume string) error
	// SetRole makes the volume "primary" or "secondary". force promotes a
	// volume whose data the cluster cannot confirm is current.
	SetRole(ctx context.Context, volume string, role string, force bool) error
}

// Backend is what the control API serves: the node implements it.
type Backend interface {
	StatusSource
	Controller
}

// Errors a Controller wraps to say why it refused a command; the server
// maps them to HTTP status codes and the Client maps the codes back, so
// errors.Is works on both sides of the socket.
var (
	// ErrNotFound: no such volume or peer (HTTP 404).
	ErrNotFound = errors.New("not found")
	// ErrConflict: not possible in the volume's or link's current state
	// (HTTP 409).
	ErrConflict = errors.New("not possible in the current state")
	// ErrInvalid: a bad argument (HTTP 400).
	ErrInvalid = errors.New("invalid argument")
	// ErrUnavailable: a cluster member cannot confirm that its cluster
	// state is current (no quorum, or it has not caught up with the
	// leader), so it neither answers from that state nor acts on it
	// (HTTP 503). Nothing was done; the same call may succeed later.
	ErrUnavailable = errors.New("cluster state unavailable")
)

// Unavailable marks err as an ErrUnavailable without repeating
// ErrUnavailable's text in the message; errors.Is and errors.As still
// find err.
func Unavailable(err error) error { return &unavailableError{err} }

type unavailableError struct{ err error }

func (e *unavailableError) Error() string   { return e.err.Error() }
func (e *unavailableError) Unwrap() []error { return []error{ErrUnavailable, e.err} }

// resyncModes are the modes Controller.Resync accepts, the default first.
var resyncModes = []string{"bitmap", "checksum", "full"}

// roles are the roles Controller.SetRole accepts.
var roles = []string{"primary", "secondary"}

// OnlyVolume is the {volume} path segment that means the only volume. The
// configuration reserves it: no volume may be named "_".
const OnlyVolume = "_"

// ConnectRequest is the body of POST /v1/volumes/{volume}/connect.
type ConnectRequest struct {
	Peer          string `json:"peer"`
	DiscardMyData bool   `json:"discard_my_data"`
}

// PeerRequest is the body of POST /v1/volumes/{volume}/disconnect and
// /verify.
type PeerRequest struct {
	Peer string `json:"peer"`
}

// ResyncRequest is the body of POST /v1/volumes/{volume}/resync.
type ResyncRequest struct {
	Peer string `json:"peer"`
	// Mode is "bitmap" (the default when empty), "checksum" or "full".
	Mode string `json:"mode"`
}

// InvalidateRequest is the body of POST /v1/volumes/{volume}/invalidate:
// it has no fields.
type InvalidateRequest struct{}

// RoleRequest is the body of POST /v1/volumes/{volume}/role.
type RoleRequest struct {
	// Role is "primary" or "secondary".
	Role  string `json:"role"`
	Force bool   `json:"force"`
}

// errorBody is the JSON body of every error response.
type errorBody struct {
	Error string `json:"error"`
}
