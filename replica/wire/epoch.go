package wire

import (
	"errors"
	"fmt"
)

// ErrStaleEpoch is what CheckEpoch's error matches: the frame comes from an
// epoch older than the receiver knows.
var ErrStaleEpoch = errors.New("wire: stale epoch")

// StaleEpochError names both epochs of a refused frame, so the log says who
// was fenced and by how much. It matches ErrStaleEpoch under errors.Is.
type StaleEpochError struct {
	Frame uint64 // epoch the frame carried
	Known uint64 // epoch the receiver knew
}

// Error describes the refusal.
func (e *StaleEpochError) Error() string {
	return fmt.Sprintf("wire: stale epoch: frame has epoch %d, receiver knows epoch %d", e.Frame, e.Known)
}

// Unwrap makes errors.Is(err, ErrStaleEpoch) hold.
func (e *StaleEpochError) Unwrap() error { return ErrStaleEpoch }

// CheckEpoch is the fencing rule of DESIGN invariant 4 as a pure function:
// a frame whose epoch is older than the receiver's known epoch is refused
// with a *StaleEpochError (matching ErrStaleEpoch).
//
// A receiver that gets this error must not apply the frame, must not
// acknowledge it, and must drop the link: the sender is a deposed primary (or
// talks on its behalf), and anything it sends after a newer epoch was
// committed may diverge from what the new primary acknowledges. Dropping the
// link, rather than skipping the frame, forces the old primary through a
// fresh connect, where generation identifiers decide what happens to its
// data.
//
// A frame from a newer epoch passes this check. That is not the same as
// adopting the newer epoch: the receiver cannot tell from a frame that the
// epoch was committed, so it learns epochs from the cluster state, never from
// a peer's frame.
func CheckEpoch(frameEpoch, known uint64) error {
	if frameEpoch < known {
		return &StaleEpochError{Frame: frameEpoch, Known: known}
	}
	return nil
}
