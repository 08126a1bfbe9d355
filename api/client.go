package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"time"
)

// maxResponse bounds the size of a response body the client reads.
const maxResponse = 16 << 20

// Client talks to blockrepd's control socket. It is safe for concurrent use.
type Client struct {
	socket string
	http   *http.Client
}

// Dial returns a client for the control socket at socketPath. It does not
// connect: errors appear on the first request.
func Dial(socketPath string) *Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socketPath)
		},
		MaxIdleConns:    1,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{socket: socketPath, http: &http.Client{Transport: tr}}
}

// Socket returns the path of the control socket.
func (c *Client) Socket() string { return c.socket }

// Close releases idle connections.
func (c *Client) Close() {
	c.http.CloseIdleConnections()
}

// Status fetches the node's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.get(ctx, "/v1/status", &st)
	return st, err
}

var _ Controller = (*Client)(nil)

// Connect asks the daemon to connect volume to peer; see
// Controller.Connect.
func (c *Client) Connect(ctx context.Context, volume, peer string, discardMyData bool) error {
	return c.command(ctx, volume, "connect", ConnectRequest{Peer: peer, DiscardMyData: discardMyData})
}

// Disconnect asks the daemon to disconnect volume from peer; see
// Controller.Disconnect.
func (c *Client) Disconnect(ctx context.Context, volume, peer string) error {
	return c.command(ctx, volume, "disconnect", PeerRequest{Peer: peer})
}

// Resync asks the daemon to resync volume with peer; see Controller.Resync.
func (c *Client) Resync(ctx context.Context, volume, peer string, mode string) error {
	return c.command(ctx, volume, "resync", ResyncRequest{Peer: peer, Mode: mode})
}

// Verify asks the daemon to verify volume against peer; see
// Controller.Verify.
func (c *Client) Verify(ctx context.Context, volume, peer string) error {
	return c.command(ctx, volume, "verify", PeerRequest{Peer: peer})
}

// Invalidate asks the daemon to invalidate volume's local disk; see
// Controller.Invalidate.
func (c *Client) Invalidate(ctx context.Context, volume string) error {
	return c.command(ctx, volume, "invalidate", InvalidateRequest{})
}

// SetRole asks the daemon to give volume a role; see Controller.SetRole.
func (c *Client) SetRole(ctx context.Context, volume string, role string, force bool) error {
	return c.command(ctx, volume, "role", RoleRequest{Role: role, Force: force})
}

// command posts req to /v1/volumes/{volume}/verb, which answers {}.
func (c *Client) command(ctx context.Context, volume, verb string, req any) error {
	return c.call(ctx, volume, verb, req, &struct{}{})
}

// call posts req to /v1/volumes/{volume}/verb and decodes the answer into
// reply; volume "" is OnlyVolume.
func (c *Client) call(ctx context.Context, volume, verb string, req, reply any) error {
	if volume == "" {
		volume = OnlyVolume
	}
	return c.post(ctx, "/v1/volumes/"+url.PathEscape(volume)+"/"+verb, req, reply)
}

// post performs POST path with req as the JSON body and decodes the JSON
// response into reply.
func (c *Client) post(ctx context.Context, path string, req, reply any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, path, body, reply)
}

// get performs GET path and decodes the JSON response into v.
func (c *Client) get(ctx context.Context, path string, v any) error {
	return c.do(ctx, http.MethodGet, path, nil, v)
}

// do sends a request with the JSON body (none when nil) and decodes the JSON
// response into v. An error reply is a *ServerError.
func (c *Client) do(ctx context.Context, method, path string, body []byte, v any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://blockrepd"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.connError(err)
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("reading reply from blockrepd at %s: %w", c.socket, err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		_ = json.Unmarshal(reply, &eb) // a reply without a message still has a code
		return &ServerError{Code: resp.StatusCode, Message: eb.Error}
	}
	if err := json.Unmarshal(reply, v); err != nil {
		return fmt.Errorf("decoding reply from blockrepd at %s: %w", c.socket, err)
	}
	return nil
}

// ServerError is an error reply from blockrepd. Under errors.Is it matches
// ErrInvalid, ErrNotFound, ErrConflict or ErrUnavailable when its Code is
// 400, 404, 409 or 503, as the server chose the code from those errors.
// (A 404 also answers a route this daemon does not know: the Message says
// which.)
type ServerError struct {
	// Code is the HTTP status code.
	Code int
	// Message is the daemon's error message; empty when the reply had none.
	Message string
}

// Error reads "blockrepd: message (HTTP 409)", or "blockrepd: unexpected
// reply 502 Bad Gateway" without a message.
func (e *ServerError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("blockrepd: unexpected reply %d %s", e.Code, http.StatusText(e.Code))
	}
	return fmt.Sprintf("blockrepd: %s (HTTP %d)", e.Message, e.Code)
}

// Unwrap returns the sentinel error that Code stands for, or nil.
func (e *ServerError) Unwrap() error {
	switch e.Code {
	case http.StatusBadRequest:
		return ErrInvalid
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusConflict:
		return ErrConflict
	case http.StatusServiceUnavailable:
		return ErrUnavailable
	}
	return nil
}

// connError explains a failure to reach the daemon.
func (c *Client) connError(err error) error {
	var opErr *net.OpError
	if !errors.As(err, &opErr) || opErr.Op != "dial" {
		return fmt.Errorf("talking to blockrepd at %s: %w", c.socket, err)
	}
	cause := opErr.Err // e.g. "connect: no such file or directory"
	hint := "is the daemon running?"
	switch {
	case errors.Is(err, os.ErrPermission):
		hint = "the control socket is only open to the daemon's user; try as root"
	case errors.Is(err, syscall.ECONNREFUSED):
		hint = "a stale socket: is the daemon running?"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		hint = "the daemon did not answer in time"
	}
	return &ConnError{Socket: c.socket, Err: cause, Hint: hint}
}

// ConnError means the control socket could not be reached.
type ConnError struct {
	Socket string
	Err    error
	Hint   string
}

// Error reads "cannot reach blockrepd at /path: connect: ... (hint)".
func (e *ConnError) Error() string {
	return fmt.Sprintf("cannot reach blockrepd at %s: %v (%s)", e.Socket, e.Err, e.Hint)
}

// Unwrap returns the cause.
func (e *ConnError) Unwrap() error { return e.Err }
