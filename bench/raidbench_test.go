package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/blockrep/blockrep/raid"
)

func TestDefaultRaidConfigs(t *testing.T) {
	const size, chunk = 256 << 20, 64 << 10
	if c := DefaultRaidConfigs[0]; c.Level != 0 || c.Name != RaidReference || c.Members != 1 {
		t.Fatalf("first config %+v, want the single-file reference", c)
	}
	levels := map[raid.Level]bool{}
	names := map[string]bool{}
	for _, c := range DefaultRaidConfigs {
		if names[c.Name] {
			t.Errorf("duplicate name %q", c.Name)
		}
		names[c.Name] = true
		g, ok := c.Geometry(size, chunk)
		if c.Level == 0 {
			if ok || c.MemberSize(size, chunk) != size {
				t.Errorf("reference: geometry %v ok=%v, member size %d", g, ok, c.MemberSize(size, chunk))
			}
			continue
		}
		levels[c.Level] = true
		if err := g.Validate(); err != nil {
			t.Errorf("%s: %v", c.Name, err)
			continue
		}
		// Every configuration exposes (nearly) the same capacity: whole
		// stripes within size.
		if got := g.Size(); got > size || got <= size-g.StripeSize() {
			t.Errorf("%s: capacity %d, want within one stripe (%d) below %d", c.Name, got, g.StripeSize(), size)
		}
		if g.MemberSize != c.MemberSize(size, chunk) {
			t.Errorf("%s: MemberSize %d vs %d", c.Name, g.MemberSize, c.MemberSize(size, chunk))
		}
	}
	for _, l := range []raid.Level{raid.Level1, raid.Level10, raid.Level5, raid.Level6} {
		if !levels[l] {
			t.Errorf("level %v missing", l)
		}
	}
	var mirrors []int
	for _, c := range DefaultRaidConfigs {
		if m := c.Mirrors(); m > 0 {
			mirrors = append(mirrors, m)
		}
	}
	if len(mirrors) != 3 || mirrors[0] != 1 || mirrors[1] != 2 || mirrors[2] != 3 {
		t.Errorf("mirror counts %v, want [1 2 3]", mirrors)
	}
	// Member sizes per level at 256 MiB logical.
	want := map[string]int64{"RAID1 ×2": 256 << 20, "RAID10 4×2": 128 << 20, "RAID5 ×3": 128 << 20, "RAID5 ×4": 1365 * 64 << 10, "RAID6 ×4": 128 << 20}
	for _, c := range DefaultRaidConfigs {
		if w, ok := want[c.Name]; ok && c.MemberSize(size, chunk) != w {
			t.Errorf("%s: member size %d, want %d", c.Name, c.MemberSize(size, chunk), w)
		}
	}
}

func TestRaidResultAndMedian(t *testing.T) {
	r := RaidResult{Ops: 2048, Bytes: 2048 << 20, Elapsed: 2 * time.Second, CPU: time.Second}
	if r.IOPS() != 1024 || r.MiBps() != 1024 || r.CPUPercent() != 50 {
		t.Fatalf("IOPS %v MiB/s %v CPU %v", r.IOPS(), r.MiBps(), r.CPUPercent())
	}
	if (RaidResult{}).IOPS() != 0 || (RaidResult{}).MiBps() != 0 {
		t.Fatal("zero result not zero")
	}
	runs := []RaidResult{
		{Bytes: 300, Elapsed: time.Second},
		{Bytes: 100, Elapsed: time.Second},
		{Bytes: 200, Elapsed: time.Second},
	}
	if m := MedianRaid(runs); m.Bytes != 200 {
		t.Errorf("median %d, want 200", m.Bytes)
	}
	if runs[0].Bytes != 300 {
		t.Error("MedianRaid reordered its argument")
	}
	if MedianRaid(nil) != (RaidResult{}) {
		t.Error("median of nothing")
	}
}

func TestWriteRaidTables(t *testing.T) {
	seq := RaidWorkloads[0]
	rnd := RaidWorkloads[2]
	wr := RaidWorkloads[3]
	mk := func(c RaidConfig, w RaidWorkload, ops int64) RaidCell {
		r := RaidResult{Ops: ops, Bytes: ops * int64(w.BlockSize), Elapsed: time.Second, CPU: 500 * time.Millisecond}
		return RaidCell{Config: c, Workload: w, Median: r, Runs: []RaidResult{r, r}}
	}
	ref, r12, r13, r5 := DefaultRaidConfigs[0], DefaultRaidConfigs[1], DefaultRaidConfigs[2], DefaultRaidConfigs[4]
	cells := []RaidCell{
		mk(ref, seq, 100), mk(r12, seq, 150), mk(r13, seq, 200), mk(r5, seq, 50),
		mk(ref, rnd, 10000), mk(r12, rnd, 15000), mk(r13, rnd, 20000), mk(r5, rnd, 9000),
		mk(ref, wr, 1000), mk(r12, wr, 500), mk(r13, wr, 250), mk(r5, wr, 250),
	}
	var b bytes.Buffer
	WriteRaidTable(&b, cells)
	out := b.String()
	for _, want := range []string{
		"**1M sequential read**\n\n| configuration | median | ratio to single file | CPU (% of one core) | runs (MiB/s) |\n|---|---|---|---|---|\n",
		"| single file | 100 MiB/s (100 IOPS) | 1.00× | 50% | 100, 100 |\n",
		"| RAID5 ×3 | 50 MiB/s (50 IOPS) | 0.50× | 50% | 50, 50 |\n",
		"**4K random read**\n\n| configuration | median | ratio to single file | CPU (% of one core) | runs (IOPS) |\n",
		"| RAID1 ×3 | 20000 IOPS (78.1 MiB/s) | 2.00× | 50% | 20000, 20000 |\n",
		"| RAID1 ×2 | 500 IOPS (2.0 MiB/s) | 0.50× | 50% | 500, 500 |\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "|---|---|---|---|---|\n"); n != 3 {
		t.Errorf("%d tables, want 3:\n%s", n, out)
	}

	b.Reset()
	WriteRaidScaling(&b, cells)
	want := "| mirrors | workload | median | ratio to 1 mirror | CPU (% of one core) |\n|---|---|---|---|---|\n" +
		"| 1 | 1M sequential read | 100 MiB/s (100 IOPS) | 1.00× | 50% |\n" +
		"| 2 | 1M sequential read | 150 MiB/s (150 IOPS) | 1.50× | 50% |\n" +
		"| 3 | 1M sequential read | 200 MiB/s (200 IOPS) | 2.00× | 50% |\n" +
		"| 1 | 4K random read | 10000 IOPS (39.1 MiB/s) | 1.00× | 50% |\n" +
		"| 2 | 4K random read | 15000 IOPS (58.6 MiB/s) | 1.50× | 50% |\n" +
		"| 3 | 4K random read | 20000 IOPS (78.1 MiB/s) | 2.00× | 50% |\n"
	if b.String() != want {
		t.Errorf("scaling table:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestSelectRaidConfigs(t *testing.T) {
	names := func(cs []RaidConfig) string {
		var s []string
		for _, c := range cs {
			s = append(s, c.Name)
		}
		return strings.Join(s, "|")
	}
	if got := SelectRaidConfigs(""); len(got) != len(DefaultRaidConfigs) {
		t.Errorf("empty selection: %s, want all", names(got))
	}
	if got, want := names(SelectRaidConfigs("RAID1 ×, RAID6")), "single file|RAID1 ×2|RAID1 ×3|RAID6 ×4"; got != want {
		t.Errorf("RAID1 ×, RAID6: %s, want %s", got, want)
	}
	if got, want := names(SelectRaidConfigs("nothing")), RaidReference; got != want {
		t.Errorf("no match: %s, want the reference alone", got)
	}
}
