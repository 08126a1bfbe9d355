package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/config"
)

// raidConfig is a node in dir with one RAID5 volume over three sparse
// member files of 5 MiB (4 MiB of data each after the superblock area).
func raidConfig(t *testing.T, dir string) *config.Config {
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
raid_rebuild_rate = 0
size = "5MiB"
`, filepath.Join(dir, "data"), filepath.Join(dir, "ctl.sock"),
		filepath.Join(dir, "m0.img"), filepath.Join(dir, "m1.img"), filepath.Join(dir, "m2.img"))
	cfg, err := config.Parse([]byte(text), "test.toml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
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
	if v.Path != wantPath || v.Size != 8<<20 || v.RAID == nil {
		t.Fatalf("volume %+v, want path %s size 8MiB", v, wantPath)
	}
	rs := v.RAID
	if rs.Level != "raid5" || rs.Health != "optimal" || !rs.Recovery.Created || rs.ChunkSize != 64<<10 ||
		memberStates(rs) != "in_sync,in_sync,in_sync" || rs.Members[1].Path != cfg.Volumes[0].RAID.Members[1] {
		t.Fatalf("raid status %+v", rs)
	}

	// Write a pattern through the node's device.
	dev := n.volumes[0].device()
	data := make([]byte, dev.Size())
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rnd.Uint32())
	}
	if err := dev.WriteAt(data, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := dev.Flush(); err != nil {
		t.Fatal(err)
	}

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
	deadline := time.Now().Add(30 * time.Second)
	for {
		rs = raidStatus(t, c)
		if rs.Health == "optimal" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rebuild did not complete: %+v progress %+v", rs, rs.Progress)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if rs.Members[1].Path != newPath || rs.Progress == nil || rs.Progress.Op != "rebuild" || rs.Progress.State != "done" ||
		rs.Progress.DoneBytes != rs.Progress.TotalBytes {
		t.Fatalf("after rebuild: %+v progress %+v", rs, rs.Progress)
	}

	// A scrub finds the parity clean.
	if err := c.RAIDScrub(ctx, "vol0", false); err != nil {
		t.Fatal(err)
	}
	for rs = raidStatus(t, c); rs.Scrub == nil; rs = raidStatus(t, c) {
		if time.Now().After(deadline) {
			t.Fatalf("scrub did not finish: %+v", rs.Progress)
		}
		time.Sleep(20 * time.Millisecond)
	}
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
	for rs = raidStatus(t, c); rs.Health != "optimal"; rs = raidStatus(t, c) {
		if time.Now().After(deadline) {
			t.Fatalf("second rebuild did not complete: %+v", rs.Progress)
		}
		time.Sleep(20 * time.Millisecond)
	}
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
