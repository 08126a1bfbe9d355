package e2e

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

// TestStartupErrorsWriteNothing: a configuration that its environment
// refuses — a missing or short secret, a port in use, an existing backing
// file of another size than size — stops blockrepd with exit status 2 and
// an error naming the key, before it writes anything: no meta.db, no
// backing file (an existing one keeps its size).
func TestStartupErrorsWriteNothing(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyAddr := busy.Addr().String()
	free := func() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))) }

	for _, tc := range []struct {
		name string
		// setup returns the [replication]/[[peer]] tables and the nbd
		// listen address; dir is the test's directory.
		setup   func(t *testing.T, dir string) (tables, nbdListen string)
		key     string
		existed int64 // size of a backing file that exists before the start; 0: none
	}{
		{name: "missing-secret", key: "replication.secret_file", setup: func(t *testing.T, dir string) (string, string) {
			return replTables(filepath.Join(dir, "no-such-secret"), free()), free()
		}},
		{name: "short-secret", key: "replication.secret_file", setup: func(t *testing.T, dir string) (string, string) {
			secret := filepath.Join(dir, "short.secret")
			writeConfig(t, secret, "too short\n")
			return replTables(secret, free()), free()
		}},
		{name: "nbd-port-in-use", key: "nbd.listen.0", setup: func(t *testing.T, dir string) (string, string) {
			return "", busyAddr
		}},
		{name: "replication-port-in-use", key: "replication.listen", setup: func(t *testing.T, dir string) (string, string) {
			return replTables(newSecretFile(t, dir, "ok.secret"), busyAddr), free()
		}},
		{name: "wrong-size", key: "volume.0.size", existed: 4 * MiB, setup: func(t *testing.T, dir string) (string, string) {
			return "", free()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "vol0.img")
			if tc.existed > 0 {
				writeRandomFile(t, img, tc.existed, 5)
			}
			tables, nbdListen := tc.setup(t, dir)
			cfg := filepath.Join(dir, "node.toml")
			writeConfig(t, cfg, `[node]
name = "node1"
data_dir = "`+filepath.Join(dir, "data")+`"
control_socket = "`+filepath.Join(dir, "ctl.sock")+`"

[nbd]
listen = ["`+nbdListen+`"]

[[volume]]
name = "vol0"
path = "`+img+`"
size = "16MiB"
`+tables)
			out := runDaemonExpectFailure(t, cfg, filepath.Join(dir, "ctl.sock"), 2)
			if !strings.Contains(out, tc.key) {
				t.Errorf("the error does not name %s", tc.key)
			}
			if strings.Contains(out, "raid:") {
				t.Errorf("the error of a plain-file volume says raid:")
			}
			if _, err := os.Stat(filepath.Join(dir, "data", "meta.db")); !os.IsNotExist(err) {
				t.Errorf("the refused start left meta.db (stat: %v)", err)
			}
			fi, err := os.Stat(img)
			switch {
			case tc.existed == 0 && !os.IsNotExist(err):
				t.Errorf("the refused start created the backing file (stat: %v)", err)
			case tc.existed > 0 && (err != nil || fi.Size() != tc.existed):
				t.Errorf("the refused start changed the existing backing file: %v, %v", fi, err)
			}
		})
	}
}

// replTables renders a [replication] table with secret and listen, and
// one peer (nothing listens there: the node never gets to dial it).
func replTables(secret, listen string) string {
	return `
[replication]
cluster = "e2e"
secret_file = "` + secret + `"
listen = "` + listen + `"

[[peer]]
name = "node2"
address = "127.0.0.1:1"
`
}
