package cluster

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/blockrep/blockrep/replica"
)

// Timing is the failover timing of a cluster. Every node uses the same.
type Timing struct {
	// HeartbeatInterval is how often every node reports to the leader.
	HeartbeatInterval time.Duration
	// FailoverTimeout is how long the leader waits, after the last
	// heartbeat it granted a primary, before it declares the primary lost
	// and promotes another node. It is longer than the primary's lease
	// (Lease), so the old primary has stopped serving by then.
	FailoverTimeout time.Duration
}

// Default failover timing: a dead primary is replaced about a second after
// it stopped answering (keepalived's default master-down is ≈3.5 s).
const (
	DefaultHeartbeatInterval = 200 * time.Millisecond
	DefaultFailoverTimeout   = 1200 * time.Millisecond
)

// DefaultTiming returns the default failover timing.
func DefaultTiming() Timing {
	return Timing{HeartbeatInterval: DefaultHeartbeatInterval, FailoverTimeout: DefaultFailoverTimeout}
}

// Lease is how long a primary may serve after it sent a heartbeat that the
// leader granted: the failover timeout less one heartbeat interval. The
// margin covers an I/O that passed the lease check just before it ran out
// and a process stalled in the middle of one.
func (t Timing) Lease() time.Duration { return t.FailoverTimeout - t.HeartbeatInterval }

// Validate rejects timings that cannot be safe or cannot work.
func (t Timing) Validate() error {
	if t.HeartbeatInterval < 10*time.Millisecond {
		return fmt.Errorf("heartbeat interval %v: at least 10ms", t.HeartbeatInterval)
	}
	if t.FailoverTimeout < 3*t.HeartbeatInterval {
		return fmt.Errorf("failover timeout %v: at least three heartbeat intervals (%v)", t.FailoverTimeout, 3*t.HeartbeatInterval)
	}
	return nil
}

// Report is what a node says about itself in each heartbeat: for every
// volume it holds, whether it serves as primary and at which epoch.
type Report struct {
	Node    string                 `json:"node"`
	Volumes map[string]LocalReport `json:"volumes,omitempty"`
}

// LocalReport is one volume as a node sees it locally.
type LocalReport struct {
	Primary bool              `json:"primary"`
	Epoch   uint64            `json:"epoch"`
	Disk    replica.DiskState `json:"disk"`
	// Failed is set, to the store's error, once the replica's local disk
	// failed and was detached (Disk is then Diskless): the replica refuses
	// I/O and holds no data the cluster may rely on. Left out of the JSON
	// while the disk works, so that a heartbeat is what older versions
	// read.
	Failed string `json:"failed,omitempty"`
}

// Arbiter is the leader's failover logic. It is pure: time comes in as
// arguments, decisions go out as Commands that the leader proposes through
// Raft, and the State they are judged against is the committed one. A new
// Arbiter is made each time a node becomes leader.
//
// Leases (invariant 4): a primary serves only while it holds a lease,
// which runs for Timing.Lease from the moment it sent a heartbeat that a
// leader granted after confirming its leadership with a quorum. The
// arbiter declares a primary lost only FailoverTimeout after the last
// heartbeat it granted it (heartbeats arrive after they were sent, so the
// lease has run out by then), and a new leader counts every node as heard
// at the moment it took office: a lease granted by the previous leader was
// granted before this leader was elected. That presumption only delays a
// loss: a promotion goes only to a node whose heartbeat this leader
// received within the failover timeout. Once it has declared a primary
// lost, the arbiter grants that primary no lease for the volume again.
type Arbiter struct {
	timing  Timing
	since   time.Time
	heard   map[string]time.Time
	reports map[string]Report
	// unjudged are the nodes whose last report Decide has not looked at
	// for failed disks: each report is judged once, so that the last
	// report of a node that restarted since cannot record its old failure
	// again over what the primary committed after.
	unjudged map[string]bool
	// lost maps a volume to the epoch whose primary was declared lost.
	lost map[string]uint64
	// switchovers are the graceful moves asked for, by volume.
	switchovers map[string]*Switchover
	// members are the Raft configuration's servers (SetMembers).
	members []string
}

// Switchover is a graceful move of a volume's primary role, driven by the
// arbiter: demote when the target is in sync, promote once the old primary
// has stepped down.
type Switchover struct {
	Volume string
	// From is the primary at Epoch when it was asked; Target the node
	// that takes over.
	From, Target string
	Epoch        uint64
	// Deadline is when the arbiter gives up waiting for the target to be
	// in sync.
	Deadline time.Time
	// Err is set when the arbiter gave up; Done when Target is primary.
	Err  error
	Done bool
}

// NewArbiter returns the arbiter of a leader that took office at since.
func NewArbiter(t Timing, since time.Time) *Arbiter {
	return &Arbiter{
		timing: t, since: since,
		heard:       map[string]time.Time{},
		reports:     map[string]Report{},
		unjudged:    map[string]bool{},
		lost:        map[string]uint64{},
		switchovers: map[string]*Switchover{},
	}
}

// Heartbeat records r, which arrived at at (after the leader confirmed its
// leadership), and returns the volumes for which it grants r.Node a lease:
// those it is primary of in s, at their epoch, unless declared lost.
func (a *Arbiter) Heartbeat(r Report, at time.Time, s *State) map[string]uint64 {
	if at.After(a.heard[r.Node]) {
		a.heard[r.Node] = at
	}
	a.reports[r.Node] = r
	a.unjudged[r.Node] = true
	granted := map[string]uint64{}
	for name, v := range s.Volumes {
		if v.Primary == r.Node {
			if e, ok := a.lost[name]; ok && e == v.Epoch {
				continue
			}
			granted[name] = v.Epoch
		}
	}
	return granted
}

// SetMembers tells the arbiter the servers of the Raft configuration: a
// volume's first primary waits until each has registered in the state.
func (a *Arbiter) SetMembers(names []string) { a.members = names }

// lastHeard is when the arbiter last heard node, counting its own start.
func (a *Arbiter) lastHeard(node string) time.Time {
	if h := a.heard[node]; h.After(a.since) {
		return h
	}
	return a.since
}

// Alive returns the nodes of s heard within the failover timeout.
func (a *Arbiter) Alive(now time.Time, s *State) map[string]bool {
	alive := map[string]bool{}
	for name := range s.Nodes {
		alive[name] = now.Sub(a.lastHeard(name)) < a.timing.FailoverTimeout
	}
	return alive
}

// heardRecently returns the nodes of s whose heartbeat this leader
// received within the failover timeout: the candidates of a promotion.
// Unlike Alive it does not count the leader's own start as a hearing: that
// presumption only delays declaring a primary lost (its lease may still
// run), while a node the leader never heard may well be dead, and
// promoting it would leave the volume without a primary for another
// failover timeout.
func (a *Arbiter) heardRecently(now time.Time, s *State) map[string]bool {
	heard := map[string]bool{}
	for name := range s.Nodes {
		h, ok := a.heard[name]
		heard[name] = ok && now.Sub(h) < a.timing.FailoverTimeout
	}
	return heard
}

// LastHeard returns when each node was last heard (zero: never since this
// leader took office).
func (a *Arbiter) LastHeard() map[string]time.Time { return maps.Clone(a.heard) }

// Switchover registers a graceful move of volume's primary role to target
// ("" for the best other UpToDate node), or refuses it with the reason.
func (a *Arbiter) Switchover(now time.Time, s *State, volume, target string, wait time.Duration) (*Switchover, error) {
	v, ok := s.Volumes[volume]
	if !ok {
		return nil, fmt.Errorf("no volume %q", volume)
	}
	if v.Primary == "" {
		if v.Next != "" && (target == "" || target == v.Next) {
			// A switchover another leader began: follow it to the end.
			sw := &Switchover{Volume: volume, Target: v.Next, Epoch: v.Epoch, Deadline: now.Add(wait)}
			a.switchovers[volume] = sw
			return sw, nil
		}
		return nil, fmt.Errorf("volume %s has no primary to switch over from", volume)
	}
	if target == v.Primary {
		return nil, fmt.Errorf("%s is already primary of %s", target, volume)
	}
	alive := a.Alive(now, s)
	if target == "" {
		node, ok, reason := ChooseFailover(s, volume, alive)
		if !ok {
			return nil, fmt.Errorf("no node to switch %s over to: %s", volume, reason)
		}
		target = node
	} else {
		n, ok := s.Nodes[target]
		switch {
		case !ok:
			return nil, fmt.Errorf("no node %q", target)
		case n.Kind != DataNode:
			return nil, fmt.Errorf("%s is a witness; a witness is never primary", target)
		case !alive[target]:
			return nil, fmt.Errorf("%s is not heard from", target)
		}
		switch d := v.Disks[target]; d {
		case replica.UpToDate:
		case replica.Outdated:
			return nil, fmt.Errorf("%s is Outdated: it misses writes acknowledged without it; wait for its resync, or promote it with --force and lose them", target)
		default:
			return nil, fmt.Errorf("%s is %v: it holds no consistent data of %s", target, d, volume)
		}
	}
	if sw := a.switchovers[volume]; sw != nil && !sw.Done && sw.Err == nil {
		return nil, fmt.Errorf("a switchover of %s to %s is already running", volume, sw.Target)
	}
	sw := &Switchover{Volume: volume, From: v.Primary, Target: target, Epoch: v.Epoch, Deadline: now.Add(wait)}
	a.switchovers[volume] = sw
	return sw, nil
}

// Decide returns the commands the leader should propose now, in order. It
// is called again after they were applied (or failed), with the new state.
func (a *Arbiter) Decide(now time.Time, s *State) []Command {
	alive := a.Alive(now, s)
	// Promotions go only to nodes actually heard (heardRecently); loss is
	// judged on alive.
	heard := a.heardRecently(now, s)
	// A failure whose command fails to apply is proposed again from the
	// node's next heartbeat.
	defer clear(a.unjudged)
	var cmds []Command
	for _, name := range slices.Sorted(maps.Keys(s.Volumes)) {
		v := s.Volumes[name]
		if failed := a.diskFailures(v, alive); len(failed) > 0 {
			cmds = append(cmds, failed...)
			// A primary whose disk failed acknowledges nothing any more
			// (it detached the disk before it said so), so, as after a
			// lost primary, the promotion follows in the same round,
			// judged on the state with the failures recorded.
			after := s.Clone()
			for _, c := range failed {
				if _, err := after.Apply(c); err != nil {
					after = nil
					break
				}
			}
			if after != nil && v.Primary != "" && after.Volumes[name].Primary == "" && v.Failover != FailoverManual {
				if node, ok, reason := ChooseFailover(after, name, heard); ok {
					cmds = append(cmds, Command{Op: OpPromote, Volume: name, Node: node, Epoch: v.Epoch + 1,
						Reason: "the primary's disk failed; " + reason})
				}
			}
			continue
		}
		if sw := a.switchovers[name]; sw != nil && !sw.Done && sw.Err == nil {
			if c, ok := a.switchover(now, s, v, sw, alive, heard); ok {
				cmds = append(cmds, c)
			}
			if sw.Err == nil && !sw.Done {
				continue
			}
		}
		if v.Primary != "" {
			if alive[v.Primary] {
				continue
			}
			a.lost[name] = v.Epoch
			cmds = append(cmds, Command{Op: OpPrimaryLost, Volume: name, Epoch: v.Epoch,
				Reason: fmt.Sprintf("%s not heard for %v", v.Primary, now.Sub(a.lastHeard(v.Primary)).Round(time.Millisecond))})
			// The promotion follows in the same round, judged on the
			// state as it will be once the loss is recorded.
			after := s.Clone()
			if _, err := after.Apply(cmds[len(cmds)-1]); err != nil {
				continue
			}
			if v.Failover == FailoverManual {
				continue
			}
			if node, ok, reason := ChooseFailover(after, name, heard); ok {
				cmds = append(cmds, Command{Op: OpPromote, Volume: name, Node: node, Epoch: v.Epoch + 1, Reason: reason})
			}
			continue
		}
		if v.Failover == FailoverManual {
			continue // the operator promotes
		}
		if a.someoneServes(name, alive) {
			continue
		}
		if n := v.Next; n != "" && v.Disks[n] == replica.UpToDate && heard[n] {
			// A switchover demoted the primary for n (under an earlier
			// leader, or this one's record was lost): finish it.
			cmds = append(cmds, Command{Op: OpPromote, Volume: name, Node: n, Epoch: v.Epoch + 1, Reason: "switchover"})
			continue
		}
		if !v.Promoted && !a.allReported(s, v) && now.Sub(a.since) < 2*a.timing.FailoverTimeout {
			// A volume's first primary: give every replica's node the
			// time to report its data (and so its preferred primary)
			// before choosing among those that did.
			continue
		}
		if node, ok, reason := ChooseFailover(s, name, heard); ok {
			cmds = append(cmds, Command{Op: OpPromote, Volume: name, Node: node, Epoch: v.Epoch + 1, Reason: reason})
		}
	}
	return cmds
}

// diskFailures returns a DiskFailed command for each alive node whose last
// heartbeat, not judged yet, says its disk of v failed, unless the state
// already records it (Diskless, and not primary).
func (a *Arbiter) diskFailures(v *VolumeState, alive map[string]bool) []Command {
	var cmds []Command
	for _, node := range slices.Sorted(maps.Keys(v.Disks)) {
		lr, ok := a.reports[node].Volumes[v.Name]
		if !ok || !a.unjudged[node] || lr.Failed == "" || !alive[node] || v.Disks[node] == replica.Diskless && v.Primary != node {
			continue
		}
		cmds = append(cmds, Command{Op: OpDiskFailed, Volume: v.Name, Node: node, Epoch: v.Epoch,
			Reason: node + "'s disk failed: " + lr.Failed})
	}
	return cmds
}

// switchover advances sw one step; the command, if any, comes back. The
// target must have been heard (heard), the old primary is judged on alive.
func (a *Arbiter) switchover(now time.Time, s *State, v *VolumeState, sw *Switchover, alive, heard map[string]bool) (Command, bool) {
	switch {
	case v.Primary == sw.Target:
		sw.Done = true
	case v.Epoch != sw.Epoch:
		sw.Err = fmt.Errorf("volume %s moved to epoch %d (primary %s) during the switchover", v.Name, v.Epoch, orNobody(v.Primary))
	case v.Primary == sw.From:
		if v.Disks[sw.Target] == replica.UpToDate && heard[sw.Target] {
			return Command{Op: OpDemote, Volume: v.Name, Node: sw.From, Epoch: v.Epoch, To: sw.Target,
				Reason: "switchover to " + sw.Target}, true
		}
		if now.After(sw.Deadline) {
			sw.Err = fmt.Errorf("%s did not become UpToDate and alive in time (it is %v)", sw.Target, v.Disks[sw.Target])
		}
	case v.Primary == "":
		// Demoted: promote once the old primary has stopped serving.
		if a.someoneServes(v.Name, alive) {
			return Command{}, false
		}
		return Command{Op: OpPromote, Volume: v.Name, Node: sw.Target, Epoch: v.Epoch + 1,
			Reason: "switchover from " + sw.From}, true
	default:
		sw.Err = fmt.Errorf("volume %s has primary %s, not %s, during the switchover", v.Name, v.Primary, sw.From)
	}
	return Command{}, false
}

// someoneServes reports whether an alive node still says it is primary of
// volume: a node that was demoted is promoted over only once it stepped
// down, so its last writes reach the others first.
func (a *Arbiter) someoneServes(volume string, alive map[string]bool) bool {
	for node, r := range a.reports {
		if alive[node] && r.Volumes[volume].Primary {
			return true
		}
	}
	return false
}

// allReported reports whether every member has registered, and every
// node with a replica of v was heard since this leader took office and the
// state holds the disk it reports.
func (a *Arbiter) allReported(s *State, v *VolumeState) bool {
	for _, n := range a.members {
		if _, ok := s.Nodes[n]; !ok {
			return false
		}
	}
	for n, d := range v.Disks {
		lr, ok := a.reports[n].Volumes[v.Name]
		if !ok || lr.Disk != d {
			return false
		}
	}
	return true
}

// WantsLeadershipAway reports whether the leader, node self, should hand
// leadership to another voter: it is some volume's primary, and if it died
// the cluster would first have to elect a leader before failing over. Not
// while a switchover runs or is half done: a new leader would pick it up
// from the state, but the operator's command waits on this one.
func (a *Arbiter) WantsLeadershipAway(self string, s *State) bool {
	for name, v := range s.Volumes {
		if sw := a.switchovers[name]; sw != nil && !sw.Done && sw.Err == nil || v.Primary == "" && v.Next != "" {
			return false
		}
	}
	for _, v := range s.Volumes {
		if v.Primary == self {
			return true
		}
	}
	return false
}
