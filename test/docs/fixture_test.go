package docs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/internal/nbdclient"

	"github.com/blockrep/blockrep/internal/freeport"
	"github.com/blockrep/blockrep/internal/testtool"
)

// Bounds of the fixtures' waits: only to catch a hang, never a measure.
const (
	docReady      = 30 * time.Second // a starting daemon's control socket
	docWait       = 60 * time.Second // a replication or cluster state
	docStop       = 20 * time.Second // exit after SIGTERM
	docCmdTimeout = 5 * time.Minute  // one documented command
)

// docResult is what a command did.
type docResult struct {
	Line   string // the command line that ran
	Code   int    // exit status; -1 when killed by a signal
	Stdout string
	Stderr string
}

func (r docResult) String() string {
	return fmt.Sprintf("%s: exit %d\nstdout:\n%s\nstderr:\n%s", r.Line, r.Code, r.Stdout, r.Stderr)
}

// docEnv is what every runner gets.
type docEnv struct {
	root string // the repository root
	tmp  string // a short per-test directory (unix sockets live under it)
	bin  string // the binaries the README's go build wrote
	etc  string // stands for /etc/blockrep
}

// newDocEnv makes the temporary directories; the binaries come later (the
// README's own go build command writes them).
func newDocEnv(t *testing.T) *docEnv {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp("", "brdoc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	e := &docEnv{root: root, tmp: tmp, bin: filepath.Join(tmp, "bin"), etc: filepath.Join(tmp, "etc", "blockrep")}
	if err := os.MkdirAll(e.etc, 0o700); err != nil {
		t.Fatal(err)
	}
	return e
}

// dir makes and returns a new directory under the test's directory.
func (e *docEnv) dir(t *testing.T, name string) string {
	t.Helper()
	d, err := os.MkdirTemp(e.tmp, name+"-")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// shell runs line with bash from dir (the repository root when empty),
// with the built binaries first in PATH, and returns what it did.
func (e *docEnv) shell(t *testing.T, dir, line string, env ...string) docResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), docCmdTimeout)
	defer cancel()
	cmd := e.shellCmd(ctx, dir, line, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := docResult{Line: line, Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	default:
		t.Fatalf("%s: %v", line, err)
	}
	t.Logf("ran %s: exit %d", line, r.Code)
	return r
}

func (e *docEnv) shellCmd(ctx context.Context, dir, line string, env ...string) *exec.Cmd {
	if dir == "" {
		dir = e.root
	}
	cmd := exec.CommandContext(ctx, "bash", "-c", line)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+e.bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	cmd.Env = append(cmd.Env, env...)
	// Killing the context kills the shell's whole process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd
}

// untilLine runs line (a command that runs until interrupted) until it
// prints a line containing want, then sends it SIGINT and returns what it
// did. It fails t if no such line comes within docWait.
func (e *docEnv) untilLine(t *testing.T, line, want string) docResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), docCmdTimeout)
	defer cancel()
	// exec: the signal goes to the command itself, not to bash.
	cmd := e.shellCmd(ctx, "", "exec "+line)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	seen := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pipe)
		found := false
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if !found && strings.Contains(sc.Text(), want) {
				found = true
				close(seen)
			}
		}
	}()
	select {
	case <-seen:
		_ = cmd.Process.Signal(syscall.SIGINT)
	case <-done:
	case <-time.After(docWait):
		_ = cmd.Process.Kill()
	}
	<-done
	err = cmd.Wait()
	r := docResult{Line: line, Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.Code = ee.ExitCode()
	}
	select {
	case <-seen:
	default:
		t.Fatalf("%s: no line with %q: %v", line, want, r)
	}
	t.Logf("ran %s until %q, then SIGINT: exit %d", line, want, r.Code)
	return r
}

// mustShell is shell that fails t unless the command exits 0.
func (e *docEnv) mustShell(t *testing.T, dir, line string, env ...string) docResult {
	t.Helper()
	r := e.shell(t, dir, line, env...)
	if r.Code != 0 {
		t.Fatalf("want exit 0: %v", r)
	}
	return r
}

// docNode is one blockrepd process and its files.
type docNode struct {
	Name        string
	Dir         string
	Config      string // the configuration file
	Socket      string // control socket
	Log         string
	NBD         string // NBD TCP address
	Repl        string // replication.listen ("" without)
	ClusterAddr string // cluster.listen ("" without)
	cmd         *exec.Cmd
	exited      chan struct{}
	waitErr     error
}

// newNode prepares a node in a new directory; the caller writes Config.
func (e *docEnv) newNode(t *testing.T, name string) *docNode {
	t.Helper()
	dir := e.dir(t, name)
	n := &docNode{Name: name, Dir: dir, Config: filepath.Join(dir, "blockrepd.toml"),
		Socket: filepath.Join(dir, "ctl.sock"), Log: filepath.Join(dir, "blockrepd.log")}
	t.Cleanup(func() {
		if n.running() {
			n.kill()
		}
		if t.Failed() {
			if b, err := os.ReadFile(n.Log); err == nil {
				t.Logf("log of %s (%s):\n%s", n.Name, n.Log, lastLines(string(b), 60))
			}
		}
	})
	return n
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// start starts the node's blockrepd and waits until its control socket
// answers.
func (e *docEnv) start(t *testing.T, n *docNode) {
	t.Helper()
	e.startLine(t, n, filepath.Join(e.bin, "blockrepd")+" -config "+n.Config)
}

// startLine starts the daemon with a shell command line (a documented
// one), keeps it in the background and waits until the control socket
// answers.
func (e *docEnv) startLine(t *testing.T, n *docNode, line string) {
	t.Helper()
	if n.running() {
		t.Fatalf("%s is already running", n.Name)
	}
	logf, err := os.OpenFile(n.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "===== docs test: %s at %s =====\n", line, time.Now().Format(time.RFC3339Nano))
	// exec, so that the signals go to blockrepd itself.
	cmd := e.shellCmd(context.Background(), "", "exec "+line)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.cmd, n.exited, n.waitErr = cmd, make(chan struct{}), nil
	go func() {
		n.waitErr = cmd.Wait()
		close(n.exited)
	}()
	deadline := time.Now().Add(docReady)
	for {
		select {
		case <-n.exited:
			t.Fatalf("%s exited before its control socket answered: %v", line, n.waitErr)
		default:
		}
		if _, err := e.statusErr(n); err == nil {
			return
		}
		if time.Now().After(deadline) {
			n.kill()
			t.Fatalf("%s: the control socket %s did not answer within %v", line, n.Socket, docReady)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *docNode) running() bool {
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and fails t unless the daemon exits 0.
func (n *docNode) stop(t *testing.T) {
	t.Helper()
	if !n.running() {
		t.Fatalf("stop: %s is not running", n.Name)
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(docStop):
		n.kill()
		t.Fatalf("%s did not exit within %v of SIGTERM", n.Name, docStop)
	}
	if n.waitErr != nil {
		t.Fatalf("%s exited with %v after SIGTERM, want 0", n.Name, n.waitErr)
	}
}

// kill kills the daemon with SIGKILL, as a crash would.
func (n *docNode) kill() {
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.exited
}

// statusErr asks the node for its status.
func (e *docEnv) statusErr(n *docNode) (*api.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(e.bin, "blockctl"), "-s", n.Socket, "status", "-o", "json").Output()
	if err != nil {
		return nil, err
	}
	var s api.Status
	if err := json.Unmarshal(out, &s); err != nil {
		return nil, fmt.Errorf("status of %s: %v", n.Name, err)
	}
	return &s, nil
}

// waitFor polls the node's status until ok says yes.
func (e *docEnv) waitFor(t *testing.T, n *docNode, what string, ok func(*api.Status) bool) *api.Status {
	t.Helper()
	deadline := time.Now().Add(docWait)
	var last *api.Status
	var lastErr error
	for {
		s, err := e.statusErr(n)
		if err == nil {
			last = s
			if ok(s) {
				return s
			}
		} else {
			lastErr = err
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(last, "", "  ")
			t.Fatalf("%s: not %s within %v (last error %v); last status:\n%s", n.Name, what, docWait, lastErr, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ctl runs blockctl on the node through its socket (a fixture's own step,
// not a documented command) and fails t unless it exits 0.
func (e *docEnv) ctl(t *testing.T, n *docNode, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(e.bin, "blockctl"), append([]string{"-s", n.Socket}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("blockctl %s on %s: %v: %s", strings.Join(args, " "), n.Name, err, out)
	}
	return string(out)
}

// volume returns the status of the named volume.
func volume(s *api.Status, name string) *api.VolumeStatus {
	for i := range s.Volumes {
		if s.Volumes[i].Name == name {
			return &s.Volumes[i]
		}
	}
	return nil
}

// inSync reports whether the node's volume is role with every peer
// Connected, replicating (the primary's side says so), nothing out of sync and no resync or verify
// running.
func inSync(s *api.Status, vol, role string) bool {
	v := volume(s, vol)
	if v == nil || v.Replication == nil || v.Replication.Role != role || v.Replication.Disk != "UpToDate" || len(v.Replication.Peers) == 0 {
		return false
	}
	for _, p := range v.Replication.Peers {
		if p.Connection != "Connected" || (role == "primary" && !p.Replicating) || p.OutOfSyncBytes != 0 ||
			(p.Resync != nil && p.Resync.Finished.IsZero()) || (p.Verify != nil && p.Verify.Finished.IsZero()) {
			return false
		}
	}
	return true
}

// freePorts returns n distinct "127.0.0.1:PORT" addresses that were free
// a moment ago, from below the kernel's ephemeral range (freeport), so
// that blockbench and other tests running beside these fixtures cannot
// take one between the pick and the daemon's bind.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	addrs, err := freeport.Addrs(n)
	if err != nil {
		t.Fatal(err)
	}
	return addrs
}

// writeFile writes a file and fails t on an error.
func writeFile(t *testing.T, path, text string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
}

// nbdWrite writes data at off through NBD and flushes.
func nbdWrite(t *testing.T, addr, export string, off int64, data []byte) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := nbdclient.Dial(ctx, addr, export)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.WriteAt(data, off, false); err != nil {
		return err
	}
	return c.Flush()
}

// nbdRead reads n bytes at off through NBD.
func nbdRead(t *testing.T, addr, export string, off int64, n int) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := nbdclient.Dial(ctx, addr, export)
	if err != nil {
		t.Fatalf("NBD %s/%s: %v", addr, export, err)
	}
	defer c.Close()
	b := make([]byte, n)
	if err := c.ReadAt(b, off); err != nil {
		t.Fatalf("NBD read at %d of %s/%s: %v", off, addr, export, err)
	}
	return b
}

// fixedPorts holds the lock that every user of the README's fixed ports
// (10809-10810, 7789-7793, and the profiler's 6061) takes, until the test
// ends.
func fixedPorts(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile("/tmp/blockrep-fixed-ports.lock", os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	})
}

// q quotes a TOML string.
func q(s string) string { return strconv.Quote(s) }

// docPackages names the Debian package of each tool a runner needs beside
// the project's own programs.
var docPackages = map[string]string{"nbdinfo": "libnbd-bin", "nbdkit": "nbdkit", "fio": "fio", "git": "git", "losetup": "mount",
	"mkfs.ext4": "e2fsprogs", "mkfs.xfs": "xfsprogs", "ganesha.nfsd": "nfs-ganesha", "rpcbind": "rpcbind"}

// needTools skips t when a tool is missing, or fails it when
// BLOCKREP_REQUIRE_TOOLS=1 (scripts/test sets it once it has installed
// them all), as the e2e tests do.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		testtool.Need(t, tool, docPackages[tool])
	}
}
