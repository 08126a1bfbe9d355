package config

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// raidVolume is minimal with the volume's path replaced by extra.
func raidVolume(extra string) string {
	return strings.Replace(minimal, `path = "/var/lib/blockrep/node1/vol0.img"`, extra, 1)
}

func TestParseRAIDGood(t *testing.T) {
	month := 720 * time.Hour // the default raid_scrub_interval
	tests := []struct {
		name string
		toml string
		want *RAID
		size int64
	}{
		{"raid5 defaults", raidVolume(`raid_level = "raid5"
raid_members = ["/dev/sdb", "/dev/sdc", "/dev/sdd"]`),
			&RAID{Level: "raid5", Members: []string{"/dev/sdb", "/dev/sdc", "/dev/sdd"}, ChunkSize: 64 * KiB, RebuildRate: 100 * MiB, ScrubInterval: month}, 0},
		{"raid10 with everything", raidVolume(`raid_level = "raid10"
raid_members = ["/d/a.img", "/d/b.img", "/d/c.img", "/d//e/../f.img", "/d/g.img", "/d/h.img"]
raid_chunk_size = "1MiB"
raid_copies = 3
raid_rebuild_rate = 0
raid_bitmap_region = "8MiB"
raid_scrub_interval = "24h"
size = "1GiB"`),
			&RAID{Level: "raid10", Members: []string{"/d/a.img", "/d/b.img", "/d/c.img", "/d/f.img", "/d/g.img", "/d/h.img"}, ChunkSize: MiB, Copies: 3, BitmapRegion: 8 * MiB, ScrubInterval: 24 * time.Hour}, GiB},
		{"raid10 default copies", raidVolume(`raid_level = "raid10"
raid_members = ["/a", "/b"]
raid_chunk_size = 4096
raid_rebuild_rate = "10MiB"`),
			&RAID{Level: "raid10", Members: []string{"/a", "/b"}, ChunkSize: 4096, Copies: 2, RebuildRate: 10 * MiB, ScrubInterval: month}, 0},
		{"raid5 with spares", raidVolume(`raid_level = "raid5"
raid_members = ["/d/a", "/d/b", "/d/c"]
raid_spares = ["/d/s1", "/d/x/../s2"]`),
			&RAID{Level: "raid5", Members: []string{"/d/a", "/d/b", "/d/c"}, Spares: []string{"/d/s1", "/d/s2"}, ChunkSize: 64 * KiB, RebuildRate: 100 * MiB, ScrubInterval: month}, 0},
		{"raid1 empty spares", raidVolume(`raid_level = "raid1"
raid_members = ["/a", "/b"]
raid_spares = []`),
			&RAID{Level: "raid1", Members: []string{"/a", "/b"}, ChunkSize: 64 * KiB, RebuildRate: 100 * MiB, ScrubInterval: month}, 0},
		{"raid1", raidVolume(`raid_level = "raid1"
raid_members = ["/a", "/b"]`),
			&RAID{Level: "raid1", Members: []string{"/a", "/b"}, ChunkSize: 64 * KiB, RebuildRate: 100 * MiB, ScrubInterval: month}, 0},
		{"raid6", raidVolume(`raid_level = "raid6"
raid_members = ["/a", "/b", "/c", "/d"]
raid_chunk_size = "16MiB"`),
			&RAID{Level: "raid6", Members: []string{"/a", "/b", "/c", "/d"}, ChunkSize: 16 * MiB, RebuildRate: 100 * MiB, ScrubInterval: month}, 0},
		{"periodic scrub off", raidVolume(`raid_level = "raid1"
raid_members = ["/a", "/b"]
raid_scrub_interval = "0"`),
			&RAID{Level: "raid1", Members: []string{"/a", "/b"}, ChunkSize: 64 * KiB, RebuildRate: 100 * MiB}, 0},
		{"weekly scrub", raidVolume(`raid_level = "raid1"
raid_members = ["/a", "/b"]
raid_scrub_interval = "168h"`),
			&RAID{Level: "raid1", Members: []string{"/a", "/b"}, ChunkSize: 64 * KiB, RebuildRate: 100 * MiB, ScrubInterval: 168 * time.Hour}, 0},
		{"shortest scrub interval", raidVolume(`raid_level = "raid1"
raid_members = ["/a", "/b"]
raid_scrub_interval = "1s"`),
			&RAID{Level: "raid1", Members: []string{"/a", "/b"}, ChunkSize: 64 * KiB, RebuildRate: 100 * MiB, ScrubInterval: time.Second}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.toml), "test.toml")
			if err != nil {
				t.Fatal(err)
			}
			v := cfg.Volumes[0]
			if v.Path != "" || !reflect.DeepEqual(v.RAID, tt.want) || v.Size != tt.size {
				t.Errorf("volume path %q size %d raid %+v, want %+v", v.Path, v.Size, v.RAID, tt.want)
			}
		})
	}
	cfg, err := Parse([]byte(minimal), "test.toml")
	if err != nil || cfg.Volumes[0].RAID != nil {
		t.Errorf("a file volume has RAID %+v (%v)", cfg.Volumes[0].RAID, err)
	}
	r := &RAID{Level: "raid5", Members: []string{"/a", "/b", "/c"}}
	if got := r.Spec(); got != "raid5:/a,/b,/c" {
		t.Errorf("Spec = %q", got)
	}
}

func TestParseRAIDBad(t *testing.T) {
	three := `raid_members = ["/a", "/b", "/c"]`
	tests := []struct {
		name string
		toml string
		want string
	}{
		{"path and members", strings.Replace(minimal, `name = "vol0"`, "name = \"vol0\"\nraid_level = \"raid5\"\n"+three, 1),
			`volume.0.path and raid_members exclude each other: give path for a single file or device, raid_level and raid_members for a RAID array`},
		{"read only", raidVolume(`raid_level = "raid5"` + "\n" + three + "\nread_only = true"),
			`volume.0.read_only is not supported with raid_level: assembling an array writes to its members (superblocks, the resync after a crash, rebuild progress)`},
		{"bitmap region not a stripe multiple", raidVolume(`raid_level = "raid5"` + "\n" + three + "\nraid_bitmap_region = \"96KiB\""),
			`volume.0.raid_bitmap_region: 96KiB is not a positive multiple of the stripe, 128KiB (raid_chunk_size 64KiB × 2 data members)`},
		{"bitmap region zero", raidVolume(`raid_level = "raid6"` + "\n" + `raid_members = ["/a", "/b", "/c", "/d", "/e"]` + "\nraid_bitmap_region = 0"),
			`volume.0.raid_bitmap_region: 0 is not a positive multiple of the stripe, 192KiB (raid_chunk_size 64KiB × 3 data members)`},
		{"no level", raidVolume(three), `volume.0.raid_level is required with raid_members: one of "raid1", "raid10", "raid5", "raid6"`},
		{"no members", raidVolume(`raid_level = "raid5"`), `volume.0.raid_members is required with raid_level (the member files or block devices)`},
		{"bad level", raidVolume(`raid_level = "raid4"` + "\n" + three), `volume.0.raid_level: "raid4" is not one of "raid1", "raid10", "raid5", "raid6"`},
		{"level not a string", raidVolume(`raid_level = 5` + "\n" + three), `volume.0.raid_level: want a string, got integer 5`},
		{"relative member", raidVolume(`raid_level = "raid5"` + "\n" + `raid_members = ["/a", "b", "/c"]`), `volume.0.raid_members.1: "b" is a relative path: give an absolute path`},
		{"duplicate member", raidVolume(`raid_level = "raid5"` + "\n" + `raid_members = ["/a", "/b", "/x/../a"]`), `volume.0.raid_members.2: "/a" is also raid_members.0`},
		{"too few raid5", raidVolume(`raid_level = "raid5"` + "\n" + `raid_members = ["/a", "/b"]`), `volume.0.raid_members: raid5 needs at least 3 members, got 2`},
		{"too few raid6", raidVolume(`raid_level = "raid6"` + "\n" + three), `volume.0.raid_members: raid6 needs at least 4 members, got 3`},
		{"too few raid1", raidVolume(`raid_level = "raid1"` + "\n" + `raid_members = ["/a"]`), `volume.0.raid_members: raid1 needs at least 2 members, got 1`},
		{"raid10 not a multiple", raidVolume(`raid_level = "raid10"` + "\n" + three), `volume.0.raid_members: raid10 needs a multiple of raid_copies 2 members, got 3`},
		{"raid10 fewer than copies", raidVolume(`raid_level = "raid10"` + "\nraid_copies = 3\n" + `raid_members = ["/a", "/b"]`), `volume.0.raid_members: raid10 with raid_copies 3 needs at least 3 members, got 2`},
		{"copies not raid10", raidVolume(`raid_level = "raid5"` + "\nraid_copies = 2\n" + three), `volume.0.raid_copies applies only to raid_level "raid10", not "raid5"`},
		{"copies out of range", raidVolume(`raid_level = "raid10"` + "\nraid_copies = 1\n" + three), `volume.0.raid_copies: 1 is out of range: want 2 to 64`},
		{"chunk not a power of two", raidVolume(`raid_level = "raid5"` + "\nraid_chunk_size = \"48KiB\"\n" + three), `volume.0.raid_chunk_size: 48KiB is not a power of two from 4KiB to 16MiB`},
		{"chunk too small", raidVolume(`raid_level = "raid5"` + "\nraid_chunk_size = 2048\n" + three), `volume.0.raid_chunk_size: 2KiB is not a power of two from 4KiB to 16MiB`},
		{"chunk too big", raidVolume(`raid_level = "raid5"` + "\nraid_chunk_size = \"32MiB\"\n" + three), `volume.0.raid_chunk_size: 32MiB is not a power of two from 4KiB to 16MiB`},
		{"bad rate", raidVolume(`raid_level = "raid5"` + "\nraid_rebuild_rate = \"fast\"\n" + three), `volume.0.raid_rebuild_rate: `},
		{"members not strings", raidVolume(`raid_level = "raid5"` + "\nraid_members = [\"/a\", 2, \"/c\"]"), `volume.0.raid_members.1: want a string, got integer 2`},
		{"member shared with another volume", raidVolume(`raid_level = "raid1"`+"\n"+`raid_members = ["/a", "/b"]`) + "[[volume]]\nname = \"v1\"\npath = \"/b\"\n",
			`volume.1.path: "/b" is also the path of volume.0 (vol0)`},
		{"member shared with another raid", raidVolume(`raid_level = "raid1"`+"\n"+`raid_members = ["/a", "/b"]`) + "[[volume]]\nname = \"v1\"\nraid_level = \"raid1\"\nraid_members = [\"/c\", \"/a\"]\n",
			`volume.1.raid_members.1: "/a" is also used by volume.0 (vol0)`},
		{"spare is a member", raidVolume(`raid_level = "raid5"` + "\n" + three + "\n" + `raid_spares = ["/s", "/x/../b"]`),
			`volume.0.raid_spares.1: "/b" is also raid_members.1: a device is a member or a spare, not both`},
		{"duplicate spare", raidVolume(`raid_level = "raid5"` + "\n" + three + "\n" + `raid_spares = ["/s", "/s/"]`),
			`volume.0.raid_spares.1: "/s" is also raid_spares.0`},
		{"relative spare", raidVolume(`raid_level = "raid5"` + "\n" + three + "\n" + `raid_spares = ["s"]`),
			`volume.0.raid_spares.0: "s" is a relative path: give an absolute path`},
		{"spares not a list", raidVolume(`raid_level = "raid5"` + "\n" + three + "\n" + `raid_spares = "/s"`),
			`volume.0.raid_spares: want an array of strings`},
		{"spares not strings", raidVolume(`raid_level = "raid5"` + "\n" + three + "\n" + `raid_spares = [1]`),
			`volume.0.raid_spares.0: want a string, got integer 1`},
		{"spares without members", raidVolume(`raid_level = "raid5"` + "\n" + `raid_spares = ["/s"]`),
			`volume.0.raid_members is required with raid_level, raid_spares`},
		{"spare shared with another volume", raidVolume(`raid_level = "raid1"`+"\n"+`raid_members = ["/a", "/b"]`+"\n"+`raid_spares = ["/s"]`) + "[[volume]]\nname = \"v1\"\npath = \"/s\"\n",
			`volume.1.path: "/s" is also the path of volume.0 (vol0)`},
		{"neither path nor raid", raidVolume(""), `volume.0.path is required (the backing file or block device)`},
		{"negative scrub interval", raidVolume(`raid_level = "raid5"` + "\nraid_scrub_interval = \"-1h\"\n" + three),
			`volume.0.raid_scrub_interval: "-1h" is out of range: want 0s to 8760h`},
		{"bad scrub interval", raidVolume(`raid_level = "raid5"` + "\nraid_scrub_interval = \"monthly\"\n" + three),
			`volume.0.raid_scrub_interval: invalid duration "monthly"`},
		{"scrub interval without unit", raidVolume(`raid_level = "raid5"` + "\nraid_scrub_interval = 30\n" + three),
			`volume.0.raid_scrub_interval: integer 30 has no unit`},
		{"scrub interval too short", raidVolume(`raid_level = "raid5"` + "\nraid_scrub_interval = \"500ms\"\n" + three),
			`volume.0.raid_scrub_interval: 500ms is less than 1s: give at least 1s, or "0" to turn the periodic scrub off`},
		{"scrub interval too long", raidVolume(`raid_level = "raid5"` + "\nraid_scrub_interval = \"8761h\"\n" + three),
			`volume.0.raid_scrub_interval: "8761h" is out of range: want 0s to 8760h`},
		{"scrub interval alone", raidVolume(`raid_scrub_interval = "24h"`),
			`volume.0.raid_members is required with raid_scrub_interval`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.toml), "test.toml")
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", cfg.Volumes)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q\ndoes not contain %q", err, tt.want)
			}
		})
	}
}

// TestExampleRAIDParses uncomments the example's RAID volume (its lines
// "# key = value" after "Uncomment to use:") and parses it with minimal.
func TestExampleRAIDParses(t *testing.T) {
	data, err := os.ReadFile("../docs/blockrepd.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(data), "# Uncomment to use:\n")
	if !ok {
		t.Fatal("the example has no RAID volume")
	}
	block, _, _ = strings.Cut(block, "\n\n")
	var lines []string
	for _, m := range regexp.MustCompile(`(?m)^# ((?:[a-z_]+ = |\[\[volume\]\]).*)$`).FindAllStringSubmatch(block, -1) {
		lines = append(lines, m[1])
	}
	cfg, err := Parse([]byte(minimal+strings.Join(lines, "\n")+"\n"), "example")
	if err != nil {
		t.Fatal(err)
	}
	want := &RAID{Level: "raid5", Members: []string{"/dev/disk/by-id/ata-A", "/dev/disk/by-id/ata-B", "/dev/disk/by-id/ata-C"},
		Spares: []string{"/dev/disk/by-id/ata-D"}, ChunkSize: 64 * KiB, RebuildRate: 100 * MiB, BitmapRegion: 64 * MiB, ScrubInterval: 720 * time.Hour}
	if v := cfg.Volumes[1]; v.Name != "fast" || !reflect.DeepEqual(v.RAID, want) || v.Size != 10*GiB {
		t.Errorf("example RAID volume %+v raid %+v", v, v.RAID)
	}
}
