package replica

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/blockrep/blockrep/block"
)

// A failed local disk
//
// A write, trim, zeroes or flush that the local store fails for a reason
// that is the disk's (not a bad request, not a full file system) is a
// failed disk. With the default policy, IOErrorDetach (DRBD's on-io-error
// detach), the volume stops using the store at once and for good, until
// the node restarts:
//
//   - the operation that failed is not acknowledged (its error goes to the
//     caller), nor is any later one: reads, writes and flushes fail with
//     ErrDiskFailed (EIO to an NBD client);
//   - the disk state becomes Diskless, and what meta records is
//     Inconsistent with no current generation, written before the failing
//     operation returns: a restarted node never comes back UpToDate from
//     the disk that failed, it gets a full resync from a peer;
//   - every peer is told, as in a clean leave, that this replica is
//     Diskless (so a standalone primary goes on without a failed secondary,
//     and a standalone secondary, promoted by the operator, goes on without
//     the failed primary), and the links go down and stay down: a Diskless
//     replica must not be counted in sync;
//   - with an Authority the member reports the failure in its heartbeats
//     (Local); the arbiter records the replica Diskless through Raft and,
//     for a primary, ends its term and promotes an UpToDate peer at the
//     next epoch. The cluster demotes the failed primary, whose demotion
//     skips the flush of the failed store. Without an Authority the failed
//     primary stays primary and refuses I/O; the operator promotes a peer
//     (blockctl primary there).
//
// Writes acknowledged before the failure are on every UpToDate peer (the
// protocol's rule), so the peer promoted next holds them. A write in
// flight whose local part succeeded before another failed is acknowledged
// per the protocol as usual: the peers have it.
//
// IOErrorPassOn keeps the old behaviour: the error goes to the caller and
// the disk stays attached (for a store that recovers from transient
// errors by itself).

// IOErrorPolicy is what a replica does when its local store fails.
type IOErrorPolicy uint8

const (
	// IOErrorDetach detaches a failed disk (the default; see above).
	IOErrorDetach IOErrorPolicy = iota
	// IOErrorPassOn passes the error to the caller and keeps the disk.
	IOErrorPassOn
)

var ioErrorPolicyNames = [...]string{IOErrorDetach: "detach", IOErrorPassOn: "pass_on"}

// String returns the policy's configuration name.
func (p IOErrorPolicy) String() string {
	if int(p) < len(ioErrorPolicyNames) {
		return ioErrorPolicyNames[p]
	}
	return "IOErrorPolicy(" + strconv.Itoa(int(p)) + ")"
}

// ParseIOErrorPolicy returns the policy named s: exactly "detach" or
// "pass_on".
func ParseIOErrorPolicy(s string) (IOErrorPolicy, error) {
	for p, name := range ioErrorPolicyNames {
		if s == name {
			return IOErrorPolicy(p), nil
		}
	}
	return IOErrorDetach, fmt.Errorf("unknown on_io_error %q (allowed: detach, pass_on)", s)
}

// IOErrorAction is what DecideIOError says to do about one error of the
// local store.
type IOErrorAction uint8

const (
	// IOErrorNone: no error.
	IOErrorNone IOErrorAction = iota
	// IOErrorRequest: the request was at fault, not the disk (out of
	// range, a fast zero the store cannot do fast, a read-only store, a
	// store closed at shutdown). The error goes to the caller.
	IOErrorRequest
	// IOErrorNoSpace: the file system under the store is full (ENOSPC,
	// EDQUOT). The disk works, and the same write may succeed once space
	// is freed: the error goes to the caller, the disk stays.
	IOErrorNoSpace
	// IOErrorReport: the disk failed and the policy is IOErrorPassOn: the
	// error goes to the caller, the disk stays.
	IOErrorReport
	// IOErrorDetachDisk: the disk failed; detach it (see above).
	IOErrorDetachDisk
)

var ioErrorActionNames = [...]string{
	IOErrorNone: "none", IOErrorRequest: "request", IOErrorNoSpace: "no-space",
	IOErrorReport: "report", IOErrorDetachDisk: "detach",
}

// String names the action, for logs and tests.
func (a IOErrorAction) String() string {
	if int(a) < len(ioErrorActionNames) {
		return ioErrorActionNames[a]
	}
	return "IOErrorAction(" + strconv.Itoa(int(a)) + ")"
}

// DecideIOError decides what an error of the local store on a write, trim,
// zeroes or flush means under policy. It is pure: the volume carries the
// action out.
func DecideIOError(policy IOErrorPolicy, err error) IOErrorAction {
	switch {
	case err == nil:
		return IOErrorNone
	case errors.Is(err, block.ErrOutOfRange), errors.Is(err, block.ErrNotFast),
		errors.Is(err, block.ErrReadOnly), errors.Is(err, os.ErrClosed),
		errors.Is(err, syscall.EINVAL), errors.Is(err, syscall.EOPNOTSUPP):
		return IOErrorRequest
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return IOErrorNoSpace
	case policy == IOErrorPassOn:
		return IOErrorReport
	}
	return IOErrorDetachDisk
}

// ErrDiskFailed: the volume's local disk failed and was detached; the
// replica serves no I/O until the node restarts (see "A failed local
// disk").
var ErrDiskFailed = errors.New("replica: local disk failed and was detached")

// errDiskFailed is what I/O gets once the disk was detached. Caller holds
// v.mu.
func (v *Volume) errDiskFailed() error {
	return fmt.Errorf("%w: volume %q refuses I/O (%s)", ErrDiskFailed, v.cfg.Name, v.failed)
}

// DiskFailed returns the error that made the volume detach its disk, or ""
// while the disk is attached.
func (v *Volume) DiskFailed() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.failed
}

// localError acts on an error of the local store (DecideIOError) and
// reports whether the disk is detached now. Caller holds v.mu.
func (v *Volume) localErrorLocked(err error) bool {
	switch DecideIOError(v.cfg.OnIOError, err) {
	case IOErrorDetachDisk:
		v.detachLocked(err)
	case IOErrorReport:
		v.log.Warn("local store error passed on (on_io_error = pass_on): the disk stays attached", "err", err)
	}
	return v.failed != ""
}

// localError is localErrorLocked for a caller without v.mu.
func (v *Volume) localError(err error) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.localErrorLocked(err)
}

// detachDrain bounds how long a detaching volume waits for its last State
// to reach each peer before it cuts the link.
const detachDrain = time.Second

// detachLocked stops using the local store: see "A failed local disk".
// Caller holds v.mu.
func (v *Volume) detachLocked(cause error) {
	if v.failed != "" {
		return
	}
	v.failed = cause.Error()
	v.disk = Diskless
	if g := v.gens.Current; g != 0 {
		v.gens.History = pushHistory(v.gens.History, g)
	}
	v.gens.Current = 0
	// Before the failing operation returns: after a restart the store's
	// contents are not trusted (persistAll records Diskless as
	// Inconsistent).
	perr := v.persistAll()
	v.log.Error("local disk failed: detached; this replica refuses I/O and holds no data the cluster relies on until a restart and a full resync",
		"err", cause, "role", v.role, "epoch", v.epoch, "on_io_error", v.cfg.OnIOError.String())
	if perr != nil {
		v.log.Error("cannot record the failed disk in the metadata: a restart may trust the failed store", "err", perr)
	}
	var links []*link
	for _, p := range v.peers {
		p.standalone = true
		p.lastErr = "local disk failed: " + v.failed
		p.replicating = false
		if p.link != nil {
			p.link.sendState(true)
			links = append(links, p.link)
		}
	}
	fail := func(l *link) { l.fail(fmt.Errorf("local disk failed: %w", cause)) }
	if v.closing {
		for _, l := range links {
			fail(l)
		}
	} else {
		// The peers learn that this replica is Diskless before the link
		// goes: a drain must not run under v.mu.
		v.wg.Go(func() {
			for _, l := range links {
				l.drain(detachDrain)
				fail(l)
			}
		})
	}
	v.cond.Broadcast()
}

// persistedDisk is the disk state meta records: a detached disk is
// Inconsistent there, so that it is resynced in full after a restart.
// Caller holds v.mu.
func (v *Volume) persistedDisk() DiskState {
	if v.disk == Diskless {
		return Inconsistent
	}
	return v.disk
}
