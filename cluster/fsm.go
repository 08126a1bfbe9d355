package cluster

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/raft"
)

// FSM runs the cluster State as a raft.FSM: every node applies the
// committed commands in log order, so every node holds the same State.
// Readers get copies (State), never the live value.
type FSM struct {
	mu    sync.RWMutex
	state *State
	// changed is closed, and replaced, whenever state changed.
	changed chan struct{}
	// lastCommand is the Raft index of the last command applied (refused
	// or not); applied is closed, and replaced, at every one.
	lastCommand uint64
	applied     chan struct{}
}

var _ raft.FSM = (*FSM)(nil)

// NewFSM returns an FSM holding an empty State.
func NewFSM() *FSM {
	return &FSM{state: NewState(), changed: make(chan struct{}), applied: make(chan struct{})}
}

// Changed returns a channel that is closed at the next change of the
// state (an applied command or a restored snapshot).
func (f *FSM) Changed() <-chan struct{} {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.changed
}

// notifyLocked wakes the waiters of Changed. Caller holds f.mu for writing.
func (f *FSM) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// Applied is what FSM.Apply returns for each log entry (raft hands it back
// through ApplyFuture.Response): the command's result, or why it was
// refused. A refused command is part of the log like any other; it changed
// nothing anywhere.
type Applied struct {
	Result Result
	Err    error
}

// Apply decodes and applies one committed command.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return Applied{}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastCommand = l.Index
	close(f.applied)
	f.applied = make(chan struct{})
	c, err := DecodeCommand(l.Data)
	if err != nil {
		// A command this build cannot read changes nothing here; every
		// node running the same build refuses it alike.
		return Applied{Err: fmt.Errorf("cluster: log entry %d: %w", l.Index, err)}
	}
	res, err := f.state.Apply(c)
	if err == nil {
		f.notifyLocked()
	}
	return Applied{Result: res, Err: err}
}

// LastCommand returns the Raft index of the last command applied (0 if
// none since the FSM was made: a restored snapshot sets nothing), and a
// channel closed at the next one.
func (f *FSM) LastCommand() (uint64, <-chan struct{}) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.lastCommand, f.applied
}

// State returns a copy of the current state.
func (f *FSM) State() *State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Clone()
}

// Snapshot captures the state for raft's log compaction.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	data, err := f.state.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return fsmSnapshot(data), nil
}

// Restore replaces the state with a snapshot; a snapshot that does not
// decode or breaks an invariant is refused and the state is unchanged.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("cluster: reading snapshot: %w", err)
	}
	s := NewState()
	if err := s.UnmarshalBinary(data); err != nil {
		return fmt.Errorf("cluster: restoring snapshot: %w", err)
	}
	f.mu.Lock()
	f.state = s
	f.notifyLocked()
	f.mu.Unlock()
	return nil
}

// fsmSnapshot is an encoded State.
type fsmSnapshot []byte

// Persist writes the snapshot to the sink.
func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		return errors.Join(err, sink.Cancel())
	}
	return sink.Close()
}

// Release frees nothing: the bytes are garbage collected.
func (s fsmSnapshot) Release() {}
