package api

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/blockrep/blockrep/events"
)

// eventBackend is a fakeBackend with an event stream.
type eventBackend struct {
	*fakeBackend
	bus     *events.Bus
	current []events.Event
}

func (b *eventBackend) Events() *events.Bus { return b.bus }

func (b *eventBackend) CurrentEvents() []events.Event { return b.current }

var _ EventSource = (*eventBackend)(nil)

var at = time.Date(2026, 11, 26, 1, 2, 3, 0, time.UTC)

func newEventBackend() *eventBackend {
	return &eventBackend{
		fakeBackend: &fakeBackend{},
		bus:         events.NewBus(16),
		current: []events.Event{
			// Initial is set by the handler, whatever the source says.
			{Time: at, Kind: "disk", Volume: "vol0", New: "UpToDate"},
			{Time: at, Kind: "role", Volume: "vol0", New: "primary", Detail: "epoch 3", Initial: true},
		},
	}
}

var errStop = errors.New("stop")

// eventsCtx bounds a streaming test.
func eventsCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestClientEventsNow(t *testing.T) {
	b := newEventBackend()
	c := Dial(serve(t, b))
	defer c.Close()
	var got []events.Event
	err := c.Events(eventsCtx(t), true, func(e events.Event) error {
		got = append(got, e)
		if e.Kind == events.KindExistsEnd {
			// The stream subscribed before sending the current state.
			b.bus.Publish(events.Event{Time: at, Kind: "role", Volume: "vol0", Old: "primary", New: "secondary"})
		}
		if !e.Initial {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("Events: %v", err)
	}
	want := []events.Event{
		{Time: at, Kind: "disk", Volume: "vol0", New: "UpToDate", Initial: true},
		{Time: at, Kind: "role", Volume: "vol0", New: "primary", Detail: "epoch 3", Initial: true},
		{Kind: "exists-end", Initial: true},
		{Seq: 1, Time: at, Kind: "role", Volume: "vol0", Old: "primary", New: "secondary"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("events:\n got %+v\nwant %+v", got, want)
	}
}

func TestClientEventsLiveOnly(t *testing.T) {
	b := newEventBackend()
	c := Dial(serve(t, b))
	defer c.Close()
	ctx := eventsCtx(t)
	// Nothing says when the stream has subscribed: publish until an event
	// arrives.
	pubCtx, stopPub := context.WithCancel(ctx)
	defer stopPub()
	go func() {
		for pubCtx.Err() == nil {
			b.bus.Publish(events.Event{Kind: "leader", New: "node2"})
			time.Sleep(5 * time.Millisecond)
		}
	}()
	var first events.Event
	err := c.Events(ctx, false, func(e events.Event) error {
		first = e
		return errStop
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("Events: %v", err)
	}
	if first.Kind != "leader" || first.Initial || first.Seq == 0 {
		t.Errorf("first event with now=false: %+v", first)
	}
}

func TestClientEventsContextEnds(t *testing.T) {
	c := Dial(serve(t, newEventBackend()))
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	err := c.Events(ctx, true, func(e events.Event) error {
		n++
		if e.Kind == events.KindExistsEnd {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || n != 3 {
		t.Errorf("Events after cancel: %v after %d events", err, n)
	}
	// A context that is already over fails before any event.
	if err := c.Events(ctx, true, func(events.Event) error { t.Error("event"); return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("Events with a cancelled context: %v", err)
	}
}

func TestClientEventsWithoutSource(t *testing.T) {
	c := Dial(serve(t, &fakeBackend{}))
	defer c.Close()
	err := c.Events(eventsCtx(t), true, func(events.Event) error { return nil })
	var se *ServerError
	if !errors.As(err, &se) || se.Code != http.StatusNotFound || se.Message != "this daemon has no event stream" || !errors.Is(err, ErrNotFound) {
		t.Errorf("Events without an EventSource: %#v", err)
	}
	body, code := rawGet(t, serve(t, &fakeBackend{}), http.MethodGet, "/v1/events")
	if code != http.StatusNotFound || !strings.Contains(body, `"error": "this daemon has no event stream"`) {
		t.Errorf("raw: %d %s", code, body)
	}
}

// streamLines opens GET path on socket and returns the response and a
// function that reads the next line.
func streamLines(t *testing.T, socket, path string) (*http.Response, func() string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	req, err := http.NewRequestWithContext(eventsCtx(t), http.MethodGet, "http://blockrepd"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close(); hc.CloseIdleConnections() })
	br := bufio.NewReader(resp.Body)
	return resp, func() string {
		t.Helper()
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v (got %q)", err, line)
		}
		return line
	}
}

func TestEventsRawStream(t *testing.T) {
	b := newEventBackend()
	b.current = b.current[:1]
	for _, k := range []string{"a", "b", "c"} {
		b.bus.Publish(events.Event{Time: at, Kind: k})
	}
	sock := serve(t, b)

	resp, next := streamLines(t, sock, "/v1/events")
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" || resp.StatusCode != http.StatusOK {
		t.Errorf("status %d, Content-Type %q", resp.StatusCode, ct)
	}
	for _, want := range []string{
		`{"time":"2026-11-26T01:02:03Z","kind":"disk","volume":"vol0","new":"UpToDate","initial":true}` + "\n",
		`{"kind":"exists-end","initial":true}` + "\n",
	} {
		if got := next(); got != want {
			t.Errorf("line %q, want %q", got, want)
		}
	}

	// since replays the kept events after it, then goes on live.
	_, next = streamLines(t, sock, "/v1/events?now=0&since=1")
	for _, want := range []string{`"seq":2,`, `"seq":3,`} {
		if got := next(); !strings.HasPrefix(got, "{"+want) {
			t.Errorf("line %q, want %s", got, want)
		}
	}
	b.bus.Publish(events.Event{Time: at, Kind: "d"})
	if got := next(); !strings.HasPrefix(got, `{"seq":4,`) {
		t.Errorf("live line %q, want seq 4", got)
	}

	// now=1 with since: the current state, the marker, the replay.
	_, next = streamLines(t, sock, "/v1/events?since=3")
	for _, want := range []string{`"kind":"disk"`, `"kind":"exists-end"`, `"seq":4,`} {
		if got := next(); !strings.Contains(got, want) {
			t.Errorf("line %q, want %s", got, want)
		}
	}
}

func TestEventsBadQuery(t *testing.T) {
	sock := serve(t, newEventBackend())
	for _, tt := range []struct {
		path, want string
		code       int
	}{
		{"/v1/events?now=maybe", `events: now=\"maybe\": want 1 or 0`, 400},
		{"/v1/events?since=-1", `events: since=\"-1\": want an event number (0 or more)`, 400},
		{"/v1/events?since=", `events: since=\"\": want an event number`, 400},
		{"/v1/events?follow=1", `events: unknown parameter \"follow\" (known: now, since)`, 400},
	} {
		body, code := rawGet(t, sock, http.MethodGet, tt.path)
		if code != tt.code || !strings.Contains(body, tt.want) {
			t.Errorf("%s: %d %s, want %d %s", tt.path, code, body, tt.code, tt.want)
		}
	}
	body, code := rawGet(t, sock, http.MethodPost, "/v1/events")
	if code != http.StatusMethodNotAllowed || !strings.Contains(body, "use GET") {
		t.Errorf("POST: %d %s", code, body)
	}
}

// serveWith is serve with the server's timeouts shortened.
func serveWith(t *testing.T, b Backend, timeout time.Duration) (string, *http.Server) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ctl.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(b, slog.New(slog.DiscardHandler))
	srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout = timeout, timeout, timeout
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return path, srv
}

// TestEventsOutlastServerTimeouts checks that a stream is not cut by the
// server's read and write timeouts, which suit requests.
func TestEventsOutlastServerTimeouts(t *testing.T) {
	b := newEventBackend()
	sock, _ := serveWith(t, b, 200*time.Millisecond)
	c := Dial(sock)
	defer c.Close()
	var live []events.Event
	err := c.Events(eventsCtx(t), true, func(e events.Event) error {
		if e.Kind == events.KindExistsEnd {
			go func() {
				time.Sleep(time.Second) // 5 times the timeouts
				b.bus.Publish(events.Event{Kind: "late"})
			}()
		}
		if !e.Initial {
			live = append(live, e)
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) || len(live) != 1 || live[0].Kind != "late" {
		t.Errorf("Events: %v, live %+v", err, live)
	}
}

// TestShutdownEndsStreams checks that a stream does not hold up the
// server's Shutdown.
func TestShutdownEndsStreams(t *testing.T) {
	b := newEventBackend()
	sock, srv := serveWith(t, b, 5*time.Second)
	c := Dial(sock)
	defer c.Close()
	result := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		result <- c.Events(context.Background(), true, func(e events.Event) error {
			if e.Kind == events.KindExistsEnd {
				close(started)
			}
			return nil
		})
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown with a stream open: %v", err)
	}
	select {
	case err := <-result:
		if !errors.Is(err, io.EOF) || !strings.Contains(err.Error(), "ended the event stream") {
			t.Errorf("Events after shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Events did not return after the server shut down")
	}
}

func TestEventsClientRejectsGarbage(t *testing.T) {
	b := newEventBackend()
	b.current = []events.Event{{Kind: "x", Detail: strings.Repeat("d", maxEventLine)}}
	c := Dial(serve(t, b))
	defer c.Close()
	err := c.Events(eventsCtx(t), true, func(events.Event) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "a line is over") {
		t.Errorf("Events with a huge line: %v", err)
	}
}
