package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fioJSON is the part of fio --output-format=json that the tests check.
type fioJSON struct {
	Jobs []struct {
		Name  string `json:"jobname"`
		Error int    `json:"error"`
		Read  struct {
			IOBytes int64 `json:"io_bytes"`
		} `json:"read"`
		Write struct {
			IOBytes int64 `json:"io_bytes"`
		} `json:"write"`
	} `json:"jobs"`
}

// verifyError matches fio's complaints about data that did not verify.
var verifyError = regexp.MustCompile(`(?i)verify.*(bad|fail|mismatch)|bad (magic|header|checksum)|crc32c: wanted`)

// TestFio writes with fio's nbd engine (libnbd) at queue depth 16 and
// verifies every block with crc32c: 4 KiB blocks over TCP, and mixed block
// sizes from 4 KiB to 1 MiB over the unix socket.
func TestFio(t *testing.T) {
	tool(t, "fio")
	tool(t, "nbdinfo")
	const size = 128 * MiB
	d := startDaemon(t, daemonSpec{Volumes: []volumeSpec{{Name: "vol0", Size: size}}, UnixListen: true})
	dir := t.TempDir()

	// The only volume is the default export: the empty name reaches it.
	if out := strings.TrimSpace(must(t, "nbdinfo", "--size", "nbd://"+d.Addr())); out != strconv.Itoa(size) {
		t.Errorf("nbdinfo --size with the empty export name = %q, want %d", out, size)
	}

	common := []string{
		"--ioengine=nbd",
		"--rw=randwrite", "--iodepth=16",
		"--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
		"--verify_state_save=0", // no state files in the working directory
		"--output-format=json",
	}
	for _, c := range []struct {
		name string
		args []string
		size int64
	}{
		{"randwrite-4k-tcp", []string{"--uri=" + d.URI("vol0"), "--bs=4k", "--size=32m", "--offset=0"}, 32 * MiB},
		{"randwrite-4k-1m-unix", []string{"--uri=nbd+unix:///vol0?socket=" + d.NBDSocket,
			"--bsrange=4k-1m", "--bs_unaligned=0", "--size=64m", "--offset=64m"}, 64 * MiB},
	} {
		t.Run(c.name, func(t *testing.T) {
			jsonOut := filepath.Join(dir, c.name+".json")
			args := append([]string{"--name=" + c.name, "--output=" + jsonOut}, common...)
			args = append(args, c.args...)
			stdout, stderr, err := run(t, "fio", args...)
			js, _ := os.ReadFile(jsonOut)
			if err != nil {
				t.Fatalf("fio %s: %v\nstdout:\n%s\nstderr:\n%s\njson:\n%s", c.name, err, stdout, stderr, js)
			}
			if m := verifyError.FindString(stdout + stderr); m != "" {
				t.Errorf("fio reported a verify error (%q):\n%s%s", m, stdout, stderr)
			}
			var res fioJSON
			if err := json.Unmarshal(js, &res); err != nil {
				t.Fatalf("fio JSON output does not parse: %v\n%s", err, js)
			}
			if len(res.Jobs) != 1 {
				t.Fatalf("fio JSON has %d jobs, want 1", len(res.Jobs))
			}
			j := res.Jobs[0]
			t.Logf("fio %s: error=%d wrote %d bytes, verified (read) %d bytes", c.name, j.Error, j.Write.IOBytes, j.Read.IOBytes)
			if j.Error != 0 {
				t.Errorf("fio job error %d", j.Error)
			}
			if j.Write.IOBytes != c.size {
				t.Errorf("fio wrote %d bytes, want %d", j.Write.IOBytes, c.size)
			}
			// The verify phase reads back everything that was written.
			if j.Read.IOBytes != c.size {
				t.Errorf("fio verified (read) %d bytes, want %d", j.Read.IOBytes, c.size)
			}
		})
	}
}

// TestSigtermDrain sends SIGTERM while fio is writing: the daemon must exit
// 0 promptly (fio may see errors, that is fine), and a restarted daemon must
// serve the volume.
func TestSigtermDrain(t *testing.T) {
	fioPath := tool(t, "fio")
	tool(t, "nbdinfo")
	tool(t, "nbdsh")
	const size = 256 * MiB
	d := startDaemon(t, daemonSpec{Volumes: []volumeSpec{{Name: "vol0", Size: size}}})

	fio := startFio(t, fioPath, d, "vol0")
	// An idle client too: it has nothing in flight and must not hold up
	// the shutdown.
	idle := holdConnection(t, d.URI("vol0"))
	time.Sleep(time.Second)

	start := time.Now()
	d.Stop() // SIGTERM; fails the test unless it exits 0 within 15 s
	if t.Failed() {
		t.FailNow()
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("shutdown under load took %v", took)
	}
	select {
	case <-fio.exited:
		t.Logf("fio ended after the daemon stopped (%v); its output:\n%s", fio.err, fio.out.String())
	case <-time.After(30 * time.Second):
		t.Errorf("fio still running 30s after the daemon exited")
	}
	idle.release(t, false) // its connection is gone; it may fail, that is fine
	log, _ := os.ReadFile(d.LogPath)
	if !bytes.Contains(lastStart(log), []byte("shutdown complete")) {
		t.Errorf("daemon log has no \"shutdown complete\" after SIGTERM")
	}

	d.Start()
	e := nbdinfo(t, d.URI("vol0"))
	checkInt(t, "export-size after restart", e.Size, size)
	checkBool(t, "is_read_only after restart", e.IsReadOnly, false)
}

// bgFio is a long fio write job running in the background.
type bgFio struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when fio has exited; err is then set
	err    error
	out    *bytes.Buffer
}

// startFio starts a 60 s random-write job on an export and returns once
// blockctl status shows its writes arriving. Cleanup kills it.
func startFio(t *testing.T, fioPath string, d *daemon, export string) *bgFio {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	f := &bgFio{exited: make(chan struct{}), out: new(bytes.Buffer)}
	f.cmd = exec.CommandContext(ctx, fioPath, "--name=bg",
		"--ioengine=nbd", "--uri="+d.URI(export),
		"--rw=randwrite", "--bs=64k", "--iodepth=16", "--size=128m",
		"--time_based", "--runtime=60",
		"--thread") // one process: a SIGKILL stops the I/O too
	f.cmd.WaitDelay = 5 * time.Second
	f.cmd.Stdout, f.cmd.Stderr = f.out, f.out
	t.Logf("$ %s &", strings.Join(f.cmd.Args, " "))
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		f.err = f.cmd.Wait()
		close(f.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-f.exited:
		default:
			_ = f.cmd.Process.Kill()
			<-f.exited
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if v := status(t, d).volume(t, export); len(v.Clients) > 0 && v.Clients[0].Writes > 100 {
			t.Logf("fio connected: %d writes so far", v.Clients[0].Writes)
			return f
		}
		select {
		case <-f.exited:
			t.Fatalf("fio ended early: %v\n%s", f.err, f.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("fio did not start writing within 30s\n%s", f.out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestClientKilled kills fio with SIGKILL in the middle of its writes: the
// daemon must notice the connection is gone and keep serving.
func TestClientKilled(t *testing.T) {
	fioPath := tool(t, "fio")
	tool(t, "nbdsh")
	d := startDaemon(t, daemonSpec{Volumes: []volumeSpec{{Name: "vol0", Size: 128 * MiB}}})
	fio := startFio(t, fioPath, d, "vol0")
	time.Sleep(500 * time.Millisecond)
	_ = fio.cmd.Process.Kill()
	<-fio.exited

	deadline := time.Now().Add(10 * time.Second)
	for len(status(t, d).volume(t, "vol0").Clients) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("status still lists the killed client after 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Still serving: a client connects, writes and reads.
	p := holdConnection(t, d.URI("vol0"))
	p.release(t, true)
}
