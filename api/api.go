// Package api is blockrepd's control API: HTTP/1.1 with JSON bodies over a
// unix socket, spoken by blockctl.
//
// # Routes
//
//	GET /v1/status    200 Status
//
// Every error is a JSON object {"error": "..."} with a matching status code:
// 404 for an unknown route, 405 (with an Allow header) for a wrong method,
// 500 when the daemon cannot answer.
package api

import (
	"context"
	"time"

	"github.com/blockrep/blockrep/nbd"
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
}

// StatusSource answers status requests; the node implements it.
type StatusSource interface {
	Status(ctx context.Context) (Status, error)
}

// errorBody is the JSON body of every error response.
type errorBody struct {
	Error string `json:"error"`
}
