package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/events"
)

// fullBackend is a fakeBackend that is a cluster member with RAID volumes
// and an event stream: every command has something to talk to.
type fullBackend struct {
	*fakeBackend
	*clusterBackend
	*raidBackend
	*eventBackend
}

func newFullBackend() *fullBackend {
	fb := &fakeBackend{st: raidTestStatus()}
	eb := newEventBackend()
	eb.fakeBackend = fb
	return &fullBackend{fb, &clusterBackend{fakeBackend: fb, note: "node2 is primary of vol0"}, &raidBackend{fb}, eb}
}

var (
	_ api.ClusterController = (*fullBackend)(nil)
	_ api.RAIDController    = (*fullBackend)(nil)
	_ api.EventSource       = (*fullBackend)(nil)
)

// blockingBackend answers nothing: every request waits until the client
// goes away. CurrentEvents, which has no context, waits until release is
// closed.
type blockingBackend struct{ release chan struct{} }

func (b blockingBackend) block(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }

func (b blockingBackend) Status(ctx context.Context) (api.Status, error) {
	return api.Status{}, b.block(ctx)
}
func (b blockingBackend) Connect(ctx context.Context, _, _ string, _ bool) error { return b.block(ctx) }
func (b blockingBackend) Disconnect(ctx context.Context, _, _ string) error      { return b.block(ctx) }
func (b blockingBackend) Resync(ctx context.Context, _, _, _ string) error       { return b.block(ctx) }
func (b blockingBackend) Verify(ctx context.Context, _, _ string) error          { return b.block(ctx) }
func (b blockingBackend) Invalidate(ctx context.Context, _ string) error         { return b.block(ctx) }
func (b blockingBackend) SetRole(ctx context.Context, _, _ string, _ bool) error { return b.block(ctx) }
func (b blockingBackend) Promote(ctx context.Context, _, _ string, _ bool, _ string) (string, error) {
	return "", b.block(ctx)
}
func (b blockingBackend) Demote(ctx context.Context, _ string) (string, error) {
	return "", b.block(ctx)
}
func (b blockingBackend) AddMember(ctx context.Context, _, _ string) error { return b.block(ctx) }
func (b blockingBackend) RemoveMember(ctx context.Context, _ string, _ bool, _ string) error {
	return b.block(ctx)
}
func (b blockingBackend) RAIDFail(ctx context.Context, _ string, _ int) error   { return b.block(ctx) }
func (b blockingBackend) RAIDRemove(ctx context.Context, _ string, _ int) error { return b.block(ctx) }
func (b blockingBackend) RAIDRemoveSpare(ctx context.Context, _, _ string) (bool, error) {
	return false, b.block(ctx)
}
func (b blockingBackend) RAIDAdd(ctx context.Context, _, _ string) (int, error) {
	return 0, b.block(ctx)
}
func (b blockingBackend) RAIDReplace(ctx context.Context, _ string, _ int, _ string) error {
	return b.block(ctx)
}
func (b blockingBackend) RAIDScrub(ctx context.Context, _ string, _ bool) error { return b.block(ctx) }
func (b blockingBackend) Events() *events.Bus                                   { return events.NewBus(1) }
func (b blockingBackend) CurrentEvents() []events.Event                         { <-b.release; return nil }

var (
	_ api.Backend           = blockingBackend{}
	_ api.ClusterController = blockingBackend{}
	_ api.RAIDController    = blockingBackend{}
	_ api.EventSource       = blockingBackend{}
)

// serveBlocking serves a blockingBackend and returns its socket.
func serveBlocking(t *testing.T) string {
	t.Helper()
	b := blockingBackend{release: make(chan struct{})}
	sock := serve(t, b)
	t.Cleanup(func() { close(b.release) }) // before the server closes
	return sock
}

// A command of every kind, with the arguments it needs, and its default
// -o format.
var everyCommand = []struct {
	args   []string
	output string // the default -o
}{
	{[]string{"status"}, "table"},
	{[]string{"connect", "vol0", "node2"}, "text"},
	{[]string{"disconnect", "vol0"}, "text"},
	{[]string{"resync", "vol0", "--full"}, "text"},
	{[]string{"verify"}, "text"},
	{[]string{"invalidate", "vol0"}, "text"},
	{[]string{"primary", "vol0"}, "text"},
	{[]string{"secondary"}, "text"},
	{[]string{"promote", "node2"}, "text"},
	{[]string{"demote", "vol0"}, "text"},
	{[]string{"cluster", "add", "node4", "10.0.0.4:7790"}, "text"},
	{[]string{"cluster", "remove", "node3"}, "text"},
	{[]string{"events"}, "text"},
	{[]string{"raid", "status", "vol0"}, "table"},
	{[]string{"raid", "fail", "1"}, "text"},
	{[]string{"raid", "remove", "1", "vol0"}, "text"},
	{[]string{"raid", "add", "/dev/sdh"}, "text"},
	{[]string{"raid", "replace", "1", "/dev/sdh"}, "text"},
	{[]string{"raid", "scrub", "--repair"}, "text"},
}

// commandName is the command of args as errors name it: "status",
// "raid add".
func commandName(args []string) string {
	if args[0] == "cluster" || args[0] == "raid" {
		return args[0] + " " + args[1]
	}
	return args[0]
}

// runCommand runs blockctl with args against sock and returns its exit
// code, stdout and stderr. events runs until its current state is printed
// and is then interrupted.
func runCommand(t *testing.T, sock string, args []string) (int, string, string) {
	t.Helper()
	args = append([]string{"-s", sock}, args...)
	if !slices.Contains(args, "events") {
		var stdout, stderr bytes.Buffer
		code := run(args, &stdout, &stderr, noEnv)
		return code, stdout.String(), stderr.String()
	}
	stdout, interrupt := runInterruptible(t, args)
	waitFor(t, "the exists-end line", func() bool { return strings.Contains(stdout.String(), "exists-end") })
	code, stderr := interrupt(syscall.SIGINT)
	return code, stdout.String(), stderr
}

// checkJSON checks that out is what the command args prints with -o json.
func checkJSON(t *testing.T, args []string, out string) {
	t.Helper()
	switch cmd := commandName(args); cmd {
	case "status":
		var st api.Status
		if err := json.Unmarshal([]byte(out), &st); err != nil || st.Node != "node1" {
			t.Errorf("status -o json: %v: %q", err, out)
		}
	case "raid status":
		var vols []raidVolumeJSON
		if err := json.Unmarshal([]byte(out), &vols); err != nil || len(vols) != 1 || vols[0].Volume != "vol0" {
			t.Errorf("raid status -o json: %v: %q", err, out)
		}
	case "events":
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		for _, line := range lines {
			var e events.Event
			if err := json.Unmarshal([]byte(line), &e); err != nil || !e.Initial {
				t.Errorf("events -o json: line %q: %v", line, err)
			}
		}
	default:
		var got actionJSON
		if err := json.Unmarshal([]byte(out), &got); err != nil || !got.OK || got.Command != cmd || got.What == "" ||
			strings.Count(out, "\n") != 1 {
			t.Errorf("%s -o json: %v: %q", cmd, err, out)
		}
	}
}

// TestCommonFlagsEverywhere: every command takes -o and --timeout before
// it and after it, and the one after it wins.
func TestCommonFlagsEverywhere(t *testing.T) {
	for _, c := range everyCommand {
		cmd := commandName(c.args)
		// where puts the flags before, after or (for a group) within the
		// command.
		placements := map[string]func(flags ...string) []string{
			"before": func(flags ...string) []string { return append(flags, c.args...) },
			"after":  func(flags ...string) []string { return append(slices.Clone(c.args), flags...) },
		}
		if cmd != c.args[0] {
			placements["within"] = func(flags ...string) []string {
				return slices.Concat(c.args[:1], flags, c.args[1:])
			}
		}
		for where, place := range placements {
			t.Run(cmd+"/"+where, func(t *testing.T) {
				sock := serve(t, newFullBackend())
				code, out, errOut := runCommand(t, sock, place("-o", "json", "--timeout", "5s"))
				if code != 0 || errOut != "" {
					t.Fatalf("exit %d, stderr %q", code, errOut)
				}
				checkJSON(t, c.args, out)
				code, out, errOut = runCommand(t, sock, place("-o="+c.output, "--timeout=1m"))
				if code != 0 || errOut != "" || strings.HasPrefix(out, "{") || strings.HasPrefix(out, "[") {
					t.Errorf("-o %s: exit %d, stdout %q, stderr %q", c.output, code, out, errOut)
				}
			})
		}
		t.Run(cmd+"/override", func(t *testing.T) {
			sock := serve(t, newFullBackend())
			args := append(append([]string{"-o", c.output, "--timeout", "1h"}, c.args...), "-o", "json", "--timeout", "5s")
			code, out, errOut := runCommand(t, sock, args)
			if code != 0 || errOut != "" {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			checkJSON(t, c.args, out)
			args = append(append([]string{"-o", "json"}, c.args...), "-o", c.output)
			code, out, errOut = runCommand(t, sock, args)
			if code != 0 || errOut != "" || strings.HasPrefix(out, "{") || strings.HasPrefix(out, "[") {
				t.Errorf("-o json ... -o %s: exit %d, stdout %q, stderr %q", c.output, code, out, errOut)
			}
		})
	}
}

// TestCommonFlagErrors: a format the command does not print and a
// --timeout that is not a positive duration are usage errors naming the
// command, the flag and the value, before or after the command.
func TestCommonFlagErrors(t *testing.T) {
	for _, c := range everyCommand {
		cmd := commandName(c.args)
		wrong := "table" // a format the command does not print
		formats := "text or json"
		if c.output == "table" {
			wrong, formats = "text", "table or json"
		}
		for _, tt := range []struct {
			name      string
			flags     []string
			wantErr   string
			afterOnly bool // before the command, -o would take the command as its value
		}{
			{"format", []string{"-o", wrong}, fmt.Sprintf("blockctl: %s: output format %q is not %s\n", cmd, wrong, formats), false},
			{"unknown format", []string{"-o", "yaml"}, fmt.Sprintf("blockctl: %s: output format \"yaml\" is not %s\n", cmd, formats), false},
			{"not a duration", []string{"--timeout", "soon"}, fmt.Sprintf("blockctl: %s: --timeout \"soon\" is not a duration (such as 30s or 2m)\n", cmd), false},
			{"no unit", []string{"--timeout", "5"}, fmt.Sprintf("blockctl: %s: --timeout \"5\" is not a duration", cmd), false},
			{"zero", []string{"--timeout", "0s"}, fmt.Sprintf("blockctl: %s: --timeout 0s is not positive\n", cmd), false},
			{"negative", []string{"--timeout=-1s"}, fmt.Sprintf("blockctl: %s: --timeout -1s is not positive\n", cmd), false},
			{"missing value", []string{"-o"}, fmt.Sprintf("blockctl: %s: flag needs an argument: -o\n", cmd), true},
		} {
			placements := map[string][]string{"after": append(slices.Clone(c.args), tt.flags...)}
			if !tt.afterOnly {
				placements["before"] = append(slices.Clone(tt.flags), c.args...)
			}
			for where, args := range placements {
				t.Run(cmd+"/"+tt.name+"/"+where, func(t *testing.T) {
					want := tt.wantErr
					if where == "before" && strings.HasPrefix(tt.flags[0], "--timeout") {
						// A --timeout before the command is refused before
						// the command is parsed.
						want = strings.Replace(want, cmd+": ", "", 1)
					}
					b := &fakeBackend{}
					checkRun(t, b, b, args, 2, "", want, true, "")
				})
			}
		}
	}
}

// TestActionJSON: with -o json an action prints one object on stdout,
// on success and, with the message on stderr and a non-zero exit, on
// failure; a bad command line prints none.
func TestActionJSON(t *testing.T) {
	conflict := fmt.Errorf("peer node2 is primary: %w", api.ErrConflict)
	tests := []struct {
		name      string
		args      []string
		note      string // the daemon's note for promote and demote
		cmdErr    error
		noCluster bool
		wantCode  int
		wantOut   string // all of stdout
		wantErr   string // substring of stderr
		wantUsage bool
		wantCall  string
	}{
		{name: "resync", args: []string{"resync", "vol0", "-o", "json"},
			wantOut:  `{"ok":true,"command":"resync","what":"resync vol0 with every peer (bitmap)","result":"requested"}` + "\n",
			wantCall: `Resync("vol0", "", "bitmap")`},
		{name: "connect before", args: []string{"-o", "json", "connect", "--discard-my-data"},
			wantOut:  `{"ok":true,"command":"connect","what":"connect the only volume to every peer, discarding this node's data on a split brain","result":"requested"}` + "\n",
			wantCall: `Connect("", "", true)`},
		{name: "promote forced", args: []string{"promote", "node2", "--force", "-o", "json"}, note: "node2 is primary of vol0 (forced)",
			wantOut: `{"ok":true,"command":"promote","what":"promote node2 for the only volume (forced)","result":"done","note":"node2 is primary of vol0 (forced)",` +
				`"warning":"node2 was promoted by force: writes only the other replicas held may be lost"}` + "\n",
			wantCall: `Promote("", "node2", true, "")`},
		{name: "demote without a note", args: []string{"demote", "-o", "json"},
			wantOut:  `{"ok":true,"command":"demote","what":"demote the only volume","result":"done"}` + "\n",
			wantCall: `Demote("")`},
		{name: "cluster add", args: []string{"cluster", "-o", "json", "add", "node4", "10.0.0.4:7790"},
			wantOut:  `{"ok":true,"command":"cluster add","what":"add node4 (10.0.0.4:7790) to the cluster","result":"done"}` + "\n",
			wantCall: `AddMember("node4", "10.0.0.4:7790")`},
		{name: "cluster remove forced", args: []string{"cluster", "remove", "node3", "--force", "-o", "json"},
			wantOut:  `{"ok":true,"command":"cluster remove","what":"remove node3 from the cluster (forced)","result":"done"}` + "\n",
			wantCall: `RemoveMember("node3", true, "")`},
		{name: "raid add", args: []string{"raid", "add", "/dev/sdh", "vol0", "-o", "json"},
			wantOut:  `{"ok":true,"command":"raid add","what":"add /dev/sdh to vol0","result":"requested","note":"member 1, rebuilding"}` + "\n",
			wantCall: `RAIDAdd("vol0", "/dev/sdh")`},
		{name: "raid remove spare", args: []string{"-o", "json", "raid", "remove", "/dev/sdf"},
			wantOut: `{"ok":true,"command":"raid remove","what":"remove spare /dev/sdf from the only volume","result":"done",` +
				`"note":"it is in raid_spares in the node's configuration, which adds it back at the next start: remove it there too"}` + "\n",
			wantCall: `RAIDRemoveSpare("", "/dev/sdf")`},
		{name: "raid scrub", args: []string{"raid", "scrub", "-o", "json"},
			wantOut:  `{"ok":true,"command":"raid scrub","what":"scrub the only volume","result":"requested"}` + "\n",
			wantCall: `RAIDScrub("", false)`},

		{name: "conflict", args: []string{"primary", "vol0", "-o", "json"}, cmdErr: conflict, wantCode: 1,
			wantOut: `{"ok":false,"command":"primary","what":"make vol0 primary",` +
				`"error":"blockrepd: set role: peer node2 is primary: not possible in the current state (HTTP 409)","class":"conflict"}` + "\n",
			wantErr:  "blockctl: blockrepd: set role: peer node2 is primary: not possible in the current state (HTTP 409)\n",
			wantCall: `SetRole("vol0", "primary", false)`},
		{name: "not found", args: []string{"-o", "json", "verify", "vol9"}, cmdErr: fmt.Errorf("volume %q: %w", "vol9", api.ErrNotFound), wantCode: 1,
			wantOut: `{"ok":false,"command":"verify","what":"verify vol9 against every peer",` +
				`"error":"blockrepd: verify: volume \"vol9\": not found (HTTP 404)","class":"not_found"}` + "\n",
			wantErr: `blockctl: blockrepd: verify: volume "vol9": not found (HTTP 404)`, wantCall: `Verify("vol9", "")`},
		{name: "invalid", args: []string{"cluster", "add", "node4", "nowhere", "-o", "json"}, cmdErr: fmt.Errorf("address %q: %w", "nowhere", api.ErrInvalid), wantCode: 1,
			wantOut: `{"ok":false,"command":"cluster add","what":"add node4 (nowhere) to the cluster",` +
				`"error":"blockrepd: add member: address \"nowhere\": invalid argument (HTTP 400)","class":"invalid"}` + "\n",
			wantErr: "invalid argument (HTTP 400)", wantCall: `AddMember("node4", "nowhere")`},
		{name: "failed", args: []string{"raid", "fail", "1", "-o", "json"}, cmdErr: errors.New("disk on fire"), wantCode: 1,
			wantOut: `{"ok":false,"command":"raid fail","what":"fail member 1 of the only volume",` +
				`"error":"blockrepd: raid fail: disk on fire (HTTP 500)","class":"failed"}` + "\n",
			wantErr: "disk on fire", wantCall: `RAIDFail("", 1)`},
		{name: "unavailable", args: []string{"promote", "node2", "-o", "json"},
			cmdErr: api.Unavailable(errors.New("no quorum: cluster state on node1 may be stale (no leader known)")), wantCode: exitUnavailable,
			wantOut: `{"ok":false,"command":"promote","what":"promote node2 for the only volume",` +
				`"error":"blockrepd: promote: no quorum: cluster state on node1 may be stale (no leader known) (HTTP 503)","class":"unavailable"}` + "\n",
			wantErr:  "blockctl: blockrepd: promote: no quorum: cluster state on node1 may be stale (no leader known) (HTTP 503)\n",
			wantCall: `Promote("", "node2", false, "")`},
		{name: "not a cluster member", args: []string{"demote", "-o", "json"}, noCluster: true, wantCode: 1,
			wantOut: `{"ok":false,"command":"demote","what":"demote the only volume",` +
				`"error":"blockrepd: this daemon is not a cluster member (no [cluster] table) (HTTP 404)","class":"not_found"}` + "\n",
			wantErr: "not a cluster member"},

		{name: "usage error", args: []string{"resync", "--checksum", "--full", "-o", "json"}, wantCode: 2,
			wantErr: "resync: --checksum and --full exclude each other", wantUsage: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fb := &fakeBackend{cmdErr: tt.cmdErr}
			var b api.Backend = &fullBackend{fb, &clusterBackend{fakeBackend: fb, note: tt.note}, &raidBackend{fb}, &eventBackend{fakeBackend: fb}}
			if tt.noCluster {
				b = fb
			}
			checkRun(t, b, fb, tt.args, tt.wantCode, tt.wantOut, tt.wantErr, tt.wantUsage, tt.wantCall)
		})
	}
}

// TestActionJSONUnreachable: a daemon that cannot be reached, or does
// not answer within --timeout, is an unreachable failure.
func TestActionJSONUnreachable(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.sock")
	var stdout, stderr bytes.Buffer
	code := run([]string{"-s", missing, "-o", "json", "invalidate"}, &stdout, &stderr, noEnv)
	var got actionJSON
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil || code != 1 || got.OK || got.Class != "unreachable" ||
		got.Command != "invalidate" || !strings.HasPrefix(got.Error, "cannot reach blockrepd at "+missing) ||
		stderr.String() != "blockctl: "+got.Error+"\n" {
		t.Errorf("missing socket: exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}

	stdout.Reset()
	stderr.Reset()
	code = run([]string{"-s", serveBlocking(t), "resync", "-o", "json", "--timeout", "50ms"}, &stdout, &stderr, noEnv)
	const want = "resync the only volume with every peer (bitmap): no answer within 50ms (--timeout): the daemon may still carry it out; see blockctl status"
	got = actionJSON{}
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil || code != 1 || got.OK || got.Class != "unreachable" ||
		got.Error != want || stderr.String() != "blockctl: "+want+"\n" {
		t.Errorf("timeout: exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
}

// TestTimeoutBoundsEveryCommand: against a daemon that never answers,
// every command gives up after its --timeout, before or after it, and
// says so.
func TestTimeoutBoundsEveryCommand(t *testing.T) {
	sock := serveBlocking(t)
	for _, c := range everyCommand {
		cmd := commandName(c.args)
		for where, args := range map[string][]string{
			"before": append([]string{"--timeout", "50ms"}, c.args...),
			"after":  append(slices.Clone(c.args), "--timeout", "50ms"),
		} {
			t.Run(cmd+"/"+where, func(t *testing.T) {
				var stdout, stderr bytes.Buffer
				code := run(append([]string{"-s", sock}, args...), &stdout, &stderr, noEnv)
				if code != 1 || stdout.Len() != 0 || !strings.Contains(stderr.String(), ": no answer within 50ms (--timeout)") {
					t.Errorf("exit %d, stdout %q, stderr %q; want 1 and no answer within 50ms", code, stdout.String(), stderr.String())
				}
			})
		}
	}
	// events: --now=false still bounds the wait for the stream's start.
	var stdout, stderr bytes.Buffer
	code := run([]string{"-s", sock, "events", "--now=false", "--timeout", "50ms"}, &stdout, &stderr, noEnv)
	if code != 1 || stderr.String() != "blockctl: events: no answer within 50ms (--timeout)\n" {
		t.Errorf("events --now=false: exit %d, stderr %q", code, stderr.String())
	}
}

// TestEventsTimeoutIsNotTheStream: --timeout bounds the start of the
// stream, not the stream: an event published after it has passed is
// printed.
func TestEventsTimeoutIsNotTheStream(t *testing.T) {
	b := newEventBackend()
	const timeout = time.Second
	stdout, interrupt := runEvents(t, serve(t, b), "--timeout", timeout.String())
	waitFor(t, "the exists-end line", func() bool { return strings.Contains(stdout.String(), "exists-end") })
	time.Sleep(timeout + timeout/2) // not a threshold: only lets the timeout pass
	b.bus.Publish(events.Event{Time: time.Date(2026, 11, 26, 1, 2, 4, 0, time.UTC), Kind: "leader", New: "node2"})
	waitFor(t, "the live event", func() bool { return len(stdout.lines()) == 4 })
	code, stderr := interrupt(syscall.SIGINT)
	if code != 0 || stderr != "" {
		t.Errorf("exit %d, stderr %q; want 0 and nothing", code, stderr)
	}
	if got := stdout.lines()[3]; got != "2026-11-26T01:02:04.000000Z leader node2" {
		t.Errorf("live event %q", got)
	}
}

func TestErrorClass(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{&api.ServerError{Code: http.StatusBadRequest, Message: "x"}, "invalid"},
		{&api.ServerError{Code: http.StatusNotFound, Message: "x"}, "not_found"},
		{&api.ServerError{Code: http.StatusConflict, Message: "x"}, "conflict"},
		{fmt.Errorf("promote: %w", &api.ServerError{Code: http.StatusServiceUnavailable, Message: "no quorum"}), "unavailable"},
		{api.Unavailable(fmt.Errorf("not caught up: %w", api.ErrConflict)), "unavailable"},
		{&api.ServerError{Code: http.StatusInternalServerError, Message: "x"}, "failed"},
		{&api.ConnError{Socket: "/s", Err: errors.New("connect: refused"), Hint: "h"}, "unreachable"},
		{fmt.Errorf("talking: %w", &dialError{addr: "a:1", err: errors.New("x")}), "unreachable"},
		{&timeoutError{what: "status", timeout: 1}, "unreachable"},
		{errors.New("config: bad"), "failed"},
	} {
		if got := errorClass(tt.err); got != tt.want {
			t.Errorf("errorClass(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
