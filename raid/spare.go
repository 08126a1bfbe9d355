//go:build linux

package raid

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/blockrep/blockrep/block"
)

// Hot spares, as md has them: a spare is a device attached to a DiskArray
// that holds no data, only the array's superblock with Role RoleSpare (so
// that Plan recognizes it, and refuses another array's), kept current with
// the members' (same events and member table). When a member turns Faulty
// (an I/O error, Fail, or missing at Open), a spare takes its slot the way
// Replace does (the member table records it Rebuilding in every
// superblock, the spare's own with its role) and is rebuilt in the
// background at the array's rebuild rate; a restart during that rebuild
// resumes it from its checkpoint, as for any replacement.
//
// The failure is noticed under the Array's locks (the OnFail hook), where
// Replace cannot be called, so a goroutine of the DiskArray (spareLoop)
// takes the spares in. It runs from Open to StopSpares (or Close), and
// takes a spare only while the array can still rebuild onto it (not
// HealthFailed), one spare per Faulty slot. The failed device leaves the
// array when its slot is taken: it is closed and its superblock left as it
// was, older than the array's, so that Plan prefers the spare for the role.

// spareRetry is how long spareLoop waits before trying again a spare that a
// running rebuild or scrub (ErrBusy) kept out.
var spareRetry = 200 * time.Millisecond

// spareDev is a hot spare: the open device and its member UUID.
type spareDev struct {
	f    *File
	uuid UUID
}

// spareWorker is the state of spareLoop.
type spareWorker struct {
	kick     chan struct{} // buffered: a member may have turned Faulty
	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once
}

// Spares returns the paths of the hot spares, in the order they are taken;
// never nil.
func (d *DiskArray) Spares() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sparePathsLocked()
}

func (d *DiskArray) sparePathsLocked() []string {
	out := make([]string, 0, len(d.spares))
	for _, sp := range d.spares {
		out = append(out, sp.f.Path())
	}
	return out
}

// MemberPaths returns the path of each member's device, in role order; ""
// for a slot without one (removed, or missing at Open).
func (d *DiskArray) MemberPaths() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.memberPathsLocked()
}

func (d *DiskArray) memberPathsLocked() []string {
	out := make([]string, len(d.files))
	for i, f := range d.files {
		if f != nil {
			out[i] = f.Path()
		}
	}
	return out
}

// samePath reports whether paths a and b name the same file: equal once
// cleaned, or the same inode (a symlink to a device, say).
func samePath(a, b string) bool {
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	return err == nil && os.SameFile(sa, sb)
}

// checkNew refuses path for op when it is a working member or a spare of
// the array already. The device of a Faulty member may come back (md's
// re-add). Called with d.memberMu.
func (d *DiskArray) checkNew(op, path string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, f := range d.files {
		if f != nil && d.arr.members[i].State() != Faulty && samePath(f.Path(), path) {
			return fmt.Errorf("raid: %s %s to %s: already member %d (%v)", op, path, d.name, i, d.arr.members[i].State())
		}
	}
	for _, sp := range d.spares {
		if samePath(sp.f.Path(), path) {
			return fmt.Errorf("raid: %s %s to %s: already a spare", op, path, d.name)
		}
	}
	return nil
}

// AddSpare adds the device at path as a hot spare (mdadm --add to an array
// with no empty slot): its superblock area is zeroed and the array's
// superblock written with Role RoleSpare. It is refused if it holds another
// array's superblock, is too small, or is already a member or a spare. If a
// member is Faulty, the spare is taken into its slot right away.
func (d *DiskArray) AddSpare(path string) error {
	d.memberMu.Lock()
	defer d.memberMu.Unlock()
	if err := d.checkNew("add spare", path); err != nil {
		return err
	}
	return d.addSpareLocked(path)
}

// addSpareLocked is AddSpare after checkNew. Called with d.memberMu.
func (d *DiskArray) addSpareLocked(path string) error {
	f, err := d.prepareDevice(path)
	if err != nil {
		return err
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		f.Close()
		return fmt.Errorf("raid: add spare %s to %s: the array is closed", path, d.name)
	}
	sp := spareDev{f: f, uuid: newUUID()}
	d.spares = append(d.spares, sp)
	err = d.persistLocked(d.state, true)
	kept := slices.Contains(d.spares, sp)
	if err != nil && kept {
		d.spares = slices.DeleteFunc(d.spares, func(x spareDev) bool { return x == sp })
		f.Close()
	}
	d.mu.Unlock()
	if err != nil {
		return fmt.Errorf("raid: add spare %s to %s: %w", path, d.name, err)
	}
	if !kept {
		return fmt.Errorf("raid: add spare %s to %s: writing its superblock failed (see the log)", path, d.name)
	}
	d.log.Info("raid: spare added", "array", d.name, "spare", path)
	d.kickSpares()
	return nil
}

// RemoveSpare takes the hot spare at path out of the array (mdadm --remove
// of a spare). Its superblock is zeroed too, unlike mdadm's, so that it does
// not come back as a spare from a list of candidates at the next Open.
func (d *DiskArray) RemoveSpare(path string) error {
	d.memberMu.Lock()
	defer d.memberMu.Unlock()
	d.mu.Lock()
	j := slices.IndexFunc(d.spares, func(sp spareDev) bool { return samePath(sp.f.Path(), path) })
	if j < 0 {
		spares := d.sparePathsLocked()
		d.mu.Unlock()
		return fmt.Errorf("raid: remove spare %s from %s: not a spare (spares: %q)", path, d.name, spares)
	}
	sp := d.spares[j]
	d.spares = slices.Delete(d.spares, j, j+1)
	d.mu.Unlock()
	err := sp.f.WriteZeroes(0, SuperblockSize, block.ZeroFlags{})
	if err == nil {
		err = sp.f.Flush()
	}
	if cerr := sp.f.Close(); err == nil {
		err = cerr
	}
	d.log.Info("raid: spare removed", "array", d.name, "spare", path)
	if err != nil {
		return fmt.Errorf("raid: remove spare %s from %s: clearing its superblock: %w", path, d.name, err)
	}
	return nil
}

// closeSpares closes the spares' devices.
func (d *DiskArray) closeSpares() {
	d.mu.Lock()
	spares := d.spares
	d.spares = nil
	d.mu.Unlock()
	for _, sp := range spares {
		sp.f.Close()
	}
}

// kickSpares wakes spareLoop; it never blocks, so it may be called under
// any lock.
func (d *DiskArray) kickSpares() {
	select {
	case d.spareBg.kick <- struct{}{}:
	default:
	}
}

func (d *DiskArray) startSpares() {
	ctx, cancel := context.WithCancel(context.Background())
	d.spareBg.cancel, d.spareBg.done = cancel, make(chan struct{})
	go d.spareLoop(ctx)
	d.kickSpares() // a member that failed its resync at Open
}

// StopSpares stops taking spares in for failed members and stops the
// rebuild onto one that runs (its checkpoint is kept, so it resumes at the
// next Open); when it returns no spare is being taken in. A daemon calls
// it when it starts shutting down; Close calls it too.
func (d *DiskArray) StopSpares() {
	d.spareBg.stopOnce.Do(func() {
		if d.spareBg.cancel != nil {
			d.spareBg.cancel()
			<-d.spareBg.done
		}
	})
}

// spareLoop takes spares into the slots of Faulty members when kicked and
// rebuilds them one at a time, retrying what a running rebuild or scrub
// kept out.
func (d *DiskArray) spareLoop(ctx context.Context) {
	defer close(d.spareBg.done)
	var (
		pending []int      // slots taken by a spare, rebuild not yet run
		running chan error // the rebuild running, nil if none
		slot    int        // its slot
		wait    bool       // a rebuild was refused as busy: retry after spareRetry
	)
	for {
		took, busy := d.takeSpares(ctx)
		pending = append(pending, took...)
		if len(took) > 0 && d.onChange != nil {
			d.onChange(d.MemberPaths(), d.Spares())
		}
		if running == nil && len(pending) > 0 && !wait && ctx.Err() == nil {
			slot, pending = pending[0], pending[1:]
			running = make(chan error, 1)
			go func(i int, done chan<- error) {
				done <- d.Rebuild(ctx, i, RebuildOptions{Rate: d.rate, Clock: d.spareClock})
			}(slot, running)
		}
		var retry <-chan time.Time
		if busy || wait {
			retry = time.After(spareRetry)
		}
		select {
		case <-ctx.Done():
			if running != nil {
				<-running
			}
			return
		case <-d.spareBg.kick:
		case <-retry:
			wait = false
		case err := <-running:
			running = nil
			switch {
			case err == nil:
				d.log.Info("raid: spare rebuilt into the array", "array", d.name, "member", slot)
			case ctx.Err() != nil:
				return
			case errors.Is(err, ErrBusy):
				// Another rebuild or scrub runs: try again later, first.
				pending = append([]int{slot}, pending...)
				wait = true
			default:
				d.log.Error("raid: rebuild onto a spare", "array", d.name, "member", slot, "err", err)
			}
		}
	}
}

// takeSpares puts a spare in the slot of every Faulty member while spares
// last and the array can rebuild; it returns the slots taken, and busy when
// a slot could not be taken yet because its old rebuild is still stopping.
func (d *DiskArray) takeSpares(ctx context.Context) (took []int, busy bool) {
	d.memberMu.Lock()
	defer d.memberMu.Unlock()
	for i, m := range d.arr.members {
		if ctx.Err() != nil || d.arr.closed.Load() {
			return took, false
		}
		if m.State() != Faulty {
			continue
		}
		if d.arr.health() == HealthFailed {
			d.log.Error("raid: not taking a spare: the array has failed beyond what it can rebuild", "array", d.name, "faulty", d.arr.faultyMembers())
			return took, false
		}
		d.mu.Lock()
		if len(d.spares) == 0 || d.closed {
			d.mu.Unlock()
			return took, busy
		}
		sp := d.spares[0]
		d.spares = d.spares[1:]
		d.mu.Unlock()
		if err := d.installMember(i, sp.f, sp.uuid); err != nil {
			d.mu.Lock()
			d.spares = append([]spareDev{sp}, d.spares...)
			d.mu.Unlock()
			if errors.Is(err, ErrBusy) {
				busy = true
				continue
			}
			d.log.Error("raid: taking a spare into a faulty member's slot", "array", d.name, "member", i, "spare", sp.f.Path(), "err", err)
			continue
		}
		d.log.Warn("raid: spare taken into a faulty member's slot, to rebuild", "array", d.name, "member", i, "spare", sp.f.Path())
		took = append(took, i)
		if err := d.persist(d.currentState(), true); err != nil {
			d.log.Error("raid: recording a spare taken into a slot", "array", d.name, "member", i, "err", err)
		}
	}
	return took, busy
}
