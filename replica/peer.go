package replica

import (
	"errors"
	"fmt"
	"github.com/blockrep/blockrep/replica/wire"
	"sync/atomic"
	"time"
)

// peer is one configured peer of a volume: its bitmap and what this node
// knows about it, and the current link if one is up. Fields without a note
// are guarded by the volume's mutex.
type peer struct {
	v    *Volume
	idx  int
	name string
	addr string

	bitmap    *Bitmap
	bitmapGen GenID     // persisted: generation the bitmap counts from
	knownDisk DiskState // persisted: the peer's disk as last known

	conn          ConnState
	since         time.Time
	lastErr       string
	decision      string
	peerRole      Role
	heard         bool // peerRole and peerDisk are from the peer
	peerDisk      DiskState
	link          *link
	replicating   bool // application writes are queued on link
	standalone    bool // do not connect until the operator says so
	discardMyData bool // for the next connect only
	// deposed: the cluster deposed this node as primary; its next connect
	// to a primary discards its own unreplicated writes (Demote).
	deposed bool
	resync  *Progress
	verify  *Progress
	// With an Authority: the peer's disk state as last committed, and the
	// report in flight (reporting, reportingDisk).
	cluster       clusterRecord
	reporting     bool
	reportingDisk DiskState

	// wake nudges the dialer out of its backoff (connect command); report
	// nudges the peer's reporter (with an Authority).
	wake   chan struct{}
	report chan struct{}

	bytesSent, bytesRecv   atomic.Int64
	resyncSent, resyncRecv atomic.Int64
}

// openPeer loads a peer's durable state.
func (v *Volume) openPeer(pc PeerConfig) (*peer, error) {
	p := &peer{v: v, idx: len(v.peers), name: pc.Name, addr: pc.Address, conn: Connecting, since: time.Now(), wake: make(chan struct{}, 1), report: make(chan struct{}, 1)}
	rec, err := v.state.LoadPeer(pc.Name)
	switch {
	case err == nil:
		p.bitmapGen, p.knownDisk = rec.BitmapGen, rec.Disk
	case errors.Is(err, ErrNotStored):
		// A new peer: nothing is known; the first connect decides.
		p.knownDisk = Diskless
	default:
		return nil, err
	}
	bm, err := v.state.LoadBitmap(pc.Name, v.size, v.cfg.BitmapBlockSize)
	switch {
	case err == nil:
		p.bitmap = bm
	case errors.Is(err, ErrNotStored) || errors.Is(err, ErrBitmapGeometry) || errors.Is(err, ErrBitmapCorrupt):
		if p.bitmap, err = NewBitmap(v.size, v.cfg.BitmapBlockSize); err != nil {
			return nil, err
		}
		if errors.Is(err, ErrBitmapGeometry) {
			_ = v.state.DeleteBitmap(pc.Name)
		}
		if p.bitmapGen != 0 {
			// The peer was behind and its bitmap is lost: only copying
			// everything is safe.
			v.log.Warn("bitmap of a peer that is behind is unreadable: it gets a full resync", "peer", pc.Name)
			p.bitmap.SetRange(0, v.size)
		}
	default:
		return nil, err
	}
	return p, nil
}

// inSyncLink reports whether the peer receives this node's writes and has
// everything before them. Caller holds v.mu.
func (p *peer) inSyncLink() bool {
	return p.link != nil && p.replicating && p.conn == Connected
}

// setConn changes the connection state. Caller holds v.mu.
func (p *peer) setConn(c ConnState) {
	if p.conn != c {
		p.v.log.Info("peer connection", "peer", p.name, "from", p.conn, "to", c)
		p.conn = c
		p.since = time.Now()
	}
}

// stopLink fails the current link, if any, and waits until it is gone.
func (p *peer) stopLink(reason error) {
	v := p.v
	v.mu.Lock()
	l := p.link
	v.mu.Unlock()
	if l != nil {
		l.fail(reason)
		<-l.done
	}
}

// nudge wakes the dialer.
func (p *peer) nudge() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// findPeer returns the named peer.
func (v *Volume) findPeer(name string) (*peer, error) {
	for _, p := range v.peers {
		if p.name == name {
			return p, nil
		}
	}
	return nil, fmt.Errorf("%w: %q is not a peer of volume %q", ErrUnknownPeer, name, v.cfg.Name)
}

// peersNamed returns the named peer, or every peer for "".
func (v *Volume) peersNamed(name string) ([]*peer, error) {
	if name == "" {
		return v.peers, nil
	}
	p, err := v.findPeer(name)
	if err != nil {
		return nil, err
	}
	return []*peer{p}, nil
}

// Connect lets the link to peer (or every peer for "") come up again after
// a disconnect or a refused connect. discardMyData makes this node the
// victim if the next connect finds a split brain.
func (v *Volume) Connect(name string, discardMyData bool) error {
	ps, err := v.peersNamed(name)
	if err != nil {
		return err
	}
	v.mu.Lock()
	if v.failed != "" {
		err := fmt.Errorf("%w: the local disk failed (%s): a Diskless replica does not connect; restart the node once the disk is repaired", ErrState, v.failed)
		v.mu.Unlock()
		return err
	}
	for _, p := range ps {
		p.standalone = false
		p.discardMyData = discardMyData
		if p.link == nil {
			p.setConn(Connecting)
		}
	}
	v.mu.Unlock()
	for _, p := range ps {
		p.nudge()
	}
	return nil
}

// Disconnect takes the link to peer (or every peer) down and keeps it down
// until Connect. On a primary this is the operator's decision that the
// peer may miss writes: it is recorded Outdated (with an Authority, once
// the cluster committed it: writes the peer misses wait for that).
func (v *Volume) Disconnect(name string) error {
	ps, err := v.peersNamed(name)
	if err != nil {
		return err
	}
	v.mu.Lock()
	for _, p := range ps {
		p.standalone = true
		p.lastErr = "disconnected by the operator"
		if v.role == Primary && p.knownDisk == UpToDate && v.auth == nil {
			p.knownDisk = Outdated
			v.log.Warn("peer outdated by the operator's disconnect", "peer", p.name)
		}
	}
	err = v.persistAll()
	v.mu.Unlock()
	for _, p := range ps {
		p.stopLink(errors.New("disconnected by the operator"))
		v.mu.Lock()
		p.setConn(StandAlone)
		v.mu.Unlock()
		p.nudgeReport()
	}
	return err
}

// Status reports the volume's replication state.
func (v *Volume) Status() Status {
	v.mu.Lock()
	defer v.mu.Unlock()
	st := Status{
		Role:          v.role.String(),
		Disk:          v.disk.String(),
		DiskFailed:    v.failed,
		Epoch:         v.epoch,
		Generation:    v.gens.Current.String(),
		Protocol:      string(v.cfg.Protocol),
		ContinueAlone: v.cfg.ContinueAlone,
		Peers:         make([]PeerStatus, 0, len(v.peers)),
	}
	if v.auth != nil {
		rem := v.leaseRemaining()
		st.Fenced = v.role == Primary && rem <= 0
		if rem > 0 {
			st.LeaseRemaining = rem.Milliseconds()
		}
	}
	for _, p := range v.peers {
		ps := PeerStatus{
			Name:                p.name,
			Address:             p.addr,
			Connection:          p.conn,
			Role:                "Unknown",
			Disk:                "Unknown",
			Replicating:         p.replicating,
			OutOfSyncBytes:      p.bitmap.DirtyBytes(),
			Decision:            p.decision,
			LastError:           p.lastErr,
			Since:               p.since,
			BytesSent:           p.bytesSent.Load(),
			BytesReceived:       p.bytesRecv.Load(),
			ResyncBytesSent:     p.resyncSent.Load(),
			ResyncBytesReceived: p.resyncRecv.Load(),
		}
		if p.heard {
			ps.Role = p.peerRole.String()
		}
		if p.heard || p.knownDisk != Diskless {
			ps.Disk = p.knownDisk.String()
		}
		if p.cluster.ok {
			ps.ClusterDisk = p.cluster.disk.String()
		}
		if p.resync != nil {
			r := *p.resync
			ps.Resync = &r
		}
		if p.verify != nil {
			r := *p.verify
			ps.Verify = &r
		}
		st.Peers = append(st.Peers, ps)
	}
	return st
}

// ResyncMode is what an operator's resync copies.
type ResyncMode string

// Resync modes.
const (
	// ResyncBitmap copies the blocks marked out of sync (by a disconnect or
	// a verify).
	ResyncBitmap ResyncMode = "bitmap"
	// ResyncChecksum compares every block by digest and copies those that
	// differ.
	ResyncChecksum ResyncMode = "checksum"
	// ResyncFull copies every block.
	ResyncFull ResyncMode = "full"
)

// canSourceLocked checks that this node may push data to p: the link is up
// and idle, and the peer is not a primary whose data would be overwritten.
func (v *Volume) canSourceLocked(p *peer, what string) error {
	switch {
	case p.link == nil:
		return fmt.Errorf("%w: %s needs a connected peer; %s is %s", ErrState, what, p.name, p.conn)
	case p.conn != Connected:
		return fmt.Errorf("%w: %s with %s: the link is busy (%s)", ErrState, what, p.name, p.conn)
	case p.peerRole == Primary:
		return fmt.Errorf("%w: %s runs on the primary (%s is primary)", ErrState, what, p.name)
	case v.disk != UpToDate:
		return fmt.Errorf("%w: %s needs UpToDate data here (disk is %v)", ErrState, what, v.disk)
	}
	return nil
}

// sourcePeersLocked returns the peers named (every peer for "") that this
// node may push data to for what; with "" the unconnected ones are skipped.
// Caller holds v.mu.
func (v *Volume) sourcePeersLocked(name, what string) ([]*peer, error) {
	ps, err := v.peersNamed(name)
	if err != nil {
		return nil, err
	}
	out := ps[:0:0]
	for _, p := range ps {
		if err := v.canSourceLocked(p, what); err != nil {
			if name == "" && p.link == nil {
				continue
			}
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Resync starts a resync from this node to peer (every connected peer for
// ""): the peer's disk is Inconsistent until it finishes.
func (v *Volume) Resync(name string, mode ResyncMode) error {
	kind, sm, all := BitmapResync, modeCopy, false
	switch mode {
	case ResyncFull:
		kind, all = FullResync, true
	case ResyncChecksum:
		sm, all = modeChecksum, true
	case ResyncBitmap, "":
	default:
		return fmt.Errorf("resync mode %q: want %q, %q or %q", mode, ResyncBitmap, ResyncChecksum, ResyncFull)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	ps, err := v.sourcePeersLocked(name, "resync")
	if err != nil {
		return err
	}
	for _, p := range ps {
		if all {
			p.bitmap.SetRange(0, v.size)
		}
		l := p.link
		m := v.stateFor(p, false)
		m.StartResync = kind
		l.send(l.header(wire.TypeState, v.epoch, 0, 0), m.marshal())
		p.setConn(SyncSource)
		p.knownDisk = Inconsistent
		if v.role == Primary {
			p.replicating = true
		}
		if err := v.persistAll(); err != nil {
			return err
		}
		p.nudgeReport()
		l.startJob(func() { l.runResync(kind, sm) })
	}
	return nil
}

// Verify starts an online verify of peer (every connected peer for ""):
// blocks found to differ are marked out of sync; `Resync` copies them.
func (v *Volume) Verify(name string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	ps, err := v.sourcePeersLocked(name, "verify")
	if err != nil {
		return err
	}
	for _, p := range ps {
		p.setConn(VerifySource)
		l := p.link
		l.startJob(l.runVerify)
	}
	return nil
}
