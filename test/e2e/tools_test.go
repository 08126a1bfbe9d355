package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/blockrep/blockrep/storeid"
	"time"

	"github.com/blockrep/blockrep/internal/testtool"
	"golang.org/x/sys/unix"
)

// debianPackage names the Debian package that provides each tool.
var debianPackage = map[string]string{
	"nbdinfo":     "libnbd-bin",
	"nbdcopy":     "libnbd-bin",
	"nbdfuse":     "libnbd-bin",
	"nbdsh":       "python3-libnbd",
	"qemu-img":    "qemu-utils",
	"fio":         "fio",
	"mkfs.ext4":   "e2fsprogs",
	"e2fsck":      "e2fsprogs",
	"losetup":     "util-linux",
	"mount":       "mount",
	"umount":      "mount",
	"fusermount3": "fuse3",
	"sync":        "coreutils",
	"nbdkit":      "nbdkit",
}

// lookTool finds a tool on PATH or in the sbin directories.
func lookTool(name string) (string, error) { return testtool.Look(name) }

// missing skips the test, or fails it under BLOCKREP_REQUIRE_TOOLS=1.
func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	testtool.Missing(t, format, args...)
}

// toolChecks memoises the extra checks that some tools need.
var toolChecks sync.Map // name -> error

// tool returns the path of a tool the test needs; a missing tool skips (or
// fails) the test. Besides the binary it checks what the tool needs to
// work here: nbdsh needs libnbd's Python module, fio its nbd engine and
// nbdfuse /dev/fuse.
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := lookTool(name)
	if err != nil {
		if pkg, ok := debianPackage[name]; ok {
			missing(t, "%s is not installed (Debian package %s)", name, pkg)
		}
		missing(t, "%s is not installed", name)
	}
	check := func() error { return nil }
	switch name {
	case "nbdsh":
		check = func() error {
			cmd := exec.Command(p, "-n", "-c", "import nbd")
			cmd.Env = nbdshEnv()
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("nbdsh cannot import libnbd's Python module (Debian package python3-libnbd): %v: %s", err, out)
			}
			return nil
		}
	case "fio":
		check = func() error {
			out, err := exec.Command(p, "--enghelp=nbd").CombinedOutput()
			if err != nil || !bytes.Contains(out, []byte("uri")) {
				return fmt.Errorf("fio has no nbd ioengine (fio --enghelp=nbd: %v: %s)", err, bytes.TrimSpace(out))
			}
			return nil
		}
	case "nbdfuse":
		check = func() error {
			if _, err := os.Stat("/dev/fuse"); err != nil {
				return fmt.Errorf("nbdfuse needs /dev/fuse: %v", err)
			}
			if _, err := lookTool("fusermount3"); err != nil {
				return fmt.Errorf("nbdfuse needs fusermount3 (Debian package fuse3): %v", err)
			}
			return nil
		}
	}
	v, _ := toolChecks.LoadOrStore(name, &onceErr{})
	oe := v.(*onceErr)
	oe.once.Do(func() { oe.err = check() })
	if oe.err != nil {
		missing(t, "%v", oe.err)
	}
	return p
}

type onceErr struct {
	once sync.Once
	err  error
}

// needRoot skips a test that needs root (loop devices, mount).
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for losetup and mount; skipping (run the suite as root)")
	}
}

// nbdshEnv is the environment for nbdsh: /usr/bin first, so that its
// "python3" is the system interpreter that has the nbd module (a pyenv or
// venv python3 earlier on PATH does not).
func nbdshEnv() []string {
	return append(os.Environ(), "PATH=/usr/bin:/bin:"+os.Getenv("PATH"))
}

// command builds a command from a tool name and arguments; the context
// bounds its run time.
func command(ctx context.Context, t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(ctx, tool(t, name), args...)
	cmd.WaitDelay = 5 * time.Second
	if name == "nbdsh" {
		cmd.Env = nbdshEnv()
	}
	return cmd
}

// defaultCmdTimeout bounds each external command.
const defaultCmdTimeout = 2 * time.Minute

// run runs a tool and returns its stdout, stderr and error; it logs the
// command line.
func run(t *testing.T, name string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultCmdTimeout)
	defer cancel()
	return runCmd(t, command(ctx, t, name, args...))
}

// runCmd runs cmd, capturing stdout and stderr.
func runCmd(t *testing.T, cmd *exec.Cmd) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if cmd.Stdout == nil {
		cmd.Stdout = &stdout
	}
	if cmd.Stderr == nil {
		cmd.Stderr = &stderr
	}
	t.Logf("$ %s", strings.Join(cmd.Args, " "))
	start := time.Now()
	err := cmd.Run()
	if d := time.Since(start); d > 2*time.Second {
		t.Logf("  (took %v)", d.Round(time.Millisecond))
	}
	return stdout.String(), stderr.String(), err
}

// mustRun runs cmd and fails the test unless it exits 0; it returns stdout.
func mustRun(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	stdout, stderr, err := runCmd(t, cmd)
	if err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(cmd.Args, " "), err, stdout, stderr)
	}
	return stdout
}

// must runs a tool and fails the test unless it exits 0; it returns stdout.
func must(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultCmdTimeout)
	defer cancel()
	return mustRun(t, command(ctx, t, name, args...))
}

// exitCode returns the exit status in err, or -1.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err == nil {
		return 0
	}
	return -1
}

// runNbdsh runs a Python script from testdata under nbdsh (without the
// implicit handle) with the given environment additions, and fails the
// test unless it exits 0. It returns the script's output.
func runNbdsh(t *testing.T, script string, env ...string) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", script))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), defaultCmdTimeout)
	defer cancel()
	cmd := command(ctx, t, "nbdsh", "-n", "-c", "-")
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdin = bytes.NewReader(src)
	stdout, stderr, err := runCmd(t, cmd)
	if err != nil {
		t.Fatalf("nbdsh %s (%s): %v\nstdout:\n%s\nstderr:\n%s", script, strings.Join(env, " "), err, stdout, stderr)
	}
	t.Logf("nbdsh %s:\n%s%s", script, stdout, stderr)
	return stdout
}

// writeRandomFile writes size bytes of reproducible pseudo-random data to
// path, leaving the given [start, end) ranges zero (written as holes).
func writeRandomFile(t *testing.T, path string, size int64, seed uint64, zeroRanges ...[2]int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24)})
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		n := min(int64(len(buf)), size-off)
		_, _ = rng.Read(buf[:n])
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			t.Fatal(err)
		}
	}
	for _, z := range zeroRanges {
		// Punch the range out: it reads as zeroes and is a hole in the
		// file, so that tools that look for sparseness find it.
		err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, z[0], z[1]-z[0])
		if err != nil {
			if _, err := f.WriteAt(make([]byte, z[1]-z[0]), z[0]); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// sha256File returns the hex SHA-256 of a file's contents.
func sha256File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// volumeDataSize returns how many bytes of the store at path are the
// volume's data: all but its identity block (storeid) when it has one, the
// whole file otherwise.
func volumeDataSize(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	size := fi.Size()
	if size < storeid.BlockSize {
		return size
	}
	b := make([]byte, storeid.BlockSize)
	if _, err := f.ReadAt(b, size-storeid.BlockSize); err != nil {
		t.Fatal(err)
	}
	if tr, found, _ := storeid.Parse(b); found == storeid.Valid && tr.Size == size-storeid.BlockSize {
		return tr.Size
	}
	return size
}

// volumeDataHash returns the hex SHA-256 of the data part of the store at
// path (volumeDataSize): what the volume's clients see.
func volumeDataHash(t *testing.T, path string) string {
	t.Helper()
	return sha256Range(t, path, 0, volumeDataSize(t, path))
}

// volumesEqual fails the test unless the stores at a and b hold the same
// data (their identity blocks differ: each names its own store).
func volumesEqual(t *testing.T, a, b string) {
	t.Helper()
	na, nb := volumeDataSize(t, a), volumeDataSize(t, b)
	if na != nb {
		t.Fatalf("%s holds %d bytes of data, %s %d", a, na, b, nb)
	}
	da, db := readRange(t, a, 0, na), readRange(t, b, 0, nb)
	if !bytes.Equal(da, db) {
		for i := range da {
			if da[i] != db[i] {
				t.Fatalf("the data of %s and %s differ first at byte %d (%#x vs %#x)", a, b, i, da[i], db[i])
			}
		}
	}
}

// filesEqual fails the test unless two files have identical contents; it
// names the first differing offset.
func filesEqual(t *testing.T, a, b string) {
	t.Helper()
	da, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	db, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(da) != len(db) {
		t.Fatalf("%s is %d bytes, %s is %d bytes", a, len(da), b, len(db))
	}
	if !bytes.Equal(da, db) {
		for i := range da {
			if da[i] != db[i] {
				t.Fatalf("%s and %s differ first at byte %d (%#x vs %#x)", a, b, i, da[i], db[i])
			}
		}
	}
}

// containsLine reports whether out has a line equal to line.
func containsLine(out, line string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) == line {
			return true
		}
	}
	return false
}

// nbdshProc is an nbdsh script running in the background; it talks to the
// test through its stdout lines and its stdin.
type nbdshProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	done   chan error
	stderr *bytes.Buffer
	mu     sync.Mutex
	out    []string
}

// startNbdsh starts nbdsh -n running the Python source src in the
// background. Release (also run at cleanup) closes its stdin and waits.
func startNbdsh(t *testing.T, src string, env ...string) *nbdshProc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultCmdTimeout)
	t.Cleanup(cancel)
	cmd := command(ctx, t, "nbdsh", "-n", "-c", src)
	cmd.Env = append(cmd.Env, env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &nbdshProc{cmd: cmd, stdin: stdin, lines: make(chan string, 64), done: make(chan error, 1), stderr: new(bytes.Buffer)}
	cmd.Stderr = p.stderr
	t.Logf("$ nbdsh -n -c <script> & (%s)", strings.Join(env, " "))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() { p.release(t, false) })
	return p
}

// waitLine reads output lines until one equals want and returns the lines
// before it. It fails the test if the script ends or 60 s pass first.
func (p *nbdshProc) waitLine(t *testing.T, want string) []string {
	t.Helper()
	var before []string
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				err := <-p.done
				p.done <- err
				t.Fatalf("nbdsh ended (%v) before printing %q; output:\n%s\nstderr:\n%s", err, want, strings.Join(before, "\n"), p.stderr.String())
			}
			if l == want {
				return before
			}
			before = append(before, l)
		case <-timeout:
			t.Fatalf("nbdsh did not print %q within 60s; output:\n%s\nstderr:\n%s", want, strings.Join(before, "\n"), p.stderr.String())
		}
	}
}

// release closes the script's stdin and waits for it to end; with
// mustSucceed it fails the test unless the script exits 0.
func (p *nbdshProc) release(t *testing.T, mustSucceed bool) {
	t.Helper()
	if p.stdin == nil {
		return
	}
	p.stdin.Close()
	p.stdin = nil
	go func() {
		for range p.lines {
		}
	}()
	select {
	case err := <-p.done:
		if err != nil && mustSucceed {
			t.Errorf("nbdsh exited with %v; stderr:\n%s", err, p.stderr.String())
		}
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		t.Errorf("nbdsh did not exit within 30s of its stdin closing")
	}
}
