package replica

// rangeSet holds the byte ranges that writes, resync chunks and verify
// chunks are working on. Two operations on overlapping ranges never run at
// once: the second waits for the first. On a primary this makes the order in
// which overlapping writes reach the local disk the order in which they are
// sent to the peers; on a secondary it applies them in the order received.
// Queue depths are tens of requests, so a slice scan beats a tree.
//
// A rangeSet is guarded by its Volume's mutex.
type rangeSet struct {
	active []span
}

// span is one busy range; id tells equal ranges of different operations
// apart on removal.
type span struct {
	off, end int64
	id       uint64
}

// overlaps reports whether [off, off+n) overlaps a busy range. An empty
// range overlaps nothing.
func (s *rangeSet) overlaps(off, n int64) bool {
	if n <= 0 {
		return false
	}
	end := off + n
	for _, a := range s.active {
		if off < a.end && a.off < end {
			return true
		}
	}
	return false
}

// add marks [off, off+n) busy under id.
func (s *rangeSet) add(off, n int64, id uint64) {
	if n > 0 {
		s.active = append(s.active, span{off: off, end: off + n, id: id})
	}
}

// remove forgets the range added under id.
func (s *rangeSet) remove(id uint64) {
	for i, a := range s.active {
		if a.id == id {
			last := len(s.active) - 1
			s.active[i] = s.active[last]
			s.active = s.active[:last]
			return
		}
	}
}

// len is the number of busy ranges.
func (s *rangeSet) len() int { return len(s.active) }
