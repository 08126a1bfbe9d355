package serving

import (
	"flag"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blockrep/blockrep/internal/scenario"
)

// Scenario files for Decide (testdata/*.txt). Each scenario is
//
//	decide
//	primary [lease] [leave] | secondary
//	[now DURATION]                      (since an arbitrary epoch; default 0s)
//	[policy max=N min=DURATION cap=DURATION]
//	STEP up | busy | [up] [busy] [failed=N at=DURATION err=TEXT]   (a step not named is down)
//	----
//	OP [STEP]: REASON [(retry at DURATION)]
//
// go test ./serving/ -run TestDecideScenarios -rewrite regenerates the
// expected outputs in place (review the diff!).

var rewrite = flag.Bool("rewrite", false, "rewrite expected outputs of testdata scenario files")

func TestDecideScenarios(t *testing.T) {
	scenario.Run(t, filepath.Join("testdata", "*.txt"), scenario.Options{Rewrite: *rewrite},
		func() scenario.Runner { return runDecide })
}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func runDecide(b *scenario.Block) ([]string, error) {
	if b.Cmd != "decide" {
		return nil, fmt.Errorf("unknown command %q", b.Cmd)
	}
	s := State{Now: epoch}
	p := DefaultPolicy
	roleSet := false
	for _, line := range b.Input {
		words := strings.Fields(line)
		if len(words) == 0 {
			continue
		}
		switch words[0] {
		case "primary", "secondary":
			if roleSet {
				return nil, fmt.Errorf("role given twice")
			}
			roleSet = true
			if words[0] == "primary" {
				s.Role = Primary
			}
			for _, w := range words[1:] {
				switch w {
				case "lease":
					s.Lease = true
				case "leave":
					s.Leave = true
				default:
					return nil, fmt.Errorf("%s: unknown word %q", words[0], w)
				}
			}
		case "now":
			d, err := time.ParseDuration(words[1])
			if err != nil {
				return nil, err
			}
			s.Now = epoch.Add(d)
		case "policy":
			for _, w := range words[1:] {
				k, v, _ := strings.Cut(w, "=")
				var err error
				switch k {
				case "max":
					p.MaxFailures, err = strconv.Atoi(v)
				case "min":
					p.RetryMin, err = time.ParseDuration(v)
				case "cap":
					p.RetryMax, err = time.ParseDuration(v)
				default:
					err = fmt.Errorf("unknown policy key %q", k)
				}
				if err != nil {
					return nil, err
				}
			}
		default:
			st, err := ParseStep(words[0])
			if err != nil {
				return nil, err
			}
			o := &s.Steps[st]
			rest := strings.Join(words[1:], " ")
			if i := strings.Index(rest, "err="); i >= 0 {
				o.Err = rest[i+4:]
				rest = rest[:i]
			}
			for _, w := range strings.Fields(rest) {
				k, v, _ := strings.Cut(w, "=")
				switch k {
				case "up":
					o.Up = true
				case "busy":
					o.Busy = true
				case "failed":
					if o.Failures, err = strconv.Atoi(v); err != nil {
						return nil, err
					}
				case "at":
					d, err := time.ParseDuration(v)
					if err != nil {
						return nil, err
					}
					o.Failed = epoch.Add(d)
				default:
					return nil, fmt.Errorf("%s: unknown word %q", st, w)
				}
			}
		}
	}
	if !roleSet {
		return nil, fmt.Errorf("no role line (primary ... or secondary)")
	}
	d := Decide(s, p)
	out := d.String()
	if !d.Retry.IsZero() {
		out += fmt.Sprintf(" (retry at %v)", d.Retry.Sub(epoch))
	}
	return []string{out}, nil
}

// TestDecideWalk runs the plan against a simulated stack whose executor
// does what it is told at once: from nothing, a primary with its lease
// reaches every step up in order; losing the lease takes it down in the
// reverse order; a leaving primary ends with Demote.
func TestDecideWalk(t *testing.T) {
	s := State{Now: epoch, Role: Primary, Lease: true}
	var trace []string
	run := func(until Op) {
		t.Helper()
		for i := 0; i < 20; i++ {
			d := Decide(s, DefaultPolicy)
			switch d.Op {
			case Up:
				s.Steps[d.Step].Up = true
			case Down:
				s.Steps[d.Step].Up = false
			}
			trace = append(trace, d.Op.String()+" "+d.Step.String())
			if d.Op == until {
				return
			}
			if d.Op != Up && d.Op != Down {
				t.Fatalf("stopped at %v, want %v; trace %v", d, until, trace)
			}
		}
		t.Fatalf("no %v after 20 steps: %v", until, trace)
	}
	run(Done)
	if got, want := strings.Join(trace, ", "), "up attach, up check, up mount, up export, up vip, up announce, done attach"; got != want {
		t.Fatalf("up: %s, want %s", got, want)
	}
	trace = nil
	s.Lease = false
	run(Wait)
	if got, want := strings.Join(trace, ", "), "down announce, down vip, down export, down mount, down check, down attach, wait attach"; got != want {
		t.Fatalf("fenced: %s, want %s", got, want)
	}
	s.Lease, s.Leave = true, true
	if d := Decide(s, DefaultPolicy); d.Op != Demote {
		t.Fatalf("leaving with everything down: %v, want demote", d)
	}
}

func TestBackoff(t *testing.T) {
	p := Policy{RetryMin: time.Second, RetryMax: 5 * time.Second}
	for failures, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 5 * time.Second, 10: 5 * time.Second} {
		if got := backoff(p, failures); got != want {
			t.Errorf("backoff after %d failures: %v, want %v", failures, got, want)
		}
	}
}
