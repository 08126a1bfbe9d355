package events

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// script writes an executable sh script with body into dir.
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// recorder is a hook script that appends "TAG $BLOCKREP_EVENT
// $BLOCKREP_VOLUME $BLOCKREP_OLD $BLOCKREP_NEW" to the file out, where TAG
// is its first argument.
func recorder(t *testing.T, dir, out string) func(tag string) []string {
	p := script(t, dir, "record.sh", `echo "$1 $BLOCKREP_EVENT $BLOCKREP_VOLUME $BLOCKREP_OLD $BLOCKREP_NEW" >> "$2"`+"\n")
	return func(tag string) []string { return []string{p, tag, out} }
}

// waitLines waits until file has at least n lines and returns them.
func waitLines(t *testing.T, file string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		data, _ := os.ReadFile(file)
		lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
		if len(data) == 0 {
			lines = nil
		}
		if len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d lines, want %d: %q", file, len(lines), n, lines)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logBuffer is a goroutine-safe log destination.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// start runs a Runner for hooks on a new bus until the test ends and
// returns the bus and the runner's log.
func start(t *testing.T, hooks []Hook) (*Bus, *logBuffer) {
	t.Helper()
	bus := NewBus(64)
	logs := &logBuffer{}
	r := NewRunner(hooks, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	ctx, cancel := context.WithCancel(context.Background())
	sub := bus.Subscribe(ctx)
	done := make(chan struct{})
	go func() { r.Serve(ctx, sub); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after its context ended")
		}
	})
	return bus, logs
}

func TestHooksRunForMatchingEventsInOrder(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	rec := recorder(t, dir, out)
	bus, _ := start(t, []Hook{
		{On: []string{"role", "split-brain"}, Command: rec("A"), Timeout: 10 * time.Second},
		{On: []string{"*"}, Command: rec("B"), Timeout: 10 * time.Second},
		{On: []string{"disk"}, Command: rec("C"), Timeout: 10 * time.Second},
	})
	bus.Publish(Event{Kind: "role", Volume: "vol0", Old: "secondary", New: "primary"})
	bus.Publish(Event{Kind: "role", Volume: "vol0", New: "primary", Initial: true}) // not hooked
	bus.Publish(Event{Kind: "disk", Volume: "vol0", Old: "Inconsistent", New: "UpToDate"})
	bus.Publish(Event{Kind: "connection", Volume: "vol1", Old: "Connected", New: "StandAlone"})
	bus.Publish(Event{Kind: "split-brain", Volume: "vol1", New: "detected"})
	want := []string{
		"A role vol0 secondary primary",
		"B role vol0 secondary primary",
		"B disk vol0 Inconsistent UpToDate",
		"C disk vol0 Inconsistent UpToDate",
		"B connection vol1 Connected StandAlone",
		"A split-brain vol1  detected",
		"B split-brain vol1  detected",
	}
	waitLines(t, out, len(want))
	time.Sleep(100 * time.Millisecond) // room for a wrong extra line
	got := waitLines(t, out, len(want))
	if !slices.Equal(got, want) {
		t.Errorf("hook runs:\n got %q\nwant %q", got, want)
	}
}

func TestHookEnvironment(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "env")
	t.Setenv("BLOCKREP_TEST_INHERITED", "yes")
	t.Setenv("BLOCKREP_VOLUME", "stale value from the daemon's environment")
	// Only the variables the runner sets and the test's own: the
	// environment the tests run in may hold other BLOCKREP_ ones.
	dump := script(t, dir, "env.sh", `env | grep -E '^BLOCKREP_(DETAIL|EVENT|NEW|NODE|OLD|PEER|SEQ|TEST_INHERITED|TIME|VOLUME)=' | sort > "$1.tmp" && mv "$1.tmp" "$1"`+"\n")
	bus, _ := start(t, []Hook{{On: []string{"connection"}, Command: []string{dump, out}}})
	e := bus.Publish(Event{Time: time.Date(2026, 11, 26, 1, 2, 3, 123456789, time.FixedZone("X", 3600)),
		Kind: "connection", Node: "node1", Volume: "vol 0", Peer: "node2", Old: "Connecting", New: "Connected", Detail: "took 2s"})
	want := []string{
		"BLOCKREP_DETAIL=took 2s",
		"BLOCKREP_EVENT=connection",
		"BLOCKREP_NEW=Connected",
		"BLOCKREP_NODE=node1",
		"BLOCKREP_OLD=Connecting",
		"BLOCKREP_PEER=node2",
		"BLOCKREP_SEQ=" + strconv.FormatUint(e.Seq, 10),
		"BLOCKREP_TEST_INHERITED=yes",
		"BLOCKREP_TIME=2026-11-26T00:02:03.123456789Z",
		"BLOCKREP_VOLUME=vol 0",
	}
	if got := waitLines(t, out, len(want)); !slices.Equal(got, want) {
		t.Errorf("environment:\n got %q\nwant %q", got, want)
	}
}

// processGone reports whether pid has exited (a zombie counts as exited).
func processGone(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the parenthesised command name.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}

func TestHookTimeoutKillsItsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	pidFile := filepath.Join(dir, "pid")
	rec := recorder(t, dir, out)
	// The shell waits for a child: killing only the shell would leave the
	// sleep running, holding the output pipe.
	hang := script(t, dir, "hang.sh", `sleep 100 & echo $! > "$1.tmp" && mv "$1.tmp" "$1"; echo started; wait`+"\n")
	bus, logs := start(t, []Hook{
		{On: []string{"hang"}, Command: []string{hang, pidFile}, Timeout: 300 * time.Millisecond},
		{On: []string{"*"}, Command: rec("rec"), Timeout: 10 * time.Second},
	})
	t0 := time.Now()
	bus.Publish(Event{Kind: "hang"})
	bus.Publish(Event{Kind: "after", New: "x"})
	got := waitLines(t, out, 2)
	if want := []string{"rec hang   ", "rec after   x"}; !slices.Equal(got, want) {
		t.Errorf("hook runs %q, want %q", got, want)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("the next hooks ran %v after the hang, want about the 300ms timeout", d)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !processGone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the hook's child %d still runs after the hook timed out", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	log := logs.String()
	if !strings.Contains(log, "level=WARN") || !strings.Contains(log, `msg="hook timed out and was killed"`) ||
		!strings.Contains(log, "timeout=300ms") || !strings.Contains(log, "event=hang") || !strings.Contains(log, "output=\"started\\n\"") {
		t.Errorf("log does not report the timeout:\n%s", log)
	}
}

func TestFailingHookIsLoggedAndRunnerGoesOn(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	rec := recorder(t, dir, out)
	// 5000 bytes of output of which the log keeps the last 4096.
	fail := script(t, dir, "fail.sh", `echo "stdout start"; head -c 4990 /dev/zero | tr '\0' x; echo "err end" >&2; exit 3`+"\n")
	bus, logs := start(t, []Hook{
		{On: []string{"role"}, Command: []string{fail}, Timeout: 10 * time.Second},
		{On: []string{"role"}, Command: rec("rec"), Timeout: 10 * time.Second},
		{On: []string{"disk"}, Command: []string{filepath.Join(dir, "missing")}, Timeout: 10 * time.Second},
	})
	bus.Publish(Event{Kind: "role", Volume: "vol0", New: "primary"})
	bus.Publish(Event{Kind: "disk", Volume: "vol0", New: "UpToDate"})
	bus.Publish(Event{Kind: "role", Volume: "vol0", Old: "primary", New: "secondary"})
	want := []string{"rec role vol0  primary", "rec role vol0 primary secondary"}
	if got := waitLines(t, out, 2); !slices.Equal(got, want) {
		t.Errorf("hook runs %q, want %q", got, want)
	}

	var failed []map[string]string
	for line := range strings.Lines(logs.String()) {
		if strings.Contains(line, `msg="hook failed"`) {
			failed = append(failed, parseLogLine(t, line))
		}
	}
	if len(failed) != 2 {
		t.Fatalf("%d hook failed lines, want 2:\n%s", len(failed), logs.String())
	}
	f := failed[0]
	if f["level"] != "WARN" || f["exit_code"] != "3" || f["status"] != "exit status 3" || f["event"] != "role" {
		t.Errorf("failure log %v", f)
	}
	wantOut := strings.Repeat("x", 4096-len("err end\n")) + "err end\n"
	if f["output"] != wantOut {
		t.Errorf("logged output is %d bytes ending %q, want the last 4096 (%d bytes ending %q)",
			len(f["output"]), tail(f["output"], 20), len(wantOut), tail(wantOut, 20))
	}
	if log := logs.String(); !strings.Contains(log, `msg="hook could not run"`) || !strings.Contains(log, "missing") {
		t.Errorf("a hook that cannot start is not logged:\n%s", log)
	}
}

func tail(s string, n int) string { return s[max(0, len(s)-n):] }

// parseLogLine parses one line of slog's text format.
func parseLogLine(t *testing.T, line string) map[string]string {
	t.Helper()
	m := map[string]string{}
	s := strings.TrimSpace(line)
	for s != "" {
		k, rest, ok := strings.Cut(s, "=")
		if !ok {
			t.Fatalf("bad log line %q", line)
		}
		var v string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				t.Fatalf("bad log line %q: %v", line, err)
			}
			v, _ = strconv.Unquote(q)
			rest = rest[len(q):]
		} else {
			v, rest, _ = strings.Cut(rest, " ")
			rest = " " + rest
		}
		m[k] = v
		s = strings.TrimSpace(rest)
	}
	return m
}

func TestRunReturnsWhenContextEnds(t *testing.T) {
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	hang := script(t, dir, "hang.sh", `touch "$1"; exec sleep 100`+"\n")
	bus := NewBus(8)
	r := NewRunner([]Hook{{On: []string{"*"}, Command: []string{hang, started}, Timeout: time.Minute}}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx, bus); close(done) }()
	// Run subscribes in its goroutine: publish until the hook starts.
	for i := 0; ; i++ {
		if _, err := os.Stat(started); err == nil {
			break
		}
		if i > 2000 {
			t.Fatal("the hook never started")
		}
		bus.Publish(Event{Kind: "k"})
		time.Sleep(10 * time.Millisecond)
	}
	cancel() // while the hook runs
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func TestTailBuffer(t *testing.T) {
	b := &tailBuffer{max: 8}
	for _, w := range []string{"abc", "defgh", "ij", "", "0123456789AB", "z"} {
		if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", w, n, err)
		}
	}
	if got := string(b.Bytes()); got != "56789ABz" {
		t.Errorf("kept %q, want %q", got, "56789ABz")
	}
	b = &tailBuffer{max: 8}
	b.Write([]byte("abc"))
	b.Write([]byte("defghij"))
	if got := string(b.Bytes()); got != "cdefghij" {
		t.Errorf("kept %q, want %q", got, "cdefghij")
	}
}

func TestHookMatches(t *testing.T) {
	h := Hook{On: []string{"role", "split-brain"}}
	if !h.matches("role") || !h.matches("split-brain") || h.matches("disk") {
		t.Error("explicit kinds")
	}
	if !(Hook{On: []string{"*"}}).matches("anything") {
		t.Error(`"*" does not match`)
	}
	if (Hook{}).matches("role") {
		t.Error("a hook without kinds matches")
	}
}
