package api

import (
	"context"
	"net"
	"net/http"
	"strings"
	"time"
)

// ClusterController is what a backend that is a cluster member also does;
// the routes below answer 404 on a daemon without [cluster].
//
//	POST /v1/volumes/{volume}/promote   {"node": "", "force": false, "reason": ""}  200 {"note": ""}
//	POST /v1/volumes/{volume}/demote    {}                                           200 {"note": ""}
//	POST /v1/cluster/add                {"name": "", "address": ""}                  200 {}
//	POST /v1/cluster/remove             {"name": "", "force": false, "reason": ""}   200 {}
//
// Unlike the other POST routes, promote and demote answer when they are
// done: the switchover has completed (or failed, with the reason).
type ClusterController interface {
	// Promote moves the volume's primary role to node with no loss: the
	// current primary is demoted once node is in sync, node is promoted
	// once the old primary stepped down. Refused when node is not
	// UpToDate. With force, node is promoted at once whatever its disk
	// (Outdated loses what only the others held; the note says what).
	Promote(ctx context.Context, volume, node string, force bool, reason string) (note string, err error)
	// Demote moves the volume's primary role to the best other UpToDate
	// node.
	Demote(ctx context.Context, volume string) (note string, err error)
	// AddMember adds a node to the cluster's Raft group.
	AddMember(ctx context.Context, name, address string) error
	// RemoveMember removes a node; refused for a primary, and for the
	// last UpToDate replica of a volume without force.
	RemoveMember(ctx context.Context, name string, force bool, reason string) error
}

// PromoteRequest is the body of POST /v1/volumes/{volume}/promote.
type PromoteRequest struct {
	Node   string `json:"node"`
	Force  bool   `json:"force"`
	Reason string `json:"reason"`
}

// DemoteRequest is the body of POST /v1/volumes/{volume}/demote.
type DemoteRequest struct{}

// NoteReply is the answer of promote and demote.
type NoteReply struct {
	Note string `json:"note"`
}

// MemberRequest is the body of POST /v1/cluster/add and /remove.
type MemberRequest struct {
	Name    string `json:"name"`
	Address string `json:"address,omitempty"`
	Force   bool   `json:"force,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// clusterRoutes adds the ClusterController routes to mux.
func clusterRoutes(mux *http.ServeMux, b Backend) {
	cc, ok := b.(ClusterController)
	noCluster := func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "this daemon is not a cluster member (no [cluster] table)")
	}
	for _, p := range []string{"/v1/volumes/{volume}/promote", "/v1/volumes/{volume}/demote", "/v1/cluster/add", "/v1/cluster/remove"} {
		if !ok {
			mux.HandleFunc(p, noCluster)
		}
	}
	if !ok {
		return
	}
	mux.Handle("/v1/volumes/{volume}/promote", call("promote", func(ctx context.Context, volume string, req PromoteRequest) (NoteReply, error) {
		if strings.TrimSpace(req.Node) == "" {
			return NoteReply{}, invalidf("node is required: the node to promote")
		}
		note, err := cc.Promote(ctx, volume, req.Node, req.Force, req.Reason)
		return NoteReply{Note: note}, err
	}))
	mux.Handle("/v1/volumes/{volume}/demote", call("demote", func(ctx context.Context, volume string, _ DemoteRequest) (NoteReply, error) {
		note, err := cc.Demote(ctx, volume)
		return NoteReply{Note: note}, err
	}))
	mux.Handle("/v1/cluster/add", command("add member", func(ctx context.Context, _ string, req MemberRequest) error {
		if req.Name == "" || req.Address == "" {
			return invalidf("name and address are required")
		}
		return cc.AddMember(ctx, req.Name, req.Address)
	}))
	mux.Handle("/v1/cluster/remove", command("remove member", func(ctx context.Context, _ string, req MemberRequest) error {
		if req.Name == "" {
			return invalidf("name is required")
		}
		return cc.RemoveMember(ctx, req.Name, req.Force, req.Reason)
	}))
}

// DialFunc opens a connection to the daemon (an authenticated TCP
// connection for a remote node).
type DialFunc func(ctx context.Context) (net.Conn, error)

// DialWith returns a client whose connections come from dial; name is what
// Socket reports and errors say (e.g. the node's address).
func DialWith(name string, dial DialFunc) *Client {
	tr := &http.Transport{
		DialContext:     func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		MaxIdleConns:    1,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{socket: name, http: &http.Client{Transport: tr}}
}

// Promote asks for node to become primary of volume ("" for the only one).
func (c *Client) Promote(ctx context.Context, volume, node string, force bool, reason string) (string, error) {
	var reply NoteReply
	err := c.call(ctx, volume, "promote", PromoteRequest{Node: node, Force: force, Reason: reason}, &reply)
	return reply.Note, err
}

// Demote asks for volume's primary role to move to another node.
func (c *Client) Demote(ctx context.Context, volume string) (string, error) {
	var reply NoteReply
	err := c.call(ctx, volume, "demote", DemoteRequest{}, &reply)
	return reply.Note, err
}

// AddMember adds a node to the cluster.
func (c *Client) AddMember(ctx context.Context, name, address string) error {
	return c.post(ctx, "/v1/cluster/add", MemberRequest{Name: name, Address: address}, &struct{}{})
}

// RemoveMember removes a node from the cluster.
func (c *Client) RemoveMember(ctx context.Context, name string, force bool, reason string) error {
	return c.post(ctx, "/v1/cluster/remove", MemberRequest{Name: name, Force: force, Reason: reason}, &struct{}{})
}
