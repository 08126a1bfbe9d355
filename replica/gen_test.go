package replica

import (
	"flag"
	"fmt"
	"maps"
	"math/rand"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/blockrep/blockrep/internal/scenario"
)

// Scenario files (testdata/gen/*.txt)
//
// Each file is a sequence of blocks separated by blank lines:
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
// Commands:
//
//	decide [policy=NAME]          input: "local <side>" and "peer <side>"
//	                              output: "action=A resync=R merge=B" and "reason: …"
//	new-current fresh=HEX         input: one <gens>; output: the new <gens>
//	in-sync                       input: one <gens>; output: the new <gens>
//	resync-done                   input: "target <gens>" and "source <gens>"
//	                              output: both after the resync finished
//	parse-policy                  input: one name per line (Go-quoted if it
//	                              starts with a quote); output: "name -> policy"
//	                              or "name -> error: …"
//
// <gens> is "cur=HEX bm=HEX hist=HEX,HEX,…" (any key may be omitted: 0;
// "hist=-" is empty). <side> is <gens> plus "disk=STATE" (required),
// "changed=N", "since=N" and the flags "was-primary" and "discard-my-data".
//
// Every decide scenario is also run mirrored (peer as local) and must give
// the mirrored action with the same resync kind and merge flag.
//
// go test ./replica/ -run TestGenScenarios -rewrite regenerates the expected
// outputs in place (review the diff!).

var rewriteGen = flag.Bool("rewrite", false, "rewrite expected outputs of testdata/gen scenario files")

func TestGenScenarios(t *testing.T) {
	scenario.Run(t, filepath.Join("testdata", "gen", "*.txt"), scenario.Options{Rewrite: *rewriteGen},
		func() scenario.Runner { return runGenScenario })
}

// runGenScenario executes one scenario and returns its output lines. An
// error means the scenario itself is malformed, or a decide scenario is not
// symmetric.
func runGenScenario(it *scenario.Block) ([]string, error) {
	fields := strings.Fields(it.Cmd)
	args := map[string]string{}
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return nil, fmt.Errorf("argument %q is not key=value", f)
		}
		args[k] = v
	}
	checkArgs := func(allowed ...string) error {
		for k := range args {
			if !slices.Contains(allowed, k) {
				return fmt.Errorf("unknown argument %q", k)
			}
		}
		return nil
	}
	switch fields[0] {
	case "decide":
		if err := checkArgs("policy"); err != nil {
			return nil, err
		}
		policy := PolicyDisconnect
		if s, ok := args["policy"]; ok {
			p, err := ParseSplitBrainPolicy(s)
			if err != nil {
				return nil, err
			}
			policy = p
		}
		in, err := namedLines(it.Input, "local", "peer")
		if err != nil {
			return nil, err
		}
		local, err := parseSide(in["local"])
		if err != nil {
			return nil, fmt.Errorf("local: %v", err)
		}
		peer, err := parseSide(in["peer"])
		if err != nil {
			return nil, fmt.Errorf("peer: %v", err)
		}
		d := Decide(local, peer, policy)
		if err := checkMirror(d, Decide(peer, local, policy)); err != nil {
			return nil, err
		}
		return []string{
			fmt.Sprintf("action=%v resync=%v merge=%v", d.Action, d.Resync, d.MergeBitmaps),
			"reason: " + d.Reason,
		}, nil

	case "new-current":
		if err := checkArgs("fresh"); err != nil {
			return nil, err
		}
		fresh, err := strconv.ParseUint(args["fresh"], 16, 64)
		if err != nil {
			return nil, fmt.Errorf("fresh: %v", err)
		}
		if len(it.Input) != 1 {
			return nil, fmt.Errorf("want one input line")
		}
		g, err := parseGens(it.Input[0])
		if err != nil {
			return nil, err
		}
		var out string
		func() {
			defer func() {
				if r := recover(); r != nil {
					out = fmt.Sprintf("panic: %v", r)
				}
			}()
			out = g.NewCurrent(GenID(fresh)).String()
		}()
		return []string{out}, nil

	case "in-sync":
		if err := checkArgs(); err != nil {
			return nil, err
		}
		if len(it.Input) != 1 {
			return nil, fmt.Errorf("want one input line")
		}
		g, err := parseGens(it.Input[0])
		if err != nil {
			return nil, err
		}
		return []string{g.InSync().String()}, nil

	case "resync-done":
		if err := checkArgs(); err != nil {
			return nil, err
		}
		in, err := namedLines(it.Input, "target", "source")
		if err != nil {
			return nil, err
		}
		tgt, err := parseGens(in["target"])
		if err != nil {
			return nil, err
		}
		src, err := parseGens(in["source"])
		if err != nil {
			return nil, err
		}
		return []string{
			"target " + tgt.ResyncDone(src).String(),
			"source " + src.InSync().String(),
		}, nil

	case "parse-policy":
		if err := checkArgs(); err != nil {
			return nil, err
		}
		var out []string
		for _, l := range it.Input {
			s := l
			if strings.HasPrefix(l, `"`) {
				u, err := strconv.Unquote(l)
				if err != nil {
					return nil, fmt.Errorf("input %s: %v", l, err)
				}
				s = u
			}
			p, err := ParseSplitBrainPolicy(s)
			if err != nil {
				out = append(out, fmt.Sprintf("%q -> error: %v", s, err))
				continue
			}
			if p.String() != s {
				return nil, fmt.Errorf("%q parsed to %v, whose String differs", s, p)
			}
			out = append(out, fmt.Sprintf("%q -> %v", s, p))
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown command %q", fields[0])
}

// namedLines maps "name rest" input lines to rest; every name must appear
// exactly once.
func namedLines(lines []string, names ...string) (map[string]string, error) {
	out := map[string]string{}
	for _, l := range lines {
		name, rest, _ := strings.Cut(l, " ")
		if !slices.Contains(names, name) {
			return nil, fmt.Errorf("input line %q: want one of %v", l, names)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("input %q given twice", name)
		}
		out[name] = strings.TrimSpace(rest)
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			return nil, fmt.Errorf("input %q missing", n)
		}
	}
	return out, nil
}

func parseGenID(s string) (GenID, error) {
	v, err := strconv.ParseUint(s, 16, 64)
	return GenID(v), err
}

// parseGenField sets one cur/bm/hist field of g; ok is false for other keys.
func parseGenField(g *Generations, k, v string) (ok bool, err error) {
	switch k {
	case "cur":
		g.Current, err = parseGenID(v)
	case "bm":
		g.Bitmap, err = parseGenID(v)
	case "hist":
		if v == "-" {
			return true, nil
		}
		parts := strings.Split(v, ",")
		if len(parts) > HistoryLen {
			return true, fmt.Errorf("hist: more than %d entries", HistoryLen)
		}
		for i, p := range parts {
			if g.History[i], err = parseGenID(p); err != nil {
				return true, err
			}
		}
	default:
		return false, nil
	}
	return true, err
}

func parseGens(s string) (Generations, error) {
	var g Generations
	for _, f := range strings.Fields(s) {
		k, v, _ := strings.Cut(f, "=")
		ok, err := parseGenField(&g, k, v)
		if err != nil {
			return g, fmt.Errorf("%s: %v", f, err)
		}
		if !ok {
			return g, fmt.Errorf("unknown field %q", f)
		}
	}
	return g, nil
}

func parseSide(s string) (Side, error) {
	var side Side
	haveDisk := false
	for _, f := range strings.Fields(s) {
		k, v, hasValue := strings.Cut(f, "=")
		ok, err := parseGenField(&side.Gen, k, v)
		if err != nil {
			return side, fmt.Errorf("%s: %v", f, err)
		}
		if ok {
			continue
		}
		switch {
		case k == "disk" && hasValue:
			d, err := parseDiskStateForTest(v)
			if err != nil {
				return side, err
			}
			side.Disk, haveDisk = d, true
		case k == "changed" && hasValue:
			side.ChangedBlocks, err = strconv.ParseUint(v, 10, 64)
		case k == "since" && hasValue:
			side.PrimarySince, err = strconv.ParseUint(v, 10, 64)
		case f == "was-primary":
			side.WasPrimary = true
		case f == "discard-my-data":
			side.DiscardMyData = true
		default:
			return side, fmt.Errorf("unknown field %q", f)
		}
		if err != nil {
			return side, fmt.Errorf("%s: %v", f, err)
		}
	}
	if !haveDisk {
		return side, fmt.Errorf("disk= is required")
	}
	return side, nil
}

func parseDiskStateForTest(s string) (DiskState, error) {
	for d := Diskless; d <= UpToDate; d++ {
		if d.String() == s {
			return d, nil
		}
	}
	return 0, fmt.Errorf("unknown disk state %q", s)
}

// mirrorAction is the action the peer must take for the local action a.
func mirrorAction(a Action) Action {
	switch a {
	case BecomeSyncSource:
		return BecomeSyncTarget
	case BecomeSyncTarget:
		return BecomeSyncSource
	}
	return a
}

// checkMirror checks that the peer's decision d2 mirrors the local d1.
func checkMirror(d1, d2 Decision) error {
	if d2.Action != mirrorAction(d1.Action) || d2.Resync != d1.Resync || d2.MergeBitmaps != d1.MergeBitmaps {
		return fmt.Errorf("not symmetric:\n\tlocal view: %v\n\tpeer view:  %v", d1, d2)
	}
	return nil
}

// checkDecisionInvariants checks the properties every decision must have,
// whatever the input.
func checkDecisionInvariants(local, peer Side, d Decision) error {
	var src, tgt Side
	switch d.Action {
	case BecomeSyncSource:
		src, tgt = local, peer
	case BecomeSyncTarget:
		src, tgt = peer, local
	default:
		if d.Resync != NoResync || d.MergeBitmaps {
			return fmt.Errorf("%v with resync %v merge %v", d.Action, d.Resync, d.MergeBitmaps)
		}
		if d.Reason == "" {
			return fmt.Errorf("empty reason")
		}
		if d.Action == Unrelated && sharesGeneration(local.Gen, peer.Gen) {
			return fmt.Errorf("Unrelated, but %v and %v share a generation", local.Gen, peer.Gen)
		}
		return nil
	}
	if src.Disk != UpToDate && src.Disk != Outdated {
		return fmt.Errorf("source is %v", src.Disk)
	}
	if tgt.Disk == Diskless {
		return fmt.Errorf("target is Diskless")
	}
	if src.Disk == Outdated && tgt.Disk == UpToDate {
		return fmt.Errorf("Outdated source overwrites UpToDate target")
	}
	if d.Resync == NoResync {
		return fmt.Errorf("%v without a resync kind", d.Action)
	}
	if d.MergeBitmaps && d.Resync == FullResync {
		return fmt.Errorf("MergeBitmaps with a full resync")
	}
	if d.Reason == "" {
		return fmt.Errorf("empty reason")
	}
	return nil
}

func sharesGeneration(a, b Generations) bool {
	all := func(g Generations) []GenID { return append(g.ancestors(), g.Current) }
	for _, x := range all(a) {
		if x != 0 && slices.Contains(all(b), x) {
			return true
		}
	}
	return false
}

// TestDecideRandomSymmetry feeds Decide random, mostly nonsensical pairs of
// sides (a small pool of identifiers, so that matches of every kind are
// frequent) and checks the properties that must hold for any input:
// symmetry, determinism, and that a side without consistent data is never
// a source.
func TestDecideRandomSymmetry(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	id := func(zeroIn int) GenID {
		if r.Intn(zeroIn) == 0 {
			return 0
		}
		return GenID(1 + r.Intn(6))
	}
	side := func() Side {
		var s Side
		s.Gen.Current = id(8)
		s.Gen.Bitmap = id(2)
		for i := range r.Intn(HistoryLen + 1) {
			s.Gen.History[i] = id(6)
		}
		s.Disk = DiskState(r.Intn(4))
		if r.Intn(50) == 0 {
			s.Disk = DiskState(9) // garbage must be as safe as Inconsistent
		}
		s.WasPrimary = r.Intn(3) == 0
		s.ChangedBlocks = []uint64{0, 0, 1, 7}[r.Intn(4)]
		s.PrimarySince = uint64(r.Intn(3))
		s.DiscardMyData = r.Intn(5) == 0
		return s
	}
	seen := map[string]int{}
	for i := range 300000 {
		a, b := side(), side()
		policy := SplitBrainPolicy(r.Intn(6)) // 5 is not a valid policy
		d := Decide(a, b, policy)
		if err := checkMirror(d, Decide(b, a, policy)); err != nil {
			t.Fatalf("case %d: local {%+v} peer {%+v} policy %v: %v", i, a, b, policy, err)
		}
		if err := checkDecisionInvariants(a, b, d); err != nil {
			t.Fatalf("case %d: local {%+v} peer {%+v} policy %v: %v (%v)", i, a, b, policy, err, d)
		}
		if again := Decide(a, b, policy); again != d {
			t.Fatalf("case %d: not deterministic: %v then %v", i, d, again)
		}
		seen[fmt.Sprintf("%v/%v/%v", d.Action, d.Resync, d.MergeBitmaps)]++
	}
	// The generator must reach every outcome, or the test proves little.
	for _, want := range []string{
		"Proceed/NoResync/false", "Refuse/NoResync/false", "Unrelated/NoResync/false", "SplitBrain/NoResync/false",
		"BecomeSyncSource/BitmapResync/false", "BecomeSyncSource/BitmapResync/true",
		"BecomeSyncSource/FullResync/false", "BecomeSyncSource/ALResync/false", "BecomeSyncSource/ALResync/true",
	} {
		if seen[want] == 0 {
			t.Errorf("outcome %s never produced; seen %v", want, seen)
		}
	}
}

// TestGenerationsLifecycle simulates two data nodes through random
// failures — writes, disconnects, crashes of the primary with a write in
// flight, restarts, failovers, interrupted resyncs and (in half the runs)
// forced double promotions that cause a split brain — using NewCurrent,
// InSync, ResyncDone and Decide the way the volume will. Each node's data is
// modelled block by block, so the test checks what the pure tests cannot:
// that the resync set Decide chooses (the source's bitmap, both bitmaps,
// or everything) really makes the copies identical, that "Proceed" is only
// said of identical copies, and that no acknowledged write is lost while
// the nodes behaved (no forced promotion).
func TestGenerationsLifecycle(t *testing.T) {
	seen := map[string]int{}
	for run := range 400 {
		s := newGenSim(t, int64(run), run%2 == 1)
		for step := 0; step < 300; step++ {
			s.step()
		}
		s.heal()
		for k, v := range s.seen {
			seen[k] += v
		}
	}
	t.Logf("outcomes: %v", seen)
	for _, want := range []string{
		"Proceed/NoResync/false",
		"BecomeSyncSource/FullResync/false",
		"BecomeSyncSource/BitmapResync/false",
		"BecomeSyncSource/BitmapResync/true",
		"BecomeSyncSource/ALResync/false", // ALResync with merge needs two primaries at one generation: scenario files
		"SplitBrain/NoResync/false",
		"interrupted", "resumed", "split-brain-resolved",
	} {
		if seen[want] == 0 {
			t.Errorf("simulation never produced %s; seen %v", want, seen)
		}
	}
}

const simBlocks = 16

type simNode struct {
	name       string
	gen        Generations
	disk       DiskState
	data       [simBlocks]int // version written to each block (0: never)
	bits       map[int]bool   // out-of-sync bitmap towards the peer
	al         map[int]bool   // activity log: blocks written this primary session
	alive      bool
	primary    bool
	wasPrimary bool
	since      uint64
	discard    bool
}

func (n *simNode) side() Side {
	return Side{Gen: n.gen, Disk: n.disk, WasPrimary: n.wasPrimary,
		ChangedBlocks: uint64(len(n.bits)), PrimarySince: n.since, DiscardMyData: n.discard}
}

type genSim struct {
	t           *testing.T
	r           *rand.Rand
	seed        int64
	allowUnsafe bool
	policy      SplitBrainPolicy
	n           [2]*simNode
	connected   bool
	epoch       uint64
	lastGen     GenID
	ver         int
	acked       [simBlocks]int // newest acknowledged version per block
	unsafe      bool           // a forced promotion happened; acked checks wait for the copies to reunite
	trace       []string
	seen        map[string]int
}

func newGenSim(t *testing.T, seed int64, allowUnsafe bool) *genSim {
	s := &genSim{t: t, r: rand.New(rand.NewSource(seed)), seed: seed, allowUnsafe: allowUnsafe, seen: map[string]int{}}
	s.policy = SplitBrainPolicy(s.r.Intn(5))
	for i := range s.n {
		s.n[i] = &simNode{name: fmt.Sprintf("n%d", i), disk: Inconsistent, bits: map[int]bool{}, al: map[int]bool{}, alive: true}
	}
	// Initial sync: the operator forces n0 to be the first primary, which
	// makes it UpToDate at a fresh generation; connecting then gives a
	// full sync to the new n1.
	n0 := s.n[0]
	n0.gen = n0.gen.NewCurrent(s.fresh())
	n0.disk = UpToDate
	for range 50 {
		if s.connect(); s.connected {
			return s
		}
	}
	s.fail("initial connect did not sync")
	return s
}

func (s *genSim) fresh() GenID { s.lastGen++; return 0x1000 + s.lastGen }

func (s *genSim) other(n *simNode) *simNode {
	if n == s.n[0] {
		return s.n[1]
	}
	return s.n[0]
}

func (s *genSim) logf(format string, args ...any) {
	s.trace = append(s.trace, fmt.Sprintf(format, args...))
}

func (s *genSim) fail(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf("seed %d (unsafe allowed %v, policy %v): %s\ntrace:\n\t%s", s.seed, s.allowUnsafe, s.policy,
		fmt.Sprintf(format, args...), strings.Join(s.trace, "\n\t"))
}

func (s *genSim) alivePrimary() *simNode {
	for _, n := range s.n {
		if n.alive && n.primary {
			return n
		}
	}
	return nil
}

// step performs one random event that is possible in the current state.
func (s *genSim) step() {
	for {
		var ok bool
		switch s.r.Intn(10) {
		case 0, 1, 2:
			ok = s.write()
		case 3:
			ok = s.disconnect()
		case 4:
			ok = s.connect()
		case 5:
			ok = s.crashPrimary()
		case 6:
			ok = s.crashSecondary()
		case 7:
			ok = s.restart()
		case 8:
			ok = s.promote()
		case 9:
			ok = s.demote()
		}
		if ok {
			return
		}
	}
}

func (s *genSim) write() bool {
	p := s.alivePrimary()
	if p == nil {
		return false
	}
	b := s.r.Intn(simBlocks)
	s.ver++
	p.al[b] = true
	p.data[b] = s.ver
	if s.connected {
		s.other(p).data[b] = s.ver
	} else {
		p.bits[b] = true
	}
	s.acked[b] = s.ver
	s.logf("%s writes v%d to block %d (connected %v)", p.name, s.ver, b, s.connected)
	return true
}

// loseLink is what a primary does when its peer goes away: a new current
// generation, and (through the cluster) the peer is marked Outdated so the
// primary may go on alone.
func (s *genSim) loseLink() {
	s.connected = false
	if p := s.alivePrimary(); p != nil {
		p.gen = p.gen.NewCurrent(s.fresh())
		if q := s.other(p); q.disk == UpToDate && !s.unsafe {
			q.disk = Outdated
		}
	}
}

func (s *genSim) disconnect() bool {
	if !s.connected {
		return false
	}
	s.loseLink()
	s.logf("link lost: %s %v / %s %v", s.n[0].name, s.n[0].gen, s.n[1].name, s.n[1].gen)
	return true
}

func (s *genSim) crashPrimary() bool {
	p := s.alivePrimary()
	if p == nil {
		return false
	}
	q := s.other(p)
	b := s.r.Intn(simBlocks)
	s.ver++
	p.al[b] = true
	where := s.r.Intn(4) // the unacknowledged write landed on: 0 nowhere, 1 primary, 2 peer, 3 both
	if !s.connected {
		p.bits[b] = true
		where &= 1
	}
	if where&1 != 0 {
		p.data[b] = s.ver
	}
	if where&2 != 0 {
		q.data[b] = s.ver
	}
	p.alive, p.primary = false, false
	s.connected = false
	s.logf("%s crashes as primary with v%d to block %d in flight (landed %d)", p.name, s.ver, b, where)
	return true
}

func (s *genSim) crashSecondary() bool {
	for _, n := range s.r.Perm(2) {
		q := s.n[n]
		if q.alive && !q.primary {
			q.alive = false
			if s.connected {
				s.loseLink()
			}
			s.logf("%s crashes as secondary", q.name)
			return true
		}
	}
	return false
}

func (s *genSim) restart() bool {
	for _, n := range s.n {
		if !n.alive {
			n.alive = true
			if n.wasPrimary {
				// Attaching after a crash as primary: the extents in the
				// activity log are suspect, so they go into the bitmap.
				for b := range n.al {
					n.bits[b] = true
				}
			}
			s.logf("%s restarts: %v %v bits %v", n.name, n.gen, n.disk, slices.Sorted(maps.Keys(n.bits)))
			return true
		}
	}
	return false
}

func (s *genSim) promote() bool {
	x := s.n[s.r.Intn(2)]
	o := s.other(x)
	if !x.alive || x.primary || (o.alive && o.primary && s.connected) {
		return false
	}
	forced := false
	if o.alive && o.primary || x.disk != UpToDate {
		// Only a forced promotion gets here: the peer is primary
		// elsewhere, or this disk is not UpToDate. It is what an operator
		// does with --force when quorum is lost, and it causes split brain.
		if !s.allowUnsafe || s.r.Intn(4) != 0 || x.disk == Diskless {
			return false
		}
		forced, s.unsafe = true, true
		x.disk = UpToDate
	}
	s.epoch++
	x.primary, x.wasPrimary, x.since = true, true, s.epoch
	x.al = map[int]bool{}
	if !s.connected {
		x.gen = x.gen.NewCurrent(s.fresh())
		if o.disk == UpToDate && !forced {
			o.disk = Outdated // the promotion's commit outdates the absent peer
		}
	}
	s.logf("%s promoted at epoch %d (forced %v, connected %v): %v", x.name, s.epoch, forced, s.connected, x.gen)
	return true
}

func (s *genSim) demote() bool {
	p := s.alivePrimary()
	if p == nil {
		return false
	}
	p.primary, p.wasPrimary = false, false
	p.al = map[int]bool{}
	s.logf("%s demotes cleanly", p.name)
	return true
}

// connect runs Decide on both nodes and carries out the decision.
func (s *genSim) connect() bool {
	a, b := s.n[0], s.n[1]
	if s.connected || !a.alive || !b.alive {
		return false
	}
	d := Decide(a.side(), b.side(), s.policy)
	if err := checkMirror(d, Decide(b.side(), a.side(), s.policy)); err != nil {
		s.fail("%v", err)
	}
	if err := checkDecisionInvariants(a.side(), b.side(), d); err != nil {
		s.fail("%v: %v", err, d)
	}
	s.seen[fmt.Sprintf("%v/%v/%v", mirrorSource(d.Action), d.Resync, d.MergeBitmaps)]++
	s.logf("connect: %s {%+v} %s {%+v}: %v", a.name, a.side(), b.name, b.side(), d)

	switch d.Action {
	case Proceed:
		if a.data != b.data {
			s.fail("Proceed, but the data differs:\n\t%v\n\t%v", a.data, b.data)
		}
		a.gen, b.gen = a.gen.InSync(), b.gen.InSync()
		clear(a.bits)
		clear(b.bits)
		if a.disk == UpToDate || b.disk == UpToDate {
			a.disk, b.disk = UpToDate, UpToDate
		}
		s.connected = true
		s.checkAcked(a)

	case BecomeSyncSource, BecomeSyncTarget:
		src, tgt := a, b
		if d.Action == BecomeSyncTarget {
			src, tgt = b, a
		}
		if tgt.primary {
			if !s.unsafe {
				s.fail("a healthy primary was chosen as sync target: %v", d)
			}
			tgt.primary = false // the split-brain victim demotes before the resync
		}
		var set []int
		if d.Resync == FullResync {
			for i := range simBlocks {
				set = append(set, i)
			}
		} else {
			union := maps.Clone(src.bits)
			if d.MergeBitmaps {
				maps.Copy(union, tgt.bits)
			}
			set = slices.Sorted(maps.Keys(union))
		}
		if len(set) > 1 && s.r.Intn(4) == 0 {
			// The resync is interrupted half way: the target is left
			// Inconsistent, the bits of copied blocks are cleared.
			for _, i := range set[:len(set)/2] {
				tgt.data[i] = src.data[i]
				delete(src.bits, i)
				delete(tgt.bits, i)
			}
			tgt.disk = Inconsistent
			s.connected = true // the link existed; losing it now is a disconnect
			s.loseLink()
			s.logf("resync interrupted after %d of %d blocks", len(set)/2, len(set))
			s.seen["interrupted"]++
			return true
		}
		for _, i := range set {
			tgt.data[i] = src.data[i]
		}
		if src.data != tgt.data {
			s.fail("%v left the copies different (set %v):\n\tsource %v\n\ttarget %v", d, set, src.data, tgt.data)
		}
		if strings.Contains(d.Reason, "resuming") {
			s.seen["resumed"]++
		}
		if strings.HasPrefix(d.Reason, "split brain") {
			s.seen["split-brain-resolved"]++
		}
		// Target first, then source: the persistence order Generations
		// documents.
		tgt.gen = tgt.gen.ResyncDone(src.gen)
		src.gen = src.gen.InSync()
		clear(src.bits)
		clear(tgt.bits)
		tgt.disk = src.disk
		tgt.wasPrimary, tgt.discard, src.discard = false, false, false
		tgt.al = map[int]bool{}
		if !src.primary {
			src.wasPrimary = false
			src.al = map[int]bool{}
		}
		s.connected = true
		if s.unsafe {
			// The copies are reunited; what the source has is now the
			// truth, and the forced promotion's consequences are over.
			s.unsafe = false
			s.acked = src.data
		}
		s.checkAcked(src)

	case SplitBrain:
		if !s.unsafe {
			s.fail("split brain without a forced promotion: %v", d)
		}
		// The operator picks a victim; the next connect resolves.
		v := s.n[s.r.Intn(2)]
		v.discard, s.other(v).discard = true, false
		s.logf("operator: %s connect --discard-my-data", v.name)

	default:
		if !s.unsafe {
			s.fail("unexpected %v", d)
		}
		s.seen["other-after-force"]++
	}
	return true
}

// mirrorSource reports a decision from the source's point of view so that
// stats do not depend on which node happened to be local.
func mirrorSource(a Action) Action {
	if a == BecomeSyncTarget {
		return BecomeSyncSource
	}
	return a
}

// checkAcked checks that n holds every acknowledged write (or a later
// version of the block).
func (s *genSim) checkAcked(n *simNode) {
	if s.unsafe {
		return
	}
	for i, v := range s.acked {
		if n.data[i] < v {
			s.fail("%s lost acknowledged v%d of block %d (has v%d)", n.name, v, i, n.data[i])
		}
	}
}

// heal restarts everything and connects until the pair is connected: with
// an operator resolving split brains, every run must end with identical
// copies holding every acknowledged write.
func (s *genSim) heal() {
	for range 50 {
		if s.connected {
			break
		}
		for s.restart() {
		}
		s.connect()
	}
	if !s.connected {
		s.fail("did not heal")
	}
	if s.n[0].data != s.n[1].data {
		s.fail("healed but different")
	}
	s.checkAcked(s.n[0])
}

// TestGenStrings covers the names used in logs and status output, including
// values no constant has (they must print, not panic or look valid).
func TestGenStrings(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{GenID(0).String(), "0"},
		{GenID(0xdeadbeef).String(), "deadbeef"},
		{Generations{}.String(), "cur=0 bm=0 hist=-"},
		{UpToDate.String(), "UpToDate"},
		{Diskless.String(), "Diskless"},
		{DiskState(9).String(), "DiskState(9)"},
		{SplitBrainPolicy(0).String(), "disconnect"},
		{SplitBrainPolicy(9).String(), "SplitBrainPolicy(9)"},
		{Action(0).String(), "Proceed"},
		{Action(9).String(), "Action(9)"},
		{ResyncKind(0).String(), "NoResync"},
		{ResyncKind(9).String(), "ResyncKind(9)"},
		{Decision{Action: BecomeSyncTarget, Resync: BitmapResync, MergeBitmaps: true, Reason: "r"}.String(),
			"BecomeSyncTarget BitmapResync merge-bitmaps: r"},
		{Decision{Action: SplitBrain, Reason: "r"}.String(), "SplitBrain: r"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	// An out-of-range policy (a caller bug) resolves nothing.
	d := Decide(
		Side{Gen: Generations{Current: 0xb2, Bitmap: 0xa1}, Disk: UpToDate},
		Side{Gen: Generations{Current: 0xc3, Bitmap: 0xa1}, Disk: UpToDate},
		SplitBrainPolicy(9))
	if d.Action != SplitBrain || !strings.Contains(d.Reason, "unknown") {
		t.Errorf("unknown policy: %v", d)
	}
}
