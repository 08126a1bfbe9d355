package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/events"
	"github.com/blockrep/blockrep/internal/syncbuf"
)

// eventBackend is a fakeBackend with an event stream.
type eventBackend struct {
	*fakeBackend
	bus     *events.Bus
	current []events.Event
}

func (b *eventBackend) Events() *events.Bus           { return b.bus }
func (b *eventBackend) CurrentEvents() []events.Event { return b.current }

var _ api.EventSource = (*eventBackend)(nil)

// syncBuffer is the output of a blockctl that runs in the background.
type syncBuffer struct{ syncbuf.Buffer }

// lines returns the complete lines written so far.
func (s *syncBuffer) lines() []string {
	out := s.String()
	if i := strings.LastIndexByte(out, '\n'); i >= 0 {
		return strings.Split(out[:i], "\n")
	}
	return nil
}

// waitFor waits until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runEvents starts `blockctl -s SOCK events ARGS...` and returns its
// stdout and a function that sends sig to this process, as an operator's
// ^C would, and returns the exit code and stderr.
func runEvents(t *testing.T, sock string, args ...string) (*syncBuffer, func(sig syscall.Signal) (int, string)) {
	t.Helper()
	return runInterruptible(t, append([]string{"-s", sock, "events"}, args...))
}

// runInterruptible starts blockctl with args, as runEvents does.
func runInterruptible(t *testing.T, args []string) (*syncBuffer, func(sig syscall.Signal) (int, string)) {
	t.Helper()
	// While the command is not yet listening for the signal, this keeps it
	// from killing the test.
	guard := make(chan os.Signal, 1)
	signal.Notify(guard, syscall.SIGINT, syscall.SIGTERM)
	t.Cleanup(func() { signal.Stop(guard) })
	stdout := &syncBuffer{}
	var stderr bytes.Buffer
	code := make(chan int, 1)
	go func() {
		code <- run(args, stdout, &stderr, noEnv)
	}()
	return stdout, func(sig syscall.Signal) (int, string) {
		t.Helper()
		if err := syscall.Kill(os.Getpid(), sig); err != nil {
			t.Fatal(err)
		}
		select {
		case c := <-code:
			return c, stderr.String()
		case <-time.After(10 * time.Second):
			t.Fatalf("blockctl events did not stop on %v", sig)
			return 0, ""
		}
	}
}

func newEventBackend() *eventBackend {
	at := time.Date(2026, 11, 26, 1, 2, 3, 123456000, time.UTC)
	return &eventBackend{
		fakeBackend: &fakeBackend{},
		bus:         events.NewBus(16),
		current: []events.Event{
			{Time: at, Kind: "disk", Volume: "vol0", New: "UpToDate", Initial: true},
			{Time: at, Kind: "role", Volume: "vol0", New: "primary", Detail: "epoch 3", Initial: true},
		},
	}
}

func TestEventsText(t *testing.T) {
	b := newEventBackend()
	stdout, interrupt := runEvents(t, serve(t, b))
	waitFor(t, "the exists-end line", func() bool { return strings.Contains(stdout.String(), "exists-end") })
	b.bus.Publish(events.Event{Time: time.Date(2026, 11, 26, 1, 2, 4, 0, time.UTC), Kind: "role", Volume: "vol0", Old: "primary", New: "secondary"})
	waitFor(t, "the live event", func() bool { return len(stdout.lines()) == 4 })
	code, stderr := interrupt(syscall.SIGINT)
	if code != 0 || stderr != "" {
		t.Errorf("exit %d, stderr %q; want 0 and nothing", code, stderr)
	}
	want := "" +
		"2026-11-26T01:02:03.123456Z disk volume=vol0 UpToDate initial\n" +
		`2026-11-26T01:02:03.123456Z role volume=vol0 primary detail="epoch 3" initial` + "\n" +
		"- exists-end initial\n" +
		"2026-11-26T01:02:04.000000Z role volume=vol0 primary->secondary\n"
	if got := stdout.String(); got != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", got, want)
	}
}

func TestEventsJSONLiveOnly(t *testing.T) {
	b := newEventBackend()
	stdout, interrupt := runEvents(t, serve(t, b), "-o", "json", "--now=false")
	// Nothing tells when the stream has subscribed: publish until a line
	// comes.
	for i := 0; len(stdout.lines()) == 0; i++ {
		if i > 1000 {
			t.Fatal("no event printed")
		}
		b.bus.Publish(events.Event{Kind: "leader", New: "node2", Detail: "term 4"})
		time.Sleep(10 * time.Millisecond)
	}
	code, stderr := interrupt(syscall.SIGTERM)
	if code != 0 || stderr != "" {
		t.Errorf("exit %d, stderr %q; want 0 and nothing", code, stderr)
	}
	lines := stdout.lines()
	var first uint64
	for i, line := range lines {
		var e events.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %d %q is not a JSON event: %v", i, line, err)
		}
		if i == 0 {
			first = e.Seq
		}
		if e.Kind != "leader" || e.New != "node2" || e.Detail != "term 4" || e.Initial || e.Seq == 0 || e.Seq != first+uint64(i) {
			t.Errorf("line %d: %+v", i, e)
		}
		if !strings.HasPrefix(line, `{"seq":`) || strings.Contains(line, "\n") {
			t.Errorf("line %d is not one compact JSON object: %q", i, line)
		}
	}
}

func TestEventsErrors(t *testing.T) {
	plain := serve(t, &fakeBackend{})
	missing := filepath.Join(t.TempDir(), "none.sock")
	for _, tt := range []struct {
		name      string
		args      []string
		wantCode  int
		wantErr   string
		wantUsage bool
	}{
		{"no event stream", []string{"-s", plain, "events"}, 1, "blockctl: blockrepd: this daemon has no event stream (HTTP 404)\n", false},
		{"missing socket", []string{"-s", missing, "events"}, 1, "cannot reach blockrepd at " + missing, false},
		{"argument", []string{"events", "vol0"}, 2, `events: unexpected argument "vol0"`, true},
		{"bad output", []string{"events", "-o", "table"}, 2, `events: output format "table" is not text or json`, true},
		{"bad now", []string{"events", "--now=maybe"}, 2, `events: invalid boolean value "maybe" for -now`, true},
		{"help", []string{"events", "-h"}, 0, "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr, noEnv)
			if code != tt.wantCode || !strings.Contains(stderr.String(), tt.wantErr) || stdout.Len() != 0 {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d and %q", code, stdout.String(), stderr.String(), tt.wantCode, tt.wantErr)
			}
			if got := strings.Contains(stderr.String(), "usage: blockctl"); got != tt.wantUsage {
				t.Errorf("usage shown: %v, want %v", got, tt.wantUsage)
			}
		})
	}
}

func TestUsageMentionsEvents(t *testing.T) {
	if !strings.Contains(usage, "events [-o text|json] [--now=false]") {
		t.Error("the usage does not describe events")
	}
}
