package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand"
	"slices"
	"testing"

	"github.com/blockrep/blockrep/replica"
)

// TestRandomCommands applies seeded random command sequences (100k steps
// in all) and checks after every step:
//   - Check holds;
//   - a refused command is a *RefusedError and leaves the state
//     byte-identical (MarshalBinary);
//   - a second replica fed the Encode/DecodeCommand of every command holds
//     byte-identical state (determinism in log order);
//   - the transition obeys the safety rules, restated independently of
//     Apply (transitionOK): epochs only grow, by exactly one and only by a
//     Promote; each (volume, epoch) has at most one primary over the whole
//     run; a primary is only installed by a Promote of an UpToDate (or,
//     forced, Outdated) data node; a replica leaves the UpToDate set only
//     by the current primary's word, its own report, or a forced
//     promotion; it joins it only by the primary's word or its promotion.
//
// It also requires every op to be accepted and every safety rule to refuse
// something, so that the generator keeps exercising them.
func TestRandomCommands(t *testing.T) {
	const seeds, steps = 20, 5000
	accepted := map[Op]int{}
	refused := map[Rule]int{}
	for seed := int64(1); seed <= seeds; seed++ {
		g := &gen{rnd: rand.New(rand.NewSource(seed)), s: NewState(), nextVol: 1}
		replicaState := NewState()
		primaries := map[string]map[uint64]string{} // volume -> epoch -> primary
		for _, c := range g.setup() {
			if _, err := g.s.Apply(c); err != nil {
				t.Fatalf("seed %d: setup %+v: %v", seed, c, err)
			}
			if _, err := replicaState.Apply(c); err != nil {
				t.Fatal(err)
			}
		}
		for step := 0; step < steps; step++ {
			c := g.command()
			pre := g.s.Clone()
			preBytes := mustMarshal(g.s)
			res, err := g.s.Apply(c)
			fail := func(format string, args ...any) {
				t.Fatalf("seed %d step %d: %+v: %s\nbefore: %s\nafter:  %s", seed, step, c,
					fmt.Sprintf(format, args...), preBytes, mustMarshal(g.s))
			}
			dc, derr := DecodeCommand(c.Encode())
			if derr != nil || dc != c {
				fail("command round trip: %+v, %v", dc, derr)
			}
			_, rerr := replicaState.Apply(dc)
			if (err == nil) != (rerr == nil) {
				fail("replica disagrees: %v vs %v", err, rerr)
			}
			if !bytes.Equal(mustMarshal(g.s), mustMarshal(replicaState)) {
				fail("replica state differs: %s", mustMarshal(replicaState))
			}
			if err != nil {
				var ref *RefusedError
				if !errors.As(err, &ref) {
					fail("refusal of type %T: %v", err, err)
				}
				refused[ref.Rule]++
				if !bytes.Equal(preBytes, mustMarshal(g.s)) {
					fail("refused (%v) but the state changed", err)
				}
				continue
			}
			accepted[c.Op]++
			if err := g.s.Check(); err != nil {
				fail("Check: %v", err)
			}
			if err := transitionOK(pre, g.s, c, res); err != nil {
				fail("%v", err)
			}
			for vn, v := range g.s.Volumes {
				if v.Primary == "" {
					continue
				}
				if primaries[vn] == nil {
					primaries[vn] = map[uint64]string{}
				}
				if p, ok := primaries[vn][v.Epoch]; ok && p != v.Primary {
					fail("volume %s epoch %d had primary %s, now %s", vn, v.Epoch, p, v.Primary)
				}
				primaries[vn][v.Epoch] = v.Primary
			}
		}
	}
	t.Logf("accepted: %v", accepted)
	t.Logf("refused: %v", refused)
	for o := OpAddNode; o <= OpPrimaryLost; o++ {
		if accepted[o] == 0 {
			t.Errorf("op %v never accepted: the generator does not exercise it", o)
		}
	}
	for _, r := range []Rule{RuleStaleEpoch, RuleWitnessNotPrimary, RulePrimaryNotDeposed, RuleOutdatedNeedsForce,
		RuleNoConsistentData, RuleNotPrimary, RulePrimaryOwnDisk, RuleSelfUpward, RuleRemovePrimary,
		RuleLastUpToDate, RuleForceNeedsReason, RuleMalformed} {
		if refused[r] == 0 {
			t.Errorf("rule %s never refused anything: the generator does not exercise it", r)
		}
	}
}

// transitionOK restates the safety rules over one accepted transition.
func transitionOK(pre, post *State, c Command, res Result) error {
	if c.Force && c.Reason == "" {
		return fmt.Errorf("force without a reason accepted")
	}
	for vn, pv := range pre.Volumes {
		v, ok := post.Volumes[vn]
		if !ok {
			return fmt.Errorf("volume %s vanished", vn)
		}
		promoted := c.Op == OpPromote && c.Volume == vn
		switch {
		case v.Epoch == pv.Epoch:
		case promoted && v.Epoch == pv.Epoch+1:
		case c.Op == OpRaiseEpoch && c.Volume == vn && pv.Primary == "" && v.Epoch == c.Epoch && c.Epoch > pv.Epoch:
		default:
			return fmt.Errorf("volume %s: epoch %d -> %d by %v", vn, pv.Epoch, v.Epoch, c.Op)
		}
		if v.Primary != pv.Primary || v.Epoch != pv.Epoch && c.Op != OpRaiseEpoch {
			if v.Primary != "" {
				// A new primary: only a promotion of a data node with
				// consistent, current (or forced Outdated) data, and only
				// over a recorded primary when forced.
				d := pv.Disks[v.Primary]
				switch {
				case !promoted || v.Primary != c.Node || v.Epoch != pv.Epoch+1:
					return fmt.Errorf("volume %s: primary %q -> %q by %v", vn, pv.Primary, v.Primary, c.Op)
				case pre.Nodes[v.Primary].Kind != DataNode:
					return fmt.Errorf("volume %s: %v %s promoted", vn, pre.Nodes[v.Primary].Kind, v.Primary)
				case d != replica.UpToDate && !(d == replica.Outdated && c.Force):
					return fmt.Errorf("volume %s: %s promoted from %v (force %v)", vn, v.Primary, d, c.Force)
				case pv.Primary != "" && !c.Force:
					return fmt.Errorf("volume %s: %s promoted over primary %s without force", vn, v.Primary, pv.Primary)
				case pv.Primary != "" && res.Deposed != pv.Primary:
					return fmt.Errorf("volume %s: deposed %s not reported (%q)", vn, pv.Primary, res.Deposed)
				}
			} else {
				// The primary was cleared: a demote by it, or the arbiter's
				// primary-lost, at its epoch.
				ok := c.Volume == vn && c.Epoch == pv.Epoch &&
					(c.Op == OpPrimaryLost || c.Op == OpDemote && c.Node == pv.Primary)
				if !ok {
					return fmt.Errorf("volume %s: primary %s cleared by %+v", vn, pv.Primary, c)
				}
			}
		}
		byPrimary := c.Volume == vn && pv.Primary != "" && c.By == pv.Primary && c.Epoch == pv.Epoch &&
			(c.Op == OpOutdate || c.Op == OpSetDisk)
		for dn, d := range v.Disks {
			od, existed := pv.Disks[dn]
			if !existed {
				if !(c.Op == OpAddNode && c.Node == dn && d == replica.Inconsistent) {
					return fmt.Errorf("volume %s: replica %s=%v appeared by %v", vn, dn, d, c.Op)
				}
				continue
			}
			if d == od {
				continue
			}
			if dn == pv.Primary && v.Primary == pv.Primary {
				return fmt.Errorf("volume %s: primary %s's disk %v -> %v", vn, dn, od, d)
			}
			forcedPromote := promoted && c.Force && pv.Disks[c.Node] == replica.Outdated
			switch {
			case byPrimary && dn == c.Node && dn != pv.Primary:
			case c.Volume == vn && c.Op == OpSetDisk && c.By == dn && dn == c.Node && (d < od || !pv.Promoted) && c.Epoch == pv.Epoch:
			case forcedPromote && dn == c.Node && d == replica.UpToDate:
			case forcedPromote && od == replica.UpToDate && d == replica.Outdated && slices.Contains(res.Outdated, dn):
			default:
				return fmt.Errorf("volume %s: %s %v -> %v by %+v", vn, dn, od, d, c)
			}
		}
		for dn := range pv.Disks {
			if _, ok := v.Disks[dn]; !ok && !(c.Op == OpRemoveNode && c.Node == dn) {
				return fmt.Errorf("volume %s: replica %s dropped by %v", vn, dn, c.Op)
			}
		}
	}
	if c.Op == OpRemoveNode {
		for vn, pv := range pre.Volumes {
			if pv.Primary == c.Node {
				return fmt.Errorf("removed %s, primary of %s", c.Node, vn)
			}
			if !c.Force && pv.Disks[c.Node] == replica.UpToDate && countDisks(post.Volumes[vn], replica.UpToDate) == 0 {
				return fmt.Errorf("removed the last UpToDate replica of %s without force", vn)
			}
		}
	}
	return nil
}

// gen draws random commands, biased towards ones that may be accepted.
type gen struct {
	rnd     *rand.Rand
	s       *State
	nextVol int
}

var genNodes = []string{"n1", "n2", "n3", "w1", "w2", "ghost", ""}

func (g *gen) setup() []Command {
	cs := []Command{
		{Op: OpAddNode, Node: "n1", Kind: DataNode},
		{Op: OpAddNode, Node: "n2", Kind: DataNode},
		{Op: OpAddNode, Node: "n3", Kind: DataNode},
		{Op: OpAddNode, Node: "w1", Kind: Witness},
	}
	for range 2 {
		cs = append(cs, Command{Op: OpAddVolume, Volume: g.newVol(), Disk: replica.UpToDate})
	}
	return cs
}

func (g *gen) newVol() string {
	n := fmt.Sprintf("v%d", g.nextVol)
	g.nextVol++
	return n
}

func (g *gen) pick(xs []string) string { return xs[g.rnd.Intn(len(xs))] }

func (g *gen) command() Command {
	r := g.rnd
	vols := slices.Sorted(maps.Keys(g.s.Volumes))
	c := Command{Volume: "nope"}
	if len(vols) > 0 && r.Intn(20) > 0 {
		c.Volume = g.pick(vols)
	}
	v := g.s.Volumes[c.Volume]
	var epoch uint64
	if v != nil {
		epoch = v.Epoch
	}
	// Epochs near the current one: mostly current, else stale, next or
	// skipping ahead.
	c.Epoch = epoch
	switch r.Intn(6) {
	case 0:
		if epoch > 0 {
			c.Epoch--
		}
	case 1:
		c.Epoch++
	case 2:
		c.Epoch += 2
	}
	c.Node = g.pick(genNodes)
	if v != nil && v.Primary != "" && r.Intn(2) == 0 {
		c.By = v.Primary
	} else if r.Intn(2) == 0 {
		c.By = c.Node
	} else {
		c.By = g.pick(genNodes)
	}
	c.Disk = replica.DiskState(r.Intn(5)) // 4 is invalid
	if r.Intn(5) == 0 {
		c.Force = true
		if r.Intn(6) > 0 {
			c.Reason = "test"
		}
	}
	c.Kind = NodeKind(r.Intn(4)) // 0 and 3 are invalid
	switch x := r.Intn(100); {
	case x < 3:
		c.Op = OpAddNode
	case x < 5:
		c.Op = OpRemoveNode
	case x < 7:
		c.Op = OpAddVolume
		if r.Intn(2) == 0 && g.nextVol < 8 {
			c.Volume = g.newVol()
		}
	case x < 10:
		c.Op = OpSetPreferred
	case x < 35:
		c.Op = OpPromote
		if v != nil && r.Intn(2) == 0 {
			c.Epoch = v.Epoch + 1
			// A replica with data, so that promotions succeed often.
			for _, dn := range slices.Sorted(maps.Keys(v.Disks)) {
				if v.Disks[dn] >= replica.Outdated && r.Intn(2) == 0 {
					c.Node = dn
				}
			}
		}
	case x < 42:
		c.Op = OpDemote
		if v != nil && r.Intn(2) == 0 {
			c.Node, c.Epoch = v.Primary, v.Epoch
		}
		if r.Intn(3) == 0 {
			c.To = g.pick(genNodes)
		}
	case x < 60:
		c.Op = OpOutdate
	case x < 90:
		c.Op = OpSetDisk
	case x < 96:
		c.Op = OpPrimaryLost
	case x < 97:
		c.Op = OpRaiseEpoch
	case x < 98:
		c.Op = OpSetFailover
		c.Policy = []string{FailoverAuto, FailoverManual, "sometimes"}[r.Intn(3)]
	default:
		c.Op = Op(r.Intn(2) * 77) // invalid: 0 or 77
	}
	return c
}
