package raid

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// This file decides how to assemble an array from the superblocks found on
// candidate devices (Plan). It does no I/O: the caller reads the superblock
// of every candidate and acts on the plan.

// Found is one candidate device and what was read from its superblock area.
type Found struct {
	// Path names the device (a file or block device path).
	Path string
	// SB is the device's superblock; nil if it has none or it could not
	// be read or decoded.
	SB *Superblock
	// Err is why SB is nil (a read error, or UnmarshalSuperblock's error);
	// nil for a device that simply has no superblock.
	Err error
}

// RoleState is the state Plan gives a role of the array.
type RoleState int

// The role states.
const (
	// RoleInSync: the role's member is current and its data is used.
	RoleInSync RoleState = iota
	// RoleRebuilding: the member was being rebuilt when the array
	// stopped; data below Role.RebuildOffset is current, the rebuild
	// resumes there. It adds no redundancy until the rebuild finishes.
	RoleRebuilding
	// RoleStale: the member missed updates (its event counter is behind
	// the array's, or the array recorded it as failed or removed): its
	// data is not trusted and it needs a full resync (a bitmap resync
	// once the write-intent bitmap exists).
	RoleStale
	// RoleMissing: no candidate device holds the role.
	RoleMissing
)

// String returns "in-sync", "rebuilding", "stale" or "missing".
func (s RoleState) String() string {
	switch s {
	case RoleInSync:
		return "in-sync"
	case RoleRebuilding:
		return "rebuilding"
	case RoleStale:
		return "stale"
	case RoleMissing:
		return "missing"
	}
	return fmt.Sprintf("RoleState(%d)", int(s))
}

// AssemblyStatus is the overall outcome of Plan.
type AssemblyStatus int

// The assembly outcomes.
const (
	// AssemblyOptimal: every role is in sync.
	AssemblyOptimal AssemblyStatus = iota
	// AssemblyDegraded: some roles are missing, stale or rebuilding, but
	// the in-sync members still hold all the data.
	AssemblyDegraded
	// AssemblyRefused: the array cannot be assembled (too few in-sync
	// members, no superblock, or ambiguous candidates).
	AssemblyRefused
)

// String returns "optimal", "degraded" or "refused".
func (s AssemblyStatus) String() string {
	switch s {
	case AssemblyOptimal:
		return "optimal"
	case AssemblyDegraded:
		return "degraded"
	case AssemblyRefused:
		return "refused"
	}
	return fmt.Sprintf("AssemblyStatus(%d)", int(s))
}

// RolePlan is the plan for one role of the array.
type RolePlan struct {
	// Role is the role index, 0..Members-1.
	Role int
	// Path is the device chosen for the role; empty when RoleMissing.
	Path string
	// MemberUUID is the chosen device's member UUID (zero when missing).
	MemberUUID UUID
	// State is the role's state.
	State RoleState
	// Events is the chosen device's event counter (0 when missing).
	Events uint64
	// RebuildOffset is where a RoleRebuilding member's rebuild resumes.
	RebuildOffset int64
	// Reason explains a state other than RoleInSync.
	Reason string
}

// Candidate is a candidate device that Plan does not use for a role, and why.
type Candidate struct {
	Path   string
	Reason string
}

// Assembly is the plan Plan returns.
type Assembly struct {
	// Status is the overall outcome.
	Status AssemblyStatus
	// ArrayUUID, Name and Geometry are the array's, from its freshest
	// superblock (zero when no array was identified).
	ArrayUUID UUID
	Name      string
	Geometry  Geometry
	// Events is the freshest event counter among the array's members.
	Events uint64
	// Dirty reports that the freshest superblock says writes may have
	// been in flight: the array was not shut down cleanly. Mirrors may
	// differ and RAID 5/6 parity may not match its data (the write
	// hole), so the written regions need a resync (all of the array
	// until the write-intent bitmap narrows it to the dirty stripes).
	Dirty bool
	// Roles has one entry per role, in role order.
	Roles []RolePlan
	// Spares are the array's members without a role (RoleSpare), usable
	// as replacements.
	Spares []string
	// Foreign are devices with a superblock of another array: never used.
	Foreign []Candidate
	// Unused are the array's devices not chosen for a role: duplicates of
	// a role, superblocks inconsistent with the freshest one.
	Unused []Candidate
	// Unreadable are devices without a usable superblock: Found.SB nil.
	Unreadable []Candidate
	// Reasons explains the outcome in human-readable sentences.
	Reasons []string
}

// Resync returns the roles whose member needs data rebuilt (stale or
// rebuilding members), in role order.
func (a *Assembly) Resync() []int {
	var r []int
	for _, x := range a.Roles {
		if x.State == RoleStale || x.State == RoleRebuilding {
			r = append(r, x.Role)
		}
	}
	return r
}

// Plan decides how to assemble an array from the candidate devices found.
// want optionally names the array to assemble (at most one UUID); without
// it, Plan takes the array to which most candidates belong.
//
// Devices of any other array are Foreign and never used. Among the array's
// members the highest event counter is the array's state: a member behind
// it missed updates and is RoleStale, as is one that the freshest
// superblock records as faulty, removed or replaced by a spare. When two
// devices claim the same role the fresher wins (the first by Path on a
// tie) and the other is listed in Unused. A member whose geometry differs
// from the freshest superblock's is Unused. A role no device holds is
// RoleMissing.
//
// The array is AssemblyOptimal when every role is in sync, AssemblyDegraded
// when the in-sync members still hold all the data (raid1: one in-sync
// mirror; raid10: one in-sync copy of every mirror group; raid5: at most one
// role not in sync; raid6: at most two), and AssemblyRefused otherwise: Plan
// then returns the Assembly with an error naming the missing and stale
// roles. Plan does not force a degraded start beyond what the level
// tolerates.
func Plan(found []Found, want ...UUID) (Assembly, error) {
	var a Assembly
	refuse := func(format string, args ...any) (Assembly, error) {
		a.Status = AssemblyRefused
		msg := fmt.Sprintf(format, args...)
		a.Reasons = append(a.Reasons, msg)
		return a, errors.New("raid: assemble: " + msg)
	}
	if len(want) > 1 {
		return refuse("Plan takes at most one array UUID, got %d", len(want))
	}

	// Sort the candidates by path so that the plan does not depend on
	// the order the caller found them in.
	found = slices.Clone(found)
	slices.SortStableFunc(found, func(x, y Found) int { return strings.Compare(x.Path, y.Path) })

	// Identify the array.
	count := map[UUID]int{}
	var order []UUID
	for _, f := range found {
		if f.SB == nil {
			reason := "no array superblock"
			if f.Err != nil {
				reason = f.Err.Error()
			}
			a.Unreadable = append(a.Unreadable, Candidate{f.Path, reason})
			continue
		}
		if count[f.SB.ArrayUUID] == 0 {
			order = append(order, f.SB.ArrayUUID)
		}
		count[f.SB.ArrayUUID]++
	}
	var uuid UUID
	switch {
	case len(want) == 1:
		uuid = want[0]
		if count[uuid] == 0 {
			return refuse("no member of array %v among %d candidate devices", uuid, len(found))
		}
	case len(order) == 0:
		return refuse("no array superblock on any of %d candidate devices", len(found))
	default:
		best, tied := order[0], false
		for _, u := range order[1:] {
			switch {
			case count[u] > count[best]:
				best, tied = u, false
			case count[u] == count[best]:
				tied = true
			}
		}
		if tied {
			var names []string
			for _, u := range order {
				if count[u] == count[best] {
					names = append(names, fmt.Sprintf("%v (%d devices)", u, count[u]))
				}
			}
			return refuse("candidates belong to several arrays equally: %s; name the array to assemble", strings.Join(names, ", "))
		}
		uuid = best
	}
	a.ArrayUUID = uuid

	// The freshest superblock of the array defines it.
	var fresh *Superblock
	var members []Found
	for _, f := range found {
		if f.SB == nil {
			continue
		}
		if f.SB.ArrayUUID != uuid {
			a.Foreign = append(a.Foreign, Candidate{f.Path, fmt.Sprintf("member of another array %v (%q), not %v", f.SB.ArrayUUID, f.SB.Name, uuid)})
			continue
		}
		members = append(members, f)
		if fresh == nil || f.SB.Events > fresh.Events {
			fresh = f.SB
		}
	}
	g := fresh.Geometry
	a.Name, a.Geometry, a.Events = fresh.Name, g, fresh.Events
	a.Dirty = fresh.State == ArrayDirty

	// Choose a device for every role: the freshest claimant.
	chosen := make([]*Found, g.Members)
	for i := range members {
		f := &members[i]
		sb := f.SB
		if sb.Geometry != g {
			a.Unused = append(a.Unused, Candidate{f.Path, fmt.Sprintf("geometry %+v differs from the array's %+v (events %d)", sb.Geometry, g, fresh.Events)})
			continue
		}
		if sb.Role == RoleSpare {
			a.Spares = append(a.Spares, f.Path)
			continue
		}
		if sb.Role < 0 || sb.Role >= g.Members {
			a.Unused = append(a.Unused, Candidate{f.Path, fmt.Sprintf("role %d outside the array's %d members", sb.Role, g.Members)})
			continue
		}
		c := chosen[sb.Role]
		if c == nil || sb.Events > c.SB.Events {
			if c != nil {
				a.Unused = append(a.Unused, duplicate(c, f))
			}
			chosen[sb.Role] = f
		} else {
			a.Unused = append(a.Unused, duplicate(f, c))
		}
	}

	// Decide each role's state.
	a.Roles = make([]RolePlan, g.Members)
	for r := range a.Roles {
		x := RolePlan{Role: r}
		f := chosen[r]
		slot := fresh.Members[r]
		switch {
		case f == nil:
			x.State = RoleMissing
			x.Reason = fmt.Sprintf("no device holds role %d (the array last recorded it %v)", r, slot.State)
		case f.SB.Events < fresh.Events:
			x.State = RoleStale
			x.Reason = fmt.Sprintf("%s missed updates: event counter %d behind the array's %d; needs a resync", f.Path, f.SB.Events, fresh.Events)
		case slot.State == SlotInSync:
			x.State = RoleInSync
		case slot.State == SlotRebuilding:
			x.State = RoleRebuilding
			x.RebuildOffset = slot.RebuildOffset
			x.Reason = fmt.Sprintf("%s was being rebuilt; rebuild resumes at member offset %d of %d", f.Path, slot.RebuildOffset, g.MemberSize)
		default:
			x.State = RoleStale
			x.Reason = fmt.Sprintf("%s is recorded %v by the array; needs a resync", f.Path, slot.State)
		}
		if f != nil {
			x.Path, x.MemberUUID, x.Events = f.Path, f.SB.MemberUUID, f.SB.Events
		}
		a.Roles[r] = x
	}

	// Judge the redundancy.
	var lost []string
	notInSync := 0
	for _, x := range a.Roles {
		if x.State != RoleInSync {
			notInSync++
			lost = append(lost, fmt.Sprintf("role %d %v", x.Role, x.State))
			a.Reasons = append(a.Reasons, fmt.Sprintf("role %d %v: %s", x.Role, x.State, x.Reason))
		}
	}
	for _, d := range a.Foreign {
		a.Reasons = append(a.Reasons, fmt.Sprintf("%s ignored: %s", d.Path, d.Reason))
	}
	for _, d := range a.Unused {
		a.Reasons = append(a.Reasons, fmt.Sprintf("%s not used: %s", d.Path, d.Reason))
	}
	if a.Dirty {
		what := "mirrors may differ and need a resync"
		if g.Level == Level5 || g.Level == Level6 {
			what = "parity of the stripes being written may not match (write hole) and needs a resync"
		}
		a.Reasons = append(a.Reasons, "array was not shut down cleanly (dirty): "+what)
		if notInSync > 0 && (g.Level == Level5 || g.Level == Level6) {
			a.Reasons = append(a.Reasons, "dirty and degraded: a missing chunk of a stripe written at the crash is reconstructed from parity that may not match, so it may read wrong")
		}
	}
	if short := shortfall(g, a.Roles); short != "" {
		return refuse("%v array %v cannot be assembled: %s (%s)", g.Level, uuid, short, strings.Join(lost, ", "))
	}
	if notInSync > 0 {
		a.Status = AssemblyDegraded
	} else {
		a.Status = AssemblyOptimal
	}
	return a, nil
}

// duplicate describes the loser of two devices claiming one role.
func duplicate(loser, winner *Found) Candidate {
	how := "fresher"
	if loser.SB.Events == winner.SB.Events {
		how = "as fresh, first by path"
	}
	return Candidate{loser.Path, fmt.Sprintf("duplicate of role %d (events %d); %s (events %d) is %s",
		loser.SB.Role, loser.SB.Events, winner.Path, winner.SB.Events, how)}
}

// shortfall says why the in-sync roles do not hold all the data of an
// array of geometry g, or "" if they do.
func shortfall(g Geometry, roles []RolePlan) string {
	out := 0
	for _, x := range roles {
		if x.State != RoleInSync {
			out++
		}
	}
	switch g.Level {
	case Level1:
		if out == g.Members {
			return "no in-sync mirror"
		}
	case Level10:
		c := g.CopyCount()
		for grp := 0; grp < g.Members/c; grp++ {
			ok := false
			for _, x := range roles[grp*c : grp*c+c] {
				ok = ok || x.State == RoleInSync
			}
			if !ok {
				return fmt.Sprintf("no in-sync copy in mirror group %d (roles %d-%d)", grp, grp*c, grp*c+c-1)
			}
		}
	case Level5, Level6:
		tol := 1
		if g.Level == Level6 {
			tol = 2
		}
		if out > tol {
			return fmt.Sprintf("%d roles not in sync, %v tolerates %d", out, g.Level, tol)
		}
	}
	return ""
}
