package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/config"
	"github.com/blockrep/blockrep/internal/syncbuf"
)

// raidSpareConfig is raidConfig with one hot spare, s0.img, created at
// start.
func raidSpareConfig(t *testing.T, dir string) *config.Config {
	t.Helper()
	return raidConfigWith(t, dir, fmt.Sprintf("raid_rebuild_rate = 0\nraid_spares = [%q]", filepath.Join(dir, "s0.img")))
}

// waitRAID polls the status until cond holds, failing after a deadline
// generous enough for any machine.
func waitRAID(t *testing.T, c *api.Client, what string, cond func(*api.RAIDStatus) bool) *api.RAIDStatus {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		rs := raidStatus(t, c)
		if cond(rs) {
			return rs
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %+v progress %+v", what, rs, rs.Progress)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRAIDHotSpare(t *testing.T) {
	dir := t.TempDir()
	cfg := raidSpareConfig(t, dir)
	spare := filepath.Join(dir, "s0.img")
	ctx := context.Background()
	n, stop := startNode(t, cfg)
	c := api.Dial(cfg.Node.ControlSocket)
	defer c.Close()

	rs := raidStatus(t, c)
	if rs.Health != "optimal" || memberStates(rs) != "in_sync,in_sync,in_sync" || !slices.Equal(rs.Spares, []string{spare}) {
		t.Fatalf("raid status %+v", rs)
	}
	dev := n.volumes[0].device()
	data := writeRandom(t, dev, 3)

	// Fail member 1: the spare takes its slot and is rebuilt, unasked.
	if err := c.RAIDFail(ctx, "vol0", 1); err != nil {
		t.Fatal(err)
	}
	rs = waitRAID(t, c, "the spare rebuilt into slot 1", func(rs *api.RAIDStatus) bool {
		return rs.Health == "optimal" && rs.Members[1].Path == spare && rs.Progress != nil && rs.Progress.State == "done"
	})
	if len(rs.Spares) != 0 || rs.Spares == nil || rs.Progress.Op != "rebuild" || rs.Progress.Member != 1 {
		t.Fatalf("after the spare's rebuild: %+v progress %+v", rs, rs.Progress)
	}
	got := make([]byte, len(data))
	if err := dev.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after the spare's rebuild: %v, equal %v", err, bytes.Equal(got, data))
	}

	// Add to a full array: a spare.
	extra := filepath.Join(dir, "s1.img")
	m, err := c.RAIDAdd(ctx, "vol0", extra)
	if err != nil || m != -1 {
		t.Fatalf("RAIDAdd to a full array = %d, %v; want -1 (a spare)", m, err)
	}
	if rs = raidStatus(t, c); !slices.Equal(rs.Spares, []string{extra}) || rs.Health != "optimal" {
		t.Fatalf("after add: %+v", rs)
	}
	if _, err := c.RAIDAdd(ctx, "vol0", extra); err == nil {
		t.Fatal("adding the same spare twice succeeded")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// At the next start the spare is still member 1 and the added spare is
	// found again (remembered in meta); the failed device is left over.
	var logged syncbuf.Buffer
	n, _ = startNodeLog(t, cfg, slog.New(slog.NewTextHandler(io.MultiWriter(tWriter{t}, &logged), nil)))
	if l := logged.String(); !strings.Contains(l, "a configured member is no longer in the array") || !strings.Contains(l, "configured="+cfg.Volumes[0].RAID.Members[1]) {
		t.Errorf("restart with member 1 replaced by the spare: no warning naming the configured member %s", cfg.Volumes[0].RAID.Members[1])
	}
	c2 := api.Dial(cfg.Node.ControlSocket)
	defer c2.Close()
	rs = raidStatus(t, c2)
	if rs.Health != "optimal" || rs.Members[1].Path != spare || !slices.Equal(rs.Spares, []string{extra}) {
		t.Fatalf("after restart: %+v", rs)
	}
	dev = n.volumes[0].device()
	clear(got)
	if err := dev.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after restart: %v, equal %v", err, bytes.Equal(got, data))
	}
}

func TestRAIDRemoveSpare(t *testing.T) {
	dir := t.TempDir()
	cfg := raidSpareConfig(t, dir)
	spare := filepath.Join(dir, "s0.img") // in raid_spares
	extra := filepath.Join(dir, "s1.img") // added with RAIDAdd
	ctx := context.Background()
	n, stop := startNode(t, cfg)
	c := api.Dial(cfg.Node.ControlSocket)
	defer c.Close()

	if m, err := c.RAIDAdd(ctx, "vol0", extra); err != nil || m != -1 {
		t.Fatalf("RAIDAdd to a full array = %d, %v; want -1 (a spare)", m, err)
	}
	if rs := raidStatus(t, c); !slices.Equal(rs.Spares, []string{spare, extra}) {
		t.Fatalf("spares %q, want %q", rs.Spares, []string{spare, extra})
	}

	// Remove the added spare: gone from the status, from the paths the node
	// remembers, and its superblock is zeroed.
	configured, err := c.RAIDRemoveSpare(ctx, "vol0", extra)
	if err != nil || configured {
		t.Fatalf("RAIDRemoveSpare(%s) = %v, %v; want false (not configured), nil", extra, configured, err)
	}
	if rs := raidStatus(t, c); !slices.Equal(rs.Spares, []string{spare}) || rs.Health != "optimal" || memberStates(rs) != "in_sync,in_sync,in_sync" {
		t.Fatalf("after removing %s: %+v", extra, rs)
	}
	if slices.Contains(rememberedMembers(n.meta, "vol0"), extra) {
		t.Errorf("remembered paths %q still hold the removed spare %s", rememberedMembers(n.meta, "vol0"), extra)
	}
	if holdsSuperblock(extra) {
		t.Errorf("the removed spare %s still holds a superblock", extra)
	}

	// Not a spare (any more, or a member): refused, naming the path, the
	// volume and the spares.
	for _, p := range []string{extra, filepath.Join(dir, "m0.img")} {
		_, err := c.RAIDRemoveSpare(ctx, "vol0", p)
		if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "vol0") ||
			!strings.Contains(err.Error(), "not a spare") || !strings.Contains(err.Error(), spare) {
			t.Errorf("RAIDRemoveSpare(%s) = %v; want a conflict naming the path, the volume and the spares", p, err)
		}
	}
	if rs := raidStatus(t, c); !slices.Equal(rs.Spares, []string{spare}) {
		t.Fatalf("spares %q after refused removals", rs.Spares)
	}

	// Remove the configured spare: the node says it is configured.
	configured, err = c.RAIDRemoveSpare(ctx, "", spare)
	if err != nil || !configured {
		t.Fatalf("RAIDRemoveSpare(%s) = %v, %v; want true (configured), nil", spare, configured, err)
	}
	if rs := raidStatus(t, c); len(rs.Spares) != 0 || rs.Spares == nil {
		t.Fatalf("spares %q after removing both, want []", rs.Spares)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// At the next start the configured spare is back (the configuration is
	// the desired state), the other one is not.
	_, stop = startNode(t, cfg)
	defer stop()
	c2 := api.Dial(cfg.Node.ControlSocket)
	defer c2.Close()
	if rs := raidStatus(t, c2); !slices.Equal(rs.Spares, []string{spare}) || rs.Health != "optimal" {
		t.Fatalf("after restart: %+v; want the configured spare %s only", rs, spare)
	}
}
