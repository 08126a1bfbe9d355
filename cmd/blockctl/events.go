package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/blockrep/blockrep/events"
)

// eventsRequest is a parsed events command.
type eventsRequest struct {
	opts options // output "text" or "json"; timeout bounds the wait for the first line
	now  bool    // print the current state first
}

// parseEvents parses the arguments of `events [-o text|json] [--now=false]`.
func parseEvents(args []string, common commonFlags) (eventsRequest, error) {
	req := eventsRequest{}
	pos, opts, err := parseArgs("events", args, common, eventsKind, func(fs *flag.FlagSet) {
		fs.BoolVar(&req.now, "now", true, "start with the current state")
	})
	if err != nil {
		return req, err
	}
	if len(pos) > 0 {
		return req, usagef("events: unexpected argument %q", pos[0])
	}
	req.opts = opts
	return req, nil
}

// watchEvents prints the daemon's events, one a line, until SIGINT or
// SIGTERM, which end it successfully.
//
// req.opts.timeout bounds the time to connect and get the stream's first
// line, not the stream. So that the first line comes at once whatever
// happens on the node, the stream always starts with the current state:
// without req.now blockctl leaves it out (the Initial events and the
// exists-end line) instead of asking the daemon to.
func watchEvents(t target, req eventsRequest, stdout io.Writer) error {
	c, err := t.client()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	streamCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timedOut := &timeoutError{what: "events", timeout: req.opts.timeout}
	timer := time.AfterFunc(req.opts.timeout, func() { cancel(timedOut) })
	defer timer.Stop()
	started := false
	err = c.Events(streamCtx, true, func(e events.Event) error {
		if !started {
			started = true
			if !timer.Stop() {
				return timedOut // it fired: the stream is being cancelled
			}
		}
		if e.Initial && !req.now {
			return nil
		}
		var line []byte
		if req.opts.output == formatJSON {
			b, err := json.Marshal(e)
			if err != nil {
				return err
			}
			line = append(b, '\n')
		} else {
			line = []byte(e.String() + "\n")
		}
		if _, err := stdout.Write(line); err != nil {
			return fmt.Errorf("writing an event: %w", err)
		}
		return nil
	})
	switch {
	case ctx.Err() != nil:
		return nil // interrupted: the normal end
	case streamCtx.Err() != nil:
		return context.Cause(streamCtx) // only the timer cancels it
	}
	return err
}
