package cluster

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blockrep/blockrep/internal/scenario"
)

// Arbiter scenario files (testdata/arbiter/*.txt) tell a story of one
// leader's arbiter with a fake clock, in the format of the state scenarios
// (see scenario_test.go), whose apply, failover and reset blocks they also
// take. The timing is a 100ms heartbeat interval and a 600ms failover
// timeout (lease 500ms); the leader took office at 0ms. A "steps" block
// runs its input lines in order and prints what each one says, then the
// state:
//
//	at MS                 set the clock; no output
//	heartbeat NODE [VOL=primary|secondary:EPOCH[:DISK|:failed] ...]
//	                      a heartbeat from NODE arriving now, with what it
//	                      reports (disk: Diskless when left out; failed:
//	                      Diskless, its disk failed with "I/O error");
//	                      prints the leases granted
//	decide                what the arbiter proposes now; each command is
//	                      applied to the state as the leader would, and
//	                      printed with its result ("-" when none)
//	switchover VOL TARGET|-   ask for a switchover (2s to complete)
//	alive                 the nodes the arbiter counts as alive
//	leadership NODE       whether NODE, leading, should hand leadership on
//	members NODE ...      the Raft configuration's servers (SetMembers)

var arbiterTiming = Timing{HeartbeatInterval: 100 * time.Millisecond, FailoverTimeout: 600 * time.Millisecond}

func TestArbiterScenarios(t *testing.T) {
	scenario.Run(t, filepath.Join("testdata", "arbiter", "*.txt"), scenario.Options{Rewrite: *rewrite, Sequential: true},
		func() scenario.Runner {
			t0 := time.Unix(1000, 0)
			w := &arbiterWorld{s: NewState(), t0: t0, now: t0, a: NewArbiter(arbiterTiming, t0)}
			return w.run
		})
}

type arbiterWorld struct {
	s       *State
	a       *Arbiter
	t0, now time.Time
}

func (w *arbiterWorld) run(b *scenario.Block) ([]string, error) {
	if b.Cmd != "steps" {
		return runScenario(&w.s, b)
	}
	var out []string
	for _, l := range b.Input {
		lines, err := w.step(l)
		if err != nil {
			return nil, fmt.Errorf("%q: %v", l, err)
		}
		out = append(out, lines...)
	}
	return append(out, formatState(w.s)...), nil
}

func (w *arbiterWorld) step(line string) ([]string, error) {
	f := strings.Fields(line)
	switch f[0] {
	case "at":
		ms, err := strconv.Atoi(strings.TrimSuffix(f[1], "ms"))
		if err != nil || len(f) != 2 {
			return nil, fmt.Errorf("want: at MS")
		}
		w.now = w.t0.Add(time.Duration(ms) * time.Millisecond)
		return nil, nil
	case "heartbeat":
		r := Report{Node: f[1], Volumes: map[string]LocalReport{}}
		for _, kv := range f[2:] {
			vol, val, _ := strings.Cut(kv, "=")
			parts := strings.Split(val, ":")
			role := parts[0]
			var epoch uint64
			var err error
			if len(parts) > 1 {
				epoch, err = strconv.ParseUint(parts[1], 10, 64)
			}
			if err != nil || len(parts) < 2 || len(parts) > 3 || role != "primary" && role != "secondary" {
				return nil, fmt.Errorf("%q: want VOL=primary|secondary:EPOCH[:DISK]", kv)
			}
			lr := LocalReport{Primary: role == "primary", Epoch: epoch}
			if len(parts) == 3 && parts[2] == "failed" {
				lr.Failed = "I/O error"
			} else if len(parts) == 3 {
				if lr.Disk, err = parseDisk(parts[2]); err != nil {
					return nil, err
				}
			}
			r.Volumes[vol] = lr
		}
		g := w.a.Heartbeat(r, w.now, w.s)
		var parts []string
		for _, vol := range slices.Sorted(maps.Keys(g)) {
			parts = append(parts, fmt.Sprintf("%s=%d", vol, g[vol]))
		}
		if len(parts) == 0 {
			parts = []string{"-"}
		}
		return []string{fmt.Sprintf("%s heartbeat at %dms: lease for %s", f[1], w.now.Sub(w.t0).Milliseconds(), strings.Join(parts, ","))}, nil
	case "decide":
		prefix := fmt.Sprintf("decide at %dms: ", w.now.Sub(w.t0).Milliseconds())
		var out []string
		for _, c := range w.a.Decide(w.now, w.s) {
			line := prefix + fmt.Sprintf("%v %s %s epoch=%d (%s)", c.Op, c.Volume, dash(c.Node), c.Epoch, c.Reason)
			r, err := applyChecked(w.s, c)
			if err != nil {
				line += " -> error: " + err.Error()
			} else {
				line += " -> " + formatResult(r)
			}
			out = append(out, line)
		}
		if len(out) == 0 {
			out = []string{prefix + "-"}
		}
		return out, nil
	case "switchover":
		target := f[2]
		if target == "-" {
			target = ""
		}
		sw, err := w.a.Switchover(w.now, w.s, f[1], target, 2*time.Second)
		if err != nil {
			return []string{line + ": error: " + err.Error()}, nil
		}
		return []string{line + ": ok " + sw.From + "->" + sw.Target}, nil
	case "alive":
		alive := w.a.Alive(w.now, w.s)
		var names []string
		for _, n := range slices.Sorted(maps.Keys(alive)) {
			if alive[n] {
				names = append(names, n)
			}
		}
		return []string{fmt.Sprintf("alive at %dms: %s", w.now.Sub(w.t0).Milliseconds(), strings.Join(names, " "))}, nil
	case "members":
		w.a.SetMembers(f[1:])
		return nil, nil
	case "leadership":
		return []string{fmt.Sprintf("%s leading hands on: %v", f[1], w.a.WantsLeadershipAway(f[1], w.s))}, nil
	}
	return nil, fmt.Errorf("unknown step %q", f[0])
}
