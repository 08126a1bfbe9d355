// Package serving is the serving stack of a volume on its node: what web
// hosts use, built up on the primary and taken down everywhere else, like
// Pacemaker's resource group Filesystem → nfsserver → IPaddr2 but as one
// pure plan. Decide looks at what is (the replica's role and lease, and
// what each step's executor observed) and answers what to do next; the
// executors (attach, fsck, mount, NFS export, VIP, announcements) are thin
// and report back what they verified. Nothing here touches a device, a
// mount or a socket.
package serving

import (
	"fmt"
	"strings"
	"time"
)

// Step is one layer of the stack, in the order it is brought up.
type Step int

// The steps, bottom up, taken down top down. Check (fsck or journal
// replay) has nothing to undo: taking it down forgets that it was done, so
// that the file system is checked again before its next mount.
const (
	Attach   Step = iota // the volume as a local block device (kernel nbd, or nbdfuse + loop)
	Check                // the file system checked (fsck policy) before it is mounted
	Mount                // the file system mounted
	Export               // the NFS server serving the mount
	VIP                  // the virtual IPs on their interfaces
	Announce             // gratuitous ARP / unsolicited NA sent for the VIPs
	numSteps
)

var stepNames = [numSteps]string{"attach", "check", "mount", "export", "vip", "announce"}

// String returns the step's name as scenario files and logs spell it.
func (s Step) String() string {
	if s >= 0 && s < numSteps {
		return stepNames[s]
	}
	return fmt.Sprintf("Step(%d)", int(s))
}

// ParseStep parses a step's name.
func ParseStep(name string) (Step, error) {
	for i, n := range stepNames {
		if n == name {
			return Step(i), nil
		}
	}
	return 0, fmt.Errorf("step %q: want one of %s", name, strings.Join(stepNames[:], ", "))
}

// Observed is what a step's executor last verified.
type Observed struct {
	// Up: the step's effect is in place (the device attached, the file
	// system mounted, the VIP on its interface, the announcements sent).
	Up bool
	// Busy: an action on the step is running (an unmount may block for
	// as long as the fenced volume holds its I/O: fence = "suspend").
	Busy bool
	// Failures counts the failed attempts to bring the step up since it
	// was last up; Failed is when the last one failed, Err why.
	Failures int
	Failed   time.Time
	Err      string
}

// Role is the replica's role on this node.
type Role int

// The roles the plan distinguishes.
const (
	Secondary Role = iota
	Primary
)

// State is everything Decide looks at.
type State struct {
	Now  time.Time
	Role Role
	// Lease: the primary holds the lease the cluster's leader granted;
	// without it the node must not serve (a fenced primary).
	Lease bool
	// Leave: the primary is to hand over (switchover, a failed health
	// check, shutdown): take the stack down, then demote.
	Leave bool
	Steps [numSteps]Observed
}

// Policy tunes the plan.
type Policy struct {
	// MaxFailures is how many failed attempts in a row at one step make
	// the node give up the primary (so that the arbiter promotes the
	// other node) instead of trying again. 0 means never.
	MaxFailures int
	// RetryMin and RetryMax bound the wait before another attempt at a
	// failed step: RetryMin, doubled per failure, at most RetryMax.
	RetryMin, RetryMax time.Duration
}

// DefaultPolicy is the plan's policy unless configured.
var DefaultPolicy = Policy{MaxFailures: 3, RetryMin: time.Second, RetryMax: 30 * time.Second}

// Op is what an action does.
type Op int

// The operations.
const (
	Wait   Op = iota // nothing to do now (see the reason)
	Up               // bring Step up (and verify it)
	Down             // take Step down (and verify it)
	Demote           // everything is down: the replica may demote
	GiveUp           // stop trying: give up the primary role (then the stack comes down)
	Done             // the stack is as it should be
)

var opNames = [...]string{"wait", "up", "down", "demote", "give-up", "done"}

// String returns the op's name.
func (o Op) String() string {
	if o >= 0 && int(o) < len(opNames) {
		return opNames[o]
	}
	return fmt.Sprintf("Op(%d)", int(o))
}

// Decision is what Decide answers: one operation (on Step, for Up and
// Down), and why. Retry, for a Wait on a failed step, is when to decide
// again.
type Decision struct {
	Op     Op
	Step   Step
	Retry  time.Time
	Reason string
}

func (d Decision) String() string {
	s := d.Op.String()
	if d.Op == Up || d.Op == Down {
		s += " " + d.Step.String()
	}
	return s + ": " + d.Reason
}

// Decide says what to do next with the serving stack, by these rules
// (the code marks each):
//
//  1. Serve only as a primary holding its lease that is not leaving;
//     otherwise take the stack down.
//  2. Down goes top down, one step at a time: announcements stop, the
//     VIPs go, the export stops, the file system is unmounted, the check
//     is forgotten, the device detached. So a fenced primary drops the VIP and stops NFS before it
//     touches the file system, and an unmount that blocks (fence =
//     "suspend") holds up nothing but the steps below it.
//  3. A step with an action running is waited for: an action cannot be
//     cancelled (a mount, an unmount are system calls).
//  4. When everything is down, a primary that is leaving demotes; a
//     fenced one waits for the cluster, which demotes it.
//  5. Up goes bottom up: the lowest step that is not up is brought up.
//     A step above it that is still up (the file system vanished under a
//     running export) is taken down first, top down: never a half-served
//     volume. Check counts as done when the file system is mounted (a
//     node restarted with it still mounted does not unmount to fsck it).
//  6. A step that failed waits RetryMin, doubled per failure up to
//     RetryMax, before it is tried again; after MaxFailures in a row the
//     node gives up the primary.
func Decide(s State, p Policy) Decision {
	serve := s.Role == Primary && s.Lease && !s.Leave
	if !serve { // Rule 1
		return down(s)
	}
	return up(s, p)
}

func down(s State) Decision {
	for st := numSteps - 1; st >= Attach; st-- { // Rule 2
		o := s.Steps[st]
		if o.Busy { // Rule 3
			return Decision{Op: Wait, Step: st, Reason: fmt.Sprintf("rule 3: %s in progress (taking the stack down: %s)", st, whyDown(s))}
		}
		if o.Up {
			return Decision{Op: Down, Step: st, Reason: fmt.Sprintf("rule 2: %s", whyDown(s))}
		}
	}
	switch { // Rule 4
	case s.Role == Primary && s.Leave:
		return Decision{Op: Demote, Reason: "rule 4: the stack is down; leaving, so the replica demotes"}
	case s.Role == Primary:
		return Decision{Op: Wait, Reason: "rule 4: the stack is down; fenced (no lease): the cluster demotes this node"}
	}
	return Decision{Op: Done, Reason: "rule 1: secondary: nothing served"}
}

func whyDown(s State) string {
	switch {
	case s.Role != Primary:
		return "secondary"
	case !s.Lease:
		return "fenced: no lease"
	}
	return "leaving the primary role"
}

func up(s State, p Policy) Decision {
	for st := Step(0); st < numSteps; st++ {
		if s.Steps[st].Busy { // Rule 3
			return Decision{Op: Wait, Step: st, Reason: fmt.Sprintf("rule 3: %s in progress", st)}
		}
	}
	lowest := numSteps
	for st := Attach; st < numSteps; st++ {
		if !isUp(s, st) {
			lowest = st
			break
		}
	}
	if lowest == numSteps {
		return Decision{Op: Done, Reason: "rule 5: primary with its lease: every step up"}
	}
	for st := numSteps - 1; st > lowest; st-- { // Rule 5: nothing above a gap
		if s.Steps[st].Up {
			return Decision{Op: Down, Step: st, Reason: fmt.Sprintf("rule 5: %s is down under %s: %s first", lowest, st, st)}
		}
	}
	o := s.Steps[lowest]
	if o.Failures > 0 { // Rule 6
		if p.MaxFailures > 0 && o.Failures >= p.MaxFailures {
			return Decision{Op: GiveUp, Step: lowest, Reason: fmt.Sprintf("rule 6: %s failed %s in a row (last: %s): giving up the primary", lowest, times(o.Failures), o.Err)}
		}
		if retry := o.Failed.Add(backoff(p, o.Failures)); s.Now.Before(retry) {
			return Decision{Op: Wait, Step: lowest, Retry: retry, Reason: fmt.Sprintf("rule 6: %s failed %s (last: %s): next attempt in %v", lowest, times(o.Failures), o.Err, retry.Sub(s.Now))}
		}
		return Decision{Op: Up, Step: lowest, Reason: fmt.Sprintf("rule 6: attempt %d at %s (last: %s)", o.Failures+1, lowest, o.Err)}
	}
	return Decision{Op: Up, Step: lowest, Reason: "rule 5: primary with its lease: the lowest step not up"}
}

// isUp reports whether st is in place; Check is when the file system is
// mounted (Rule 5).
func isUp(s State, st Step) bool {
	if st == Check && s.Steps[Mount].Up {
		return true
	}
	return s.Steps[st].Up
}

// backoff is the wait after failures failed attempts (Rule 6).
func backoff(p Policy, failures int) time.Duration {
	d := p.RetryMin
	for i := 1; i < failures && d < p.RetryMax; i++ {
		d *= 2
	}
	return min(d, p.RetryMax)
}

func times(n int) string {
	if n == 1 {
		return "once"
	}
	return fmt.Sprintf("%d times", n)
}
