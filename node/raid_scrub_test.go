package node

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/internal/syncbuf"
)

// scrubConfigTOML is the volume keys of raidConfig with
// raid_scrub_interval = interval, for raidConfigWith.
func scrubConfigTOML(interval string) string {
	return "raid_rebuild_rate = 0\nraid_scrub_interval = " + `"` + interval + `"`
}

// checkNext checks that rs's next periodic scrub is its last one plus
// interval.
func checkNext(t *testing.T, rs *api.RAIDStatus, interval time.Duration) {
	t.Helper()
	if rs.LastScrub == nil || rs.NextScrub == nil || !rs.NextScrub.Equal(rs.LastScrub.Add(interval)) {
		t.Fatalf("last scrub %v, next scrub %v: want the next one %s after the last", rs.LastScrub, rs.NextScrub, interval)
	}
}

// TestRAIDPeriodicScrub runs a node with raid_scrub_interval = "1s": a
// check-only scrub runs and completes on its own, one interval after the
// node first started at the earliest, and when it completed is kept across
// restarts.
func TestRAIDPeriodicScrub(t *testing.T) {
	dir := t.TempDir()
	cfg := raidConfigWith(t, dir, scrubConfigTOML("1s"))
	var logged syncbuf.Buffer
	before := time.Now()
	_, stop := startNodeLog(t, cfg, slog.New(slog.NewTextHandler(io.MultiWriter(tWriter{t}, &logged), nil)))
	c := api.Dial(cfg.Node.ControlSocket)
	defer c.Close()

	// A new array counts from the node's first start.
	rs := raidStatus(t, c)
	if rs.LastScrub == nil || rs.LastScrub.Before(before) || rs.LastScrub.After(time.Now()) {
		t.Fatalf("last scrub of a new array %v, want when the node started (after %v)", rs.LastScrub, before)
	}
	checkNext(t, rs, time.Second)
	started := *rs.LastScrub

	rs = waitRAID(t, c, "periodic scrub", func(rs *api.RAIDStatus) bool { return rs.Scrub != nil })
	if p := rs.Progress; p == nil || p.Op != "scrub" || p.State != "done" || p.Repair || p.DoneBytes != p.TotalBytes {
		t.Fatalf("periodic scrub progress %+v, want a check done", p)
	}
	if s := rs.Scrub; s.Repair || s.Error != "" || s.Stripes == 0 || s.Mismatches != 0 {
		t.Fatalf("periodic scrub result %+v, want a clean check", s)
	}
	// Not at start: one interval after the first start at the earliest.
	if rs.LastScrub == nil || rs.LastScrub.Sub(started) < time.Second {
		t.Fatalf("first periodic scrub completed at %v, less than 1s after the start %v", rs.LastScrub, started)
	}
	checkNext(t, rs, time.Second)
	firstDone := *rs.LastScrub
	if !strings.Contains(logged.String(), "raid: periodic scrub started") || !strings.Contains(logged.String(), "interval=1s") {
		t.Errorf("no periodic scrub start logged with its interval:\n%s", logged.String())
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	// Restart with a long interval, so that no scrub runs: the completion
	// time comes from meta, not from this start.
	restart := time.Now()
	cfg = raidConfigWith(t, dir, scrubConfigTOML("1h"))
	_, stop = startNode(t, cfg)
	rs = raidStatus(t, c)
	if rs.LastScrub == nil || rs.LastScrub.Before(firstDone) || !rs.LastScrub.Before(restart) {
		t.Fatalf("last scrub after restart %v, want the one recorded before (from %v, before %v)", rs.LastScrub, firstDone, restart)
	}
	checkNext(t, rs, time.Hour)
	if rs.Scrub != nil || rs.Progress != nil {
		t.Errorf("after restart: scrub %+v progress %+v, want none run", rs.Scrub, rs.Progress)
	}
	recorded := *rs.LastScrub
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	_, _ = startNode(t, cfg)
	if rs = raidStatus(t, c); rs.LastScrub == nil || !rs.LastScrub.Equal(recorded) {
		t.Fatalf("last scrub after a second restart %v, want %v", rs.LastScrub, recorded)
	}
}

// TestRAIDPeriodicScrubFirstStartRecorded checks that a new array's first
// start is recorded as its last scrub: a restart does not push the first
// periodic scrub back.
func TestRAIDPeriodicScrubFirstStartRecorded(t *testing.T) {
	dir := t.TempDir()
	cfg := raidConfigWith(t, dir, scrubConfigTOML("1h"))
	_, stop := startNode(t, cfg)
	c := api.Dial(cfg.Node.ControlSocket)
	defer c.Close()
	rs := raidStatus(t, c)
	checkNext(t, rs, time.Hour)
	first := *rs.LastScrub
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	time.Sleep(10 * time.Millisecond) // a later "now" than first
	_, _ = startNode(t, cfg)
	rs = raidStatus(t, c)
	if rs.LastScrub == nil || !rs.LastScrub.Equal(first) {
		t.Fatalf("last scrub after restart %v, want the first start %v", rs.LastScrub, first)
	}
	checkNext(t, rs, time.Hour)
}

// TestRAIDPeriodicScrubWaitsWhileDegraded checks that no periodic scrub
// starts on a degraded array, however overdue. It waits on the periodic
// scrub's own looks at the array (its debug log), not on time, so that a
// slow machine cannot pass it without the scrub having looked.
func TestRAIDPeriodicScrubWaitsWhileDegraded(t *testing.T) {
	dir := t.TempDir()
	cfg := raidConfigWith(t, dir, scrubConfigTOML("1s"))
	var logged syncbuf.Buffer
	_, _ = startNodeLog(t, cfg, slog.New(slog.NewTextHandler(io.MultiWriter(tWriter{t}, &logged), &slog.HandlerOptions{Level: slog.LevelDebug})))
	c := api.Dial(cfg.Node.ControlSocket)
	defer c.Close()
	// looks counts the periodic scrub's looks at a due scrub in the log
	// from offset from: started, or not.
	looks := func(from int) int {
		return strings.Count(logged.String()[from:], "raid: periodic scrub ")
	}

	if err := c.RAIDFail(context.Background(), "vol0", 1); err != nil {
		t.Fatal(err)
	}
	// A periodic scrub that had started before the failure may still run:
	// wait for the periodic scrub to have looked at the degraded array,
	// and for no scrub to run.
	failed := len(logged.String())
	rs := waitRAID(t, c, "a periodic look at the degraded array, no scrub running", func(rs *api.RAIDStatus) bool {
		return looks(failed) > 0 && (rs.Progress == nil || rs.Progress.State != "running")
	})
	if rs.Health != "degraded" {
		t.Fatalf("health %s after failing a member", rs.Health)
	}
	progress, last, seen := rs.Progress, rs.LastScrub, len(logged.String())

	rs = waitRAID(t, c, "3 more periodic looks", func(*api.RAIDStatus) bool { return looks(seen) >= 3 })
	if l := logged.String()[seen:]; strings.Contains(l, "raid: periodic scrub started") || !strings.Contains(l, "waiting for the array to be optimal") {
		t.Fatalf("periodic scrub on a degraded array:\n%s", l)
	}
	if rs.Health != "degraded" {
		t.Fatalf("health %s, want degraded still", rs.Health)
	}
	if progress == nil && rs.Progress != nil || progress != nil && (rs.Progress == nil || *rs.Progress != *progress) {
		t.Fatalf("progress %+v after 3 periodic looks, want %+v: a periodic scrub ran on a degraded array", rs.Progress, progress)
	}
	if rs.LastScrub == nil || !rs.LastScrub.Equal(*last) {
		t.Fatalf("last scrub moved from %v to %v while degraded", last, rs.LastScrub)
	}
	if !rs.NextScrub.Before(time.Now()) {
		t.Errorf("next scrub %v is not overdue after 3 periodic looks", rs.NextScrub)
	}
}

// TestRAIDScrubShownRunningUntilStored checks the status of a scrub the
// array has finished but whose result the node has not stored yet: it
// shows running, never done without its result; an operator's scrub moves
// the last scrub on, with no next one when the periodic scrub is off.
func TestRAIDScrubShownRunningUntilStored(t *testing.T) {
	dir := t.TempDir()
	cfg := raidConfigWith(t, dir, scrubConfigTOML("0"))
	n, _ := startNode(t, cfg)
	c := api.Dial(cfg.Node.ControlSocket)
	defer c.Close()
	rs := raidStatus(t, c)
	if rs.LastScrub == nil || rs.NextScrub != nil {
		t.Fatalf("periodic scrub off: last %v next %v, want a last and no next", rs.LastScrub, rs.NextScrub)
	}
	opened := *rs.LastScrub
	if err := c.RAIDScrub(context.Background(), "vol0", true); err != nil {
		t.Fatal(err)
	}
	rs = waitRAID(t, c, "operator scrub", func(rs *api.RAIDStatus) bool { return rs.Scrub != nil })
	if rs.Progress == nil || rs.Progress.State != "done" || !rs.Progress.Repair || !rs.Scrub.Repair || rs.Scrub.Error != "" {
		t.Fatalf("repair scrub: progress %+v result %+v", rs.Progress, rs.Scrub)
	}
	if rs.LastScrub == nil || !rs.LastScrub.After(opened) || rs.NextScrub != nil {
		t.Fatalf("after a scrub: last %v (opened %v) next %v", rs.LastScrub, opened, rs.NextScrub)
	}

	// The array says the scrub is done; the node has not stored its
	// result yet (as between Scrub returning and the goroutine storing).
	rv := n.volumes[0].raid
	rv.mu.Lock()
	rv.scrubbing = true
	rv.mu.Unlock()
	rs = raidStatus(t, c)
	rv.mu.Lock()
	rv.scrubbing = false
	rv.mu.Unlock()
	if rs.Progress == nil || rs.Progress.Op != "scrub" || rs.Progress.State != "running" || rs.Progress.Error != "" {
		t.Fatalf("progress of a scrub whose result is not stored: %+v, want running", rs.Progress)
	}
	if rs = raidStatus(t, c); rs.Progress.State != "done" {
		t.Fatalf("progress once the result is stored: %+v, want done", rs.Progress)
	}
}
