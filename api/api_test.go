package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/blockrep/blockrep/nbd"
)

type fakeSource struct {
	st  Status
	err error
}

func (f fakeSource) Status(ctx context.Context) (Status, error) { return f.st, f.err }

// serve runs the control API for src on a unix socket in a temporary
// directory and returns the socket path.
func serve(t *testing.T, src StatusSource) string {
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
		},
	}
	c := Dial(serve(t, fakeSource{st: want}))
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
	path := serve(t, fakeSource{st: Status{Node: "n", Volumes: []VolumeStatus{{Name: "v"}}}})
	body, code := rawGet(t, path, http.MethodGet, "/v1/status")
	if code != http.StatusOK || !strings.Contains(body, `"clients": []`) {
		t.Errorf("code %d body %s", code, body)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name     string
		src      fakeSource
		method   string
		path     string
		wantCode int
		wantErr  string
	}{
		{"unknown route", fakeSource{}, http.MethodGet, "/v1/nope", 404, "no such route: GET /v1/nope"},
		{"root", fakeSource{}, http.MethodGet, "/", 404, "no such route: GET /"},
		{"wrong method", fakeSource{}, http.MethodPost, "/v1/status", 405, "method POST not allowed on /v1/status (use GET)"},
		{"source fails", fakeSource{err: errors.New("meta is closed")}, http.MethodGet, "/v1/status", 500, "status: meta is closed"},
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
	c := Dial(serve(t, fakeSource{err: errors.New("boom")}))
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
	path := serve(t, fakeSource{})
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
