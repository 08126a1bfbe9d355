package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
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

type fakeSource struct{ st api.Status }

func (f fakeSource) Status(context.Context) (api.Status, error) { return f.st, nil }

func TestRun(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	l, err := api.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	st := api.Status{Node: "node1", NodeID: "id", Version: "v", Started: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		Volumes: []api.VolumeStatus{{Name: "vol0", Size: 1 << 30, TLS: "optional", Path: "/v.img"}}}
	srv := api.NewServer(fakeSource{st}, slog.New(slog.DiscardHandler))
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	missing := filepath.Join(t.TempDir(), "none.sock")
	noEnv := func(string) string { return "" }

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
