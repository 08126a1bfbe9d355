package docs

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockrep/blockrep/internal/syncbuf"
	"github.com/blockrep/blockrep/internal/testtool"
)

const (
	// demoTimeout bounds one run of scripts/demo --check (about a minute
	// when nothing hangs); past it the test stops the demo and fails.
	demoTimeout = 5 * time.Minute
	// demoStopGrace is how long the demo gets to stop its daemons after
	// a SIGTERM before its process group is killed.
	demoStopGrace = 90 * time.Second
	// demoVolumeBytes is the size of the demo's volume (size = "1GiB").
	demoVolumeBytes = 1 << 30
	// fixedPortsLock is the lock taken around every use of the fixed demo
	// and README ports (10809-10810, 7789-7793), by tests (syscall.Flock)
	// and by people (flock(1)).
	fixedPortsLock = "/tmp/blockrep-fixed-ports.lock"
	// fixedPortsWait bounds the wait for that lock.
	fixedPortsWait = 10 * time.Minute
)

// logDemoTimes logs the demo's timing and resync lines of out.
func logDemoTimes(t *testing.T, out string) {
	for _, l := range strings.Split(out, "\n") {
		if demoTimingLine.MatchString(l) || demoResyncLine.MatchString(l) {
			t.Log(strings.TrimSpace(l))
		}
	}
}

// runDemo runs the README's first command, scripts/demo, from the
// repository root in its non-interactive mode (--check) with the default
// ports, after removing bin/blockrepd and bin/blockctl so that the demo
// builds them. It takes the fixed-ports lock itself (do not hold it when
// calling), keeps the demo's files in a temporary directory, and fails the
// test unless the demo exits 0 within demoTimeout, prints the line of every
// step with the right values (demoProblems), leaves no process running, and
// leaves the two stores identical as it printed, with no full resync in the
// logs. On failure it logs the output and the end of each daemon's log.
func runDemo(t *testing.T) (output string) { return runDemoMode(t, true) }

// runDemoInteractive runs scripts/demo as the README's first line says,
// with no argument: once it says "Press Ctrl-C", it gets the SIGINT a
// terminal sends its process group, and must stop its daemons cleanly and
// exit 0 (demoInteractiveProblems), having printed every step up to there.
func runDemoInteractive(t *testing.T) (output string) { return runDemoMode(t, false) }

// demoPressCtrlC is the last line of an interactive demo before it waits.
const demoPressCtrlC = "Press Ctrl-C to stop the daemons."

// runDemoMode is runDemo (check) or runDemoInteractive.
func runDemoMode(t *testing.T, check bool) (output string) {
	t.Helper()
	for _, tool := range []struct{ name, pkg string }{
		{"bash", "bash"}, {"go", "golang"}, {"python3", "python3"}, {"nbdcopy", "libnbd-bin"},
	} {
		testtool.Need(t, tool.name, tool.pkg)
	}
	root := repoRoot(t)
	lockFixedPorts(t)
	for _, name := range []string{"blockrepd", "blockctl"} {
		if err := os.Remove(filepath.Join(root, "bin", name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("removing the previous build: %v", err)
		}
	}
	dir := filepath.Join(t.TempDir(), "demo")
	// Registered after TempDir's: runs before the directory is removed.
	t.Cleanup(func() {
		for _, p := range killLeftovers(dir) {
			t.Errorf("the demo left %s running; killed it", p)
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), demoTimeout)
	defer cancel()
	var args []string
	name := "scripts/demo"
	if check {
		args = []string{"--check"}
		name += " --check"
	}
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "demo"), args...)
	cmd.Dir = root
	cmd.Env = demoEnv(os.Environ(), dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// On timeout the demo gets a SIGTERM (its trap stops the daemons),
	// then after demoStopGrace a SIGKILL.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = demoStopGrace
	var buf syncbuf.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	t.Logf("$ BLOCKREP_DEMO_DIR=%s %s (in %s)", dir, name, root)
	start := time.Now()
	err := cmd.Start()
	if err != nil {
		t.Fatalf("starting scripts/demo: %v", err)
	}
	if !check {
		// Ctrl-C: the terminal's SIGINT to the foreground process group,
		// once the demo waits for it.
		go func() {
			for ctx.Err() == nil && !strings.Contains(buf.String(), "\n"+demoPressCtrlC+"\n") {
				time.Sleep(100 * time.Millisecond)
			}
			if ctx.Err() == nil {
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
			}
		}()
	}
	err = cmd.Wait()
	// Whatever is left of its process group (its daemons run in sessions
	// of their own: killLeftovers finds those).
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	output = buf.String()
	took := time.Since(start).Round(time.Second)

	exited0 := false
	switch {
	case ctx.Err() != nil:
		t.Errorf("%s did not finish within %v: stopped it (%v)", name, demoTimeout, err)
	case err != nil:
		t.Errorf("%s failed after %v: %v (want exit status 0)", name, took, err)
	default:
		exited0 = true
		t.Logf("%s exited 0 after %v", name, took)
	}
	for _, p := range killLeftovers(dir) {
		t.Errorf("the demo left %s running after it ended; killed it", p)
	}
	problems := demoProblems
	if !check {
		problems = demoInteractiveProblems
	}
	for _, p := range problems(output) {
		t.Error(p)
	}
	if exited0 { // else the stores are those of a story cut short
		checkDemoStores(t, dir, output)
	}
	checkNoFullResync(t, dir, exited0)
	for _, name := range []string{"blockrepd", "blockctl"} {
		if _, err := os.Stat(filepath.Join(root, "bin", name)); err != nil {
			t.Errorf("the demo did not build bin/%s: %v", name, err)
		}
	}
	if !check {
		for _, n := range []string{"node1", "node2", "w"} {
			if log, err := os.ReadFile(filepath.Join(dir, n+".log")); err != nil || !bytes.Contains(log, []byte("shutdown complete")) {
				t.Errorf("after Ctrl-C %s's log does not end with a clean shutdown (%v)", n, err)
			}
		}
	}
	if t.Failed() {
		t.Logf("%s output:\n%s", name, output)
		logTails(t, dir, 30)
		t.FailNow()
	}
	if testing.Verbose() {
		t.Logf("%s output:\n%s", name, output)
	}
	return output
}

// repoRoot returns the repository's root: two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Clean(filepath.Join(wd, "..", ".."))
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil || !bytes.HasPrefix(mod, []byte("module github.com/blockrep/blockrep\n")) {
		t.Fatalf("%s is not the blockrep repository's root (go.mod: %v)", root, err)
	}
	return root
}

// lockFixedPorts takes fixedPortsLock for the rest of the test, waiting
// for it at most fixedPortsWait.
func lockFixedPorts(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(fixedPortsLock, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		t.Fatalf("the fixed-ports lock: %v", err)
	}
	t.Cleanup(func() { f.Close() }) // closing it releases the lock
	deadline := time.Now().Add(fixedPortsWait)
	logged := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			t.Fatalf("locking %s: %v", fixedPortsLock, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is still held by another run after %v", fixedPortsLock, fixedPortsWait)
		}
		if !logged {
			t.Logf("waiting for %s: another run uses the fixed ports", fixedPortsLock)
			logged = true
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// demoEnv is the demo's environment: env without the demo's own settings
// (so that it uses the default ports, as a user gets them), with dir as
// its directory.
func demoEnv(env []string, dir string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "BLOCKREP_DEMO_") {
			out = append(out, kv)
		}
	}
	return append(out, "BLOCKREP_DEMO_DIR="+dir)
}

// The lines of the demo's steps (see scripts/demo).
var (
	demoElectionHeader   = regexp.MustCompile(`^==> starting node1, node2 \(data\) and w \(witness\)`)
	demoElectedLine      = regexp.MustCompile(`^    the cluster elected (\S*) as primary$`)
	demoWriteHeader      = regexp.MustCompile(`^==> writing 64 MiB through NBD on node1`)
	demoSameLine         = regexp.MustCompile(`^    sha256 node1 ([0-9a-f]{16})  node2 ([0-9a-f]{16})  (\S+)$`)
	demoFailoverHeader   = regexp.MustCompile(`^==> kill -9 node1 \(the primary\)`)
	demoTimingLine       = regexp.MustCompile(`^    node2 served its first write (\d+) ms after the kill$`)
	demoPrimaryLine      = regexp.MustCompile(`^    primary now: (\S*), epoch (\d+)$`)
	demoResyncHeader     = regexp.MustCompile(`^==> writing 16 MiB more on node2, restarting node1`)
	demoResyncLine       = regexp.MustCompile(`^    node2 sent (\d+) bytes in a (\S+) resync \(volume: 1 GiB = (\d+) bytes\)$`)
	demoSwitchoverHeader = regexp.MustCompile(`^==> bin/blockctl -s \S+/node1\.sock promote node1: a switchover with no loss$`)
	demoStopHeader       = regexp.MustCompile(`^==> stopping the daemons \(SIGTERM\)$`)
	demoStoppedLine      = regexp.MustCompile(`^    node2, node1 and w exited 0$`)
	demoPassedLine       = regexp.MustCompile(`^demo: every step did what it printed$`)
	demoFailedLine       = regexp.MustCompile(`^demo: (?:step (\S+) failed|interrupted during step (\S+))`)
)

// demoProblems checks the output of scripts/demo --check: every step's
// lines, in order, with the values the story claims. It returns one
// message per problem, naming the step; none when the run is right.
func demoProblems(out string) []string { return demoLineProblems(out, true) }

// demoInteractiveProblems checks the output of scripts/demo without
// --check as demoProblems does, up to its last line before it waits for
// Ctrl-C, which must be there.
func demoInteractiveProblems(out string) []string { return demoLineProblems(out, false) }

// demoPressCtrlCLine is demoPressCtrlC as a whole line.
var demoPressCtrlCLine = regexp.MustCompile(`^` + regexp.QuoteMeta(demoPressCtrlC) + `$`)

// demoLineProblems is demoProblems (check) or demoInteractiveProblems.
func demoLineProblems(out string, check bool) []string {
	lines := strings.Split(out, "\n")
	var problems []string
	problem := func(step, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("step %s: %s", step, fmt.Sprintf(format, args...)))
	}
	for _, l := range lines {
		if m := demoFailedLine.FindStringSubmatch(l); m != nil {
			problem(m[1]+m[2], "the demo says %q", l)
		}
	}
	// expect finds the next line matching re, from the line after the
	// last one found; nil (and a problem) when there is none.
	at := 0
	expect := func(step string, re *regexp.Regexp) []string {
		for i := at; i < len(lines); i++ {
			if m := re.FindStringSubmatch(lines[i]); m != nil {
				at = i + 1
				return m
			}
		}
		problem(step, "no line matching %q after line %d", re, at)
		return nil
	}
	same := func(step string) {
		if m := expect(step, demoSameLine); m != nil && (m[1] != m[2] || m[3] != "identical") {
			problem(step, "the copies differ: %q", strings.TrimSpace(m[0]))
		}
	}
	number := func(step, s string) int64 {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			problem(step, "%q is not a number: %v", s, err)
		}
		return n
	}

	expect("election", demoElectionHeader)
	if m := expect("election", demoElectedLine); m != nil && m[1] != "node1" {
		problem("election", "the cluster elected %q, want node1 (the preferred primary)", m[1])
	}

	expect("write", demoWriteHeader)
	same("write")

	var failoverEpoch int64
	expect("failover", demoFailoverHeader)
	if m := expect("failover", demoTimingLine); m != nil {
		number("failover", m[1])
	}
	if m := expect("failover", demoPrimaryLine); m != nil {
		if m[1] != "node2" {
			problem("failover", "the primary after the kill is %q, want node2", m[1])
		}
		failoverEpoch = number("failover", m[2])
	}

	expect("resync", demoResyncHeader)
	if m := expect("resync", demoResyncLine); m != nil {
		sent, kind, volume := number("resync", m[1]), m[2], number("resync", m[3])
		if kind != "bitmap" {
			problem("resync", "a %s resync, want a bitmap one", kind)
		}
		if volume != demoVolumeBytes {
			problem("resync", "the demo says the volume is %d bytes, want %d", volume, demoVolumeBytes)
		}
		if sent <= 0 || sent >= demoVolumeBytes {
			problem("resync", "node2 sent %d bytes of resync: want more than 0 and less than the volume (%d)", sent, demoVolumeBytes)
		}
	}

	expect("switchover", demoSwitchoverHeader)
	if m := expect("switchover", demoPrimaryLine); m != nil {
		if m[1] != "node1" {
			problem("switchover", "the primary after promote node1 is %q, want node1", m[1])
		}
		if e := number("switchover", m[2]); e <= failoverEpoch {
			problem("switchover", "epoch %d after the promote, want more than the failover's %d", e, failoverEpoch)
		}
	}
	same("switchover")

	if !check {
		expect("wait", demoPressCtrlCLine)
		return problems
	}
	expect("stop", demoStopHeader)
	expect("stop", demoStoppedLine)
	expect("stop", demoPassedLine)
	return problems
}

// checkDemoStores checks the stores the demo left (its daemons stopped):
// node1's and node2's volume data are identical, with the digest the demo
// printed last.
func checkDemoStores(t *testing.T, dir, out string) {
	t.Helper()
	var printed []string
	for _, l := range strings.Split(out, "\n") {
		if m := demoSameLine.FindStringSubmatch(l); m != nil {
			printed = m
		}
	}
	if printed == nil {
		return // demoProblems said so
	}
	var got [2]string
	for i, node := range []string{"node1", "node2"} {
		d, err := dataDigest(filepath.Join(dir, node, "vol0.img"), demoVolumeBytes)
		if err != nil {
			t.Errorf("%s's store: %v", node, err)
			return
		}
		got[i] = d[:16]
	}
	if got[0] != got[1] {
		t.Errorf("the stores differ at the end: node1 %s, node2 %s (the demo printed %q)", got[0], got[1], strings.TrimSpace(printed[0]))
	}
	if got[0] != printed[1] || got[1] != printed[2] {
		t.Errorf("the demo printed %q, the stores hold node1 %s node2 %s", strings.TrimSpace(printed[0]), got[0], got[1])
	}
}

// dataDigest returns the hex SHA-256 of the first n bytes of a file.
func dataDigest(path string, n int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if c, err := io.Copy(h, io.LimitReader(f, n)); err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	} else if c != n {
		return "", fmt.Errorf("%s holds %d bytes, want at least %d", path, c, n)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// checkNoFullResync checks node2's log: node2, the source of the resync
// after node1's restart, started only bitmap resyncs, and (when the demo
// ran to its end, wantOne) at least one.
func checkNoFullResync(t *testing.T, dir string, wantOne bool) {
	t.Helper()
	path := filepath.Join(dir, "node2.log")
	f, err := os.Open(path)
	if err != nil {
		t.Errorf("node2's log: %v", err)
		return
	}
	defer f.Close()
	bitmap := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.Contains(l, `msg="resync started"`) {
			continue
		}
		switch {
		case strings.Contains(l, " kind=bitmap "):
			bitmap++
		default:
			t.Errorf("node2 started a resync that is not a bitmap one: %s", l)
		}
	}
	if err := sc.Err(); err != nil {
		t.Errorf("reading %s: %v", path, err)
	}
	if wantOne && bitmap == 0 {
		t.Errorf(`%s has no "resync started" line with kind=bitmap: node2 sent no bitmap resync`, path)
	}
}

// logTails logs the last n lines of each daemon's log in dir.
func logTails(t *testing.T, dir string, n int) {
	t.Helper()
	for _, node := range []string{"node1", "node2", "w"} {
		path := filepath.Join(dir, node+".log")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Logf("%s: %v", path, err)
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		t.Logf("the last %d lines of %s:\n%s", n, path, strings.Join(lines[max(0, len(lines)-n):], "\n"))
	}
}

// killLeftovers kills (SIGKILL) every process whose command line mentions
// dir, the demo's directory (its daemons run as
// "blockrepd -config DIR/NAME.toml" in sessions of their own), and
// describes each.
func killLeftovers(dir string) []string {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return []string{fmt.Sprintf("(cannot list /proc: %v)", err)}
	}
	var killed []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(b, []byte(dir)) {
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
		killed = append(killed, fmt.Sprintf("pid %d (%s)", pid, strings.TrimSpace(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))))
	}
	return killed
}
