package cluster

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/blockrep/blockrep/replica"
)

// ChooseFailover picks the data node the arbiter should promote for volume,
// given which nodes it currently hears from (alive). It is pure: the
// arbiter judges liveness and leases; ChooseFailover judges data.
//
// Candidates are the alive data nodes whose replica is UpToDate, other than
// the recorded primary (the node failed over from). Never an Outdated or
// Inconsistent replica, never a witness (invariant 3): those need an
// operator's forced promotion. Among candidates the preferred primary wins,
// then the lexically smallest name, so every node computes the same answer.
//
// ok is false when nobody qualifies; reason then lists every replica's
// state and says whether a forced promotion could help.
func ChooseFailover(s *State, volume string, alive map[string]bool) (node string, ok bool, reason string) {
	v, found := s.Volumes[volume]
	if !found {
		return "", false, fmt.Sprintf("no volume %q", volume)
	}
	var cands, others []string
	forceable := false
	for _, dn := range slices.Sorted(maps.Keys(v.Disks)) {
		d := v.Disks[dn]
		switch {
		case dn == v.Primary:
			others = append(others, fmt.Sprintf("%s is the primary being replaced", dn))
		case s.Nodes[dn].Kind != DataNode:
			// Check forbids this; skip rather than pick it.
		case !alive[dn]:
			others = append(others, fmt.Sprintf("%s is %v but not alive", dn, d))
		case d == replica.UpToDate:
			cands = append(cands, dn)
		default:
			if d == replica.Outdated {
				forceable = true
			}
			others = append(others, fmt.Sprintf("%s is %v", dn, d))
		}
	}
	if len(cands) == 0 {
		r := "no UpToDate replica alive"
		if len(others) > 0 {
			r += ": " + strings.Join(others, "; ")
		}
		if forceable {
			r += "; use blockctl promote --force"
		}
		return "", false, r
	}
	if len(cands) > 1 && slices.Contains(cands, v.Lost) {
		// The node just declared lost is back, but another has the same
		// data: do not hand the volume back to the node that failed.
		cands = slices.DeleteFunc(cands, func(n string) bool { return n == v.Lost })
	}
	if v.Preferred != "" && slices.Contains(cands, v.Preferred) {
		return v.Preferred, true, "preferred primary, alive and UpToDate"
	}
	r := "alive and UpToDate, smallest name among " + strings.Join(cands, ", ")
	if v.Preferred != "" {
		r += fmt.Sprintf(" (preferred %s is not a candidate)", v.Preferred)
	}
	return cands[0], true, r
}
