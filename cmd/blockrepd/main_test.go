package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockrep/blockrep/api"
)

// TestMain lets the test binary act as blockrepd for the end-to-end test.
func TestMain(m *testing.M) {
	if os.Getenv("BLOCKREPD_TEST_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func writeConfig(t *testing.T, dir string) string {
	t.Helper()
	conf := filepath.Join(dir, "node.toml")
	text := fmt.Sprintf(`
[node]
name = "e2e"
data_dir = %q
control_socket = %q
[nbd]
listen = ["127.0.0.1:0"]
[[volume]]
name = "vol0"
path = %q
size = "1MiB"
`, filepath.Join(dir, "data"), filepath.Join(dir, "ctl.sock"), filepath.Join(dir, "vol0.img"))
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return conf
}

func TestRunCommandLine(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("[node]\nname = \"n\"\ndata_dir = \"/d\"\n[[volume]]\nname = \"v\"\npath = \"/v\"\nsise = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := writeConfig(t, dir)
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{"version", []string{"-version"}, 0, "blockrepd ", ""},
		{"help", []string{"-h"}, 0, "", "usage: blockrepd -config PATH"},
		{"no config", nil, 2, "", "blockrepd: -config PATH (or -c PATH) is required\nusage: blockrepd"},
		{"help names -c", []string{"-h"}, 0, "", "(-c PATH is the same as -config PATH"},
		// -forget-volume: were the check gone, the run would end at once,
		// not start a daemon.
		{"-c and -config differ", []string{"-c", good, "-config", bad, "-forget-volume", "vol0"}, 2, "",
			fmt.Sprintf("blockrepd: -c %q and -config %q name different configuration files; give one\nusage: blockrepd", good, bad)},
		{"--c and --config differ", []string{"--config=" + good, "--c=" + bad, "-forget-volume", "vol0"}, 2, "",
			fmt.Sprintf("blockrepd: -c %q and -config %q name different configuration files; give one", bad, good)},
		{"-c and -config agree", []string{"-c", bad, "-config", bad}, 2, "", `blockrepd: config ` + bad + `: line 7: unknown key "volume.0.sise"`},
		{"bad config -c", []string{"-c", bad}, 2, "", `blockrepd: config ` + bad + `: line 7: unknown key "volume.0.sise"`},
		{"bad config --c", []string{"--c", bad}, 2, "", `blockrepd: config ` + bad + `: line 7: unknown key "volume.0.sise"`},
		{"bad config --config", []string{"--config", bad}, 2, "", `blockrepd: config ` + bad + `: line 7: unknown key "volume.0.sise"`},
		{"missing config file -c", []string{"-c", filepath.Join(dir, "nope.toml")}, 2, "", "nope.toml: cannot read"},
		// The good file loads under every spelling: -forget-volume then
		// looks for the meta.db in its data_dir, which is not there yet.
		{"good config -c", []string{"-c", good, "-forget-volume", "vol0"}, 1, "", filepath.Join(dir, "data", "meta.db")},
		{"good config --c", []string{"--c=" + good, "-forget-volume", "vol0"}, 1, "", filepath.Join(dir, "data", "meta.db")},
		{"good config -config", []string{"-config", good, "-forget-volume", "vol0"}, 1, "", filepath.Join(dir, "data", "meta.db")},
		{"good config --config", []string{"--config", good, "-forget-volume", "vol0"}, 1, "", filepath.Join(dir, "data", "meta.db")},
		{"unknown flag", []string{"-bogus"}, 2, "", "flag provided but not defined: -bogus"},
		{"extra argument", []string{"-config", good, "now"}, 2, "", `unexpected argument "now"`},
		{"bad log level", []string{"-config", good, "-log-level", "loud"}, 2, "", `log level "loud" is not one of debug|info|warn|error`},
		{"bad log format", []string{"-config", good, "-log-format", "xml"}, 2, "", `log format "xml"`},
		{"missing config file", []string{"-config", filepath.Join(dir, "nope.toml")}, 2, "", "nope.toml: cannot read"},
		{"bad config", []string{"-config", bad}, 2, "", `blockrepd: config ` + bad + `: line 7: unknown key "volume.0.sise"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			if code != tt.wantCode || !strings.Contains(stdout.String(), tt.wantOut) || !strings.Contains(stderr.String(), tt.wantErr) {
				t.Errorf("exit %d stdout %q stderr %q; want exit %d, %q, %q", code, stdout.String(), stderr.String(), tt.wantCode, tt.wantOut, tt.wantErr)
			}
		})
	}
}

// TestDaemonSIGTERM runs blockrepd as a process, asks it for its status and
// stops it with SIGTERM: it must exit 0 and remove its control socket.
func TestDaemonSIGTERM(t *testing.T) {
	dir := t.TempDir()
	conf := writeConfig(t, dir)
	sock := filepath.Join(dir, "ctl.sock")
	var stderr bytes.Buffer
	cmd := exec.Command(os.Args[0], "-config", conf, "-log-format", "json")
	cmd.Env = append(os.Environ(), "BLOCKREPD_TEST_MAIN=1")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()

	c := api.Dial(sock)
	defer c.Close()
	var st api.Status
	deadline := time.Now().Add(20 * time.Second)
	for {
		var err error
		st, err = c.Status(context.Background())
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon never answered: %v\n%s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st.Node != "e2e" || len(st.Volumes) != 1 || st.Volumes[0].Size != 1<<20 {
		t.Errorf("status %+v", st)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("blockrepd exited with %v\n%s", err, stderr.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatalf("blockrepd did not exit after SIGTERM\n%s", stderr.String())
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("control socket remains: %v", err)
	}
	if !strings.Contains(stderr.String(), `"msg":"shutdown complete"`) {
		t.Errorf("log lacks the shutdown message:\n%s", stderr.String())
	}
}

func TestServeProfiler(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "198.18.0.1:6060", "nonsense"} {
		if _, stop, err := serveProfiler(addr); err == nil {
			stop()
			t.Errorf("serveProfiler(%q) accepted a non-loopback address", addr)
		}
	}
	addr, stop, err := serveProfiler("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile") {
		t.Fatalf("pprof answered %d: %.200s", resp.StatusCode, body)
	}
}
