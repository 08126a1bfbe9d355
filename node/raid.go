package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/config"
	"github.com/blockrep/blockrep/meta"
	"github.com/blockrep/blockrep/raid"
)

// A volume with raid_members is stored on a raid.DiskArray instead of a
// single file: the array is the volume's store, and the replica and the NBD
// export sit on top of it as on a file. The node remembers the array's
// current member and spare paths in the volume's meta state (raidMembersKey,
// raidSparesKey), so that a member replaced by one the configuration does not
// name, or a spare added with blockctl, is found again at the next start: the
// candidates raid.Open assembles from are the configured members and spares
// and the remembered ones. A configured spare that the array does not hold
// (new, or removed) is added as a spare after the array is open.
//
// The array takes a spare into a failed member's slot by itself and rebuilds
// it at raid_rebuild_rate (raid/spare.go); the node only records the new
// paths (OnChange) and stops that at shutdown (stop).

// raidMembersKey is the meta state key of the array's member paths, a JSON
// array of strings in role order ("" for an empty slot).
const raidMembersKey = "raid.members"

// raidSparesKey is the meta state key of the array's spare paths, a JSON
// array of strings.
const raidSparesKey = "raid.spares"

// raidLastScrubKey is the meta state key of when the array's last scrub
// completed without error, RFC 3339 text. A new array, or one of a node
// from before the periodic scrub, has none: the node records its first
// start instead, so that the first periodic scrub comes one
// raid_scrub_interval later, never at start-up.
const raidLastScrubKey = "raid.last_scrub"

// raidScrubRetry is the longest a periodic scrub that is due waits before
// it is tried again when it could not start (the array not optimal, a
// rebuild or scrub running); shorter intervals retry every interval.
const raidScrubRetry = time.Hour

// raidBusyRetry is how often a rebuild waiting for a running rebuild or
// scrub to end tries again.
const raidBusyRetry = time.Second

var _ api.RAIDController = (*Node)(nil)

// raidVolume is the array of a RAID volume and the background operations
// the node runs on it.
type raidVolume struct {
	name    string
	arr     *raid.DiskArray
	created bool
	rate    int64
	log     *slog.Logger
	db      *meta.DB

	ctx    context.Context // canceled by stop
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// scrubEvery is raid_scrub_interval: 0 turns the periodic scrub off.
	scrubEvery time.Duration

	mu        sync.Mutex // the fields below; serializes member changes
	scrub     *api.RAIDScrubResult
	scrubbing bool
	repair    bool // of the running or last scrub

	// lastMu guards lastScrub and lastPending, apart from mu: recording
	// them in meta (a durable write) holds it.
	lastMu sync.Mutex
	// lastScrub is when the last scrub completed without error (or the
	// first start, for an array never scrubbed); lastPending says it is
	// not recorded in meta yet.
	lastScrub   time.Time
	lastPending bool
}

// holdsSuperblock reports whether the device at path carries an array
// superblock (of any array); a missing or short device does not.
func holdsSuperblock(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, raid.SuperblockSize)
	if _, err := f.ReadAt(b, 0); err != nil {
		return false
	}
	_, err = raid.UnmarshalSuperblock(b)
	return !errors.Is(err, raid.ErrNoSuperblock)
}

// rememberedMembers returns the member and spare paths recorded for volume
// name, nil when none are.
func rememberedMembers(db *meta.DB, name string) []string {
	var all []string
	err := db.ViewVolume(name, func(tx *meta.VolumeTx) error {
		for _, k := range []string{raidMembersKey, raidSparesKey} {
			var paths []string
			if b := tx.Get(k); b != nil {
				if err := json.Unmarshal(b, &paths); err != nil {
					return err
				}
			}
			all = append(all, paths...)
		}
		return nil
	})
	if err != nil {
		return nil
	}
	return all
}

// raidCandidates are the paths an array of vc assembles from: the
// configured members and spares and the ones meta remembers.
func (n *Node) raidCandidates(vc config.Volume) []string {
	rc := vc.RAID
	candidates := append(slices.Clone(rc.Members), rc.Spares...)
	for _, p := range rememberedMembers(n.meta, vc.Name) {
		if p != "" && !slices.Contains(candidates, p) {
			candidates = append(candidates, p)
		}
	}
	return candidates
}

// openRAID assembles the array of vc, or creates it when none of the
// candidate members holds a superblock: with member files of fileSize bytes
// created when missing (0: none is created).
func (n *Node) openRAID(vc config.Volume, fileSize int64) (*raidVolume, error) {
	rc := vc.RAID
	candidates := n.raidCandidates(vc)
	log := n.log.With("volume", vc.Name)
	ctx := context.Background()
	rv := &raidVolume{name: vc.Name, rate: rc.RebuildRate, log: log, db: n.meta, scrubEvery: rc.ScrubInterval}
	// Called by the array after it took a spare in, which may be before
	// rv.arr is set: it gets the paths rather than reading them.
	onChange := func(members, spares []string) {
		log.Warn("raid: a spare took a failed member's slot", "members", strings.Join(members, ","), "spares", strings.Join(spares, ","))
		rv.savePaths(members, spares)
	}
	if !slices.ContainsFunc(candidates, holdsSuperblock) {
		level, err := raid.ParseLevel(rc.Level)
		if err != nil {
			return nil, err
		}
		g := raid.Geometry{Level: level, Members: len(rc.Members), ChunkSize: rc.ChunkSize}
		if level == raid.Level10 {
			g.Copies = rc.Copies
		}
		log.Warn("raid: NONE OF THE MEMBERS HOLDS AN ARRAY SUPERBLOCK: CREATING A NEW ARRAY; every member is zeroed",
			"level", rc.Level, "members", strings.Join(rc.Members, ","), "spares", strings.Join(rc.Spares, ","),
			"chunk_size", rc.ChunkSize, "member_file_size", fileSize)
		rv.arr, err = raid.Create(ctx, raid.CreateOptions{
			Name: vc.Name, Geometry: g, Paths: rc.Members, Spares: rc.Spares, FileSize: fileSize,
			RebuildRate: rc.RebuildRate, RegionSize: rc.BitmapRegion, OnChange: onChange, Logger: log,
		})
		if err != nil {
			return nil, err
		}
		rv.created = true
	} else {
		var err error
		rv.arr, err = raid.Open(ctx, raid.OpenOptions{Paths: candidates, Name: vc.Name, RebuildRate: rc.RebuildRate, OnChange: onChange, Logger: log})
		if err != nil {
			return nil, err
		}
		n.addConfiguredSpares(vc, rv)
		members := rv.arr.MemberPaths()
		for i, p := range rc.Members {
			if !slices.Contains(members, p) {
				now := ""
				if i < len(members) {
					now = members[i]
				}
				log.Warn("raid: a configured member is no longer in the array (replaced, or taken out): update raid_members to what the array holds",
					"raid_members_index", i, "configured", p, "slot_now", now, "members", strings.Join(members, ","))
			}
		}
		if r := rc.BitmapRegion; r != 0 && r != rv.arr.RegionSize() {
			log.Warn("raid: raid_bitmap_region applies only when an array is created: this one keeps the region its bitmap records",
				"raid_bitmap_region", config.FormatSize(r), "array_region", config.FormatSize(rv.arr.RegionSize()))
		}
	}
	asm := rv.arr.Assembly()
	rv.ctx, rv.cancel = context.WithCancel(context.Background())
	rec := rv.arr.Recovery()
	st := rv.arr.Array().Status()
	log.Info("raid: array opened", "uuid", rv.arr.UUID().String(), "level", st.Level.String(), "health", st.Health.String(),
		"members", strings.Join(rv.arr.MemberPaths(), ","), "spares", strings.Join(rv.arr.Spares(), ","), "created", rv.created, "dirty", rec.Dirty,
		"dirty_regions", len(rec.DirtyRegions), "resynced", rec.Resynced, "rebuilding", rec.Rebuilding)
	if st.Health != raid.HealthOptimal {
		log.Warn("raid: array is not optimal", "health", st.Health.String(), "assembly", asm.Status.String(), "reasons", asm.Reasons)
	}
	rv.loadLastScrub()
	if rv.scrubEvery > 0 {
		rv.wg.Add(1)
		go rv.periodicScrub()
	}
	return rv, nil
}

// loadLastScrub reads when the last scrub completed from meta; with none
// recorded (a new array or volume, or an upgrade) it takes now, which
// saveMembers records once the volume is in meta.
func (rv *raidVolume) loadLastScrub() {
	var last time.Time
	err := rv.db.ViewVolume(rv.name, func(tx *meta.VolumeTx) error {
		if b := tx.Get(raidLastScrubKey); b != nil {
			return last.UnmarshalText(b)
		}
		return nil
	})
	if err != nil && !errors.Is(err, meta.ErrNoVolume) {
		rv.log.Error("raid: reading when the last scrub completed: counting from now", "err", err)
	}
	rv.lastMu.Lock()
	defer rv.lastMu.Unlock()
	if err != nil || last.IsZero() {
		rv.lastScrub, rv.lastPending = time.Now().UTC().Round(0), true
		return
	}
	rv.lastScrub = last
}

// setLastScrub records t as when the last scrub completed.
func (rv *raidVolume) setLastScrub(t time.Time) {
	rv.lastMu.Lock()
	rv.lastScrub, rv.lastPending = t.UTC().Round(0), true
	rv.lastMu.Unlock()
	rv.saveLastScrub()
}

// saveLastScrub records lastScrub in meta unless it is already.
func (rv *raidVolume) saveLastScrub() {
	rv.lastMu.Lock()
	defer rv.lastMu.Unlock()
	if !rv.lastPending {
		return
	}
	b, _ := rv.lastScrub.MarshalText()
	err := rv.db.UpdateVolume(rv.name, func(tx *meta.VolumeTx) error { return tx.Put(raidLastScrubKey, b) })
	if err != nil {
		rv.log.Error("raid: recording when the last scrub completed", "err", err)
		return
	}
	rv.lastPending = false
}

// lastScrubTime returns when the last scrub completed.
func (rv *raidVolume) lastScrubTime() time.Time {
	rv.lastMu.Lock()
	defer rv.lastMu.Unlock()
	return rv.lastScrub
}

// periodicScrub starts a check-only scrub every scrubEvery, counted from
// when the last scrub completed, until stop. A scrub that is due waits
// for the array to be optimal and for no rebuild or scrub to run, trying
// again every min(scrubEvery, raidScrubRetry); a scrub that stops on an
// error is tried again likewise, as it leaves lastScrub as it was.
func (rv *raidVolume) periodicScrub() {
	defer rv.wg.Done()
	retry := min(rv.scrubEvery, raidScrubRetry)
	timer := time.NewTimer(time.Until(rv.lastScrubTime().Add(rv.scrubEvery)))
	defer timer.Stop()
	for {
		select {
		case <-rv.ctx.Done():
			return
		case <-timer.C:
		}
		wait := time.Until(rv.lastScrubTime().Add(rv.scrubEvery))
		if wait <= 0 {
			wait = retry
			// Started or not, the next look is a retry away: by then
			// a scrub started now has usually completed and moved
			// lastScrub on.
			if health := rv.arr.Array().Status().Health; health != raid.HealthOptimal {
				rv.log.Debug("raid: periodic scrub due, waiting for the array to be optimal", "health", health.String(), "retry_in", retry)
			} else if err := rv.startScrub(false, "raid: periodic scrub started", "interval", config.FormatDuration(rv.scrubEvery)); err != nil {
				rv.log.Debug("raid: periodic scrub due, not started", "err", err, "retry_in", retry)
			}
		}
		timer.Reset(wait)
	}
}

// addConfiguredSpares adds as spares the configured raid_spares the array
// holds neither as a member nor as a spare: new ones, or ones removed since.
// A spare the array refuses (another array's, too small) is logged and left
// alone: the volume is served without it.
func (n *Node) addConfiguredSpares(vc config.Volume, rv *raidVolume) {
	members, spares := rv.arr.MemberPaths(), rv.arr.Spares()
	for _, p := range vc.RAID.Spares {
		if slices.Contains(members, p) || slices.Contains(spares, p) {
			continue
		}
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) && vc.Size > 0 {
			if f, err := raid.OpenFile(p, raid.FileOptions{CreateSize: vc.Size}); err == nil {
				f.Close()
			}
		}
		if err := rv.arr.AddSpare(p); err != nil {
			rv.log.Error("raid: configured spare not added", "spare", p, "err", err)
			continue
		}
		rv.log.Info("raid: configured spare added", "spare", p)
	}
}

// saveMembers records the member and spare paths in meta, and when the
// last scrub completed if that is not recorded yet (openRAIDVolume calls
// it once the volume is in meta: a new array's first start).
func (rv *raidVolume) saveMembers() {
	rv.savePaths(rv.arr.MemberPaths(), rv.arr.Spares())
	rv.saveLastScrub()
}

func (rv *raidVolume) savePaths(members, spares []string) {
	mb, _ := json.Marshal(members)
	sb, _ := json.Marshal(spares)
	err := rv.db.UpdateVolume(rv.name, func(tx *meta.VolumeTx) error {
		if err := tx.Put(raidMembersKey, mb); err != nil {
			return err
		}
		return tx.Put(raidSparesKey, sb)
	})
	if err != nil {
		rv.log.Error("raid: recording the member and spare paths", "err", err)
	}
}

// stop stops the array taking spares in and cancels the node's background
// rebuilds and scrubs, and waits for them; the array keeps a rebuild's
// checkpoint.
func (rv *raidVolume) stop() {
	if rv.arr != nil {
		rv.arr.StopSpares()
	}
	if rv.cancel != nil {
		rv.cancel()
	}
	rv.wg.Wait()
}

// rebuild rebuilds member i in the background, waiting for a rebuild or
// scrub already running to end first.
func (rv *raidVolume) rebuild(i int) {
	rv.wg.Add(1)
	go func() {
		defer rv.wg.Done()
		for {
			err := rv.arr.Rebuild(rv.ctx, i, raid.RebuildOptions{Rate: rv.rate})
			switch {
			case err == nil:
				rv.log.Info("raid: rebuild complete", "member", i)
				rv.saveMembers()
				return
			case errors.Is(err, raid.ErrBusy):
				select {
				case <-rv.ctx.Done():
					return
				case <-time.After(raidBusyRetry):
				}
			case rv.ctx.Err() != nil:
				rv.log.Info("raid: rebuild stopped at shutdown; it resumes at the next start", "member", i)
				return
			default:
				rv.log.Error("raid: rebuild failed", "member", i, "err", err)
				return
			}
		}
	}()
}

// status renders the array's state for the API.
func (rv *raidVolume) status() *api.RAIDStatus {
	a := rv.arr.Array()
	g := a.Geometry()
	st := a.Status()
	rec := rv.arr.Recovery()
	out := &api.RAIDStatus{
		Level: st.Level.String(), UUID: rv.arr.UUID().String(), Health: st.Health.String(),
		ChunkSize: g.ChunkSize, MemberSize: g.MemberSize, Events: rv.arr.Events(), BitmapRegion: rv.arr.RegionSize(),
		Members: make([]api.RAIDMember, 0, len(st.Members)),
		Spares:  rv.arr.Spares(),
		Recovery: api.RAIDRecovery{
			Created: rv.created, Dirty: rec.Dirty, BitmapCorrupt: rec.BitmapCorrupt,
			DirtyRegions: len(rec.DirtyRegions), ResyncReadBytes: rec.ResyncReadBytes,
			Resynced: rec.Resynced, Rebuilding: rec.Rebuilding,
		},
	}
	if g.Level == raid.Level10 {
		out.Copies = g.CopyCount()
	}
	paths := rv.arr.MemberPaths()
	rv.mu.Lock()
	for _, m := range st.Members {
		am := api.RAIDMember{Index: m.Index, State: m.State.String(), CorrectedReadErrors: m.CorrectedReadErrors}
		if m.Index < len(paths) {
			am.Path = paths[m.Index]
		}
		if m.Err != nil {
			am.Error = m.Err.Error()
		}
		out.Members = append(out.Members, am)
	}
	if rv.scrub != nil {
		cp := *rv.scrub
		out.Scrub = &cp
	}
	repair := rv.repair
	// Under mu with scrubbing: the array's progress says a scrub is over
	// before the scrub's goroutine stores its result. Until it has, the
	// scrub shows as running, so that a status never has a finished scrub
	// without its result.
	p := a.Progress()
	if rv.scrubbing && p.Op == "scrub" && p.State != raid.OpRunning {
		p.State, p.Err = raid.OpRunning, nil
	}
	rv.mu.Unlock()
	// After mu: a scrub seen over has moved lastScrub on.
	if last := rv.lastScrubTime(); !last.IsZero() {
		out.LastScrub = &last
		if rv.scrubEvery > 0 {
			next := last.Add(rv.scrubEvery)
			out.NextScrub = &next
		}
	}
	if p.Op != "" {
		ap := &api.RAIDProgress{
			Op: p.Op, State: string(p.State), Member: p.Member,
			DoneBytes: p.Done, TotalBytes: p.Total, BytesPerSecond: p.Rate,
			Repair: p.Op == "scrub" && repair,
		}
		if p.State == raid.OpRunning && p.Rate > 0 && p.Total > p.Done {
			ap.ETASeconds = float64(p.Total-p.Done) / p.Rate
		}
		if p.Err != nil {
			ap.Error = p.Err.Error()
		}
		out.Progress = ap
	}
	return out
}

// raidVolumeOf returns the array of volume name ("" for the only volume).
func (n *Node) raidVolumeOf(name string) (*raidVolume, error) {
	v, err := n.volumeNamed(name)
	if err != nil {
		return nil, err
	}
	if v.raid == nil {
		return nil, fmt.Errorf("%w: volume %q is not on a RAID array (it has a path, not raid_members)", api.ErrConflict, v.cfg.Name)
	}
	return v.raid, nil
}

// checkMember checks a member index against the array.
func (rv *raidVolume) checkMember(i int) error {
	if m := rv.arr.Array().Geometry().Members; i < 0 || i >= m {
		return fmt.Errorf("%w: volume %q: no member %d: the array has members 0 to %d", api.ErrInvalid, rv.name, i, m-1)
	}
	return nil
}

// raidError classifies an error of the array: a path that does not exist
// is a bad argument, anything else the array's state refusing.
func raidError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %w", api.ErrInvalid, err)
	}
	return fmt.Errorf("%w: %w", api.ErrConflict, err)
}

// RAIDFail implements api.RAIDController.
func (n *Node) RAIDFail(_ context.Context, volume string, member int) error {
	rv, err := n.raidVolumeOf(volume)
	if err != nil {
		return err
	}
	if err := rv.checkMember(member); err != nil {
		return err
	}
	rv.log.Warn("operator: raid fail", "member", member)
	return raidError(rv.arr.Fail(member))
}

// RAIDRemove implements api.RAIDController.
func (n *Node) RAIDRemove(_ context.Context, volume string, member int) error {
	rv, err := n.raidVolumeOf(volume)
	if err != nil {
		return err
	}
	if err := rv.checkMember(member); err != nil {
		return err
	}
	rv.log.Warn("operator: raid remove", "member", member)
	rv.mu.Lock()
	err = rv.arr.Remove(member)
	rv.mu.Unlock()
	if err != nil {
		return raidError(err)
	}
	rv.saveMembers()
	return nil
}

// RAIDRemoveSpare implements api.RAIDController. The array zeroes the
// spare's superblock and the node records the paths without it, so it is not
// found again at the next start; one the configuration names in raid_spares
// is, as addConfiguredSpares adds it back: configured says so.
func (n *Node) RAIDRemoveSpare(_ context.Context, volume, path string) (bool, error) {
	rv, err := n.raidVolumeOf(volume)
	if err != nil {
		return false, err
	}
	rv.log.Warn("operator: raid remove spare", "spare", path)
	rv.mu.Lock()
	err = rv.arr.RemoveSpare(path)
	rv.mu.Unlock()
	// Recorded even on an error: the array drops the spare before it
	// zeroes the superblock.
	rv.saveMembers()
	if err != nil {
		return false, raidError(err)
	}
	configured := false
	if v := n.volumeByRAID(rv); v != nil {
		configured = slices.ContainsFunc(v.cfg.RAID.Spares, func(p string) bool { return filepath.Clean(p) == filepath.Clean(path) })
	}
	if configured {
		rv.log.Warn("raid: the removed spare is in raid_spares: it is added back at the next start unless it is taken out of the configuration", "spare", path)
	}
	return configured, nil
}

// prepareMember creates a missing member file of the volume's configured
// size, when one is configured.
func (n *Node) prepareMember(volume *volume, path string) error {
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) || volume.cfg.Size == 0 {
		return nil
	}
	f, err := raid.OpenFile(path, raid.FileOptions{CreateSize: volume.cfg.Size})
	if err != nil {
		return err
	}
	return f.Close()
}

// volumeByRAID returns the volume of rv.
func (n *Node) volumeByRAID(rv *raidVolume) *volume {
	for _, v := range n.volumes {
		if v.raid == rv {
			return v
		}
	}
	return nil
}

// RAIDAdd implements api.RAIDController.
func (n *Node) RAIDAdd(_ context.Context, volume, path string) (int, error) {
	rv, err := n.raidVolumeOf(volume)
	if err != nil {
		return -1, err
	}
	if err := n.prepareMember(n.volumeByRAID(rv), path); err != nil {
		return -1, raidError(err)
	}
	rv.mu.Lock()
	i, err := rv.arr.Add(path)
	rv.mu.Unlock()
	if err != nil {
		return -1, raidError(err)
	}
	if i < 0 {
		rv.log.Warn("operator: raid add: no empty slot: added as a spare", "path", path)
		rv.saveMembers()
		return -1, nil
	}
	rv.log.Warn("operator: raid add: rebuilding", "member", i, "path", path)
	rv.saveMembers()
	rv.rebuild(i)
	return i, nil
}

// RAIDReplace implements api.RAIDController.
func (n *Node) RAIDReplace(_ context.Context, volume string, member int, path string) error {
	rv, err := n.raidVolumeOf(volume)
	if err != nil {
		return err
	}
	if err := rv.checkMember(member); err != nil {
		return err
	}
	if err := n.prepareMember(n.volumeByRAID(rv), path); err != nil {
		return raidError(err)
	}
	rv.mu.Lock()
	err = rv.arr.Replace(member, path)
	rv.mu.Unlock()
	if err != nil {
		return raidError(err)
	}
	rv.log.Warn("operator: raid replace: rebuilding", "member", member, "path", path)
	rv.saveMembers()
	rv.rebuild(member)
	return nil
}

// RAIDScrub implements api.RAIDController.
func (n *Node) RAIDScrub(_ context.Context, volume string, repair bool) error {
	rv, err := n.raidVolumeOf(volume)
	if err != nil {
		return err
	}
	return rv.startScrub(repair, "operator: raid scrub", "repair", repair)
}

// startScrub starts a scrub in the background, logging msg with args, or
// refuses when a rebuild or scrub runs or the node is shutting down: the
// operator's (RAIDScrub) and the periodic one. A scrub that completes
// without error moves lastScrub on.
func (rv *raidVolume) startScrub(repair bool, msg string, args ...any) error {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	if p := rv.arr.Array().Progress(); rv.scrubbing || p.State == raid.OpRunning {
		return fmt.Errorf("%w: volume %q: a %s is running", api.ErrConflict, rv.name, p.Op)
	}
	if rv.ctx.Err() != nil {
		return fmt.Errorf("%w: volume %q: the node is shutting down", api.ErrConflict, rv.name)
	}
	rv.scrubbing, rv.repair = true, repair
	rv.log.Info(msg, args...)
	rv.wg.Add(1)
	go func() {
		defer rv.wg.Done()
		res, err := rv.arr.Array().Scrub(rv.ctx, raid.ScrubOptions{Repair: repair, Rate: rv.rate})
		sr := &api.RAIDScrubResult{Repair: repair, Stripes: res.Stripes, Skipped: res.Skipped,
			Mismatches: res.Mismatches, Repaired: res.Repaired, ReadErrors: res.ReadErrors}
		if err != nil {
			sr.Error = err.Error()
			rv.log.Error("raid: scrub stopped", "err", err, "stripes", res.Stripes, "mismatches", res.Mismatches)
		} else {
			rv.log.Info("raid: scrub done", "stripes", res.Stripes, "skipped", res.Skipped,
				"mismatches", res.Mismatches, "repaired", res.Repaired, "read_errors", res.ReadErrors)
			// Before the result is stored: a status showing the scrub
			// over shows when it completed too.
			rv.setLastScrub(time.Now())
		}
		rv.mu.Lock()
		rv.scrub, rv.scrubbing = sr, false
		rv.mu.Unlock()
	}()
	return nil
}
