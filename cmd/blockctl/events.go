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

	"github.com/blockrep/blockrep/events"
)

// eventsRequest is a parsed events command.
type eventsRequest struct {
	output string // "text" or "json"
	now    bool   // start with the current state
}

// parseEvents parses the arguments of `events [-o text|json] [--now=false]`.
func parseEvents(args []string) (eventsRequest, error) {
	fs := flag.NewFlagSet("events", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // run prints the usage
	req := eventsRequest{}
	fs.StringVar(&req.output, "o", "text", "output format")
	fs.BoolVar(&req.now, "now", true, "start with the current state")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return req, usageErr("events", err)
	}
	if len(pos) > 0 {
		return req, usagef("events: unexpected argument %q", pos[0])
	}
	if req.output != "text" && req.output != "json" {
		return req, usagef("events: output format %q is not text or json", req.output)
	}
	return req, nil
}

// watchEvents prints the daemon's events, one a line, until SIGINT or
// SIGTERM, which end it successfully.
func watchEvents(t target, req eventsRequest, stdout io.Writer) error {
	c, err := t.client()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = c.Events(ctx, req.now, func(e events.Event) error {
		var line []byte
		if req.output == "json" {
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
	if ctx.Err() != nil {
		return nil // interrupted: the normal end
	}
	return err
}
