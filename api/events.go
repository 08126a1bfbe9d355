package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/blockrep/blockrep/events"
)

// EventSource is implemented by a Backend that has an event stream; GET
// /v1/events answers 404 for a Backend that does not implement it.
//
//	GET /v1/events?now=1&since=SEQ   200 application/x-ndjson, one events.Event a line
//
// With now=1 (the default) the stream starts with CurrentEvents (Initial
// set) and a {"kind":"exists-end","initial":true} line; now=0 leaves them
// out. since=SEQ then replays the kept events after SEQ (a "lost" event
// first when some were dropped). Then come the live events, each line
// flushed as it is written, until the client goes away or the daemon shuts
// down.
type EventSource interface {
	// Events returns the bus the daemon publishes its events on.
	Events() *events.Bus
	// CurrentEvents describes the current state as events (a Watcher's
	// Current).
	CurrentEvents() []events.Event
}

// maxEventLine bounds one line of the event stream the client reads.
const maxEventLine = 1 << 20

// streamHeaderTimeout bounds how long Client.Events waits for the daemon to
// answer; the stream itself then runs until its context ends.
const streamHeaderTimeout = 10 * time.Second

// eventsHandler serves GET /v1/events for b.
func eventsHandler(b Backend) http.Handler {
	src, ok := b.(EventSource)
	return method(http.MethodGet, func(w http.ResponseWriter, r *http.Request) {
		if !ok {
			writeError(w, http.StatusNotFound, "this daemon has no event stream")
			return
		}
		q := r.URL.Query()
		now := true
		if v := q.Get("now"); v != "" {
			switch v {
			case "1", "true":
				now = true
			case "0", "false":
				now = false
			default:
				writeError(w, http.StatusBadRequest, fmt.Sprintf("events: now=%q: want 1 or 0", v))
				return
			}
		}
		var since uint64
		_, sinceSet := q["since"]
		if sinceSet {
			n, err := strconv.ParseUint(q.Get("since"), 10, 64)
			if err != nil {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("events: since=%q: want an event number (0 or more)", q.Get("since")))
				return
			}
			since = n
		}
		for k := range q {
			if k != "now" && k != "since" {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("events: unknown parameter %q (known: now, since)", k))
				return
			}
		}

		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("Cache-Control", "no-store")
		if r.Method == http.MethodHead {
			w.WriteHeader(http.StatusOK)
			return
		}
		// The server's write timeout suits replies, not a stream that lasts
		// as long as the client wants it: lift it for this response. (Its
		// read timeout is already lifted: the server clears it for the
		// background read that notices the client going away.)
		rc := http.NewResponseController(w)
		_ = rc.SetWriteDeadline(time.Time{})
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		stop := context.AfterFunc(serverShutdown(r), cancel)
		defer stop()

		bus := src.Events()
		// Subscribe before taking the current state, so that no change
		// falls between the two (one may show in both).
		var sub *events.Subscription
		if sinceSet {
			sub = bus.SubscribeSince(ctx, since)
		} else {
			sub = bus.Subscribe(ctx)
		}
		w.WriteHeader(http.StatusOK)
		enc := json.NewEncoder(w)
		send := func(e events.Event) error {
			if err := enc.Encode(e); err != nil {
				return err
			}
			return rc.Flush()
		}
		if now {
			for _, e := range src.CurrentEvents() {
				e.Initial = true
				if send(e) != nil {
					return
				}
			}
			if send(events.Event{Kind: events.KindExistsEnd, Initial: true}) != nil {
				return
			}
		} else if rc.Flush() != nil {
			return
		}
		for {
			e, err := sub.Next(ctx)
			if err != nil || send(e) != nil {
				return
			}
		}
	})
}

// shutdowns maps each *http.Server that served an event stream to a
// context that ends when the server shuts down, so that the streams end
// and Shutdown does not wait for them until its deadline. A server is
// added once and kept, which bounds the map by the servers of the process.
var shutdowns sync.Map // *http.Server -> context.Context

// serverShutdown returns a context that ends when the server of r starts
// shutting down (never, when r did not come from an http.Server).
func serverShutdown(r *http.Request) context.Context {
	srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server)
	if !ok {
		return context.Background()
	}
	if ctx, ok := shutdowns.Load(srv); ok {
		return ctx.(context.Context)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if prev, loaded := shutdowns.LoadOrStore(srv, ctx); loaded {
		cancel()
		return prev.(context.Context)
	}
	srv.RegisterOnShutdown(cancel)
	return ctx
}

// Events streams the daemon's events to fn, one at a time, until ctx ends
// (it then returns ctx's error), fn returns an error (returned as it is)
// or the daemon ends the stream (an error wrapping io.EOF). With now, the
// stream starts with the current state as events with Initial set and a
// events.KindExistsEnd marker. The wait for the daemon's answer is bounded
// by 10 seconds; the stream itself is not.
func (c *Client) Events(ctx context.Context, now bool, fn func(events.Event) error) error {
	q := url.Values{"now": {"0"}}
	if now {
		q.Set("now", "1")
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The client has no request timeout of its own (and must not: it
	// would cut the stream), so bound the wait for the answer here.
	timer := time.AfterFunc(streamHeaderTimeout, cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://blockrepd/v1/events?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if !timer.Stop() {
		// The timer fired: the request is or is about to be cancelled.
		if err == nil {
			resp.Body.Close()
		}
		return &ConnError{Socket: c.socket, Err: fmt.Errorf("no answer within %v", streamHeaderTimeout), Hint: "the daemon did not answer in time"}
	}
	if err != nil {
		if perr := parent.Err(); perr != nil {
			return perr
		}
		return c.connError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		reply, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
		var eb errorBody
		_ = json.Unmarshal(reply, &eb)
		return &ServerError{Code: resp.StatusCode, Message: eb.Error}
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), maxEventLine)
	for sc.Scan() {
		var e events.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("decoding event from blockrepd at %s: %w", c.socket, err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		// The caller's context, as the header timer is stopped.
		return err
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("event stream from blockrepd at %s: a line is over %d bytes", c.socket, maxEventLine)
		}
		return fmt.Errorf("reading the event stream from blockrepd at %s: %w", c.socket, err)
	}
	return fmt.Errorf("blockrepd at %s ended the event stream: %w", c.socket, io.EOF)
}
