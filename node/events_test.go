package node

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/events"
)

// raidVolumeStatus is a status with one standalone volume on the array rs.
func raidVolumeStatus(rs *api.RAIDStatus) api.Status {
	return api.Status{Node: "n1", Volumes: []api.VolumeStatus{{Name: "vol0", RAID: rs}}}
}

// raid5 is a RAID5 array of three members with the given states.
func raid5(health string, states ...string) *api.RAIDStatus {
	rs := &api.RAIDStatus{Level: "raid5", Health: health, Members: []api.RAIDMember{}}
	for i, s := range states {
		rs.Members = append(rs.Members, api.RAIDMember{Index: i, Path: "/dev/sd" + string(rune('b'+i)), State: s})
	}
	return rs
}

// raidFactsOf returns the RAID facts of st, rendered "kind peer value
// detail" for comparison.
func raidFactsOf(st api.Status) []string {
	var out []string
	for _, f := range statusFacts("n1", st) {
		if !strings.HasPrefix(f.Kind, "raid-") {
			continue
		}
		if f.Node != "n1" || f.Volume != "vol0" {
			out = append(out, "misplaced "+f.Kind+" node="+f.Node+" volume="+f.Volume)
		}
		out = append(out, strings.Join([]string{f.Kind, f.Peer, f.Value, f.Detail}, "|"))
	}
	return out
}

func TestRAIDFacts(t *testing.T) {
	failed := raid5("degraded", "in_sync", "faulty", "in_sync")
	failed.Members[1].Error = "write at 4096: input/output error"
	removed := raid5("degraded", "in_sync", "faulty", "in_sync")
	removed.Members[1].Path = ""
	rebuilding := raid5("degraded", "in_sync", "rebuilding", "in_sync")
	rebuilding.Progress = &api.RAIDProgress{Op: "rebuild", State: "running", Member: 1, DoneBytes: 1 << 20, TotalBytes: 4 << 20, BytesPerSecond: 1e6, ETASeconds: 3}
	rebuilt := raid5("optimal", "in_sync", "in_sync", "in_sync")
	rebuilt.Progress = &api.RAIDProgress{Op: "rebuild", State: "done", Member: 1, DoneBytes: 4 << 20, TotalBytes: 4 << 20}
	rebuildFailed := raid5("degraded", "in_sync", "faulty", "in_sync")
	rebuildFailed.Progress = &api.RAIDProgress{Op: "rebuild", State: "failed", Member: 1, DoneBytes: 2 << 20, TotalBytes: 4 << 20, Error: "read error on member 0"}
	scrubbing := raid5("optimal", "in_sync", "in_sync", "in_sync")
	scrubbing.Progress = &api.RAIDProgress{Op: "scrub", State: "running", Member: -1, DoneBytes: 0, TotalBytes: 4 << 20, Repair: true}
	scrubCanceled := raid5("optimal", "in_sync", "in_sync", "in_sync")
	scrubCanceled.Progress = &api.RAIDProgress{Op: "scrub", State: "canceled", Member: -1, DoneBytes: 1 << 20, TotalBytes: 4 << 20, Error: "context canceled"}
	dead := raid5("failed", "faulty", "faulty", "in_sync")
	// A finished scrub has its findings in the detail; a running one does
	// not show the last one's.
	checked := raid5("optimal", "in_sync", "in_sync", "in_sync")
	checked.Progress = &api.RAIDProgress{Op: "scrub", State: "done", Member: -1, DoneBytes: 4096, TotalBytes: 4096}
	checked.Scrub = &api.RAIDScrubResult{Stripes: 1}
	repaired := raid5("optimal", "in_sync", "in_sync", "in_sync")
	repaired.Progress = &api.RAIDProgress{Op: "scrub", State: "done", Member: -1, DoneBytes: 4096, TotalBytes: 4096, Repair: true}
	repaired.Scrub = &api.RAIDScrubResult{Repair: true, Stripes: 1, Mismatches: 2, Repaired: 2, ReadErrors: 1, Skipped: 3}
	checkStopped := raid5("optimal", "in_sync", "in_sync", "in_sync")
	checkStopped.Progress = &api.RAIDProgress{Op: "scrub", State: "canceled", Member: -1, DoneBytes: 1 << 20, TotalBytes: 4 << 20, Error: "context canceled"}
	checkStopped.Scrub = &api.RAIDScrubResult{Stripes: 16, Mismatches: 1, Error: "raid: scrub vol0 stopped at stripe 16: context canceled"}
	rescrubbing := raid5("optimal", "in_sync", "in_sync", "in_sync")
	rescrubbing.Progress = &api.RAIDProgress{Op: "scrub", State: "running", Member: -1, DoneBytes: 0, TotalBytes: 4 << 20}
	rescrubbing.Scrub = &api.RAIDScrubResult{Stripes: 1, Mismatches: 5}
	rebuiltAfterScrub := raid5("optimal", "in_sync", "in_sync", "in_sync")
	rebuiltAfterScrub.Progress = &api.RAIDProgress{Op: "rebuild", State: "done", Member: 1, DoneBytes: 4 << 20, TotalBytes: 4 << 20}
	rebuiltAfterScrub.Scrub = &api.RAIDScrubResult{Stripes: 1, Mismatches: 5}

	tests := []struct {
		name string
		rs   *api.RAIDStatus
		want []string
	}{
		{"optimal", raid5("optimal", "in_sync", "in_sync", "in_sync"), []string{
			"raid-health||optimal|raid5, 3 of 3 members in sync",
			"raid-member|member0|in_sync|/dev/sdb",
			"raid-member|member1|in_sync|/dev/sdc",
			"raid-member|member2|in_sync|/dev/sdd",
			"raid-op||idle|",
		}},
		{"member failed", failed, []string{
			"raid-health||degraded|raid5, 2 of 3 members in sync",
			"raid-member|member0|in_sync|/dev/sdb",
			"raid-member|member1|faulty|/dev/sdc: write at 4096: input/output error",
			"raid-member|member2|in_sync|/dev/sdd",
			"raid-op||idle|",
		}},
		{"member removed", removed, []string{
			"raid-health||degraded|raid5, 2 of 3 members in sync",
			"raid-member|member0|in_sync|/dev/sdb",
			"raid-member|member1|faulty|empty slot",
			"raid-member|member2|in_sync|/dev/sdd",
			"raid-op||idle|",
		}},
		{"rebuilding", rebuilding, []string{
			"raid-health||degraded|raid5, 2 of 3 members in sync",
			"raid-member|member0|in_sync|/dev/sdb",
			"raid-member|member1|rebuilding|/dev/sdc",
			"raid-member|member2|in_sync|/dev/sdd",
			"raid-op||rebuild-running|member 1, 1048576 of 4194304 bytes",
		}},
		{"rebuilt", rebuilt, []string{
			"raid-health||optimal|raid5, 3 of 3 members in sync",
			"raid-member|member0|in_sync|/dev/sdb",
			"raid-member|member1|in_sync|/dev/sdc",
			"raid-member|member2|in_sync|/dev/sdd",
			"raid-op||rebuild-done|member 1, 4194304 of 4194304 bytes",
		}},
		{"rebuild failed", rebuildFailed, []string{
			"raid-health||degraded|raid5, 2 of 3 members in sync",
			"raid-member|member0|in_sync|/dev/sdb",
			"raid-member|member1|faulty|/dev/sdc",
			"raid-member|member2|in_sync|/dev/sdd",
			"raid-op||rebuild-failed|member 1, 2097152 of 4194304 bytes: read error on member 0",
		}},
		{"repairing scrub", scrubbing, []string{
			"raid-health||optimal|raid5, 3 of 3 members in sync",
			"raid-member|member0|in_sync|/dev/sdb",
			"raid-member|member1|in_sync|/dev/sdc",
			"raid-member|member2|in_sync|/dev/sdd",
			"raid-op||scrub-running|repair, 0 of 4194304 bytes",
		}},
		{"scrub canceled", scrubCanceled, []string{
			"raid-health||optimal|raid5, 3 of 3 members in sync",
			"raid-member|member0|in_sync|/dev/sdb",
			"raid-member|member1|in_sync|/dev/sdc",
			"raid-member|member2|in_sync|/dev/sdd",
			"raid-op||scrub-canceled|check, 1048576 of 4194304 bytes: context canceled",
		}},
		{"check done", checked, []string{
			"raid-health||optimal|raid5, 3 of 3 members in sync",
			"raid-member|member0|in_sync|/dev/sdb",
			"raid-member|member1|in_sync|/dev/sdc",
			"raid-member|member2|in_sync|/dev/sdd",
			"raid-op||scrub-done|check, 4096 of 4096 bytes: 0 mismatches",
		}},
		{"repair done", repaired, []string{
			"raid-health||optimal|raid5, 3 of 3 members in sync",
			"raid-member|member0|in_sync|/dev/sdb",
			"raid-member|member1|in_sync|/dev/sdc",
			"raid-member|member2|in_sync|/dev/sdd",
			"raid-op||scrub-done|repair, 4096 of 4096 bytes: 2 mismatches, 2 repaired, 1 read errors, 3 stripes skipped",
		}},
		{"check canceled with findings", checkStopped, []string{
			"raid-health||optimal|raid5, 3 of 3 members in sync",
			"raid-member|member0|in_sync|/dev/sdb",
			"raid-member|member1|in_sync|/dev/sdc",
			"raid-member|member2|in_sync|/dev/sdd",
			"raid-op||scrub-canceled|check, 1048576 of 4194304 bytes: context canceled; 1 mismatches",
		}},
		{"scrub running after another", rescrubbing, []string{
			"raid-health||optimal|raid5, 3 of 3 members in sync",
			"raid-member|member0|in_sync|/dev/sdb",
			"raid-member|member1|in_sync|/dev/sdc",
			"raid-member|member2|in_sync|/dev/sdd",
			"raid-op||scrub-running|check, 0 of 4194304 bytes",
		}},
		{"rebuild after a scrub", rebuiltAfterScrub, []string{
			"raid-health||optimal|raid5, 3 of 3 members in sync",
			"raid-member|member0|in_sync|/dev/sdb",
			"raid-member|member1|in_sync|/dev/sdc",
			"raid-member|member2|in_sync|/dev/sdd",
			"raid-op||rebuild-done|member 1, 4194304 of 4194304 bytes",
		}},
		{"array failed", dead, []string{
			"raid-health||failed|raid5, 1 of 3 members in sync",
			"raid-member|member0|faulty|/dev/sdb",
			"raid-member|member1|faulty|/dev/sdc",
			"raid-member|member2|in_sync|/dev/sdd",
			"raid-op||idle|",
		}},
		{"no array", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := raidFactsOf(raidVolumeStatus(tt.rs))
			if !slices.Equal(got, tt.want) {
				t.Errorf("facts\n %s\nwant\n %s", strings.Join(got, "\n "), strings.Join(tt.want, "\n "))
			}
		})
	}
}

// TestRAIDFactsStandalone checks that the array of a volume that does not
// replicate is watched all the same, as most RAID volumes are standalone.
func TestRAIDFactsStandalone(t *testing.T) {
	st := raidVolumeStatus(raid5("degraded", "in_sync", "faulty", "in_sync"))
	st.Volumes = append(st.Volumes, api.VolumeStatus{Name: "plain"})
	var kinds []string
	for _, f := range statusFacts("n1", st) {
		if f.Volume == "plain" {
			t.Errorf("fact %+v for a volume with neither RAID nor replication", f)
		}
		kinds = append(kinds, f.Kind)
	}
	for _, k := range []string{events.KindRAIDHealth, events.KindRAIDMember, events.KindRAIDOp} {
		if !slices.Contains(kinds, k) {
			t.Errorf("no %s fact among %q", k, kinds)
		}
	}
}

// TestRAIDEventsFromFacts runs a member's failure, replacement and rebuild
// through a Watcher, as the node does: each step is an event, and the
// progress of a running rebuild is not.
func TestRAIDEventsFromFacts(t *testing.T) {
	bus := events.NewBus(100)
	w := events.NewWatcher(bus)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub := bus.Subscribe(ctx)

	optimal := raid5("optimal", "in_sync", "in_sync", "in_sync")
	failed := raid5("degraded", "in_sync", "faulty", "in_sync")
	failed.Members[1].Error = "failed by the operator"
	running := func(done int64) *api.RAIDStatus {
		rs := raid5("degraded", "in_sync", "rebuilding", "in_sync")
		rs.Progress = &api.RAIDProgress{Op: "rebuild", State: "running", Member: 1, DoneBytes: done, TotalBytes: 4 << 20}
		return rs
	}
	done := raid5("optimal", "in_sync", "in_sync", "in_sync")
	done.Progress = &api.RAIDProgress{Op: "rebuild", State: "done", Member: 1, DoneBytes: 4 << 20, TotalBytes: 4 << 20}
	scrubbing := raid5("optimal", "in_sync", "in_sync", "in_sync")
	scrubbing.Progress = &api.RAIDProgress{Op: "scrub", State: "running", Member: -1, DoneBytes: 1 << 20, TotalBytes: 4 << 20}
	scrubbed := raid5("optimal", "in_sync", "in_sync", "in_sync")
	scrubbed.Progress = &api.RAIDProgress{Op: "scrub", State: "done", Member: -1, DoneBytes: 4 << 20, TotalBytes: 4 << 20}
	scrubbed.Scrub = &api.RAIDScrubResult{Stripes: 64, Mismatches: 3}

	steps := []struct {
		rs   *api.RAIDStatus
		want []string // "kind peer old->new detail"
	}{
		{optimal, nil}, // the first observation is the state, not a change
		{optimal, nil},
		{failed, []string{
			`raid-health  optimal->degraded "raid5, 2 of 3 members in sync"`,
			`raid-member member1 in_sync->faulty "/dev/sdc: failed by the operator"`,
		}},
		{running(0), []string{
			`raid-member member1 faulty->rebuilding "/dev/sdc"`,
			`raid-op  idle->rebuild-running "member 1, 0 of 4194304 bytes"`,
		}},
		{running(1 << 20), nil},
		{running(3 << 20), nil},
		{done, []string{
			`raid-health  degraded->optimal "raid5, 3 of 3 members in sync"`,
			`raid-member member1 rebuilding->in_sync "/dev/sdc"`,
			`raid-op  rebuild-running->rebuild-done "member 1, 4194304 of 4194304 bytes"`,
		}},
		{done, nil},
		// A check that finds mismatches says so in the event a hook on
		// raid-op gets.
		{scrubbing, []string{
			`raid-op  rebuild-done->scrub-running "check, 1048576 of 4194304 bytes"`,
		}},
		{scrubbed, []string{
			`raid-op  scrub-running->scrub-done "check, 4194304 of 4194304 bytes: 3 mismatches"`,
		}},
		{scrubbed, nil},
	}
	for i, s := range steps {
		before := bus.Seq()
		w.Observe(statusFacts("n1", raidVolumeStatus(s.rs)))
		var got []string
		for range bus.Seq() - before {
			e, err := sub.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, e.Kind+" "+e.Peer+" "+e.Old+"->"+e.New+" "+`"`+e.Detail+`"`)
		}
		if !slices.Equal(got, s.want) {
			t.Errorf("step %d: events\n %s\nwant\n %s", i, strings.Join(got, "\n "), strings.Join(s.want, "\n "))
		}
	}
}
