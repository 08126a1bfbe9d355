package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/block"
	"github.com/blockrep/blockrep/config"
	"github.com/blockrep/blockrep/events"
	"github.com/blockrep/blockrep/storeid"
)

// raidConfig is a node in dir with one RAID5 volume over three sparse
// member files of 5 MiB (4 MiB of data each after the superblock area),
// m0.img to m2.img, rebuilding at an unlimited rate.
func raidConfig(t *testing.T, dir string) *config.Config {
	t.Helper()
	return raidConfigWith(t, dir, "raid_rebuild_rate = 0")
}

// raidConfigRate is raidConfig with raid_rebuild_rate = rate (a TOML
// value).
func raidConfigRate(t *testing.T, dir, rate string) *config.Config {
	t.Helper()
	return raidConfigWith(t, dir, "raid_rebuild_rate = "+rate)
}

// raidConfigWith is raidConfig's node with the volume's other keys given
// as TOML lines in extra (raid_rebuild_rate's default applies unless
// extra sets it).
func raidConfigWith(t *testing.T, dir, extra string) *config.Config {
	t.Helper()
	text := fmt.Sprintf(`
[node]
name = "test-node"
data_dir = %[1]q
control_socket = %[2]q

[nbd]
listen = ["127.0.0.1:0"]

[[volume]]
name = "vol0"
raid_level = "raid5"
raid_members = [%[3]q, %[4]q, %[5]q]
raid_chunk_size = "64KiB"
size = "5MiB"
%[6]s
`, filepath.Join(dir, "data"), filepath.Join(dir, "ctl.sock"),
		filepath.Join(dir, "m0.img"), filepath.Join(dir, "m1.img"), filepath.Join(dir, "m2.img"), extra)
	cfg, err := config.Parse([]byte(text), "test.toml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// writeRandom fills dev with random bytes from seed, flushed, and returns
// them.
func writeRandom(t *testing.T, dev block.Device, seed uint64) []byte {
	t.Helper()
	data := make([]byte, dev.Size())
	rnd := rand.New(rand.NewPCG(seed, seed+1))
	for i := range data {
		data[i] = byte(rnd.Uint32())
	}
	if err := dev.WriteAt(data, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := dev.Flush(); err != nil {
		t.Fatal(err)
	}
	return data
}

// raidStatus fetches the RAID status of the only volume.
func raidStatus(t *testing.T, c *api.Client) *api.RAIDStatus {
	t.Helper()
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Volumes) != 1 || st.Volumes[0].RAID == nil {
		t.Fatalf("status without RAID: %+v", st.Volumes)
	}
	return st.Volumes[0].RAID
}

func memberStates(rs *api.RAIDStatus) string {
	var s []string
	for _, m := range rs.Members {
		s = append(s, m.State)
	}
	return strings.Join(s, ",")
}

func TestRAIDVolume(t *testing.T) {
	dir := t.TempDir()
	cfg := raidConfig(t, dir)
	ctx := context.Background()
	n, stop := startNode(t, cfg)
	c := api.Dial(cfg.Node.ControlSocket)
	defer c.Close()

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v := st.Volumes[0]
	wantPath := "raid5:" + strings.Join(cfg.Volumes[0].RAID.Members, ",")
	// The array's last block holds the store identity.
	if v.Path != wantPath || v.Size != 8<<20-storeid.BlockSize || v.RAID == nil {
		t.Fatalf("volume %+v, want path %s size 8MiB - 4KiB", v, wantPath)
	}
	rs := v.RAID
	if rs.Level != "raid5" || rs.Health != "optimal" || !rs.Recovery.Created || rs.ChunkSize != 64<<10 ||
		memberStates(rs) != "in_sync,in_sync,in_sync" || rs.Members[1].Path != cfg.Volumes[0].RAID.Members[1] {
		t.Fatalf("raid status %+v", rs)
	}

	// Write a pattern through the node's device.
	dev := n.volumes[0].device()
	data := writeRandom(t, dev, 1)

	// Fail member 1: the array serves degraded.
	if err := c.RAIDFail(ctx, "", 1); err != nil {
		t.Fatal(err)
	}
	rs = raidStatus(t, c)
	if rs.Health != "degraded" || memberStates(rs) != "in_sync,faulty,in_sync" || rs.Members[1].Error == "" {
		t.Fatalf("after fail: %+v", rs)
	}
	got := make([]byte, len(data))
	if err := dev.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("degraded read: %v, equal %v", err, bytes.Equal(got, data))
	}

	// Refusals map to the API's errors.
	if err := c.RAIDFail(ctx, "vol0", 0); !errors.Is(err, api.ErrConflict) {
		t.Errorf("failing a second member: %v, want ErrConflict", err)
	}
	if err := c.RAIDFail(ctx, "vol0", 3); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("failing member 3: %v, want ErrInvalid", err)
	}
	if err := c.RAIDScrub(ctx, "vol9", false); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("scrub of vol9: %v, want ErrNotFound", err)
	}
	if err := c.RAIDRemove(ctx, "vol0", 0); !errors.Is(err, api.ErrConflict) {
		t.Errorf("removing an in-sync member: %v, want ErrConflict", err)
	}

	// Remove it, and replace it with a new file (created at the configured
	// size); the rebuild runs in the background.
	if err := c.RAIDRemove(ctx, "vol0", 1); err != nil {
		t.Fatal(err)
	}
	if rs = raidStatus(t, c); rs.Members[1].Path != "" {
		t.Errorf("removed member still has a path: %+v", rs.Members[1])
	}
	newPath := filepath.Join(dir, "m1-new.img")
	if err := c.RAIDReplace(ctx, "vol0", 1, newPath); err != nil {
		t.Fatal(err)
	}
	optimal := func(rs *api.RAIDStatus) bool { return rs.Health == "optimal" }
	rs = waitRAID(t, c, "the rebuild", optimal)
	if rs.Members[1].Path != newPath || rs.Progress == nil || rs.Progress.Op != "rebuild" || rs.Progress.State != "done" ||
		rs.Progress.DoneBytes != rs.Progress.TotalBytes {
		t.Fatalf("after rebuild: %+v progress %+v", rs, rs.Progress)
	}

	// A scrub finds the parity clean.
	if err := c.RAIDScrub(ctx, "vol0", false); err != nil {
		t.Fatal(err)
	}
	rs = waitRAID(t, c, "the scrub", func(rs *api.RAIDStatus) bool { return rs.Scrub != nil })
	if rs.Scrub.Mismatches != 0 || rs.Scrub.Error != "" || rs.Scrub.Stripes == 0 {
		t.Errorf("scrub: %+v", rs.Scrub)
	}

	// Fail member 0 this time: the rebuilt member serves its share.
	if err := c.RAIDFail(ctx, "vol0", 0); err != nil {
		t.Fatal(err)
	}
	clear(got)
	if err := dev.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read without member 0: %v, equal %v", err, bytes.Equal(got, data))
	}
	if err := c.RAIDReplace(ctx, "vol0", 0, filepath.Join(dir, "m0-new.img")); err != nil {
		t.Fatal(err)
	}
	waitRAID(t, c, "the second rebuild", optimal)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	// Restart: the array assembles clean from the remembered members, the
	// replaced ones among them, and the data is intact.
	for _, p := range []string{filepath.Join(dir, "m0.img"), filepath.Join(dir, "m1.img")} {
		if err := os.Remove(p); err != nil { // the old members are gone
			t.Fatal(err)
		}
	}
	n, stop = startNode(t, cfg)
	rs = raidStatus(t, c)
	if rs.Health != "optimal" || rs.Recovery.Created || rs.Recovery.Dirty || memberStates(rs) != "in_sync,in_sync,in_sync" ||
		rs.Members[0].Path != filepath.Join(dir, "m0-new.img") || rs.Members[1].Path != newPath {
		t.Fatalf("after restart: %+v", rs)
	}
	dev = n.volumes[0].device()
	clear(got)
	if err := dev.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after restart: %v, equal %v", err, bytes.Equal(got, data))
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestRAIDOnFileVolume(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "")
	_, _ = startNode(t, cfg)
	c := api.Dial(cfg.Node.ControlSocket)
	defer c.Close()
	err := c.RAIDFail(context.Background(), "", 0)
	if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), `volume "vol0" is not on a RAID array`) {
		t.Errorf("RAIDFail on a file volume: %v", err)
	}
	st, err := c.Status(context.Background())
	if err != nil || st.Volumes[0].RAID != nil {
		t.Errorf("file volume status RAID %+v (%v)", st.Volumes[0].RAID, err)
	}
}

// TestRAIDEvents checks that the node publishes what mdadm --monitor would
// report (Fail, DegradedArray, RebuildStarted, RebuildFinished) as events
// on its bus.
func TestRAIDEvents(t *testing.T) {
	dir := t.TempDir()
	// Slow enough (4 MiB at 2 MiB/s) that the watcher, which looks every
	// 100 ms, sees the rebuild running and not only its end.
	cfg := raidConfigRate(t, dir, `"2MiB"`)
	n, _ := startNode(t, cfg)
	c := api.Dial(cfg.Node.ControlSocket)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The watcher's first observation records the state without publishing
	// it: a failure before it would not be an event.
	initial := func() map[string]string {
		m := map[string]string{}
		for _, e := range n.CurrentEvents() {
			if strings.HasPrefix(e.Kind, "raid-") && e.Volume == "vol0" {
				m[e.Kind+" "+e.Peer] = e.New
			}
		}
		return m
	}
	wantInitial := map[string]string{"raid-health ": "optimal", "raid-member member0": "in_sync",
		"raid-member member1": "in_sync", "raid-member member2": "in_sync", "raid-op ": "idle"}
	for cur := initial(); !maps.Equal(cur, wantInitial); cur = initial() {
		if ctx.Err() != nil {
			t.Fatalf("current RAID events %v, want %v", cur, wantInitial)
		}
		time.Sleep(10 * time.Millisecond)
	}
	sub := n.Events().Subscribe(ctx)

	// await reads events until one matches each of want, in any order as
	// the events of one observation come in the order of the facts, and
	// returns what it read.
	await := func(step string, want ...func(events.Event) bool) []events.Event {
		t.Helper()
		var seen []events.Event
		for len(want) > 0 {
			e, err := sub.Next(ctx)
			if err != nil {
				var lines []string
				for _, e := range seen {
					lines = append(lines, e.String())
				}
				t.Fatalf("%s: %v; events seen:\n%s", step, err, strings.Join(lines, "\n"))
			}
			seen = append(seen, e)
			want = slices.DeleteFunc(want, func(w func(events.Event) bool) bool { return w(e) })
		}
		return seen
	}
	is := func(kind, peer, old, new string) func(events.Event) bool {
		return func(e events.Event) bool {
			return e.Kind == kind && e.Volume == "vol0" && e.Peer == peer && e.Old == old && e.New == new
		}
	}

	// Fail: the member turns faulty, with its path and why in the detail,
	// and the array degraded.
	if err := c.RAIDFail(ctx, "vol0", 1); err != nil {
		t.Fatal(err)
	}
	faulty := is("raid-member", "member1", "in_sync", "faulty")
	seen := await("fail", faulty, is("raid-health", "", "optimal", "degraded"))
	for _, e := range seen {
		if faulty(e) && !strings.HasPrefix(e.Detail, cfg.Volumes[0].RAID.Members[1]+": ") {
			t.Errorf("faulty member event detail %q, want the path and the error", e.Detail)
		}
		if e.Kind == "raid-op" {
			t.Errorf("a failure is not an operation: %s", e)
		}
	}

	// Replace it: the rebuild starts, ends, and the array is optimal again.
	newPath := filepath.Join(dir, "m1-new.img")
	if err := c.RAIDReplace(ctx, "vol0", 1, newPath); err != nil {
		t.Fatal(err)
	}
	seen = await("rebuild start", is("raid-op", "", "idle", "rebuild-running"))
	end := is("raid-op", "", "rebuild-running", "rebuild-done")
	inSync := func(e events.Event) bool {
		return e.Kind == "raid-member" && e.Peer == "member1" && e.New == "in_sync" && e.Detail == newPath
	}
	// One observation publishes the health before the members: wait for
	// the member too, not only for what came first.
	seen = append(seen, await("rebuild end", end, is("raid-health", "", "degraded", "optimal"), inSync)...)
	var running int
	for _, e := range seen {
		if e.Kind == "raid-op" && e.New == "rebuild-running" {
			running++
		}
		if end(e) && !strings.HasPrefix(e.Detail, "member 1, ") {
			t.Errorf("rebuild end detail %q, want the member", e.Detail)
		}
	}
	if running != 1 {
		t.Errorf("%d rebuild-running events, want 1: the progress is not an event", running)
	}
	if !slices.ContainsFunc(seen, is("raid-member", "member1", "faulty", "rebuilding")) {
		t.Errorf("no event of member 1 rebuilding among %v", seen)
	}
}
