package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockrep/blockrep/api"
)

func TestSocketPath(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "n.toml")
	if err := os.WriteFile(conf, []byte(`
[node]
name = "n"
data_dir = "/var/lib/blockrep/n"
[[volume]]
name = "v"
path = "/v.img"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == EnvSocket {
				return v
			}
			return ""
		}
	}
	tests := []struct {
		name      string
		s, c      string
		env       string
		want      string
		wantErr   string
		wantUsage bool
	}{
		{name: "default", want: DefaultSocket},
		{name: "env", env: "/tmp/x.sock", want: "/tmp/x.sock"},
		{name: "flag beats env", s: "/a.sock", env: "/tmp/x.sock", want: "/a.sock"},
		{name: "config", c: conf, env: "/tmp/x.sock", want: "/var/lib/blockrep/n/control.sock"},
		{name: "both", s: "/a.sock", c: conf, wantErr: "-s and -c both", wantUsage: true},
		{name: "bad config", c: filepath.Join(dir, "missing.toml"), wantErr: "missing.toml: cannot read"},
	}
	for _, tt := range tests {
		got, err := socketPath(tt.s, tt.c, env(tt.env))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || errors.As(err, new(*usageError)) != tt.wantUsage {
				t.Errorf("%s: err %v, want %q (usage %v)", tt.name, err, tt.wantErr, tt.wantUsage)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s: socketPath = %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
}

// fakeBackend answers status with st and records each command it is
// given, answering it with cmdErr.
type fakeBackend struct {
	st     api.Status
	cmdErr error

	mu    sync.Mutex
	calls []string
}

func (f *fakeBackend) Status(context.Context) (api.Status, error) { return f.st, nil }

func (f *fakeBackend) record(format string, args ...any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
	return f.cmdErr
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

// serve runs the control API for b on a unix socket in a temporary
// directory and returns the socket path.
func serve(t *testing.T, b api.Backend) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	l, err := api.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := api.NewServer(b, slog.New(slog.DiscardHandler))
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestRun(t *testing.T) {
	st := api.Status{Node: "node1", NodeID: "id", Version: "v", Started: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		Volumes: []api.VolumeStatus{{Name: "vol0", Size: 1 << 30, TLS: "optional", Path: "/v.img"}}}
	sock := serve(t, &fakeBackend{st: st})
	missing := filepath.Join(t.TempDir(), "none.sock")

	tests := []struct {
		name       string
		args       []string
		env        func(string) string
		wantCode   int
		wantOut    string // substring of stdout
		wantErr    string // substring of stderr
		wantUsage  bool   // stderr shows the usage
		jsonStatus bool
	}{
		{name: "table", args: []string{"-s", sock, "status"}, wantCode: 0, wantOut: "vol0  1GiB  no  optional  0        /v.img"},
		{name: "table explicit", args: []string{"-s", sock, "status", "-o", "table"}, wantCode: 0, wantOut: "no clients connected"},
		{name: "json", args: []string{"-s", sock, "status", "-o", "json"}, wantCode: 0, jsonStatus: true},
		{name: "env socket", args: []string{"status"}, env: func(k string) string { return map[string]string{EnvSocket: sock}[k] }, wantCode: 0, wantOut: "node node1"},
		{name: "missing socket", args: []string{"-s", missing, "status"}, wantCode: 1,
			wantErr: "blockctl: cannot reach blockrepd at " + missing + ": connect: no such file or directory (is the daemon running?)"},
		{name: "no command", args: nil, wantCode: 2, wantErr: "no command given", wantUsage: true},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 2, wantErr: `unknown command "frobnicate"`, wantUsage: true},
		{name: "unknown flag", args: []string{"-x", "status"}, wantCode: 2, wantErr: "flag provided but not defined: -x", wantUsage: true},
		{name: "unknown status flag", args: []string{"status", "-v"}, wantCode: 2, wantErr: "flag provided but not defined: -v", wantUsage: true},
		{name: "bad output", args: []string{"status", "-o", "yaml"}, wantCode: 2, wantErr: `output format "yaml"`, wantUsage: true},
		{name: "extra argument", args: []string{"status", "vol0"}, wantCode: 2, wantErr: `unexpected argument "vol0"`, wantUsage: true},
		{name: "json flag after argument", args: []string{"-s", sock, "status", "vol0", "-o", "json"}, wantCode: 2, wantErr: `status: unexpected argument "vol0"`, wantUsage: true},
		{name: "help", args: []string{"-h"}, wantCode: 0, wantUsage: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := tt.env
			if env == nil {
				env = noEnv
			}
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr, env)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr %s", code, tt.wantCode, stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.wantOut) {
				t.Errorf("stdout %q does not contain %q", stdout.String(), tt.wantOut)
			}
			if !strings.Contains(stderr.String(), tt.wantErr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tt.wantErr)
			}
			if got := strings.Contains(stderr.String(), "usage: blockctl"); got != tt.wantUsage {
				t.Errorf("usage shown: %v, want %v", got, tt.wantUsage)
			}
			if tt.jsonStatus {
				var got api.Status
				if err := json.Unmarshal(stdout.Bytes(), &got); err != nil || got.Node != "node1" || got.Volumes[0].Clients == nil {
					t.Errorf("json output %s: %v", stdout.String(), err)
				}
			}
		})
	}
}

func TestControl(t *testing.T) {
	conflict := fmt.Errorf("peer node2 is primary: %w", api.ErrConflict)
	tests := []struct {
		name      string
		args      []string
		cmdErr    error
		wantCode  int
		wantOut   string // all of stdout
		wantErr   string // substring of stderr
		wantUsage bool   // stderr shows the usage
		wantCall  string // the command the daemon got; "" for none
	}{
		{name: "connect defaults", args: []string{"connect"},
			wantOut: "connect the only volume to every peer: requested\n", wantCall: `Connect("", "", false)`},
		{name: "connect peer", args: []string{"connect", "vol0", "node2"},
			wantOut: "connect vol0 to node2: requested\n", wantCall: `Connect("vol0", "node2", false)`},
		{name: "flag after arguments", args: []string{"connect", "vol0", "node2", "--discard-my-data"},
			wantOut: "connect vol0 to node2, discarding this node's data on a split brain: requested\n", wantCall: `Connect("vol0", "node2", true)`},
		{name: "flag before arguments", args: []string{"connect", "--discard-my-data", "vol0", "node2"},
			wantOut: "connect vol0 to node2, discarding this node's data on a split brain: requested\n", wantCall: `Connect("vol0", "node2", true)`},
		{name: "flag between arguments", args: []string{"connect", "vol0", "-discard-my-data", "node2"},
			wantOut: "connect vol0 to node2, discarding this node's data on a split brain: requested\n", wantCall: `Connect("vol0", "node2", true)`},
		{name: "double dash", args: []string{"connect", "--", "-odd", "node2"},
			wantOut: "connect -odd to node2: requested\n", wantCall: `Connect("-odd", "node2", false)`},
		{name: "disconnect", args: []string{"disconnect", "vol0", "node3"},
			wantOut: "disconnect vol0 from node3: requested\n", wantCall: `Disconnect("vol0", "node3")`},
		{name: "disconnect every peer", args: []string{"disconnect", "vol0"},
			wantOut: "disconnect vol0 from every peer: requested\n", wantCall: `Disconnect("vol0", "")`},
		{name: "resync bitmap", args: []string{"resync", "vol0", "node2"},
			wantOut: "resync vol0 with node2 (bitmap): requested\n", wantCall: `Resync("vol0", "node2", "bitmap")`},
		{name: "resync checksum", args: []string{"resync", "vol0", "--checksum"},
			wantOut: "resync vol0 with every peer (checksum): requested\n", wantCall: `Resync("vol0", "", "checksum")`},
		{name: "resync full", args: []string{"resync", "--full"},
			wantOut: "resync the only volume with every peer (full): requested\n", wantCall: `Resync("", "", "full")`},
		{name: "verify", args: []string{"verify", "vol0", "node2"},
			wantOut: "verify vol0 against node2: requested\n", wantCall: `Verify("vol0", "node2")`},
		{name: "invalidate", args: []string{"invalidate", "vol0"},
			wantOut: "invalidate vol0: requested\n", wantCall: `Invalidate("vol0")`},
		{name: "primary forced", args: []string{"primary", "vol0", "--force"},
			wantOut: "make vol0 primary (forced): requested\n", wantCall: `SetRole("vol0", "primary", true)`},
		{name: "primary", args: []string{"primary"},
			wantOut: "make the only volume primary: requested\n", wantCall: `SetRole("", "primary", false)`},
		{name: "secondary", args: []string{"secondary", "vol0"},
			wantOut: "make vol0 secondary: requested\n", wantCall: `SetRole("vol0", "secondary", false)`},

		{name: "daemon refuses", args: []string{"primary", "vol0"}, cmdErr: conflict, wantCode: 1,
			wantErr:  "blockctl: blockrepd: set role: peer node2 is primary: not possible in the current state (HTTP 409)\n",
			wantCall: `SetRole("vol0", "primary", false)`},
		{name: "unknown volume", args: []string{"verify", "vol9"}, cmdErr: fmt.Errorf("volume %q: %w", "vol9", api.ErrNotFound), wantCode: 1,
			wantErr: `blockctl: blockrepd: verify: volume "vol9": not found (HTTP 404)`, wantCall: `Verify("vol9", "")`},

		{name: "too many arguments", args: []string{"connect", "vol0", "node2", "node3"}, wantCode: 2,
			wantErr: `connect: unexpected argument "node3"`, wantUsage: true},
		{name: "invalidate takes no peer", args: []string{"invalidate", "vol0", "node2"}, wantCode: 2,
			wantErr: `invalidate: unexpected argument "node2"`, wantUsage: true},
		{name: "secondary takes no peer", args: []string{"secondary", "vol0", "--", "node2"}, wantCode: 2,
			wantErr: `secondary: unexpected argument "node2"`, wantUsage: true},
		{name: "unknown flag", args: []string{"disconnect", "vol0", "--discard-my-data"}, wantCode: 2,
			wantErr: "disconnect: flag provided but not defined: -discard-my-data", wantUsage: true},
		{name: "force is only for primary", args: []string{"secondary", "--force"}, wantCode: 2,
			wantErr: "secondary: flag provided but not defined: -force", wantUsage: true},
		{name: "checksum and full", args: []string{"resync", "--checksum", "vol0", "--full"}, wantCode: 2,
			wantErr: "resync: --checksum and --full exclude each other", wantUsage: true},
		{name: "help", args: []string{"resync", "-h"}, wantCode: 0, wantUsage: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &fakeBackend{cmdErr: tt.cmdErr}
			checkRun(t, b, b, tt.args, tt.wantCode, tt.wantOut, tt.wantErr, tt.wantUsage, tt.wantCall)
		})
	}
}

// noEnv is an environment with nothing set.
func noEnv(string) string { return "" }

// checkRun runs blockctl with args against b, served on a fresh socket,
// and checks the exit code, stdout, that stderr holds wantErr, whether it
// shows the usage, and the command fb (b or the fake under it) got; ""
// for none.
func checkRun(t *testing.T, b api.Backend, fb *fakeBackend, args []string, wantCode int, wantOut, wantErr string, wantUsage bool, wantCall string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(append([]string{"-s", serve(t, b)}, args...), &stdout, &stderr, noEnv)
	if code != wantCode {
		t.Errorf("exit %d, want %d; stderr %s", code, wantCode, stderr.String())
	}
	if stdout.String() != wantOut {
		t.Errorf("stdout %q, want %q", stdout.String(), wantOut)
	}
	if !strings.Contains(stderr.String(), wantErr) {
		t.Errorf("stderr %q does not contain %q", stderr.String(), wantErr)
	}
	if got := strings.Contains(stderr.String(), "usage: blockctl"); got != wantUsage {
		t.Errorf("usage shown: %v, want %v", got, wantUsage)
	}
	var want []string
	if wantCall != "" {
		want = []string{wantCall}
	}
	fb.mu.Lock()
	defer fb.mu.Unlock()
	if !slices.Equal(fb.calls, want) {
		t.Errorf("calls %q, want %q", fb.calls, want)
	}
}

func TestParseInterspersed(t *testing.T) {
	tests := []struct {
		args    []string
		wantPos []string
		wantF   bool
		wantO   string
		wantErr string
	}{
		{args: nil, wantPos: nil, wantO: "table"},
		{args: []string{"a", "b"}, wantPos: []string{"a", "b"}, wantO: "table"},
		{args: []string{"-f", "a"}, wantPos: []string{"a"}, wantF: true, wantO: "table"},
		{args: []string{"a", "-f", "b", "-o", "json"}, wantPos: []string{"a", "b"}, wantF: true, wantO: "json"},
		{args: []string{"a", "--", "-f", "-o"}, wantPos: []string{"a", "-f", "-o"}, wantO: "table"},
		{args: []string{"a", "-", "b"}, wantPos: []string{"a", "-", "b"}, wantO: "table"},
		{args: []string{"a", "-o"}, wantErr: "flag needs an argument: -o"},
		{args: []string{"a", "-x"}, wantErr: "flag provided but not defined: -x"},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		f := fs.Bool("f", false, "")
		o := fs.String("o", "table", "")
		pos, err := parseInterspersed(fs, tt.args)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("%q: err %v, want %q", tt.args, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(pos, tt.wantPos) || *f != tt.wantF || *o != tt.wantO {
			t.Errorf("%q: pos %q, -f %v, -o %q, err %v; want %q, %v, %q", tt.args, pos, *f, *o, err, tt.wantPos, tt.wantF, tt.wantO)
		}
	}
}
