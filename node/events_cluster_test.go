package node

import (
	"slices"
	"testing"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/cluster"
	"github.com/blockrep/blockrep/events"
)

// clusterFactsOf renders the cluster-state and primary facts of st as
// "kind volume value detail".
func clusterFactsOf(st api.Status) []string {
	var out []string
	for _, f := range statusFacts("n1", st) {
		if f.Kind == events.KindClusterState || f.Kind == events.KindPrimary {
			out = append(out, f.Kind+"|"+f.Volume+"|"+f.Value+"|"+f.Detail)
		}
	}
	return out
}

// Until a member has been current once since its start, its state is a
// snapshot's or empty: it publishes whether it is current, and no primary
// from that state. Once it was current, a stale state keeps its primary
// facts (they are what it applied) and says it is stale.
func TestClusterStateFacts(t *testing.T) {
	const why = "no quorum: cluster state on n1 may be stale (no heartbeat answered since the start)"
	state := func() *cluster.State {
		s := cluster.NewState()
		s.Volumes["vol0"] = &cluster.VolumeState{Name: "vol0", Primary: "n2", Epoch: 3}
		return s
	}
	tests := []struct {
		name string
		cs   cluster.MemberStatus
		want []string
	}{
		{"just started", cluster.MemberStatus{Stale: why, State: cluster.NewState()},
			[]string{"cluster-state||stale|" + why}},
		{"old snapshot, not caught up", cluster.MemberStatus{Stale: why, State: state()},
			[]string{"cluster-state||stale|" + why}},
		{"current", cluster.MemberStatus{CaughtUp: true, State: state()},
			[]string{"cluster-state||current|", "primary|vol0|n2|epoch 3"}},
		{"stale after being current", cluster.MemberStatus{Stale: why, CaughtUp: true, State: state()},
			[]string{"cluster-state||stale|" + why, "primary|vol0|n2|epoch 3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := clusterFactsOf(api.Status{Node: "n1", Cluster: &tt.cs})
			if !slices.Equal(got, tt.want) {
				t.Errorf("facts\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}
