package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/raft"
)

// The member-to-leader calls travel as HTTP+JSON on the control service of
// the authenticated transport (internal/authnet in blockrepd), under
// RPCPrefix. Errors keep their type across the wire: a NotLeaderError, a
// RefusedError or a FinalError comes back as one, so Member's retry rules
// work the same on the leader and off it.

// RPCPrefix is the path prefix of the member-to-leader calls.
const RPCPrefix = "/cluster/v1/"

type rpcError struct {
	Error  string   `json:"error"`
	Kind   string   `json:"kind"` // not-leader, refused, final, other
	Leader string   `json:"leader,omitempty"`
	Rule   Rule     `json:"rule,omitempty"`
	Detail string   `json:"detail,omitempty"`
	Cmd    *Command `json:"cmd,omitempty"`
}

func encodeError(err error) rpcError {
	var nl *NotLeaderError
	var ref *RefusedError
	var fin *FinalError
	switch {
	case errors.As(err, &nl):
		return rpcError{Error: err.Error(), Kind: "not-leader", Leader: nl.Leader}
	case errors.As(err, &ref):
		c := ref.Cmd
		return rpcError{Error: err.Error(), Kind: "refused", Rule: ref.Rule, Detail: ref.Detail, Cmd: &c}
	case errors.As(err, &fin):
		return rpcError{Error: err.Error(), Kind: "final"}
	}
	return rpcError{Error: err.Error(), Kind: "other"}
}

func (e rpcError) decode() error {
	switch e.Kind {
	case "not-leader":
		return &NotLeaderError{Leader: e.Leader}
	case "refused":
		re := &RefusedError{Rule: e.Rule, Detail: e.Detail}
		if e.Cmd != nil {
			re.Cmd = *e.Cmd
		}
		return re
	case "final":
		return &FinalError{Msg: e.Error}
	}
	return errors.New(e.Error)
}

type readIndexReply struct {
	Index uint64 `json:"index"`
}

type applyReply struct {
	Result Result `json:"result"`
}

type switchoverRequest struct {
	Volume string `json:"volume"`
	Target string `json:"target"`
}

type memberRequest struct {
	Name    string `json:"name"`
	Address string `json:"address,omitempty"`
	Force   bool   `json:"force,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// Handler serves the member-to-leader calls (under RPCPrefix). Only the
// leader answers them; another member says who leads.
func (m *Member) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST "+RPCPrefix+"heartbeat", rpc(func(ctx context.Context, r Report) (HeartbeatReply, error) {
		return m.HandleHeartbeat(ctx, r)
	}))
	mux.Handle("POST "+RPCPrefix+"read-index", rpc(func(ctx context.Context, _ struct{}) (readIndexReply, error) {
		idx, err := m.HandleReadIndex(ctx)
		return readIndexReply{Index: idx}, err
	}))
	mux.Handle("POST "+RPCPrefix+"apply", rpc(func(ctx context.Context, c Command) (applyReply, error) {
		if !m.IsLeader() {
			return applyReply{}, m.notLeader()
		}
		res, err := m.applyLocal(ctx, c)
		return applyReply{Result: res}, err
	}))
	mux.Handle("POST "+RPCPrefix+"switchover", rpc(func(ctx context.Context, r switchoverRequest) (struct{}, error) {
		return struct{}{}, m.HandleSwitchover(ctx, r.Volume, r.Target)
	}))
	mux.Handle("POST "+RPCPrefix+"add-member", rpc(func(ctx context.Context, r memberRequest) (struct{}, error) {
		if !m.IsLeader() {
			return struct{}{}, m.notLeader()
		}
		return struct{}{}, m.HandleAddMember(ctx, r.Name, r.Address)
	}))
	mux.Handle("POST "+RPCPrefix+"remove-member", rpc(func(ctx context.Context, r memberRequest) (struct{}, error) {
		if !m.IsLeader() {
			return struct{}{}, m.notLeader()
		}
		return struct{}{}, m.HandleRemoveMember(ctx, r.Name, r.Force, r.Reason)
	}))
	return mux
}

// rpc adapts a call to HTTP: a JSON request body in, a JSON reply or an
// rpcError (status 409) out. The caller's deadline comes in a header.
func rpc[Req, Reply any](call func(ctx context.Context, req Req) (Reply, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req Req
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeRPC(w, http.StatusBadRequest, rpcError{Error: "bad request: " + err.Error(), Kind: "final"})
			return
		}
		ctx := r.Context()
		if ms, err := time.ParseDuration(r.Header.Get("Blockrep-Timeout")); err == nil && ms > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, ms)
			defer cancel()
		}
		reply, err := call(ctx, req)
		if err != nil {
			writeRPC(w, http.StatusConflict, encodeError(err))
			return
		}
		writeRPC(w, http.StatusOK, reply)
	})
}

func writeRPC(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// HTTPRemote is the Remote of blockrepd: HTTP calls to the leader's
// Handler over connections from dial (authenticated by the caller).
type HTTPRemote struct {
	client *http.Client
}

var _ Remote = (*HTTPRemote)(nil)

// NewHTTPRemote returns a Remote that reaches a member's Handler at its
// Raft address through dial.
func NewHTTPRemote(dial func(ctx context.Context, addr string) (net.Conn, error)) *HTTPRemote {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return dial(ctx, addr)
		},
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     time.Minute,
	}
	return &HTTPRemote{client: &http.Client{Transport: tr}}
}

// Close drops idle connections.
func (h *HTTPRemote) Close() { h.client.CloseIdleConnections() }

func (h *HTTPRemote) call(ctx context.Context, addr raft.ServerAddress, name string, req, reply any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+string(addr)+RPCPrefix+name, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hr.Header.Set("Content-Type", "application/json")
	if dl, ok := ctx.Deadline(); ok {
		hr.Header.Set("Blockrep-Timeout", time.Until(dl).String())
	}
	resp, err := h.client.Do(hr)
	if err != nil {
		return fmt.Errorf("cluster: %s to %s: %w", name, addr, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("cluster: %s to %s: %w", name, addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e rpcError
		if json.Unmarshal(data, &e) != nil || e.Kind == "" {
			return fmt.Errorf("cluster: %s to %s: HTTP %d: %s", name, addr, resp.StatusCode, bytes.TrimSpace(data))
		}
		return e.decode()
	}
	if err := json.Unmarshal(data, reply); err != nil {
		return fmt.Errorf("cluster: %s to %s: bad reply: %w", name, addr, err)
	}
	return nil
}

// Heartbeat implements Remote.
func (h *HTTPRemote) Heartbeat(ctx context.Context, addr raft.ServerAddress, r Report) (HeartbeatReply, error) {
	var reply HeartbeatReply
	err := h.call(ctx, addr, "heartbeat", r, &reply)
	return reply, err
}

// Apply implements Remote.
func (h *HTTPRemote) Apply(ctx context.Context, addr raft.ServerAddress, c Command) (Result, error) {
	var reply applyReply
	err := h.call(ctx, addr, "apply", c, &reply)
	return reply.Result, err
}

// Switchover implements Remote.
func (h *HTTPRemote) Switchover(ctx context.Context, addr raft.ServerAddress, volume, target string) error {
	return h.call(ctx, addr, "switchover", switchoverRequest{Volume: volume, Target: target}, &struct{}{})
}

// ReadIndex implements Remote.
func (h *HTTPRemote) ReadIndex(ctx context.Context, addr raft.ServerAddress) (uint64, error) {
	var reply readIndexReply
	err := h.call(ctx, addr, "read-index", struct{}{}, &reply)
	return reply.Index, err
}

// AddMember implements Remote.
func (h *HTTPRemote) AddMember(ctx context.Context, addr raft.ServerAddress, name, memberAddr string) error {
	return h.call(ctx, addr, "add-member", memberRequest{Name: name, Address: memberAddr}, &struct{}{})
}

// RemoveMember implements Remote.
func (h *HTTPRemote) RemoveMember(ctx context.Context, addr raft.ServerAddress, name string, force bool, reason string) error {
	return h.call(ctx, addr, "remove-member", memberRequest{Name: name, Force: force, Reason: reason}, &struct{}{})
}
