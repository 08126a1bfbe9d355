package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/nbd"
)

// raidBackend is a fakeBackend with RAIDController.
type raidBackend struct {
	*fakeBackend
}

var _ api.RAIDController = (*raidBackend)(nil)

func (b *raidBackend) RAIDFail(ctx context.Context, volume string, member int) error {
	return b.record("RAIDFail(%q, %d)", volume, member)
}

func (b *raidBackend) RAIDRemove(ctx context.Context, volume string, member int) error {
	return b.record("RAIDRemove(%q, %d)", volume, member)
}

// RAIDRemoveSpare reports /dev/sdf as in raid_spares, and refuses
// /dev/sdb as the daemon does a path that is not a spare.
func (b *raidBackend) RAIDRemoveSpare(ctx context.Context, volume, path string) (bool, error) {
	err := b.record("RAIDRemoveSpare(%q, %q)", volume, path)
	if err == nil && path == "/dev/sdb" {
		err = fmt.Errorf("raid: remove spare %s from vol0: not a spare (spares: [\"/dev/sdf\"]): %w", path, api.ErrConflict)
	}
	return path == "/dev/sdf", err
}

// RAIDAdd puts /dev/sdg in as a spare (-1), any other path in member 1.
func (b *raidBackend) RAIDAdd(ctx context.Context, volume, path string) (int, error) {
	if path == "/dev/sdg" {
		return -1, b.record("RAIDAdd(%q, %q)", volume, path)
	}
	return 1, b.record("RAIDAdd(%q, %q)", volume, path)
}

func (b *raidBackend) RAIDReplace(ctx context.Context, volume string, member int, path string) error {
	return b.record("RAIDReplace(%q, %d, %q)", volume, member, path)
}

func (b *raidBackend) RAIDScrub(ctx context.Context, volume string, repair bool) error {
	return b.record("RAIDScrub(%q, %v)", volume, repair)
}

// raidTestStatus has a degraded RAID5 volume rebuilding member 1 (of a
// daemon that reports no scrub times), a RAID1 volume that was scrubbed,
// with the periodic scrub off, and a file volume.
func raidTestStatus() api.Status {
	lastScrub := time.Date(2026, 11, 26, 4, 0, 30, 0, time.UTC)
	return api.Status{Node: "node1", NodeID: "id", Version: "v", UptimeSeconds: 60, Volumes: []api.VolumeStatus{
		{Name: "vol0", Size: 8 << 30, TLS: "optional", Path: "raid5:/dev/sdb,/dev/sdc,/dev/sdd", Clients: []nbd.ClientInfo{}, RAID: &api.RAIDStatus{
			Level: "raid5", UUID: "4adae36d-5f13-091d-8333-ca8e70aab351", Health: "degraded", ChunkSize: 64 << 10, MemberSize: 4 << 30, Events: 12, BitmapRegion: 64 << 20,
			Members: []api.RAIDMember{
				{Index: 0, Path: "/dev/sdb", State: "in_sync"},
				{Index: 1, Path: "/dev/sde", State: "rebuilding"},
				{Index: 2, Path: "/dev/sdd", State: "in_sync", CorrectedReadErrors: 3},
			},
			Spares:   []string{"/dev/sdf"},
			Progress: &api.RAIDProgress{Op: "rebuild", State: "running", Member: 1, DoneBytes: 1 << 30, TotalBytes: 4 << 30, BytesPerSecond: 100 << 20, ETASeconds: 30.2},
			Recovery: api.RAIDRecovery{Dirty: true, DirtyRegions: 3, ResyncReadBytes: 12 << 20},
		}},
		{Name: "mirror", Size: 1 << 30, TLS: "optional", Path: "raid1:/a,/b", Clients: []nbd.ClientInfo{}, RAID: &api.RAIDStatus{
			Level: "raid1", UUID: "u1", Health: "degraded", ChunkSize: 64 << 10, MemberSize: 1 << 30, Events: 3,
			Members: []api.RAIDMember{
				{Index: 0, Path: "/a", State: "in_sync"},
				{Index: 1, State: "faulty", Error: "removed"},
			},
			Progress:  &api.RAIDProgress{Op: "scrub", State: "done", Member: -1, DoneBytes: 1 << 30, TotalBytes: 1 << 30},
			Scrub:     &api.RAIDScrubResult{Stripes: 16384, Mismatches: 2},
			LastScrub: &lastScrub,
			Recovery:  api.RAIDRecovery{Created: true},
		}},
		{Name: "plain", Size: 1 << 20, TLS: "optional", Path: "/p.img", Clients: []nbd.ClientInfo{}},
	}}
}

func TestRAIDStatusTable(t *testing.T) {
	sock := serve(t, &raidBackend{&fakeBackend{st: raidTestStatus()}})
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-s", sock, "raid", "status"}, &stdout, &stderr, noEnv); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	want := `vol0  raid5  chunk 64KiB  bitmap 64MiB  health degraded  member size 4GiB  uuid 4adae36d-5f13-091d-8333-ca8e70aab351  events 12
  MEMBER  PATH      STATE                              ERROR
  0       /dev/sdb  in_sync
  1       /dev/sde  rebuilding
  2       /dev/sdd  in_sync (3 read errors corrected)
  -       /dev/sdf  spare
  rebuild of member 1 [=====>              ] 25% 100MiB/s ETA 31s
  at open: not shut down cleanly: 3 dirty regions resynced (12MiB read)

mirror  raid1  chunk 64KiB  health degraded  member size 1GiB  uuid u1  events 3
  MEMBER  PATH  STATE    ERROR
  0       /a    in_sync
  1       -     faulty   removed
  scrub done: 1GiB
  last scrub (check): 16384 stripes, 2 mismatches, 0 repaired, 0 read errors, 0 skipped
  scrub: last 2026-11-26 04:00 UTC, periodic scrub off
  at open: created
`
	if stdout.String() != want {
		t.Errorf("got\n%s\nwant\n%s", stdout.String(), want)
	}

	stdout.Reset()
	if code := run([]string{"-s", sock, "raid", "status", "mirror", "-o", "json"}, &stdout, &stderr, noEnv); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var got []struct {
		Volume string `json:"volume"`
		api.RAIDStatus
	}
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil || len(got) != 1 || got[0].Volume != "mirror" || got[0].Level != "raid1" || got[0].Scrub.Mismatches != 2 {
		t.Errorf("json %s: %v", stdout.String(), err)
	}
	if !strings.Contains(stdout.String(), `"last_scrub": "2026-11-26T04:00:30Z"`) || strings.Contains(stdout.String(), "next_scrub") {
		t.Errorf("json %s: want last_scrub in RFC 3339 and no next_scrub (periodic scrub off)", stdout.String())
	}

	stdout.Reset()
	if code := run([]string{"-s", sock, "raid", "status", "vol0", "-o", "json"}, &stdout, &stderr, noEnv); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	got = nil
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil || len(got) != 1 || !slices.Equal(got[0].Spares, []string{"/dev/sdf"}) {
		t.Errorf("json %s: %v", stdout.String(), err)
	}
	if strings.Contains(stdout.String(), "last_scrub") || strings.Contains(stdout.String(), "next_scrub") {
		t.Errorf("json %s: scrub times a daemon did not report", stdout.String())
	}

	// status has a line per RAID volume.
	stdout.Reset()
	if code := run([]string{"-s", sock, "status"}, &stdout, &stderr, noEnv); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, line := range []string{
		"vol0  raid raid5  health degraded  members 2/3 in sync  spares 1  rebuild of member 1 [=====>              ] 25% 100MiB/s ETA 31s\n",
		"mirror  raid raid1  health degraded  members 1/2 in sync  faulty 1\n",
	} {
		if !strings.Contains(stdout.String(), line) {
			t.Errorf("status\n%s\ndoes not contain %q", stdout.String(), line)
		}
	}
	if strings.Contains(stdout.String(), "plain  raid") {
		t.Errorf("status shows a raid line for a file volume:\n%s", stdout.String())
	}
}

func TestRAIDCommands(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		cmdErr    error
		noRAID    bool
		wantCode  int
		wantOut   string // all of stdout
		wantErr   string // substring of stderr
		wantUsage bool
		wantCall  string
	}{
		{name: "fail", args: []string{"raid", "fail", "1"}, wantOut: "fail member 1 of the only volume: requested\n", wantCall: `RAIDFail("", 1)`},
		{name: "fail volume", args: []string{"raid", "fail", "2", "vol0"}, wantOut: "fail member 2 of vol0: requested\n", wantCall: `RAIDFail("vol0", 2)`},
		{name: "remove", args: []string{"raid", "remove", "0", "vol0"}, wantOut: "remove member 0 of vol0: requested\n", wantCall: `RAIDRemove("vol0", 0)`},
		{name: "remove spare", args: []string{"raid", "remove", "/dev/sdg", "vol0"}, wantOut: "spare /dev/sdg removed from vol0\n", wantCall: `RAIDRemoveSpare("vol0", "/dev/sdg")`},
		{name: "remove configured spare", args: []string{"raid", "remove", "/dev/sdf"},
			wantOut:  "spare /dev/sdf removed from the only volume (it is in raid_spares in the node's configuration, which adds it back at the next start: remove it there too)\n",
			wantCall: `RAIDRemoveSpare("", "/dev/sdf")`},
		{name: "remove not a spare", args: []string{"raid", "remove", "/dev/sdb", "vol0"}, wantCode: 1,
			wantErr:  `blockctl: blockrepd: raid remove-spare: raid: remove spare /dev/sdb from vol0: not a spare (spares: ["/dev/sdf"]): not possible in the current state (HTTP 409)` + "\n",
			wantCall: `RAIDRemoveSpare("vol0", "/dev/sdb")`},
		{name: "add", args: []string{"raid", "add", "/dev/sde", "vol0"}, wantOut: "add /dev/sde to vol0: requested (member 1, rebuilding)\n", wantCall: `RAIDAdd("vol0", "/dev/sde")`},
		{name: "add spare", args: []string{"raid", "add", "/dev/sdg"}, wantOut: "add /dev/sdg to the only volume: requested (no empty slot: a hot spare, taken into the slot of a member that fails)\n", wantCall: `RAIDAdd("", "/dev/sdg")`},
		{name: "replace", args: []string{"raid", "replace", "1", "/dev/sdf"}, wantOut: "replace member 1 of the only volume with /dev/sdf: requested (rebuilding)\n", wantCall: `RAIDReplace("", 1, "/dev/sdf")`},
		{name: "scrub", args: []string{"raid", "scrub"}, wantOut: "scrub the only volume: requested\n", wantCall: `RAIDScrub("", false)`},
		{name: "scrub repair", args: []string{"raid", "scrub", "vol0", "--repair"}, wantOut: "scrub vol0 (repair): requested\n", wantCall: `RAIDScrub("vol0", true)`},

		{name: "refused", args: []string{"raid", "fail", "0"}, cmdErr: fmt.Errorf("raid: fail vol0 member 0: refused: %w", api.ErrConflict), wantCode: 1,
			wantErr: "blockctl: blockrepd: raid fail: raid: fail vol0 member 0: refused: not possible in the current state (HTTP 409)\n", wantCall: `RAIDFail("", 0)`},
		{name: "no raid support", args: []string{"raid", "scrub"}, noRAID: true, wantCode: 1,
			wantErr: "blockctl: blockrepd: this daemon has no RAID support (HTTP 404)\n"},
		{name: "status of a file volume", args: []string{"raid", "status", "plain"}, wantCode: 1, wantErr: `blockctl: volume "plain" is not on a RAID array`},
		{name: "status of an unknown volume", args: []string{"raid", "status", "vol9"}, wantCode: 1, wantErr: `blockctl: no volume "vol9" on node node1`},

		{name: "raid alone", args: []string{"raid"}, wantCode: 2, wantErr: "raid: name a subcommand: status, fail, remove, add, replace or scrub", wantUsage: true},
		{name: "unknown subcommand", args: []string{"raid", "grow"}, wantCode: 2, wantErr: `raid: unknown subcommand "grow"`, wantUsage: true},
		{name: "fail needs a member", args: []string{"raid", "fail"}, wantCode: 2, wantErr: "raid fail: missing MEMBER", wantUsage: true},
		{name: "bad member", args: []string{"raid", "fail", "sdb"}, wantCode: 2, wantErr: `raid fail: member "sdb" is not a member index (0, 1, ...)`, wantUsage: true},
		{name: "remove neither member nor path", args: []string{"raid", "remove", "sdb"}, wantCode: 2,
			wantErr: `raid remove: "sdb" is neither a member index (0, 1, ...) nor the absolute path of a spare`, wantUsage: true},
		{name: "remove negative member", args: []string{"raid", "remove", "--", "-1"}, wantCode: 2, wantErr: `raid remove: member "-1" is not a member index (0, 1, ...)`, wantUsage: true},
		{name: "remove needs an argument", args: []string{"raid", "remove"}, wantCode: 2, wantErr: "raid remove: missing MEMBER|PATH", wantUsage: true},
		{name: "replace needs a path", args: []string{"raid", "replace", "1"}, wantCode: 2, wantErr: "raid replace: missing PATH", wantUsage: true},
		{name: "replace needs both", args: []string{"raid", "replace"}, wantCode: 2, wantErr: "raid replace: missing MEMBER and PATH", wantUsage: true},
		{name: "extra argument", args: []string{"raid", "add", "/a", "vol0", "x"}, wantCode: 2, wantErr: `raid add: unexpected argument "x"`, wantUsage: true},
		{name: "fail has no repair", args: []string{"raid", "fail", "1", "--repair"}, wantCode: 2, wantErr: "raid fail: flag provided but not defined: -repair", wantUsage: true},
		{name: "status bad output", args: []string{"raid", "status", "-o", "yaml"}, wantCode: 2, wantErr: `raid status: output format "yaml" is not table or json`, wantUsage: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fb := &fakeBackend{st: raidTestStatus(), cmdErr: tt.cmdErr}
			var b api.Backend = &raidBackend{fb}
			if tt.noRAID {
				b = fb
			}
			checkRun(t, b, fb, tt.args, tt.wantCode, tt.wantOut, tt.wantErr, tt.wantUsage, tt.wantCall)
		})
	}
}

func TestRAIDProgressLine(t *testing.T) {
	tests := []struct {
		p    *api.RAIDProgress
		want string
	}{
		{nil, ""},
		{&api.RAIDProgress{Op: "scrub", State: "running", Member: -1, Repair: true, DoneBytes: 1 << 20, TotalBytes: 2 << 20},
			"scrub (repair) [==========>         ] 50%"},
		{&api.RAIDProgress{Op: "rebuild", State: "canceled", Member: 2, DoneBytes: 1 << 20, TotalBytes: 4 << 20, Error: "context canceled"},
			"rebuild of member 2 canceled at 1MiB of 4MiB: context canceled"},
		{&api.RAIDProgress{Op: "rebuild", State: "failed", Member: 0, DoneBytes: 0, TotalBytes: 4 << 20, Error: "raid: too many failed members"},
			"rebuild of member 0 failed at 0B of 4MiB: raid: too many failed members"},
	}
	for _, tt := range tests {
		if got := raidProgressLine(tt.p); got != tt.want {
			t.Errorf("raidProgressLine(%+v) = %q, want %q", tt.p, got, tt.want)
		}
	}
}

func TestScrubScheduleLine(t *testing.T) {
	now := time.Date(2026, 11, 26, 4, 10, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	inBerlin := now.Add(-10 * time.Minute).In(time.FixedZone("CET", 3600))
	tests := []struct {
		last, next *time.Time
		want       string
	}{
		{nil, nil, ""},
		{at(-10 * time.Minute), at(720*time.Hour - 10*time.Minute), "scrub: last 2026-11-26 04:00 UTC, next in 29d23h"},
		{&inBerlin, nil, "scrub: last 2026-11-26 04:00 UTC, periodic scrub off"},
		{at(-721 * time.Hour), at(-time.Hour), "scrub: last 2026-10-27 03:10 UTC, next overdue by 1h0m (waits for an optimal, idle array)"},
		{nil, at(90 * time.Second), "scrub: last unknown, next in 1m30s"},
	}
	for _, tt := range tests {
		if got := scrubScheduleLine(&api.RAIDStatus{LastScrub: tt.last, NextScrub: tt.next}, now); got != tt.want {
			t.Errorf("scrubScheduleLine(last %v, next %v) = %q, want %q", tt.last, tt.next, got, tt.want)
		}
	}
	// The table of raid status, with a fixed now.
	rs := raidTestStatus().Volumes[1].RAID
	rs.NextScrub = at(48*time.Hour + 5*time.Hour)
	var b bytes.Buffer
	if err := writeRAID(&b, "mirror", rs, now); err != nil {
		t.Fatal(err)
	}
	if want := "\n  scrub: last 2026-11-26 04:00 UTC, next in 2d5h\n"; !strings.Contains(b.String(), want) {
		t.Errorf("raid status\n%s\ndoes not contain %q", b.String(), want)
	}
}

func TestUsageRAID(t *testing.T) {
	for _, s := range []string{"raid status [VOLUME] [-o table|json]", "raid fail MEMBER [VOLUME]", "raid remove MEMBER|PATH [VOLUME]",
		"raid add PATH [VOLUME]", "raid replace MEMBER PATH [VOLUME]", "raid scrub [--repair] [VOLUME]"} {
		if !strings.Contains(usage, s) {
			t.Errorf("usage lacks %q", s)
		}
	}
}
