package replica

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/blockrep/blockrep/block"
	"github.com/blockrep/blockrep/replica/wire"
)

// Resync and online verify, run by the sync source (the verify source) on
// a link. Both walk the device in chunks of at most resyncChunk bytes,
// aligned to bitmap blocks. Each chunk takes its range like a write, so an
// application write to the same blocks is queued on the link after the
// chunk and the peer applies the two in that order.
const (
	resyncChunk = 4 << 20
	// digestSize is the bytes of SHA-256 kept per block in verify and
	// checksum-resync requests: 128 bits make an undetected difference
	// (a collision between two different blocks) practically impossible.
	digestSize = 16
	// windowIdle and windowBusy bound the resync bytes awaiting an ack:
	// with no application I/O the resync fills the link and the disks;
	// while the application writes it keeps a small share, so
	// application latency stays close to what it is without a resync.
	windowIdle = 32 << 20
	windowBusy = 2 << 20
	// busyWindow is how recent an application write must be for the
	// resync to yield.
	busyWindow = 200 * time.Millisecond
	// DefaultResyncSaveInterval is how often a running resync persists its
	// progress (after flushing the target), so that an interruption resumes
	// close to where it stopped.
	DefaultResyncSaveInterval = 5 * time.Second
)

// syncMode is what a resync or verify walk does with each chunk.
type syncMode uint8

const (
	modeCopy     syncMode = iota // send the data
	modeChecksum                 // send digests; send the data where they differ
	modeVerify                   // send digests; mark differing blocks
)

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

// digests appends digestSize bytes per block of data.
func digests(dst, data []byte, blockSize int) []byte {
	for len(data) > 0 {
		n := min(blockSize, len(data))
		s := sha256.Sum256(data[:n])
		dst = append(dst, s[:digestSize]...)
		data = data[n:]
	}
	return dst
}

// resyncKindName names a resync for status.
func resyncKindName(k ResyncKind, mode syncMode) string {
	switch {
	case mode == modeVerify:
		return "verify"
	case mode == modeChecksum:
		return "checksum"
	case k == FullResync:
		return "full"
	case k == ALResync:
		return "al"
	}
	return "bitmap"
}

// runResync sends the peer every block set in its bitmap, then the
// source's generation, and waits for the target to adopt it.
func (l *link) runResync(kind ResyncKind, mode syncMode) {
	v, p := l.v, l.p
	if l.bitmapIn != nil {
		select {
		case <-l.bitmapIn:
		case <-l.ctx.Done():
			return
		}
	}
	v.mu.Lock()
	p.resync = &Progress{Kind: resyncKindName(kind, mode), Started: time.Now(), TotalBytes: p.bitmap.DirtyBytes()}
	v.log.Info("resync started", "peer", p.name, "kind", p.resync.Kind, "bytes", p.resync.TotalBytes)
	v.mu.Unlock()
	if mode == modeChecksum {
		l.startJob(func() { l.consumeDigests(mode) })
	}
	lastSave := time.Now()
	var next uint64
	for {
		v.mu.Lock()
		s, n, ok := p.bitmap.NextDirty(next)
		v.mu.Unlock()
		if !ok {
			if !l.drainResync() {
				return
			}
			v.mu.Lock()
			left := p.bitmap.Count()
			v.mu.Unlock()
			if left == 0 {
				break
			}
			next = 0
			continue
		}
		n = min(n, uint64(resyncChunk/v.cfg.BitmapBlockSize))
		off, _ := p.bitmap.BlockRange(s)
		lo, ln := p.bitmap.BlockRange(s + n - 1)
		length := lo + ln - off
		next = s + n
		if !l.takeWindow(length) {
			return
		}
		var err error
		if mode == modeChecksum {
			err = l.sendDigests(off, length, verifyChecksum)
		} else {
			err = l.sendChunk(off, length)
		}
		if err != nil {
			l.fail(fmt.Errorf("resync: %w", err))
			return
		}
		if time.Since(lastSave) > v.cfg.ResyncSaveInterval {
			if !l.saveProgress() {
				return
			}
			lastSave = time.Now()
		}
	}
	v.mu.Lock()
	g := v.gens
	g.Bitmap = 0
	h := l.header(wire.TypeResyncDone, v.epoch, resyncDoneFromSource, 0)
	v.mu.Unlock()
	l.sendNow(h, marshalGens(g))
	select {
	case <-l.resyncDoneAck:
	case <-l.ctx.Done():
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	p.bitmapGen = 0
	p.knownDisk = v.disk
	p.peerDisk = v.disk
	p.resync.Finished = time.Now()
	p.resync.ETASeconds = 0
	p.setConn(Connected)
	if v.role == Primary {
		p.replicating = true
	}
	clean := true
	for _, q := range v.peers {
		if q.bitmap.Count() > 0 {
			clean = false
		}
	}
	if clean {
		v.crashed = false
	}
	if err := v.persistAll(); err != nil {
		v.log.Error("saving state after a resync", "err", err)
	}
	if err := v.saveBitmapsLocked(); err != nil {
		v.log.Error("saving bitmaps after a resync", "err", err)
	}
	v.log.Info("resync finished", "peer", p.name, "kind", p.resync.Kind, "bytes", p.resync.DoneBytes, "took", time.Since(p.resync.Started).Round(time.Millisecond))
	p.nudgeReport()
}

// lockRange takes [off, off+n) like a write does.
func (l *link) lockRange(off, n int64) uint64 {
	v := l.v
	v.mu.Lock()
	for v.ranges.overlaps(off, n) || v.exchanging > 0 {
		v.cond.Wait()
	}
	v.nextID++
	id := v.nextID
	v.ranges.add(off, n, id)
	v.mu.Unlock()
	return id
}

// unlockRangeLocked releases a range. Caller holds v.mu.
func (l *link) unlockRangeLocked(id uint64) {
	l.v.ranges.remove(id)
	l.v.cond.Broadcast()
}

// isZero reports whether the local store knows [off, off+n) reads as
// zeroes (a hole), so the chunk travels as a Zeroes frame of nine bytes.
func (l *link) isZero(off, n int64) bool {
	zero := false
	_ = l.v.store.Extents(off, n, func(e block.Extent) bool {
		zero = (e.Hole || e.Zero) && e.Offset <= off && e.Offset+e.Length >= off+n
		return false
	})
	return zero
}

// sendChunk sends one chunk's data.
func (l *link) sendChunk(off, n int64) error {
	v, p := l.v, l.p
	id := l.lockRange(off, n)
	var payload []byte
	var buf *[]byte
	t := wire.TypeResyncData
	if l.isZero(off, n) {
		t, payload = wire.TypeZeroes, marshalZeroes(n, zeroResync|zeroMayTrim)
	} else {
		buf = v.pool.Get(int(n))
		if err := v.store.ReadAt(*buf, off); err != nil {
			v.pool.Put(buf)
			v.mu.Lock()
			l.unlockRangeLocked(id)
			v.mu.Unlock()
			return fmt.Errorf("reading [%d, %d): %w", off, off+n, err)
		}
		payload = *buf
	}
	var flags wire.Flags
	if v.cfg.DataIntegrity && t == wire.TypeResyncData {
		flags = wire.FlagChecksum
	}
	v.mu.Lock()
	seq := l.enqueue(l.header(t, v.epoch, off, flags), payload, pendingFrame{kind: pendResync, off: off, n: n, buf: buf}, true, false)
	l.unlockRangeLocked(id)
	v.mu.Unlock()
	l.kick()
	if seq == 0 {
		if buf != nil {
			v.pool.Put(buf)
		}
		return errLinkClosed
	}
	p.resyncSent.Add(int64(len(payload)))
	return nil
}

// sendDigests sends the digests of one chunk for the peer to compare.
func (l *link) sendDigests(off, n int64, mode byte) error {
	v := l.v
	id := l.lockRange(off, n)
	buf := v.pool.Get(int(n))
	defer v.pool.Put(buf)
	if err := v.store.ReadAt(*buf, off); err != nil {
		v.mu.Lock()
		l.unlockRangeLocked(id)
		v.mu.Unlock()
		return fmt.Errorf("reading [%d, %d): %w", off, off+n, err)
	}
	ds := digests(make([]byte, 0, (int(n)/v.cfg.BitmapBlockSize+1)*digestSize), *buf, v.cfg.BitmapBlockSize)
	v.mu.Lock()
	seq := l.enqueue(l.header(wire.TypeVerifyRequest, v.epoch, off, 0), marshalVerifyReq(n, mode, ds), pendingFrame{kind: pendVerify, off: off, n: n}, true, false)
	l.unlockRangeLocked(id)
	v.mu.Unlock()
	l.kick()
	if seq == 0 {
		return errLinkClosed
	}
	l.wmu.Lock()
	l.digestsOut++
	l.wmu.Unlock()
	return nil
}

// resyncAcked takes the target's ack of a chunk: the blocks are in sync.
func (l *link) resyncAcked(pf pendingFrame) {
	v, p := l.v, l.p
	if pf.buf != nil {
		v.pool.Put(pf.buf)
	}
	v.mu.Lock()
	p.bitmap.ClearRange(pf.off, pf.n)
	if p.resync != nil {
		p.resync.DoneBytes += pf.n
		updateRate(p.resync)
	}
	v.mu.Unlock()
	l.giveWindow(pf.n)
}

// updateRate refreshes the rate and ETA of a running progress.
func updateRate(pr *Progress) {
	el := time.Since(pr.Started).Seconds()
	if el <= 0 {
		return
	}
	pr.BytesPerSecond = float64(pr.DoneBytes) / el
	if pr.BytesPerSecond > 0 && pr.TotalBytes > pr.DoneBytes {
		pr.ETASeconds = float64(pr.TotalBytes-pr.DoneBytes) / pr.BytesPerSecond
	} else {
		pr.ETASeconds = 0
	}
}

// takeWindow waits until n more resync bytes may be in flight, and applies
// the configured rate cap. It reports false if the link ended.
func (l *link) takeWindow(n int64) bool {
	v := l.v
	l.wmu.Lock()
	for {
		if l.ctx.Err() != nil {
			l.wmu.Unlock()
			return false
		}
		limit := int64(windowIdle)
		if time.Since(time.Unix(0, v.lastAppIO.Load())) < busyWindow {
			limit = windowBusy
		}
		if l.resyncInflight == 0 || l.resyncInflight+n <= limit {
			break
		}
		l.wcond.Wait()
	}
	l.resyncInflight += n
	l.wmu.Unlock()
	if rate := v.cfg.ResyncRate; rate > 0 {
		l.rateSent += n
		due := l.rateStart.Add(time.Duration(float64(l.rateSent) / float64(rate) * float64(time.Second)))
		if l.rateStart.IsZero() {
			l.rateStart = time.Now()
		} else if d := time.Until(due); d > 0 {
			select {
			case <-time.After(d):
			case <-l.ctx.Done():
				return false
			}
		}
	}
	return true
}

// giveWindow returns n bytes of window.
func (l *link) giveWindow(n int64) {
	l.wmu.Lock()
	l.resyncInflight -= n
	l.wcond.Broadcast()
	l.wmu.Unlock()
}

// drainResync waits until every chunk sent is answered. It reports false
// if the link ended.
func (l *link) drainResync() bool {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	for l.resyncInflight > 0 || l.digestsOut > 0 {
		if l.ctx.Err() != nil {
			return false
		}
		l.wcond.Wait()
	}
	return l.ctx.Err() == nil
}

// saveProgress flushes the target and then persists the bitmap, so the
// cleared bits stand for blocks on the target's disk. It reports false if
// the link ended.
func (l *link) saveProgress() bool {
	v := l.v
	ch := make(chan []byte, 1)
	v.mu.Lock()
	seq := l.enqueue(l.header(wire.TypeFlush, v.epoch, 0, 0), nil, pendingFrame{kind: pendFlush, ch: ch}, true, false)
	v.mu.Unlock()
	l.kick()
	if seq == 0 {
		return false
	}
	select {
	case <-ch:
	case <-l.ctx.Done():
		return false
	}
	v.mu.Lock()
	err := v.state.SaveBitmap(l.p.name, l.p.bitmap)
	v.mu.Unlock()
	if err != nil {
		v.log.Warn("saving resync progress", "err", err)
	}
	return true
}

// consumeDigests handles the peer's answers to digest requests: for a
// checksum resync it sends the blocks that differ and clears the others;
// for a verify it marks the blocks that differ.
func (l *link) consumeDigests(mode syncMode) {
	v, p := l.v, l.p
	bs := int64(v.cfg.BitmapBlockSize)
	for {
		l.wmu.Lock()
		for len(l.results) == 0 && l.ctx.Err() == nil {
			l.wcond.Wait()
		}
		if l.ctx.Err() != nil {
			l.wmu.Unlock()
			return
		}
		r := l.results[0]
		l.results = l.results[1:]
		// The request is answered: its window goes back before any data
		// is sent for it, or a full window of requests would wait for
		// itself.
		l.resyncInflight -= r.n
		l.wcond.Broadcast()
		l.wmu.Unlock()
		if len(r.mismatch)*8 < int((r.n+bs-1)/bs) {
			l.fail(fmt.Errorf("%w: digest answer of %d bytes for %d bytes", errBadPayload, len(r.mismatch), r.n))
			return
		}
		nb := int((r.n + bs - 1) / bs)
		var diff int64
		for i := 0; i < nb; {
			if r.mismatch[i/8]&(1<<(i%8)) == 0 {
				j := i
				for j < nb && r.mismatch[j/8]&(1<<(j%8)) == 0 {
					j++
				}
				off := r.off + int64(i)*bs
				end := min(r.off+int64(j)*bs, r.off+r.n)
				if mode == modeChecksum {
					v.mu.Lock()
					p.bitmap.ClearRange(off, end-off)
					if p.resync != nil {
						p.resync.DoneBytes += end - off
						updateRate(p.resync)
					}
					v.mu.Unlock()
				}
				i = j
				continue
			}
			j := i
			for j < nb && r.mismatch[j/8]&(1<<(j%8)) != 0 {
				j++
			}
			off := r.off + int64(i)*bs
			end := min(r.off+int64(j)*bs, r.off+r.n)
			diff += end - off
			if mode == modeChecksum {
				if !l.takeWindow(end - off) {
					return
				}
				if err := l.sendChunk(off, end-off); err != nil {
					l.fail(fmt.Errorf("checksum resync: %w", err))
					return
				}
			} else {
				v.mu.Lock()
				p.bitmap.SetRange(off, end-off)
				v.mu.Unlock()
			}
			i = j
		}
		v.mu.Lock()
		if mode == modeChecksum && p.resync != nil {
			p.resync.OutOfSyncBytes += diff
		}
		if mode == modeVerify && p.verify != nil {
			p.verify.OutOfSyncBytes += diff
			p.verify.DoneBytes += r.n
			updateRate(p.verify)
		}
		v.mu.Unlock()
		l.wmu.Lock()
		l.digestsOut--
		l.wcond.Broadcast()
		l.wmu.Unlock()
	}
}

// applyVerify answers a digest request: one bit per block where this
// node's data differs from the digests.
func (l *link) applyVerify(h wire.Header) error {
	v := l.v
	b, err := l.smallPayload(h)
	if err != nil {
		return err
	}
	// The mode (verify or checksum resync) matters to the source only:
	// the answer is the same.
	n, _, ds, err := unmarshalVerifyReq(b)
	if err != nil {
		return err
	}
	off := int64(h.Offset)
	bs := v.cfg.BitmapBlockSize
	if off < 0 || n <= 0 || n > resyncChunk || off+n > v.size || len(ds) != int((n+int64(bs)-1)/int64(bs))*digestSize {
		return fmt.Errorf("%w: verify request [%d, %d) with %d digest bytes", errBadPayload, off, off+n, len(ds))
	}
	if err := wire.CheckEpoch(h.Epoch, l.epoch()); err != nil {
		return err
	}
	want := append([]byte(nil), ds...)
	id := l.acquire(off, n, h.Seq)
	go func() {
		buf := v.pool.Get(int(n))
		err := v.store.ReadAt(*buf, off)
		var mine []byte
		if err == nil {
			mine = digests(make([]byte, 0, len(want)), *buf, bs)
		}
		v.pool.Put(buf)
		l.releaseApplied(id, h.Seq)
		if err != nil {
			l.fail(fmt.Errorf("verify: reading [%d, %d): %w", off, off+n, err))
			return
		}
		nb := len(want) / digestSize
		mask := make([]byte, (nb+7)/8)
		for i := range nb {
			if !bytes.Equal(mine[i*digestSize:(i+1)*digestSize], want[i*digestSize:(i+1)*digestSize]) {
				mask[i/8] |= 1 << (i % 8)
			}
		}
		a := l.header(wire.TypeVerifyDigest, h.Epoch, off, 0)
		a.Seq = h.Seq
		l.sendExact(a, mask)
	}()
	return nil
}

// runVerify compares every block of the volume with the peer and marks the
// ones that differ in the peer's bitmap (a later resync copies them).
func (l *link) runVerify() {
	v, p := l.v, l.p
	v.mu.Lock()
	p.verify = &Progress{Kind: "verify", Started: time.Now(), TotalBytes: v.size}
	v.mu.Unlock()
	l.startJob(func() { l.consumeDigests(modeVerify) })
	for off := int64(0); off < v.size; off += resyncChunk {
		n := min(int64(resyncChunk), v.size-off)
		if !l.takeWindow(n) {
			return
		}
		if err := l.sendDigests(off, n, verifyOnline); err != nil {
			l.fail(fmt.Errorf("verify: %w", err))
			return
		}
	}
	if !l.drainResync() {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	p.verify.Finished = time.Now()
	p.verify.ETASeconds = 0
	if p.conn == VerifySource {
		p.setConn(Connected)
	}
	if err := v.saveBitmapsLocked(); err != nil {
		v.log.Error("saving bitmaps after a verify", "err", err)
	}
	v.log.Info("verify finished", "peer", p.name, "out_of_sync_bytes", p.verify.OutOfSyncBytes, "took", time.Since(p.verify.Started).Round(time.Millisecond))
}

// sendBitmap sends this node's bitmap for the peer (a merging resync's
// target does), then an empty chunk to end it.
func (l *link) sendBitmap() {
	v, p := l.v, l.p
	v.mu.Lock()
	var pages [][]byte
	var idx []int
	zero := make([]byte, BitmapPageSize)
	for i := range p.bitmap.Pages() {
		pg := p.bitmap.Page(i)
		if !bytes.Equal(pg, zero[:len(pg)]) {
			pages = append(pages, pg)
			idx = append(idx, i)
		}
	}
	epoch := v.epoch
	v.mu.Unlock()
	for k, pg := range pages {
		l.sendNow(l.header(wire.TypeBitmapChunk, epoch, 0, 0), marshalBitmapPage(idx[k], pg))
	}
	l.sendNow(l.header(wire.TypeBitmapChunk, epoch, 0, 0), nil)
}

// bitmapChunk merges a page of the peer's bitmap into this node's bitmap
// for the peer; the empty chunk releases the waiting resync.
func (l *link) bitmapChunk(b []byte) error {
	v, p := l.v, l.p
	if l.bitmapIn == nil || l.bitmapDone {
		return fmt.Errorf("%w: bitmap chunk outside a merging resync", errBadPayload)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if l.peerBitmap == nil {
		bm, err := NewBitmap(v.size, v.cfg.BitmapBlockSize)
		if err != nil {
			return err
		}
		l.peerBitmap = bm
	}
	if len(b) == 0 {
		if err := p.bitmap.Union(l.peerBitmap); err != nil {
			return err
		}
		l.bitmapDone = true
		close(l.bitmapIn)
		return nil
	}
	if len(b) < 4 {
		return fmt.Errorf("%w: bitmap chunk of %d bytes", errBadPayload, len(b))
	}
	i := int(uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]))
	if i >= l.peerBitmap.Pages() {
		return fmt.Errorf("%w: bitmap page %d of %d", errBadPayload, i, l.peerBitmap.Pages())
	}
	if err := l.peerBitmap.SetPage(i, b[4:]); err != nil {
		return fmt.Errorf("%w: %w", errBadPayload, err)
	}
	return nil
}
