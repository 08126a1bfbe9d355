package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
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

// get performs GET path and decodes the JSON response into v.
func (c *Client) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://blockrepd"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.connError(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("reading reply from blockrepd at %s: %w", c.socket, err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		if json.Unmarshal(body, &eb) == nil && eb.Error != "" {
			return fmt.Errorf("blockrepd: %s (HTTP %d)", eb.Error, resp.StatusCode)
		}
		return fmt.Errorf("blockrepd: unexpected reply %s", resp.Status)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decoding reply from blockrepd at %s: %w", c.socket, err)
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
