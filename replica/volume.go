package replica

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockrep/blockrep/block"
	"github.com/blockrep/blockrep/internal/bufpool"
)

// MaxPeers bounds the peers of one volume: per-write bookkeeping keeps one
// bit per peer.
const MaxPeers = 31

// VolumeConfig is everything a replicated Volume needs.
type VolumeConfig struct {
	// Name is the volume name (the NBD export and meta key).
	Name string
	// ID identifies the volume on the wire; every node derives the same
	// one (VolumeID).
	ID [16]byte
	// Store is the local data; State its durable replica metadata.
	Store block.Device
	State *Store
	// Local is this node's name; Peers the other data nodes, in order.
	Local string
	Peers []PeerConfig
	// Role is the role the volume takes when it opens.
	Role Role
	// Protocol is 'A', 'B' or 'C'.
	Protocol byte
	// SplitBrain is the automatic split-brain policy; both nodes must use
	// the same one.
	SplitBrain SplitBrainPolicy
	// ContinueAlone lets a primary acknowledge writes that an UpToDate peer
	// did not get (unsafe without quorum: see the configuration docs).
	// Standalone mode only: it cannot be combined with an Authority.
	ContinueAlone bool
	// Authority, when set, is the cluster that hands out epochs and records
	// each replica's disk state (see the package's "A replica under a
	// cluster"): the volume becomes primary only through Promote, a peer
	// leaves the UpToDate set only through a commit (writes it misses wait
	// for that commit instead of failing), and the primary serves I/O only
	// while its lease (SetLease) lasts. Nil: the standalone mode.
	Authority Authority
	// Fence is what a primary with an Authority does with I/O once its
	// lease ran out: FenceSuspend (the default) holds it, FenceError fails
	// it with ErrFenced.
	Fence FenceMode
	// OnIOError is what the volume does when its local store fails a
	// write or a flush (see "A failed local disk"): IOErrorDetach (the
	// default) or IOErrorPassOn.
	OnIOError IOErrorPolicy
	// DataIntegrity checksums every data frame's payload.
	DataIntegrity bool
	// BitmapBlockSize, ALExtents and ALExtentSize: the bitmap and activity
	// log geometry.
	BitmapBlockSize int
	ALExtents       int
	ALExtentSize    int64
	// Timeout is how long a silent peer link lives.
	Timeout time.Duration
	// ResyncRate caps resync traffic in bytes per second; 0 means no cap.
	ResyncRate int64
	// ResyncSaveInterval is how often a running resync persists its
	// progress; 0 selects DefaultResyncSaveInterval.
	ResyncSaveInterval time.Duration
	// Logger receives the volume's events.
	Logger *slog.Logger
}

// PeerConfig names one peer.
type PeerConfig struct {
	Name    string
	Address string
}

// Volume is one replicated volume on one node: a block.Device that, as
// primary, writes locally and to every connected peer before acknowledging
// (per the protocol), and as secondary applies what its primary sends. It
// keeps the activity log, one out-of-sync bitmap per peer and the
// generation identifiers, and runs resyncs and online verifies.
type Volume struct {
	cfg   VolumeConfig
	log   *slog.Logger
	store block.Device
	state *Store
	size  int64
	pool  bufpool.Pool

	// mu guards the bookkeeping below and every peer's state; cond is
	// broadcast whenever something a waiter may be waiting for changed
	// (a range released, an activity-log change committed or ended, a
	// connect exchange finished, a role change).
	mu   sync.Mutex
	cond *sync.Cond

	role         Role
	disk         DiskState
	gens         Generations // Bitmap unused: it is per peer
	epoch        uint64
	primarySince uint64
	crashed      bool // opened after a crash as primary; cleared by a resync
	al           *ActivityLog
	alQueue      []*ALChange // made by Begin, not yet durable
	alSeqDone    uint64      // Seq of the newest durable change
	alCompacted  uint64      // Seq of the last snapshot
	ranges       rangeSet
	nextID       uint64
	exchanging   int // connect exchanges in progress: new writes wait
	peers        []*peer
	closing      bool
	lastAppIO    atomic.Int64 // unix nanos of the last application write
	// failed is the error that made the volume detach its local disk
	// ("" while attached); it is set once and never cleared.
	failed string

	// With an Authority (auth, set once at Open): leaseUntil is the end
	// of the lease (zero: none); leaseTimer wakes waiters when it runs
	// out; promoting is the epoch of a Promote under way (links from
	// older primaries are refused meanwhile); peerWaits and fenceWaits
	// count operations waiting for a reporter's commit and for a lease.
	auth       Authority
	leaseUntil time.Time
	leaseTimer *time.Timer
	promoting  uint64
	peerWaits  int
	fenceWaits int

	// alMu serialises persisting activity-log changes, which must reach
	// the metadata in Seq order.
	alMu sync.Mutex

	// ctx ends the volume's goroutines on Close.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ block.Device = (*Volume)(nil)

// Open loads the volume's replica state, repairs what a crash as primary
// left (the activity log goes into every peer's bitmap) and takes the
// configured role.
func Open(cfg VolumeConfig) (*Volume, error) {
	if len(cfg.Peers) > MaxPeers {
		return nil, fmt.Errorf("replica: volume %q: %d peers, at most %d", cfg.Name, len(cfg.Peers), MaxPeers)
	}
	if cfg.Authority != nil && cfg.ContinueAlone {
		return nil, fmt.Errorf("replica: volume %q: continue_alone and a cluster Authority exclude each other: with a cluster a peer is outdated only through a commit", cfg.Name)
	}
	if cfg.Fence > FenceError {
		return nil, fmt.Errorf("replica: volume %q: unknown fence mode %v", cfg.Name, cfg.Fence)
	}
	if cfg.OnIOError > IOErrorPassOn {
		return nil, fmt.Errorf("replica: volume %q: unknown on_io_error policy %v", cfg.Name, cfg.OnIOError)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Protocol == 0 {
		cfg.Protocol = 'C'
	}
	if cfg.BitmapBlockSize == 0 {
		cfg.BitmapBlockSize = DefaultBlockSize
	}
	if cfg.ALExtents == 0 {
		cfg.ALExtents = DefaultALCapacity
	}
	if cfg.ALExtentSize == 0 {
		cfg.ALExtentSize = DefaultExtentSize
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.ResyncSaveInterval == 0 {
		cfg.ResyncSaveInterval = DefaultResyncSaveInterval
	}
	v := &Volume{
		cfg:   cfg,
		log:   cfg.Logger.With("volume", cfg.Name),
		store: cfg.Store,
		state: cfg.State,
		size:  cfg.Store.Size(),
		auth:  cfg.Authority,
	}
	v.cond = sync.NewCond(&v.mu)
	v.ctx, v.cancel = context.WithCancel(context.Background())

	gens, disk, ok, err := v.state.LoadGenerations()
	if err != nil {
		return nil, err
	}
	if !ok {
		disk = Inconsistent
	}
	v.gens, v.disk = gens, disk
	rr, err := v.state.LoadRole()
	if err != nil {
		return nil, err
	}
	v.epoch, v.primarySince, v.crashed = rr.Epoch, rr.PrimarySince, rr.Primary
	alLost := false
	if v.al, err = v.state.LoadActivityLog(v.size, cfg.ALExtentSize, cfg.ALExtents); err != nil {
		// The hot set is unknown: only a full resync is safe. Start a new
		// log and mark every peer's bitmap full below.
		v.log.Error("activity log unreadable: every peer needs a full resync", "err", err)
		if v.al, err = NewActivityLog(v.size, cfg.ALExtentSize, cfg.ALExtents); err != nil {
			return nil, err
		}
		if err := v.state.CompactAL(v.al); err != nil {
			return nil, err
		}
		v.crashed = true
		alLost = true
	}
	v.alSeqDone, v.alCompacted = v.al.Seq(), v.al.Seq()
	for _, pc := range cfg.Peers {
		p, err := v.openPeer(pc)
		if err != nil {
			return nil, err
		}
		v.peers = append(v.peers, p)
	}
	if v.crashed {
		hot := v.al.Hot()
		v.log.Warn("volume was primary when the node stopped without a clean shutdown: its activity-log extents are out of sync with every peer",
			"extents", len(hot), "bytes", int64(len(hot))*cfg.ALExtentSize)
		for _, ext := range hot {
			off, n := v.al.ExtentRange(ext)
			for _, p := range v.peers {
				p.bitmap.SetRange(off, n)
			}
		}
	}
	for _, p := range v.peers {
		if alLost {
			p.bitmap.SetRange(0, v.size)
		}
		if err := v.state.SaveBitmap(p.name, p.bitmap); err != nil {
			return nil, err
		}
	}
	switch {
	case cfg.Role == Primary && v.auth != nil:
		v.log.Warn("configured role primary ignored: with a cluster the volume becomes primary when the cluster promotes it")
	case cfg.Role == Primary:
		if err := v.becomePrimary(false, v.epoch+1); err != nil {
			v.log.Error("configured role primary refused; staying secondary", "err", err)
		}
	}
	if v.auth != nil {
		for _, p := range v.peers {
			v.wg.Go(func() { v.reporter(p) })
		}
	}
	v.log.Info("replica opened", "role", v.role, "disk", v.disk, "gen", v.gens.String(), "epoch", v.epoch, "crashed_as_primary", v.crashed)
	return v, nil
}

// VolumeID derives the identifier every node uses for a volume on the wire
// from the cluster and volume names, so nodes agree without coordination.
func VolumeID(cluster, volume string) [16]byte {
	var id [16]byte
	sum := sha256Sum([]byte("blockrep volume\x00" + cluster + "\x00" + volume))
	copy(id[:], sum[:16])
	return id
}

// newGenID draws a fresh random generation identifier.
func newGenID() GenID {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic(err) // crypto/rand never fails on Linux
		}
		if g := GenID(binary.LittleEndian.Uint64(b[:])); g != 0 {
			return g
		}
	}
}

// Size is the volume size in bytes.
func (v *Volume) Size() int64 { return v.size }

// Name is the volume name.
func (v *Volume) Name() string { return v.cfg.Name }

// ID is the volume's wire identifier.
func (v *Volume) ID() [16]byte { return v.cfg.ID }

// Role returns the current role.
func (v *Volume) Role() Role {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.role
}

// persistRole writes the role record. Caller holds v.mu.
func (v *Volume) persistRole() error {
	return v.state.SaveRole(RoleRecord{Primary: v.role == Primary || v.crashed, Epoch: v.epoch, PrimarySince: v.primarySince})
}

// becomePrimary makes the volume primary at epoch: the next of its own
// count (SetRole) or the cluster's (Promote). Caller holds v.mu or is Open.
// force promotes an Outdated disk (an Inconsistent one never).
func (v *Volume) becomePrimary(force bool, epoch uint64) error {
	if v.role == Primary {
		return nil
	}
	for _, p := range v.peers {
		if p.link != nil && p.peerRole == Primary {
			return fmt.Errorf("%w: peer %s is primary; demote it first (one primary at a time)", ErrState, p.name)
		}
		if p.conn == SyncTarget {
			return fmt.Errorf("%w: a resync from %s into this node is running; its disk is not complete", ErrState, p.name)
		}
	}
	fresh := v.gens.Current == 0 && v.gens.History == [HistoryLen]GenID{}
	switch {
	case v.failed != "":
		return fmt.Errorf("%w: the local disk failed (%s): a Diskless replica cannot be primary", ErrState, v.failed)
	case fresh:
		// A volume that never held data: its contents become the
		// initial data of the cluster, as drbdadm primary --force does
		// on first setup.
	case v.disk == UpToDate:
	case v.disk == Outdated && force:
		v.log.Warn("forcing an Outdated disk to primary: writes its peers had and this node missed are lost")
	case v.disk == Outdated:
		return fmt.Errorf("%w: disk is Outdated (it misses writes a peer acknowledged); use --force to promote it anyway and lose them", ErrState)
	default:
		return fmt.Errorf("%w: disk is %v: it holds no consistent data and cannot be primary", ErrState, v.disk)
	}
	prev := v.gens
	// Peers connected in sync (or being synced from here) get this node's
	// writes from now on. A peer the operator disconnected will not get
	// them: promoting with it cut off is the operator's decision that it
	// is Outdated (with an Authority, the reporter's to commit).
	for _, p := range v.peers {
		if p.standalone && p.link == nil && p.knownDisk == UpToDate && v.auth == nil {
			p.knownDisk = Outdated
			v.log.Warn("promoting with a disconnected peer: it is Outdated from here", "peer", p.name)
		}
		if p.link != nil && (p.conn == Connected || p.conn == SyncSource) {
			p.replicating = true
			if p.conn == Connected && p.peerDisk >= Outdated {
				p.knownDisk = UpToDate
			}
		}
	}
	if fresh {
		v.gens.Current = newGenID()
		v.disk = UpToDate
	}
	// A peer that is not connected in sync will miss what this node now
	// writes: start a new generation now so the peer's return is a
	// bitmap resync, not a split brain.
	needNew := false
	for _, p := range v.peers {
		if !p.inSyncLink() && p.bitmapGen == 0 {
			needNew = true
		}
	}
	if needNew && !fresh {
		v.newCurrentLocked()
	}
	prevEpoch, prevSince := v.epoch, v.primarySince
	v.epoch = epoch
	v.primarySince = v.epoch
	v.role = Primary
	if err := v.persistAll(); err != nil {
		v.role, v.gens = Secondary, prev
		v.epoch, v.primarySince = prevEpoch, prevSince
		for _, p := range v.peers {
			p.replicating = false
		}
		return err
	}
	for _, p := range v.peers {
		p.deposed = false
	}
	v.log.Info("role primary", "epoch", v.epoch, "gen", v.gens.Current, "disk", v.disk)
	v.broadcastStateLocked()
	v.nudgeReportersLocked()
	v.cond.Broadcast()
	return nil
}

// newCurrentLocked starts a new data generation: every peer that does not
// receive this node's writes in sync starts tracking in its bitmap from the
// generation it holds. Caller holds v.mu and persists afterwards.
func (v *Volume) newCurrentLocked() {
	old := v.gens.Current
	fresh := newGenID()
	copy(v.gens.History[1:], v.gens.History[:HistoryLen-1])
	v.gens.History[0] = old
	v.gens.Current = fresh
	for _, p := range v.peers {
		if !p.inSyncLink() && p.bitmapGen == 0 {
			p.bitmapGen = old
		}
	}
	v.log.Info("new data generation", "gen", fresh, "previous", old)
}

// persistAll writes generations, disk state, role and peer records. Caller
// holds v.mu.
func (v *Volume) persistAll() error {
	if err := v.state.SaveGenerations(v.gens, v.persistedDisk()); err != nil {
		return err
	}
	if err := v.persistRole(); err != nil {
		return err
	}
	for _, p := range v.peers {
		if err := v.state.SavePeer(p.name, PeerRecord{BitmapGen: p.bitmapGen, Disk: p.knownDisk}); err != nil {
			return err
		}
	}
	return nil
}

// SetRole changes the role: primary (force promotes an Outdated disk) at
// the next epoch of the node's own count, or secondary (Demote(false)). A
// demotion waits for writes in flight and flushes. With an Authority the
// cluster hands out epochs: promotion is Promote's, SetRole(Primary) is
// refused.
func (v *Volume) SetRole(r Role, force bool) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if r == Primary {
		if v.auth != nil {
			if v.role == Primary {
				return nil
			}
			return fmt.Errorf("%w: volume %q is run by the cluster: it becomes primary when the cluster promotes it (at the cluster's epoch)", ErrState, v.cfg.Name)
		}
		return v.becomePrimary(force, v.epoch+1)
	}
	return v.demoteLocked(false)
}

// demoteLocked is SetRole(Secondary) and Demote. Caller holds v.mu.
func (v *Volume) demoteLocked(deposed bool) error {
	if v.role == Secondary {
		if deposed {
			v.markDeposedLocked()
		}
		return nil
	}
	v.role = Secondary // new writes are refused from here on
	// Operations waiting for a lease or a reporter's commit end now.
	v.cond.Broadcast()
	for v.ranges.len() > 0 {
		v.cond.Wait()
	}
	for _, p := range v.peers {
		p.replicating = false
	}
	if v.failed == "" {
		v.mu.Unlock()
		err := v.store.Flush()
		v.mu.Lock()
		// A failed disk has nothing left to make durable: the demotion
		// goes on once it is detached.
		if err != nil && !v.localErrorLocked(err) {
			v.role = Primary
			return fmt.Errorf("demote: flush: %w", err)
		}
	}
	if err := v.saveBitmapsLocked(); err != nil {
		v.role = Primary
		return err
	}
	v.crashed = false
	v.leaseUntil = time.Time{}
	if err := v.persistRole(); err != nil {
		return err
	}
	if deposed {
		v.markDeposedLocked()
	}
	v.log.Info("role secondary", "epoch", v.epoch, "deposed", deposed)
	v.broadcastStateLocked()
	return nil
}

// saveBitmapsLocked persists every peer's bitmap (dirty pages only).
func (v *Volume) saveBitmapsLocked() error {
	for _, p := range v.peers {
		if err := v.state.SaveBitmap(p.name, p.bitmap); err != nil {
			return err
		}
	}
	return nil
}

// Invalidate throws away the local data's claim to be consistent: the disk
// becomes Inconsistent and the next connect copies everything from a peer.
func (v *Volume) Invalidate() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.role == Primary {
		return fmt.Errorf("%w: invalidate needs a secondary (this node is primary)", ErrState)
	}
	if v.failed != "" {
		return fmt.Errorf("%w: the local disk failed (%s): it is resynced in full after a restart anyway", ErrState, v.failed)
	}
	for _, p := range v.peers {
		if p.conn == SyncSource || p.conn == SyncTarget {
			return fmt.Errorf("%w: a resync with %s is running", ErrState, p.name)
		}
	}
	v.gens = v.gens.Invalidated()
	v.disk = Inconsistent
	if err := v.persistAll(); err != nil {
		return err
	}
	v.log.Warn("local data invalidated: a full resync from a peer follows")
	for _, p := range v.peers {
		if p.link != nil {
			p.link.fail(errors.New("invalidated by the operator: reconnecting for a full resync"))
		}
	}
	return nil
}

// Close stops every link and background job, and records a clean shutdown:
// bitmaps saved, and a primary no longer marked as possibly crashed. The
// caller has stopped I/O (drained the NBD server) and flushes the store.
func (v *Volume) Close() error {
	v.mu.Lock()
	v.closing = true
	v.cond.Broadcast() // operations waiting for a lease or a commit end
	if v.leaseTimer != nil {
		v.leaseTimer.Stop()
		v.leaseTimer = nil
	}
	leaving := v.role == Secondary
	if leaving && v.disk == UpToDate && v.anyPrimaryPeerLocked() {
		// A secondary that leaves its primary marks itself Outdated
		// first, so that the primary may go on without it (invariant 2:
		// the peer itself recorded that it misses what follows).
		v.disk = Outdated
		if err := v.state.SaveGenerations(v.gens, v.disk); err != nil {
			v.log.Error("saving Outdated before leaving", "err", err)
		}
	}
	var links []*link
	for _, p := range v.peers {
		if p.link != nil {
			p.link.sendState(true)
			links = append(links, p.link)
		}
	}
	for v.ranges.len() > 0 {
		v.cond.Wait()
	}
	v.mu.Unlock()
	for _, l := range links {
		l.drain(time.Second)
	}
	v.cancel()
	for _, p := range v.peers {
		p.stopLink(errors.New("volume closing"))
	}
	v.wg.Wait()
	var err error
	if v.DiskFailed() == "" {
		err = v.store.Flush()
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if err == nil {
		err = v.saveBitmapsLocked()
	}
	if err == nil && v.role == Primary {
		v.role = Secondary
		v.crashed = false
		err = v.persistRole()
	}
	return err
}

func (v *Volume) anyPrimaryPeerLocked() bool {
	for _, p := range v.peers {
		if p.link != nil && p.peerRole == Primary {
			return true
		}
	}
	return false
}

// ReadAt reads from the local store. A disk without consistent data (a
// resync target) refuses reads rather than serve a mix of old and new. A
// primary run by a cluster reads only while its lease lasts (see SetLease
// and VolumeConfig.Fence).
func (v *Volume) ReadAt(p []byte, off int64) error {
	v.mu.Lock()
	var err error
	if v.failed != "" {
		// Before the fence: a failed disk answers at once, lease or not.
		err = v.errDiskFailed()
	} else {
		err = v.fenceLocked()
	}
	d := v.disk
	v.mu.Unlock()
	if err != nil {
		return err
	}
	if d == Inconsistent {
		return fmt.Errorf("volume %q: disk is Inconsistent (resync running or needed): no consistent data to read", v.cfg.Name)
	}
	return v.store.ReadAt(p, off)
}

// Cache passes the hint to the store.
func (v *Volume) Cache(off, length int64) error { return v.store.Cache(off, length) }

// Extents reports the local store's allocation.
func (v *Volume) Extents(off, length int64, fn func(block.Extent) bool) error {
	return v.store.Extents(off, length, fn)
}
