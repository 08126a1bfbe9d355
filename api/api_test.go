package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockrep/blockrep/nbd"
	"github.com/blockrep/blockrep/replica"
)

// fakeBackend answers status with st and err, and records each command it
// is given, answering it with cmdErr.
type fakeBackend struct {
	st     Status
	err    error
	cmdErr error

	mu    sync.Mutex
	calls []string
}

func (f *fakeBackend) Status(ctx context.Context) (Status, error) { return f.st, f.err }

func (f *fakeBackend) record(format string, args ...any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
	return f.cmdErr
}

// Calls returns the commands given so far and forgets them.
func (f *fakeBackend) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func (f *fakeBackend) Connect(ctx context.Context, volume, peer string, discardMyData bool) error {
	return f.record("Connect(%q, %q, %v)", volume, peer, discardMyData)
}

func (f *fakeBackend) Disconnect(ctx context.Context, volume, peer string) error {
	return f.record("Disconnect(%q, %q)", volume, peer)
}

func (f *fakeBackend) Resync(ctx context.Context, volume, peer, mode string) error {
	return f.record("Resync(%q, %q, %q)", volume, peer, mode)
}

func (f *fakeBackend) Verify(ctx context.Context, volume, peer string) error {
	return f.record("Verify(%q, %q)", volume, peer)
}

func (f *fakeBackend) Invalidate(ctx context.Context, volume string) error {
	return f.record("Invalidate(%q)", volume)
}

func (f *fakeBackend) SetRole(ctx context.Context, volume, role string, force bool) error {
	return f.record("SetRole(%q, %q, %v)", volume, role, force)
}

// serve runs the control API for src on a unix socket in a temporary
// directory and returns the socket path.
func serve(t *testing.T, src Backend) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ctl.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(src, slog.New(slog.DiscardHandler))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return path
}

func TestStatusRoundTrip(t *testing.T) {
	since := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	want := Status{
		Node: "node1", NodeID: "5b0c6a3e-8f53-4d43-9a43-3f7b1c3c2b11", Version: "test",
		Started: since, UptimeSeconds: 90.5,
		Volumes: []VolumeStatus{
			{Name: "vol0", UUID: "u0", Path: "/srv/vol0.img", Size: 1 << 30, TLS: "optional",
				Clients: []nbd.ClientInfo{{ID: 7, Remote: "127.0.0.1:5555", Export: "vol0", TLS: true, Since: since, Reads: 3, BytesRead: 12288}}},
			{Name: "vol1", UUID: "u1", Path: "/dev/sdb", Size: 4096, ReadOnly: true, BlockDevice: true, TLS: "required", Clients: []nbd.ClientInfo{}},
			{Name: "vol2", UUID: "u2", Path: "/srv/vol2.img", Size: 1 << 20, TLS: "optional", Clients: []nbd.ClientInfo{},
				Replication: &replica.Status{Role: "primary", Disk: "UpToDate", Epoch: 3, Generation: "5f3a9c", Protocol: "C", ContinueAlone: true,
					Peers: []replica.PeerStatus{{
						Name: "node2", Address: "10.0.0.2:7789", Connection: replica.SyncSource, Role: "secondary", Disk: "Inconsistent",
						Replicating: true, OutOfSyncBytes: 4096, Since: since, BytesSent: 8192, ResyncBytesSent: 4096,
						Resync:   &replica.Progress{Kind: "bitmap", Started: since, TotalBytes: 8192, DoneBytes: 4096, BytesPerSecond: 1024, ETASeconds: 4},
						Verify:   &replica.Progress{Kind: "verify", Started: since, Finished: since.Add(time.Minute), TotalBytes: 1 << 20, DoneBytes: 1 << 20, OutOfSyncBytes: 4096},
						Decision: "bitmap resync from here", LastError: "peer reset",
					}}}},
		},
	}
	c := Dial(serve(t, &fakeBackend{st: want}))
	defer c.Close()
	got, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if got.Uptime() != 90500*time.Millisecond {
		t.Errorf("Uptime() = %v", got.Uptime())
	}
}

func TestNilClientsAreEmptyArrays(t *testing.T) {
	path := serve(t, &fakeBackend{st: Status{Node: "n", Volumes: []VolumeStatus{{Name: "v"}}}})
	body, code := rawGet(t, path, http.MethodGet, "/v1/status")
	if code != http.StatusOK || !strings.Contains(body, `"clients": []`) {
		t.Errorf("code %d body %s", code, body)
	}
	if strings.Contains(body, `"replication"`) {
		t.Errorf("a standalone volume shows replication: %s", body)
	}
}

func TestNilPeersAreEmptyArrays(t *testing.T) {
	rs := &replica.Status{Role: "secondary"}
	path := serve(t, &fakeBackend{st: Status{Node: "n", Volumes: []VolumeStatus{{Name: "v", Replication: rs}}}})
	body, code := rawGet(t, path, http.MethodGet, "/v1/status")
	if code != http.StatusOK || !strings.Contains(body, `"peers": []`) {
		t.Errorf("code %d body %s", code, body)
	}
	if rs.Peers != nil {
		t.Errorf("the handler wrote through the source's status")
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name     string
		src      *fakeBackend
		method   string
		path     string
		wantCode int
		wantErr  string
	}{
		{"unknown route", &fakeBackend{}, http.MethodGet, "/v1/nope", 404, "no such route: GET /v1/nope"},
		{"root", &fakeBackend{}, http.MethodGet, "/", 404, "no such route: GET /"},
		{"wrong method", &fakeBackend{}, http.MethodPost, "/v1/status", 405, "method POST not allowed on /v1/status (use GET)"},
		{"source fails", &fakeBackend{err: errors.New("meta is closed")}, http.MethodGet, "/v1/status", 500, "status: meta is closed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := serve(t, tt.src)
			body, code := rawGet(t, path, tt.method, tt.path)
			if code != tt.wantCode {
				t.Errorf("code %d, want %d", code, tt.wantCode)
			}
			var eb errorBody
			if err := json.Unmarshal([]byte(body), &eb); err != nil || eb.Error != tt.wantErr {
				t.Errorf("body %q, want error %q", body, tt.wantErr)
			}
		})
	}
}

func TestClientReportsServerError(t *testing.T) {
	c := Dial(serve(t, &fakeBackend{err: errors.New("boom")}))
	defer c.Close()
	_, err := c.Status(context.Background())
	if err == nil || err.Error() != "blockrepd: status: boom (HTTP 500)" {
		t.Errorf("Status: %v", err)
	}
}

func TestClientMissingSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.sock")
	_, err := Dial(path).Status(context.Background())
	want := "cannot reach blockrepd at " + path + ": connect: no such file or directory (is the daemon running?)"
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
	var ce *ConnError
	if !errors.As(err, &ce) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("error %#v is not a *ConnError wrapping ErrNotExist", err)
	}
}

func TestListenSocketModeAndExclusive(t *testing.T) {
	path := serve(t, &fakeBackend{})
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "another process is listening") {
		t.Errorf("second Listen: %v", err)
	}
}

// rawGet sends one request over the socket and returns the body and code.
func rawGet(t *testing.T, socket, method, path string) (string, int) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(method, "http://blockrepd"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if resp.StatusCode == http.StatusMethodNotAllowed && resp.Header.Get("Allow") != "GET" {
		t.Errorf("405 without Allow: GET")
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), resp.StatusCode
}

func TestCommands(t *testing.T) {
	notFound := fmt.Errorf("volume %q: %w", "vol9", ErrNotFound)
	tests := []struct {
		name     string
		method   string
		path     string
		body     string
		cmdErr   error
		wantCode int
		wantErr  string // the error message; "" for a success
		wantCall string // the command the backend got; "" for none
	}{
		{name: "connect", path: "/v1/volumes/vol0/connect", body: `{"peer": "node2", "discard_my_data": true}`,
			wantCode: 200, wantCall: `Connect("vol0", "node2", true)`},
		{name: "connect only volume, every peer", path: "/v1/volumes/_/connect", body: `{}`,
			wantCode: 200, wantCall: `Connect("", "", false)`},
		{name: "empty body is {}", path: "/v1/volumes/vol0/connect",
			wantCode: 200, wantCall: `Connect("vol0", "", false)`},
		{name: "escaped volume", path: "/v1/volumes/vol%2E0/connect",
			wantCode: 200, wantCall: `Connect("vol.0", "", false)`},
		{name: "disconnect", path: "/v1/volumes/vol0/disconnect", body: `{"peer": "node3"}`,
			wantCode: 200, wantCall: `Disconnect("vol0", "node3")`},
		{name: "resync default mode", path: "/v1/volumes/vol0/resync", body: `{"peer": "node2"}`,
			wantCode: 200, wantCall: `Resync("vol0", "node2", "bitmap")`},
		{name: "resync checksum", path: "/v1/volumes/_/resync", body: `{"mode": "checksum"}`,
			wantCode: 200, wantCall: `Resync("", "", "checksum")`},
		{name: "resync full", path: "/v1/volumes/vol0/resync", body: `{"peer": "node2", "mode": "full"}`,
			wantCode: 200, wantCall: `Resync("vol0", "node2", "full")`},
		{name: "resync bad mode", path: "/v1/volumes/vol0/resync", body: `{"mode": "fast"}`,
			wantCode: 400, wantErr: `resync: mode "fast" is not one of bitmap, checksum, full`},
		{name: "verify", path: "/v1/volumes/vol0/verify", body: `{"peer": "node2"}`,
			wantCode: 200, wantCall: `Verify("vol0", "node2")`},
		{name: "invalidate", path: "/v1/volumes/_/invalidate", body: `{}`,
			wantCode: 200, wantCall: `Invalidate("")`},
		{name: "invalidate takes no peer", path: "/v1/volumes/vol0/invalidate", body: `{"peer": "node2"}`,
			wantCode: 400, wantErr: `invalidate: request body: unknown field "peer" (this command takes none)`},
		{name: "primary", path: "/v1/volumes/vol0/role", body: `{"role": "primary", "force": true}`,
			wantCode: 200, wantCall: `SetRole("vol0", "primary", true)`},
		{name: "secondary", path: "/v1/volumes/_/role", body: `{"role": "secondary"}`,
			wantCode: 200, wantCall: `SetRole("", "secondary", false)`},
		{name: "bad role", path: "/v1/volumes/vol0/role", body: `{"role": "master"}`,
			wantCode: 400, wantErr: `set role: role "master" is not one of primary, secondary`},
		{name: "missing role", path: "/v1/volumes/vol0/role", body: `{"force": true}`,
			wantCode: 400, wantErr: `set role: role is required: one of primary, secondary`},

		{name: "unknown field", path: "/v1/volumes/vol0/connect", body: `{"peers": "node2"}`,
			wantCode: 400, wantErr: `connect: request body: unknown field "peers" (known: peer, discard_my_data)`},
		{name: "wrong type", path: "/v1/volumes/vol0/connect", body: `{"discard_my_data": "yes"}`,
			wantCode: 400, wantErr: `connect: request body: field "discard_my_data" is a JSON string, want a bool`},
		{name: "not an object", path: "/v1/volumes/vol0/verify", body: `["node2"]`,
			wantCode: 400, wantErr: `verify: request body is a JSON array, want an object`},
		{name: "not JSON", path: "/v1/volumes/vol0/verify", body: `peer=node2`,
			wantCode: 400, wantErr: `verify: request body is not valid JSON: invalid character 'p' looking for beginning of value`},
		{name: "truncated", path: "/v1/volumes/vol0/verify", body: `{"peer": "no`,
			wantCode: 400, wantErr: `verify: request body is not valid JSON: unexpected EOF`},
		{name: "two values", path: "/v1/volumes/vol0/verify", body: `{} {}`,
			wantCode: 400, wantErr: `verify: request body holds more than one JSON value`},
		{name: "too big", path: "/v1/volumes/vol0/verify", body: `{"peer": "` + strings.Repeat("x", 64<<10) + `"}`,
			wantCode: 413, wantErr: `verify: request body is over 64 KiB`},
		{name: "too big after the value", path: "/v1/volumes/vol0/verify", body: `{}` + strings.Repeat(" ", 64<<10),
			wantCode: 413, wantErr: `verify: request body is over 64 KiB`},

		{name: "not found", path: "/v1/volumes/vol9/connect", cmdErr: notFound,
			wantCode: 404, wantErr: `connect: volume "vol9": not found`, wantCall: `Connect("vol9", "", false)`},
		{name: "unknown peer", path: "/v1/volumes/vol0/disconnect", body: `{"peer": "node7"}`, cmdErr: replica.ErrUnknownPeer,
			wantCode: 404, wantErr: `disconnect: replica: no such peer`, wantCall: `Disconnect("vol0", "node7")`},
		{name: "conflict", path: "/v1/volumes/vol0/role", body: `{"role": "primary"}`, cmdErr: fmt.Errorf("peer node2 is primary: %w", ErrConflict),
			wantCode: 409, wantErr: `set role: peer node2 is primary: not possible in the current state`, wantCall: `SetRole("vol0", "primary", false)`},
		{name: "replica state", path: "/v1/volumes/vol0/verify", cmdErr: fmt.Errorf("link is Connecting: %w", replica.ErrState),
			wantCode: 409, wantErr: `verify: link is Connecting: replica: not possible in the current state`, wantCall: `Verify("vol0", "")`},
		{name: "invalid", path: "/v1/volumes/_/invalidate", cmdErr: fmt.Errorf("volume %q: %w", "", fmt.Errorf("3 volumes: name one: %w", ErrInvalid)),
			wantCode: 400, wantErr: `invalidate: volume "": 3 volumes: name one: invalid argument`, wantCall: `Invalidate("")`},
		{name: "failure", path: "/v1/volumes/vol0/invalidate", cmdErr: errors.New("writing metadata: disk full"),
			wantCode: 500, wantErr: `invalidate: writing metadata: disk full`, wantCall: `Invalidate("vol0")`},

		{name: "wrong method", method: http.MethodGet, path: "/v1/volumes/vol0/connect",
			wantCode: 405, wantErr: `method GET not allowed on /v1/volumes/vol0/connect (use POST)`},
		{name: "unknown verb", path: "/v1/volumes/vol0/frobnicate",
			wantCode: 404, wantErr: `no such route: POST /v1/volumes/vol0/frobnicate`},
		{name: "no volume", path: "/v1/volumes/connect",
			wantCode: 404, wantErr: `no such route: POST /v1/volumes/connect`},
		{name: "two segments", path: "/v1/volumes/a/b/connect",
			wantCode: 404, wantErr: `no such route: POST /v1/volumes/a/b/connect`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &fakeBackend{cmdErr: tt.cmdErr}
			m := tt.method
			if m == "" {
				m = http.MethodPost
			}
			req := httptest.NewRequest(m, "http://blockrepd"+tt.path, strings.NewReader(tt.body))
			rec := httptest.NewRecorder()
			NewHandler(b).ServeHTTP(rec, req)

			if rec.Code != tt.wantCode {
				t.Errorf("code %d, want %d; body %s", rec.Code, tt.wantCode, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if rec.Code == http.StatusMethodNotAllowed && rec.Header().Get("Allow") != http.MethodPost {
				t.Errorf("405 with Allow %q, want POST", rec.Header().Get("Allow"))
			}
			if tt.wantErr == "" {
				if got := strings.TrimSpace(rec.Body.String()); got != "{}" {
					t.Errorf("body %q, want {}", got)
				}
			} else {
				var eb errorBody
				if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error != tt.wantErr {
					t.Errorf("body %s\nwant error %q", rec.Body, tt.wantErr)
				}
			}
			var want []string
			if tt.wantCall != "" {
				want = []string{tt.wantCall}
			}
			if got := b.Calls(); !reflect.DeepEqual(got, want) {
				t.Errorf("calls %q, want %q", got, want)
			}
		})
	}
}

func TestClientCommands(t *testing.T) {
	b := &fakeBackend{}
	c := Dial(serve(t, b))
	defer c.Close()
	ctx := context.Background()
	tests := []struct {
		name     string
		do       func() error
		wantCall string
	}{
		{"connect", func() error { return c.Connect(ctx, "vol0", "node2", true) }, `Connect("vol0", "node2", true)`},
		{"connect only volume", func() error { return c.Connect(ctx, "", "", false) }, `Connect("", "", false)`},
		{"escaped volume", func() error { return c.Connect(ctx, "a b/c", "", false) }, `Connect("a b/c", "", false)`},
		{"disconnect", func() error { return c.Disconnect(ctx, "vol0", "node3") }, `Disconnect("vol0", "node3")`},
		{"resync default", func() error { return c.Resync(ctx, "vol0", "node2", "") }, `Resync("vol0", "node2", "bitmap")`},
		{"resync full", func() error { return c.Resync(ctx, "", "", "full") }, `Resync("", "", "full")`},
		{"verify", func() error { return c.Verify(ctx, "vol0", "") }, `Verify("vol0", "")`},
		{"invalidate", func() error { return c.Invalidate(ctx, "vol0") }, `Invalidate("vol0")`},
		{"primary", func() error { return c.SetRole(ctx, "", "primary", true) }, `SetRole("", "primary", true)`},
		{"secondary", func() error { return c.SetRole(ctx, "vol0", "secondary", false) }, `SetRole("vol0", "secondary", false)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.do(); err != nil {
				t.Fatal(err)
			}
			if got := b.Calls(); len(got) != 1 || got[0] != tt.wantCall {
				t.Errorf("calls %q, want %q", got, tt.wantCall)
			}
		})
	}
}

func TestClientCommandErrors(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		cmdErr  error
		do      func(c *Client) error
		wantErr string
		wantIs  error // nil: matches none of the sentinels
	}{
		{"not found", fmt.Errorf("volume %q: %w", "vol9", ErrNotFound),
			func(c *Client) error { return c.Connect(ctx, "vol9", "", false) },
			`blockrepd: connect: volume "vol9": not found (HTTP 404)`, ErrNotFound},
		{"unknown peer", replica.ErrUnknownPeer,
			func(c *Client) error { return c.Verify(ctx, "vol0", "node7") },
			`blockrepd: verify: replica: no such peer (HTTP 404)`, ErrNotFound},
		{"conflict", fmt.Errorf("peer node2 is primary: %w", ErrConflict),
			func(c *Client) error { return c.SetRole(ctx, "vol0", "primary", false) },
			`blockrepd: set role: peer node2 is primary: not possible in the current state (HTTP 409)`, ErrConflict},
		{"bad mode", nil,
			func(c *Client) error { return c.Resync(ctx, "vol0", "", "fast") },
			`blockrepd: resync: mode "fast" is not one of bitmap, checksum, full (HTTP 400)`, ErrInvalid},
		{"bad role", nil,
			func(c *Client) error { return c.SetRole(ctx, "vol0", "leader", false) },
			`blockrepd: set role: role "leader" is not one of primary, secondary (HTTP 400)`, ErrInvalid},
		{"unavailable", Unavailable(errors.New("no quorum: cluster state on node1 may be stale (no leader known)")),
			func(c *Client) error { return c.Invalidate(ctx, "vol0") },
			`blockrepd: invalidate: no quorum: cluster state on node1 may be stale (no leader known) (HTTP 503)`, ErrUnavailable},
		{"failure", errors.New("disk full"),
			func(c *Client) error { return c.Invalidate(ctx, "vol0") },
			`blockrepd: invalidate: disk full (HTTP 500)`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Dial(serve(t, &fakeBackend{cmdErr: tt.cmdErr}))
			defer c.Close()
			err := tt.do(c)
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("got  %v\nwant %s", err, tt.wantErr)
			}
			for _, sentinel := range []error{ErrNotFound, ErrConflict, ErrInvalid, ErrUnavailable} {
				if got, want := errors.Is(err, sentinel), sentinel == tt.wantIs; got != want {
					t.Errorf("errors.Is(err, %v) = %v, want %v", sentinel, got, want)
				}
			}
			var se *ServerError
			if !errors.As(err, &se) || se.Message == "" {
				t.Errorf("error %#v is not a *ServerError with a message", err)
			}
		})
	}
}

func TestServerErrorWithoutMessage(t *testing.T) {
	err := &ServerError{Code: http.StatusBadGateway}
	if got, want := err.Error(), "blockrepd: unexpected reply 502 Bad Gateway"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict) || errors.Is(err, ErrInvalid) {
		t.Errorf("a 502 matches a sentinel")
	}
}
