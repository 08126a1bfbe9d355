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
	"sync"
	"syscall"
	"time"

	"github.com/blockrep/blockrep/api"
)

// Server is an NBD server process under test.
type Server struct {
	Name string
	URI  string
	// Control is the control socket of a blockrepd node; empty for nbdkit.
	Control string
	// LogPath is the file the process's output goes to.
	LogPath string

	cmd      *exec.Cmd
	log      *os.File
	done     chan struct{} // closed when the process has exited
	waitErr  error         // set before done is closed
	stopOnce sync.Once
	client   *api.Client
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ports, err := freePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

func start(ctx context.Context, name string, port int, logPath string, argv ...string) (*Server, error) {
	// Append: a node that is restarted keeps the log of its earlier runs.
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
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
	s := &Server{Name: name, URI: fmt.Sprintf("nbd://127.0.0.1:%d", port), LogPath: logPath, cmd: cmd, log: logf, done: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.done)
	}()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(15 * time.Second); ; {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return s, nil
		}
		if err := s.Exited(); err != nil {
			s.Stop()
			return nil, fmt.Errorf("bench: %s: %w; log:\n%s", name, err, s.LogTail(20))
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("bench: %s did not listen on %s; log:\n%s", name, addr, s.LogTail(20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Exited returns an error saying how the process ended if it has ended,
// and nil while it runs.
func (s *Server) Exited() error {
	select {
	case <-s.done:
		if s.waitErr != nil {
			return fmt.Errorf("%s exited: %v", s.Name, s.waitErr)
		}
		return fmt.Errorf("%s exited", s.Name)
	default:
		return nil
	}
}

// LogTail returns the last n lines of the server's log.
func (s *Server) LogTail(n int) string {
	data, err := os.ReadFile(s.LogPath)
	if err != nil {
		return fmt.Sprintf("(log unreadable: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
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
	nc := NodeConfig{Name: "bench", DataDir: filepath.Join(workDir, "node"), File: file, NBDPort: port}
	return startNode(ctx, "blockrepd", blockrepd, nc, filepath.Join(workDir, "blockrepd.toml"), filepath.Join(workDir, "blockrepd.log"), "warn")
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

// PeakRSS reports the server's peak resident set (VmHWM) in bytes.
func (s *Server) PeakRSS() (int64, error) {
	_, peak, err := s.RSS()
	return peak, err
}

// Stop ends the server with SIGTERM and waits for it; it kills the server
// if it has not exited after 10 seconds. Stopping twice is harmless.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
		if s.client != nil {
			s.client.Close()
		}
		s.log.Close()
	})
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
