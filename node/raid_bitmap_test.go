package node

import (
	"testing"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/config"
)

// raidBitmapConfig is raidConfig with raid_bitmap_region = region (a TOML
// value), or without the key when region is "".
func raidBitmapConfig(t *testing.T, dir, region string) *config.Config {
	t.Helper()
	if region == "" {
		return raidConfig(t, dir)
	}
	return raidConfigWith(t, dir, "raid_bitmap_region = "+region)
}

// TestRAIDBitmapRegion: raid_bitmap_region sets the write-intent bitmap's
// region when the array is created, the status shows it, and an existing
// array keeps the region its bitmap records whatever the configuration
// says later.
func TestRAIDBitmapRegion(t *testing.T) {
	regionOf := func(cfg *config.Config) int64 {
		t.Helper()
		_, stop := startNode(t, cfg)
		defer stop()
		c := api.Dial(cfg.Node.ControlSocket)
		defer c.Close()
		return raidStatus(t, c).BitmapRegion
	}
	if got, want := regionOf(raidBitmapConfig(t, t.TempDir(), "")), int64(64<<20); got != want {
		t.Errorf("default region %d, want %d (64MiB in whole 128KiB stripes)", got, want)
	}
	dir := t.TempDir()
	if got, want := regionOf(raidBitmapConfig(t, dir, `"256KiB"`)), int64(256<<10); got != want {
		t.Errorf("configured region %d, want %d", got, want)
	}
	if got, want := regionOf(raidBitmapConfig(t, dir, `"1MiB"`)), int64(256<<10); got != want {
		t.Errorf("region after reconfiguring an existing array %d, want the recorded %d", got, want)
	}
}
