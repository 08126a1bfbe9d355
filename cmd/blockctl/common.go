package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/blockrep/blockrep/api"
)

// The output formats of -o.
const (
	formatTable = "table"
	formatText  = "text"
	formatJSON  = "json"
)

// commonFlags are the flags every command takes, spelt and meaning the
// same everywhere: -o FORMAT and --timeout DURATION. Given before the
// command they apply to it; given after it they override those.
type commonFlags struct {
	output  string // -o as given; "" when not given
	timeout string // --timeout as given; "" when not given
}

// register defines -o and --timeout on fs, with c's values as the
// defaults, writing into c.
func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.output, "o", c.output, "output format")
	fs.StringVar(&c.timeout, "timeout", c.timeout, "how long to wait for the daemon")
}

// commandKind says what a command makes of the common flags: the -o
// formats it prints, its default first, and its default --timeout.
type commandKind struct {
	formats []string
	timeout time.Duration
}

var (
	// statusKind: status and raid status.
	statusKind = commandKind{formats: []string{formatTable, formatJSON}, timeout: requestTimeout}
	// actionKind: the commands that change the node, but promote and demote.
	actionKind = commandKind{formats: []string{formatText, formatJSON}, timeout: requestTimeout}
	// switchoverKind: promote and demote, which wait for the switchover.
	switchoverKind = commandKind{formats: []string{formatText, formatJSON}, timeout: switchoverTimeout}
	// eventsKind: events, whose --timeout bounds the wait for the first line.
	eventsKind = commandKind{formats: []string{formatText, formatJSON}, timeout: requestTimeout}
)

// options are the common flags resolved for one command.
type options struct {
	output  string        // one of the command's formats
	timeout time.Duration // > 0
}

// parseTimeout parses the value of --timeout: a positive duration.
func parseTimeout(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("--timeout %q is not a duration (such as 30s or 2m)", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("--timeout %s is not positive", s)
	}
	return d, nil
}

// check refuses a --timeout given before the command that is not a
// positive duration, even when the command overrides it.
func (c commonFlags) check() error {
	if c.timeout == "" {
		return nil
	}
	_, err := parseTimeout(c.timeout)
	if err != nil {
		return usagef("%v", err)
	}
	return nil
}

// resolve checks c for the command cmd of kind k and fills in k's
// defaults.
func (c commonFlags) resolve(cmd string, k commandKind) (options, error) {
	opts := options{output: k.formats[0], timeout: k.timeout}
	if c.output != "" {
		if !slices.Contains(k.formats, c.output) {
			return options{}, usagef("%s: output format %q is not %s", cmd, c.output, strings.Join(k.formats, " or "))
		}
		opts.output = c.output
	}
	if c.timeout != "" {
		d, err := parseTimeout(c.timeout)
		if err != nil {
			return options{}, usagef("%s: %v", cmd, err)
		}
		opts.timeout = d
	}
	return opts, nil
}

// parseArgs is the one parser of a command's arguments: it parses args
// of the command cmd (of kind k) with the common flags, over those given
// before the command, and the flags define adds (define may be nil), and
// returns the positional arguments and the resolved common flags.
func parseArgs(cmd string, args []string, common commonFlags, k commandKind, define func(fs *flag.FlagSet)) ([]string, options, error) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // run prints the usage
	common.register(fs)      // a copy: the command's own values override
	if define != nil {
		define(fs)
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return nil, options{}, usageErr(cmd, err)
	}
	opts, err := common.resolve(cmd, k)
	if err != nil {
		return nil, options{}, err
	}
	return pos, opts, nil
}

// parseGroup parses the arguments of a command group (cluster, raid): the
// common flags that come between the group and its subcommand, and the
// subcommand ("" when there is none).
func parseGroup(group string, args []string, common commonFlags) (sub string, rest []string, _ commonFlags, err error) {
	fs := flag.NewFlagSet(group, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // run prints the usage
	common.register(fs)
	if err := fs.Parse(args); err != nil {
		return "", nil, common, usageErr(group, err)
	}
	if err := common.check(); err != nil {
		return "", nil, common, err
	}
	if fs.NArg() == 0 {
		return "", nil, common, nil
	}
	return fs.Arg(0), fs.Args()[1:], common, nil
}

// action is a parsed command that asks the daemon for a change: connect,
// disconnect, resync, verify, invalidate, primary, secondary, promote,
// demote, cluster add|remove and raid fail|remove|add|replace|scrub.
type action struct {
	// command is the command as typed: "resync", "cluster add", "raid scrub".
	command string
	// what says what is asked: "connect vol0 to node2".
	what string
	opts options
	// timeoutHint says what a timeout means for this action.
	timeoutHint string
	// do carries the action out.
	do func(ctx context.Context, c *api.Client) (actionResult, error)
}

// actionResult is what an action came to, as the daemon answered it.
type actionResult struct {
	// done: the change is done once the daemon answers (promote, demote,
	// cluster, raid remove of a spare); otherwise the daemon accepted it
	// and carries it out in the background.
	done bool
	// note is the daemon's note (promote, demote), or what its answer says
	// beyond success ("member 1, rebuilding"); "" for nothing.
	note string
	// warning, if set, is printed before the outcome, after "warning: ".
	warning string
	// line is the line printed in text; "" for "WHAT: requested".
	line string
}

// actionTimeoutHint is what a timeout means for an action other than a
// switchover.
const actionTimeoutHint = "the daemon may still carry it out; see blockctl status"

// actionJSON is the one object an action prints with -o json, on one
// line, on success and on failure.
type actionJSON struct {
	// OK says whether the daemon accepted the action.
	OK bool `json:"ok"`
	// Command is the command as typed: "resync", "cluster add".
	Command string `json:"command"`
	// What says what was asked, as the text output does.
	What string `json:"what"`
	// Result, on success, is "requested" (the daemon carries the change
	// out in the background: see status) or "done".
	Result string `json:"result,omitempty"`
	// Note is the daemon's note or what its answer said, if anything.
	Note string `json:"note,omitempty"`
	// Warning is set for a forced promotion.
	Warning string `json:"warning,omitempty"`
	// Error, on failure, is the message blockctl prints on stderr.
	Error string `json:"error,omitempty"`
	// Class, on failure, is errorClass's name for the error.
	Class string `json:"class,omitempty"`
}

// runAction sends a to the daemon and prints its outcome as a.opts.output
// says.
func runAction(t target, a action, stdout io.Writer) error {
	var r actionResult
	err := withClient(t, a.what, a.timeoutHint, a.opts.timeout, func(ctx context.Context, c *api.Client) (err error) {
		r, err = a.do(ctx, c)
		return err
	})
	if a.opts.output == formatJSON {
		out := actionJSON{OK: err == nil, Command: a.command, What: a.what}
		if err != nil {
			out.Error, out.Class = errorText(err), errorClass(err)
		} else {
			out.Result, out.Note, out.Warning = "requested", r.note, r.warning
			if r.done {
				out.Result = "done"
			}
		}
		b, jerr := json.Marshal(out)
		if jerr == nil {
			_, jerr = stdout.Write(append(b, '\n'))
		}
		if err != nil {
			return err
		}
		return jerr
	}
	if err != nil {
		return err
	}
	if r.warning != "" {
		fmt.Fprintln(stdout, "warning: "+r.warning)
	}
	line := r.line
	if line == "" {
		line = a.what + ": requested"
	}
	_, err = fmt.Fprintln(stdout, line)
	return err
}

// errorText is the message blockctl prints for err (run on stderr, -o json
// in "error"): a failed --node handshake alone, without the api client's
// "talking to blockrepd" and HTTP request around it, which it says all.
func errorText(err error) string {
	var de *dialError
	if errors.As(err, &de) {
		return de.Error()
	}
	return err.Error()
}

// errorClass names the class of err, a failed action's error, for the
// "class" of -o json:
//
//	invalid      the daemon refused an argument (HTTP 400)
//	not_found    no such volume, peer, node or member (HTTP 404), or a
//	             command this daemon does not serve
//	conflict     not possible in the current state (HTTP 409)
//	unavailable  no quorum, or this member has not caught up (HTTP 503)
//	unreachable  no answer: the daemon cannot be reached, or did not
//	             answer within --timeout
//	failed       anything else
//
// This is the one place that maps errors to classes.
func errorClass(err error) string {
	switch {
	case errors.Is(err, api.ErrUnavailable): // first: it may wrap another class
		return "unavailable"
	case errors.Is(err, api.ErrInvalid):
		return "invalid"
	case errors.Is(err, api.ErrNotFound):
		return "not_found"
	case errors.Is(err, api.ErrConflict):
		return "conflict"
	case errors.As(err, new(*api.ConnError)), errors.As(err, new(*dialError)), errors.Is(err, context.DeadlineExceeded):
		return "unreachable"
	}
	return "failed"
}

// timeoutError says that the daemon did not answer within --timeout.
type timeoutError struct {
	what    string        // what was asked: "status", "resync vol0 ..."
	timeout time.Duration // --timeout
	hint    string        // what it means, if anything
}

func (e *timeoutError) Error() string {
	s := fmt.Sprintf("%s: no answer within %s (--timeout)", e.what, e.timeout)
	if e.hint != "" {
		s += ": " + e.hint
	}
	return s
}

// Unwrap makes a timeoutError a context.DeadlineExceeded.
func (e *timeoutError) Unwrap() error { return context.DeadlineExceeded }

// withClient runs f with a client for t's daemon and a context bounded by
// timeout. When the daemon does not answer in time, the error is a
// *timeoutError for what, with hint.
func withClient(t target, what, hint string, timeout time.Duration, f func(ctx context.Context, c *api.Client) error) error {
	c, err := t.client()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err = f(ctx, c)
	// A connection that could not be made says so itself.
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) &&
		!errors.As(err, new(*api.ConnError)) && !errors.As(err, new(*dialError)) {
		return &timeoutError{what: what, timeout: timeout, hint: hint}
	}
	return err
}
