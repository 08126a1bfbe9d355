package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Server is an NBD server process under test.
type Server struct {
	Name string
	URI  string
	cmd  *exec.Cmd
	log  *os.File
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func start(ctx context.Context, name string, port int, logPath string, argv ...string) (*Server, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("bench: start %s: %w", name, err)
	}
	s := &Server{Name: name, URI: fmt.Sprintf("nbd://127.0.0.1:%d", port), cmd: cmd, log: logf}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(15 * time.Second); ; {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return s, nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			out, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("bench: %s did not listen on %s: %s", name, addr, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StartNbdkit serves file with nbdkit's file plugin.
func StartNbdkit(ctx context.Context, nbdkit, file, workDir string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	return start(ctx, "nbdkit", port, filepath.Join(workDir, "nbdkit.log"),
		nbdkit, "--foreground", "--exit-with-parent", "--ipaddr=127.0.0.1", "--port="+strconv.Itoa(port), "file", file)
}

// StartBlockrepd serves file as the only volume of a blockrepd node.
func StartBlockrepd(ctx context.Context, blockrepd, file, workDir string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dataDir := filepath.Join(workDir, "node")
	cfg := fmt.Sprintf(`[node]
name = "bench"
data_dir = %q

[nbd]
listen = ["127.0.0.1:%d"]

[[volume]]
name = "bench"
path = %q
`, dataDir, port, file)
	cfgPath := filepath.Join(workDir, "blockrepd.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	return start(ctx, "blockrepd", port, filepath.Join(workDir, "blockrepd.log"),
		blockrepd, "-config", cfgPath, "-log-level", "warn")
}

// PID is the server's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// RSS reports the server's resident set now and at its peak, in bytes.
func (s *Server) RSS() (now, peak int64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.PID()))
	if err != nil {
		return 0, 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			now = kb << 10
		case "VmHWM:":
			peak = kb << 10
		}
	}
	return now, peak, nil
}

// Stop ends the server with SIGTERM and waits for it.
func (s *Server) Stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
	s.log.Close()
}

// FillFile writes size bytes of non-zero data to path and syncs it, so that
// both servers start on fully allocated, identical backing files.
func FillFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	buf := make([]byte, 4<<20)
	for i := range buf {
		buf[i] = byte(i*7 + i>>12)
	}
	for off := int64(0); off < size; off += int64(len(buf)) {
		n := int64(len(buf))
		if size-off < n {
			n = size - off
		}
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
