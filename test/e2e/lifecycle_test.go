package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runDaemonExpectFailure runs blockrepd on config and requires it to exit
// with status want within 20 s; it returns its output. When ctlSocket is
// set and the daemon starts answering there instead, the test fails at once
// and the daemon is stopped.
func runDaemonExpectFailure(t *testing.T, config, ctlSocket string, want int) string {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(blockrepdBin, "-config", config)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case err := <-done:
			if code := exitCode(err); code != want {
				t.Errorf("blockrepd -config %s: %v, want exit status %d\n%s", config, err, want, out.String())
			} else {
				t.Logf("blockrepd refused to start as expected:\n%s", out.String())
			}
			return out.String()
		case <-deadline:
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("blockrepd -config %s still running after 20s; want it to refuse to start\n%s", config, out.String())
		case <-time.After(100 * time.Millisecond):
		}
		if ctlSocket == "" {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := exec.CommandContext(ctx, blockctlBin, "-s", ctlSocket, "status").Run()
		cancel()
		if err == nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(stopTimeout):
				_ = cmd.Process.Kill()
				<-done
			}
			t.Errorf("blockrepd -config %s started and serves; want it to refuse to start\n%s", config, out.String())
			return out.String()
		}
	}
}

// checkAlive fails the test unless d still answers on its control socket
// and serves vol0.
func checkAlive(t *testing.T, d *daemon) {
	t.Helper()
	if n := len(status(t, d).Volumes); n == 0 {
		t.Errorf("the first daemon shows no volumes")
	}
	checkInt(t, "export-size of the first daemon's vol0", nbdinfo(t, d.URI("vol0")).Size, 16*MiB)
}

// TestSecondDaemonRefused starts a second blockrepd that would share the
// first one's data directory, control socket or volume file: each must be
// refused with a clear error, without disturbing the first daemon.
func TestSecondDaemonRefused(t *testing.T) {
	tool(t, "nbdinfo")
	d := startDaemon(t, daemonSpec{Volumes: []volumeSpec{{Name: "vol0", Size: 16 * MiB}}})
	dir := t.TempDir()

	t.Run("same-config", func(t *testing.T) {
		out := runDaemonExpectFailure(t, d.ConfigPath, "", 1)
		if !strings.Contains(out, "another blockrepd") {
			t.Errorf("error does not say that another blockrepd holds the data directory")
		}
		checkAlive(t, d)
	})

	// Own data directory and NBD port, the first daemon's control socket.
	t.Run("same-control-socket", func(t *testing.T) {
		cfg := filepath.Join(dir, "ctl.toml")
		writeConfig(t, cfg, `
[node]
name = "second"
data_dir = "`+filepath.Join(dir, "data-ctl")+`"
control_socket = "`+d.ControlSocket+`"
[nbd]
listen = ["127.0.0.1:0"]
[[volume]]
name = "vol0"
path = "`+filepath.Join(dir, "other.img")+`"
size = "16MiB"
`)
		out := runDaemonExpectFailure(t, cfg, "", 1)
		if !strings.Contains(out, "in use") {
			t.Errorf("error does not say that the control socket is in use")
		}
		if _, err := os.Stat(d.ControlSocket); err != nil {
			t.Fatalf("the first daemon's control socket is gone: %v", err)
		}
		checkAlive(t, d)
	})

	// Own data directory, NBD port and control socket, the first
	// daemon's volume file: two daemons writing one image would corrupt
	// it (raid opens a block device O_EXCL, but a regular file is not
	// locked at all).
	t.Run("same-volume-file", func(t *testing.T) {
		cfg := filepath.Join(dir, "vol.toml")
		writeConfig(t, cfg, `
[node]
name = "second"
data_dir = "`+filepath.Join(dir, "data-vol")+`"
control_socket = "`+filepath.Join(dir, "second.sock")+`"
[nbd]
listen = ["127.0.0.1:0"]
[[volume]]
name = "vol0"
path = "`+d.VolumePath("vol0")+`"
size = "16MiB"
`)
		runDaemonExpectFailure(t, cfg, filepath.Join(dir, "second.sock"), 1)
		checkAlive(t, d)
	})
}

func writeConfig(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestBadConfig checks that blockrepd refuses a broken configuration with
// exit status 2 and an error naming the key and line.
func TestBadConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bad.toml")
	writeConfig(t, cfg, `[node]
name = "bad"
data_dir = "`+filepath.Join(dir, "data")+`"

[nbd]
listen = ["127.0.0.1:0"]

[[volume]]
name = "vol0"
path = "`+filepath.Join(dir, "vol0.img")+`"
size = "10MB"
`)
	out := runDaemonExpectFailure(t, cfg, "", 2)
	for _, want := range []string{"volume.0.size", "10MB", "line 11"} {
		if !strings.Contains(out, want) {
			t.Errorf("error lacks %q", want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "vol0.img")); !os.IsNotExist(err) {
		t.Errorf("a refused configuration created the volume file (stat: %v)", err)
	}
}
