// Command blockctl controls a running blockrepd through its control socket,
// or a remote cluster member through its authenticated cluster port.
//
// Usage:
//
//	blockctl [-s SOCKET | -c CONFIG] [--node HOST:PORT [--secret-file PATH] [--cluster NAME]]
//	         [-o FORMAT] [--timeout DURATION] COMMAND [ARGS]
//
//	blockctl status     [-o table|json]
//	blockctl connect    [VOLUME [PEER]] [--discard-my-data]
//	blockctl disconnect [VOLUME [PEER]]
//	blockctl resync     [VOLUME [PEER]] [--checksum | --full]
//	blockctl verify     [VOLUME [PEER]]
//	blockctl invalidate [VOLUME]
//	blockctl primary    [VOLUME] [--force]
//	blockctl secondary  [VOLUME]
//	blockctl promote    NODE [VOLUME] [--force [--reason TEXT]]
//	blockctl demote     [VOLUME]
//	blockctl cluster add    NAME ADDRESS
//	blockctl cluster remove NAME [--force [--reason TEXT]]
//	blockctl events     [-o text|json] [--now=false]
//	blockctl raid status  [VOLUME] [-o table|json]
//	blockctl raid fail    MEMBER [VOLUME]
//	blockctl raid remove  MEMBER|PATH [VOLUME]
//	blockctl raid add     PATH [VOLUME]
//	blockctl raid replace MEMBER PATH [VOLUME]
//	blockctl raid scrub   [--repair] [VOLUME]
//
// An omitted VOLUME means the node's only volume (an error if it has
// several); an omitted PEER means every peer of the volume. A command's
// flags may come before or after its arguments; "--" ends them. A command
// that changes the node prints one line saying what it asked for once the
// daemon accepts it; what it sets off (a connection, a resync) goes on in
// the daemon, and status shows how it goes.
//
// Every command takes -o FORMAT and --timeout DURATION, spelt and meaning
// the same everywhere, before the command (blockctl -o json --timeout 5s
// status) or after it (blockctl status -o json), where they override the
// ones before it. -o is table (the default) or json for status and raid
// status; text (the default) or json for events and the commands that
// change the node; any other value is refused, naming the command and the
// value. --timeout is a positive duration (5s, 2m): how long blockctl
// waits for the daemon's answer, 10s by default, 60s for promote and
// demote; for events, how long it waits to connect and get the stream's
// first line (the stream itself runs until interrupted; blockctl always
// asks for the current state, which comes at once, and with --now=false
// leaves it out). No answer in time is an error: "WHAT: no answer within
// 5s (--timeout)".
//
// With -o json a command that changes the node (connect ... secondary,
// promote, demote, cluster add|remove, raid fail|remove|add|replace|scrub)
// prints one JSON object on one line on stdout. On success:
//
//	{"ok":true,"command":"resync","what":"resync vol0 with every peer (bitmap)","result":"requested"}
//
// command is the command as typed ("raid add", "cluster remove"); what
// says what was asked, as the text line does; result is "requested" (the
// daemon carries the change out in the background: see status) or
// "done" (promote, demote, cluster, raid remove of a spare); note, only
// when there is one, is the daemon's note (promote, demote) or what its
// answer adds ("member 1, rebuilding"); warning, for promote --force, the
// warning printed before the note. On failure blockctl still exits
// non-zero and prints the message on stderr, and on stdout:
//
//	{"ok":false,"command":"primary","what":"make vol0 primary","error":"blockrepd: set role: ... (HTTP 409)","class":"conflict"}
//
// class is invalid (the daemon refused an argument), not_found (no such
// volume, peer, node or member, or a command the daemon does not serve),
// conflict (not possible in the current state), unavailable (no quorum,
// or the member has not caught up), unreachable (no answer: the daemon
// cannot be reached or did not answer within --timeout) or failed
// (anything else). A bad command line (exit 2) prints no JSON. status -o
// json prints the daemon's status as the control API gives it, raid
// status -o json an array of the volumes' RAID states, events -o json an
// event a line.
//
// promote, demote and cluster work on a cluster member (a daemon whose
// configuration has a cluster table) and answer once they are done. promote moves VOLUME's
// primary role to NODE without losing writes: NODE catches up, the current
// primary steps down, NODE takes over; demote moves it to the best other
// UpToDate node. Both print the daemon's note and wait up to --timeout
// (default 60s, as a switchover lasts as long as the target's resync), not
// the 10s of the other commands; a timeout leaves the switchover perhaps
// unfinished, and says so. promote --force promotes NODE at once
// whatever its disk: an Outdated NODE loses the writes only the other
// replicas held, and blockctl prints a warning saying so before the note.
// --reason, only with --force, goes to the daemon's log. cluster add NAME
// ADDRESS adds a node (ADDRESS is its cluster.listen) to the Raft group;
// cluster remove takes one out, with --force even the last UpToDate replica
// of a volume. On a member, status also shows the cluster: this node's Raft
// state, the members (with their liveness on the leader), and per volume
// the primary, epoch, preferred node, lost primary, this node's lease and
// every replica's disk.
//
// raid works on a volume stored on a local RAID array (raid_members in its
// configuration). raid status shows the array's health, a row per member
// (index, path, state, the error that failed it), a progress bar for a
// running rebuild or scrub with its rate and ETA, the last scrub's findings
// and what opening the array did; without VOLUME every RAID volume, and
// with -o json an array of the volumes' RAID states. raid fail marks a
// member faulty (a hot spare, if the array has one, takes its slot and is
// rebuilt), raid remove takes a faulty member out of its slot, raid add
// puts a device in the lowest empty slot, or makes it a hot spare when no
// slot is empty, and raid replace in a faulty or empty one: both start
// rebuilding it in the background (a missing file is created at the
// volume's size). raid scrub checks every mirror or parity
// in the background; --repair also rewrites what does not check out. MEMBER
// is a member's index as raid status shows it. raid remove with the PATH of
// a hot spare instead takes the spare out of the array and zeroes its
// superblock (an argument that parses as an integer is a MEMBER; an absolute
// path never does); a spare the configuration names in raid_spares is added
// back at the node's next start unless it is taken out of there too, and
// blockctl says so. status shows a line per RAID
// volume. events shows the array's changes as raid-health, raid-member (the
// slot as peer=member1) and raid-op (idle, rebuild-running, rebuild-done,
// ...) events.
//
// The socket is -s, else the control_socket of the configuration named by
// -c, else $BLOCKREP_SOCKET, else the control_socket of
// /etc/blockrep/blockrepd.toml when that file exists, else
// /run/blockrep/blockrepd.sock.
//
// With --node HOST:PORT (the node's cluster.listen) every command goes to
// that node's control API over an authenticated TCP connection instead of
// the socket: blockctl proves it holds the cluster's shared secret, as a
// member does, under the node ID "blockctl-" and the host name. The secret
// is read from --secret-file (trailing whitespace is not part of it), the
// cluster name taken from --cluster; each one not given comes from
// cluster.secret_file or cluster.name of the configuration named by -c,
// else of /etc/blockrep/blockrepd.toml when that file exists. -s and
// $BLOCKREP_SOCKET do not apply.
//
// On a cluster member, every command that reads or changes the cluster
// state (status's cluster section, promote, demote, cluster add|remove)
// first makes sure the member's state is current: the member asks the
// leader for its commit index and waits until it has applied it (a read
// barrier), for at most two failover timeouts. When it cannot (no leader,
// no quorum, or it has not caught up, as right after a start), promote and
// demote do nothing and fail with "no quorum: cluster state on NODE may be
// stale" or "not caught up: ...", and status still answers but marks its
// cluster section STALE (in JSON: cluster.stale says why, and
// cluster.caught_up is false until the node was current once since it
// started).
//
// Exit status: 0 on success, 1 when the daemon cannot be reached, fails or
// refuses the command, 2 on a bad command line, 3 when a cluster member
// cannot confirm its cluster state is current (no quorum, or not caught up
// with the leader): nothing was done, and the command may be tried again.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/config"
)

// DefaultSocket is the control socket used when nothing else names one.
const DefaultSocket = "/run/blockrep/blockrepd.sock"

// DefaultConfig is the configuration file read for the socket when nothing
// else names one and the file exists.
const DefaultConfig = "/etc/blockrep/blockrepd.toml"

// EnvSocket is the environment variable that names the control socket.
const EnvSocket = "BLOCKREP_SOCKET"

// requestTimeout bounds one request to the daemon.
const requestTimeout = 10 * time.Second

const usage = `usage: blockctl [-s SOCKET | -c CONFIG] [--node HOST:PORT] [-o FORMAT] [--timeout DURATION] COMMAND [ARGS]

commands:
  status [-o table|json]
      show the node, its volumes, their RAID arrays and replication, the
      cluster (on a cluster member) and NBD clients
  connect [VOLUME [PEER]] [--discard-my-data]
      connect to the peer and keep retrying; --discard-my-data settles a
      split brain by giving up this node's writes since the split
  disconnect [VOLUME [PEER]]
      disconnect from the peer and stop retrying
  resync [VOLUME [PEER]] [--checksum | --full]
      send or fetch the blocks marked out of sync; --checksum compares every
      block and sends those that differ, --full sends every block
  verify [VOLUME [PEER]]
      compare every block with the peer and mark those that differ
  invalidate [VOLUME]
      mark the local disk Inconsistent, to be resynced from a peer
  primary [VOLUME] [--force]
      make the volume primary; --force even when its data cannot be
      confirmed current
  secondary [VOLUME]
      make the volume secondary
  promote NODE [VOLUME] [--force [--reason TEXT]] [--timeout 60s]
      cluster: move the volume's primary role to NODE once NODE is in sync,
      and print the outcome; --force promotes NODE at once even when its
      disk is Outdated, losing the writes only the other replicas held;
      --reason (with --force) goes to the log
  demote [VOLUME] [--timeout 60s]
      cluster: move the volume's primary role to the best other UpToDate
      node and print the outcome
  cluster add NAME ADDRESS
      cluster: add the node NAME, reachable at ADDRESS (its cluster.listen)
  cluster remove NAME [--force [--reason TEXT]]
      cluster: remove the node NAME; --force even when it holds the last
      UpToDate replica of a volume; --reason goes to the log
  events [-o text|json] [--now=false]
      print the node's events (role, disk, connection, ... changes) one a
      line as they happen, until interrupted; first the current state,
      marked initial and ended by an exists-end line, unless --now=false
  raid status [VOLUME] [-o table|json]
      show the volume's RAID array (every RAID volume without VOLUME): its
      health, members, a running rebuild or scrub and the last scrub
  raid fail MEMBER [VOLUME]
      mark the member (its index in raid status) faulty
  raid remove MEMBER|PATH [VOLUME]
      take the faulty member out of the array, or the hot spare PATH (an
      absolute path, never an integer) and zero its superblock; a spare
      in raid_spares comes back at the node's next start unless removed
      from the configuration too
  raid add PATH [VOLUME]
      put the file or device PATH in an empty slot and rebuild it, or
      make it a hot spare when no slot is empty
  raid replace MEMBER PATH [VOLUME]
      put PATH in the faulty or removed slot MEMBER and rebuild it
  raid scrub [--repair] [VOLUME]
      check every mirror copy or parity in the background; --repair
      rewrites what does not check out

  VOLUME defaults to the only volume, PEER to every peer of the volume.
  Flags may also follow the arguments; "--" ends them. promote and demote
  wait until the switchover is done, up to --timeout (default 60s); the
  other commands wait up to --timeout (default 10s).

every command takes (before it, or after it to override):
  -o FORMAT   table (the default) or json for status and raid status;
              text (the default) or json for events and for the commands
              that change the node; with json, such a command prints one
              object on one line on stdout, on failure too (with a
              non-zero exit):
                {"ok":true,"command":"resync","what":"...","result":"requested"}
                {"ok":false,"command":"resync","what":"...","error":"...","class":"conflict"}
              result is requested or done; note (what the daemon said)
              and warning (promote --force) come when there is one; class
              is invalid, not_found, conflict, unavailable, unreachable or
              failed
  --timeout DURATION
              how long to wait for the daemon's answer (default 10s,
              promote and demote 60s); for events, to connect and get the
              first line, not the stream

options:
  -s SOCKET   control socket of blockrepd (default $` + EnvSocket + `, else the one
              in ` + DefaultConfig + `, else ` + DefaultSocket + `)
  -c CONFIG   blockrepd's configuration file: its control socket, and with
              --node its cluster name and secret
  --node HOST:PORT
              talk to the cluster member at HOST:PORT (its cluster.listen)
              over an authenticated connection instead of the socket
  --secret-file PATH
              with --node: the cluster's shared secret (default
              cluster.secret_file of -c CONFIG, else of ` + DefaultConfig + `)
  --cluster NAME
              with --node: the cluster's name (default cluster.name of the
              same configuration)
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// usageError is a command-line error: run prints it with the usage and
// exits with status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitUnavailable is the exit status of a command a cluster member would
// not carry out because it cannot confirm its cluster state is current (no
// quorum, or not caught up): nothing was done, and the same command may
// succeed in a moment.
const exitUnavailable = 3

func run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	err := dispatch(args, stdout, getenv)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stderr, usage)
		return 0
	case errors.As(err, new(*usageError)):
		fmt.Fprintf(stderr, "blockctl: %v\n\n%s", err, usage)
		return 2
	case errors.Is(err, api.ErrUnavailable):
		fmt.Fprintf(stderr, "blockctl: %s\n", errorText(err))
		return exitUnavailable
	default:
		fmt.Fprintf(stderr, "blockctl: %s\n", errorText(err))
		return 1
	}
}

func dispatch(args []string, stdout io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("blockctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // run prints the usage
	t := target{getenv: getenv}
	fs.StringVar(&t.socket, "s", "", "control socket")
	fs.StringVar(&t.config, "c", "", "configuration file")
	fs.StringVar(&t.node, "node", "", "remote node's cluster.listen")
	fs.StringVar(&t.secretFile, "secret-file", "", "cluster secret for --node")
	fs.StringVar(&t.cluster, "cluster", "", "cluster name for --node")
	var common commonFlags
	common.register(fs)
	if err := fs.Parse(args); err != nil {
		return usageErr("", err)
	}
	if fs.NArg() == 0 {
		return usagef("no command given")
	}
	if err := t.check(); err != nil {
		return err
	}
	if err := common.check(); err != nil {
		return err
	}
	cmd, cmdArgs := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "status":
		pos, opts, err := parseArgs(cmd, cmdArgs, common, statusKind, nil)
		if err != nil {
			return err
		}
		if len(pos) > 0 {
			return usagef("status: unexpected argument %q", pos[0])
		}
		return status(t, opts, stdout)
	case "connect", "disconnect", "resync", "verify", "invalidate", "primary", "secondary":
		a, err := parseControl(cmd, cmdArgs, common)
		if err != nil {
			return err
		}
		return runAction(t, a, stdout)
	case "promote", "demote":
		a, err := parseSwitchover(cmd, cmdArgs, common)
		if err != nil {
			return err
		}
		return runAction(t, a, stdout)
	case "cluster":
		a, err := parseCluster(cmdArgs, common)
		if err != nil {
			return err
		}
		return runAction(t, a, stdout)
	case "raid":
		return raidCommand(t, cmdArgs, common, stdout)
	case "events":
		req, err := parseEvents(cmdArgs, common)
		if err != nil {
			return err
		}
		return watchEvents(t, req, stdout)
	case "help":
		return flag.ErrHelp
	default:
		return usagef("unknown command %q", cmd)
	}
}

func usageErr(cmd string, err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	if cmd == "" {
		return usagef("%v", err)
	}
	return usagef("%s: %v", cmd, err)
}

// parseInterspersed parses args with fs and returns the positional
// arguments. Unlike fs.Parse, which stops at the first non-flag, it lets
// flags follow the positional arguments ("resync vol0 --full"); "--" ends
// the flags, so a volume named "-x" can be given as "-- -x".
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		// fs stopped at a positional argument: keep it, parse on after it.
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// parseControl parses the arguments of the command cmd, one of connect,
// disconnect, resync, verify, invalidate, primary and secondary.
func parseControl(cmd string, args []string, common commonFlags) (action, error) {
	var discard, checksum, full, force bool
	maxArgs := 2 // VOLUME PEER
	switch cmd {
	case "primary", "invalidate", "secondary":
		maxArgs = 1
	}
	pos, opts, err := parseArgs(cmd, args, common, actionKind, func(fs *flag.FlagSet) {
		switch cmd {
		case "connect":
			fs.BoolVar(&discard, "discard-my-data", false, "resolve a split brain by discarding this node's writes")
		case "resync":
			fs.BoolVar(&checksum, "checksum", false, "compare checksums of every block")
			fs.BoolVar(&full, "full", false, "copy every block")
		case "primary":
			fs.BoolVar(&force, "force", false, "promote even if the data cannot be confirmed current")
		}
	})
	if err != nil {
		return action{}, err
	}
	if len(pos) > maxArgs {
		return action{}, usagef("%s: unexpected argument %q", cmd, pos[maxArgs])
	}
	if checksum && full {
		return action{}, usagef("resync: --checksum and --full exclude each other; give one")
	}
	pos = append(pos, "", "") // the defaults: the only volume, every peer
	volume, peer := pos[0], pos[1]
	vol, peers := volumeName(volume), peerName(peer)
	a := action{command: cmd, opts: opts, timeoutHint: actionTimeoutHint}
	// requested turns a call into what do returns: the daemon accepted it.
	requested := func(err error) (actionResult, error) { return actionResult{}, err }

	switch cmd {
	case "connect":
		a.what = fmt.Sprintf("connect %s to %s", vol, peers)
		if discard {
			a.what += ", discarding this node's data on a split brain"
		}
		a.do = func(ctx context.Context, c *api.Client) (actionResult, error) {
			return requested(c.Connect(ctx, volume, peer, discard))
		}
	case "disconnect":
		a.what = fmt.Sprintf("disconnect %s from %s", vol, peers)
		a.do = func(ctx context.Context, c *api.Client) (actionResult, error) {
			return requested(c.Disconnect(ctx, volume, peer))
		}
	case "resync":
		mode := "bitmap"
		switch {
		case checksum:
			mode = "checksum"
		case full:
			mode = "full"
		}
		a.what = fmt.Sprintf("resync %s with %s (%s)", vol, peers, mode)
		a.do = func(ctx context.Context, c *api.Client) (actionResult, error) {
			return requested(c.Resync(ctx, volume, peer, mode))
		}
	case "verify":
		a.what = fmt.Sprintf("verify %s against %s", vol, peers)
		a.do = func(ctx context.Context, c *api.Client) (actionResult, error) {
			return requested(c.Verify(ctx, volume, peer))
		}
	case "invalidate":
		a.what = fmt.Sprintf("invalidate %s", vol)
		a.do = func(ctx context.Context, c *api.Client) (actionResult, error) {
			return requested(c.Invalidate(ctx, volume))
		}
	default: // primary or secondary
		a.what = fmt.Sprintf("make %s %s", vol, cmd)
		if force {
			a.what += " (forced)"
		}
		a.do = func(ctx context.Context, c *api.Client) (actionResult, error) {
			return requested(c.SetRole(ctx, volume, cmd, force))
		}
	}
	return a, nil
}

// volumeName renders the VOLUME argument for the line printed on success,
// saying what an omitted one stands for.
func volumeName(v string) string {
	if v == "" {
		return "the only volume"
	}
	return v
}

// peerName renders the PEER argument like volumeName.
func peerName(p string) string {
	if p == "" {
		return "every peer"
	}
	return p
}

// socketPath chooses the control socket: -s, else -c's control_socket, else
// $BLOCKREP_SOCKET, else DefaultSocket.
func socketPath(sockFlag, confFlag string, getenv func(string) string) (string, error) {
	switch {
	case sockFlag != "" && confFlag != "":
		return "", usagef("-s and -c both name the socket; give one")
	case sockFlag != "":
		return sockFlag, nil
	case confFlag != "":
		cfg, err := config.Load(confFlag)
		if err != nil {
			return "", err
		}
		return cfg.Node.ControlSocket, nil
	case getenv(EnvSocket) != "":
		return getenv(EnvSocket), nil
	}
	if _, err := os.Stat(DefaultConfig); err == nil {
		cfg, err := config.Load(DefaultConfig)
		if err != nil {
			return "", err
		}
		return cfg.Node.ControlSocket, nil
	}
	return DefaultSocket, nil
}

// fetchStatus asks t's daemon for its status, for the command cmd (status
// or raid status), within timeout.
func fetchStatus(t target, cmd string, timeout time.Duration) (st api.Status, err error) {
	err = withClient(t, cmd, "", timeout, func(ctx context.Context, c *api.Client) error {
		st, err = c.Status(ctx)
		return err
	})
	return st, err
}

// writeJSON writes v as indented JSON and a newline.
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func status(t target, opts options, stdout io.Writer) error {
	st, err := fetchStatus(t, "status", opts.timeout)
	if err != nil {
		return err
	}
	if opts.output == formatJSON {
		return writeJSON(stdout, st)
	}
	return writeTable(stdout, st, time.Now())
}
