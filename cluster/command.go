package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/blockrep/blockrep/replica"
)

// Op is the kind of a Command. The zero value is invalid.
type Op uint8

const (
	// OpAddNode adds Node of Kind. A new data node gets an Inconsistent
	// replica of every existing volume.
	OpAddNode Op = iota + 1
	// OpRemoveNode removes Node and its replicas. Refused if it is some
	// volume's primary, and (without Force) if it holds the last UpToDate
	// replica of a volume.
	OpRemoveNode
	// OpAddVolume adds Volume with no primary at epoch 0 and a replica on
	// every data node, in state Disk (Inconsistent when Disk is left at
	// its zero value, Diskless).
	OpAddVolume
	// OpSetPreferred sets Volume's preferred primary to Node ("" clears).
	OpSetPreferred
	// OpPromote makes Node primary of Volume at Epoch (= current+1).
	OpPromote
	// OpDemote clears Volume's primary Node at the current Epoch; To, if
	// set, is the data node a switchover hands the volume to (recorded as
	// VolumeState.Next, so that whichever node leads next finishes it).
	OpDemote
	// OpOutdate: the primary By, at the current Epoch, marks its peer Node
	// Outdated.
	OpOutdate
	// OpSetDisk sets Node's replica of Volume to Disk, reported by By at
	// the current Epoch: By is the primary (about a peer), or Node itself
	// (downward only).
	OpSetDisk
	// OpPrimaryLost: the arbiter records that Volume's primary at the
	// current Epoch stopped answering and its lease ran out.
	OpPrimaryLost
	// OpRaiseEpoch: Node, which holds a replica of Volume, has seen Epoch
	// locally (from before this cluster, e.g. manual replication or a
	// rebuilt cluster); while the volume has no primary the epoch rises to
	// it, so the next promotion is newer than anything a replica has
	// seen. A lower or equal Epoch changes nothing.
	OpRaiseEpoch
	// OpSetFailover sets Volume's failover policy to Policy.
	OpSetFailover
	// OpDiskFailed: Node's local disk failed at the current Epoch (the
	// node detached it: on_io_error = "detach"), so its replica of Volume
	// is Diskless from now on; if Node is the primary its term ends with
	// it, as with Demote, and the arbiter promotes another node. The
	// arbiter proposes it when the node's heartbeat says so.
	OpDiskFailed
)

// Failover policies of a volume.
const (
	// FailoverAuto (the default, also ""): the arbiter promotes an
	// UpToDate secondary when the primary is lost.
	FailoverAuto = "auto"
	// FailoverManual: the arbiter records the primary lost (so that it
	// steps down when it comes back) but promotes nobody; the operator
	// promotes with blockctl promote.
	FailoverManual = "manual"
)

var opNames = [...]string{
	OpAddNode:      "add-node",
	OpRemoveNode:   "remove-node",
	OpAddVolume:    "add-volume",
	OpSetPreferred: "set-preferred",
	OpPromote:      "promote",
	OpDemote:       "demote",
	OpOutdate:      "outdate",
	OpSetDisk:      "set-disk",
	OpPrimaryLost:  "primary-lost",
	OpRaiseEpoch:   "raise-epoch",
	OpSetFailover:  "set-failover",
	OpDiskFailed:   "disk-failed",
}

// String returns the op's name ("promote", "set-disk", …).
func (o Op) String() string {
	if o > 0 && int(o) < len(opNames) {
		return opNames[o]
	}
	return "Op(" + strconv.Itoa(int(o)) + ")"
}

// ParseOp returns the op named by String.
func ParseOp(s string) (Op, error) {
	for o, name := range opNames {
		if o > 0 && name == s {
			return Op(o), nil
		}
	}
	return 0, fmt.Errorf("unknown op %q", s)
}

// Command is one change to the cluster state, as stored in the Raft log.
// Which fields an op reads is documented on the Op constants; the others
// are ignored.
type Command struct {
	Op     Op                `json:"op"`
	Volume string            `json:"volume,omitempty"`
	Node   string            `json:"node,omitempty"`
	Epoch  uint64            `json:"epoch,omitempty"`
	Disk   replica.DiskState `json:"disk,omitempty"`
	// By is the node on whose behalf the command is made (Outdate,
	// SetDisk): the primary, or the node reporting its own disk.
	By string `json:"by,omitempty"`
	// Force overrides a refusal where the rules allow it (promoting an
	// Outdated replica, deposing a recorded primary, removing the last
	// UpToDate replica). It requires a Reason.
	Force bool `json:"force,omitempty"`
	// Reason is free text for the log (who asked and why).
	Reason string   `json:"reason,omitempty"`
	Kind   NodeKind `json:"kind,omitempty"`
	// Policy is the failover policy of OpSetFailover.
	Policy string `json:"policy,omitempty"`
	// To is the switchover target of OpDemote.
	To string `json:"to,omitempty"`
}

// Encode returns the command's log-entry encoding (JSON).
func (c Command) Encode() []byte {
	b, err := json.Marshal(c)
	if err != nil {
		panic("cluster: encoding command: " + err.Error()) // only plain fields: cannot happen
	}
	return b
}

// DecodeCommand decodes a log entry written by Encode. Unknown fields are
// an error (an entry from a newer version must not be half-applied).
func DecodeCommand(data []byte) (Command, error) {
	var c Command
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Command{}, fmt.Errorf("cluster: decoding command: %w", err)
	}
	if dec.More() {
		return Command{}, fmt.Errorf("cluster: decoding command: trailing data")
	}
	return c, nil
}

// Rule names the rule a refused command broke.
type Rule string

// The rules Apply enforces. See the package documentation for why.
const (
	RuleMalformed          Rule = "malformed"             // unknown op, missing name, invalid kind or disk state
	RuleUnknownNode        Rule = "unknown-node"          // the command names a node that does not exist
	RuleUnknownVolume      Rule = "unknown-volume"        // the command names a volume that does not exist
	RuleNodeExists         Rule = "node-exists"           // AddNode of an existing name
	RuleVolumeExists       Rule = "volume-exists"         // AddVolume of an existing name
	RuleNoReplica          Rule = "no-replica"            // the node holds no replica of the volume
	RuleForceNeedsReason   Rule = "force-needs-reason"    // Force without a Reason
	RuleRemovePrimary      Rule = "remove-primary"        // RemoveNode of a volume's primary
	RuleLastUpToDate       Rule = "last-uptodate"         // RemoveNode of a volume's last UpToDate replica
	RuleStaleEpoch         Rule = "stale-epoch"           // wrong epoch (Promote: not current+1; others: not current)
	RuleWitnessNotPrimary  Rule = "witness-never-primary" // Promote of a witness (invariant 3)
	RuleAlreadyPrimary     Rule = "already-primary"       // Promote of the current primary
	RulePrimaryNotDeposed  Rule = "primary-not-deposed"   // Promote while another primary is recorded, without Force
	RuleOutdatedNeedsForce Rule = "outdated-needs-force"  // Promote of an Outdated replica without Force (invariant 3)
	RuleNoConsistentData   Rule = "no-consistent-data"    // Promote of an Inconsistent or Diskless replica (invariant 3)
	RuleNoPrimary          Rule = "no-primary"            // Demote/PrimaryLost with no recorded primary
	RuleNotPrimary         Rule = "not-primary"           // the command must come from the primary (invariant 2)
	RulePrimaryOwnDisk     Rule = "primary-own-disk"      // the primary's own disk cannot change while it is primary
	RuleSelfUpward         Rule = "self-upward"           // a node raising its own disk state
)

// RefusedError is returned by Apply for a command that breaks a rule. The
// state is unchanged.
type RefusedError struct {
	Cmd    Command
	Rule   Rule
	Detail string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%v refused [%s]: %s", e.Cmd.Op, e.Rule, e.Detail)
}

// Result tells what an accepted command did beyond the obvious.
type Result struct {
	// Deposed is the primary a forced Promote replaced.
	Deposed string
	// Outdated lists, sorted, the replicas that a forced promotion of an
	// Outdated disk moved from UpToDate to Outdated.
	Outdated []string
	// Note says in words what may be lost or what else changed; "" when
	// nothing needs saying.
	Note string
}

// Apply applies c to s, or refuses it with a *RefusedError and leaves s
// unchanged. Apply is deterministic: it reads nothing but s and c.
func (s *State) Apply(c Command) (Result, error) {
	refuse := func(r Rule, format string, args ...any) (Result, error) {
		return Result{}, &RefusedError{Cmd: c, Rule: r, Detail: fmt.Sprintf(format, args...)}
	}
	if c.Force && strings.TrimSpace(c.Reason) == "" {
		return refuse(RuleForceNeedsReason, "force is logged and needs a reason")
	}
	switch c.Op {
	case OpAddNode:
		if c.Node == "" {
			return refuse(RuleMalformed, "no node name")
		}
		if !c.Kind.valid() {
			return refuse(RuleMalformed, "invalid node kind %v", c.Kind)
		}
		if n, ok := s.Nodes[c.Node]; ok {
			return refuse(RuleNodeExists, "node %s exists (%v)", c.Node, n.Kind)
		}
		s.init()
		s.Nodes[c.Node] = Node{Name: c.Node, Kind: c.Kind}
		if c.Kind == DataNode {
			for _, v := range s.Volumes {
				v.Disks[c.Node] = replica.Inconsistent
			}
		}
		return Result{}, nil

	case OpRemoveNode:
		if _, ok := s.Nodes[c.Node]; !ok {
			return refuse(RuleUnknownNode, "no node %q", c.Node)
		}
		vols := slices.Sorted(maps.Keys(s.Volumes))
		for _, vn := range vols {
			if v := s.Volumes[vn]; v.Primary == c.Node {
				return refuse(RuleRemovePrimary, "%s is primary of volume %s at epoch %d; demote it first", c.Node, vn, v.Epoch)
			}
		}
		var lost []string
		for _, vn := range vols {
			v := s.Volumes[vn]
			if v.Disks[c.Node] == replica.UpToDate && countDisks(v, replica.UpToDate) == 1 {
				lost = append(lost, vn)
			}
		}
		if len(lost) > 0 && !c.Force {
			return refuse(RuleLastUpToDate, "%s holds the last UpToDate replica of %s; removing it leaves no current copy (force to remove anyway)",
				c.Node, strings.Join(lost, ", "))
		}
		var notes []string
		if len(lost) > 0 {
			notes = append(notes, "no UpToDate replica left of "+strings.Join(lost, ", "))
		}
		for _, vn := range vols {
			v := s.Volumes[vn]
			delete(v.Disks, c.Node)
			if v.Preferred == c.Node {
				v.Preferred = ""
				notes = append(notes, "volume "+vn+" has no preferred primary any more")
			}
		}
		delete(s.Nodes, c.Node)
		return Result{Note: strings.Join(notes, "; ")}, nil

	case OpAddVolume:
		if c.Volume == "" {
			return refuse(RuleMalformed, "no volume name")
		}
		if c.Disk > replica.UpToDate {
			return refuse(RuleMalformed, "invalid disk state %v", c.Disk)
		}
		if _, ok := s.Volumes[c.Volume]; ok {
			return refuse(RuleVolumeExists, "volume %s exists", c.Volume)
		}
		d := c.Disk
		if d == replica.Diskless {
			d = replica.Inconsistent
		}
		v := &VolumeState{Name: c.Volume, Disks: map[string]replica.DiskState{}}
		for name, n := range s.Nodes {
			if n.Kind == DataNode {
				v.Disks[name] = d
			}
		}
		s.init()
		s.Volumes[c.Volume] = v
		return Result{}, nil

	case OpSetPreferred:
		v, ok := s.Volumes[c.Volume]
		if !ok {
			return refuse(RuleUnknownVolume, "no volume %q", c.Volume)
		}
		if c.Node != "" {
			if _, ok := v.Disks[c.Node]; !ok {
				return refuse(RuleNoReplica, "%s holds no replica of %s", nodeDesc(s, c.Node), c.Volume)
			}
		}
		v.Preferred = c.Node
		return Result{}, nil

	case OpPromote:
		return s.promote(c, refuse)

	case OpDemote, OpPrimaryLost:
		// Both end the current primary's term: Demote on its own word,
		// PrimaryLost on the arbiter's after the primary's lease ran out.
		v, ok := s.Volumes[c.Volume]
		if !ok {
			return refuse(RuleUnknownVolume, "no volume %q", c.Volume)
		}
		if c.Epoch != v.Epoch {
			return refuse(RuleStaleEpoch, "epoch %d is not the current epoch %d", c.Epoch, v.Epoch)
		}
		if v.Primary == "" {
			return refuse(RuleNoPrimary, "volume %s has no primary at epoch %d", c.Volume, v.Epoch)
		}
		if c.Op == OpDemote && c.Node != v.Primary {
			return refuse(RuleNotPrimary, "%s is not primary of %s (the primary is %s)", c.Node, c.Volume, v.Primary)
		}
		if c.Op == OpDemote && c.To != "" {
			if _, ok := v.Disks[c.To]; !ok || c.To == c.Node {
				return refuse(RuleNoReplica, "switchover target %s holds no replica of %s (or is the primary)", nodeDesc(s, c.To), c.Volume)
			}
			v.Next = c.To
		}
		if c.Op == OpPrimaryLost {
			v.Lost = v.Primary
		}
		v.Primary = ""
		return Result{}, nil

	case OpOutdate, OpSetDisk:
		return s.setDisk(c, refuse)

	case OpDiskFailed:
		// Whatever the role: a failed disk serves nothing, so the rule
		// that a primary's own disk cannot change does not apply; its
		// term ends instead.
		v, ok := s.Volumes[c.Volume]
		if !ok {
			return refuse(RuleUnknownVolume, "no volume %q", c.Volume)
		}
		if c.Epoch != v.Epoch {
			return refuse(RuleStaleEpoch, "epoch %d is not the current epoch %d", c.Epoch, v.Epoch)
		}
		old, ok := v.Disks[c.Node]
		if !ok {
			return refuse(RuleNoReplica, "%s holds no replica of %s", nodeDesc(s, c.Node), c.Volume)
		}
		var res Result
		switch {
		case v.Primary == c.Node:
			v.Primary = ""
			res.Note = fmt.Sprintf("%s gave up the primary role of %s at epoch %d: its disk failed", c.Node, c.Volume, v.Epoch)
		case old == replica.Diskless:
			res.Note = c.Node + " is Diskless already"
		}
		v.Disks[c.Node] = replica.Diskless
		return res, nil

	case OpSetFailover:
		v, ok := s.Volumes[c.Volume]
		if !ok {
			return refuse(RuleUnknownVolume, "no volume %q", c.Volume)
		}
		switch c.Policy {
		case FailoverAuto:
			v.Failover = ""
		case FailoverManual:
			v.Failover = FailoverManual
		default:
			return refuse(RuleMalformed, "failover policy %q is not %s or %s", c.Policy, FailoverAuto, FailoverManual)
		}
		return Result{}, nil

	case OpRaiseEpoch:
		v, ok := s.Volumes[c.Volume]
		if !ok {
			return refuse(RuleUnknownVolume, "no volume %q", c.Volume)
		}
		if _, ok := v.Disks[c.Node]; !ok {
			return refuse(RuleNoReplica, "%s holds no replica of %s", nodeDesc(s, c.Node), c.Volume)
		}
		if v.Primary != "" {
			return refuse(RulePrimaryNotDeposed, "%s is primary of %s at epoch %d: epochs only rise by promotion while there is a primary", v.Primary, c.Volume, v.Epoch)
		}
		if c.Epoch <= v.Epoch {
			return Result{Note: fmt.Sprintf("epoch %d is not above %d: unchanged", c.Epoch, v.Epoch)}, nil
		}
		v.Epoch = c.Epoch
		return Result{}, nil

	}
	return refuse(RuleMalformed, "unknown op %v", c.Op)
}

type refuseFunc func(r Rule, format string, args ...any) (Result, error)

func (s *State) promote(c Command, refuse refuseFunc) (Result, error) {
	v, ok := s.Volumes[c.Volume]
	if !ok {
		return refuse(RuleUnknownVolume, "no volume %q", c.Volume)
	}
	if c.Epoch != v.Epoch+1 {
		return refuse(RuleStaleEpoch, "epoch %d is not the next epoch %d (another promotion came first?)", c.Epoch, v.Epoch+1)
	}
	n, ok := s.Nodes[c.Node]
	if !ok {
		return refuse(RuleUnknownNode, "no node %q", c.Node)
	}
	if n.Kind == Witness {
		return refuse(RuleWitnessNotPrimary, "%s is a witness; a witness holds no data and is never primary", c.Node)
	}
	d, ok := v.Disks[c.Node]
	if !ok {
		return refuse(RuleNoReplica, "%s holds no replica of %s", c.Node, c.Volume)
	}
	if v.Primary == c.Node {
		return refuse(RuleAlreadyPrimary, "%s is already primary of %s at epoch %d", c.Node, c.Volume, v.Epoch)
	}
	if v.Primary != "" && !c.Force {
		return refuse(RulePrimaryNotDeposed, "%s is primary of %s at epoch %d; demote it, record it lost, or force", v.Primary, c.Volume, v.Epoch)
	}
	var res Result
	switch d {
	case replica.UpToDate:
	case replica.Outdated:
		if !c.Force {
			return refuse(RuleOutdatedNeedsForce, "%s is Outdated: it misses writes acknowledged without it; use blockctl promote --force", c.Node)
		}
		for _, dn := range slices.Sorted(maps.Keys(v.Disks)) {
			if dn != c.Node && v.Disks[dn] == replica.UpToDate {
				res.Outdated = append(res.Outdated, dn)
			}
		}
		if len(res.Outdated) > 0 {
			res.Note = fmt.Sprintf("forced promotion of Outdated %s: writes acknowledged at epoch %d or earlier that only %s held may be lost; now Outdated",
				c.Node, v.Epoch, strings.Join(res.Outdated, ", "))
		} else {
			res.Note = fmt.Sprintf("forced promotion of Outdated %s: writes acknowledged while it was Outdated are lost (no UpToDate replica is left)", c.Node)
		}
	default:
		return refuse(RuleNoConsistentData, "%s is %v: it holds no consistent data; not even force promotes it", c.Node, d)
	}
	if v.Primary != "" {
		res.Deposed = v.Primary
		dep := fmt.Sprintf("forced: %s deposed as primary of epoch %d", v.Primary, v.Epoch)
		if res.Note == "" {
			res.Note = dep
		} else {
			res.Note = dep + "; " + res.Note
		}
	}
	// Every check passed: mutate.
	for _, dn := range res.Outdated {
		v.Disks[dn] = replica.Outdated
	}
	v.Disks[c.Node] = replica.UpToDate
	v.Primary = c.Node
	v.Epoch = c.Epoch
	v.Promoted = true
	v.Lost = ""
	v.Next = ""
	return res, nil
}

// setDisk applies OpOutdate (Disk = Outdated, only by the primary) and
// OpSetDisk.
func (s *State) setDisk(c Command, refuse refuseFunc) (Result, error) {
	v, ok := s.Volumes[c.Volume]
	if !ok {
		return refuse(RuleUnknownVolume, "no volume %q", c.Volume)
	}
	want := c.Disk
	if c.Op == OpOutdate {
		want = replica.Outdated
	} else if want > replica.UpToDate {
		return refuse(RuleMalformed, "invalid disk state %v", want)
	}
	if c.Epoch != v.Epoch {
		return refuse(RuleStaleEpoch, "epoch %d is not the current epoch %d", c.Epoch, v.Epoch)
	}
	isPrimary := c.By != "" && c.By == v.Primary
	if c.Op == OpOutdate && !isPrimary {
		return refuse(RuleNotPrimary, "only the primary outdates a peer; %s is not primary of %s at epoch %d", orNobody(c.By), c.Volume, v.Epoch)
	}
	if c.Node == v.Primary && v.Primary != "" {
		return refuse(RulePrimaryOwnDisk, "%s is primary of %s; its disk cannot change while it is primary (demote first)", c.Node, c.Volume)
	}
	old, ok := v.Disks[c.Node]
	if !ok {
		return refuse(RuleNoReplica, "%s holds no replica of %s", nodeDesc(s, c.Node), c.Volume)
	}
	switch {
	case isPrimary:
		// The primary reports about a peer: any state.
	case c.By == c.Node:
		// Before the first promotion no primary has acknowledged anything,
		// so each node's own word on its data is all there is.
		if want > old && v.Promoted {
			return refuse(RuleSelfUpward, "%s cannot raise its own disk from %v to %v; only the primary reports a peer UpToDate after a resync", c.Node, old, want)
		}
	default:
		return refuse(RuleNotPrimary, "%s is neither the primary of %s nor %s itself", orNobody(c.By), c.Volume, c.Node)
	}
	if c.Op == OpOutdate && old < replica.Outdated {
		// Already out of the UpToDate set; outdating must not raise an
		// Inconsistent or Diskless replica.
		return Result{Note: fmt.Sprintf("%s is %v: already not UpToDate", c.Node, old)}, nil
	}
	v.Disks[c.Node] = want
	return Result{}, nil
}

func (s *State) init() {
	if s.Nodes == nil {
		s.Nodes = map[string]Node{}
	}
	if s.Volumes == nil {
		s.Volumes = map[string]*VolumeState{}
	}
}

func countDisks(v *VolumeState, d replica.DiskState) int {
	n := 0
	for _, x := range v.Disks {
		if x == d {
			n++
		}
	}
	return n
}

// nodeDesc names a node for an error message, saying what it is.
func nodeDesc(s *State, name string) string {
	n, ok := s.Nodes[name]
	switch {
	case name == "":
		return "no node"
	case !ok:
		return fmt.Sprintf("unknown node %q", name)
	case n.Kind == Witness:
		return "witness " + name
	}
	return name
}

func orNobody(name string) string {
	if name == "" {
		return "(nobody)"
	}
	return name
}
