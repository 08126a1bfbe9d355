package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/blockrep/blockrep/api"
)

// switchoverTimeout is the default --timeout of promote and demote: a
// switchover waits for the target to catch up, which can take as long as a
// resync.
const switchoverTimeout = 60 * time.Second

// switchoverTimeoutHint is what a timeout means for promote and demote.
const switchoverTimeoutHint = "the switchover may be unfinished; see blockctl status"

// parseSwitchover parses `promote NODE [VOLUME] [--force] [--reason TEXT]`
// and `demote [VOLUME]`. They answer once the switchover is done, within
// --timeout (default switchoverTimeout).
func parseSwitchover(cmd string, args []string, common commonFlags) (action, error) {
	var force bool
	var reason string
	pos, opts, err := parseArgs(cmd, args, common, switchoverKind, func(fs *flag.FlagSet) {
		if cmd == "promote" {
			fs.BoolVar(&force, "force", false, "promote at once, whatever the node's disk")
			fs.StringVar(&reason, "reason", "", "why, for the log")
		}
	})
	if err != nil {
		return action{}, err
	}
	a := action{command: cmd, opts: opts, timeoutHint: switchoverTimeoutHint}
	if cmd == "demote" {
		if len(pos) > 1 {
			return action{}, usagef("demote: unexpected argument %q", pos[1])
		}
		volume := append(pos, "")[0]
		a.what = fmt.Sprintf("demote %s", volumeName(volume))
		result := switchoverResult(a.what, "")
		a.do = func(ctx context.Context, c *api.Client) (actionResult, error) {
			return result(c.Demote(ctx, volume))
		}
		return a, nil
	}

	switch {
	case len(pos) == 0:
		return action{}, usagef("promote: name the node to promote")
	case len(pos) > 2:
		return action{}, usagef("promote: unexpected argument %q", pos[2])
	case reason != "" && !force:
		return action{}, usagef("promote: --reason goes with --force (the log gives it for a forced promotion)")
	}
	node := pos[0]
	volume := append(pos, "")[1]
	a.what = fmt.Sprintf("promote %s for %s", node, volumeName(volume))
	var warning string
	if force {
		a.what += " (forced)"
		warning = fmt.Sprintf("%s was promoted by force: writes only the other replicas held may be lost", node)
	}
	result := switchoverResult(a.what, warning)
	a.do = func(ctx context.Context, c *api.Client) (actionResult, error) {
		return result(c.Promote(ctx, volume, node, force, reason))
	}
	return a, nil
}

// switchoverResult returns the function that makes the daemon's answer
// to a switchover (what) the action's result: done, with the daemon's
// note as the line (else "WHAT: done") and warning, if set, before it.
func switchoverResult(what, warning string) func(note string, err error) (actionResult, error) {
	return func(note string, err error) (actionResult, error) {
		if err != nil {
			return actionResult{}, err
		}
		line := note
		if line == "" {
			line = what + ": done"
		}
		return actionResult{done: true, note: note, warning: warning, line: line}, nil
	}
}

// parseCluster parses `cluster add NAME ADDRESS` and `cluster remove NAME
// [--force --reason TEXT]`.
func parseCluster(args []string, common commonFlags) (action, error) {
	sub, args, common, err := parseGroup("cluster", args, common)
	if err != nil {
		return action{}, err
	}
	cmd := "cluster " + sub
	var force bool
	var reason string
	var define func(fs *flag.FlagSet)
	switch sub {
	case "":
		return action{}, usagef("cluster: give add or remove")
	case "add":
	case "remove":
		define = func(fs *flag.FlagSet) {
			fs.BoolVar(&force, "force", false, "remove even the last UpToDate replica of a volume")
			fs.StringVar(&reason, "reason", "", "why, for the log")
		}
	case "help":
		return action{}, flag.ErrHelp
	default:
		return action{}, usagef("cluster: unknown subcommand %q (add or remove)", sub)
	}
	pos, opts, err := parseArgs(cmd, args, common, actionKind, define)
	if err != nil {
		return action{}, err
	}
	a := action{command: cmd, opts: opts, timeoutHint: actionTimeoutHint}
	if sub == "add" {
		if len(pos) < 2 {
			return action{}, usagef("cluster add: give the node's NAME and ADDRESS (its cluster.listen)")
		}
		if len(pos) > 2 {
			return action{}, usagef("cluster add: unexpected argument %q", pos[2])
		}
		name, addr := pos[0], pos[1]
		a.what = fmt.Sprintf("add %s (%s) to the cluster", name, addr)
		a.do = func(ctx context.Context, c *api.Client) (actionResult, error) {
			if err := c.AddMember(ctx, name, addr); err != nil {
				return actionResult{}, err
			}
			return actionResult{done: true, line: fmt.Sprintf("added %s (%s) to the cluster", name, addr)}, nil
		}
		return a, nil
	}
	switch {
	case len(pos) == 0:
		return action{}, usagef("cluster remove: name the node to remove")
	case len(pos) > 1:
		return action{}, usagef("cluster remove: unexpected argument %q", pos[1])
	case reason != "" && !force:
		return action{}, usagef("cluster remove: --reason goes with --force (the log gives it for a forced removal)")
	}
	name := pos[0]
	a.what = fmt.Sprintf("remove %s from the cluster", name)
	done := fmt.Sprintf("removed %s from the cluster", name)
	if force {
		a.what += " (forced)"
		done += " (forced)"
	}
	a.do = func(ctx context.Context, c *api.Client) (actionResult, error) {
		if err := c.RemoveMember(ctx, name, force, reason); err != nil {
			return actionResult{}, err
		}
		return actionResult{done: true, line: done}, nil
	}
	return a, nil
}
