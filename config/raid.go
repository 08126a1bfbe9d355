package config

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// RAID is the local RAID array a volume is stored on instead of a single
// file or device: the raid_* keys of a [[volume]] table.
type RAID struct {
	// Level is "raid1", "raid10", "raid5" or "raid6".
	Level string
	// Members are the member files or block devices (absolute, cleaned,
	// unique), in role order for a new array.
	Members []string
	// Spares are hot spares (absolute, cleaned, unique, none a member):
	// devices that hold no data until a member fails, when one takes the
	// failed member's slot and is rebuilt. Optional.
	Spares []string
	// ChunkSize is the unit of striping in bytes: a power of two from
	// 4KiB to 16MiB.
	ChunkSize int64
	// Copies is the number of near copies of each chunk of a raid10 array;
	// 0 for the other levels.
	Copies int
	// RebuildRate limits background rebuilds, in member bytes per second;
	// 0 is unlimited.
	RebuildRate int64
	// BitmapRegion is the bytes of the array's space one bit of its
	// write-intent bitmap stands for (md's bitmap chunk), a multiple of
	// the stripe (raid_chunk_size × data members); 0 for the default
	// (64MiB rounded down to whole stripes). Smaller regions resync less
	// after a crash or a member's short absence, at the cost of a bitmap
	// write more often. Used when the array is created: an existing array
	// keeps the region size its bitmap records.
	BitmapRegion int64
	// ScrubInterval is how often the node checks the array (a check-only
	// scrub, as Debian's mdadm runs checkarray monthly): one interval after
	// the last scrub completed, when the array is optimal and idle. 0
	// disables the periodic scrub.
	ScrubInterval time.Duration
}

// RAID defaults and limits.
const (
	DefaultRAIDChunkSize   = 64 * KiB
	MinRAIDChunkSize       = 4 * KiB
	MaxRAIDChunkSize       = 16 * MiB
	DefaultRAIDCopies      = 2
	DefaultRAIDRebuildRate = 100 * MiB
	// DefaultRAIDScrubInterval is 30 days, like Debian's monthly
	// checkarray; MinRAIDScrubInterval and MaxRAIDScrubInterval bound the
	// values other than 0 (off).
	DefaultRAIDScrubInterval = 720 * time.Hour
	MinRAIDScrubInterval     = time.Second
	MaxRAIDScrubInterval     = 8760 * time.Hour
	// maxRAIDMembers is how many members an array superblock records
	// (raid.MaxSuperblockMembers).
	maxRAIDMembers = 244
)

// raidLevels are the accepted raid_level values, with the fewest members
// each needs.
var raidLevels = []struct {
	name string
	min  int
}{{"raid1", 2}, {"raid10", 2}, {"raid5", 3}, {"raid6", 4}}

// Spec renders the array as the volume's backing path in the metadata and
// the status: "raid5:/dev/sdb,/dev/sdc,/dev/sdd".
func (r *RAID) Spec() string {
	return r.Level + ":" + strings.Join(r.Members, ",")
}

// raidKeys are the keys decodeRAID reads.
var raidKeys = []string{"raid_level", "raid_members", "raid_spares", "raid_chunk_size", "raid_copies", "raid_rebuild_rate", "raid_bitmap_region", "raid_scrub_interval"}

// decodeRAID decodes the raid_* keys of a [[volume]] table into v.RAID (nil
// when none is present) and checks them.
func decodeRAID(t *table, v *Volume) {
	present := false
	for _, k := range raidKeys {
		if _, ok := t.m[k]; ok {
			present = true
		}
	}
	if !present {
		for _, k := range raidKeys {
			t.used[k] = true
		}
		return
	}
	r := &RAID{ChunkSize: DefaultRAIDChunkSize, RebuildRate: DefaultRAIDRebuildRate, ScrubInterval: DefaultRAIDScrubInterval}
	var level string
	var members, spares []string
	copies := -1
	t.str("raid_level", &level)
	t.strings("raid_members", &members)
	t.strings("raid_spares", &spares)
	t.size("raid_chunk_size", &r.ChunkSize)
	t.integer("raid_copies", &copies, 2, 64)
	t.size("raid_rebuild_rate", &r.RebuildRate)
	t.size("raid_bitmap_region", &r.BitmapRegion)
	t.duration("raid_scrub_interval", &r.ScrubInterval, 0, MaxRAIDScrubInterval)
	if d := r.ScrubInterval; d > 0 && d < MinRAIDScrubInterval {
		t.p.add(t.key("raid_scrub_interval"), "%s: %s is less than %s: give at least %s, or \"0\" to turn the periodic scrub off",
			t.key("raid_scrub_interval"), FormatDuration(d), FormatDuration(MinRAIDScrubInterval), FormatDuration(MinRAIDScrubInterval))
	}
	v.RAID = r

	_, levelSet := t.m["raid_level"]
	_, membersSet := t.m["raid_members"]
	if _, copiesSet := t.m["raid_copies"]; copiesSet && levelSet && level != "raid10" {
		t.p.add(t.key("raid_copies"), "%s applies only to raid_level \"raid10\", not %q", t.key("raid_copies"), level)
	}
	if !membersSet {
		t.p.add(t.key("raid_members"), "%s is required with %s (the member files or block devices)", t.key("raid_members"), strings.Join(setKeys(t), ", "))
	}
	minMembers := 0
	switch {
	case !levelSet:
		t.p.add(t.key("raid_level"), "%s is required with raid_members: one of \"raid1\", \"raid10\", \"raid5\", \"raid6\"", t.key("raid_level"))
	default:
		for _, l := range raidLevels {
			if l.name == level {
				minMembers = l.min
			}
		}
		if minMembers == 0 {
			if _, isStr := t.m["raid_level"].(string); isStr {
				t.p.add(t.key("raid_level"), "%s: %q is not one of \"raid1\", \"raid10\", \"raid5\", \"raid6\"", t.key("raid_level"), level)
			}
		} else {
			r.Level = level
		}
	}
	if level == "raid10" {
		r.Copies = DefaultRAIDCopies
		if copies > 0 {
			r.Copies = copies
		}
	}
	if r.ChunkSize < MinRAIDChunkSize || r.ChunkSize > MaxRAIDChunkSize || !isPow2(r.ChunkSize) {
		t.p.add(t.key("raid_chunk_size"), "%s: %s is not a power of two from 4KiB to 16MiB", t.key("raid_chunk_size"), FormatSize(r.ChunkSize))
	}

	seen := map[string]int{}
	ok := true
	for i, m := range members {
		key := t.key("raid_members") + "." + fmt.Sprint(i)
		if m == "" || !filepath.IsAbs(m) {
			t.p.add(key, "%s: %q is a relative path: give an absolute path", key, m)
			ok = false
			continue
		}
		m = filepath.Clean(m)
		if j, dup := seen[m]; dup {
			t.p.add(key, "%s: %q is also raid_members.%d", key, m, j)
			ok = false
			continue
		}
		seen[m] = i
		r.Members = append(r.Members, m)
	}
	seenSpare := map[string]int{}
	for i, s := range spares {
		key := t.key("raid_spares") + "." + fmt.Sprint(i)
		if s == "" || !filepath.IsAbs(s) {
			t.p.add(key, "%s: %q is a relative path: give an absolute path", key, s)
			continue
		}
		s = filepath.Clean(s)
		if j, dup := seen[s]; dup {
			t.p.add(key, "%s: %q is also raid_members.%d: a device is a member or a spare, not both", key, s, j)
			continue
		}
		if j, dup := seenSpare[s]; dup {
			t.p.add(key, "%s: %q is also raid_spares.%d", key, s, j)
			continue
		}
		seenSpare[s] = i
		r.Spares = append(r.Spares, s)
	}
	if !ok || !membersSet {
		return
	}
	n := len(members)
	switch {
	case minMembers > 0 && n < minMembers:
		t.p.add(t.key("raid_members"), "%s: %s needs at least %d members, got %d", t.key("raid_members"), level, minMembers, n)
	case level == "raid10" && n < r.Copies:
		t.p.add(t.key("raid_members"), "%s: raid10 with raid_copies %d needs at least %d members, got %d", t.key("raid_members"), r.Copies, r.Copies, n)
	case level == "raid10" && n%r.Copies != 0:
		t.p.add(t.key("raid_members"), "%s: raid10 needs a multiple of raid_copies %d members, got %d", t.key("raid_members"), r.Copies, n)
	case n > maxRAIDMembers:
		t.p.add(t.key("raid_members"), "%s: %d members, at most %d", t.key("raid_members"), n, maxRAIDMembers)
	default:
		if _, set := t.m["raid_bitmap_region"]; set && r.Level != "" {
			stripe := r.ChunkSize * int64(r.dataMembers())
			if r.BitmapRegion <= 0 || r.BitmapRegion%stripe != 0 {
				t.p.add(t.key("raid_bitmap_region"), "%s: %s is not a positive multiple of the stripe, %s (raid_chunk_size %s × %d data members)",
					t.key("raid_bitmap_region"), FormatSize(r.BitmapRegion), FormatSize(stripe), FormatSize(r.ChunkSize), r.dataMembers())
			}
		}
	}
}

// dataMembers is the number of members a stripe's data spans.
func (r *RAID) dataMembers() int {
	n := len(r.Members)
	switch r.Level {
	case "raid1":
		return 1
	case "raid10":
		return n / r.Copies
	case "raid5":
		return n - 1
	case "raid6":
		return n - 2
	}
	return 0
}

// setKeys lists the raid_* keys present in t, in raidKeys order.
func setKeys(t *table) []string {
	var out []string
	for _, k := range raidKeys {
		if _, ok := t.m[k]; ok {
			out = append(out, k)
		}
	}
	return out
}
