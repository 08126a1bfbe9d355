package cluster

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/blockrep/blockrep/internal/scenario"
	"github.com/blockrep/blockrep/replica"
)

// Scenario files (testdata/*.txt)
//
// Each file is a sequence of blocks separated by blank lines, as in
// replica/testdata/gen:
//
//	# one or more comment lines: what the case is and why the answer is right
//	<command> [key=value ...]
//	<input lines>
//	----
//	<expected output lines>
//
// A comment group followed by a blank line (no command) is free text and is
// kept as is. Every scenario must have at least one comment line.
//
// Unlike the replica scenarios, blocks are not independent: each file
// starts with an empty cluster, and every block acts on the state the
// blocks before it left (a story). Commands:
//
//	apply        input: one cluster command per line (below); output: one
//	             result line per command ("ok …" or "error: …"), then the
//	             state: a "nodes:" line and one line per volume
//	failover VOL alive=A,B,…   (alive=- for nobody); no input; output:
//	             "promote NODE: reason" or "none: reason" (ChooseFailover)
//	reset        no input, no output: back to an empty cluster
//
// Cluster commands (the Op name, positional names, then options):
//
//	add-node NODE data|witness
//	remove-node NODE [force] [reason=WORD]
//	add-volume VOL [disk=STATE]
//	set-preferred VOL NODE|-
//	promote VOL NODE epoch=N [force] [reason=WORD]
//	demote VOL NODE epoch=N [to=NODE]
//	outdate VOL PEER epoch=N by=NODE
//	set-disk VOL NODE STATE epoch=N by=NODE
//	primary-lost VOL epoch=N
//	disk-failed VOL NODE epoch=N
//	raise-epoch VOL NODE epoch=N
//	set-failover VOL auto|manual
//
// The runner also checks, for every command, that it survives
// Encode/DecodeCommand unchanged, that a refused command leaves the state
// byte-identical, and that Check holds after an accepted one.
//
// go test ./cluster/ -run TestScenarios -rewrite regenerates the expected
// outputs in place (review the diff!).

var rewrite = flag.Bool("rewrite", false, "rewrite expected outputs of testdata scenario files")

func TestScenarios(t *testing.T) {
	scenario.Run(t, filepath.Join("testdata", "*.txt"), scenario.Options{Rewrite: *rewrite, Sequential: true},
		func() scenario.Runner {
			s := NewState()
			return func(b *scenario.Block) ([]string, error) { return runScenario(&s, b) }
		})
}

// runScenario executes one block against *s and returns its output lines.
// An error means the scenario is malformed or a runner check failed (which
// aborts the file: later blocks depend on this one's state).
func runScenario(s **State, it *scenario.Block) ([]string, error) {
	fields := strings.Fields(it.Cmd)
	switch fields[0] {
	case "reset":
		if len(fields) != 1 || len(it.Input) != 0 {
			return nil, fmt.Errorf("reset takes no arguments and no input")
		}
		*s = NewState()
		return nil, nil

	case "failover":
		if len(fields) != 3 || len(it.Input) != 0 {
			return nil, fmt.Errorf("want: failover VOL alive=A,B,… and no input")
		}
		list, ok := strings.CutPrefix(fields[2], "alive=")
		if !ok {
			return nil, fmt.Errorf("want alive=…, got %q", fields[2])
		}
		alive := map[string]bool{}
		if list != "-" {
			for _, a := range strings.Split(list, ",") {
				alive[a] = true
			}
		}
		node, ok, reason := ChooseFailover(*s, fields[1], alive)
		if !ok {
			if node != "" {
				return nil, fmt.Errorf("ChooseFailover returned node %q with ok=false", node)
			}
			return []string{"none: " + reason}, nil
		}
		return []string{"promote " + node + ": " + reason}, nil

	case "apply":
		if len(fields) != 1 {
			return nil, fmt.Errorf("apply takes no arguments")
		}
		var out []string
		for _, l := range it.Input {
			c, err := parseCommand(l)
			if err != nil {
				return nil, fmt.Errorf("%q: %v", l, err)
			}
			r, err := applyChecked(*s, c)
			if err != nil {
				var ref *RefusedError
				if !errors.As(err, &ref) {
					return nil, fmt.Errorf("%q: %v", l, err)
				}
				out = append(out, "error: "+err.Error())
				continue
			}
			out = append(out, formatResult(r))
		}
		return append(out, formatState(*s)...), nil
	}
	return nil, fmt.Errorf("unknown command %q", fields[0])
}

// applyChecked applies c after an Encode/DecodeCommand round trip and
// checks what every application must satisfy. A refusal is returned as the
// *RefusedError; any other error is a failed check.
func applyChecked(s *State, c Command) (Result, error) {
	dc, err := DecodeCommand(c.Encode())
	if err != nil {
		return Result{}, err
	}
	if dc != c {
		return Result{}, fmt.Errorf("command %+v decodes as %+v", c, dc)
	}
	before := mustMarshal(s)
	r, aerr := s.Apply(dc)
	if aerr != nil {
		var ref *RefusedError
		if !errors.As(aerr, &ref) {
			return Result{}, fmt.Errorf("refusal is %T, not *RefusedError: %v", aerr, aerr)
		}
		if after := mustMarshal(s); !bytes.Equal(before, after) {
			return Result{}, fmt.Errorf("refused command changed the state:\nbefore %s\nafter  %s", before, after)
		}
		return Result{}, aerr
	}
	if err := s.Check(); err != nil {
		return Result{}, fmt.Errorf("Check after %v: %v", c.Op, err)
	}
	return r, nil
}

func mustMarshal(s *State) []byte {
	b, err := s.MarshalBinary()
	if err != nil {
		panic(err)
	}
	return b
}

// positional lists the positional arguments of each op, in order.
var positional = map[Op][]string{
	OpAddNode:      {"node", "kind"},
	OpRemoveNode:   {"node"},
	OpAddVolume:    {"volume"},
	OpSetPreferred: {"volume", "node"},
	OpPromote:      {"volume", "node"},
	OpDemote:       {"volume", "node"},
	OpOutdate:      {"volume", "node"},
	OpSetDisk:      {"volume", "node", "disk"},
	OpPrimaryLost:  {"volume"},
	OpRaiseEpoch:   {"volume", "node"},
	OpSetFailover:  {"volume", "policy"},
	OpDiskFailed:   {"volume", "node"},
}

func parseCommand(line string) (Command, error) {
	f := strings.Fields(line)
	op, err := ParseOp(f[0])
	if err != nil {
		return Command{}, err
	}
	c := Command{Op: op}
	pos := positional[op]
	if len(f)-1 < len(pos) {
		return Command{}, fmt.Errorf("%v wants %v", op, pos)
	}
	set := func(k, v string) error {
		var err error
		switch k {
		case "volume":
			c.Volume = v
		case "node":
			if v != "-" {
				c.Node = v
			}
		case "kind":
			c.Kind, err = ParseNodeKind(v)
		case "disk":
			c.Disk, err = parseDisk(v)
		case "epoch":
			c.Epoch, err = strconv.ParseUint(v, 10, 64)
		case "by":
			c.By = v
		case "reason":
			c.Reason = v
		case "policy":
			c.Policy = v
		case "to":
			c.To = v
		default:
			err = fmt.Errorf("unknown option %q", k)
		}
		return err
	}
	for i, k := range pos {
		if err := set(k, f[1+i]); err != nil {
			return Command{}, err
		}
	}
	for _, o := range f[1+len(pos):] {
		if o == "force" {
			c.Force = true
			continue
		}
		k, v, ok := strings.Cut(o, "=")
		if !ok {
			return Command{}, fmt.Errorf("option %q is not key=value or force", o)
		}
		if err := set(k, v); err != nil {
			return Command{}, err
		}
	}
	return c, nil
}

func parseDisk(s string) (replica.DiskState, error) {
	for d := replica.Diskless; d <= replica.UpToDate; d++ {
		if d.String() == s {
			return d, nil
		}
	}
	return 0, fmt.Errorf("unknown disk state %q", s)
}

func formatResult(r Result) string {
	s := "ok"
	if r.Deposed != "" {
		s += " deposed=" + r.Deposed
	}
	if len(r.Outdated) > 0 {
		s += " outdated=" + strings.Join(r.Outdated, ",")
	}
	if r.Note != "" {
		s += " (" + r.Note + ")"
	}
	return s
}

// formatState renders the state compactly: a nodes line, then per volume
// "VOL: primary=P epoch=E preferred=N NODE=DISK …" ("-" for none).
func formatState(s *State) []string {
	var nodes []string
	for _, name := range slices.Sorted(maps.Keys(s.Nodes)) {
		nodes = append(nodes, fmt.Sprintf("%s(%v)", name, s.Nodes[name].Kind))
	}
	out := []string{"nodes: " + strings.Join(nodes, " ")}
	for _, name := range slices.Sorted(maps.Keys(s.Volumes)) {
		v := s.Volumes[name]
		l := fmt.Sprintf("%s: primary=%s epoch=%d preferred=%s", name, dash(v.Primary), v.Epoch, dash(v.Preferred))
		if v.Lost != "" {
			l += " lost=" + v.Lost
		}
		if v.Failover != "" {
			l += " failover=" + v.Failover
		}
		if v.Next != "" {
			l += " next=" + v.Next
		}
		for _, dn := range slices.Sorted(maps.Keys(v.Disks)) {
			l += fmt.Sprintf(" %s=%v", dn, v.Disks[dn])
		}
		out = append(out, l)
	}
	return out
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
