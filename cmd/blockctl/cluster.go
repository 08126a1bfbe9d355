package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/blockrep/blockrep/api"
)

// switchoverTimeout is the default --timeout of promote and demote: a
// switchover waits for the target to catch up, which can take as long as a
// resync.
const switchoverTimeout = 60 * time.Second

// clusterRequest is a parsed promote, demote or cluster command. Unlike a
// controlRequest, the daemon answers it once it is done.
type clusterRequest struct {
	// what says what is asked: "promote node2 for vol0".
	what string
	// timeout bounds the request.
	timeout time.Duration
	// slow is set for a switchover, which may go on after a timeout.
	slow bool
	// warning, if set, is printed on success before the note.
	warning string
	// do carries the request out and returns the daemon's note; done is
	// printed instead when the note is empty.
	do   func(ctx context.Context, c *api.Client) (note string, err error)
	done string
}

// parseSwitchover parses `promote NODE [VOLUME] [--force] [--reason TEXT]
// [--timeout D]` and `demote [VOLUME] [--timeout D]`.
func parseSwitchover(cmd string, args []string) (clusterRequest, error) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // run prints the usage
	timeout := fs.Duration("timeout", switchoverTimeout, "how long to wait for the switchover")
	var force bool
	var reason string
	if cmd == "promote" {
		fs.BoolVar(&force, "force", false, "promote at once, whatever the node's disk")
		fs.StringVar(&reason, "reason", "", "why, for the log")
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return clusterRequest{}, usageErr(cmd, err)
	}
	if *timeout <= 0 {
		return clusterRequest{}, usagef("%s: --timeout %s is not positive", cmd, *timeout)
	}
	if cmd == "demote" {
		if len(pos) > 1 {
			return clusterRequest{}, usagef("demote: unexpected argument %q", pos[1])
		}
		volume := append(pos, "")[0]
		what := fmt.Sprintf("demote %s", volumeName(volume))
		return clusterRequest{what: what, timeout: *timeout, slow: true, done: what + ": done",
			do: func(ctx context.Context, c *api.Client) (string, error) { return c.Demote(ctx, volume) }}, nil
	}

	switch {
	case len(pos) == 0:
		return clusterRequest{}, usagef("promote: name the node to promote")
	case len(pos) > 2:
		return clusterRequest{}, usagef("promote: unexpected argument %q", pos[2])
	case reason != "" && !force:
		return clusterRequest{}, usagef("promote: --reason goes with --force (the log gives it for a forced promotion)")
	}
	node := pos[0]
	volume := append(pos, "")[1]
	what := fmt.Sprintf("promote %s for %s", node, volumeName(volume))
	req := clusterRequest{what: what, timeout: *timeout, slow: true, done: what + ": done",
		do: func(ctx context.Context, c *api.Client) (string, error) {
			return c.Promote(ctx, volume, node, force, reason)
		}}
	if force {
		req.what += " (forced)"
		req.done = req.what + ": done"
		req.warning = fmt.Sprintf("warning: %s was promoted by force: writes only the other replicas held may be lost", node)
	}
	return req, nil
}

// parseCluster parses `cluster add NAME ADDRESS` and `cluster remove NAME
// [--force --reason TEXT]`.
func parseCluster(args []string) (clusterRequest, error) {
	if len(args) == 0 {
		return clusterRequest{}, usagef("cluster: give add or remove")
	}
	sub, args := args[0], args[1:]
	cmd := "cluster " + sub
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // run prints the usage
	var force bool
	var reason string
	switch sub {
	case "add":
	case "remove":
		fs.BoolVar(&force, "force", false, "remove even the last UpToDate replica of a volume")
		fs.StringVar(&reason, "reason", "", "why, for the log")
	case "-h", "-help", "--help", "help":
		return clusterRequest{}, flag.ErrHelp
	default:
		return clusterRequest{}, usagef("cluster: unknown subcommand %q (add or remove)", sub)
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return clusterRequest{}, usageErr(cmd, err)
	}
	if sub == "add" {
		if len(pos) < 2 {
			return clusterRequest{}, usagef("cluster add: give the node's NAME and ADDRESS (its cluster.listen)")
		}
		if len(pos) > 2 {
			return clusterRequest{}, usagef("cluster add: unexpected argument %q", pos[2])
		}
		name, addr := pos[0], pos[1]
		return clusterRequest{what: "add " + name, timeout: requestTimeout,
			done: fmt.Sprintf("added %s (%s) to the cluster", name, addr),
			do: func(ctx context.Context, c *api.Client) (string, error) {
				return "", c.AddMember(ctx, name, addr)
			}}, nil
	}
	switch {
	case len(pos) == 0:
		return clusterRequest{}, usagef("cluster remove: name the node to remove")
	case len(pos) > 1:
		return clusterRequest{}, usagef("cluster remove: unexpected argument %q", pos[1])
	case reason != "" && !force:
		return clusterRequest{}, usagef("cluster remove: --reason goes with --force (the log gives it for a forced removal)")
	}
	name := pos[0]
	done := fmt.Sprintf("removed %s from the cluster", name)
	if force {
		done += " (forced)"
	}
	return clusterRequest{what: "remove " + name, timeout: requestTimeout, done: done,
		do: func(ctx context.Context, c *api.Client) (string, error) {
			return "", c.RemoveMember(ctx, name, force, reason)
		}}, nil
}

// clusterCommand sends req to the daemon and prints its note.
func clusterCommand(t target, req clusterRequest, stdout io.Writer) error {
	var note string
	err := withClient(t, req.timeout, func(ctx context.Context, c *api.Client) (err error) {
		note, err = req.do(ctx, c)
		if err != nil && req.slow && errors.Is(ctx.Err(), context.DeadlineExceeded) &&
			!errors.As(err, new(*api.ConnError)) && !errors.As(err, new(*dialError)) {
			return fmt.Errorf("%s: no answer within %s (--timeout): the switchover may be unfinished; see blockctl status", req.what, req.timeout)
		}
		return err
	})
	if err != nil {
		return err
	}
	if req.warning != "" {
		fmt.Fprintln(stdout, req.warning)
	}
	if note == "" {
		note = req.done
	}
	_, err = fmt.Fprintln(stdout, note)
	return err
}
